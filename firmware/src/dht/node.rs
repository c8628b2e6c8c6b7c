//! The sans-IO DHT node: routing table, lookups, record storage, tokens and rate limits. Feed it
//! datagrams of type 4 and timeouts; drain `poll_transmit` and `poll_event`; sleep until
//! `poll_timeout`. Wall-clock time (record expiry) is derived from the `unix_now` given at start,
//! so a simulation stays deterministic.
use super::blind::{self, BlindSigner};
use super::hold::{Holds, Target};
use super::id::NodeId;
use super::lookup::{Kind, Lookup};
use super::message::{self, Body, MAX_NODES, Msg, NODE6_LEN, Token};
use super::ratelimit::RateLimiter;
use super::record::{self, RecordBuf};
use super::relay::{Relay, RelayConfig, RelayCounters, Ticket};
use super::rendezvous::{Rendezvous, RendezvousConfig};
use super::routing::{Entry, Insert, K, RoutingTable};
use super::store::{Store, StoreResult};
use super::token::Tokens;
use crate::util::rng::Rng;
use crate::wire::MAX_DATAGRAM;
use serde::Serialize;
use std::collections::VecDeque;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

#[derive(Debug, Clone, Copy)]
pub struct NodeConfig {
    pub alpha: usize,
    /// A query unanswered this long is sent again, up to `retries` times; unanswered after
    /// that, it has failed.
    pub query_timeout: Duration,
    /// Two retries: with 5% loss each way a query and its answer get through in 90% of tries,
    /// so one retry leaves 1% of live nodes looking dead, two leave 0.1%.
    pub retries: u8,
    pub max_lookups: usize,
    pub max_pending: usize,
    /// Datagrams waiting for `poll_transmit`, at most this many and `tx_bytes` bytes.
    pub tx_queue: usize,
    pub tx_bytes: usize,
    pub events: usize,
    pub max_records: usize,
    /// Entries from one /24 (IPv6 /48) per bucket.
    pub subnet_limit: usize,
    pub rate_per_sec: u32,
    pub rate_burst: u32,
    pub rate_slots: usize,
    /// An entry not heard from for this long is questionable: when a node waits to take its
    /// place in a full bucket, it gets a liveness ping (BEP 5's rule).
    pub stale_after: Duration,
    /// A bucket with no lookup for this long is refreshed, unless it is full of good entries.
    pub refresh_every: Duration,
    pub token_every: Duration,
    /// A record lookup stops after this many replies carried the record (the newest wins).
    pub value_quorum: u32,
    /// Housekeeping interval.
    pub tick: Duration,
    pub rendezvous: RendezvousConfig,
    /// Relay for devices registered here (`peercom node --relay`); devices do not relay.
    pub relay: Option<RelayConfig>,
}

impl Default for NodeConfig {
    fn default() -> Self {
        NodeConfig {
            alpha: 3,
            query_timeout: Duration::from_millis(400),
            retries: 2,
            max_lookups: 16,
            max_pending: 128,
            tx_queue: 64,
            tx_bytes: 32 * 1024,
            events: 64,
            max_records: 2048,
            subnet_limit: 2,
            rate_per_sec: 50,
            rate_burst: 200,
            rate_slots: 1024,
            stale_after: Duration::from_secs(15 * 60),
            refresh_every: Duration::from_secs(60 * 60),
            token_every: Duration::from_secs(10 * 60),
            value_quorum: 3,
            tick: Duration::from_secs(30),
            rendezvous: RendezvousConfig::default(),
            relay: None,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LookupStats {
    pub rounds: u8,
    pub msgs: u32,
}

// A found record travels inline: boxing it would allocate per lookup.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DhtEvent {
    /// The newest valid record found under `key`.
    Found {
        lookup: u32,
        key: [u8; 32],
        record: RecordBuf,
        stats: LookupStats,
        /// Nodes that returned this record: the device's rendezvous nodes, if it is online.
        holders: [Option<SocketAddr>; MAX_HOLDERS],
    },
    NotFound {
        lookup: u32,
        key: [u8; 32],
        stats: LookupStats,
    },
    /// A node lookup ended; `found` nodes answered.
    Closest {
        lookup: u32,
        found: usize,
        nearest: Option<NodeId>,
        stats: LookupStats,
    },
    /// A record was offered to `stored_at` of the nodes nearest its key.
    Published {
        lookup: u32,
        key: [u8; 32],
        stored_at: usize,
    },
    /// A node told us the address it sees us at (our reflexive address).
    Reflexive {
        addr: SocketAddr,
        reporter: SocketAddr,
    },
    /// Through rendezvous node `via`: a caller at `peer` forwarded `payload` to us, or (`replied`)
    /// the device at `peer` answered our forward.
    Rendezvous {
        via: SocketAddr,
        peer: SocketAddr,
        replied: bool,
        payload: Relayed,
    },
    /// No rendezvous node holds our registration for `key` any more: publish again.
    Unheld {
        key: [u8; 32],
    },
    /// Our rendezvous node `via` relays, and a caller asked it for a pair under `ticket`:
    /// `join` if the ticket is one of our sessions'.
    RelayInvite {
        via: SocketAddr,
        ticket: Ticket,
    },
    /// Relay `via` made (or refused) the pair `ticket`; session packets sent to it reach the
    /// other half for `secs` seconds at most.
    Relaying {
        via: SocketAddr,
        ticket: Ticket,
        ok: bool,
        secs: u32,
    },
}

pub const MAX_HOLDERS: usize = 4;

/// The largest payload rendezvous nodes pass on (a handshake message and then some).
pub const MAX_RELAYED: usize = 256;

/// A relayed payload, inline (events are fixed-size).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Relayed {
    len: u16,
    bytes: [u8; MAX_RELAYED],
}

impl Relayed {
    pub fn from_slice(b: &[u8]) -> Option<Self> {
        let mut bytes = [0u8; MAX_RELAYED];
        bytes.get_mut(..b.len())?.copy_from_slice(b);
        Some(Relayed { len: b.len() as u16, bytes })
    }

    pub fn as_bytes(&self) -> &[u8] {
        &self.bytes[..usize::from(self.len)]
    }
}

#[derive(Debug, Clone, Copy, Default, Serialize, PartialEq, Eq)]
pub struct DhtCounters {
    pub rx: u64,
    pub tx: u64,
    pub rx_bytes: u64,
    pub tx_bytes: u64,
    pub dropped_malformed: u64,
    pub dropped_rate: u64,
    pub dropped_unsolicited: u64,
    pub dropped_tx_full: u64,
    pub replies_truncated: u64,
    /// Requests that carried a token we did not accept (expired, or minted for another address).
    pub bad_tokens: u64,
    pub stores_accepted: u64,
    pub stores_stale: u64,
    pub stores_invalid: u64,
    pub stores_no_token: u64,
    pub stores_full: u64,
    pub records_invalid: u64,
    pub timeouts: u64,
    pub lookups_refused: u64,
    /// Rendezvous, as a node: registrations accepted and refused, handshakes passed on to
    /// registered devices and answers passed back, and those refused (unknown key, over the
    /// allowance, or a reply nobody asked for).
    pub holds_accepted: u64,
    pub holds_refused: u64,
    pub forwards: u64,
    pub forwards_refused: u64,
    pub replies_relayed: u64,
    pub replies_refused: u64,
    /// Relay, as a node that relays.
    pub relay: RelayCounters,
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum What {
    /// `verify`: a liveness or address check (a bootstrap node's ID is unknown until it answers).
    Ping,
    Query {
        slot: usize,
        lid: u32,
    },
    Store,
    Hold,
}

#[derive(Clone, Copy)]
struct Pending {
    txid: u32,
    dst: SocketAddr,
    id: Option<NodeId>,
    deadline: Instant,
    /// Resends left before it has failed.
    retries: u8,
    what: What,
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Owner {
    /// Reported to the owner when it ends.
    User,
    /// Our first lookup of our own ID; when it ends, every bucket is refreshed.
    Join,
    Refresh,
}

struct LookupSlot {
    lookup: Lookup,
    id: u32,
    owner: Owner,
    /// Publish: the record to store. Value: the newest valid record found so far.
    record: Option<(u64, RecordBuf)>,
    /// Value: the nodes that returned the newest record.
    holders: [Option<SocketAddr>; MAX_HOLDERS],
}

/// Outgoing datagrams, encoded straight into one buffer allocated at start-up and stored back
/// to back: no 1200-byte slot per datagram, and no copy but the one into the caller's buffer.
struct TxQueue {
    buf: Vec<u8>,
    head: usize,
    tail: usize,
    meta: VecDeque<(SocketAddr, u16)>,
    max: usize,
}

impl TxQueue {
    fn new(bytes: usize, count: usize) -> Self {
        let count = count.max(1);
        TxQueue {
            buf: vec![0; bytes.max(MAX_DATAGRAM)],
            head: 0,
            tail: 0,
            meta: VecDeque::with_capacity(count),
            max: count,
        }
    }

    /// Room for the next datagram (at most `MAX_DATAGRAM` bytes); None when the queue is full.
    fn room(&mut self) -> Option<&mut [u8]> {
        if self.meta.len() >= self.max {
            return None;
        }
        if self.meta.is_empty() {
            (self.head, self.tail) = (0, 0);
        } else if self.buf.len() - self.tail < MAX_DATAGRAM && self.head > 0 {
            // Only when the owner has not drained us: move what waits to the front.
            self.buf.copy_within(self.head..self.tail, 0);
            self.tail -= self.head;
            self.head = 0;
        }
        let end = (self.tail + MAX_DATAGRAM).min(self.buf.len());
        self.buf.get_mut(self.tail..end)
    }

    /// The first `n` bytes of `room()` are a datagram to `dst`.
    fn commit(&mut self, dst: SocketAddr, n: usize) {
        self.meta.push_back((dst, n as u16));
        self.tail += n;
    }

    fn pop(&mut self, out: &mut [u8]) -> Option<(SocketAddr, usize)> {
        let (dst, len) = self.meta.pop_front()?;
        let len = usize::from(len);
        let src = self.buf.get(self.head..self.head + len).unwrap_or(&[]);
        self.head += len;
        let n = src.len().min(out.len());
        out[..n].copy_from_slice(&src[..n]);
        Some((dst, n))
    }
}

/// What `send` did with a message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Sent {
    Queued,
    /// Larger than the budget it was given.
    TooBig,
    /// The transmit queue is full.
    Full,
}

/// A reply to a request without a valid token may be no larger than the request; requests
/// without one are padded so the reply fits (the requester pays for the bytes, as in QUIC).
const PAD_PING: usize = 72;
const PAD_QUERY: usize = 900;
/// The bytes of a newcomer check (a tokenless ping), taken out of a reply's budget.
const VERIFY_COST: usize = PAD_PING + 2;
const PAD_VALUE: usize = 1190;
const MAX_BOOTSTRAP: usize = 16;
static ZEROS: [u8; MAX_DATAGRAM] = [0; MAX_DATAGRAM];

pub struct Node {
    id: NodeId,
    cfg: NodeConfig,
    rng: Rng,
    table: RoutingTable,
    store: Store,
    tokens: Tokens,
    limiter: RateLimiter,
    lookups: Vec<Option<LookupSlot>>,
    /// Pooled lookups (their shortlists keep their allocation).
    spare: Vec<Lookup>,
    next_lookup: u32,
    pending: Vec<Pending>,
    tx: TxQueue,
    events: VecDeque<DhtEvent>,
    bootstrap: Vec<SocketAddr>,
    t0: Instant,
    unix0: u64,
    next_tick: Instant,
    joined: bool,
    /// An internal lookup ended: start the next due bucket refresh after this input.
    refresh_soon: bool,
    counters: DhtCounters,
    rdv: Rendezvous,
    holds: Holds,
    /// Rendezvous nodes we sent a `Forward` to lately: only they may relay an answer to us.
    forwarded_via: [Option<(SocketAddr, Instant)>; FORWARDED_VIA],
    /// Our recent `Allocate`s, to repeat once with the token a relay's `Retry` brings.
    allocating: [Option<Allocating>; FORWARDED_VIA],
    relay: Option<Relay>,
    /// We are behind a NAT that others cannot reach us through: a client only (`CLIENT_FLAG`).
    client: bool,
}

const FORWARDED_VIA: usize = 16;

#[derive(Debug, Clone, Copy)]
struct Allocating {
    via: SocketAddr,
    key: [u8; 32],
    ticket: Ticket,
    txid: u32,
    at: Instant,
}
/// How long an answer to a `Forward` is accepted.
const FORWARD_ANSWER: Duration = Duration::from_secs(10);

impl Node {
    pub fn new(id: NodeId, cfg: NodeConfig, mut rng: Rng, now: Instant, unix_now: u64) -> Self {
        let tokens = Tokens::new(&mut rng, now, cfg.token_every);
        let limiter = RateLimiter::new(cfg.rate_slots, cfg.rate_per_sec, cfg.rate_burst, rng.next_u64());
        Node {
            id,
            table: RoutingTable::new(id, cfg.subnet_limit),
            store: Store::new(id, cfg.max_records),
            tokens,
            limiter,
            lookups: (0..cfg.max_lookups).map(|_| None).collect(),
            // Filled as lookups end: most nodes never run more than a few at once.
            spare: Vec::with_capacity(cfg.max_lookups),
            next_lookup: 1,
            pending: Vec::with_capacity(cfg.max_pending),
            tx: TxQueue::new(cfg.tx_bytes, cfg.tx_queue),
            events: VecDeque::with_capacity(cfg.events),
            bootstrap: Vec::with_capacity(MAX_BOOTSTRAP),
            t0: now,
            unix0: unix_now,
            next_tick: now + cfg.tick,
            joined: false,
            refresh_soon: false,
            counters: DhtCounters::default(),
            rdv: Rendezvous::new(cfg.rendezvous),
            holds: Holds::default(),
            forwarded_via: [None; FORWARDED_VIA],
            allocating: [None; FORWARDED_VIA],
            relay: cfg.relay.map(Relay::new),
            client: false,
            rng,
            cfg,
        }
    }

    pub fn id(&self) -> NodeId {
        self.id
    }

    pub fn counters(&self) -> DhtCounters {
        let mut c = self.counters;
        if let Some(r) = &self.relay {
            c.relay = r.counters();
        }
        c
    }

    /// Marks our messages as a client's (we are behind a NAT others cannot reach us through), or
    /// a full node's again. On becoming a client, the nodes that know us are told at once (a ping
    /// each), so that they drop us from their tables.
    pub fn set_client(&mut self, now: Instant, client: bool) {
        if client == self.client {
            return;
        }
        self.client = client;
        if client {
            let mut known = [None; 64];
            for (slot, e) in known.iter_mut().zip(self.table.iter()) {
                *slot = Some((e.id, e.addr));
            }
            for (id, addr) in known.into_iter().flatten() {
                self.ping(now, Some(id), addr);
            }
        }
    }

    pub fn is_client(&self) -> bool {
        self.client
    }

    /// Pairs this node relays for now.
    pub fn relaying(&self, now: Instant) -> usize {
        self.relay.as_ref().map_or(0, |r| r.active(now))
    }

    pub fn table(&self) -> &RoutingTable {
        &self.table
    }

    pub fn stored_records(&self) -> usize {
        self.store.len()
    }

    /// The record held for others under `key`, if any (tests and the simulator look inside).
    pub fn stored_record(&self, now: Instant, key: &[u8; 32]) -> Option<&RecordBuf> {
        self.store.get(&NodeId(*key), self.unix(now))
    }

    fn unix(&self, now: Instant) -> u64 {
        self.unix0 + now.saturating_duration_since(self.t0).as_secs()
    }

    /// Remembers bootstrap addresses and pings them (their IDs are learnt from the answers).
    pub fn bootstrap(&mut self, now: Instant, addrs: &[SocketAddr]) {
        for a in addrs {
            if !self.bootstrap.contains(a) && self.bootstrap.len() < MAX_BOOTSTRAP {
                self.bootstrap.push(*a);
            }
        }
        for i in 0..self.bootstrap.len() {
            let a = self.bootstrap[i];
            self.ping(now, None, a);
        }
    }

    /// Adds nodes known from an earlier run; they are pinged and enter the table when they answer.
    pub fn seed(&mut self, now: Instant, nodes: &[(NodeId, SocketAddr)]) {
        for (id, addr) in nodes {
            self.ping(now, Some(*id), *addr);
        }
    }

    /// Good entries of the routing table, to persist across restarts.
    pub fn snapshot(&self, out: &mut Vec<(NodeId, SocketAddr)>) {
        out.extend(self.table.iter().filter(|e| e.fails == 0).map(|e| (e.id, e.addr)));
    }

    /// Looks up the record stored under `key`; None when every lookup slot is busy.
    pub fn find_record(&mut self, now: Instant, key: [u8; 32]) -> Option<u32> {
        self.start(now, NodeId(key), Kind::Value, Owner::User, None)
    }

    /// Finds the K nodes nearest `target` (a benchmark's or a test's query).
    pub fn find_nodes(&mut self, now: Instant, target: NodeId) -> Option<u32> {
        self.start(now, target, Kind::Nodes, Owner::User, None)
    }

    /// Stores `record` at the nodes nearest its key (the record must pass `record::check`).
    pub fn publish(&mut self, now: Instant, rec: &RecordBuf) -> Option<u32> {
        let (key, seq) = match record::check(rec.as_bytes(), self.unix(now)) {
            Ok(v) => (v.key(), v.seq),
            Err(_) => {
                self.counters.records_invalid += 1;
                return None;
            }
        };
        // Our own record is also kept here, in case we are among the nearest.
        let _ = self.store.put(self.unix(now), rec.as_bytes());
        self.start(now, NodeId(key), Kind::Publish, Owner::User, Some((seq, *rec)))
    }

    /// Registers us for `key` at the nodes that accept our record for it (`publish`), with
    /// holds signed by `signer`, the record's blinded key.
    pub fn hold(&mut self, key: [u8; 32], signer: BlindSigner) {
        self.holds.set_signer(key, signer);
    }

    /// Our rendezvous nodes.
    pub fn rendezvous_nodes(&self) -> impl Iterator<Item = SocketAddr> + '_ {
        self.holds.active().map(|t| t.addr)
    }

    /// Live registrations we hold for others.
    pub fn registrations(&self, now: Instant) -> usize {
        self.rdv.len(now)
    }

    /// Asks rendezvous node `via` (it returned `key`'s record) to pass `payload` to the device
    /// registered there. The message is as large as the reply it may bring back.
    pub fn forward(&mut self, now: Instant, via: SocketAddr, key: [u8; 32], payload: &[u8]) {
        if payload.len() > MAX_RELAYED {
            return;
        }
        self.note_forwarded(now, via);
        let msg = Msg { txid: self.rng.next_u32(), sender: self.id, body: Body::Forward { key, payload } };
        self.send(via, &msg, MAX_DATAGRAM);
    }

    /// `via` may answer us (`Replied`, `Relaying`) for a while.
    fn note_forwarded(&mut self, now: Instant, via: SocketAddr) {
        let slot = match self.forwarded_via.iter().position(|f| f.is_some_and(|(a, _)| a == via)) {
            Some(i) => i,
            None => {
                self.forwarded_via.rotate_right(1);
                0
            }
        };
        self.forwarded_via[slot] = Some((via, now));
    }

    /// Asks `via`, a node holding `key`'s registration, to relay between us and that device;
    /// `ticket` comes from our handshake with it. `Relaying` answers; a `Retry` first when we
    /// had no token from `via` (its proof that we receive at our address), answered once.
    pub fn allocate(&mut self, now: Instant, via: SocketAddr, key: [u8; 32], ticket: Ticket) {
        self.note_forwarded(now, via);
        let token = self.table.entry_at(&via).and_then(|e| self.fresh_token(now, e));
        let txid = self.rng.next_u32();
        self.allocating.rotate_right(1);
        self.allocating[0] = Some(Allocating { via, key, ticket, txid, at: now });
        let msg = Msg { txid, sender: self.id, body: Body::Allocate { key, ticket, token } };
        self.send(via, &msg, MAX_DATAGRAM);
    }

    /// Takes up our rendezvous node `via`'s invitation to the pair `ticket`.
    pub fn join(&mut self, via: SocketAddr, ticket: Ticket) {
        if !self.holds.is_rendezvous(&via) {
            return;
        }
        let msg = Msg { txid: self.rng.next_u32(), sender: self.id, body: Body::Join { ticket } };
        self.send(via, &msg, MAX_DATAGRAM);
    }

    /// A session packet (not a DHT message) for the relay: passed on, unchanged, to the other
    /// half of `from`'s pair. False if this node does not relay for `from`.
    pub fn relay_datagram(&mut self, now: Instant, from: SocketAddr, bytes: &[u8]) -> bool {
        // Session packets only: handshake messages and data (`wire::PacketType`).
        if !matches!(bytes.first(), Some(1..=3)) || bytes.len() > MAX_DATAGRAM {
            return false;
        }
        let Some(to) = self.relay.as_mut().and_then(|r| r.route(now, from, bytes.len())) else { return false };
        // The room left may be short of a full datagram while the queue is not drained.
        match self.tx.room().and_then(|room| room.get_mut(..bytes.len())) {
            Some(dst) => {
                dst.copy_from_slice(bytes);
                self.tx.commit(to, bytes.len());
            }
            None => self.counters.dropped_tx_full += 1,
        }
        true
    }

    /// Answers a caller whose `Forward` came through our rendezvous node `via`.
    pub fn answer_forward(&mut self, via: SocketAddr, to: SocketAddr, payload: &[u8]) {
        if payload.len() > MAX_RELAYED || !self.holds.is_rendezvous(&via) {
            return;
        }
        let msg = Msg { txid: self.rng.next_u32(), sender: self.id, body: Body::Reply { to, payload } };
        self.send(via, &msg, MAX_DATAGRAM);
    }

    fn start(
        &mut self,
        now: Instant,
        target: NodeId,
        kind: Kind,
        owner: Owner,
        record: Option<(u64, RecordBuf)>,
    ) -> Option<u32> {
        let Some(slot) = self.lookups.iter().position(|l| l.is_none()) else {
            self.counters.lookups_refused += 1;
            return None;
        };
        let mut lookup = self.spare.pop().unwrap_or_else(|| Lookup::new(target, kind));
        lookup.reset(target, kind);
        let mut near = [None; K];
        let n = self.table.closest_refs(&target, &mut near);
        for e in near[..n].iter().flatten() {
            lookup.add(e.id, e.addr, 1, self.fresh_token(now, e));
        }
        self.table.looked_up(&target, now);
        let id = self.next_lookup;
        self.next_lookup = self.next_lookup.wrapping_add(1).max(1);
        self.lookups[slot] = Some(LookupSlot { lookup, id, owner, record, holders: [None; MAX_HOLDERS] });
        self.advance(now, slot);
        Some(id)
    }

    /// The next datagram to send, copied into `buf` (give it `MAX_DATAGRAM` bytes).
    pub fn poll_transmit(&mut self, buf: &mut [u8]) -> Option<(SocketAddr, usize)> {
        self.tx.pop(buf)
    }

    pub fn poll_event(&mut self) -> Option<DhtEvent> {
        self.events.pop_front()
    }

    pub fn poll_timeout(&self) -> Option<Instant> {
        let p = self.pending.iter().map(|p| p.deadline).chain(self.holds.poll_timeout()).min();
        Some(p.map_or(self.next_tick, |p| p.min(self.next_tick)))
    }

    pub fn handle_timeout(&mut self, now: Instant) {
        let mut i = 0;
        while i < self.pending.len() {
            let p = self.pending[i];
            if p.deadline > now {
                i += 1;
                continue;
            }
            if p.retries > 0 && p.what != What::Store {
                self.pending[i].retries -= 1;
                self.pending[i].deadline = now + self.cfg.query_timeout;
                self.resend(now, p);
                i += 1;
                continue;
            }
            self.pending.swap_remove(i);
            self.counters.timeouts += 1;
            match (p.id, p.what) {
                (_, What::Hold) => self.hold_lost(p.dst),
                // A liveness check gets every retry: unanswered, the node is gone, and a
                // newcomer waiting in the replacement cache takes its place.
                (Some(id), What::Ping) => self.table.gone(&id),
                (Some(id), _) => self.table.failed(&id),
                (None, _) => {}
            }
            if let What::Query { slot, lid } = p.what
                && let Some(id) = p.id
                && self.live(slot, lid)
            {
                if let Some(l) = self.lookups[slot].as_mut() {
                    l.lookup.failed(&id);
                }
                self.advance(now, slot);
            }
        }
        while let Some(t) = self.holds.due(now) {
            self.send_hold(now, t);
        }
        if now >= self.next_tick {
            self.next_tick = now + self.cfg.tick;
            self.housekeeping(now);
        }
        self.after_input(now);
    }

    fn send_hold(&mut self, now: Instant, t: Target) {
        let txid = self.rng.next_u32();
        match self.queue_hold(txid, &t) {
            None => self.hold_lost(t.addr),
            Some(Sent::Queued) if self.pending.len() < self.cfg.max_pending => {
                let deadline = now + self.cfg.query_timeout;
                let (retries, what) = (self.cfg.retries, What::Hold);
                self.pending.push(Pending { txid, dst: t.addr, id: Some(t.id), deadline, retries, what });
            }
            Some(_) => {}
        }
    }

    /// Signs and queues a hold to `t`; None when we no longer hold a signer for its key.
    fn queue_hold(&mut self, txid: u32, t: &Target) -> Option<Sent> {
        let sig = self.holds.signer(&t.key)?.sign(&message::hold_message(&t.id, &t.token, &t.key));
        let body = Body::Hold { key: t.key, token: t.token, sig: &sig };
        Some(self.send(t.addr, &Msg { txid, sender: self.id, body }, MAX_DATAGRAM))
    }

    fn hold_lost(&mut self, addr: SocketAddr) {
        for key in self.holds.lost(addr).into_iter().flatten() {
            self.push_event(DhtEvent::Unheld { key });
        }
    }

    /// The token `e` gave us, while it is surely still valid: a token lives one to two of the
    /// issuer's rotation periods, so we use it for half of one (an expired token gets a reply
    /// trimmed to the request's size, or none).
    fn fresh_token(&self, now: Instant, e: &Entry) -> Option<Token> {
        e.token.filter(|(_, at)| now < *at + self.cfg.token_every / 2).map(|(t, _)| t)
    }

    /// Adds a node that proved its address. If it has to wait because its bucket is full, the
    /// bucket's questionable entry gets a liveness ping: if that node is gone, the newcomer takes
    /// its place. Liveness is checked on demand, never by a sweep of the whole table.
    fn add_verified(&mut self, now: Instant, id: NodeId, addr: SocketAddr) -> Insert {
        let r = self.table.verified(now, id, addr);
        if r == Insert::Cached
            && let Some(e) = self.table.questionable(&id, now, self.cfg.stale_after)
        {
            self.table.touch(&e.id, now);
            self.ping(now, Some(e.id), e.addr);
        }
        r
    }

    fn live(&self, slot: usize, lid: u32) -> bool {
        self.lookups.get(slot).and_then(|l| l.as_ref()).is_some_and(|l| l.id == lid)
    }

    fn housekeeping(&mut self, now: Instant) {
        self.tokens.tick(now, &mut self.rng);
        self.store.expire(self.unix(now));
        if self.table.is_empty() {
            // Cut off (network down, or every known node gone): start again from the bootstrap
            // list, and join again when someone answers.
            self.joined = false;
            for i in 0..self.bootstrap.len() {
                let a = self.bootstrap[i];
                self.ping(now, None, a);
            }
            return;
        }
        self.refresh(now);
    }

    /// Starts lookups into buckets that are due for a refresh, a few at a time so that the
    /// owner's lookups always find a free slot.
    fn refresh(&mut self, now: Instant) {
        let cap = (self.cfg.max_lookups / 4).max(1);
        let mut internal = self.lookups.iter().flatten().filter(|l| l.owner != Owner::User).count();
        while internal < cap
            && let Some(b) = self.table.bucket_to_refresh(now, self.cfg.refresh_every)
        {
            // Buckets past our K nearest neighbours' hold only our neighbourhood, which one
            // lookup of our own ID covers for all of them.
            let target = if b > self.table.neighbourhood() { self.id } else { self.table.random_in(b, &mut self.rng) };
            if self.start(now, target, Kind::Nodes, Owner::Refresh, None).is_none() {
                return;
            }
            internal += 1;
        }
    }

    pub fn handle_datagram(&mut self, now: Instant, from: SocketAddr, bytes: &[u8]) {
        self.on_datagram(now, from, bytes);
        self.after_input(now);
    }

    fn after_input(&mut self, now: Instant) {
        if self.refresh_soon {
            self.refresh_soon = false;
            self.refresh(now);
        }
    }

    fn on_datagram(&mut self, now: Instant, from: SocketAddr, bytes: &[u8]) {
        self.counters.rx += 1;
        self.counters.rx_bytes += bytes.len() as u64;
        let msg = match Msg::decode(bytes) {
            Ok(m) => m,
            Err(_) => {
                self.counters.dropped_malformed += 1;
                return;
            }
        };
        if msg.sender == self.id {
            self.counters.dropped_malformed += 1;
            return;
        }
        let client = message::from_client(bytes);
        if client {
            // Nobody else can reach it at this address: not a contact for anyone.
            self.table.remove(&msg.sender);
        }
        if let Body::Forwarded { from: peer, payload } | Body::Replied { from: peer, payload } = msg.body {
            self.on_relayed(now, from, peer, matches!(msg.body, Body::Replied { .. }), payload);
            return;
        }
        if let Body::Retry { token } = msg.body
            && let Some(i) = self
                .allocating
                .iter()
                .position(|a| a.is_some_and(|a| a.via == from && a.txid == msg.txid && now < a.at + FORWARD_ANSWER))
            && let Some(a) = self.allocating[i].take()
        {
            // The relay wants proof of our address first: once, with its token.
            let body = Body::Allocate { key: a.key, ticket: a.ticket, token: Some(token) };
            self.send(from, &Msg { txid: a.txid, sender: self.id, body }, MAX_DATAGRAM);
            return;
        }
        match msg.body {
            // Only from our rendezvous nodes (invitations), or from nodes we asked (answers).
            Body::Invite { ticket } if self.holds.is_rendezvous(&from) => {
                self.push_event(DhtEvent::RelayInvite { via: from, ticket });
                return;
            }
            Body::Relaying { ticket, ok, secs }
                if self.holds.is_rendezvous(&from)
                    || self.forwarded_via.iter().flatten().any(|(a, t)| *a == from && now < *t + FORWARD_ANSWER) =>
            {
                self.push_event(DhtEvent::Relaying { via: from, ticket, ok, secs });
                return;
            }
            Body::Invite { .. } | Body::Relaying { .. } => {
                self.counters.dropped_unsolicited += 1;
                return;
            }
            _ => {}
        }
        if msg.body.is_request() {
            if !self.limiter.allow(now, from.ip()) {
                self.counters.dropped_rate += 1;
                return;
            }
            self.on_request(now, from, (bytes.len(), client), &msg);
        } else {
            self.on_reply(now, from, client, &msg);
        }
    }

    /// A handshake forwarded to us by one of our rendezvous nodes, or an answer to our forward
    /// from a node we forwarded through; anything else is unsolicited.
    fn on_relayed(&mut self, now: Instant, via: SocketAddr, peer: SocketAddr, replied: bool, payload: &[u8]) {
        let expected = if replied {
            self.forwarded_via.iter().flatten().any(|(a, t)| *a == via && now < *t + FORWARD_ANSWER)
        } else {
            self.holds.is_rendezvous(&via)
        };
        match Relayed::from_slice(payload) {
            Some(payload) if expected => self.push_event(DhtEvent::Rendezvous { via, peer, replied, payload }),
            _ => self.counters.dropped_unsolicited += 1,
        }
    }

    fn on_request(&mut self, now: Instant, from: SocketAddr, req: (usize, bool), msg: &Msg<'_>) {
        let (req_len, client) = req;
        let token = match msg.body {
            Body::Ping { token, .. } | Body::FindNode { token, .. } | Body::FindValue { token, .. } => token,
            Body::Store { token, .. } | Body::Hold { token, .. } => Some(token),
            _ => None,
        };
        let proven = token.is_some_and(|t| self.tokens.valid(&from, &t));
        if token.is_some() && !proven {
            self.counters.bad_tokens += 1;
        }
        if token.is_some() && !proven && matches!(msg.body, Body::FindNode { .. } | Body::FindValue { .. }) {
            // An unpadded query whose token we do not accept would get a useless trimmed
            // answer: tell the sender to ask again with a fresh token.
            let body = Body::Retry { token: self.tokens.mint(&from) };
            self.reply(from, msg.txid, body, req_len);
            return;
        }
        let mut budget = if proven { MAX_DATAGRAM } else { req_len };
        if proven && !client {
            self.add_verified(now, msg.sender, from);
        } else if !client
            && matches!(msg.body, Body::FindNode { .. } | Body::FindValue { .. })
            && budget >= PAD_QUERY
            && self.table.would_add(&msg.sender, &from)
            && self.pending.len() < self.cfg.max_pending / 2
        {
            // A newcomer: check its address before it may enter the table. The check is paid
            // out of the request's byte budget and sent only once, so a spoofed source never
            // gets more bytes than the request had.
            budget -= VERIFY_COST;
            self.verify(now, msg.sender, from);
        }
        match msg.body {
            Body::Ping { .. } => {
                let body = Body::Pong { token: self.tokens.mint(&from), your_addr: from };
                self.reply(from, msg.txid, body, budget);
            }
            Body::FindNode { target, .. } => self.reply_nodes(now, from, msg.txid, &target, false, budget),
            Body::FindValue { key, .. } => self.reply_nodes(now, from, msg.txid, &NodeId(key), true, budget),
            Body::Store { record, .. } => {
                let ok = if !proven {
                    self.counters.stores_no_token += 1;
                    false
                } else {
                    match self.store.put(self.unix(now), record) {
                        StoreResult::Stored | StoreResult::Replaced => {
                            self.counters.stores_accepted += 1;
                            true
                        }
                        StoreResult::Stale => {
                            self.counters.stores_stale += 1;
                            false
                        }
                        StoreResult::Full => {
                            self.counters.stores_full += 1;
                            false
                        }
                        StoreResult::Invalid(_) => {
                            self.counters.stores_invalid += 1;
                            false
                        }
                    }
                };
                self.reply(from, msg.txid, Body::Stored { ok }, budget);
            }
            Body::Hold { key, sig, .. } => {
                let ok = proven && self.check_hold(now, &key, token, sig);
                if ok && self.rdv.register(now, key, from) {
                    self.counters.holds_accepted += 1;
                } else {
                    self.counters.holds_refused += 1;
                }
                let body = Body::Held { ok, token: self.tokens.mint(&from), your_addr: from };
                self.reply(from, msg.txid, body, budget);
            }
            Body::Forward { key, payload } => match self.rdv.forward(now, &key, from, req_len) {
                Some(holder) => {
                    self.counters.forwards += 1;
                    let body = Body::Forwarded { from, payload };
                    // Smaller than the request: an address in place of the 32-byte key.
                    self.send(holder, &Msg { txid: msg.txid, sender: self.id, body }, req_len);
                }
                None => self.counters.forwards_refused += 1,
            },
            Body::Allocate { key, ticket, token } => {
                if token.is_some_and(|t| self.tokens.valid(&from, &t)) {
                    self.on_allocate(now, from, (msg.txid, req_len), key, ticket);
                } else if let Some(r) = self.relay.as_mut() {
                    // No slot and no invitation for an address not proven: a spoofed source
                    // gets nothing, and the real one asks again with this (smaller) token.
                    r.note_unproven();
                    self.reply(from, msg.txid, Body::Retry { token: self.tokens.mint(&from) }, req_len);
                }
            }
            Body::Join { ticket } => {
                let caller = self.relay.as_mut().and_then(|r| r.join(now, &ticket, from));
                if let Some((caller, new)) = caller {
                    let secs = self.relay.as_ref().map_or(0, |r| r.config().lifetime.as_secs() as u32);
                    let body = Body::Relaying { ticket, ok: true, secs };
                    // The callee is registered here (its address is proven), and the caller is
                    // told once, in answer to its larger `Allocate`.
                    self.reply(from, msg.txid, body, MAX_DATAGRAM);
                    if new {
                        self.reply(caller, msg.txid, body, MAX_DATAGRAM);
                    }
                }
            }
            Body::Reply { to, payload } => {
                // Charged at its own size: `from` may take a few bytes more than `to` (a port
                // above 16383 is a 3-byte varint), and must still be passed on.
                let replied = Msg { txid: msg.txid, sender: self.id, body: Body::Replied { from, payload } };
                let mut scratch = [0u8; MAX_DATAGRAM];
                let len = replied.encode(&mut scratch).unwrap_or(usize::MAX);
                if self.rdv.reply(now, from, to, len) {
                    self.counters.replies_relayed += 1;
                    self.send(to, &replied, len);
                } else {
                    self.counters.replies_refused += 1;
                }
            }
            _ => {}
        }
    }

    /// A caller wants a relay to the device registered for `key`: invite the device (out of its
    /// forwarding allowance), or refuse at once so the caller tries elsewhere.
    fn on_allocate(&mut self, now: Instant, from: SocketAddr, req: (u32, usize), key: [u8; 32], ticket: Ticket) {
        let (txid, req_len) = req;
        let holder = match self.relay.is_some() {
            true => self.rdv.forward(now, &key, from, req_len),
            false => None,
        };
        let made = match (holder, self.relay.as_mut()) {
            (Some(holder), Some(r)) => r.allocate(now, ticket, from, holder).then_some(holder),
            _ => None,
        };
        match made {
            // Smaller than the request: the ticket without the key.
            Some(holder) => {
                self.send(holder, &Msg { txid, sender: self.id, body: Body::Invite { ticket } }, req_len);
            }
            None => self.reply(from, txid, Body::Relaying { ticket, ok: false, secs: 0 }, req_len),
        }
    }

    /// A hold must be signed by the blinded key of the record we store under `key`.
    fn check_hold(&self, now: Instant, key: &[u8; 32], token: Option<Token>, sig: &[u8]) -> bool {
        let (Some(token), Ok(sig)) = (token, <[u8; message::SIG_LEN]>::try_from(sig)) else { return false };
        let Some(rec) = self.store.get(&NodeId(*key), self.unix(now)) else { return false };
        let Ok(view) = record::parse(rec.as_bytes()) else { return false };
        blind::verify(&view.blinded, &message::hold_message(&self.id, &token, key), &sig)
    }

    /// Answers with the nodes nearest `target` (and, for a value query, the record if we hold
    /// it), trimmed to `budget`: first nodes go, then the record.
    fn reply_nodes(&mut self, now: Instant, to: SocketAddr, txid: u32, target: &NodeId, value: bool, budget: usize) {
        // Nodes of the requester's own family only: the other family is of no use to it.
        let (v6, each) = if to.is_ipv6() { (true, message::NODE6_LEN) } else { (false, message::NODE4_LEN) };
        let mut list = [0u8; MAX_NODES * NODE6_LEN];
        let mut len = 0;
        let mut near = [None; MAX_NODES];
        let n = self.table.closest_refs(target, &mut near);
        for e in near[..n].iter().flatten().filter(|e| e.addr.is_ipv6() == v6) {
            len = message::put_node(&mut list, len, &e.id, &e.addr).unwrap_or(len);
        }
        let all = len;
        let token = self.tokens.mint(&to);
        let unix = self.unix(now);
        let mut rec = if value { self.store.get(target, unix).copied() } else { None };
        let mut trimmed = false;
        loop {
            let nodes = &list[..len];
            let (nodes4, nodes6): (&[u8], &[u8]) = if v6 { (&[], nodes) } else { (nodes, &[]) };
            let body = match &rec {
                Some(r) => Body::Value { token, record: r.as_bytes(), nodes4, nodes6 },
                None => Body::Nodes { token, nodes4, nodes6 },
            };
            match self.send(to, &Msg { txid, sender: self.id, body }, budget) {
                Sent::Queued | Sent::Full => break,
                Sent::TooBig if len > 0 => len -= each,
                Sent::TooBig if rec.is_some() => {
                    rec = None;
                    len = all;
                }
                Sent::TooBig => break,
            }
            trimmed = true;
        }
        if trimmed {
            self.counters.replies_truncated += 1;
        }
    }

    fn reply(&mut self, to: SocketAddr, txid: u32, body: Body<'_>, budget: usize) {
        if self.send(to, &Msg { txid, sender: self.id, body }, budget) == Sent::TooBig {
            self.counters.replies_truncated += 1;
        }
    }

    fn on_reply(&mut self, now: Instant, from: SocketAddr, client: bool, msg: &Msg<'_>) {
        let Some(pi) = self.pending.iter().position(|p| p.txid == msg.txid && p.dst == from) else {
            self.counters.dropped_unsolicited += 1;
            return;
        };
        let p = self.pending.swap_remove(pi);
        match (p.what, msg.body) {
            (What::Store, Body::Stored { ok: true }) if self.holds.accepted(now, from) => {
                while let Some(t) = self.holds.due(now) {
                    self.send_hold(now, t);
                }
            }
            (What::Hold, Body::Held { ok, token, your_addr }) => {
                self.push_event(DhtEvent::Reflexive { addr: your_addr, reporter: from });
                if ok {
                    self.holds.held(now, from, token);
                } else {
                    self.hold_lost(from);
                }
            }
            (What::Hold, _) => self.hold_lost(from),
            _ => {}
        }
        // It answered at the address we asked: that proves the address.
        if !client
            && self.add_verified(now, msg.sender, from) != Insert::Refused
            && let Some(tok) = reply_token(&msg.body)
        {
            self.table.set_token(&msg.sender, tok, now);
        }
        if let Body::Pong { your_addr, .. } = msg.body {
            self.push_event(DhtEvent::Reflexive { addr: your_addr, reporter: from });
            if !self.joined {
                self.joined = true;
                self.start(now, self.id, Kind::Nodes, Owner::Join, None);
            }
        }
        let What::Query { slot, lid } = p.what else { return };
        if !self.live(slot, lid) {
            return;
        }
        if let Body::Retry { token } = msg.body
            && p.retries > 0
            && let Some(l) = self.lookups[slot].as_ref()
        {
            let (target, kind) = (l.lookup.target, l.lookup.kind);
            self.send_query(from, p.txid, target, kind, Some(token));
            let deadline = now + self.cfg.query_timeout;
            self.pending.push(Pending { deadline, retries: p.retries - 1, ..p });
            return;
        }
        let unix = self.unix(now);
        let Some(l) = self.lookups[slot].as_mut() else { return };
        let asked = p.id.unwrap_or(msg.sender);
        let depth = l.lookup.depth_of(&asked).saturating_add(1);
        let (token, rec, n4, n6) = match msg.body {
            Body::Nodes { token, nodes4, nodes6 } => (token, None, nodes4, nodes6),
            Body::Value { token, record, nodes4, nodes6 } => (token, Some(record), nodes4, nodes6),
            _ => {
                l.lookup.failed(&asked);
                self.advance(now, slot);
                return;
            }
        };
        let mut got_value = false;
        if let Some(bytes) = rec {
            if l.record.as_ref().is_some_and(|(_, b)| b.as_bytes() == bytes) {
                // The copy we already checked: no second signature check.
                got_value = true;
                if let Some(h) = l.holders.iter_mut().find(|h| h.is_none()) {
                    *h = Some(from);
                }
            } else {
                match record::check(bytes, unix) {
                    Ok(v) if v.key() == l.lookup.target.0 => {
                        got_value = true;
                        if l.record.is_none_or(|(s, _)| v.seq > s)
                            && let Some(buf) = RecordBuf::from_slice(bytes)
                        {
                            l.record = Some((v.seq, buf));
                            l.holders = [None; MAX_HOLDERS];
                            l.holders[0] = Some(from);
                        }
                    }
                    // A forgery, an expired copy or one for another key: ignored, the lookup goes on.
                    _ => self.counters.records_invalid += 1,
                }
            }
        }
        l.lookup.replied(&asked, token, got_value);
        for (id, addr) in message::nodes(n4, false).chain(message::nodes(n6, true)) {
            if id != self.id {
                l.lookup.add(id, addr, depth, None);
            }
        }
        self.advance(now, slot);
    }

    /// Sends what lookup `slot` may send now, or ends it.
    fn advance(&mut self, now: Instant, slot: usize) {
        loop {
            let Some(l) = self.lookups[slot].as_mut() else { return };
            let enough = l.lookup.kind == Kind::Value && l.lookup.values >= self.cfg.value_quorum;
            if enough || l.lookup.finished() {
                break;
            }
            if self.pending.len() >= self.cfg.max_pending {
                return;
            }
            let Some(c) = l.lookup.next(self.cfg.alpha) else { return };
            let lid = l.id;
            let (target, kind) = (l.lookup.target, l.lookup.kind);
            let txid = self.rng.next_u32();
            self.send_query(c.addr, txid, target, kind, c.token);
            self.pending.push(Pending {
                txid,
                dst: c.addr,
                id: Some(c.id),
                deadline: now + self.cfg.query_timeout,
                retries: self.cfg.retries,
                what: What::Query { slot, lid },
            });
        }
        self.finish(now, slot);
    }

    fn finish(&mut self, now: Instant, slot: usize) {
        let Some(l) = self.lookups[slot].take() else { return };
        self.pending.retain(|p| p.what != What::Query { slot, lid: l.id });
        let stats = LookupStats { rounds: l.lookup.rounds(), msgs: l.lookup.msgs };
        let key = l.lookup.target.0;
        match l.lookup.kind {
            Kind::Value => {
                let ev = match l.record {
                    Some((_, record)) => DhtEvent::Found { lookup: l.id, key, record, stats, holders: l.holders },
                    None => DhtEvent::NotFound { lookup: l.id, key, stats },
                };
                self.push_event(ev);
            }
            Kind::Nodes => {
                if l.owner == Owner::Join {
                    // Joined: now learn every part of the ID space (the next input starts them).
                    self.table.refresh_all();
                }
                if l.owner != Owner::User {
                    self.refresh_soon = true;
                }
                if l.owner == Owner::User {
                    let found = l.lookup.closest_done().count();
                    let nearest = l.lookup.closest_done().next().map(|c| c.id);
                    self.push_event(DhtEvent::Closest { lookup: l.id, found, nearest, stats });
                }
            }
            Kind::Publish => {
                let mut stored_at = 0;
                if let Some((_, rec)) = l.record {
                    let targets: [Option<(SocketAddr, Token)>; K] = {
                        let mut t = [None; K];
                        for (slot, c) in t.iter_mut().zip(l.lookup.closest_done()) {
                            *slot = c.token.map(|tok| (c.addr, tok));
                        }
                        t
                    };
                    let until = now + 2 * self.cfg.query_timeout;
                    for (rank, c) in l.lookup.closest_done().enumerate() {
                        if let Some(tok) = c.token {
                            self.holds.offer(until, key, c.id, c.addr, tok, rank as u8);
                        }
                    }
                    for (addr, token) in targets.into_iter().flatten() {
                        let txid = self.rng.next_u32();
                        let msg = Msg { txid, sender: self.id, body: Body::Store { token, record: rec.as_bytes() } };
                        if self.send(addr, &msg, MAX_DATAGRAM) == Sent::Queued {
                            stored_at += 1;
                            if self.pending.len() < self.cfg.max_pending {
                                let deadline = now + 2 * self.cfg.query_timeout;
                                let what = What::Store;
                                self.pending.push(Pending { txid, dst: addr, id: None, deadline, retries: 0, what });
                            }
                        }
                    }
                }
                self.push_event(DhtEvent::Published { lookup: l.id, key, stored_at });
            }
        }
        self.spare.push(l.lookup);
    }

    fn send_query(&mut self, to: SocketAddr, txid: u32, target: NodeId, kind: Kind, token: Option<Token>) {
        let pad_to = match (token, kind) {
            (Some(_), _) => 0,
            (None, Kind::Value) => PAD_VALUE,
            (None, _) => PAD_QUERY,
        };
        let sender = self.id;
        let build = |pad| Msg {
            txid,
            sender,
            body: match kind {
                Kind::Value => Body::FindValue { key: target.0, token, pad },
                _ => Body::FindNode { target, token, pad },
            },
        };
        self.send(to, &build(pad_for(pad_to, build)), MAX_DATAGRAM);
    }

    /// A one-shot, unpadded-budget ping to a newcomer (see `on_request`).
    fn verify(&mut self, now: Instant, id: NodeId, to: SocketAddr) {
        if self.pending.iter().any(|p| p.dst == to && p.what == What::Ping) {
            return;
        }
        let txid = self.rng.next_u32();
        self.send_ping(to, txid, None);
        let deadline = now + self.cfg.query_timeout;
        self.pending.push(Pending { txid, dst: to, id: Some(id), deadline, retries: 0, what: What::Ping });
    }

    fn ping(&mut self, now: Instant, id: Option<NodeId>, to: SocketAddr) {
        if self.pending.len() >= self.cfg.max_pending
            || self.pending.iter().any(|p| p.dst == to && p.what == What::Ping)
        {
            return;
        }
        let token = id.and_then(|id| self.table.get(&id)).and_then(|e| self.fresh_token(now, e));
        let txid = self.rng.next_u32();
        self.send_ping(to, txid, token);
        let deadline = now + self.cfg.query_timeout;
        self.pending.push(Pending { txid, dst: to, id, deadline, retries: self.cfg.retries, what: What::Ping });
    }

    fn send_ping(&mut self, to: SocketAddr, txid: u32, token: Option<Token>) {
        let pad_to = if token.is_some() { 0 } else { PAD_PING };
        let sender = self.id;
        let build = |pad| Msg { txid, sender, body: Body::Ping { token, pad } };
        self.send(to, &build(pad_for(pad_to, build)), MAX_DATAGRAM);
    }

    /// The retry goes without a token, padded: if the peer restarted or our address changed, it
    /// no longer accepts our token and may not answer an unpadded request in full.
    fn resend(&mut self, now: Instant, p: Pending) {
        match p.what {
            What::Ping => self.send_ping(p.dst, p.txid, None),
            What::Query { slot, lid } => {
                if !self.live(slot, lid) {
                    return;
                }
                let Some(l) = self.lookups[slot].as_mut() else { return };
                let Some(id) = p.id else { return };
                l.lookup.stalled(&id);
                let (target, kind) = (l.lookup.target, l.lookup.kind);
                self.send_query(p.dst, p.txid, target, kind, None);
                // The stalled query no longer holds a slot: ask the next candidate meanwhile.
                self.advance(now, slot);
            }
            What::Hold => {
                let t = self.holds.active().find(|t| t.addr == p.dst).copied();
                if let Some(t) = t {
                    self.queue_hold(p.txid, &t);
                }
            }
            What::Store => {}
        }
    }

    /// Encodes `msg` into the transmit queue if it takes at most `budget` bytes.
    fn send(&mut self, dst: SocketAddr, msg: &Msg<'_>, budget: usize) -> Sent {
        let Some(room) = self.tx.room() else {
            self.counters.dropped_tx_full += 1;
            return Sent::Full;
        };
        let limit = budget.min(MAX_DATAGRAM);
        let fits_room = room.len() >= limit;
        let end = limit.min(room.len());
        match msg.encode(&mut room[..end]) {
            Some(n) => {
                if self.client {
                    room[1] |= message::CLIENT_FLAG;
                }
                self.tx.commit(dst, n);
                self.counters.tx += 1;
                self.counters.tx_bytes += n as u64;
                Sent::Queued
            }
            None if fits_room => Sent::TooBig,
            None => {
                self.counters.dropped_tx_full += 1;
                Sent::Full
            }
        }
    }

    fn push_event(&mut self, ev: DhtEvent) {
        if self.events.len() < self.cfg.events {
            self.events.push_back(ev);
        }
    }
}

/// The pad that brings the message `build` makes to at least `pad_to` bytes.
fn pad_for(pad_to: usize, build: impl Fn(&'static [u8]) -> Msg<'static>) -> &'static [u8] {
    if pad_to == 0 {
        return &[];
    }
    // Requests without a pad are small; one that does not fit here gets no pad (and a short reply).
    let mut scratch = [0u8; 256];
    let Some(bare) = build(&[]).encode(&mut scratch) else { return &[] };
    // The pad's length prefix is one byte below 128 and two from there on.
    let pad = match pad_to.saturating_sub(bare) {
        0 => 0,
        p if p < 128 => p,
        p => p - 1,
    };
    &ZEROS[..pad.min(ZEROS.len())]
}

fn reply_token(body: &Body<'_>) -> Option<Token> {
    match body {
        Body::Pong { token, .. } | Body::Nodes { token, .. } | Body::Value { token, .. } | Body::Retry { token } => {
            Some(*token)
        }
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A relaying node whose owner does not drain it: full-size datagrams are dropped and
    /// counted once the queue is short of room, never a panic; what was queued comes out whole.
    #[test]
    fn relaying_into_a_full_queue_drops_and_counts() {
        let t0 = Instant::now();
        let cfg = NodeConfig {
            relay: Some(RelayConfig { rate: 100_000_000, burst: 10_000_000, ..RelayConfig::default() }),
            tx_bytes: 3000,
            ..NodeConfig::default()
        };
        let mut node = Node::new(NodeId([1; 32]), cfg, Rng::seeded(1), t0, 0);
        let (a, b): (SocketAddr, SocketAddr) = ("203.0.113.1:1".parse().unwrap(), "198.51.100.2:2".parse().unwrap());
        let relay = node.relay.as_mut().unwrap();
        assert!(relay.allocate(t0, [7; 16], a, b));
        assert!(relay.join(t0, &[7; 16], b).is_some());
        let mut packet = [3u8; MAX_DATAGRAM];
        packet[1] = 1;
        for _ in 0..10 {
            assert!(node.relay_datagram(t0, a, &packet));
        }
        assert!(node.counters().dropped_tx_full > 0);
        let mut out = [0u8; MAX_DATAGRAM];
        let mut sent = 0;
        while let Some((dst, n)) = node.poll_transmit(&mut out) {
            assert_eq!((dst, &out[..n]), (b, &packet[..]));
            sent += 1;
        }
        assert_eq!(sent + node.counters().dropped_tx_full, 10);
    }

    /// Datagrams come out whole and in order, whether the owner drains the queue after every
    /// input or lets it fill (then the waiting ones move to the front), and a full queue refuses.
    #[test]
    fn tx_queue_keeps_order_and_bounds() {
        let mut q = TxQueue::new(3000, 8);
        let addr = |i: u8| SocketAddr::from(([198, 51, 100, i], 7600));
        let mut out = [0u8; MAX_DATAGRAM];
        let mut next_in = 0u8;
        let mut next_out = 0u8;
        for round in 0..50 {
            // Put in 1..=3 datagrams of 700..1100 bytes, take out one or two.
            for _ in 0..1 + round % 3 {
                let len = 700 + (usize::from(next_in) * 37) % 400;
                let Some(room) = q.room() else { break };
                if room.len() < len {
                    break;
                }
                room[..len].fill(next_in);
                q.commit(addr(next_in), len);
                next_in = next_in.wrapping_add(1);
            }
            for _ in 0..1 + round % 2 {
                let Some((dst, n)) = q.pop(&mut out) else { break };
                assert_eq!(dst, addr(next_out));
                assert_eq!(n, 700 + (usize::from(next_out) * 37) % 400);
                assert!(out[..n].iter().all(|&b| b == next_out));
                next_out = next_out.wrapping_add(1);
            }
            assert!(q.meta.len() <= 8 && q.tail <= q.buf.len());
        }
        assert!(next_out > 20);
        let mut full = TxQueue::new(MAX_DATAGRAM, 2);
        full.commit(addr(1), 10);
        full.commit(addr(2), 10);
        assert!(full.room().is_none());
    }

    fn padded(pad_to: usize, build: impl Fn(&'static [u8]) -> Msg<'static> + Copy) -> usize {
        let mut out = [0u8; MAX_DATAGRAM];
        build(pad_for(pad_to, build)).encode(&mut out).unwrap()
    }

    #[test]
    fn tokenless_requests_are_padded_to_hold_the_reply() {
        let mut out = [0u8; MAX_DATAGRAM];
        let sender = NodeId([7; 32]);
        for txid in [0u32, 300, u32::MAX] {
            let ping = padded(PAD_PING, |pad| Msg { txid, sender, body: Body::Ping { token: None, pad } });
            let pong = Msg {
                txid,
                sender,
                body: Body::Pong { token: [0; 8], your_addr: "[2001:db8::1]:65535".parse().unwrap() },
            };
            let pong = pong.encode(&mut out).unwrap();
            assert!(ping >= pong, "{ping} < {pong}");
            for pad_to in [PAD_QUERY, PAD_VALUE] {
                let n = padded(pad_to, |pad| Msg {
                    txid,
                    sender,
                    body: Body::FindNode { target: sender, token: None, pad },
                });
                assert!(n >= pad_to && n <= pad_to + 1, "{n} for {pad_to}");
            }
        }
    }
}
