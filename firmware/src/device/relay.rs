//! Relay fallback. When a handshake went through rendezvous nodes but no direct path works
//! shortly after, the caller asks those nodes, one at a time, to relay (`Allocate`, with a
//! ticket only the two handshake parties know); the callee, invited by its node, joins. Session
//! packets then go through the relay, end-to-end encrypted as ever, while both sides keep
//! probing each other's direct addresses: the endpoint moves the session to a direct path as
//! soon as one works, and back to the relay if it breaks (`session::PathClass`).
use super::Device;
use crate::dht::announce;
use crate::dht::node::MAX_HOLDERS;
use crate::identity::DeviceId;
use crate::nat::NatClass;
use crate::session::PathClass;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

/// A handshake done through rendezvous nodes: ask for a relay if no direct path works by then.
const RELAY_AFTER: Duration = Duration::from_millis(300);
/// A relay that has not answered by then is passed over for the next one.
const ALLOCATE_WAIT: Duration = Duration::from_millis(250);
/// While the call goes through a relay, direct addresses are probed this often.
const DIRECT_RETRY: Duration = Duration::from_secs(1);
/// A fallback for a session that carries no call lapses after this.
const IDLE_FALLBACK: Duration = Duration::from_secs(15);
/// While a direct path works, a keepalive through the relay this often keeps the pair (relays
/// drop a pair idle for 30 s), so the call can fall back at once if the direct path breaks.
const KEEP_RELAY: Duration = Duration::from_secs(20);

#[derive(Debug, Clone, Copy)]
pub(super) struct Fallback {
    peer: DeviceId,
    /// The peer's DHT key and its rendezvous nodes (where we may allocate); None on the side
    /// that was invited.
    key: Option<[u8; 32]>,
    via: [Option<SocketAddr>; MAX_HOLDERS],
    tried: usize,
    relay: Option<SocketAddr>,
    /// When we last sent through the relay.
    kept: Instant,
    next: Instant,
    since: Instant,
}

impl Device {
    /// The session to `peer` came up through rendezvous nodes `via` (it holds `key`): arm the
    /// relay fallback. A device behind a NAT with random mapping asks at once.
    pub(super) fn arm_fallback(
        &mut self,
        now: Instant,
        peer: DeviceId,
        key: [u8; 32],
        via: [Option<SocketAddr>; MAX_HOLDERS],
    ) {
        if self.fallbacks.iter().any(|f| f.peer == peer) || self.fallbacks.len() == self.fallbacks.capacity() {
            return;
        }
        let wait = if self.nat.class() == NatClass::Random { Duration::ZERO } else { RELAY_AFTER };
        let f = Fallback { peer, key: Some(key), via, tried: 0, relay: None, kept: now, next: now + wait, since: now };
        self.fallbacks.push(f);
    }

    pub(super) fn fallback_due(&self) -> Option<Instant> {
        self.fallbacks.iter().map(|f| f.next).min()
    }

    pub(super) fn fallback_timeout(&mut self, now: Instant) {
        let mut i = 0;
        while i < self.fallbacks.len() {
            let f = self.fallbacks[i];
            let established = self.endpoint.is_established(&f.peer) || self.endpoint.ticket(&f.peer).is_some();
            let idle = self.media_peer != Some(f.peer) && now >= f.since + IDLE_FALLBACK;
            if !established || idle {
                self.fallbacks.swap_remove(i);
                continue;
            }
            if now >= f.next && !self.fallback_step(now, i) {
                self.fallbacks.swap_remove(i);
                continue;
            }
            i += 1;
        }
    }

    /// One step of fallback `i`; false when it is done with.
    fn fallback_step(&mut self, now: Instant, i: usize) -> bool {
        let f = self.fallbacks[i];
        let works = self.endpoint.path_works(now, &f.peer);
        let class = self.endpoint.path_class(&f.peer);
        let Some(relay) = f.relay else {
            if works && class != Some(PathClass::Relay) {
                // A direct path works: no relay needed.
                return false;
            }
            let (Some(key), Some(ticket)) = (f.key, self.endpoint.ticket(&f.peer)) else { return false };
            let Some(via) = f.via.into_iter().flatten().nth(f.tried) else { return false };
            if let Some(d) = self.dht.as_mut() {
                d.allocate(now, via, key, ticket);
            }
            self.fallbacks[i].tried += 1;
            self.fallbacks[i].next = now + ALLOCATE_WAIT;
            return true;
        };
        if !works || now >= f.kept + KEEP_RELAY {
            // No working path (the direct one broke, or the relay is new): through the relay.
            self.endpoint.probe(now, &f.peer, relay);
            self.fallbacks[i].kept = now;
        }
        if class == Some(PathClass::Relay) || !works {
            // Both sides probing each other's addresses opens consistent NATs.
            self.endpoint.probe_candidates(now, &f.peer);
            let w = self.whereabouts.iter().find(|w| w.id == f.peer).copied();
            let lan = w.and_then(|w| w.lan).map(|(a, _)| a);
            for a in w.into_iter().flat_map(|w| w.dht).flatten().chain(lan) {
                self.endpoint.probe(now, &f.peer, a);
            }
        }
        self.fallbacks[i].next = now + DIRECT_RETRY;
        true
    }

    /// Our rendezvous node `via` relays, and a caller asks it to pair us under `ticket`: join if
    /// the ticket is one of our sessions' (proof the caller completed a handshake with us).
    pub(super) fn on_relay_invite(&mut self, via: SocketAddr, ticket: [u8; 16]) {
        if self.endpoint.peer_of_ticket(&ticket).is_some()
            && let Some(d) = self.dht.as_mut()
        {
            d.join(via, ticket);
        }
    }

    /// Relay `via` made the pair `ticket` (or refused it: the next one is asked at once).
    pub(super) fn on_relaying(&mut self, now: Instant, via: SocketAddr, ticket: [u8; 16], ok: bool) {
        let Some(peer) = self.endpoint.peer_of_ticket(&ticket) else { return };
        let i = match self.fallbacks.iter().position(|f| f.peer == peer) {
            Some(i) => i,
            None if ok && self.fallbacks.len() < self.fallbacks.capacity() => {
                let f = Fallback {
                    peer,
                    key: None,
                    via: [None; MAX_HOLDERS],
                    tried: 0,
                    relay: None,
                    kept: now,
                    next: now,
                    since: now,
                };
                self.fallbacks.push(f);
                self.fallbacks.len() - 1
            }
            None => return,
        };
        if !ok {
            if self.fallbacks[i].relay.is_none() {
                self.fallbacks[i].next = now;
            }
            return;
        }
        // Whatever we use, packets from a relay are known for what they are.
        self.endpoint.add_relay(via);
        if self.fallbacks[i].relay.is_some() {
            return;
        }
        self.fallbacks[i].relay = Some(via);
        self.fallbacks[i].next = now;
        self.fallback_timeout(now);
    }

    /// The relay the session to `peer` may fall back on.
    pub fn relay_of(&self, peer: &DeviceId) -> Option<SocketAddr> {
        self.fallbacks.iter().find(|f| f.peer == *peer).and_then(|f| f.relay)
    }

    /// What kind of path the session to `peer` uses.
    pub fn path_class(&self, peer: &DeviceId) -> Option<PathClass> {
        self.endpoint.path_class(peer)
    }

    /// Re-arms the fallback of our call's peer from a fresh lookup of its record (the path
    /// broke and the relay, if any, may be gone too).
    pub(super) fn refresh_fallback(&mut self, now: Instant, key: [u8; 32], via: [Option<SocketAddr>; MAX_HOLDERS]) {
        let Some(peer) = self.media_peer else { return };
        if self.endpoint.path_works(now, &peer) {
            return;
        }
        let unix = self.unix(now);
        if !announce::lookup_keys(&peer, unix).contains(&Some(key)) {
            return;
        }
        match self.fallbacks.iter_mut().find(|f| f.peer == peer) {
            Some(f) => {
                // The relay may be gone too (its pair lapsed): pair again, anywhere.
                f.relay = None;
                f.key = Some(key);
                f.via = via;
                f.tried = 0;
                f.next = now;
            }
            None => self.arm_fallback(now, peer, key, via),
        }
    }
}
