//! Fixed memory on the media path: after warm-up, a two-way call moving real H.264 and Opus
//! (camera → encode → packetize → encrypt → UDP-less shuttle → decrypt → reassemble → decode, and
//! mic → encode → … → jitter buffer → decode) makes no Rust heap allocation per frame. A counting
//! global allocator (this thread only) proves it; the codecs' own C allocations are not counted.
use peercom::call::Phase;
use peercom::config::CallSettings;
use peercom::device::{Command, Device, Input};
use peercom::media::assembler::MAX_FRAME;
use peercom::media::codec::h264::{VideoDecoder, VideoEncoder, VideoEncoderConfig};
use peercom::media::codec::opus::{AudioDecoder, AudioEncoder};
use peercom::media::jitter::{JitterBuffer, JitterConfig, Playout};
use peercom::session::EndpointConfig;
use peercom::sim::{key, sim_addr, sim_config};
use peercom::util::rng::Rng;
use peercom::wire::MAX_DATAGRAM;
use peercom_board::audio::{AudioIn, block_len};
use peercom_board::camera::Camera;
use peercom_board::frame::I420Frame;
use peercom_board::sim::{SimCamera, SimMic};
use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use std::time::{Duration, Instant};

struct Counting;

thread_local! {
    static ALLOCS: Cell<u64> = const { Cell::new(0) };
}

unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, l: Layout) -> *mut u8 {
        let _ = ALLOCS.try_with(|c| c.set(c.get() + 1));
        unsafe { System.alloc(l) }
    }
    unsafe fn dealloc(&self, p: *mut u8, l: Layout) {
        unsafe { System.dealloc(p, l) }
    }
    unsafe fn realloc(&self, p: *mut u8, l: Layout, n: usize) -> *mut u8 {
        let _ = ALLOCS.try_with(|c| c.set(c.get() + 1));
        unsafe { System.realloc(p, l, n) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

fn allocs() -> u64 {
    ALLOCS.with(|c| c.get())
}

fn shuttle(now: Instant, devs: &mut [Device; 2], buf: &mut [u8; MAX_DATAGRAM]) {
    loop {
        let mut any = false;
        for i in 0..2 {
            while let Some((_, n)) = devs[i].poll_transmit(buf) {
                let from = sim_addr(i as u8 + 1);
                devs[1 - i].handle_input(now, Input::Datagram { from, bytes: &buf[..n] }).ok();
                any = true;
            }
            while devs[i].poll_event().is_some() {}
        }
        if !any {
            return;
        }
    }
}

/// One device's media ends: its camera, mic, codecs and jitter buffer, all buffers pre-sized.
struct Ends {
    cam: SimCamera,
    frame: I420Frame,
    enc: VideoEncoder,
    dec: VideoDecoder,
    shown: I420Frame,
    au: Vec<u8>,
    rx: Vec<u8>,
    mic: SimMic,
    pcm: Vec<i16>,
    out: Vec<i16>,
    aenc: AudioEncoder,
    adec: AudioDecoder,
    apkt: [u8; 1200],
    jb: JitterBuffer,
    decoded: u64,
    played: u64,
}

impl Ends {
    fn new() -> Ends {
        let cfg = VideoEncoderConfig { width: 640, height: 480, fps: 30, bitrate_kbps: 1000, ..Default::default() };
        Ends {
            cam: SimCamera::new(640, 480, 30),
            frame: I420Frame::new(640, 480),
            enc: VideoEncoder::new(&cfg).unwrap(),
            dec: VideoDecoder::new().unwrap(),
            shown: I420Frame::new(640, 480),
            au: vec![0; MAX_FRAME],
            rx: vec![0; MAX_FRAME],
            mic: SimMic,
            pcm: vec![0; block_len(20)],
            out: vec![0; block_len(20)],
            aenc: AudioEncoder::new(20, 32, 5).unwrap(),
            adec: AudioDecoder::new(20).unwrap(),
            apkt: [0; 1200],
            jb: JitterBuffer::new(JitterConfig::for_frame_ms(20)),
            decoded: 0,
            played: 0,
        }
    }
}

#[test]
fn media_path_allocates_nothing_per_frame() {
    let call = CallSettings::default();
    let t0 = Instant::now();
    let cfg = |n, name, peer| sim_config(n, name, &[(peer, Some(1), &[3 - n])], call);
    let mut devs = [
        Device::with_clock(&cfg(1, "A", "B"), key(1), EndpointConfig::default(), Rng::seeded(1), t0),
        Device::with_clock(&cfg(2, "B", "A"), key(2), EndpointConfig::default(), Rng::seeded(2), t0),
    ];
    let mut buf = [0u8; MAX_DATAGRAM];
    let mut now = t0;
    devs[0].handle_input(now, Input::Command(Command::Press(1))).unwrap();
    shuttle(now, &mut devs, &mut buf);
    devs[1].handle_input(now, Input::Command(Command::Answer)).unwrap();
    shuttle(now, &mut devs, &mut buf);
    assert_eq!((devs[0].phase(), devs[1].phase()), (Phase::InCall, Phase::InCall));
    let mut ends = [Ends::new(), Ends::new()];

    // One tick = 1 ms of virtual time; video every 33 ms, audio every 20 ms, both ways.
    let mut tick = |ms: u64, now: &mut Instant, devs: &mut [Device; 2], ends: &mut [Ends; 2]| {
        *now = t0 + Duration::from_millis(ms);
        for (d, e) in devs.iter_mut().zip(ends.iter_mut()) {
            let Some(m) = d.media() else { panic!("call dropped") };
            let us = m.micros(*now);
            if ms % 33 == 0 && !m.congested() {
                e.cam.capture(us, &mut e.frame).unwrap();
                if m.take_keyframe_request(*now) {
                    e.enc.force_keyframe();
                }
                let r = e.enc.encode(&e.frame, &mut e.au).unwrap();
                if r.len > 0 {
                    m.push_video(*now, us, r.keyframe, &e.au[..r.len]);
                }
            }
            if ms % 20 == 0 {
                e.mic.read(us.saturating_sub(20_000), &mut e.pcm).unwrap();
                let n = e.aenc.encode(&e.pcm, &mut e.apkt).unwrap();
                m.push_audio(us.saturating_sub(20_000), &e.apkt[..n]);
            }
        }
        for d in devs.iter_mut() {
            if d.poll_timeout().is_some_and(|t| t <= *now) {
                d.handle_input(*now, Input::Timeout).ok();
            }
        }
        shuttle(*now, devs, &mut buf);
        for (d, e) in devs.iter_mut().zip(ends.iter_mut()) {
            let m = d.media().unwrap();
            let us = m.micros(*now);
            while let Some(f) = m.poll_video_frame(*now, &mut e.rx) {
                if e.dec.decode(&e.rx[..f.len], &mut e.shown).unwrap() {
                    e.decoded += 1;
                }
            }
            while let Some((h, n)) = m.poll_audio(&mut e.apkt) {
                e.jb.push(us, h.seq, h.capture_us, false, &e.apkt[..n]);
            }
            if ms % 20 == 0 {
                let r = match e.jb.pop(us) {
                    Playout::Packet(p) => e.adec.decode(p, &mut e.out),
                    Playout::Fec(p) => e.adec.decode_fec(p, &mut e.out),
                    Playout::Conceal | Playout::Stretch => e.adec.conceal(&mut e.out),
                    Playout::Silence => Ok(0),
                };
                e.played += u64::from(r.unwrap() > 0);
            }
        }
    };
    // Warm-up: 2 s (codecs settle, rate control ramps, every pool and queue is touched).
    for ms in 0..2_000 {
        tick(ms, &mut now, &mut devs, &mut ends);
    }
    let before = allocs();
    let decoded_before = ends[0].decoded + ends[1].decoded;
    for ms in 2_000..12_000 {
        tick(ms, &mut now, &mut devs, &mut ends);
    }
    let n = allocs() - before;
    let decoded = ends[0].decoded + ends[1].decoded - decoded_before;
    assert!(decoded >= 600, "{decoded} frames decoded (300 per direction)");
    assert!(ends[0].played > 400 && ends[1].played > 400);
    assert_eq!(n, 0, "{n} allocations over {decoded} decoded frames");
}
