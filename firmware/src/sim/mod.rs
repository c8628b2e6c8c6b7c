//! A deterministic network simulator: many device cores exchange datagrams in virtual time, with
//! configurable latency and loss, and home routers doing NAT (`nat`). Same seed, same run —
//! any failure replays exactly.
pub mod nat;

use crate::config::{CallSettings, Config, Contact, ContactDevice, MediaSettings};
use crate::device::{Aux, Command, Device, DeviceError, DeviceEvent, Input, MAX_AUX};
use crate::identity::{DeviceId, DeviceKey};
use crate::session::EndpointConfig;
use crate::util::rng::Rng;
use crate::wire::MAX_DATAGRAM;
use nat::{Nat, NatKind};
use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::PathBuf;
use std::time::{Duration, Instant};

/// Beacons travel the simulated wire with this byte in front (a separate "socket").
const BEACON_MARK: u8 = 0xbe;
/// A device's aux socket `n` (1..=MAX_AUX, see `Device::poll_aux`) is port `AUX_PORT + n - 1` of
/// its address, behind the same NAT as its main socket.
pub const AUX_PORT: u16 = 20000;

fn beacon(b: &[u8]) -> Vec<u8> {
    let mut v = Vec::with_capacity(b.len() + 1);
    v.push(BEACON_MARK);
    v.extend_from_slice(b);
    v
}

pub struct SimNode {
    pub addr: SocketAddr,
    pub device: Device,
    pub events: Vec<(Duration, DeviceEvent)>,
    pub online: bool,
    /// The NAT (index into `SimNet::nats`) this node sits behind; None: a public address.
    pub behind: Option<usize>,
    /// Which aux sockets are open (index n - 1 for socket n), as the device asked.
    pub aux: Vec<bool>,
    /// The most aux sockets open at once, and how many were ever opened.
    pub aux_peak: usize,
    pub aux_opened: usize,
}

impl SimNode {
    pub fn aux_open(&self) -> usize {
        self.aux.iter().filter(|&&a| a).count()
    }

    /// The address socket `sock` is bound to.
    fn sock_addr(&self, sock: u16) -> SocketAddr {
        match sock {
            0 => self.addr,
            n => SocketAddr::new(self.addr.ip(), AUX_PORT + n - 1),
        }
    }

    /// The open socket bound to `addr`, if any.
    fn sock_at(&self, addr: SocketAddr) -> Option<u16> {
        if !self.online || addr.ip() != self.addr.ip() {
            return None;
        }
        if addr.port() == self.addr.port() {
            return Some(0);
        }
        let n = addr.port().checked_sub(AUX_PORT)?;
        self.aux.get(usize::from(n)).copied().unwrap_or(false).then_some(n + 1)
    }
}

/// A datagram as it crossed the simulated wire.
#[derive(Debug, Clone)]
pub struct Sent {
    pub at: Duration,
    pub from: SocketAddr,
    pub to: SocketAddr,
    pub bytes: Vec<u8>,
}

type InFlight = Reverse<(Instant, u64, SocketAddr, SocketAddr, Vec<u8>)>;

pub struct SimNet {
    pub start: Instant,
    pub now: Instant,
    pub nodes: Vec<SimNode>,
    pub latency: Duration,
    /// Loss probability in parts per million.
    pub loss_ppm: u32,
    pub wire: Vec<Sent>,
    /// Keep a copy of every datagram in `wire` (off for long media runs).
    pub record: bool,
    /// Everything sent in this window of elapsed time is lost (a burst loss).
    pub blackout: Option<(Duration, Duration)>,
    /// Datagrams between these two IP addresses (either way) are lost: a path that fails.
    pub cut: Vec<(IpAddr, IpAddr)>,
    pub nats: Vec<Nat>,
    inflight: BinaryHeap<InFlight>,
    seq: u64,
    rng: Rng,
}

/// A device key from a small number, for readable tests.
pub fn key(n: u8) -> DeviceKey {
    DeviceKey::from_seed([n; 32])
}

pub fn sim_addr(n: u8) -> SocketAddr {
    SocketAddr::from(([10, 0, 0, n], 7600))
}

/// A config for device `n` whose contacts are `(name, button, device numbers)`.
pub fn sim_config(n: u8, name: &str, contacts: &[(&str, Option<u8>, &[u8])], call: CallSettings) -> Config {
    Config {
        path: PathBuf::from("sim.toml"),
        name: name.to_string(),
        key_path: PathBuf::from("sim.key"),
        listen: sim_addr(n),
        control: PathBuf::from("sim.sock"),
        contacts: contacts
            .iter()
            .map(|(cname, button, devs)| Contact {
                name: cname.to_string(),
                button: *button,
                devices: devs.iter().map(|d| ContactDevice { id: key(*d).id(), addr: Some(sim_addr(*d)) }).collect(),
            })
            .collect(),
        answer_button: Some(0),
        reject_button: None,
        bootstrap: vec![],
        stun: vec![],
        lan_group: None,
        dht: true,
        port_mapping: false,
        call,
        media: MediaSettings::default(),
        camera_file: None,
    }
}

impl SimNet {
    pub fn new(seed: u64) -> Self {
        let start = Instant::now();
        SimNet {
            start,
            now: start,
            nodes: Vec::new(),
            latency: Duration::from_millis(5),
            loss_ppm: 0,
            wire: Vec::new(),
            record: true,
            blackout: None,
            cut: Vec::new(),
            nats: Vec::new(),
            inflight: BinaryHeap::new(),
            seq: 0,
            rng: Rng::seeded(seed),
        }
    }

    /// Adds device `n` (its key and address derive from `n`); returns its node index.
    pub fn add(&mut self, n: u8, config: &Config) -> usize {
        let dev = Device::new(config, key(n), EndpointConfig::default(), Rng::seeded(self.rng.next_u64()));
        self.nodes.push(SimNode {
            addr: sim_addr(n),
            device: dev,
            events: Vec::new(),
            online: true,
            behind: None,
            aux: vec![false; MAX_AUX],
            aux_peak: 0,
            aux_opened: 0,
        });
        self.nodes.len() - 1
    }

    /// A home router of `kind`; its public address is 198.18.0.(11 + its index).
    pub fn add_nat(&mut self, kind: NatKind) -> usize {
        let k = self.nats.len();
        self.nats.push(Nat::new(Ipv4Addr::new(198, 18, 0, 11 + k as u8), kind, self.rng.next_u64()));
        k
    }

    /// Adds device `n` on the LAN of NAT `nat`, at 192.168.(nat + 1).n:7600.
    pub fn add_behind(&mut self, n: u8, config: &Config, nat: usize) -> usize {
        let i = self.add(n, config);
        self.nodes[i].addr = SocketAddr::from(([192, 168, nat as u8 + 1, n], 7600));
        self.nodes[i].behind = Some(nat);
        i
    }

    fn lan_of(addr: &SocketAddr) -> Option<usize> {
        match addr.ip() {
            IpAddr::V4(ip) if ip.octets()[..2] == [192, 168] => usize::from(ip.octets()[2]).checked_sub(1),
            _ => None,
        }
    }

    /// What a datagram from node `i`'s socket `sock` to `to` looks like on the wire it reaches:
    /// its source after NAT; None if it goes nowhere (a private address elsewhere, no
    /// hairpinning, or a socket that is not open).
    fn route_out(&mut self, i: usize, sock: u16, to: SocketAddr) -> Option<SocketAddr> {
        let from = self.nodes[i].sock_addr(sock);
        if sock > 0 && self.nodes[i].sock_at(from) != Some(sock) {
            return None;
        }
        let Some(k) = self.nodes[i].behind else {
            return Self::lan_of(&to).is_none().then_some(from);
        };
        if Self::lan_of(&to) == Some(k) {
            return Some(from);
        }
        if Self::lan_of(&to).is_some() || (to.ip() == IpAddr::V4(self.nats[k].public) && !self.nats[k].hairpin) {
            return None;
        }
        Some(self.nats[k].outbound(self.now, from, to))
    }

    /// The node and socket a datagram from `from` to `to` reaches, through the NAT it arrives at.
    fn route_in(&mut self, from: SocketAddr, to: SocketAddr) -> Option<(usize, u16)> {
        let to = match self.nats.iter().position(|n| IpAddr::V4(n.public) == to.ip()) {
            Some(k) => self.nats[k].inbound(self.now, from, to.port())?,
            None => to,
        };
        self.nodes.iter().enumerate().find_map(|(i, n)| n.sock_at(to).map(|s| (i, s)))
    }

    /// Starts device `n`'s DHT (through the devices `bootstrap`) and, if its config allows, LAN
    /// beacons, which the simulator delivers to every other device (one LAN).
    pub fn start_network(&mut self, node: usize, n: u8, bootstrap: &[usize]) {
        self.start_network_with(node, n, bootstrap, crate::dht::node::NodeConfig::default());
    }

    /// `start_network` with a DHT node configuration (e.g. one that relays).
    pub fn start_network_with(&mut self, node: usize, n: u8, bootstrap: &[usize], cfg: crate::dht::node::NodeConfig) {
        let now = self.now;
        let boot: Vec<SocketAddr> = bootstrap.iter().map(|&b| self.nodes[b].addr).collect();
        let addr = self.nodes[node].addr;
        self.nodes[node].device.start_network(now, crate::dht::sim::UNIX_START, key(n), addr, &boot, cfg);
        self.drain(node);
    }

    /// How each of `node`'s calls ended, in order.
    pub fn outcomes(&self, node: usize) -> Vec<crate::call::Outcome> {
        self.nodes[node]
            .events
            .iter()
            .filter_map(|(_, e)| match e {
                DeviceEvent::Call(crate::call::CallEvent::Ended { outcome, .. }) => Some(*outcome),
                _ => None,
            })
            .collect()
    }

    pub fn id(&self, node: usize) -> DeviceId {
        self.nodes[node].device.id()
    }

    pub fn elapsed(&self) -> Duration {
        self.now - self.start
    }

    pub fn command(&mut self, node: usize, cmd: Command) -> Result<(), DeviceError> {
        let now = self.now;
        let r = self.nodes[node].device.handle_input(now, Input::Command(cmd));
        self.drain(node);
        r
    }

    /// Sends what a node has queued now, as a driver does after every input: for harnesses
    /// that push media into a node's session directly (an early timeout is harmless).
    pub fn flush(&mut self, node: usize) {
        let now = self.now;
        self.nodes[node].device.handle_input(now, Input::Timeout).ok();
        self.drain(node);
    }

    /// Delivers raw bytes to a node as if they came from `from` (for replay/forgery tests).
    pub fn inject(&mut self, node: usize, from: SocketAddr, bytes: &[u8]) {
        let now = self.now;
        self.nodes[node].device.handle_input(now, Input::Datagram { from, bytes }).ok();
        self.drain(node);
    }

    pub fn run_for(&mut self, d: Duration) {
        let until = self.now + d;
        let mut stuck = (self.now, 0u32);
        loop {
            let next_packet = self.inflight.peek().map(|Reverse((t, ..))| *t);
            let next_timer = self
                .nodes
                .iter()
                .enumerate()
                .filter(|(_, n)| n.online)
                .filter_map(|(i, n)| n.device.poll_timeout().map(|t| (t, i)))
                .min();
            let next = match (next_packet, next_timer) {
                (Some(p), Some((t, _))) => p.min(t),
                (Some(p), None) => p,
                (None, Some((t, _))) => t,
                (None, None) => break,
            };
            if next > until {
                break;
            }
            self.now = self.now.max(next);
            // A timer that stays due without anything happening is a bug in a core.
            stuck = if stuck.0 == self.now { (stuck.0, stuck.1 + 1) } else { (self.now, 0) };
            assert!(stuck.1 < 1_000_000, "livelock: a timer stays due at {:?}", self.now - self.start);
            if next_packet == Some(next) {
                let Some(Reverse((_, _, from, to, bytes))) = self.inflight.pop() else { break };
                if let Some((i, sock)) = self.route_in(from, to) {
                    let now = self.now;
                    let input = match bytes.split_first() {
                        Some((&BEACON_MARK, b)) => Input::Beacon { from, bytes: b },
                        _ if sock > 0 => Input::AuxDatagram { sock, from, bytes: &bytes },
                        _ => Input::Datagram { from, bytes: &bytes },
                    };
                    self.nodes[i].device.handle_input(now, input).ok();
                    self.drain(i);
                }
            } else if let Some((_, i)) = next_timer {
                let now = self.now;
                self.nodes[i].device.handle_input(now, Input::Timeout).ok();
                self.drain(i);
            }
        }
        self.now = until;
    }

    fn drain(&mut self, i: usize) {
        let mut buf = [0u8; MAX_DATAGRAM];
        let at = self.elapsed();
        let node = &mut self.nodes[i];
        while let Some(a) = node.device.poll_aux() {
            let (n, open) = match a {
                Aux::Open(n) => (n, true),
                Aux::Close(n) => (n, false),
            };
            if let Some(s) = usize::from(n).checked_sub(1).and_then(|k| node.aux.get_mut(k)) {
                node.aux_opened += usize::from(open && !*s);
                *s = open;
            }
            node.aux_peak = node.aux_peak.max(node.aux_open());
        }
        while let Some(t) = self.nodes[i].device.poll_transmit(&mut buf) {
            let to = t.dst;
            let Some(from) = self.route_out(i, t.sock, to) else { continue };
            let bytes = buf[..t.len].to_vec();
            if self.record {
                self.wire.push(Sent { at, from, to, bytes: bytes.clone() });
            }
            if self.loss_ppm > 0 && (self.rng.next_u32() % 1_000_000) < self.loss_ppm {
                continue;
            }
            if self.blackout.is_some_and(|(a, b)| at >= a && at < b) {
                continue;
            }
            if self.cut.iter().any(|&(a, b)| (a, b) == (from.ip(), to.ip()) || (b, a) == (from.ip(), to.ip())) {
                continue;
            }
            self.seq += 1;
            self.inflight.push(Reverse((self.now + self.latency, self.seq, from, to, bytes)));
        }
        while let Some(n) = self.nodes[i].device.poll_beacon(&mut buf) {
            let from = self.nodes[i].addr;
            for j in 0..self.nodes.len() {
                // Multicast stays on its LAN (public nodes count as one LAN).
                if j != i && self.nodes[j].online && self.nodes[j].behind == self.nodes[i].behind {
                    self.seq += 1;
                    let to = self.nodes[j].addr;
                    self.inflight.push(Reverse((self.now + self.latency, self.seq, from, to, beacon(&buf[..n]))));
                }
            }
        }
        while let Some(e) = self.nodes[i].device.poll_event() {
            self.nodes[i].events.push((at, e));
        }
    }
}
