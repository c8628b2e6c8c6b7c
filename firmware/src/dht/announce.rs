//! What a device announces about itself: its record, resealed when its addresses change and
//! every `REPUBLISH` (records live `LIFETIME`). Near the end of a blinding period the next
//! period's record goes out as well, so readers whose clock is already past midnight find it.
use super::blind::period_of;
use super::record::{self, MAX_ADDRS, RecordBuf};
use crate::identity::DeviceKey;
use crate::util::rng::Rng;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

pub const LIFETIME_SECS: u64 = 2 * 3600;
pub const REPUBLISH: Duration = Duration::from_secs(30 * 60);

pub struct Announcer {
    key: DeviceKey,
    addrs: [Option<SocketAddr>; MAX_ADDRS],
    seq: u64,
    next: Option<Instant>,
    changed: bool,
    rng: Rng,
}

impl Announcer {
    pub fn new(key: DeviceKey, rng: Rng) -> Self {
        Announcer { key, addrs: [None; MAX_ADDRS], seq: 0, next: None, changed: false, rng }
    }

    /// Sets the addresses to announce; a change is published at the next `poll`.
    pub fn set_addrs(&mut self, now: Instant, addrs: &[SocketAddr]) {
        let mut new = [None; MAX_ADDRS];
        for (slot, a) in new.iter_mut().zip(addrs) {
            *slot = Some(*a);
        }
        if new != self.addrs {
            self.addrs = new;
            self.changed = true;
            self.next = Some(self.next.map_or(now, |t| t.min(now)));
        }
    }

    pub fn addrs(&self) -> impl Iterator<Item = SocketAddr> + '_ {
        self.addrs.iter().flatten().copied()
    }

    /// When the next publication is due (None: nothing to announce yet).
    pub fn poll_timeout(&self) -> Option<Instant> {
        self.addrs[0].and(self.next)
    }

    pub fn due(&self, now: Instant) -> bool {
        self.addrs[0].is_some() && (self.changed || self.next.is_none_or(|t| now >= t))
    }

    /// The signer of our record stored under `key` (one of the periods around `unix_now`), for
    /// the holds that register us at the nodes storing it.
    pub fn signer(&self, key: &[u8; 32], unix_now: u64) -> Option<super::blind::BlindSigner> {
        let today = period_of(unix_now);
        [today, today + 1, today.saturating_sub(1)].into_iter().find_map(|p| {
            let s = super::blind::BlindSigner::new(&self.key, p)?;
            (super::blind::dht_key(&s.public()) == *key).then_some(s)
        })
    }

    /// Publish again at the next poll (our rendezvous nodes are gone: new ones are needed).
    pub fn republish(&mut self, now: Instant) {
        self.changed = true;
        self.next = Some(self.next.map_or(now, |t| t.min(now)));
    }

    /// The records to publish now (one, or two near the end of a period); 0 when none is due.
    pub fn poll(&mut self, now: Instant, unix_now: u64, out: &mut [RecordBuf; 2]) -> usize {
        if !self.due(now) {
            return 0;
        }
        self.changed = false;
        self.next = Some(now + REPUBLISH);
        // Sequence numbers follow the clock (so they keep rising across restarts) and at least
        // count up (so two changes in one second are still ordered).
        self.seq = (self.seq + 1).max(unix_now.saturating_mul(1000));
        let mut addrs = [SocketAddr::from(([0, 0, 0, 0], 0)); MAX_ADDRS];
        let mut count = 0;
        for (slot, a) in addrs.iter_mut().zip(self.addrs()) {
            *slot = a;
            count += 1;
        }
        let addrs = &addrs[..count];
        let expires = unix_now + LIFETIME_SECS;
        let today = period_of(unix_now);
        let mut n = 0;
        let periods = [Some(today), (period_of(expires) > today).then_some(today + 1)];
        for p in periods.into_iter().flatten() {
            let mut buf = [0u8; record::MAX_RECORD];
            let mut nonce = [0u8; 12];
            nonce[..8].copy_from_slice(&self.rng.next_u64().to_le_bytes());
            nonce[8..].copy_from_slice(&self.rng.next_u32().to_le_bytes());
            let Ok(len) = record::seal(&self.key, p, self.seq, expires as u32, addrs, nonce, &mut buf) else {
                continue;
            };
            if let Some(r) = RecordBuf::from_slice(&buf[..len]) {
                out[n] = r;
                n += 1;
            }
        }
        n
    }
}

/// The DHT keys under which `id`'s record may be found at `unix_now`: today's, then yesterday's
/// (a publisher whose clock is a little behind ours).
pub fn lookup_keys(id: &crate::identity::DeviceId, unix_now: u64) -> [Option<[u8; 32]>; 2] {
    let today = period_of(unix_now);
    let key = |p: u32| super::blind::blind_public(id, p).map(|b| super::blind::dht_key(&b));
    [key(today), today.checked_sub(1).and_then(key)]
}

/// `lookup_keys` of one device, kept for the period they were computed in: blinding is two
/// scalar multiplications (about 100 µs here, more on a Pi), too slow to sit between a button
/// press and the handshake it sends.
#[derive(Debug, Clone, Copy, Default)]
pub struct LookupKeys {
    period: Option<u32>,
    keys: [Option<[u8; 32]>; 2],
}

impl LookupKeys {
    pub fn get(&mut self, id: &crate::identity::DeviceId, unix_now: u64) -> [Option<[u8; 32]>; 2] {
        let p = period_of(unix_now);
        if self.period != Some(p) {
            self.keys = lookup_keys(id, unix_now);
            self.period = Some(p);
        }
        self.keys
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::dht::blind::PERIOD_SECS;
    use crate::identity::DeviceKey;

    #[test]
    fn cached_lookup_keys_follow_the_period() {
        let id = DeviceKey::from_seed([4; 32]).id();
        let noon = 1_790_000_000 - 1_790_000_000 % PERIOD_SECS + PERIOD_SECS / 2;
        let mut cache = LookupKeys::default();
        assert_eq!(cache.get(&id, noon), lookup_keys(&id, noon));
        assert_eq!(cache.get(&id, noon + 3600), lookup_keys(&id, noon));
        let tomorrow = noon + PERIOD_SECS;
        assert_eq!(cache.get(&id, tomorrow), lookup_keys(&id, tomorrow));
        assert_ne!(lookup_keys(&id, tomorrow), lookup_keys(&id, noon));
    }

    #[test]
    fn publishes_on_change_and_on_schedule_and_both_periods_near_midnight() {
        let key = DeviceKey::from_seed([3; 32]);
        let id = key.id();
        let mut a = Announcer::new(DeviceKey::from_seed([3; 32]), Rng::seeded(1));
        let t0 = Instant::now();
        let noon = 1_790_000_000 - 1_790_000_000 % PERIOD_SECS + PERIOD_SECS / 2;
        let mut out = [RecordBuf::from_slice(&[]).unwrap(); 2];
        assert_eq!(a.poll(t0, noon, &mut out), 0, "no addresses, nothing to say");
        a.set_addrs(t0, &["198.51.100.4:7600".parse().unwrap()]);
        assert_eq!(a.poll(t0, noon, &mut out), 1);
        let mut addrs = [SocketAddr::from(([0, 0, 0, 0], 0)); MAX_ADDRS];
        let o = record::open(&id, out[0].as_bytes(), &mut addrs).unwrap();
        assert_eq!(addrs[..o.count], ["198.51.100.4:7600".parse().unwrap()]);
        let seq1 = o.seq;
        let v = record::parse(out[0].as_bytes()).unwrap();
        assert_eq!(Some(v.key()), lookup_keys(&id, noon)[0]);
        assert_eq!(a.poll(t0 + Duration::from_secs(60), noon + 60, &mut out), 0, "not due");
        a.set_addrs(t0 + Duration::from_secs(61), &["198.51.100.5:7600".parse().unwrap()]);
        assert_eq!(a.poll(t0 + Duration::from_secs(61), noon + 61, &mut out), 1, "address changed");
        let o2 = record::open(&id, out[0].as_bytes(), &mut addrs).unwrap();
        assert!(o2.seq > seq1);
        assert_eq!(a.poll(t0 + REPUBLISH + Duration::from_secs(61), noon + 1861, &mut out), 1, "republished");
        // An hour before midnight: today's record and tomorrow's.
        let late = noon + PERIOD_SECS / 2 - 3600;
        a.set_addrs(t0 + Duration::from_secs(10_000), &["198.51.100.6:7600".parse().unwrap()]);
        assert_eq!(a.poll(t0 + Duration::from_secs(10_000), late, &mut out), 2);
        let tomorrow = late + 7200;
        let k1 = record::parse(out[1].as_bytes()).unwrap().key();
        assert_eq!(Some(k1), lookup_keys(&id, tomorrow)[0]);
        assert_eq!(Some(record::parse(out[0].as_bytes()).unwrap().key()), lookup_keys(&id, tomorrow)[1]);
    }
}
