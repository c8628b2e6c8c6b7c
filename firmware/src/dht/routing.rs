//! The routing table: one k-bucket per shared-prefix length, each with a replacement cache.
//! Only nodes that proved their address (they answered us, or showed our token) get in; a
//! list of nodes from someone else is a lookup candidate, never an entry.
use super::id::NodeId;
use super::message::Token;
use std::net::{IpAddr, SocketAddr};
use std::time::Instant;

pub const K: usize = 20;
pub const REPLACEMENTS: usize = 8;
const BUCKETS: usize = 256;
/// Failed queries in a row after which an entry is bad and may be replaced.
const BAD_AFTER: u8 = 2;

#[derive(Debug, Clone, Copy)]
pub struct Entry {
    pub id: NodeId,
    pub addr: SocketAddr,
    pub last_seen: Instant,
    /// The token this node gave us, and when (it proves our address to it).
    pub token: Option<(Token, Instant)>,
    pub fails: u8,
}

impl Entry {
    pub fn new(id: NodeId, addr: SocketAddr, now: Instant) -> Self {
        Entry { id, addr, last_seen: now, token: None, fails: 0 }
    }

    fn bad(&self) -> bool {
        self.fails >= BAD_AFTER
    }
}

struct Bucket {
    entries: Vec<Entry>,
    replacements: Vec<Entry>,
    last_lookup: Instant,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Insert {
    Added,
    Updated,
    /// The bucket is full of good nodes; the node waits in the replacement cache.
    Cached,
    /// Refused: its subnet already has its share of the bucket, or it is us.
    Refused,
}

pub struct RoutingTable {
    own: NodeId,
    /// Created on first use (a table of N nodes uses about log2(N / K) + 1 of them), so the
    /// bound is 256 buckets but the usual footprint is a dozen.
    buckets: Vec<Option<Box<Bucket>>>,
    subnet_limit: usize,
    len: usize,
}

/// The prefix that counts as "one operator" for the per-bucket subnet limit.
fn subnet(ip: &IpAddr) -> Option<[u8; 6]> {
    match ip {
        IpAddr::V4(v4) => {
            // Loopback and private ranges are one household or one test host: no limit there.
            if v4.is_loopback() || v4.is_private() || v4.is_link_local() {
                return None;
            }
            let o = v4.octets();
            Some([4, o[0], o[1], o[2], 0, 0])
        }
        IpAddr::V6(v6) => {
            let s = v6.segments();
            if v6.is_loopback() || (s[0] & 0xfe00) == 0xfc00 || (s[0] & 0xffc0) == 0xfe80 {
                return None;
            }
            let o = v6.octets();
            Some([6, o[0], o[1], o[2], o[3], o[4] ^ o[5]])
        }
    }
}

impl RoutingTable {
    pub fn new(own: NodeId, subnet_limit: usize) -> Self {
        RoutingTable { own, buckets: (0..BUCKETS).map(|_| None).collect(), subnet_limit, len: 0 }
    }

    pub fn own(&self) -> NodeId {
        self.own
    }

    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    fn index(&self, id: &NodeId) -> Option<usize> {
        let cp = self.own.common_prefix(id);
        (cp < BUCKETS).then_some(cp)
    }

    fn bucket_mut(&mut self, i: usize, now: Instant) -> &mut Bucket {
        self.buckets[i].get_or_insert_with(|| {
            Box::new(Bucket {
                entries: Vec::with_capacity(K),
                replacements: Vec::with_capacity(REPLACEMENTS),
                last_lookup: now,
            })
        })
    }

    pub fn get(&self, id: &NodeId) -> Option<&Entry> {
        let i = self.index(id)?;
        self.buckets[i].as_ref()?.entries.iter().find(|e| e.id == *id)
    }

    /// Whether `verified` would add this node now (so checking its address is worth a ping).
    pub fn would_add(&self, id: &NodeId, addr: &SocketAddr) -> bool {
        let Some(i) = self.index(id) else { return false };
        let Some(b) = self.buckets[i].as_ref() else { return true };
        if b.entries.iter().any(|e| e.id == *id) {
            return false;
        }
        let sub = subnet(&addr.ip());
        let same = b.entries.iter().filter(|e| sub.is_some() && subnet(&e.addr.ip()) == sub).count();
        same < self.subnet_limit && (b.entries.len() < K || b.entries.iter().any(|e| e.bad()))
    }

    /// A node proved it is at `addr`: add it, refresh it, or cache it.
    pub fn verified(&mut self, now: Instant, id: NodeId, addr: SocketAddr) -> Insert {
        let Some(i) = self.index(&id) else { return Insert::Refused };
        let limit = self.subnet_limit;
        let b = self.bucket_mut(i, now);
        if let Some(e) = b.entries.iter_mut().find(|e| e.id == id) {
            // A known ID at a new address keeps its old one: a spoofed source must not move it.
            // If the node really moved, the old entry fails and the new one takes its place.
            if e.addr == addr {
                e.last_seen = now;
                e.fails = 0;
            }
            return Insert::Updated;
        }
        let sub = subnet(&addr.ip());
        let same_subnet = |e: &Entry| sub.is_some() && subnet(&e.addr.ip()) == sub;
        if b.entries.iter().filter(|e| same_subnet(e)).count() >= limit {
            return Insert::Refused;
        }
        let entry = Entry::new(id, addr, now);
        if b.entries.len() < K {
            b.entries.push(entry);
            self.len += 1;
            return Insert::Added;
        }
        if let Some(bad) = b.entries.iter_mut().find(|e| e.bad()) {
            *bad = entry;
            return Insert::Added;
        }
        b.replacements.retain(|e| e.id != id);
        if b.replacements.len() == REPLACEMENTS {
            b.replacements.remove(0);
        }
        b.replacements.push(entry);
        Insert::Cached
    }

    /// A query to `id` went unanswered. A bad entry gives way to the freshest replacement.
    pub fn failed(&mut self, id: &NodeId) {
        let Some(i) = self.index(id) else { return };
        let Some(b) = self.buckets[i].as_mut() else { return };
        let Some(pos) = b.entries.iter().position(|e| e.id == *id) else {
            b.replacements.retain(|e| e.id != *id);
            return;
        };
        b.entries[pos].fails = b.entries[pos].fails.saturating_add(1);
        if b.entries[pos].bad()
            && let Some(r) = b.replacements.pop()
        {
            b.entries[pos] = r;
        }
    }

    pub fn set_token(&mut self, id: &NodeId, token: Token, now: Instant) {
        let Some(i) = self.index(id) else { return };
        if let Some(e) = self.buckets[i].as_mut().and_then(|b| b.entries.iter_mut().find(|e| e.id == *id)) {
            e.token = Some((token, now));
        }
    }

    pub fn remove(&mut self, id: &NodeId) {
        let Some(i) = self.index(id) else { return };
        if let Some(b) = self.buckets[i].as_mut()
            && let Some(pos) = b.entries.iter().position(|e| e.id == *id)
        {
            b.entries.swap_remove(pos);
            self.len -= 1;
            if let Some(r) = b.replacements.pop() {
                b.entries.push(r);
                self.len += 1;
            }
        }
    }

    /// Fills `out` with the good entries closest to `target`, nearest first; returns how many.
    pub fn closest(&self, target: &NodeId, out: &mut [Entry]) -> usize {
        // Bucket c = common_prefix(own, target) holds the nearest entries; all deeper buckets come
        // next (their distances share leading bit c); then buckets c-1, c-2, … each strictly
        // farther than the one before. So the scan stops as soon as `out` is full after a group.
        let c = self.own.common_prefix(target).min(BUCKETS - 1);
        let mut n = 0;
        let bucket = |i: usize| self.buckets[i].iter().flat_map(|b| b.entries.iter());
        n = insert_sorted(bucket(c), target, out, n);
        if n < out.len() {
            n = insert_sorted(((c + 1)..BUCKETS).flat_map(bucket), target, out, n);
        }
        for i in (0..c).rev() {
            if n == out.len() {
                break;
            }
            n = insert_sorted(bucket(i), target, out, n);
        }
        n
    }

    pub fn iter(&self) -> impl Iterator<Item = &Entry> {
        self.buckets.iter().flatten().flat_map(|b| b.entries.iter())
    }

    /// The least recently seen entry not heard from since `before`, if any (a liveness check is due).
    pub fn stale(&self, before: Instant) -> Option<Entry> {
        self.buckets
            .iter()
            .flatten()
            .filter_map(|b| b.entries.iter().filter(|e| e.last_seen < before).min_by_key(|e| e.last_seen))
            .min_by_key(|e| e.last_seen)
            .copied()
    }

    /// Marks a liveness check as started so the same entry is not checked twice at once.
    pub fn touch(&mut self, id: &NodeId, now: Instant) {
        let Some(i) = self.index(id) else { return };
        if let Some(e) = self.buckets[i].as_mut().and_then(|b| b.entries.iter_mut().find(|e| e.id == *id)) {
            e.last_seen = now;
        }
    }

    /// A bucket that has seen no lookup since `before` (the deepest such), to refresh.
    pub fn bucket_to_refresh(&self, before: Instant) -> Option<usize> {
        (0..BUCKETS).rev().find(|&i| self.buckets[i].as_ref().is_some_and(|b| b.last_lookup < before))
    }

    pub fn looked_up(&mut self, target: &NodeId, now: Instant) {
        if let Some(i) = self.index(target)
            && let Some(b) = self.buckets[i].as_mut()
        {
            b.last_lookup = now;
        }
    }

    /// A random ID that falls in bucket `i`.
    pub fn random_in(&self, i: usize, rng: &mut crate::util::rng::Rng) -> NodeId {
        let mut id = NodeId::random(rng).0;
        let own = self.own.0;
        let (byte, bit) = (i / 8, i % 8);
        id[..byte].copy_from_slice(&own[..byte]);
        let keep = if bit == 0 { 0 } else { 0xffu8 << (8 - bit) };
        let flip = 0x80u8 >> bit;
        id[byte] = (own[byte] & keep) | ((!own[byte]) & flip) | (id[byte] & !(keep | flip));
        NodeId(id)
    }
}

/// Adds the good entries of `group` to the first `n` (sorted) of `out`, keeping it sorted.
fn insert_sorted<'a>(
    group: impl Iterator<Item = &'a Entry>,
    target: &NodeId,
    out: &mut [Entry],
    mut n: usize,
) -> usize {
    if out.is_empty() {
        return 0;
    }
    for e in group.filter(|e| !e.bad()) {
        let d = e.id.distance(target);
        if n == out.len() && out.last().is_none_or(|l| l.id.distance(target) <= d) {
            continue;
        }
        // Insertion into a short sorted array: no allocation on the query path.
        let mut at = if n < out.len() { n } else { out.len() - 1 };
        while at > 0 && out[at - 1].id.distance(target) > d {
            out[at] = out[at - 1];
            at -= 1;
        }
        out[at] = *e;
        n = (n + 1).min(out.len());
    }
    n
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::util::rng::Rng;
    use std::time::Duration;

    fn public(i: u32) -> SocketAddr {
        SocketAddr::from(([1, (i >> 8) as u8, i as u8, 1], 7600))
    }

    #[test]
    fn closest_is_sorted_and_complete() {
        let now = Instant::now();
        let mut rng = Rng::seeded(1);
        let mut t = RoutingTable::new(NodeId::random(&mut rng), 2);
        let mut all = Vec::new();
        for i in 0..2000 {
            let id = NodeId::random(&mut rng);
            if t.verified(now, id, public(i)) == Insert::Added {
                all.push(id);
            }
        }
        assert_eq!(t.len(), all.len());
        for j in 0..200 {
            // Random targets, and targets sharing a long prefix with our own ID.
            let mut target = NodeId::random(&mut rng);
            if j % 2 == 0 {
                target = t.random_in(j % 24, &mut rng);
            }
            let mut out = [Entry::new(target, public(0), now); K];
            let n = t.closest(&target, &mut out);
            assert_eq!(n, K);
            all.sort_by_key(|id| id.distance(&target));
            let got: Vec<_> = out.iter().map(|e| e.id).collect();
            assert_eq!(got, all[..K]);
        }
    }

    #[test]
    fn full_bucket_caches_then_replaces_bad_entries() {
        let now = Instant::now();
        let own = NodeId([0; 32]);
        let mut t = RoutingTable::new(own, 2);
        // All in bucket 0 (first bit differs).
        let id = |i: u32| {
            let mut b = [0xffu8; 32];
            b[28..].copy_from_slice(&i.to_be_bytes());
            NodeId(b)
        };
        for i in 0..K as u32 {
            assert_eq!(t.verified(now, id(i), public(i)), Insert::Added);
        }
        assert_eq!(t.verified(now, id(100), public(100)), Insert::Cached);
        t.failed(&id(3));
        assert!(t.get(&id(3)).is_some(), "one failure is not enough");
        t.failed(&id(3));
        assert!(t.get(&id(3)).is_none());
        assert!(t.get(&id(100)).is_some(), "replacement took its place");
        assert_eq!(t.len(), K);
    }

    #[test]
    fn subnet_limit_per_bucket_but_not_on_lan() {
        let now = Instant::now();
        let own = NodeId([0; 32]);
        let mut t = RoutingTable::new(own, 2);
        let id = |i: u8| NodeId([0x80 | i; 32]);
        let same24 = |i: u8| SocketAddr::from(([198, 51, 100, i], 7600));
        assert_eq!(t.verified(now, id(1), same24(1)), Insert::Added);
        assert_eq!(t.verified(now, id(2), same24(2)), Insert::Added);
        assert_eq!(t.verified(now, id(3), same24(3)), Insert::Refused);
        let v6 = |i: u8| SocketAddr::new(format!("2001:db8:1::{i}").parse().unwrap(), 1);
        assert_eq!(t.verified(now, id(4), v6(1)), Insert::Added);
        assert_eq!(t.verified(now, id(5), v6(2)), Insert::Added);
        assert_eq!(t.verified(now, id(6), v6(3)), Insert::Refused);
        for i in 10..20 {
            assert_eq!(t.verified(now, id(i), SocketAddr::from(([127, 0, 0, i], 1))), Insert::Added);
        }
    }

    #[test]
    fn spoofed_source_does_not_move_an_entry() {
        let now = Instant::now();
        let mut t = RoutingTable::new(NodeId([0; 32]), 2);
        let id = NodeId([0xaa; 32]);
        t.verified(now, id, public(1));
        assert_eq!(t.verified(now, id, public(2)), Insert::Updated);
        assert_eq!(t.get(&id).unwrap().addr, public(1));
    }

    #[test]
    fn random_in_lands_in_its_bucket_and_stale_finds_oldest() {
        let mut rng = Rng::seeded(3);
        let now = Instant::now();
        let mut t = RoutingTable::new(NodeId::random(&mut rng), 2);
        for i in 0..200 {
            let r = t.random_in(i, &mut rng);
            assert_eq!(t.own().common_prefix(&r), i);
        }
        let a = NodeId::random(&mut rng);
        let b = NodeId::random(&mut rng);
        t.verified(now, a, public(1));
        t.verified(now + Duration::from_secs(5), b, public(2));
        assert_eq!(t.stale(now + Duration::from_secs(1)).map(|e| e.id), Some(a));
        assert!(t.stale(now).is_none());
    }
}
