//! Per-source rate limits in fixed memory: token buckets in a small hash table keyed by IP. A
//! collision shares a bucket (stricter, never looser), and an idle slot is reused.
use std::net::IpAddr;
use std::time::Instant;

/// 16 bytes: a node keeps a thousand of these, and a simulator a thousand per node.
#[derive(Clone, Copy, Default)]
struct Slot {
    /// The keyed hash of the source that owns the slot (0: none).
    tag: u32,
    tokens: f32,
    /// Milliseconds since `epoch` at the last request.
    at_ms: u64,
}

pub struct RateLimiter {
    slots: Vec<Slot>,
    per_sec: f32,
    burst: f32,
    seed: u64,
    epoch: Option<Instant>,
}

impl RateLimiter {
    pub fn new(slots: usize, per_sec: u32, burst: u32, seed: u64) -> Self {
        RateLimiter {
            slots: vec![Slot::default(); slots.max(1)],
            per_sec: per_sec as f32,
            burst: burst as f32,
            seed,
            epoch: None,
        }
    }

    /// A keyed mix (splitmix-style) so an attacker cannot aim at a victim's slot: the low bits
    /// pick the slot, the high 32 bits tell its owner from another source in the same slot.
    fn hash(&self, ip: &IpAddr) -> u64 {
        let mut h = self.seed;
        let mut mix = |x: u64| {
            h = (h ^ x).wrapping_mul(0x9E37_79B9_7F4A_7C15);
            h ^= h >> 29;
        };
        match ip {
            IpAddr::V4(v4) => mix(u64::from(u32::from(*v4))),
            IpAddr::V6(v6) => {
                let o = v6.octets();
                // Per /64: one host controls a whole /64.
                mix(u64::from_be_bytes([o[0], o[1], o[2], o[3], o[4], o[5], o[6], o[7]]));
            }
        }
        h = h.wrapping_mul(0xBF58_476D_1CE4_E5B9);
        h ^ (h >> 31)
    }

    /// Takes one token for `ip`; false if it is over its rate. Sources that share a slot share
    /// its bucket (stricter, never looser); a full bucket carries no history and goes to
    /// whoever asks next.
    pub fn allow(&mut self, now: Instant, ip: IpAddr) -> bool {
        let h = self.hash(&ip);
        let i = (h % self.slots.len() as u64) as usize;
        let tag = ((h >> 32) as u32).max(1);
        let epoch = *self.epoch.get_or_insert(now);
        let now_ms = now.saturating_duration_since(epoch).as_millis() as u64;
        let (per_sec, burst) = (self.per_sec, self.burst);
        let s = &mut self.slots[i];
        let refill = if s.tag == 0 { burst } else { now_ms.saturating_sub(s.at_ms) as f32 / 1000.0 * per_sec };
        let tokens = (s.tokens + refill).min(burst);
        if s.tag != tag && tokens >= burst {
            s.tag = tag;
        }
        s.at_ms = now_ms;
        if tokens >= 1.0 {
            s.tokens = tokens - 1.0;
            true
        } else {
            s.tokens = tokens;
            false
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn burst_then_rate() {
        let mut r = RateLimiter::new(64, 10, 20, 1);
        let t0 = Instant::now();
        let ip: IpAddr = "198.51.100.7".parse().unwrap();
        let ok = (0..100).filter(|_| r.allow(t0, ip)).count();
        assert_eq!(ok, 20);
        let ok = (0..100).filter(|_| r.allow(t0 + Duration::from_secs(1), ip)).count();
        assert_eq!(ok, 10);
        // Another source is not punished for the first one's flood.
        let other: IpAddr = "203.0.113.8".parse().unwrap();
        assert!(r.allow(t0 + Duration::from_secs(1), other));
    }
}
