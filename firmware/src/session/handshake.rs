//! Noise IK handshake (Noise_IK_25519_ChaChaPoly_BLAKE2s via snow). The caller knows the callee's
//! key; message 1 carries the caller's static key (encrypted) and, as payload, its Ed25519 public
//! key, which must map to that static key. The callee checks it before answering at all.
use crate::identity::{DeviceId, DeviceKey};
use snow::{Builder, HandshakeState};

const PARAMS: &str = "Noise_IK_25519_ChaChaPoly_BLAKE2s";
const PROLOGUE: &[u8] = b"peercom v1";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HsError {
    Noise,
    /// The Ed25519 key in the payload is not the caller's Noise static key.
    Identity,
    BadKey,
    /// A low-order ephemeral or static key: its Diffie-Hellman result is all zero, so it proves
    /// nothing about who sent it.
    WeakKey,
}

/// Whether an X25519 public key is of small order (every DH with it is zero, whatever the
/// secret). A lookup, not a scalar multiplication: it runs on every handshake message, and a
/// ladder here cost as much as one more Diffie-Hellman on the call's critical path.
pub fn low_order(u: &[u8]) -> bool {
    let Ok(mut b) = <[u8; 32]>::try_from(u) else { return true };
    // X25519 ignores bit 255, so a key with it set is the same point.
    b[31] &= 0x7f;
    small_order_u().contains(&b)
}

/// The u-coordinates of order dividing 8, on the curve and its twist, with the non-canonical
/// encodings that reduce to them (u + p < 2^255): the eight-torsion points' (0, 1 and two of
/// order 8), the twist's order-4 point (p - 1), and p, p + 1.
fn small_order_u() -> &'static [[u8; 32]; 7] {
    static TABLE: std::sync::OnceLock<[[u8; 32]; 7]> = std::sync::OnceLock::new();
    TABLE.get_or_init(|| {
        let mut p = [0xffu8; 32];
        p[0] = 0xed;
        p[31] = 0x7f;
        let (mut p_minus_1, mut p_plus_1) = (p, p);
        p_minus_1[0] = 0xec;
        p_plus_1[0] = 0xee;
        let mut t = [[0u8; 32]; 7];
        let mut n = 0;
        for pt in curve25519_dalek::constants::EIGHT_TORSION {
            let u = pt.to_montgomery().to_bytes();
            if !t[..n].contains(&u) {
                t[n] = u;
                n += 1;
            }
        }
        debug_assert_eq!(n, 4);
        t[4] = p_minus_1;
        t[5] = p;
        t[6] = p_plus_1;
        t
    })
}

/// The first 32 bytes of every Noise IK message are the sender's ephemeral key in the clear.
fn ephemeral(msg: &[u8]) -> &[u8] {
    msg.get(..32).unwrap_or(&[])
}

impl From<snow::Error> for HsError {
    fn from(_: snow::Error) -> Self {
        HsError::Noise
    }
}

fn builder() -> Builder<'static> {
    // The pattern string is a constant known to parse.
    Builder::new(PARAMS.parse().unwrap_or_else(|_| unreachable!()))
}

pub struct Initiator(Box<HandshakeState>);

pub struct TransportKeys {
    pub send: [u8; 32],
    pub recv: [u8; 32],
    /// The handshake hash: the same on both sides, known to nobody else.
    pub hash: [u8; 32],
}

fn hash_of(hs: &HandshakeState) -> [u8; 32] {
    let mut h = [0u8; 32];
    let src = hs.get_handshake_hash();
    let n = src.len().min(32);
    h[..n].copy_from_slice(&src[..n]);
    h
}

/// Starts a handshake to `peer`; writes message 1 into `out` and returns its length.
pub fn initiate(local: &DeviceKey, peer: &DeviceId, out: &mut [u8]) -> Result<(Initiator, usize), HsError> {
    let rs = peer.x25519_public().ok_or(HsError::BadKey)?;
    let mut secret = local.x25519_secret();
    let hs = builder().prologue(PROLOGUE)?.local_private_key(&secret)?.remote_public_key(&rs)?.build_initiator();
    zeroize::Zeroize::zeroize(&mut secret);
    let mut hs = hs?;
    let n = hs.write_message(local.id().as_bytes(), out)?;
    Ok((Initiator(Box::new(hs)), n))
}

impl Initiator {
    pub fn finish(mut self, msg2: &[u8]) -> Result<TransportKeys, HsError> {
        if low_order(ephemeral(msg2)) {
            return Err(HsError::WeakKey);
        }
        let mut payload = [0u8; 64];
        self.0.read_message(msg2, &mut payload)?;
        if !self.0.is_handshake_finished() {
            return Err(HsError::Noise);
        }
        let hash = hash_of(&self.0);
        let (k1, k2) = self.0.dangerously_get_raw_split();
        Ok(TransportKeys { send: k1, recv: k2, hash })
    }
}

/// A read message 1 whose caller has proven its static key; not yet answered.
pub struct Responder {
    hs: Box<HandshakeState>,
    pub caller: DeviceId,
}

pub fn respond(local: &DeviceKey, msg1: &[u8]) -> Result<Responder, HsError> {
    // Before any DH: a low-order ephemeral makes `es` zero.
    if low_order(ephemeral(msg1)) {
        return Err(HsError::WeakKey);
    }
    let mut secret = local.x25519_secret();
    let hs = builder().prologue(PROLOGUE)?.local_private_key(&secret)?.build_responder();
    zeroize::Zeroize::zeroize(&mut secret);
    let mut hs = hs?;
    let mut payload = [0u8; 64];
    let n = hs.read_message(msg1, &mut payload)?;
    let ed: [u8; 32] = payload.get(..n).and_then(|p| p.try_into().ok()).ok_or(HsError::Identity)?;
    let caller = DeviceId::from_bytes(ed);
    let rs = hs.get_remote_static().ok_or(HsError::Noise)?;
    if low_order(rs) || caller.is_weak() {
        return Err(HsError::WeakKey);
    }
    if caller.x25519_public().as_ref().map(|k| &k[..]) != Some(rs) {
        return Err(HsError::Identity);
    }
    Ok(Responder { hs: Box::new(hs), caller })
}

impl Responder {
    /// Writes message 2 into `out`; returns its length and the transport keys.
    pub fn accept(mut self, out: &mut [u8]) -> Result<(usize, TransportKeys), HsError> {
        let n = self.hs.write_message(&[], out)?;
        let hash = hash_of(&self.hs);
        let (k1, k2) = self.hs.dangerously_get_raw_split();
        Ok((n, TransportKeys { send: k2, recv: k1, hash }))
    }
}

/// Noise IK message 1 written by hand, as an attacker with no static secret would: a real
/// ephemeral, and a static public key `s` of its choosing whose `ss` DH is zero.
/// (snow cannot be made to do this: its static key always comes from a secret.)
#[cfg(test)]
pub(crate) mod forge {
    use blake2::{Blake2s256, Digest};
    use chacha20poly1305::aead::{Aead, KeyInit, Payload};
    use chacha20poly1305::{ChaCha20Poly1305, Nonce};
    use curve25519_dalek::montgomery::MontgomeryPoint;

    fn hash(parts: &[&[u8]]) -> [u8; 32] {
        let mut h = Blake2s256::new();
        parts.iter().for_each(|p| h.update(p));
        h.finalize().into()
    }

    fn hmac(key: &[u8; 32], data: &[&[u8]]) -> [u8; 32] {
        let (mut ipad, mut opad) = ([0x36u8; 64], [0x5cu8; 64]);
        for i in 0..32 {
            ipad[i] ^= key[i];
            opad[i] ^= key[i];
        }
        let mut inner = vec![&ipad[..]];
        inner.extend_from_slice(data);
        let ih = hash(&inner);
        hash(&[&opad, &ih])
    }

    struct Sym {
        ck: [u8; 32],
        h: [u8; 32],
        k: [u8; 32],
    }

    impl Sym {
        fn mix_hash(&mut self, d: &[u8]) {
            self.h = hash(&[&self.h, d]);
        }
        fn mix_key(&mut self, ikm: &[u8]) {
            let t = hmac(&self.ck, &[ikm]);
            let o1 = hmac(&t, &[&[1]]);
            let o2 = hmac(&t, &[&o1, &[2]]);
            self.ck = o1;
            self.k = o2;
        }
        fn encrypt_and_hash(&mut self, plain: &[u8], out: &mut Vec<u8>) {
            let c = ChaCha20Poly1305::new(&self.k.into());
            let ct = c.encrypt(Nonce::from_slice(&[0; 12]), Payload { msg: plain, aad: &self.h }).unwrap();
            self.mix_hash(&ct);
            out.extend_from_slice(&ct);
        }
    }

    pub(crate) fn message_1(callee_x25519: [u8; 32], s: [u8; 32], ss: [u8; 32], payload: &[u8]) -> Vec<u8> {
        let h = hash(&[super::PARAMS.as_bytes()]);
        let mut st = Sym { ck: h, h, k: [0; 32] };
        st.mix_hash(super::PROLOGUE);
        st.mix_hash(&callee_x25519);
        let e_secret = [7u8; 32];
        let e = MontgomeryPoint::mul_base_clamped(e_secret).to_bytes();
        let mut out = e.to_vec();
        st.mix_hash(&e);
        st.mix_key(&MontgomeryPoint(callee_x25519).mul_clamped(e_secret).to_bytes());
        st.encrypt_and_hash(&s, &mut out);
        st.mix_key(&ss);
        st.encrypt_and_hash(payload, &mut out);
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::MAX_DATAGRAM;

    #[test]
    fn both_sides_agree_and_identity_is_proven() {
        let a = DeviceKey::from_seed([1; 32]);
        let b = DeviceKey::from_seed([2; 32]);
        let mut m1 = [0u8; MAX_DATAGRAM];
        let (init, n1) = initiate(&a, &b.id(), &mut m1).unwrap();
        assert_eq!(n1, crate::wire::INIT_NOISE_LEN);
        let r = respond(&b, &m1[..n1]).unwrap();
        assert_eq!(r.caller, a.id());
        let mut m2 = [0u8; MAX_DATAGRAM];
        let (n2, kb) = r.accept(&mut m2).unwrap();
        let ka = init.finish(&m2[..n2]).unwrap();
        assert_eq!(ka.send, kb.recv);
        assert_eq!(ka.recv, kb.send);
        assert_ne!(ka.send, ka.recv);
        assert_eq!(ka.hash, kb.hash);
        assert_ne!(ka.hash, [0; 32]);
    }

    /// The reference: eight times a small-order point is the identity (u = 0).
    fn ladder_says_low_order(b: [u8; 32]) -> bool {
        (curve25519_dalek::montgomery::MontgomeryPoint(b) * curve25519_dalek::Scalar::from(8u8)).to_bytes() == [0; 32]
    }

    #[test]
    fn low_order_points_are_recognised() {
        for t in curve25519_dalek::constants::EIGHT_TORSION {
            assert!(low_order(&t.to_montgomery().to_bytes()));
        }
        assert!(low_order(&[0; 32]) && low_order(&[0; 5]));
        assert!(!low_order(&DeviceKey::from_seed([1; 32]).id().x25519_public().unwrap()));
        for u in small_order_u() {
            assert!(ladder_says_low_order(*u), "{u:?}");
            let mut high = *u;
            high[31] |= 0x80;
            assert!(low_order(&high), "bit 255 is ignored by X25519");
        }
        let distinct: std::collections::HashSet<_> = small_order_u().iter().collect();
        assert_eq!(distinct.len(), 7);
    }

    #[test]
    fn the_table_agrees_with_the_ladder_near_every_entry_and_on_random_keys() {
        let mut rng = crate::util::rng::Rng::seeded(7);
        let mut cases: Vec<[u8; 32]> = Vec::new();
        for base in small_order_u() {
            for d in 0..64u8 {
                let (mut up, mut down) = (*base, *base);
                up[0] = up[0].wrapping_add(d);
                down[0] = down[0].wrapping_sub(d);
                cases.extend([up, down]);
            }
        }
        for _ in 0..200 {
            let mut b = [0u8; 32];
            for c in b.chunks_mut(8) {
                c.copy_from_slice(&rng.next_u64().to_le_bytes());
            }
            cases.push(b);
        }
        for b in cases {
            assert_eq!(low_order(&b), ladder_says_low_order(b), "{b:?}");
        }
    }

    #[test]
    fn a_caller_with_no_secret_cannot_complete_a_handshake_as_a_weak_key() {
        let b = DeviceKey::from_seed([2; 32]);
        let rs = b.id().x25519_public().unwrap();
        // The hand-written Noise is right: with a real static key and its ss, snow reads it.
        let a = DeviceKey::from_seed([1; 32]);
        let a_s = a.id().x25519_public().unwrap();
        let ss = curve25519_dalek::montgomery::MontgomeryPoint(rs).mul_clamped(a.x25519_secret()).to_bytes();
        let real = super::forge::message_1(rs, a_s, ss, a.id().as_bytes());
        assert_eq!(respond(&b, &real).map(|r| r.caller).ok(), Some(a.id()));
        // The identity point as an Ed25519 key: its X25519 form is u = 0, and ss is zero.
        let mut identity = [0u8; 32];
        identity[0] = 1;
        let forged = super::forge::message_1(rs, [0; 32], [0; 32], &identity);
        assert_eq!(forged.len(), crate::wire::INIT_NOISE_LEN, "a well-formed message 1");
        assert_eq!(respond(&b, &forged).err(), Some(HsError::WeakKey));
        // A low-order ephemeral is refused before any DH.
        let mut zero_e = real.clone();
        zero_e[..32].fill(0);
        assert_eq!(respond(&b, &zero_e).err(), Some(HsError::WeakKey));
    }

    #[test]
    fn a_reply_with_a_low_order_ephemeral_is_refused() {
        let a = DeviceKey::from_seed([1; 32]);
        let b = DeviceKey::from_seed([2; 32]);
        let mut m1 = [0u8; MAX_DATAGRAM];
        let (init, _) = initiate(&a, &b.id(), &mut m1).unwrap();
        let mut m2 = [0u8; 48];
        m2[..32].copy_from_slice(&curve25519_dalek::constants::EIGHT_TORSION[1].to_montgomery().to_bytes());
        assert_eq!(init.finish(&m2).err(), Some(HsError::WeakKey));
    }

    #[test]
    fn wrong_responder_cannot_read_and_tampering_fails() {
        let a = DeviceKey::from_seed([1; 32]);
        let b = DeviceKey::from_seed([2; 32]);
        let c = DeviceKey::from_seed([3; 32]);
        let mut m1 = [0u8; MAX_DATAGRAM];
        let (_, n1) = initiate(&a, &b.id(), &mut m1).unwrap();
        assert!(respond(&c, &m1[..n1]).is_err());
        for i in 0..n1 {
            let mut t = m1;
            t[i] ^= 1;
            assert!(respond(&b, &t[..n1]).is_err(), "tampered byte {i} accepted");
        }
    }
}
