//! Signalling messages carried inside encrypted data packets: the plaintext's first byte is
//! `PlainKind::Signal`, then the postcard-encoded message. Call signalling is idempotent (each
//! message may be repeated) so retransmission needs no extra state.
use serde::{Deserialize, Serialize};

pub type CallId = u64;

/// The first byte of every decrypted plaintext: what follows it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum PlainKind {
    Signal = 0,
    Video = 1,
    Audio = 2,
    Feedback = 3,
}

impl PlainKind {
    pub fn of(plain: &[u8]) -> Option<PlainKind> {
        match plain.first()? {
            0 => Some(PlainKind::Signal),
            1 => Some(PlainKind::Video),
            2 => Some(PlainKind::Audio),
            3 => Some(PlainKind::Feedback),
            _ => None,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum EndReason {
    Hangup,
    Rejected,
    Busy,
    NoAnswer,
    AnsweredElsewhere,
    Cancelled,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Message {
    /// Session keepalive; carries nothing.
    Keepalive,
    Invite {
        call: CallId,
    },
    Ringing {
        call: CallId,
    },
    Accept {
        call: CallId,
    },
    /// Sent while a call is up; also confirms an `Accept` whose delivery was lost.
    InCall {
        call: CallId,
    },
    /// Ends a call (or refuses one) for the given reason.
    End {
        call: CallId,
        reason: EndReason,
    },
    /// What our NAT does (`nat::NatClass`: 0 unknown, 1 open, 2 consistent mapping, 3 random
    /// mapping) and a public address of ours; `ack`: we have the peer's. Sent once a call is up,
    /// so that the two sides can tell whether a birthday punch could find them a direct path.
    /// `mapped`: the port our router forwards to us, if that is not also where our NAT maps our
    /// traffic (the peer then ranks a path there below a direct one: `session::PathClass`).
    Nat {
        class: u8,
        addr: Option<std::net::SocketAddr>,
        ack: bool,
        mapped: Option<std::net::SocketAddr>,
    },
    /// From the side whose NAT maps at random: it opened its extra sockets for birthday punch
    /// `punch`; the other side sprays its probes now.
    Birthday {
        punch: u32,
    },
}

impl Message {
    /// Writes the kind byte and the message; None if `out` is too small.
    pub fn encode(&self, out: &mut [u8]) -> Option<usize> {
        let (kind, body) = out.split_first_mut()?;
        *kind = PlainKind::Signal as u8;
        postcard::to_slice(self, body).ok().map(|s| s.len() + 1)
    }

    pub fn decode(b: &[u8]) -> Option<Message> {
        let (&kind, body) = b.split_first()?;
        if kind != PlainKind::Signal as u8 {
            return None;
        }
        match postcard::take_from_bytes::<Message>(body) {
            Ok((m, [])) => Some(m),
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    #[test]
    fn round_trip_and_garbage() {
        let mut b = [0u8; 64];
        let v6 = "[2001:db8::1]:65535".parse().ok();
        for m in [
            Message::Keepalive,
            Message::Invite { call: u64::MAX },
            Message::End { call: 5, reason: EndReason::Busy },
            Message::Nat { class: 3, addr: v6, ack: true, mapped: v6 },
            Message::Nat { class: 0, addr: None, ack: false, mapped: None },
            Message::Birthday { punch: u32::MAX },
        ] {
            let n = m.encode(&mut b).unwrap();
            assert_eq!(Message::decode(&b[..n]), Some(m));
            assert!(n <= 48, "{m:?} takes {n} bytes");
            assert_eq!(Message::decode(&b[..n.saturating_sub(1)]).filter(|_| n > 1), None);
        }
        assert_eq!(Message::decode(&[0, 200, 1, 2]), None);
        assert_eq!(Message::decode(&[1, 0]), None, "a media kind is not a message");
        assert_eq!(Message::decode(&[]), None);
    }
}
