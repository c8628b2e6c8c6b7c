//! The sender's copy of recently sent packets of one stream, indexed by sequence number, so a
//! NACK can be answered. Fixed memory: `slots` plaintexts of up to `MAX_PLAINTEXT` bytes.
use crate::session::MAX_PLAINTEXT;

pub struct History {
    data: Vec<u8>,
    /// The extended sequence number held by each slot, and its length (0: empty).
    meta: Vec<(u64, u16)>,
}

impl History {
    pub fn new(slots: usize) -> Self {
        let slots = slots.max(1);
        History { data: vec![0; slots * MAX_PLAINTEXT], meta: vec![(u64::MAX, 0); slots] }
    }

    fn index(&self, seq: u64) -> usize {
        (seq % self.meta.len() as u64) as usize
    }

    /// The buffer for `seq`, replacing the oldest packet in its slot; call `commit` once written.
    pub fn slot_mut(&mut self, seq: u64) -> &mut [u8] {
        let i = self.index(seq);
        self.meta[i] = (seq, 0);
        &mut self.data[i * MAX_PLAINTEXT..(i + 1) * MAX_PLAINTEXT]
    }

    pub fn commit(&mut self, seq: u64, len: usize) {
        let i = self.index(seq);
        if self.meta[i].0 == seq {
            self.meta[i].1 = len.min(MAX_PLAINTEXT) as u16;
        }
    }

    pub fn get(&self, seq: u64) -> Option<&[u8]> {
        let i = self.index(seq);
        let (s, len) = self.meta[i];
        (s == seq && len > 0).then(|| &self.data[i * MAX_PLAINTEXT..i * MAX_PLAINTEXT + usize::from(len)])
    }

    pub fn get_mut(&mut self, seq: u64) -> Option<&mut [u8]> {
        let i = self.index(seq);
        let (s, len) = self.meta[i];
        (s == seq && len > 0).then(|| &mut self.data[i * MAX_PLAINTEXT..i * MAX_PLAINTEXT + usize::from(len)])
    }

    pub fn clear(&mut self) {
        self.meta.fill((u64::MAX, 0));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    #[test]
    fn keeps_the_newest_per_slot() {
        let mut h = History::new(4);
        for seq in 10..16u64 {
            h.slot_mut(seq)[0] = seq as u8;
            h.commit(seq, 1);
        }
        assert_eq!(h.get(11), None, "overwritten by 15");
        assert_eq!(h.get(12), Some(&[12u8][..]));
        assert_eq!(h.get(15), Some(&[15u8][..]));
        assert_eq!(h.get(16), None);
        h.slot_mut(20);
        assert_eq!(h.get(20), None, "not committed yet");
    }
}
