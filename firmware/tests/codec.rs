//! The codec glue against real content: the sim camera through OpenH264 and back (quality, stamps,
//! keyframes, rate, slicing, ffmpeg interop), Opus round trips with FEC and concealment, hostile
//! input, and no heap allocation per frame in the steady state (a counting allocator watches).
//!
//! Timings (release): `cargo test --release -p peercom --test codec -- --ignored --nocapture`.
use peercom::bench::stats::{cpu_seconds, percentiles};
use peercom::media::codec::opus::{MAX_PACKET, SAMPLE_RATE};
use peercom::media::codec::{
    AudioDecoder, AudioEncoder, CodecError, Complexity, Encoded, VideoDecoder, VideoEncoder, VideoEncoderConfig,
};
use peercom::util::rng::Rng;
use peercom_board::camera::{Camera, pack_stamp};
use peercom_board::frame::I420Frame;
use peercom_board::sim::{SimCamera, SimMic};
use peercom_board::stamp;
use std::process::Command;
use std::time::Instant;

#[path = "common/counting_alloc.rs"]
mod counting_alloc;
use counting_alloc::allocs;

#[global_allocator]
static GLOBAL: counting_alloc::Counting = counting_alloc::Counting;

const FRAME_US: u64 = 33_333;
const START_US: u64 = 5_000_000;
/// Room for any access unit at these settings (an IDR at 640x480 is ~15 kB).
const AU_BUF: usize = 256 * 1024;

fn capture_time(i: usize) -> u64 {
    START_US + i as u64 * FRAME_US
}

fn psnr(a: &[u8], b: &[u8]) -> f64 {
    assert_eq!(a.len(), b.len());
    let se: u64 = a.iter().zip(b).map(|(&x, &y)| (i64::from(x) - i64::from(y)).unsigned_abs().pow(2)).sum();
    let mse = se as f64 / a.len() as f64;
    if mse == 0.0 { 100.0 } else { 10.0 * (255.0f64 * 255.0 / mse).log10() }
}

/// Splits an Annex-B stream at its start codes (3 or 4 bytes) into NAL units without them.
fn nal_units(stream: &[u8]) -> Vec<&[u8]> {
    let mut starts = vec![];
    let mut i = 0;
    while i + 3 <= stream.len() {
        if stream[i..i + 3] == [0, 0, 1] {
            starts.push(i + 3);
            i += 3;
        } else {
            i += 1;
        }
    }
    let mut units = vec![];
    for (k, &s) in starts.iter().enumerate() {
        let mut end = starts.get(k + 1).map_or(stream.len(), |&n| n - 3);
        // The zero of a 4-byte start code belongs to the next start code, not to this unit.
        if k + 1 < starts.len() && end > s && stream[end - 1] == 0 {
            end -= 1;
        }
        units.push(&stream[s..end]);
    }
    units
}

fn nal_type(nal: &[u8]) -> u8 {
    nal[0] & 0x1f
}

/// One encoded frame of a run and what came back out of the decoder.
struct Unit {
    index: usize,
    info: Encoded,
    bytes: Vec<u8>,
    psnr: [f64; 3],
    stamp_ok: bool,
}

/// Captures `frames` sim-camera frames, encodes, decodes; `before(i, enc)` runs before frame i.
fn run(cfg: &VideoEncoderConfig, frames: usize, mut before: impl FnMut(usize, &mut VideoEncoder)) -> Vec<Unit> {
    let mut cam = SimCamera::new(cfg.width, cfg.height, cfg.fps);
    let mut enc = VideoEncoder::new(cfg).unwrap();
    let mut dec = VideoDecoder::new().unwrap();
    let mut src = I420Frame::new(cfg.width, cfg.height);
    let mut out = I420Frame::new(cfg.width, cfg.height);
    let mut buf = vec![0u8; AU_BUF];
    let mut units = vec![];
    for i in 0..frames {
        before(i, &mut enc);
        cam.capture(capture_time(i), &mut src).unwrap();
        let info = enc.encode(&src, &mut buf).unwrap();
        let bytes = buf[..info.len].to_vec();
        if info.skipped() {
            units.push(Unit { index: i, info, bytes, psnr: [0.0; 3], stamp_ok: false });
            continue;
        }
        assert!(dec.decode(&bytes, &mut out).unwrap(), "frame {i} decoded to a picture");
        assert_eq!((out.width, out.height), (cfg.width, cfg.height));
        let psnr = [psnr(&src.y, &out.y), psnr(&src.u, &out.u), psnr(&src.v, &out.v)];
        let stamp_ok = stamp::read(&out.y, out.width, out.height) == Some(pack_stamp(src.seq, src.captured_us));
        units.push(Unit { index: i, info, bytes, psnr, stamp_ok });
    }
    units
}

fn coded(units: &[Unit]) -> impl Iterator<Item = &Unit> {
    units.iter().filter(|u| !u.info.skipped())
}

fn rate_kbps(units: &[Unit], fps: u32) -> f64 {
    let bytes: usize = units.iter().map(|u| u.info.len).sum();
    bytes as f64 * 8.0 * f64::from(fps) / units.len() as f64 / 1000.0
}

fn bytes_in(units: &[Unit], frames: std::ops::Range<usize>) -> f64 {
    units[frames].iter().map(|u| u.info.len).sum::<usize>() as f64
}

#[test]
fn quality_at_the_default_bitrate() {
    let cfg = VideoEncoderConfig::default();
    assert_eq!((cfg.width, cfg.height, cfg.fps, cfg.bitrate_kbps), (640, 480, 30, 1000));
    let units = run(&cfg, 150, |_, _| {});
    let n = coded(&units).count();
    assert!(n >= 145, "the rate control skipped {} of 150 frames at 1 Mbit/s", 150 - n);
    let mean = |p: usize| coded(&units).map(|u| u.psnr[p]).sum::<f64>() / n as f64;
    let (y, u, v) = (mean(0), mean(1), mean(2));
    println!("mean PSNR over {n} frames: Y {y:.2} dB, U {u:.2} dB, V {v:.2} dB");
    assert!(y >= 30.0 && u >= 30.0 && v >= 30.0, "PSNR Y {y:.2} U {u:.2} V {v:.2} dB");
    let worst = coded(&units).map(|u| u.psnr[0]).fold(f64::MAX, f64::min);
    assert!(worst >= 25.0, "worst frame Y PSNR {worst:.2} dB");
    let rate = rate_kbps(&units, cfg.fps);
    assert!((800.0..=1150.0).contains(&rate), "{rate:.0} kbit/s for a 1000 kbit/s target");
}

#[test]
fn stamp_survives_every_decoded_frame() {
    for kbps in [1000, 150] {
        let cfg = VideoEncoderConfig { bitrate_kbps: kbps, ..Default::default() };
        let units = run(&cfg, 120, |_, _| {});
        let bad: Vec<usize> = coded(&units).filter(|u| !u.stamp_ok).map(|u| u.index).collect();
        assert!(bad.is_empty(), "stamp unreadable at {kbps} kbit/s in frames {bad:?}");
        assert!(coded(&units).count() >= 10, "{kbps} kbit/s: too few frames coded to judge");
    }
}

#[test]
fn keyframes_only_at_start_and_on_request() {
    let cfg = VideoEncoderConfig::default();
    let forced = [50, 51, 97];
    let units = run(&cfg, 120, |i, enc| {
        if forced.contains(&i) {
            enc.force_keyframe();
        }
    });
    let keys: Vec<usize> = units.iter().filter(|u| u.info.keyframe).map(|u| u.index).collect();
    assert_eq!(keys, [0, 50, 51, 97], "IDRs exactly at the start and where asked");
    for u in units.iter().filter(|u| !u.info.skipped()) {
        let types: Vec<u8> = nal_units(&u.bytes).iter().map(|n| nal_type(n)).collect();
        if u.info.keyframe {
            assert!(types.starts_with(&[7, 8]) && types[2..].iter().all(|&t| t == 5), "IDR {}: {types:?}", u.index);
        } else {
            assert!(types.iter().all(|&t| t == 1), "P frame {}: {types:?}", u.index);
        }
    }
    // A requested IDR is never dropped by the rate control, even when it is skipping many frames.
    let low = VideoEncoderConfig { bitrate_kbps: 100, ..Default::default() };
    let units = run(&low, 90, |i, enc| {
        if i == 60 {
            enc.force_keyframe();
        }
    });
    assert!(units.iter().filter(|u| u.info.skipped()).count() > 10, "100 kbit/s should make the encoder skip");
    assert!(units[60].info.keyframe && !units[60].info.skipped());
}

#[test]
fn bitrate_changes_at_run_time() {
    let cfg = VideoEncoderConfig::default();
    let units = run(&cfg, 300, |i, enc| match i {
        90 => enc.set_bitrate(300).unwrap(),
        180 => enc.set_bitrate(1000).unwrap(),
        _ => {}
    });
    // Two seconds each: before (after the first IDR has settled), after going down, after going up.
    let (high, low, again) = (bytes_in(&units, 30..90), bytes_in(&units, 90..150), bytes_in(&units, 180..240));
    println!("bytes over 2 s: {high} at 1000, {low} at 300, {again} back at 1000 kbit/s");
    assert!(low < 0.6 * high, "300 kbit/s gave {low} bytes vs {high} at 1000");
    assert!(again > 2.0 * low, "raising the rate again gave {again} bytes vs {low}");
    // Above the start value too (OpenH264 keeps a separate maximum that has to move first). The sim
    // picture saturates near 2 Mbit/s (60 dB), so the target stays below that.
    let units = run(&cfg, 150, |i, enc| {
        if i == 60 {
            enc.set_bitrate(1800).unwrap();
        }
    });
    let (before, after) = (bytes_in(&units, 30..60) * 2.0, bytes_in(&units, 90..150));
    println!("bytes over 2 s: {before} at 1000, {after} after raising to 1800 kbit/s");
    assert!(after > 1.3 * before, "1800 kbit/s gave {after} bytes in 2 s vs {before} at 1000");
    let mut enc = VideoEncoder::new(&cfg).unwrap();
    assert!(enc.set_bitrate(0).is_err());
    // Before the first frame, a change rebuilds the encoder with the new target.
    enc.set_bitrate(200).unwrap();
    assert_eq!(enc.config().bitrate_kbps, 200);
}

#[test]
fn nal_units_fit_one_packet() {
    for (kbps, max_nal_len) in [(1000, 1100), (3000, 1100), (1000, 500)] {
        let cfg = VideoEncoderConfig { bitrate_kbps: kbps, max_nal_len, ..Default::default() };
        let units = run(&cfg, 60, |i, enc| {
            if i % 20 == 10 {
                enc.force_keyframe();
            }
        });
        let mut count = 0;
        for u in coded(&units) {
            // Every unit is start code + NAL, and nothing else.
            assert_eq!(u.bytes[..4], [0, 0, 0, 1]);
            for nal in nal_units(&u.bytes) {
                assert!(nal.len() <= max_nal_len, "{kbps} kbit/s: NAL of {} bytes > {max_nal_len}", nal.len());
                count += 1;
            }
        }
        assert!(count > coded(&units).count(), "{kbps} kbit/s: pictures were cut into slices");
    }
}

fn ffmpeg() -> &'static str {
    let ok = |p: &str| Command::new(p).arg("-version").output().is_ok_and(|o| o.status.success());
    if ok("ffmpeg") {
        "ffmpeg"
    } else if ok("/usr/bin/ffmpeg") {
        "/usr/bin/ffmpeg"
    } else {
        panic!("ffmpeg is not installed: `make deps` (or `apt-get install ffmpeg`) installs it; this test needs it");
    }
}

#[test]
fn ffmpeg_decodes_our_stream_bit_exactly() {
    let cfg = VideoEncoderConfig::default();
    let units = run(&cfg, 120, |i, enc| {
        if i == 60 {
            enc.force_keyframe();
        }
    });
    let stream: Vec<u8> = units.iter().flat_map(|u| u.bytes.iter().copied()).collect();
    let path = std::env::temp_dir().join(format!("peercom-codec-{}.h264", std::process::id()));
    std::fs::write(&path, &stream).unwrap();
    let ff = ffmpeg();
    let null = Command::new(ff).args(["-v", "error", "-i"]).arg(&path).args(["-f", "null", "-"]).output().unwrap();
    // H.264 decoding is exact: ffmpeg must produce the very pictures our decoder produced.
    let raw = Command::new(ff)
        .args(["-v", "error", "-i"])
        .arg(&path)
        .args(["-f", "rawvideo", "-pix_fmt", "yuv420p", "pipe:1"])
        .output()
        .unwrap();
    let _ = std::fs::remove_file(&path);
    assert!(null.status.success() && null.stderr.is_empty(), "ffmpeg: {}", String::from_utf8_lossy(&null.stderr));
    assert!(raw.status.success() && raw.stderr.is_empty(), "ffmpeg: {}", String::from_utf8_lossy(&raw.stderr));
    let mut dec = VideoDecoder::new().unwrap();
    let mut pic = I420Frame::new(2, 2);
    let size = cfg.width * cfg.height * 3 / 2;
    let mut frames = raw.stdout.chunks_exact(size);
    let mut n = 0;
    for u in coded(&units) {
        assert!(dec.decode(&u.bytes, &mut pic).unwrap());
        let theirs = frames.next().unwrap_or_else(|| panic!("ffmpeg produced only {n} frames"));
        let ours = [&pic.y[..], &pic.u[..], &pic.v[..]].concat();
        assert!(ours == theirs, "frame {} differs between OpenH264 and ffmpeg", u.index);
        n += 1;
    }
    assert!(n >= 100 && frames.next().is_none() && raw.stdout.len() == n * size, "{n} frames vs ffmpeg's output");
}

#[test]
fn encoder_survives_a_too_small_buffer() {
    let cfg = VideoEncoderConfig::default();
    let mut cam = SimCamera::new(cfg.width, cfg.height, cfg.fps);
    let mut enc = VideoEncoder::new(&cfg).unwrap();
    let mut dec = VideoDecoder::new().unwrap();
    let mut src = I420Frame::new(cfg.width, cfg.height);
    let mut out = I420Frame::new(cfg.width, cfg.height);
    let mut buf = vec![0u8; AU_BUF];
    for i in 0..10 {
        cam.capture(capture_time(i), &mut src).unwrap();
        let e = enc.encode(&src, &mut buf).unwrap();
        assert!(dec.decode(&buf[..e.len], &mut out).unwrap());
    }
    cam.capture(capture_time(10), &mut src).unwrap();
    match enc.encode(&src, &mut buf[..100]) {
        Err(CodecError::BufferTooSmall { needed, available: 100 }) => assert!(needed > 100),
        other => panic!("expected BufferTooSmall, got {other:?}"),
    }
    // The receiver never saw that frame, so the next one is an IDR and decodes cleanly.
    cam.capture(capture_time(11), &mut src).unwrap();
    let e = enc.encode(&src, &mut buf).unwrap();
    assert!(e.keyframe);
    assert!(dec.decode(&buf[..e.len], &mut out).unwrap());
    assert!(psnr(&src.y, &out.y) > 30.0);
    // Wrong picture sizes are refused, not encoded or panicked on.
    let small = I420Frame::new(320, 240);
    assert!(matches!(enc.encode(&small, &mut buf), Err(CodecError::FrameSize { .. })));
    let mut short = src.clone();
    short.u.pop();
    assert!(matches!(enc.encode(&short, &mut buf), Err(CodecError::FrameSize { .. })));
    for bad in [
        VideoEncoderConfig { width: 641, ..cfg },
        VideoEncoderConfig { height: 0, ..cfg },
        VideoEncoderConfig { width: 4000, ..cfg },
        VideoEncoderConfig { max_nal_len: 300, ..cfg },
        VideoEncoderConfig { fps: 0, ..cfg },
        VideoEncoderConfig { bitrate_kbps: 0, ..cfg },
    ] {
        assert!(matches!(VideoEncoder::new(&bad), Err(CodecError::Config(_))), "{bad:?} accepted");
    }
}

#[test]
fn video_decoder_takes_hostile_input() {
    let cfg = VideoEncoderConfig::default();
    let units = run(&cfg, 30, |_, _| {});
    let mut rng = Rng::seeded(0x9e37_79b9_7f4a_7c15);
    let mut dec = VideoDecoder::new().unwrap();
    let mut out = I420Frame::new(cfg.width, cfg.height);
    assert_eq!(dec.decode(&[], &mut out), Err(CodecError::Malformed));
    let mut outcomes = [0usize; 3];
    for round in 0..600 {
        let mut input: Vec<u8> = match round % 4 {
            // Pure noise, with or without a start code in front.
            0 => (0..rng.below(3000) + 1).map(|_| rng.next_u64() as u8).collect(),
            1 => [0, 0, 0, 1].into_iter().chain((0..rng.below(3000)).map(|_| rng.next_u64() as u8)).collect(),
            // Real units cut short, or with bytes flipped.
            2 => {
                let u = &units[rng.below(units.len())].bytes;
                u[..rng.below(u.len()) + 1].to_vec()
            }
            _ => units[rng.below(units.len())].bytes.clone(),
        };
        if round % 4 == 3 {
            for _ in 0..rng.below(8) + 1 {
                let at = rng.below(input.len());
                input[at] ^= 1 << rng.below(8);
            }
        }
        match dec.decode(&input, &mut out) {
            Ok(true) => outcomes[0] += 1,
            Ok(false) => outcomes[1] += 1,
            Err(_) => outcomes[2] += 1,
        }
    }
    println!("hostile input: {} pictures, {} nothing, {} errors", outcomes[0], outcomes[1], outcomes[2]);
    assert!(outcomes[2] > 0, "garbage produced no errors at all");
    // The decoder is still usable: a fresh stream from its IDR decodes cleanly.
    for u in &units {
        assert!(dec.decode(&u.bytes, &mut out).unwrap(), "frame {} after the garbage", u.index);
    }
}

#[test]
fn lost_frame_means_no_picture_until_the_next_keyframe() {
    let cfg = VideoEncoderConfig::default();
    let units = run(&cfg, 40, |i, enc| {
        if i == 30 {
            enc.force_keyframe();
        }
    });
    let mut dec = VideoDecoder::new().unwrap();
    let mut out = I420Frame::new(cfg.width, cfg.height);
    for u in &units[..10] {
        assert!(dec.decode(&u.bytes, &mut out).unwrap());
    }
    // Frame 10 is lost. With error concealment off, nothing after it is shown as a picture...
    let mut errors = 0;
    for u in &units[11..30] {
        match dec.decode(&u.bytes, &mut out) {
            Ok(true) => panic!("frame {} shown after a loss", u.index),
            Ok(false) => {}
            Err(_) => errors += 1,
        }
    }
    println!("after a lost frame: {errors} of 19 frames were errors, the rest gave no picture");
    // ...until the IDR the transport asked for.
    for u in &units[30..] {
        assert!(dec.decode(&u.bytes, &mut out).unwrap(), "frame {} after the IDR", u.index);
    }
}

#[test]
fn codecs_can_move_to_their_threads() {
    fn send<T: Send>() {}
    send::<VideoEncoder>();
    send::<VideoDecoder>();
    send::<AudioEncoder>();
    send::<AudioDecoder>();
}

#[test]
fn decoder_follows_a_size_change() {
    let mut dec = VideoDecoder::new().unwrap();
    let mut out = I420Frame::new(640, 480);
    for (w, h) in [(320, 240), (640, 480)] {
        let cfg = VideoEncoderConfig { width: w, height: h, ..Default::default() };
        let mut cam = SimCamera::new(w, h, 30);
        let mut enc = VideoEncoder::new(&cfg).unwrap();
        let mut src = I420Frame::new(w, h);
        let mut buf = vec![0u8; AU_BUF];
        for i in 0..5 {
            cam.capture(capture_time(i), &mut src).unwrap();
            let e = enc.encode(&src, &mut buf).unwrap();
            assert!(dec.decode(&buf[..e.len], &mut out).unwrap());
            assert_eq!((out.width, out.height, out.y.len(), out.u.len()), (w, h, w * h, w * h / 4));
            assert!(psnr(&src.y, &out.y) > 30.0);
        }
    }
}

/// Encodes and decodes `samples` through Opus; returns the decoded signal (same length).
fn opus_round_trip(frame_ms: u32, samples: &[i16]) -> Vec<i16> {
    let mut enc = AudioEncoder::new(frame_ms, 32, 5).unwrap();
    let mut dec = AudioDecoder::new(frame_ms).unwrap();
    let n = enc.frame_len();
    assert_eq!(n, (SAMPLE_RATE / 1000 * frame_ms) as usize);
    let mut pkt = [0u8; MAX_PACKET];
    let mut pcm = vec![0i16; n];
    let mut decoded = vec![];
    for block in samples.chunks_exact(n) {
        let len = enc.encode(block, &mut pkt).unwrap();
        assert!(len > 0 && len <= MAX_PACKET);
        assert_eq!(dec.decode(&pkt[..len], &mut pcm).unwrap(), n);
        decoded.extend_from_slice(&pcm);
    }
    decoded
}

fn energy(x: &[i16]) -> f64 {
    x.iter().map(|&s| f64::from(s).powi(2)).sum()
}

/// Best normalised correlation of `b` against `a` over lags 0..max_lag (codec delay).
fn correlation(a: &[i16], b: &[i16], max_lag: usize) -> f64 {
    (0..max_lag)
        .map(|lag| {
            let n = a.len().min(b.len() - lag);
            let (a, b) = (&a[..n], &b[lag..lag + n]);
            let dot: f64 = a.iter().zip(b).map(|(&x, &y)| f64::from(x) * f64::from(y)).sum();
            dot / (energy(a) * energy(b)).sqrt().max(1.0)
        })
        .fold(f64::MIN, f64::max)
}

fn tone_at(hz: f64, samples: usize) -> Vec<i16> {
    (0..samples)
        .map(|i| (10_000.0 * (2.0 * std::f64::consts::PI * hz * i as f64 / f64::from(SAMPLE_RATE)).sin()) as i16)
        .collect()
}

fn tone(samples: usize) -> Vec<i16> {
    (0..samples)
        .map(|i| {
            let t = i as f64 / f64::from(SAMPLE_RATE);
            (8000.0 * (2.0 * std::f64::consts::PI * 440.0 * t).sin()
                + 4000.0 * (2.0 * std::f64::consts::PI * 1250.0 * t).sin()) as i16
        })
        .collect()
}

#[test]
fn opus_round_trips_a_loud_signal() {
    let src = tone(SAMPLE_RATE as usize);
    for frame_ms in [20, 10] {
        let out = opus_round_trip(frame_ms, &src);
        assert_eq!(out.len(), src.len());
        // Skip the first 100 ms while the encoder settles.
        let (a, b) = (&src[4800..], &out[4800..]);
        let ratio = energy(b) / energy(a);
        let corr = correlation(&a[..a.len() - 1000], b, 1000);
        println!("{frame_ms} ms frames: energy ratio {ratio:.3}, correlation {corr:.3}");
        assert!((0.5..=2.0).contains(&ratio), "{frame_ms} ms: energy ratio {ratio:.3}");
        assert!(corr > 0.9, "{frame_ms} ms: correlation {corr:.3}");
    }
    // The sim microphone's bursts (what the latency measurement listens for) come through loud.
    let mic: Vec<i16> =
        (0..SAMPLE_RATE as u64).map(|i| SimMic::sample_at(i * 1_000_000 / u64::from(SAMPLE_RATE))).collect();
    let out = opus_round_trip(20, &mic);
    let burst = |x: &[i16], from_ms: usize| x[from_ms * 48..(from_ms + 40) * 48].iter().map(|s| s.unsigned_abs()).max();
    let (src_peak, out_peak) = (burst(&mic, 500).unwrap_or(0), burst(&out, 500).unwrap_or(0));
    assert!(out_peak > src_peak / 2, "burst peak {out_peak} after coding, {src_peak} before");
    let quiet = out[200 * 48..450 * 48].iter().map(|s| s.unsigned_abs()).max().unwrap_or(0);
    assert!(quiet < 2000, "silence between bursts decoded with peaks of {quiet}");
}

/// Normalised correlation at lag 0.
fn similarity(a: &[i16], b: &[i16]) -> f64 {
    let dot: f64 = a.iter().zip(b).map(|(&x, &y)| f64::from(x) * f64::from(y)).sum();
    dot / (energy(a) * energy(b)).sqrt().max(1.0)
}

#[test]
fn opus_recovers_a_lost_packet_from_fec_and_conceals() {
    for frame_ms in [20, 10] {
        let mut enc = AudioEncoder::new(frame_ms, 32, 5).unwrap();
        enc.set_expected_loss(20);
        let n = enc.frame_len();
        // The pitch changes exactly where packet 30 starts: concealment can only continue the old one,
        // FEC carries the new one.
        let (a, b) = (tone(n * 30), tone_at(660.0, n * 20));
        let src: Vec<i16> = a.into_iter().chain(b).collect();
        let mut packets = vec![];
        let mut pkt = [0u8; MAX_PACKET];
        for block in src.chunks_exact(n) {
            let len = enc.encode(block, &mut pkt).unwrap();
            packets.push(pkt[..len].to_vec());
        }
        // Reference: every packet arrives. Lossy: packet 30 is missing.
        let mut full = AudioDecoder::new(frame_ms).unwrap();
        let mut lossy = AudioDecoder::new(frame_ms).unwrap();
        let mut concealing = AudioDecoder::new(frame_ms).unwrap();
        let (mut reference, mut fec, mut plc) = (vec![0i16; n], vec![0i16; n], vec![0i16; n]);
        for p in &packets[..30] {
            assert_eq!(full.decode(p, &mut reference).unwrap(), n);
            assert_eq!(lossy.decode(p, &mut fec).unwrap(), n);
            assert_eq!(concealing.decode(p, &mut plc).unwrap(), n);
        }
        assert_eq!(full.decode(&packets[30], &mut reference).unwrap(), n);
        assert_eq!(lossy.decode_fec(&packets[31], &mut fec).unwrap(), n);
        assert_eq!(concealing.conceal(&mut plc).unwrap(), n);
        let (by_fec, by_plc) = (similarity(&fec, &reference), similarity(&plc, &reference));
        println!("{frame_ms} ms: lost frame vs received: FEC similarity {by_fec:.3}, concealment {by_plc:.3}");
        assert!(by_fec > 0.5 && by_fec > by_plc + 0.2, "{frame_ms} ms: FEC {by_fec:.3}, PLC {by_plc:.3}");
        assert!(energy(&plc) > 0.0, "concealment right after sound is not silence");
        // Afterwards both carry on normally; two losses in a row: conceal, then FEC.
        assert_eq!(lossy.decode(&packets[31], &mut fec).unwrap(), n);
        assert_eq!(lossy.conceal(&mut fec).unwrap(), n);
        assert_eq!(lossy.decode_fec(&packets[33], &mut fec).unwrap(), n);
        assert_eq!(lossy.decode(&packets[33], &mut fec).unwrap(), n);
    }
}

#[test]
fn opus_refuses_bad_input() {
    assert!(matches!(AudioEncoder::new(15, 32, 5), Err(CodecError::Config(_))));
    assert!(matches!(AudioEncoder::new(20, 32, 11), Err(CodecError::Config(_))));
    assert!(matches!(AudioDecoder::new(30), Err(CodecError::Config(_))));
    let mut enc = AudioEncoder::new(20, 32, 5).unwrap();
    let mut dec = AudioDecoder::new(20).unwrap();
    let pcm = tone(960);
    let mut pkt = [0u8; MAX_PACKET];
    assert_eq!(enc.encode(&pcm[..480], &mut pkt), Err(CodecError::PcmLen { expected: 960, got: 480 }));
    assert!(matches!(enc.encode(&pcm, &mut pkt[..0]), Err(CodecError::BufferTooSmall { .. })));
    let len = enc.encode(&pcm, &mut pkt).unwrap();
    let mut short = [0i16; 100];
    assert!(matches!(dec.decode(&pkt[..len], &mut short), Err(CodecError::BufferTooSmall { needed: 960, .. })));
    assert!(matches!(dec.conceal(&mut short), Err(CodecError::BufferTooSmall { .. })));
    let mut out = [0i16; 960];
    assert_eq!(dec.decode(&[], &mut out), Err(CodecError::Malformed));
    assert_eq!(dec.decode_fec(&[], &mut out), Err(CodecError::Malformed));
    // Noise as packets: errors or some audio, never a panic; the decoder keeps working.
    let mut rng = Rng::seeded(42);
    let mut errors = 0;
    for _ in 0..2000 {
        let junk: Vec<u8> = (0..rng.below(400) + 1).map(|_| rng.next_u64() as u8).collect();
        match dec.decode(&junk, &mut out) {
            Ok(n) => assert!(n <= out.len()),
            Err(_) => errors += 1,
        }
        let _ = dec.decode_fec(&junk, &mut out);
    }
    assert!(errors > 0, "noise never rejected");
    assert_eq!(dec.decode(&pkt[..len], &mut out).unwrap(), 960);
    // Settings are clamped, not rejected.
    enc.set_bitrate(0);
    enc.set_bitrate(100_000);
    enc.set_expected_loss(255);
    assert!(enc.encode(&pcm, &mut pkt).is_ok());
}

#[test]
fn steady_state_allocates_nothing() {
    let cfg = VideoEncoderConfig::default();
    let mut cam = SimCamera::new(cfg.width, cfg.height, cfg.fps);
    let mut venc = VideoEncoder::new(&cfg).unwrap();
    let mut vdec = VideoDecoder::new().unwrap();
    let mut src = I420Frame::new(cfg.width, cfg.height);
    let mut pic = I420Frame::new(cfg.width, cfg.height);
    let mut au = vec![0u8; AU_BUF];
    let mut aenc = AudioEncoder::new(20, 32, 5).unwrap();
    let mut adec = AudioDecoder::new(20).unwrap();
    let pcm_in = tone(960);
    let mut pcm_out = vec![0i16; 960];
    let mut pkt = [0u8; MAX_PACKET];
    let mut step = |i: usize| {
        cam.capture(capture_time(i), &mut src).unwrap();
        if i == 40 {
            venc.force_keyframe();
        }
        if i == 50 {
            venc.set_bitrate(500).unwrap();
        }
        let e = venc.encode(&src, &mut au).unwrap();
        if !e.skipped() {
            assert!(vdec.decode(&au[..e.len], &mut pic).unwrap());
        }
        let len = aenc.encode(&pcm_in, &mut pkt).unwrap();
        adec.decode(&pkt[..len], &mut pcm_out).unwrap();
        adec.decode_fec(&pkt[..len], &mut pcm_out).unwrap();
        adec.conceal(&mut pcm_out).unwrap();
    };
    for i in 0..10 {
        step(i);
    }
    let before = allocs();
    for i in 10..70 {
        step(i);
    }
    assert_eq!(allocs() - before, 0, "heap allocations in 60 steady-state frames");
}

/// CPU time this thread has used, in ms. Wall time on a shared machine is inflated by other
/// processes, CPU time is not.
fn thread_cpu_ms() -> f64 {
    cpu_seconds("/proc/thread-self/stat") * 1000.0
}

/// (p50, p95, max).
fn pcts(v: &mut [f64]) -> (f64, f64, f64) {
    let p = percentiles(v);
    (p.p50, p.p95, p.max)
}

#[test]
#[ignore = "timing report; run in release with --nocapture"]
fn timings() {
    let frames = 600;
    for complexity in [Complexity::Low, Complexity::Medium, Complexity::High] {
        let cfg = VideoEncoderConfig { complexity, ..Default::default() };
        let mut cam = SimCamera::new(cfg.width, cfg.height, cfg.fps);
        let mut enc = VideoEncoder::new(&cfg).unwrap();
        let mut src = I420Frame::new(cfg.width, cfg.height);
        let mut buf = vec![0u8; AU_BUF];
        let (mut cap, mut et, mut aus) = (vec![], vec![], vec![]);
        let cpu0 = thread_cpu_ms();
        for i in 0..frames {
            let t = Instant::now();
            cam.capture(capture_time(i), &mut src).unwrap();
            cap.push(t.elapsed().as_secs_f64() * 1e3);
            let t = Instant::now();
            let e = enc.encode(&src, &mut buf).unwrap();
            et.push(t.elapsed().as_secs_f64() * 1e3);
            aus.push(buf[..e.len].to_vec());
        }
        let enc_cpu = (thread_cpu_ms() - cpu0) / frames as f64;
        let mut dec = VideoDecoder::new().unwrap();
        let mut pic = I420Frame::new(cfg.width, cfg.height);
        let mut dt = vec![];
        let cpu0 = thread_cpu_ms();
        for au in aus.iter().filter(|a| !a.is_empty()) {
            let t = Instant::now();
            dec.decode(au, &mut pic).unwrap();
            dt.push(t.elapsed().as_secs_f64() * 1e3);
        }
        let dec_cpu = (thread_cpu_ms() - cpu0) / dt.len() as f64;
        let (e50, e95, emax) = pcts(&mut et);
        let (d50, d95, dmax) = pcts(&mut dt);
        let (c50, c95, _) = pcts(&mut cap);
        println!(
            "{complexity:?}: encode p50 {e50:.2} p95 {e95:.2} max {emax:.1} ms (CPU {enc_cpu:.2} ms/frame incl. capture); \
             decode p50 {d50:.2} p95 {d95:.2} max {dmax:.1} ms (CPU {dec_cpu:.2}); capture p50 {c50:.3} p95 {c95:.3} ms"
        );
    }
    // Opus, 20 ms frames at 32 kbit/s, complexity 5.
    let mut enc = AudioEncoder::new(20, 32, 5).unwrap();
    let mut dec = AudioDecoder::new(20).unwrap();
    let src = tone(48_000 * 10);
    let (mut et, mut dt) = (vec![], vec![]);
    let mut pkt = [0u8; MAX_PACKET];
    let mut pcm = vec![0i16; 960];
    for block in src.chunks_exact(960) {
        let t = Instant::now();
        let len = enc.encode(block, &mut pkt).unwrap();
        et.push(t.elapsed().as_secs_f64() * 1e3);
        let t = Instant::now();
        dec.decode(&pkt[..len], &mut pcm).unwrap();
        dt.push(t.elapsed().as_secs_f64() * 1e3);
    }
    let (e50, e95, _) = pcts(&mut et);
    let (d50, d95, _) = pcts(&mut dt);
    println!("Opus 20 ms: encode p50 {e50:.3} p95 {e95:.3} ms, decode p50 {d50:.3} p95 {d95:.3} ms");
}

#[test]
#[ignore = "exploration report; run in release with --nocapture"]
fn bitrate_sweep() {
    for kbps in [5000, 2500, 1000, 600, 300, 150, 80, 40, 20, 10] {
        let cfg = VideoEncoderConfig { bitrate_kbps: kbps, ..Default::default() };
        let units = run(&cfg, 300, |_, _| {});
        let n = coded(&units).count();
        let ok = coded(&units).filter(|u| u.stamp_ok).count();
        let y = coded(&units).map(|u| u.psnr[0]).sum::<f64>() / n.max(1) as f64;
        println!(
            "{kbps:5} kbit/s: {:.0} kbit/s out, {n}/300 frames coded, Y PSNR {y:.1} dB, stamps {ok}/{n}",
            rate_kbps(&units, cfg.fps)
        );
    }
}
