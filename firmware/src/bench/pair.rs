//! Two devices on loopback in one process, with fresh keys and config files in a temp dir:
//! used by the demo and the benchmarks.
use crate::config::Config;
use crate::identity::generate_key_file;
use crate::runtime::{self, DeviceHandle};
use std::path::{Path, PathBuf};

pub struct Pair {
    pub dir: PathBuf,
    pub a: DeviceHandle,
    pub b: DeviceHandle,
    pub relay: Option<super::relay::Relay>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

/// Writes a config file for a device, as an owner would.
/// The one contact of a demo device: name, device ID and optional address.
struct Peer<'a>(&'a str, &'a str, Option<&'a str>);

/// Settings of the demo devices beyond the defaults.
#[derive(Debug, Clone, Default)]
pub struct Options {
    pub auto_answer: bool,
    /// Audio frame length (10 or 20 ms; 0: the default).
    pub audio_frame_ms: u32,
    /// Fixed phases of A's and B's microphone blocks, µs (None: wherever each starts).
    pub audio_phase_us: Option<[u64; 2]>,
    /// No LAN discovery and no DHT: each finds the other only at its configured address (so
    /// that a call through the impairing relay cannot move to a direct path).
    pub configured_only: bool,
    /// Both cameras play this YUV4MPEG2 file instead of the test pattern.
    pub camera_file: Option<PathBuf>,
    /// Video starts at and never exceeds this bitrate, kbit/s (0: the defaults), to compare
    /// with another intercom sending at a fixed rate.
    pub video_kbps: u32,
}

fn sim_board(phase: Option<u64>, camera_file: &Option<PathBuf>) -> Box<dyn peercom_board::Board> {
    let b = match phase {
        Some(ph) => peercom_board::sim::SimBoard::with_audio_phase(ph),
        None => peercom_board::sim::SimBoard::default(),
    };
    Box::new(b.with_camera_file(camera_file.clone()))
}

fn write_config(dir: &Path, name: &str, key: &str, listen: &str, peer: Peer<'_>, o: &Options) -> PathBuf {
    let auto_answer = o.auto_answer;
    let Peer(peer_name, peer_id, peer_addr) = peer;
    let addr = peer_addr.map(|a| format!("addr = \"{a}\"\n")).unwrap_or_default();
    let mut media = String::new();
    if o.audio_frame_ms != 0 {
        media += &format!("audio_frame_ms = {}\n", o.audio_frame_ms);
    }
    if o.video_kbps != 0 {
        media += &format!("video_kbps_start = {0}\nvideo_kbps_max = {0}\n", o.video_kbps);
    }
    if !media.is_empty() {
        media = format!("[media]\n{media}\n");
    }
    let network = if o.configured_only { "[network]\nlan_discovery = false\ndht = false\n\n" } else { "" };
    let text = format!(
        "[device]\nname = \"{name}\"\nkey = \"{key}\"\nlisten = \"{listen}\"\ncontrol = \"{name}.sock\"\n\n\
         [buttons]\nanswer = 0\n\n[call]\nauto_answer = {auto_answer}\n\n{media}{network}\
         [[contact]]\nname = \"{peer_name}\"\nbutton = 1\n\n  [[contact.device]]\n  key = \"{peer_id}\"\n  {addr}"
    );
    let path = dir.join(format!("{name}.toml"));
    // The demo's own files: a plain write is enough.
    let _ = std::fs::write(&path, text);
    path
}

impl Pair {
    /// Starts devices "A" and "B" (B answers automatically if `auto_answer`).
    pub async fn start(dir: &Path, auto_answer: bool) -> Result<Pair, String> {
        Self::start_via(dir, Options { auto_answer, ..Default::default() }, None).await
    }

    /// Like `start`, with A's traffic to B going through an impairing relay if `via` is given.
    pub async fn start_via(dir: &Path, o: Options, via: Option<super::relay::Impairment>) -> Result<Pair, String> {
        std::fs::create_dir_all(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
        let o = Options { configured_only: o.configured_only || via.is_some(), ..o };
        let ka = generate_key_file(&dir.join("a.key"), true).map_err(|e| e.to_string())?;
        let kb = generate_key_file(&dir.join("b.key"), true).map_err(|e| e.to_string())?;
        let b_id = kb.id().to_string();
        // B first, on an ephemeral port, so A's config can point at it.
        let pb = write_config(dir, "B", "b.key", "127.0.0.1:0", Peer("A", &ka.id().to_string(), None), &o);
        let cb = Config::load(&pb).map_err(|e| e.to_string())?;
        let board = sim_board(o.audio_phase_us.map(|p| p[1]), &o.camera_file);
        let (b, tb) = runtime::start(&cb, kb, board).map_err(|e| e.to_string())?;
        let relay = match via {
            Some(imp) => Some(super::relay::Relay::start(b.local_addr, imp).await.map_err(|e| e.to_string())?),
            None => None,
        };
        let b_addr = relay.as_ref().map_or(b.local_addr, |r| r.a_side).to_string();
        let pa = write_config(
            dir,
            "A",
            "a.key",
            "127.0.0.1:0",
            Peer("B", &b_id, Some(&b_addr)),
            &Options { auto_answer: false, ..o.clone() },
        );
        let ca = Config::load(&pa).map_err(|e| e.to_string())?;
        let board = sim_board(o.audio_phase_us.map(|p| p[0]), &o.camera_file);
        let (a, ta) = runtime::start(&ca, ka, board).map_err(|e| e.to_string())?;
        Ok(Pair { dir: dir.to_path_buf(), a, b, relay, tasks: vec![ta, tb] })
    }

    pub async fn stop(self) {
        if let Some(r) = self.relay {
            r.stop();
        }
        self.a.shutdown().await;
        self.b.shutdown().await;
        for t in self.tasks {
            let _ = t.await;
        }
    }
}

/// A fresh temp directory for a run.
pub fn temp_dir(what: &str) -> PathBuf {
    let mut rng = crate::util::rng::Rng::from_os();
    std::env::temp_dir().join(format!("peercom-{what}-{}-{:08x}", std::process::id(), rng.next_u32()))
}
