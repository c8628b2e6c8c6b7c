//! A deterministic network of sans-IO DHT nodes in virtual time: one process, one event queue,
//! latency drawn per datagram, random loss, and churn. Any run replays exactly from its seed.
use super::id::NodeId;
use super::node::{DhtEvent, Node, NodeConfig};
use crate::util::rng::Rng;
use crate::wire::MAX_DATAGRAM;
use std::cmp::Reverse;
use std::collections::BinaryHeap;
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
    /// `len` bytes of pooled buffer `buf`.
    Deliver {
        to: usize,
        from: SocketAddr,
        buf: usize,
        len: usize,
    },
    Timer {
        node: usize,
    },
}

/// Queue keys: virtual nanoseconds, then a sequence number (first scheduled, first run), then the
/// event's slot, packed into one integer so that the heap compares once.
const SEQ_BITS: u32 = 36;
const SLOT_BITS: u32 = 28;

fn key(at_ns: u64, seq: u64, slot: usize) -> u128 {
    (u128::from(at_ns) << 64) | (u128::from(seq & ((1 << SEQ_BITS) - 1)) << SLOT_BITS) | (slot as u128)
}

pub struct DhtSim {
    cfg: SimConfig,
    rng: Rng,
    t0: Instant,
    now: Instant,
    nodes: Vec<Option<Node>>,
    addrs: Vec<SocketAddr>,
    timers: Vec<Option<Instant>>,
    queue: BinaryHeap<Reverse<u128>>,
    evs: Vec<Option<Ev>>,
    free_evs: Vec<usize>,
    /// Datagram buffers in flight, reused (no allocation per datagram once the pool is warm).
    bufs: Vec<[u8; MAX_DATAGRAM]>,
    free_bufs: Vec<usize>,
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
            timers: Vec::new(),
            queue: BinaryHeap::new(),
            evs: Vec::new(),
            free_evs: Vec::new(),
            bufs: Vec::new(),
            free_bufs: Vec::new(),
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

    /// The node at `addr`: `addr_for` backwards (no hash map on the per-datagram path).
    fn index_of(&self, addr: &SocketAddr) -> Option<usize> {
        let SocketAddr::V4(a) = addr else { return None };
        let [o0, o1, o2, o3] = a.ip().octets();
        let low = o3.checked_sub(10).filter(|&b| b < 2)?;
        let i = (u32::from(o0.checked_sub(1)?) << 17) | (u32::from(o1) << 9) | (u32::from(o2) << 1) | u32::from(low);
        let i = (i as usize).checked_sub(1)?;
        (self.addrs.get(i) == Some(addr)).then_some(i)
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
        let ns = at.saturating_duration_since(self.t0).as_nanos() as u64;
        self.queue.push(Reverse(key(ns, self.seq, slot)));
    }

    /// Sends node `i`'s datagrams into the network, collects its events and re-arms its timer.
    fn flush(&mut self, i: usize) {
        let from = self.addrs[i];
        let (lo, hi) = self.cfg.latency;
        loop {
            let b = match self.free_bufs.pop() {
                Some(b) => b,
                None => {
                    self.bufs.push([0; MAX_DATAGRAM]);
                    self.bufs.len() - 1
                }
            };
            let Some(node) = self.nodes[i].as_mut() else {
                self.free_bufs.push(b);
                return;
            };
            let Some((dst, n)) = node.poll_transmit(&mut self.bufs[b][..]) else {
                self.free_bufs.push(b);
                break;
            };
            self.sent_bytes[i] += n as u64;
            let lost = self.cfg.loss > 0.0 && (self.rng.next_u64() as f64 / u64::MAX as f64) < self.cfg.loss;
            let to = self.index_of(&dst);
            if lost {
                self.lost += 1;
            }
            let Some(to) = to.filter(|_| !lost) else {
                self.free_bufs.push(b);
                continue;
            };
            let span = (hi - lo).as_micros() as u64;
            let delay = lo + Duration::from_micros(if span == 0 { 0 } else { self.rng.next_u64() % span });
            self.push(self.now + delay, Ev::Deliver { to, from, buf: b, len: n });
        }
        let Some(node) = self.nodes[i].as_mut() else { return };
        while let Some(ev) = node.poll_event() {
            self.events.push((i, ev));
        }
        // A wake-up already queued no later than the node's timeout will do: the node is asked
        // again when it fires (an early `handle_timeout` does nothing). Queueing every change
        // would fill the queue with stale wake-ups, one per datagram.
        if let Some(t) = node.poll_timeout().map(|t| t.max(self.now))
            && self.timers[i].is_none_or(|s| t < s)
        {
            self.timers[i] = Some(t);
            self.push(t, Ev::Timer { node: i });
        }
    }

    /// Runs the network until virtual time `until`.
    pub fn run_until(&mut self, until: Instant) {
        let until_ns = until.saturating_duration_since(self.t0).as_nanos() as u64;
        while let Some(&Reverse(k)) = self.queue.peek() {
            let at_ns = (k >> 64) as u64;
            if at_ns > until_ns {
                break;
            }
            self.queue.pop();
            let at = self.t0 + Duration::from_nanos(at_ns);
            self.now = self.now.max(at);
            let slot = (k as usize) & ((1 << SLOT_BITS) - 1);
            let Some(ev) = self.evs.get_mut(slot).and_then(|e| e.take()) else { continue };
            self.free_evs.push(slot);
            match ev {
                Ev::Deliver { to, from, buf, len } => {
                    let now = self.now;
                    if let Some(n) = self.nodes[to].as_mut() {
                        self.delivered += 1;
                        n.handle_datagram(now, from, &self.bufs[buf][..len]);
                        self.flush(to);
                    }
                    self.free_bufs.push(buf);
                }
                Ev::Timer { node } => {
                    // A wake-up that an earlier one replaced is stale.
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
