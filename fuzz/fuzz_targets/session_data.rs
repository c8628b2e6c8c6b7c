//! An endpoint `a` with a session established by a genuine handshake from peer `b`, then fed
//! chunks `op | len u16le | bytes`. op % 4: 0 = raw datagram from b's address (a zero receiver
//! field is replaced by a's session index, which is never 0); 1 = b sends the bytes as a postcard
//! `Message`; 2 = the last packet b sent, XORed with the bytes (a replay if the bytes are empty);
//! 3 = advance time by bytes[0] seconds. All traffic between a and b is delivered.
#![no_main]
use libfuzzer_sys::fuzz_target;
use peercom::identity::DeviceKey;
use peercom::session::{Endpoint, EndpointConfig, Transmit};
use peercom::util::rng::Rng;
use peercom::wire::{MAX_DATAGRAM, Message};
use std::net::SocketAddr;
use std::time::{Duration, Instant};

fn next_chunk<'a>(data: &mut &'a [u8]) -> Option<(u8, &'a [u8])> {
    let [flags, lo, hi, rest @ ..] = *data else { return None };
    let (chunk, tail) = rest.split_at(usize::from(u16::from_le_bytes([*lo, *hi])).min(rest.len()));
    *data = tail;
    Some((*flags, chunk))
}

/// Delivers everything queued on either side to the other, remembering b's last packet.
fn pump(now: Instant, a: &mut Endpoint, b: &mut Endpoint, addrs: [SocketAddr; 2], last_b: &mut Vec<u8>) -> [u8; 4] {
    let mut a_idx = [0u8; 4];
    let mut buf = [0u8; MAX_DATAGRAM];
    for _ in 0..16 {
        let mut idle = true;
        while let Some(Transmit { len: n, .. }) = a.poll_transmit(&mut buf) {
            if buf[0] == 2 {
                a_idx.copy_from_slice(&buf[2..6]);
            }
            b.handle_datagram(now, addrs[0], &buf[..n]);
            idle = false;
        }
        while let Some(Transmit { len: n, .. }) = b.poll_transmit(&mut buf) {
            *last_b = buf[..n].to_vec();
            a.handle_datagram(now, addrs[1], &buf[..n]);
            idle = false;
        }
        while a.poll_event().is_some() {}
        while b.poll_event().is_some() {}
        if idle {
            break;
        }
    }
    a_idx
}

fuzz_target!(|data: &[u8]| {
    let mut rest = data;
    let t0 = Instant::now();
    let (ka, kb) = (DeviceKey::from_seed([1; 32]), DeviceKey::from_seed([2; 32]));
    let (ida, idb) = (ka.id(), kb.id());
    let addrs: [SocketAddr; 2] = [([10, 0, 0, 1], 4000).into(), ([10, 0, 0, 2], 4000).into()];
    let mut a = Endpoint::new(ka, vec![idb], EndpointConfig::default(), Rng::seeded(1));
    let mut b = Endpoint::new(kb, vec![ida], EndpointConfig::default(), Rng::seeded(2));
    let mut last_b = Vec::new();
    b.connect(t0, ida, addrs[0]);
    let a_idx = pump(t0, &mut a, &mut b, addrs, &mut last_b);
    assert!(a.is_established(&idb) && b.is_established(&ida), "genuine handshake failed");

    let mut now = t0;
    let mut buf = [0u8; MAX_DATAGRAM];
    while let Some((op, bytes)) = next_chunk(&mut rest) {
        match op % 4 {
            0 => {
                let mut d = bytes.to_vec();
                if d.first() == Some(&3) && d.get(2..6) == Some(&[0; 4]) {
                    d[2..6].copy_from_slice(&a_idx);
                }
                a.handle_datagram(now, addrs[1], &d);
                while let Some(Transmit { len: n, .. }) = a.poll_transmit(&mut buf) {
                    assert!(n <= d.len(), "amplification: {} bytes in, {n} out", d.len());
                }
            }
            1 => {
                if let Some(m) = Message::decode(bytes) {
                    b.send(now, &ida, &m);
                }
            }
            2 => {
                let mut d = last_b.clone();
                d.iter_mut().zip(bytes).for_each(|(d, x)| *d ^= x);
                a.handle_datagram(now, addrs[1], &d);
            }
            _ => {
                now += Duration::from_secs(u64::from(bytes.first().copied().unwrap_or(1)));
                a.handle_timeout(now);
                b.handle_timeout(now);
            }
        }
        pump(now, &mut a, &mut b, addrs, &mut last_b);
    }
});
