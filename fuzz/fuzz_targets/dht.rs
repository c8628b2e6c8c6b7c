//! The DHT node and the LAN beacon decoder on hostile datagrams: never a panic, and no
//! amplification — everything the node sends to a sender it has not verified adds up to no more
//! bytes than that sender's datagram (the fuzzer cannot know a valid token).
#![no_main]
use libfuzzer_sys::fuzz_target;
use peercom::dht::id::NodeId;
use peercom::dht::node::{Node, NodeConfig};
use peercom::identity::DeviceKey;
use peercom::lan::{LanConfig, LanDiscovery};
use peercom::util::rng::Rng;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

fuzz_target!(|data: &[u8]| {
    let t0 = Instant::now();
    let mut node = Node::new(NodeId([7; 32]), NodeConfig::default(), Rng::seeded(1), t0, 1_790_000_000);
    let key = DeviceKey::from_seed([1; 32]);
    let contact = DeviceKey::from_seed([2; 32]).id();
    let mut lan = LanDiscovery::new(&key, &[contact], 7600, LanConfig::default(), Rng::seeded(2), t0);
    let mut out = [0u8; 1500];
    // Datagrams: [source byte][len byte][bytes...], repeated.
    let mut rest = data;
    let mut now = t0;
    while let [src, len, tail @ ..] = rest {
        let n = (*len as usize).min(tail.len());
        let (dgram, next) = tail.split_at(n);
        rest = next;
        now += Duration::from_millis(u64::from(*src));
        let from = SocketAddr::from(([198, 51, 100, src % 8], 7600));
        node.handle_datagram(now, from, dgram);
        let mut to_sender = 0;
        while let Some((dst, len)) = node.poll_transmit(&mut out) {
            assert!(len <= 1200);
            if dst == from {
                to_sender += len;
            }
        }
        assert!(to_sender <= dgram.len(), "amplification: {} bytes in, {to_sender} out", dgram.len());
        node.handle_timeout(now);
        while node.poll_transmit(&mut out).is_some() {}
        while node.poll_event().is_some() {}
        lan.handle_beacon(now, from, dgram);
        while lan.poll_event().is_some() {}
    }
});
