//! Port mapping on the home router: a thin tokio driver around `nat::portmap::PortMapper`,
//! running in its own task so it never delays start-up or a call. PCP and NAT-PMP come from
//! `crab_nat` (async, on tokio); UPnP-IGD from `igd-next`'s blocking client, run on a short-lived
//! thread of its own. The address the router maps reaches the device loop through a one-slot
//! `watch` channel (the newest value wins; nothing queues up).
//!
//! Order: PCP (falling back to NAT-PMP when the router asks for it) is tried while an SSDP
//! search for an Internet Gateway Device runs in parallel; UPnP maps only if PCP/NAT-PMP gave
//! nothing, so one router never holds two mappings of ours. Every step has a time limit.
use crate::log;
use crate::nat::portmap::{
    Event, Grant, Input, Output, PortMapConfig, PortMapper, Protocol, default_gateway, describe_duration,
    describe_lifetime,
};
use std::net::{IpAddr, Ipv4Addr, SocketAddr, SocketAddrV4};
use std::num::NonZeroU16;
use std::time::{Duration, Instant};
use tokio::sync::{oneshot, watch};
use tokio::task::JoinHandle;

/// PCP/NAT-PMP requests: tries at 0, 250 and 750 ms, given up at 1.75 s (per protocol).
const PCP_TIMEOUT: crab_nat::TimeoutConfig = crab_nat::TimeoutConfig {
    initial_timeout: Duration::from_millis(250),
    max_retries: 2,
    max_retry_timeout: Some(Duration::from_secs(1)),
};
/// How long the SSDP search waits for an Internet Gateway Device to answer.
const UPNP_SEARCH: Duration = Duration::from_secs(3);
/// Bounds on each step, whatever the crates do inside.
const PROBE_LIMIT: Duration = Duration::from_secs(8);
const RENEW_LIMIT: Duration = Duration::from_secs(5);
const REMOVE_LIMIT: Duration = Duration::from_secs(2);
/// What the router's mapping table shows for ours.
const DESCRIPTION: &str = "peercom";

/// The device loop's end of the port-mapping task.
pub struct PortMap {
    rx: Option<watch::Receiver<Option<SocketAddr>>>,
    stop: Option<oneshot::Sender<()>>,
    task: Option<JoinHandle<()>>,
    current: Option<SocketAddr>,
}

/// Starts mapping the UDP port of `local` (the device's bound socket) unless the config turned
/// it off or the socket is on loopback (tests, nothing to map).
pub fn start(name: &str, enabled: bool, local: SocketAddr) -> PortMap {
    let off = PortMap { rx: None, stop: None, task: None, current: None };
    if !enabled {
        log!("{name}: port mapping: off in the config");
        return off;
    }
    if local.ip().is_loopback() {
        return off;
    }
    if local.is_ipv6() || local.port() == 0 {
        log!("{name}: port mapping: only for IPv4 sockets, not {local}");
        return off;
    }
    let test = TestOverrides::from_env(name);
    let (tx, rx) = watch::channel(None);
    let (stop_tx, stop_rx) = oneshot::channel();
    let task = tokio::spawn(run(name.to_string(), local, test, tx, stop_rx));
    PortMap { rx: Some(rx), stop: Some(stop_tx), task: Some(task), current: None }
}

impl PortMap {
    /// Resolves when the mapped address changes (never when port mapping is off).
    pub async fn changed(&mut self) -> Option<SocketAddr> {
        if let Some(rx) = self.rx.as_mut() {
            if rx.changed().await.is_ok() {
                self.current = *rx.borrow_and_update();
                return self.current;
            }
            self.rx = None;
        }
        std::future::pending().await
    }

    /// The mapped address the device loop last took.
    pub fn current(&self) -> Option<SocketAddr> {
        self.current
    }

    /// Removes the mapping from the router (bounded: a probe under way may finish first).
    pub async fn stop(&mut self) {
        if let Some(s) = self.stop.take() {
            let _ = s.send(());
        }
        if let Some(mut t) = self.task.take() {
            if tokio::time::timeout(PROBE_LIMIT + REMOVE_LIMIT, &mut t).await.is_err() {
                t.abort();
            }
        }
    }
}

/// Test-only knobs from the environment (the NAT lab's `tests/nat/portmap.sh`):
/// `PEERCOM_PORTMAP_LIFETIME=30` asks for 30 s mappings (to watch renewals);
/// `PEERCOM_PORTMAP_PROTOCOLS=upnp,pcp,natpmp` (any subset) limits which protocols are tried.
#[derive(Debug, Clone, Copy)]
struct TestOverrides {
    lifetime: Option<Duration>,
    upnp: bool,
    pcp: bool,
    natpmp: bool,
}

impl TestOverrides {
    fn from_env(name: &str) -> Self {
        let mut o = TestOverrides { lifetime: None, upnp: true, pcp: true, natpmp: true };
        if let Ok(v) = std::env::var("PEERCOM_PORTMAP_LIFETIME") {
            match v.trim().parse::<u64>() {
                Ok(s) if (10..=86_400).contains(&s) => o.lifetime = Some(Duration::from_secs(s)),
                _ => log!("{name}: port mapping: ignoring PEERCOM_PORTMAP_LIFETIME={v} (10 to 86400 seconds)"),
            }
        }
        if let Ok(v) = std::env::var("PEERCOM_PORTMAP_PROTOCOLS") {
            let list: Vec<String> = v.split(',').map(|p| p.trim().to_ascii_lowercase()).collect();
            let known = list.iter().all(|p| ["upnp", "pcp", "natpmp"].contains(&p.as_str()));
            if known && !list.is_empty() {
                o.upnp = list.iter().any(|p| p == "upnp");
                o.pcp = list.iter().any(|p| p == "pcp");
                o.natpmp = list.iter().any(|p| p == "natpmp");
            } else {
                log!("{name}: port mapping: ignoring PEERCOM_PORTMAP_PROTOCOLS={v} (a list of upnp, pcp, natpmp)");
            }
        }
        if o.lifetime.is_some() || !(o.upnp && o.pcp && o.natpmp) {
            log!("{name}: port mapping: test settings from the environment: {o:?}");
        }
        o
    }
}

/// The crate-level handle of the mapping in place.
enum Active {
    Crab(crab_nat::PortMapping),
    Upnp { gateway: igd_next::Gateway, local: SocketAddrV4, external_port: u16, lease: u32 },
}

async fn run(
    name: String,
    local: SocketAddr,
    test: TestOverrides,
    tx: watch::Sender<Option<SocketAddr>>,
    mut stop: oneshot::Receiver<()>,
) {
    let cfg =
        PortMapConfig { lifetime: test.lifetime.unwrap_or(PortMapConfig::default().lifetime), ..Default::default() };
    let mut mapper = PortMapper::new(cfg);
    let mut active: Option<Active> = None;
    let mut stopping = false;
    // Why the last probe (where: "on the gateway 192.168.1.1 (...)") or renewal failed, for the log.
    let (mut probe_why, mut why) = (String::new(), String::new());
    loop {
        match mapper.poll_output() {
            Output::Probe => {
                let r = tokio::time::timeout(PROBE_LIMIT, probe(local, &test, cfg.lifetime)).await;
                let input = match r {
                    Ok(Ok((grant, a))) => {
                        active = Some(a);
                        Input::Granted(grant)
                    }
                    Ok(Err(e)) => {
                        probe_why = e;
                        Input::Failed
                    }
                    Err(_) => {
                        probe_why = format!("(no verdict within {}s)", PROBE_LIMIT.as_secs());
                        Input::Failed
                    }
                };
                mapper.handle_input(Instant::now(), input);
            }
            Output::Renew(g) => {
                let r = match active.as_mut() {
                    Some(a) => tokio::time::timeout(RENEW_LIMIT, renew(a, g))
                        .await
                        .unwrap_or_else(|_| Err(format!("no answer within {}s", RENEW_LIMIT.as_secs()))),
                    None => Err("no mapping to renew".into()),
                };
                let input = match r {
                    Ok(grant) => Input::Granted(grant),
                    Err(e) => {
                        why = e;
                        Input::Failed
                    }
                };
                mapper.handle_input(Instant::now(), input);
            }
            Output::Remove(g) => {
                if let Some(a) = active.take() {
                    let r = tokio::time::timeout(REMOVE_LIMIT, remove(a))
                        .await
                        .unwrap_or_else(|_| Err(format!("no answer within {}s", REMOVE_LIMIT.as_secs())));
                    match r {
                        Ok(()) => log!(
                            "{name}: port mapping: removed {} ({}) from {}",
                            g.external,
                            g.protocol.as_str(),
                            g.gateway
                        ),
                        Err(e) => log!(
                            "{name}: port mapping: could not remove {} from {} ({e}); it ends with its lifetime",
                            g.external,
                            g.gateway
                        ),
                    }
                }
            }
            Output::Event(e) => report(&name, &e, &probe_why, &why),
            Output::Timeout(t) => {
                let sleep = tokio::time::sleep_until(tokio::time::Instant::from_std(t));
                tokio::select! {
                    _ = sleep => mapper.handle_input(Instant::now(), Input::Timeout),
                    _ = &mut stop, if !stopping => {
                        stopping = true;
                        mapper.handle_input(Instant::now(), Input::Shutdown);
                    }
                }
            }
            // This loop answers every probe and renewal before polling again.
            Output::Busy | Output::Done => break,
        }
        // A failed stop channel (the device loop is gone) also means stop.
        if !stopping && matches!(stop.try_recv(), Ok(()) | Err(oneshot::error::TryRecvError::Closed)) {
            stopping = true;
            mapper.handle_input(Instant::now(), Input::Shutdown);
        }
        let now = mapper.announced();
        tx.send_if_modified(|v| {
            let changed = *v != now;
            *v = now;
            changed
        });
    }
}

fn report(name: &str, e: &Event, probe_why: &str, why: &str) {
    match e {
        Event::Mapped(g) => log!(
            "{name}: port mapping: {} on {} gives {} {}",
            g.protocol.as_str(),
            g.gateway,
            g.external,
            describe_lifetime(g.lifetime)
        ),
        Event::Renewed(g) => log!(
            "{name}: port mapping: renewed {} ({} on {}) {}",
            g.external,
            g.protocol.as_str(),
            g.gateway,
            describe_lifetime(g.lifetime)
        ),
        Event::Unusable(g) => log!(
            "{name}: port mapping: {} on {} gives {}, unreachable from the internet (a NAT above it): not used",
            g.protocol.as_str(),
            g.gateway,
            g.external
        ),
        Event::Unavailable { retry, first } => log!(
            "{name}: port mapping: {}no UPnP/NAT-PMP/PCP {probe_why}; no port mapping, asking again in {}",
            if *first { "" } else { "still " },
            describe_duration(*retry)
        ),
        Event::RenewFailed { grant, retry } => log!(
            "{name}: port mapping: renewing {} ({}) failed ({why}); trying again in {}",
            grant.external,
            grant.protocol.as_str(),
            describe_duration(*retry)
        ),
        Event::Lost(g) => log!(
            "{name}: port mapping: {} ({} on {}) is lost ({why}); no longer announced",
            g.external,
            g.protocol.as_str(),
            g.gateway
        ),
    }
}

/// Finds the gateway and asks it for a mapping of `local`'s port: PCP/NAT-PMP while the UPnP
/// search runs, then UPnP-IGD if they gave nothing.
async fn probe(local: SocketAddr, test: &TestOverrides, lifetime: Duration) -> Result<(Grant, Active), String> {
    let table =
        std::fs::read_to_string("/proc/net/route").map_err(|e| format!("(cannot read /proc/net/route: {e})"))?;
    let gateway = default_gateway(&table).ok_or("(no IPv4 default route)")?;
    let client = match local.ip() {
        IpAddr::V4(ip) if !ip.is_unspecified() => ip,
        _ => source_ip_towards(gateway).ok_or_else(|| format!("(no address of ours towards {gateway})"))?,
    };
    let port = NonZeroU16::new(local.port()).ok_or("(port 0)")?;
    let secs = u32::try_from(lifetime.as_secs()).unwrap_or(u32::MAX);
    let search = test.upnp.then(|| on_thread(move || upnp_search(client)));
    let mut why = Vec::new();
    if test.pcp || test.natpmp {
        match pcp_natpmp(gateway, client, port, secs, test).await {
            Ok(found) => return Ok(found),
            Err(e) => why.push(e),
        }
    }
    if let Some(search) = search {
        match search.await.unwrap_or_else(|_| Err("UPnP-IGD: search failed".into())) {
            Ok(igd) if igd.addr.ip() != IpAddr::V4(gateway) => {
                why.push(format!("UPnP-IGD: the device at {} is not the default gateway", igd.addr.ip()));
            }
            Ok(igd) => {
                let local = SocketAddrV4::new(client, port.get());
                let (tx, rx) = oneshot::channel();
                let g = igd.clone();
                // Its answer may come after our time limit: whatever it mapped then is removed.
                std::thread::Builder::new()
                    .name("portmap-upnp".into())
                    .spawn(move || {
                        let r = upnp_map(&g, local, secs);
                        if let Err(Ok((ext, _))) = tx.send(r) {
                            let _ = g.remove_port(igd_next::PortMappingProtocol::UDP, ext.port());
                        }
                    })
                    .map_err(|e| format!("(UPnP-IGD: {e})"))?;
                match rx.await {
                    Ok(Ok((external, lease))) => {
                        let grant = Grant {
                            protocol: Protocol::Upnp,
                            gateway: IpAddr::V4(gateway),
                            external,
                            lifetime: (lease > 0).then(|| Duration::from_secs(u64::from(lease))),
                        };
                        let active = Active::Upnp { gateway: igd, local, external_port: external.port(), lease };
                        return Ok((grant, active));
                    }
                    Ok(Err(e)) => why.push(e),
                    Err(_) => why.push("UPnP-IGD: mapping failed".into()),
                }
            }
            Err(e) => why.push(e),
        }
    }
    Err(format!("on the gateway {gateway} ({})", why.join("; ")))
}

async fn pcp_natpmp(
    gateway: Ipv4Addr,
    client: Ipv4Addr,
    port: NonZeroU16,
    secs: u32,
    test: &TestOverrides,
) -> Result<(Grant, Active), String> {
    use crab_nat::{InternetProtocol, PortMapping, PortMappingOptions, PortMappingType};
    let opts = PortMappingOptions {
        external_port: Some(port),
        lifetime_seconds: Some(secs),
        timeout_config: Some(PCP_TIMEOUT),
    };
    let gw = crab_nat::GatewayAddress::IpV4(gateway);
    let m = match (test.pcp, test.natpmp) {
        // PCP first; NAT-PMP when the router answers that it only speaks that (RFC 6887 9).
        (true, true) => PortMapping::new(gw, client.into(), InternetProtocol::Udp, port, opts).await,
        (true, false) => {
            let base = crab_nat::pcp::BaseMapRequest::new(gw, client.into(), InternetProtocol::Udp, port);
            crab_nat::pcp::port_mapping(base, None, None, opts).await.map_err(Into::into)
        }
        _ => crab_nat::natpmp::port_mapping(gw, InternetProtocol::Udp, port, opts).await.map_err(Into::into),
    }
    .map_err(|e| describe_crab(&e))?;
    let (protocol, external_ip) = match m.mapping_type() {
        PortMappingType::Pcp { external_ip, .. } => (Protocol::Pcp, external_ip),
        PortMappingType::NatPmp => match crab_nat::natpmp::external_address(gw, Some(PCP_TIMEOUT)).await {
            Ok(ip) => (Protocol::NatPmp, IpAddr::V4(ip)),
            Err(e) => {
                let _ = m.try_drop().await;
                return Err(format!("NAT-PMP: mapped, but no public address: {e}"));
            }
        },
    };
    let grant = Grant {
        protocol,
        gateway: IpAddr::V4(gateway),
        external: SocketAddr::new(external_ip, m.external_port().get()),
        lifetime: Some(Duration::from_secs(u64::from(m.lifetime()))),
    };
    Ok((grant, Active::Crab(m)))
}

fn describe_crab(e: &crab_nat::MappingFailure) -> String {
    use crab_nat::{MappingFailure, natpmp, pcp};
    let quiet = |io: &std::io::Error| {
        if io.kind() == std::io::ErrorKind::ConnectionRefused {
            "nothing listens on port 5351".to_string()
        } else {
            io.to_string()
        }
    };
    match e {
        MappingFailure::Pcp(pcp::Failure::Timeout) => "PCP/NAT-PMP: no answer".into(),
        MappingFailure::Pcp(pcp::Failure::Socket(io)) => format!("PCP/NAT-PMP: {}", quiet(io)),
        MappingFailure::NatPmp(natpmp::Failure::Timeout) => "NAT-PMP: no answer".into(),
        MappingFailure::NatPmp(natpmp::Failure::Socket(io)) => format!("NAT-PMP: {}", quiet(io)),
        other => other.to_string(),
    }
}

/// Starts blocking work on a thread of its own at once; its result comes through the receiver
/// (closed if it panicked or could not start). Not `spawn_blocking`: dropping the runtime waits
/// for those, and an HTTP call to a hung router could hold the device's exit for a minute.
fn on_thread<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> oneshot::Receiver<T> {
    let (tx, rx) = oneshot::channel();
    let _ = std::thread::Builder::new().name("portmap-upnp".into()).spawn(move || {
        let _ = tx.send(f());
    });
    rx
}

fn upnp_search(client: Ipv4Addr) -> Result<igd_next::Gateway, String> {
    let opts = igd_next::SearchOptions {
        bind_addr: SocketAddr::from((client, 0)),
        timeout: Some(UPNP_SEARCH),
        single_search_timeout: Some(UPNP_SEARCH),
        ..Default::default()
    };
    igd_next::search_gateway(opts).map_err(|e| match e {
        igd_next::SearchError::IoError(io)
            if matches!(io.kind(), std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut) =>
        {
            "UPnP-IGD: no answer to the SSDP search".to_string()
        }
        igd_next::SearchError::NoResponseWithinTimeout => "UPnP-IGD: no answer to the SSDP search".to_string(),
        e => format!("UPnP-IGD: {e}"),
    })
}

/// AddPortMapping for our port (the same external port if free, else any), then the router's
/// public address. Returns it with the lease granted (0: permanent).
fn upnp_map(igd: &igd_next::Gateway, local: SocketAddrV4, secs: u32) -> Result<(SocketAddr, u32), String> {
    use igd_next::{AddAnyPortError, AddPortError, PortMappingProtocol::UDP};
    let port = local.port();
    let mut lease = secs;
    let mut external_port = port;
    let mut tries = 0;
    loop {
        tries += 1;
        match igd.add_port(UDP, port, local.into(), lease, DESCRIPTION) {
            Ok(()) => break,
            Err(AddPortError::OnlyPermanentLeasesSupported) if lease != 0 && tries < 3 => lease = 0,
            Err(AddPortError::PortInUse) => {
                external_port = loop {
                    match igd.add_any_port(UDP, local.into(), lease, DESCRIPTION) {
                        Ok(p) => break p,
                        Err(AddAnyPortError::OnlyPermanentLeasesSupported) if lease != 0 => lease = 0,
                        Err(e) => return Err(format!("UPnP-IGD: port {port} is taken and no other was given: {e}")),
                    }
                };
                break;
            }
            Err(e) => return Err(format!("UPnP-IGD: AddPortMapping refused: {e}")),
        }
    }
    match igd.get_external_ip() {
        Ok(ip) if !ip.is_unspecified() => Ok((SocketAddr::new(ip, external_port), lease)),
        r => {
            let _ = igd.remove_port(UDP, external_port);
            Err(match r {
                Err(e) => format!("UPnP-IGD: mapped, but no public address: {e}"),
                Ok(_) => "UPnP-IGD: mapped, but the router has no public address".into(),
            })
        }
    }
}

async fn renew(active: &mut Active, old: Grant) -> Result<Grant, String> {
    match active {
        Active::Crab(m) => {
            m.renew().await.map_err(|e| describe_crab(&e))?;
            let external_ip = match m.mapping_type() {
                crab_nat::PortMappingType::Pcp { external_ip, .. } => external_ip,
                // The renewal answer has no address: ask (the router's may have changed).
                crab_nat::PortMappingType::NatPmp => {
                    match crab_nat::natpmp::external_address(m.gateway(), Some(PCP_TIMEOUT)).await {
                        Ok(ip) => IpAddr::V4(ip),
                        Err(_) => old.external.ip(),
                    }
                }
            };
            Ok(Grant {
                external: SocketAddr::new(external_ip, m.external_port().get()),
                lifetime: Some(Duration::from_secs(u64::from(m.lifetime()))),
                ..old
            })
        }
        Active::Upnp { gateway, local, external_port, lease } => {
            let (g, local, port, lease) = (gateway.clone(), *local, *external_port, *lease);
            let r = on_thread(move || {
                g.add_port(igd_next::PortMappingProtocol::UDP, port, local.into(), lease, DESCRIPTION)
                    .map_err(|e| format!("UPnP-IGD: {e}"))?;
                g.get_external_ip().map_err(|e| format!("UPnP-IGD: {e}"))
            })
            .await
            .unwrap_or_else(|_| Err("UPnP-IGD: renewal failed".into()))?;
            Ok(Grant { external: SocketAddr::new(r, port), ..old })
        }
    }
}

async fn remove(active: Active) -> Result<(), String> {
    match active {
        Active::Crab(m) => m.try_drop().await.map_err(|(e, _)| describe_crab(&e)),
        Active::Upnp { gateway, external_port, .. } => on_thread(move || {
            gateway.remove_port(igd_next::PortMappingProtocol::UDP, external_port).map_err(|e| format!("UPnP-IGD: {e}"))
        })
        .await
        .unwrap_or_else(|_| Err("UPnP-IGD: removal failed".into())),
    }
}

/// The address the kernel would send from towards `gateway` (a UDP connect sends nothing).
fn source_ip_towards(gateway: Ipv4Addr) -> Option<Ipv4Addr> {
    let s = std::net::UdpSocket::bind((Ipv4Addr::UNSPECIFIED, 0)).ok()?;
    s.connect((gateway, crab_nat::GATEWAY_PORT)).ok()?;
    match s.local_addr().ok()?.ip() {
        IpAddr::V4(ip) => Some(ip),
        IpAddr::V6(_) => None,
    }
}
