//! One iterative lookup: a shortlist of the nodes nearest the target, sorted by distance, queried
//! α at a time until the K nearest that answered have all been asked (or, for a value, enough of
//! them returned it). No I/O: the node sends what `next` picks and reports replies and failures.
use super::id::NodeId;
use super::message::Token;
use super::routing::K;
use std::net::SocketAddr;

/// Candidates kept per lookup: K plus room for the ones that fail.
pub const SHORTLIST: usize = 2 * K;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum State {
    Fresh,
    InFlight,
    /// Timed out once and is being retried; it no longer holds up the lookup.
    Stalled,
    Done,
    Failed,
}

#[derive(Debug, Clone, Copy)]
pub struct Cand {
    pub id: NodeId,
    pub addr: SocketAddr,
    pub state: State,
    /// 1 for nodes from our own table, n + 1 for nodes a depth-n node told us about.
    pub depth: u8,
    /// The token this node gave us (needed to store at it).
    pub token: Option<Token>,
    /// The distance to the target as two big-endian halves (the shortlist's sort key).
    dist: (u128, u128),
}

fn dist(id: &NodeId, target: &NodeId) -> (u128, u128) {
    let d = id.distance(target).0;
    let (hi, lo) = d.split_at(16);
    let half = |b: &[u8]| b.try_into().map_or(0, u128::from_be_bytes);
    (half(hi), half(lo))
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// Find the K nearest nodes (joining, refreshing a bucket, or a benchmark query).
    Nodes,
    /// Find a record.
    Value,
    /// Find the K nearest nodes, then store a record at them.
    Publish,
}

pub struct Lookup {
    pub target: NodeId,
    pub kind: Kind,
    cands: Vec<Cand>,
    pub msgs: u32,
    /// Replies that carried the record.
    pub values: u32,
}

impl Lookup {
    pub fn new(target: NodeId, kind: Kind) -> Self {
        Lookup { target, kind, cands: Vec::with_capacity(SHORTLIST), msgs: 0, values: 0 }
    }

    /// Resets a pooled lookup for reuse (keeps its allocation).
    pub fn reset(&mut self, target: NodeId, kind: Kind) {
        self.target = target;
        self.kind = kind;
        self.cands.clear();
        self.msgs = 0;
        self.values = 0;
    }

    pub fn cands(&self) -> &[Cand] {
        &self.cands
    }

    /// Adds a candidate in distance order; ignores duplicates and ones beyond the shortlist.
    pub fn add(&mut self, id: NodeId, addr: SocketAddr, depth: u8, token: Option<Token>) {
        let d = dist(&id, &self.target);
        let at = self.cands.partition_point(|c| c.dist < d);
        // Distinct IDs are at distinct distances: a duplicate would sit right here.
        if at >= SHORTLIST || self.cands.get(at).is_some_and(|c| c.id == id) {
            return;
        }
        if self.cands.len() == SHORTLIST {
            // The farthest gives way; if it was in flight its reply is simply ignored.
            self.cands.pop();
        }
        self.cands.insert(at, Cand { id, addr, state: State::Fresh, depth, token, dist: d });
    }

    fn find(&mut self, id: &NodeId) -> Option<&mut Cand> {
        self.cands.iter_mut().find(|c| c.id == *id)
    }

    /// The next candidate to query, if the lookup may send one now (`alpha` in flight at most).
    pub fn next(&mut self, alpha: usize) -> Option<Cand> {
        let in_flight = self.cands.iter().filter(|c| c.state == State::InFlight).count();
        if in_flight >= alpha || self.finished() {
            return None;
        }
        let c = self.cands.iter_mut().filter(|c| c.state != State::Failed).take(K).find(|c| c.state == State::Fresh)?;
        c.state = State::InFlight;
        self.msgs += 1;
        Some(*c)
    }

    pub fn replied(&mut self, id: &NodeId, token: Token, value: bool) {
        if let Some(c) = self.find(id) {
            c.state = State::Done;
            c.token = Some(token);
        }
        if value {
            self.values += 1;
        }
    }

    /// The query to `id` timed out and is sent again.
    pub fn stalled(&mut self, id: &NodeId) {
        if let Some(c) = self.find(id)
            && matches!(c.state, State::InFlight | State::Stalled)
        {
            c.state = State::Stalled;
            self.msgs += 1;
        }
    }

    pub fn failed(&mut self, id: &NodeId) {
        if let Some(c) = self.find(id)
            && c.state != State::Done
        {
            c.state = State::Failed;
        }
    }

    pub fn depth_of(&self, id: &NodeId) -> u8 {
        self.cands.iter().find(|c| c.id == *id).map_or(1, |c| c.depth)
    }

    /// Done when the K nearest live candidates have all answered, or nothing is left to ask.
    pub fn finished(&self) -> bool {
        let mut live = self.cands.iter().filter(|c| c.state != State::Failed).take(K);
        let settled = live.all(|c| c.state == State::Done);
        let waiting = self.cands.iter().any(|c| matches!(c.state, State::InFlight | State::Stalled | State::Fresh));
        settled || !waiting
    }

    /// The K nearest that answered, nearest first.
    pub fn closest_done(&self) -> impl Iterator<Item = &Cand> {
        self.cands.iter().filter(|c| c.state == State::Done).take(K)
    }

    /// Sequential hops the lookup needed: the deepest among the nodes that settled it.
    pub fn rounds(&self) -> u8 {
        self.closest_done().map(|c| c.depth).max().unwrap_or(0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::util::rng::Rng;

    fn addr() -> SocketAddr {
        "198.51.100.1:1".parse().unwrap()
    }

    #[test]
    fn queries_nearest_first_alpha_at_a_time_and_finishes() {
        let mut rng = Rng::seeded(4);
        let target = NodeId::random(&mut rng);
        let mut l = Lookup::new(target, Kind::Nodes);
        let ids: Vec<NodeId> = (0..30).map(|_| NodeId::random(&mut rng)).collect();
        for id in &ids {
            l.add(*id, addr(), 1, None);
        }
        let mut sorted = ids.clone();
        sorted.sort_by_key(|i| i.distance(&target));
        let a = l.next(3).unwrap();
        let b = l.next(3).unwrap();
        let c = l.next(3).unwrap();
        assert!(l.next(3).is_none(), "alpha = 3");
        assert_eq!([a.id, b.id, c.id], [sorted[0], sorted[1], sorted[2]]);
        l.replied(&a.id, [0; 8], false);
        l.failed(&b.id);
        l.stalled(&c.id);
        // A stalled query no longer holds a slot.
        assert!(l.next(3).is_some() && l.next(3).is_some() && l.next(3).is_some());
        assert!(l.next(3).is_none());
        // Answer everything: the K nearest live ones end it.
        while !l.finished() {
            let ids: Vec<_> = l
                .cands()
                .iter()
                .filter(|c| matches!(c.state, State::InFlight | State::Stalled))
                .map(|c| c.id)
                .collect();
            for id in ids {
                l.replied(&id, [0; 8], false);
            }
            while l.next(3).is_some() {}
        }
        assert_eq!(l.closest_done().count(), K);
        assert!(l.closest_done().all(|c| c.id != b.id));
    }

    #[test]
    fn shortlist_is_bounded_and_sorted() {
        let mut rng = Rng::seeded(5);
        let target = NodeId::random(&mut rng);
        let mut l = Lookup::new(target, Kind::Value);
        for _ in 0..500 {
            l.add(NodeId::random(&mut rng), addr(), 2, None);
        }
        assert_eq!(l.cands().len(), SHORTLIST);
        assert!(l.cands().windows(2).all(|w| w[0].id.distance(&target) < w[1].id.distance(&target)));
        assert!(!l.finished());
    }

    #[test]
    fn empty_lookup_is_finished() {
        let l = Lookup::new(NodeId([1; 32]), Kind::Nodes);
        assert!(l.finished());
        assert_eq!(l.rounds(), 0);
    }
}
