//! Call signalling is idempotent and retransmitted by state: the caller repeats `Invite` while
//! dialing, the callee answers each with its current state (`Ringing`, `Accept` or `End`), and
//! both sides send `InCall` while connected. A lost message is therefore repaired by the next
//! repetition, and a message about a call the receiver does not have is answered with `End`.
use super::Outcome;
use crate::config::CallSettings;
use crate::identity::DeviceId;
use crate::util::rng::Rng;
use crate::wire::{CallId, EndReason, Message};
use std::collections::VecDeque;
use std::time::{Duration, Instant};

/// Most devices one contact may have (and so the most we ring at once).
pub const MAX_TARGETS: usize = 8;
const INVITE_INTERVAL: Duration = Duration::from_millis(500);

#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Phase {
    Idle,
    Dialing,
    Ringing,
    Incoming,
    InCall,
}

impl Phase {
    pub fn as_str(&self) -> &'static str {
        match self {
            Phase::Idle => "idle",
            Phase::Dialing => "dialing",
            Phase::Ringing => "ringing",
            Phase::Incoming => "incoming",
            Phase::InCall => "in-call",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CallInput<'a> {
    Dial { contact: usize, devices: &'a [DeviceId] },
    Answer,
    Reject,
    Hangup,
    SessionUp(DeviceId),
    SessionFailed(DeviceId),
    SessionClosed(DeviceId),
    Message { from: DeviceId, contact: usize, msg: Message },
    Timeout,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CallEvent {
    Dialing { contact: usize },
    Ringing { contact: usize },
    Incoming { contact: usize, peer: DeviceId },
    Connected { contact: usize, peer: DeviceId },
    Ended { contact: usize, peer: Option<DeviceId>, outcome: Outcome },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CallOutput {
    /// Open (or reuse) a session to this device.
    Connect(DeviceId),
    Send(DeviceId, Message),
    Event(CallEvent),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CommandError {
    Busy,
    NoCall,
    NoDevices,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum TargetStatus {
    Connecting,
    Invited,
    Ringing { last_heard: Instant },
    Refused(EndReason),
    Unreachable,
}

#[derive(Debug, Clone, Copy)]
struct Target {
    id: DeviceId,
    status: TargetStatus,
}

impl Target {
    fn live(&self) -> bool {
        matches!(self.status, TargetStatus::Connecting | TargetStatus::Invited | TargetStatus::Ringing { .. })
    }
    fn invited(&self) -> bool {
        matches!(self.status, TargetStatus::Invited | TargetStatus::Ringing { .. })
    }
}

// One instance per device; boxing the large variant would allocate on every call.
#[allow(clippy::large_enum_variant)]
#[derive(Debug)]
enum State {
    Idle,
    Outgoing {
        call: CallId,
        contact: usize,
        targets: [Option<Target>; MAX_TARGETS],
        started: Instant,
        next_invite: Instant,
    },
    Incoming {
        call: CallId,
        contact: usize,
        peer: DeviceId,
        started: Instant,
        last_heard: Instant,
    },
    InCall {
        call: CallId,
        contact: usize,
        peer: DeviceId,
        last_heard: Instant,
        next_keepalive: Instant,
    },
}

pub struct CallMachine {
    cfg: CallSettings,
    state: State,
    rng: Rng,
    out: VecDeque<CallOutput>,
    stats: KeepaliveStats,
}

/// In-call keepalives sent, and how far behind schedule the latest-sent one was: a loop that
/// is kept from its timers (a flood, a busy CPU) shows here before the peer gives up on us.
#[derive(Debug, Clone, Copy, Default, serde::Serialize, PartialEq, Eq)]
pub struct KeepaliveStats {
    pub keepalives_sent: u64,
    pub keepalive_late_max_us: u64,
}

impl CallMachine {
    pub fn new(cfg: CallSettings, rng: Rng) -> Self {
        CallMachine {
            cfg,
            state: State::Idle,
            rng,
            out: VecDeque::with_capacity(4 * MAX_TARGETS + 8),
            stats: KeepaliveStats::default(),
        }
    }

    pub fn keepalive_stats(&self) -> KeepaliveStats {
        self.stats
    }

    pub fn phase(&self) -> Phase {
        match &self.state {
            State::Idle => Phase::Idle,
            State::Outgoing { targets, .. } => {
                if targets.iter().flatten().any(|t| matches!(t.status, TargetStatus::Ringing { .. })) {
                    Phase::Ringing
                } else {
                    Phase::Dialing
                }
            }
            State::Incoming { .. } => Phase::Incoming,
            State::InCall { .. } => Phase::InCall,
        }
    }

    /// The contact involved in the current call, and the peer device once it is known.
    pub fn party(&self) -> Option<(usize, Option<DeviceId>)> {
        match &self.state {
            State::Idle => None,
            State::Outgoing { contact, .. } => Some((*contact, None)),
            State::Incoming { contact, peer, .. } | State::InCall { contact, peer, .. } => {
                Some((*contact, Some(*peer)))
            }
        }
    }

    fn keepalive_interval(&self) -> Duration {
        (self.cfg.peer_timeout / 4).clamp(Duration::from_millis(250), Duration::from_secs(1))
    }

    pub fn handle(&mut self, now: Instant, input: CallInput<'_>) -> Result<(), CommandError> {
        match input {
            CallInput::Dial { contact, devices } => self.dial(now, contact, devices),
            CallInput::Answer => self.answer(now),
            CallInput::Reject => match self.state {
                State::Incoming { .. } => {
                    self.end_incoming(EndReason::Rejected, Outcome::Rejected);
                    Ok(())
                }
                _ => Err(CommandError::NoCall),
            },
            CallInput::Hangup => self.hangup(),
            CallInput::SessionUp(peer) => {
                self.on_session_up(now, peer);
                Ok(())
            }
            CallInput::SessionFailed(peer) | CallInput::SessionClosed(peer) => {
                self.on_session_lost(peer);
                Ok(())
            }
            CallInput::Message { from, contact, msg } => {
                self.on_message(now, from, contact, msg);
                Ok(())
            }
            CallInput::Timeout => {
                self.on_timeout(now);
                Ok(())
            }
        }
    }

    pub fn poll_output(&mut self) -> Option<CallOutput> {
        self.out.pop_front()
    }

    pub fn poll_timeout(&self) -> Option<Instant> {
        match &self.state {
            State::Idle => None,
            State::Outgoing { targets, started, next_invite, .. } => {
                let mut t = (*started + self.cfg.no_answer_timeout).min(*next_invite);
                for tg in targets.iter().flatten() {
                    if let TargetStatus::Ringing { last_heard } = tg.status {
                        t = t.min(last_heard + self.cfg.peer_timeout);
                    }
                }
                Some(t)
            }
            State::Incoming { started, last_heard, .. } => Some(
                (*last_heard + self.cfg.peer_timeout)
                    .min(*started + self.cfg.no_answer_timeout + self.cfg.peer_timeout),
            ),
            State::InCall { last_heard, next_keepalive, .. } => {
                Some((*last_heard + self.cfg.peer_timeout).min(*next_keepalive))
            }
        }
    }

    // ---- commands ----

    fn dial(&mut self, now: Instant, contact: usize, devices: &[DeviceId]) -> Result<(), CommandError> {
        if !matches!(self.state, State::Idle) {
            return Err(CommandError::Busy);
        }
        if devices.is_empty() {
            return Err(CommandError::NoDevices);
        }
        let call = self.rng.next_u64();
        let mut targets = [None; MAX_TARGETS];
        for (slot, id) in targets.iter_mut().zip(devices) {
            *slot = Some(Target { id: *id, status: TargetStatus::Connecting });
            self.out.push_back(CallOutput::Connect(*id));
        }
        self.state = State::Outgoing { call, contact, targets, started: now, next_invite: now + INVITE_INTERVAL };
        self.event(CallEvent::Dialing { contact });
        Ok(())
    }

    fn answer(&mut self, now: Instant) -> Result<(), CommandError> {
        let State::Incoming { call, contact, peer, .. } = self.state else {
            return Err(CommandError::NoCall);
        };
        self.send(peer, Message::Accept { call });
        self.state =
            State::InCall { call, contact, peer, last_heard: now, next_keepalive: now + self.keepalive_interval() };
        self.event(CallEvent::Connected { contact, peer });
        Ok(())
    }

    fn hangup(&mut self) -> Result<(), CommandError> {
        match self.state {
            State::Outgoing { .. } => {
                self.end_outgoing(EndReason::Cancelled, Outcome::Cancelled, None);
                Ok(())
            }
            State::Incoming { .. } => {
                self.end_incoming(EndReason::Rejected, Outcome::Rejected);
                Ok(())
            }
            State::InCall { call, contact, peer, .. } => {
                self.send(peer, Message::End { call, reason: EndReason::Hangup });
                self.finish(contact, Some(peer), Outcome::LocalHangup);
                Ok(())
            }
            State::Idle => Err(CommandError::NoCall),
        }
    }

    // ---- network inputs ----

    fn on_session_up(&mut self, _now: Instant, peer: DeviceId) {
        let mut invite = None;
        if let State::Outgoing { call, targets, .. } = &mut self.state {
            for t in targets.iter_mut().flatten() {
                if t.id == peer && t.status == TargetStatus::Connecting {
                    t.status = TargetStatus::Invited;
                    invite = Some(*call);
                }
            }
        }
        if let Some(call) = invite {
            self.send(peer, Message::Invite { call });
        }
    }

    fn on_session_lost(&mut self, peer: DeviceId) {
        match &mut self.state {
            State::Outgoing { targets, .. } => {
                for t in targets.iter_mut().flatten() {
                    if t.id == peer && t.live() {
                        t.status = TargetStatus::Unreachable;
                    }
                }
                self.check_all_refused();
            }
            State::Incoming { peer: p, contact, .. } if *p == peer => {
                let contact = *contact;
                self.finish(contact, Some(peer), Outcome::Missed);
            }
            State::InCall { peer: p, contact, .. } if *p == peer => {
                let contact = *contact;
                self.finish(contact, Some(peer), Outcome::PeerVanished);
            }
            _ => {}
        }
    }

    fn on_message(&mut self, now: Instant, from: DeviceId, from_contact: usize, msg: Message) {
        match msg {
            Message::Keepalive => {}
            Message::Invite { call } => self.on_invite(now, from, from_contact, call),
            Message::Ringing { call } => {
                let was = self.phase();
                let mut known = false;
                if let State::Outgoing { call: c, targets, contact, .. } = &mut self.state {
                    if *c == call {
                        for t in targets.iter_mut().flatten() {
                            if t.id == from && t.invited() {
                                t.status = TargetStatus::Ringing { last_heard: now };
                                known = true;
                            }
                        }
                        if known && was == Phase::Dialing {
                            let contact = *contact;
                            self.event(CallEvent::Ringing { contact });
                        }
                    }
                }
                if !known && !self.is_call_with(call, from) {
                    self.send(from, Message::End { call, reason: EndReason::Cancelled });
                }
            }
            Message::Accept { call } | Message::InCall { call } => self.on_accept(now, from, call),
            Message::End { call, reason } => self.on_end(from, call, reason),
            // NAT traversal, handled by the device.
            Message::Nat { .. } | Message::Birthday { .. } => {}
        }
    }

    fn is_call_with(&self, call: CallId, peer: DeviceId) -> bool {
        match &self.state {
            State::Outgoing { call: c, targets, .. } => *c == call && targets.iter().flatten().any(|t| t.id == peer),
            State::Incoming { call: c, peer: p, .. } | State::InCall { call: c, peer: p, .. } => {
                *c == call && *p == peer
            }
            State::Idle => false,
        }
    }

    fn on_invite(&mut self, now: Instant, from: DeviceId, from_contact: usize, call: CallId) {
        match &mut self.state {
            State::Idle => {
                self.state = State::Incoming { call, contact: from_contact, peer: from, started: now, last_heard: now };
                self.send(from, Message::Ringing { call });
                self.event(CallEvent::Incoming { contact: from_contact, peer: from });
            }
            State::Incoming { call: c, peer, last_heard, .. } if *c == call && *peer == from => {
                *last_heard = now;
                self.send(from, Message::Ringing { call });
            }
            State::InCall { call: c, peer, .. } if *c == call && *peer == from => {
                // Our Accept was lost: repeat it.
                self.send(from, Message::Accept { call });
            }
            _ => self.send(from, Message::End { call, reason: EndReason::Busy }),
        }
    }

    fn on_accept(&mut self, now: Instant, from: DeviceId, call: CallId) {
        let keepalive = self.keepalive_interval();
        match &mut self.state {
            State::Outgoing { call: c, targets, contact, .. } if *c == call => {
                let Some(winner) = targets.iter().flatten().find(|t| t.id == from && t.invited()).copied() else {
                    self.send(from, Message::End { call, reason: EndReason::Cancelled });
                    return;
                };
                let contact = *contact;
                let others: [Option<DeviceId>; MAX_TARGETS] =
                    targets.map(|t| t.filter(|t| t.live() && t.id != winner.id).map(|t| t.id));
                self.state =
                    State::InCall { call, contact, peer: from, last_heard: now, next_keepalive: now + keepalive };
                self.send(from, Message::InCall { call });
                for id in others.into_iter().flatten() {
                    self.send(id, Message::End { call, reason: EndReason::AnsweredElsewhere });
                }
                self.event(CallEvent::Connected { contact, peer: from });
            }
            State::InCall { call: c, peer, last_heard, .. } if *c == call && *peer == from => *last_heard = now,
            State::InCall { call: c, .. } if *c == call => {
                // A second device answered too late.
                self.send(from, Message::End { call, reason: EndReason::AnsweredElsewhere });
            }
            _ => self.send(from, Message::End { call, reason: EndReason::Hangup }),
        }
    }

    fn on_end(&mut self, from: DeviceId, call: CallId, reason: EndReason) {
        match &mut self.state {
            State::Outgoing { call: c, targets, .. } if *c == call => {
                for t in targets.iter_mut().flatten() {
                    if t.id == from && t.live() {
                        t.status = TargetStatus::Refused(reason);
                    }
                }
                self.check_all_refused();
            }
            State::Incoming { call: c, peer, contact, .. } if *c == call && *peer == from => {
                let contact = *contact;
                self.finish(contact, Some(from), Outcome::for_callee(reason));
            }
            State::InCall { call: c, peer, contact, .. } if *c == call && *peer == from => {
                let contact = *contact;
                self.finish(contact, Some(from), Outcome::RemoteHangup);
            }
            // An End for a call we do not have needs no answer (and must not get one: no loops).
            _ => {}
        }
    }

    fn on_timeout(&mut self, now: Instant) {
        let peer_timeout = self.cfg.peer_timeout;
        let keepalive = self.keepalive_interval();
        match &mut self.state {
            State::Idle => {}
            State::Outgoing { call, started, next_invite, targets, .. } => {
                if now >= *started + self.cfg.no_answer_timeout {
                    self.end_outgoing(EndReason::NoAnswer, Outcome::NoAnswer, None);
                    return;
                }
                let call = *call;
                let mut resend = [None; MAX_TARGETS];
                for (i, t) in targets.iter_mut().flatten().enumerate() {
                    if let TargetStatus::Ringing { last_heard } = t.status {
                        if now >= last_heard + peer_timeout {
                            t.status = TargetStatus::Unreachable;
                        }
                    }
                    if now >= *next_invite && t.invited() {
                        resend[i] = Some(t.id);
                    }
                }
                if now >= *next_invite {
                    *next_invite = now + INVITE_INTERVAL;
                }
                for id in resend.into_iter().flatten() {
                    self.send(id, Message::Invite { call });
                }
                self.check_all_refused();
            }
            State::Incoming { started, last_heard, contact, peer, .. } => {
                if now >= *last_heard + peer_timeout || now >= *started + self.cfg.no_answer_timeout + peer_timeout {
                    let (contact, peer) = (*contact, *peer);
                    self.finish(contact, Some(peer), Outcome::Missed);
                }
            }
            State::InCall { call, last_heard, next_keepalive, contact, peer } => {
                let (call, contact, peer) = (*call, *contact, *peer);
                if now >= *last_heard + peer_timeout {
                    self.finish(contact, Some(peer), Outcome::PeerVanished);
                } else if now >= *next_keepalive {
                    let late = now.saturating_duration_since(*next_keepalive).as_micros() as u64;
                    self.stats.keepalives_sent += 1;
                    self.stats.keepalive_late_max_us = self.stats.keepalive_late_max_us.max(late);
                    *next_keepalive = now + keepalive;
                    self.send(peer, Message::InCall { call });
                }
            }
        }
    }

    // ---- helpers ----

    fn check_all_refused(&mut self) {
        let State::Outgoing { targets, .. } = &self.state else { return };
        if targets.iter().flatten().any(Target::live) {
            return;
        }
        let refused = |r: EndReason| targets.iter().flatten().any(|t| t.status == TargetStatus::Refused(r));
        let outcome = if refused(EndReason::Busy) {
            Outcome::Busy
        } else if refused(EndReason::Rejected) {
            Outcome::Rejected
        } else if refused(EndReason::NoAnswer) {
            Outcome::NoAnswer
        } else {
            Outcome::Unreachable
        };
        self.end_outgoing(EndReason::Cancelled, outcome, None);
    }

    fn end_outgoing(&mut self, reason: EndReason, outcome: Outcome, peer: Option<DeviceId>) {
        let State::Outgoing { call, targets, contact, .. } = self.state else { return };
        for t in targets.iter().flatten() {
            if t.invited() {
                self.send(t.id, Message::End { call, reason });
            }
        }
        self.finish(contact, peer, outcome);
    }

    fn end_incoming(&mut self, reason: EndReason, outcome: Outcome) {
        let State::Incoming { call, contact, peer, .. } = self.state else { return };
        self.send(peer, Message::End { call, reason });
        self.finish(contact, Some(peer), outcome);
    }

    fn finish(&mut self, contact: usize, peer: Option<DeviceId>, outcome: Outcome) {
        self.state = State::Idle;
        self.event(CallEvent::Ended { contact, peer, outcome });
    }

    fn send(&mut self, to: DeviceId, msg: Message) {
        self.out.push_back(CallOutput::Send(to, msg));
    }

    fn event(&mut self, e: CallEvent) {
        self.out.push_back(CallOutput::Event(e));
    }
}
