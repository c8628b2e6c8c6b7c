//! A UDP relay on loopback that impairs what it forwards (random loss, delay, jitter), standing
//! in for netem, which this machine's kernel lacks. A sends to `a_side`; the relay forwards from
//! `b_side` to B, and B's replies (to `b_side`) go back to A from `a_side`.
use crate::util::rng::Rng;
use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::time::Duration;
use tokio::net::UdpSocket;
use tokio::time::Instant;

#[derive(Debug, Clone, Copy, Default)]
pub struct Impairment {
    pub loss_pct: f64,
    pub delay: Duration,
    /// Extra delay drawn uniformly from 0..jitter per packet.
    pub jitter: Duration,
}

/// A datagram waiting for its delivery time: (due, arrival order, towards B, bytes).
type Delayed = (Instant, u64, bool, Vec<u8>);

pub struct Relay {
    pub a_side: SocketAddr,
    pub forwarded: Arc<AtomicU64>,
    pub dropped: Arc<AtomicU64>,
    task: tokio::task::JoinHandle<()>,
}

impl Relay {
    pub async fn start(b: SocketAddr, imp: Impairment) -> std::io::Result<Relay> {
        let sa = UdpSocket::bind("127.0.0.1:0").await?;
        let sb = UdpSocket::bind("127.0.0.1:0").await?;
        let a_side = sa.local_addr()?;
        let forwarded = Arc::new(AtomicU64::new(0));
        let dropped = Arc::new(AtomicU64::new(0));
        let (f, d) = (forwarded.clone(), dropped.clone());
        let task = tokio::spawn(async move {
            let mut rng = Rng::from_os();
            let mut a: Option<SocketAddr> = None;
            let mut queue: BinaryHeap<Reverse<Delayed>> = BinaryHeap::new();
            let mut seq = 0u64;
            let (mut ba, mut bb) = ([0u8; 2048], [0u8; 2048]);
            loop {
                let next = queue.peek().map(|Reverse((t, ..))| *t);
                let sleep = async {
                    match next {
                        Some(t) => tokio::time::sleep_until(t).await,
                        None => std::future::pending().await,
                    }
                };
                let (bytes, to_b) = tokio::select! {
                    r = sa.recv_from(&mut ba) => match r {
                        Ok((n, from)) => { a = Some(from); (ba[..n].to_vec(), true) }
                        Err(_) => continue,
                    },
                    r = sb.recv_from(&mut bb) => match r {
                        Ok((n, from)) if from == b => (bb[..n].to_vec(), false),
                        _ => continue,
                    },
                    _ = sleep => {
                        let now = Instant::now();
                        while queue.peek().is_some_and(|Reverse((t, ..))| *t <= now) {
                            let Some(Reverse((_, _, to_b, bytes))) = queue.pop() else { break };
                            let r = match (to_b, a) {
                                (true, _) => sb.send_to(&bytes, b).await,
                                (false, Some(a)) => sa.send_to(&bytes, a).await,
                                (false, None) => continue,
                            };
                            if r.is_ok() {
                                f.fetch_add(1, Relaxed);
                            }
                        }
                        continue;
                    }
                };
                if imp.loss_pct > 0.0 && f64::from(rng.next_u32()) / f64::from(u32::MAX) * 100.0 < imp.loss_pct {
                    d.fetch_add(1, Relaxed);
                    continue;
                }
                let jitter = if imp.jitter.is_zero() {
                    Duration::ZERO
                } else {
                    imp.jitter.mul_f64(f64::from(rng.next_u32()) / f64::from(u32::MAX))
                };
                seq += 1;
                queue.push(Reverse((Instant::now() + imp.delay + jitter, seq, to_b, bytes)));
            }
        });
        Ok(Relay { a_side, forwarded, dropped, task })
    }

    pub fn stop(self) {
        self.task.abort();
    }
}
