//! A node's relay service (`peercom node --relay`): when two devices cannot reach each other
//! directly, each sends its session packets to the relay, which passes them to the other
//! unchanged (still end-to-end encrypted; never more bytes out than in).
//!
//! A pair is made by two halves with the same ticket, which both devices derive from their
//! Noise handshake hash: the caller `Allocate`s naming the callee's DHT key, the callee — which
//! must be registered here (a signed `Hold`) — `Join`s from its registered address. Nobody who
//! has not completed a handshake with that device knows the ticket, so nobody else can pair with
//! it. Fixed tables; each pair has a byte rate, an idle timeout and a lifetime.
use std::net::SocketAddr;
use std::time::{Duration, Instant};

pub const TICKET_LEN: usize = 16;
pub type Ticket = [u8; TICKET_LEN];

/// A half-made pair waits this long for the callee's `Join` (an invitation and its answer take
/// one round trip through the callee's registration).
const JOIN_WINDOW: Duration = Duration::from_secs(3);
/// Pairs whose caller is in one /24 (IPv4) or /64 (IPv6): one household's devices, not a flood.
const PER_NETWORK: usize = 4;

#[derive(Debug, Clone, Copy)]
pub struct RelayConfig {
    pub max_pairs: usize,
    /// Bytes per second each pair may pass (both directions together), after a burst.
    pub rate: u32,
    pub burst: u32,
    /// A pair is dropped after this long without a packet.
    pub idle: Duration,
    /// And at the latest this long after it was made; the devices may pair again.
    pub lifetime: Duration,
}

impl Default for RelayConfig {
    fn default() -> Self {
        // 4 Mbit/s: a 640x480 call both ways with room to spare.
        RelayConfig {
            max_pairs: 32,
            rate: 500_000,
            burst: 64_000,
            idle: Duration::from_secs(30),
            lifetime: Duration::from_secs(3600),
        }
    }
}

#[derive(Debug, Clone, Copy, Default, serde::Serialize, PartialEq, Eq)]
pub struct RelayCounters {
    pub pairs_made: u64,
    pub pairs_refused: u64,
    pub relayed_packets: u64,
    pub relayed_bytes: u64,
    /// Over the pair's byte rate.
    pub dropped_rate: u64,
    /// `Allocate`s without a valid address token: answered with one, no slot taken.
    pub unproven: u64,
}

#[derive(Debug, Clone, Copy)]
struct Pair {
    ticket: Ticket,
    caller: SocketAddr,
    callee: SocketAddr,
    joined: bool,
    made: Instant,
    last: Instant,
    allowance: u64,
    refilled: Instant,
}

pub struct Relay {
    cfg: RelayConfig,
    pairs: Vec<Pair>,
    counters: RelayCounters,
}

impl Relay {
    pub fn new(cfg: RelayConfig) -> Self {
        Relay { pairs: Vec::with_capacity(cfg.max_pairs), cfg, counters: RelayCounters::default() }
    }

    pub fn config(&self) -> &RelayConfig {
        &self.cfg
    }

    pub fn counters(&self) -> RelayCounters {
        self.counters
    }

    pub fn note_unproven(&mut self) {
        self.counters.unproven += 1;
    }

    /// Pairs that pass packets now.
    pub fn active(&self, now: Instant) -> usize {
        self.pairs.iter().filter(|p| p.joined && self.live(p, now)).count()
    }

    fn live(&self, p: &Pair, now: Instant) -> bool {
        let idle = if p.joined { self.cfg.idle } else { JOIN_WINDOW };
        now < p.last + idle && now < p.made + self.cfg.lifetime
    }

    /// The caller's half: `caller` (its address proven by a token) wants to reach the device
    /// registered here at `callee`. False when the table, the caller's network's share of it,
    /// or the room for half-made pairs is full.
    pub fn allocate(&mut self, now: Instant, ticket: Ticket, caller: SocketAddr, callee: SocketAddr) -> bool {
        // One pair per address: a new allocation replaces the caller's own earlier ones (the
        // address is proven, so only the device at it can do this).
        self.pairs.retain(|p| p.caller != caller && p.callee != caller);
        let net = network(&caller);
        let same_net = self.pairs.iter().filter(|p| self.live(p, now) && network(&p.caller) == net).count();
        let half_made = self.pairs.iter().filter(|p| self.live(p, now) && !p.joined).count();
        if same_net >= PER_NETWORK || half_made >= (self.cfg.max_pairs / 2).max(1) {
            self.counters.pairs_refused += 1;
            return false;
        }
        let pair = Pair {
            ticket,
            caller,
            callee,
            joined: false,
            made: now,
            last: now,
            allowance: u64::from(self.cfg.burst),
            refilled: now,
        };
        if self.pairs.len() < self.cfg.max_pairs {
            self.pairs.push(pair);
            return true;
        }
        let i = self.pairs.iter().position(|p| !self.live(p, now));
        match i {
            Some(i) => {
                self.pairs[i] = pair;
                true
            }
            None => {
                self.counters.pairs_refused += 1;
                false
            }
        }
    }

    /// The callee's half: pairs it with the caller waiting under `ticket`; returns the caller,
    /// and whether the pair is new (a repeated `Join` is answered, the caller not told again).
    pub fn join(&mut self, now: Instant, ticket: &Ticket, from: SocketAddr) -> Option<(SocketAddr, bool)> {
        let cfg = self.cfg;
        let p = self.pairs.iter_mut().find(|p| p.ticket == *ticket && p.callee == from)?;
        let live = now < p.last + if p.joined { cfg.idle } else { JOIN_WINDOW } && now < p.made + cfg.lifetime;
        if !live {
            return None;
        }
        let new = !p.joined;
        if new {
            p.joined = true;
            p.last = now;
            self.counters.pairs_made += 1;
        }
        Some((p.caller, new))
    }

    /// Where a session packet of `len` bytes from `from` goes: the other half of its pair, if
    /// the pair is live and within its byte rate.
    pub fn route(&mut self, now: Instant, from: SocketAddr, len: usize) -> Option<SocketAddr> {
        let cfg = self.cfg;
        let p = self.pairs.iter_mut().find(|p| p.joined && (p.caller == from || p.callee == from))?;
        if now >= p.last + cfg.idle || now >= p.made + cfg.lifetime {
            return None;
        }
        let earned = now.saturating_duration_since(p.refilled).as_micros() as u64 * u64::from(cfg.rate) / 1_000_000;
        if earned > 0 {
            p.allowance = (p.allowance + earned).min(u64::from(cfg.burst));
            p.refilled = now;
        }
        if p.allowance < len as u64 {
            self.counters.dropped_rate += 1;
            return None;
        }
        p.allowance -= len as u64;
        p.last = now;
        self.counters.relayed_packets += 1;
        self.counters.relayed_bytes += len as u64;
        Some(if p.caller == from { p.callee } else { p.caller })
    }
}

/// The /24 or /64 an address is in.
fn network(a: &SocketAddr) -> [u8; 8] {
    let mut n = [0u8; 8];
    match a.ip() {
        std::net::IpAddr::V4(ip) => n[..3].copy_from_slice(&ip.octets()[..3]),
        std::net::IpAddr::V6(ip) => n.copy_from_slice(&ip.octets()[..8]),
    }
    n
}

#[cfg(test)]
mod tests {
    use super::*;

    fn a(s: &str) -> SocketAddr {
        s.parse().unwrap()
    }

    #[test]
    fn pairs_only_when_the_registered_callee_joins_with_the_same_ticket() {
        let t0 = Instant::now();
        let mut r = Relay::new(RelayConfig::default());
        let (caller, callee, other) = (a("203.0.113.7:5000"), a("198.51.100.1:4000"), a("192.0.2.9:9"));
        assert!(r.allocate(t0, [1; 16], caller, callee));
        assert_eq!(r.route(t0, caller, 100), None, "not joined yet");
        assert_eq!(r.join(t0, &[2; 16], callee), None, "wrong ticket");
        assert_eq!(r.join(t0, &[1; 16], other), None, "only the registered address joins");
        assert_eq!(r.join(t0, &[1; 16], callee), Some((caller, true)));
        assert_eq!(r.join(t0, &[1; 16], callee), Some((caller, false)), "the caller is told once");
        assert_eq!(r.route(t0, caller, 100), Some(callee));
        assert_eq!(r.route(t0, callee, 100), Some(caller));
        assert_eq!(r.route(t0, other, 100), None, "strangers are not relayed");
        assert_eq!(r.counters().relayed_bytes, 200);
        assert_eq!(r.active(t0), 1);
    }

    #[test]
    fn a_pair_keeps_to_its_rate_its_idle_timeout_and_its_lifetime() {
        let t0 = Instant::now();
        let cfg = RelayConfig { rate: 10_000, burst: 2_000, ..RelayConfig::default() };
        let mut r = Relay::new(cfg);
        let (caller, callee) = (a("203.0.113.7:5000"), a("198.51.100.1:4000"));
        r.allocate(t0, [1; 16], caller, callee);
        r.join(t0, &[1; 16], callee);
        assert!(r.route(t0, caller, 1200).is_some());
        assert!(r.route(t0, caller, 1200).is_none(), "burst of 2000 bytes used up");
        assert_eq!(r.counters().dropped_rate, 1);
        // 10 kB/s: 1200 bytes come back after 120 ms.
        assert!(r.route(t0 + Duration::from_millis(130), caller, 1200).is_some());
        let quiet = t0 + Duration::from_millis(130) + cfg.idle;
        assert!(r.route(quiet, caller, 10).is_none(), "idle too long");

        let mut r = Relay::new(RelayConfig { lifetime: Duration::from_secs(5), ..RelayConfig::default() });
        r.allocate(t0, [1; 16], caller, callee);
        r.join(t0, &[1; 16], callee);
        let mut t = t0;
        while t < t0 + Duration::from_secs(5) {
            assert!(r.route(t, caller, 100).is_some());
            t += Duration::from_millis(500);
        }
        assert!(r.route(t, caller, 100).is_none(), "lifetime over, however busy");
    }

    #[test]
    fn the_table_is_fixed_and_a_caller_has_one_pair() {
        let t0 = Instant::now();
        let mut r = Relay::new(RelayConfig { max_pairs: 4, ..RelayConfig::default() });
        let callee = a("198.51.100.1:4000");
        assert!(r.allocate(t0, [1; 16], a("203.0.113.1:1"), callee));
        assert!(r.allocate(t0, [2; 16], a("192.0.2.1:1"), callee));
        assert!(!r.allocate(t0, [3; 16], a("198.18.0.1:1"), callee), "half the table half-made");
        assert!(r.allocate(t0, [4; 16], a("203.0.113.1:1"), callee), "replaces its own");
        assert_eq!(r.join(t0, &[1; 16], callee), None, "the replaced pair is gone");
        // Unjoined halves lapse and make room.
        assert!(r.allocate(t0 + JOIN_WINDOW, [5; 16], a("198.18.0.1:1"), callee));
        assert_eq!(r.counters().pairs_refused, 1);
    }

    #[test]
    fn half_made_pairs_cannot_starve_whole_ones_and_a_network_has_a_share() {
        let t0 = Instant::now();
        let mut r = Relay::new(RelayConfig { max_pairs: 8, ..RelayConfig::default() });
        // Two callers make whole pairs; then a flood of half-made ones from many networks.
        for i in 1..=2u8 {
            let callee = a(&format!("198.51.100.{i}:4000"));
            assert!(r.allocate(t0, [i; 16], a(&format!("203.0.{i}.1:1")), callee));
            assert!(r.join(t0, &[i; 16], callee).is_some());
        }
        let flood = (0..100u8).filter(|i| r.allocate(t0, [50; 16], a(&format!("10.{i}.0.1:1")), a("198.51.100.9:1")));
        assert_eq!(flood.count(), 4, "half the table at most waits for a join");
        assert_eq!(r.route(t0, a("203.0.1.1:1"), 100), Some(a("198.51.100.1:4000")), "whole pairs untouched");
        // After 3 s the half-made ones are gone: a real caller gets a slot.
        assert!(r.allocate(t0 + JOIN_WINDOW, [9; 16], a("192.0.2.7:1"), a("198.51.100.3:4000")));
        // One /24 holds at most four pairs.
        let t1 = t0 + JOIN_WINDOW * 2;
        let mut r = Relay::new(RelayConfig::default());
        let ok = (1..=6u8).filter(|i| r.allocate(t1, [*i; 16], a(&format!("203.0.113.{i}:1")), a("198.51.100.1:1")));
        assert_eq!(ok.count(), PER_NETWORK);
    }
}
