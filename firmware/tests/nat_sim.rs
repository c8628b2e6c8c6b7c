//! Calls between homes behind NAT routers, in the deterministic simulator: the devices' configs
//! hold keys only; they find each other through a DHT of public nodes and punch through their
//! NATs with the handshake forwarded by the rendezvous nodes holding the callee's record.
use peercom::call::{CallEvent, Phase};
use peercom::config::{CallSettings, Config, DEFAULT_LAN_GROUP};
use peercom::device::{Command, DeviceEvent};
use peercom::dht::node::NodeConfig;
use peercom::dht::relay::RelayConfig;
use peercom::session::PathClass;
use peercom::sim::nat::NatKind;
use peercom::sim::{SimNet, sim_config};
use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

const MS: Duration = Duration::from_millis(1);

fn keys_only(n: u8, name: &str, contacts: &[(&str, Option<u8>, &[u8])], lan: bool) -> Config {
    let call = CallSettings { auto_answer: true, ..Default::default() };
    let mut c = sim_config(n, name, contacts, call);
    for d in c.contacts.iter_mut().flat_map(|c| c.devices.iter_mut()) {
        d.addr = None;
    }
    c.lan_group = lan.then_some(DEFAULT_LAN_GROUP);
    c
}

struct Outcome {
    connected: Option<Duration>,
    /// When both sides' sessions first used a direct (or LAN) path, after the press.
    direct_at: Option<Duration>,
    /// Where A's session to B sends, and whether that is B's router (a direct path).
    path: Option<SocketAddr>,
    direct: bool,
    class: Option<PathClass>,
    /// B's side of the session goes through a relay too.
    b_class: Option<PathClass>,
    still_up: bool,
}

struct Homes {
    net: SimNet,
    a: usize,
    b: usize,
    nat_a: Option<usize>,
    nat_b: Option<usize>,
}

/// A behind `a`, B behind `b` (None: a public address), 6 public DHT nodes, which relay;
/// 25 ms each way. Everyone has joined and announced when this returns.
fn homes(seed: u64, a: Option<NatKind>, b: Option<NatKind>, same_router: bool) -> Homes {
    homes_with(seed, a, b, same_router, RelayConfig::default())
}

fn homes_with(seed: u64, a: Option<NatKind>, b: Option<NatKind>, same_router: bool, relay: RelayConfig) -> Homes {
    let mut net = SimNet::new(seed);
    net.latency = 25 * MS;
    let mut nodes = Vec::new();
    for h in 10..16 {
        nodes.push((net.add(h, &keys_only(h, &format!("H{h}"), &[], false)), h));
    }
    let lan = same_router;
    let cfg_a = keys_only(1, "A", &[("B", Some(1), &[2])], lan);
    let cfg_b = keys_only(2, "B", &[("A", Some(1), &[1])], lan);
    let nat_a = a.map(|k| net.add_nat(k));
    let nat_b = if same_router { nat_a } else { b.map(|k| net.add_nat(k)) };
    let ia = match nat_a {
        Some(k) => net.add_behind(1, &cfg_a, k),
        None => net.add(1, &cfg_a),
    };
    let ib = match nat_b {
        Some(k) => net.add_behind(2, &cfg_b, k),
        None => net.add(2, &cfg_b),
    };
    nodes.push((ia, 1));
    nodes.push((ib, 2));
    let boot = nodes[0].0;
    let relay = NodeConfig { relay: Some(relay), ..NodeConfig::default() };
    for (i, n) in nodes {
        let cfg = if n >= 10 { relay } else { NodeConfig::default() };
        net.start_network_with(i, n, &[boot], cfg);
        net.run_for(50 * MS);
    }
    net.run_for(5000 * MS);
    Homes { net, a: ia, b: ib, nat_a, nat_b }
}

/// Runs in 50 ms steps until `cond` holds (at most `limit`); how long that took.
fn wait_until(net: &mut SimNet, limit: Duration, cond: impl Fn(&SimNet) -> bool) -> Option<Duration> {
    let t0 = net.elapsed();
    while net.elapsed() - t0 < limit {
        net.run_for(50 * MS);
        if cond(net) {
            return Some(net.elapsed() - t0);
        }
    }
    None
}

/// A calls B (who answers at once); the call runs for 13 s.
fn call_across(seed: u64, a: Option<NatKind>, b: Option<NatKind>, same_router: bool) -> Outcome {
    let Homes { net, a: ia, b: ib, nat_b: nb, .. } = homes(seed, a, b, same_router);
    call_between(net, ia, ib, nb)
}

fn call_between(net: SimNet, ia: usize, ib: usize, nb: Option<usize>) -> Outcome {
    call_between_with(net, ia, ib, nb).1
}

/// `call_between` that hands the network back too (for its counters).
fn call_between_keep(net: SimNet, ia: usize, ib: usize) -> (SimNet, Outcome) {
    call_between_with(net, ia, ib, None)
}

fn call_between_with(mut net: SimNet, ia: usize, ib: usize, nb: Option<usize>) -> (SimNet, Outcome) {
    let t0 = net.elapsed();
    let (a_id, b_id) = (net.id(ia), net.id(ib));
    net.command(ia, Command::Press(1)).unwrap();
    let mut direct_at = None;
    // Still talking 10 s after the first 3: the path works both ways (keepalives, no peer
    // timeout), and a birthday punch had its time.
    for _ in 0..13_000 / 50 {
        net.run_for(50 * MS);
        let classes = [net.nodes[ia].device.path_class(&b_id), net.nodes[ib].device.path_class(&a_id)];
        if direct_at.is_none() && classes.iter().all(|c| c.is_some_and(|c| c != PathClass::Relay)) {
            direct_at = Some(net.elapsed() - t0);
        }
    }
    let connected = net.nodes[ia].events.iter().find_map(|(t, e)| match e {
        DeviceEvent::Call(CallEvent::Connected { .. }) => Some(*t - t0),
        _ => None,
    });
    let path = net.nodes[ia].device.path_to(&b_id);
    let b_public = nb.map(|k| IpAddr::V4(net.nats[k].public)).unwrap_or(net.nodes[ib].addr.ip());
    let direct = path.is_some_and(|p| p.ip() == b_public || p == net.nodes[ib].addr);
    let still_up = net.nodes[ia].device.phase() == Phase::InCall && net.nodes[ib].device.phase() == Phase::InCall;
    let class = net.nodes[ia].device.path_class(&b_id);
    let b_class = net.nodes[ib].device.path_class(&a_id);
    (net, Outcome { connected, direct_at, path, direct, class, b_class, still_up })
}

const KINDS: [Option<NatKind>; 5] = [
    None,
    Some(NatKind::FullCone),
    Some(NatKind::AddressRestricted),
    Some(NatKind::PortRestricted),
    Some(NatKind::Symmetric),
];

fn name(k: Option<NatKind>) -> &'static str {
    match k {
        None => "none",
        Some(NatKind::FullCone) => "full-cone",
        Some(NatKind::AddressRestricted) => "address-restricted",
        Some(NatKind::PortRestricted) => "port-restricted",
        Some(NatKind::Symmetric) => "symmetric",
    }
}

/// Pairs that plain hole punching does not connect directly: a random-mapping (symmetric) NAT
/// facing a port-restricted one (a birthday punch does, after a relay) or another symmetric
/// one (a relay only).
fn needs_more_than_a_punch(a: Option<NatKind>, b: Option<NatKind>) -> bool {
    let hard = |k| matches!(k, Some(NatKind::PortRestricted | NatKind::Symmetric));
    (a == Some(NatKind::Symmetric) && hard(b)) || (b == Some(NatKind::Symmetric) && hard(a))
}

#[test]
fn every_pair_with_a_consistent_mapping_calls_directly_through_rendezvous() {
    let mut table = Vec::new();
    for a in KINDS {
        for b in KINDS {
            let o = call_across(7, a, b, false);
            let ms = |t: Option<Duration>| t.map_or("no".into(), |t| format!("{} ms", t.as_millis()));
            eprintln!(
                "{:>18} -> {:<18} connected {:>7} direct {:>7} path {:<20} {:?}/{:?} still up {}",
                name(a),
                name(b),
                ms(o.connected),
                ms(o.direct_at),
                o.path.map_or("-".into(), |p| p.to_string()),
                o.class,
                o.b_class,
                o.still_up
            );
            table.push((a, b, o));
        }
    }
    for (a, b, o) in &table {
        let t = o.connected.unwrap_or_else(|| panic!("{} -> {} did not connect", name(*a), name(*b)));
        let pair = format!("{} -> {}", name(*a), name(*b));
        if needs_more_than_a_punch(*a, *b) {
            // Through a relay first, both ways, in well under 2 s.
            assert!(t < 1500 * MS, "{pair}: {t:?}");
            assert!(o.still_up, "{pair}");
            if *a == *b {
                // Random facing random: no birthday punch, the relay it is.
                assert_eq!((o.class, o.b_class), (Some(PathClass::Relay), Some(PathClass::Relay)), "{pair}");
            } else {
                // Then a birthday punch moves the call to a direct path, in the background.
                assert_eq!((o.class, o.b_class), (Some(PathClass::Direct), Some(PathClass::Direct)), "{pair}");
                assert!(o.direct, "{pair}: path {:?}", o.path);
                let d = o.direct_at.unwrap_or_else(|| panic!("{pair}: never direct"));
                assert!(d > t && d < 5000 * MS, "{pair}: direct after {d:?}");
            }
            continue;
        }
        // A lookup (2 round trips), the handshake forwarded, the answer, the call set-up: 25 ms
        // hops, well under a second.
        assert!(t < 600 * MS, "{} -> {}: {t:?}", name(*a), name(*b));
        assert!(o.direct && o.still_up, "{} -> {}: path {:?}", name(*a), name(*b), o.path);
        assert!(o.class != Some(PathClass::Relay) && o.b_class != Some(PathClass::Relay), "{pair}");
    }
}

#[test]
fn two_devices_behind_one_router_without_hairpinning_talk_over_the_lan() {
    let o = call_across(3, Some(NatKind::PortRestricted), None, true);
    assert!(o.connected.is_some_and(|t| t < 300 * MS));
    let p = o.path.unwrap();
    assert_eq!(p, "192.168.1.2:7600".parse().unwrap(), "the LAN address, not the router's");
    assert!(o.still_up);
}

/// A's router reboots mid-call and comes back with a new public address; B's router only lets in
/// what B has sent to. A notices the silence, finds B's record again and sends an authenticated
/// keepalive through B's rendezvous nodes: B's session moves to A's new address (roaming, no new
/// handshake), and B's answers there open its NAT to A.
#[test]
fn a_call_survives_a_router_reboot_with_a_new_public_address() {
    for (seed, kind) in [(5, NatKind::PortRestricted), (6, NatKind::AddressRestricted), (7, NatKind::FullCone)] {
        let Homes { mut net, a, b, nat_a, .. } = homes(seed, Some(kind), Some(NatKind::PortRestricted), false);
        net.command(a, Command::Press(1)).unwrap();
        net.run_for(2000 * MS);
        assert_eq!(net.nodes[a].device.phase(), Phase::InCall);
        let a_id = net.id(a);
        let handshakes = net.nodes[b].device.counters().rx_packets;
        let k = nat_a.unwrap();
        let new_ip = std::net::Ipv4Addr::new(198, 18, 1, 99);
        net.nats[k].reboot(Some(new_ip));
        let moved_there =
            |net: &SimNet| net.nodes[b].device.path_to(&a_id).is_some_and(|p| p.ip() == IpAddr::V4(new_ip));
        let moved = wait_until(&mut net, 5000 * MS, moved_there)
            .unwrap_or_else(|| panic!("{kind:?}: B never heard A's new address"));
        assert!(moved <= 2000 * MS, "{kind:?}: path moved after {moved:?}");
        net.run_for(15_000 * MS);
        assert_eq!(net.nodes[a].device.phase(), Phase::InCall, "{kind:?}");
        assert_eq!(net.nodes[b].device.phase(), Phase::InCall, "{kind:?}");
        assert!(net.outcomes(a).is_empty() && net.outcomes(b).is_empty(), "{kind:?}: the call never ended");
        assert!(net.nodes[b].device.counters().rx_packets > handshakes);
        eprintln!("{kind:?}: path moved {} ms after the reboot", moved.as_millis());
    }
}

/// Each device classifies its NAT from the addresses the DHT nodes it talks to report (at
/// least 4 samples from 2 hosts), taken on the socket that carries its calls.
#[test]
fn devices_learn_their_nat_class_from_dht_peers() {
    use peercom::nat::NatClass;
    for (kind, want) in [
        (None, NatClass::Open),
        (Some(NatKind::FullCone), NatClass::Consistent),
        (Some(NatKind::AddressRestricted), NatClass::Consistent),
        (Some(NatKind::PortRestricted), NatClass::Consistent),
        (Some(NatKind::Symmetric), NatClass::Random),
    ] {
        let h = homes(11, kind, None, false);
        let st = h.net.nodes[h.a].device.status();
        assert_eq!(st.network.nat, want, "{kind:?}");
        if let Some(k) = h.nat_a {
            let public = h.net.nats[k].public.to_string();
            assert!(st.network.public.iter().all(|a| a.starts_with(&public)), "{kind:?}: {:?}", st.network.public);
        }
    }
}

/// Two port-restricted homes whose direct path fails at first (a firewall between them): the
/// call goes through a relay, both sides keep probing, and when the direct path opens the call
/// moves to it; when it fails again, back to the relay. The call never drops.
#[test]
fn a_relayed_call_moves_to_a_direct_path_when_one_appears_and_back_when_it_breaks() {
    let Homes { mut net, a, b, nat_a, nat_b } =
        homes(21, Some(NatKind::PortRestricted), Some(NatKind::PortRestricted), false);
    let (pa, pb) = (IpAddr::V4(net.nats[nat_a.unwrap()].public), IpAddr::V4(net.nats[nat_b.unwrap()].public));
    net.cut.push((pa, pb));
    let t0 = net.elapsed();
    net.command(a, Command::Press(1)).unwrap();
    net.run_for(2000 * MS);
    let (ida, idb) = (net.id(a), net.id(b));
    let connected = net.nodes[a].events.iter().find_map(|(t, e)| match e {
        DeviceEvent::Call(CallEvent::Connected { .. }) => Some(*t - t0),
        _ => None,
    });
    let connected = connected.expect("the call connects through the relay");
    assert!(connected < 2000 * MS, "{connected:?}");
    let class = |net: &SimNet| (net.nodes[a].device.path_class(&idb), net.nodes[b].device.path_class(&ida));
    assert_eq!(class(&net), (Some(PathClass::Relay), Some(PathClass::Relay)));
    let relay = net.nodes[a].device.relay_of(&idb).expect("a relay");
    eprintln!("connected through relay {relay} after {} ms", connected.as_millis());

    // The firewall opens: both sides probe every second, so direct within ~2 s.
    net.cut.clear();
    let both = |c| move |net: &SimNet| class(net) == (Some(c), Some(c));
    let direct = wait_until(&mut net, 3000 * MS, both(PathClass::Direct)).expect("the call moved to the direct path");
    assert!(direct <= 2500 * MS, "{direct:?}");
    assert_eq!(net.nodes[a].device.path_to(&idb).map(|p| p.ip()), Some(pb));
    eprintln!("moved to the direct path {} ms after it opened", direct.as_millis());

    // And back to the relay when the direct path fails.
    net.cut.push((pa, pb));
    let back = wait_until(&mut net, 3000 * MS, both(PathClass::Relay)).expect("back on the relay");
    assert!(back <= 2500 * MS, "{back:?}");
    eprintln!("back on the relay {} ms after the direct path broke", back.as_millis());
    net.run_for(10_000 * MS);
    assert_eq!(net.nodes[a].device.phase(), Phase::InCall);
    assert_eq!(net.nodes[b].device.phase(), Phase::InCall);
    assert!(net.outcomes(a).is_empty() && net.outcomes(b).is_empty(), "the call never ended");
}

/// Point 8 for relays: a pair needs the registered device to join with the ticket of a
/// handshake it completed, so a stranger gets no pair (and no relayed byte); an `Allocate` needs
/// a token proving its source address, so spoofed ones fill no slot and tear nothing down; a
/// relay never sends more session bytes than it received, each one passed on unchanged.
#[test]
fn a_relay_pairs_only_devices_that_completed_a_handshake_and_never_amplifies() {
    use peercom::dht::id::NodeId;
    use peercom::dht::message::{Body, Msg};
    let Homes { mut net, a, b, .. } = homes(31, Some(NatKind::Symmetric), Some(NatKind::Symmetric), false);
    net.command(a, Command::Press(1)).unwrap();
    net.run_for(3000 * MS);
    let idb = net.id(b);
    assert_eq!(net.nodes[a].device.phase(), Phase::InCall);
    let relay = net.nodes[a].device.relay_of(&idb).expect("relayed");
    let r = net.nodes.iter().position(|n| n.addr == relay).unwrap();
    let made = |net: &SimNet| net.nodes[r].device.status().network.dht.unwrap().relay.pairs_made;
    assert_eq!(made(&net), 1);

    let stranger: SocketAddr = "203.0.113.5:4000".parse().unwrap();
    let unix = peercom::dht::sim::UNIX_START + net.elapsed().as_secs();
    let key_b = peercom::dht::announce::lookup_keys(&idb, unix)[0].unwrap();
    // A's address as the relay sees it (its NAT's mapping), for a spoofed tear-down.
    let session = |s: &&peercom::sim::Sent| matches!(s.bytes.first(), Some(1..=3));
    let a_public = net.wire.iter().filter(|s| s.to == relay).filter(session).map(|s| s.from).next().unwrap();
    let mut buf = [0u8; 1200];
    let mut send = |net: &mut SimNet, src: SocketAddr, body: Body<'_>| {
        let n = Msg { txid: 9, sender: NodeId([0x55; 32]), body }.encode(&mut buf).unwrap();
        net.inject(r, src, &buf[..n]);
        n
    };
    let from = net.wire.len();
    // Without a token from the relay (proof of its address): a token back, smaller, and nothing
    // else; with a made-up one, the same.
    let asked = send(&mut net, stranger, Body::Allocate { key: key_b, ticket: [7; 16], token: None });
    send(&mut net, stranger, Body::Allocate { key: [1; 32], ticket: [7; 16], token: Some([1; 8]) });
    // A fill of the table from 300 spoofed sources takes no slot, and an Allocate spoofed from
    // A's own address (once enough to replace A's pair) changes nothing.
    for i in 0..300u32 {
        let src = SocketAddr::from(([100, 64 + (i / 250) as u8, (i % 250) as u8, 1], 4000));
        send(&mut net, src, Body::Allocate { key: key_b, ticket: [i as u8; 16], token: None });
    }
    send(&mut net, a_public, Body::Allocate { key: key_b, ticket: [8; 16], token: None });
    net.run_for(1000 * MS);
    // And session packets from the stranger are not passed on.
    let fake = [3u8; 100];
    net.inject(r, stranger, &fake);
    net.run_for(2000 * MS);
    let counters = net.nodes[r].device.status().network.dht.unwrap().relay;
    assert_eq!(made(&net), 1, "no pair for strangers");
    assert_eq!(counters.unproven, 303, "{counters:?}");
    let to_stranger: Vec<_> = net.wire[from..].iter().filter(|s| s.to == stranger).collect();
    assert_eq!(to_stranger.len(), 2, "one answer each");
    for s in &to_stranger {
        let Ok(Msg { body: Body::Retry { .. }, .. }) = Msg::decode(&s.bytes) else { panic!("{:?}", s.bytes) };
        assert!(s.bytes.len() <= asked);
    }
    let invites = net.wire[from..]
        .iter()
        .filter(|s| s.from == relay)
        .filter(|s| matches!(Msg::decode(&s.bytes), Ok(Msg { body: Body::Invite { .. }, .. })))
        .count();
    assert_eq!(invites, 0, "B was never bothered");
    assert!(!net.wire[from..].iter().any(|s| s.from == relay && s.bytes == fake), "nothing relayed");
    // A's pair still carries the call.
    let relayed_after = net.wire[from..].iter().filter(|s| s.from == relay).filter(session).count();
    assert!(relayed_after > 20, "the call still goes through the relay: {relayed_after}");
    assert_eq!(net.nodes[a].device.phase(), Phase::InCall);
    assert_eq!(net.nodes[a].device.path_class(&idb), Some(PathClass::Relay));

    // Over the whole call: what the relay passed on is what it got, byte for byte.
    let into: Vec<&Vec<u8>> = net.wire.iter().filter(|s| s.to == relay).filter(session).map(|s| &s.bytes).collect();
    let out: Vec<&Vec<u8>> = net.wire.iter().filter(|s| s.from == relay).filter(session).map(|s| &s.bytes).collect();
    assert!(out.len() > 20, "the call went through the relay: {}", out.len());
    let bytes = |v: &[&Vec<u8>]| v.iter().map(|b| b.len()).sum::<usize>();
    assert!(bytes(&out) <= bytes(&into), "{} out, {} in", bytes(&out), bytes(&into));
    assert!(out.iter().all(|o| into.contains(o)), "every relayed datagram is one received, unchanged");
}

/// A relay ends a pair after its lifetime however busy it is; the devices notice the silence
/// and pair again (the same ticket: their session goes on), and the call carries on.
#[test]
fn a_relayed_call_outlives_the_relay_pair_lifetime() {
    let relay = RelayConfig { lifetime: Duration::from_secs(20), ..RelayConfig::default() };
    let Homes { mut net, a, b, .. } = homes_with(41, Some(NatKind::Symmetric), Some(NatKind::Symmetric), false, relay);
    net.command(a, Command::Press(1)).unwrap();
    net.run_for(60_000 * MS);
    let idb = net.id(b);
    assert_eq!(net.nodes[a].device.phase(), Phase::InCall);
    assert_eq!(net.nodes[b].device.phase(), Phase::InCall);
    assert!(net.outcomes(a).is_empty() && net.outcomes(b).is_empty(), "the call never ended");
    assert_eq!(net.nodes[a].device.path_class(&idb), Some(PathClass::Relay));
    let made: u64 = net.nodes.iter().filter_map(|n| n.device.status().network.dht).map(|c| c.relay.pairs_made).sum();
    assert!(made >= 3, "paired {made} times in 60 s of 20 s pairs");
    eprintln!("paired {made} times in 60 s");
}

/// A symmetric home (random mapping) calls a port-restricted one: the call connects through a
/// relay, then the birthday punch moves it to a direct path. The bounds: the random side opens
/// at most `MAX_AUX` (256) aux sockets and keeps only the one the call uses (closed once the
/// session is gone); the other side sends at most `MAX_PROBES` (1,024) probes, paced over more
/// than a second, and acts on a repeated go only once (one punch at a time).
#[test]
fn a_birthday_punch_is_bounded_and_cleans_up() {
    use peercom::device::{MAX_AUX, MAX_PROBES};
    let Homes { mut net, a: r, b: c, nat_a, nat_b } =
        homes(41, Some(NatKind::Symmetric), Some(NatKind::PortRestricted), false);
    let (r_pub, c_pub) = (IpAddr::V4(net.nats[nat_a.unwrap()].public), IpAddr::V4(net.nats[nat_b.unwrap()].public));
    let (idr, idc) = (net.id(r), net.id(c));
    let from = net.wire.len();
    net.command(r, Command::Press(1)).unwrap();
    let mut peak = 0;
    for _ in 0..100 {
        net.run_for(50 * MS);
        peak = peak.max(net.nodes[r].aux_open());
    }
    let (sr, sc) = (net.nodes[r].device.status(), net.nodes[c].device.status());
    let (br, bc) = (sr.network.birthday, sc.network.birthday);
    eprintln!("random side {br:?}\nconsistent side {bc:?}");
    assert_eq!((br.started, br.succeeded, bc.started, bc.succeeded), (1, 1, 1, 1));
    assert!(peak <= MAX_AUX && net.nodes[r].aux_peak <= MAX_AUX && net.nodes[r].aux_opened == MAX_AUX);
    assert!(br.probes <= MAX_AUX as u64 && bc.probes <= u64::from(MAX_PROBES));
    // The probes on the wire: from C's router to R's, at distinct ports, paced (16 per 25 ms).
    let probes: Vec<_> =
        net.wire[from..].iter().filter(|s| s.from.ip() == c_pub && s.to.ip() == r_pub && s.bytes[0] == 3).collect();
    let mut ports: Vec<u16> = probes.iter().map(|s| s.to.port()).collect();
    ports.sort_unstable();
    ports.dedup();
    assert!(probes.len() as u64 >= bc.probes && ports.len() as u64 >= bc.probes, "{} probes", probes.len());
    // The call runs on the one aux socket kept; the others are closed.
    let path = sr.network.path.as_ref().expect("in a call");
    assert_eq!((path.class, sc.network.path.as_ref().map(|p| p.class)), (PathClass::Direct, Some(PathClass::Direct)));
    assert!(path.sock >= 1, "the call goes out on an aux socket: {path:?}");
    assert_eq!(net.nodes[r].aux_open(), 1);
    assert!(net.nodes[r].aux[usize::from(path.sock) - 1]);
    assert_eq!(net.nodes[c].aux_peak, 0, "the consistent side opens no socket");
    assert_eq!(net.nodes[r].device.path_class(&idc), Some(PathClass::Direct));
    assert_eq!(net.nodes[c].device.path_to(&idr).map(|a| a.ip()), Some(r_pub));
    // Hang up: once the session is gone, the kept socket closes too.
    net.command(r, Command::Hangup).unwrap();
    net.run_for(60_000 * MS);
    assert_eq!(net.nodes[r].aux_open(), 0);
    assert_eq!(net.nodes[r].device.status().network.birthday.aux_open, 0);
}

/// A firewall between the two homes lets no probe through: the punch gives up after 5 s with
/// every aux socket closed, the call stays on the relay, and later attempts (at most 3 per call,
/// 30 s apart) are bounded the same way.
#[test]
fn a_failed_birthday_punch_closes_its_sockets_and_the_call_stays_on_the_relay() {
    use peercom::device::{MAX_AUX, MAX_PROBES};
    let Homes { mut net, a: c, b: r, nat_a, nat_b } =
        homes(43, Some(NatKind::PortRestricted), Some(NatKind::Symmetric), false);
    let (c_pub, r_pub) = (IpAddr::V4(net.nats[nat_a.unwrap()].public), IpAddr::V4(net.nats[nat_b.unwrap()].public));
    net.cut.push((c_pub, r_pub));
    let from = net.wire.len();
    let t0 = net.elapsed();
    net.command(c, Command::Press(1)).unwrap();
    let mut opened_at = None;
    let mut closed_at = None;
    for _ in 0..200 {
        net.run_for(50 * MS);
        let open = net.nodes[r].aux_open();
        assert!(open <= MAX_AUX);
        if open > 0 && opened_at.is_none() {
            opened_at = Some(net.elapsed());
        }
        if open == 0 && opened_at.is_some() && closed_at.is_none() {
            closed_at = Some(net.elapsed());
        }
    }
    let (opened, closed) = (opened_at.expect("a punch"), closed_at.expect("sockets closed"));
    eprintln!(
        "aux sockets open {} ms after the press, for {} ms",
        (opened - t0).as_millis(),
        (closed - opened).as_millis()
    );
    assert!(closed - opened <= 5100 * MS);
    let (br, bc) = (net.nodes[r].device.status().network.birthday, net.nodes[c].device.status().network.birthday);
    assert_eq!((br.started, br.failed, bc.started, bc.failed), (1, 1, 1, 1), "{br:?} {bc:?}");
    assert_eq!(bc.probes, u64::from(MAX_PROBES));
    let class = |net: &SimNet| (net.nodes[c].device.path_class(&net.id(r)), net.nodes[r].device.path_class(&net.id(c)));
    assert_eq!(class(&net), (Some(PathClass::Relay), Some(PathClass::Relay)));
    // The consistent side's probes were paced: 1,024 over more than 1.5 s.
    let probes: Vec<_> =
        net.wire[from..].iter().filter(|s| s.from.ip() == c_pub && s.to.ip() == r_pub && s.bytes[0] == 3).collect();
    let span = probes.last().unwrap().at - probes.first().unwrap().at;
    assert!(probes.len() >= usize::from(MAX_PROBES) && span >= 1500 * MS, "{} probes in {span:?}", probes.len());
    let burst = probes.iter().filter(|s| s.at <= probes[0].at + 100 * MS).count();
    assert!(burst <= 5 * 16 + 16, "{burst} probes in the first 100 ms");
    // Two more attempts in the next 70 s, one at a time, then no more in this call.
    let mut peak = 0;
    for _ in 0..1400 {
        net.run_for(50 * MS);
        peak = peak.max(net.nodes[r].aux_open());
    }
    let br = net.nodes[r].device.status().network.birthday;
    let bc = net.nodes[c].device.status().network.birthday;
    assert_eq!((br.started, br.failed, bc.started), (3, 3, 3), "{br:?} {bc:?}");
    assert!(peak <= MAX_AUX && bc.probes <= 3 * u64::from(MAX_PROBES));
    assert_eq!(net.nodes[r].aux_open(), 0);
    assert_eq!(net.nodes[c].device.phase(), Phase::InCall);
    assert_eq!(net.nodes[r].device.phase(), Phase::InCall);
    assert!(net.outcomes(c).is_empty() && net.outcomes(r).is_empty(), "the call never ended");
}

/// The birthday punch's success rate over 50 seeds (each direction of the call half the time):
/// 256 mappings among ~64,500 ports and 1,024 probes find each other with probability ≈ 98%.
#[test]
fn birthday_punch_success_rate_over_seeds() {
    let mut firsts = 0;
    let mut direct = 0;
    let mut times = Vec::new();
    const SEEDS: u64 = 50;
    for seed in 0..SEEDS {
        let (ka, kb) = if seed % 2 == 0 {
            (Some(NatKind::Symmetric), Some(NatKind::PortRestricted))
        } else {
            (Some(NatKind::PortRestricted), Some(NatKind::Symmetric))
        };
        let h = homes(1000 + seed, ka, kb, false);
        let r = if seed % 2 == 0 { h.a } else { h.b };
        let (net, o) = call_between_keep(h.net, h.a, h.b);
        let b = net.nodes[r].device.status().network.birthday;
        assert!(o.connected.is_some_and(|t| t < 1500 * MS), "seed {seed}: {:?}", o.connected);
        assert!(o.still_up, "seed {seed}");
        if b.started >= 1 && b.succeeded >= 1 && b.failed == 0 {
            firsts += 1;
        }
        if (o.class, o.b_class) == (Some(PathClass::Direct), Some(PathClass::Direct)) {
            direct += 1;
            times.push(o.direct_at.unwrap_or_default().saturating_sub(o.connected.unwrap_or_default()));
        }
    }
    times.sort_unstable();
    let median = times.get(times.len() / 2).copied().unwrap_or_default();
    eprintln!(
        "birthday punch: first attempt succeeded for {firsts}/{SEEDS} seeds; direct at the end of the call for \
         {direct}/{SEEDS}; direct {} ms after connecting (median), {} ms at most",
        median.as_millis(),
        times.last().copied().unwrap_or_default().as_millis()
    );
    assert!(firsts * 100 >= SEEDS * 90, "{firsts}/{SEEDS}");
    assert!(direct * 100 >= SEEDS * 90, "{direct}/{SEEDS}");
}
