//! Why a call ended, from this device's point of view.
use crate::wire::EndReason;
use serde::Serialize;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Outcome {
    /// We hung up an established call.
    LocalHangup,
    /// The other side hung up an established call.
    RemoteHangup,
    /// We cancelled our call before it was answered.
    Cancelled,
    /// The callee declined (or, for an incoming call, we declined).
    Rejected,
    /// Every reachable device of the callee was already in a call.
    Busy,
    /// Nobody answered within the no-answer timeout.
    NoAnswer,
    /// No device of the contact could be reached.
    Unreachable,
    /// The peer stopped sending during the call.
    PeerVanished,
    /// An incoming call was answered by another device the caller also rang.
    AnsweredElsewhere,
    /// An incoming call ended before we answered it.
    Missed,
}

impl Outcome {
    pub fn as_str(&self) -> &'static str {
        match self {
            Outcome::LocalHangup => "local-hangup",
            Outcome::RemoteHangup => "remote-hangup",
            Outcome::Cancelled => "cancelled",
            Outcome::Rejected => "rejected",
            Outcome::Busy => "busy",
            Outcome::NoAnswer => "no-answer",
            Outcome::Unreachable => "unreachable",
            Outcome::PeerVanished => "peer-vanished",
            Outcome::AnsweredElsewhere => "answered-elsewhere",
            Outcome::Missed => "missed",
        }
    }

    /// For the screen: short, plain words.
    pub fn describe(&self) -> &'static str {
        match self {
            Outcome::LocalHangup => "You hung up",
            Outcome::RemoteHangup => "They hung up",
            Outcome::Cancelled => "Cancelled",
            Outcome::Rejected => "Declined",
            Outcome::Busy => "Busy",
            Outcome::NoAnswer => "No answer",
            Outcome::Unreachable => "Could not reach them",
            Outcome::PeerVanished => "Connection lost",
            Outcome::AnsweredElsewhere => "Answered on another device",
            Outcome::Missed => "Missed call",
        }
    }

    /// What an incoming call's end means to the callee, given the caller's reason.
    pub fn for_callee(reason: EndReason) -> Outcome {
        match reason {
            EndReason::AnsweredElsewhere => Outcome::AnsweredElsewhere,
            _ => Outcome::Missed,
        }
    }
}
