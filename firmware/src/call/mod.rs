//! The call state machine: idle → dialing → ringing / incoming → in-call → ended. Sans-IO: it
//! speaks in terms of peers (device IDs) and signalling messages; the device core routes them.
mod machine;
mod outcome;

pub use machine::{CallEvent, CallInput, CallMachine, CallOutput, CommandError, KeepaliveStats, MAX_TARGETS, Phase};
pub use outcome::Outcome;
