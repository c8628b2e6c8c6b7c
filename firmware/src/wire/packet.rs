//! Outer packet framing. Fixed binary headers (not postcard) because the data header is the
//! AEAD's associated data and its counter must be read before decryption.
//!
//! ```text
//! HandshakeInit: type=1 | ver | sender_idx u32le | noise IK message 1 | mac1 16 | mac2 16
//! HandshakeResp: type=2 | ver | sender_idx u32le | receiver_idx u32le | noise IK message 2
//! Data:          type=3 | ver | receiver_idx u32le | epoch u8 | counter u64le | ciphertext + tag
//! CookieReply:   type=6 | ver | receiver_idx u32le | nonce 24 | sealed cookie 16 + tag 16
//! ```
//! (Types 4 and 5 are the DHT's and LAN discovery's.)
pub const VERSION: u8 = 1;
pub const MAX_DATAGRAM: usize = 1200;
pub const DATA_HEADER_LEN: usize = 15;
/// IK message 1 with the 32-byte Ed25519 key as payload: e(32) + s(32+16) + payload(32+16).
pub const INIT_NOISE_LEN: usize = 32 + 48 + 32 + 16;
/// The whole message 1 datagram: header, Noise message, mac1 and mac2 (session/cookie.rs).
pub const INIT_LEN: usize = 6 + INIT_NOISE_LEN + 32;
/// IK message 2 with an empty payload: e(32) + tag(16).
pub const RESP_NOISE_LEN: usize = 32 + 16;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum PacketType {
    HandshakeInit = 1,
    HandshakeResp = 2,
    Data = 3,
    CookieReply = 6,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DecodeError {
    Empty,
    UnknownType(u8),
    Version(u8),
    Length,
}

/// A decoded packet, borrowing its variable part from the datagram.
#[derive(Debug, PartialEq, Eq)]
pub enum Packet<'a> {
    /// `macs` is mac1 then mac2 (checked against the whole datagram, session/cookie.rs).
    HandshakeInit {
        sender: u32,
        noise: &'a [u8],
        macs: &'a [u8],
    },
    HandshakeResp {
        sender: u32,
        receiver: u32,
        noise: &'a [u8],
    },
    Data {
        receiver: u32,
        epoch: u8,
        counter: u64,
        header: &'a [u8],
        ciphertext: &'a [u8],
    },
    CookieReply {
        receiver: u32,
        nonce: &'a [u8],
        sealed: &'a [u8],
    },
}

fn u32_at(b: &[u8], at: usize) -> Result<u32, DecodeError> {
    let s = b.get(at..at + 4).ok_or(DecodeError::Length)?;
    Ok(u32::from_le_bytes([s[0], s[1], s[2], s[3]]))
}

fn u64_at(b: &[u8], at: usize) -> Result<u64, DecodeError> {
    let s = b.get(at..at + 8).ok_or(DecodeError::Length)?;
    let mut a = [0u8; 8];
    a.copy_from_slice(s);
    Ok(u64::from_le_bytes(a))
}

impl<'a> Packet<'a> {
    pub fn decode(b: &'a [u8]) -> Result<Packet<'a>, DecodeError> {
        if b.len() > MAX_DATAGRAM {
            return Err(DecodeError::Length);
        }
        let ty = *b.first().ok_or(DecodeError::Empty)?;
        let ver = *b.get(1).ok_or(DecodeError::Length)?;
        if !matches!(ty, 1..=3 | 6) {
            return Err(DecodeError::UnknownType(ty));
        }
        if ver != VERSION {
            return Err(DecodeError::Version(ver));
        }
        match ty {
            1 => {
                if b.len() != INIT_LEN {
                    return Err(DecodeError::Length);
                }
                let (noise, macs) = b[6..].split_at(INIT_NOISE_LEN);
                Ok(Packet::HandshakeInit { sender: u32_at(b, 2)?, noise, macs })
            }
            6 => {
                if b.len() != crate::session::cookie::COOKIE_REPLY_LEN {
                    return Err(DecodeError::Length);
                }
                Ok(Packet::CookieReply { receiver: u32_at(b, 2)?, nonce: &b[6..30], sealed: &b[30..] })
            }
            2 => {
                let noise = b.get(10..).ok_or(DecodeError::Length)?;
                if noise.len() != RESP_NOISE_LEN {
                    return Err(DecodeError::Length);
                }
                Ok(Packet::HandshakeResp { sender: u32_at(b, 2)?, receiver: u32_at(b, 6)?, noise })
            }
            _ => {
                let ciphertext = b.get(DATA_HEADER_LEN..).ok_or(DecodeError::Length)?;
                if ciphertext.len() < 16 {
                    return Err(DecodeError::Length);
                }
                Ok(Packet::Data {
                    receiver: u32_at(b, 2)?,
                    epoch: b[6],
                    counter: u64_at(b, 7)?,
                    header: &b[..DATA_HEADER_LEN],
                    ciphertext,
                })
            }
        }
    }

    /// Writes the init header into `out`; returns the offset where the Noise message goes.
    pub fn write_init_header(out: &mut [u8], sender: u32) -> usize {
        out[0] = PacketType::HandshakeInit as u8;
        out[1] = VERSION;
        out[2..6].copy_from_slice(&sender.to_le_bytes());
        6
    }

    pub fn write_cookie_header(out: &mut [u8], receiver: u32) -> usize {
        out[0] = PacketType::CookieReply as u8;
        out[1] = VERSION;
        out[2..6].copy_from_slice(&receiver.to_le_bytes());
        6
    }

    pub fn write_resp_header(out: &mut [u8], sender: u32, receiver: u32) -> usize {
        out[0] = PacketType::HandshakeResp as u8;
        out[1] = VERSION;
        out[2..6].copy_from_slice(&sender.to_le_bytes());
        out[6..10].copy_from_slice(&receiver.to_le_bytes());
        10
    }

    pub fn write_data_header(out: &mut [u8], receiver: u32, epoch: u8, counter: u64) -> usize {
        out[0] = PacketType::Data as u8;
        out[1] = VERSION;
        out[2..6].copy_from_slice(&receiver.to_le_bytes());
        out[6] = epoch;
        out[7..15].copy_from_slice(&counter.to_le_bytes());
        DATA_HEADER_LEN
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn data_round_trip() {
        let mut b = [0u8; 40];
        let n = Packet::write_data_header(&mut b, 0xdead_beef, 3, 42);
        assert_eq!(n, DATA_HEADER_LEN);
        match Packet::decode(&b).unwrap() {
            Packet::Data { receiver, epoch, counter, ciphertext, .. } => {
                assert_eq!((receiver, epoch, counter, ciphertext.len()), (0xdead_beef, 3, 42, 25));
            }
            p => panic!("{p:?}"),
        }
    }

    #[test]
    fn malformed_is_error_for_every_prefix() {
        let mut b = [0u8; INIT_LEN];
        Packet::write_init_header(&mut b, 7);
        assert!(Packet::decode(&b).is_ok());
        for n in 0..b.len() {
            assert!(Packet::decode(&b[..n]).is_err());
        }
        let mut c = [0u8; crate::session::cookie::COOKIE_REPLY_LEN];
        Packet::write_cookie_header(&mut c, 7);
        assert!(matches!(Packet::decode(&c), Ok(Packet::CookieReply { receiver: 7, .. })));
        for n in 0..c.len() {
            assert!(Packet::decode(&c[..n]).is_err());
        }
        assert_eq!(Packet::decode(&[9, 1]), Err(DecodeError::UnknownType(9)));
        assert_eq!(Packet::decode(&[3, 2, 0]), Err(DecodeError::Version(2)));
        assert_eq!(Packet::decode(&[0u8; 1300]), Err(DecodeError::Length));
    }
}
