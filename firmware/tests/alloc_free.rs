//! The steady-state in-call loop allocates nothing: keepalive timers, sealing, transmitting,
//! receiving, opening and dispatching signalling run on pre-sized buffers only. A counting global
//! allocator (counting this thread only) proves it.
use peercom::call::Phase;
use peercom::config::CallSettings;
use peercom::device::{Command, Device, Input};
use peercom::session::EndpointConfig;
use peercom::sim::{key, sim_addr, sim_config};
use peercom::util::rng::Rng;
use peercom::wire::MAX_DATAGRAM;
use std::time::{Duration, Instant};

#[path = "common/counting_alloc.rs"]
mod counting_alloc;
use counting_alloc::allocs;

#[global_allocator]
static GLOBAL: counting_alloc::Counting = counting_alloc::Counting;

/// Moves every pending datagram between the two devices until both are quiet; returns how many.
fn shuttle(now: Instant, devs: &mut [Device; 2], buf: &mut [u8; MAX_DATAGRAM]) -> usize {
    let mut moved = 0;
    loop {
        let mut any = false;
        for i in 0..2 {
            while let Some(t) = devs[i].poll_transmit(buf) {
                let from = sim_addr(i as u8 + 1);
                devs[1 - i].handle_input(now, Input::Datagram { from, bytes: &buf[..t.len] }).ok();
                moved += 1;
                any = true;
            }
            while devs[i].poll_event().is_some() {}
        }
        if !any {
            return moved;
        }
    }
}

#[test]
fn in_call_loop_allocates_nothing() {
    let call = CallSettings::default();
    let mut devs = [
        Device::new(
            &sim_config(1, "A", &[("B", Some(1), &[2])], call),
            key(1),
            EndpointConfig::default(),
            Rng::seeded(1),
        ),
        Device::new(
            &sim_config(2, "B", &[("A", Some(1), &[1])], call),
            key(2),
            EndpointConfig::default(),
            Rng::seeded(2),
        ),
    ];
    let mut buf = [0u8; MAX_DATAGRAM];
    let mut now = Instant::now();
    devs[0].handle_input(now, Input::Command(Command::Press(1))).unwrap();
    shuttle(now, &mut devs, &mut buf);
    devs[1].handle_input(now, Input::Command(Command::Answer)).unwrap();
    shuttle(now, &mut devs, &mut buf);
    assert_eq!((devs[0].phase(), devs[1].phase()), (Phase::InCall, Phase::InCall));

    let step = |now: &mut Instant, devs: &mut [Device; 2], buf: &mut [u8; MAX_DATAGRAM]| {
        let next = devs.iter().filter_map(Device::poll_timeout).min().expect("a timer while in call");
        *now = next.max(*now + Duration::from_micros(1));
        for d in devs.iter_mut() {
            d.handle_input(*now, Input::Timeout).ok();
        }
        shuttle(*now, devs, buf)
    };
    // Warm-up: a few rounds, across a key epoch change (2 minutes).
    for _ in 0..300 {
        step(&mut now, &mut devs, &mut buf);
    }
    let before = allocs();
    let mut packets = 0;
    for _ in 0..2_000 {
        packets += step(&mut now, &mut devs, &mut buf);
    }
    let after = allocs();
    assert_eq!((devs[0].phase(), devs[1].phase()), (Phase::InCall, Phase::InCall));
    assert!(packets >= 1_000, "the loop moved {packets} packets");
    assert!(devs[0].counters().rekeys > 0, "crossed at least one rekey");
    assert_eq!(after - before, 0, "{} allocations over {packets} packets", after - before);
}
