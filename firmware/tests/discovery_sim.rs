//! Finding contacts by key alone, with whole devices in the deterministic simulator: their
//! configs hold no addresses; the DHT (formed by the devices themselves) or LAN beacons must
//! find them. Virtual time, so every run is the same.
use peercom::call::{CallEvent, Outcome, Phase};
use peercom::config::{CallSettings, Config, DEFAULT_LAN_GROUP};
use peercom::device::{Command, DeviceEvent, Via};
use peercom::sim::{SimNet, sim_config};
use std::time::Duration;

const MS: Duration = Duration::from_millis(1);

/// A config whose contacts have keys only (no `addr`).
fn keys_only(n: u8, name: &str, contacts: &[(&str, Option<u8>, &[u8])], lan: bool) -> Config {
    let mut c = sim_config(n, name, contacts, CallSettings::default());
    for d in c.contacts.iter_mut().flat_map(|c| c.devices.iter_mut()) {
        d.addr = None;
    }
    c.lan_group = lan.then_some(DEFAULT_LAN_GROUP);
    c
}

fn phase(net: &SimNet, n: usize) -> Phase {
    net.nodes[n].device.phase()
}

fn incoming(net: &SimNet, n: usize) -> bool {
    net.nodes[n].events.iter().any(|(_, e)| matches!(e, DeviceEvent::Call(CallEvent::Incoming { .. })))
}

fn outcomes(net: &SimNet, n: usize) -> Vec<Outcome> {
    net.outcomes(n)
}

fn located(net: &SimNet, n: usize, via: Via) -> usize {
    net.nodes[n].events.iter().filter(|(_, e)| matches!(e, DeviceEvent::Located { via: v, .. } if *v == via)).count()
}

/// Devices 1 (A), 2 and 3 (Kids: two devices), and `helpers` more devices that only serve the
/// DHT; `online` says which of the Kids' devices join. Everyone bootstraps through device 10.
fn town(seed: u64, online: [bool; 2], helpers: u8) -> (SimNet, usize, [Option<usize>; 2]) {
    let mut net = SimNet::new(seed);
    let mut all = Vec::new();
    let first_helper = net.add(10, &keys_only(10, "H10", &[], false));
    all.push((first_helper, 10));
    for h in 11..10 + helpers {
        all.push((net.add(h, &keys_only(h, &format!("H{h}"), &[], false)), h));
    }
    let a = net.add(1, &keys_only(1, "A", &[("Kids", Some(1), &[2, 3])], false));
    all.push((a, 1));
    let mut kids = [None, None];
    for (k, n) in [2u8, 3].into_iter().enumerate() {
        if online[k] {
            let i = net.add(n, &keys_only(n, &format!("K{n}"), &[("A", Some(1), &[1])], false));
            kids[k] = Some(i);
            all.push((i, n));
        }
    }
    for (i, n) in all {
        net.start_network(i, n, &[first_helper]);
        net.run_for(50 * MS);
    }
    // Joined, announced, records stored.
    net.run_for(3000 * MS);
    (net, a, kids)
}

#[test]
fn every_online_device_of_a_contact_rings_when_found_through_the_dht_alone() {
    let (mut net, a, [k1, k2]) = town(1, [true, true], 8);
    let (k1, k2) = (k1.unwrap(), k2.unwrap());
    let t0 = net.elapsed();
    net.command(a, Command::Press(1)).unwrap();
    net.run_for(1000 * MS);
    assert!(incoming(&net, k1) && incoming(&net, k2), "both of the contact's devices ring");
    assert_eq!(located(&net, a, Via::Dht), 2, "both found through the DHT");
    let rang = net.nodes[k1].events.iter().find(|(_, e)| matches!(e, DeviceEvent::Call(CallEvent::Incoming { .. })));
    let took = rang.unwrap().0 - t0;
    assert!(took < 200 * MS, "a DHT lookup and a handshake on a 5 ms network took {took:?}");
    net.command(k2, Command::Press(0)).unwrap();
    net.run_for(200 * MS);
    assert_eq!(phase(&net, a), Phase::InCall);
    assert_eq!(net.nodes[a].device.in_call_with(), Some(net.id(k2)));
    assert_eq!(outcomes(&net, k1), [Outcome::AnsweredElsewhere]);
}

#[test]
fn an_offline_device_is_skipped_and_the_online_one_rings() {
    let (mut net, a, [k1, k2]) = town(2, [true, false], 8);
    assert!(k2.is_none());
    net.command(a, Command::Press(1)).unwrap();
    net.run_for(1000 * MS);
    let k1 = k1.unwrap();
    assert!(incoming(&net, k1));
    assert_eq!(phase(&net, a), Phase::Ringing);
    net.command(k1, Command::Press(0)).unwrap();
    net.run_for(200 * MS);
    assert_eq!(phase(&net, a), Phase::InCall);
}

#[test]
fn a_contact_with_no_device_online_is_unreachable_quickly() {
    let (mut net, a, _) = town(3, [false, false], 8);
    net.command(a, Command::Press(1)).unwrap();
    net.run_for(2000 * MS);
    assert_eq!(outcomes(&net, a), [Outcome::Unreachable]);
    assert_eq!(phase(&net, a), Phase::Idle);
}

#[test]
fn lan_beacons_find_contacts_with_no_dht_and_no_addresses() {
    let mut net = SimNet::new(4);
    let a = net.add(1, &keys_only(1, "A", &[("B", Some(1), &[2])], true));
    let b = net.add(2, &keys_only(2, "B", &[("A", Some(1), &[1])], true));
    // A stranger on the same LAN: beacons from it never match.
    let s = net.add(3, &keys_only(3, "S", &[("X", Some(1), &[9])], true));
    for (i, n) in [(a, 1), (b, 2), (s, 3)] {
        net.start_network(i, n, &[]);
    }
    net.run_for(100 * MS);
    assert_eq!(located(&net, a, Via::Lan), 1);
    assert_eq!(located(&net, b, Via::Lan), 1);
    assert_eq!(located(&net, s, Via::Lan), 0);
    net.command(a, Command::Press(1)).unwrap();
    net.run_for(100 * MS);
    assert!(incoming(&net, b));
    assert_eq!(net.nodes[a].device.status().network.dht_nodes, 0, "no DHT involved");
}
