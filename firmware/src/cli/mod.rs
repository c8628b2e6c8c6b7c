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
    /// Talk to a running device through its control socket.
    Ctl {
        #[arg(long)]
        socket: Option<PathBuf>,
        #[arg(long, env = "PEERCOM_CONFIG")]
        config: Option<PathBuf>,
        #[command(subcommand)]
        cmd: crate::runtime::protocol::Request,
    },
    /// Two simulated devices on this machine call each other over real UDP.
    Demo {
        #[arg(long, default_value_t = 3)]
        seconds: u64,
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
        Cmd::Ctl { socket, config, cmd } => ctl::ctl(socket, config, cmd),
        Cmd::Demo { seconds } => demo::demo(seconds),
        Cmd::Bench { which: BenchCmd::Handshake { calls, json } } => crate::bench::handshake::run(calls, json),
    }
}

/// A current-thread tokio runtime: the device loop is one task; no thread pool needed.
pub(crate) fn runtime() -> std::io::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_current_thread().enable_all().build()
}
