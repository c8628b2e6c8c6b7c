//! The control socket server (`peercom ctl` is its client). Local programs can query status,
//! press buttons, place/answer/end calls, wait for a state and subscribe to events.
use super::driver::DeviceHandle;
use super::protocol::{Reply, Request};
use crate::call::Phase;
use crate::device::Command;
use crate::log;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::time::Duration;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::{UnixListener, UnixStream};

const MAX_LINE: usize = 4096;
/// Clients served at once; more are told so and closed (each holds a task and a line buffer,
/// so a script that opens sockets in a loop cannot grow the appliance's memory).
pub const MAX_CLIENTS: usize = 16;

/// Listens on `path` (replacing a stale socket file) and serves requests until the task ends.
pub fn serve(path: &Path, handle: DeviceHandle) -> std::io::Result<tokio::task::JoinHandle<()>> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)?;
    }
    if path.exists() {
        if std::os::unix::net::UnixStream::connect(path).is_ok() {
            return Err(std::io::Error::new(
                std::io::ErrorKind::AddrInUse,
                format!("{} is in use by another peercom", path.display()),
            ));
        }
        std::fs::remove_file(path)?;
    }
    let listener = UnixListener::bind(path)?;
    // Owner and group: home-automation scripts run in the peercom group.
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o660))?;
    let slots = std::sync::Arc::new(tokio::sync::Semaphore::new(MAX_CLIENTS));
    Ok(tokio::spawn(async move {
        loop {
            match listener.accept().await {
                Ok((stream, _)) => match slots.clone().try_acquire_owned() {
                    Ok(permit) => {
                        let handle = handle.clone();
                        tokio::spawn(async move {
                            connection(stream, handle).await;
                            drop(permit);
                        });
                    }
                    Err(_) => {
                        let reply = Reply::err(format!("busy: {MAX_CLIENTS} control clients are connected"));
                        let line = serde_json::to_string(&reply).unwrap_or_default() + "\n";
                        // Best effort, and never waits: the client may not read.
                        let _ = stream.try_write(line.as_bytes());
                    }
                },
                Err(e) => log!("control socket accept failed: {e}"),
            }
        }
    }))
}

pub fn parse_phase(s: &str) -> Option<Phase> {
    [Phase::Idle, Phase::Dialing, Phase::Ringing, Phase::Incoming, Phase::InCall]
        .into_iter()
        .find(|p| p.as_str() == s || (s == "ready" && *p == Phase::Idle))
}

async fn connection(stream: UnixStream, handle: DeviceHandle) {
    let (r, mut w) = stream.into_split();
    let mut reader = BufReader::new(r);
    let mut buf = Vec::with_capacity(256);
    loop {
        buf.clear();
        // Never more than MAX_LINE + 1 bytes buffered, newline or not.
        match (&mut reader).take(MAX_LINE as u64 + 1).read_until(b'\n', &mut buf).await {
            Ok(0) | Err(_) => return,
            Ok(_) => {}
        }
        if buf.last() != Some(&b'\n') && buf.len() > MAX_LINE {
            let _ = write(&mut w, &Reply::err(format!("request too long (over {MAX_LINE} bytes)"))).await;
            return;
        }
        let line = String::from_utf8_lossy(&buf);
        let line = line.trim_end_matches(['\n', '\r']);
        if line.is_empty() {
            continue;
        }
        let req: Request = match serde_json::from_str(line) {
            Ok(r) => r,
            Err(e) => {
                if write(&mut w, &Reply::err(format!("bad request: {e}"))).await.is_err() {
                    return;
                }
                continue;
            }
        };
        let reply = match req {
            Request::Events => {
                let mut rx = handle.subscribe();
                if write(&mut w, &Reply::ok()).await.is_err() {
                    return;
                }
                loop {
                    match rx.recv().await {
                        Ok(n) => {
                            if w.write_all(format!("{}\n", n.json).as_bytes()).await.is_err() {
                                return;
                            }
                        }
                        Err(tokio::sync::broadcast::error::RecvError::Lagged(k)) => {
                            let line = serde_json::json!({"event": "lagged", "missed": k}).to_string();
                            if w.write_all(format!("{line}\n").as_bytes()).await.is_err() {
                                return;
                            }
                        }
                        Err(_) => return,
                    }
                }
            }
            Request::Status => match handle.status().await {
                Some((s, board)) => {
                    let mut v = serde_json::to_value(&s).unwrap_or_default();
                    if let (Some(obj), Some(b)) = (v.as_object_mut(), board.as_object()) {
                        obj.extend(b.clone());
                    }
                    Reply { ok: true, error: None, status: Some(v) }
                }
                None => Reply::err("device stopped"),
            },
            Request::Wait { state, timeout_ms } => match parse_phase(&state) {
                None => Reply::err(format!("unknown state \"{state}\" (idle, dialing, ringing, incoming, in-call)")),
                Some(p) => match handle.wait_phase(p, Duration::from_millis(timeout_ms)).await {
                    Some(_) => Reply::ok(),
                    None => Reply::err(format!("timed out waiting for {state} (now {})", handle.phase().0.as_str())),
                },
            },
            Request::Press { button } => result(handle.command(Command::Press(button)).await),
            Request::Answer => result(handle.command(Command::Answer).await),
            Request::Reject => result(handle.command(Command::Reject).await),
            Request::Hangup => result(handle.command(Command::Hangup).await),
            Request::Mute | Request::Unmute => match (&handle.media, handle.phase().0) {
                (Some(m), crate::call::Phase::InCall) => {
                    m.set_muted(matches!(req, Request::Mute));
                    Reply::ok()
                }
                (None, _) => Reply::err("this device has no microphone"),
                _ => Reply::err("there is no call"),
            },
            Request::Call { contact } => result(handle.call_by_name(&contact).await),
        };
        if write(&mut w, &reply).await.is_err() {
            return;
        }
    }
}

fn result(r: Result<(), String>) -> Reply {
    match r {
        Ok(()) => Reply::ok(),
        Err(e) => Reply::err(e),
    }
}

async fn write(w: &mut tokio::net::unix::OwnedWriteHalf, reply: &Reply) -> std::io::Result<()> {
    let mut s = serde_json::to_string(reply).unwrap_or_else(|_| "{\"ok\":false}".into());
    s.push('\n');
    w.write_all(s.as_bytes()).await
}
