//! Per-stream receive accounting: which packets are missing (for NACKs), how many were expected
//! and received (for reports), interarrival jitter and queueing delay (for rate control).
use super::packet::{SeqUnwrapper, StreamReport};
use std::time::{Duration, Instant};

const MAX_MISSING: usize = 256;
/// A gap longer than this is an outage or a restart, not something to repair packet by packet.
const MAX_GAP: u64 = 200;
const MAX_NACKS: u8 = 3;
/// How long `queue_us`'s baseline (the lowest one-way delay) is remembered.
const BASE_WINDOW: Duration = Duration::from_secs(10);

#[derive(Debug, Clone, Copy)]
struct Missing {
    seq: u64,
    since: Instant,
    nacks: u8,
    next: Instant,
}

/// Arrival minus capture time (clock offset included); saturating, since capture times come
/// from the peer.
pub fn transit_us(now_us: u64, capture_us: u64) -> i64 {
    (i128::from(now_us) - i128::from(capture_us)).clamp(i128::from(i64::MIN / 4), i128::from(i64::MAX / 4)) as i64
}

pub struct LossTracker {
    unwrap: SeqUnwrapper,
    first: u64,
    highest: Option<u64>,
    received: u32,
    missing: Vec<Missing>,
    nacked: u64,
    // Jitter (RFC 3550): transit = arrival - capture, both in µs.
    last_transit: Option<i64>,
    jitter_us: f64,
    // Queueing delay: transit above the lowest transit of the last BASE_WINDOW (two buckets).
    base: [(i64, Instant); 2],
    queue_us: f64,
}

impl Default for LossTracker {
    fn default() -> Self {
        Self::new()
    }
}

impl LossTracker {
    pub fn new() -> Self {
        let t = Instant::now();
        LossTracker {
            unwrap: SeqUnwrapper::default(),
            first: 0,
            highest: None,
            received: 0,
            missing: Vec::with_capacity(MAX_MISSING),
            nacked: 0,
            last_transit: None,
            jitter_us: 0.0,
            base: [(i64::MAX, t); 2],
            queue_us: 0.0,
        }
    }

    pub fn reset(&mut self, now: Instant) {
        self.unwrap.reset();
        self.highest = None;
        self.received = 0;
        self.missing.clear();
        self.nacked = 0;
        self.last_transit = None;
        self.jitter_us = 0.0;
        self.base = [(i64::MAX, now); 2];
        self.queue_us = 0.0;
    }

    /// Records a packet; returns its extended sequence number and whether it is new (not a
    /// duplicate). `now_us` and `capture_us` feed the jitter and delay estimates.
    pub fn on_packet(&mut self, now: Instant, now_us: u64, seq: u16, capture_us: u64, retransmit: bool) -> (u64, bool) {
        let ext = self.unwrap.unwrap(seq);
        let new = match self.highest {
            None => {
                self.first = ext;
                self.highest = Some(ext);
                true
            }
            Some(h) if ext > h => {
                let from = (h + 1).max(ext.saturating_sub(MAX_GAP));
                // On a path that reorders (jitter), a gap may fill itself: wait about twice the
                // jitter (at most 20 ms) before asking. On a steady path, ask at once.
                let first = now + Duration::from_micros((2.0 * self.jitter_us) as u64).min(Duration::from_millis(20));
                for s in from..ext {
                    if self.missing.len() == MAX_MISSING {
                        self.missing.remove(0);
                    }
                    self.missing.push(Missing { seq: s, since: now, nacks: 0, next: first });
                }
                self.highest = Some(ext);
                true
            }
            Some(_) => match self.missing.iter().position(|m| m.seq == ext) {
                Some(i) => {
                    self.missing.remove(i);
                    true
                }
                None => false,
            },
        };
        if new && !retransmit {
            self.received = self.received.saturating_add(1);
            let transit = transit_us(now_us, capture_us);
            if let Some(last) = self.last_transit {
                let d = transit.saturating_sub(last).unsigned_abs() as f64;
                self.jitter_us += (d - self.jitter_us) / 16.0;
            }
            self.last_transit = Some(transit);
            // Two buckets, each covering half the window: the minimum survives at least
            // half a window and at most a whole one.
            if now.saturating_duration_since(self.base[1].1) > BASE_WINDOW / 2 {
                self.base[0] = self.base[1];
                self.base[1] = (transit, now);
            }
            self.base[1].0 = self.base[1].0.min(transit);
            let base = self.base[0].0.min(self.base[1].0);
            let q = transit.saturating_sub(base).max(0) as f64;
            self.queue_us += (q - self.queue_us) / 8.0;
        }
        (ext, new)
    }

    pub fn report(&self) -> StreamReport {
        let expected = self.highest.map_or(0, |h| h - self.first + 1);
        StreamReport {
            expected: expected.min(u64::from(u32::MAX)) as u32,
            received: self.received,
            jitter_us: self.jitter_us as u32,
            queue_us: self.queue_us as u32,
        }
    }

    pub fn jitter(&self) -> Duration {
        Duration::from_micros(self.jitter_us as u64)
    }

    pub fn nacks_sent(&self) -> u64 {
        self.nacked
    }

    /// The next NACK to send, as (first missing seq, bitmap of the 64 after it). Packets are asked
    /// for again every `max(1.5 × rtt, 10 ms)`, at most 3 times, and never when the answer could
    /// not arrive before `give_up` after the loss was noticed.
    pub fn poll_nack(&mut self, now: Instant, rtt: Duration, give_up: Duration) -> Option<(u16, u64)> {
        self.missing.retain(|m| m.nacks < MAX_NACKS && now + rtt < m.since + give_up);
        let first = self.missing.iter().position(|m| m.next <= now)?;
        let base = self.missing[first].seq;
        let again = (rtt * 3 / 2).max(Duration::from_millis(10));
        let mut mask = 0u64;
        for m in self.missing.iter_mut().filter(|m| m.next <= now && m.seq >= base && m.seq <= base + 64) {
            if m.seq > base {
                mask |= 1 << (m.seq - base - 1);
            }
            m.nacks += 1;
            m.next = now + again;
        }
        self.nacked += 1;
        Some((base as u16, mask))
    }

    pub fn poll_timeout(&self) -> Option<Instant> {
        self.missing.iter().map(|m| m.next).min()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn gaps_become_nacks_until_repaired() {
        let t = Instant::now();
        let rtt = Duration::from_millis(20);
        let give_up = Duration::from_millis(200);
        let mut l = LossTracker::new();
        for s in [10u16, 11, 14, 15, 80] {
            l.on_packet(t, 0, s, 0, false);
        }
        let (base, mask) = l.poll_nack(t, rtt, give_up).unwrap();
        assert_eq!(base, 12);
        assert_eq!(mask, 0b1 | (!0u64 << 3), "13, then 16 up to 76 (the 64 after 12)");
        // The rest of the gap goes out in a second NACK; nothing is due again until 30 ms.
        let (base2, _) = l.poll_nack(t, rtt, give_up).unwrap();
        assert_eq!(base2, 77);
        assert_eq!(l.poll_nack(t, rtt, give_up), None);
        // A retransmission repairs 12; it counts as new but not as an original reception.
        assert!(l.on_packet(t, 0, 12, 0, true).1);
        assert!(!l.on_packet(t, 0, 12, 0, true).1, "duplicate");
        let r = l.report();
        assert_eq!((r.expected, r.received), (71, 5));
        let later = t + Duration::from_millis(30);
        let (base, mask) = l.poll_nack(later, rtt, give_up).unwrap();
        assert_eq!((base, mask & 1), (13, 0), "12 was repaired");
        // Too late to be useful: the retransmission could not arrive within give_up.
        assert_eq!(l.poll_nack(t + Duration::from_millis(190), rtt, give_up), None);
    }

    #[test]
    fn jitter_and_queue_delay() {
        let t = Instant::now();
        let mut l = LossTracker::new();
        // Steady 20 ms spacing with constant transit: no jitter, no queue.
        for i in 0..50u64 {
            l.on_packet(t, 1_000 + i * 20_000, i as u16, i * 20_000, false);
        }
        assert_eq!(l.report().jitter_us, 0);
        assert_eq!(l.report().queue_us, 0);
        // Transit grows by 2 ms per packet: a queue builds up.
        for i in 50..80u64 {
            l.on_packet(t, 1_000 + i * 20_000 + (i - 50) * 2_000, i as u16, i * 20_000, false);
        }
        let r = l.report();
        assert!(r.queue_us > 30_000 && r.jitter_us > 1_000, "{r:?}");
    }

    #[test]
    fn on_a_reordering_path_a_gap_waits_before_its_nack() {
        let t = Instant::now();
        let mut l = LossTracker::new();
        // Transit alternating 5 and 15 ms: about 10 ms of jitter.
        for i in 0..40u64 {
            l.on_packet(t, i * 20_000 + if i % 2 == 0 { 5_000 } else { 15_000 }, i as u16, i * 20_000, false);
        }
        assert!(l.jitter() > Duration::from_millis(5));
        l.on_packet(t, 0, 42, 0, false);
        let (rtt, give_up) = (Duration::from_millis(5), Duration::from_millis(200));
        assert_eq!(l.poll_nack(t, rtt, give_up), None, "40 and 41 may still arrive");
        assert_eq!(l.poll_nack(t + Duration::from_millis(20), rtt, give_up), Some((40, 1)));
    }
}
