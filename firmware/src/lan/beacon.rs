//! LAN beacon wire format and tags.
//!
//! ```text
//! type=5 | ver=1 | nonce [16] | port u16le | n u8 | n × tag [8]     (tags strictly ascending)
//! ```
//! `port` is the sender's call (UDP) port. There is one tag per contact device of the sender (plus
//! random padding tags); a tag is a keyed hash under the secret the two devices share, so only that
//! contact can recognise it and a stranger sees random bytes. No clock goes in: an offline Pi has
//! no RTC, so the fresh random nonce is what makes every beacon look new.
use blake2::Blake2sMac256;
use blake2::digest::{KeyInit, Mac};
use curve25519_dalek::montgomery::MontgomeryPoint;
use zeroize::Zeroize;

pub const TYPE: u8 = 5;
pub const VERSION: u8 = 1;
pub const NONCE_LEN: usize = 16;
pub const TAG_LEN: usize = 8;
pub const HEADER_LEN: usize = 2 + NONCE_LEN + 2 + 1;
/// Datagrams stay within the project-wide 1200 bytes.
pub const MAX_LEN: usize = crate::wire::MAX_DATAGRAM;
/// Most tags a decoder accepts: as many as fit in `MAX_LEN` (147).
pub const MAX_DECODE_TAGS: usize = (MAX_LEN - HEADER_LEN) / TAG_LEN;
/// Most tags a sender puts in one beacon: the largest multiple of 4 that fits (padding is to a
/// multiple of 4).
pub const MAX_TAGS: usize = MAX_DECODE_TAGS / 4 * 4;

pub type Tag = [u8; TAG_LEN];

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BeaconError {
    Empty,
    Type(u8),
    Version(u8),
    /// Port 0: nothing to call.
    Port,
    /// The length disagrees with the tag count, or exceeds `MAX_LEN` (or, encoding, the buffer).
    Length,
    /// Tags not strictly ascending (the encoder sorts them, so this is not one of ours).
    Order,
}

/// A decoded beacon, borrowing its tags from the datagram.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Beacon<'a> {
    pub nonce: [u8; NONCE_LEN],
    pub port: u16,
    tags: &'a [u8],
}

impl<'a> Beacon<'a> {
    /// Total: every malformed input is an error; nothing here can panic.
    pub fn decode(b: &'a [u8]) -> Result<Beacon<'a>, BeaconError> {
        if b.len() > MAX_LEN {
            return Err(BeaconError::Length);
        }
        let ty = *b.first().ok_or(BeaconError::Empty)?;
        if ty != TYPE {
            return Err(BeaconError::Type(ty));
        }
        // A fixed-size array from here on: its indexing is checked at compile time.
        let h: &[u8; HEADER_LEN] = b.get(..HEADER_LEN).and_then(|s| s.try_into().ok()).ok_or(BeaconError::Length)?;
        if h[1] != VERSION {
            return Err(BeaconError::Version(h[1]));
        }
        let mut nonce = [0u8; NONCE_LEN];
        nonce.copy_from_slice(&h[2..2 + NONCE_LEN]);
        let port = u16::from_le_bytes([h[2 + NONCE_LEN], h[3 + NONCE_LEN]]);
        if port == 0 {
            return Err(BeaconError::Port);
        }
        let n = h[HEADER_LEN - 1] as usize;
        let tags = b.get(HEADER_LEN..).unwrap_or_default();
        if tags.len() != n * TAG_LEN {
            return Err(BeaconError::Length);
        }
        // Strictly ascending: a receiver can binary-search, and duplicates are refused.
        if tags.chunks_exact(TAG_LEN).zip(tags.chunks_exact(TAG_LEN).skip(1)).any(|(a, b)| a >= b) {
            return Err(BeaconError::Order);
        }
        Ok(Beacon { nonce, port, tags })
    }

    pub fn tag_count(&self) -> usize {
        self.tags.len() / TAG_LEN
    }

    pub fn tags(&self) -> impl Iterator<Item = &'a [u8]> {
        self.tags.chunks_exact(TAG_LEN)
    }

    /// Binary search over the (checked) ascending tags.
    pub fn contains(&self, tag: &Tag) -> bool {
        let (mut lo, mut hi) = (0, self.tag_count());
        while lo < hi {
            let mid = lo + (hi - lo) / 2;
            let Some(t) = self.tags.get(mid * TAG_LEN..(mid + 1) * TAG_LEN) else { return false };
            match t.cmp(&tag[..]) {
                std::cmp::Ordering::Equal => return true,
                std::cmp::Ordering::Less => lo = mid + 1,
                std::cmp::Ordering::Greater => hi = mid,
            }
        }
        false
    }
}

/// Writes a beacon into `out`, returning its length. Sorts `tags` in place (so position reveals
/// nothing) and drops duplicates.
pub fn encode(nonce: &[u8; NONCE_LEN], port: u16, tags: &mut [Tag], out: &mut [u8]) -> Result<usize, BeaconError> {
    if port == 0 {
        return Err(BeaconError::Port);
    }
    if tags.len() > MAX_DECODE_TAGS || out.len() < HEADER_LEN + tags.len() * TAG_LEN {
        return Err(BeaconError::Length);
    }
    tags.sort_unstable();
    out[0] = TYPE;
    out[1] = VERSION;
    out[2..2 + NONCE_LEN].copy_from_slice(nonce);
    out[2 + NONCE_LEN..4 + NONCE_LEN].copy_from_slice(&port.to_le_bytes());
    let mut at = HEADER_LEN;
    let mut n = 0u8;
    let mut prev: Option<&Tag> = None;
    for t in tags.iter() {
        if prev != Some(t) {
            out[at..at + TAG_LEN].copy_from_slice(t);
            at += TAG_LEN;
            n += 1;
        }
        prev = Some(t);
    }
    out[HEADER_LEN - 1] = n;
    Ok(at)
}

/// Keyed BLAKE2s over the concatenation of `parts`.
pub(crate) fn mac(key: &[u8; 32], parts: &[&[u8]]) -> [u8; 32] {
    let mut m = <Blake2sMac256 as KeyInit>::new(&(*key).into());
    for p in parts {
        m.update(p);
    }
    m.finalize().into_bytes().into()
}

/// The secret two devices share for LAN tags. Erased on drop.
pub struct PairKey([u8; 32]);

impl Drop for PairKey {
    fn drop(&mut self) {
        self.0.zeroize();
    }
}

impl PairKey {
    /// X25519 of our secret and their public key, hashed with both public keys (ordered, so both
    /// sides get the same key). None for a low-order key: its shared secret is public.
    pub fn derive(my_secret: &[u8; 32], my_public: &[u8; 32], their_public: &[u8; 32]) -> Option<PairKey> {
        let mut shared = MontgomeryPoint(*their_public).mul_clamped(*my_secret).to_bytes();
        if shared == [0u8; 32] {
            return None;
        }
        let (lo, hi) = if my_public <= their_public { (my_public, their_public) } else { (their_public, my_public) };
        let k = mac(&shared, &[b"peercom lan pair v1", lo, hi]);
        shared.zeroize();
        Some(PairKey(k))
    }

    /// The two tags the device with X25519 key `sender` puts in a beacon with `nonce` for the
    /// other holder of this key: `[0]` if it has not heard from them lately, `[1]` if it has. The
    /// sender's key goes in so that A's tag for B differs from B's for A; one MAC yields both, so
    /// a receiver spends one MAC per contact on each beacon.
    pub fn tags(&self, nonce: &[u8; NONCE_LEN], sender: &[u8; 32]) -> [Tag; 2] {
        let h = mac(&self.0, &[b"peercom lan v1", nonce, sender]);
        let mut t = [[0u8; TAG_LEN]; 2];
        t[0].copy_from_slice(&h[..TAG_LEN]);
        t[1].copy_from_slice(&h[TAG_LEN..2 * TAG_LEN]);
        t
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::identity::DeviceKey;

    fn keys(seed: u8) -> ([u8; 32], [u8; 32]) {
        let k = DeviceKey::from_seed([seed; 32]);
        (k.x25519_secret(), k.id().x25519_public().unwrap())
    }

    #[test]
    fn roundtrip_sorted_and_deduplicated() {
        let mut tags = [[9u8; 8], [1u8; 8], [5u8; 8], [1u8; 8]];
        let mut buf = [0u8; MAX_LEN];
        let n = encode(&[7; 16], 4242, &mut tags, &mut buf).unwrap();
        assert_eq!(n, HEADER_LEN + 3 * TAG_LEN);
        let b = Beacon::decode(&buf[..n]).unwrap();
        assert_eq!((b.nonce, b.port, b.tag_count()), ([7; 16], 4242, 3));
        let got: Vec<&[u8]> = b.tags().collect();
        assert_eq!(got, vec![&[1u8; 8][..], &[5u8; 8][..], &[9u8; 8][..]]);
        for t in [[1u8; 8], [5u8; 8], [9u8; 8]] {
            assert!(b.contains(&t));
        }
        for t in [[0u8; 8], [2u8; 8], [6u8; 8], [10u8; 8]] {
            assert!(!b.contains(&t));
        }
    }

    #[test]
    fn decode_rejects_each_malformation() {
        let mut tags = [[1u8; 8], [2u8; 8]];
        let mut buf = [0u8; MAX_LEN + 8];
        let n = encode(&[0; 16], 1, &mut tags, &mut buf).unwrap();
        let good = buf[..n].to_vec();
        assert_eq!(Beacon::decode(&[]), Err(BeaconError::Empty));
        let mut b = good.clone();
        b[0] = 3;
        assert_eq!(Beacon::decode(&b), Err(BeaconError::Type(3)));
        let mut b = good.clone();
        b[1] = 2;
        assert_eq!(Beacon::decode(&b), Err(BeaconError::Version(2)));
        let mut b = good.clone();
        b[18] = 0;
        b[19] = 0;
        assert_eq!(Beacon::decode(&b), Err(BeaconError::Port));
        let mut b = good.clone();
        b[20] = 3;
        assert_eq!(Beacon::decode(&b), Err(BeaconError::Length));
        let mut b = good.clone();
        b.push(0);
        assert_eq!(Beacon::decode(&b), Err(BeaconError::Length));
        let mut b = good.clone();
        b[HEADER_LEN..HEADER_LEN + 8].copy_from_slice(&[2u8; 8]);
        assert_eq!(Beacon::decode(&b), Err(BeaconError::Order));
        for len in 0..good.len() {
            assert!(Beacon::decode(&good[..len]).is_err(), "truncated to {len}");
        }
        // Longer than a datagram may be, even if self-consistent.
        let mut big = vec![0u8; MAX_LEN + 8];
        big[..HEADER_LEN].copy_from_slice(&good[..HEADER_LEN]);
        assert_eq!(Beacon::decode(&big), Err(BeaconError::Length));
    }

    #[test]
    fn encode_refuses_what_it_cannot_write() {
        let mut buf = [0u8; MAX_LEN];
        assert_eq!(encode(&[0; 16], 0, &mut [], &mut buf), Err(BeaconError::Port));
        let mut many = vec![[0u8; 8]; MAX_DECODE_TAGS + 1];
        assert_eq!(encode(&[0; 16], 1, &mut many, &mut buf), Err(BeaconError::Length));
        assert_eq!(encode(&[0; 16], 1, &mut [[0u8; 8]], &mut buf[..HEADER_LEN + 7]), Err(BeaconError::Length));
        let mut full = vec![[0u8; 8]; MAX_DECODE_TAGS];
        for (i, t) in full.iter_mut().enumerate() {
            t[0] = i as u8;
        }
        let n = encode(&[0; 16], 1, &mut full, &mut buf).unwrap();
        assert!(n <= MAX_LEN);
        assert_eq!(Beacon::decode(&buf[..n]).unwrap().tag_count(), MAX_DECODE_TAGS);
        assert_eq!(MAX_TAGS, 144);
    }

    #[test]
    fn pair_keys_agree_and_tags_are_directional() {
        let (a_sec, a_pub) = keys(1);
        let (b_sec, b_pub) = keys(2);
        let ab = PairKey::derive(&a_sec, &a_pub, &b_pub).unwrap();
        let ba = PairKey::derive(&b_sec, &b_pub, &a_pub).unwrap();
        assert_eq!(ab.0, ba.0);
        let nonce = [3u8; 16];
        // B recognises what A sends, but A's tag for B is not B's tag for A.
        assert_eq!(ab.tags(&nonce, &a_pub), ba.tags(&nonce, &a_pub));
        assert_ne!(ab.tags(&nonce, &a_pub), ab.tags(&nonce, &b_pub));
        let t = ab.tags(&nonce, &a_pub);
        assert_ne!(t[0], t[1]);
        assert_ne!(t, ab.tags(&[4u8; 16], &a_pub));
        // A third device shares a different key with A.
        let (_, c_pub) = keys(3);
        let ac = PairKey::derive(&a_sec, &a_pub, &c_pub).unwrap();
        assert_ne!(ac.0, ab.0);
    }

    #[test]
    fn low_order_keys_get_no_pair_key() {
        let (a_sec, a_pub) = keys(1);
        assert!(PairKey::derive(&a_sec, &a_pub, &[0u8; 32]).is_none());
        let mut one = [0u8; 32];
        one[0] = 1;
        assert!(PairKey::derive(&a_sec, &a_pub, &one).is_none());
    }
}
