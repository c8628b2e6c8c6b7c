//! `peercom demo`: two simulated devices on this machine make a video call over real UDP on
//! 127.0.0.1. A presses its call button, B answers automatically, they talk (sim camera, mic,
//! speaker and display on both sides), both displays are saved as PNG, A hangs up, and the call
//! is summed up: set-up time, glass-to-glass and mouth-to-ear latency, loss, CPU and memory.
use crate::bench::media::{CallOptions, call, print_summary};
use crate::bench::pair::temp_dir;
use std::path::Path;

pub fn demo(seconds: f64, out: &Path, json: bool) -> i32 {
    let rt = match super::runtime() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("peercom demo: {e}");
            return 1;
        }
    };
    if json {
        crate::util::log::set_quiet(true);
    }
    let dir = temp_dir("demo");
    if !json {
        println!("== peercom demo: two sim devices, A and B, keys and configs in {}", dir.display());
    }
    let o = CallOptions {
        seconds: seconds.clamp(1.0, 3600.0),
        impairment: None,
        snapshots: Some(out.to_path_buf()),
        verbose: !json,
        audio_frame_ms: 20,
        audio_phase_us: None,
        flood_pps: 0,
        camera_file: None,
        video_kbps: 0,
    };
    let r = rt.block_on(call(&dir, &o));
    let _ = std::fs::remove_dir_all(&dir);
    match r {
        Ok(rep) if json => {
            println!("{}", serde_json::to_string(&rep).unwrap_or_default());
            0
        }
        Ok(rep) => {
            print_summary(&rep);
            0
        }
        Err(e) => {
            eprintln!("peercom demo: {e}");
            1
        }
    }
}
