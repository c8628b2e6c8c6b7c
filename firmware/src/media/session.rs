//! The media transport of one call, sans-IO: both directions of video and audio plus the
//! feedback between them. The device feeds it decrypted media plaintexts, encoded frames and
//! time; it yields plaintexts to encrypt and send, assembled video frames and audio packets.
//! All memory is allocated in `new`; a call only `reset`s it.
use super::assembler::{Assembler, AssemblerStats, FrameInfo};
use super::loss::LossTracker;
use super::packet::{AudioHeader, FLAG_RETRANSMIT, Feedback, MAX_AUDIO_PAYLOAD, MediaPacket, Report, Stream};
use super::rate::RateController;
use super::sender::{MediaSender, SenderConfig, SenderStats};
use crate::config::MediaSettings;
use serde::Serialize;
use std::time::{Duration, Instant};

#[derive(Debug, Clone, Copy)]
pub struct MediaConfig {
    pub kbps_min: u32,
    pub kbps_max: u32,
    pub kbps_start: u32,
    pub sender: SenderConfig,
    /// Video frames that can be in flight (assembling) at once.
    pub frames_in_flight: usize,
    pub report_interval: Duration,
    /// A video frame is given up this long after it was first heard of, plus two round trips.
    pub frame_deadline: Duration,
    /// Audio packets are worth a NACK only if the answer can arrive within this.
    pub audio_repair: Duration,
}

impl MediaConfig {
    pub fn from_settings(m: &MediaSettings) -> Self {
        MediaConfig {
            kbps_min: m.video_kbps_min,
            kbps_max: m.video_kbps_max,
            kbps_start: m.video_kbps_start,
            sender: SenderConfig::default(),
            frames_in_flight: 8,
            report_interval: Duration::from_millis(200),
            frame_deadline: Duration::from_millis(120),
            audio_repair: Duration::from_millis(60),
        }
    }
}

#[derive(Debug, Clone, Copy, Default, Serialize, PartialEq)]
pub struct MediaStats {
    pub sent: SenderStats,
    pub received: AssemblerStats,
    pub target_kbps: u32,
    pub rtt_ms: f64,
    pub loss_pct: f64,
    pub video_jitter_ms: f64,
    pub audio_jitter_ms: f64,
    pub nacks_sent: u64,
    pub keyframe_requests_sent: u64,
    pub audio_received: u64,
    pub audio_dropped: u64,
    pub malformed: u64,
}

const AUDIO_RING: usize = 16;

pub struct MediaSession {
    cfg: MediaConfig,
    origin: Instant,
    sender: MediaSender,
    rate: RateController,
    video_rx: LossTracker,
    audio_rx: LossTracker,
    assembler: Assembler,
    audio: Vec<(AudioHeader, u16, [u8; MAX_AUDIO_PAYLOAD])>,
    audio_head: usize,
    audio_len: usize,
    rtt: Option<Duration>,
    peer_report: Option<(u64, Instant)>,
    next_report: Instant,
    last_pli: Option<Instant>,
    stats: MediaStats,
}

impl MediaSession {
    /// `origin` is the zero of the media clock (µs) that capture times are given in.
    pub fn new(cfg: MediaConfig, origin: Instant) -> Self {
        MediaSession {
            cfg,
            origin,
            sender: MediaSender::new(cfg.sender),
            rate: RateController::new(cfg.kbps_min, cfg.kbps_max, cfg.kbps_start),
            video_rx: LossTracker::new(),
            audio_rx: LossTracker::new(),
            assembler: Assembler::new(cfg.frames_in_flight),
            audio: vec![(AudioHeader { seq: 0, flags: 0, capture_us: 0 }, 0, [0; MAX_AUDIO_PAYLOAD]); AUDIO_RING],
            audio_head: 0,
            audio_len: 0,
            rtt: None,
            peer_report: None,
            next_report: origin,
            last_pli: None,
            stats: MediaStats::default(),
        }
    }

    /// Starts a call: forgets the previous one.
    pub fn reset(&mut self, now: Instant) {
        self.rate = RateController::new(self.cfg.kbps_min, self.cfg.kbps_max, self.cfg.kbps_start);
        self.sender.reset(self.rate.target_bps());
        self.video_rx.reset(now);
        self.audio_rx.reset(now);
        self.assembler.reset();
        self.audio_head = 0;
        self.audio_len = 0;
        self.rtt = None;
        self.peer_report = None;
        self.next_report = now + self.cfg.report_interval;
        self.last_pli = None;
        self.stats = MediaStats::default();
    }

    pub fn micros(&self, now: Instant) -> u64 {
        now.saturating_duration_since(self.origin).as_micros() as u64
    }

    pub fn stats(&self) -> MediaStats {
        MediaStats {
            sent: self.sender.stats(),
            received: self.assembler.stats(),
            target_kbps: (self.rate.target_bps() / 1000) as u32,
            rtt_ms: self.rtt.map_or(0.0, |r| r.as_secs_f64() * 1000.0),
            loss_pct: self.rate.loss() * 100.0,
            video_jitter_ms: self.video_rx.jitter().as_secs_f64() * 1000.0,
            audio_jitter_ms: self.audio_rx.jitter().as_secs_f64() * 1000.0,
            nacks_sent: self.video_rx.nacks_sent() + self.audio_rx.nacks_sent(),
            ..self.stats
        }
    }

    // ---- sending side (the encoders) ----

    pub fn target_bps(&self) -> u64 {
        self.rate.target_bps()
    }

    /// Loss the receiver sees, in percent: how much in-band FEC Opus should spend.
    pub fn loss_pct(&self) -> u8 {
        (self.rate.loss() * 100.0).round().clamp(0.0, 100.0) as u8
    }

    /// Capture should skip the next video frame rather than add to a congested queue.
    pub fn congested(&self) -> bool {
        self.sender.congested()
    }

    pub fn take_keyframe_request(&mut self, now: Instant) -> bool {
        self.sender.take_keyframe_request(now)
    }

    pub fn push_video(&mut self, now: Instant, capture_us: u64, keyframe: bool, data: &[u8]) -> bool {
        self.sender.push_video(now, capture_us, keyframe, data)
    }

    pub fn push_audio(&mut self, capture_us: u64, data: &[u8]) -> bool {
        self.sender.push_audio(capture_us, data)
    }

    // ---- network side ----

    pub fn handle_packet(&mut self, now: Instant, plain: &[u8]) {
        let now_us = self.micros(now);
        match MediaPacket::decode(plain) {
            None => self.stats.malformed += 1,
            Some(MediaPacket::Video(h, payload)) => {
                let rtx = h.flags & FLAG_RETRANSMIT != 0;
                let (_, new) = self.video_rx.on_packet(now, now_us, h.seq, h.capture_us, rtx);
                if new {
                    self.assembler.on_packet(now, &h, payload);
                }
            }
            Some(MediaPacket::Audio(h, payload)) => {
                let rtx = h.flags & FLAG_RETRANSMIT != 0;
                let (_, new) = self.audio_rx.on_packet(now, now_us, h.seq, h.capture_us, rtx);
                if !new {
                    return;
                }
                self.stats.audio_received += 1;
                if self.audio_len == AUDIO_RING {
                    // The audio thread is not keeping up: drop the oldest.
                    self.audio_head = (self.audio_head + 1) % AUDIO_RING;
                    self.audio_len -= 1;
                    self.stats.audio_dropped += 1;
                }
                let slot = &mut self.audio[(self.audio_head + self.audio_len) % AUDIO_RING];
                slot.0 = h;
                slot.1 = payload.len() as u16;
                slot.2[..payload.len()].copy_from_slice(payload);
                self.audio_len += 1;
            }
            Some(MediaPacket::Feedback(f)) => match f {
                Feedback::Report(r) => {
                    if r.echo_us != 0 {
                        let rtt_us = now_us.saturating_sub(r.echo_us).saturating_sub(u64::from(r.held_us));
                        let rtt = Duration::from_micros(rtt_us);
                        self.rtt = Some(self.rtt.map_or(rtt, |old| (old * 7 + rtt) / 8));
                    }
                    self.peer_report = Some((r.sent_us, now));
                    self.rate.on_report(now, &r);
                    self.sender.set_rate(self.rate.target_bps());
                }
                Feedback::Nack { stream, base, mask } => self.sender.on_nack(stream, base, mask),
                Feedback::KeyframeRequest => self.sender.on_keyframe_request(),
            },
        }
    }

    fn rtt_or_default(&self) -> Duration {
        self.rtt.unwrap_or(Duration::from_millis(20))
    }

    fn frame_deadline(&self) -> Duration {
        (self.cfg.frame_deadline + 2 * self.rtt_or_default()).min(Duration::from_millis(500))
    }

    pub fn handle_timeout(&mut self, now: Instant) {
        let rtt = self.rtt_or_default();
        if now >= self.next_report {
            self.next_report = now + self.cfg.report_interval;
            let now_us = self.micros(now);
            let (echo_us, held_us) = match self.peer_report {
                Some((sent, at)) => (sent, now.saturating_duration_since(at).as_micros().min(u32::MAX as u128) as u32),
                None => (0, 0),
            };
            let r = Report {
                sent_us: now_us.max(1),
                echo_us,
                held_us,
                video: self.video_rx.report(),
                audio: self.audio_rx.report(),
            };
            self.sender.push_feedback(Feedback::Report(r));
        }
        let deadline = self.frame_deadline();
        self.assembler.expire(now, deadline);
        while let Some((base, mask)) = self.video_rx.poll_nack(now, rtt, deadline) {
            self.sender.push_feedback(Feedback::Nack { stream: Stream::Video, base, mask });
        }
        while let Some((base, mask)) = self.audio_rx.poll_nack(now, rtt, self.cfg.audio_repair) {
            self.sender.push_feedback(Feedback::Nack { stream: Stream::Audio, base, mask });
        }
        self.request_keyframe_if_needed(now);
    }

    /// Asked again if none came within a round trip plus the sender's 200 ms limit.
    fn pli_interval(&self) -> Duration {
        Duration::from_millis(200) + self.rtt_or_default()
    }

    fn request_keyframe_if_needed(&mut self, now: Instant) {
        let again = self.pli_interval();
        if self.assembler.wants_keyframe() && self.last_pli.is_none_or(|t| now >= t + again) {
            self.last_pli = Some(now);
            self.stats.keyframe_requests_sent += 1;
            self.sender.push_feedback(Feedback::KeyframeRequest);
        }
    }

    /// The next plaintext to encrypt and send.
    pub fn poll_transmit(&mut self, now: Instant, out: &mut [u8]) -> Option<usize> {
        self.sender.poll_transmit(now, out)
    }

    pub fn poll_timeout(&self) -> Option<Instant> {
        let mut t = self.next_report;
        let deadline = self.frame_deadline();
        for x in [
            self.sender.poll_timeout(),
            self.video_rx.poll_timeout(),
            self.audio_rx.poll_timeout(),
            self.assembler.poll_timeout(deadline),
            self.last_pli.filter(|_| self.assembler.wants_keyframe()).map(|p| p + self.pli_interval()),
        ]
        .into_iter()
        .flatten()
        {
            t = t.min(x);
        }
        Some(t)
    }

    // ---- receiving side (decoder and speaker) ----

    /// The next whole video frame, in order, copied into `out` (`assembler::MAX_FRAME` bytes).
    pub fn poll_video_frame(&mut self, now: Instant, out: &mut [u8]) -> Option<FrameInfo> {
        let f = self.assembler.poll_frame(now, self.frame_deadline(), out);
        self.request_keyframe_if_needed(now);
        f
    }

    /// The next received audio packet, copied into `out`.
    pub fn poll_audio(&mut self, out: &mut [u8]) -> Option<(AudioHeader, usize)> {
        if self.audio_len == 0 {
            return None;
        }
        let (h, len, data) = &self.audio[self.audio_head];
        let n = usize::from(*len);
        out.get_mut(..n)?.copy_from_slice(&data[..n]);
        let h = *h;
        self.audio_head = (self.audio_head + 1) % AUDIO_RING;
        self.audio_len -= 1;
        Some((h, n))
    }
}
