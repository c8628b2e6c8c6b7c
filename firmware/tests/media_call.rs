//! Picture quality and recovery of a real H.264/Opus call over the device cores, in virtual
//! time: the decoded picture against the pattern the camera sent (PSNR), recovery after a burst
//! loss, and an independent decoder (Debian's ffmpeg) on the stream as it was received.
#[path = "common/media.rs"]
mod media_call;
use media_call::MediaCall;
use peercom::media::assembler::FrameInfo;
use peercom_board::camera::{Camera, unpack_stamp};
use peercom_board::frame::I420Frame;
use peercom_board::sim::SimCamera;
use peercom_board::stamp;

fn psnr(a: &[u8], b: &[u8]) -> f64 {
    let mse = a.iter().zip(b).map(|(&x, &y)| (f64::from(x) - f64::from(y)).powi(2)).sum::<f64>() / a.len() as f64;
    if mse == 0.0 { 99.0 } else { 10.0 * (255.0 * 255.0 / mse).log10() }
}

/// Regenerates what the camera captured for a decoded picture, from the stamp in its pixels.
struct Reference {
    cam: SimCamera,
    frame: I420Frame,
}

impl Reference {
    fn new() -> Self {
        Reference { cam: SimCamera::new(640, 480, 30), frame: I420Frame::new(640, 480) }
    }

    /// PSNR (Y, U, V) of `shown` against its source, or None if its stamp is unreadable.
    fn psnr(&mut self, shown: &I420Frame) -> Option<(f64, f64, f64)> {
        let (seq, us) = unpack_stamp(stamp::read(&shown.y, shown.width, shown.height)?);
        // The pattern depends on the frame number only; frames are decoded in order.
        while self.frame.seq < seq || self.frame.captured_us == 0 {
            self.cam.capture(us, &mut self.frame).ok()?;
            if self.frame.seq > seq {
                return None;
            }
        }
        Some((psnr(&shown.y, &self.frame.y), psnr(&shown.u, &self.frame.u), psnr(&shown.v, &self.frame.v)))
    }
}

#[test]
fn decoded_video_matches_what_the_camera_sent() {
    let mut c = MediaCall::new(11);
    let mut refs = [Reference::new(), Reference::new()];
    let mut scores: [Vec<f64>; 2] = [Vec::new(), Vec::new()];
    for ms in 0..6_000 {
        c.tick(ms, &mut |side, _f: &FrameInfo, _au: &[u8], shown: Option<&I420Frame>| {
            if let Some(p) = shown.and_then(|s| refs[side].psnr(s)) {
                scores[side].push(p.0.min(p.1).min(p.2));
            }
        });
    }
    for (side, s) in scores.iter().enumerate() {
        assert!(s.len() >= 170, "side {side}: {} frames compared", s.len());
        let mean = s.iter().sum::<f64>() / s.len() as f64;
        let worst = s.iter().copied().fold(f64::MAX, f64::min);
        let below = s.iter().filter(|&&x| x < 30.0).count();
        println!("side {side}: {} frames, PSNR mean {mean:.1} dB, worst {worst:.1} dB, {below} below 30 dB", s.len());
        // The very first keyframe comes from a cold rate control and may be rough; the rest not.
        assert!(mean >= 30.0 && below * 20 <= s.len(), "side {side}: mean {mean:.1} dB, {below} frames below 30 dB");
    }
}

#[test]
fn clean_picture_within_500_ms_of_a_burst_loss() {
    let mut c = MediaCall::new(12);
    let mut refs = [Reference::new(), Reference::new()];
    // (side, ms, psnr) of every picture shown.
    let mut shown_log: Vec<(usize, u64, f64)> = Vec::new();
    let mut now_ms = 0;
    let mut run = |c: &mut MediaCall, from: u64, to: u64, log: &mut Vec<(usize, u64, f64)>| {
        for ms in from..to {
            now_ms = ms;
            c.tick(ms, &mut |side, _f: &FrameInfo, _au: &[u8], shown: Option<&I420Frame>| {
                if let Some(p) = shown.and_then(|s| refs[side].psnr(s)) {
                    log.push((side, now_ms, p.0));
                }
            });
        }
    };
    run(&mut c, 0, 2_000, &mut shown_log);
    c.blackout = true;
    run(&mut c, 2_000, 2_400, &mut shown_log);
    c.blackout = false;
    run(&mut c, 2_400, 5_000, &mut shown_log);
    assert!(c.lost > 50, "the burst dropped {} datagrams", c.lost);
    for side in 0..2 {
        let first_clean = shown_log.iter().find(|&&(s, ms, p)| s == side && ms >= 2_400 && p >= 30.0).map(|x| x.1);
        let t = first_clean.expect("picture came back") - 2_400;
        println!("side {side}: clean picture {t} ms after the burst");
        assert!(t < 500, "side {side}: {t} ms");
        let after = shown_log.iter().filter(|&&(s, ms, _)| s == side && ms >= 2_400).count();
        assert!(after >= 60, "side {side}: {after} frames after the burst");
    }
}

#[test]
fn ffmpeg_decodes_the_received_stream() {
    let ffmpeg = std::path::Path::new("/usr/bin/ffmpeg");
    assert!(ffmpeg.exists(), "ffmpeg is needed (apt-get install ffmpeg; `make test` installs it)");
    let mut c = MediaCall::new(13);
    c.loss_ppm = 50_000; // 5%: the stream includes repaired frames and requested keyframes
    let mut dump = Vec::new();
    for ms in 0..5_000 {
        c.tick(ms, &mut |side, _f: &FrameInfo, au: &[u8], shown: Option<&I420Frame>| {
            if side == 0 && shown.is_some() {
                dump.extend_from_slice(au);
            }
        });
    }
    assert!(c.ends[0].decoded >= 100, "{} frames", c.ends[0].decoded);
    let path = std::env::temp_dir().join(format!("peercom-call-{}.h264", std::process::id()));
    std::fs::write(&path, &dump).unwrap();
    let out = std::process::Command::new(ffmpeg)
        .args(["-v", "error", "-i"])
        .arg(&path)
        .args(["-f", "null", "-"])
        .output()
        .unwrap();
    let _ = std::fs::remove_file(&path);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success() && stderr.trim().is_empty(), "ffmpeg: {stderr}");
}
