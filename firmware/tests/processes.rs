//! Real `peercom run` processes on 127.0.0.x talking UDP, driven through `peercom ctl`.
//! Each test uses its own 127.0.N.x addresses so tests can run in parallel.
mod common;
use common::*;
use std::net::UdpSocket;
use std::time::Duration;

fn spec<'a>(name: &'a str, addr: &'a str, contacts: Vec<ContactSpec<'a>>, extra: &'a str) -> DevSpec<'a> {
    DevSpec { name, addr, contacts, extra }
}

fn dev(id: &str, addr: &str) -> (String, Option<String>) {
    (id.to_string(), Some(addr.to_string()))
}

#[test]
fn call_answer_hang_up_between_two_processes() {
    let dir = tempdir("basic");
    let (a_addr, b_addr) = ("127.0.1.1:7600", "127.0.1.2:7600");
    let (ida, idb) = (make_key(&dir, "A"), make_key(&dir, "B"));
    let a = Dev::start(&dir, &spec("A", a_addr, vec![("B", Some(1), vec![dev(&idb, b_addr)])], ""), &ida);
    let b = Dev::start(&dir, &spec("B", b_addr, vec![("A", Some(1), vec![dev(&ida, a_addr)])], ""), &idb);
    assert_eq!(a.status()["state"], "idle");
    assert_eq!(a.status()["leds"]["call"], "off");
    a.ok(&["press", "1"]);
    b.wait("incoming");
    a.wait("ringing");
    assert_eq!(b.status()["contact"], "A");
    assert_eq!(b.status()["leds"]["call"], "blink-fast");
    b.ok(&["press", "0"]);
    a.wait("in-call");
    b.wait("in-call");
    let sa = a.status();
    assert_eq!(sa["peer"], idb.as_str());
    assert_eq!(sa["leds"]["call"], "on");
    // Video and audio flow both ways between the processes.
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    let frames = |d: &Dev| d.status()["media"]["received"]["frames_delivered"].as_u64().unwrap_or(0);
    while (frames(&a) < 15 || frames(&b) < 15) && std::time::Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(100));
    }
    assert!(frames(&a) >= 15 && frames(&b) >= 15, "{}\n{}", a.status(), b.status());
    assert!(a.status()["media"]["audio_received"].as_u64().unwrap() > 10);
    // The session's path and when the first remote frame of this call was shown (wall clock).
    let sa = a.status();
    assert_eq!(sa["network"]["path"]["addr"], b_addr, "{sa}");
    assert_eq!(sa["network"]["path"]["class"], "lan", "loopback: {sa}");
    let first = sa["first_remote_frame_unix_ms"].as_f64().unwrap_or(0.0);
    let now_ms = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs_f64() * 1000.0;
    assert!(first > now_ms - 20_000.0 && first <= now_ms, "{sa}");
    a.ok(&["mute"]);
    a.ok(&["unmute"]);
    a.ok(&["press", "1"]);
    a.wait("idle");
    b.wait("idle");
    assert_eq!(a.last_outcome(), "local-hangup");
    assert_eq!(b.last_outcome(), "remote-hangup");
    assert!(a.status()["network"]["path"].is_null());
    let (ok, _, err) = a.ctl(&["mute"]);
    assert!(!ok && err.contains("there is no call"), "{err}");
    // Each state change was printed.
    for line in ["A: dialing B", "A: ringing B", "A: in call with B", "A: call with B ended: local-hangup"] {
        assert!(a.logs.wait_for(line, Duration::from_secs(2)).is_some(), "missing {line:?} in\n{}", a.logs.all());
    }
    // The key never appears in logs.
    let seed = std::fs::read_to_string(dir.join("A.key")).unwrap();
    let hex = seed.lines().nth(1).unwrap();
    assert!(!a.logs.all().contains(hex));
}

#[test]
fn reject_busy_and_no_answer() {
    let dir = tempdir("paths");
    let (a_addr, b_addr, c_addr) = ("127.0.2.1:7600", "127.0.2.2:7600", "127.0.2.3:7600");
    let (ida, idb, idc) = (make_key(&dir, "A"), make_key(&dir, "B"), make_key(&dir, "C"));
    let quick = "[call]\nno_answer_timeout_s = 2\n";
    let a = Dev::start(&dir, &spec("A", a_addr, vec![("B", Some(1), vec![dev(&idb, b_addr)])], quick), &ida);
    let b = Dev::start(
        &dir,
        &spec(
            "B",
            b_addr,
            vec![("A", Some(1), vec![dev(&ida, a_addr)]), ("C", Some(2), vec![dev(&idc, c_addr)])],
            quick,
        ),
        &idb,
    );
    let c = Dev::start(&dir, &spec("C", c_addr, vec![("B", Some(1), vec![dev(&idb, b_addr)])], quick), &idc);

    // Reject.
    a.ok(&["press", "1"]);
    b.wait("incoming");
    b.ok(&["reject"]);
    a.wait("idle");
    assert_eq!(a.last_outcome(), "rejected");
    assert_eq!(b.last_outcome(), "rejected");

    // Busy: C calls B while B is in a call with A.
    a.ok(&["call", "B"]);
    b.wait("incoming");
    b.ok(&["answer"]);
    a.wait("in-call");
    c.ok(&["press", "1"]);
    c.wait("idle");
    assert_eq!(c.last_outcome(), "busy");
    assert_eq!(b.status()["state"], "in-call");
    b.ok(&["hangup"]);
    a.wait("idle");

    // No answer (2 s timeout in this config).
    a.ok(&["press", "1"]);
    b.wait("incoming");
    a.wait("idle");
    b.wait("idle");
    assert_eq!(a.last_outcome(), "no-answer");
    assert_eq!(b.last_outcome(), "missed");
    assert_eq!(b.status()["missed_calls"], 1);
}

#[test]
fn unknown_key_is_refused_without_ringing() {
    let dir = tempdir("unknown");
    let (b_addr, m_addr) = ("127.0.3.2:7600", "127.0.3.9:7600");
    let (idb, idm) = (make_key(&dir, "B"), make_key(&dir, "M"));
    let other = make_key(&dir, "X");
    // B trusts only X; M (a stranger) knows B's key and address.
    let b = Dev::start(&dir, &spec("B", b_addr, vec![("X", Some(1), vec![(other, None)])], ""), &idb);
    let m = Dev::start(&dir, &spec("M", m_addr, vec![("B", Some(1), vec![dev(&idb, b_addr)])], ""), &idm);
    m.ok(&["press", "1"]);
    m.wait("idle");
    assert_eq!(m.last_outcome(), "unreachable");
    let s = b.status();
    assert_eq!(s["state"], "idle");
    assert!(s["last_call"].is_null(), "B must not have rung");
    assert!(s["counters"]["refused_unknown_peer"].as_u64().unwrap() >= 2, "{s}");
    assert_eq!(s["counters"]["tx_packets"], 0, "B must not answer a stranger at all");
    // Logged once (rate-limited), naming the stranger's ID so the owner can add it if wanted.
    assert!(b.logs.wait_for(&format!("refused a call from unknown device {idm}"), Duration::from_secs(1)).is_some());
    assert_eq!(b.logs.count("refused a call"), 1, "{}", b.logs.all());
}

/// A UDP relay between A and B that also replays every data packet and sends a tampered copy.
fn hostile_relay(listen: &str, b_addr: &str) -> std::thread::JoinHandle<()> {
    let sock = UdpSocket::bind(listen).unwrap();
    sock.set_read_timeout(Some(Duration::from_secs(8))).unwrap();
    let b_addr: std::net::SocketAddr = b_addr.parse().unwrap();
    std::thread::spawn(move || {
        let mut a_addr = None;
        let mut buf = [0u8; 2048];
        while let Ok((n, from)) = sock.recv_from(&mut buf) {
            let p = &buf[..n];
            let to = if from == b_addr {
                a_addr
            } else {
                a_addr = Some(from);
                Some(b_addr)
            };
            let Some(to) = to else { continue };
            let _ = sock.send_to(p, to);
            if p[0] == 3 {
                let _ = sock.send_to(p, to); // replay
                let mut t = p.to_vec();
                let last = t.len() - 1;
                t[last] ^= 0x55;
                t[7..15].copy_from_slice(&u64::MAX.to_le_bytes()[..8]); // fresh counter, bad tag
                t[6] = p[6];
                let _ = sock.send_to(&t, to);
            }
        }
    })
}

#[test]
fn replayed_and_tampered_packets_are_dropped_and_counted() {
    let dir = tempdir("hostile");
    let (a_addr, b_addr, relay) = ("127.0.4.1:7600", "127.0.4.2:7600", "127.0.4.3:7600");
    let (ida, idb) = (make_key(&dir, "A"), make_key(&dir, "B"));
    let _r = hostile_relay(relay, b_addr);
    // A reaches B only through the relay (no LAN beacons or DHT, which would find B directly).
    let off = "[network]\nlan_discovery = false\ndht = false\n";
    let a = Dev::start(&dir, &spec("A", a_addr, vec![("B", Some(1), vec![dev(&idb, relay)])], off), &ida);
    let b = Dev::start(&dir, &spec("B", b_addr, vec![("A", Some(1), vec![dev(&ida, a_addr)])], off), &idb);
    a.ok(&["press", "1"]);
    b.wait("incoming");
    b.ok(&["answer"]);
    a.wait("in-call");
    b.wait("in-call");
    // Hang up through the relay too (B's session moved to the relay's address: roaming).
    b.ok(&["hangup"]);
    a.wait("idle");
    let (ca, cb) = (a.status()["counters"].clone(), b.status()["counters"].clone());
    for c in [&ca, &cb] {
        assert!(c["dropped_replay"].as_u64().unwrap() >= 2, "{c}");
        assert!(c["dropped_auth"].as_u64().unwrap() >= 2, "{c}");
    }
    assert_eq!(a.last_outcome(), "remote-hangup");
}

#[test]
fn multi_device_contact_first_answer_wins() {
    let dir = tempdir("multi");
    let (a_addr, k1_addr, k2_addr) = ("127.0.5.1:7600", "127.0.5.2:7600", "127.0.5.3:7600");
    let (ida, id1, id2) = (make_key(&dir, "A"), make_key(&dir, "K1"), make_key(&dir, "K2"));
    let a = Dev::start(
        &dir,
        &spec("A", a_addr, vec![("Kids", Some(1), vec![dev(&id1, k1_addr), dev(&id2, k2_addr)])], ""),
        &ida,
    );
    let k1 = Dev::start(&dir, &spec("K1", k1_addr, vec![("A", Some(1), vec![dev(&ida, a_addr)])], ""), &id1);
    let k2 = Dev::start(&dir, &spec("K2", k2_addr, vec![("A", Some(1), vec![dev(&ida, a_addr)])], ""), &id2);
    a.ok(&["press", "1"]);
    k1.wait("incoming");
    k2.wait("incoming");
    k2.ok(&["press", "1"]);
    a.wait("in-call");
    k1.wait("idle");
    assert_eq!(k1.last_outcome(), "answered-elsewhere");
    assert_eq!(a.status()["peer"], id2.as_str());
    assert_eq!(k2.status()["state"], "in-call");
    a.ok(&["hangup"]);
    k2.wait("idle");
}

#[test]
fn ctl_reports_errors_clearly() {
    let dir = tempdir("ctlerr");
    let ida = make_key(&dir, "A");
    let idb = make_key(&dir, "B");
    let a = Dev::start(&dir, &spec("A", "127.0.6.1:7600", vec![("B", Some(1), vec![(idb, None)])], ""), &ida);
    let (ok, _, err) = a.ctl(&["press", "9"]);
    assert!(!ok && err.contains("button 9 is not bound"), "{err}");
    let (ok, _, err) = a.ctl(&["call", "Nobody"]);
    assert!(!ok && err.contains("no contact named"), "{err}");
    let (ok, _, err) = a.ctl(&["wait", "flying", "--timeout-ms", "10"]);
    assert!(!ok && err.contains("unknown state"), "{err}");
    // B has no address (no DHT yet): the call fails as unreachable, not silently.
    a.ok(&["press", "1"]);
    a.wait("idle");
    assert_eq!(a.last_outcome(), "unreachable");
    let none = dir.join("none.sock");
    let out = peercom(&["ctl", "--socket", none.to_str().unwrap(), "status"]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success() && err.contains("cannot connect"), "{err}");
}

#[test]
fn sigterm_hangs_up_the_call() {
    let dir = tempdir("sigterm");
    let (a_addr, b_addr) = ("127.0.7.1:7600", "127.0.7.2:7600");
    let (ida, idb) = (make_key(&dir, "A"), make_key(&dir, "B"));
    let mut a = Dev::start(&dir, &spec("A", a_addr, vec![("B", Some(1), vec![dev(&idb, b_addr)])], ""), &ida);
    let b = Dev::start(&dir, &spec("B", b_addr, vec![("A", Some(1), vec![dev(&ida, a_addr)])], ""), &idb);
    a.ok(&["press", "1"]);
    b.wait("incoming");
    b.ok(&["answer"]);
    b.wait("in-call");
    let child = a.child.take().unwrap();
    let pid = child.id().to_string();
    assert!(std::process::Command::new("kill").args(["-TERM", &pid]).status().unwrap().success());
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success());
    b.wait("idle");
    assert_eq!(b.last_outcome(), "remote-hangup");
    assert!(!dir.join("A.sock").exists(), "control socket removed on exit");
}

#[test]
fn control_socket_streams_events_and_answers_raw_json() {
    use std::io::{BufRead, BufReader, Write};
    let dir = tempdir("events");
    let (a_addr, b_addr) = ("127.0.8.1:7600", "127.0.8.2:7600");
    let (ida, idb) = (make_key(&dir, "A"), make_key(&dir, "B"));
    let a = Dev::start(&dir, &spec("A", a_addr, vec![("B", Some(1), vec![dev(&idb, b_addr)])], ""), &ida);
    let b = Dev::start(
        &dir,
        &spec("B", b_addr, vec![("A", Some(1), vec![dev(&ida, a_addr)])], "[call]\nauto_answer = true\n"),
        &idb,
    );
    // A raw client: subscribe, then read event lines as JSON.
    let mut s = std::os::unix::net::UnixStream::connect(&b.sock).unwrap();
    s.write_all(b"{\"cmd\":\"events\"}\n").unwrap();
    let mut r = BufReader::new(s.try_clone().unwrap());
    let mut line = String::new();
    r.read_line(&mut line).unwrap();
    assert_eq!(line.trim(), "{\"ok\":true}");
    a.ok(&["call", "b"]);
    a.wait("in-call");
    a.ok(&["hangup"]);
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let mut events = Vec::new();
    while events.len() < 3 {
        line.clear();
        r.read_line(&mut line).unwrap();
        let v: serde_json::Value = serde_json::from_str(&line).unwrap();
        // Network events (contacts located on the LAN, records announced) interleave; this
        // test is about the call's.
        if v["event"] == "located" || v["event"] == "announced" {
            continue;
        }
        events.push(v["event"].as_str().unwrap().to_string());
        if v["event"] == "ended" {
            assert_eq!(v["reason"], "remote-hangup");
        }
    }
    assert_eq!(events, ["incoming", "in-call", "ended"]);
    // Malformed requests get an error reply, and the connection stays usable.
    let mut c = std::os::unix::net::UnixStream::connect(&b.sock).unwrap();
    c.write_all(b"{\"cmd\":\"explode\"}\n{\"cmd\":\"status\"}\n").unwrap();
    let mut rc = BufReader::new(c);
    line.clear();
    rc.read_line(&mut line).unwrap();
    assert!(line.contains("\"ok\":false") && line.contains("bad request"), "{line}");
    line.clear();
    rc.read_line(&mut line).unwrap();
    assert!(line.contains("\"ok\":true") && line.contains("\"state\":\"idle\""), "{line}");
}
