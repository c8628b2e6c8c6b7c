//! Cookie replies and message 1 MACs (session/cookie.rs) from arbitrary bytes. A reply goes to
//! an endpoint with a handshake under way (its receiver index set to the real one, as an
//! on-path attacker would): nothing can make it take a cookie or send, since the reply is sealed
//! for the mac1 it answers. The same bytes as a message 1 to a callee under load: never a DH.
#![no_main]
use libfuzzer_sys::fuzz_target;
use peercom::identity::DeviceKey;
use peercom::session::cookie::{Checker, Verdict};
use peercom::session::{Endpoint, EndpointConfig};
use peercom::util::rng::Rng;
use peercom::wire::{MAX_DATAGRAM, Packet};
use std::net::SocketAddr;
use std::time::Instant;

fuzz_target!(|data: &[u8]| {
    let t0 = Instant::now();
    let callee = DeviceKey::from_seed([2; 32]);
    let callee_at: SocketAddr = ([10, 0, 0, 2], 4000).into();
    let mut a =
        Endpoint::new(DeviceKey::from_seed([1; 32]), vec![callee.id()], EndpointConfig::default(), Rng::seeded(1));
    a.connect(t0, callee.id(), callee_at);
    let mut buf = [0u8; MAX_DATAGRAM];
    let n = a.poll_transmit(&mut buf).expect("message 1").len;
    let m1 = buf[..n].to_vec();
    while a.poll_transmit(&mut buf).is_some() {}

    let mut reply = data.to_vec();
    if reply.len() >= 6 {
        reply[2..6].copy_from_slice(&m1[2..6]);
    }
    let _ = Packet::decode(&reply);
    a.handle_datagram(t0, callee_at, &reply);
    assert_eq!(a.counters().cookies_taken, 0, "a forged cookie reply was taken");
    assert!(a.poll_transmit(&mut buf).is_none(), "a forged cookie reply made us send");

    let own = callee.id().x25519_public().expect("a real key");
    let mut c = Checker::new(&own, Rng::seeded(3));
    for _ in 0..=peercom::session::cookie::LOAD_THRESHOLD {
        c.check(t0, ([10, 0, 0, 1], 4000).into(), &m1);
    }
    assert!(c.under_load(t0));
    let from: SocketAddr = ([192, 0, 2, 1], 5).into();
    assert_ne!(c.check(t0, from, data), Verdict::Accept, "arbitrary bytes passed the cookie check");
    let mut out = [0u8; 128];
    if let Some(n) = c.reply(t0, from, 7, data, &mut out) {
        assert!(matches!(Packet::decode(&out[..n]), Ok(Packet::CookieReply { receiver: 7, .. })));
    }
});
