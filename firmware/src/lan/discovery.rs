//! Sans-IO LAN discovery: beacons out (to be multicast by the driver), beacons in, `Found` events.
//!
//! Every device beacons at start and every `interval`. Each tag also says (inside the MAC, so
//! only the contact can read it) whether the sender has heard that contact lately; a device that
//! sees "not heard" from a contact answers at once, at most one extra beacon per `answer_gap`.
//! So two devices find each other within one round trip after either starts or restarts, and
//! once both have heard each other no extra beacons flow.
//!
//! A `Found` address is a hint, not a proof: beacons carry no clock, so one recorded on the LAN
//! can be replayed from elsewhere. The Noise handshake authenticates whoever answers there.
use super::beacon::{Beacon, HEADER_LEN, MAX_TAGS, NONCE_LEN, PairKey, TAG_LEN, Tag, encode, mac};
use crate::identity::{DeviceId, DeviceKey};
use crate::util::rng::Rng;
use serde::Serialize;
use std::collections::VecDeque;
use std::net::SocketAddr;
use std::time::{Duration, Instant};
use zeroize::Zeroize;

/// The default multicast group and port (administratively scoped: never routed off-site).
pub const DEFAULT_GROUP: std::net::SocketAddrV4 =
    std::net::SocketAddrV4::new(std::net::Ipv4Addr::new(239, 255, 77, 77), 7601);

/// A contact counts as "heard" for this many intervals after its last beacon.
const HEARD_INTERVALS: u32 = 3;
/// Own recent nonces, to drop our own beacons looped back by the multicast socket.
const OWN_NONCES: usize = 4;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LanConfig {
    /// Period of unsolicited beacons.
    pub interval: Duration,
    /// Least time between a beacon and an extra (answer) beacon.
    pub answer_gap: Duration,
}

impl Default for LanConfig {
    fn default() -> Self {
        LanConfig { interval: Duration::from_secs(5), answer_gap: Duration::from_secs(1) }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LanEvent {
    /// A contact device beaconed from a new address (first time, or it moved). `addr` is the
    /// beacon's source IP with the call port the beacon announced.
    Found { device: DeviceId, addr: SocketAddr },
}

#[derive(Debug, Clone, Copy, Default, Serialize, PartialEq, Eq)]
pub struct LanCounters {
    /// All beacons produced by `poll_beacon`.
    pub sent: u64,
    /// Of which extra beacons (answers, port changes) beyond the periodic ones.
    pub answers: u64,
    pub received: u64,
    /// Beacons from a contact device.
    pub matched: u64,
    /// Well-formed beacons from no contact of ours.
    pub unknown: u64,
    /// Our own beacons, looped back.
    pub own: u64,
    pub malformed: u64,
    /// Contact devices left out at start: invalid or low-order keys, or our own ID.
    pub unusable_contacts: u64,
}

struct Peer {
    id: DeviceId,
    public: [u8; 32],
    pair: PairKey,
    addr: Option<SocketAddr>,
    heard: Option<Instant>,
    /// It has not heard us: an answer beacon must carry its tag.
    answer: bool,
    /// Its `Found` is in the event queue (which holds each peer at most once).
    queued: bool,
    /// Scratch while choosing a beacon's tags.
    picked: bool,
}

pub struct LanDiscovery {
    cfg: LanConfig,
    public: [u8; 32],
    /// Keys the nonce and padding generator. `Rng` (splitmix64) alone is invertible: its raw
    /// outputs would let an observer predict a device's next nonce and so link its beacons.
    nonce_key: [u8; 32],
    rng: Rng,
    port: u16,
    peers: Vec<Peer>,
    now: Instant,
    next_periodic: Instant,
    periodic_due: bool,
    answer_at: Option<Instant>,
    last_sent: Option<Instant>,
    own_nonces: [[u8; NONCE_LEN]; OWN_NONCES],
    own_next: usize,
    events: VecDeque<usize>,
    pick: Vec<usize>,
    tags: Vec<Tag>,
    cursor: usize,
    counters: LanCounters,
}

impl Drop for LanDiscovery {
    fn drop(&mut self) {
        self.nonce_key.zeroize();
    }
}

impl LanDiscovery {
    /// `port` is our call port, announced in beacons (0: none yet, nothing is sent until
    /// `set_port`). Pairwise keys are computed here, once; nothing allocates after this.
    pub fn new(key: &DeviceKey, contacts: &[DeviceId], port: u16, cfg: LanConfig, rng: Rng, now: Instant) -> Self {
        let me = key.id();
        let mut secret = key.x25519_secret();
        let public = me.x25519_public().unwrap_or_default();
        let mut peers: Vec<Peer> = Vec::with_capacity(contacts.len());
        let mut unusable = 0;
        for id in contacts {
            if peers.iter().any(|p| p.id == *id) {
                continue; // the same device listed under two contacts
            }
            let pair = id
                .x25519_public()
                .filter(|_| *id != me)
                .and_then(|p| Some((p, PairKey::derive(&secret, &public, &p)?)));
            match pair {
                Some((p, pair)) => peers.push(Peer {
                    id: *id,
                    public: p,
                    pair,
                    addr: None,
                    heard: None,
                    answer: false,
                    queued: false,
                    picked: false,
                }),
                None => unusable += 1,
            }
        }
        let nonce_key = mac(&secret, &[b"peercom lan nonce v1"]);
        secret.zeroize();
        let n = peers.len();
        LanDiscovery {
            cfg,
            public,
            nonce_key,
            rng,
            port,
            now,
            next_periodic: now + cfg.interval,
            periodic_due: true, // announce ourselves at start
            answer_at: None,
            last_sent: None,
            own_nonces: [[0; NONCE_LEN]; OWN_NONCES],
            own_next: 0,
            events: VecDeque::with_capacity(n),
            pick: Vec::with_capacity(MAX_TAGS.min(n)),
            tags: Vec::with_capacity(MAX_TAGS),
            cursor: 0,
            counters: LanCounters { unusable_contacts: unusable, ..LanCounters::default() },
            peers,
        }
    }

    pub fn counters(&self) -> LanCounters {
        self.counters
    }

    /// A new call port: announced at once (rate-limited like answers).
    pub fn set_port(&mut self, port: u16) {
        if port != self.port {
            self.port = port;
            self.schedule_answer();
        }
    }

    pub fn handle_timeout(&mut self, now: Instant) {
        self.now = now;
        if now >= self.next_periodic {
            self.periodic_due = true;
            self.next_periodic += self.cfg.interval;
            if self.next_periodic <= now {
                self.next_periodic = now + self.cfg.interval; // we were asleep: don't burst
            }
        }
    }

    pub fn handle_beacon(&mut self, now: Instant, from: SocketAddr, bytes: &[u8]) {
        self.now = now;
        self.counters.received += 1;
        let Ok(b) = Beacon::decode(bytes) else {
            self.counters.malformed += 1;
            return;
        };
        if self.own_nonces.contains(&b.nonce) {
            self.counters.own += 1;
            return;
        }
        // One MAC per contact; a beacon comes from one device, so the first match is the only one.
        let Some((i, heard_us)) = self.peers.iter().enumerate().find_map(|(i, p)| {
            let [not_heard, heard] = p.pair.tags(&b.nonce, &p.public);
            if b.contains(&heard) {
                Some((i, true))
            } else if b.contains(&not_heard) {
                Some((i, false))
            } else {
                None
            }
        }) else {
            self.counters.unknown += 1;
            return;
        };
        self.counters.matched += 1;
        let Some(p) = self.peers.get_mut(i) else { return };
        let addr = SocketAddr::new(from.ip(), b.port);
        p.heard = Some(now);
        if p.addr != Some(addr) {
            p.addr = Some(addr);
            if !p.queued {
                p.queued = true;
                self.events.push_back(i);
            }
        }
        if !heard_us {
            p.answer = true;
            self.schedule_answer();
        }
    }

    /// The next beacon due, written into `buf` (at least `MAX_LEN` bytes is always enough), for
    /// the driver to send to the multicast group. None if none is due, or if `buf` is too small.
    pub fn poll_beacon(&mut self, buf: &mut [u8]) -> Option<usize> {
        let answer_due = self.answer_at.is_some_and(|t| t <= self.now);
        if !self.periodic_due && !answer_due {
            return None;
        }
        if self.port == 0 {
            // Nothing to announce yet; `set_port` will schedule a beacon.
            self.periodic_due = false;
            self.answer_at = None;
            return None;
        }
        if buf.len() < HEADER_LEN + TAG_LEN * padded(self.peers.len()) {
            return None;
        }
        let nonce = self.fresh_nonce();
        self.choose_peers();
        self.tags.clear();
        let heard_within = self.cfg.interval * HEARD_INTERVALS;
        for &i in &self.pick {
            if let Some(p) = self.peers.get_mut(i) {
                let heard = p.heard.is_some_and(|t| self.now.saturating_duration_since(t) < heard_within);
                self.tags.push(p.pair.tags(&nonce, &self.public)[usize::from(heard)]);
                p.answer = false;
            }
        }
        // Padding to a multiple of 4 (at least 4) leaks less about how many contacts we have.
        for j in self.tags.len()..padded(self.tags.len()) {
            let h = mac(&self.nonce_key, &[b"pad", &nonce, &(j as u32).to_le_bytes()]);
            let mut t = [0u8; TAG_LEN];
            t.copy_from_slice(&h[..TAG_LEN]);
            self.tags.push(t);
        }
        let n = encode(&nonce, self.port, &mut self.tags, buf).ok()?;
        self.counters.sent += 1;
        if !self.periodic_due {
            self.counters.answers += 1;
        }
        self.periodic_due = false;
        self.last_sent = Some(self.now);
        self.answer_at = None;
        if self.peers.iter().any(|p| p.answer) {
            self.schedule_answer(); // more answers than fit in one beacon (over MAX_TAGS contacts)
        }
        if let Some(slot) = self.own_nonces.get_mut(self.own_next % OWN_NONCES) {
            *slot = nonce;
        }
        self.own_next = self.own_next.wrapping_add(1);
        Some(n)
    }

    pub fn poll_event(&mut self) -> Option<LanEvent> {
        let i = self.events.pop_front()?;
        let p = self.peers.get_mut(i)?;
        p.queued = false;
        Some(LanEvent::Found { device: p.id, addr: p.addr? })
    }

    /// When `handle_timeout` should next be called (a beacon may already be due: poll first).
    pub fn poll_timeout(&self) -> Option<Instant> {
        Some(self.answer_at.map_or(self.next_periodic, |a| a.min(self.next_periodic)))
    }

    /// An extra beacon as soon as the rate limit allows (an already scheduled one stands).
    fn schedule_answer(&mut self) {
        if self.answer_at.is_none() {
            let earliest = self.last_sent.map_or(self.now, |t| t + self.cfg.answer_gap);
            self.answer_at = Some(earliest.max(self.now));
        }
    }

    /// Unique (Rng) and unpredictable (keyed): enough for a nonce that only has to make every
    /// beacon's tags look new.
    fn fresh_nonce(&mut self) -> [u8; NONCE_LEN] {
        let (a, b) = (self.rng.next_u64().to_le_bytes(), self.rng.next_u64().to_le_bytes());
        let h = mac(&self.nonce_key, &[b"nonce", &a, &b]);
        let mut nonce = [0u8; NONCE_LEN];
        nonce.copy_from_slice(&h[..NONCE_LEN]);
        nonce
    }

    /// Which contacts get a tag: all of them if they fit; otherwise those owed an answer first,
    /// then the rest in turn.
    fn choose_peers(&mut self) {
        self.pick.clear();
        let n = self.peers.len();
        if n <= MAX_TAGS {
            self.pick.extend(0..n);
            return;
        }
        for (i, p) in self.peers.iter_mut().enumerate() {
            if p.answer && self.pick.len() < MAX_TAGS {
                p.picked = true;
                self.pick.push(i);
            }
        }
        let mut k = 0;
        while self.pick.len() < MAX_TAGS && k < n {
            let i = (self.cursor + k) % n;
            if let Some(p) = self.peers.get_mut(i).filter(|p| !p.picked) {
                p.picked = true;
                self.pick.push(i);
            }
            k += 1;
        }
        self.cursor = (self.cursor + k) % n;
        for &i in &self.pick {
            if let Some(p) = self.peers.get_mut(i) {
                p.picked = false;
            }
        }
    }
}

/// Tag count after padding: a multiple of 4, at least 4, at most `MAX_TAGS`.
fn padded(n: usize) -> usize {
    n.max(1).div_ceil(4).saturating_mul(4).min(MAX_TAGS)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::lan::beacon::MAX_LEN;

    const T: Duration = Duration::from_millis(1);

    fn key(seed: u8) -> DeviceKey {
        DeviceKey::from_seed([seed; 32])
    }

    fn node(seed: u8, contacts: &[u8], port: u16, now: Instant) -> LanDiscovery {
        let ids: Vec<DeviceId> = contacts.iter().map(|&s| key(s).id()).collect();
        LanDiscovery::new(&key(seed), &ids, port, LanConfig::default(), Rng::seeded(seed as u64), now)
    }

    fn addr(s: &str) -> SocketAddr {
        s.parse().unwrap()
    }

    fn beacon(d: &mut LanDiscovery) -> Option<Vec<u8>> {
        let mut buf = [0u8; MAX_LEN];
        d.poll_beacon(&mut buf).map(|n| buf[..n].to_vec())
    }

    fn events(d: &mut LanDiscovery) -> Vec<LanEvent> {
        std::iter::from_fn(|| d.poll_event()).collect()
    }

    fn found(seed: u8, a: &str) -> LanEvent {
        LanEvent::Found { device: key(seed).id(), addr: addr(a) }
    }

    #[test]
    fn two_contacts_find_each_other_in_one_round_trip() {
        let t0 = Instant::now();
        let mut a = node(1, &[2], 4001, t0);
        let mut b = node(2, &[1], 4002, t0 + 10 * T);
        let ba = beacon(&mut a).unwrap();
        assert!(beacon(&mut a).is_none(), "one start beacon");
        b.handle_beacon(t0 + 20 * T, addr("10.0.0.1:7601"), &ba);
        assert_eq!(events(&mut b), vec![found(1, "10.0.0.1:4001")]);
        // B's own start beacon already answers (it has heard A): A needs nothing more.
        let bb = beacon(&mut b).unwrap();
        a.handle_beacon(t0 + 21 * T, addr("10.0.0.2:7601"), &bb);
        assert_eq!(events(&mut a), vec![found(2, "10.0.0.2:4002")]);
        assert!(beacon(&mut a).is_none(), "B said it heard A: no answer");
        assert!(beacon(&mut b).is_none());
        assert_eq!(a.counters().matched, 1);
        assert_eq!(b.counters().matched, 1);
        // Later beacons with the same addresses raise no new events.
        a.handle_timeout(t0 + Duration::from_secs(5));
        let ba = beacon(&mut a).unwrap();
        b.handle_beacon(t0 + Duration::from_secs(5), addr("10.0.0.1:7601"), &ba);
        assert!(events(&mut b).is_empty());
        assert_eq!(b.counters().matched, 2);
    }

    #[test]
    fn a_late_starter_gets_an_immediate_answer() {
        let t0 = Instant::now();
        let mut a = node(1, &[2], 4001, t0);
        beacon(&mut a).unwrap(); // nobody hears it
        let t1 = t0 + Duration::from_millis(2500);
        a.handle_timeout(t1);
        let mut b = node(2, &[1], 4002, t1);
        let bb = beacon(&mut b).unwrap();
        a.handle_beacon(t1, addr("10.0.0.2:7601"), &bb);
        let answer = beacon(&mut a).expect("A answers B at once");
        assert_eq!(a.counters().answers, 1);
        b.handle_beacon(t1 + T, addr("10.0.0.1:7601"), &answer);
        assert_eq!(events(&mut b), vec![found(1, "10.0.0.1:4001")]);
        // The answer said "heard you", so B does not answer back.
        assert!(beacon(&mut b).is_none());
    }

    #[test]
    fn a_restarted_contact_is_answered_again() {
        let t0 = Instant::now();
        let mut a = node(1, &[2], 4001, t0);
        let mut b = node(2, &[1], 4002, t0);
        b.handle_beacon(t0, addr("10.0.0.1:7601"), &beacon(&mut a).unwrap());
        a.handle_beacon(t0, addr("10.0.0.2:7601"), &beacon(&mut b).unwrap());
        assert_eq!(events(&mut a).len(), 1);
        a.handle_timeout(t0 + Duration::from_secs(1));
        b.handle_timeout(t0 + Duration::from_secs(1));
        assert!(beacon(&mut a).is_none() && beacon(&mut b).is_none(), "both have heard each other");
        // B restarts on the same address: A has seen it before, but B has not heard A.
        let t1 = t0 + Duration::from_secs(2);
        let mut b = node(2, &[1], 4002, t1);
        a.handle_timeout(t1);
        a.handle_beacon(t1, addr("10.0.0.2:7601"), &beacon(&mut b).unwrap());
        assert!(events(&mut a).is_empty(), "same address: no event");
        let answer = beacon(&mut a).expect("answer to the restarted B");
        b.handle_beacon(t1 + T, addr("10.0.0.1:7601"), &answer);
        assert_eq!(events(&mut b), vec![found(1, "10.0.0.1:4001")]);
    }

    #[test]
    fn strangers_and_one_sided_contacts_never_match() {
        let t0 = Instant::now();
        let mut a = node(1, &[2], 4001, t0);
        let mut b = node(2, &[1], 4002, t0);
        let mut stranger = node(3, &[4, 5], 4003, t0);
        // D lists A, but A does not list D.
        let mut d = node(4, &[1], 4004, t0);
        let beacons = [
            (addr("10.0.0.1:7601"), beacon(&mut a).unwrap()),
            (addr("10.0.0.2:7601"), beacon(&mut b).unwrap()),
            (addr("10.0.0.3:7601"), beacon(&mut stranger).unwrap()),
            (addr("10.0.0.4:7601"), beacon(&mut d).unwrap()),
        ];
        for n in [&mut a, &mut b, &mut stranger, &mut d] {
            for (from, bytes) in &beacons {
                n.handle_beacon(t0 + T, *from, bytes);
            }
        }
        assert_eq!(events(&mut a), vec![found(2, "10.0.0.2:4002")]);
        assert_eq!(events(&mut b), vec![found(1, "10.0.0.1:4001")]);
        assert!(events(&mut stranger).is_empty());
        assert!(events(&mut d).is_empty());
        assert_eq!((a.counters().matched, a.counters().unknown, a.counters().own), (1, 2, 1));
        assert_eq!((d.counters().matched, d.counters().unknown, d.counters().own), (0, 3, 1));
        assert_eq!(stranger.counters().matched, 0);
    }

    #[test]
    fn own_beacon_is_ignored() {
        let t0 = Instant::now();
        // Even listing ourselves as a contact (a shared contact entry) must not match ourselves.
        let mut a = node(1, &[1, 2], 4001, t0);
        assert_eq!(a.counters().unusable_contacts, 1);
        for k in 0..6 {
            let t = t0 + Duration::from_secs(5) * k;
            a.handle_timeout(t);
            let bytes = beacon(&mut a).unwrap();
            a.handle_beacon(t, addr("10.0.0.1:7601"), &bytes);
        }
        assert_eq!(a.counters().own, 6);
        assert_eq!(a.counters().matched, 0);
        assert!(events(&mut a).is_empty());
    }

    #[test]
    fn malformed_beacons_never_panic_and_are_counted() {
        let t0 = Instant::now();
        let mut a = node(1, &[2], 4001, t0);
        let mut b = node(2, &[1], 4002, t0);
        let good = beacon(&mut b).unwrap();
        let from = addr("10.0.0.2:7601");
        for len in 0..good.len() {
            a.handle_beacon(t0, from, &good[..len]);
        }
        let mut longer = good.clone();
        longer.push(0);
        a.handle_beacon(t0, from, &longer);
        let mut rng = Rng::seeded(99);
        let mut junk = vec![0u8; 1300];
        let mut count = good.len() as u64 + 1;
        for _ in 0..2000 {
            let len = rng.below(junk.len() + 1);
            for x in junk.iter_mut() {
                *x = rng.next_u32() as u8;
            }
            // Some well-formed headers too, to reach the tag checks.
            if rng.below(2) == 0 && len >= HEADER_LEN {
                junk[0] = 5;
                junk[1] = 1;
                junk[HEADER_LEN - 1] = ((len - HEADER_LEN) / TAG_LEN) as u8;
            }
            let before = a.counters();
            a.handle_beacon(t0, from, &junk[..len]);
            let after = a.counters();
            assert_eq!(after.matched, 0);
            count += after.malformed - before.malformed;
        }
        assert_eq!(a.counters().malformed, count);
        assert!(count > good.len() as u64 + 1000);
        assert!(events(&mut a).is_empty());
        a.handle_beacon(t0, from, &good);
        assert_eq!(events(&mut a), vec![found(2, "10.0.0.2:4002")]);
    }

    #[test]
    fn beacons_reveal_no_key_and_are_unlinkable() {
        let t0 = Instant::now();
        let mut a = node(1, &[2, 3], 4001, t0);
        let b1 = beacon(&mut a).unwrap();
        a.handle_timeout(t0 + Duration::from_secs(5));
        let b2 = beacon(&mut a).unwrap();
        for seed in [1u8, 2, 3] {
            let id = key(seed).id();
            for k in [*id.as_bytes(), id.x25519_public().unwrap()] {
                for w in k.windows(6) {
                    assert!(!b1.windows(6).any(|x| x == w) && !b2.windows(6).any(|x| x == w));
                }
            }
        }
        let (d1, d2) = (Beacon::decode(&b1).unwrap(), Beacon::decode(&b2).unwrap());
        assert_ne!(d1.nonce, d2.nonce);
        assert_eq!(d1.tag_count(), 4, "two contacts padded to four tags");
        for t in d1.tags() {
            assert!(!d2.tags().any(|u| u == t), "a tag repeats across beacons");
        }
        // A device with no contacts still beacons like everyone else.
        let mut lone = node(9, &[], 4009, t0);
        assert_eq!(Beacon::decode(&beacon(&mut lone).unwrap()).unwrap().tag_count(), 4);
    }

    #[test]
    fn interval_and_answer_rate_limit_in_virtual_time() {
        let t0 = Instant::now();
        let mut a = node(1, &[2], 4001, t0);
        let mut b = node(2, &[1], 4002, t0);
        assert!(beacon(&mut a).is_some());
        assert_eq!(a.poll_timeout(), Some(t0 + Duration::from_secs(5)));
        // B keeps saying it has not heard A (A's beacons are lost): B's beacon is replayed every
        // 100 ms for 20 s. A answers at most once per second.
        let bb = beacon(&mut b).unwrap();
        let mut sent = vec![];
        let mut t = t0;
        while t < t0 + Duration::from_secs(20) {
            t += Duration::from_millis(100);
            a.handle_timeout(t);
            a.handle_beacon(t, addr("10.0.0.2:7601"), &bb);
            while beacon(&mut a).is_some() {
                sent.push(t - t0);
            }
            assert!(a.poll_timeout().unwrap() > t);
        }
        for w in sent.windows(2) {
            assert!(w[1] - w[0] >= Duration::from_secs(1), "{sent:?}");
        }
        assert_eq!(sent.len(), 20, "{sent:?}");
        assert_eq!(a.counters().sent, 21);
        assert_eq!(a.counters().answers, 16, "periodic beacons at 5, 10, 15, 20 s");
        // Left alone, only the periodic beacons flow.
        let mut c = node(3, &[], 4003, t0);
        beacon(&mut c).unwrap();
        let mut times = vec![];
        let mut t = t0;
        for _ in 0..4 {
            t = c.poll_timeout().unwrap();
            c.handle_timeout(t);
            beacon(&mut c).unwrap();
            times.push(t - t0);
            assert!(beacon(&mut c).is_none());
        }
        assert_eq!(times, [5, 10, 15, 20].map(Duration::from_secs));
        // After a long sleep, one beacon and the schedule resumes from now.
        c.handle_timeout(t + Duration::from_secs(60));
        assert!(beacon(&mut c).is_some() && beacon(&mut c).is_none());
        assert_eq!(c.poll_timeout(), Some(t + Duration::from_secs(65)));
    }

    #[test]
    fn address_change_emits_found_again() {
        let t0 = Instant::now();
        let mut a = node(1, &[2], 4001, t0);
        let mut b = node(2, &[1], 4002, t0);
        a.handle_beacon(t0, addr("10.0.0.2:7601"), &beacon(&mut b).unwrap());
        assert_eq!(events(&mut a), vec![found(2, "10.0.0.2:4002")]);
        b.handle_timeout(t0 + Duration::from_secs(5));
        a.handle_beacon(t0 + Duration::from_secs(5), addr("10.0.0.9:7601"), &beacon(&mut b).unwrap());
        assert_eq!(events(&mut a), vec![found(2, "10.0.0.9:4002")]);
        // A new call port is announced at once and seen as a new address.
        b.set_port(4999);
        b.handle_timeout(t0 + Duration::from_secs(6));
        let bb = beacon(&mut b).expect("port change announced");
        a.handle_beacon(t0 + Duration::from_secs(6), addr("10.0.0.9:7601"), &bb);
        assert_eq!(events(&mut a), vec![found(2, "10.0.0.9:4999")]);
        // Two moves before the driver drains: one event, with the latest address.
        for (s, ip) in [(10, "10.0.0.7:7601"), (15, "10.0.0.8:7601")] {
            b.handle_timeout(t0 + Duration::from_secs(s));
            a.handle_beacon(t0 + Duration::from_secs(s), addr(ip), &beacon(&mut b).unwrap());
        }
        assert_eq!(events(&mut a), vec![found(2, "10.0.0.8:4999")]);
    }

    #[test]
    fn no_port_no_beacon() {
        let t0 = Instant::now();
        let mut a = node(1, &[2], 0, t0);
        assert!(beacon(&mut a).is_none());
        a.set_port(4001);
        assert!(beacon(&mut a).is_some());
    }

    #[test]
    fn more_contacts_than_fit_rotate_and_answers_come_first() {
        let t0 = Instant::now();
        let seeds: Vec<u8> = (10..210).collect();
        let ids: Vec<DeviceId> = seeds.iter().map(|&s| key(s).id()).collect();
        let mut a = LanDiscovery::new(&key(1), &ids, 4001, LanConfig::default(), Rng::seeded(1), t0);
        let mut first = node(10, &[1], 4010, t0);
        let t1 = t0 + Duration::from_secs(2);
        let mut last = node(209, &[1], 4209, t1);
        let b0 = beacon(&mut a).unwrap();
        assert_eq!(Beacon::decode(&b0).unwrap().tag_count(), MAX_TAGS);
        first.handle_beacon(t0, addr("10.0.0.1:7601"), &b0);
        last.handle_beacon(t1, addr("10.0.0.1:7601"), &b0);
        assert_eq!(events(&mut first).len(), 1);
        assert!(events(&mut last).is_empty(), "209 is beyond the first window");
        // 209 starts and is answered at once, though it is not in the rotation's next window.
        a.handle_timeout(t1);
        a.handle_beacon(t1, addr("10.0.0.9:7601"), &beacon(&mut last).unwrap());
        let answer = beacon(&mut a).unwrap();
        last.handle_beacon(t1 + T, addr("10.0.0.1:7601"), &answer);
        assert_eq!(events(&mut last), vec![found(1, "10.0.0.1:4001")]);
        // Rotation covers everyone within two periodic beacons.
        let mut c = node(200, &[1], 4200, t0);
        for s in [5, 10] {
            a.handle_timeout(t0 + Duration::from_secs(s));
            c.handle_beacon(t0 + Duration::from_secs(s), addr("10.0.0.1:7601"), &beacon(&mut a).unwrap());
        }
        assert_eq!(events(&mut c).len(), 1);
    }
}
