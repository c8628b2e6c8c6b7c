//! Per-period blinded keys (as Tor v3 onion services do), so that the DHT can check a record's
//! signature without learning whose it is. For period `d` and identity key `P = a·B`:
//! `h = H(P, d)`, blinded key `P' = h·P`, signed with `a' = h·a`. Anyone who knows `P` can compute
//! `P'` (and so find the record); nobody else can link `P'` to `P`, or to other periods' keys.
use crate::identity::{DeviceId, DeviceKey};
use blake2::digest::Digest;
use blake2::digest::consts::U32;
use blake2::{Blake2b, Blake2b512};
use curve25519_dalek::Scalar;
use ed25519_dalek::hazmat::{ExpandedSecretKey, raw_sign};
use ed25519_dalek::{Sha512, Signature, VerifyingKey};

/// A blinding period is one day of Unix time.
pub const PERIOD_SECS: u64 = 86_400;

pub fn period_of(unix_secs: u64) -> u32 {
    (unix_secs / PERIOD_SECS) as u32
}

fn factor(public: &[u8; 32], period: u32) -> Scalar {
    let mut h = Blake2b512::new();
    h.update(b"peercom blind v1");
    h.update(public);
    h.update(period.to_le_bytes());
    let wide: [u8; 64] = h.finalize().into();
    Scalar::from_bytes_mod_order_wide(&wide)
}

/// The blinded public key of `id` for `period`; None if `id` is not a valid curve point.
pub fn blind_public(id: &DeviceId, period: u32) -> Option<[u8; 32]> {
    let vk = VerifyingKey::from_bytes(id.as_bytes()).ok()?;
    let p = vk.to_edwards() * factor(id.as_bytes(), period);
    Some(p.compress().to_bytes())
}

/// Where a blinded key's record lives in the DHT.
pub fn dht_key(blinded: &[u8; 32]) -> [u8; 32] {
    let mut h = Blake2b::<U32>::new();
    h.update(b"peercom dht v1");
    h.update(blinded);
    h.finalize().into()
}

/// Signs with the blinded secret of `key` for `period`.
pub struct BlindSigner {
    esk: ExpandedSecretKey,
    public: VerifyingKey,
}

impl BlindSigner {
    pub fn new(key: &DeviceKey, period: u32) -> Option<Self> {
        let id = key.id();
        let h = factor(id.as_bytes(), period);
        let base = key.expanded();
        // A fresh nonce prefix per period, derived from the secret one: never reused across keys.
        let mut prefix = Blake2b512::new();
        prefix.update(b"peercom blind prefix v1");
        prefix.update(base.hash_prefix);
        prefix.update(period.to_le_bytes());
        let p: [u8; 64] = prefix.finalize().into();
        let mut hash_prefix = [0u8; 32];
        hash_prefix.copy_from_slice(&p[..32]);
        let esk = ExpandedSecretKey { scalar: base.scalar * h, hash_prefix };
        let public = VerifyingKey::from_bytes(&blind_public(&id, period)?).ok()?;
        Some(BlindSigner { esk, public })
    }

    pub fn public(&self) -> [u8; 32] {
        self.public.to_bytes()
    }

    pub fn sign(&self, msg: &[u8]) -> [u8; 64] {
        raw_sign::<Sha512>(&self.esk, msg, &self.public).to_bytes()
    }
}

/// Checks a signature made by a `BlindSigner` whose public key is `blinded`. Strict: weak
/// (small-order) keys and non-canonical signatures are refused, or anyone could forge a
/// record for the all-zero key (the test below shows the lax check accepting one).
pub fn verify(blinded: &[u8; 32], msg: &[u8], sig: &[u8; 64]) -> bool {
    match VerifyingKey::from_bytes(blinded) {
        Ok(vk) => !vk.is_weak() && vk.verify_strict(msg, &Signature::from_bytes(sig)).is_ok(),
        Err(_) => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn owner_signs_contacts_find_strangers_cannot_link() {
        let key = DeviceKey::from_seed([7; 32]);
        let id = key.id();
        let s = BlindSigner::new(&key, 20_000).unwrap();
        // A contact, knowing only the ID, computes the same blinded key.
        assert_eq!(blind_public(&id, 20_000), Some(s.public()));
        let sig = s.sign(b"record");
        assert!(verify(&s.public(), b"record", &sig), "anyone can check the signature");
        assert!(!verify(&s.public(), b"recorD", &sig));
        assert!(!verify(id.as_bytes(), b"record", &sig), "not a signature by the identity key");
        // Other days, other keys; other devices, other keys.
        let tomorrow = blind_public(&id, 20_001).unwrap();
        assert_ne!(tomorrow, s.public());
        assert_ne!(s.public(), *id.as_bytes());
        assert_ne!(blind_public(&DeviceKey::from_seed([8; 32]).id(), 20_000), Some(s.public()));
        assert_ne!(dht_key(&s.public()), dht_key(&tomorrow));
        // Deterministic, so both days' records can be found by any contact.
        assert_eq!(BlindSigner::new(&key, 20_001).unwrap().public(), tomorrow);
        assert_eq!(period_of(20_000 * PERIOD_SECS + 5), 20_000);
    }

    #[test]
    fn garbage_and_weak_keys_are_rejected() {
        assert!(!verify(&[0xff; 32], b"x", &[0; 64]));
        // A small-order key with an all-zero signature passes ed25519's lax check.
        use ed25519_dalek::Verifier;
        let weak = VerifyingKey::from_bytes(&[0; 32]).unwrap();
        assert!(weak.verify(b"x", &Signature::from_bytes(&[0; 64])).is_ok(), "the lax check is forgeable");
        assert!(!verify(&[0; 32], b"x", &[0; 64]));
    }
}
