//! A deterministic network of sans-IO DHT nodes in virtual time: one process, one event queue,
//! latency drawn per datagram, random loss, and churn. Any run replays exactly from its seed.
use super::id::NodeId;
use super::node::{DhtEvent, Node, NodeConfig};
use crate::util::rng::Rng;
use crate::wire::MAX_DATAGRAM;
use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap};
use std::net::SocketAddr;
use std::time::{Duration, Instant};

/// Wall-clock seconds at the start of every simulation (a fixed date: records expire alike).
pub const UNIX_START: u64 = 1_790_000_000;

#[derive(Debug, Clone, Copy)]
pub struct SimConfig {
    pub seed: u64,
    /// One-way latency is drawn uniformly from this range for each datagram.
    pub latency: (Duration, Duration),
    /// Probability that a datagram is lost.
    pub loss: f64,
    pub node: NodeConfig,
}

impl Default for SimConfig {
    fn default() -> Self {
        SimConfig {
            seed: 1,
            latency: (Duration::from_millis(10), Duration::from_millis(80)),
            loss: 0.0,
            node: NodeConfig::default(),
        }
    }
}

enum Ev {
    Deliver { to: usize, from: SocketAddr, data: Box<[u8]> },
    Timer { node: usize },
}

pub struct DhtSim {
    cfg: SimConfig,
    rng: Rng,
    t0: Instant,
    now: Instant,
    nodes: Vec<Option<Node>>,
    addrs: Vec<SocketAddr>,
    by_addr: HashMap<SocketAddr, usize>,
    timers: Vec<Option<Instant>>,
    queue: BinaryHeap<Reverse<(Instant, u64, usize)>>,
    evs: Vec<Option<Ev>>,
    free_evs: Vec<usize>,
    seq: u64,
    events: Vec<(usize, DhtEvent)>,
    /// Bytes each node sent (index = node).
    pub sent_bytes: Vec<u64>,
    pub delivered: u64,
    pub lost: u64,
}

impl DhtSim {
    pub fn new(cfg: SimConfig) -> Self {
        let t0 = Instant::now();
        DhtSim {
            rng: Rng::seeded(cfg.seed),
            cfg,
            t0,
            now: t0,
            nodes: Vec::new(),
            addrs: Vec::new(),
            by_addr: HashMap::new(),
            timers: Vec::new(),
            queue: BinaryHeap::new(),
            evs: Vec::new(),
            free_evs: Vec::new(),
            seq: 0,
            events: Vec::new(),
            sent_bytes: Vec::new(),
            delivered: 0,
            lost: 0,
        }
    }

    pub fn now(&self) -> Instant {
        self.now
    }

    pub fn elapsed(&self) -> Duration {
        self.now - self.t0
    }

    pub fn unix_now(&self) -> u64 {
        UNIX_START + self.elapsed().as_secs()
    }

    /// Public-looking addresses, one node per /24 at most 1 in 2 of the time, so the subnet
    /// limits are exercised as on the internet.
    fn addr_for(i: usize) -> SocketAddr {
        let i = i as u32 + 1;
        SocketAddr::from(([1 + (i >> 17) as u8, (i >> 9) as u8, (i >> 1) as u8, 10 + (i & 1) as u8], 7600))
    }

    /// Adds a node and bootstraps it from `bootstrap` (node indices); returns its index.
    pub fn add_node(&mut self, bootstrap: &[usize]) -> usize {
        let i = self.nodes.len();
        let addr = Self::addr_for(i);
        let mut rng = Rng::seeded(self.rng.next_u64());
        let id = NodeId::random(&mut rng);
        let mut node = Node::new(id, self.cfg.node, rng, self.now, self.unix_now());
        let boot: Vec<SocketAddr> = bootstrap.iter().filter(|&&b| self.alive(b)).map(|&b| self.addrs[b]).collect();
        node.bootstrap(self.now, &boot);
        self.nodes.push(Some(node));
        self.addrs.push(addr);
        self.by_addr.insert(addr, i);
        self.timers.push(None);
        self.sent_bytes.push(0);
        self.flush(i);
        i
    }

    /// Takes node `i` off the network for good (its address is never reused).
    pub fn kill(&mut self, i: usize) {
        if let Some(slot) = self.nodes.get_mut(i) {
            *slot = None;
        }
    }

    pub fn alive(&self, i: usize) -> bool {
        self.nodes.get(i).is_some_and(|n| n.is_some())
    }

    pub fn len(&self) -> usize {
        self.nodes.len()
    }

    pub fn is_empty(&self) -> bool {
        self.nodes.is_empty()
    }

    pub fn node(&self, i: usize) -> Option<&Node> {
        self.nodes.get(i)?.as_ref()
    }

    pub fn addr(&self, i: usize) -> SocketAddr {
        self.addrs[i]
    }

    /// Runs `f` on node `i` at the current virtual time, then sends what it produced.
    pub fn with_node<R>(&mut self, i: usize, f: impl FnOnce(&mut Node, Instant) -> R) -> Option<R> {
        let now = self.now;
        let r = f(self.nodes.get_mut(i)?.as_mut()?, now);
        self.flush(i);
        Some(r)
    }

    /// Events the nodes reported since the last call.
    pub fn take_events(&mut self) -> Vec<(usize, DhtEvent)> {
        std::mem::take(&mut self.events)
    }

    fn push(&mut self, at: Instant, ev: Ev) {
        let slot = match self.free_evs.pop() {
            Some(s) => {
                self.evs[s] = Some(ev);
                s
            }
            None => {
                self.evs.push(Some(ev));
                self.evs.len() - 1
            }
        };
        self.seq += 1;
        self.queue.push(Reverse((at, self.seq, slot)));
    }

    /// Sends node `i`'s datagrams into the network, collects its events and re-arms its timer.
    fn flush(&mut self, i: usize) {
        let mut buf = [0u8; MAX_DATAGRAM];
        let from = self.addrs[i];
        let (lo, hi) = self.cfg.latency;
        loop {
            let Some(node) = self.nodes[i].as_mut() else { return };
            let Some((dst, n)) = node.poll_transmit(&mut buf) else { break };
            self.sent_bytes[i] += n as u64;
            if self.cfg.loss > 0.0 && (self.rng.next_u64() as f64 / u64::MAX as f64) < self.cfg.loss {
                self.lost += 1;
                continue;
            }
            let Some(&to) = self.by_addr.get(&dst) else { continue };
            let span = (hi - lo).as_micros() as u64;
            let delay = lo + Duration::from_micros(if span == 0 { 0 } else { self.rng.next_u64() % span });
            self.push(self.now + delay, Ev::Deliver { to, from, data: buf[..n].into() });
        }
        let Some(node) = self.nodes[i].as_mut() else { return };
        while let Some(ev) = node.poll_event() {
            self.events.push((i, ev));
        }
        let t = node.poll_timeout().map(|t| t.max(self.now));
        if t != self.timers[i] {
            self.timers[i] = t;
            if let Some(t) = t {
                self.push(t, Ev::Timer { node: i });
            }
        }
    }

    /// Runs the network until virtual time `until`.
    pub fn run_until(&mut self, until: Instant) {
        while let Some(Reverse((at, _, slot))) = self.queue.peek().copied() {
            if at > until {
                break;
            }
            self.queue.pop();
            self.now = self.now.max(at);
            let Some(ev) = self.evs[slot].take() else { continue };
            self.free_evs.push(slot);
            match ev {
                Ev::Deliver { to, from, data } => {
                    let now = self.now;
                    if let Some(n) = self.nodes[to].as_mut() {
                        self.delivered += 1;
                        n.handle_datagram(now, from, &data);
                        self.flush(to);
                    }
                }
                Ev::Timer { node } => {
                    // A timer that was re-armed since is stale.
                    if self.timers[node] != Some(at) {
                        continue;
                    }
                    self.timers[node] = None;
                    let now = self.now;
                    if let Some(n) = self.nodes[node].as_mut() {
                        n.handle_timeout(now);
                        self.flush(node);
                    }
                }
            }
        }
        self.now = self.now.max(until);
    }

    pub fn run_for(&mut self, d: Duration) {
        let until = self.now + d;
        self.run_until(until);
    }

    pub fn rng(&mut self) -> &mut Rng {
        &mut self.rng
    }
}
