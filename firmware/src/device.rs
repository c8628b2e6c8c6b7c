//! The device core: one sans-IO state machine per device that joins the session endpoint, the
//! call machine and the owner's contacts. Drivers (the tokio runtime, the simulator) feed it
//! datagrams, commands and timeouts, and drain `poll_transmit`, `poll_event` and `poll_timeout`.
use crate::call::{CallEvent, CallInput, CallMachine, CallOutput, CommandError, Outcome, Phase};
use crate::config::{Config, Contact};
use crate::identity::{DeviceId, DeviceKey};
use crate::media::session::{MediaConfig, MediaSession, MediaStats};
use crate::session::{Counters, Endpoint, EndpointConfig, MAX_PLAINTEXT, SessionEvent};
use crate::util::rng::Rng;
use serde::Serialize;
use std::collections::VecDeque;
use std::net::SocketAddr;
use std::time::Instant;

const CALL_LOG_LEN: usize = 32;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Command {
    /// A physical (or simulated) button.
    Press(u8),
    Call(usize),
    Answer,
    Reject,
    Hangup,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Input<'a> {
    Datagram { from: SocketAddr, bytes: &'a [u8] },
    Command(Command),
    Timeout,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DeviceEvent {
    Call(CallEvent),
    /// An unknown device tried to call and was refused.
    Refused {
        caller: DeviceId,
        suppressed: u64,
    },
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DeviceError {
    ButtonNotBound(u8),
    NoContact(usize),
    Busy,
    NoCall,
    NotRinging,
}

impl std::fmt::Display for DeviceError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            DeviceError::ButtonNotBound(n) => write!(f, "button {n} is not bound to a contact or function"),
            DeviceError::NoContact(i) => write!(f, "no contact number {i}"),
            DeviceError::Busy => write!(f, "already in a call"),
            DeviceError::NoCall => write!(f, "there is no call"),
            DeviceError::NotRinging => write!(f, "no incoming call to answer"),
        }
    }
}

impl std::error::Error for DeviceError {}

#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct CallRecord {
    pub contact: String,
    pub incoming: bool,
    pub outcome: Outcome,
}

#[derive(Debug, Clone, Serialize)]
pub struct Status {
    pub name: String,
    pub id: String,
    pub state: Phase,
    pub contact: Option<String>,
    pub peer: Option<String>,
    pub last_call: Option<CallRecord>,
    pub missed_calls: u32,
    pub counters: Counters,
    /// Media of the current call, when there is one.
    pub media: Option<MediaStats>,
}

pub struct Device {
    name: String,
    contacts: Vec<Contact>,
    answer_button: Option<u8>,
    reject_button: Option<u8>,
    auto_answer: bool,
    endpoint: Endpoint,
    call: CallMachine,
    events: VecDeque<DeviceEvent>,
    incoming: bool,
    log: VecDeque<CallRecord>,
    missed: u32,
    /// Allocated once; a call resets it. Active while `media_peer` is set.
    media: MediaSession,
    media_peer: Option<DeviceId>,
    plain: Box<[u8; MAX_PLAINTEXT]>,
    /// The time of the last input (sans-IO: outputs are computed as of then).
    now: Instant,
}

impl Device {
    pub fn new(config: &Config, key: DeviceKey, endpoint_cfg: EndpointConfig, rng: Rng) -> Self {
        Self::with_clock(config, key, endpoint_cfg, rng, Instant::now())
    }

    /// `origin` is the zero of the media clock (capture times are µs since then).
    pub fn with_clock(
        config: &Config,
        key: DeviceKey,
        endpoint_cfg: EndpointConfig,
        mut rng: Rng,
        origin: Instant,
    ) -> Self {
        let allowed = config.contacts.iter().flat_map(|c| c.devices.iter().map(|d| d.id)).collect();
        let endpoint = Endpoint::new(key, allowed, endpoint_cfg, Rng::seeded(rng.next_u64()));
        Device {
            name: config.name.clone(),
            contacts: config.contacts.clone(),
            answer_button: config.answer_button,
            reject_button: config.reject_button,
            auto_answer: config.call.auto_answer,
            endpoint,
            call: CallMachine::new(config.call, Rng::seeded(rng.next_u64())),
            events: VecDeque::with_capacity(64),
            incoming: false,
            log: VecDeque::with_capacity(CALL_LOG_LEN),
            missed: 0,
            media: MediaSession::new(MediaConfig::from_settings(&config.media), origin),
            media_peer: None,
            plain: Box::new([0; MAX_PLAINTEXT]),
            now: origin,
        }
    }

    /// The current call's media transport, while a call is up.
    pub fn media(&mut self) -> Option<&mut MediaSession> {
        self.media_peer.is_some().then_some(&mut self.media)
    }

    pub fn in_call_with(&self) -> Option<DeviceId> {
        self.media_peer
    }

    pub fn id(&self) -> DeviceId {
        self.endpoint.id()
    }

    pub fn phase(&self) -> Phase {
        self.call.phase()
    }

    pub fn counters(&self) -> Counters {
        self.endpoint.counters()
    }

    pub fn contacts(&self) -> &[Contact] {
        &self.contacts
    }

    pub fn status(&self) -> Status {
        let party = self.call.party();
        Status {
            name: self.name.clone(),
            id: self.id().to_string(),
            state: self.call.phase(),
            contact: party.and_then(|(c, _)| self.contacts.get(c)).map(|c| c.name.clone()),
            peer: party.and_then(|(_, p)| p).map(|p| p.to_string()),
            last_call: self.log.back().cloned(),
            missed_calls: self.missed,
            counters: self.endpoint.counters(),
            media: self.media_peer.map(|_| self.media.stats()),
        }
    }

    pub fn handle_input(&mut self, now: Instant, input: Input<'_>) -> Result<(), DeviceError> {
        self.now = self.now.max(now);
        let r = match input {
            Input::Datagram { from, bytes } => {
                self.endpoint.handle_datagram(now, from, bytes);
                if let Some((peer, plain)) = self.endpoint.take_media() {
                    // Media outside our call (a late packet after hang-up) is ignored.
                    if Some(peer) == self.media_peer {
                        self.media.handle_packet(now, plain);
                    }
                }
                Ok(())
            }
            Input::Command(cmd) => self.command(now, cmd),
            Input::Timeout => {
                self.endpoint.handle_timeout(now);
                let _ = self.call.handle(now, CallInput::Timeout);
                if self.media_peer.is_some() {
                    self.media.handle_timeout(now);
                }
                Ok(())
            }
        };
        self.pump(now);
        r
    }

    /// The next datagram to send: signalling first, then media (paced, as of the last input).
    pub fn poll_transmit(&mut self, buf: &mut [u8]) -> Option<(SocketAddr, usize)> {
        if let Some(t) = self.endpoint.poll_transmit(buf) {
            return Some(t);
        }
        let peer = self.media_peer?;
        loop {
            let n = self.media.poll_transmit(self.now, &mut self.plain[..])?;
            if let Some(t) = self.endpoint.seal_to(self.now, &peer, &self.plain[..n], buf) {
                return Some(t);
            }
            // No session to seal with (it is being replaced): media is dropped, not queued.
        }
    }

    pub fn poll_event(&mut self) -> Option<DeviceEvent> {
        self.events.pop_front()
    }

    pub fn poll_timeout(&self) -> Option<Instant> {
        let media = self.media_peer.and_then(|_| self.media.poll_timeout());
        [self.endpoint.poll_timeout(), self.call.poll_timeout(), media].into_iter().flatten().min()
    }

    fn command(&mut self, now: Instant, cmd: Command) -> Result<(), DeviceError> {
        let phase = self.call.phase();
        let input = match cmd {
            Command::Press(n) if Some(n) == self.answer_button => match phase {
                Phase::Idle => return Err(DeviceError::NotRinging),
                Phase::Incoming => CallInput::Answer,
                _ => CallInput::Hangup,
            },
            Command::Press(n) if Some(n) == self.reject_button => match phase {
                Phase::Idle => return Err(DeviceError::NoCall),
                Phase::Incoming => CallInput::Reject,
                _ => CallInput::Hangup,
            },
            // A contact's button calls it, answers a ringing call, or ends the current one, so a
            // one-button unit does everything.
            Command::Press(n) => {
                let Some(c) = self.contacts.iter().position(|c| c.button == Some(n)) else {
                    return Err(DeviceError::ButtonNotBound(n));
                };
                match phase {
                    Phase::Idle => return self.command(now, Command::Call(c)),
                    Phase::Incoming => CallInput::Answer,
                    _ => CallInput::Hangup,
                }
            }
            Command::Call(c) => {
                let contact = self.contacts.get(c).ok_or(DeviceError::NoContact(c))?;
                let mut ids = [DeviceId::from_bytes([0; 32]); crate::call::MAX_TARGETS];
                let n = contact.devices.len().min(ids.len());
                for (slot, d) in ids.iter_mut().zip(&contact.devices) {
                    *slot = d.id;
                }
                self.incoming = false;
                return self.call.handle(now, CallInput::Dial { contact: c, devices: &ids[..n] }).map_err(map_err);
            }
            Command::Answer => CallInput::Answer,
            Command::Reject => CallInput::Reject,
            Command::Hangup => CallInput::Hangup,
        };
        self.call.handle(now, input).map_err(map_err)
    }

    /// Moves work between the endpoint and the call machine until both are quiet.
    fn pump(&mut self, now: Instant) {
        loop {
            let mut progressed = false;
            while let Some(ev) = self.endpoint.poll_event() {
                progressed = true;
                let input = match ev {
                    SessionEvent::Established(p) => CallInput::SessionUp(p),
                    SessionEvent::Failed(p) => CallInput::SessionFailed(p),
                    SessionEvent::Closed(p) => CallInput::SessionClosed(p),
                    SessionEvent::Message(from, msg) => match self.contact_of(&from) {
                        Some(contact) => CallInput::Message { from, contact, msg },
                        None => continue,
                    },
                    SessionEvent::Refused { caller, suppressed } => {
                        self.events.push_back(DeviceEvent::Refused { caller, suppressed });
                        continue;
                    }
                };
                let _ = self.call.handle(now, input);
            }
            while let Some(out) = self.call.poll_output() {
                progressed = true;
                match out {
                    CallOutput::Connect(id) => match self.addr_of(&id) {
                        Some(addr) => self.endpoint.connect(now, id, addr),
                        // No address known (the DHT will provide one later): unreachable now.
                        None => {
                            let _ = self.call.handle(now, CallInput::SessionFailed(id));
                        }
                    },
                    CallOutput::Send(to, msg) => {
                        self.endpoint.send(now, &to, &msg);
                    }
                    CallOutput::Event(e) => self.on_call_event(now, e),
                }
            }
            if !progressed {
                break;
            }
        }
    }

    fn on_call_event(&mut self, now: Instant, e: CallEvent) {
        match e {
            CallEvent::Incoming { .. } => {
                self.incoming = true;
                if self.auto_answer {
                    let _ = self.call.handle(now, CallInput::Answer);
                }
            }
            CallEvent::Dialing { .. } => self.incoming = false,
            CallEvent::Connected { peer, .. } => {
                self.media.reset(now);
                self.media_peer = Some(peer);
            }
            CallEvent::Ended { contact, outcome, .. } => {
                self.media_peer = None;
                if outcome == Outcome::Missed {
                    self.missed = self.missed.saturating_add(1);
                }
                if self.log.len() == CALL_LOG_LEN {
                    self.log.pop_front();
                }
                let name = self.contacts.get(contact).map(|c| c.name.clone()).unwrap_or_default();
                self.log.push_back(CallRecord { contact: name, incoming: self.incoming, outcome });
            }
            _ => {}
        }
        if self.events.len() < self.events.capacity() {
            self.events.push_back(DeviceEvent::Call(e));
        }
    }

    fn contact_of(&self, id: &DeviceId) -> Option<usize> {
        self.contacts.iter().position(|c| c.devices.iter().any(|d| d.id == *id))
    }

    fn addr_of(&self, id: &DeviceId) -> Option<SocketAddr> {
        self.contacts.iter().flat_map(|c| &c.devices).find(|d| d.id == *id).and_then(|d| d.addr)
    }
}

fn map_err(e: CommandError) -> DeviceError {
    match e {
        CommandError::Busy => DeviceError::Busy,
        CommandError::NoCall => DeviceError::NoCall,
        CommandError::NoDevices => DeviceError::NoContact(0),
    }
}
