//! `peercom ctl`: a small synchronous client of the control socket.
use crate::config::Config;
use crate::runtime::protocol::{Reply, Request};
use clap::Subcommand;
use std::io::{BufRead, BufReader, Write};
use std::os::unix::net::UnixStream;
use std::path::PathBuf;

#[derive(Subcommand)]
pub enum CtlCmd {
    /// Press button N (on the sim board; same effect as a GPIO button).
    Press {
        button: u8,
    },
    /// Call a contact by name.
    Call {
        contact: String,
    },
    Answer,
    Reject,
    Hangup,
    /// Print the device status as JSON.
    Status,
    /// Wait until the call state is STATE (idle, dialing, ringing, incoming, in-call).
    Wait {
        state: String,
        #[arg(long, default_value_t = 10_000)]
        timeout_ms: u64,
    },
    /// Print events as JSON lines until interrupted.
    Events,
}

fn socket_path(socket: Option<PathBuf>, config: Option<PathBuf>) -> Result<PathBuf, String> {
    if let Some(s) = socket {
        return Ok(s);
    }
    let c = config.unwrap_or_else(|| PathBuf::from(super::DEFAULT_CONFIG));
    let text = std::fs::read_to_string(&c).map_err(|e| format!("{}: {e} (use --socket or --config)", c.display()))?;
    Ok(Config::parse(&c, &text, false).map_err(|e| e.to_string())?.control)
}

pub fn ctl(socket: Option<PathBuf>, config: Option<PathBuf>, cmd: CtlCmd) -> i32 {
    let path = match socket_path(socket, config) {
        Ok(p) => p,
        Err(e) => {
            eprintln!("peercom ctl: {e}");
            return 2;
        }
    };
    let req = match cmd {
        CtlCmd::Press { button } => Request::Press { button },
        CtlCmd::Call { contact } => Request::Call { contact },
        CtlCmd::Answer => Request::Answer,
        CtlCmd::Reject => Request::Reject,
        CtlCmd::Hangup => Request::Hangup,
        CtlCmd::Status => Request::Status,
        CtlCmd::Wait { state, timeout_ms } => Request::Wait { state, timeout_ms },
        CtlCmd::Events => Request::Events,
    };
    let stream = match UnixStream::connect(&path) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("peercom ctl: cannot connect to {}: {e} (is peercom running?)", path.display());
            return 1;
        }
    };
    match exchange(stream, &req) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("peercom ctl: {e}");
            1
        }
    }
}

fn exchange(mut stream: UnixStream, req: &Request) -> std::io::Result<i32> {
    let mut line = serde_json::to_string(req).map_err(std::io::Error::other)?;
    line.push('\n');
    stream.write_all(line.as_bytes())?;
    let mut reader = BufReader::new(stream);
    let mut first = String::new();
    reader.read_line(&mut first)?;
    let reply: Reply = serde_json::from_str(&first).map_err(|e| std::io::Error::other(format!("bad reply: {e}")))?;
    if !reply.ok {
        eprintln!("peercom ctl: {}", reply.error.unwrap_or_else(|| "failed".into()));
        return Ok(1);
    }
    match req {
        Request::Status => {
            let s = reply.status.unwrap_or_default();
            println!("{}", serde_json::to_string_pretty(&s).unwrap_or_default());
        }
        Request::Events => {
            let stdout = std::io::stdout();
            for l in reader.lines() {
                let l = l?;
                let mut out = stdout.lock();
                writeln!(out, "{l}")?;
                out.flush()?;
            }
        }
        _ => println!("ok"),
    }
    Ok(0)
}
