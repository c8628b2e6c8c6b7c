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
    let mut secret = local.x25519_secret();
    let hs = builder().prologue(PROLOGUE)?.local_private_key(&secret)?.build_responder();
    zeroize::Zeroize::zeroize(&mut secret);
    let mut hs = hs?;
    let mut payload = [0u8; 64];
    let n = hs.read_message(msg1, &mut payload)?;
    let ed: [u8; 32] = payload.get(..n).and_then(|p| p.try_into().ok()).ok_or(HsError::Identity)?;
    let caller = DeviceId::from_bytes(ed);
    let rs = hs.get_remote_static().ok_or(HsError::Noise)?;
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
