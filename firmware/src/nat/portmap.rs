//! Port mapping policy (UPnP-IGD, NAT-PMP, PCP on the home router): when to ask, when to renew,
//! how long to wait after a router that offers nothing, when a mapping counts as lost, and which
//! address may be announced. The protocols themselves are crates (`crab_nat`, `igd-next`) called
//! by the tokio driver in `runtime/portmap.rs`; this part owns no socket and no clock.
//!
//! The driver's loop: drain `poll_output`; answer every `Probe` and `Renew` with `Granted` or
//! `Failed`, carry out `Remove`, log `Event`s, sleep until `Timeout`, and give `Shutdown` when
//! the device stops (then `Remove` comes for a live mapping, and `Done`).
use std::collections::VecDeque;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::time::{Duration, Instant};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Protocol {
    Pcp,
    NatPmp,
    Upnp,
}

impl Protocol {
    pub fn as_str(self) -> &'static str {
        match self {
            Protocol::Pcp => "PCP",
            Protocol::NatPmp => "NAT-PMP",
            Protocol::Upnp => "UPnP-IGD",
        }
    }
}

/// A mapping the router granted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Grant {
    pub protocol: Protocol,
    /// The router that holds it.
    pub gateway: IpAddr,
    /// Where the internet reaches our socket.
    pub external: SocketAddr,
    /// How long it lasts unless renewed; `None`: until removed (a UPnP "permanent" lease).
    pub lifetime: Option<Duration>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PortMapConfig {
    /// The lifetime asked for (routers may grant another).
    pub lifetime: Duration,
    /// Wait before asking again after no router offered a mapping; doubles up to `retry_max`.
    pub retry_min: Duration,
    pub retry_max: Duration,
    /// How often a permanent mapping is added again (a rebooted router has forgotten it).
    pub refresh_permanent: Duration,
    /// Renewals never come closer together than this, whatever lifetime the router grants.
    pub min_renew: Duration,
    /// Failed refreshes in a row after which a permanent mapping counts as lost.
    pub permanent_failures: u32,
}

impl Default for PortMapConfig {
    /// Two hours (RFC 6886 3.3's recommendation), renewed after one; a router with nothing on
    /// offer is asked again after 2, 4, 8 ... minutes, then hourly.
    fn default() -> Self {
        PortMapConfig {
            lifetime: Duration::from_secs(7200),
            retry_min: Duration::from_secs(120),
            retry_max: Duration::from_secs(3600),
            refresh_permanent: Duration::from_secs(20 * 60),
            min_renew: Duration::from_secs(5),
            permanent_failures: 3,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Input {
    /// The answer to `Probe` or `Renew`: this mapping is in place.
    Granted(Grant),
    /// The answer to `Probe` (no router offered a mapping) or `Renew` (it was refused or unanswered).
    Failed,
    Timeout,
    /// The device stops: remove the mapping.
    Shutdown,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Output {
    /// Find the gateway and ask it for a mapping, any protocol.
    Probe,
    /// Renew this mapping with the protocol that made it.
    Renew(Grant),
    /// Delete this mapping from the router; no answer is expected.
    Remove(Grant),
    Event(Event),
    /// Nothing to do before this instant; then give `Input::Timeout`.
    Timeout(Instant),
    /// A `Probe` or `Renew` awaits its answer.
    Busy,
    /// Stopped for good.
    Done,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Event {
    /// A new mapping, or a renewal that moved it: announce `grant.external`.
    Mapped(Grant),
    /// Renewed in place.
    Renewed(Grant),
    /// The router's own public address is one the internet cannot reach (a second NAT above
    /// it): not announced, and removed again.
    Unusable(Grant),
    /// No router offered a mapping; asked again after `retry`. `first`: the first such answer
    /// since start-up or since the last mapping.
    Unavailable { retry: Duration, first: bool },
    /// A renewal failed; the mapping still holds and is renewed again after `retry`.
    RenewFailed { grant: Grant, retry: Duration },
    /// The mapping ran out (or a permanent one stopped being refreshed): no longer announced.
    Lost(Grant),
}

#[derive(Debug, Clone, Copy)]
enum State {
    /// Probe at this time.
    Idle(Instant),
    Probing,
    Mapped {
        grant: Grant,
        renew_at: Instant,
        expires: Option<Instant>,
        failures: u32,
    },
    Renewing {
        grant: Grant,
        expires: Option<Instant>,
        failures: u32,
    },
    Done,
}

/// The port-mapping policy for one UDP socket.
pub struct PortMapper {
    cfg: PortMapConfig,
    state: State,
    /// Probes in a row that found nothing (for the back-off).
    misses: u32,
    out: VecDeque<Output>,
}

impl PortMapper {
    /// Starts with a probe at once.
    pub fn new(cfg: PortMapConfig) -> Self {
        let mut out = VecDeque::with_capacity(4);
        out.push_back(Output::Probe);
        PortMapper { cfg, state: State::Probing, misses: 0, out }
    }

    /// The address to announce now, if a usable mapping is in place.
    pub fn announced(&self) -> Option<SocketAddr> {
        match self.state {
            State::Mapped { grant, .. } | State::Renewing { grant, .. } => Some(grant.external),
            _ => None,
        }
    }

    pub fn poll_output(&mut self) -> Output {
        if let Some(o) = self.out.pop_front() {
            return o;
        }
        match self.state {
            State::Idle(at) => Output::Timeout(at),
            State::Mapped { renew_at, expires, .. } => Output::Timeout(expires.map_or(renew_at, |e| e.min(renew_at))),
            State::Probing | State::Renewing { .. } => Output::Busy,
            State::Done => Output::Done,
        }
    }

    pub fn handle_input(&mut self, now: Instant, input: Input) {
        match (self.state, input) {
            (State::Done, Input::Granted(g)) => {
                // The answer to a probe that was under way when the device stopped.
                self.out.push_back(Output::Remove(g));
            }
            (State::Done, _) => {}
            (State::Mapped { grant, .. } | State::Renewing { grant, .. }, Input::Shutdown) => {
                self.out.push_back(Output::Remove(grant));
                self.state = State::Done;
            }
            (_, Input::Shutdown) => self.state = State::Done,
            (State::Probing, Input::Granted(g)) => self.granted(now, None, g),
            (State::Renewing { grant, .. }, Input::Granted(g)) => self.granted(now, Some(grant), g),
            (State::Probing, Input::Failed) => {
                self.misses = self.misses.saturating_add(1);
                let retry = backoff(self.cfg.retry_min, self.cfg.retry_max, self.misses);
                self.out.push_back(Output::Event(Event::Unavailable { retry, first: self.misses == 1 }));
                self.state = State::Idle(now + retry);
            }
            (State::Renewing { grant, expires, failures }, Input::Failed) => {
                let failures = failures.saturating_add(1);
                match expires {
                    Some(e) if now >= e => self.lost(now, grant),
                    None if failures >= self.cfg.permanent_failures => self.lost(now, grant),
                    Some(e) => {
                        // Half the time left, as RFC 6886 3.7 retries, but not too often.
                        let retry = (e.saturating_duration_since(now) / 2).max(self.cfg.min_renew);
                        let renew_at = (now + retry).min(e);
                        self.out.push_back(Output::Event(Event::RenewFailed { grant, retry }));
                        self.state = State::Mapped { grant, renew_at, expires, failures };
                    }
                    None => {
                        let retry = backoff(self.cfg.retry_min, self.cfg.refresh_permanent, failures);
                        self.out.push_back(Output::Event(Event::RenewFailed { grant, retry }));
                        self.state = State::Mapped { grant, renew_at: now + retry, expires, failures };
                    }
                }
            }
            (State::Idle(at), Input::Timeout) if now >= at => {
                self.out.push_back(Output::Probe);
                self.state = State::Probing;
            }
            (State::Mapped { grant, expires: Some(e), .. }, Input::Timeout) if now >= e => self.lost(now, grant),
            (State::Mapped { grant, renew_at, expires, failures }, Input::Timeout) if now >= renew_at => {
                self.out.push_back(Output::Renew(grant));
                self.state = State::Renewing { grant, expires, failures };
            }
            // Early timeouts, and answers nobody asked for.
            _ => {}
        }
    }

    fn granted(&mut self, now: Instant, old: Option<Grant>, g: Grant) {
        if !reachable(g.external.ip()) {
            self.out.push_back(Output::Event(Event::Unusable(g)));
            self.out.push_back(Output::Remove(g));
            if let Some(old) = old.filter(|o| o.external != g.external) {
                self.out.push_back(Output::Event(Event::Lost(old)));
            }
            self.state = State::Idle(now + self.cfg.retry_max);
            return;
        }
        self.misses = 0;
        let event = match old {
            Some(o) if o.external == g.external => Event::Renewed(g),
            _ => Event::Mapped(g),
        };
        self.out.push_back(Output::Event(event));
        let renew = match g.lifetime {
            Some(l) => (l / 2).max(self.cfg.min_renew),
            None => self.cfg.refresh_permanent,
        };
        self.state =
            State::Mapped { grant: g, renew_at: now + renew, expires: g.lifetime.map(|l| now + l), failures: 0 };
    }

    fn lost(&mut self, now: Instant, grant: Grant) {
        self.out.push_back(Output::Event(Event::Lost(grant)));
        // The router may be rebooting: give it a moment before asking anew.
        self.state = State::Idle(now + self.cfg.retry_min);
    }
}

fn backoff(min: Duration, max: Duration, n: u32) -> Duration {
    min.saturating_mul(1u32 << n.saturating_sub(1).min(16)).min(max)
}

/// Whether the internet can send to `ip`: not a private (RFC 1918), shared (RFC 6598, carrier
/// NAT), loopback, link-local, multicast or unspecified address. A router behind another NAT
/// maps ports on an address only its upstream network sees.
pub fn reachable(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => {
            let o = v4.octets();
            let shared = o[0] == 100 && (o[1] & 0xc0) == 64;
            !(v4.is_private()
                || shared
                || v4.is_loopback()
                || v4.is_link_local()
                || v4.is_multicast()
                || v4.is_broadcast()
                || v4.is_unspecified()
                || o[0] == 0)
        }
        IpAddr::V6(v6) => {
            let unique_local = (v6.segments()[0] & 0xfe00) == 0xfc00;
            let link_local = (v6.segments()[0] & 0xffc0) == 0xfe80;
            !(v6.is_loopback() || v6.is_unspecified() || v6.is_multicast() || unique_local || link_local)
        }
    }
}

/// The IPv4 default gateway from the kernel's routing table as `/proc/net/route` prints it (the
/// default route with the lowest metric that is up and goes via a gateway).
pub fn default_gateway(route_table: &str) -> Option<Ipv4Addr> {
    const RTF_UP: u32 = 0x1;
    const RTF_GATEWAY: u32 = 0x2;
    let hex = |s: &str| u32::from_str_radix(s, 16).ok();
    route_table
        .lines()
        .skip(1)
        .filter_map(|line| {
            let f: Vec<&str> = line.split_whitespace().collect();
            if f.len() < 8 {
                return None;
            }
            let (dest, gw, flags, metric, mask) =
                (hex(f[1])?, hex(f[2])?, hex(f[3])?, f[6].parse::<u32>().ok()?, hex(f[7])?);
            // The kernel prints the address in network byte order read as a host integer.
            let gw = Ipv4Addr::from(gw.to_ne_bytes());
            let ok = dest == 0
                && mask == 0
                && flags & (RTF_UP | RTF_GATEWAY) == RTF_UP | RTF_GATEWAY
                && !gw.is_unspecified();
            ok.then_some((metric, gw))
        })
        .min_by_key(|(metric, _)| *metric)
        .map(|(_, gw)| gw)
}

/// "2h", "90 min" or "45s" (for the log).
pub fn describe_duration(d: Duration) -> String {
    match d.as_secs() {
        s if s >= 3600 && s % 3600 == 0 => format!("{}h", s / 3600),
        s if s >= 120 && s % 60 == 0 => format!("{} min", s / 60),
        s => format!("{s}s"),
    }
}

/// "for 2h", or "until removed" for a permanent mapping (for the log).
pub fn describe_lifetime(lifetime: Option<Duration>) -> String {
    match lifetime {
        Some(d) => format!("for {}", describe_duration(d)),
        None => "until removed".into(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const S: fn(u64) -> Duration = Duration::from_secs;

    fn grant(lifetime: Option<u64>) -> Grant {
        Grant {
            protocol: Protocol::Upnp,
            gateway: [192, 168, 1, 1].into(),
            external: ([198, 18, 0, 11], 7600).into(),
            lifetime: lifetime.map(S),
        }
    }

    /// Drains every output up to the next `Timeout`/`Busy`/`Done`, which it returns last.
    fn drain(m: &mut PortMapper) -> Vec<Output> {
        let mut v = Vec::new();
        loop {
            let o = m.poll_output();
            v.push(o);
            if matches!(o, Output::Timeout(_) | Output::Busy | Output::Done) {
                return v;
            }
        }
    }

    #[test]
    fn maps_at_once_then_renews_at_half_the_lifetime() {
        let t0 = Instant::now();
        let mut m = PortMapper::new(PortMapConfig::default());
        assert_eq!(drain(&mut m), [Output::Probe, Output::Busy]);
        assert_eq!(m.announced(), None);
        let g = grant(Some(7200));
        m.handle_input(t0, Input::Granted(g));
        assert_eq!(drain(&mut m), [Output::Event(Event::Mapped(g)), Output::Timeout(t0 + S(3600))]);
        assert_eq!(m.announced(), Some(g.external));
        // An early wake-up does nothing.
        m.handle_input(t0 + S(10), Input::Timeout);
        assert_eq!(drain(&mut m), [Output::Timeout(t0 + S(3600))]);
        m.handle_input(t0 + S(3600), Input::Timeout);
        assert_eq!(drain(&mut m), [Output::Renew(g), Output::Busy]);
        assert_eq!(m.announced(), Some(g.external), "still announced while renewing");
        m.handle_input(t0 + S(3601), Input::Granted(g));
        assert_eq!(drain(&mut m), [Output::Event(Event::Renewed(g)), Output::Timeout(t0 + S(3601 + 3600))]);
        // The router gave another port this time: announced anew.
        let moved = Grant { external: ([198, 18, 0, 11], 40000).into(), ..g };
        m.handle_input(t0 + S(7201), Input::Timeout);
        assert_eq!(drain(&mut m), [Output::Renew(g), Output::Busy]);
        m.handle_input(t0 + S(7202), Input::Granted(moved));
        assert_eq!(drain(&mut m)[0], Output::Event(Event::Mapped(moved)));
        assert_eq!(m.announced(), Some(moved.external));
    }

    #[test]
    fn a_router_without_port_mapping_is_asked_again_less_and_less_often() {
        let mut now = Instant::now();
        let mut m = PortMapper::new(PortMapConfig::default());
        let mut waits = Vec::new();
        for i in 0..8 {
            assert_eq!(drain(&mut m), [Output::Probe, Output::Busy]);
            m.handle_input(now, Input::Failed);
            let out = drain(&mut m);
            let Output::Event(Event::Unavailable { retry, first }) = out[0] else { panic!("{out:?}") };
            assert_eq!(first, i == 0, "only the first miss is news");
            assert_eq!(out[1], Output::Timeout(now + retry));
            waits.push(retry.as_secs() / 60);
            now += retry;
            m.handle_input(now, Input::Timeout);
        }
        assert_eq!(waits, [2, 4, 8, 16, 32, 60, 60, 60]);
        // Once a mapping came and went, the next miss is news again and the back-off restarts.
        assert_eq!(drain(&mut m), [Output::Probe, Output::Busy]);
        m.handle_input(now, Input::Granted(grant(Some(60))));
        m.handle_input(now + S(30), Input::Timeout);
        m.handle_input(now + S(31), Input::Failed);
        m.handle_input(now + S(60), Input::Timeout);
        m.handle_input(now + S(180), Input::Timeout);
        let out = drain(&mut m);
        assert!(out.contains(&Output::Event(Event::Lost(grant(Some(60))))), "{out:?}");
        assert_eq!(out.last(), Some(&Output::Busy), "probing again: {out:?}");
        m.handle_input(now + S(181), Input::Failed);
        assert_eq!(drain(&mut m)[0], Output::Event(Event::Unavailable { retry: S(120), first: true }));
    }

    #[test]
    fn failed_renewals_retry_in_the_time_left_then_the_mapping_is_lost() {
        let t0 = Instant::now();
        let cfg = PortMapConfig::default();
        let mut m = PortMapper::new(cfg);
        drain(&mut m);
        let g = grant(Some(120));
        m.handle_input(t0, Input::Granted(g));
        assert_eq!(drain(&mut m).last(), Some(&Output::Timeout(t0 + S(60))));
        let mut now = t0 + S(60);
        let mut retries = Vec::new();
        loop {
            m.handle_input(now, Input::Timeout);
            let out = drain(&mut m);
            if out[0] != Output::Renew(g) {
                assert_eq!(out[0], Output::Event(Event::Lost(g)));
                assert_eq!(out[1], Output::Timeout(now + cfg.retry_min), "asks anew after a pause");
                break;
            }
            m.handle_input(now, Input::Failed);
            let out = drain(&mut m);
            let Output::Event(Event::RenewFailed { retry, .. }) = out[0] else { panic!("{out:?}") };
            assert_eq!(m.announced(), Some(g.external), "announced until it runs out");
            retries.push(retry.as_secs());
            let Output::Timeout(t) = out[1] else { panic!("{out:?}") };
            assert!(t <= t0 + S(120), "never renews after the expiry");
            now = t;
        }
        assert_eq!(retries, [30, 15, 7, 5, 5]);
        assert_eq!(now, t0 + S(120));
        assert_eq!(m.announced(), None);
    }

    #[test]
    fn a_permanent_mapping_is_refreshed_and_lost_after_three_failed_refreshes() {
        let t0 = Instant::now();
        let cfg = PortMapConfig::default();
        let mut m = PortMapper::new(cfg);
        drain(&mut m);
        let g = grant(None);
        m.handle_input(t0, Input::Granted(g));
        assert_eq!(drain(&mut m), [Output::Event(Event::Mapped(g)), Output::Timeout(t0 + cfg.refresh_permanent)]);
        let mut now = t0 + cfg.refresh_permanent;
        for i in 1..=3 {
            m.handle_input(now, Input::Timeout);
            assert_eq!(drain(&mut m), [Output::Renew(g), Output::Busy]);
            m.handle_input(now, Input::Failed);
            let out = drain(&mut m);
            if i < 3 {
                let Output::Event(Event::RenewFailed { retry, .. }) = out[0] else { panic!("{out:?}") };
                assert_eq!(retry, cfg.retry_min * i);
                now += retry;
            } else {
                assert_eq!(out[0], Output::Event(Event::Lost(g)));
            }
        }
        assert_eq!(m.announced(), None);
    }

    #[test]
    fn short_lifetimes_are_renewed_no_more_often_than_min_renew() {
        let t0 = Instant::now();
        let mut m = PortMapper::new(PortMapConfig::default());
        drain(&mut m);
        m.handle_input(t0, Input::Granted(grant(Some(4))));
        assert_eq!(drain(&mut m).last(), Some(&Output::Timeout(t0 + S(4))), "expiry comes first");
        m.handle_input(t0 + S(4), Input::Timeout);
        assert_eq!(drain(&mut m)[0], Output::Event(Event::Lost(grant(Some(4)))));
        let mut m = PortMapper::new(PortMapConfig::default());
        drain(&mut m);
        m.handle_input(t0, Input::Granted(grant(Some(30))));
        assert_eq!(drain(&mut m).last(), Some(&Output::Timeout(t0 + S(15))));
    }

    #[test]
    fn an_address_behind_another_nat_is_not_announced_but_released() {
        let t0 = Instant::now();
        let cfg = PortMapConfig::default();
        let mut m = PortMapper::new(cfg);
        drain(&mut m);
        let g = Grant { external: ([100, 64, 0, 12], 7600).into(), ..grant(Some(7200)) };
        m.handle_input(t0, Input::Granted(g));
        assert_eq!(
            drain(&mut m),
            [Output::Event(Event::Unusable(g)), Output::Remove(g), Output::Timeout(t0 + cfg.retry_max)]
        );
        assert_eq!(m.announced(), None);
    }

    #[test]
    fn shutdown_removes_the_mapping_even_one_granted_after_it() {
        let t0 = Instant::now();
        let mut m = PortMapper::new(PortMapConfig::default());
        drain(&mut m);
        let g = grant(Some(7200));
        m.handle_input(t0, Input::Granted(g));
        drain(&mut m);
        m.handle_input(t0 + S(1), Input::Shutdown);
        assert_eq!(drain(&mut m), [Output::Remove(g), Output::Done]);
        assert_eq!(m.announced(), None);
        // Shutdown while a probe is under way: its late mapping is removed too.
        let mut m = PortMapper::new(PortMapConfig::default());
        drain(&mut m);
        m.handle_input(t0, Input::Shutdown);
        assert_eq!(drain(&mut m), [Output::Done]);
        m.handle_input(t0 + S(1), Input::Granted(g));
        assert_eq!(drain(&mut m), [Output::Remove(g), Output::Done]);
        // Also while renewing.
        let mut m = PortMapper::new(PortMapConfig::default());
        drain(&mut m);
        m.handle_input(t0, Input::Granted(g));
        m.handle_input(t0 + S(3600), Input::Timeout);
        assert_eq!(drain(&mut m)[1], Output::Renew(g));
        m.handle_input(t0 + S(3600), Input::Shutdown);
        assert_eq!(drain(&mut m), [Output::Remove(g), Output::Done]);
    }

    #[test]
    fn reachable_addresses() {
        for ip in ["198.18.0.11", "203.0.113.5", "8.8.8.8", "2001:db8::1"] {
            assert!(reachable(ip.parse().unwrap()), "{ip}");
        }
        for ip in [
            "10.1.2.3",
            "172.16.0.1",
            "192.168.1.1",
            "100.64.0.12",
            "100.127.255.1",
            "127.0.0.1",
            "169.254.1.1",
            "0.0.0.0",
            "0.1.2.3",
            "224.0.0.1",
            "255.255.255.255",
            "fd00::1",
            "fe80::1",
            "::1",
            "::",
        ] {
            assert!(!reachable(ip.parse().unwrap()), "{ip}");
        }
        assert!(reachable("100.128.0.1".parse().unwrap()), "just above 100.64.0.0/10");
    }

    #[test]
    fn default_gateway_from_proc_net_route() {
        // As printed on a little-endian machine (this test runs on one; aarch64 is one too).
        let table = "Iface\tDestination\tGateway \tFlags\tRefCnt\tUse\tMetric\tMask\t\tMTU\tWindow\tIRTT\n\
            eth0\t0001A8C0\t00000000\t0001\t0\t0\t0\t00FFFFFF\t0\t0\t0\n\
            wlan0\t00000000\t FE01A8C0\t0003\t0\t0\t600\t00000000\t0\t0\t0\n\
            eth0\t00000000\t0101A8C0\t0003\t0\t0\t100\t00000000\t0\t0\t0\n\
            tun0\t00000000\t00000000\t0001\t0\t0\t0\t00000000\t0\t0\t0\n";
        if cfg!(target_endian = "little") {
            assert_eq!(default_gateway(table), Some(Ipv4Addr::new(192, 168, 1, 1)), "lowest metric, via a gateway");
        }
        let down = "h\neth0\t00000000\t0101A8C0\t0002\t0\t0\t0\t00000000\t0\t0\t0\n";
        assert_eq!(default_gateway(down), None, "a route that is not up");
        let not_default = "h\neth0\t00000000\t0101A8C0\t0003\t0\t0\t0\t00FFFFFF\t0\t0\t0\n";
        assert_eq!(default_gateway(not_default), None);
        assert_eq!(default_gateway(""), None);
        assert_eq!(default_gateway("header only\n"), None);
        assert_eq!(default_gateway("h\neth0 zz 0101A8C0 0003 0 0 0 00000000\n"), None, "garbage");
        assert_eq!(default_gateway("h\neth0 00000000 0101A8C0\n"), None, "short line");
    }

    #[test]
    fn lifetimes_read_well() {
        assert_eq!(describe_lifetime(Some(S(7200))), "for 2h");
        assert_eq!(describe_lifetime(None), "until removed");
        assert_eq!(describe_duration(S(5400)), "90 min");
        assert_eq!(describe_duration(S(120)), "2 min");
        assert_eq!(describe_duration(S(30)), "30s");
        assert_eq!(describe_duration(S(125)), "125s");
    }
}
