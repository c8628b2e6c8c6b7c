//! The device loop: one task owns the device core and its socket; everything else talks to it
//! through a bounded channel.
use super::indicators;
use super::media::{MediaInputs, MediaLink, MediaParams, Shared, UiStatic};
use crate::call::{CallEvent, Outcome, Phase};
use crate::config::Config;
use crate::device::{Command, Device, DeviceError, DeviceEvent, Input, Status};
use crate::identity::DeviceKey;
use crate::log;
use crate::session::EndpointConfig;
use crate::util::rng::Rng;
use crate::wire::MAX_DATAGRAM;
use peercom_board::Board;
use std::time::Instant;
use tokio::net::UdpSocket;
use tokio::sync::{broadcast, mpsc, oneshot, watch};
use tokio::task::JoinHandle;

enum Request {
    Command(Command, oneshot::Sender<Result<(), DeviceError>>),
    Status(oneshot::Sender<(Status, serde_json::Value)>),
    Shutdown,
}

/// A device event as broadcast to subscribers: when it happened and its JSON line.
#[derive(Debug, Clone)]
pub struct Notice {
    pub at: Instant,
    pub json: String,
}

#[derive(Clone)]
pub struct DeviceHandle {
    tx: mpsc::Sender<Request>,
    phase: watch::Receiver<(Phase, Instant)>,
    /// True once the loop has set up its network and waits for input.
    ready: watch::Receiver<bool>,
    events: broadcast::Sender<Notice>,
    contacts: std::sync::Arc<Vec<String>>,
    pub local_addr: std::net::SocketAddr,
    /// The media threads' shared state (measurements, snapshots), if media runs.
    pub media: Option<std::sync::Arc<Shared>>,
}

impl DeviceHandle {
    pub async fn command(&self, cmd: Command) -> Result<(), String> {
        let (tx, rx) = oneshot::channel();
        self.tx.send(Request::Command(cmd, tx)).await.map_err(|_| "device stopped".to_string())?;
        match rx.await {
            Ok(r) => r.map_err(|e| e.to_string()),
            Err(_) => Err("device stopped".into()),
        }
    }

    pub async fn call_by_name(&self, name: &str) -> Result<(), String> {
        match self.contacts.iter().position(|c| c.eq_ignore_ascii_case(name)) {
            Some(i) => self.command(Command::Call(i)).await,
            None => Err(format!("no contact named \"{name}\" (contacts: {})", self.contacts.join(", "))),
        }
    }

    /// The status, plus board state (LEDs) as JSON.
    pub async fn status(&self) -> Option<(Status, serde_json::Value)> {
        let (tx, rx) = oneshot::channel();
        self.tx.send(Request::Status(tx)).await.ok()?;
        rx.await.ok()
    }

    pub fn phase(&self) -> (Phase, Instant) {
        *self.phase.borrow()
    }

    /// Waits until the phase is `want`; returns when it got there, or None on timeout.
    pub async fn wait_phase(&self, want: Phase, timeout: std::time::Duration) -> Option<Instant> {
        let mut rx = self.phase.clone();
        let wait = rx.wait_for(|(p, _)| *p == want);
        match tokio::time::timeout(timeout, wait).await {
            Ok(Ok(v)) => Some(v.1),
            _ => None,
        }
    }

    /// Waits until the device's loop runs (a press sent earlier waits in its queue).
    pub async fn wait_ready(&self, timeout: std::time::Duration) -> bool {
        let mut rx = self.ready.clone();
        matches!(tokio::time::timeout(timeout, rx.wait_for(|r| *r)).await, Ok(Ok(_)))
    }

    pub fn subscribe(&self) -> broadcast::Receiver<Notice> {
        self.events.subscribe()
    }

    pub async fn shutdown(&self) {
        let _ = self.tx.send(Request::Shutdown).await;
    }
}

/// The zero of the media clock, shared by every device in this process (so the sim board's
/// latency measurements compare like with like).
pub fn media_origin() -> Instant {
    static ORIGIN: std::sync::OnceLock<Instant> = std::sync::OnceLock::new();
    *ORIGIN.get_or_init(Instant::now)
}

/// Binds the device's UDP socket and starts its loop on the current tokio runtime, with the
/// board's camera, audio and display on their own threads.
pub fn start(
    config: &Config,
    key: DeviceKey,
    mut board: Box<dyn Board>,
) -> std::io::Result<(DeviceHandle, JoinHandle<()>)> {
    let std_sock = std::net::UdpSocket::bind(config.listen)?;
    std_sock.set_nonblocking(true)?;
    let socket = UdpSocket::from_std(std_sock)?;
    let local_addr = socket.local_addr()?;
    let origin = media_origin();
    let net_key = key.duplicate();
    let device = Device::with_clock(config, key, EndpointConfig::default(), Rng::from_os(), origin);
    let m = &config.media;
    let spec = peercom_board::MediaSpec {
        width: usize::from(m.width),
        height: usize::from(m.height),
        fps: u32::from(m.fps),
        clock: origin,
    };
    let media = match board.media(spec) {
        Ok(devices) => {
            let params = MediaParams {
                width: spec.width,
                height: spec.height,
                fps: spec.fps,
                start_kbps: m.video_kbps_start,
                audio_frame_ms: u32::from(m.audio_frame_ms),
                audio_kbps: m.audio_kbps,
                audio_complexity: m.audio_complexity,
            };
            let id = device.id();
            let ui = UiStatic {
                device: config.name.clone(),
                id_short: id.short(),
                id_full: id.to_string(),
                contacts: config.contacts.iter().map(|c| (c.name.clone(), c.button)).collect(),
                answer_button: config.answer_button,
                reject_button: config.reject_button,
            };
            Some(MediaLink::start(params, devices, ui, origin)?)
        }
        Err(e) => {
            log!("{}: no camera/audio/display ({e}); calls carry no media", config.name);
            None
        }
    };
    let (tx, rx) = mpsc::channel(32);
    let (phase_tx, phase_rx) = watch::channel((Phase::Idle, Instant::now()));
    let (ready_tx, ready) = watch::channel(false);
    let (events, _) = broadcast::channel(256);
    let contacts = std::sync::Arc::new(config.contacts.iter().map(|c| c.name.clone()).collect());
    let shared = media.as_ref().map(|(l, _)| l.shared.clone());
    let handle =
        DeviceHandle { tx, phase: phase_rx, ready, events: events.clone(), contacts, local_addr, media: shared };
    let name = config.name.clone();
    let net = Network {
        key: net_key,
        bootstrap: config.bootstrap.clone(),
        stun: config.stun.clone(),
        local: local_addr,
        portmap: super::portmap::start(&config.name, config.port_mapping, local_addr),
    };
    let task = tokio::spawn(run(name, device, socket, board, rx, (phase_tx, ready_tx), events, media, net));
    Ok((handle, task))
}

/// What the loop needs to join the DHT and the LAN.
struct Network {
    key: DeviceKey,
    bootstrap: Vec<String>,
    stun: Vec<String>,
    local: std::net::SocketAddr,
    /// The router port-mapping task (runtime/portmap.rs), already running.
    portmap: super::portmap::PortMap,
}

/// An instant of the past as milliseconds since the Unix epoch (fractional: µs resolution).
fn unix_ms(at: Instant) -> f64 {
    std::time::SystemTime::now()
        .checked_sub(at.elapsed())
        .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
        .map_or(0.0, |d| d.as_secs_f64() * 1000.0)
}

fn unix_now() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_secs())
}

/// Resolves `host:port` bootstrap entries; names that do not resolve are reported, not fatal.
pub async fn resolve_bootstrap(name: &str, entries: &[String]) -> Vec<std::net::SocketAddr> {
    resolve(name, "bootstrap node", entries).await
}

async fn resolve(name: &str, what: &str, entries: &[String]) -> Vec<std::net::SocketAddr> {
    let mut out = Vec::new();
    for e in entries {
        match tokio::time::timeout(std::time::Duration::from_secs(5), tokio::net::lookup_host(e.as_str())).await {
            Ok(Ok(addrs)) => out.extend(addrs),
            Ok(Err(err)) => log!("{name}: {what} {e}: {err}; will retry"),
            Err(_) => log!("{name}: {what} {e}: name lookup timed out; will retry"),
        }
    }
    out
}

/// The interface address the kernel would send from towards `to` (a UDP connect sends nothing).
fn source_ip_towards(to: std::net::SocketAddr) -> Option<std::net::IpAddr> {
    let any: std::net::SocketAddr = if to.is_ipv4() { ([0, 0, 0, 0], 0).into() } else { ([0u16; 8], 0).into() };
    let s = std::net::UdpSocket::bind(any).ok()?;
    s.connect(to).ok()?;
    s.local_addr().ok().map(|a| a.ip())
}

/// The multicast socket for LAN discovery, on the interface of the bound address when it is a
/// specific one (tests bind to 127.0.0.x), else the default multicast interface.
fn open_lan(name: &str, device: &Device, local: std::net::SocketAddr) -> Option<(UdpSocket, std::net::SocketAddrV4)> {
    let group = device.lan_group()?;
    let iface = match local.ip() {
        std::net::IpAddr::V4(ip) if !ip.is_unspecified() => ip,
        _ => std::net::Ipv4Addr::UNSPECIFIED,
    };
    match super::lan_socket::open(group, iface) {
        Ok(s) => Some((s, group)),
        Err(e) => {
            log!("{name}: LAN discovery is off: cannot join {group} on {iface}: {e}");
            None
        }
    }
}

async fn recv_lan(
    lan: &Option<(UdpSocket, std::net::SocketAddrV4)>,
    buf: &mut [u8],
) -> std::io::Result<(usize, std::net::SocketAddr)> {
    match lan {
        Some((s, _)) => s.recv_from(buf).await,
        None => std::future::pending().await,
    }
}

#[allow(clippy::too_many_arguments)]
async fn run(
    name: String,
    mut device: Device,
    socket: UdpSocket,
    mut board: Box<dyn Board>,
    mut rx: mpsc::Receiver<Request>,
    (phase_tx, ready_tx): (watch::Sender<(Phase, Instant)>, watch::Sender<bool>),
    events: broadcast::Sender<Notice>,
    media: Option<(MediaLink, MediaInputs)>,
    net: Network,
) {
    let boot = resolve_bootstrap(&name, &net.bootstrap).await;
    let now = Instant::now();
    device.start_network(now, unix_now(), net.key, net.local, &boot, crate::dht::node::NodeConfig::default());
    let stun = resolve(&name, "STUN server", &net.stun).await;
    if net.local.ip().is_unspecified() {
        // Bound to every interface: the classifier must know our own addresses.
        let ips: Vec<_> = boot.iter().chain(&stun).filter_map(|a| source_ip_towards(*a)).collect();
        device.set_interfaces(&ips);
    }
    device.start_stun(Instant::now(), &stun);
    let lan = open_lan(&name, &device, net.local);
    let mut lan_buf = [0u8; 2048];
    // Bootstrap names are resolved again while the DHT has no nodes (e.g. booted before DNS).
    let mut retry_bootstrap = tokio::time::interval(std::time::Duration::from_secs(60));
    retry_bootstrap.tick().await;
    let mut buf = [0u8; 2048];
    let mut out = [0u8; MAX_DATAGRAM];
    // Extra sockets for birthday punches (`runtime::aux`), and a buffer to receive on them.
    let mut aux = super::aux::AuxSockets::new(net.local);
    let mut aux_buf = [0u8; 2048];
    let mut net_shown = None;
    let mut portmap = net.portmap;
    let (mut link, mut inputs) = match media {
        Some((l, i)) => (Some(l), Some(i)),
        None => (None, None),
    };
    indicators::show(board.as_mut(), Phase::Idle);
    ready_tx.send_replace(true);
    log!("{name}: ready as {} on {}", device.id(), socket.local_addr().map(|a| a.to_string()).unwrap_or_default());
    loop {
        if let Some(l) = link.as_mut() {
            l.pump(Instant::now(), device.media());
        }
        // Drain everything the core produced before waiting again (aux sockets first: the
        // datagrams may go out on them).
        while let Some(a) = device.poll_aux() {
            aux.apply(&name, a);
        }
        while let Some(t) = device.poll_transmit(&mut out) {
            let (bytes, dst) = (&out[..t.len], t.dst);
            let sent = match t.sock {
                0 => socket.send_to(bytes, dst).await,
                n => aux.send_to(n, bytes, dst).await,
            };
            if let Err(e) = sent {
                log!("{name}: send to {dst} (socket {}) failed: {e}", t.sock);
            }
        }
        while let Some(n) = device.poll_beacon(&mut out) {
            if let Some((s, group)) = &lan
                && let Err(e) = s.send_to(&out[..n], *group).await
            {
                log!("{name}: LAN beacon to {group} failed: {e}");
            }
        }
        while let Some(ev) = device.poll_event() {
            report(&name, &device, &ev, &events);
            if let (Some(l), DeviceEvent::Call(CallEvent::Ended { contact, outcome, .. })) = (link.as_mut(), &ev) {
                let c = device.contacts().get(*contact).map(|c| c.name.as_str());
                let failed = matches!(
                    outcome,
                    Outcome::Unreachable
                        | Outcome::Busy
                        | Outcome::NoAnswer
                        | Outcome::Rejected
                        | Outcome::PeerVanished
                );
                l.set_phase(Phase::Idle, c, device.status().missed_calls, Some((outcome.describe(), failed)));
            }
        }
        // "Online" once the DHT answers; until then contacts are reached on the LAN.
        let shown = if device.dht_nodes() > 0 { crate::ui::NetState::Online } else { crate::ui::NetState::Lan };
        if let Some(l) = link.as_mut()
            && net_shown != Some(shown)
        {
            net_shown = Some(shown);
            l.set_net(shown);
        }
        let phase = device.phase();
        if phase_tx.borrow().0 != phase {
            indicators::show(board.as_mut(), phase);
            phase_tx.send_replace((phase, Instant::now()));
            if let Some(l) = link.as_mut() {
                let s = device.status();
                l.set_phase(phase, s.contact.as_deref(), s.missed_calls, None);
            }
        }
        let deadline = device.poll_timeout();
        let sleep = async {
            match deadline {
                Some(t) => tokio::time::sleep_until(tokio::time::Instant::from_std(t)).await,
                None => std::future::pending().await,
            }
        };
        let (video_rx, audio_rx) = match inputs.as_mut() {
            Some(i) => (Some(&mut i.video), Some(&mut i.audio)),
            None => (None, None),
        };
        let video_in = async {
            match video_rx {
                Some(r) => r.recv().await,
                None => std::future::pending().await,
            }
        };
        let audio_in = async {
            match audio_rx {
                Some(r) => r.recv().await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            // In this order: audio never waits behind video; timers and the control socket never
            // wait behind the network, however much arrives on it (one datagram per turn, and a
            // flood of message 1s costs a cookie reply each, not a Diffie-Hellman:
            // session/cookie.rs).
            biased;
            Some(p) = audio_in => {
                if let Some(l) = link.as_mut() {
                    l.on_audio(device.media(), &p);
                }
            }
            _ = sleep => {
                let _ = device.handle_input(Instant::now(), Input::Timeout);
            }
            req = rx.recv() => match req {
                Some(Request::Command(cmd, reply)) => {
                    let r = device.handle_input(Instant::now(), Input::Command(cmd));
                    let _ = reply.send(r);
                }
                Some(Request::Status(reply)) => {
                    let leds = serde_json::json!({
                        "ready": board.led(peercom_board::Led::Ready).as_str(),
                        "call": board.led(peercom_board::Led::Call).as_str(),
                    });
                    // When the call's first remote video frame was shown (wall clock, for
                    // measuring button-to-picture from outside the process).
                    let first_frame = link
                        .as_ref()
                        .and_then(|l| l.shared.probe.lock().ok().and_then(|p| p.call_first_frame_at))
                        .map(unix_ms);
                    let extra = serde_json::json!({
                        "board": board.kind(),
                        "leds": leds,
                        "first_remote_frame_unix_ms": first_frame,
                        "port_mapping": portmap.current().map(|a| a.to_string()),
                    });
                    let _ = reply.send((device.status(), extra));
                }
                Some(Request::Shutdown) | None => {
                    // Hang up politely so the other side does not wait for a timeout.
                    if device.phase() != Phase::Idle {
                        let _ = device.handle_input(Instant::now(), Input::Command(Command::Hangup));
                        while let Some(t) = device.poll_transmit(&mut out) {
                            let _ = match t.sock {
                                0 => socket.send_to(&out[..t.len], t.dst).await,
                                n => aux.send_to(n, &out[..t.len], t.dst).await,
                            };
                        }
                        while let Some(ev) = device.poll_event() {
                            report(&name, &device, &ev, &events);
                        }
                    }
                    if let Some(l) = link.take() {
                        l.stop();
                    }
                    portmap.stop().await;
                    log!("{name}: stopped");
                    return;
                }
            },
            Some(f) = video_in => {
                if let Some(l) = link.as_mut() {
                    l.on_video(Instant::now(), device.media(), f);
                }
            }
            r = socket.recv_from(&mut buf) => match r {
                Ok((n, from)) => {
                    let _ = device.handle_input(Instant::now(), Input::Datagram { from, bytes: &buf[..n] });
                }
                // ICMP errors (e.g. port unreachable) surface here on Linux; they are not fatal.
                Err(e) => log!("{name}: receive error: {e}"),
            },
            (sock, r) = aux.recv(&mut aux_buf) => match r {
                Ok((n, from)) => {
                    let _ = device.handle_input(Instant::now(), Input::AuxDatagram { sock, from, bytes: &aux_buf[..n] });
                }
                Err(e) => log!("{name}: receive error on aux socket {sock}: {e}"),
            },
            r = recv_lan(&lan, &mut lan_buf) => match r {
                Ok((n, from)) => {
                    let _ = device.handle_input(Instant::now(), Input::Beacon { from, bytes: &lan_buf[..n] });
                }
                Err(e) => log!("{name}: LAN receive error: {e}"),
            },
            _ = retry_bootstrap.tick(), if !net.bootstrap.is_empty() && device.dht_nodes() == 0 => {
                let boot = resolve_bootstrap(&name, &net.bootstrap).await;
                device.dht_bootstrap(Instant::now(), &boot);
            }
            m = portmap.changed() => device.set_mapped(Instant::now(), m),
        }
    }
}

fn report(name: &str, device: &Device, ev: &DeviceEvent, events: &broadcast::Sender<Notice>) {
    let contact_name = |c: usize| device.contacts().get(c).map(|c| c.name.as_str()).unwrap_or("?");
    let (line, json) = match ev {
        DeviceEvent::Call(CallEvent::Dialing { contact }) => (
            format!("dialing {}", contact_name(*contact)),
            serde_json::json!({"event": "dialing", "contact": contact_name(*contact)}),
        ),
        DeviceEvent::Call(CallEvent::Ringing { contact }) => (
            format!("ringing {}", contact_name(*contact)),
            serde_json::json!({"event": "ringing", "contact": contact_name(*contact)}),
        ),
        DeviceEvent::Call(CallEvent::Incoming { contact, peer }) => (
            format!("incoming call from {} ({})", contact_name(*contact), peer.short()),
            serde_json::json!({"event": "incoming", "contact": contact_name(*contact), "peer": peer.to_string()}),
        ),
        DeviceEvent::Call(CallEvent::Connected { contact, peer }) => (
            format!("in call with {} ({})", contact_name(*contact), peer.short()),
            serde_json::json!({"event": "in-call", "contact": contact_name(*contact), "peer": peer.to_string()}),
        ),
        DeviceEvent::Call(CallEvent::Ended { contact, outcome, .. }) => (
            format!("call with {} ended: {}", contact_name(*contact), outcome.as_str()),
            serde_json::json!({"event": "ended", "contact": contact_name(*contact), "reason": outcome.as_str()}),
        ),
        DeviceEvent::Refused { caller, suppressed } => (
            format!(
                "refused a call from unknown device {caller} (not in the contacts){}",
                if *suppressed > 0 { format!("; {suppressed} more refusals not logged") } else { String::new() }
            ),
            serde_json::json!({"event": "refused", "caller": caller.to_string()}),
        ),
        DeviceEvent::Located { device: dev, via, addr } => {
            let contact = device
                .contacts()
                .iter()
                .find(|c| c.devices.iter().any(|d| d.id == *dev))
                .map_or("?", |c| c.name.as_str());
            let via = match via {
                crate::device::Via::Lan => "LAN",
                crate::device::Via::Dht => "DHT",
            };
            (
                format!("located {contact} ({}) via {via} at {addr}", dev.short()),
                serde_json::json!({"event": "located", "contact": contact, "device": dev.to_string(), "via": via, "addr": addr.to_string()}),
            )
        }
        DeviceEvent::Announced { stored_at } => (
            format!("announced where this device is at {stored_at} DHT nodes"),
            serde_json::json!({"event": "announced", "stored_at": stored_at}),
        ),
    };
    log!("{name}: {line}");
    let _ = events.send(Notice { at: Instant::now(), json: json.to_string() });
}
