//! The device ID text form: "pc1" + base32(public key || 3-byte checksum), 59 characters.
//! The checksum (BLAKE2s of the key) catches typos with probability 1 - 2^-24; case, spaces
//! and dashes are ignored on input so IDs can be grouped for reading.
use crate::util::base32;
use blake2::{Blake2s256, Digest};
use std::fmt;

pub const ID_PREFIX: &str = "pc1";
const CHECKSUM_LEN: usize = 3;

#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct DeviceId([u8; 32]);

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum IdError {
    Prefix,
    Character(usize),
    Length(usize),
    Checksum,
    NotAKey,
    /// A small-order point: every Diffie-Hellman with it is zero, so anyone could be it.
    Weak,
}

impl fmt::Display for IdError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            IdError::Prefix => write!(f, "a device ID starts with \"{ID_PREFIX}\""),
            IdError::Character(i) => write!(f, "invalid character at position {} of the device ID", i + 1),
            IdError::Length(n) => write!(f, "a device ID has 56 characters after \"{ID_PREFIX}\", this one has {n}"),
            IdError::Checksum => write!(f, "device ID checksum does not match (typo?)"),
            IdError::NotAKey => write!(f, "device ID is not a valid Ed25519 public key"),
            IdError::Weak => write!(f, "weak key: a small-order point that anyone could claim to be"),
        }
    }
}

impl std::error::Error for IdError {}

fn checksum(key: &[u8; 32]) -> [u8; CHECKSUM_LEN] {
    let mut h = Blake2s256::new();
    h.update(b"peercom device id v1");
    h.update(key);
    let d = h.finalize();
    [d[0], d[1], d[2]]
}

impl DeviceId {
    pub fn from_bytes(b: [u8; 32]) -> Self {
        DeviceId(b)
    }

    pub fn as_bytes(&self) -> &[u8; 32] {
        &self.0
    }

    /// The Noise static public key: the Montgomery form of the Ed25519 point; None for a key
    /// that is no point or a weak one (its X25519 form would make every DH zero).
    pub fn x25519_public(&self) -> Option<[u8; 32]> {
        let vk = ed25519_dalek::VerifyingKey::from_bytes(&self.0).ok()?;
        (!vk.is_weak()).then(|| vk.to_montgomery().to_bytes())
    }

    /// A small-order point (or no point at all): never a real device's key.
    pub fn is_weak(&self) -> bool {
        ed25519_dalek::VerifyingKey::from_bytes(&self.0).map_or(true, |vk| vk.is_weak())
    }

    /// Strict Ed25519 verification: weak (small-order) keys and non-canonical signatures fail,
    /// so a signature cannot be forged for a degenerate key.
    pub fn verify(&self, msg: &[u8], sig: &[u8; 64]) -> bool {
        match ed25519_dalek::VerifyingKey::from_bytes(&self.0) {
            Ok(vk) => !vk.is_weak() && vk.verify_strict(msg, &ed25519_dalek::Signature::from_bytes(sig)).is_ok(),
            Err(_) => false,
        }
    }

    pub fn parse(text: &str) -> Result<Self, IdError> {
        let t = text.trim();
        let lower_prefix = t.get(..ID_PREFIX.len()).map(|p| p.eq_ignore_ascii_case(ID_PREFIX));
        if lower_prefix != Some(true) {
            return Err(IdError::Prefix);
        }
        let mut body = [0u8; 64];
        let mut n = 0;
        for (i, c) in t.bytes().enumerate().skip(ID_PREFIX.len()) {
            if c == b'-' || c == b' ' {
                continue;
            }
            if !c.is_ascii_alphanumeric() {
                return Err(IdError::Character(i));
            }
            if n < body.len() {
                body[n] = c;
            }
            n += 1;
        }
        if n != 56 {
            return Err(IdError::Length(n));
        }
        let body = std::str::from_utf8(&body[..n]).map_err(|_| IdError::Character(0))?;
        let mut raw = [0u8; 35];
        let len = base32::decode(body, &mut raw).map_err(|i| IdError::Character(i + ID_PREFIX.len()))?;
        if len != 35 {
            return Err(IdError::Length(n));
        }
        let mut key = [0u8; 32];
        key.copy_from_slice(&raw[..32]);
        if raw[32..] != checksum(&key) {
            return Err(IdError::Checksum);
        }
        match ed25519_dalek::VerifyingKey::from_bytes(&key) {
            Err(_) => Err(IdError::NotAKey),
            Ok(vk) if vk.is_weak() => Err(IdError::Weak),
            Ok(_) => Ok(DeviceId(key)),
        }
    }

    /// A short, non-identifying-enough-to-matter label for logs: the first 8 characters.
    pub fn short(&self) -> String {
        self.to_string()[..ID_PREFIX.len() + 8].to_string()
    }
}

impl fmt::Display for DeviceId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut raw = [0u8; 35];
        raw[..32].copy_from_slice(&self.0);
        raw[32..].copy_from_slice(&checksum(&self.0));
        write!(f, "{ID_PREFIX}{}", base32::encode(&raw))
    }
}

impl fmt::Debug for DeviceId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "DeviceId({})", self.short())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::identity::DeviceKey;

    #[test]
    fn round_trip_and_grouping() {
        let id = DeviceKey::from_seed([1u8; 32]).id();
        let s = id.to_string();
        assert_eq!(s.len(), 59);
        assert_eq!(DeviceId::parse(&s).unwrap(), id);
        assert_eq!(DeviceId::parse(&s.to_uppercase()).unwrap(), id);
        let grouped: String =
            s.chars().enumerate().flat_map(|(i, c)| if i > 3 && i % 8 == 0 { vec!['-', c] } else { vec![c] }).collect();
        assert_eq!(DeviceId::parse(&grouped).unwrap(), id);
    }

    #[test]
    fn every_single_character_typo_is_detected() {
        let s = DeviceKey::from_seed([2u8; 32]).id().to_string();
        let alphabet = b"abcdefghijklmnopqrstuvwxyz234567";
        for pos in ID_PREFIX.len()..s.len() {
            for &c in alphabet {
                let mut b = s.clone().into_bytes();
                if b[pos] == c {
                    continue;
                }
                b[pos] = c;
                let typo = String::from_utf8(b).unwrap();
                assert!(DeviceId::parse(&typo).is_err(), "typo at {pos} accepted");
            }
        }
    }

    #[test]
    fn small_order_keys_are_refused_as_weak() {
        for t in curve25519_dalek::constants::EIGHT_TORSION {
            let id = DeviceId::from_bytes(t.compress().to_bytes());
            assert_eq!(DeviceId::parse(&id.to_string()), Err(IdError::Weak), "{:?}", t.compress());
            assert!(id.is_weak() && id.x25519_public().is_none());
        }
        // A non-canonical encoding of the identity (y = p + 1).
        let mut y = [0xffu8; 32];
        y[0] = 0xee;
        y[31] = 0x7f;
        let r = DeviceId::parse(&DeviceId::from_bytes(y).to_string());
        assert!(matches!(r, Err(IdError::Weak | IdError::NotAKey)), "{r:?}");
        let real = DeviceKey::from_seed([4u8; 32]).id();
        assert!(!real.is_weak() && real.x25519_public().is_some());
    }

    #[test]
    fn bad_forms_are_errors() {
        let s = DeviceKey::from_seed([3u8; 32]).id().to_string();
        assert_eq!(DeviceId::parse("xx1abc"), Err(IdError::Prefix));
        assert_eq!(DeviceId::parse(&s[..50]), Err(IdError::Length(47)));
        assert!(matches!(DeviceId::parse(&format!("{}!", &s[..58])), Err(IdError::Character(_))));
        assert_eq!(DeviceId::parse(""), Err(IdError::Prefix));
        assert_eq!(DeviceId::parse("pc1"), Err(IdError::Length(0)));
        // Non-ASCII never panics.
        assert!(DeviceId::parse("pc1ééééééééééééééééééééééééééééééééééééééééééééééééééééééééé").is_err());
    }
}
