//! The birthday punch: a direct path between a NAT that maps at random (endpoint-dependent
//! mapping, "symmetric") and one that maps consistently, which plain hole punching cannot open
//! when the consistent side also filters by port (the random side's port towards it is unknown).
//!
//! Once a call is up, both sides tell each other their NAT class and a public address
//! (`Message::Nat`). When the call then goes through a relay and exactly one side maps at random,
//! that side (R) asks its driver for `MAX_AUX` extra ("aux") sockets and sends one authenticated
//! keepalive from each to the other side's (C's) public address: its NAT opens `MAX_AUX`
//! mappings, each letting in only C's address. It then tells C to go (`Message::Birthday`), and C
//! sends up to `MAX_PROBES` keepalives to R's public IP at distinct random ports, paced over
//! 1.6 s. With 256 of ~64,500 ports open, 1,024 probes find one with probability 1 -
//! (1 - 256/64512)^1024 ≈ 98%. The probe that gets through moves R's session onto that aux
//! socket (a direct path beats a relay); R answers on it at once, which C's NAT lets in (C sent
//! to that port), and C's session moves too. R keeps that socket while a session uses it and
//! closes the others; when no probe gets through in `RANDOM_SIDE_FOR`, all of them are closed and
//! the call stays on the relay. Random facing random: nothing (the ports on both sides are
//! unknown; a relay it is).
//!
//! Bounds: at most one punch at a time per device (either role), at most `PUNCHES_PER_CALL` per
//! call and one per `PUNCH_GAP`; C sprays only an IP at which it has seen R's session (so a
//! contact cannot aim its probes at a third party); fixed tables, nothing allocated.
use super::Device;
use crate::identity::DeviceId;
use crate::nat::NatClass;
use crate::session::{MAIN_SOCK, PathClass, Sock, Transmit};
use crate::wire::Message;
use serde::Serialize;
use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant};

/// Extra sockets the random-mapping side opens for one punch (socket numbers 1..=MAX_AUX).
pub const MAX_AUX: usize = 256;
/// Probes the consistent side sends for one punch.
pub const MAX_PROBES: u16 = 1024;
/// Probes go out in batches of this many, one batch per `PROBE_GAP` (1,024 in 1.6 s).
const PROBE_BATCH: u16 = 16;
const PROBE_GAP: Duration = Duration::from_millis(25);
/// How long the random side keeps its aux sockets open waiting for a probe.
const RANDOM_SIDE_FOR: Duration = Duration::from_secs(5);
/// How long the consistent side's part lasts (the probes take 1.6 s).
const CONSISTENT_SIDE_FOR: Duration = Duration::from_millis(2500);
/// `Message::Birthday` is sent this many times, this far apart, while no probe got through.
const GO_SENDS: u8 = 3;
const GO_AGAIN: Duration = Duration::from_millis(400);
/// `Message::Nat` is sent at most this many times, this far apart, until the peer has it.
const NAT_SENDS: u8 = 5;
const NAT_AGAIN: Duration = Duration::from_secs(1);
const PUNCHES_PER_CALL: u8 = 3;
/// A device starts (or joins) no punch sooner than this after the last one ended.
const PUNCH_GAP: Duration = Duration::from_secs(30);
/// Random-mapping NATs pick from the ports above the well-known ones.
const PORT_LO: u32 = 1024;
const PORTS: u32 = 65536 - PORT_LO;

/// What the driver does with its aux sockets (`Device::poll_aux`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Aux {
    /// Open socket `n` (1..=MAX_AUX): bound to an ephemeral port, datagrams arriving on it go to
    /// `Input::AuxDatagram { sock: n, .. }`.
    Open(Sock),
    /// Close socket `n`; nothing more is sent on it.
    Close(Sock),
}

#[derive(Debug, Clone, Copy, Default, Serialize, PartialEq, Eq)]
pub struct BirthdayStats {
    /// Punches this device took part in (either side).
    pub started: u32,
    /// Punches that ended on a direct path.
    pub succeeded: u32,
    pub failed: u32,
    /// Keepalives sent from aux sockets (random side) or sprayed at random ports (consistent side).
    pub probes: u64,
    /// Aux sockets open now, and at most at once.
    pub aux_open: u16,
    pub aux_peak: u16,
    /// `Message::Birthday` requests refused (busy, too soon, or no address seen for the peer).
    pub refused: u32,
}

#[derive(Debug, Clone, Copy)]
enum Role {
    /// The random side: one keepalive from each aux socket to `to`, then `Message::Birthday`.
    Sockets { to: SocketAddr, sent: u16, go: u8, next_go: Instant },
    /// The consistent side: keepalives to `ip` at ports `PORT_LO + (first + k * step) % PORTS`
    /// (`step` is coprime with `PORTS`, so no port comes twice).
    Probes { ip: IpAddr, sent: u16, first: u32, step: u32 },
}

#[derive(Debug, Clone, Copy)]
struct Punch {
    peer: DeviceId,
    id: u32,
    role: Role,
    started: Instant,
    until: Instant,
}

/// Birthday-punch state of a device: the NAT facts exchanged in the current call, the punch
/// under way (at most one), and the aux sockets the driver should have open.
pub(super) struct Birthday {
    /// The peer of the current call, and what it told us of its NAT.
    peer: Option<DeviceId>,
    theirs: Option<(NatClass, Option<SocketAddr>)>,
    /// The peer has our `Nat` (it said so with `ack`).
    acked: bool,
    told: u8,
    next_tell: Instant,
    punch: Option<Punch>,
    /// Punches in this call.
    punches: u8,
    /// No punch starts before this (`PUNCH_GAP` after the last one).
    quiet_until: Option<Instant>,
    /// The last `Message::Birthday` acted on (repeats are ignored).
    last_go: Option<u32>,
    /// Aux sockets: wanted by us, and as the driver last heard (`poll_aux`).
    wanted: [bool; MAX_AUX],
    applied: [bool; MAX_AUX],
    changed: bool,
    /// The aux socket a punch found a path on: open while a session sends from it.
    kept: Option<Sock>,
    stats: BirthdayStats,
}

impl Birthday {
    pub(super) fn new(now: Instant) -> Self {
        Birthday {
            peer: None,
            theirs: None,
            acked: false,
            told: 0,
            next_tell: now,
            punch: None,
            punches: 0,
            quiet_until: None,
            last_go: None,
            wanted: [false; MAX_AUX],
            applied: [false; MAX_AUX],
            changed: false,
            kept: None,
            stats: BirthdayStats::default(),
        }
    }

    fn want(&mut self, sock: Sock, open: bool) {
        if let Some(w) = usize::from(sock).checked_sub(1).and_then(|i| self.wanted.get_mut(i))
            && *w != open
        {
            *w = open;
            self.changed = true;
        }
    }

    /// Socket `sock` is an aux socket the driver has open.
    pub(super) fn is_open(&self, sock: Sock) -> bool {
        usize::from(sock).checked_sub(1).and_then(|i| self.applied.get(i)).copied().unwrap_or(false)
    }

    pub(super) fn poll_aux(&mut self) -> Option<Aux> {
        if !self.changed {
            return None;
        }
        let Some(i) = (0..MAX_AUX).find(|&i| self.wanted[i] != self.applied[i]) else {
            self.changed = false;
            return None;
        };
        self.applied[i] = self.wanted[i];
        let open = self.applied.iter().filter(|&&a| a).count() as u16;
        self.stats.aux_open = open;
        self.stats.aux_peak = self.stats.aux_peak.max(open);
        let sock = (i + 1) as Sock;
        Some(if self.wanted[i] { Aux::Open(sock) } else { Aux::Close(sock) })
    }

    pub(super) fn stats(&self) -> BirthdayStats {
        self.stats
    }

    /// When something is due: a `Nat` to resend, a probe batch, a resend of the go, the end of
    /// the punch, or the end of the quiet gap.
    pub(super) fn due(&self, now: Instant) -> Option<Instant> {
        let tell = (self.peer.is_some() && !self.acked && self.told < NAT_SENDS).then_some(self.next_tell);
        let punch = self.punch.map(|p| match p.role {
            Role::Sockets { go, next_go, .. } if go > 0 && go < GO_SENDS => p.until.min(next_go),
            Role::Probes { sent, .. } if sent < MAX_PROBES => p.until.min(next_batch(p.started, now)),
            _ => p.until,
        });
        let quiet = self.quiet_until.filter(|q| *q > now && self.peer.is_some() && self.punches < PUNCHES_PER_CALL);
        [tell, punch, quiet].into_iter().flatten().min()
    }
}

/// When the consistent side's next batch of probes may go.
fn next_batch(started: Instant, now: Instant) -> Instant {
    let k = now.saturating_duration_since(started).as_nanos() / PROBE_GAP.as_nanos() + 1;
    started + PROBE_GAP * u32::try_from(k).unwrap_or(u32::MAX)
}

fn class_code(c: NatClass) -> u8 {
    match c {
        NatClass::Unknown => 0,
        NatClass::Open => 1,
        NatClass::Consistent => 2,
        NatClass::Random => 3,
    }
}

fn class_of(code: u8) -> NatClass {
    match code {
        1 => NatClass::Open,
        2 => NatClass::Consistent,
        3 => NatClass::Random,
        _ => NatClass::Unknown,
    }
}

/// A step through the ports coprime with `PORTS` (2^10 · 3^2 · 7), from a random number.
fn coprime_step(r: u32) -> u32 {
    let mut s = (r % PORTS) | 1;
    while s % 3 == 0 || s % 7 == 0 {
        s = (s + 2) % PORTS;
    }
    s
}

impl Device {
    /// A call with `peer` is up: tell it about our NAT.
    pub(super) fn birthday_call_up(&mut self, now: Instant, peer: DeviceId) {
        let b = &mut self.birthday;
        b.peer = Some(peer);
        b.theirs = None;
        b.acked = false;
        b.told = 0;
        b.next_tell = now;
        b.punches = 0;
    }

    /// The call ended: a punch under way is called off.
    pub(super) fn birthday_call_down(&mut self, now: Instant) {
        self.birthday.peer = None;
        if self.birthday.punch.is_some() {
            self.birthday_finish(now, false);
        }
    }

    /// Our NAT class and public address, as we tell the peer, and our port mapping when it is
    /// a path of its own (not also where our NAT maps our traffic).
    fn nat_message(&self, ack: bool) -> Message {
        let addr = self.mapped.or_else(|| self.nat.public_addrs().next());
        let mapped = self.mapped.filter(|m| !self.nat.public_addrs().any(|p| p == *m));
        Message::Nat { class: class_code(self.nat.class()), addr, ack, mapped }
    }

    /// A `Nat` or `Birthday` message from `from`.
    pub(super) fn on_birthday_message(&mut self, now: Instant, from: DeviceId, msg: Message) {
        if self.birthday.peer != Some(from) {
            return;
        }
        match msg {
            Message::Nat { class, addr, ack, mapped } => {
                self.endpoint.set_peer_mapped(&from, mapped);
                let new = self.birthday.theirs.is_none();
                self.birthday.theirs = Some((class_of(class), addr));
                self.birthday.acked |= ack;
                // Answer when the peer lacks ours, or to tell it we now have its.
                if !ack || new {
                    let m = self.nat_message(true);
                    self.endpoint.send(now, &from, &m);
                }
            }
            Message::Birthday { punch } => self.birthday_go(now, from, punch),
            _ => {}
        }
    }

    /// The random side is ready: spray probes at its public IP (if we may).
    fn birthday_go(&mut self, now: Instant, peer: DeviceId, id: u32) {
        if self.birthday.last_go == Some(id) {
            return;
        }
        let b = &self.birthday;
        let ip = b.theirs.and_then(|(class, addr)| addr.filter(|_| class == NatClass::Random)).map(|a| a.ip());
        let ours = matches!(self.nat.class(), NatClass::Consistent | NatClass::Open);
        let seen = ip.filter(|ip| self.endpoint.has_seen_ip(&peer, *ip) || self.record_has_ip(&peer, *ip));
        let quiet = b.quiet_until.is_some_and(|q| now < q);
        let relayed = self.endpoint.path_class(&peer) == Some(PathClass::Relay);
        let free = b.punch.is_none() && !quiet && b.punches < PUNCHES_PER_CALL;
        let (Some(ip), true, true, true) = (seen, ours, relayed, free) else {
            self.birthday.stats.refused += 1;
            return;
        };
        self.birthday.last_go = Some(id);
        let first = self.rng.next_u32() % PORTS;
        let step = coprime_step(self.rng.next_u32());
        let role = Role::Probes { ip, sent: 0, first, step };
        self.birthday_start(now, peer, id, role, CONSISTENT_SIDE_FOR);
    }

    fn record_has_ip(&self, peer: &DeviceId, ip: IpAddr) -> bool {
        let w = self.whereabouts.iter().find(|w| w.id == *peer);
        w.is_some_and(|w| w.dht.iter().flatten().any(|a| a.ip() == ip))
    }

    fn birthday_start(&mut self, now: Instant, peer: DeviceId, id: u32, role: Role, time: Duration) {
        let b = &mut self.birthday;
        b.punch = Some(Punch { peer, id, role, started: now, until: now + time });
        b.punches += 1;
        b.stats.started += 1;
    }

    /// The punch is over: keep the aux socket a session sends from, close the rest.
    fn birthday_finish(&mut self, now: Instant, ok: bool) {
        let Some(p) = self.birthday.punch.take() else { return };
        if ok {
            self.birthday.stats.succeeded += 1;
        } else {
            self.birthday.stats.failed += 1;
        }
        self.birthday.quiet_until = Some(now + PUNCH_GAP);
        if let Role::Sockets { .. } = p.role {
            let kept = self.endpoint.path_sock(&p.peer).filter(|s| *s != MAIN_SOCK);
            for sock in 1..=MAX_AUX as Sock {
                self.birthday.want(sock, Some(sock) == kept);
            }
            self.birthday.kept = kept;
        }
    }

    /// After every input: the NAT exchange, starting, following and ending a punch, and closing
    /// the kept aux socket once no session uses it.
    pub(super) fn birthday_step(&mut self, now: Instant) {
        if let Some(s) = self.birthday.kept
            && !self.endpoint.uses_sock(s)
        {
            self.birthday.want(s, false);
            self.birthday.kept = None;
        }
        let peer = self.birthday.peer.filter(|p| self.endpoint.is_established(p));
        let b = &self.birthday;
        if b.peer.is_some() && !b.acked && b.told < NAT_SENDS && now >= b.next_tell {
            if let Some(peer) = peer {
                let m = self.nat_message(b.theirs.is_some());
                self.endpoint.send(now, &peer, &m);
            }
            self.birthday.told += 1;
            self.birthday.next_tell = now + NAT_AGAIN;
        }
        let class = peer.and_then(|p| self.endpoint.path_class(&p));
        let direct = peer.is_some_and(|p| self.endpoint.path_works(now, &p)) && class != Some(PathClass::Relay);
        match self.birthday.punch {
            Some(p) if peer != Some(p.peer) || now >= p.until => self.birthday_finish(now, direct),
            // Found: the random side's session moved onto an aux socket (or onto its main one,
            // when a probe hit its NAT's mapping towards us), and the other side's to it.
            Some(_) if direct => self.birthday_finish(now, true),
            Some(Punch { role: Role::Sockets { go, next_go, .. }, id, peer, .. })
                if go > 0 && go < GO_SENDS && now >= next_go =>
            {
                self.endpoint.send(now, &peer, &Message::Birthday { punch: id });
                if let Some(Punch { role: Role::Sockets { go, next_go, .. }, .. }) = self.birthday.punch.as_mut() {
                    *go += 1;
                    *next_go = now + GO_AGAIN;
                }
            }
            Some(_) => {}
            None => {
                if let (Some(peer), Some(PathClass::Relay)) = (peer, class) {
                    self.birthday_maybe_start(now, peer);
                }
            }
        }
    }

    /// The call goes through a relay: if we map at random and the peer consistently, open the
    /// aux sockets (the keepalives from them go out in `poll_transmit`).
    fn birthday_maybe_start(&mut self, now: Instant, peer: DeviceId) {
        let b = &self.birthday;
        if self.nat.class() != NatClass::Random
            || b.punches >= PUNCHES_PER_CALL
            || b.quiet_until.is_some_and(|q| now < q)
            || b.kept.is_some()
        {
            return;
        }
        let Some((class, Some(to))) = b.theirs else { return };
        if !matches!(class, NatClass::Consistent | NatClass::Open) {
            return;
        }
        if !self.endpoint.has_seen_ip(&peer, to.ip()) && !self.record_has_ip(&peer, to.ip()) {
            return;
        }
        let id = self.rng.next_u32();
        for sock in 1..=MAX_AUX as Sock {
            self.birthday.want(sock, true);
        }
        let role = Role::Sockets { to, sent: 0, go: 0, next_go: now };
        self.birthday_start(now, peer, id, role, RANDOM_SIDE_FOR);
    }

    /// The next probe of the punch under way, sealed into `buf`: from the next aux socket the
    /// driver has opened (random side), or to the next port (consistent side, paced).
    pub(super) fn birthday_transmit(&mut self, buf: &mut [u8]) -> Option<Transmit> {
        let now = self.now;
        let mut p = self.birthday.punch?;
        let t = match &mut p.role {
            Role::Sockets { to, sent, go, next_go } => {
                if usize::from(*sent) >= MAX_AUX || *go > 0 {
                    return None;
                }
                let sock = *sent + 1;
                if !self.birthday.is_open(sock) {
                    return None;
                }
                let len = self.endpoint.seal_keepalive(now, &p.peer, buf)?;
                *sent += 1;
                if usize::from(*sent) == MAX_AUX {
                    // Every mapping is open: C may spray now (this goes out next).
                    self.endpoint.send(now, &p.peer, &Message::Birthday { punch: p.id });
                    *go = 1;
                    *next_go = now + GO_AGAIN;
                }
                Transmit { sock, dst: *to, len }
            }
            Role::Probes { ip, sent, first, step } => {
                let batches = now.saturating_duration_since(p.started).as_nanos() / PROBE_GAP.as_nanos() + 1;
                let allowed = u128::from(PROBE_BATCH).saturating_mul(batches).min(u128::from(MAX_PROBES));
                if u128::from(*sent) >= allowed {
                    return None;
                }
                let port = PORT_LO + (*first + u32::from(*sent) * *step) % PORTS;
                let len = self.endpoint.seal_keepalive(now, &p.peer, buf)?;
                *sent += 1;
                Transmit { sock: MAIN_SOCK, dst: SocketAddr::new(*ip, port as u16), len }
            }
        };
        self.birthday.punch = Some(p);
        self.birthday.stats.probes += 1;
        Some(t)
    }
}
