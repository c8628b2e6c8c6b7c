//! A measured audio/video call between two sim devices in this process, over real UDP on
//! 127.0.0.1 (through an impairing relay when loss, delay or jitter is asked for). Used by
//! `peercom demo` and `peercom bench media`.
//!
//! Latency comes from the media itself: the sim camera stamps capture time into the pixels and
//! the receiver reads it back from the decoded picture when it is presented (glass to glass);
//! the sim microphone's tone bursts sit on a 500 ms grid of the shared media clock and the sim
//! speaker times their onsets (mouth to ear).
use super::pair::Pair;
use super::relay::Impairment;
use super::stats::{Percentiles, cpu_seconds, percentiles};
use crate::call::Phase;
use crate::device::Command;
use crate::runtime::DeviceHandle;
use serde::Serialize;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

const WAIT: Duration = Duration::from_secs(5);

#[derive(Debug, Clone)]
pub struct CallOptions {
    pub seconds: f64,
    pub impairment: Option<Impairment>,
    /// Write both displays as PNG here near the end of the call.
    pub snapshots: Option<PathBuf>,
    pub verbose: bool,
    /// 10 or 20.
    pub audio_frame_ms: u32,
    /// Fixed phases of A's and B's microphones, µs (tests that average over phases).
    pub audio_phase_us: Option<[u64; 2]>,
    /// Message 1s a second flooded at B while the call is up (`bench::flood`; 0: none).
    pub flood_pps: u32,
    /// Both cameras play this YUV4MPEG2 file (`sim::y4m`) instead of the test pattern.
    pub camera_file: Option<PathBuf>,
    /// Fixed video bitrate, kbit/s (0: adaptive from the defaults).
    pub video_kbps: u32,
}

/// What a flood at B did, and whether B kept serving: its status answered in time, and what its
/// endpoint did with the message 1s (cookie replies cost no Diffie-Hellman).
#[derive(Debug, Clone, Serialize)]
pub struct FloodSummary {
    pub flood: super::flood::FloodReport,
    pub b_cookie_replies: u64,
    pub b_refused_unknown: u64,
    pub b_rate_limited: u64,
    pub b_dropped_bad_mac1: u64,
}

#[derive(Debug, Clone, Serialize)]
pub struct Side {
    pub frames_decoded: u64,
    pub frames_lost: u64,
    pub decode_errors: u64,
    pub fps_rx: f64,
    pub g2g_ms: Percentiles,
    pub m2e_ms: Percentiles,
    pub audio_concealed_pct: f64,
    pub audio_fec_pct: f64,
    pub audio_gap_max_ms: u32,
    /// The jitter buffer's own account (played, fec, concealed, stretched, late, skipped, target).
    pub audio: crate::media::jitter::JitterStats,
    /// The speaker ran dry (the audio thread woke too late): times, and silence played.
    pub speaker_underruns: u64,
    pub speaker_underrun_ms: f64,
    /// The microphone's buffer overflowed: times (audio lost; 0 means no block was skipped).
    pub mic_overruns: u64,
    /// Whether the audio thread got real-time priority.
    pub audio_realtime: bool,
    /// Test bursts the other side's microphone captured, and how many were heard here.
    pub m2e_bursts_sent: u64,
    pub m2e_bursts_heard: u64,
    pub bitrate_kbps: f64,
    pub target_kbps: u32,
    pub rtt_ms: f64,
    pub retransmits: u64,
    pub keyframes_sent: u64,
    /// In-call keepalives this side sent, and the most one was behind its schedule.
    pub keepalives_sent: u64,
    pub keepalive_late_max_ms: f64,
    /// Status requests to this device during the call (every 50 ms): the slowest answer.
    pub status_max_ms: f64,
}

#[derive(Debug, Clone, Serialize)]
pub struct CallReport {
    pub seconds: f64,
    pub audio_frame_ms: u32,
    pub loss_pct: f64,
    pub delay_ms: f64,
    pub jitter_ms: f64,
    /// Button press on A to the first frame from B presented on A's display.
    pub setup_ms: f64,
    pub g2g_ms: Percentiles,
    pub m2e_ms: Percentiles,
    /// Audio delay minus video delay (p50s): positive when sound lags the picture.
    pub av_skew_ms: f64,
    pub fps_rx: f64,
    pub frames_decoded: u64,
    pub frames_lost: u64,
    /// Audio frames the decoder had to invent (packet-loss concealment), % of frames played.
    pub audio_concealed_pct: f64,
    /// Audio frames rebuilt from the next packet's in-band FEC, % of frames played.
    pub audio_fec_pct: f64,
    pub audio_gap_max_ms: u32,
    /// Audio packets that came after their time to play (both sides).
    pub audio_late: u64,
    /// Frames of concealment inserted, and frames dropped, to move the delay to its target.
    pub audio_stretched: u64,
    pub audio_compressed: u64,
    /// The higher of the two jitter buffers' target delays at the end.
    pub audio_target_ms: f64,
    pub speaker_underruns: u64,
    /// Bursts sent minus bursts heard, both ways (a burst in flight at the end may count).
    pub m2e_bursts_missed: i64,
    pub bitrate_kbps: f64,
    /// CPU time of the whole process (both devices, all threads) over the call, in % of one core.
    pub cpu_pct: f64,
    /// The same by thread name, both devices together (threads that ended during the call, such
    /// as a decoder's, are not counted): where the CPU goes.
    pub cpu_pct_by_thread: std::collections::BTreeMap<String, f64>,
    /// Resident memory of the whole process (both devices) at the end of the call.
    pub rss_mb: f64,
    pub still_in_call: bool,
    pub flood: Option<FloodSummary>,
    pub snapshots: Vec<String>,
    pub a: Side,
    pub b: Side,
}

fn rss_mb() -> f64 {
    let Ok(s) = std::fs::read_to_string("/proc/self/status") else { return 0.0 };
    s.lines()
        .find(|l| l.starts_with("VmRSS:"))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|kb| kb.parse::<f64>().ok())
        .map_or(0.0, |kb| (kb / 1024.0 * 10.0).round() / 10.0)
}

struct Raw {
    side: Side,
    g2g: Vec<f64>,
    m2e: Vec<f64>,
    played: u64,
    concealed: u64,
    fec: u64,
    first_frame: Option<Instant>,
    bursts_captured: u64,
}

async fn measure(h: &DeviceHandle, secs: f64, frame_ms: u32) -> Raw {
    let status = h.status().await.map(|(s, _)| s);
    let keep = status.as_ref().map(|s| s.call).unwrap_or_default();
    let stats = status.and_then(|s| s.media).unwrap_or_default();
    let Some(sh) = h.media.as_ref() else {
        return Raw {
            side: empty_side(),
            g2g: vec![],
            m2e: vec![],
            played: 0,
            concealed: 0,
            fec: 0,
            first_frame: None,
            bursts_captured: 0,
        };
    };
    let p = sh.probe.lock().map(|p| p.clone()).unwrap_or_default();
    let mut g2g: Vec<f64> = p.g2g_us.iter().map(|&u| f64::from(u) / 1000.0).collect();
    let mut m2e: Vec<f64> = p.m2e_us.iter().map(|&u| u as f64 / 1000.0).collect();
    let j = p.jitter;
    let played = j.played + j.fec + j.concealed;
    let pct = |x: u64| round1(if played > 0 { x as f64 * 100.0 / played as f64 } else { 0.0 });
    let side = Side {
        frames_decoded: p.frames_decoded,
        frames_lost: stats.received.frames_lost,
        decode_errors: p.decode_errors,
        fps_rx: round1(p.frames_decoded as f64 / secs),
        // Sorts the samples in place, as they are kept.
        g2g_ms: percentiles(&mut g2g),
        m2e_ms: percentiles(&mut m2e),
        audio_concealed_pct: pct(j.concealed),
        audio_fec_pct: pct(j.fec),
        audio_gap_max_ms: j.longest_gap * frame_ms,
        audio: j,
        speaker_underruns: p.speaker_underruns.count,
        speaker_underrun_ms: round1(p.speaker_underruns.us as f64 / 1000.0),
        mic_overruns: p.mic_overruns.count,
        audio_realtime: p.audio_realtime,
        m2e_bursts_sent: 0,
        m2e_bursts_heard: p.m2e_us.len() as u64,
        bitrate_kbps: round1(stats.sent.video_bytes as f64 * 8.0 / secs / 1000.0),
        target_kbps: stats.target_kbps,
        rtt_ms: round1(stats.rtt_ms),
        retransmits: stats.sent.retransmits,
        keyframes_sent: stats.sent.keyframes_sent,
        keepalives_sent: keep.keepalives_sent,
        keepalive_late_max_ms: round1(keep.keepalive_late_max_us as f64 / 1000.0),
        status_max_ms: 0.0,
    };
    Raw {
        side,
        g2g,
        m2e,
        played,
        concealed: j.concealed,
        fec: j.fec,
        first_frame: p.first_frame_at,
        bursts_captured: p.bursts_captured,
    }
}

fn empty_side() -> Side {
    let z = percentiles(&mut []);
    Side {
        frames_decoded: 0,
        frames_lost: 0,
        decode_errors: 0,
        fps_rx: 0.0,
        g2g_ms: z,
        m2e_ms: z,
        audio_concealed_pct: 0.0,
        audio_fec_pct: 0.0,
        audio_gap_max_ms: 0,
        audio: Default::default(),
        speaker_underruns: 0,
        speaker_underrun_ms: 0.0,
        mic_overruns: 0,
        audio_realtime: false,
        m2e_bursts_sent: 0,
        m2e_bursts_heard: 0,
        bitrate_kbps: 0.0,
        target_kbps: 0,
        rtt_ms: 0.0,
        retransmits: 0,
        keyframes_sent: 0,
        keepalives_sent: 0,
        keepalive_late_max_ms: 0.0,
        status_max_ms: 0.0,
    }
}

/// Waits `d`, asking both devices for their status every 50 ms; returns the slowest answers.
async fn talk(p: &Pair, d: Duration, slowest: &mut [f64; 2]) {
    let end = Instant::now() + d;
    while Instant::now() < end {
        for (i, h) in [&p.a, &p.b].into_iter().enumerate() {
            let t = Instant::now();
            let _ = h.status().await;
            slowest[i] = slowest[i].max(t.elapsed().as_secs_f64() * 1000.0);
        }
        tokio::time::sleep(Duration::from_millis(50).min(end.saturating_duration_since(Instant::now()))).await;
    }
}

fn round1(x: f64) -> f64 {
    (x * 10.0).round() / 10.0
}

fn say(verbose: bool, line: &str) {
    if verbose {
        println!("{line}");
    }
}

pub async fn call(dir: &Path, o: &CallOptions) -> Result<CallReport, String> {
    let v = o.verbose;
    let opts = super::pair::Options {
        auto_answer: true,
        audio_frame_ms: o.audio_frame_ms,
        audio_phase_us: o.audio_phase_us,
        configured_only: false,
        camera_file: o.camera_file.clone(),
        video_kbps: o.video_kbps,
    };
    let p = Pair::start_via(dir, opts, o.impairment).await?;
    say(v, "== A presses button 1 (calls B); B answers automatically");
    let t0 = Instant::now();
    p.a.command(Command::Press(1)).await?;
    p.a.wait_phase(Phase::InCall, WAIT).await.ok_or("A never got into the call")?;
    p.b.wait_phase(Phase::InCall, WAIT).await.ok_or("B never got into the call")?;
    let connected = t0.elapsed();
    let flood = match o.flood_pps {
        0 => None,
        pps => {
            let id = p.b.status().await.map(|(s, _)| s.id).ok_or("B stopped")?;
            let id = crate::identity::DeviceId::parse(&id).map_err(|e| e.to_string())?;
            Some(super::flood::Flood::start(id, p.b.local_addr, pps).map_err(|e| format!("flood: {e}"))?)
        }
    };
    let mut slowest = [0.0f64; 2];
    let cpu0 = cpu_seconds("/proc/self/stat");
    let threads0 = super::stats::cpu_seconds_by_thread();
    let wall0 = Instant::now();
    say(v, &format!("== in call after {:.1} ms; talking for {} s", connected.as_secs_f64() * 1000.0, o.seconds));
    let snap_at = Duration::from_secs_f64((o.seconds - 0.5).max(0.5));
    talk(&p, snap_at.min(Duration::from_secs_f64(o.seconds)), &mut slowest).await;
    let mut snapshots = Vec::new();
    if let Some(out) = &o.snapshots {
        std::fs::create_dir_all(out).map_err(|e| format!("{}: {e}", out.display()))?;
        for (name, h) in [("A", &p.a), ("B", &p.b)] {
            if let Some(sh) = h.media.clone() {
                let path = out.join(format!("display-{name}.png"));
                let ok = tokio::task::spawn_blocking({
                    let path = path.clone();
                    move || sh.snapshot(&path)
                })
                .await
                .unwrap_or(false);
                if ok {
                    snapshots.push(path.display().to_string());
                }
            }
        }
    }
    let rest = Duration::from_secs_f64(o.seconds).saturating_sub(wall0.elapsed());
    talk(&p, rest, &mut slowest).await;
    let flood = flood.map(|f| f.stop());
    let wall = wall0.elapsed().as_secs_f64();
    let cpu_pct = round1((cpu_seconds("/proc/self/stat") - cpu0) / wall * 100.0);
    let cpu_pct_by_thread = super::stats::cpu_seconds_by_thread()
        .into_iter()
        .map(|(name, s)| {
            let pct = round1((s - threads0.get(&name).copied().unwrap_or(0.0)) / wall * 100.0);
            (name, pct)
        })
        .collect();
    let rss = rss_mb();
    let still_in_call = p.a.phase().0 == Phase::InCall && p.b.phase().0 == Phase::InCall;
    let mut ra = measure(&p.a, wall, o.audio_frame_ms).await;
    let mut rb = measure(&p.b, wall, o.audio_frame_ms).await;
    ra.side.m2e_bursts_sent = rb.bursts_captured;
    rb.side.m2e_bursts_sent = ra.bursts_captured;
    ra.side.status_max_ms = round1(slowest[0]);
    rb.side.status_max_ms = round1(slowest[1]);
    let counters = p.b.status().await.map(|(s, _)| s.counters).unwrap_or_default();
    let flood = flood.map(|flood| FloodSummary {
        flood,
        b_cookie_replies: counters.cookie_replies,
        b_refused_unknown: counters.refused_unknown_peer,
        b_rate_limited: counters.handshake_rate_limited,
        b_dropped_bad_mac1: counters.dropped_bad_mac1,
    });
    say(v, "== A hangs up");
    let _ = p.a.command(Command::Hangup).await;
    p.a.wait_phase(Phase::Idle, WAIT).await;
    p.b.wait_phase(Phase::Idle, WAIT).await;
    if let Some(out) = &o.snapshots {
        // The ready screen after the call, for the record.
        if let Some(sh) = p.a.media.clone() {
            let path = out.join("display-A-after.png");
            let _ = tokio::task::spawn_blocking(move || sh.snapshot(&path)).await;
        }
    }
    p.stop().await;

    let mut g2g: Vec<f64> = ra.g2g.iter().chain(&rb.g2g).copied().collect();
    let mut m2e: Vec<f64> = ra.m2e.iter().chain(&rb.m2e).copied().collect();
    let g = percentiles(&mut g2g);
    let m = percentiles(&mut m2e);
    let played = ra.played + rb.played;
    let imp = o.impairment.unwrap_or_default();
    Ok(CallReport {
        seconds: round1(wall),
        audio_frame_ms: o.audio_frame_ms,
        loss_pct: imp.loss_pct,
        delay_ms: imp.delay.as_secs_f64() * 1000.0,
        jitter_ms: imp.jitter.as_secs_f64() * 1000.0,
        setup_ms: ra.first_frame.map_or(-1.0, |t| round1(t.duration_since(t0).as_secs_f64() * 1000.0)),
        g2g_ms: g,
        m2e_ms: m,
        av_skew_ms: round1(m.p50 - g.p50),
        fps_rx: round1((ra.side.fps_rx + rb.side.fps_rx) / 2.0),
        frames_decoded: ra.side.frames_decoded + rb.side.frames_decoded,
        frames_lost: ra.side.frames_lost + rb.side.frames_lost,
        audio_concealed_pct: round1(if played > 0 {
            (ra.concealed + rb.concealed) as f64 * 100.0 / played as f64
        } else {
            0.0
        }),
        audio_fec_pct: round1(if played > 0 { (ra.fec + rb.fec) as f64 * 100.0 / played as f64 } else { 0.0 }),
        audio_gap_max_ms: ra.side.audio_gap_max_ms.max(rb.side.audio_gap_max_ms),
        audio_late: ra.side.audio.late + rb.side.audio.late,
        audio_stretched: ra.side.audio.stretched + rb.side.audio.stretched,
        audio_compressed: ra.side.audio.compressed + rb.side.audio.compressed,
        audio_target_ms: f64::from(ra.side.audio.target_us.max(rb.side.audio.target_us)) / 1000.0,
        speaker_underruns: ra.side.speaker_underruns + rb.side.speaker_underruns,
        m2e_bursts_missed: [&ra.side, &rb.side]
            .iter()
            .map(|s| s.m2e_bursts_sent as i64 - s.m2e_bursts_heard as i64)
            .sum(),
        bitrate_kbps: round1((ra.side.bitrate_kbps + rb.side.bitrate_kbps) / 2.0),
        cpu_pct,
        cpu_pct_by_thread,
        rss_mb: rss,
        still_in_call,
        flood,
        snapshots,
        a: ra.side,
        b: rb.side,
    })
}

/// `peercom bench media`: one call, one JSON object (or a readable summary).
pub fn run(o: CallOptions, json: bool) -> i32 {
    let rt = match crate::cli::runtime() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("peercom bench media: {e}");
            return 1;
        }
    };
    let dir = super::pair::temp_dir("bench-media");
    let r = rt.block_on(call(&dir, &o));
    let _ = std::fs::remove_dir_all(&dir);
    match r {
        Ok(rep) => {
            if json {
                println!("{}", serde_json::to_string(&rep).unwrap_or_default());
            } else {
                print_summary(&rep);
            }
            0
        }
        Err(e) => {
            eprintln!("peercom bench media: {e}");
            1
        }
    }
}

pub fn print_summary(r: &CallReport) {
    println!("== call summary ({:.1} s, both directions)", r.seconds);
    println!("   set-up (press to first remote frame shown): {:.1} ms", r.setup_ms);
    println!("   glass-to-glass: p50 {:.1} ms, p95 {:.1} ms", r.g2g_ms.p50, r.g2g_ms.p95);
    println!("   mouth-to-ear:   p50 {:.1} ms, p95 {:.1} ms", r.m2e_ms.p50, r.m2e_ms.p95);
    println!(
        "   video: {:.1} fps received, {} frames decoded, {} lost, {:.0} kbit/s",
        r.fps_rx, r.frames_decoded, r.frames_lost, r.bitrate_kbps
    );
    println!(
        "   audio: {:.1}% concealed, {:.1}% rebuilt from FEC, longest gap {} ms",
        r.audio_concealed_pct, r.audio_fec_pct, r.audio_gap_max_ms
    );
    println!("   cost: {:.1}% of one core, {:.1} MB resident (both devices, one process)", r.cpu_pct, r.rss_mb);
    for s in &r.snapshots {
        println!("   display snapshot: {s}");
    }
}
