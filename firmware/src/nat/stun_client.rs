//! Sans-IO STUN binding client: asks each configured server for our reflexive address on the
//! socket the driver sends from, retrying with a doubling timeout (RFC 8489 7.2.1, with fewer
//! tries), and asks again every `reprobe` so an address change is noticed.
//!
//! A response is ours only if its transaction ID matches a request still outstanding and it comes
//! from the server that request went to: a peercom packet can start like a STUN response, and
//! anyone can send us a well-formed one.
use super::stun::{self, Outcome, TxId};
use crate::util::rng::Rng;
use blake2::{Blake2s256, Digest};
use serde::Serialize;
use std::collections::VecDeque;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

/// Servers beyond this many are ignored: a few agreeing answers are all the classifier needs.
pub const MAX_SERVERS: usize = 8;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StunConfig {
    /// Wait after the first request; doubled after each further one.
    pub rto: Duration,
    /// Requests per round to one server before it is given up on until the next round.
    pub tries: u8,
    /// From the end of a round at a server (answer or give-up) to its next round.
    pub reprobe: Duration,
}

impl Default for StunConfig {
    /// Tries at 0, 250 and 750 ms, given up at 1.75 s; a NAT mapping change shows within 5 min.
    fn default() -> Self {
        StunConfig { rto: Duration::from_millis(250), tries: 3, reprobe: Duration::from_secs(5 * 60) }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StunEvent {
    /// `server` sees us at `addr`: a sample for the classifier.
    Mapped { server: SocketAddr, addr: SocketAddr },
    /// `server` answered with an error (e.g. 401: it wants credentials); asked again next round.
    Rejected { server: SocketAddr, code: u16 },
    /// No answer to any try this round.
    Unreachable { server: SocketAddr },
}

#[derive(Debug, Clone, Copy, Default, Serialize, PartialEq, Eq)]
pub struct StunCounters {
    /// Requests produced by `poll_transmit`, retransmissions included.
    pub sent: u64,
    pub retransmits: u64,
    pub mapped: u64,
    pub rejected: u64,
    pub unreachable: u64,
    /// Datagrams that pass `is_stun` but are no well-formed Binding response.
    pub malformed: u64,
    /// Well-formed responses to no outstanding request of ours, or from the wrong address.
    pub unsolicited: u64,
}

#[derive(Clone, Copy)]
enum State {
    /// The next round starts at this time.
    Idle(Instant),
    /// `tries` requests sent (or, with `send`, about to be); at `deadline` resend or give up.
    Waiting { txid: TxId, tries: u8, deadline: Instant, send: bool },
}

struct Server {
    addr: SocketAddr,
    state: State,
    /// Its latest undrained event; the queue holds each server at most once.
    event: Option<StunEvent>,
}

/// Transaction IDs: a keyed hash of a counter. `Rng` (splitmix64) alone is invertible, so a
/// server seeing one ID could predict those sent to the others and forge their answers.
struct TxIds {
    key: [u8; 32],
    counter: u64,
}

impl TxIds {
    fn next(&mut self) -> TxId {
        self.counter = self.counter.wrapping_add(1);
        let h = Blake2s256::new().chain_update(self.key).chain_update(self.counter.to_le_bytes()).finalize();
        let mut id = [0u8; 12];
        id.copy_from_slice(&h[..12]);
        id
    }
}

pub struct StunClient {
    cfg: StunConfig,
    servers: Vec<Server>,
    events: VecDeque<usize>,
    txids: TxIds,
    counters: StunCounters,
}

impl StunClient {
    /// Starts a round at every server at once. Takes the first `MAX_SERVERS` distinct addresses
    /// (the driver resolves names); nothing allocates after this.
    pub fn new(servers: &[SocketAddr], cfg: StunConfig, mut rng: Rng, now: Instant) -> Self {
        let mut list: Vec<Server> = Vec::with_capacity(MAX_SERVERS);
        for &addr in servers {
            if list.len() < MAX_SERVERS && !list.iter().any(|s| same(s.addr, addr)) {
                list.push(Server { addr, state: State::Idle(now), event: None });
            }
        }
        let mut key = [0u8; 32];
        for c in key.chunks_mut(8) {
            c.copy_from_slice(&rng.next_u64().to_le_bytes());
        }
        let mut client = StunClient {
            cfg,
            events: VecDeque::with_capacity(list.len()),
            servers: list,
            txids: TxIds { key, counter: 0 },
            counters: StunCounters::default(),
        };
        client.handle_timeout(now);
        client
    }

    pub fn counters(&self) -> StunCounters {
        self.counters
    }

    /// Offers a datagram that arrived on the socket. True only if it was the answer to one of our
    /// outstanding requests; anything else (peercom packets, other STUN, strays) is left to the
    /// caller, though STUN-looking ones are counted.
    pub fn handle_datagram(&mut self, now: Instant, from: SocketAddr, bytes: &[u8]) -> bool {
        if !stun::is_stun(bytes) {
            return false;
        }
        let Ok(r) = stun::decode_response(bytes) else {
            self.counters.malformed += 1;
            return false;
        };
        let Some((i, s)) = self
            .servers
            .iter_mut()
            .enumerate()
            .find(|(_, s)| matches!(s.state, State::Waiting { txid, .. } if txid == r.txid) && same(s.addr, from))
        else {
            self.counters.unsolicited += 1;
            return false;
        };
        let ev = match r.outcome {
            Outcome::Mapped(addr) => {
                self.counters.mapped += 1;
                StunEvent::Mapped { server: s.addr, addr }
            }
            Outcome::Error(code) => {
                self.counters.rejected += 1;
                StunEvent::Rejected { server: s.addr, code }
            }
        };
        s.state = State::Idle(now + self.cfg.reprobe);
        report(&mut self.events, i, s, ev);
        true
    }

    pub fn handle_timeout(&mut self, now: Instant) {
        for (i, s) in self.servers.iter_mut().enumerate() {
            match s.state {
                State::Idle(at) if at <= now => {
                    let txid = self.txids.next();
                    s.state = State::Waiting { txid, tries: 1, deadline: now + self.cfg.rto, send: true };
                }
                State::Waiting { txid, tries, deadline, .. } if deadline <= now => {
                    if tries < self.cfg.tries {
                        let wait = self.cfg.rto.saturating_mul(1 << tries.min(16));
                        s.state = State::Waiting { txid, tries: tries + 1, deadline: now + wait, send: true };
                    } else {
                        self.counters.unreachable += 1;
                        s.state = State::Idle(now + self.cfg.reprobe);
                        report(&mut self.events, i, s, StunEvent::Unreachable { server: s.addr });
                    }
                }
                _ => {}
            }
        }
    }

    /// The next request due, written into `buf` (`stun::REQUEST_LEN` bytes suffice), and where
    /// to send it. None if none is due or `buf` is too small.
    pub fn poll_transmit(&mut self, buf: &mut [u8]) -> Option<(SocketAddr, usize)> {
        let s = self.servers.iter_mut().find(|s| matches!(s.state, State::Waiting { send: true, .. }))?;
        let State::Waiting { txid, tries, deadline, .. } = s.state else { return None };
        let n = stun::encode_binding_request(&txid, buf).ok()?;
        s.state = State::Waiting { txid, tries, deadline, send: false };
        self.counters.sent += 1;
        if tries > 1 {
            self.counters.retransmits += 1;
        }
        Some((s.addr, n))
    }

    pub fn poll_event(&mut self) -> Option<StunEvent> {
        let i = self.events.pop_front()?;
        self.servers.get_mut(i)?.event.take()
    }

    /// When `handle_timeout` should next be called (None: no servers). A request may already be
    /// due: poll first.
    pub fn poll_timeout(&self) -> Option<Instant> {
        self.servers
            .iter()
            .map(|s| match s.state {
                State::Idle(at) => at,
                State::Waiting { deadline, .. } => deadline,
            })
            .min()
    }
}

/// Queues `s` for `poll_event` with its newest event (an undrained older one is replaced).
fn report(events: &mut VecDeque<usize>, i: usize, s: &mut Server, ev: StunEvent) {
    if s.event.replace(ev).is_none() {
        events.push_back(i);
    }
}

/// Equal addresses, reading an IPv4-mapped IPv6 address (from a dual-stack socket) as IPv4.
fn same(a: SocketAddr, b: SocketAddr) -> bool {
    a.port() == b.port() && a.ip().to_canonical() == b.ip().to_canonical()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::nat::stun::{BINDING_ERROR, BINDING_SUCCESS, MAGIC_COOKIE, REQUEST_LEN};

    const MS: Duration = Duration::from_millis(1);

    fn sa(s: &str) -> SocketAddr {
        s.parse().unwrap()
    }

    fn client(servers: &[&str], now: Instant) -> StunClient {
        let servers: Vec<SocketAddr> = servers.iter().map(|s| sa(s)).collect();
        StunClient::new(&servers, StunConfig::default(), Rng::seeded(1), now)
    }

    /// Every request due now: (destination, transaction ID).
    fn sent(c: &mut StunClient) -> Vec<(SocketAddr, TxId)> {
        let mut buf = [0u8; REQUEST_LEN];
        let mut out = vec![];
        while let Some((to, n)) = c.poll_transmit(&mut buf) {
            out.push((to, stun::decode(&buf[..n]).unwrap().txid));
        }
        out
    }

    fn events(c: &mut StunClient) -> Vec<StunEvent> {
        std::iter::from_fn(|| c.poll_event()).collect()
    }

    /// A Binding Success Response carrying `mapped` as an IPv4 XOR-MAPPED-ADDRESS.
    fn success(txid: &TxId, mapped: SocketAddr) -> Vec<u8> {
        let SocketAddr::V4(m) = mapped else { panic!("IPv4 only") };
        let c = MAGIC_COOKIE.to_be_bytes();
        let mut b = BINDING_SUCCESS.to_be_bytes().to_vec();
        b.extend(12u16.to_be_bytes());
        b.extend(c);
        b.extend(txid);
        b.extend([0x00, 0x20, 0, 8, 0, 1]);
        b.extend((m.port() ^ 0x2112).to_be_bytes());
        b.extend(m.ip().octets().iter().zip(c).map(|(x, k)| x ^ k));
        b
    }

    fn error(txid: &TxId, code: u16) -> Vec<u8> {
        let mut b = BINDING_ERROR.to_be_bytes().to_vec();
        b.extend(8u16.to_be_bytes());
        b.extend(MAGIC_COOKIE.to_be_bytes());
        b.extend(txid);
        b.extend([0x00, 0x09, 0, 4, 0, 0, (code / 100) as u8, (code % 100) as u8]);
        b
    }

    #[test]
    fn samples_come_out() {
        let t0 = Instant::now();
        let mut c = client(&["192.0.2.1:3478", "198.51.100.7:3478"], t0);
        let reqs = sent(&mut c);
        assert_eq!(reqs.iter().map(|r| r.0).collect::<Vec<_>>(), [sa("192.0.2.1:3478"), sa("198.51.100.7:3478")]);
        assert_ne!(reqs[0].1, reqs[1].1);
        assert!(sent(&mut c).is_empty());
        let me = sa("203.0.113.5:40000");
        assert!(c.handle_datagram(t0 + 30 * MS, reqs[1].0, &success(&reqs[1].1, me)));
        assert!(c.handle_datagram(t0 + 40 * MS, reqs[0].0, &success(&reqs[0].1, me)));
        assert_eq!(
            events(&mut c),
            [StunEvent::Mapped { server: reqs[1].0, addr: me }, StunEvent::Mapped { server: reqs[0].0, addr: me }]
        );
        // Asked again after `reprobe`, counted from each answer.
        assert_eq!(c.poll_timeout(), Some(t0 + 30 * MS + Duration::from_secs(300)));
        let counters = c.counters();
        assert_eq!((counters.sent, counters.mapped, counters.unsolicited, counters.malformed), (2, 2, 0, 0));
    }

    #[test]
    fn retries_double_then_give_up_then_reprobe() {
        let t0 = Instant::now();
        let server = sa("192.0.2.1:3478");
        let mut c = client(&["192.0.2.1:3478"], t0);
        let mut times = vec![];
        let mut txids = vec![];
        let mut t = t0;
        while times.len() < 4 {
            for (to, txid) in sent(&mut c) {
                assert_eq!(to, server);
                times.push(t - t0);
                txids.push(txid);
            }
            t = c.poll_timeout().unwrap();
            c.handle_timeout(t);
            if t == t0 + 1750 * MS {
                assert_eq!(events(&mut c), [StunEvent::Unreachable { server }]);
                assert_eq!(c.poll_timeout(), Some(t + Duration::from_secs(300)));
            }
        }
        assert_eq!(times, [0, 250, 750, 301_750].map(|ms| ms * MS));
        assert!(txids[..3].iter().all(|x| *x == txids[0]), "retransmissions keep the transaction ID");
        assert_ne!(txids[3], txids[0], "a new round, a new ID");
        let k = c.counters();
        assert_eq!((k.sent, k.retransmits, k.unreachable), (4, 2, 1));
        // An answer to the abandoned round is not ours any more.
        assert!(!c.handle_datagram(t, server, &success(&txids[0], sa("203.0.113.5:1"))));
        assert_eq!(c.counters().unsolicited, 1);
        // The new round's answer is.
        assert!(c.handle_datagram(t, server, &success(&txids[3], sa("203.0.113.5:1"))));
    }

    #[test]
    fn unknown_txid_wrong_source_and_duplicates_are_ignored() {
        let t0 = Instant::now();
        let mut c = client(&["192.0.2.1:3478"], t0);
        let [(server, txid)] = sent(&mut c)[..] else { panic!() };
        let me = sa("203.0.113.5:40000");
        let mut other = txid;
        other[0] ^= 1;
        assert!(!c.handle_datagram(t0, server, &success(&other, me)));
        assert!(!c.handle_datagram(t0, sa("192.0.2.1:3479"), &success(&txid, me)), "wrong port");
        assert!(!c.handle_datagram(t0, sa("192.0.2.2:3478"), &success(&txid, me)), "wrong IP");
        assert!(events(&mut c).is_empty());
        assert_eq!(c.counters().unsolicited, 3);
        // Still waiting: the retry goes out as usual, and the real answer is taken.
        c.handle_timeout(t0 + 250 * MS);
        assert_eq!(sent(&mut c), [(server, txid)]);
        assert!(c.handle_datagram(t0 + 260 * MS, server, &success(&txid, me)));
        // Both tries answered: the second answer is a duplicate.
        assert!(!c.handle_datagram(t0 + 270 * MS, server, &success(&txid, me)));
        assert_eq!(events(&mut c), [StunEvent::Mapped { server, addr: me }]);
        assert_eq!(c.counters().unsolicited, 4);
    }

    #[test]
    fn non_stun_and_malformed_datagrams_are_not_ours() {
        let t0 = Instant::now();
        let mut c = client(&["192.0.2.1:3478"], t0);
        let [(server, txid)] = sent(&mut c)[..] else { panic!() };
        // A peercom HandshakeInit: type 1, version 1, like a success response's first bytes.
        let mut hs = vec![1u8, 1];
        hs.extend([0x21; 126]);
        assert!(!c.handle_datagram(t0, server, &hs));
        assert_eq!(c.counters(), StunCounters { sent: 1, ..StunCounters::default() }, "not STUN: not counted");
        let mut bad = success(&txid, sa("203.0.113.5:40000"));
        bad[21] = 0x30; // an unknown attribute type, and now no mapped address
        assert!(!c.handle_datagram(t0, server, &bad));
        // A Binding Request sent to us is no response either.
        let mut req = [0u8; REQUEST_LEN];
        stun::encode_binding_request(&txid, &mut req).unwrap();
        assert!(!c.handle_datagram(t0, server, &req));
        assert_eq!(c.counters().malformed, 2);
        assert!(events(&mut c).is_empty());
    }

    #[test]
    fn error_responses_are_reported_and_retried_next_round() {
        let t0 = Instant::now();
        let mut c = client(&["192.0.2.1:3478"], t0);
        let [(server, txid)] = sent(&mut c)[..] else { panic!() };
        assert!(c.handle_datagram(t0 + MS, server, &error(&txid, 401)));
        assert_eq!(events(&mut c), [StunEvent::Rejected { server, code: 401 }]);
        c.handle_timeout(t0 + Duration::from_secs(1));
        assert!(sent(&mut c).is_empty(), "no retry within the round");
        c.handle_timeout(t0 + MS + Duration::from_secs(300));
        assert_eq!(sent(&mut c).len(), 1);
    }

    #[test]
    fn reprobe_notices_an_address_change() {
        let t0 = Instant::now();
        let mut c = client(&["192.0.2.1:3478"], t0);
        let mut t = t0;
        for port in [40000, 40000, 51234] {
            let [(server, txid)] = sent(&mut c)[..] else { panic!() };
            let me = SocketAddr::new(sa("203.0.113.5:0").ip(), port);
            assert!(c.handle_datagram(t, server, &success(&txid, me)));
            assert_eq!(events(&mut c), [StunEvent::Mapped { server, addr: me }]);
            t = c.poll_timeout().unwrap();
            assert!(sent(&mut c).is_empty());
            c.handle_timeout(t);
        }
        assert_eq!(t, t0 + Duration::from_secs(900));
    }

    #[test]
    fn servers_are_capped_and_deduplicated_and_mapped_v6_sources_match() {
        let t0 = Instant::now();
        let mut list: Vec<String> = (1..=10).map(|i| format!("192.0.2.{i}:3478")).collect();
        list.insert(1, "192.0.2.1:3478".into());
        let list: Vec<&str> = list.iter().map(String::as_str).collect();
        let mut c = client(&list, t0);
        let reqs = sent(&mut c);
        assert_eq!(reqs.len(), MAX_SERVERS);
        assert_eq!(reqs[1].0, sa("192.0.2.2:3478"));
        // A dual-stack socket reports an IPv4 server as ::ffff:a.b.c.d.
        let me = sa("203.0.113.5:40000");
        assert!(c.handle_datagram(t0, sa("[::ffff:192.0.2.3]:3478"), &success(&reqs[2].1, me)));
        // A client with no servers does nothing.
        let mut none = client(&[], t0);
        assert_eq!(none.poll_timeout(), None);
        assert!(sent(&mut none).is_empty());
    }

    #[test]
    fn undrained_events_keep_only_the_newest_per_server() {
        let t0 = Instant::now();
        let mut c = client(&["192.0.2.1:3478", "192.0.2.2:3478"], t0);
        // Nobody answers and nobody drains events for five rounds.
        for _ in 0..20 {
            sent(&mut c);
            let t = c.poll_timeout().unwrap();
            c.handle_timeout(t);
        }
        let ev = events(&mut c);
        assert_eq!(
            ev,
            [
                StunEvent::Unreachable { server: sa("192.0.2.1:3478") },
                StunEvent::Unreachable { server: sa("192.0.2.2:3478") }
            ]
        );
        assert_eq!(c.counters().unreachable, 10);
    }
}
