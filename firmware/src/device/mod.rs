//! The device core: one sans-IO state machine per device that joins the session endpoint, the
//! call machine and the owner's contacts. Drivers (the tokio runtime, the simulator) feed it
//! datagrams, commands and timeouts, and drain `poll_aux` (before `poll_transmit`: the aux
//! sockets a birthday punch sends from), `poll_transmit`, `poll_event` and `poll_timeout`.
mod birthday;
mod relay;

pub use birthday::{Aux, BirthdayStats, MAX_AUX, MAX_PROBES};

use crate::call::{CallEvent, CallInput, CallMachine, CallOutput, CommandError, Outcome, Phase};
use crate::config::{Config, Contact};
use crate::dht::announce::{self, Announcer};
use crate::dht::id::NodeId;
use crate::dht::message::PACKET_TYPE as DHT_PACKET;
use crate::dht::node::{DhtCounters, DhtEvent, MAX_HOLDERS, Node, NodeConfig};
use crate::dht::record::{self, MAX_ADDRS, RecordBuf};
use crate::identity::{DeviceId, DeviceKey};
use crate::lan::{LanConfig, LanDiscovery, LanEvent};
use crate::media::session::{MediaConfig, MediaSession, MediaStats};
use crate::nat::{NatClass, NatClassifier, StunClient, StunConfig, StunEvent};
use crate::session::{Counters, Endpoint, EndpointConfig, MAX_PLAINTEXT, SessionEvent, Sock, Transmit};
use crate::util::rng::Rng;
use crate::wire::{Message, PacketType};
use serde::Serialize;
use std::collections::VecDeque;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

const CALL_LOG_LEN: usize = 32;
/// A LAN beacon this recent counts as "the device is here".
const LAN_FRESH: Duration = Duration::from_secs(60);
/// Addresses from a DHT record this recent are tried without a new lookup.
const DHT_FRESH: Duration = Duration::from_secs(120);
const MAX_RESOLVING: usize = 16;
const MAX_REFLEXIVE: usize = 4;
/// The first resend of a handshake through rendezvous nodes; the gap then doubles, up to 1 s.
const PUNCH_RETRY: Duration = Duration::from_millis(250);
/// How long a handshake keeps going through rendezvous nodes.
const PUNCH_FOR: Duration = Duration::from_secs(5);
/// In a call both sides speak every second at least (`InCall`); silence this long means the path
/// broke (a router rebooted, an address changed): find the peer again.
const PATH_SILENCE: Duration = Duration::from_millis(1200);
const REPAIR_EVERY: Duration = Duration::from_secs(1);

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
    Datagram {
        from: SocketAddr,
        bytes: &'a [u8],
    },
    /// A datagram that came in on aux socket `sock` (see `poll_aux`).
    AuxDatagram {
        sock: Sock,
        from: SocketAddr,
        bytes: &'a [u8],
    },
    /// A datagram from the LAN discovery (multicast) socket.
    Beacon {
        from: SocketAddr,
        bytes: &'a [u8],
    },
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
    /// A contact's device was found: on the LAN (beacon) or through the DHT (its record).
    Located {
        device: DeviceId,
        via: Via,
        addr: SocketAddr,
    },
    /// Our record went to `stored_at` of the DHT nodes nearest its key.
    Announced {
        stored_at: usize,
    },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Via {
    Lan,
    Dht,
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
    pub call: crate::call::KeepaliveStats,
    /// Media of the current call, when there is one.
    pub media: Option<MediaStats>,
    pub network: NetworkStatus,
}

#[derive(Debug, Clone, Serialize)]
pub struct NetworkStatus {
    /// Nodes in the DHT routing table (0: not joined, or no DHT).
    pub dht_nodes: usize,
    /// Records this device holds for others.
    pub dht_records: usize,
    /// What this device announces in its record.
    pub announced: Vec<String>,
    /// What our NAT does, from the addresses DHT nodes and STUN servers see us at.
    pub nat: NatClass,
    /// Our public addresses, newest first.
    pub public: Vec<String>,
    /// How the current call's packets go, while there is one.
    pub path: Option<CallPath>,
    /// Birthday punches (a direct path between a random-mapping NAT and a consistent one).
    pub birthday: BirthdayStats,
    pub lan_discovery: bool,
    /// Contact devices heard on the LAN in the last minute.
    pub lan_contacts: usize,
    pub dht: Option<DhtCounters>,
}

#[derive(Debug, Clone, Serialize)]
pub struct CallPath {
    /// Where our packets go: the peer's address, or the relay's.
    pub addr: String,
    pub class: crate::session::PathClass,
    /// Our socket: 0 the main one, else the aux socket a birthday punch found the path on.
    pub sock: Sock,
}

/// Where a contact's device was last seen.
#[derive(Debug, Clone, Copy)]
struct Whereabouts {
    id: DeviceId,
    hint: Option<SocketAddr>,
    lan: Option<(SocketAddr, Instant)>,
    dht: [Option<SocketAddr>; MAX_ADDRS],
    dht_at: Option<Instant>,
    /// A call wants this device: every address learnt is tried at once.
    wanted: bool,
    /// Where its DHT record is, computed once a day rather than on each press.
    keys: announce::LookupKeys,
}

/// A handshake that also goes through the rendezvous nodes holding the callee's record: they
/// pass it over the NAT mapping the callee keeps open to them, and the callee's answer, sent
/// straight to our address as they saw it, opens its NAT towards us (hole punching).
#[derive(Debug, Clone, Copy)]
struct Punch {
    device: DeviceId,
    key: [u8; 32],
    via: [Option<SocketAddr>; MAX_HOLDERS],
    next: Instant,
    gap: Duration,
    until: Instant,
}

#[derive(Debug, Clone, Copy)]
struct Resolving {
    lookup: u32,
    device: DeviceId,
    /// The other period's key, tried if this lookup finds nothing.
    then: Option<[u8; 32]>,
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
    /// Finding contacts: started by `start_network`.
    dht: Option<Node>,
    lan: Option<LanDiscovery>,
    announcer: Option<Announcer>,
    whereabouts: Vec<Whereabouts>,
    resolving: Vec<Resolving>,
    punches: Vec<Punch>,
    fallbacks: Vec<relay::Fallback>,
    birthday: birthday::Birthday,
    /// When the current call's path was last repaired (`repair_path`).
    repaired: Option<Instant>,
    reflexive: [Option<SocketAddr>; MAX_REFLEXIVE],
    nat: NatClassifier,
    stun: Option<StunClient>,
    local: Option<SocketAddr>,
    /// The public address a port mapping (UPnP-IGD, NAT-PMP, PCP) on our router gave us.
    mapped: Option<SocketAddr>,
    /// Wall-clock seconds at `now0` (records carry wall-clock expiry times).
    unix0: u64,
    now0: Instant,
    rng: Rng,
    lan_group: Option<std::net::SocketAddrV4>,
    dht_enabled: bool,
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
        let whereabouts = config
            .contacts
            .iter()
            .flat_map(|c| &c.devices)
            .map(|d| Whereabouts {
                id: d.id,
                hint: d.addr,
                lan: None,
                dht: [None; MAX_ADDRS],
                dht_at: None,
                wanted: false,
                keys: announce::LookupKeys::default(),
            })
            .collect();
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
            dht: None,
            lan: None,
            announcer: None,
            whereabouts,
            resolving: Vec::with_capacity(MAX_RESOLVING),
            punches: Vec::with_capacity(MAX_RESOLVING),
            fallbacks: Vec::with_capacity(MAX_RESOLVING),
            birthday: birthday::Birthday::new(origin),
            repaired: None,
            reflexive: [None; MAX_REFLEXIVE],
            nat: NatClassifier::new(SocketAddr::from(([0, 0, 0, 0], 0))),
            stun: None,
            local: None,
            mapped: None,
            unix0: 0,
            now0: origin,
            rng: Rng::seeded(rng.next_u64()),
            lan_group: config.lan_group,
            dht_enabled: config.dht,
        }
    }

    /// Joins the DHT through `bootstrap`, starts announcing where this device is, and (if the
    /// config allows) LAN discovery. `local` is the bound socket address; `unix_now` the wall
    /// clock. Without this call the device reaches contacts only at their configured addresses.
    pub fn start_network(
        &mut self,
        now: Instant,
        unix_now: u64,
        key: DeviceKey,
        local: SocketAddr,
        bootstrap: &[SocketAddr],
        dht_cfg: NodeConfig,
    ) {
        self.now = self.now.max(now);
        self.unix0 = unix_now;
        self.now0 = now;
        if self.dht_enabled {
            let id = NodeId::random(&mut self.rng);
            let mut node = Node::new(id, dht_cfg, Rng::seeded(self.rng.next_u64()), now, unix_now);
            // Contacts' configured addresses are peercom devices too, so they also serve as a way in.
            let mut boot: Vec<SocketAddr> = bootstrap.to_vec();
            boot.extend(self.whereabouts.iter().filter_map(|w| w.hint));
            node.bootstrap(now, &boot);
            self.dht = Some(node);
        }
        if self.lan_group.is_some() {
            let contacts: Vec<DeviceId> = self.whereabouts.iter().map(|w| w.id).collect();
            let rng = Rng::seeded(self.rng.next_u64());
            self.lan = Some(LanDiscovery::new(&key, &contacts, local.port(), LanConfig::default(), rng, now));
        }
        self.announcer = Some(Announcer::new(key, Rng::seeded(self.rng.next_u64())));
        // At start, not on the first press.
        for w in &mut self.whereabouts {
            w.keys.get(&w.id, unix_now);
        }
        self.nat = NatClassifier::new(local);
        self.local = (!local.ip().is_unspecified()).then_some(local);
        self.update_announced(now);
        self.pump(now);
    }

    /// Asks `servers` (STUN, RFC 5389) for our public address, now and every few minutes.
    pub fn start_stun(&mut self, now: Instant, servers: &[SocketAddr]) {
        self.now = self.now.max(now);
        if !servers.is_empty() {
            self.stun = Some(StunClient::new(servers, StunConfig::default(), Rng::seeded(self.rng.next_u64()), now));
        }
        self.pump(now);
    }

    /// The IP addresses of our interfaces, when the socket is bound to all of them (so that a
    /// LAN peer seeing our private address is not taken for a second NAT mapping).
    pub fn set_interfaces(&mut self, ips: &[std::net::IpAddr]) {
        self.nat.set_interfaces(ips);
    }

    /// The router mapped a public port to our socket (or the mapping went away): announced as
    /// one more address contacts can reach us at.
    pub fn set_mapped(&mut self, now: Instant, addr: Option<SocketAddr>) {
        self.now = self.now.max(now);
        if self.mapped != addr {
            self.mapped = addr;
            self.update_announced(now);
            self.update_client(now);
        }
        self.pump(now);
    }

    /// More ways into the DHT (bootstrap names resolved again later).
    pub fn dht_bootstrap(&mut self, now: Instant, addrs: &[SocketAddr]) {
        self.now = self.now.max(now);
        if let Some(d) = self.dht.as_mut() {
            d.bootstrap(now, addrs);
        }
        self.pump(now);
    }

    pub fn dht_nodes(&self) -> usize {
        self.dht.as_ref().map_or(0, |d| d.table().len())
    }

    pub fn lan_group(&self) -> Option<std::net::SocketAddrV4> {
        self.lan.as_ref().and(self.lan_group)
    }

    /// A LAN beacon to multicast now, if one is due.
    pub fn poll_beacon(&mut self, buf: &mut [u8]) -> Option<usize> {
        self.lan.as_mut()?.poll_beacon(buf)
    }

    fn unix(&self, now: Instant) -> u64 {
        self.unix0 + now.saturating_duration_since(self.now0).as_secs()
    }

    /// The current call's media transport, while a call is up.
    pub fn media(&mut self) -> Option<&mut MediaSession> {
        self.media_peer.is_some().then_some(&mut self.media)
    }

    /// The address the session to contact device `peer` uses.
    pub fn path_to(&self, peer: &DeviceId) -> Option<SocketAddr> {
        self.endpoint.peer_addr(peer)
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
            call: self.call.keepalive_stats(),
            media: self.media_peer.map(|_| self.media.stats()),
            network: NetworkStatus {
                dht_nodes: self.dht_nodes(),
                dht_records: self.dht.as_ref().map_or(0, |d| d.stored_records()),
                announced: self.announcer.iter().flat_map(|a| a.addrs()).map(|a| a.to_string()).collect(),
                nat: self.nat.class(),
                public: self.nat.public_addrs().map(|a| a.to_string()).collect(),
                path: self.media_peer.and_then(|p| {
                    let (addr, class) = (self.endpoint.peer_addr(&p)?, self.endpoint.path_class(&p)?);
                    let sock = self.endpoint.path_sock(&p)?;
                    Some(CallPath { addr: addr.to_string(), class, sock })
                }),
                birthday: self.birthday.stats(),
                lan_discovery: self.lan.is_some(),
                lan_contacts: self
                    .whereabouts
                    .iter()
                    .filter(|w| w.lan.is_some_and(|(_, t)| self.now.saturating_duration_since(t) < LAN_FRESH))
                    .count(),
                dht: self.dht.as_ref().map(|d| d.counters()),
            },
        }
    }

    pub fn handle_input(&mut self, now: Instant, input: Input<'_>) -> Result<(), DeviceError> {
        self.now = self.now.max(now);
        let r = match input {
            Input::Datagram { from, bytes }
                if crate::nat::stun::is_stun(bytes)
                    && self.stun.as_mut().is_some_and(|s| s.handle_datagram(now, from, bytes)) =>
            {
                Ok(())
            }
            Input::Datagram { from, bytes } if bytes.first() == Some(&DHT_PACKET) => {
                if let Some(d) = self.dht.as_mut() {
                    d.handle_datagram(now, from, bytes);
                }
                Ok(())
            }
            Input::Beacon { from, bytes } => {
                if let Some(l) = self.lan.as_mut() {
                    l.handle_beacon(now, from, bytes);
                }
                Ok(())
            }
            // Session packets between two devices this node relays for.
            Input::Datagram { from, bytes }
                if self.dht.as_mut().is_some_and(|d| d.relay_datagram(now, from, bytes)) =>
            {
                Ok(())
            }
            Input::Datagram { from, bytes } => {
                self.endpoint.handle_datagram(now, from, bytes);
                self.take_media(now);
                Ok(())
            }
            // Only session packets come on aux sockets (and only while they are open).
            Input::AuxDatagram { sock, from, bytes } => {
                if self.birthday.is_open(sock) {
                    self.endpoint.handle_datagram_on(now, sock, from, bytes);
                    self.take_media(now);
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
                if let Some(d) = self.dht.as_mut()
                    && d.poll_timeout().is_some_and(|t| t <= now)
                {
                    d.handle_timeout(now);
                }
                if let Some(l) = self.lan.as_mut() {
                    l.handle_timeout(now);
                }
                self.punch_timeout(now);
                self.fallback_timeout(now);
                self.repair_path(now);
                if let Some(s) = self.stun.as_mut()
                    && s.poll_timeout().is_some_and(|t| t <= now)
                {
                    s.handle_timeout(now);
                }
                Ok(())
            }
        };
        self.pump(now);
        self.birthday_step(now);
        r
    }

    /// The media plaintext of the datagram just handled goes to the call's media session.
    fn take_media(&mut self, now: Instant) {
        if let Some((peer, plain)) = self.endpoint.take_media() {
            // Media outside our call (a late packet after hang-up) is ignored.
            if Some(peer) == self.media_peer {
                self.media.handle_packet(now, plain);
            }
        }
    }

    /// The next datagram to send (`len` bytes of `buf`, to `dst`, from socket `sock`: 0 the main
    /// one, else an aux socket, see `poll_aux`): signalling first, then birthday-punch probes,
    /// then media (paced, as of the last input).
    pub fn poll_transmit(&mut self, buf: &mut [u8]) -> Option<Transmit> {
        if let Some(t) = self.endpoint.poll_transmit(buf) {
            return Some(t);
        }
        let main = |(dst, len)| Transmit { sock: crate::session::MAIN_SOCK, dst, len };
        if let Some(t) = self.dht.as_mut().and_then(|d| d.poll_transmit(buf)) {
            return Some(main(t));
        }
        if let Some(t) = self.stun.as_mut().and_then(|s| s.poll_transmit(buf)) {
            return Some(main(t));
        }
        if let Some(t) = self.birthday_transmit(buf) {
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

    /// The next change to the driver's aux sockets (a birthday punch opens up to `MAX_AUX` of
    /// them, then keeps at most one). Drain it before `poll_transmit`, which may send from them.
    pub fn poll_aux(&mut self) -> Option<Aux> {
        self.birthday.poll_aux()
    }

    pub fn poll_event(&mut self) -> Option<DeviceEvent> {
        self.events.pop_front()
    }

    pub fn poll_timeout(&self) -> Option<Instant> {
        let media = self.media_peer.and_then(|_| self.media.poll_timeout());
        let dht = self.dht.as_ref().and_then(|d| d.poll_timeout());
        let lan = self.lan.as_ref().and_then(|l| l.poll_timeout());
        let joined = self.dht.as_ref().is_some_and(|d| !d.table().is_empty());
        let announce = self.announcer.as_ref().filter(|_| joined).and_then(|a| a.poll_timeout());
        let punch = self.punches.iter().map(|p| p.next).min();
        let repair = self.repair_due();
        let stun = self.stun.as_ref().and_then(|s| s.poll_timeout());
        let fallback = self.fallback_due();
        let birthday = self.birthday.due(self.now);
        [
            self.endpoint.poll_timeout(),
            self.call.poll_timeout(),
            media,
            dht,
            lan,
            announce,
            punch,
            repair,
            stun,
            fallback,
            birthday,
        ]
        .into_iter()
        .flatten()
        .min()
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
                    SessionEvent::Established(p) => {
                        self.want(&p, false);
                        if let Some(punch) = self.punches.iter().find(|x| x.device == p).copied() {
                            self.arm_fallback(now, p, punch.key, punch.via);
                        }
                        CallInput::SessionUp(p)
                    }
                    SessionEvent::Failed(p) => {
                        self.want(&p, false);
                        CallInput::SessionFailed(p)
                    }
                    SessionEvent::Closed(p) => CallInput::SessionClosed(p),
                    SessionEvent::Message(from, msg @ (Message::Nat { .. } | Message::Birthday { .. })) => {
                        self.on_birthday_message(now, from, msg);
                        continue;
                    }
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
                    CallOutput::Connect(id) => self.connect(now, id),
                    CallOutput::Send(to, msg) => {
                        self.endpoint.send(now, &to, &msg);
                    }
                    CallOutput::Event(e) => self.on_call_event(now, e),
                }
            }
            progressed |= self.pump_network(now);
            if !progressed {
                break;
            }
        }
    }

    /// Starts a session to contact device `id` at every address known for it, and asks the
    /// DHT where it is now; the call fails only when no address is known and the DHT finds none.
    fn connect(&mut self, now: Instant, id: DeviceId) {
        self.want(&id, true);
        let mut tried = false;
        if let Some(w) = self.whereabouts.iter().find(|w| w.id == id).copied() {
            let lan = w.lan.filter(|(_, t)| now.saturating_duration_since(*t) < LAN_FRESH).map(|(a, _)| a);
            let fresh = w.dht_at.is_some_and(|t| now.saturating_duration_since(t) < DHT_FRESH);
            let dht = w.dht.into_iter().flatten().filter(|_| fresh);
            for addr in lan.into_iter().chain(w.hint).chain(dht) {
                self.endpoint.connect(now, id, addr);
                tried = true;
            }
            if fresh {
                return;
            }
        }
        if !self.resolve(now, id) && !tried {
            self.want(&id, false);
            let _ = self.call.handle(now, CallInput::SessionFailed(id));
        }
    }

    fn want(&mut self, id: &DeviceId, wanted: bool) {
        if let Some(w) = self.whereabouts.iter_mut().find(|w| w.id == *id) {
            w.wanted = wanted;
        }
    }

    /// Starts a DHT lookup for `id`'s record; false if there is no DHT to ask.
    fn resolve(&mut self, now: Instant, id: DeviceId) -> bool {
        if self.resolving.iter().any(|r| r.device == id) {
            return true;
        }
        let unix = self.unix(now);
        let Some(d) = self.dht.as_mut().filter(|d| !d.table().is_empty()) else { return false };
        let Some(w) = self.whereabouts.iter_mut().find(|w| w.id == id) else { return false };
        let [first, then] = w.keys.get(&id, unix);
        let Some(key) = first else { return false };
        if self.resolving.len() == MAX_RESOLVING {
            return false;
        }
        match d.find_record(now, key) {
            Some(lookup) => {
                self.resolving.push(Resolving { lookup, device: id, then });
                true
            }
            None => false,
        }
    }

    /// Handles what the DHT and LAN discovery reported, and publishes our record when due.
    fn pump_network(&mut self, now: Instant) -> bool {
        let mut progressed = false;
        while let Some(ev) = self.lan.as_mut().and_then(|l| l.poll_event()) {
            progressed = true;
            let LanEvent::Found { device, addr } = ev;
            let Some(w) = self.whereabouts.iter_mut().find(|w| w.id == device) else { continue };
            w.lan = Some((addr, now));
            if w.wanted {
                self.endpoint.connect(now, device, addr);
            }
            // Heard on our LAN while a session to it goes another way: offer the LAN path (the
            // first authenticated packet there moves both sides to it).
            if self.endpoint.path_class(&device).is_some_and(|c| c < crate::session::PathClass::Lan) {
                self.endpoint.probe(now, &device, addr);
            }
            self.push_event(DeviceEvent::Located { device, via: Via::Lan, addr });
        }
        while let Some(ev) = self.stun.as_mut().and_then(|s| s.poll_event()) {
            progressed = true;
            if let StunEvent::Mapped { server, addr } = ev {
                self.on_reflexive(now, server, addr);
            }
        }
        while let Some(ev) = self.dht.as_mut().and_then(|d| d.poll_event()) {
            progressed = true;
            match ev {
                DhtEvent::Found { lookup, record, key, holders, .. } => {
                    let device = self.resolving.iter().find(|r| r.lookup == lookup).map(|r| r.device);
                    self.on_record(now, lookup, Some(&record));
                    self.punch(now, key, holders);
                    if device.is_some() && device == self.media_peer {
                        self.reach_again(now, key, holders);
                        self.refresh_fallback(now, key, holders);
                    }
                }
                DhtEvent::NotFound { lookup, .. } => self.on_record(now, lookup, None),
                DhtEvent::Rendezvous { via, peer, replied, payload } => {
                    self.on_rendezvous(now, via, peer, replied, payload.as_bytes())
                }
                DhtEvent::Unheld { .. } => {
                    if let Some(a) = self.announcer.as_mut() {
                        a.republish(now);
                    }
                }
                DhtEvent::Reflexive { addr, reporter } => self.on_reflexive(now, reporter, addr),
                DhtEvent::RelayInvite { via, ticket } => self.on_relay_invite(via, ticket),
                DhtEvent::Relaying { via, ticket, ok, .. } => self.on_relaying(now, via, ticket, ok),
                DhtEvent::Published { stored_at, .. } => self.push_event(DeviceEvent::Announced { stored_at }),
                DhtEvent::Closest { .. } => {}
            }
        }
        let joined = self.dht.as_ref().is_some_and(|d| !d.table().is_empty());
        if joined && self.announcer.as_ref().is_some_and(|a| a.due(now)) {
            let unix = self.unix(now);
            let mut recs = [RecordBuf::default(); 2];
            let n = self.announcer.as_mut().map_or(0, |a| a.poll(now, unix, &mut recs));
            for r in &recs[..n] {
                let Ok(key) = record::parse(r.as_bytes()).map(|v| v.key()) else { continue };
                let signer = self.announcer.as_ref().and_then(|a| a.signer(&key, unix));
                if let Some(d) = self.dht.as_mut() {
                    if let Some(signer) = signer {
                        d.hold(key, signer);
                    }
                    d.publish(now, r);
                }
            }
            progressed |= n > 0;
        }
        progressed
    }

    /// `key`'s record was found at `holders`: if a handshake to its device is under way, send it
    /// through them too.
    fn punch(&mut self, now: Instant, key: [u8; 32], holders: [Option<SocketAddr>; MAX_HOLDERS]) {
        let unix = self.unix(now);
        let Some(i) =
            self.whereabouts.iter_mut().position(|w| w.wanted && w.keys.get(&w.id, unix).contains(&Some(key)))
        else {
            return;
        };
        let device = self.whereabouts[i].id;
        if holders[0].is_none() || !self.endpoint.is_connecting(&device) {
            return;
        }
        self.punches.retain(|p| p.device != device);
        if self.punches.len() == MAX_RESOLVING {
            return;
        }
        let p = Punch { device, key, via: holders, next: now, gap: PUNCH_RETRY, until: now + PUNCH_FOR };
        self.punches.push(p);
        self.punch_timeout(now);
    }

    /// Sends (again) the handshakes due through rendezvous nodes; drops those that are done.
    fn punch_timeout(&mut self, now: Instant) {
        let mut i = 0;
        while i < self.punches.len() {
            let p = self.punches[i];
            let Some(init) = self.endpoint.init_packet(&p.device).filter(|_| now < p.until) else {
                self.punches.swap_remove(i);
                continue;
            };
            if now >= p.next {
                let mut buf = [0u8; crate::dht::node::MAX_RELAYED];
                let n = init.len().min(buf.len());
                buf[..n].copy_from_slice(&init[..n]);
                if let Some(d) = self.dht.as_mut() {
                    for via in p.via.into_iter().flatten() {
                        d.forward(now, via, p.key, &buf[..n]);
                    }
                }
                let gap = (p.gap * 2).min(Duration::from_secs(1));
                self.punches[i].next = now + p.gap;
                self.punches[i].gap = gap;
            }
            i += 1;
        }
    }

    /// When the current call's path counts as broken, or the next repair is due.
    fn repair_due(&self) -> Option<Instant> {
        let peer = self.media_peer?;
        let silent = self.endpoint.last_rx(&peer)? + PATH_SILENCE;
        Some(self.repaired.map_or(silent, |t| silent.max(t + REPAIR_EVERY)))
    }

    /// The peer of our call has gone silent: look up where it is now (`reach_again` follows).
    fn repair_path(&mut self, now: Instant) {
        let (Some(peer), Some(due)) = (self.media_peer, self.repair_due()) else { return };
        if now < due {
            return;
        }
        self.repaired = Some(now);
        self.resolve(now, peer);
    }

    /// The record of our call's peer: an authenticated keepalive goes to each of its addresses
    /// and through each rendezvous node that holds it. If our own address changed, the first one
    /// to arrive moves the peer's side of the session to our new address (roaming), and its
    /// answers, now sent there, open its NAT towards us.
    fn reach_again(&mut self, now: Instant, key: [u8; 32], holders: [Option<SocketAddr>; MAX_HOLDERS]) {
        let Some(peer) = self.media_peer else { return };
        let Some(w) = self.whereabouts.iter().find(|w| w.id == peer).copied() else { return };
        let mut buf = [0u8; crate::dht::node::MAX_RELAYED];
        for via in holders.into_iter().flatten() {
            let Some(n) = self.endpoint.seal_keepalive(now, &peer, &mut buf) else { return };
            if let Some(d) = self.dht.as_mut() {
                d.forward(now, via, key, &buf[..n]);
            }
        }
        for addr in w.dht.into_iter().flatten() {
            self.endpoint.probe(now, &peer, addr);
        }
    }

    /// A handshake that came through a rendezvous node, or its answer. Message 1 is answered
    /// straight to the caller's address (which opens our NAT towards it) and back through the
    /// node (which reaches the caller even when its NAT does not let the first one in).
    fn on_rendezvous(&mut self, now: Instant, via: SocketAddr, peer: SocketAddr, replied: bool, payload: &[u8]) {
        let ty = payload.first().copied();
        let ok = if replied {
            ty == Some(PacketType::HandshakeResp as u8)
        } else {
            // A handshake, or a session packet from a peer that lost its path (`reach_again`).
            ty == Some(PacketType::HandshakeInit as u8) || ty == Some(PacketType::Data as u8)
        };
        if !ok {
            return;
        }
        self.endpoint.handle_relayed(now, peer, payload);
        if replied {
            return;
        }
        let mut buf = [0u8; crate::dht::node::MAX_RELAYED];
        let Some(n) = self.endpoint.reply_to(payload).and_then(|r| {
            let dst = buf.get_mut(..r.len())?;
            dst.copy_from_slice(r);
            Some(r.len())
        }) else {
            return;
        };
        if let Some(d) = self.dht.as_mut() {
            d.answer_forward(via, peer, &buf[..n]);
        }
    }

    fn on_record(&mut self, now: Instant, lookup: u32, rec: Option<&RecordBuf>) {
        let Some(i) = self.resolving.iter().position(|r| r.lookup == lookup) else { return };
        let r = self.resolving.swap_remove(i);
        let mut addrs = [SocketAddr::from(([0, 0, 0, 0], 0)); MAX_ADDRS];
        let opened = rec.and_then(|rec| record::open(&r.device, rec.as_bytes(), &mut addrs).ok());
        let unix = self.unix(now);
        let Some(w) = self.whereabouts.iter_mut().find(|w| w.id == r.device) else { return };
        match opened {
            Some(o) if u64::from(o.expires) > unix => {
                w.dht = [None; MAX_ADDRS];
                for (slot, a) in w.dht.iter_mut().zip(&addrs[..o.count]) {
                    *slot = Some(*a);
                }
                w.dht_at = Some(now);
                let w = *w;
                if w.wanted {
                    for a in w.dht.into_iter().flatten() {
                        self.endpoint.connect(now, r.device, a);
                    }
                }
                if let Some(addr) = w.dht[0] {
                    self.push_event(DeviceEvent::Located { device: r.device, via: Via::Dht, addr });
                }
            }
            _ => {
                let wanted = w.wanted;
                if let Some(key) = r.then
                    && let Some(lookup) = self.dht.as_mut().and_then(|d| d.find_record(now, key))
                {
                    self.resolving.push(Resolving { lookup, device: r.device, then: None });
                    return;
                }
                // Nowhere to be found. If nothing else is being tried, the call gives up on it.
                if wanted && !self.endpoint.is_connecting(&r.device) && !self.endpoint.is_established(&r.device) {
                    self.want(&r.device, false);
                    let _ = self.call.handle(now, CallInput::SessionFailed(r.device));
                }
            }
        }
    }

    /// `reporter` (a DHT node or a STUN server) sees us at `addr`: a sample for the NAT
    /// classifier, and an address to announce.
    fn on_reflexive(&mut self, now: Instant, reporter: SocketAddr, addr: SocketAddr) {
        self.nat.add(reporter, addr);
        self.update_client(now);
        if !self.reflexive.contains(&Some(addr)) {
            self.reflexive.rotate_right(1);
            self.reflexive[0] = Some(addr);
            self.update_announced(now);
        }
    }

    /// Behind a NAT (and no port mapping), other nodes cannot reach us unasked: our DHT node is
    /// then a client only, kept out of routing tables (`dht::message::CLIENT_FLAG`).
    fn update_client(&mut self, now: Instant) {
        let natted = matches!(self.nat.class(), NatClass::Consistent | NatClass::Random);
        if let Some(d) = self.dht.as_mut() {
            d.set_client(now, natted && self.mapped.is_none());
        }
    }

    /// Announces the bound address (if it is a specific one), the router's port mapping and the
    /// addresses DHT nodes see.
    fn update_announced(&mut self, now: Instant) {
        let mut addrs = [SocketAddr::from(([0, 0, 0, 0], 0)); MAX_ADDRS];
        let mut n = 0;
        for a in self.local.into_iter().chain(self.mapped).chain(self.reflexive.into_iter().flatten()) {
            if n < MAX_ADDRS && !addrs[..n].contains(&a) {
                addrs[n] = a;
                n += 1;
            }
        }
        if let Some(an) = self.announcer.as_mut() {
            an.set_addrs(now, &addrs[..n]);
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
                for w in &mut self.whereabouts {
                    w.wanted = false;
                }
                self.repaired = None;
                self.media.reset(now);
                self.media_peer = Some(peer);
                self.birthday_call_up(now, peer);
            }
            CallEvent::Ended { contact, outcome, .. } => {
                self.media_peer = None;
                self.birthday_call_down(now);
                for w in &mut self.whereabouts {
                    w.wanted = false;
                }
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
        self.push_event(DeviceEvent::Call(e));
    }

    fn push_event(&mut self, e: DeviceEvent) {
        if self.events.len() < self.events.capacity() {
            self.events.push_back(e);
        }
    }

    fn contact_of(&self, id: &DeviceId) -> Option<usize> {
        self.contacts.iter().position(|c| c.devices.iter().any(|d| d.id == *id))
    }
}

fn map_err(e: CommandError) -> DeviceError {
    match e {
        CommandError::Busy => DeviceError::Busy,
        CommandError::NoCall => DeviceError::NoCall,
        CommandError::NoDevices => DeviceError::NoContact(0),
    }
}
