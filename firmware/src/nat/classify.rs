//! What kind of NAT the call socket is behind, from samples taken on that socket: (reporter,
//! mapped) pairs saying who saw us at which address. STUN servers and DHT peers both give them.
//!
//! The newest `RING` samples are kept and the class is worked out from them on demand:
//! 1. The epoch. Walking back from the newest sample, stop at the first one whose reporter saw a
//!    different address in a newer sample: one reporter seeing a new address means the mapping
//!    changed over time (router reboot, new public IP, expired mapping), so older samples
//!    describe a mapping that is gone.
//! 2. `Open`: at least `MIN_SAMPLES` in the epoch and every mapped address is a local one.
//! 3. Otherwise samples with a local mapped address are set aside (their reporters are on our
//!    side of the NAT, e.g. on the LAN) and the rest, in order, form runs of equal addresses:
//!    - one run: `Consistent` with `MIN_SAMPLES` samples from at least two reporter IPs (from one
//!      IP an address-dependent mapping looks endpoint-independent);
//!    - two runs: a change first seen by a new reporter looks just like endpoint dependence seen
//!      in an unlucky order, so the newer run is judged alone, as above;
//!    - three or more (an address came back, or several differ): `Random`, with `MIN_SAMPLES`.
//!
//!    Anything short of that is `Unknown`.
//!
//! Samples are unauthenticated: a lying reporter can at worst make the class `Unknown` or
//! `Random`, which costs a direct path, not a call.
use serde::Serialize;
use std::net::{IpAddr, SocketAddr};

/// Samples kept.
pub const RING: usize = 16;
/// Samples needed for any verdict.
pub const MIN_SAMPLES: usize = 4;
/// Interface addresses kept (more are ignored).
pub const MAX_INTERFACES: usize = 8;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum NatClass {
    /// Too few samples to tell.
    Unknown,
    /// No NAT: everyone sees our local address.
    Open,
    /// Endpoint-independent mapping: the same public address whoever asks.
    Consistent,
    /// Endpoint-dependent mapping ("symmetric"): each destination sees another port (or IP).
    Random,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Sample {
    reporter: SocketAddr,
    mapped: SocketAddr,
}

pub struct NatClassifier {
    bound: SocketAddr,
    interfaces: [Option<IpAddr>; MAX_INTERFACES],
    ring: [Option<Sample>; RING],
    /// Slot of the next sample.
    next: usize,
}

impl NatClassifier {
    /// `bound` is the call socket's local address, as bound (its IP may be unspecified).
    pub fn new(bound: SocketAddr) -> Self {
        NatClassifier { bound: canonical(bound), interfaces: [None; MAX_INTERFACES], ring: [None; RING], next: 0 }
    }

    /// The host's interface IPs, which make up the local addresses when the socket is bound to
    /// an unspecified IP. Replaces the previous list.
    pub fn set_interfaces(&mut self, ips: &[IpAddr]) {
        self.interfaces = [None; MAX_INTERFACES];
        for (slot, ip) in self.interfaces.iter_mut().zip(ips) {
            *slot = Some(ip.to_canonical());
        }
    }

    /// `reporter` saw this socket at `mapped`. Nonsense (port 0, unspecified IP) is dropped.
    pub fn add(&mut self, reporter: SocketAddr, mapped: SocketAddr) {
        if mapped.port() == 0 || mapped.ip().is_unspecified() {
            return;
        }
        if let Some(slot) = self.ring.get_mut(self.next) {
            *slot = Some(Sample { reporter: canonical(reporter), mapped: canonical(mapped) });
        }
        self.next = (self.next + 1) % RING;
    }

    pub fn class(&self) -> NatClass {
        let n = self.epoch_len();
        let epoch = || self.newest_first().take(n);
        if n >= MIN_SAMPLES && epoch().all(|s| self.is_local(s.mapped)) {
            return NatClass::Open;
        }
        let outside = || epoch().filter(|s| !self.is_local(s.mapped));
        if outside().count() < MIN_SAMPLES {
            return NatClass::Unknown;
        }
        let runs = 1 + outside().zip(outside().skip(1)).filter(|(a, b)| a.mapped != b.mapped).count();
        match runs {
            1 => consistent(outside()),
            2 => {
                let newest = outside().next().map(|s| s.mapped);
                consistent(outside().take_while(|s| Some(s.mapped) == newest))
            }
            _ => NatClass::Random,
        }
    }

    /// Our distinct public addresses (mapped addresses that are not local) since the mapping
    /// last changed, most recent first: what the device can announce.
    pub fn public_addrs(&self) -> impl Iterator<Item = SocketAddr> + '_ {
        let epoch = self.epoch_len();
        self.newest_first().take(epoch).enumerate().filter_map(move |(k, s)| {
            let seen = self.newest_first().take(k).any(|t| t.mapped == s.mapped);
            (!seen && !self.is_local(s.mapped)).then_some(s.mapped)
        })
    }

    fn newest_first(&self) -> impl Iterator<Item = Sample> + '_ {
        (1..=RING).filter_map(move |k| self.ring.get((self.next + RING - k) % RING).copied().flatten())
    }

    /// How many of the newest samples are from the current mapping (rule 1).
    fn epoch_len(&self) -> usize {
        self.newest_first()
            .enumerate()
            .take_while(|&(k, s)| {
                !self.newest_first().take(k).any(|t| t.reporter == s.reporter && t.mapped != s.mapped)
            })
            .count()
    }

    fn is_local(&self, a: SocketAddr) -> bool {
        a.port() == self.bound.port()
            && (a.ip() == self.bound.ip()
                || (self.bound.ip().is_unspecified() && self.interfaces.contains(&Some(a.ip()))))
    }
}

/// Rule 3's test for one run of agreeing samples.
fn consistent(run: impl Iterator<Item = Sample>) -> NatClass {
    let (mut n, mut first_ip, mut two_ips) = (0, None, false);
    for s in run {
        n += 1;
        let ip = s.reporter.ip();
        two_ips |= *first_ip.get_or_insert(ip) != ip;
    }
    if n >= MIN_SAMPLES && two_ips { NatClass::Consistent } else { NatClass::Unknown }
}

/// IPv4-mapped IPv6 addresses (from a dual-stack socket) read as IPv4.
fn canonical(a: SocketAddr) -> SocketAddr {
    SocketAddr::new(a.ip().to_canonical(), a.port())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sa(s: &str) -> SocketAddr {
        s.parse().unwrap()
    }

    const STUN1: &str = "192.0.2.1:3478";
    const STUN2: &str = "198.51.100.7:3478";
    const PUBLIC: &str = "203.0.113.5:40000";

    fn classifier(bound: &str) -> NatClassifier {
        NatClassifier::new(sa(bound))
    }

    fn feed(c: &mut NatClassifier, samples: &[(&str, &str)]) {
        for (r, m) in samples {
            c.add(sa(r), sa(m));
        }
    }

    fn public(c: &NatClassifier) -> Vec<SocketAddr> {
        c.public_addrs().collect()
    }

    #[test]
    fn four_agreeing_samples_from_two_ips_are_needed() {
        let mut c = classifier("0.0.0.0:4000");
        assert_eq!(c.class(), NatClass::Unknown);
        feed(&mut c, &[(STUN1, PUBLIC), (STUN2, PUBLIC), (STUN1, PUBLIC)]);
        assert_eq!(c.class(), NatClass::Unknown, "three samples");
        feed(&mut c, &[(STUN2, PUBLIC)]);
        assert_eq!(c.class(), NatClass::Consistent);
        assert_eq!(public(&c), [sa(PUBLIC)]);
        // Four samples from one reporter, or from one IP's two ports, are not enough.
        let mut one = classifier("0.0.0.0:4000");
        feed(&mut one, &[(STUN1, PUBLIC); 6]);
        assert_eq!(one.class(), NatClass::Unknown);
        let mut one_ip = classifier("0.0.0.0:4000");
        feed(&mut one_ip, &[(STUN1, PUBLIC), ("192.0.2.1:3479", PUBLIC), (STUN1, PUBLIC), ("192.0.2.1:3479", PUBLIC)]);
        assert_eq!(one_ip.class(), NatClass::Unknown);
        feed(&mut one_ip, &[(STUN2, PUBLIC)]);
        assert_eq!(one_ip.class(), NatClass::Consistent);
    }

    #[test]
    fn open_when_everyone_sees_a_local_address() {
        let mut c = classifier("192.0.2.10:4000");
        feed(&mut c, &[(STUN1, "192.0.2.10:4000"); 3]);
        assert_eq!(c.class(), NatClass::Unknown);
        feed(&mut c, &[(STUN2, "192.0.2.10:4000")]);
        assert_eq!(c.class(), NatClass::Open);
        assert!(public(&c).is_empty());
        // Bound to 0.0.0.0: the interface addresses count, on the socket's port only.
        let mut any = classifier("0.0.0.0:4000");
        any.set_interfaces(&[sa("10.0.0.2:0").ip(), sa("192.0.2.10:0").ip()]);
        feed(&mut any, &[(STUN1, "192.0.2.10:4000"), ("10.0.0.3:7000", "10.0.0.2:4000")]);
        feed(&mut any, &[(STUN2, "192.0.2.10:4000"), ("10.0.0.4:7000", "10.0.0.2:4000")]);
        assert_eq!(any.class(), NatClass::Open);
        let mut other_port = classifier("0.0.0.0:4000");
        other_port.set_interfaces(&[sa("192.0.2.10:0").ip()]);
        feed(&mut other_port, &[(STUN1, "192.0.2.10:4001"), (STUN2, "192.0.2.10:4001")]);
        feed(&mut other_port, &[(STUN1, "192.0.2.10:4001"), (STUN2, "192.0.2.10:4001")]);
        assert_eq!(other_port.class(), NatClass::Consistent, "a port-translating NAT on a local IP");
        // A dual-stack socket reports IPv4 addresses as ::ffff:a.b.c.d.
        let mut v6 = classifier("[::ffff:192.0.2.10]:4000");
        feed(&mut v6, &[("[::ffff:192.0.2.1]:3478", "[::ffff:192.0.2.10]:4000"); 4]);
        assert_eq!(v6.class(), NatClass::Open);
    }

    #[test]
    fn random_when_reporters_disagree() {
        // Two servers, each seeing its own port, asked alternately.
        let mut c = classifier("0.0.0.0:4000");
        feed(&mut c, &[(STUN1, "203.0.113.5:1001"), (STUN2, "203.0.113.5:1002"), (STUN1, "203.0.113.5:1001")]);
        assert_eq!(c.class(), NatClass::Unknown, "three samples");
        feed(&mut c, &[(STUN2, "203.0.113.5:1002")]);
        assert_eq!(c.class(), NatClass::Random);
        assert_eq!(public(&c), [sa("203.0.113.5:1002"), sa("203.0.113.5:1001")]);
        // DHT peers each asked once, each seeing another port.
        let mut dht = classifier("0.0.0.0:4000");
        for i in 1..=4 {
            dht.add(sa(&format!("198.18.0.{i}:6881")), sa(&format!("203.0.113.5:{}", 2000 + i)));
        }
        assert_eq!(dht.class(), NatClass::Random);
        // Same port, another public IP (a NAT with an address pool).
        let mut pool = classifier("0.0.0.0:4000");
        feed(
            &mut pool,
            &[(STUN1, PUBLIC), (STUN2, "203.0.113.6:40000"), (STUN1, PUBLIC), (STUN2, "203.0.113.6:40000")],
        );
        assert_eq!(pool.class(), NatClass::Random);
    }

    #[test]
    fn mixed_sources_lan_peers_stun_and_dht() {
        let mut c = classifier("0.0.0.0:4000");
        c.set_interfaces(&[sa("192.168.1.20:0").ip()]);
        // LAN DHT peers see our private address; STUN servers and far DHT peers the public one.
        feed(
            &mut c,
            &[
                ("192.168.1.30:4000", "192.168.1.20:4000"),
                (STUN1, PUBLIC),
                ("192.168.1.31:4000", "192.168.1.20:4000"),
                ("198.18.0.9:6881", PUBLIC),
                (STUN2, PUBLIC),
            ],
        );
        assert_eq!(c.class(), NatClass::Unknown, "three samples from outside");
        feed(&mut c, &[("198.18.0.10:6881", PUBLIC)]);
        assert_eq!(c.class(), NatClass::Consistent);
        assert_eq!(public(&c), [sa(PUBLIC)]);
        // Without the interface list the private address looks like another mapping.
        let mut blind = classifier("0.0.0.0:4000");
        feed(&mut blind, &[(STUN1, PUBLIC), ("192.168.1.30:4000", "192.168.1.20:4000"), (STUN2, PUBLIC)]);
        feed(&mut blind, &[("198.18.0.9:6881", PUBLIC)]);
        assert_eq!(blind.class(), NatClass::Random);
    }

    #[test]
    fn a_change_of_public_address_is_not_random() {
        let new = "203.0.113.99:51000";
        let mut c = classifier("0.0.0.0:4000");
        feed(&mut c, &[(STUN1, PUBLIC), (STUN2, PUBLIC), (STUN1, PUBLIC), (STUN2, PUBLIC)]);
        assert_eq!(c.class(), NatClass::Consistent);
        // The router rebooted; a known reporter sees the new address: its older samples, and all
        // before them, are history. STUN2's last sample stands until STUN2 says otherwise.
        feed(&mut c, &[(STUN1, new)]);
        assert_eq!(c.class(), NatClass::Unknown);
        assert_eq!(public(&c), [sa(new), sa(PUBLIC)]);
        feed(&mut c, &[(STUN2, new), (STUN1, new)]);
        assert_eq!(c.class(), NatClass::Unknown);
        feed(&mut c, &[(STUN2, new)]);
        assert_eq!(c.class(), NatClass::Consistent);
        assert_eq!(public(&c), [sa(new)]);
        // Seen first by a new reporter: two runs, the newer judged alone; Unknown, not Random.
        let mut d = classifier("0.0.0.0:4000");
        feed(&mut d, &[(STUN1, PUBLIC), (STUN2, PUBLIC), (STUN1, PUBLIC), (STUN2, PUBLIC)]);
        let far = ["198.18.0.1:6881", "198.18.0.2:6881", "198.18.0.3:6881", "198.18.0.4:6881"];
        feed(&mut d, &[(far[0], new)]);
        assert_eq!(d.class(), NatClass::Unknown);
        assert_eq!(public(&d), [sa(new), sa(PUBLIC)]);
        feed(&mut d, &[(far[1], new), (far[2], new)]);
        assert_eq!(d.class(), NatClass::Unknown);
        feed(&mut d, &[(far[3], new)]);
        assert_eq!(d.class(), NatClass::Consistent);
        // A third address (the old one back, from another reporter) is endpoint dependence.
        feed(&mut d, &[("198.18.0.5:6881", PUBLIC)]);
        assert_eq!(d.class(), NatClass::Random);
    }

    #[test]
    fn only_the_newest_sixteen_count() {
        let mut c = classifier("0.0.0.0:4000");
        for i in 0..RING {
            c.add(sa(&format!("198.18.0.{i}:6881")), sa(&format!("203.0.113.5:{}", 1000 + i)));
        }
        assert_eq!(c.class(), NatClass::Random);
        assert_eq!(public(&c).len(), RING);
        assert_eq!(public(&c)[0], sa("203.0.113.5:1015"));
        // Sixteen agreeing samples from new reporters push every disagreeing one out.
        for i in 0..RING {
            c.add(sa(&format!("198.19.0.{i}:6881")), sa(PUBLIC));
        }
        assert_eq!(c.class(), NatClass::Consistent);
        assert_eq!(public(&c), [sa(PUBLIC)]);
    }

    #[test]
    fn nonsense_samples_are_dropped() {
        let mut c = classifier("0.0.0.0:4000");
        feed(&mut c, &[(STUN1, "203.0.113.5:0"), (STUN2, "0.0.0.0:4000"), (STUN1, "[::]:1")]);
        feed(&mut c, &[(STUN2, "203.0.113.5:0")]);
        assert_eq!(c.class(), NatClass::Unknown);
        assert!(public(&c).is_empty());
    }

    #[test]
    fn class_names_are_lowercase() {
        let names = [NatClass::Unknown, NatClass::Open, NatClass::Consistent, NatClass::Random]
            .map(|c| serde_json::to_string(&c).unwrap());
        assert_eq!(names, ["\"unknown\"", "\"open\"", "\"consistent\"", "\"random\""]);
    }
}
