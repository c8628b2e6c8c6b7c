//! Arbitrary datagrams into an endpoint that allows one peer. Input: `mode` byte, then chunks
//! `flags | len u16le | bytes`. Mode bit 0: the endpoint first opens a session to the peer itself.
//! Chunk flags bit 0: sent from a stranger's address; bit 1: the bytes are XORed into a genuine
//! message 1 from the peer; bits 2..8: advance time by that many 100 ms first. Index 0 is never
//! issued, so a zero receiver field is replaced by the index the endpoint last sent (as an
//! on-path attacker would know it).
//! Checks the no-amplification rule: no reply is larger than the datagram that caused it.
#![no_main]
use libfuzzer_sys::fuzz_target;
use peercom::identity::DeviceKey;
use peercom::session::{Endpoint, EndpointConfig, Transmit};
use peercom::util::rng::Rng;
use peercom::wire::MAX_DATAGRAM;
use std::net::SocketAddr;
use std::sync::OnceLock;
use std::time::{Duration, Instant};

fn next_chunk<'a>(data: &mut &'a [u8]) -> Option<(u8, &'a [u8])> {
    let [flags, lo, hi, rest @ ..] = *data else { return None };
    let (chunk, tail) = rest.split_at(usize::from(u16::from_le_bytes([*lo, *hi])).min(rest.len()));
    *data = tail;
    Some((*flags, chunk))
}

fuzz_target!(|data: &[u8]| {
    let Some((&mode, mut rest)) = data.split_first() else { return };
    let t0 = Instant::now();
    let (me, peer_key) = (DeviceKey::from_seed([1; 32]), DeviceKey::from_seed([2; 32]));
    let peer_addr: SocketAddr = ([10, 0, 0, 2], 4000).into();
    let stranger: SocketAddr = ([192, 0, 2, 9], 666).into();
    let peer_id = peer_key.id();
    let mut buf = [0u8; MAX_DATAGRAM];
    // Made once per process (its ephemeral key is random), so runs in one process agree.
    static GENUINE: OnceLock<Vec<u8>> = OnceLock::new();
    let genuine = GENUINE.get_or_init(|| {
        let mut peer = Endpoint::new(peer_key, vec![me.id()], EndpointConfig::default(), Rng::seeded(2));
        peer.connect(t0, me.id(), ([10, 0, 0, 1], 4000).into());
        let Transmit { len: n, .. } = peer.poll_transmit(&mut buf).expect("peer sends message 1");
        buf[..n].to_vec()
    });

    let mut ep = Endpoint::new(me, vec![peer_id], EndpointConfig::default(), Rng::seeded(1));
    if mode & 1 != 0 {
        ep.connect(t0, peer_id, peer_addr);
    }
    let mut now = t0;
    let mut our_idx = [0u8; 4];
    while let Some((flags, bytes)) = next_chunk(&mut rest) {
        if flags >> 2 != 0 {
            now += Duration::from_millis(100 * u64::from(flags >> 2));
            ep.handle_timeout(now);
        }
        // Whatever is queued now was not caused by the next datagram.
        while let Some(Transmit { len: n, .. }) = ep.poll_transmit(&mut buf) {
            if n >= 6 && buf[0] <= 2 {
                our_idx.copy_from_slice(&buf[2..6]);
            }
        }
        while ep.poll_event().is_some() {}
        let mut dgram = bytes.to_vec();
        if flags & 2 != 0 {
            dgram = genuine.to_vec();
            dgram.iter_mut().zip(bytes).for_each(|(d, x)| *d ^= x);
        }
        let at = if dgram.first() == Some(&2) { 6 } else { 2 };
        if dgram.first() != Some(&1) && dgram.get(at..at + 4) == Some(&[0; 4]) {
            dgram[at..at + 4].copy_from_slice(&our_idx);
        }
        let from = if flags & 1 != 0 { stranger } else { peer_addr };
        ep.handle_datagram(now, from, &dgram);
        while let Some(Transmit { dst: to, len: n, .. }) = ep.poll_transmit(&mut buf) {
            if n >= 6 && buf[0] <= 2 {
                our_idx.copy_from_slice(&buf[2..6]);
            }
            assert!(
                n <= dgram.len(),
                "amplification: {}-byte datagram from {from} caused a {n}-byte reply to {to}: {:02x?}",
                dgram.len(),
                &dgram
            );
        }
        while ep.poll_event().is_some() {}
    }
});
