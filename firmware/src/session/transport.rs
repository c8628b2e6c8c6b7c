//! Transport encryption for an established session.
//!
//! Each direction has a 64-bit packet counter, used as the nonce and checked by a replay window.
//! Keys advance through epochs: the key of epoch n+1 is a one-way BLAKE2s function of the key of
//! epoch n, so a key captured later cannot decrypt earlier traffic. The sender moves to the next
//! epoch after 2^20 packets or `rekey_after` (2 minutes), whichever comes first; the low byte of
//! its epoch travels in the header. The receiver follows, keeps the previous epoch's key for
//! reordered packets, and erases older keys.
use super::replay::{ReplayCheck, ReplayWindow};
use crate::wire::{DATA_HEADER_LEN, MAX_DATAGRAM, Packet};
use blake2::Blake2sMac256;
use blake2::digest::Mac;
use chacha20poly1305::aead::{AeadInPlace, KeyInit};
use chacha20poly1305::{ChaCha20Poly1305, Key, Nonce, Tag};
use std::time::{Duration, Instant};
use zeroize::Zeroize;

pub const EPOCH_PACKETS: u64 = 1 << 20;
/// How many epochs ahead of ours a packet may be (bounds work spent on a forged header).
const MAX_EPOCH_SKIP: u64 = 4;
pub const TAG_LEN: usize = 16;
pub const MAX_PLAINTEXT: usize = MAX_DATAGRAM - DATA_HEADER_LEN - TAG_LEN;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OpenError {
    Duplicate,
    TooOld,
    Epoch,
    Auth,
    Size,
}

struct EpochKey {
    key: [u8; 32],
    cipher: ChaCha20Poly1305,
    epoch: u64,
}

impl EpochKey {
    fn new(key: [u8; 32], epoch: u64) -> Self {
        EpochKey { cipher: ChaCha20Poly1305::new(Key::from_slice(&key)), key, epoch }
    }

    fn next(&self) -> EpochKey {
        // A 32-byte key is always a valid BLAKE2s MAC key.
        let mut mac = <Blake2sMac256 as Mac>::new_from_slice(&self.key).unwrap_or_else(|_| unreachable!());
        mac.update(b"peercom rekey v1");
        let mut k = [0u8; 32];
        k.copy_from_slice(&mac.finalize().into_bytes()[..32]);
        let e = EpochKey::new(k, self.epoch + 1);
        k.zeroize();
        e
    }

    fn copy(&self) -> EpochKey {
        EpochKey::new(self.key, self.epoch)
    }
}

impl Drop for EpochKey {
    fn drop(&mut self) {
        self.key.zeroize();
    }
}

fn nonce(counter: u64) -> Nonce {
    let mut n = [0u8; 12];
    n[4..].copy_from_slice(&counter.to_le_bytes());
    *Nonce::from_slice(&n)
}

pub struct Transport {
    send: EpochKey,
    next_counter: u64,
    epoch_first_counter: u64,
    epoch_started: Instant,
    rekey_after: Duration,
    recv: EpochKey,
    recv_prev: Option<EpochKey>,
    replay: ReplayWindow,
    pub rekeys: u64,
}

impl Transport {
    pub fn new(send: [u8; 32], recv: [u8; 32], now: Instant, rekey_after: Duration) -> Self {
        Transport {
            send: EpochKey::new(send, 0),
            next_counter: 0,
            epoch_first_counter: 0,
            epoch_started: now,
            rekey_after,
            recv: EpochKey::new(recv, 0),
            recv_prev: None,
            replay: ReplayWindow::default(),
            rekeys: 0,
        }
    }

    pub fn send_epoch(&self) -> u64 {
        self.send.epoch
    }

    /// Encrypts `plaintext` into `out` as a complete data packet; returns its length.
    pub fn seal(&mut self, now: Instant, receiver: u32, plaintext: &[u8], out: &mut [u8]) -> Option<usize> {
        let total = DATA_HEADER_LEN + plaintext.len() + TAG_LEN;
        if plaintext.len() > MAX_PLAINTEXT || out.len() < total {
            return None;
        }
        if now >= self.epoch_started + self.rekey_after || self.next_counter - self.epoch_first_counter >= EPOCH_PACKETS
        {
            self.send = self.send.next();
            self.epoch_first_counter = self.next_counter;
            self.epoch_started = now;
            self.rekeys += 1;
        }
        let counter = self.next_counter;
        self.next_counter = counter.checked_add(1)?;
        Packet::write_data_header(out, receiver, self.send.epoch as u8, counter);
        let (header, body) = out.split_at_mut(DATA_HEADER_LEN);
        body[..plaintext.len()].copy_from_slice(plaintext);
        let tag =
            self.send.cipher.encrypt_in_place_detached(&nonce(counter), header, &mut body[..plaintext.len()]).ok()?;
        body[plaintext.len()..plaintext.len() + TAG_LEN].copy_from_slice(&tag);
        Some(total)
    }

    /// Authenticates and decrypts a data packet into `out`; returns the plaintext length.
    pub fn open(
        &mut self,
        epoch8: u8,
        counter: u64,
        header: &[u8],
        ciphertext: &[u8],
        out: &mut [u8],
    ) -> Result<usize, OpenError> {
        let n = ciphertext.len().checked_sub(TAG_LEN).ok_or(OpenError::Size)?;
        if out.len() < n {
            return Err(OpenError::Size);
        }
        match self.replay.check(counter) {
            ReplayCheck::Fresh => {}
            ReplayCheck::Duplicate => return Err(OpenError::Duplicate),
            ReplayCheck::TooOld => return Err(OpenError::TooOld),
        }
        let tag = Tag::from_slice(&ciphertext[n..]);
        out[..n].copy_from_slice(&ciphertext[..n]);
        let nonce = nonce(counter);
        let ahead = u64::from(epoch8.wrapping_sub(self.recv.epoch as u8));
        if ahead == 0 {
            self.recv
                .cipher
                .decrypt_in_place_detached(&nonce, header, &mut out[..n], tag)
                .map_err(|_| OpenError::Auth)?;
        } else if ahead == 255 {
            let prev = self.recv_prev.as_ref().ok_or(OpenError::Epoch)?;
            prev.cipher.decrypt_in_place_detached(&nonce, header, &mut out[..n], tag).map_err(|_| OpenError::Auth)?;
        } else if ahead <= MAX_EPOCH_SKIP {
            // Derive tentatively; commit only if the packet authenticates.
            let mut prev = self.recv.copy();
            let mut cur = self.recv.next();
            for _ in 1..ahead {
                prev = cur;
                cur = prev.next();
            }
            cur.cipher.decrypt_in_place_detached(&nonce, header, &mut out[..n], tag).map_err(|_| OpenError::Auth)?;
            self.recv = cur;
            self.recv_prev = Some(prev);
            self.rekeys += 1;
        } else {
            return Err(OpenError::Epoch);
        }
        self.replay.record(counter);
        Ok(n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pair(now: Instant) -> (Transport, Transport) {
        let a = Transport::new([1; 32], [2; 32], now, Duration::from_secs(120));
        let b = Transport::new([2; 32], [1; 32], now, Duration::from_secs(120));
        (a, b)
    }

    fn open(t: &mut Transport, pkt: &[u8]) -> Result<Vec<u8>, OpenError> {
        let Ok(Packet::Data { epoch, counter, header, ciphertext, .. }) = Packet::decode(pkt) else {
            return Err(OpenError::Size);
        };
        let mut out = [0u8; MAX_DATAGRAM];
        t.open(epoch, counter, header, ciphertext, &mut out).map(|n| out[..n].to_vec())
    }

    fn seal(t: &mut Transport, now: Instant, msg: &[u8]) -> Vec<u8> {
        let mut p = [0u8; MAX_DATAGRAM];
        let n = t.seal(now, 1, msg, &mut p).unwrap();
        p[..n].to_vec()
    }

    #[test]
    fn seal_open_replay_tamper() {
        let t0 = Instant::now();
        let (mut a, mut b) = pair(t0);
        let p = seal(&mut a, t0, b"hello");
        assert_eq!(open(&mut b, &p).unwrap(), b"hello");
        assert_eq!(open(&mut b, &p), Err(OpenError::Duplicate));
        let p = seal(&mut a, t0, b"again");
        for i in 0..p.len() {
            let mut q = p.clone();
            q[i] ^= 0x40;
            assert!(open(&mut b, &q).is_err(), "tampered byte {i} accepted");
        }
        assert_eq!(open(&mut b, &p).unwrap(), b"again");
    }

    #[test]
    fn time_rekey_keeps_reordered_packets_and_forgets_old_keys() {
        let t0 = Instant::now();
        let (mut a, mut b) = pair(t0);
        let e0 = seal(&mut a, t0, b"e0");
        let t1 = t0 + Duration::from_secs(121);
        let e1 = seal(&mut a, t1, b"e1");
        assert_eq!(a.send_epoch(), 1);
        assert_eq!(open(&mut b, &e1).unwrap(), b"e1");
        // A packet from the previous epoch that arrives late still opens.
        assert_eq!(open(&mut b, &e0).unwrap(), b"e0");
        let e1b = seal(&mut a, t1, b"e1b");
        let t2 = t1 + Duration::from_secs(121);
        let e2 = seal(&mut a, t2, b"e2");
        let e3 = seal(&mut a, t2 + Duration::from_secs(121), b"e3");
        assert_eq!(a.send_epoch(), 3);
        assert_eq!(open(&mut b, &e3).unwrap(), b"e3");
        // Epoch 1's key is erased once the receiver is at epoch 3.
        assert_eq!(open(&mut b, &e1b), Err(OpenError::Epoch));
        assert_eq!(open(&mut b, &e2).unwrap(), b"e2");
        assert_eq!(b.rekeys, 2);
    }

    #[test]
    fn packet_count_rekey() {
        let t0 = Instant::now();
        let (mut a, mut b) = pair(t0);
        a.next_counter = EPOCH_PACKETS - 1;
        let p = seal(&mut a, t0, b"x");
        assert_eq!(a.send_epoch(), 0);
        assert_eq!(open(&mut b, &p).unwrap(), b"x");
        let p = seal(&mut a, t0, b"y");
        assert_eq!(a.send_epoch(), 1);
        assert_eq!(open(&mut b, &p).unwrap(), b"y");
        assert_eq!(b.rekeys, 1);
    }

    #[test]
    fn forged_epoch_cannot_move_the_receiver() {
        let t0 = Instant::now();
        let (_, mut b) = pair(t0);
        let mut p = [0u8; 40];
        Packet::write_data_header(&mut p, 1, 100, 5);
        assert_eq!(open(&mut b, &p), Err(OpenError::Epoch));
        Packet::write_data_header(&mut p, 1, 2, 5);
        assert_eq!(open(&mut b, &p), Err(OpenError::Auth));
        assert_eq!(b.recv.epoch, 0);
    }
}
