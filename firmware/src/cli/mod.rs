//! The command line. Exit codes: 0 success, 1 failure at run time, 2 bad usage or bad config.
mod check;
mod ctl;
mod demo;
mod keys;
mod run;

use clap::{Parser, Subcommand};
use std::path::PathBuf;

pub const DEFAULT_CONFIG: &str = "/boot/firmware/peercom.toml";

#[derive(Parser)]
#[command(name = "peercom", version, about = "Peer-to-peer video intercom")]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Generate a new device key (a new identity).
    Keygen {
        #[arg(long, default_value = "device.key")]
        out: PathBuf,
        /// Replace an existing key file (its identity is lost).
        #[arg(long)]
        force: bool,
    },
    /// Print this device's ID (the public key with a checksum).
    Id {
        #[arg(long, conflicts_with = "config")]
        key: Option<PathBuf>,
        #[arg(long, env = "PEERCOM_CONFIG")]
        config: Option<PathBuf>,
        /// Also print the ID as a QR code.
        #[arg(long)]
        qr: bool,
    },
    /// Check a config file; prints file:line:col and the reason for the first problem.
    CheckConfig { file: PathBuf },
    /// Run the device.
    Run {
        #[arg(long, env = "PEERCOM_CONFIG", default_value = DEFAULT_CONFIG)]
        config: PathBuf,
        #[arg(long, default_value = "sim")]
        board: String,
    },
    /// A headless DHT node (bootstrap for devices; fit for a small server): no camera, audio or
    /// display. Keeps its routing table in --state across restarts.
    Node {
        /// UDP address to listen on.
        #[arg(long, default_value = "0.0.0.0:7600")]
        listen: std::net::SocketAddr,
        /// Other nodes to join through (host:port); may be repeated.
        #[arg(long)]
        bootstrap: Vec<String>,
        /// The state file (node ID and routing table), written atomically.
        #[arg(long)]
        state: Option<PathBuf>,
        /// Relay calls between devices registered here that cannot reach each other directly
        /// (payload stays end-to-end encrypted).
        #[arg(long)]
        relay: bool,
        /// Bandwidth per relayed call, both directions together (kbit/s).
        #[arg(long, default_value_t = 4000, requires = "relay")]
        relay_kbps: u32,
        /// A relayed pair lasts at most this long; the devices may pair again (minutes).
        #[arg(long, default_value_t = 60, requires = "relay")]
        relay_minutes: u32,
        /// Calls relayed at once.
        #[arg(long, default_value_t = 32, requires = "relay")]
        relay_pairs: usize,
    },
    /// Talk to a running device through its control socket.
    Ctl {
        #[arg(long)]
        socket: Option<PathBuf>,
        #[arg(long, env = "PEERCOM_CONFIG")]
        config: Option<PathBuf>,
        #[command(subcommand)]
        cmd: crate::runtime::protocol::Request,
    },
    /// Two simulated devices on this machine make a video call over real UDP and report it.
    Demo {
        #[arg(long, default_value_t = 5.0)]
        seconds: f64,
        /// Where to write the displays as PNG.
        #[arg(long, default_value = "peercom-demo")]
        out: PathBuf,
        /// Print one JSON object instead of a readable summary.
        #[arg(long)]
        json: bool,
    },
    /// Benchmarks that print JSON.
    Bench {
        #[command(subcommand)]
        which: BenchCmd,
    },
}

#[derive(Subcommand)]
enum BenchCmd {
    /// Call set-up time on loopback: button press to both devices in call.
    Handshake {
        #[arg(long, default_value_t = 200)]
        calls: usize,
        #[arg(long)]
        json: bool,
    },
    /// A video call between two sim devices on loopback, measured; impairments through a relay.
    Media {
        #[arg(long, default_value_t = 10.0)]
        seconds: f64,
        /// Random packet loss, percent (each direction).
        #[arg(long, default_value_t = 0.0)]
        loss: f64,
        /// One-way delay, ms.
        #[arg(long, default_value_t = 0.0)]
        delay: f64,
        /// Extra random delay of 0..jitter ms per packet.
        #[arg(long, default_value_t = 0.0)]
        jitter: f64,
        /// Audio frame length in ms.
        #[arg(long, default_value_t = 20, value_parser = clap::builder::ValueParser::new(frame_ms))]
        audio_frame_ms: u32,
        /// During the call, flood B with this many handshake message 1s a second from 256
        /// unknown keys and 64 loopback addresses (0: none).
        #[arg(long, default_value_t = 0)]
        flood_pps: u32,
        /// Both cameras play this YUV4MPEG2 file (4:2:0, 640x480 unless configured otherwise)
        /// instead of the test pattern, e.g. made by
        /// `ffmpeg -f lavfi -i testsrc2=size=640x480:rate=30 -t 10 -pix_fmt yuv420p src.y4m`.
        #[arg(long)]
        camera_file: Option<std::path::PathBuf>,
        /// Video at most this many kbit/s, starting there (50..20000; 0: adaptive defaults).
        #[arg(long, default_value_t = 0)]
        video_kbps: u32,
        #[arg(long)]
        json: bool,
    },
    /// The DHT in the deterministic simulator (virtual time): lookups, churn, idle traffic.
    Dht {
        #[arg(long, default_value_t = 1000)]
        nodes: usize,
        /// Share of the nodes replaced between publishing and looking up (0..1).
        #[arg(long, default_value_t = 0.0)]
        churn: f64,
        /// Random datagram loss, percent.
        #[arg(long, default_value_t = 0.0)]
        loss: f64,
        #[arg(long, default_value_t = 1000)]
        lookups: usize,
        #[arg(long, default_value_t = 200)]
        publishers: usize,
        #[arg(long, default_value_t = 1)]
        seed: u64,
        #[arg(long)]
        json: bool,
    },
}

pub fn main() -> i32 {
    let cli = match Cli::try_parse() {
        Ok(c) => c,
        Err(e) => {
            let code = if e.use_stderr() { 2 } else { 0 };
            let _ = e.print();
            return code;
        }
    };
    match cli.cmd {
        Cmd::Keygen { out, force } => keys::keygen(&out, force),
        Cmd::Id { key, config, qr } => keys::id(key, config, qr),
        Cmd::CheckConfig { file } => check::check(&file),
        Cmd::Run { config, board } => run::run(&config, &board),
        Cmd::Node { listen, bootstrap, state, relay, relay_kbps, relay_minutes, relay_pairs } => {
            let relay = relay.then(|| {
                let rate = relay_kbps.clamp(64, 1_000_000).saturating_mul(125);
                crate::dht::relay::RelayConfig {
                    max_pairs: relay_pairs.clamp(1, 4096),
                    rate,
                    // A quarter second of traffic, and at least a few full datagrams.
                    burst: (rate / 4).max(8 * crate::wire::MAX_DATAGRAM as u32),
                    lifetime: std::time::Duration::from_secs(u64::from(relay_minutes.clamp(1, 24 * 60)) * 60),
                    ..Default::default()
                }
            });
            run::node(crate::runtime::node::NodeOptions { listen, bootstrap, state, relay })
        }
        Cmd::Ctl { socket, config, cmd } => ctl::ctl(socket, config, cmd),
        Cmd::Demo { seconds, out, json } => demo::demo(seconds, &out, json),
        Cmd::Bench { which: BenchCmd::Dht { nodes, churn, loss, lookups, publishers, seed, json } } => {
            let o = crate::bench::dht::Options {
                nodes: nodes.clamp(1, 1_000_000),
                churn: churn.clamp(0.0, 1.0),
                loss: loss.clamp(0.0, 100.0) / 100.0,
                seed,
                lookups,
                publishers: publishers.max(1),
            };
            crate::bench::dht::print(&crate::bench::dht::run(o), json);
            0
        }
        Cmd::Bench { which: BenchCmd::Handshake { calls, json } } => crate::bench::handshake::run(calls, json),
        Cmd::Bench {
            which:
                BenchCmd::Media { seconds, loss, delay, jitter, audio_frame_ms, flood_pps, camera_file, video_kbps, json },
        } => {
            let ms = |x: f64| std::time::Duration::from_secs_f64(x.clamp(0.0, 10_000.0) / 1000.0);
            let impaired = loss > 0.0 || delay > 0.0 || jitter > 0.0;
            let imp = crate::bench::relay::Impairment {
                loss_pct: loss.clamp(0.0, 100.0),
                delay: ms(delay),
                jitter: ms(jitter),
            };
            let o = crate::bench::media::CallOptions {
                seconds: seconds.clamp(1.0, 3600.0),
                impairment: impaired.then_some(imp),
                snapshots: None,
                verbose: false,
                audio_frame_ms,
                audio_phase_us: None,
                flood_pps,
                camera_file,
                video_kbps: if video_kbps == 0 { 0 } else { video_kbps.clamp(50, 20_000) },
            };
            crate::bench::media::run(o, json)
        }
    }
}

/// A current-thread tokio runtime: the device loop is one task; no thread pool needed.
pub(crate) fn runtime() -> std::io::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_current_thread().enable_all().build()
}

fn frame_ms(s: &str) -> Result<u32, String> {
    match s {
        "10" => Ok(10),
        "20" => Ok(20),
        _ => Err("must be 10 or 20".into()),
    }
}
