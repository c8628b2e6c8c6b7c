//! Per-source rate limits in fixed memory: token buckets in a small hash table keyed by IP. A
//! collision shares a bucket (stricter, never looser), and an idle slot is reused.
use std::net::IpAddr;
use std::time::Instant;

#[derive(Clone, Copy)]
struct Slot {
    ip: Option<IpAddr>,
    tokens: f32,
    at: Option<Instant>,
}

pub struct RateLimiter {
    slots: Vec<Slot>,
    per_sec: f32,
    burst: f32,
    seed: u64,
}

impl RateLimiter {
    pub fn new(slots: usize, per_sec: u32, burst: u32, seed: u64) -> Self {
        RateLimiter {
            slots: vec![Slot { ip: None, tokens: 0.0, at: None }; slots.max(1)],
            per_sec: per_sec as f32,
            burst: burst as f32,
            seed,
        }
    }

    fn index(&self, ip: &IpAddr) -> usize {
        // A keyed mix (splitmix-style) so an attacker cannot aim at a victim's slot.
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
        (h % self.slots.len() as u64) as usize
    }

    /// Takes one token for `ip`; false if it is over its rate.
    pub fn allow(&mut self, now: Instant, ip: IpAddr) -> bool {
        let i = self.index(&ip);
        let (per_sec, burst) = (self.per_sec, self.burst);
        let s = &mut self.slots[i];
        let elapsed = s.at.map(|t| now.saturating_duration_since(t).as_secs_f32()).unwrap_or(f32::MAX);
        if s.ip != Some(ip) && s.tokens + elapsed * per_sec >= burst {
            // A full bucket carries no history: hand the slot to the new address.
            s.ip = Some(ip);
        }
        s.tokens = (s.tokens + elapsed * per_sec).min(burst);
        s.at = Some(now);
        if s.tokens >= 1.0 {
            s.tokens -= 1.0;
            true
        } else {
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
