//! Records this node holds for others: capped in count (each at most `MAX_RECORD` bytes), all
//! memory allocated up front. When full, a record closer to us (by DHT key) than the farthest
//! one held takes its place: we are responsible for keys near our ID, and a flood of random keys
//! cannot push those out.
use super::id::NodeId;
use super::record::{self, RecordBuf, RecordError};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StoreResult {
    Stored,
    Replaced,
    /// We hold a record with this sequence number or a newer one (a replay or a stale copy).
    Stale,
    /// Full, and the record is farther from us than everything we hold.
    Full,
    Invalid(RecordError),
}

#[derive(Clone, Copy)]
struct Slot {
    key: NodeId,
    seq: u64,
    expires: u32,
    rec: RecordBuf,
}

pub struct Store {
    own: NodeId,
    slots: Vec<Slot>,
    cap: usize,
}

impl Store {
    pub fn new(own: NodeId, cap: usize) -> Self {
        Store { own, slots: Vec::with_capacity(cap), cap }
    }

    pub fn len(&self) -> usize {
        self.slots.len()
    }

    pub fn is_empty(&self) -> bool {
        self.slots.is_empty()
    }

    /// Checks `bytes` as a storing node must (shape, size, expiry, signature) and keeps it if it
    /// is newer than what we hold.
    pub fn put(&mut self, unix_now: u64, bytes: &[u8]) -> StoreResult {
        let view = match record::check(bytes, unix_now) {
            Ok(v) => v,
            Err(e) => return StoreResult::Invalid(e),
        };
        let Some(buf) = RecordBuf::from_slice(bytes) else { return StoreResult::Invalid(RecordError::TooLarge) };
        let key = NodeId(view.key());
        let slot = Slot { key, seq: view.seq, expires: view.expires, rec: buf };
        if let Some(s) = self.slots.iter_mut().find(|s| s.key == key) {
            if view.seq <= s.seq {
                return StoreResult::Stale;
            }
            *s = slot;
            return StoreResult::Replaced;
        }
        self.expire(unix_now);
        if self.slots.len() < self.cap {
            self.slots.push(slot);
            return StoreResult::Stored;
        }
        let own = self.own;
        let Some((far, _)) = self.slots.iter().enumerate().max_by_key(|(_, s)| s.key.distance(&own)) else {
            return StoreResult::Full;
        };
        if key.distance(&own) < self.slots[far].key.distance(&own) {
            self.slots[far] = slot;
            StoreResult::Stored
        } else {
            StoreResult::Full
        }
    }

    pub fn get(&self, key: &NodeId, unix_now: u64) -> Option<&RecordBuf> {
        self.slots.iter().find(|s| s.key == *key && u64::from(s.expires) > unix_now).map(|s| &s.rec)
    }

    pub fn expire(&mut self, unix_now: u64) {
        self.slots.retain(|s| u64::from(s.expires) > unix_now);
    }

    /// Every record held, for handing on to closer nodes.
    pub fn iter(&self) -> impl Iterator<Item = (&NodeId, &RecordBuf)> {
        self.slots.iter().map(|s| (&s.key, &s.rec))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::dht::blind::period_of;
    use crate::identity::DeviceKey;

    const NOW: u64 = 1_790_000_000;

    fn rec(seed: u8, seq: u64, expires: u64) -> Vec<u8> {
        let key = DeviceKey::from_seed([seed; 32]);
        let mut out = [0u8; record::MAX_RECORD];
        let addrs = ["198.51.100.1:7600".parse().unwrap()];
        let n = record::seal(&key, period_of(NOW), seq, expires as u32, &addrs, [seed; 12], &mut out).unwrap();
        out[..n].to_vec()
    }

    #[test]
    fn newer_replaces_older_and_replays_are_stale() {
        let mut s = Store::new(NodeId([0; 32]), 4);
        let r1 = rec(1, 10, NOW + 3600);
        let r2 = rec(1, 11, NOW + 3600);
        assert_eq!(s.put(NOW, &r1), StoreResult::Stored);
        assert_eq!(s.put(NOW, &r2), StoreResult::Replaced);
        assert_eq!(s.put(NOW, &r1), StoreResult::Stale, "replayed older record");
        assert_eq!(s.put(NOW, &r2), StoreResult::Stale, "equal sequence number");
        let key = NodeId(record::parse(&r2).unwrap().key());
        assert_eq!(s.get(&key, NOW).unwrap().as_bytes(), &r2[..]);
        assert_eq!(s.len(), 1);
    }

    #[test]
    fn forged_expired_and_oversized_are_refused() {
        let mut s = Store::new(NodeId([0; 32]), 4);
        let mut forged = rec(2, 1, NOW + 3600);
        let last = forged.len() - 1;
        forged[last] ^= 1;
        assert_eq!(s.put(NOW, &forged), StoreResult::Invalid(RecordError::BadSignature));
        assert!(matches!(s.put(NOW, &rec(2, 1, NOW - 1)), StoreResult::Invalid(RecordError::Expired)));
        let mut big = rec(2, 1, NOW + 3600);
        big.resize(record::MAX_RECORD + 1, 0);
        assert!(matches!(s.put(NOW, &big), StoreResult::Invalid(_)));
        assert!(s.is_empty());
        // Expired records leave.
        assert_eq!(s.put(NOW, &rec(3, 1, NOW + 10)), StoreResult::Stored);
        assert!(s.get(&NodeId(record::parse(&rec(3, 1, NOW + 10)).unwrap().key()), NOW + 11).is_none());
        s.expire(NOW + 11);
        assert!(s.is_empty());
    }

    #[test]
    fn a_flood_cannot_grow_the_store_or_push_out_near_keys() {
        let cap = 16;
        let recs: Vec<Vec<u8>> = (0..100).map(|i| rec(10 + i, 1, NOW + 3600)).collect();
        let keys: Vec<NodeId> = recs.iter().map(|r| NodeId(record::parse(r).unwrap().key())).collect();
        // Our ID is the key of record 0, so record 0 is the nearest there can be.
        let mut s = Store::new(keys[0], cap);
        assert_eq!(s.put(NOW, &recs[0]), StoreResult::Stored);
        for r in &recs[1..] {
            let _ = s.put(NOW, r);
        }
        assert_eq!(s.len(), cap);
        assert!(s.get(&keys[0], NOW).is_some());
        // What is kept is the `cap` nearest keys.
        let mut by_dist: Vec<_> = keys.clone();
        by_dist.sort_by_key(|k| k.distance(&keys[0]));
        for k in &by_dist[..cap] {
            assert!(s.get(k, NOW).is_some());
        }
    }
}
