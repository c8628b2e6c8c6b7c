//! Messages carried inside encrypted data packets, postcard-encoded. Call signalling is
//! idempotent (each message may be repeated) so retransmission needs no extra state.
use serde::{Deserialize, Serialize};

pub type CallId = u64;

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
}

impl Message {
    pub fn encode(&self, out: &mut [u8]) -> Option<usize> {
        postcard::to_slice(self, out).ok().map(|s| s.len())
    }

    pub fn decode(b: &[u8]) -> Option<Message> {
        match postcard::take_from_bytes::<Message>(b) {
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
        let mut b = [0u8; 32];
        for m in
            [Message::Keepalive, Message::Invite { call: u64::MAX }, Message::End { call: 5, reason: EndReason::Busy }]
        {
            let n = m.encode(&mut b).unwrap();
            assert_eq!(Message::decode(&b[..n]), Some(m));
            assert_eq!(Message::decode(&b[..n.saturating_sub(1)]).filter(|_| n > 1), None);
        }
        assert_eq!(Message::decode(&[200, 1, 2]), None);
        assert_eq!(Message::decode(&[]), None);
    }
}
