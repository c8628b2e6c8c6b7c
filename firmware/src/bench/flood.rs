//! A handshake flood as an attacker who knows a device's key sends it: valid-looking message 1s
//! (right mac1) from many unknown keys, many source addresses (127.0.0.2-65) and ports, at a
//! fixed rate, from a thread of its own. It never reads the cookie replies: it cannot prove
//! its addresses, which is what the cookie exchange asks (session/cookie.rs).
use crate::identity::{DeviceId, DeviceKey};
use crate::session::{Endpoint, EndpointConfig};
use crate::util::rng::Rng;
use crate::wire::MAX_DATAGRAM;
use serde::Serialize;
use std::net::{SocketAddr, UdpSocket};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

/// Unknown keys the flood's message 1s come from.
pub const KEYS: usize = 256;
const SOCKETS: usize = 64;

#[derive(Debug, Clone, Copy, Serialize)]
pub struct FloodReport {
    pub sent: u64,
    pub seconds: f64,
    /// Message 1s sent per second, as achieved (not as asked).
    pub pps: f64,
}

pub struct Flood {
    stop: Arc<AtomicBool>,
    thread: std::thread::JoinHandle<FloodReport>,
}

/// Message 1s to `target` from `n` fresh keys, built as a caller's endpoint builds them.
fn packets(target: &DeviceId, at: SocketAddr, n: usize) -> Vec<Vec<u8>> {
    let mut rng = Rng::from_os();
    let mut buf = [0u8; MAX_DATAGRAM];
    (0..n)
        .filter_map(|_| {
            let mut seed = [0u8; 32];
            for c in seed.chunks_mut(8) {
                c.copy_from_slice(&rng.next_u64().to_le_bytes());
            }
            let mut e = Endpoint::new(
                DeviceKey::from_seed(seed),
                vec![],
                EndpointConfig::default(),
                Rng::seeded(rng.next_u64()),
            );
            e.connect(Instant::now(), *target, at);
            e.poll_transmit(&mut buf).map(|t| buf[..t.len].to_vec())
        })
        .collect()
}

impl Flood {
    /// Starts sending `pps` message 1s a second to `target` at `at` until `stop`.
    pub fn start(target: DeviceId, at: SocketAddr, pps: u32) -> std::io::Result<Flood> {
        let pkts = packets(&target, at, KEYS);
        let socks = (0..SOCKETS)
            .map(|i| UdpSocket::bind(SocketAddr::from(([127, 0, 0, 2 + i as u8], 0))))
            .collect::<std::io::Result<Vec<_>>>()?;
        for s in &socks {
            s.set_nonblocking(true)?;
        }
        let stop = Arc::new(AtomicBool::new(false));
        let flag = stop.clone();
        let thread = std::thread::Builder::new().name("flood".into()).spawn(move || {
            let t0 = Instant::now();
            let mut sent = 0u64;
            let mut i = 0usize;
            while !flag.load(Ordering::Relaxed) {
                // Catch up to the rate the clock says, then sleep a millisecond.
                let due = (t0.elapsed().as_secs_f64() * f64::from(pps)) as u64;
                while sent < due {
                    // A full socket buffer is the attacker's problem, not a reason to stop.
                    let _ = socks[i % SOCKETS].send_to(&pkts[i % pkts.len()], at);
                    sent += 1;
                    i = i.wrapping_add(1);
                }
                std::thread::sleep(Duration::from_millis(1));
            }
            let seconds = t0.elapsed().as_secs_f64();
            FloodReport { sent, seconds, pps: (sent as f64 / seconds.max(1e-9)).round() }
        })?;
        Ok(Flood { stop, thread })
    }

    pub fn stop(self) -> FloodReport {
        self.stop.store(true, Ordering::Relaxed);
        self.thread.join().unwrap_or(FloodReport { sent: 0, seconds: 0.0, pps: 0.0 })
    }
}
