//! Device identity: an Ed25519 key pair. The public key, in a checksummed text form, is the
//! device ID; its X25519 form is the Noise static key, so a device has exactly one public key.
mod device_id;
mod keyfile;
pub mod qr;

pub use device_id::{DeviceId, IdError};
pub use keyfile::{KeyFileError, generate_key_file, load_key_file};

use ed25519_dalek::SigningKey;

/// The device's secret key. Deliberately neither Debug nor Display: it can't be logged.
pub struct DeviceKey {
    signing: SigningKey,
}

impl DeviceKey {
    pub fn from_seed(seed: [u8; 32]) -> Self {
        DeviceKey { signing: SigningKey::from_bytes(&seed) }
    }

    pub fn generate() -> std::io::Result<Self> {
        let mut seed = [0u8; 32];
        getrandom::fill(&mut seed).map_err(|e| std::io::Error::other(e.to_string()))?;
        Ok(Self::from_seed(seed))
    }

    pub fn id(&self) -> DeviceId {
        DeviceId::from_bytes(self.signing.verifying_key().to_bytes())
    }

    /// A second handle on the same secret, for the parts of the device that sign on their own
    /// (DHT records, LAN beacons). Deliberately not `Clone`: copies of a secret should be rare.
    pub(crate) fn duplicate(&self) -> DeviceKey {
        DeviceKey::from_seed(*self.seed())
    }

    pub(crate) fn seed(&self) -> &[u8; 32] {
        self.signing.as_bytes()
    }

    /// The X25519 private scalar derived from the Ed25519 seed (RFC 8032 expansion, clamped by
    /// X25519 itself); pairs with `DeviceId::x25519_public`.
    pub fn x25519_secret(&self) -> [u8; 32] {
        self.signing.to_scalar_bytes()
    }

    /// The Ed25519 secret in expanded form (scalar and nonce prefix), for key blinding only.
    pub(crate) fn expanded(&self) -> ed25519_dalek::hazmat::ExpandedSecretKey {
        ed25519_dalek::hazmat::ExpandedSecretKey::from(self.signing.as_bytes())
    }

    pub fn sign(&self, msg: &[u8]) -> [u8; 64] {
        use ed25519_dalek::Signer;
        self.signing.sign(msg).to_bytes()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use curve25519_dalek::montgomery::MontgomeryPoint;

    #[test]
    fn x25519_forms_match() {
        let k = DeviceKey::from_seed([7u8; 32]);
        let secret = k.x25519_secret();
        let derived = MontgomeryPoint::mul_base_clamped(secret);
        assert_eq!(derived.to_bytes(), k.id().x25519_public().unwrap());
    }
}
