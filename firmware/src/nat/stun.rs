//! STUN messages (RFC 8489), the subset a Binding client needs: a Binding Request out, Binding
//! Success and Error Responses in. No credentials: a binding needs no MESSAGE-INTEGRITY.
//!
//! ```text
//! 0b00 type(14 bits) | length u16be | cookie 0x2112A442 | transaction id [12] | attributes
//! attribute: type u16be | length u16be | value, padded to a multiple of 4
//! ```
//! The decoder is total: every malformed input is an `Err`, never a panic.
use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr};

pub const HEADER_LEN: usize = 20;
pub const MAGIC_COOKIE: u32 = 0x2112_A442;
/// Our Binding Request: the header and a FINGERPRINT.
pub const REQUEST_LEN: usize = HEADER_LEN + 8;
pub const BINDING_REQUEST: u16 = 0x0001;
pub const BINDING_SUCCESS: u16 = 0x0101;
pub const BINDING_ERROR: u16 = 0x0111;

const MAPPED_ADDRESS: u16 = 0x0001;
const MESSAGE_INTEGRITY: u16 = 0x0008;
const ERROR_CODE: u16 = 0x0009;
const MESSAGE_INTEGRITY_SHA256: u16 = 0x001C;
const XOR_MAPPED_ADDRESS: u16 = 0x0020;
const FINGERPRINT: u16 = 0x8028;
const FINGERPRINT_XOR: u32 = 0x5354_554E;

pub type TxId = [u8; 12];

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StunError {
    /// Not a STUN message: leading bits, cookie or length are wrong (see `is_stun`).
    NotStun,
    /// An attribute runs past the end of the message.
    Overrun,
    /// A known attribute with a malformed value: wrong length, address family or error class.
    Value(u16),
    /// A FINGERPRINT that does not match, or is not the last attribute.
    Fingerprint,
    /// A STUN message, but not a Binding response.
    NotResponse(u16),
    /// A success without a mapped address, or an error without an ERROR-CODE.
    Missing,
    /// Encoding: the buffer is smaller than `REQUEST_LEN`.
    Buffer,
}

/// A decoded message: its header and the attributes a binding client reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Message {
    pub msg_type: u16,
    pub txid: TxId,
    /// XOR-MAPPED-ADDRESS, else MAPPED-ADDRESS (the first of each, as RFC 8489 says).
    pub mapped: Option<SocketAddr>,
    pub error_code: Option<u16>,
    /// A FINGERPRINT was present; it has been checked (a wrong one is an error).
    pub fingerprint: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// Our address as the server saw it.
    Mapped(SocketAddr),
    /// An error response's code (e.g. 400, 401, 420).
    Error(u16),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Response {
    pub txid: TxId,
    pub outcome: Outcome,
}

/// The cheap test a demultiplexer makes before decoding: leading bits 00, the magic cookie, and a
/// length field that is a multiple of 4 and matches the datagram. A peercom packet starts with a
/// type byte and version 1, so it can look like a STUN type; the cookie and length tell them apart.
pub fn is_stun(b: &[u8]) -> bool {
    header(b).is_some()
}

/// The header, if `b` passes `is_stun`. A fixed-size array: its indexing is checked at compile time.
fn header(b: &[u8]) -> Option<&[u8; HEADER_LEN]> {
    let h: &[u8; HEADER_LEN] = b.get(..HEADER_LEN)?.try_into().ok()?;
    let len = usize::from(u16::from_be_bytes([h[2], h[3]]));
    let ok = h[0] & 0xC0 == 0 && h[4..8] == MAGIC_COOKIE.to_be_bytes() && len % 4 == 0 && HEADER_LEN + len == b.len();
    ok.then_some(h)
}

/// Writes a Binding Request with a FINGERPRINT into `out`; returns its length (`REQUEST_LEN`).
pub fn encode_binding_request(txid: &TxId, out: &mut [u8]) -> Result<usize, StunError> {
    let m: &mut [u8; REQUEST_LEN] =
        out.get_mut(..REQUEST_LEN).and_then(|s| s.try_into().ok()).ok_or(StunError::Buffer)?;
    m[0..2].copy_from_slice(&BINDING_REQUEST.to_be_bytes());
    m[2..4].copy_from_slice(&8u16.to_be_bytes());
    m[4..8].copy_from_slice(&MAGIC_COOKIE.to_be_bytes());
    m[8..20].copy_from_slice(txid);
    m[20..22].copy_from_slice(&FINGERPRINT.to_be_bytes());
    m[22..24].copy_from_slice(&4u16.to_be_bytes());
    let fp = crc32(&m[..HEADER_LEN]) ^ FINGERPRINT_XOR;
    m[24..28].copy_from_slice(&fp.to_be_bytes());
    Ok(REQUEST_LEN)
}

/// Decodes any STUN message, reading the attributes a binding client uses and skipping the rest
/// (comprehension-required or not: a client has nothing to answer them with).
pub fn decode(b: &[u8]) -> Result<Message, StunError> {
    let h = header(b).ok_or(StunError::NotStun)?;
    let mut txid = [0u8; 12];
    txid.copy_from_slice(&h[8..20]);
    // XOR key for addresses: the cookie, then the transaction ID (RFC 8489 14.2).
    let mut key = [0u8; 16];
    key.copy_from_slice(&h[4..20]);
    let mut m = Message {
        msg_type: u16::from_be_bytes([h[0], h[1]]),
        txid,
        mapped: None,
        error_code: None,
        fingerprint: false,
    };
    let (mut xor_mapped, mut plain_mapped, mut integrity) = (None, None, false);
    let mut at = HEADER_LEN;
    while at < b.len() {
        if m.fingerprint {
            return Err(StunError::Fingerprint); // it must be the last attribute
        }
        let Some(&[t0, t1, l0, l1]) = b.get(at..at + 4) else { return Err(StunError::Overrun) };
        let (ty, len) = (u16::from_be_bytes([t0, t1]), usize::from(u16::from_be_bytes([l0, l1])));
        let start = at + 4;
        let value = b.get(start..start + len).ok_or(StunError::Overrun)?;
        // The padding fits: `start` and the message length are multiples of 4.
        let next = start + len.next_multiple_of(4);
        match ty {
            FINGERPRINT => {
                let covered = b.get(..at).ok_or(StunError::Overrun)?;
                let want = (crc32(covered) ^ FINGERPRINT_XOR).to_be_bytes();
                if value != want {
                    return Err(StunError::Fingerprint);
                }
                m.fingerprint = true;
            }
            // After MESSAGE-INTEGRITY only FINGERPRINT counts (RFC 8489 14.5).
            _ if integrity => {}
            MESSAGE_INTEGRITY | MESSAGE_INTEGRITY_SHA256 => integrity = true,
            XOR_MAPPED_ADDRESS if xor_mapped.is_none() => xor_mapped = Some(address(value, &key, ty)?),
            MAPPED_ADDRESS if plain_mapped.is_none() => plain_mapped = Some(address(value, &[0; 16], ty)?),
            ERROR_CODE if m.error_code.is_none() => m.error_code = Some(error_code(value)?),
            _ => {}
        }
        at = next;
    }
    m.mapped = xor_mapped.or(plain_mapped);
    Ok(m)
}

/// Decodes a Binding Success or Error Response.
pub fn decode_response(b: &[u8]) -> Result<Response, StunError> {
    let m = decode(b)?;
    let outcome = match m.msg_type {
        BINDING_SUCCESS => Outcome::Mapped(m.mapped.ok_or(StunError::Missing)?),
        BINDING_ERROR => Outcome::Error(m.error_code.ok_or(StunError::Missing)?),
        t => return Err(StunError::NotResponse(t)),
    };
    Ok(Response { txid: m.txid, outcome })
}

/// (XOR-)MAPPED-ADDRESS: reserved, family, port, address; `key` is all zeros for the plain form.
fn address(v: &[u8], key: &[u8; 16], attr: u16) -> Result<SocketAddr, StunError> {
    match *v {
        [_, 0x01, p0, p1, a0, a1, a2, a3] => {
            let port = u16::from_be_bytes([p0 ^ key[0], p1 ^ key[1]]);
            let ip = Ipv4Addr::new(a0 ^ key[0], a1 ^ key[1], a2 ^ key[2], a3 ^ key[3]);
            Ok(SocketAddr::new(ip.into(), port))
        }
        [_, 0x02, p0, p1, ref a @ ..] if a.len() == 16 => {
            let port = u16::from_be_bytes([p0 ^ key[0], p1 ^ key[1]]);
            let mut ip = [0u8; 16];
            for ((o, x), k) in ip.iter_mut().zip(a).zip(key) {
                *o = x ^ k;
            }
            Ok(SocketAddr::new(Ipv6Addr::from(ip).into(), port))
        }
        _ => Err(StunError::Value(attr)),
    }
}

/// ERROR-CODE: 21 reserved bits, class (3..=6), number (0..=99), reason phrase (not read).
fn error_code(v: &[u8]) -> Result<u16, StunError> {
    match *v {
        [_, _, class, number, ..] if (3..=6).contains(&(class & 7)) && number < 100 => {
            Ok(u16::from(class & 7) * 100 + u16::from(number))
        }
        _ => Err(StunError::Value(ERROR_CODE)),
    }
}

/// CRC-32 (IEEE 802.3, reflected), as FINGERPRINT uses; the table is built at compile time.
fn crc32(bytes: &[u8]) -> u32 {
    const TABLE: [u32; 256] = {
        let mut t = [0u32; 256];
        let mut i = 0;
        while i < 256 {
            let mut c = i as u32;
            let mut k = 0;
            while k < 8 {
                c = if c & 1 == 1 { 0xEDB8_8320 ^ (c >> 1) } else { c >> 1 };
                k += 1;
            }
            t[i] = c;
            i += 1;
        }
        t
    };
    !bytes.iter().fold(!0u32, |c, &b| TABLE[usize::from((c as u8) ^ b)] ^ (c >> 8))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::util::rng::Rng;

    const RFC_TXID: TxId = [0xb7, 0xe7, 0xa7, 0x01, 0xbc, 0x34, 0xd6, 0x86, 0xfa, 0x87, 0xdf, 0xae];

    /// RFC 5769 2.1: a request with SOFTWARE, PRIORITY, ICE-CONTROLLED, USERNAME, MESSAGE-INTEGRITY
    /// and FINGERPRINT.
    #[rustfmt::skip]
    const RFC_REQUEST: [u8; 108] = [
        0x00, 0x01, 0x00, 0x58, 0x21, 0x12, 0xa4, 0x42,
        0xb7, 0xe7, 0xa7, 0x01, 0xbc, 0x34, 0xd6, 0x86, 0xfa, 0x87, 0xdf, 0xae,
        0x80, 0x22, 0x00, 0x10, 0x53, 0x54, 0x55, 0x4e, 0x20, 0x74, 0x65, 0x73,
        0x74, 0x20, 0x63, 0x6c, 0x69, 0x65, 0x6e, 0x74,
        0x00, 0x24, 0x00, 0x04, 0x6e, 0x00, 0x01, 0xff,
        0x80, 0x29, 0x00, 0x08, 0x93, 0x2f, 0xf9, 0xb1, 0x51, 0x26, 0x3b, 0x36,
        0x00, 0x06, 0x00, 0x09, 0x65, 0x76, 0x74, 0x6a, 0x3a, 0x68, 0x36, 0x76, 0x59, 0x20, 0x20, 0x20,
        0x00, 0x08, 0x00, 0x14, 0x9a, 0xea, 0xa7, 0x0c, 0xbf, 0xd8, 0xcb, 0x56, 0x78, 0x1e, 0xf2, 0xb5,
        0xb2, 0xd3, 0xf2, 0x49, 0xc1, 0xb5, 0x71, 0xa2,
        0x80, 0x28, 0x00, 0x04, 0xe5, 0x7a, 0x3b, 0xcf,
    ];

    /// RFC 5769 2.2: an IPv4 success response (SOFTWARE, XOR-MAPPED-ADDRESS, MESSAGE-INTEGRITY,
    /// FINGERPRINT).
    #[rustfmt::skip]
    const RFC_IPV4: [u8; 80] = [
        0x01, 0x01, 0x00, 0x3c, 0x21, 0x12, 0xa4, 0x42,
        0xb7, 0xe7, 0xa7, 0x01, 0xbc, 0x34, 0xd6, 0x86, 0xfa, 0x87, 0xdf, 0xae,
        0x80, 0x22, 0x00, 0x0b, 0x74, 0x65, 0x73, 0x74, 0x20, 0x76, 0x65, 0x63, 0x74, 0x6f, 0x72, 0x20,
        0x00, 0x20, 0x00, 0x08, 0x00, 0x01, 0xa1, 0x47, 0xe1, 0x12, 0xa6, 0x43,
        0x00, 0x08, 0x00, 0x14, 0x2b, 0x91, 0xf5, 0x99, 0xfd, 0x9e, 0x90, 0xc3, 0x8c, 0x74, 0x89, 0xf9,
        0x2a, 0xf9, 0xba, 0x53, 0xf0, 0x6b, 0xe7, 0xd7,
        0x80, 0x28, 0x00, 0x04, 0xc0, 0x7d, 0x4c, 0x96,
    ];

    /// RFC 5769 2.3: the same with an IPv6 XOR-MAPPED-ADDRESS.
    #[rustfmt::skip]
    const RFC_IPV6: [u8; 92] = [
        0x01, 0x01, 0x00, 0x48, 0x21, 0x12, 0xa4, 0x42,
        0xb7, 0xe7, 0xa7, 0x01, 0xbc, 0x34, 0xd6, 0x86, 0xfa, 0x87, 0xdf, 0xae,
        0x80, 0x22, 0x00, 0x0b, 0x74, 0x65, 0x73, 0x74, 0x20, 0x76, 0x65, 0x63, 0x74, 0x6f, 0x72, 0x20,
        0x00, 0x20, 0x00, 0x14, 0x00, 0x02, 0xa1, 0x47, 0x01, 0x13, 0xa9, 0xfa, 0xa5, 0xd3, 0xf1, 0x79,
        0xbc, 0x25, 0xf4, 0xb5, 0xbe, 0xd2, 0xb9, 0xd9,
        0x00, 0x08, 0x00, 0x14, 0xa3, 0x82, 0x95, 0x4e, 0x4b, 0xe6, 0x7b, 0xf1, 0x17, 0x84, 0xc9, 0x7c,
        0x82, 0x92, 0xc2, 0x75, 0xbf, 0xe3, 0xed, 0x41,
        0x80, 0x28, 0x00, 0x04, 0xc8, 0xfb, 0x0b, 0x4c,
    ];

    fn sa(s: &str) -> SocketAddr {
        s.parse().unwrap()
    }

    /// A response built by hand: header (length filled in) and attributes, unpadded values padded.
    fn response(ty: u16, txid: &TxId, attrs: &[(u16, &[u8])]) -> Vec<u8> {
        let mut b = ty.to_be_bytes().to_vec();
        b.extend([0, 0]);
        b.extend(MAGIC_COOKIE.to_be_bytes());
        b.extend(txid);
        for (t, v) in attrs {
            b.extend(t.to_be_bytes());
            b.extend((v.len() as u16).to_be_bytes());
            b.extend(*v);
            b.resize(b.len().next_multiple_of(4), 0);
        }
        let len = (b.len() - HEADER_LEN) as u16;
        b[2..4].copy_from_slice(&len.to_be_bytes());
        b
    }

    #[test]
    fn crc32_check_value() {
        assert_eq!(crc32(b"123456789"), 0xCBF4_3926);
        assert_eq!(crc32(b""), 0);
    }

    #[test]
    fn rfc5769_ipv4_response() {
        assert!(is_stun(&RFC_IPV4));
        let m = decode(&RFC_IPV4).unwrap();
        assert!(m.fingerprint, "the vector's FINGERPRINT verifies");
        let r = decode_response(&RFC_IPV4).unwrap();
        assert_eq!(r, Response { txid: RFC_TXID, outcome: Outcome::Mapped(sa("192.0.2.1:32853")) });
    }

    #[test]
    fn rfc5769_ipv6_response() {
        assert!(is_stun(&RFC_IPV6));
        assert!(decode(&RFC_IPV6).unwrap().fingerprint);
        let r = decode_response(&RFC_IPV6).unwrap();
        let want = sa("[2001:db8:1234:5678:11:2233:4455:6677]:32853");
        assert_eq!(r, Response { txid: RFC_TXID, outcome: Outcome::Mapped(want) });
    }

    #[test]
    fn rfc5769_request_decodes_but_is_no_response() {
        let m = decode(&RFC_REQUEST).unwrap();
        assert_eq!((m.msg_type, m.txid, m.fingerprint, m.mapped), (BINDING_REQUEST, RFC_TXID, true, None));
        assert_eq!(decode_response(&RFC_REQUEST), Err(StunError::NotResponse(BINDING_REQUEST)));
    }

    #[test]
    fn own_request_round_trips() {
        let txid = [7u8, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11];
        let mut buf = [0u8; 64];
        let n = encode_binding_request(&txid, &mut buf).unwrap();
        assert_eq!(n, REQUEST_LEN);
        assert!(is_stun(&buf[..n]));
        let m = decode(&buf[..n]).unwrap();
        assert_eq!(m, Message { msg_type: BINDING_REQUEST, txid, mapped: None, error_code: None, fingerprint: true });
        assert_eq!(encode_binding_request(&txid, &mut buf[..REQUEST_LEN - 1]), Err(StunError::Buffer));
    }

    #[test]
    fn error_response_and_plain_mapped_address() {
        let txid = [3u8; 12];
        let e = response(BINDING_ERROR, &txid, &[(ERROR_CODE, &[0, 0, 4, 20, b'n', b'o'])]);
        assert_eq!(decode_response(&e), Ok(Response { txid, outcome: Outcome::Error(420) }));
        let bad_class = response(BINDING_ERROR, &txid, &[(ERROR_CODE, &[0, 0, 7, 0])]);
        assert_eq!(decode_response(&bad_class), Err(StunError::Value(ERROR_CODE)));
        assert_eq!(decode_response(&response(BINDING_ERROR, &txid, &[])), Err(StunError::Missing));
        // An old server's MAPPED-ADDRESS (not XORed), used only when XOR-MAPPED-ADDRESS is absent.
        let plain: &[u8] = &[0, 1, 0x1f, 0x90, 10, 0, 0, 1];
        let r = decode_response(&response(BINDING_SUCCESS, &txid, &[(MAPPED_ADDRESS, plain)])).unwrap();
        assert_eq!(r.outcome, Outcome::Mapped(sa("10.0.0.1:8080")));
        let both = response(BINDING_SUCCESS, &RFC_TXID, &[(MAPPED_ADDRESS, plain), (0x0020, &RFC_IPV4[40..48])]);
        assert_eq!(decode_response(&both).unwrap().outcome, Outcome::Mapped(sa("192.0.2.1:32853")));
        assert_eq!(decode_response(&response(BINDING_SUCCESS, &txid, &[])), Err(StunError::Missing));
    }

    #[test]
    fn malformed_messages_are_errors() {
        let good = RFC_IPV4;
        // Wrong cookie, length not a multiple of 4, length disagreeing with the datagram, top bits.
        let mut b = good;
        b[4] ^= 1;
        assert_eq!(decode(&b), Err(StunError::NotStun));
        let mut b = good.to_vec();
        b.extend([0, 0]);
        b[3] += 2;
        assert!(!is_stun(&b));
        let mut b = good.to_vec();
        b.extend([0; 4]);
        assert!(!is_stun(&b), "trailing bytes beyond the length field");
        let mut b = good;
        b[0] |= 0x80;
        assert!(!is_stun(&b));
        // An attribute running past the end.
        let mut b = good;
        b[38..40].copy_from_slice(&200u16.to_be_bytes());
        assert_eq!(decode(&b), Err(StunError::Overrun));
        // The last attribute claiming one byte more than the message holds.
        let b = response(BINDING_SUCCESS, &[0; 12], &[(0x8022, &[1, 2, 3])]);
        let mut c = b.clone();
        c[22..24].copy_from_slice(&5u16.to_be_bytes());
        assert_eq!(decode(&c), Err(StunError::Overrun));
        // A wrong fingerprint, and an attribute after FINGERPRINT.
        let mut b = good;
        b[79] ^= 1;
        assert_eq!(decode(&b), Err(StunError::Fingerprint));
        let mut b = good.to_vec();
        b.extend([0x80, 0x22, 0, 0]);
        b[3] += 4;
        assert_eq!(decode(&b), Err(StunError::Fingerprint));
        // A bad address family and a bad address length.
        let b = response(BINDING_SUCCESS, &[0; 12], &[(XOR_MAPPED_ADDRESS, &[0, 3, 0, 0, 0, 0, 0, 0])]);
        assert_eq!(decode(&b), Err(StunError::Value(XOR_MAPPED_ADDRESS)));
        let b = response(BINDING_SUCCESS, &[0; 12], &[(XOR_MAPPED_ADDRESS, &[0, 1, 0, 0, 0, 0, 0, 0, 0])]);
        assert_eq!(decode(&b), Err(StunError::Value(XOR_MAPPED_ADDRESS)));
        // A peercom HandshakeInit starts 01 01 like a success response, but has no cookie.
        let mut hs = vec![1u8, 1];
        hs.extend([0u8; 130]);
        assert!(!is_stun(&hs));
        assert!(decode_response(&hs).is_err());
    }

    #[test]
    fn unknown_attributes_are_skipped_even_comprehension_required() {
        let txid = [9u8; 12];
        let xma = [0u8, 1, 0x21 ^ 0x1f, 0x12 ^ 0x90, 0x21 ^ 10, 0x12, 0xa4, 0x42 ^ 1];
        let b = response(BINDING_SUCCESS, &txid, &[(0x0003, &[1, 2, 3, 4, 5]), (XOR_MAPPED_ADDRESS, &xma)]);
        assert_eq!(decode_response(&b).unwrap().outcome, Outcome::Mapped(sa("10.0.0.1:8080")));
        // Anything after MESSAGE-INTEGRITY but FINGERPRINT is ignored, even a mapped address.
        let b = response(BINDING_SUCCESS, &txid, &[(MESSAGE_INTEGRITY, &[0; 20]), (XOR_MAPPED_ADDRESS, &xma)]);
        assert_eq!(decode_response(&b), Err(StunError::Missing));
    }

    #[test]
    fn every_truncation_is_an_error() {
        for (v, whole) in [(&RFC_IPV4[..], [48, 72]), (&RFC_IPV6[..], [60, 84])] {
            let mapped = decode_response(v).unwrap().outcome;
            for len in 0..v.len() {
                assert!(decode_response(&v[..len]).is_err(), "length {len}");
                // With the length field made to agree, only a cut between attributes after the
                // address (before or after MESSAGE-INTEGRITY) leaves a valid response.
                if len >= HEADER_LEN {
                    let mut b = v[..len].to_vec();
                    b[2..4].copy_from_slice(&((len - HEADER_LEN) as u16).to_be_bytes());
                    match decode_response(&b) {
                        Ok(r) => assert!(whole.contains(&len) && r.outcome == mapped, "length {len}"),
                        Err(_) => assert!(!whole.contains(&len), "length {len}"),
                    }
                }
            }
        }
    }

    #[test]
    fn random_mutations_never_panic() {
        let mut rng = Rng::seeded(5389);
        let seeds = [&RFC_IPV4[..], &RFC_IPV6[..], &RFC_REQUEST[..]];
        let mut decoded = 0;
        for i in 0..20_000 {
            let mut b = seeds[i % seeds.len()].to_vec();
            for _ in 0..1 + rng.below(4) {
                match rng.below(4) {
                    0 => {
                        let at = rng.below(b.len());
                        b[at] ^= 1 << rng.below(8);
                    }
                    1 => {
                        let at = rng.below(b.len());
                        b[at] = rng.next_u32() as u8;
                    }
                    2 => b.truncate(rng.below(b.len() + 1)),
                    _ => b.extend((0..rng.below(9)).map(|_| rng.next_u32() as u8)),
                }
                if b.is_empty() {
                    break;
                }
            }
            // Half the time keep the header plausible, to reach the attribute walk.
            if i % 2 == 0 && b.len() >= HEADER_LEN && b.len() % 4 == 0 {
                let len = ((b.len() - HEADER_LEN) as u16).to_be_bytes();
                b[2..4].copy_from_slice(&len);
                b[4..8].copy_from_slice(&MAGIC_COOKIE.to_be_bytes());
            }
            let _ = is_stun(&b);
            decoded += usize::from(decode(&b).is_ok());
            let _ = decode_response(&b);
        }
        assert!(decoded > 100, "the attribute walk was reached ({decoded})");
    }
}
