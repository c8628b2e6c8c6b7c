//! The sans-IO session endpoint: owns every session of a device, turns datagrams into session
//! events and messages into datagrams. No sockets, threads or clocks: time is an input.
//!
//! Drive it like this: after every `handle_*` call, drain `poll_transmit` and `poll_event`, then
//! arm a timer for `poll_timeout` and call `handle_timeout` when it fires.
use super::cookie::{self, PeerKeys, Verdict};
use super::handshake::{self, Initiator, TransportKeys};
use super::transport::{MAX_PLAINTEXT, OpenError, Transport};
use crate::dht::ratelimit::RateLimiter;
use crate::identity::{DeviceId, DeviceKey};
use crate::util::log::RateLimit;
use crate::util::rng::Rng;
use crate::wire::{INIT_LEN, MAX_DATAGRAM, Message, Packet, PlainKind, RESP_NOISE_LEN};
use serde::Serialize;
use std::collections::VecDeque;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

#[derive(Debug, Clone, Copy)]
pub struct EndpointConfig {
    pub max_sessions: usize,
    pub queue_len: usize,
    pub handshake_retry: Duration,
    pub handshake_timeout: Duration,
    /// Passive keepalive: sent when data arrived but we have sent nothing for this long.
    pub keepalive: Duration,
    /// A session that receives nothing for this long is closed.
    pub session_timeout: Duration,
    pub rekey_after: Duration,
    pub unknown_log_window: Duration,
}

impl Default for EndpointConfig {
    fn default() -> Self {
        EndpointConfig {
            max_sessions: 32,
            queue_len: 64,
            handshake_retry: Duration::from_millis(250),
            handshake_timeout: Duration::from_secs(5),
            keepalive: Duration::from_secs(10),
            session_timeout: Duration::from_secs(30),
            rekey_after: Duration::from_secs(120),
            unknown_log_window: Duration::from_secs(60),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SessionEvent {
    /// A session to `peer` is ready for messages (both sides hold the keys).
    Established(DeviceId),
    Message(DeviceId, Message),
    /// The handshake to `peer` got no answer in time.
    Failed(DeviceId),
    /// The session to `peer` went silent and was dropped.
    Closed(DeviceId),
    /// An unknown device was refused (rate-limited: `suppressed` refusals were not reported).
    Refused {
        caller: DeviceId,
        suppressed: u64,
    },
}

#[derive(Debug, Clone, Copy, Default, Serialize, PartialEq, Eq)]
pub struct Counters {
    pub rx_packets: u64,
    pub tx_packets: u64,
    pub dropped_malformed: u64,
    pub dropped_replay: u64,
    pub dropped_too_old: u64,
    pub dropped_auth: u64,
    pub dropped_unknown_session: u64,
    pub dropped_tx_queue_full: u64,
    pub refused_unknown_peer: u64,
    pub handshake_failed: u64,
    /// Handshakes refused for a low-order key (a caller claiming a key anyone could claim).
    pub refused_weak_key: u64,
    pub sessions_evicted: u64,
    pub rekeys: u64,
    /// Events lost because the driver did not drain `poll_event` (a driver bug if ever non-zero).
    pub dropped_events: u64,
    /// Message 1s whose mac1 was wrong: sent by someone who does not know our key (no DH).
    pub dropped_bad_mac1: u64,
    /// Message 1s answered with a cookie reply while under load (no DH).
    pub cookie_replies: u64,
    /// Message 1s with a valid cookie over their source's rate while under load (no DH).
    pub handshake_rate_limited: u64,
    /// Cookie replies we took (the callee was under load) and resent message 1 with.
    pub cookies_taken: u64,
}

/// How a session reaches its peer, worst first: a path is only left for a worse one when it has
/// been silent for `PATH_STALE`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum PathClass {
    /// Through a relay node.
    Relay,
    /// A port its router forwards to it (UPnP-IGD, NAT-PMP, PCP), where that is not also the
    /// address its NAT maps its traffic to: a path that depends on a lease in the router.
    Mapped,
    /// A public address: the peer's own, or its NAT's mapping of its traffic (punched).
    Direct,
    /// A private, link-local, shared (CGN) or loopback address: the same network.
    Lan,
}

/// Which of the device's UDP sockets a datagram goes out on or came in on: 0 is the main socket,
/// 1.. the extra ("aux") sockets a birthday punch opens (`device::MAX_AUX`).
pub type Sock = u16;
pub const MAIN_SOCK: Sock = 0;

/// A datagram to send: `len` bytes of the caller's buffer, to `dst`, from socket `sock`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Transmit {
    pub sock: Sock,
    pub dst: SocketAddr,
    pub len: usize,
}

/// A better path that has been silent this long is given up for a worse one that works.
pub const PATH_STALE: Duration = Duration::from_secs(1);
const MAX_RELAYS: usize = 4;
/// Earlier addresses of a session's peer, probed while the session goes through a relay.
const CANDIDATES: usize = 3;

/// Proof of a completed handshake, shared by both sides only: a relay pairs two devices that
/// present the same one (`dht::relay`).
pub fn relay_ticket(hash: &[u8; 32]) -> [u8; 16] {
    use blake2::{Blake2s256, Digest};
    let d = Blake2s256::new().chain_update(b"peercom relay ticket v1").chain_update(hash).finalize();
    let mut t = [0u8; 16];
    t.copy_from_slice(&d[..16]);
    t
}

/// Diffie-Hellman handshakes per second one source address may start while we are under load
/// (a real caller needs one, retries included a few).
const LOADED_DH_PER_SEC: u32 = 4;
const LOADED_DH_BURST: u32 = 4;
const LOADED_SOURCES: usize = 256;
const RESP_LEN: usize = 10 + RESP_NOISE_LEN;

enum State {
    /// Transient, while a slot's state is being replaced.
    Vacant,
    Initiating {
        hs: Initiator,
        packet: [u8; INIT_LEN],
        next_retry: Instant,
        gap: Duration,
        /// The callee's MAC keys, and whether a cookie reply to the last message 1 sent may
        /// still be taken (once per message sent: a forged reply cannot make us send more).
        keys: PeerKeys,
        cookie_wanted: bool,
    },
    Established {
        transport: Box<Transport>,
        /// The responder keeps the initiator's ephemeral key and its reply, to answer a
        /// retransmitted message 1 without a second handshake.
        resp: Option<([u8; 32], [u8; RESP_LEN])>,
        confirmed: bool,
        ticket: [u8; 16],
    },
}

/// Other addresses a handshake is tried at, besides `Slot::addr` (LAN, configured, DHT).
const ALT_ADDRS: usize = 4;

struct Slot {
    peer: DeviceId,
    /// The path: our socket and the peer's address.
    sock: Sock,
    addr: SocketAddr,
    /// While initiating: more candidate addresses; message 1 goes to all of them.
    alt: [Option<SocketAddr>; ALT_ADDRS],
    local_idx: u32,
    remote_idx: u32,
    state: State,
    created: Instant,
    last_rx: Instant,
    /// When an authenticated packet last came straight from `addr`; None until one has (a
    /// handshake, or a packet passed on by a rendezvous node, does not prove the path).
    addr_rx: Option<Instant>,
    /// Other addresses the peer had: probed for a direct path while we go through a relay.
    cands: [Option<SocketAddr>; CANDIDATES],
    /// The peer's port-mapped address, as it told us (`set_peer_mapped`).
    mapped: Option<SocketAddr>,
    /// Armed when a message arrives, cancelled by anything we send (WireGuard's passive
    /// keepalive): the peer learns we are alive even when we have nothing to say.
    keepalive_due: Option<Instant>,
    confirmed_at: Option<Instant>,
}

impl Slot {
    fn confirmed(&self) -> bool {
        matches!(self.state, State::Established { confirmed: true, .. })
    }
}

struct Datagram {
    sock: Sock,
    dst: SocketAddr,
    len: usize,
    data: [u8; MAX_DATAGRAM],
}

pub struct Endpoint {
    key: DeviceKey,
    allowed: Vec<DeviceId>,
    cfg: EndpointConfig,
    slots: Vec<Option<Slot>>,
    tx: VecDeque<Datagram>,
    events: VecDeque<SessionEvent>,
    counters: Counters,
    rng: Rng,
    unknown_log: RateLimit,
    /// Decrypted plaintext of the last data packet; media plaintexts stay here for `take_media`.
    plain: Box<[u8; MAX_DATAGRAM]>,
    media: Option<(DeviceId, usize)>,
    relays: [Option<SocketAddr>; MAX_RELAYS],
    cookies: cookie::Checker,
    /// Per-source DH rate while under load.
    loaded_dh: RateLimiter,
}

impl Endpoint {
    pub fn new(key: DeviceKey, allowed: Vec<DeviceId>, cfg: EndpointConfig, mut rng: Rng) -> Self {
        let own = key.id().x25519_public().unwrap_or([0; 32]);
        let cookies = cookie::Checker::new(&own, Rng::seeded(rng.next_u64()));
        let loaded_dh = RateLimiter::new(LOADED_SOURCES, LOADED_DH_PER_SEC, LOADED_DH_BURST, rng.next_u64());
        Endpoint {
            cookies,
            loaded_dh,
            key,
            allowed,
            slots: (0..cfg.max_sessions).map(|_| None).collect(),
            tx: VecDeque::with_capacity(cfg.queue_len),
            events: VecDeque::with_capacity(cfg.max_sessions * 4),
            counters: Counters::default(),
            rng,
            unknown_log: RateLimit::new(cfg.unknown_log_window),
            plain: Box::new([0; MAX_DATAGRAM]),
            media: None,
            relays: [None; MAX_RELAYS],
            cfg,
        }
    }

    pub fn id(&self) -> DeviceId {
        self.key.id()
    }

    pub fn counters(&self) -> Counters {
        let mut c = self.counters;
        for s in self.slots.iter().flatten() {
            if let State::Established { transport, .. } = &s.state {
                c.rekeys += transport.rekeys;
            }
        }
        c
    }

    /// A handshake to `peer` is under way.
    pub fn is_connecting(&self, peer: &DeviceId) -> bool {
        self.slots.iter().flatten().any(|s| s.peer == *peer && matches!(s.state, State::Initiating { .. }))
    }

    pub fn is_established(&self, peer: &DeviceId) -> bool {
        self.best(peer).is_some()
    }

    /// Where the session to `peer` sends now (it follows the peer when it roams).
    pub fn peer_addr(&self, peer: &DeviceId) -> Option<SocketAddr> {
        self.best(peer).and_then(|i| self.slots[i].as_ref()).map(|s| s.addr)
    }

    /// Which of our sockets the session to `peer` sends from now.
    pub fn path_sock(&self, peer: &DeviceId) -> Option<Sock> {
        self.best(peer).and_then(|i| self.slots[i].as_ref()).map(|s| s.sock)
    }

    /// Some session sends from socket `sock`.
    pub fn uses_sock(&self, sock: Sock) -> bool {
        self.slots.iter().flatten().any(|s| s.sock == sock)
    }

    /// A session to `peer` has had an address at `ip`: where the peer was, not a claim of its.
    pub fn has_seen_ip(&self, peer: &DeviceId, ip: std::net::IpAddr) -> bool {
        self.slots.iter().flatten().filter(|s| s.peer == *peer).any(|s| {
            let addrs = std::iter::once(Some(s.addr)).chain(s.alt).chain(s.cands);
            addrs.flatten().any(|a| a.ip() == ip && !self.relays.contains(&Some(a)))
        })
    }

    /// What kind of path the session to `peer` uses now.
    pub fn path_class(&self, peer: &DeviceId) -> Option<PathClass> {
        self.best(peer).and_then(|i| self.slots[i].as_ref()).map(|s| self.class(s, &s.addr))
    }

    /// An authenticated packet came straight from the session's address within `PATH_STALE`.
    pub fn path_works(&self, now: Instant, peer: &DeviceId) -> bool {
        let slot = self.best(peer).and_then(|i| self.slots[i].as_ref());
        slot.and_then(|s| s.addr_rx).is_some_and(|t| now < t + PATH_STALE)
    }

    /// `peer` told us the public port its router forwards to it; None when it has none, or when
    /// it is also where its NAT maps its own traffic (then it is a direct path like any other).
    pub fn set_peer_mapped(&mut self, peer: &DeviceId, mapped: Option<SocketAddr>) {
        for s in self.slots.iter_mut().flatten().filter(|s| s.peer == *peer) {
            s.mapped = mapped;
        }
    }

    /// `addr` is a relay node: packets from it are passed on from the peer, and a path through
    /// it is the last choice.
    pub fn add_relay(&mut self, addr: SocketAddr) {
        if !self.relays.contains(&Some(addr)) {
            self.relays.rotate_right(1);
            self.relays[0] = Some(addr);
        }
    }

    /// The relay ticket of our session with `peer` (established, confirmed or not).
    pub fn ticket(&self, peer: &DeviceId) -> Option<[u8; 16]> {
        let of = |s: &Slot| match &s.state {
            State::Established { ticket, .. } => Some(*ticket),
            _ => None,
        };
        let best = self.best(peer).and_then(|i| self.slots[i].as_ref()).and_then(of);
        best.or_else(|| self.slots.iter().flatten().filter(|s| s.peer == *peer).find_map(of))
    }

    /// The peer whose session has `ticket`.
    pub fn peer_of_ticket(&self, ticket: &[u8; 16]) -> Option<DeviceId> {
        self.slots.iter().flatten().find_map(|s| match &s.state {
            State::Established { ticket: t, .. } if t == ticket => Some(s.peer),
            _ => None,
        })
    }

    /// Sends a keepalive to each earlier address of `peer` (looking for a direct path while we
    /// go through a relay; both sides doing it punches consistent NATs).
    pub fn probe_candidates(&mut self, now: Instant, peer: &DeviceId) {
        let Some(cands) = self.best(peer).and_then(|i| self.slots[i].as_ref()).map(|s| s.cands) else { return };
        for a in cands.into_iter().flatten() {
            self.probe(now, peer, a);
        }
    }

    /// When anything was last heard from `peer` on any session.
    pub fn last_rx(&self, peer: &DeviceId) -> Option<Instant> {
        self.slots.iter().flatten().filter(|s| s.peer == *peer).map(|s| s.last_rx).max()
    }

    /// Opens a session to `peer` at `addr` unless one is up or under way. An existing session
    /// is announced again with `Established` so callers can treat both cases alike.
    pub fn connect(&mut self, now: Instant, peer: DeviceId, addr: SocketAddr) {
        if self.best(&peer).is_some() {
            self.push_event(SessionEvent::Established(peer));
            return;
        }
        // Under way already: a new address becomes one more candidate, tried at once.
        if let Some(i) = self
            .slots
            .iter()
            .position(|s| s.as_ref().is_some_and(|s| s.peer == peer && matches!(s.state, State::Initiating { .. })))
        {
            let Some(slot) = self.slots[i].as_mut() else { return };
            if slot.addr == addr || slot.alt.contains(&Some(addr)) {
                return;
            }
            let State::Initiating { packet, .. } = &slot.state else { return };
            let p = *packet;
            match slot.alt.iter_mut().find(|a| a.is_none()) {
                Some(free) => *free = Some(addr),
                // Full: the newest address replaces the oldest alternative.
                None => {
                    slot.alt.rotate_left(1);
                    slot.alt[ALT_ADDRS - 1] = Some(addr);
                }
            }
            self.queue(MAIN_SOCK, addr, &p);
            return;
        }
        let Some((local_idx, state)) = self.initiating(peer, now + self.cfg.handshake_retry, self.cfg.handshake_retry)
        else {
            self.counters.handshake_failed += 1;
            self.push_event(SessionEvent::Failed(peer));
            return;
        };
        if let State::Initiating { packet, .. } = &state {
            let p = *packet;
            self.queue(MAIN_SOCK, addr, &p);
        }
        let slot = Slot {
            peer,
            sock: MAIN_SOCK,
            addr,
            alt: [None; ALT_ADDRS],
            local_idx,
            remote_idx: 0,
            state,
            created: now,
            last_rx: now,
            addr_rx: None,
            cands: [None; CANDIDATES],
            mapped: None,
            keepalive_due: None,
            confirmed_at: None,
        };
        self.insert(slot);
    }

    /// A fresh handshake to `peer` under a new index; message 1 is built but not sent.
    fn initiating(&mut self, peer: DeviceId, next_retry: Instant, gap: Duration) -> Option<(u32, State)> {
        let local_idx = self.new_index();
        let mut packet = [0u8; INIT_LEN];
        let off = Packet::write_init_header(&mut packet, local_idx);
        let (hs, n) = handshake::initiate(&self.key, &peer, &mut packet[off..]).ok()?;
        debug_assert_eq!(off + n + 2 * cookie::MAC_LEN, INIT_LEN);
        let keys = PeerKeys::of(&peer.x25519_public()?);
        cookie::seal_macs(&mut packet, &keys, None);
        Some((local_idx, State::Initiating { hs, packet, next_retry, gap, keys, cookie_wanted: true }))
    }

    /// Message 1 of the handshake under way to `peer` (to send through a rendezvous node too).
    pub fn init_packet(&self, peer: &DeviceId) -> Option<&[u8]> {
        self.slots.iter().flatten().find(|s| s.peer == *peer).and_then(|s| match &s.state {
            State::Initiating { packet, .. } => Some(&packet[..]),
            _ => None,
        })
    }

    /// Our reply to message 1 `init`, once `handle_datagram` has answered it (to send back
    /// through the rendezvous node it came by, as well as straight to the caller).
    pub fn reply_to(&self, init: &[u8]) -> Option<&[u8]> {
        let Ok(Packet::HandshakeInit { sender, noise, .. }) = Packet::decode(init) else { return None };
        let eph = noise.get(..32)?;
        self.slots.iter().flatten().find_map(|s| match &s.state {
            State::Established { resp: Some((e, r)), .. } if e == eph && s.remote_idx == sender => Some(&r[..]),
            _ => None,
        })
    }

    /// Encrypts and queues `msg` on the best session to `peer`; false if there is none.
    pub fn send(&mut self, now: Instant, peer: &DeviceId, msg: &Message) -> bool {
        let Some(i) = self.best(peer) else { return false };
        self.send_on(now, i, msg)
    }

    fn send_on(&mut self, now: Instant, i: usize, msg: &Message) -> bool {
        let mut plain = [0u8; 64];
        let Some(n) = msg.encode(&mut plain) else { return false };
        debug_assert!(n <= MAX_PLAINTEXT);
        let Some(slot) = self.slots[i].as_mut() else { return false };
        let State::Established { transport, .. } = &mut slot.state else { return false };
        let (sock, dst) = (slot.sock, slot.addr);
        let receiver = slot.remote_idx;
        slot.keepalive_due = None;
        let Some(d) = Self::reserve(&mut self.tx, &mut self.counters, self.cfg.queue_len) else { return false };
        match transport.seal(now, receiver, &plain[..n], &mut d.data) {
            Some(len) => {
                d.sock = sock;
                d.dst = dst;
                d.len = len;
                true
            }
            None => {
                self.tx.pop_back();
                false
            }
        }
    }

    /// Encrypts a media plaintext straight into `out` (no queue: media has its own pacing and
    /// must not wait behind signalling); returns where to send it, and from which socket.
    pub fn seal_to(&mut self, now: Instant, peer: &DeviceId, plain: &[u8], out: &mut [u8]) -> Option<Transmit> {
        let r = self.seal_plain(now, peer, plain, out)?;
        self.counters.tx_packets += 1;
        Some(r)
    }

    fn seal_plain(&mut self, now: Instant, peer: &DeviceId, plain: &[u8], out: &mut [u8]) -> Option<Transmit> {
        let i = self.best(peer)?;
        let slot = self.slots[i].as_mut()?;
        let State::Established { transport, .. } = &mut slot.state else { return None };
        let len = transport.seal(now, slot.remote_idx, plain, out)?;
        slot.keepalive_due = None;
        Some(Transmit { sock: slot.sock, dst: slot.addr, len })
    }

    fn keepalive_plain() -> Option<([u8; 8], usize)> {
        let mut plain = [0u8; 8];
        let n = Message::Keepalive.encode(&mut plain)?;
        Some((plain, n))
    }

    /// Seals a keepalive on the session to `peer` into `out` (to send another way than the
    /// session's path: through a rendezvous node, or to another address of the peer). An
    /// authenticated packet arriving from a new address moves the peer's side of the session
    /// there, so this is how a device that changed address is found again.
    pub fn seal_keepalive(&mut self, now: Instant, peer: &DeviceId, out: &mut [u8]) -> Option<usize> {
        let (plain, n) = Self::keepalive_plain()?;
        self.seal_to(now, peer, &plain[..n], out).map(|t| t.len)
    }

    /// Sends a keepalive on the session to `peer` to `addr` instead of the session's path.
    pub fn probe(&mut self, now: Instant, peer: &DeviceId, addr: SocketAddr) {
        let mut buf = [0u8; 64];
        let Some((plain, n)) = Self::keepalive_plain() else { return };
        if let Some(t) = self.seal_plain(now, peer, &plain[..n], &mut buf) {
            self.queue(MAIN_SOCK, addr, &buf[..t.len]);
        }
    }

    /// The media plaintext (video, audio or feedback) of the datagram just handled, if it was one.
    pub fn take_media(&mut self) -> Option<(DeviceId, &[u8])> {
        let (peer, n) = self.media.take()?;
        Some((peer, &self.plain[..n]))
    }

    pub fn handle_datagram(&mut self, now: Instant, from: SocketAddr, bytes: &[u8]) {
        self.handle(now, (MAIN_SOCK, from), true, bytes);
    }

    /// A datagram that came in on socket `sock` (see `Sock`).
    pub fn handle_datagram_on(&mut self, now: Instant, sock: Sock, from: SocketAddr, bytes: &[u8]) {
        self.handle(now, (sock, from), true, bytes);
    }

    /// A datagram `from` sent that reached us another way (passed on by a rendezvous node): it
    /// may move a session to `from`, but does not prove that path works.
    pub fn handle_relayed(&mut self, now: Instant, from: SocketAddr, bytes: &[u8]) {
        self.handle(now, (MAIN_SOCK, from), false, bytes);
    }

    fn handle(&mut self, now: Instant, from: (Sock, SocketAddr), direct: bool, bytes: &[u8]) {
        self.media = None;
        self.counters.rx_packets += 1;
        match Packet::decode(bytes) {
            Err(_) => self.counters.dropped_malformed += 1,
            Ok(Packet::HandshakeInit { sender, noise, .. }) => self.on_init(now, from, sender, noise, bytes),
            Ok(Packet::CookieReply { receiver, nonce, sealed }) => self.on_cookie(from, receiver, nonce, sealed),
            Ok(Packet::HandshakeResp { sender, receiver, noise }) => {
                self.on_resp(now, from, direct, (sender, receiver), noise)
            }
            Ok(Packet::Data { receiver, epoch, counter, header, ciphertext }) => {
                self.on_data(now, (from, direct), receiver, epoch, counter, header, ciphertext)
            }
        }
    }

    /// Whether message 1 `msg` from `from` may cost us a Diffie-Hellman (session/cookie.rs).
    fn admit_init(&mut self, now: Instant, (sock, from): (Sock, SocketAddr), sender: u32, msg: &[u8]) -> bool {
        match self.cookies.check(now, from, msg) {
            Verdict::BadMac1 => {
                self.counters.dropped_bad_mac1 += 1;
                false
            }
            Verdict::NeedCookie => {
                let mut reply = [0u8; cookie::COOKIE_REPLY_LEN];
                if let Some(n) = self.cookies.reply(now, from, sender, msg, &mut reply) {
                    self.counters.cookie_replies += 1;
                    self.queue(sock, from, &reply[..n]);
                }
                false
            }
            Verdict::Accept if self.cookies.under_load(now) && !self.loaded_dh.allow(now, from.ip()) => {
                self.counters.handshake_rate_limited += 1;
                false
            }
            Verdict::Accept => true,
        }
    }

    /// The callee is under load: take its cookie and send message 1 again at once, with mac2.
    fn on_cookie(&mut self, (sock, from): (Sock, SocketAddr), receiver: u32, nonce: &[u8], sealed: &[u8]) {
        let Some(i) = self.find(receiver) else {
            self.counters.dropped_unknown_session += 1;
            return;
        };
        let Some(slot) = self.slots[i].as_mut() else { return };
        let State::Initiating { packet, keys, cookie_wanted, .. } = &mut slot.state else {
            self.counters.dropped_replay += 1;
            return;
        };
        let Some(mac1) = cookie::mac1_of(&packet[..]) else { return };
        if !*cookie_wanted {
            self.counters.dropped_replay += 1;
            return;
        }
        let Some(c) = cookie::open_reply(keys, &mac1, nonce, sealed) else {
            self.counters.dropped_auth += 1;
            return;
        };
        *cookie_wanted = false;
        cookie::seal_macs(&mut packet[..], keys, Some(&c));
        let p = *packet;
        self.counters.cookies_taken += 1;
        self.queue(sock, from, &p);
    }

    fn on_init(&mut self, now: Instant, (sock, from): (Sock, SocketAddr), sender: u32, noise: &[u8], msg: &[u8]) {
        // A retransmitted message 1: answer with the same reply.
        let eph = &noise[..32];
        let mut resend = None;
        for s in self.slots.iter().flatten() {
            if let State::Established { resp: Some((e, r)), .. } = &s.state {
                if e == eph && s.remote_idx == sender {
                    resend = Some(*r);
                }
            }
        }
        if let Some(r) = resend {
            self.queue(sock, from, &r);
            return;
        }
        if !self.admit_init(now, (sock, from), sender, msg) {
            return;
        }
        let responder = match handshake::respond(&self.key, noise) {
            Ok(r) => r,
            Err(handshake::HsError::WeakKey) => {
                self.counters.refused_weak_key += 1;
                return;
            }
            Err(_) => {
                self.counters.handshake_failed += 1;
                return;
            }
        };
        let caller = responder.caller;
        if !self.allowed.contains(&caller) {
            // No reply at all: an unknown device learns nothing beyond silence.
            self.counters.refused_unknown_peer += 1;
            if let Some(suppressed) = self.unknown_log.allow(now) {
                self.push_event(SessionEvent::Refused { caller, suppressed });
            }
            return;
        }
        let local_idx = self.new_index();
        let mut packet = [0u8; RESP_LEN];
        let off = Packet::write_resp_header(&mut packet, local_idx, sender);
        let (n, keys) = match responder.accept(&mut packet[off..]) {
            Ok(r) => r,
            Err(_) => {
                self.counters.handshake_failed += 1;
                return;
            }
        };
        debug_assert_eq!(off + n, RESP_LEN);
        self.queue(sock, from, &packet);
        let mut e = [0u8; 32];
        e.copy_from_slice(eph);
        let slot = Slot {
            peer: caller,
            sock,
            addr: from,
            alt: [None; ALT_ADDRS],
            local_idx,
            remote_idx: sender,
            state: State::Established {
                ticket: relay_ticket(&keys.hash),
                transport: self.transport(keys, now),
                resp: Some((e, packet)),
                confirmed: false,
            },
            created: now,
            last_rx: now,
            addr_rx: None,
            cands: [None; CANDIDATES],
            mapped: None,
            keepalive_due: None,
            confirmed_at: None,
        };
        self.insert(slot);
    }

    fn on_resp(&mut self, now: Instant, from: (Sock, SocketAddr), direct: bool, ids: (u32, u32), noise: &[u8]) {
        let (sender, receiver) = ids;
        let Some(i) = self.find(receiver) else {
            self.counters.dropped_unknown_session += 1;
            return;
        };
        let Some(mut slot) = self.slots[i].take() else { return };
        let state = std::mem::replace(&mut slot.state, State::Vacant);
        let State::Initiating { hs, next_retry, gap, .. } = state else {
            // A duplicate reply for a finished handshake.
            slot.state = state;
            self.slots[i] = Some(slot);
            self.counters.dropped_replay += 1;
            return;
        };
        match hs.finish(noise) {
            Ok(keys) => {
                let ticket = relay_ticket(&keys.hash);
                slot.state =
                    State::Established { transport: self.transport(keys, now), resp: None, confirmed: true, ticket };
                self.move_path(&mut slot, now, from, direct);
                slot.remote_idx = sender;
                slot.last_rx = now;
                slot.confirmed_at = Some(now);
                let peer = slot.peer;
                self.slots[i] = Some(slot);
                // Confirms the session to the responder right away.
                self.send_on(now, i, &Message::Keepalive);
                self.push_event(SessionEvent::Established(peer));
            }
            Err(_) => {
                // A forged or corrupted reply used up the handshake state. Start a fresh one in
                // the same slot (same deadline), so a forgery cannot abort the call; it goes out
                // only when the retry timer fires, so a forgery never makes us send (no
                // amplification, found by the handshake fuzz target).
                self.counters.handshake_failed += 1;
                match self.initiating(slot.peer, next_retry, gap) {
                    Some((local_idx, state)) => {
                        slot.local_idx = local_idx;
                        slot.state = state;
                        self.slots[i] = Some(slot);
                    }
                    None => self.push_event(SessionEvent::Failed(slot.peer)),
                }
            }
        }
    }

    #[allow(clippy::too_many_arguments)]
    fn on_data(
        &mut self,
        now: Instant,
        (from, direct): ((Sock, SocketAddr), bool),
        receiver: u32,
        epoch: u8,
        counter: u64,
        header: &[u8],
        ct: &[u8],
    ) {
        let Some(i) = self.find(receiver) else {
            self.counters.dropped_unknown_session += 1;
            return;
        };
        let Some(mut slot) = self.slots[i].take() else { return };
        let r = self.on_data_in(now, &mut slot, (from, direct), epoch, counter, header, ct);
        self.slots[i] = Some(slot);
        let Some((peer, n, newly_confirmed)) = r else { return };
        let kind = PlainKind::of(&self.plain[..n]);
        let msg = if kind == Some(PlainKind::Signal) { Message::decode(&self.plain[..n]) } else { None };
        let substantive =
            matches!(msg, Some(m) if m != Message::Keepalive) || matches!(kind, Some(k) if k != PlainKind::Signal);
        if let Some(slot) = self.slots[i].as_mut()
            && substantive
            && slot.keepalive_due.is_none()
        {
            slot.keepalive_due = Some(now + self.cfg.keepalive);
        }
        if newly_confirmed {
            self.push_event(SessionEvent::Established(peer));
        }
        match (kind, msg) {
            (Some(PlainKind::Signal), Some(Message::Keepalive)) => {}
            (Some(PlainKind::Signal), Some(m)) => self.push_event(SessionEvent::Message(peer, m)),
            (Some(PlainKind::Video | PlainKind::Audio | PlainKind::Feedback), _) => self.media = Some((peer, n)),
            _ => self.counters.dropped_malformed += 1,
        }
    }

    /// Opens a data packet on `slot`: (peer, plaintext length, newly confirmed).
    #[allow(clippy::too_many_arguments)]
    fn on_data_in(
        &mut self,
        now: Instant,
        slot: &mut Slot,
        (from, direct): ((Sock, SocketAddr), bool),
        epoch: u8,
        counter: u64,
        header: &[u8],
        ct: &[u8],
    ) -> Option<(DeviceId, usize, bool)> {
        let State::Established { transport, confirmed, resp, .. } = &mut slot.state else {
            self.counters.dropped_unknown_session += 1;
            return None;
        };
        let n = match transport.open(epoch, counter, header, ct, &mut self.plain[..]) {
            Ok(n) => n,
            Err(e) => {
                match e {
                    OpenError::Duplicate => self.counters.dropped_replay += 1,
                    OpenError::TooOld => self.counters.dropped_too_old += 1,
                    OpenError::Auth | OpenError::Epoch | OpenError::Size => self.counters.dropped_auth += 1,
                }
                return None;
            }
        };
        let newly_confirmed = !*confirmed;
        if newly_confirmed {
            *confirmed = true;
            *resp = None;
            slot.confirmed_at = Some(now);
        }
        slot.last_rx = now;
        self.move_path(slot, now, from, direct);
        Some((slot.peer, n, newly_confirmed))
    }

    fn class(&self, slot: &Slot, addr: &SocketAddr) -> PathClass {
        if self.relays.contains(&Some(*addr)) {
            return PathClass::Relay;
        }
        if slot.mapped == Some(*addr) {
            return PathClass::Mapped;
        }
        let lan = match addr.ip() {
            std::net::IpAddr::V4(ip) => {
                let o = ip.octets();
                // RFC 1918, link-local, loopback, and RFC 6598 shared space (same carrier NAT).
                ip.is_private() || ip.is_link_local() || ip.is_loopback() || (o[0] == 100 && o[1] & 0xc0 == 64)
            }
            std::net::IpAddr::V6(ip) => {
                let s = ip.segments()[0];
                ip.is_loopback() || s & 0xfe00 == 0xfc00 || s & 0xffc0 == 0xfe80
            }
        };
        if lan { PathClass::Lan } else { PathClass::Direct }
    }

    /// Roaming, as WireGuard does it (an authenticated packet from a new address moves the
    /// session there), except that a path is not left for a worse class while it still works.
    /// A path is our socket and the peer's address: the same address on another socket of ours
    /// is another path (a birthday punch opens one on an aux socket).
    fn move_path(&self, slot: &mut Slot, now: Instant, (sock, from): (Sock, SocketAddr), direct: bool) {
        if (sock, from) == (slot.sock, slot.addr) {
            if direct {
                slot.addr_rx = Some(now);
            }
            return;
        }
        let proven = slot.addr_rx.is_some_and(|t| now < t + PATH_STALE);
        if proven && self.class(slot, &from) < self.class(slot, &slot.addr) {
            return;
        }
        let old = slot.addr;
        if self.class(slot, &old) != PathClass::Relay && !slot.cands.contains(&Some(old)) {
            slot.cands.rotate_right(1);
            slot.cands[0] = Some(old);
        }
        slot.sock = sock;
        slot.addr = from;
        slot.addr_rx = direct.then_some(now);
        // Answer at once on the new path, so the peer learns it works too.
        if direct {
            slot.keepalive_due = Some(now);
        }
    }

    pub fn handle_timeout(&mut self, now: Instant) {
        for i in 0..self.slots.len() {
            let Some(slot) = self.slots[i].as_mut() else { continue };
            let peer = slot.peer;
            match &mut slot.state {
                State::Initiating { packet, next_retry, gap, cookie_wanted, .. } => {
                    if now >= slot.created + self.cfg.handshake_timeout {
                        self.slots[i] = None;
                        self.counters.handshake_failed += 1;
                        self.push_event(SessionEvent::Failed(peer));
                    } else if now >= *next_retry {
                        *gap = (*gap * 2).min(Duration::from_secs(1));
                        *next_retry = now + *gap;
                        *cookie_wanted = true;
                        let (dst, alt, p) = (slot.addr, slot.alt, *packet);
                        self.queue(MAIN_SOCK, dst, &p);
                        for a in alt.into_iter().flatten() {
                            self.queue(MAIN_SOCK, a, &p);
                        }
                    }
                }
                State::Vacant => self.slots[i] = None,
                State::Established { confirmed, .. } => {
                    let confirmed = *confirmed;
                    if !confirmed && now >= slot.created + self.cfg.handshake_timeout {
                        self.slots[i] = None;
                    } else if now >= slot.last_rx + self.cfg.session_timeout {
                        self.slots[i] = None;
                        if !self.slots.iter().flatten().any(|s| s.peer == peer && s.confirmed()) {
                            self.push_event(SessionEvent::Closed(peer));
                        }
                    } else if confirmed && slot.keepalive_due.is_some_and(|t| now >= t) {
                        self.send_on(now, i, &Message::Keepalive);
                    }
                }
            }
        }
    }

    pub fn poll_transmit(&mut self, buf: &mut [u8]) -> Option<Transmit> {
        let d = self.tx.pop_front()?;
        let n = d.len.min(buf.len());
        buf[..n].copy_from_slice(&d.data[..n]);
        self.counters.tx_packets += 1;
        Some(Transmit { sock: d.sock, dst: d.dst, len: n })
    }

    pub fn poll_event(&mut self) -> Option<SessionEvent> {
        self.events.pop_front()
    }

    pub fn poll_timeout(&self) -> Option<Instant> {
        let mut t: Option<Instant> = None;
        let mut at = |x: Instant| t = Some(t.map_or(x, |y| y.min(x)));
        for s in self.slots.iter().flatten() {
            match &s.state {
                State::Initiating { next_retry, .. } => {
                    at(*next_retry);
                    at(s.created + self.cfg.handshake_timeout);
                }
                State::Vacant => {}
                State::Established { confirmed, .. } => {
                    if !*confirmed {
                        at(s.created + self.cfg.handshake_timeout);
                    }
                    at(s.last_rx + self.cfg.session_timeout);
                    if let (true, Some(t)) = (*confirmed, s.keepalive_due) {
                        at(t);
                    }
                }
            }
        }
        t
    }

    // ---- internals ----

    fn transport(&self, keys: TransportKeys, now: Instant) -> Box<Transport> {
        let mut keys = keys;
        let t = Box::new(Transport::new(keys.send, keys.recv, now, self.cfg.rekey_after));
        zeroize::Zeroize::zeroize(&mut keys.send);
        zeroize::Zeroize::zeroize(&mut keys.recv);
        t
    }

    /// The session to send on: the most recently confirmed one.
    fn best(&self, peer: &DeviceId) -> Option<usize> {
        self.slots
            .iter()
            .enumerate()
            .filter_map(|(i, s)| s.as_ref().map(|s| (i, s)))
            .filter(|(_, s)| s.peer == *peer && s.confirmed())
            .max_by_key(|(_, s)| s.confirmed_at)
            .map(|(i, _)| i)
    }

    fn find(&self, local_idx: u32) -> Option<usize> {
        self.slots.iter().position(|s| s.as_ref().is_some_and(|s| s.local_idx == local_idx))
    }

    fn new_index(&mut self) -> u32 {
        loop {
            let i = self.rng.next_u32();
            if i != 0 && self.find(i).is_none() {
                return i;
            }
        }
    }

    fn insert(&mut self, slot: Slot) {
        let i = match self.slots.iter().position(Option::is_none) {
            Some(i) => i,
            None => {
                // Full: evict an unconfirmed responder first, else the longest-silent session.
                self.counters.sessions_evicted += 1;
                let unconfirmed = self.slots.iter().position(|s| {
                    s.as_ref().is_some_and(|s| matches!(s.state, State::Established { confirmed: false, .. }))
                });
                unconfirmed.unwrap_or_else(|| {
                    self.slots
                        .iter()
                        .enumerate()
                        .min_by_key(|(_, s)| s.as_ref().map(|s| s.last_rx))
                        .map(|(i, _)| i)
                        .unwrap_or(0)
                })
            }
        };
        self.slots[i] = Some(slot);
    }

    fn reserve<'a>(tx: &'a mut VecDeque<Datagram>, counters: &mut Counters, cap: usize) -> Option<&'a mut Datagram> {
        if tx.len() >= cap {
            // Drop the oldest: fresh packets matter more than stale ones.
            tx.pop_front();
            counters.dropped_tx_queue_full += 1;
        }
        tx.push_back(Datagram {
            sock: MAIN_SOCK,
            dst: SocketAddr::from(([0, 0, 0, 0], 0)),
            len: 0,
            data: [0u8; MAX_DATAGRAM],
        });
        tx.back_mut()
    }

    fn queue(&mut self, sock: Sock, dst: SocketAddr, bytes: &[u8]) {
        if let Some(d) = Self::reserve(&mut self.tx, &mut self.counters, self.cfg.queue_len) {
            d.sock = sock;
            d.dst = dst;
            d.len = bytes.len();
            d.data[..bytes.len()].copy_from_slice(bytes);
        }
    }

    fn push_event(&mut self, e: SessionEvent) {
        if self.events.len() < self.events.capacity() {
            self.events.push_back(e);
        } else {
            self.counters.dropped_events += 1;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::identity::DeviceKey;

    const MS: Duration = Duration::from_millis(1);

    fn ep(n: u8, allowed: &[u8]) -> Endpoint {
        let allowed = allowed.iter().map(|a| DeviceKey::from_seed([*a; 32]).id()).collect();
        Endpoint::new(DeviceKey::from_seed([n; 32]), allowed, EndpointConfig::default(), Rng::seeded(u64::from(n)))
    }

    fn addr(n: u8) -> SocketAddr {
        SocketAddr::from(([10, 0, 0, n], 7600))
    }

    fn drain(e: &mut Endpoint) -> Vec<(SocketAddr, Vec<u8>)> {
        let mut buf = [0u8; MAX_DATAGRAM];
        let mut v = Vec::new();
        while let Some(t) = e.poll_transmit(&mut buf) {
            v.push((t.dst, buf[..t.len].to_vec()));
        }
        v
    }

    fn events(e: &mut Endpoint) -> Vec<SessionEvent> {
        std::iter::from_fn(|| e.poll_event()).collect()
    }

    #[test]
    fn a_forged_message_1_as_a_weak_key_gets_no_answer_even_if_that_key_is_allowed() {
        let t0 = Instant::now();
        // The identity point as an Ed25519 key (config validation refuses it; here it is
        // allowed anyway): its X25519 form is u = 0, so every DH a forger needs is zero.
        let mut identity = [0u8; 32];
        identity[0] = 1;
        let key = DeviceKey::from_seed([2; 32]);
        let rs = key.id().x25519_public().unwrap();
        let mut b = Endpoint::new(key, vec![DeviceId::from_bytes(identity)], EndpointConfig::default(), Rng::seeded(2));
        let m1 = super::super::handshake::forge::message_1(rs, [0; 32], [0; 32], &identity);
        let mut pkt = [0u8; INIT_LEN];
        let off = Packet::write_init_header(&mut pkt, 77);
        pkt[off..off + m1.len()].copy_from_slice(&m1);
        cookie::seal_macs(&mut pkt, &PeerKeys::of(&rs), None);
        b.handle_datagram(t0, addr(9), &pkt);
        assert!(drain(&mut b).is_empty(), "no answer");
        assert!(events(&mut b).is_empty(), "nothing rings");
        assert_eq!(b.counters().refused_weak_key, 1);
    }

    #[test]
    fn handshake_retries_then_fails_in_virtual_time() {
        let t0 = Instant::now();
        let mut a = ep(1, &[2]);
        let b = DeviceKey::from_seed([2; 32]).id();
        a.connect(t0, b, addr(2));
        let mut sends = vec![(0, drain(&mut a).len())];
        let mut now = t0;
        while let Some(t) = a.poll_timeout() {
            now = t;
            a.handle_timeout(now);
            let n = drain(&mut a).len();
            if n > 0 {
                sends.push(((now - t0).as_millis(), n));
            }
            if !events(&mut a).is_empty() {
                break;
            }
        }
        // 0, +500, +1000 (capped), ... until 5 s, then Failed.
        assert_eq!(sends.iter().map(|s| s.0).collect::<Vec<_>>(), [0, 250, 750, 1750, 2750, 3750, 4750]);
        assert_eq!(now - t0, Duration::from_secs(5));
        assert_eq!(a.counters().handshake_failed, 1);
        assert_eq!(a.poll_timeout(), None);
    }

    #[test]
    fn a_handshake_tries_every_candidate_address_and_settles_on_the_one_that_answers() {
        let t0 = Instant::now();
        let mut a = ep(1, &[2]);
        let mut b = ep(2, &[1]);
        // A stale address first (e.g. a configured hint), then the one the DHT found.
        a.connect(t0, b.id(), addr(9));
        assert_eq!(drain(&mut a).iter().map(|d| d.0).collect::<Vec<_>>(), [addr(9)]);
        a.connect(t0 + MS, b.id(), addr(2));
        let sent = drain(&mut a);
        assert_eq!(sent.iter().map(|d| d.0).collect::<Vec<_>>(), [addr(2)], "the new candidate is tried at once");
        a.connect(t0 + MS, b.id(), addr(2));
        assert!(drain(&mut a).is_empty(), "a known candidate is not tried twice");
        // Retries go to every candidate.
        a.handle_timeout(t0 + 300 * MS);
        assert_eq!(drain(&mut a).iter().map(|d| d.0).collect::<Vec<_>>(), [addr(9), addr(2)]);
        b.handle_datagram(t0 + 2 * MS, addr(1), &sent[0].1);
        let resp = drain(&mut b);
        a.handle_datagram(t0 + 3 * MS, addr(2), &resp[0].1);
        assert_eq!(events(&mut a), [SessionEvent::Established(b.id())]);
        assert!(a.send(t0 + 4 * MS, &b.id(), &Message::Keepalive));
        assert!(drain(&mut a).iter().all(|d| d.0 == addr(2)), "the session uses the address that answered");
    }

    #[test]
    fn retransmitted_init_gets_the_cached_reply_and_replies_never_amplify() {
        let t0 = Instant::now();
        let mut a = ep(1, &[2]);
        let mut b = ep(2, &[1]);
        a.connect(t0, b.id(), addr(2));
        let init = drain(&mut a).remove(0).1;
        b.handle_datagram(t0, addr(1), &init);
        let r1 = drain(&mut b);
        b.handle_datagram(t0 + MS, addr(1), &init);
        let r2 = drain(&mut b);
        assert_eq!(r1, r2, "same reply, not a second handshake");
        assert!(r1[0].1.len() < init.len());
        assert_eq!(b.slots.iter().flatten().count(), 1);
        // B only reports the session once A's first data packet proves A holds the keys.
        assert!(events(&mut b).is_empty());
        a.handle_datagram(t0 + MS, addr(2), &r1[0].1);
        assert_eq!(events(&mut a), [SessionEvent::Established(b.id())]);
        let confirm = drain(&mut a);
        b.handle_datagram(t0 + 2 * MS, addr(1), &confirm[0].1);
        assert_eq!(events(&mut b), [SessionEvent::Established(a.id())]);
        // A duplicate reply is not a new session.
        a.handle_datagram(t0 + 3 * MS, addr(2), &r1[0].1);
        assert_eq!(a.counters().dropped_replay, 1);
    }

    fn established(t0: Instant) -> (Endpoint, Endpoint) {
        let mut a = ep(1, &[2]);
        let mut b = ep(2, &[1]);
        a.connect(t0, b.id(), addr(2));
        for _ in 0..3 {
            for (_, p) in drain(&mut a) {
                b.handle_datagram(t0, addr(1), &p);
            }
            for (_, p) in drain(&mut b) {
                a.handle_datagram(t0, addr(2), &p);
            }
        }
        events(&mut a);
        events(&mut b);
        assert!(a.is_established(&b.id()) && b.is_established(&a.id()));
        (a, b)
    }

    #[test]
    fn a_keepalive_is_33_bytes_on_the_wire() {
        let t0 = Instant::now();
        let (mut a, b) = established(t0);
        let mut out = [0u8; MAX_DATAGRAM];
        // The 15-byte data header (type, version, receiver index, epoch, counter), the 2-byte
        // plaintext and the 16-byte tag (PROTOCOL.md, SECURITY.md).
        assert_eq!(a.seal_keepalive(t0, &b.id(), &mut out), Some(33));
    }

    #[test]
    fn passive_keepalive_and_idle_close() {
        let t0 = Instant::now();
        let (mut a, mut b) = established(t0);
        assert!(a.send(t0, &b.id(), &Message::Ringing { call: 1 }));
        for (_, p) in drain(&mut a) {
            b.handle_datagram(t0, addr(1), &p);
        }
        assert_eq!(events(&mut b), [SessionEvent::Message(a.id(), Message::Ringing { call: 1 })]);
        // B got data and has been silent for 10 s: it sends one keepalive.
        let t = t0 + Duration::from_secs(10);
        assert_eq!(b.poll_timeout(), Some(t));
        b.handle_timeout(t);
        let ka = drain(&mut b);
        assert_eq!(ka.len(), 1);
        b.handle_timeout(t + Duration::from_secs(10));
        assert!(drain(&mut b).is_empty(), "keepalives do not answer keepalives");
        a.handle_datagram(t, addr(2), &ka[0].1);
        assert!(events(&mut a).is_empty(), "keepalives are not messages");
        // Nothing more heard: closed 30 s after the last packet.
        a.handle_timeout(t + Duration::from_secs(30) - MS);
        assert!(events(&mut a).is_empty());
        a.handle_timeout(t + Duration::from_secs(30));
        assert_eq!(events(&mut a), [SessionEvent::Closed(b.id())]);
        assert!(!a.is_established(&b.id()));
    }

    #[test]
    fn forged_reply_does_not_abort_the_handshake() {
        let t0 = Instant::now();
        let mut a = ep(1, &[2]);
        let mut b = ep(2, &[1]);
        a.connect(t0, b.id(), addr(2));
        let init = drain(&mut a).remove(0).1;
        let idx = u32::from_le_bytes([init[2], init[3], init[4], init[5]]);
        let mut forged = [7u8; RESP_LEN];
        Packet::write_resp_header(&mut forged, 99, idx);
        a.handle_datagram(t0, addr(9), &forged);
        assert_eq!(a.counters().handshake_failed, 1);
        assert!(events(&mut a).is_empty());
        assert!(drain(&mut a).is_empty(), "a forged reply must not make us send anything");
        // A restarted its handshake; it goes out on the retry timer and still completes.
        a.handle_timeout(t0 + Duration::from_millis(250));
        let init2 = drain(&mut a).remove(0).1;
        assert_ne!(init2, init);
        b.handle_datagram(t0, addr(1), &init2);
        for (_, p) in drain(&mut b) {
            a.handle_datagram(t0, addr(2), &p);
        }
        assert_eq!(events(&mut a), [SessionEvent::Established(b.id())]);
    }

    /// Message 1s as a flooder sends them: valid mac1 (it knows B's key), from unknown keys.
    fn flood_packets(b: &DeviceId, keys: u8) -> Vec<Vec<u8>> {
        (0..keys)
            .map(|k| {
                let mut x = ep(100 + k, &[]);
                x.connect(Instant::now(), *b, addr(2));
                drain(&mut x).remove(0).1
            })
            .collect()
    }

    #[test]
    fn a_flood_of_message_1s_costs_no_dh_under_load_and_a_real_caller_gets_in_after_one_cookie() {
        let t0 = Instant::now();
        let mut b = ep(2, &[1]);
        let flood = flood_packets(&b.id(), 32);
        // 2,000 message 1s in 200 ms (10,000/s) from many addresses and ports.
        for i in 0..2000u32 {
            let from = SocketAddr::from(([10, 1, (i % 200) as u8, (i / 200) as u8], 1000 + (i % 977) as u16));
            b.handle_datagram(t0 + i * MS / 10, from, &flood[i as usize % flood.len()]);
            drain(&mut b);
        }
        let c = b.counters();
        // Each DH on an unknown key ends as a refusal: only those before load set in got one.
        assert!(c.refused_unknown_peer <= u64::from(cookie::LOAD_THRESHOLD), "{c:?}");
        assert!(c.cookie_replies >= 2000 - u64::from(cookie::LOAD_THRESHOLD) - 1, "{c:?}");
        // Still under load: a real caller's message 1 gets a cookie, its second one the session.
        let t1 = t0 + 200 * MS;
        let mut a = ep(1, &[2]);
        a.connect(t1, b.id(), addr(2));
        let m1 = drain(&mut a).remove(0).1;
        b.handle_datagram(t1, addr(1), &m1);
        let reply = drain(&mut b);
        assert_eq!(reply.len(), 1);
        assert_eq!(reply[0].1[0], crate::wire::PacketType::CookieReply as u8);
        // A forged cookie reply is refused and sends nothing.
        let mut forged = reply[0].1.clone();
        forged[40] ^= 1;
        a.handle_datagram(t1, addr(2), &forged);
        assert!(drain(&mut a).is_empty());
        assert_eq!(a.counters().dropped_auth, 1);
        a.handle_datagram(t1, addr(2), &reply[0].1);
        let again = drain(&mut a);
        assert_eq!(again.len(), 1, "message 1 again at once, with mac2");
        assert_eq!(a.counters().cookies_taken, 1);
        // The same reply twice does not make A send twice.
        a.handle_datagram(t1, addr(2), &reply[0].1);
        assert!(drain(&mut a).is_empty());
        b.handle_datagram(t1, addr(1), &again[0].1);
        for (_, p) in drain(&mut b) {
            a.handle_datagram(t1, addr(2), &p);
        }
        assert_eq!(events(&mut a), [SessionEvent::Established(b.id())]);
        // A flooder that does receive at its address (it has a cookie) is held to its rate.
        let before = b.counters().refused_unknown_peer;
        let mut x = ep(200, &[]);
        x.connect(t1, b.id(), addr(2));
        let xm1 = drain(&mut x).remove(0).1;
        b.handle_datagram(t1, addr(50), &xm1);
        let cookie_reply = drain(&mut b).remove(0).1;
        x.handle_datagram(t1, addr(2), &cookie_reply);
        let with_cookie = drain(&mut x).remove(0).1;
        for i in 0..100u32 {
            b.handle_datagram(t1 + i * MS, addr(50), &with_cookie);
            drain(&mut b);
        }
        let c = b.counters();
        // 100 ms at 4/s with a burst of 4: at most 4 DHs.
        assert!(c.refused_unknown_peer - before <= u64::from(LOADED_DH_BURST), "{c:?}");
        assert!(c.handshake_rate_limited >= 95, "{c:?}");
    }

    #[test]
    fn message_1s_without_our_key_cost_a_hash_and_get_no_answer() {
        let t0 = Instant::now();
        let mut b = ep(2, &[1]);
        let mut a = ep(1, &[3]);
        // A calls device 3 but sends it to B: its mac1 is keyed by 3's key, not B's.
        a.connect(t0, DeviceKey::from_seed([3; 32]).id(), addr(2));
        let m1 = drain(&mut a).remove(0).1;
        b.handle_datagram(t0, addr(1), &m1);
        assert!(drain(&mut b).is_empty());
        assert_eq!((b.counters().dropped_bad_mac1, b.counters().handshake_failed), (1, 0));
    }

    #[test]
    fn full_table_evicts_unconfirmed_sessions_first() {
        let t0 = Instant::now();
        let (mut a, b) = established(t0);
        // 40 replayed inits from B's key fill the table with unconfirmed sessions ...
        let mut a2 = ep(2, &[1]);
        for i in 0..40 {
            a2.slots.iter_mut().for_each(|s| *s = None);
            a2.connect(t0, a.id(), addr(1));
            let init = drain(&mut a2).remove(0).1;
            // Spread out, so that A is not under load (it would answer with cookies).
            a.handle_datagram(t0 + i * 100 * MS, addr(2), &init);
            drain(&mut a);
        }
        assert_eq!(a.slots.iter().flatten().count(), a.cfg.max_sessions);
        assert!(a.counters().sessions_evicted > 0);
        // ... but the confirmed session survives and still works.
        assert!(a.send(t0, &b.id(), &Message::Keepalive));
    }

    #[test]
    fn roaming_moves_the_session_to_the_new_address() {
        let t0 = Instant::now();
        let (mut a, mut b) = established(t0);
        a.send(t0, &b.id(), &Message::Ringing { call: 3 });
        let p = drain(&mut a).remove(0).1;
        b.handle_datagram(t0, addr(77), &p);
        b.send(t0, &a.id(), &Message::Ringing { call: 4 });
        assert_eq!(drain(&mut b)[0].0, addr(77));
        // An unauthenticated packet from elsewhere does not move it.
        let mut t = p.clone();
        t[20] ^= 1;
        t[7..15].copy_from_slice(&500u64.to_le_bytes());
        b.handle_datagram(t0, addr(88), &t);
        b.send(t0, &a.id(), &Message::Ringing { call: 5 });
        assert_eq!(drain(&mut b)[0].0, addr(77));
    }

    fn public(n: u8) -> SocketAddr {
        SocketAddr::from(([198, 51, 100, n], 7600))
    }

    /// A packet from A, sealed now, to hand to B from some address.
    fn from_a(a: &mut Endpoint, b: &DeviceId, now: Instant) -> Vec<u8> {
        a.send(now, b, &Message::Ringing { call: 1 });
        drain(a).remove(0).1
    }

    #[test]
    fn a_working_path_is_not_left_for_a_worse_one_until_it_goes_quiet() {
        let t0 = Instant::now();
        let (mut a, mut b) = established(t0);
        let (ida, idb) = (a.id(), b.id());
        let relay = public(9);
        b.add_relay(relay);
        // B hears A on the LAN.
        let p = from_a(&mut a, &idb, t0);
        b.handle_datagram(t0, addr(1), &p);
        assert_eq!((b.path_class(&ida), b.path_works(t0, &ida)), (Some(PathClass::Lan), true));
        // The same peer, authenticated, through the relay and from a public address: the LAN
        // path works, so it stays.
        for from in [relay, public(1)] {
            let p = from_a(&mut a, &idb, t0 + 100 * MS);
            b.handle_datagram(t0 + 100 * MS, from, &p);
            assert_eq!(b.peer_addr(&ida), Some(addr(1)), "{from}");
        }
        // The LAN goes quiet for PATH_STALE: the relay takes over, and B answers through it at
        // once so that A moves too.
        let late = t0 + PATH_STALE + MS;
        drain(&mut b);
        let p = from_a(&mut a, &idb, late);
        b.handle_datagram(late, relay, &p);
        assert_eq!((b.peer_addr(&ida), b.path_class(&ida)), (Some(relay), Some(PathClass::Relay)));
        b.handle_timeout(late);
        assert_eq!(drain(&mut b).iter().map(|d| d.0).collect::<Vec<_>>(), [relay]);
        // A better path that works wins at once, and the relay is not a candidate to probe.
        let p = from_a(&mut a, &idb, late + MS);
        b.handle_datagram(late + MS, public(1), &p);
        assert_eq!(b.path_class(&ida), Some(PathClass::Direct));
        b.probe_candidates(late + 2 * MS, &ida);
        assert_eq!(drain(&mut b).iter().map(|d| d.0).collect::<Vec<_>>(), [addr(1)]);
    }

    /// LAN, then direct, then a port the peer's router forwards (mapped), then a relay.
    #[test]
    fn a_port_mapped_path_ranks_below_a_direct_one_and_above_a_relay() {
        let t0 = Instant::now();
        let (mut a, mut b) = established(t0);
        let (ida, idb) = (a.id(), b.id());
        let (relay, mapped, direct) = (public(9), public(2), public(1));
        b.add_relay(relay);
        b.set_peer_mapped(&ida, Some(mapped));
        let t1 = t0 + PATH_STALE;
        let mut hear = |b: &mut Endpoint, at: Instant, from: SocketAddr| {
            let p = from_a(&mut a, &idb, at);
            b.handle_datagram(at, from, &p);
            b.path_class(&ida)
        };
        assert_eq!(hear(&mut b, t1, relay), Some(PathClass::Relay));
        assert_eq!(hear(&mut b, t1 + MS, mapped), Some(PathClass::Mapped), "mapped beats a relay at once");
        assert_eq!(hear(&mut b, t1 + 2 * MS, direct), Some(PathClass::Direct), "direct beats mapped at once");
        assert_eq!(hear(&mut b, t1 + 3 * MS, mapped), Some(PathClass::Direct), "not left while it works");
        assert_eq!(hear(&mut b, t1 + 3 * MS, relay), Some(PathClass::Direct));
        let quiet = t1 + 2 * MS + PATH_STALE;
        assert_eq!(hear(&mut b, quiet, mapped), Some(PathClass::Mapped), "the direct path went quiet");
        assert_eq!(b.peer_addr(&ida), Some(mapped));
    }

    #[test]
    fn a_packet_passed_on_by_a_rendezvous_node_moves_the_path_but_does_not_prove_it() {
        let t0 = Instant::now();
        let (mut a, mut b) = established(t0);
        let (ida, idb) = (a.id(), b.id());
        // A roamed: its LAN address has been quiet, its keepalive comes through a node.
        let t1 = t0 + PATH_STALE;
        let p = from_a(&mut a, &idb, t1);
        b.handle_relayed(t1, public(1), &p);
        assert_eq!(b.peer_addr(&ida), Some(public(1)));
        assert!(!b.path_works(t1, &ida));
        let p = from_a(&mut a, &idb, t1 + MS);
        b.handle_datagram(t1 + MS, public(1), &p);
        assert!(b.path_works(t1 + MS, &ida));
    }

    /// A birthday punch: B's session goes through a relay; A's keepalive arrives on B's aux
    /// socket 7. The path is (socket, address): B moves to it, answers on it at once, and sends
    /// everything from that socket, media included, until a packet on another path moves it.
    #[test]
    fn a_path_is_a_socket_and_an_address() {
        let t0 = Instant::now();
        let (mut a, mut b) = established(t0);
        let (ida, idb) = (a.id(), b.id());
        let relay = public(9);
        b.add_relay(relay);
        // The LAN path has gone quiet: the relay takes over.
        let t0 = t0 + PATH_STALE;
        let p = from_a(&mut a, &idb, t0);
        b.handle_datagram(t0, relay, &p);
        assert_eq!((b.path_class(&ida), b.path_sock(&ida)), (Some(PathClass::Relay), Some(MAIN_SOCK)));
        assert!(!b.has_seen_ip(&ida, relay.ip()), "a relay is not where the peer is");
        assert!(b.has_seen_ip(&ida, addr(1).ip()));
        drain(&mut b);
        let t1 = t0 + MS;
        let p = from_a(&mut a, &idb, t1);
        b.handle_datagram_on(t1, 7, public(1), &p);
        assert_eq!(
            (b.path_class(&ida), b.path_sock(&ida), b.peer_addr(&ida)),
            (Some(PathClass::Direct), Some(7), Some(public(1)))
        );
        assert!(b.uses_sock(7) && b.path_works(t1, &ida));
        b.handle_timeout(t1);
        let mut buf = [0u8; MAX_DATAGRAM];
        let t = b.poll_transmit(&mut buf).expect("an answer on the new path");
        assert_eq!((t.sock, t.dst), (7, public(1)));
        assert_eq!(b.seal_to(t1, &ida, &[1, 0, 0], &mut buf).map(|t| (t.sock, t.dst)), Some((7, public(1))));
        // The same address on the main socket is another path (still direct: it moves).
        let t2 = t1 + MS;
        let p = from_a(&mut a, &idb, t2);
        b.handle_datagram(t2, public(1), &p);
        assert_eq!(b.path_sock(&ida), Some(MAIN_SOCK));
        assert!(!b.uses_sock(7));
        // A handshake that comes in on an aux socket is answered on it.
        let mut c = ep(3, &[2]);
        let mut b2 = ep(2, &[3]);
        c.connect(t0, b2.id(), addr(2));
        let init = drain(&mut c).remove(0).1;
        b2.handle_datagram_on(t0, 4, addr(3), &init);
        let t = b2.poll_transmit(&mut buf).expect("message 2");
        assert_eq!((t.sock, t.dst), (4, addr(3)));
    }

    #[test]
    fn both_sides_and_only_they_share_the_relay_ticket() {
        let t0 = Instant::now();
        let (a, b) = established(t0);
        let (ta, tb) = (a.ticket(&b.id()).unwrap(), b.ticket(&a.id()).unwrap());
        assert_eq!(ta, tb);
        assert_eq!(b.peer_of_ticket(&ta), Some(a.id()));
        let (c, d) = established(t0);
        assert_ne!(c.ticket(&d.id()), Some(ta), "a new handshake between the same devices: a new ticket");
        assert_eq!(b.peer_of_ticket(&[0; 16]), None);
    }
}
