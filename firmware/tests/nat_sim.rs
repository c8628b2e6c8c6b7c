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
    let relay = NodeConfig { relay: Some(RelayConfig::default()), ..NodeConfig::default() };
    for (i, n) in nodes {
        let cfg = if n >= 10 { relay } else { NodeConfig::default() };
        net.start_network_with(i, n, &[boot], cfg);
        net.run_for(50 * MS);
    }
    net.run_for(5000 * MS);
    Homes { net, a: ia, b: ib, nat_a, nat_b }
}

/// A calls B (who answers at once).
fn call_across(seed: u64, a: Option<NatKind>, b: Option<NatKind>, same_router: bool) -> Outcome {
    let Homes { mut net, a: ia, b: ib, nat_b: nb, .. } = homes(seed, a, b, same_router);
    let t0 = net.elapsed();
    net.command(ia, Command::Press(1)).unwrap();
    net.run_for(3000 * MS);
    let connected = net.nodes[ia].events.iter().find_map(|(t, e)| match e {
        DeviceEvent::Call(CallEvent::Connected { .. }) => Some(*t - t0),
        _ => None,
    });
    let b_id = net.id(ib);
    let path = net.nodes[ia].device.path_to(&b_id);
    let b_public = nb.map(|k| IpAddr::V4(net.nats[k].public)).unwrap_or(net.nodes[ib].addr.ip());
    let direct = path.is_some_and(|p| p.ip() == b_public || p == net.nodes[ib].addr);
    // Still talking 10 s later: the path works both ways (keepalives, no peer timeout).
    net.run_for(10_000 * MS);
    let still_up = net.nodes[ia].device.phase() == Phase::InCall && net.nodes[ib].device.phase() == Phase::InCall;
    let class = net.nodes[ia].device.path_class(&b_id);
    let b_class = net.nodes[ib].device.path_class(&net.id(ia));
    Outcome { connected, path, direct, class, b_class, still_up }
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

/// Pairs that need a birthday punch or a relay.
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
            eprintln!(
                "{:>18} -> {:<18} connected {:>9} path {:<20} {:?}/{:?} still up {}",
                name(a),
                name(b),
                o.connected.map_or("no".into(), |t| format!("{} ms", t.as_millis())),
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
        if needs_more_than_a_punch(*a, *b) {
            // Through a relay, both ways, in well under 2 s.
            assert!(t < 1500 * MS, "{} -> {}: {t:?}", name(*a), name(*b));
            assert_eq!((o.class, o.b_class), (Some(PathClass::Relay), Some(PathClass::Relay)));
            assert!(o.still_up, "{} -> {}", name(*a), name(*b));
            continue;
        }
        // A lookup (2 round trips), the handshake forwarded, the answer, the call set-up: 25 ms
        // hops, well under a second.
        assert!(t < 600 * MS, "{} -> {}: {t:?}", name(*a), name(*b));
        assert!(o.direct && o.still_up, "{} -> {}: path {:?}", name(*a), name(*b), o.path);
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
        let t0 = net.elapsed();
        let mut moved = None;
        for _ in 0..100 {
            net.run_for(50 * MS);
            if net.nodes[b].device.path_to(&a_id).is_some_and(|p| p.ip() == IpAddr::V4(new_ip)) {
                moved = Some(net.elapsed() - t0);
                break;
            }
        }
        let moved = moved.unwrap_or_else(|| panic!("{kind:?}: B never heard A's new address"));
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
