//! Handshake DoS protection, as WireGuard does it (docs/PROTOCOL.md, "Cookies"). Every message 1
//! ends in two MACs. `mac1` is keyed by the callee's public key: only a party that knows whom it
//! calls can make one, so scanners cost a hash, never a Diffie-Hellman. `mac2` is keyed by a
//! cookie the callee gave the caller's address: under load the callee answers a message 1
//! without a valid `mac2` with a cookie reply (one cheap encryption) instead of doing DH, so
//! the only senders that reach the DH are those that receive at the address they claim, and
//! those are held to a per-source rate.
use blake2::digest::consts::U16;
use blake2::digest::{FixedOutput, Mac as _};
use blake2::{Blake2s256, Blake2sMac, Digest};
use chacha20poly1305::aead::{Aead, KeyInit, Payload};
use chacha20poly1305::{XChaCha20Poly1305, XNonce};
use std::net::SocketAddr;
use std::time::{Duration, Instant};

pub const MAC_LEN: usize = 16;
/// The cookie reply: type | ver | receiver u32 | nonce(24) | sealed cookie (16 + tag 16).
pub const COOKIE_REPLY_LEN: usize = 6 + 24 + MAC_LEN + 16;
/// How long a cookie (and the secret it came from) is good for.
pub const COOKIE_LIFE: Duration = Duration::from_secs(120);
/// Message 1s in one `LOAD_WINDOW` beyond which the callee is under load (a call takes one or
/// two; a few callers retrying at once stay far below it)...
pub const LOAD_THRESHOLD: u32 = 16;
pub const LOAD_WINDOW: Duration = Duration::from_millis(250);
/// ...and stays so this long after the last window over it.
pub const LOAD_HOLD: Duration = Duration::from_secs(1);

fn hash_key(label: &[u8; 8], public: &[u8; 32]) -> [u8; 32] {
    let mut h = Blake2s256::new();
    h.update(label);
    h.update(public);
    h.finalize().into()
}

/// Keyed BLAKE2s-128 of `data`.
pub fn mac(key: &[u8], data: &[&[u8]]) -> [u8; MAC_LEN] {
    // Keys here are 16 or 32 bytes, within BLAKE2s's limit.
    let mut m = <Blake2sMac<U16> as blake2::digest::KeyInit>::new_from_slice(key).unwrap_or_else(|_| unreachable!());
    for d in data {
        m.update(d);
    }
    m.finalize_fixed().into()
}

/// The keys derived from the callee's X25519 public key.
#[derive(Clone, Copy)]
pub struct PeerKeys {
    pub mac1: [u8; 32],
    pub cookie: [u8; 32],
}

impl PeerKeys {
    pub fn of(x25519_public: &[u8; 32]) -> Self {
        PeerKeys { mac1: hash_key(b"mac1----", x25519_public), cookie: hash_key(b"cookie--", x25519_public) }
    }
}

/// Writes both MACs at the end of message 1 `msg` (which ends in 32 bytes for them): `mac1`
/// over everything before it, `mac2` over everything before it with `cookie`, or zeros.
pub fn seal_macs(msg: &mut [u8], keys: &PeerKeys, cookie: Option<&[u8; MAC_LEN]>) {
    let n = msg.len() - 2 * MAC_LEN;
    let m1 = mac(&keys.mac1, &[&msg[..n]]);
    msg[n..n + MAC_LEN].copy_from_slice(&m1);
    let m2 = cookie.map_or([0; MAC_LEN], |c| mac(c, &[&msg[..n + MAC_LEN]]));
    msg[n + MAC_LEN..].copy_from_slice(&m2);
}

/// The `mac1` of a sealed message 1.
pub fn mac1_of(msg: &[u8]) -> Option<[u8; MAC_LEN]> {
    let n = msg.len().checked_sub(2 * MAC_LEN)?;
    msg.get(n..n + MAC_LEN)?.try_into().ok()
}

/// Opens a cookie reply's sealed part for the message 1 whose `mac1` it answers.
pub fn open_reply(keys: &PeerKeys, mac1: &[u8; MAC_LEN], nonce: &[u8], sealed: &[u8]) -> Option<[u8; MAC_LEN]> {
    let aead = XChaCha20Poly1305::new((&keys.cookie).into());
    let nonce = XNonce::from_slice(nonce.get(..24)?);
    let plain = aead.decrypt(nonce, Payload { msg: sealed, aad: mac1 }).ok()?;
    plain.as_slice().try_into().ok()
}

/// The callee's side: checks MACs, knows when it is under load, and makes cookie replies.
pub struct Checker {
    keys: PeerKeys,
    secret: [u8; 32],
    secret_at: Option<Instant>,
    rng: crate::util::rng::Rng,
    window_start: Option<Instant>,
    in_window: u32,
    loaded_until: Option<Instant>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// Do the handshake.
    Accept,
    /// Not made by anyone who knows our key: drop it.
    BadMac1,
    /// Under load and no valid cookie: answer with a cookie reply, no DH.
    NeedCookie,
}

impl Checker {
    pub fn new(own_x25519_public: &[u8; 32], rng: crate::util::rng::Rng) -> Self {
        Checker {
            keys: PeerKeys::of(own_x25519_public),
            secret: [0; 32],
            secret_at: None,
            rng,
            window_start: None,
            in_window: 0,
            loaded_until: None,
        }
    }

    fn secret(&mut self, now: Instant) -> [u8; 32] {
        if self.secret_at.is_none_or(|t| now.saturating_duration_since(t) >= COOKIE_LIFE) {
            for c in self.secret.chunks_mut(8) {
                c.copy_from_slice(&self.rng.next_u64().to_le_bytes());
            }
            self.secret_at = Some(now);
        }
        self.secret
    }

    /// The cookie of a source address: only the current secret makes it.
    fn cookie_for(&mut self, now: Instant, from: SocketAddr) -> [u8; MAC_LEN] {
        let s = self.secret(now);
        let (ip, port) = match from {
            SocketAddr::V4(a) => (a.ip().to_ipv6_mapped().octets(), a.port()),
            SocketAddr::V6(a) => (a.ip().octets(), a.port()),
        };
        mac(&s, &[&ip, &port.to_le_bytes()])
    }

    pub fn under_load(&self, now: Instant) -> bool {
        self.loaded_until.is_some_and(|t| now < t)
    }

    /// Counts a message 1 that carries a valid mac1.
    fn count(&mut self, now: Instant) {
        match self.window_start {
            Some(t) if now.saturating_duration_since(t) < LOAD_WINDOW => self.in_window += 1,
            _ => {
                self.window_start = Some(now);
                self.in_window = 1;
            }
        }
        if self.in_window > LOAD_THRESHOLD {
            self.loaded_until = Some(now + LOAD_HOLD);
        }
    }

    /// What to do with message 1 `msg` (the whole datagram) from `from`.
    pub fn check(&mut self, now: Instant, from: SocketAddr, msg: &[u8]) -> Verdict {
        let Some(n) = msg.len().checked_sub(2 * MAC_LEN) else { return Verdict::BadMac1 };
        let m1 = mac(&self.keys.mac1, &[&msg[..n]]);
        if !crate::util::ct_eq(&m1, &msg[n..n + MAC_LEN]) {
            return Verdict::BadMac1;
        }
        self.count(now);
        if !self.under_load(now) {
            return Verdict::Accept;
        }
        let cookie = self.cookie_for(now, from);
        let m2 = mac(&cookie, &[&msg[..n + MAC_LEN]]);
        if crate::util::ct_eq(&m2, &msg[n + MAC_LEN..]) { Verdict::Accept } else { Verdict::NeedCookie }
    }

    /// Writes the cookie reply to message 1 `msg` (sender index `receiver`) from `from` into
    /// `out`; returns its length.
    pub fn reply(
        &mut self,
        now: Instant,
        from: SocketAddr,
        receiver: u32,
        msg: &[u8],
        out: &mut [u8],
    ) -> Option<usize> {
        let mac1 = mac1_of(msg)?;
        let cookie = self.cookie_for(now, from);
        let mut nonce = [0u8; 24];
        for c in nonce.chunks_mut(8) {
            c.copy_from_slice(&self.rng.next_u64().to_le_bytes());
        }
        let aead = XChaCha20Poly1305::new((&self.keys.cookie).into());
        let sealed = aead.encrypt(XNonce::from_slice(&nonce), Payload { msg: &cookie, aad: &mac1 }).ok()?;
        let out = out.get_mut(..COOKIE_REPLY_LEN)?;
        let off = crate::wire::Packet::write_cookie_header(out, receiver);
        out[off..off + 24].copy_from_slice(&nonce);
        out[off + 24..].copy_from_slice(&sealed);
        Some(COOKIE_REPLY_LEN)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::util::rng::Rng;

    fn msg1(keys: &PeerKeys, cookie: Option<&[u8; MAC_LEN]>) -> Vec<u8> {
        let mut m = vec![7u8; 6 + crate::wire::INIT_NOISE_LEN + 2 * MAC_LEN];
        crate::wire::Packet::write_init_header(&mut m, 42);
        seal_macs(&mut m, keys, cookie);
        m
    }

    #[test]
    fn mac1_needs_the_callee_key_and_load_asks_for_a_cookie_the_caller_can_use() {
        let me = [9u8; 32];
        let mut c = Checker::new(&me, Rng::seeded(1));
        let t0 = Instant::now();
        let from: SocketAddr = "192.0.2.1:4000".parse().unwrap();
        assert_eq!(c.check(t0, from, &msg1(&PeerKeys::of(&[8; 32]), None)), Verdict::BadMac1);
        let keys = PeerKeys::of(&me);
        let plain = msg1(&keys, None);
        assert_eq!(c.check(t0, from, &plain), Verdict::Accept);
        // A burst: under load from the message after the threshold.
        for _ in 1..LOAD_THRESHOLD {
            assert_eq!(c.check(t0, from, &plain), Verdict::Accept);
        }
        assert_eq!(c.check(t0, from, &plain), Verdict::NeedCookie);
        let mut reply = [0u8; 128];
        let n = c.reply(t0, from, 42, &plain, &mut reply).unwrap();
        let crate::wire::Packet::CookieReply { receiver, nonce, sealed } =
            crate::wire::Packet::decode(&reply[..n]).unwrap()
        else {
            panic!("not a cookie reply")
        };
        assert_eq!(receiver, 42);
        let cookie = open_reply(&keys, &mac1_of(&plain).unwrap(), nonce, sealed).unwrap();
        assert_eq!(c.check(t0, from, &msg1(&keys, Some(&cookie))), Verdict::Accept);
        // The cookie is bound to the address (a spoofer never sees it) and to the mac1 it answered.
        let other: SocketAddr = "192.0.2.1:4001".parse().unwrap();
        assert_eq!(c.check(t0, other, &msg1(&keys, Some(&cookie))), Verdict::NeedCookie);
        assert_eq!(open_reply(&keys, &[0; MAC_LEN], nonce, sealed), None);
        // Load ends a second after the burst; the cookie dies with its secret.
        let later = t0 + LOAD_HOLD;
        assert_eq!(c.check(later, other, &plain), Verdict::Accept);
        for _ in 0..LOAD_THRESHOLD {
            c.check(later + COOKIE_LIFE, from, &plain);
        }
        assert_eq!(c.check(later + COOKIE_LIFE, from, &msg1(&keys, Some(&cookie))), Verdict::NeedCookie);
    }

    #[test]
    fn short_or_truncated_messages_are_bad_not_a_panic() {
        let mut c = Checker::new(&[1; 32], Rng::seeded(2));
        let t0 = Instant::now();
        let from: SocketAddr = "192.0.2.1:1".parse().unwrap();
        for n in 0..40 {
            assert_eq!(c.check(t0, from, &vec![0; n]), Verdict::BadMac1);
        }
        assert!(c.reply(t0, from, 1, &[0; 3], &mut [0u8; 128]).is_none());
        assert!(open_reply(&PeerKeys::of(&[1; 32]), &[0; MAC_LEN], &[0; 3], &[0; 32]).is_none());
    }
}
