//! The routing table: one k-bucket per shared-prefix length, each with a replacement cache.
//! Only nodes that proved their address (they answered us, or showed our token) get in; a
//! list of nodes from someone else is a lookup candidate, never an entry.
use super::id::NodeId;
use super::message::Token;
use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant};

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
}

#[derive(Default)]
struct Bucket {
    /// Per entry, side by side and in the order of `entries`: the first 128 bits of its ID
    /// (enough to order by distance; the rest only breaks ties) and its subnet. Every reply,
    /// lookup and insertion scans these few bytes, not the entries.
    heads: Vec<u128>,
    subnets: Vec<u64>,
    /// The entries' `fails`, kept in step with them (the scan for the nearest skips bad ones).
    fails: Vec<u8>,
    /// Grown a few entries at a time up to K: the deep buckets near our own ID hold only a few.
    entries: Vec<Entry>,
    replacements: Vec<Entry>,
    /// When a lookup last went into this bucket's range; None: never, so a refresh is due.
    last_lookup: Option<Instant>,
}

fn head(id: &NodeId) -> u128 {
    let mut b = [0u8; 16];
    b.copy_from_slice(&id.0[..16]);
    u128::from_be_bytes(b)
}

/// Makes room for one more in `v`, whose bound is `max`: doubling from 4, never past `max`.
fn room_for_one<T>(v: &mut Vec<T>, max: usize) {
    if v.len() == v.capacity() {
        let step = v.len().max(4).min(max.saturating_sub(v.len())).max(1);
        v.reserve_exact(step);
    }
}

impl Bucket {
    fn find(&self, id: &NodeId) -> Option<usize> {
        let h = head(id);
        self.heads
            .iter()
            .enumerate()
            .find(|&(i, x)| *x == h && self.entries.get(i).is_some_and(|e| e.id == *id))
            .map(|(i, _)| i)
    }

    fn entry_mut(&mut self, id: &NodeId) -> Option<&mut Entry> {
        let i = self.find(id)?;
        self.entries.get_mut(i)
    }

    /// Entries from `sub`'s subnet (none counts: LAN and loopback addresses have no limit).
    fn same_subnet(&self, sub: u64) -> usize {
        if sub == 0 { 0 } else { self.subnets.iter().filter(|&&s| s == sub).count() }
    }

    fn push(&mut self, e: Entry) {
        room_for_one(&mut self.heads, K);
        room_for_one(&mut self.subnets, K);
        room_for_one(&mut self.fails, K);
        room_for_one(&mut self.entries, K);
        self.heads.push(head(&e.id));
        self.subnets.push(subnet(&e.addr.ip()));
        self.fails.push(e.fails);
        self.entries.push(e);
    }

    fn set(&mut self, i: usize, e: Entry) {
        self.heads[i] = head(&e.id);
        self.subnets[i] = subnet(&e.addr.ip());
        self.fails[i] = e.fails;
        self.entries[i] = e;
    }

    fn set_fails(&mut self, i: usize, fails: u8) {
        self.fails[i] = fails;
        self.entries[i].fails = fails;
    }

    fn bad(&self, i: usize) -> bool {
        self.fails.get(i).is_some_and(|&f| f >= BAD_AFTER)
    }

    fn swap_remove(&mut self, i: usize) {
        self.heads.swap_remove(i);
        self.subnets.swap_remove(i);
        self.fails.swap_remove(i);
        self.entries.swap_remove(i);
    }
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
    /// Bucket i holds the nodes that share i leading bits with us. Only as many as the deepest
    /// one in use exist (a table of N nodes uses about log2(N / K) + 1 of them), so the bound is
    /// 256 buckets but the usual footprint is a dozen, side by side (no pointer per bucket).
    buckets: Vec<Bucket>,
    subnet_limit: usize,
    len: usize,
}

/// The prefix that counts as "one operator" for the per-bucket subnet limit: a /24 or a /48,
/// tagged with its family; 0 for addresses that have no limit.
fn subnet(ip: &IpAddr) -> u64 {
    match ip {
        IpAddr::V4(v4) => {
            // Loopback and private ranges are one household or one test host: no limit there.
            if v4.is_loopback() || v4.is_private() || v4.is_link_local() {
                return 0;
            }
            let [a, b, c, _] = v4.octets();
            (4 << 56) | u64::from(u32::from_be_bytes([0, a, b, c]))
        }
        IpAddr::V6(v6) => {
            let s = v6.segments();
            if v6.is_loopback() || (s[0] & 0xfe00) == 0xfc00 || (s[0] & 0xffc0) == 0xfe80 {
                return 0;
            }
            (6 << 56) | (u64::from(s[0]) << 32) | (u64::from(s[1]) << 16) | u64::from(s[2])
        }
    }
}

impl RoutingTable {
    pub fn new(own: NodeId, subnet_limit: usize) -> Self {
        RoutingTable { own, buckets: Vec::new(), subnet_limit, len: 0 }
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

    fn bucket(&self, id: &NodeId) -> Option<&Bucket> {
        self.buckets.get(self.index(id)?)
    }

    fn bucket_mut(&mut self, id: &NodeId) -> Option<&mut Bucket> {
        let i = self.index(id)?;
        self.buckets.get_mut(i)
    }

    /// Bucket `i`, created (with every bucket before it) if need be; `i` < 256.
    fn bucket_at(&mut self, i: usize) -> &mut Bucket {
        if self.buckets.len() <= i {
            self.buckets.resize_with(i + 1, Bucket::default);
        }
        &mut self.buckets[i]
    }

    /// The entry for the node at `addr`, if any (a scan: only for rare, per-call uses).
    pub fn entry_at(&self, addr: &SocketAddr) -> Option<&Entry> {
        self.buckets.iter().flat_map(|b| b.entries.iter()).find(|e| e.addr == *addr)
    }

    pub fn get(&self, id: &NodeId) -> Option<&Entry> {
        let b = self.bucket(id)?;
        b.entries.get(b.find(id)?)
    }

    /// Whether `verified` would add this node now (so checking its address is worth a ping).
    pub fn would_add(&self, id: &NodeId, addr: &SocketAddr) -> bool {
        if self.index(id).is_none() {
            return false;
        }
        let Some(b) = self.bucket(id) else { return true };
        let has_room = b.entries.len() < K || b.fails.iter().any(|&f| f >= BAD_AFTER);
        has_room && b.find(id).is_none() && b.same_subnet(subnet(&addr.ip())) < self.subnet_limit
    }

    /// A node proved it is at `addr`: add it, refresh it, or cache it.
    pub fn verified(&mut self, now: Instant, id: NodeId, addr: SocketAddr) -> Insert {
        let Some(i) = self.index(&id) else { return Insert::Refused };
        let limit = self.subnet_limit;
        let b = self.bucket_at(i);
        if let Some(i) = b.find(&id) {
            // A known ID at a new address keeps its old one: a spoofed source must not move it.
            // If the node really moved, the old entry fails and the new one takes its place.
            if b.entries[i].addr == addr {
                b.entries[i].last_seen = now;
                b.set_fails(i, 0);
            }
            return Insert::Updated;
        }
        if b.same_subnet(subnet(&addr.ip())) >= limit {
            return Insert::Refused;
        }
        let entry = Entry::new(id, addr, now);
        if b.entries.len() < K {
            b.push(entry);
            self.len += 1;
            return Insert::Added;
        }
        if let Some(bad) = (0..b.entries.len()).find(|&i| b.bad(i)) {
            b.set(bad, entry);
            return Insert::Added;
        }
        b.replacements.retain(|e| e.id != id);
        if b.replacements.len() == REPLACEMENTS {
            b.replacements.remove(0);
        }
        room_for_one(&mut b.replacements, REPLACEMENTS);
        b.replacements.push(entry);
        Insert::Cached
    }

    /// A query to `id` went unanswered. A bad entry gives way to the freshest replacement.
    pub fn failed(&mut self, id: &NodeId) {
        let Some(b) = self.bucket_mut(id) else { return };
        let Some(pos) = b.find(id) else {
            b.replacements.retain(|e| e.id != *id);
            return;
        };
        b.set_fails(pos, b.fails[pos].saturating_add(1));
        if b.bad(pos)
            && let Some(r) = b.replacements.pop()
        {
            b.set(pos, r);
        }
    }

    /// `id` did not answer a liveness check (with its retries): it is bad at once, and the
    /// freshest replacement takes its place.
    pub fn gone(&mut self, id: &NodeId) {
        if let Some(b) = self.bucket_mut(id)
            && let Some(pos) = b.find(id)
        {
            b.set_fails(pos, BAD_AFTER - 1);
        }
        self.failed(id);
    }

    pub fn set_token(&mut self, id: &NodeId, token: Token, now: Instant) {
        if let Some(e) = self.bucket_mut(id).and_then(|b| b.entry_mut(id)) {
            e.token = Some((token, now));
        }
    }

    pub fn remove(&mut self, id: &NodeId) {
        let Some(b) = self.bucket_mut(id) else { return };
        let Some(pos) = b.find(id) else { return };
        b.swap_remove(pos);
        let refill = b.replacements.pop();
        if let Some(r) = refill {
            b.push(r);
        } else {
            self.len -= 1;
        }
    }

    /// Fills `out` with the good entries closest to `target`, nearest first; returns how many.
    pub fn closest(&self, target: &NodeId, out: &mut [Entry]) -> usize {
        let mut refs = [None; K];
        let n = self.closest_refs(target, &mut refs[..out.len().min(K)]);
        for (o, e) in out.iter_mut().zip(refs[..n].iter().flatten()) {
            *o = **e;
        }
        n
    }

    /// `closest` without copying entries: `out` (at most K long) gets references, nearest first.
    pub fn closest_refs<'a>(&'a self, target: &NodeId, out: &mut [Option<&'a Entry>]) -> usize {
        let cap = out.len().min(K);
        if cap == 0 {
            return 0;
        }
        // Bucket c = common_prefix(own, target) holds the nearest entries; all deeper buckets come
        // next (their distances share leading bit c); then buckets c-1, c-2, … each strictly
        // farther than the one before. So the scan stops as soon as `out` is full after a group.
        let c = self.own.common_prefix(target).min(BUCKETS - 1);
        let mut best = Nearest { target: *target, head: head(target), keys: [0; K], n: 0, cap };
        let buckets = &self.buckets;
        if let Some(b) = buckets.get(c) {
            best.offer(b, out);
        }
        if best.n < cap {
            // One group: all deeper entries are at distances with leading bit c, in any order.
            for b in buckets.iter().skip(c + 1) {
                best.offer(b, out);
            }
        }
        for b in buckets[..c.min(buckets.len())].iter().rev() {
            if best.n == cap {
                break;
            }
            best.offer(b, out);
        }
        best.n
    }

    pub fn iter(&self) -> impl Iterator<Item = &Entry> {
        self.buckets.iter().flat_map(|b| b.entries.iter())
    }

    /// The least recently seen entry of `id`'s bucket, if it has not been heard from for
    /// `after` (a liveness check is due before a newcomer may take its place).
    pub fn questionable(&self, id: &NodeId, now: Instant, after: Duration) -> Option<Entry> {
        let e = self.bucket(id)?.entries.iter().min_by_key(|e| e.last_seen)?;
        (now.saturating_duration_since(e.last_seen) >= after).then_some(*e)
    }

    /// Marks a liveness check as started so the same entry is not checked twice at once.
    pub fn touch(&mut self, id: &NodeId, now: Instant) {
        if let Some(e) = self.bucket_mut(id).and_then(|b| b.entry_mut(id)) {
            e.last_seen = now;
        }
    }

    /// A bucket that has seen no lookup for `every` (the deepest such), to refresh. Every range
    /// up to our nearest neighbours' counts, empty ones too: an empty bucket is the one that most
    /// needs a lookup, or we would never learn of the nodes in its part of the ID space. A bucket
    /// full of good entries needs none, unless `refresh_all` asked for it (after joining).
    pub fn bucket_to_refresh(&self, now: Instant, every: Duration) -> Option<usize> {
        let deepest = self.buckets.iter().rposition(|b| !b.entries.is_empty())?;
        (0..=deepest).rev().find(|&i| {
            let b = &self.buckets[i];
            match b.last_lookup {
                None => true,
                Some(t) => {
                    now.saturating_duration_since(t) >= every && (b.entries.len() < K || b.fails.iter().any(|&f| f > 0))
                }
            }
        })
    }

    /// Every bucket is due for a refresh (after joining: Kademlia's join refreshes all buckets
    /// farther than the nearest neighbour, so the table knows every part of the ID space).
    pub fn refresh_all(&mut self) {
        for b in &mut self.buckets {
            b.last_lookup = None;
        }
    }

    /// The deepest bucket that our K nearest neighbours do not fill on their own: the buckets
    /// past it hold nothing but our neighbourhood, which a lookup of our own ID refreshes.
    pub fn neighbourhood(&self) -> usize {
        let mut nearer = 0;
        for (i, b) in self.buckets.iter().enumerate().rev() {
            nearer += b.entries.len();
            if nearer >= K {
                return i;
            }
        }
        0
    }

    /// A lookup of `target` started: its bucket is fresh (a lookup of our own ID refreshes
    /// every bucket past `neighbourhood`).
    pub fn looked_up(&mut self, target: &NodeId, now: Instant) {
        match self.index(target) {
            Some(i) => self.bucket_at(i).last_lookup = Some(now),
            None => {
                let from = self.neighbourhood() + 1;
                for b in self.buckets.iter_mut().skip(from) {
                    b.last_lookup = Some(now);
                }
            }
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

/// The nearest entries seen so far, sorted, with the first 128 bits of their distances alongside.
struct Nearest {
    target: NodeId,
    head: u128,
    keys: [u128; K],
    n: usize,
    cap: usize,
}

impl Nearest {
    /// Whether `a` (distance head `da`) is nearer the target than `b`. The heads decide unless
    /// they are equal, which takes IDs that agree in 128 bits: then the entries are read.
    fn nearer(&self, da: u128, a: &Entry, db: u128, b: Option<&Entry>) -> bool {
        match (da.cmp(&db), b) {
            (std::cmp::Ordering::Equal, Some(b)) => a.id.distance(&self.target) < b.id.distance(&self.target),
            (o, _) => o == std::cmp::Ordering::Less,
        }
    }

    /// Adds the good entries of `b` (insertion into a short sorted array: no allocation). Only
    /// the heads and fail counts are scanned; an entry is read when it goes into `out`.
    fn offer<'a>(&mut self, b: &'a Bucket, out: &mut [Option<&'a Entry>]) {
        let last = self.cap - 1;
        for (i, &h) in b.heads.iter().enumerate() {
            let d = h ^ self.head;
            if (self.n == self.cap && d > self.keys[last]) || b.bad(i) {
                continue;
            }
            let Some(e) = b.entries.get(i) else { continue };
            if self.n == self.cap && !self.nearer(d, e, self.keys[last], out[last]) {
                continue;
            }
            let mut at = self.n.min(last);
            while at > 0 && self.nearer(d, e, self.keys[at - 1], out[at - 1]) {
                self.keys[at] = self.keys[at - 1];
                out[at] = out[at - 1];
                at -= 1;
            }
            self.keys[at] = d;
            out[at] = Some(e);
            self.n = (self.n + 1).min(self.cap);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::util::rng::Rng;

    fn public(i: u32) -> SocketAddr {
        SocketAddr::from(([1, (i >> 8) as u8, i as u8, 1], 7600))
    }

    /// The scan orders by the first 128 bits of the distance: IDs that agree there (an attacker
    /// can grind them) are still ordered exactly, and bad entries are never returned.
    #[test]
    fn closest_breaks_ties_and_skips_bad_entries() {
        let now = Instant::now();
        let mut rng = Rng::seeded(2);
        let own = NodeId([0; 32]);
        let mut t = RoutingTable::new(own, 2);
        let stem = NodeId::random(&mut rng);
        let mut all = Vec::new();
        for i in 0..40u32 {
            // Ten groups of four IDs, each group equal in its first 16 bytes.
            let mut id = NodeId::random(&mut rng);
            if i % 4 != 0 {
                id.0[..16].copy_from_slice(&all.last().map_or(stem, |x: &NodeId| *x).0[..16]);
            }
            if t.verified(now, id, public(i)) == Insert::Added {
                all.push(id);
            }
        }
        for bad in all.iter().step_by(5).copied().collect::<Vec<_>>() {
            t.failed(&bad);
            t.failed(&bad);
            all.retain(|x| *x != bad);
        }
        for _ in 0..50 {
            let mut target = NodeId::random(&mut rng);
            target.0[..16].copy_from_slice(&all[rng.below(all.len())].0[..16]);
            let mut out = [Entry::new(target, public(0), now); K];
            let n = t.closest(&target, &mut out);
            all.sort_by_key(|id| id.distance(&target));
            let want = &all[..n.min(all.len())];
            assert_eq!(n, K.min(all.len()));
            assert_eq!(out[..n].iter().map(|e| e.id).collect::<Vec<_>>(), want);
        }
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
        // A failed liveness check is enough on its own.
        assert_eq!(t.verified(now, id(101), public(101)), Insert::Cached);
        t.gone(&id(4));
        assert!(t.get(&id(4)).is_none());
        assert!(t.get(&id(101)).is_some());
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
    fn random_in_lands_in_its_bucket_and_questionable_is_the_oldest() {
        let mut rng = Rng::seeded(3);
        let now = Instant::now();
        let mut t = RoutingTable::new(NodeId::random(&mut rng), 2);
        for i in 0..200 {
            let r = t.random_in(i, &mut rng);
            assert_eq!(t.own().common_prefix(&r), i);
        }
        let a = t.random_in(0, &mut rng);
        let b = t.random_in(0, &mut rng);
        t.verified(now, a, public(1));
        t.verified(now + Duration::from_secs(5), b, public(2));
        let later = now + Duration::from_secs(6);
        assert_eq!(t.questionable(&b, later, Duration::from_secs(5)).map(|e| e.id), Some(a));
        assert!(t.questionable(&b, later, Duration::from_secs(7)).is_none());
        t.touch(&a, later);
        assert_eq!(t.questionable(&b, later + Duration::from_secs(5), Duration::from_secs(5)).map(|e| e.id), Some(b));
    }
}
