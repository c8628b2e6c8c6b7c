//! A STUN server no one here wrote: Debian's coturn (`turnserver`) on 127.0.0.1 answers our
//! `StunClient`, driven over a real UDP socket. Loopback has no NAT, so the mapped address must be
//! the socket's own and the classifier must say `Open`. The driving loop allocates nothing.
//!
//! Needs `apt-get install -y coturn`; with `PEERCOM_SKIP_COTURN=1` a missing `turnserver` is
//! skipped (loudly) instead of failing.
use peercom::nat::{NatClass, NatClassifier, StunClient, StunConfig, StunEvent};
use peercom::util::rng::Rng;
use std::fs::File;
use std::io::ErrorKind;
use std::net::UdpSocket;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

#[path = "common/counting_alloc.rs"]
mod counting_alloc;

#[global_allocator]
static GLOBAL: counting_alloc::Counting = counting_alloc::Counting;

/// A running `turnserver`, killed (and its files removed) when dropped, even on panic.
struct Turnserver {
    child: Child,
    dir: PathBuf,
    port: u16,
}

impl Turnserver {
    /// None if `turnserver` is missing and the skip was asked for.
    fn start() -> Option<Turnserver> {
        let dir = std::env::temp_dir().join(format!("peercom-coturn-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("temp dir");
        // A port free a moment ago; coturn retries a taken port rather than exiting, so a lost race
        // shows as the deadline below, with the log.
        let port = UdpSocket::bind("127.0.0.1:0").and_then(|s| s.local_addr()).expect("free port").port();
        let log = File::create(dir.join("turnserver.log")).expect("log file");
        let spawned = Command::new("turnserver")
            .args(turnserver_args(&dir, port))
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("log file"))
            .stderr(log)
            .spawn();
        match spawned {
            Ok(child) => Some(Turnserver { child, dir, port }),
            Err(e) if e.kind() == ErrorKind::NotFound => {
                let _ = std::fs::remove_dir_all(&dir);
                assert!(
                    std::env::var("PEERCOM_SKIP_COTURN").is_ok_and(|v| v == "1"),
                    "`turnserver` not found: install coturn (`apt-get install -y coturn`), \
                     or set PEERCOM_SKIP_COTURN=1 to skip this test"
                );
                eprintln!(
                    "\n**********\n*** SKIPPED stun_coturn: turnserver not installed (PEERCOM_SKIP_COTURN=1)\n**********\n"
                );
                None
            }
            Err(e) => panic!("spawning turnserver: {e}"),
        }
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join("turnserver.log")).unwrap_or_default()
    }
}

impl Drop for Turnserver {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// STUN only, UDP only, on loopback; no config file, no CLI, no root: the pid file and the
/// (unused) user database go to our temp dir instead of /var.
fn turnserver_args(dir: &std::path::Path, port: u16) -> Vec<String> {
    let d = dir.display();
    [
        "-n",
        "--stun-only",
        "--listening-ip=127.0.0.1",
        &format!("--listening-port={port}"),
        "--no-tcp",
        "--no-tls",
        "--no-dtls",
        "--no-cli",
        &format!("--pidfile={d}/turnserver.pid"),
        &format!("--db={d}/turndb"),
        "--log-file=stdout",
        "--simple-log",
    ]
    .map(String::from)
    .to_vec()
}

#[test]
fn coturn_reports_our_own_address_and_the_socket_is_open() {
    let Some(mut server) = Turnserver::start() else { return };
    let server_addr = std::net::SocketAddr::from(([127, 0, 0, 1], server.port));
    let sock = UdpSocket::bind("127.0.0.1:0").expect("bind");
    let local = sock.local_addr().expect("local addr");
    // Short rounds: the first ones may go out before coturn listens, and `Open` takes 4 samples.
    let cfg = StunConfig { reprobe: Duration::from_millis(100), ..StunConfig::default() };
    let t0 = Instant::now();
    let mut client = StunClient::new(&[server_addr], cfg, Rng::seeded(7), t0);
    let mut nat = NatClassifier::new(local);
    let deadline = t0 + Duration::from_secs(20);
    let mut buf = [0u8; 1500];
    let mut samples = 0;
    let allocs = counting_alloc::allocs();
    while samples < 4 {
        let now = Instant::now();
        if now >= deadline || server.child.try_wait().ok().flatten().is_some() {
            panic!("{samples} answers from turnserver by the deadline; its log:\n{}", server.log());
        }
        client.handle_timeout(now);
        while let Some((to, n)) = client.poll_transmit(&mut buf) {
            sock.send_to(&buf[..n], to).expect("send");
        }
        while let Some(ev) = client.poll_event() {
            match ev {
                StunEvent::Mapped { server, addr } => {
                    assert_eq!((server, addr), (server_addr, local), "loopback has no NAT");
                    nat.add(server, addr);
                    samples += 1;
                }
                StunEvent::Rejected { code, .. } => panic!("turnserver answered error {code}"),
                StunEvent::Unreachable { .. } => {} // not listening yet: the next round retries
            }
        }
        let wake = client.poll_timeout().expect("a server").min(deadline);
        sock.set_read_timeout(Some(wake.saturating_duration_since(now).max(Duration::from_millis(1)))).unwrap();
        match sock.recv_from(&mut buf) {
            Ok((n, from)) => {
                // False only for a late duplicate (a retransmission answered twice).
                client.handle_datagram(Instant::now(), from, &buf[..n]);
            }
            Err(e)
                if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut | ErrorKind::ConnectionRefused) => {}
            Err(e) => panic!("recv: {e}"),
        }
    }
    assert_eq!(counting_alloc::allocs(), allocs, "the client loop allocated");
    let counters = client.counters();
    assert_eq!((counters.mapped, counters.malformed, counters.rejected), (4, 0, 0), "{counters:?}");
    assert_eq!(nat.class(), NatClass::Open);
    assert_eq!(nat.public_addrs().count(), 0, "no public address behind no NAT");
    eprintln!("coturn answered in {:?}: {counters:?}", t0.elapsed());
}
