//! Mouth-to-ear is measured, not scheduled: 15 ms more one-way delay on the path shows as 15 ms
//! more mouth-to-ear, in real calls between two sim devices over UDP on loopback.
//!
//! Playout is frame-granular: for one phase between the two devices' sound clocks, a frame plays
//! 10 or 20 ms later when the path is 15 ms slower. Over phases spread evenly across a frame it
//! is 15 ms on average, so the test runs five calls per delay, each with B's microphone a fifth
//! of a frame further on, and compares the means.
use peercom::bench::media::{CallOptions, call};
use peercom::bench::pair::temp_dir;
use peercom::bench::relay::Impairment;
use std::time::Duration;

const FRAME_US: u64 = 10_000;
const PHASES: u64 = 5;

fn mean_m2e_ms(rt: &tokio::runtime::Runtime, delay_ms: u64) -> (f64, Vec<f64>) {
    let mut per_call = Vec::new();
    for k in 0..PHASES {
        let dir = temp_dir("m2e-test");
        let o = CallOptions {
            seconds: 2.0,
            impairment: Some(Impairment { delay: Duration::from_millis(delay_ms), ..Default::default() }),
            snapshots: None,
            verbose: false,
            audio_frame_ms: (FRAME_US / 1000) as u32,
            audio_phase_us: Some([0, k * FRAME_US / PHASES]),
            flood_pps: 0,
            camera_file: None,
            video_kbps: 0,
        };
        let r = rt.block_on(call(&dir, &o));
        let _ = std::fs::remove_dir_all(&dir);
        let r = r.expect("the call runs");
        assert!(r.still_in_call, "{r:?}");
        for s in [&r.a, &r.b] {
            assert!(s.m2e_bursts_heard >= 2, "bursts heard each way: {s:?}");
            per_call.push(s.m2e_ms.p50);
        }
    }
    (per_call.iter().sum::<f64>() / per_call.len() as f64, per_call)
}

#[test]
fn fifteen_ms_more_on_the_path_is_fifteen_ms_more_mouth_to_ear() {
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("runtime");
    let (base, b) = mean_m2e_ms(&rt, 0);
    let (slow, s) = mean_m2e_ms(&rt, 15);
    let grew = slow - base;
    eprintln!("mouth-to-ear {base:.1} ms -> {slow:.1} ms with 15 ms more delay: {grew:+.1} ms");
    assert!((grew - 15.0).abs() <= 3.0, "grew {grew:.1} ms: {base:.1} -> {slow:.1} ({b:?} -> {s:?})");
}
