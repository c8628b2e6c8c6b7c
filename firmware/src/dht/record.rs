//! The DHT announce record: where a device can be reached, signed with its per-day blinded key
//! (`blind.rs`) and sealed so that only someone who already knows the device's public key can
//! read it. Fixed binary layout, because the signature covers the exact bytes:
//!
//! ```text
//! ver u8 (=1) | blinded [32] | seq u64le | expires u32le | nonce [12] | ct_len u16le | ct | sig [64]
//! plaintext:  count u8 | count × (family u8 = 4|6 | ip [4|16] | port u16le)
//! ```
//! sig = blinded-key Ed25519 over `"peercom record sig v1" ‖ all bytes before sig`.
//! ct = ChaCha20-Poly1305(k, nonce, aad = ver‖blinded‖seq‖expires‖nonce), with
//! k = BLAKE2b-256(key = "peercom record v1", P ‖ period u32le): P is the identity key.
use super::blind::{self, BlindSigner};
use crate::identity::{DeviceId, DeviceKey};
use blake2::Blake2bMac;
use blake2::digest::consts::U32;
use blake2::digest::{KeyInit, Mac};
use chacha20poly1305::aead::AeadInPlace;
use chacha20poly1305::{ChaCha20Poly1305, Key, Nonce, Tag};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

pub const VERSION: u8 = 1;
pub const MAX_ADDRS: usize = 8;
/// ver + blinded + seq + expires + nonce: the AEAD's associated data.
const AAD_LEN: usize = 1 + 32 + 8 + 4 + 12;
const HEADER_LEN: usize = AAD_LEN + 2;
const TAG_LEN: usize = 16;
const SIG_LEN: usize = 64;
const MAX_PLAIN: usize = 1 + MAX_ADDRS * (1 + 16 + 2);
/// 8 IPv6 addresses: 59 header + 153 plaintext + 16 tag + 64 signature = 292 bytes.
pub const MAX_RECORD: usize = HEADER_LEN + MAX_PLAIN + TAG_LEN + SIG_LEN;
/// Publishers use lifetimes of at most two days (a record is looked up under its day's key and
/// the next day's readers still try yesterday's); storing nodes allow one more hour because the
/// publisher's clock may run ahead of theirs.
pub const MAX_LIFETIME_SECS: u64 = 2 * 86_400 + 3_600;
const SIG_CONTEXT: &[u8] = b"peercom record sig v1";
const KDF_KEY: &[u8] = b"peercom record v1";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RecordError {
    /// Truncated, trailing bytes, or inconsistent lengths; or a payload that does not decode.
    Malformed,
    Version(u8),
    TooLarge,
    Expired,
    TooFarAhead,
    BadSignature,
    /// The blinded key is not this device's for any period the expiry allows.
    WrongDevice,
    /// Decryption failed (or, when sealing, a crypto primitive refused its input).
    Crypto,
    TooManyAddrs,
    BufferTooSmall,
    /// seal: `period_of(expires)` must lie in `period ..= period + 2`, or `open` can't find it.
    BadPeriod,
}

/// A structurally valid record, borrowing its variable parts. Nothing is verified yet.
#[derive(Debug, Clone, Copy)]
pub struct RecordView<'a> {
    pub blinded: [u8; 32],
    pub seq: u64,
    pub expires: u32,
    nonce: [u8; 12],
    aad: &'a [u8],
    ct: &'a [u8],
    signed: &'a [u8],
    sig: [u8; SIG_LEN],
}

impl RecordView<'_> {
    /// Where this record is stored in the DHT.
    pub fn key(&self) -> [u8; 32] {
        blind::dht_key(&self.blinded)
    }

    pub fn verify_sig(&self) -> bool {
        let mut buf = [0u8; SIG_MSG_MAX];
        sig_msg(self.signed, &mut buf).is_some_and(|m| blind::verify(&self.blinded, m, &self.sig))
    }
}

const SIG_MSG_MAX: usize = SIG_CONTEXT.len() + MAX_RECORD - SIG_LEN;

/// `SIG_CONTEXT ‖ signed` on the stack; None only if `signed` is longer than parse() allows.
fn sig_msg<'b>(signed: &[u8], buf: &'b mut [u8; SIG_MSG_MAX]) -> Option<&'b [u8]> {
    let (ctx, rest) = buf.split_at_mut(SIG_CONTEXT.len());
    ctx.copy_from_slice(SIG_CONTEXT);
    rest.get_mut(..signed.len())?.copy_from_slice(signed);
    buf.get(..SIG_CONTEXT.len() + signed.len())
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Opened {
    pub seq: u64,
    pub expires: u32,
    pub period: u32,
    pub count: usize,
}

/// Fixed-size storage for one record (DHT store, events): no heap.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RecordBuf {
    len: u16,
    bytes: [u8; MAX_RECORD],
}

impl Default for RecordBuf {
    fn default() -> Self {
        RecordBuf { len: 0, bytes: [0; MAX_RECORD] }
    }
}

impl RecordBuf {
    pub fn from_slice(b: &[u8]) -> Option<Self> {
        let mut bytes = [0u8; MAX_RECORD];
        bytes.get_mut(..b.len())?.copy_from_slice(b);
        Some(RecordBuf { len: b.len() as u16, bytes })
    }

    pub fn as_bytes(&self) -> &[u8] {
        self.bytes.get(..self.len as usize).unwrap_or(&[])
    }
}

fn payload_key(public: &[u8; 32], period: u32) -> Result<[u8; 32], RecordError> {
    let mut mac = <Blake2bMac<U32> as KeyInit>::new_from_slice(KDF_KEY).map_err(|_| RecordError::Crypto)?;
    mac.update(public);
    mac.update(&period.to_le_bytes());
    Ok(mac.finalize().into_bytes().into())
}

fn take<const N: usize>(r: &mut &[u8]) -> Result<[u8; N], RecordError> {
    let (head, rest) = r.split_first_chunk::<N>().ok_or(RecordError::Malformed)?;
    *r = rest;
    Ok(*head)
}

/// Encodes `addrs` as the plaintext; the caller has checked the count. Scope ids and flow
/// labels are dropped: they mean nothing to another host.
fn encode_addrs(addrs: &[SocketAddr], buf: &mut [u8; MAX_PLAIN]) -> usize {
    buf[0] = addrs.len() as u8;
    let mut at = 1;
    for a in addrs {
        let (v4, v6);
        let (family, ip): (u8, &[u8]) = match a.ip() {
            IpAddr::V4(ip) => {
                v4 = ip.octets();
                (4, &v4)
            }
            IpAddr::V6(ip) => {
                v6 = ip.octets();
                (6, &v6)
            }
        };
        buf[at] = family;
        buf[at + 1..at + 1 + ip.len()].copy_from_slice(ip);
        at += 1 + ip.len();
        buf[at..at + 2].copy_from_slice(&a.port().to_le_bytes());
        at += 2;
    }
    at
}

/// Total: exactly `count` well-formed entries and nothing after them.
fn decode_addrs(mut r: &[u8], out: &mut [SocketAddr; MAX_ADDRS]) -> Result<usize, RecordError> {
    let [count] = take::<1>(&mut r)?;
    let count = count as usize;
    if count > MAX_ADDRS {
        return Err(RecordError::Malformed);
    }
    for slot in out.iter_mut().take(count) {
        let ip = match take::<1>(&mut r)? {
            [4] => IpAddr::V4(Ipv4Addr::from(take::<4>(&mut r)?)),
            [6] => IpAddr::V6(Ipv6Addr::from(take::<16>(&mut r)?)),
            _ => return Err(RecordError::Malformed),
        };
        *slot = SocketAddr::new(ip, u16::from_le_bytes(take(&mut r)?));
    }
    if !r.is_empty() {
        return Err(RecordError::Malformed);
    }
    Ok(count)
}

pub fn seal(
    key: &DeviceKey,
    period: u32,
    seq: u64,
    expires: u32,
    addrs: &[SocketAddr],
    nonce: [u8; 12],
    out: &mut [u8],
) -> Result<usize, RecordError> {
    if addrs.len() > MAX_ADDRS {
        return Err(RecordError::TooManyAddrs);
    }
    let mut plain = [0u8; MAX_PLAIN];
    let n = encode_addrs(addrs, &mut plain);
    seal_plain(key, period, seq, expires, &plain[..n], nonce, out)
}

/// `seal` for an already encoded plaintext (tests use it to sign malformed payloads).
fn seal_plain(
    key: &DeviceKey,
    period: u32,
    seq: u64,
    expires: u32,
    plain: &[u8],
    nonce: [u8; 12],
    out: &mut [u8],
) -> Result<usize, RecordError> {
    let pe = blind::period_of(expires as u64);
    if pe < period || pe - period > 2 {
        return Err(RecordError::BadPeriod);
    }
    if plain.len() > MAX_PLAIN {
        return Err(RecordError::TooManyAddrs);
    }
    let ct_len = plain.len() + TAG_LEN;
    let total = HEADER_LEN + ct_len + SIG_LEN;
    let out = out.get_mut(..total).ok_or(RecordError::BufferTooSmall)?;
    let signer = BlindSigner::new(key, period).ok_or(RecordError::Crypto)?;
    out[0] = VERSION;
    out[1..33].copy_from_slice(&signer.public());
    out[33..41].copy_from_slice(&seq.to_le_bytes());
    out[41..45].copy_from_slice(&expires.to_le_bytes());
    out[45..57].copy_from_slice(&nonce);
    out[57..59].copy_from_slice(&(ct_len as u16).to_le_bytes());
    let k = payload_key(key.id().as_bytes(), period)?;
    let (aad, rest) = out.split_at_mut(AAD_LEN);
    let body = &mut rest[2..2 + ct_len];
    let (pt, tag) = body.split_at_mut(plain.len());
    pt.copy_from_slice(plain);
    let t = ChaCha20Poly1305::new(&Key::from(k))
        .encrypt_in_place_detached(&Nonce::from(nonce), aad, pt)
        .map_err(|_| RecordError::Crypto)?;
    tag.copy_from_slice(&t);
    let mut buf = [0u8; SIG_MSG_MAX];
    let sig = signer.sign(sig_msg(&out[..total - SIG_LEN], &mut buf).ok_or(RecordError::BufferTooSmall)?);
    out[total - SIG_LEN..].copy_from_slice(&sig);
    Ok(total)
}

/// Structure only: size, version, `ct_len` consistent with the length, no trailing bytes.
pub fn parse(bytes: &[u8]) -> Result<RecordView<'_>, RecordError> {
    if bytes.len() > MAX_RECORD {
        return Err(RecordError::TooLarge);
    }
    let mut r = bytes;
    let [ver] = take::<1>(&mut r)?;
    if ver != VERSION {
        return Err(RecordError::Version(ver));
    }
    let blinded = take::<32>(&mut r)?;
    let seq = u64::from_le_bytes(take(&mut r)?);
    let expires = u32::from_le_bytes(take(&mut r)?);
    let nonce = take::<12>(&mut r)?;
    let ct_len = u16::from_le_bytes(take(&mut r)?) as usize;
    if ct_len < TAG_LEN {
        return Err(RecordError::Malformed);
    }
    let (ct, rest) = r.split_at_checked(ct_len).ok_or(RecordError::Malformed)?;
    let sig: [u8; SIG_LEN] = rest.try_into().map_err(|_| RecordError::Malformed)?;
    let aad = bytes.get(..AAD_LEN).ok_or(RecordError::Malformed)?;
    let signed = bytes.get(..HEADER_LEN + ct_len).ok_or(RecordError::Malformed)?;
    Ok(RecordView { blinded, seq, expires, nonce, aad, ct, signed, sig })
}

/// What a storing node does before keeping a record. It cannot read the payload.
pub fn check(bytes: &[u8], unix_now: u64) -> Result<RecordView<'_>, RecordError> {
    let v = parse(bytes)?;
    if v.expires as u64 <= unix_now {
        return Err(RecordError::Expired);
    }
    if v.expires as u64 > unix_now.saturating_add(MAX_LIFETIME_SECS) {
        return Err(RecordError::TooFarAhead);
    }
    if !v.verify_sig() {
        return Err(RecordError::BadSignature);
    }
    Ok(v)
}

/// What a contact does with a record found under `id`'s key. The record's period is not on the
/// wire: `seal` guarantees `period ≤ period_of(expires) ≤ period + 2`, so we try those three
/// periods, newest first, and keep the one whose blinded key matches. `expires` is signed, so a
/// storing node can't move it to another period. Time is not checked here: compare `expires`.
pub fn open(id: &DeviceId, bytes: &[u8], addrs: &mut [SocketAddr; MAX_ADDRS]) -> Result<Opened, RecordError> {
    let v = parse(bytes)?;
    let pe = blind::period_of(v.expires as u64);
    let period = (0..=2)
        .filter_map(|back| pe.checked_sub(back))
        .find(|&p| blind::blind_public(id, p) == Some(v.blinded))
        .ok_or(RecordError::WrongDevice)?;
    if !v.verify_sig() {
        return Err(RecordError::BadSignature);
    }
    let body_len = v.ct.len().checked_sub(TAG_LEN).ok_or(RecordError::Malformed)?;
    let (body, tag) = v.ct.split_at_checked(body_len).ok_or(RecordError::Malformed)?;
    let tag: [u8; TAG_LEN] = tag.try_into().map_err(|_| RecordError::Malformed)?;
    let mut plain = [0u8; MAX_PLAIN];
    let pt = plain.get_mut(..body.len()).ok_or(RecordError::Malformed)?;
    pt.copy_from_slice(body);
    let k = payload_key(id.as_bytes(), period)?;
    ChaCha20Poly1305::new(&Key::from(k))
        .decrypt_in_place_detached(&Nonce::from(v.nonce), v.aad, pt, &Tag::from(tag))
        .map_err(|_| RecordError::Crypto)?;
    let count = decode_addrs(pt, addrs)?;
    Ok(Opened { seq: v.seq, expires: v.expires, period, count })
}

#[cfg(test)]
mod tests {
    use super::*;

    const DAY: u32 = 20_000;
    const NOW: u64 = DAY as u64 * 86_400 + 3_600;
    const EXP: u32 = (NOW + 86_400) as u32;

    fn addrs() -> [SocketAddr; 3] {
        ["192.0.2.7:4433".parse().unwrap(), "[2001:db8::1234]:50000".parse().unwrap(), "10.1.2.3:1".parse().unwrap()]
    }

    fn sealed(key: &DeviceKey, period: u32, expires: u32) -> RecordBuf {
        let mut out = [0u8; MAX_RECORD];
        let n = seal(key, period, 5, expires, &addrs(), [9; 12], &mut out).unwrap();
        RecordBuf::from_slice(&out[..n]).unwrap()
    }

    fn unspecified() -> [SocketAddr; MAX_ADDRS] {
        [SocketAddr::from(([0, 0, 0, 0], 0)); MAX_ADDRS]
    }

    #[test]
    fn round_trip_and_storage() {
        let key = DeviceKey::from_seed([1; 32]);
        let rec = sealed(&key, DAY, EXP);
        let v = check(rec.as_bytes(), NOW).unwrap();
        assert_eq!((v.seq, v.expires), (5, EXP));
        assert_eq!(v.key(), blind::dht_key(&blind::blind_public(&key.id(), DAY).unwrap()));
        let mut out = unspecified();
        let o = open(&key.id(), rec.as_bytes(), &mut out).unwrap();
        assert_eq!(o, Opened { seq: 5, expires: EXP, period: DAY, count: 3 });
        assert_eq!(out[..3], addrs());
        // Zero addresses is a valid (if useless) record.
        let mut buf = [0u8; MAX_RECORD];
        let n = seal(&key, DAY, 6, EXP, &[], [0; 12], &mut buf).unwrap();
        assert_eq!(open(&key.id(), &buf[..n], &mut out).unwrap().count, 0);
    }

    #[test]
    fn sizes_fit() {
        assert_eq!(MAX_RECORD, 292);
        const { assert!(MAX_RECORD <= 400) };
        let key = DeviceKey::from_seed([1; 32]);
        let many = ["[2001:db8::1]:1".parse().unwrap(); MAX_ADDRS];
        let mut out = [0u8; MAX_RECORD + 10];
        let n = seal(&key, DAY, 1, EXP, &many, [0; 12], &mut out).unwrap();
        assert_eq!(n, MAX_RECORD);
        assert_eq!(seal(&key, DAY, 1, EXP, &many, [0; 12], &mut out[..n - 1]), Err(RecordError::BufferTooSmall));
        let nine = ["192.0.2.1:1".parse().unwrap(); MAX_ADDRS + 1];
        assert_eq!(seal(&key, DAY, 1, EXP, &nine, [0; 12], &mut out), Err(RecordError::TooManyAddrs));
        assert_eq!(RecordBuf::from_slice(&out[..MAX_RECORD + 1]), None);
        assert_eq!(parse(&out[..MAX_RECORD + 1]).err(), Some(RecordError::TooLarge));
    }

    #[test]
    fn only_the_right_device_opens_it() {
        let rec = sealed(&DeviceKey::from_seed([1; 32]), DAY, EXP);
        let mut out = unspecified();
        let other = DeviceKey::from_seed([2; 32]).id();
        assert_eq!(open(&other, rec.as_bytes(), &mut out), Err(RecordError::WrongDevice));
        // An ID that is not a curve point matches nothing either.
        let bad = DeviceId::from_bytes([0xff; 32]);
        assert_eq!(open(&bad, rec.as_bytes(), &mut out), Err(RecordError::WrongDevice));
    }

    #[test]
    fn any_flipped_byte_or_truncation_is_rejected() {
        let key = DeviceKey::from_seed([1; 32]);
        let rec = sealed(&key, DAY, EXP);
        let b = rec.as_bytes();
        let mut out = unspecified();
        for i in 0..b.len() {
            for mask in [0x01, 0x80, 0xff] {
                let mut t = RecordBuf::from_slice(b).unwrap();
                t.bytes[i] ^= mask;
                assert!(check(t.as_bytes(), NOW).is_err(), "check accepted flip at {i}");
                assert!(open(&key.id(), t.as_bytes(), &mut out).is_err(), "open accepted flip at {i}");
            }
        }
        for n in 0..b.len() {
            assert!(check(&b[..n], NOW).is_err() && open(&key.id(), &b[..n], &mut out).is_err(), "{n}");
        }
        let mut long = [0u8; MAX_RECORD + 1];
        long[..b.len()].copy_from_slice(b);
        assert_eq!(check(&long[..b.len() + 1], NOW).err(), Some(RecordError::Malformed));
    }

    #[test]
    fn forged_signatures_are_rejected() {
        let key = DeviceKey::from_seed([1; 32]);
        let mut rec = sealed(&key, DAY, EXP);
        let n = rec.len as usize;
        let mut msg = SIG_CONTEXT.to_vec();
        msg.extend_from_slice(&rec.bytes[..n - SIG_LEN]);
        let mallory = DeviceKey::from_seed([3; 32]);
        for sig in [BlindSigner::new(&mallory, DAY).unwrap().sign(&msg), key.sign(&msg)] {
            rec.bytes[n - SIG_LEN..n].copy_from_slice(&sig);
            assert_eq!(check(rec.as_bytes(), NOW).err(), Some(RecordError::BadSignature));
            assert_eq!(open(&key.id(), rec.as_bytes(), &mut unspecified()), Err(RecordError::BadSignature));
        }
    }

    #[test]
    fn expiry_window() {
        let rec = sealed(&DeviceKey::from_seed([1; 32]), DAY, EXP);
        let b = rec.as_bytes();
        assert_eq!(check(b, EXP as u64).err(), Some(RecordError::Expired));
        assert!(check(b, EXP as u64 - 1).is_ok());
        assert!(check(b, EXP as u64 - MAX_LIFETIME_SECS).is_ok());
        assert_eq!(check(b, EXP as u64 - MAX_LIFETIME_SECS - 1).err(), Some(RecordError::TooFarAhead));
    }

    #[test]
    fn period_rule() {
        let key = DeviceKey::from_seed([1; 32]);
        let mut out = unspecified();
        // Expiring anywhere from the period itself to the end of period + 2 opens.
        for exp in [DAY * 86_400 + 1, (DAY + 3) * 86_400 - 1] {
            let rec = sealed(&key, DAY, exp);
            assert_eq!(open(&key.id(), rec.as_bytes(), &mut out).unwrap().period, DAY);
        }
        let mut buf = [0u8; MAX_RECORD];
        for exp in [DAY * 86_400 - 1, (DAY + 3) * 86_400] {
            assert_eq!(seal(&key, DAY, 1, exp, &[], [0; 12], &mut buf), Err(RecordError::BadPeriod));
        }
        // A device's records of consecutive days share nothing a stranger could link.
        let (a, b) = (sealed(&key, DAY, EXP), sealed(&key, DAY + 1, EXP));
        let (va, vb) = (parse(a.as_bytes()).unwrap(), parse(b.as_bytes()).unwrap());
        assert_ne!(va.blinded, vb.blinded);
        assert_ne!(va.key(), vb.key());
        assert_ne!(va.ct, vb.ct, "same payload and nonce, different keys");
        assert_eq!(open(&key.id(), b.as_bytes(), &mut out).unwrap().period, DAY + 1);
    }

    #[test]
    fn record_reveals_neither_key_nor_addresses() {
        let key = DeviceKey::from_seed([1; 32]);
        let rec = sealed(&key, DAY, EXP);
        let contains = |needle: &[u8]| rec.as_bytes().windows(needle.len()).any(|w| w == needle);
        assert!(!contains(key.id().as_bytes()));
        for a in addrs() {
            let mut plain = [0u8; MAX_PLAIN];
            let n = encode_addrs(&[a], &mut plain);
            assert!(!contains(&plain[1..n]), "{a} in clear");
            match a.ip() {
                IpAddr::V4(ip) => assert!(!contains(&ip.octets())),
                IpAddr::V6(ip) => assert!(!contains(&ip.octets())),
            }
        }
    }

    #[test]
    fn signed_but_malformed_payloads_are_errors() {
        let key = DeviceKey::from_seed([1; 32]);
        let mut buf = [0u8; MAX_RECORD];
        let v4 = [1u8, 4, 1, 2, 3, 4, 0, 1];
        let cases: [&[u8]; 6] = [&[], &[9], &[1, 5, 0, 0], &[1, 4, 1, 2, 3], &[0, 0], &[2, 4, 1, 2, 3, 4, 0, 1]];
        for plain in cases {
            let n = seal_plain(&key, DAY, 1, EXP, plain, [0; 12], &mut buf).unwrap();
            assert!(check(&buf[..n], NOW).is_ok(), "a storing node can't tell");
            assert_eq!(open(&key.id(), &buf[..n], &mut unspecified()), Err(RecordError::Malformed), "{plain:?}");
        }
        let n = seal_plain(&key, DAY, 1, EXP, &v4, [0; 12], &mut buf).unwrap();
        assert_eq!(open(&key.id(), &buf[..n], &mut unspecified()).unwrap().count, 1);
    }

    #[test]
    fn garbage_never_panics() {
        let id = DeviceKey::from_seed([1; 32]).id();
        let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
        let mut buf = [0u8; MAX_RECORD + 8];
        for round in 0..2000 {
            for b in buf.iter_mut() {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                *b = x as u8;
            }
            buf[0] = VERSION;
            let len = round % buf.len();
            let ct_len = (len.saturating_sub(HEADER_LEN + SIG_LEN)) as u16;
            buf[57..59].copy_from_slice(&ct_len.to_le_bytes());
            let _ = check(&buf[..len], NOW);
            let _ = open(&id, &buf[..len], &mut unspecified());
        }
    }
}
