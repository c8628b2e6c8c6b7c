//! A node's rendezvous service. A device whose record we store registers with a signed `Hold`
//! and repeats it, which keeps its NAT's mapping towards us open; a caller's `Forward` then
//! reaches the device over that mapping, and the device's `Reply` goes back to the caller. Fixed
//! tables; each registration has its own forwarding allowance, and the replies to a caller never
//! add up to more bytes than that caller's forwards (no amplification, no open relay).
use std::net::SocketAddr;
use std::time::{Duration, Instant};

/// A registration lapses this long after its last `Hold` (devices hold every 20 s).
pub const HOLD_TTL: Duration = Duration::from_secs(60);
/// A caller may get replies this long after its last `Forward`.
const REPLY_WINDOW: Duration = Duration::from_secs(10);
/// Reply bytes a caller can bank: a handful of handshake attempts.
const MAX_BUDGET: usize = 4 * crate::wire::MAX_DATAGRAM;

#[derive(Debug, Clone, Copy)]
pub struct RendezvousConfig {
    pub max_registrations: usize,
    pub max_callers: usize,
    /// Forwards per second to one device, after a burst of `forward_burst`.
    pub forward_rate: u32,
    pub forward_burst: u32,
}

impl Default for RendezvousConfig {
    fn default() -> Self {
        RendezvousConfig { max_registrations: 256, max_callers: 64, forward_rate: 5, forward_burst: 20 }
    }
}

#[derive(Clone, Copy)]
struct Registration {
    key: [u8; 32],
    holder: SocketAddr,
    until: Instant,
    allowance: u32,
    refilled: Instant,
}

#[derive(Clone, Copy)]
struct Caller {
    addr: SocketAddr,
    holder: SocketAddr,
    until: Instant,
    budget: usize,
}

pub struct Rendezvous {
    cfg: RendezvousConfig,
    regs: Vec<Registration>,
    callers: Vec<Caller>,
}

impl Rendezvous {
    pub fn new(cfg: RendezvousConfig) -> Self {
        Rendezvous {
            regs: Vec::with_capacity(cfg.max_registrations),
            callers: Vec::with_capacity(cfg.max_callers),
            cfg,
        }
    }

    /// Live registrations.
    pub fn len(&self, now: Instant) -> usize {
        self.regs.iter().filter(|r| r.until > now).count()
    }

    /// Registers (or renews) `holder` as the device behind `key`; false when the table is full
    /// of live registrations. The caller has checked the signature and the address.
    pub fn register(&mut self, now: Instant, key: [u8; 32], holder: SocketAddr) -> bool {
        let until = now + HOLD_TTL;
        if let Some(r) = self.regs.iter_mut().find(|r| r.key == key) {
            r.holder = holder;
            r.until = until;
            return true;
        }
        let reg = Registration { key, holder, until, allowance: self.cfg.forward_burst, refilled: now };
        if self.regs.len() < self.cfg.max_registrations {
            self.regs.push(reg);
            return true;
        }
        match self.regs.iter_mut().find(|r| r.until <= now) {
            Some(slot) => {
                *slot = reg;
                true
            }
            None => false,
        }
    }

    /// Where to forward `bytes` bytes from `caller` for `key`: the registered device, if its
    /// registration is live and within its allowance. Remembers the caller for the reply.
    pub fn forward(&mut self, now: Instant, key: &[u8; 32], caller: SocketAddr, bytes: usize) -> Option<SocketAddr> {
        let cfg = self.cfg;
        let r = self.regs.iter_mut().find(|r| r.key == *key && r.until > now)?;
        if r.holder == caller {
            return None;
        }
        let earned = now.saturating_duration_since(r.refilled).as_millis() as u64 * u64::from(cfg.forward_rate) / 1000;
        if earned > 0 {
            r.allowance = (u64::from(r.allowance) + earned).min(u64::from(cfg.forward_burst)) as u32;
            r.refilled = now;
        }
        if r.allowance == 0 {
            return None;
        }
        r.allowance -= 1;
        let holder = r.holder;
        let until = now + REPLY_WINDOW;
        if let Some(c) = self.callers.iter_mut().find(|c| c.addr == caller && c.holder == holder) {
            c.until = until;
            c.budget = (c.budget + bytes).min(MAX_BUDGET);
        } else {
            let c = Caller { addr: caller, holder, until, budget: bytes.min(MAX_BUDGET) };
            if self.callers.len() < self.cfg.max_callers {
                self.callers.push(c);
            } else if let Some(oldest) = self.callers.iter_mut().min_by_key(|c| c.until) {
                *oldest = c;
            }
        }
        Some(holder)
    }

    /// May `holder` send a reply of `bytes` bytes to `to`? Only to a recent caller of its own,
    /// and only out of what that caller sent.
    pub fn reply(&mut self, now: Instant, holder: SocketAddr, to: SocketAddr, bytes: usize) -> bool {
        let Some(c) = self.callers.iter_mut().find(|c| c.addr == to && c.holder == holder && c.until > now) else {
            return false;
        };
        if c.budget < bytes {
            return false;
        }
        c.budget -= bytes;
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn a(s: &str) -> SocketAddr {
        s.parse().unwrap()
    }

    #[test]
    fn forwards_only_to_live_registrations_within_the_allowance() {
        let t0 = Instant::now();
        let cfg = RendezvousConfig { max_registrations: 2, max_callers: 2, forward_rate: 5, forward_burst: 3 };
        let mut r = Rendezvous::new(cfg);
        let (dev, caller) = (a("198.51.100.1:4000"), a("203.0.113.7:5000"));
        assert_eq!(r.forward(t0, &[1; 32], caller, 200), None, "nobody registered");
        assert!(r.register(t0, [1; 32], dev));
        for _ in 0..3 {
            assert_eq!(r.forward(t0, &[1; 32], caller, 200), Some(dev));
        }
        assert_eq!(r.forward(t0, &[1; 32], caller, 200), None, "burst used up");
        assert_eq!(r.forward(t0 + Duration::from_millis(200), &[1; 32], caller, 200), Some(dev), "5 per second");
        assert_eq!(r.forward(t0, &[1; 32], dev, 200), None, "never back to the device itself");
        // Lapsed without a Hold.
        assert_eq!(r.forward(t0 + HOLD_TTL, &[1; 32], caller, 200), None);
        assert_eq!(r.len(t0 + HOLD_TTL), 0);
        // A full table takes a new key only in place of a lapsed one.
        assert!(r.register(t0, [2; 32], dev));
        assert!(!r.register(t0, [3; 32], dev));
        assert!(r.register(t0 + HOLD_TTL, [3; 32], dev));
    }

    #[test]
    fn replies_go_only_to_recent_callers_and_never_exceed_what_they_sent() {
        let t0 = Instant::now();
        let mut r = Rendezvous::new(RendezvousConfig::default());
        let (dev, caller, victim) = (a("198.51.100.1:4000"), a("203.0.113.7:5000"), a("192.0.2.9:53"));
        r.register(t0, [1; 32], dev);
        assert!(!r.reply(t0, dev, victim, 50), "no forward from there: not a relay to anyone");
        r.forward(t0, &[1; 32], caller, 150);
        assert!(!r.reply(t0, a("198.51.100.2:4000"), caller, 50), "only the device the caller reached");
        assert!(r.reply(t0, dev, caller, 100));
        assert!(!r.reply(t0, dev, caller, 100), "150 bytes in, at most 150 out");
        assert!(r.reply(t0, dev, caller, 50));
        r.forward(t0, &[1; 32], caller, 150);
        assert!(!r.reply(t0 + REPLY_WINDOW, dev, caller, 10), "too late");
    }
}
