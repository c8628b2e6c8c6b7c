//! `peercom ctl`: a small synchronous client of the control socket.
use crate::config::Config;
use crate::runtime::protocol::{Reply, Request};
use std::io::{BufRead, BufReader, Write};
use std::os::unix::net::UnixStream;
use std::path::PathBuf;

fn socket_path(socket: Option<PathBuf>, config: Option<PathBuf>) -> Result<PathBuf, String> {
    if let Some(s) = socket {
        return Ok(s);
    }
    let c = config.unwrap_or_else(|| PathBuf::from(super::DEFAULT_CONFIG));
    let text = std::fs::read_to_string(&c).map_err(|e| format!("{}: {e} (use --socket or --config)", c.display()))?;
    Ok(Config::parse(&c, &text, false).map_err(|e| e.to_string())?.control)
}

pub fn ctl(socket: Option<PathBuf>, config: Option<PathBuf>, req: Request) -> i32 {
    let path = match socket_path(socket, config) {
        Ok(p) => p,
        Err(e) => {
            eprintln!("peercom ctl: {e}");
            return 2;
        }
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
