//! The media threads around the device's network task (DESIGN.md "Threads"): capture+encode,
//! decode+render and audio each run on their own thread; they exchange fixed-size messages and
//! pooled buffers with the network task over bounded channels. Nothing blocks the network task:
//! when a channel is full, media is dropped (video before audio) and counted.
use crate::call::Phase;
use crate::media::assembler::MAX_FRAME;
use crate::media::codec::h264::{Complexity, VideoDecoder, VideoEncoder, VideoEncoderConfig};
use crate::media::codec::opus::{AudioDecoder, AudioEncoder};
use crate::media::jitter::{JitterBuffer, JitterConfig, JitterStats, Playout};
use crate::media::packet::MAX_AUDIO_PAYLOAD;
use crate::media::session::MediaSession;
use crate::ui::{self, ContactLine, NetState, Screen};
use peercom_board::audio::{Xruns, block_len};
use peercom_board::frame::I420Frame;
use peercom_board::{MediaDevices, stamp};
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering::Relaxed};
use std::sync::mpsc::{Receiver, SyncSender, TrySendError, sync_channel};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};
use tokio::sync::mpsc;

/// An encoded video frame in a pooled buffer.
pub struct VideoFrame {
    pub buf: Vec<u8>,
    pub len: usize,
    pub keyframe: bool,
    pub capture_us: u64,
}

/// An audio packet: fixed size, so queueing one never allocates.
#[derive(Clone, Copy)]
pub struct AudioPacket {
    pub seq: u16,
    pub capture_us: u64,
    pub retransmit: bool,
    /// Receive time (µs on the media clock), for the jitter buffer.
    pub arrival_us: u64,
    pub len: u16,
    pub data: [u8; MAX_AUDIO_PAYLOAD],
}

/// What the screen should show besides video; changed only on call events.
#[derive(Debug, Clone)]
pub struct UiState {
    pub phase: Phase,
    pub contact: String,
    pub since: Instant,
    pub missed: u32,
    /// The last call's end: reason, failed, when.
    pub ended: Option<(String, bool, Instant)>,
    pub net: NetState,
}

/// Fixed facts for the ready screen.
#[derive(Debug, Clone)]
pub struct UiStatic {
    pub device: String,
    pub id_short: String,
    pub id_full: String,
    pub contacts: Vec<(String, Option<u8>)>,
    pub answer_button: Option<u8>,
    pub reject_button: Option<u8>,
}

/// Measurements for the demo and benchmark (and `ctl status`).
#[derive(Debug, Default, Clone)]
pub struct Probe {
    pub g2g_us: Vec<u32>,
    pub frames_decoded: u64,
    pub decode_errors: u64,
    pub first_frame_at: Option<Instant>,
    /// When the first remote video frame of the current (or last) call was shown; reset to None
    /// as a call starts.
    pub call_first_frame_at: Option<Instant>,
    pub m2e_us: Vec<u64>,
    pub jitter: JitterStats,
    pub audio_errors: u64,
    pub frames_captured: u64,
    pub frames_skipped_congestion: u64,
    pub frames_encoded: u64,
    pub frames_dropped_queue: u64,
    /// Whether the audio thread runs at real-time priority.
    pub audio_realtime: bool,
    pub speaker_underruns: Xruns,
    pub mic_overruns: Xruns,
    /// Test-signal bursts this device's microphone captured (sim board), for mouth-to-ear.
    pub bursts_captured: u64,
}

const G2G_SAMPLES: usize = 8192;
/// As many as the sim speaker keeps (copied into place, never grown, on the audio thread).
const M2E_SAMPLES: usize = 1024;

/// State shared between the network task and the media threads.
pub struct Shared {
    pub origin: Instant,
    stop: AtomicBool,
    in_call: AtomicBool,
    /// Bumped at every call start, so threads reset their codecs.
    generation: AtomicU64,
    target_bps: AtomicU64,
    keyframe: AtomicBool,
    congested: AtomicBool,
    loss_pct: AtomicU32,
    muted: AtomicBool,
    /// Capture-to-playout delay of the sound now playing, µs (0: none), for lip sync.
    audio_delay_us: AtomicU64,
    ui_gen: AtomicU64,
    ui: Mutex<UiState>,
    selfview: Mutex<I420Frame>,
    pub probe: Mutex<Probe>,
    snapshot: Mutex<Option<std::path::PathBuf>>,
}

impl Shared {
    pub fn micros(&self) -> u64 {
        self.origin.elapsed().as_micros() as u64
    }

    /// Mutes or unmutes the microphone for the rest of the call (each call starts unmuted).
    pub fn set_muted(&self, on: bool) {
        self.muted.store(on, Relaxed);
        self.ui_gen.fetch_add(1, Relaxed);
    }

    pub fn muted(&self) -> bool {
        self.muted.load(Relaxed)
    }

    /// Asks the render thread to write what the screen shows to `path` (PNG); waits up to 2 s.
    pub fn snapshot(&self, path: &std::path::Path) -> bool {
        if let Ok(mut s) = self.snapshot.lock() {
            *s = Some(path.to_path_buf());
        }
        self.ui_gen.fetch_add(1, Relaxed);
        let t = Instant::now();
        while t.elapsed() < Duration::from_secs(2) {
            if self.snapshot.lock().map(|s| s.is_none()).unwrap_or(true) {
                return path.exists();
            }
            std::thread::sleep(Duration::from_millis(5));
        }
        false
    }
}

/// What the capture threads send to the network task.
pub struct MediaInputs {
    pub video: mpsc::Receiver<VideoFrame>,
    pub audio: mpsc::Receiver<AudioPacket>,
}

/// The network task's end of the media threads.
pub struct MediaLink {
    pub shared: Arc<Shared>,
    video_out: SyncSender<VideoFrame>,
    video_pool: Receiver<Vec<u8>>,
    spare: Option<Vec<u8>>,
    audio_out: SyncSender<AudioPacket>,
    encoder_pool: SyncSender<Vec<u8>>,
    threads: Vec<JoinHandle<()>>,
    last_phase: Phase,
}

const POOL: usize = 4;

pub struct MediaParams {
    pub width: usize,
    pub height: usize,
    pub fps: u32,
    pub start_kbps: u32,
    pub audio_frame_ms: u32,
    pub audio_kbps: u32,
    pub audio_complexity: u8,
}

impl MediaLink {
    pub fn start(
        p: MediaParams,
        dev: MediaDevices,
        ui_static: UiStatic,
        origin: Instant,
    ) -> std::io::Result<(Self, MediaInputs)> {
        let shared = Arc::new(Shared {
            origin,
            stop: AtomicBool::new(false),
            in_call: AtomicBool::new(false),
            generation: AtomicU64::new(0),
            target_bps: AtomicU64::new(u64::from(p.start_kbps) * 1000),
            keyframe: AtomicBool::new(true),
            congested: AtomicBool::new(false),
            loss_pct: AtomicU32::new(0),
            audio_delay_us: AtomicU64::new(0),
            muted: AtomicBool::new(false),
            ui_gen: AtomicU64::new(1),
            ui: Mutex::new(UiState {
                phase: Phase::Idle,
                contact: String::new(),
                since: origin,
                missed: 0,
                ended: None,
                net: NetState::Lan,
            }),
            selfview: Mutex::new(I420Frame::new(p.width, p.height)),
            probe: Mutex::new(Probe {
                g2g_us: Vec::with_capacity(G2G_SAMPLES),
                m2e_us: Vec::with_capacity(M2E_SAMPLES),
                ..Default::default()
            }),
            snapshot: Mutex::new(None),
        });
        let (enc_tx, video_in) = mpsc::channel(POOL);
        let (enc_pool_tx, enc_pool_rx) = sync_channel(POOL);
        let (dec_tx, dec_rx) = sync_channel(POOL);
        let (dec_pool_tx, dec_pool_rx) = sync_channel(POOL);
        for _ in 0..POOL {
            let _ = enc_pool_tx.try_send(vec![0u8; MAX_FRAME]);
            let _ = dec_pool_tx.try_send(vec![0u8; MAX_FRAME]);
        }
        let (mic_tx, audio_in) = mpsc::channel(16);
        let (spk_tx, spk_rx) = sync_channel(32);
        let MediaDevices { camera, mic, speaker, display } = dev;
        let audio_name = ui_static.device.clone();
        let mut threads = Vec::new();
        let s = shared.clone();
        let enc_cfg = VideoEncoderConfig {
            width: p.width,
            height: p.height,
            fps: p.fps,
            bitrate_kbps: p.start_kbps,
            max_nal_len: 1100,
            complexity: Complexity::Medium,
        };
        threads.push(
            std::thread::Builder::new()
                .name("video-tx".into())
                .spawn(move || video_tx(s, camera, enc_cfg, enc_tx, enc_pool_rx))?,
        );
        let s = shared.clone();
        threads.push(
            std::thread::Builder::new()
                .name("video-rx".into())
                .spawn(move || video_rx(s, display, ui_static, dec_rx, dec_pool_tx))?,
        );
        let s = shared.clone();
        let ap = AudioParams {
            name: audio_name,
            frame_ms: p.audio_frame_ms,
            kbps: p.audio_kbps,
            complexity: p.audio_complexity,
        };
        threads.push(
            std::thread::Builder::new()
                .name("audio".into())
                .spawn(move || audio(s, mic, speaker, ap, mic_tx, spk_rx))?,
        );
        let link = MediaLink {
            shared,
            video_out: dec_tx,
            video_pool: dec_pool_rx,
            spare: None,
            audio_out: spk_tx,
            encoder_pool: enc_pool_tx,
            threads,
            last_phase: Phase::Idle,
        };
        Ok((link, MediaInputs { video: video_in, audio: audio_in }))
    }

    /// An encoded frame from the capture thread: into the transport, buffer back to the pool.
    pub fn on_video(&mut self, now: Instant, media: Option<&mut MediaSession>, f: VideoFrame) {
        if let Some(m) = media {
            m.push_video(now, f.capture_us, f.keyframe, &f.buf[..f.len]);
        }
        let _ = self.encoder_pool.try_send(f.buf);
    }

    pub fn on_audio(&mut self, media: Option<&mut MediaSession>, p: &AudioPacket) {
        if let Some(m) = media {
            m.push_audio(p.capture_us, &p.data[..usize::from(p.len)]);
        }
    }

    /// Moves received media to the threads and the transport's advice to the encoders; call
    /// after every input the device handled.
    pub fn pump(&mut self, now: Instant, media: Option<&mut MediaSession>) {
        let Some(m) = media else { return };
        let sh = &self.shared;
        sh.target_bps.store(m.target_bps(), Relaxed);
        sh.congested.store(m.congested(), Relaxed);
        sh.loss_pct.store(u32::from(m.loss_pct()), Relaxed);
        if m.take_keyframe_request(now) {
            sh.keyframe.store(true, Relaxed);
        }
        while let Some(mut buf) = self.spare.take().or_else(|| self.video_pool.try_recv().ok()) {
            match m.poll_video_frame(now, &mut buf) {
                Some(info) => {
                    let f = VideoFrame { buf, len: info.len, keyframe: info.keyframe, capture_us: info.capture_us };
                    if let Err(TrySendError::Full(f) | TrySendError::Disconnected(f)) = self.video_out.try_send(f) {
                        self.spare = Some(f.buf);
                        break;
                    }
                }
                None => {
                    self.spare = Some(buf);
                    break;
                }
            }
        }
        let mut p = AudioPacket {
            seq: 0,
            capture_us: 0,
            retransmit: false,
            arrival_us: 0,
            len: 0,
            data: [0; MAX_AUDIO_PAYLOAD],
        };
        while let Some((h, n)) = m.poll_audio(&mut p.data) {
            p.seq = h.seq;
            p.capture_us = h.capture_us;
            p.retransmit = h.flags & crate::media::packet::FLAG_RETRANSMIT != 0;
            p.arrival_us = m.micros(now);
            p.len = n as u16;
            // A full queue means the audio thread is stalled; the jitter buffer conceals.
            let _ = self.audio_out.try_send(p);
        }
    }

    /// Tells the threads about a phase change (and the screen what to show).
    pub fn set_phase(&mut self, phase: Phase, contact: Option<&str>, missed: u32, ended: Option<(&str, bool)>) {
        if phase == self.last_phase && ended.is_none() {
            return;
        }
        let sh = &self.shared;
        if phase == Phase::InCall && self.last_phase != Phase::InCall {
            if let Ok(mut p) = sh.probe.lock() {
                p.call_first_frame_at = None;
            }
            sh.muted.store(false, Relaxed);
            sh.generation.fetch_add(1, Relaxed);
            sh.keyframe.store(true, Relaxed);
        }
        self.last_phase = phase;
        sh.in_call.store(phase == Phase::InCall, Relaxed);
        if let Ok(mut ui) = sh.ui.lock() {
            ui.phase = phase;
            if let Some(c) = contact {
                ui.contact.clear();
                ui.contact.push_str(c);
            }
            if phase == Phase::InCall {
                ui.since = Instant::now();
            }
            ui.missed = missed;
            if let Some((reason, failed)) = ended {
                ui.ended = Some((reason.to_string(), failed, Instant::now()));
            }
        }
        sh.ui_gen.fetch_add(1, Relaxed);
    }

    /// How contacts are reached, for the ready screen's header.
    pub fn set_net(&mut self, net: NetState) {
        if let Ok(mut ui) = self.shared.ui.lock() {
            if ui.net == net {
                return;
            }
            ui.net = net;
        }
        self.shared.ui_gen.fetch_add(1, Relaxed);
    }

    pub fn stop(self) {
        self.shared.stop.store(true, Relaxed);
        self.shared.in_call.store(false, Relaxed);
        let MediaLink { threads, video_out, audio_out, encoder_pool, .. } = self;
        drop((video_out, audio_out, encoder_pool));
        for t in threads {
            let _ = t.join();
        }
    }
}

fn sleep_until(t: Instant) {
    let now = Instant::now();
    if t > now {
        std::thread::sleep(t - now);
    }
}

fn video_tx(
    sh: Arc<Shared>,
    mut camera: Box<dyn peercom_board::camera::Camera>,
    cfg: VideoEncoderConfig,
    out: mpsc::Sender<VideoFrame>,
    pool: Receiver<Vec<u8>>,
) {
    let (w, h) = camera.size();
    let mut frame = I420Frame::new(w, h);
    let mut enc = match VideoEncoder::new(&cfg) {
        Ok(e) => e,
        Err(e) => {
            crate::log!("video encoder failed to start: {e}; no video will be sent");
            return;
        }
    };
    let interval = Duration::from_secs_f64(1.0 / f64::from(camera.fps().max(1)));
    let mut generation = 0;
    let mut kbps = cfg.bitrate_kbps;
    let mut next = Instant::now();
    let mut spare: Option<Vec<u8>> = None;
    while !sh.stop.load(Relaxed) {
        if !sh.in_call.load(Relaxed) {
            // The camera is off between calls.
            std::thread::sleep(Duration::from_millis(10));
            next = Instant::now();
            continue;
        }
        sleep_until(next);
        next += interval;
        let now = Instant::now();
        if now > next + interval {
            next = now; // fell behind (machine busy): do not try to catch up with a burst
        }
        let us = now.saturating_duration_since(sh.origin).as_micros() as u64;
        if camera.capture(us, &mut frame).is_err() {
            continue;
        }
        if let Ok(mut p) = sh.probe.lock() {
            p.frames_captured += 1;
        }
        if let Ok(mut s) = sh.selfview.try_lock() {
            if s.y.len() == frame.y.len() {
                s.y.copy_from_slice(&frame.y);
                s.u.copy_from_slice(&frame.u);
                s.v.copy_from_slice(&frame.v);
            }
        }
        let g = sh.generation.load(Relaxed);
        if g != generation {
            generation = g;
            enc.force_keyframe();
        }
        if sh.congested.load(Relaxed) {
            if let Ok(mut p) = sh.probe.lock() {
                p.frames_skipped_congestion += 1;
            }
            continue;
        }
        let target = (sh.target_bps.load(Relaxed) / 1000) as u32;
        // Re-tune only on a real change; each change makes the encoder's rate control settle again.
        if target.abs_diff(kbps) * 20 > kbps && enc.set_bitrate(target).is_ok() {
            kbps = target;
        }
        if sh.keyframe.swap(false, Relaxed) {
            enc.force_keyframe();
        }
        let Some(mut buf) = spare.take().or_else(|| pool.try_recv().ok()) else {
            // Every buffer is still in the network task: skip a frame rather than wait.
            continue;
        };
        match enc.encode(&frame, &mut buf) {
            Ok(e) if !e.skipped() => {
                let f = VideoFrame { buf, len: e.len, keyframe: e.keyframe, capture_us: us };
                if let Ok(mut p) = sh.probe.lock() {
                    p.frames_encoded += 1;
                }
                if let Err(err) = out.try_send(f) {
                    // Encoded but not queued: the next P-frame would reference it, so start over.
                    enc.force_keyframe();
                    if let Ok(mut p) = sh.probe.lock() {
                        p.frames_dropped_queue += 1;
                    }
                    let f = match err {
                        mpsc::error::TrySendError::Full(f) | mpsc::error::TrySendError::Closed(f) => f,
                    };
                    spare = Some(f.buf);
                }
            }
            // Skipped by rate control, or an encoder error (it stays usable): keep the buffer.
            _ => spare = Some(buf),
        }
    }
}

/// How long the "call ended" screen stays up.
const ENDED_SCREEN: Duration = Duration::from_secs(3);

fn video_rx(
    sh: Arc<Shared>,
    mut display: Box<dyn peercom_board::display::Display>,
    st: UiStatic,
    rx: Receiver<VideoFrame>,
    pool: SyncSender<Vec<u8>>,
) {
    let (dw, dh) = display.size();
    let mut dec = match VideoDecoder::new() {
        Ok(d) => Some(d),
        Err(e) => {
            crate::log!("video decoder failed to start: {e}; no video will be shown");
            None
        }
    };
    let mut remote = I420Frame::new(2, 2);
    let mut have_remote = false;
    let qr = crate::identity::qr::matrix(&st.id_full);
    let contacts: Vec<ContactLine> = st.contacts.iter().map(|(n, b)| ContactLine { name: n, button: *b }).collect();
    let mut ui_gen = 0;
    let mut ui = UiState {
        phase: Phase::Idle,
        contact: String::new(),
        since: sh.origin,
        missed: 0,
        ended: None,
        net: NetState::Lan,
    };
    let mut generation = u64::MAX;
    let mut last_draw = Instant::now();
    let mut showing_ended = false;
    while !sh.stop.load(Relaxed) {
        let mut redraw = false;
        let call_gen = sh.generation.load(Relaxed);
        if call_gen != generation {
            generation = call_gen;
            have_remote = false;
        }
        let mut presented_video = false;
        match rx.recv_timeout(Duration::from_millis(50)) {
            Ok(f) => {
                let audio = sh.audio_delay_us.load(Relaxed);
                let at = crate::media::sync::present_at_us(f.capture_us, sh.micros(), (audio > 0).then_some(audio));
                sleep_until(sh.origin + Duration::from_micros(at));
                let r = dec.as_mut().map(|d| d.decode(&f.buf[..f.len], &mut remote));
                let _ = pool.try_send(f.buf);
                match r {
                    Some(Ok(true)) => {
                        have_remote = true;
                        redraw = true;
                        presented_video = true;
                    }
                    Some(Err(_)) => {
                        if let Ok(mut p) = sh.probe.lock() {
                            p.decode_errors += 1;
                        }
                    }
                    _ => {}
                }
            }
            Err(std::sync::mpsc::RecvTimeoutError::Timeout) => {}
            Err(std::sync::mpsc::RecvTimeoutError::Disconnected) => break,
        }
        // After the wait, so a change made meanwhile (and a snapshot asked after it) is drawn.
        let g = sh.ui_gen.load(Relaxed);
        if g != ui_gen {
            ui_gen = g;
            if let Ok(u) = sh.ui.lock() {
                ui.clone_from(&u);
            }
            redraw = true;
        }
        let ended_fresh = ui.ended.as_ref().is_some_and(|(_, _, at)| at.elapsed() < ENDED_SCREEN);
        if ui.phase == Phase::Idle && showing_ended != ended_fresh {
            redraw = true;
        }
        // The call timer ticks even when no video arrives.
        if ui.phase == Phase::InCall && last_draw.elapsed() >= Duration::from_secs(1) {
            redraw = true;
        }
        // The request stays set until the file is written: the asker waits for it to clear.
        let snapshot = sh.snapshot.lock().ok().and_then(|s| s.clone());
        if !redraw && snapshot.is_none() {
            continue;
        }
        showing_ended = ui.phase == Phase::Idle && ended_fresh;
        {
            let local = sh.selfview.lock().ok();
            let screen = match ui.phase {
                Phase::Idle if showing_ended => {
                    let (reason, failed, _) = ui.ended.as_ref().map_or(("", false, ui.since), |(r, f, t)| (r, *f, *t));
                    Screen::Ended { contact: &ui.contact, reason, failed }
                }
                Phase::Idle => Screen::Ready {
                    device: &st.device,
                    id_short: &st.id_short,
                    contacts: &contacts,
                    net: ui.net,
                    missed_calls: ui.missed,
                    qr: qr.as_deref(),
                },
                Phase::Dialing | Phase::Ringing => Screen::Calling {
                    contact: &ui.contact,
                    cancel_button: st.contacts.iter().find(|(n, _)| *n == ui.contact).and_then(|(_, b)| *b),
                },
                Phase::Incoming => Screen::Incoming {
                    contact: &ui.contact,
                    answer_button: st.answer_button,
                    reject_button: st.reject_button,
                },
                Phase::InCall => Screen::InCall {
                    contact: &ui.contact,
                    elapsed_s: ui.since.elapsed().as_secs() as u32,
                    muted: sh.muted(),
                    remote: have_remote.then_some(&remote),
                    local: local.as_deref(),
                },
            };
            ui::draw(&screen, display.framebuffer(), dw, dh);
        }
        let _ = display.present();
        last_draw = Instant::now();
        if presented_video {
            let now_us = sh.micros();
            let captured = stamp::read(&remote.y, remote.width, remote.height)
                .map(|p| peercom_board::camera::unpack_stamp(p).1)
                .filter(|&c| c <= now_us);
            if let Ok(mut p) = sh.probe.lock() {
                p.frames_decoded += 1;
                if p.first_frame_at.is_none() {
                    p.first_frame_at = Some(last_draw);
                }
                if p.call_first_frame_at.is_none() && sh.in_call.load(Relaxed) {
                    p.call_first_frame_at = Some(last_draw);
                }
                if let Some(c) = captured {
                    if p.g2g_us.len() < G2G_SAMPLES {
                        p.g2g_us.push((now_us - c).min(u64::from(u32::MAX)) as u32);
                    }
                }
            }
        }
        if let Some(path) = snapshot {
            if let Err(e) = peercom_board::png::write_rgb(&path, dw, dh, display.framebuffer()) {
                crate::log!("could not write {}: {e}", path.display());
            }
            if let Ok(mut s) = sh.snapshot.lock() {
                *s = None;
            }
        }
    }
}

/// The speaker's queue just before a block is written: half a frame plus 3 ms of cushion for
/// the audio thread's wake-up (`audio`; at real-time priority it wakes well within that). A
/// block written then is heard this much later.
fn speaker_lead_us(frame_us: u64) -> u64 {
    frame_us / 2 + 3_000
}

/// How many blocks to hand the speaker this turn, from its queue `delay_us`: normally one, two
/// to refill after an underrun, none when a clock difference has let the queue grow.
fn blocks_to_write(delay_us: u64, frame_us: u64) -> usize {
    let lead = speaker_lead_us(frame_us);
    if delay_us + frame_us / 2 < lead {
        2
    } else if delay_us > lead + frame_us + frame_us / 2 {
        0
    } else {
        1
    }
}

pub struct AudioParams {
    pub name: String,
    pub frame_ms: u32,
    pub kbps: u32,
    pub complexity: u8,
}

/// The audio thread, paced by the microphone: each block it captures is encoded and sent with
/// the time the device says it was captured, then the speaker is topped up from the jitter
/// buffer. A late wake-up gets the buffered blocks back to back, so no block is ever skipped.
fn audio(
    sh: Arc<Shared>,
    mut mic: Box<dyn peercom_board::audio::AudioIn>,
    mut speaker: Box<dyn peercom_board::audio::AudioOut>,
    p: AudioParams,
    out: mpsc::Sender<AudioPacket>,
    rx: Receiver<AudioPacket>,
) {
    let realtime = super::realtime::raise_to_audio_priority(&p.name);
    let frame_ms = p.frame_ms;
    let n = block_len(frame_ms);
    let frame_us = u64::from(frame_ms) * 1000;
    let (mut enc, mut dec) = match (AudioEncoder::new(frame_ms, p.kbps, p.complexity), AudioDecoder::new(frame_ms)) {
        (Ok(e), Ok(d)) => (e, d),
        (Err(e), _) | (_, Err(e)) => {
            crate::log!("{}: audio codec failed to start: {e}; no audio", p.name);
            return;
        }
    };
    let mut jb = JitterBuffer::new(JitterConfig::for_frame_ms(frame_ms));
    let mut pcm_in = vec![0i16; n];
    let mut pcm_out = vec![0i16; n];
    let mut pkt =
        AudioPacket { seq: 0, capture_us: 0, retransmit: false, arrival_us: 0, len: 0, data: [0; MAX_AUDIO_PAYLOAD] };
    let mut seq = 0u16;
    let mut generation = u64::MAX;
    let mut running = false;
    let mut device_error_said = false;
    let mut loss = u32::MAX;
    let mut ticks = 0u64;
    while !sh.stop.load(Relaxed) {
        if !sh.in_call.load(Relaxed) {
            running = false;
            while rx.try_recv().is_ok() {}
            std::thread::sleep(Duration::from_millis(10));
            continue;
        }
        let g = sh.generation.load(Relaxed);
        if g != generation || !running {
            generation = g;
            jb.reset();
            // Each call starts its devices afresh: nothing captured or queued before is kept.
            let started = mic.start().and_then(|()| speaker.start());
            if let Err(e) = started {
                if !device_error_said {
                    crate::log!("{}: audio device would not start: {e}", p.name);
                    device_error_said = true;
                }
                std::thread::sleep(Duration::from_millis(u64::from(frame_ms)));
                continue;
            }
            running = true;
        }
        let l = sh.loss_pct.load(Relaxed);
        if l != loss {
            loss = l;
            enc.set_expected_loss(l.min(100) as u8);
        }
        let captured = match mic.read(&mut pcm_in) {
            Ok(c) => c,
            Err(e) => {
                if !device_error_said {
                    crate::log!("{}: microphone: {e}", p.name);
                    device_error_said = true;
                }
                running = false;
                std::thread::sleep(Duration::from_millis(u64::from(frame_ms)));
                continue;
            }
        };
        if sh.muted() {
            pcm_in.fill(0);
        }
        if let Ok(len) = enc.encode(&pcm_in, &mut pkt.data) {
            pkt.seq = seq;
            seq = seq.wrapping_add(1);
            pkt.capture_us = captured.at_us;
            pkt.len = len as u16;
            let _ = out.try_send(pkt);
        }
        while let Ok(p) = rx.try_recv() {
            jb.push(
                p.arrival_us,
                p.seq,
                p.capture_us,
                p.retransmit,
                &p.data[..usize::from(p.len).min(MAX_AUDIO_PAYLOAD)],
            );
        }
        let mut errors = 0u64;
        for _ in 0..blocks_to_write(speaker.delay_us(), frame_us) {
            let r = match jb.pop(sh.micros()) {
                Playout::Silence => {
                    pcm_out.fill(0);
                    Ok(n)
                }
                Playout::Packet(b) => dec.decode(b, &mut pcm_out),
                Playout::Fec(b) => dec.decode_fec(b, &mut pcm_out),
                Playout::Conceal | Playout::Stretch => dec.conceal(&mut pcm_out),
            };
            if r.is_err() {
                pcm_out.fill(0);
                errors += 1;
            }
            if let Ok(heard_us) = speaker.play(&pcm_out) {
                let delay = jb.played_capture_us().map_or(0, |c| heard_us.saturating_sub(c));
                sh.audio_delay_us.store(delay, Relaxed);
            }
        }
        ticks += 1;
        if ticks % 10 == 0 || errors > 0 {
            if let Ok(mut pr) = sh.probe.lock() {
                pr.jitter = jb.stats();
                pr.audio_errors += errors;
                pr.audio_realtime = realtime;
                pr.speaker_underruns = speaker.underruns();
                pr.mic_overruns = mic.overruns();
                pr.bursts_captured = mic.bursts_captured();
                let m = speaker.measured_latencies_us();
                pr.m2e_us.clear();
                pr.m2e_us.extend_from_slice(&m[..m.len().min(M2E_SAMPLES)]);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_speaker_queue_is_held_near_its_lead() {
        let f = 10_000;
        assert_eq!(speaker_lead_us(f), 8_000);
        assert_eq!(blocks_to_write(0, f), 2, "an empty queue is refilled");
        assert_eq!(blocks_to_write(2_999, f), 2);
        assert_eq!(blocks_to_write(3_000, f), 1);
        assert_eq!(blocks_to_write(23_000, f), 1);
        assert_eq!(blocks_to_write(23_001, f), 0, "a queue grown by clock drift is let run down");
        // Steady state: the queue before each write stays where the first refill put it.
        let (mut d, mut written) = (0u64, 0);
        for _ in 0..100 {
            let k = blocks_to_write(d, f);
            written += k;
            d = (d + k as u64 * f).saturating_sub(f);
        }
        assert_eq!(written, 101);
        assert!((3_000..=23_000).contains(&d), "{d}");
    }
}
