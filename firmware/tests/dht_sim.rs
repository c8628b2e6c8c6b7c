//! The DHT in virtual time: whole networks in the deterministic simulator (records found,
//! newer records replacing older ones, churn), and one node fed crafted datagrams by an
//! attacker (forgeries, replays, floods, missing tokens, amplification, subnet limits, garbage).
use peercom::dht::blind::{BlindSigner, period_of};
use peercom::dht::id::NodeId;
use peercom::dht::message::{self, Body, Msg, Token};
use peercom::dht::node::{DhtEvent, Node, NodeConfig};
use peercom::dht::record::{self, MAX_RECORD, RecordBuf};
use peercom::dht::sim::{DhtSim, SimConfig, UNIX_START};
use peercom::identity::DeviceKey;
use peercom::util::rng::Rng;
use std::collections::HashMap;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

const SEC: Duration = Duration::from_secs(1);

/// A sealed record of device `dev` (any number) with sequence number `seq`, valid for 2 hours
/// from `unix`.
fn record(dev: u8, seq: u64, unix: u64, port: u16) -> RecordBuf {
    let key = DeviceKey::from_seed([dev; 32]);
    let addr = SocketAddr::from(([203, 0, 113, dev], port));
    let mut out = [0u8; MAX_RECORD];
    let n = record::seal(&key, period_of(unix), seq, (unix + 7200) as u32, &[addr], [dev; 12], &mut out).unwrap();
    RecordBuf::from_slice(&out[..n]).unwrap()
}

fn key_of(r: &RecordBuf) -> [u8; 32] {
    record::parse(r.as_bytes()).unwrap().key()
}

fn seq_of(r: &RecordBuf) -> u64 {
    record::parse(r.as_bytes()).unwrap().seq
}

// ---------------------------------------------------------------------------------------------
// Whole networks.

/// `n` nodes joined through 4 bootstrap nodes, 20 a second, then left to settle for a while.
fn network(seed: u64, n: usize) -> (DhtSim, Vec<usize>) {
    lossy_network(seed, n, 0.0)
}

fn lossy_network(seed: u64, n: usize, loss: f64) -> (DhtSim, Vec<usize>) {
    let node = NodeConfig { max_records: 128, ..Default::default() };
    let mut sim = DhtSim::new(SimConfig { seed, node, loss, ..Default::default() });
    let mut boot = Vec::new();
    for _ in 0..4 {
        let b = boot.clone();
        boot.push(sim.add_node(&b));
    }
    while sim.len() < n {
        sim.add_node(&boot);
        if sim.len() % 2 == 0 {
            sim.run_for(Duration::from_millis(100));
        }
    }
    sim.run_for(120 * SEC);
    sim.take_events();
    (sim, boot)
}

fn random_live(sim: &mut DhtSim) -> usize {
    loop {
        let len = sim.len();
        let i = sim.rng().below(len);
        if sim.alive(i) {
            return i;
        }
    }
}

/// Looks up every key in `keys` from `per_key` random live nodes at once; returns, per lookup,
/// the key and the sequence number found (None: not found, or the lookup never ended).
fn look_up_all(sim: &mut DhtSim, keys: &[[u8; 32]], per_key: usize) -> Vec<([u8; 32], Option<u64>)> {
    let mut want = HashMap::new();
    for key in keys {
        for _ in 0..per_key {
            let from = random_live(sim);
            let id = sim.with_node(from, |n, now| n.find_record(now, *key)).flatten().expect("a free lookup slot");
            want.insert((from, id), *key);
        }
    }
    sim.run_for(30 * SEC);
    let mut out = Vec::new();
    for (node, ev) in sim.take_events() {
        match ev {
            DhtEvent::Found { lookup, record, .. } => {
                if let Some(key) = want.remove(&(node, lookup)) {
                    assert_eq!(key_of(&record), key);
                    out.push((key, Some(seq_of(&record))));
                }
            }
            DhtEvent::NotFound { lookup, .. } => {
                if let Some(key) = want.remove(&(node, lookup)) {
                    out.push((key, None));
                }
            }
            _ => {}
        }
    }
    out.extend(want.into_values().map(|k| (k, None)));
    out
}

/// Publishes one record per publisher; returns the records.
fn publish(sim: &mut DhtSim, publishers: &[usize], seq: u64, port: u16) -> Vec<RecordBuf> {
    let unix = sim.unix_now();
    let mut recs = Vec::new();
    for (dev, &p) in publishers.iter().enumerate() {
        let r = record(dev as u8, seq, unix, port);
        assert!(sim.with_node(p, |n, now| n.publish(now, &r)).flatten().is_some());
        recs.push(r);
    }
    sim.run_for(10 * SEC);
    let published = sim.take_events().iter().filter(|(_, e)| matches!(e, DhtEvent::Published { .. })).count();
    assert_eq!(published, publishers.len());
    recs
}

/// The regression behind records that could not be found: a node that never looked into a part
/// of the ID space knew no node there, so a record whose key lay there was stored by the nodes
/// nearest it *in that node's view*, far from the real nearest. After joining, every bucket
/// that could hold a node holds one.
#[test]
fn joined_nodes_know_every_part_of_the_id_space() {
    let (sim, _) = network(3, 300);
    let ids: Vec<NodeId> = (0..sim.len()).filter_map(|i| sim.node(i)).map(|n| n.id()).collect();
    let mut gaps = Vec::new();
    for i in 0..sim.len() {
        let Some(n) = sim.node(i) else { continue };
        let me = n.id();
        for bucket in 0..16 {
            let exists = ids.iter().any(|id| *id != me && me.common_prefix(id) == bucket);
            let known = n.table().iter().any(|e| me.common_prefix(&e.id) == bucket);
            if exists && !known {
                gaps.push((i, bucket));
            }
        }
    }
    assert!(gaps.is_empty(), "nodes with an empty bucket where nodes exist: {gaps:?}");
}

#[test]
fn every_lookup_finds_the_newest_record() {
    let (mut sim, boot) = network(1, 300);
    let publishers: Vec<usize> = (boot.len()..boot.len() + 20).collect();
    let v1 = publish(&mut sim, &publishers, 1, 7600);
    let keys: Vec<[u8; 32]> = v1.iter().map(key_of).collect();
    let found = look_up_all(&mut sim, &keys, 3);
    assert_eq!(found.len(), 60);
    assert!(found.iter().all(|(_, s)| *s == Some(1)), "{found:?}");

    // Half the devices move (a new port) and republish with a higher sequence number.
    let movers = &publishers[..10];
    let v2 = publish(&mut sim, movers, 2, 7700);
    // Every node that held an old copy now holds the new one.
    let mut holders = 0;
    for r in &v2 {
        let key = key_of(r);
        for i in 0..sim.len() {
            if let Some(held) = sim.node(i).and_then(|n| n.stored_record(sim.now(), &key)) {
                assert_eq!(seq_of(held), 2, "node {i} still holds the old record");
                holders += 1;
            }
        }
    }
    assert!(holders >= 10 * 15, "{holders} copies of 10 records");
    for (key, seq) in look_up_all(&mut sim, &keys, 3) {
        let moved = v2.iter().any(|r| key_of(r) == key);
        assert_eq!(seq, Some(if moved { 2 } else { 1 }));
    }
}

#[test]
fn records_survive_replacing_a_third_of_the_nodes() {
    let (mut sim, boot) = network(2, 300);
    let publishers: Vec<usize> = (boot.len()..boot.len() + 30).collect();
    let recs = publish(&mut sim, &publishers, 1, 7600);
    sim.run_for(600 * SEC);
    // 30% of the nodes leave for good (publishers too) and as many newcomers join.
    let mut candidates: Vec<usize> = (boot.len()..sim.len()).collect();
    let leave = sim.len() * 3 / 10;
    for _ in 0..leave {
        let k = sim.rng().below(candidates.len());
        sim.kill(candidates.swap_remove(k));
    }
    for i in 0..leave {
        sim.add_node(&boot);
        if i % 2 == 1 {
            sim.run_for(Duration::from_millis(100));
        }
    }
    sim.run_for(120 * SEC);
    sim.take_events();
    let keys: Vec<[u8; 32]> = recs.iter().map(key_of).collect();
    let found = look_up_all(&mut sim, &keys, 2);
    let missed: Vec<_> = found.iter().filter(|(_, s)| *s != Some(1)).collect();
    assert!(missed.is_empty(), "{} of {} lookups failed: {missed:?}", missed.len(), found.len());
}

#[test]
fn records_are_found_over_a_lossy_network() {
    let (mut sim, boot) = lossy_network(4, 300, 0.05);
    let publishers: Vec<usize> = (boot.len()..boot.len() + 20).collect();
    let recs = publish(&mut sim, &publishers, 1, 7600);
    let keys: Vec<[u8; 32]> = recs.iter().map(key_of).collect();
    let found = look_up_all(&mut sim, &keys, 3);
    assert!(found.iter().all(|(_, s)| *s == Some(1)), "{found:?}");
}

/// Same seed, same run: everything the nodes did, to the byte.
#[test]
fn a_run_replays_from_its_seed() {
    let run = |seed| {
        let (mut sim, boot) = network(seed, 60);
        let recs = publish(&mut sim, &[boot.len(), boot.len() + 1], 1, 7600);
        let mut found = look_up_all(&mut sim, &[key_of(&recs[0])], 4);
        found.sort();
        let counters: Vec<_> = (0..sim.len()).filter_map(|i| sim.node(i)).map(|n| n.counters()).collect();
        (found, counters, sim.sent_bytes.clone())
    };
    assert_eq!(run(9), run(9));
    assert_ne!(run(9).2, run(10).2);
}

// ---------------------------------------------------------------------------------------------
// One node and an attacker who writes datagrams by hand.

struct One {
    node: Node,
    now: Instant,
}

fn victim(cfg: NodeConfig) -> One {
    let now = Instant::now();
    One { node: Node::new(NodeId([0x55; 32]), cfg, Rng::seeded(7), now, UNIX_START), now }
}

fn encode(m: &Msg<'_>) -> Vec<u8> {
    let mut out = [0u8; 1200];
    let n = m.encode(&mut out).expect("fits a datagram");
    out[..n].to_vec()
}

/// A public address, in its own /24 for every `i` below 65536.
fn peer_addr(i: u32) -> SocketAddr {
    SocketAddr::from(([11, (i >> 8) as u8, i as u8, 1], 7600))
}

fn random_id(rng: &mut Rng) -> NodeId {
    NodeId::random(rng)
}

impl One {
    /// Feeds one datagram; returns what the node sent in answer (everything it queued).
    fn feed(&mut self, from: SocketAddr, bytes: &[u8]) -> Vec<(SocketAddr, Vec<u8>)> {
        self.node.handle_datagram(self.now, from, bytes);
        self.drain()
    }

    fn drain(&mut self) -> Vec<(SocketAddr, Vec<u8>)> {
        let mut out = Vec::new();
        let mut buf = [0u8; 1200];
        while let Some((dst, n)) = self.node.poll_transmit(&mut buf) {
            out.push((dst, buf[..n].to_vec()));
        }
        out
    }

    fn request(&mut self, from: SocketAddr, sender: NodeId, body: Body<'_>) -> Vec<(SocketAddr, Vec<u8>)> {
        self.feed(from, &encode(&Msg { txid: 77, sender, body }))
    }

    /// A token for `from`, from a padded ping.
    fn token(&mut self, from: SocketAddr, sender: NodeId) -> Token {
        let out = self.request(from, sender, Body::Ping { token: None, pad: &[0; 80] });
        for (dst, bytes) in &out {
            if *dst == from
                && let Ok(Msg { body: Body::Pong { token, .. }, .. }) = Msg::decode(bytes)
            {
                return token;
            }
        }
        panic!("no pong: {out:?}")
    }

    /// Answers every ping the node sent with a pong from the pinged address as `ids[addr]`.
    fn answer_pings(&mut self, sent: Vec<(SocketAddr, Vec<u8>)>, ids: &HashMap<SocketAddr, NodeId>) {
        for (dst, bytes) in sent {
            let Ok(m) = Msg::decode(&bytes) else { continue };
            if let (Body::Ping { .. }, Some(id)) = (m.body, ids.get(&dst)) {
                let pong = Msg { txid: m.txid, sender: *id, body: Body::Pong { token: [1; 8], your_addr: dst } };
                self.feed(dst, &encode(&pong));
            }
        }
    }

    /// Fills the routing table with `n` peers, each in its own /24; returns them.
    fn populate(&mut self, n: u32, rng: &mut Rng) -> Vec<(NodeId, SocketAddr)> {
        let peers: Vec<(NodeId, SocketAddr)> = (0..n).map(|i| (random_id(rng), peer_addr(1000 + i))).collect();
        self.node.seed(self.now, &peers);
        let sent = self.drain();
        let ids: HashMap<SocketAddr, NodeId> = peers.iter().map(|(id, a)| (*a, *id)).collect();
        self.answer_pings(sent, &ids);
        peers
    }

    fn store(&mut self, from: SocketAddr, sender: NodeId, token: Token, rec: &[u8]) -> Option<bool> {
        self.request(from, sender, Body::Store { token, record: rec }).iter().find_map(|(dst, b)| {
            match Msg::decode(b) {
                Ok(Msg { body: Body::Stored { ok }, .. }) if *dst == from => Some(ok),
                _ => None,
            }
        })
    }
}

#[test]
fn forged_records_are_not_stored() {
    let mut one = victim(NodeConfig::default());
    let (me, at) = (NodeId([1; 32]), peer_addr(1));
    let tok = one.token(at, me);
    let good = record(1, 5, UNIX_START, 7600);

    // Tampered: the sequence number raised after signing.
    let mut tampered = good.as_bytes().to_vec();
    tampered[33..41].copy_from_slice(&99u64.to_le_bytes());
    // Re-signed: the attacker's own valid record with the victim's blinded key put in.
    let mut resigned = record(2, 99, UNIX_START, 7600).as_bytes().to_vec();
    resigned[1..33].copy_from_slice(&good.as_bytes()[1..33]);
    for forged in [&tampered, &resigned] {
        assert_eq!(one.store(at, me, tok, forged), Some(false));
    }
    let c = one.node.counters();
    assert_eq!((c.stores_invalid, c.stores_accepted), (2, 0));
    assert_eq!(one.node.stored_records(), 0);
    // The genuine record is stored.
    assert_eq!(one.store(at, me, tok, good.as_bytes()), Some(true));
    assert_eq!(one.node.stored_records(), 1);
}

#[test]
fn replayed_older_and_oversized_records_are_refused() {
    let mut one = victim(NodeConfig::default());
    let (me, at) = (NodeId([1; 32]), peer_addr(1));
    let tok = one.token(at, me);
    let (old, new) = (record(3, 10, UNIX_START, 7600), record(3, 11, UNIX_START, 7601));
    assert_eq!(one.store(at, me, tok, old.as_bytes()), Some(true));
    assert_eq!(one.store(at, me, tok, new.as_bytes()), Some(true));
    assert_eq!(one.store(at, me, tok, old.as_bytes()), Some(false), "replay of an older record");
    assert_eq!(one.store(at, me, tok, new.as_bytes()), Some(false), "same sequence number again");
    assert_eq!(one.node.counters().stores_stale, 2);
    let held = one.node.stored_record(one.now, &key_of(&new)).unwrap();
    assert_eq!(held.as_bytes(), new.as_bytes());

    // Larger than any record may be (the datagram itself is fine).
    let mut big = record(4, 1, UNIX_START, 7600).as_bytes().to_vec();
    big.resize(MAX_RECORD + 100, 0);
    assert_eq!(one.store(at, me, tok, &big), Some(false));
    assert_eq!(one.node.counters().stores_invalid, 1);
    assert_eq!(one.node.stored_records(), 1);
}

#[test]
fn stores_need_a_valid_token() {
    let mut one = victim(NodeConfig::default());
    let (me, at, elsewhere) = (NodeId([1; 32]), peer_addr(1), peer_addr(2));
    let rec = record(5, 1, UNIX_START, 7600);
    // No token ever given out, a made-up one, and one given to another address.
    assert_eq!(one.store(at, me, [0; 8], rec.as_bytes()), Some(false));
    let theirs = one.token(elsewhere, NodeId([2; 32]));
    assert_eq!(one.store(at, me, theirs, rec.as_bytes()), Some(false));
    assert_eq!(one.node.counters().stores_no_token, 2);
    // Tokens expire: two rotations (10 minutes each) later, an old one no longer works.
    let tok = one.token(at, me);
    one.now += Duration::from_secs(25 * 60);
    for _ in 0..60 {
        one.now += Duration::from_secs(30);
        one.node.handle_timeout(one.now);
    }
    one.drain();
    assert_eq!(one.store(at, me, tok, rec.as_bytes()), Some(false));
    assert_eq!(one.node.counters().stores_no_token, 3);
    assert_eq!(one.node.stored_records(), 0);
    let fresh = one.token(at, me);
    assert_eq!(one.store(at, me, fresh, rec.as_bytes()), Some(true));
}

#[test]
fn a_store_flood_is_rate_limited_and_the_store_stays_capped() {
    let cap = 16;
    let mut one = victim(NodeConfig { max_records: cap, ..Default::default() });
    let recs: Vec<RecordBuf> = (0..120u8).map(|d| record(d, 1, UNIX_START, 7600)).collect();
    // One source, all at once: the burst allowance, then nothing.
    let (me, at) = (NodeId([1; 32]), peer_addr(1));
    let tok = one.token(at, me);
    for _ in 0..3 {
        for r in &recs {
            one.store(at, me, tok, r.as_bytes());
        }
    }
    let c = one.node.counters();
    assert!(c.dropped_rate >= 150, "{c:?}");
    assert!(one.node.stored_records() <= cap);
    // Many sources, each within its rate: the store still never grows past its cap. (A few
    // seconds first: a source that shares the flooder's rate slot shares its empty bucket.)
    one.now += 5 * SEC;
    for (i, r) in recs.iter().enumerate() {
        let (id, addr) = (NodeId::random(&mut Rng::seeded(i as u64)), peer_addr(100 + i as u32));
        let tok = one.token(addr, id);
        one.store(addr, id, tok, r.as_bytes());
        assert!(one.node.stored_records() <= cap);
    }
    assert_eq!(one.node.stored_records(), cap);
    assert!(one.node.counters().stores_full > 0);
}

/// For every request without a valid token, all that is sent back to its source (the reply,
/// and a ping that checks the source's address) is no larger than the request: a spoofed
/// source cannot turn the node into an amplifier. With a valid token, replies may be larger.
#[test]
fn no_amplification_without_a_token() {
    let mut rng = Rng::seeded(11);
    let mut one = victim(NodeConfig::default());
    one.populate(60, &mut rng);
    assert!(one.node.table().len() >= 40);
    // A record the node holds, so that value queries are answered with it.
    let (me, at) = (NodeId([1; 32]), peer_addr(1));
    let tok = one.token(at, me);
    let rec = record(6, 1, UNIX_START, 7600);
    assert_eq!(one.store(at, me, tok, rec.as_bytes()), Some(true));
    let held = key_of(&rec);

    let mut source = 5000;
    let mut check = |one: &mut One, body: Body<'_>, label: &str| {
        source += 1;
        let from = peer_addr(source);
        let req = encode(&Msg { txid: 9, sender: NodeId::random(&mut Rng::seeded(source as u64)), body });
        let back: usize = one.feed(from, &req).iter().filter(|(d, _)| *d == from).map(|(_, b)| b.len()).sum();
        assert!(back <= req.len(), "{label}: {back} bytes back for a {}-byte request", req.len());
        back
    };
    let target = random_id(&mut rng);
    for pad in [0usize, 10, 100, 500, 900, 1100] {
        let zeros = vec![0u8; pad];
        for token in [None, Some([7u8; 8]), Some(tok)] {
            // `tok` belongs to another address, so it is not valid here either.
            let p = &zeros[..];
            check(&mut one, Body::Ping { token, pad: p }, "ping");
            check(&mut one, Body::FindNode { target, token, pad: p }, "find node");
            check(&mut one, Body::FindValue { key: held, token, pad: p }, "find value (held)");
            check(&mut one, Body::FindValue { key: target.0, token, pad: p }, "find value (not held)");
        }
    }
    // Padded enough, a tokenless request gets a full answer: nodes, and the record.
    let from = peer_addr(9000);
    let req = Msg { txid: 1, sender: me, body: Body::FindValue { key: held, token: None, pad: &[0; 1100] } };
    let back = one.feed(from, &encode(&req));
    let got_record = back.iter().any(|(_, b)| matches!(Msg::decode(b), Ok(Msg { body: Body::Value { .. }, .. })));
    assert!(got_record, "{back:?}");
    // With a valid token a small request gets a large answer.
    let req = encode(&Msg { txid: 2, sender: me, body: Body::FindNode { target, token: Some(tok), pad: &[] } });
    let back = one.feed(at, &req);
    let nodes = back.iter().find_map(|(_, b)| match Msg::decode(b) {
        Ok(Msg { body: Body::Nodes { nodes4, .. }, .. }) => Some(nodes4.len() / message::NODE4_LEN),
        _ => None,
    });
    assert_eq!(nodes, Some(message::MAX_NODES));
    assert!(back[0].1.len() > 4 * req.len());
}

/// An attacker with 50 node IDs in one /24 gets at most 2 entries in any bucket, whether its
/// nodes answer the victim's pings or come with valid tokens.
#[test]
fn one_subnet_gets_two_entries_per_bucket() {
    let mut rng = Rng::seeded(12);
    let mut one = victim(NodeConfig::default());
    one.populate(30, &mut rng);
    let sybil = |i: u32| SocketAddr::from(([198, 51, 100, 1 + i as u8], 7600));
    // IDs spread over the first buckets (the ones an attacker can fill).
    let ids: Vec<(NodeId, SocketAddr)> = (0..50)
        .map(|i| {
            let mut id = random_id(&mut rng).0;
            id[0] = (0x55 ^ (0x80 >> (i % 4))) as u8;
            (NodeId(id), sybil(i))
        })
        .collect();
    one.node.seed(one.now, &ids);
    let sent = one.drain();
    one.answer_pings(sent, &ids.iter().map(|(id, a)| (*a, *id)).collect());
    for (id, addr) in &ids {
        let tok = one.token(*addr, *id);
        one.request(*addr, *id, Body::FindNode { target: *id, token: Some(tok), pad: &[] });
    }
    let own = one.node.id();
    let mut per_bucket: HashMap<usize, usize> = HashMap::new();
    for e in one.node.table().iter() {
        if let SocketAddr::V4(a) = e.addr
            && a.ip().octets()[..3] == [198, 51, 100]
        {
            *per_bucket.entry(own.common_prefix(&e.id)).or_default() += 1;
        }
    }
    assert!(per_bucket.len() >= 3, "{per_bucket:?}");
    assert!(per_bucket.values().all(|&n| n <= 2), "{per_bucket:?}");
}

#[test]
fn garbage_is_counted_and_never_panics() {
    let mut rng = Rng::seeded(13);
    let mut one = victim(NodeConfig::default());
    one.populate(20, &mut rng);
    let mut expected = 0;
    for i in 0..20_000u32 {
        let len = rng.below(1300);
        let mut b: Vec<u8> = (0..len).map(|_| rng.next_u32() as u8).collect();
        if i % 2 == 0 && len >= 2 {
            // Past the header check, into the body decoder.
            b[0] = message::PACKET_TYPE;
            b[1] = message::VERSION;
        }
        if Msg::decode(&b).is_err() {
            expected += 1;
        }
        one.feed(peer_addr(20_000 + i % 1000), &b);
    }
    // Truncations of every kind of valid message.
    let rec = record(7, 1, UNIX_START, 7600);
    let nodes = [0u8; 2 * message::NODE4_LEN];
    let bodies = [
        Body::Ping { token: Some([1; 8]), pad: &[0; 5] },
        Body::FindNode { target: NodeId([3; 32]), token: None, pad: &[0; 30] },
        Body::FindValue { key: [4; 32], token: Some([2; 8]), pad: &[] },
        Body::Store { token: [1; 8], record: rec.as_bytes() },
        Body::Pong { token: [1; 8], your_addr: peer_addr(3) },
        Body::Nodes { token: [1; 8], nodes4: &nodes, nodes6: &[] },
        Body::Value { token: [1; 8], record: rec.as_bytes(), nodes4: &nodes, nodes6: &[] },
        Body::Stored { ok: true },
    ];
    for body in bodies {
        let full = encode(&Msg { txid: 5, sender: NodeId([9; 32]), body });
        for cut in 0..full.len() {
            if Msg::decode(&full[..cut]).is_err() {
                expected += 1;
            }
            one.feed(peer_addr(30_000 + cut as u32), &full[..cut]);
        }
    }
    assert!(expected > 20_000);
    assert_eq!(one.node.counters().dropped_malformed, expected);
}

/// Scripted peers answer the victim's record lookup: one returns a forgery that claims a
/// higher sequence number, one a genuine but older record, the rest the newest. The newest wins.
#[test]
fn liars_do_not_win_a_record_lookup() {
    let mut rng = Rng::seeded(14);
    let mut one = victim(NodeConfig::default());
    let peers = one.populate(25, &mut rng);
    let (old, new) = (record(8, 1, UNIX_START, 7600), record(8, 2, UNIX_START, 7601));
    let mut forged = new.as_bytes().to_vec();
    forged[33..41].copy_from_slice(&50u64.to_le_bytes());
    let key = key_of(&new);
    // The two peers nearest the key lie; they are asked first.
    let mut by_dist = peers.clone();
    by_dist.sort_by_key(|(id, _)| id.distance(&NodeId(key)));
    let liar_forged = by_dist[0].1;
    let liar_old = by_dist[1].1;
    let ids: HashMap<SocketAddr, NodeId> = peers.iter().map(|(id, a)| (*a, *id)).collect();

    let lookup = one.node.find_record(one.now, key).unwrap();
    let mut queue = one.drain();
    let mut found = None;
    for _ in 0..100 {
        let mut next = Vec::new();
        for (dst, bytes) in std::mem::take(&mut queue) {
            let Ok(m) = Msg::decode(&bytes) else { continue };
            let Body::FindValue { .. } = m.body else { continue };
            let rec: &[u8] = if dst == liar_forged {
                &forged
            } else if dst == liar_old {
                old.as_bytes()
            } else {
                new.as_bytes()
            };
            let reply = Msg {
                txid: m.txid,
                sender: ids[&dst],
                body: Body::Value { token: [3; 8], record: rec, nodes4: &[], nodes6: &[] },
            };
            next.extend(one.feed(dst, &encode(&reply)));
        }
        queue = next;
        while let Some(ev) = one.node.poll_event() {
            if let DhtEvent::Found { lookup: l, record, .. } = ev
                && l == lookup
            {
                found = Some(record);
            }
        }
        if found.is_some() || queue.is_empty() {
            break;
        }
    }
    let found = found.expect("the lookup ended with a record");
    assert_eq!(found.as_bytes(), new.as_bytes());
    assert_eq!(one.node.counters().records_invalid, 1, "the forgery was checked and thrown away");
}

/// A token the peer no longer accepts (it restarted, or our address changed) must not make
/// it look dead: the retry goes without one, padded so the full answer may come back.
#[test]
fn retries_go_without_a_token() {
    let mut rng = Rng::seeded(15);
    let mut one = victim(NodeConfig::default());
    let peers = one.populate(1, &mut rng);
    let (peer, addr) = peers[0];
    while one.node.poll_event().is_some() {}
    // The pong gave us a token; the next lookup uses it.
    let target = random_id(&mut rng);
    let lookup = one.node.find_nodes(one.now, target).unwrap();
    // (destination, size, txid, whether it carried a token) of our lookup's query.
    let query = |sent: Vec<(SocketAddr, Vec<u8>)>| {
        sent.iter().find_map(|(dst, b)| match Msg::decode(b) {
            Ok(Msg { txid, body: Body::FindNode { target: t, token, .. }, .. }) if t == target => {
                Some((*dst, b.len(), txid, token.is_some()))
            }
            _ => None,
        })
    };
    let (_, _, txid, with_token) = query(one.drain()).expect("a query");
    assert!(with_token);
    // No answer: after the query timeout it is sent again, tokenless and padded.
    one.now += Duration::from_millis(450);
    one.node.handle_timeout(one.now);
    let (dst, len, retry_txid, with_token) = query(one.drain()).expect("a retry");
    assert_eq!((dst, retry_txid, with_token), (addr, txid, false));
    assert!(len >= 850, "{len}");
    // The answer to the retry ends the lookup.
    let reply = Msg { txid, sender: peer, body: Body::Nodes { token: [4; 8], nodes4: &[], nodes6: &[] } };
    one.feed(addr, &encode(&reply));
    let ended = std::iter::from_fn(|| one.node.poll_event())
        .any(|e| matches!(e, DhtEvent::Closest { lookup: l, found: 1, .. } if l == lookup));
    assert!(ended);
}

/// A token is used only while it is surely valid (its issuer rotates secrets every 10 minutes
/// and accepts one rotation back): an older one would get a reply cut to the request's size.
#[test]
fn old_tokens_are_not_used() {
    let mut rng = Rng::seeded(16);
    let mut one = victim(NodeConfig::default());
    let (peer, addr) = (random_id(&mut rng), peer_addr(1));
    one.node.seed(one.now, &[(peer, addr)]);
    // The peer answers everything (the join and the refreshes that follow) for a few seconds...
    let mut sent = one.drain();
    for _ in 0..40 {
        for (dst, b) in std::mem::take(&mut sent) {
            let Ok(m) = Msg::decode(&b) else { continue };
            let body = match m.body {
                Body::Ping { .. } => Body::Pong { token: [1; 8], your_addr: dst },
                Body::FindNode { .. } => Body::Nodes { token: [1; 8], nodes4: &[], nodes6: &[] },
                _ => continue,
            };
            sent.extend(one.feed(dst, &encode(&Msg { txid: m.txid, sender: peer, body })));
        }
        one.now += Duration::from_millis(100);
        one.node.handle_timeout(one.now);
        sent.extend(one.drain());
    }
    assert!(one.node.table().get(&peer).is_some());
    // ...then nothing is asked of it for six minutes.
    for _ in 0..12 {
        one.now += Duration::from_secs(30);
        one.node.handle_timeout(one.now);
        assert!(one.drain().is_empty());
    }
    let target = random_id(&mut rng);
    one.node.find_nodes(one.now, target).unwrap();
    let sent = one.drain();
    let query = sent.iter().find_map(|(dst, b)| match Msg::decode(b) {
        Ok(Msg { body: Body::FindNode { target: t, token, .. }, .. }) if t == target && *dst == addr => {
            Some((token, b.len()))
        }
        _ => None,
    });
    let (token, len) = query.expect("a query to the one peer");
    assert_eq!(token, None);
    assert!(len >= 850, "{len}");
}

// ---------------------------------------------------------------------------------------------
// Rendezvous: a device registers at the nodes storing its record; callers reach it through them.

fn signer(dev: u8, unix: u64) -> BlindSigner {
    BlindSigner::new(&DeviceKey::from_seed([dev; 32]), period_of(unix)).unwrap()
}

fn rendezvous_events(sim: &mut DhtSim) -> Vec<(usize, SocketAddr, SocketAddr, bool, Vec<u8>)> {
    sim.take_events()
        .into_iter()
        .filter_map(|(n, e)| match e {
            DhtEvent::Rendezvous { via, peer, replied, payload } => {
                Some((n, via, peer, replied, payload.as_bytes().to_vec()))
            }
            _ => None,
        })
        .collect()
}

#[test]
fn a_caller_reaches_a_registered_device_through_the_nodes_that_hold_its_record() {
    let (mut sim, _) = network(21, 150);
    let (dev, caller) = (random_live(&mut sim), random_live(&mut sim));
    let unix = sim.unix_now();
    let rec = record(1, 5, unix, 7600);
    let key = key_of(&rec);
    sim.with_node(dev, |n, now| {
        n.hold(key, signer(1, unix));
        n.publish(now, &rec)
    });
    sim.run_for(5 * SEC);
    let rdv: Vec<SocketAddr> = sim.node(dev).unwrap().rendezvous_nodes().collect();
    assert_eq!(rdv.len(), peercom::dht::hold::HOLDS_PER_KEY, "the nearest nodes that stored it");
    sim.take_events();

    let lookup = sim.with_node(caller, |n, now| n.find_record(now, key)).flatten().unwrap();
    sim.run_for(5 * SEC);
    let holders = sim
        .take_events()
        .into_iter()
        .find_map(|(n, e)| match e {
            DhtEvent::Found { lookup: l, holders, .. } if n == caller && l == lookup => Some(holders),
            _ => None,
        })
        .expect("found");
    let holders: Vec<SocketAddr> = holders.into_iter().flatten().collect();
    assert!(holders.iter().any(|h| rdv.contains(h)), "the lookup met a rendezvous node: {holders:?} {rdv:?}");

    for h in &holders {
        sim.with_node(caller, |n, now| n.forward(now, *h, key, b"message one"));
    }
    sim.run_for(SEC);
    let got = rendezvous_events(&mut sim);
    let at_dev: Vec<_> = got.iter().filter(|e| e.0 == dev && !e.3).collect();
    assert!(!at_dev.is_empty(), "forwarded to the device: {got:?}");
    for (_, via, peer, _, payload) in &at_dev {
        assert!(rdv.contains(via));
        assert_eq!(*peer, sim.addr(caller), "the caller's address as the rendezvous node saw it");
        assert_eq!(payload, b"message one");
    }
    let (via, peer) = (at_dev[0].1, at_dev[0].2);
    sim.with_node(dev, |n, _| n.answer_forward(via, peer, b"message two"));
    sim.run_for(SEC);
    let got = rendezvous_events(&mut sim);
    assert_eq!(got, vec![(caller, via, sim.addr(dev), true, b"message two".to_vec())]);

    // The registration lives as long as the device holds: five minutes later it still works,
    // having cost the device a hold per node every 20 s.
    let tx0 = sim.node(dev).unwrap().counters().tx;
    sim.run_for(300 * SEC);
    let holds = sim.node(dev).unwrap().counters().tx - tx0;
    assert!((6 * 14..=6 * 16 + 10).contains(&holds), "{holds} datagrams in 5 min");
    sim.with_node(caller, |n, now| n.forward(now, via, key, b"again"));
    sim.run_for(SEC);
    assert_eq!(rendezvous_events(&mut sim).len(), 1);

    // A device that goes away stops holding; a minute later its registrations have lapsed.
    sim.kill(dev);
    sim.run_for(61 * SEC);
    sim.with_node(caller, |n, now| n.forward(now, via, key, b"anyone?"));
    sim.run_for(SEC);
    assert!(rendezvous_events(&mut sim).is_empty());
    assert!(sim.node(sim_index(&sim, via)).unwrap().counters().forwards_refused >= 1);
}

fn sim_index(sim: &DhtSim, addr: SocketAddr) -> usize {
    (0..sim.len()).find(|&i| sim.addr(i) == addr).unwrap()
}

/// The rendezvous node's side, fed by hand: only the record's owner registers, only registered
/// devices get forwards, only their callers get replies, and never more bytes than came in.
#[test]
fn rendezvous_forwards_only_for_signed_registrations_and_never_amplifies() {
    let mut one = victim(NodeConfig::default());
    let (dev_id, dev_at) = (NodeId([1; 32]), peer_addr(1));
    let (caller_id, caller_at) = (NodeId([2; 32]), peer_addr(2));
    let tok = one.token(dev_at, dev_id);
    let rec = record(1, 5, UNIX_START, 7600);
    let key = key_of(&rec);
    assert_eq!(one.store(dev_at, dev_id, tok, rec.as_bytes()), Some(true));
    let hold = |one: &mut One, from: SocketAddr, token: Token, sig: &[u8]| -> Option<bool> {
        one.request(from, dev_id, Body::Hold { key, token, sig }).iter().find_map(|(_, b)| match Msg::decode(b) {
            Ok(Msg { body: Body::Held { ok, .. }, .. }) => Some(ok),
            _ => None,
        })
    };
    let node_id = one.node.id();
    let good_sig = signer(1, UNIX_START).sign(&message::hold_message(&node_id, &tok, &key));
    let wrong_signer = signer(2, UNIX_START).sign(&message::hold_message(&node_id, &tok, &key));
    let other_node = signer(1, UNIX_START).sign(&message::hold_message(&NodeId([9; 32]), &tok, &key));
    assert_eq!(hold(&mut one, dev_at, tok, &wrong_signer), Some(false), "not the record's key");
    assert_eq!(hold(&mut one, dev_at, tok, &other_node), Some(false), "signed for another node");
    let thief = peer_addr(3);
    let thief_tok = one.token(thief, NodeId([3; 32]));
    assert_eq!(hold(&mut one, thief, tok, &good_sig), Some(false), "a hold replayed from elsewhere");
    assert_eq!(hold(&mut one, thief, thief_tok, &good_sig), Some(false), "signed over another token");
    let forward = Body::Forward { key, payload: &[7; 134] };
    assert!(one.request(caller_at, caller_id, forward).is_empty(), "nobody registered yet");
    assert_eq!(hold(&mut one, dev_at, tok, &good_sig), Some(true));
    assert_eq!(one.node.registrations(one.now), 1);

    let fwd_len = encode(&Msg { txid: 77, sender: caller_id, body: forward }).len();
    let out = one.request(caller_at, caller_id, forward);
    assert_eq!(out.len(), 1);
    assert_eq!(out[0].0, dev_at);
    assert!(out[0].1.len() <= fwd_len);
    let Ok(Msg { body: Body::Forwarded { from, payload }, .. }) = Msg::decode(&out[0].1) else { panic!() };
    assert_eq!((from, payload), (caller_at, &[7u8; 134][..]));

    // Replies: to that caller only, from that device only, within what the caller sent.
    let victim_at = peer_addr(4);
    assert!(one.request(dev_at, dev_id, Body::Reply { to: victim_at, payload: &[1; 58] }).is_empty());
    assert!(one.request(thief, dev_id, Body::Reply { to: caller_at, payload: &[1; 58] }).is_empty());
    let mut sent_back = 0;
    for _ in 0..10 {
        for (dst, b) in one.request(dev_at, dev_id, Body::Reply { to: caller_at, payload: &[1; 100] }) {
            assert_eq!(dst, caller_at);
            sent_back += b.len();
        }
    }
    assert!(sent_back > 0 && sent_back <= fwd_len, "{sent_back} bytes back for {fwd_len} in");
    let c = one.node.counters();
    assert_eq!((c.holds_accepted, c.holds_refused, c.forwards), (1, 4, 1));
    assert!(c.replies_refused >= 2 && c.replies_relayed >= 1);

    // A flood of forwards is held to the device's allowance.
    let mut passed = 0;
    for i in 0..200 {
        passed += one.request(peer_addr(100 + i), caller_id, forward).len();
    }
    assert!(passed <= 20, "{passed} of 200 forwarded at once");
}

/// A device accepts forwarded messages only from its rendezvous nodes, and answers only from
/// nodes it forwarded through.
#[test]
fn relayed_messages_from_strangers_are_dropped() {
    let mut one = victim(NodeConfig::default());
    let stranger = peer_addr(9);
    let forwarded = Body::Forwarded { from: peer_addr(8), payload: &[1; 134] };
    let replied = Body::Replied { from: peer_addr(8), payload: &[1; 58] };
    assert!(one.request(stranger, NodeId([9; 32]), forwarded).is_empty());
    assert!(one.request(stranger, NodeId([9; 32]), replied).is_empty());
    assert!(std::iter::from_fn(|| one.node.poll_event()).all(|e| !matches!(e, DhtEvent::Rendezvous { .. })));
    assert_eq!(one.node.counters().dropped_unsolicited, 2);
    // After forwarding through it, its answer is taken.
    one.node.forward(one.now, stranger, [1; 32], b"hi");
    one.drain();
    assert!(one.request(stranger, NodeId([9; 32]), replied).is_empty());
    assert!(
        std::iter::from_fn(|| one.node.poll_event()).any(|e| matches!(e, DhtEvent::Rendezvous { replied: true, .. }))
    );
}

/// After an address change our tokens are worthless: the node says so in a reply smaller than
/// the query, with a fresh token, and the query asked again with it gets a full answer.
#[test]
fn a_stale_token_gets_a_fresh_one_and_the_query_goes_through() {
    let mut one = victim(NodeConfig::default());
    let mut rng = Rng::seeded(3);
    one.populate(40, &mut rng);
    let (me, moved_to) = (NodeId([1; 32]), peer_addr(7));
    let query = |token| Body::FindNode { target: NodeId([3; 32]), token: Some(token), pad: &[] };
    let stale = encode(&Msg { txid: 77, sender: me, body: query([9; 8]) });
    let out = one.feed(moved_to, &stale);
    assert_eq!(out.len(), 1);
    assert!(out[0].1.len() < stale.len());
    let Ok(Msg { body: Body::Retry { token }, .. }) = Msg::decode(&out[0].1) else { panic!("{out:?}") };
    let out = one.request(moved_to, me, query(token));
    let Ok(Msg { body: Body::Nodes { nodes4, .. }, .. }) = Msg::decode(&out[0].1) else { panic!("{out:?}") };
    assert_eq!(message::nodes(nodes4, false).count(), 20);
}

/// A node behind a NAT (BEP 43's read-only node) marks its messages: it is answered, its
/// lookups and records work, but nobody keeps it as a contact (nobody else could reach it), and
/// the nodes that knew it drop it as soon as it says so.
#[test]
fn a_client_node_is_answered_but_kept_out_of_routing_tables() {
    let (mut sim, _) = network(33, 80);
    let c = random_live(&mut sim);
    let id = sim.node(c).unwrap().id();
    let known = |sim: &DhtSim| {
        (0..sim.len()).filter(|&j| j != c && sim.node(j).is_some_and(|n| n.table().get(&id).is_some())).count()
    };
    let before = known(&sim);
    assert!(before >= 10, "{before}");
    sim.with_node(c, |n, now| n.set_client(now, true));
    sim.run_for(5 * SEC);
    let after = known(&sim);
    // Nodes it does not know itself keep it until they next hear from it (any message of its
    // is marked) or it fails their queries, as it would behind its NAT.
    assert!(after * 2 <= before, "{before} -> {after}");
    // It still looks up, publishes, and is told its address; and still no one adds it.
    let unix = sim.unix_now();
    let rec = record(9, 3, unix, 7600);
    sim.with_node(c, |n, now| n.publish(now, &rec));
    sim.run_for(5 * SEC);
    let published = sim.take_events().into_iter().find_map(|(n, e)| match e {
        DhtEvent::Published { stored_at, .. } if n == c => Some(stored_at),
        _ => None,
    });
    assert!(published.is_some_and(|s| s >= 10), "{published:?}");
    assert!(known(&sim) <= after, "a client is never added: {after} -> {}", known(&sim));
    let (other, key) = (random_live(&mut sim), key_of(&rec));
    let found = look_up_all(&mut sim, &[key], 1);
    assert_eq!(found, vec![(key, Some(3))]);
    let _ = other;
    // Back to a full node (e.g. the router gave it a port mapping): it is added again.
    sim.with_node(c, |n, now| n.set_client(now, false));
    let lookup = sim.with_node(c, |n, now| n.find_nodes(now, NodeId::random(&mut Rng::seeded(5))));
    assert!(lookup.is_some());
    sim.run_for(5 * SEC);
    assert!(known(&sim) > after, "{after} -> {}", known(&sim));
}
