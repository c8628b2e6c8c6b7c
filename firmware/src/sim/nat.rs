//! Home routers for the simulator: the NAT behaviours of RFC 4787 that decide whether hole
//! punching works. Mapping is endpoint-independent (one public port per inner socket) except for
//! `Symmetric`, which takes a random port per destination; filtering goes from none (full cone)
//! to address-and-port-dependent. Mappings expire like Linux conntrack's UDP entries.
use crate::util::rng::Rng;
use serde::Serialize;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::time::{Duration, Instant};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum NatKind {
    FullCone,
    AddressRestricted,
    PortRestricted,
    Symmetric,
}

/// Linux conntrack: an unanswered UDP flow is forgotten after 30 s, an answered one after 120 s.
const UNREPLIED: Duration = Duration::from_secs(30);
const REPLIED: Duration = Duration::from_secs(120);

struct Mapping {
    inner: SocketAddr,
    /// Symmetric NATs map per destination.
    remote: Option<SocketAddr>,
    port: u16,
    contacted: Vec<SocketAddr>,
    last: Instant,
    replied: bool,
}

pub struct Nat {
    pub public: Ipv4Addr,
    pub kind: NatKind,
    /// Loops a datagram for our own public address back inside (most home routers do not).
    pub hairpin: bool,
    maps: Vec<Mapping>,
    rng: Rng,
    pub dropped: u64,
}

impl Nat {
    pub fn new(public: Ipv4Addr, kind: NatKind, seed: u64) -> Self {
        Nat { public, kind, hairpin: false, maps: Vec::new(), rng: Rng::seeded(seed), dropped: 0 }
    }

    fn expire(&mut self, now: Instant) {
        self.maps.retain(|m| now.saturating_duration_since(m.last) < if m.replied { REPLIED } else { UNREPLIED });
    }

    /// The public source address of a datagram from `inner` to `remote`.
    pub fn outbound(&mut self, now: Instant, inner: SocketAddr, remote: SocketAddr) -> SocketAddr {
        self.expire(now);
        let symmetric = self.kind == NatKind::Symmetric;
        let found = self.maps.iter().position(|m| m.inner == inner && (!symmetric || m.remote == Some(remote)));
        let i = match found {
            Some(i) => i,
            None => {
                let port = self.free_port(inner.port());
                let remote = symmetric.then_some(remote);
                self.maps.push(Mapping { inner, remote, port, contacted: Vec::new(), last: now, replied: false });
                self.maps.len() - 1
            }
        };
        let m = &mut self.maps[i];
        m.last = now;
        if !m.contacted.contains(&remote) {
            m.contacted.push(remote);
        }
        SocketAddr::new(IpAddr::V4(self.public), m.port)
    }

    /// Where a datagram from `remote` to our public `port` goes, if the NAT lets it in.
    pub fn inbound(&mut self, now: Instant, remote: SocketAddr, port: u16) -> Option<SocketAddr> {
        self.expire(now);
        let kind = self.kind;
        let m = self.maps.iter_mut().find(|m| {
            m.port == port
                && match kind {
                    NatKind::FullCone => true,
                    NatKind::AddressRestricted => m.contacted.iter().any(|c| c.ip() == remote.ip()),
                    NatKind::PortRestricted => m.contacted.contains(&remote),
                    NatKind::Symmetric => m.remote == Some(remote),
                }
        });
        match m {
            Some(m) => {
                m.last = now;
                m.replied = true;
                Some(m.inner)
            }
            None => {
                self.dropped += 1;
                None
            }
        }
    }

    /// The router rebooted and (with `renumber`) the provider gave it a new public address:
    /// every mapping is forgotten.
    pub fn reboot(&mut self, renumber: Option<Ipv4Addr>) {
        self.maps.clear();
        if let Some(ip) = renumber {
            self.public = ip;
        }
    }

    /// Endpoint-independent NATs keep the inner port when it is free (Linux does); a
    /// symmetric one picks at random.
    fn free_port(&mut self, wanted: u16) -> u16 {
        let random = self.kind == NatKind::Symmetric;
        let mut port = wanted;
        loop {
            if !random && !self.maps.iter().any(|m| m.port == port) {
                return port;
            }
            let p = 1024 + (self.rng.next_u32() % (65536 - 1024)) as u16;
            if !self.maps.iter().any(|m| m.port == p) {
                return p;
            }
            port = p;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn a(s: &str) -> SocketAddr {
        s.parse().unwrap()
    }

    #[test]
    fn each_kind_maps_and_filters_as_rfc_4787_says() {
        let t0 = Instant::now();
        let (inner, s1, s1b, s2) =
            (a("192.168.1.2:7600"), a("198.18.0.2:3478"), a("198.18.0.2:9"), a("198.18.0.3:3478"));
        let public = Ipv4Addr::new(198, 18, 0, 11);
        // (kind, from s1's other port, from another host) after sending to s1 only.
        let cases = [
            (NatKind::FullCone, true, true),
            (NatKind::AddressRestricted, true, false),
            (NatKind::PortRestricted, false, false),
            (NatKind::Symmetric, false, false),
        ];
        for (kind, same_ip, other_ip) in cases {
            let mut nat = Nat::new(public, kind, 1);
            let m1 = nat.outbound(t0, inner, s1);
            let m2 = nat.outbound(t0, inner, s2);
            assert_eq!(m1 == m2, kind != NatKind::Symmetric, "{kind:?}: mapping");
            if kind != NatKind::Symmetric {
                assert_eq!(m1.port(), 7600, "{kind:?}: the port is kept");
            }
            let mut nat = Nat::new(public, kind, 1);
            let m = nat.outbound(t0, inner, s1);
            assert_eq!(nat.inbound(t0, s1, m.port()), Some(inner), "{kind:?}: the answer gets in");
            assert_eq!(nat.inbound(t0, s1b, m.port()).is_some(), same_ip, "{kind:?}: same host, other port");
            assert_eq!(nat.inbound(t0, s2, m.port()).is_some(), other_ip, "{kind:?}: another host");
        }
    }

    #[test]
    fn mappings_expire_like_conntrack_and_vanish_on_reboot() {
        let t0 = Instant::now();
        let (inner, s1) = (a("192.168.1.2:7600"), a("198.18.0.2:3478"));
        let mut nat = Nat::new(Ipv4Addr::new(198, 18, 0, 11), NatKind::PortRestricted, 1);
        nat.outbound(t0, inner, s1);
        assert_eq!(nat.inbound(t0 + UNREPLIED, s1, 7600), None, "unanswered for 30 s: gone");
        nat.outbound(t0, inner, s1);
        assert!(nat.inbound(t0 + Duration::from_secs(29), s1, 7600).is_some());
        assert!(nat.inbound(t0 + Duration::from_secs(140), s1, 7600).is_some(), "answered: 120 s");
        nat.reboot(Some(Ipv4Addr::new(198, 18, 0, 99)));
        assert_eq!(nat.inbound(t0 + Duration::from_secs(141), s1, 7600), None);
        assert_eq!(nat.outbound(t0, inner, s1), a("198.18.0.99:7600"));
    }
}
