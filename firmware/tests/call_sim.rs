//! Call behaviour of whole devices over the deterministic simulated network, in virtual time.
use peercom::call::{Outcome, Phase};
use peercom::config::CallSettings;
use peercom::device::{Command, DeviceError, DeviceEvent};
use peercom::sim::{SimNet, sim_addr, sim_config};
use std::time::Duration;

const MS: Duration = Duration::from_millis(1);

fn settings() -> CallSettings {
    CallSettings::default()
}

/// A (device 1) and B (device 2) trust each other; A's button 1 calls B, B's button 1 calls A.
fn pair(seed: u64) -> (SimNet, usize, usize) {
    let mut net = SimNet::new(seed);
    let a = net.add(1, &sim_config(1, "A", &[("B", Some(1), &[2])], settings()));
    let b = net.add(2, &sim_config(2, "B", &[("A", Some(1), &[1])], settings()));
    (net, a, b)
}

fn phase(net: &SimNet, n: usize) -> Phase {
    net.nodes[n].device.phase()
}

fn outcomes(net: &SimNet, n: usize) -> Vec<Outcome> {
    net.outcomes(n)
}

fn connect(net: &mut SimNet, a: usize, b: usize) {
    net.command(a, Command::Press(1)).unwrap();
    assert_eq!(phase(net, a), Phase::Dialing);
    net.run_for(100 * MS);
    assert_eq!(phase(net, a), Phase::Ringing);
    assert_eq!(phase(net, b), Phase::Incoming);
    net.command(b, Command::Press(0)).unwrap();
    net.run_for(100 * MS);
    assert_eq!((phase(net, a), phase(net, b)), (Phase::InCall, Phase::InCall));
}

#[test]
fn call_answer_hang_up() {
    let (mut net, a, b) = pair(1);
    net.command(a, Command::Press(1)).unwrap();
    // Handshake (1 RTT) + invite/ringing (1 RTT) at 5 ms one-way latency.
    net.run_for(19 * MS);
    assert_eq!(phase(&net, b), Phase::Incoming);
    net.run_for(2 * MS);
    assert_eq!(phase(&net, a), Phase::Ringing);
    net.command(b, Command::Press(0)).unwrap();
    net.run_for(6 * MS);
    assert_eq!((phase(&net, a), phase(&net, b)), (Phase::InCall, Phase::InCall));
    // Stays up for a minute of keepalives (and across a rekey at 2 minutes).
    net.run_for(Duration::from_secs(150));
    assert_eq!((phase(&net, a), phase(&net, b)), (Phase::InCall, Phase::InCall));
    assert!(net.nodes[a].device.counters().rekeys >= 2);
    net.command(a, Command::Press(1)).unwrap();
    net.run_for(50 * MS);
    assert_eq!((phase(&net, a), phase(&net, b)), (Phase::Idle, Phase::Idle));
    assert_eq!(outcomes(&net, a), [Outcome::LocalHangup]);
    assert_eq!(outcomes(&net, b), [Outcome::RemoteHangup]);
}

#[test]
fn callee_hangs_up() {
    let (mut net, a, b) = pair(2);
    connect(&mut net, a, b);
    net.command(b, Command::Hangup).unwrap();
    net.run_for(50 * MS);
    assert_eq!(outcomes(&net, a), [Outcome::RemoteHangup]);
    assert_eq!(outcomes(&net, b), [Outcome::LocalHangup]);
}

#[test]
fn reject() {
    let (mut net, a, b) = pair(3);
    net.command(a, Command::Press(1)).unwrap();
    net.run_for(100 * MS);
    assert_eq!(net.command(a, Command::Answer), Err(DeviceError::NoCall));
    net.command(b, Command::Reject).unwrap();
    net.run_for(100 * MS);
    assert_eq!(outcomes(&net, a), [Outcome::Rejected]);
    assert_eq!(outcomes(&net, b), [Outcome::Rejected]);
    assert_eq!((phase(&net, a), phase(&net, b)), (Phase::Idle, Phase::Idle));
}

#[test]
fn caller_cancels_and_callee_sees_missed_call() {
    let (mut net, a, b) = pair(4);
    net.command(a, Command::Press(1)).unwrap();
    net.run_for(100 * MS);
    net.command(a, Command::Press(1)).unwrap();
    net.run_for(100 * MS);
    assert_eq!(outcomes(&net, a), [Outcome::Cancelled]);
    assert_eq!(outcomes(&net, b), [Outcome::Missed]);
    assert_eq!(net.nodes[b].device.status().missed_calls, 1);
}

#[test]
fn no_answer_times_out() {
    let (mut net, a, b) = pair(5);
    net.command(a, Command::Press(1)).unwrap();
    net.run_for(Duration::from_millis(29_900));
    assert_eq!((phase(&net, a), phase(&net, b)), (Phase::Ringing, Phase::Incoming));
    net.run_for(Duration::from_millis(200));
    assert_eq!(outcomes(&net, a), [Outcome::NoAnswer]);
    assert_eq!(outcomes(&net, b), [Outcome::Missed]);
}

#[test]
fn busy_when_callee_is_in_a_call() {
    let mut net = SimNet::new(6);
    let a = net.add(1, &sim_config(1, "A", &[("B", Some(1), &[2])], settings()));
    let b = net.add(2, &sim_config(2, "B", &[("A", Some(1), &[1]), ("C", Some(2), &[3])], settings()));
    let c = net.add(3, &sim_config(3, "C", &[("B", Some(1), &[2])], settings()));
    connect(&mut net, a, b);
    net.command(c, Command::Press(1)).unwrap();
    net.run_for(200 * MS);
    assert_eq!(outcomes(&net, c), [Outcome::Busy]);
    assert_eq!((phase(&net, a), phase(&net, b)), (Phase::InCall, Phase::InCall));
    // Pressing a call button during a call hangs up rather than dialing.
    assert_eq!(net.command(a, Command::Call(0)), Err(DeviceError::Busy));
}

#[test]
fn peer_vanishes_mid_call() {
    let (mut net, a, b) = pair(7);
    connect(&mut net, a, b);
    net.nodes[b].online = false;
    let t = net.elapsed();
    net.run_for(Duration::from_secs(9));
    assert_eq!(phase(&net, a), Phase::InCall);
    net.run_for(Duration::from_secs(2));
    assert_eq!(outcomes(&net, a), [Outcome::PeerVanished]);
    let ended_at = net.nodes[a].events.last().unwrap().0 - t;
    assert!(ended_at >= Duration::from_secs(9) && ended_at <= Duration::from_secs(11), "{ended_at:?}");
}

#[test]
fn lost_hangup_is_repaired_by_keepalives() {
    let (mut net, a, b) = pair(8);
    connect(&mut net, a, b);
    net.loss_ppm = 1_000_000;
    net.command(a, Command::Hangup).unwrap();
    net.run_for(10 * MS);
    net.loss_ppm = 0;
    assert_eq!(phase(&net, b), Phase::InCall);
    // B's next InCall keepalive (≤ 1 s) is answered with End: B learns well before peer_timeout.
    net.run_for(Duration::from_millis(1100));
    assert_eq!(outcomes(&net, b), [Outcome::RemoteHangup]);
}

#[test]
fn unknown_device_is_refused_without_ringing_or_reply() {
    let mut net = SimNet::new(9);
    // C knows B, but B does not know C.
    let b = net.add(2, &sim_config(2, "B", &[("A", Some(1), &[1])], settings()));
    let c = net.add(3, &sim_config(3, "C", &[("B", Some(1), &[2])], settings()));
    net.command(c, Command::Press(1)).unwrap();
    net.run_for(Duration::from_secs(6));
    assert_eq!(outcomes(&net, c), [Outcome::Unreachable]);
    assert!(net.nodes[b].events.iter().all(|(_, e)| !matches!(e, DeviceEvent::Call(_))), "B must not ring");
    let refusals: Vec<_> =
        net.nodes[b].events.iter().filter(|(_, e)| matches!(e, DeviceEvent::Refused { .. })).collect();
    assert_eq!(refusals.len(), 1, "logged once per window despite retries");
    let counters = net.nodes[b].device.counters();
    assert!(counters.refused_unknown_peer >= 4, "{counters:?}");
    assert!(net.wire.iter().all(|s| s.from != sim_addr(2)), "B sent something to an unknown caller");
}

#[test]
fn replayed_and_tampered_packets_are_dropped_and_counted() {
    let (mut net, a, b) = pair(10);
    connect(&mut net, a, b);
    let data: Vec<_> = net.wire.iter().filter(|s| s.from == sim_addr(1) && s.bytes[0] == 3).cloned().collect();
    assert!(data.len() >= 2);
    let before = net.nodes[b].device.counters();
    for s in &data {
        net.inject(b, s.from, &s.bytes);
    }
    let mid = net.nodes[b].device.counters();
    assert_eq!(mid.dropped_replay - before.dropped_replay, data.len() as u64);
    // Tampering: give a captured packet a fresh counter (so the replay window passes it), or
    // flip a ciphertext bit as well; either way the AEAD rejects it.
    let mut t = data.last().unwrap().bytes.clone();
    t[7..15].copy_from_slice(&1_000u64.to_le_bytes());
    net.inject(b, sim_addr(1), &t);
    t[7..15].copy_from_slice(&1_001u64.to_le_bytes());
    t[20] ^= 0x80;
    net.inject(b, sim_addr(1), &t);
    let after = net.nodes[b].device.counters();
    assert_eq!(after.dropped_auth - mid.dropped_auth, 2);
    // Replayed handshakes get the cached reply or nothing: no second session, no state change.
    let init = net.wire.iter().find(|s| s.bytes[0] == 1).unwrap().clone();
    net.inject(b, init.from, &init.bytes);
    net.inject(b, init.from, &[1, 1, 0]);
    assert!(net.nodes[b].device.counters().dropped_malformed > after.dropped_malformed);
    net.run_for(Duration::from_secs(2));
    assert_eq!((phase(&net, a), phase(&net, b)), (Phase::InCall, Phase::InCall));
}

#[test]
fn multi_device_contact_rings_all_first_answer_wins() {
    let mut net = SimNet::new(11);
    let a = net.add(1, &sim_config(1, "A", &[("Kids", Some(1), &[2, 3, 4])], settings()));
    let k1 = net.add(2, &sim_config(2, "Kids tablet", &[("A", Some(1), &[1])], settings()));
    let k2 = net.add(3, &sim_config(3, "Kids hall", &[("A", Some(1), &[1])], settings()));
    // Device 4 is listed but offline.
    net.command(a, Command::Press(1)).unwrap();
    net.run_for(100 * MS);
    assert_eq!((phase(&net, k1), phase(&net, k2)), (Phase::Incoming, Phase::Incoming));
    net.command(k2, Command::Press(1)).unwrap();
    net.run_for(100 * MS);
    assert_eq!(phase(&net, a), Phase::InCall);
    assert_eq!(phase(&net, k2), Phase::InCall);
    assert_eq!(outcomes(&net, k1), [Outcome::AnsweredElsewhere]);
    assert_eq!(net.nodes[a].device.status().peer, Some(net.id(k2).to_string()));
    // A late answer from the other device is turned away.
    assert_eq!(net.command(k1, Command::Answer), Err(DeviceError::NoCall));
}

#[test]
fn multi_device_all_refuse() {
    let mut net = SimNet::new(12);
    let a = net.add(1, &sim_config(1, "A", &[("Kids", Some(1), &[2, 3])], settings()));
    let k1 = net.add(2, &sim_config(2, "K1", &[("A", Some(1), &[1])], settings()));
    let k2 = net.add(3, &sim_config(3, "K2", &[("A", Some(1), &[1])], settings()));
    net.command(a, Command::Press(1)).unwrap();
    net.run_for(100 * MS);
    net.command(k1, Command::Reject).unwrap();
    net.run_for(100 * MS);
    assert_eq!(phase(&net, a), Phase::Ringing, "one device declining leaves the others ringing");
    net.command(k2, Command::Reject).unwrap();
    net.run_for(100 * MS);
    assert_eq!(outcomes(&net, a), [Outcome::Rejected]);
}

#[test]
fn unreachable_contact_device() {
    let mut net = SimNet::new(13);
    let a = net.add(1, &sim_config(1, "A", &[("B", Some(1), &[2])], settings()));
    net.command(a, Command::Press(1)).unwrap();
    net.run_for(Duration::from_millis(4900));
    assert_eq!(phase(&net, a), Phase::Dialing);
    net.run_for(Duration::from_millis(200));
    assert_eq!(outcomes(&net, a), [Outcome::Unreachable]);
}

#[test]
fn calls_connect_under_heavy_loss() {
    for seed in 0..20 {
        let (mut net, a, b) = pair(100 + seed);
        net.loss_ppm = 200_000;
        net.command(a, Command::Press(1)).unwrap();
        net.run_for(Duration::from_secs(3));
        assert_eq!(phase(&net, b), Phase::Incoming, "seed {seed}");
        net.command(b, Command::Answer).unwrap();
        net.run_for(Duration::from_secs(3));
        assert_eq!((phase(&net, a), phase(&net, b)), (Phase::InCall, Phase::InCall), "seed {seed}");
        net.run_for(Duration::from_secs(60));
        assert_eq!((phase(&net, a), phase(&net, b)), (Phase::InCall, Phase::InCall), "seed {seed}");
        net.command(a, Command::Hangup).unwrap();
        net.run_for(Duration::from_secs(9));
        assert_eq!((phase(&net, a), phase(&net, b)), (Phase::Idle, Phase::Idle), "seed {seed}");
        assert_eq!(outcomes(&net, b), [Outcome::RemoteHangup], "seed {seed}: learnt before peer_timeout");
    }
}

#[test]
fn glare_both_call_each_other() {
    let (mut net, a, b) = pair(14);
    net.command(a, Command::Press(1)).unwrap();
    net.command(b, Command::Press(1)).unwrap();
    net.run_for(Duration::from_secs(1));
    // Each is busy calling the other: both end cleanly rather than hanging.
    assert_eq!((phase(&net, a), phase(&net, b)), (Phase::Idle, Phase::Idle));
    assert_eq!(outcomes(&net, a), [Outcome::Busy]);
    assert_eq!(outcomes(&net, b), [Outcome::Busy]);
}

#[test]
fn unbound_button_is_an_error() {
    let (mut net, a, _) = pair(15);
    assert_eq!(net.command(a, Command::Press(7)), Err(DeviceError::ButtonNotBound(7)));
    assert_eq!(net.command(a, Command::Press(0)), Err(DeviceError::NotRinging));
}
