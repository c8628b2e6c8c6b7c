//! 256-bit node IDs and the XOR metric.
use serde::{Deserialize, Serialize};

#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct NodeId(pub [u8; 32]);

impl NodeId {
    pub fn random(rng: &mut crate::util::rng::Rng) -> Self {
        let mut b = [0u8; 32];
        for c in b.chunks_mut(8) {
            c.copy_from_slice(&rng.next_u64().to_le_bytes());
        }
        NodeId(b)
    }

    pub fn distance(&self, other: &NodeId) -> Distance {
        let mut d = [0u8; 32];
        for (i, x) in d.iter_mut().enumerate() {
            *x = self.0[i] ^ other.0[i];
        }
        Distance(d)
    }

    /// The bucket `other` belongs in: the number of leading bits it shares with us (256 = us).
    pub fn common_prefix(&self, other: &NodeId) -> usize {
        self.distance(other).leading_zeros()
    }
}

impl std::fmt::Debug for NodeId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        for b in &self.0[..4] {
            write!(f, "{b:02x}")?;
        }
        write!(f, "…")
    }
}

/// XOR distance; compares as a big-endian 256-bit number.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub struct Distance(pub [u8; 32]);

impl Ord for Distance {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        // Two u128 compares instead of a byte-wise memcmp: lookups compare distances a lot.
        let half = |d: &Distance, i: usize| {
            let mut b = [0u8; 16];
            b.copy_from_slice(&d.0[i * 16..i * 16 + 16]);
            u128::from_be_bytes(b)
        };
        half(self, 0).cmp(&half(other, 0)).then_with(|| half(self, 1).cmp(&half(other, 1)))
    }
}

impl PartialOrd for Distance {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}

impl Distance {
    pub fn leading_zeros(&self) -> usize {
        let mut n = 0;
        for b in &self.0 {
            if *b == 0 {
                n += 8;
            } else {
                return n + b.leading_zeros() as usize;
            }
        }
        n
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn metric() {
        let a = NodeId([0; 32]);
        let mut b = [0; 32];
        b[0] = 0b0001_0000;
        let b = NodeId(b);
        assert_eq!(a.common_prefix(&b), 3);
        assert_eq!(a.common_prefix(&a), 256);
        let mut c = [0; 32];
        c[31] = 1;
        let c = NodeId(c);
        assert!(a.distance(&c) < a.distance(&b));
        assert_eq!(a.distance(&b), b.distance(&a));
    }
}
