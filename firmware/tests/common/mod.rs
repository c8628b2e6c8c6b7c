//! Helpers for tests that run the real `peercom` binary.
#![allow(dead_code)]
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

pub fn bin() -> &'static str {
    env!("CARGO_BIN_EXE_peercom")
}

pub fn peercom(args: &[&str]) -> Output {
    Command::new(bin()).args(args).output().expect("run peercom")
}

pub fn tempdir(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("peercom-it-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

/// Generates a key with `peercom keygen` and returns the device ID it printed.
pub fn keygen(path: &Path) -> String {
    let out = peercom(&["keygen", "--out", path.to_str().unwrap()]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let text = String::from_utf8(out.stdout).unwrap();
    text.lines().find_map(|l| l.strip_prefix("device ID: ")).expect("ID line").to_string()
}

#[derive(Default)]
pub struct Logs {
    lines: Mutex<Vec<String>>,
    cv: Condvar,
}

impl Logs {
    /// Collects the lines of a child's stderr until it closes (run it on its own thread).
    pub fn collect(&self, stderr: std::process::ChildStderr) {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            self.lines.lock().unwrap().push(line);
            self.cv.notify_all();
        }
    }

    /// Waits until a line containing `needle` appears; returns it.
    pub fn wait_for(&self, needle: &str, timeout: Duration) -> Option<String> {
        let deadline = Instant::now() + timeout;
        let mut lines = self.lines.lock().unwrap();
        loop {
            if let Some(l) = lines.iter().find(|l| l.contains(needle)) {
                return Some(l.clone());
            }
            let left = deadline.checked_duration_since(Instant::now())?;
            lines = self.cv.wait_timeout(lines, left).unwrap().0;
        }
    }

    pub fn count(&self, needle: &str) -> usize {
        self.lines.lock().unwrap().iter().filter(|l| l.contains(needle)).count()
    }

    pub fn all(&self) -> String {
        self.lines.lock().unwrap().join("\n")
    }
}

pub struct Dev {
    pub name: String,
    pub id: String,
    pub addr: String,
    pub config: PathBuf,
    pub sock: PathBuf,
    pub child: Option<Child>,
    pub logs: Arc<Logs>,
}

/// A contact: (name, button, [(device id, optional addr)]).
pub type ContactSpec<'a> = (&'a str, Option<u8>, Vec<(String, Option<String>)>);

pub struct DevSpec<'a> {
    pub name: &'a str,
    pub addr: &'a str,
    pub contacts: Vec<ContactSpec<'a>>,
    pub extra: &'a str,
}

/// Creates a key for a device (so its ID is known before configs are written).
pub fn make_key(dir: &Path, name: &str) -> String {
    keygen(&dir.join(format!("{name}.key")))
}

pub fn write_config(dir: &Path, spec: &DevSpec) -> PathBuf {
    let mut t = format!(
        "[device]\nname = \"{}\"\nkey = \"{}.key\"\nlisten = \"{}\"\ncontrol = \"{}.sock\"\n\n[buttons]\nanswer = 0\n{}\n",
        spec.name, spec.name, spec.addr, spec.name, spec.extra
    );
    for (cname, button, devices) in &spec.contacts {
        t.push_str(&format!("\n[[contact]]\nname = \"{cname}\"\n"));
        if let Some(b) = button {
            t.push_str(&format!("button = {b}\n"));
        }
        for (id, addr) in devices {
            t.push_str(&format!("  [[contact.device]]\n  key = \"{id}\"\n"));
            if let Some(a) = addr {
                t.push_str(&format!("  addr = \"{a}\"\n"));
            }
        }
    }
    let p = dir.join(format!("{}.toml", spec.name));
    std::fs::write(&p, t).unwrap();
    p
}

impl Dev {
    /// Starts `peercom run` and waits for it to report ready.
    pub fn start(dir: &Path, spec: &DevSpec, id: &str) -> Dev {
        let config = write_config(dir, spec);
        let mut child = Command::new(bin())
            .args(["run", "--config", config.to_str().unwrap(), "--board", "sim"])
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn peercom run");
        let logs = Arc::new(Logs::default());
        let stderr = child.stderr.take().unwrap();
        let l2 = logs.clone();
        std::thread::spawn(move || l2.collect(stderr));
        let dev = Dev {
            name: spec.name.to_string(),
            id: id.to_string(),
            addr: spec.addr.to_string(),
            config,
            sock: dir.join(format!("{}.sock", spec.name)),
            child: Some(child),
            logs,
        };
        assert!(
            dev.logs.wait_for("ready as", Duration::from_secs(10)).is_some(),
            "{} did not start: {}",
            dev.name,
            dev.logs.all()
        );
        dev
    }

    pub fn ctl(&self, args: &[&str]) -> (bool, String, String) {
        let mut a = vec!["ctl", "--socket", self.sock.to_str().unwrap()];
        a.extend_from_slice(args);
        let out = peercom(&a);
        (out.status.success(), String::from_utf8_lossy(&out.stdout).into(), String::from_utf8_lossy(&out.stderr).into())
    }

    pub fn ok(&self, args: &[&str]) {
        let (ok, out, err) = self.ctl(args);
        assert!(ok, "{}: ctl {args:?} failed: {out}{err}\nlog:\n{}", self.name, self.logs.all());
    }

    pub fn wait(&self, state: &str) {
        self.ok(&["wait", state, "--timeout-ms", "10000"]);
    }

    pub fn status(&self) -> serde_json::Value {
        let (ok, out, err) = self.ctl(&["status"]);
        assert!(ok, "{err}");
        serde_json::from_str(&out).unwrap()
    }

    pub fn last_outcome(&self) -> String {
        self.status()["last_call"]["outcome"].as_str().unwrap_or("").to_string()
    }
}

impl Drop for Dev {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}
