//! Our side of rendezvous: the nodes nearest our record's key that accepted it become our
//! rendezvous nodes. We send each a signed `Hold` every `HOLD_EVERY`, which registers us there
//! and keeps our NAT's mapping towards it open, so a caller's handshake can be forwarded to us.
use super::blind::BlindSigner;
use super::id::NodeId;
use super::message::Token;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

/// Under the 30 s after which Linux conntrack forgets an unanswered UDP flow, and under the
/// 25 s most home routers keep one.
pub const HOLD_EVERY: Duration = Duration::from_secs(20);
/// Rendezvous nodes per key: the nearest of the nodes that stored our record, so a caller's
/// lookup, which asks the nearest first, meets at least one of them.
pub const HOLDS_PER_KEY: usize = 6;
/// Stores awaiting an answer, per key (a publish stores at up to K nodes).
const OFFERS_PER_KEY: usize = super::routing::K;
const KEYS: usize = 2;

#[derive(Clone, Copy, PartialEq, Eq)]
enum State {
    /// A `Store` went out; if it is accepted the node may become a rendezvous node.
    Offered {
        until: Instant,
    },
    Active {
        next: Instant,
    },
}

#[derive(Clone, Copy)]
pub struct Target {
    pub key: [u8; 32],
    pub id: NodeId,
    pub addr: SocketAddr,
    pub token: Token,
    /// Rank by distance to the key among the nodes the record went to (0: nearest).
    rank: u8,
    state: State,
}

pub struct Holds {
    targets: Vec<Target>,
    signers: [Option<([u8; 32], BlindSigner)>; KEYS],
}

impl Default for Holds {
    fn default() -> Self {
        Holds { targets: Vec::with_capacity(KEYS * (OFFERS_PER_KEY + HOLDS_PER_KEY)), signers: [None, None] }
    }
}

impl Holds {
    /// Holds for `key` are signed with `signer` (its record's blinded key); the older of the
    /// two keys we hold for gives way.
    pub fn set_signer(&mut self, key: [u8; 32], signer: BlindSigner) {
        if let Some(s) = self.signers.iter_mut().flatten().find(|(k, _)| *k == key) {
            s.1 = signer;
            return;
        }
        self.signers.rotate_right(1);
        let old = self.signers[0].replace((key, signer)).map(|(k, _)| k);
        if let Some(old) = old {
            self.targets.retain(|t| t.key != old);
        }
    }

    pub fn signer(&self, key: &[u8; 32]) -> Option<&BlindSigner> {
        self.signers.iter().flatten().find(|(k, _)| k == key).map(|(_, s)| s)
    }

    /// A `Store` of our record for `key` went to `addr` with `token`.
    pub fn offer(&mut self, until: Instant, key: [u8; 32], id: NodeId, addr: SocketAddr, token: Token, rank: u8) {
        if self.signer(&key).is_none() || self.targets.iter().any(|t| t.key == key && t.addr == addr) {
            return;
        }
        if self.targets.len() < self.targets.capacity() {
            let state = State::Offered { until };
            self.targets.push(Target { key, id, addr, token, rank, state });
        }
    }

    /// `addr` stored our record: if it is among the nearest, it becomes a rendezvous node whose
    /// first hold is due at once (true).
    pub fn accepted(&mut self, now: Instant, addr: SocketAddr) -> bool {
        let offered = |t: &Target| t.addr == addr && matches!(t.state, State::Offered { .. });
        let Some(i) = self.targets.iter().position(offered) else { return false };
        let (key, rank) = (self.targets[i].key, self.targets[i].rank);
        let mut count = 0;
        let mut far: Option<(usize, u8)> = None;
        for (j, o) in self.targets.iter().enumerate() {
            if o.key == key && matches!(o.state, State::Active { .. }) {
                count += 1;
                if far.is_none_or(|(_, r)| o.rank > r) {
                    far = Some((j, o.rank));
                }
            }
        }
        if count >= HOLDS_PER_KEY {
            // Full: a nearer node replaces the farthest.
            match far {
                Some((f, far_rank)) if rank < far_rank => {
                    self.targets.swap_remove(f);
                }
                _ => {
                    self.targets.swap_remove(i);
                    return false;
                }
            }
        }
        let Some(j) = self.targets.iter().position(offered) else { return false };
        self.targets[j].state = State::Active { next: now };
        true
    }

    /// The node at `addr` answered a hold: due again in `HOLD_EVERY`, with its fresh token.
    pub fn held(&mut self, now: Instant, addr: SocketAddr, token: Token) {
        for t in self.targets.iter_mut().filter(|t| t.addr == addr && matches!(t.state, State::Active { .. })) {
            t.token = token;
            t.state = State::Active { next: now + HOLD_EVERY };
        }
    }

    /// The node at `addr` refused or did not answer: no longer a rendezvous node. Returns the
    /// keys left with none.
    pub fn lost(&mut self, addr: SocketAddr) -> [Option<[u8; 32]>; KEYS] {
        let mut orphaned = [None; KEYS];
        let mut n = 0;
        let mut i = 0;
        while i < self.targets.len() {
            let t = self.targets[i];
            if t.addr != addr || !matches!(t.state, State::Active { .. }) {
                i += 1;
                continue;
            }
            self.targets.swap_remove(i);
            if !self.is_held(&t.key) && n < KEYS {
                orphaned[n] = Some(t.key);
                n += 1;
            }
        }
        orphaned
    }

    pub fn is_held(&self, key: &[u8; 32]) -> bool {
        self.targets.iter().any(|t| t.key == *key && matches!(t.state, State::Active { .. }))
    }

    /// A forwarded handshake may come only from one of our rendezvous nodes.
    pub fn is_rendezvous(&self, addr: &SocketAddr) -> bool {
        self.targets.iter().any(|t| t.addr == *addr && matches!(t.state, State::Active { .. }))
    }

    pub fn active(&self) -> impl Iterator<Item = &Target> {
        self.targets.iter().filter(|t| matches!(t.state, State::Active { .. }))
    }

    /// Drops offers that were never answered; returns the next target whose hold is due (it is
    /// rescheduled as if answered; `held` or `lost` follows).
    pub fn due(&mut self, now: Instant) -> Option<Target> {
        self.targets.retain(|t| !matches!(t.state, State::Offered { until } if until <= now));
        let t = self.targets.iter_mut().find(|t| matches!(t.state, State::Active { next } if next <= now))?;
        t.state = State::Active { next: now + HOLD_EVERY };
        Some(*t)
    }

    pub fn poll_timeout(&self) -> Option<Instant> {
        self.targets
            .iter()
            .map(|t| match t.state {
                State::Offered { until } => until,
                State::Active { next } => next,
            })
            .min()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::identity::DeviceKey;

    fn addr(n: u8) -> SocketAddr {
        SocketAddr::from(([198, 51, 100, n], 7600))
    }

    fn signer() -> BlindSigner {
        BlindSigner::new(&DeviceKey::from_seed([1; 32]), 20_000).unwrap()
    }

    #[test]
    fn the_nearest_acceptors_become_rendezvous_nodes_and_are_held_on_schedule() {
        let t0 = Instant::now();
        let mut h = Holds::default();
        h.offer(t0 + Duration::from_secs(1), [1; 32], NodeId([9; 32]), addr(1), [0; 8], 0);
        assert!(!h.accepted(t0, addr(1)), "no signer for the key: not held");
        h.set_signer([1; 32], signer());
        for n in 0..10u8 {
            h.offer(t0 + Duration::from_secs(1), [1; 32], NodeId([n; 32]), addr(n), [n; 8], n);
        }
        // Accepted farthest first: the nearer ones still win the places.
        for n in (0..10u8).rev() {
            h.accepted(t0, addr(n));
        }
        let mut held: Vec<u8> = h.active().map(|t| t.rank).collect();
        held.sort();
        assert_eq!(held, [0, 1, 2, 3, 4, 5]);
        assert!(h.is_rendezvous(&addr(0)) && !h.is_rendezvous(&addr(7)));
        // All six are due now, then every HOLD_EVERY.
        let mut due = 0;
        while h.due(t0).is_some() {
            due += 1;
        }
        assert_eq!(due, 6);
        assert_eq!(h.poll_timeout(), Some(t0 + HOLD_EVERY));
        h.held(t0 + Duration::from_secs(1), addr(0), [77; 8]);
        assert_eq!(h.active().find(|t| t.addr == addr(0)).unwrap().token, [77; 8], "the fresh token is kept");
        // Losing them all orphans the key (time to publish again).
        for n in 1..6 {
            assert_eq!(h.lost(addr(n)), [None, None]);
        }
        assert_eq!(h.lost(addr(0)), [Some([1; 32]), None]);
        assert!(!h.is_held(&[1; 32]));
    }

    #[test]
    fn unanswered_offers_expire_and_a_third_key_retires_the_oldest() {
        let t0 = Instant::now();
        let mut h = Holds::default();
        h.set_signer([1; 32], signer());
        h.offer(t0 + Duration::from_secs(1), [1; 32], NodeId([1; 32]), addr(1), [0; 8], 0);
        assert_eq!(h.due(t0 + Duration::from_secs(1)).map(|t| t.addr), None);
        assert!(!h.accepted(t0, addr(1)), "the offer expired");
        h.offer(t0 + Duration::from_secs(9), [1; 32], NodeId([1; 32]), addr(1), [0; 8], 0);
        assert!(h.accepted(t0, addr(1)));
        h.set_signer([2; 32], signer());
        h.set_signer([3; 32], signer());
        assert!(h.signer(&[1; 32]).is_none() && !h.is_held(&[1; 32]), "key 1's holds went with its signer");
    }
}
