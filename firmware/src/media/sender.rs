//! The sending half of a call's media: packetizes encoded frames, paces video, answers NACKs
//! from its history and serves keyframe requests. Audio and feedback jump the pacing queue:
//! audio never waits for video.
use super::history::History;
use super::packet::{
    AudioHeader, FLAG_KEYFRAME, FLAG_RETRANSMIT, Feedback, MAX_FRAGMENTS, MAX_VIDEO_PAYLOAD, Stream, VIDEO_HEADER_LEN,
    VideoHeader, write_audio, write_feedback, write_video_header,
};
use serde::Serialize;
use std::collections::VecDeque;
use std::time::{Duration, Instant};

#[derive(Debug, Clone, Copy)]
pub struct SenderConfig {
    /// Video packets kept for retransmission (about 3 s at 1.5 Mbit/s).
    pub history: usize,
    pub audio_history: usize,
    /// Video is paced at this multiple of the target bitrate, with bursts of `burst` allowed, so a
    /// keyframe leaves quickly but never floods a slow link.
    pub pacing_factor: f64,
    pub burst: Duration,
    /// Above this much queued video, capture skips frames before encoding them.
    pub max_backlog: Duration,
    /// Keyframes are sent at most this often on request.
    pub keyframe_gap: Duration,
    /// … and at least this often anyway, so a receiver that lost track recovers even if its
    /// requests are lost.
    pub keyframe_period: Duration,
}

impl Default for SenderConfig {
    fn default() -> Self {
        SenderConfig {
            history: 512,
            audio_history: 64,
            pacing_factor: 4.0,
            burst: Duration::from_millis(40),
            max_backlog: Duration::from_millis(60),
            keyframe_gap: Duration::from_millis(200),
            keyframe_period: Duration::from_secs(10),
        }
    }
}

#[derive(Debug, Clone, Copy, Default, Serialize, PartialEq, Eq)]
pub struct SenderStats {
    pub frames_sent: u64,
    pub keyframes_sent: u64,
    /// Encoded frames that could not be queued (queue full, too large, or waiting for a keyframe).
    pub frames_dropped: u64,
    pub video_packets: u64,
    pub video_bytes: u64,
    pub audio_packets: u64,
    pub retransmits: u64,
    pub nacks_received: u64,
    pub keyframe_requests: u64,
}

pub struct MediaSender {
    cfg: SenderConfig,
    video: History,
    next_seq: u64,
    frame_no: u16,
    queue: VecDeque<u64>,
    queued_bytes: usize,
    rtx: VecDeque<u64>,
    audio: History,
    audio_seq: u64,
    audio_pending: VecDeque<u64>,
    audio_rtx: VecDeque<u64>,
    feedback: VecDeque<Feedback>,
    rate_bps: u64,
    budget: f64,
    refilled: Option<Instant>,
    /// A frame was dropped after encoding: P-frames would reference it, so none go out until
    /// the next keyframe.
    broken: bool,
    keyframe_wanted: bool,
    last_keyframe: Option<Instant>,
    stats: SenderStats,
}

const RTX_QUEUE: usize = 128;
const FEEDBACK_QUEUE: usize = 16;
const AUDIO_QUEUE: usize = 8;

impl MediaSender {
    pub fn new(cfg: SenderConfig) -> Self {
        MediaSender {
            cfg,
            video: History::new(cfg.history),
            next_seq: 1 << 16,
            frame_no: 0,
            queue: VecDeque::with_capacity(cfg.history / 2),
            queued_bytes: 0,
            rtx: VecDeque::with_capacity(RTX_QUEUE),
            audio: History::new(cfg.audio_history),
            audio_seq: 1 << 16,
            audio_pending: VecDeque::with_capacity(AUDIO_QUEUE),
            audio_rtx: VecDeque::with_capacity(AUDIO_QUEUE * 2),
            feedback: VecDeque::with_capacity(FEEDBACK_QUEUE),
            rate_bps: 1_000_000,
            budget: 0.0,
            refilled: None,
            broken: false,
            keyframe_wanted: true,
            last_keyframe: None,
            stats: SenderStats::default(),
        }
    }

    /// Forgets everything from the previous call; memory stays allocated.
    pub fn reset(&mut self, rate_bps: u64) {
        self.video.clear();
        self.audio.clear();
        self.queue.clear();
        self.rtx.clear();
        self.audio_pending.clear();
        self.audio_rtx.clear();
        self.feedback.clear();
        self.queued_bytes = 0;
        self.frame_no = 0;
        self.rate_bps = rate_bps;
        self.budget = 0.0;
        self.refilled = None;
        self.broken = false;
        self.keyframe_wanted = true;
        self.last_keyframe = None;
        self.stats = SenderStats::default();
    }

    pub fn stats(&self) -> SenderStats {
        self.stats
    }

    pub fn set_rate(&mut self, bps: u64) {
        self.rate_bps = bps.max(1);
    }

    fn pace_rate(&self) -> f64 {
        self.rate_bps as f64 * self.cfg.pacing_factor / 8.0
    }

    /// How long the video already queued will take to leave.
    pub fn backlog(&self) -> Duration {
        Duration::from_secs_f64(self.queued_bytes as f64 / self.pace_rate())
    }

    /// Whether capture should skip encoding the next frame (the queue is congested).
    pub fn congested(&self) -> bool {
        self.backlog() > self.cfg.max_backlog
    }

    /// True when the encoder should make the next frame a keyframe (at most one per `keyframe_gap`).
    pub fn take_keyframe_request(&mut self, now: Instant) -> bool {
        if self.last_keyframe.is_some_and(|t| now >= t + self.cfg.keyframe_period) {
            self.keyframe_wanted = true;
        }
        if !self.keyframe_wanted || self.last_keyframe.is_some_and(|t| now < t + self.cfg.keyframe_gap) {
            return false;
        }
        self.keyframe_wanted = false;
        self.last_keyframe = Some(now);
        true
    }

    /// Queues an encoded access unit. Returns false if it was dropped.
    pub fn push_video(&mut self, now: Instant, capture_us: u64, keyframe: bool, data: &[u8]) -> bool {
        if keyframe {
            self.last_keyframe = Some(now);
            if self.queue.len() + data.len().div_ceil(MAX_VIDEO_PAYLOAD) > self.queue_cap() {
                // Frames still waiting are superseded by a keyframe the queue can hold.
                self.flush_queue();
            }
        }
        let count = data.len().div_ceil(MAX_VIDEO_PAYLOAD);
        if data.is_empty() || (self.broken && !keyframe) {
            self.stats.frames_dropped += u64::from(!data.is_empty());
            return false;
        }
        if count > MAX_FRAGMENTS || self.queue.len() + count > self.queue_cap() {
            self.stats.frames_dropped += 1;
            self.broken = true;
            self.keyframe_wanted = true;
            return false;
        }
        let frag = data.len().div_ceil(count);
        for (i, chunk) in data.chunks(frag).enumerate() {
            let seq = self.next_seq;
            self.next_seq += 1;
            let h = VideoHeader {
                seq: seq as u16,
                frame: self.frame_no,
                index: i as u8,
                count: count as u8,
                flags: if keyframe { FLAG_KEYFRAME } else { 0 },
                capture_us,
            };
            let slot = self.video.slot_mut(seq);
            write_video_header(slot, &h);
            slot[VIDEO_HEADER_LEN..VIDEO_HEADER_LEN + chunk.len()].copy_from_slice(chunk);
            self.video.commit(seq, VIDEO_HEADER_LEN + chunk.len());
            self.queue.push_back(seq);
            self.queued_bytes += VIDEO_HEADER_LEN + chunk.len();
        }
        self.frame_no = self.frame_no.wrapping_add(1);
        self.broken = false;
        self.stats.frames_sent += 1;
        self.stats.keyframes_sent += u64::from(keyframe);
        true
    }

    /// Half the history: a queued packet must still be in the history when a NACK for it comes.
    fn queue_cap(&self) -> usize {
        self.cfg.history / 2
    }

    fn flush_queue(&mut self) {
        self.queue.clear();
        self.queued_bytes = 0;
    }

    pub fn push_audio(&mut self, capture_us: u64, payload: &[u8]) -> bool {
        let seq = self.audio_seq;
        let h = AudioHeader { seq: seq as u16, flags: 0, capture_us };
        let Some(n) = write_audio(self.audio.slot_mut(seq), &h, payload) else { return false };
        self.audio.commit(seq, n);
        self.audio_seq += 1;
        if self.audio_pending.len() >= AUDIO_QUEUE {
            self.audio_pending.pop_front();
        }
        self.audio_pending.push_back(seq);
        true
    }

    pub fn push_feedback(&mut self, f: Feedback) {
        if self.feedback.len() >= FEEDBACK_QUEUE {
            self.feedback.pop_front();
        }
        self.feedback.push_back(f);
    }

    pub fn on_keyframe_request(&mut self) {
        self.stats.keyframe_requests += 1;
        self.keyframe_wanted = true;
    }

    pub fn on_nack(&mut self, stream: Stream, base: u16, mask: u64) {
        self.stats.nacks_received += 1;
        let (last, history, queue, cap) = match stream {
            Stream::Video => (self.next_seq - 1, &self.video, &mut self.rtx, RTX_QUEUE),
            Stream::Audio => (self.audio_seq - 1, &self.audio, &mut self.audio_rtx, AUDIO_QUEUE * 2),
        };
        let mut want = |s: u16| {
            // Extend to the 64-bit sequence at or below the last one sent.
            let seq = last - u64::from((last as u16).wrapping_sub(s));
            if history.get(seq).is_some() && !queue.contains(&seq) && queue.len() < cap {
                queue.push_back(seq);
            }
        };
        want(base);
        for i in 0..64 {
            if mask & (1 << i) != 0 {
                want(base.wrapping_add(i + 1));
            }
        }
    }

    fn refill(&mut self, now: Instant) {
        let rate = self.pace_rate();
        let cap = rate * self.cfg.burst.as_secs_f64();
        match self.refilled {
            None => self.budget = cap,
            Some(t) => self.budget = (self.budget + rate * now.saturating_duration_since(t).as_secs_f64()).min(cap),
        }
        self.refilled = Some(now);
    }

    /// Writes the next plaintext to send into `out` (at least `MAX_PLAINTEXT` bytes).
    pub fn poll_transmit(&mut self, now: Instant, out: &mut [u8]) -> Option<usize> {
        if let Some(seq) = self.audio_pending.pop_front() {
            self.stats.audio_packets += 1;
            return copy(self.audio.get(seq), out, None);
        }
        if let Some(f) = self.feedback.pop_front() {
            return write_feedback(out, &f);
        }
        if let Some(seq) = self.audio_rtx.pop_front() {
            self.stats.retransmits += 1;
            return copy(self.audio.get(seq), out, Some(AUDIO_FLAGS_AT));
        }
        if self.rtx.is_empty() && self.queue.is_empty() {
            return None;
        }
        self.refill(now);
        if self.budget <= 0.0 {
            return None;
        }
        let (n, retransmit) = loop {
            let (seq, retransmit) = match self.rtx.pop_front() {
                Some(s) => (s, true),
                None => (self.queue.pop_front()?, false),
            };
            // A packet no longer in the history (overwritten) is skipped.
            if let Some(n) = copy(self.video.get(seq), out, retransmit.then_some(VIDEO_FLAGS_AT)) {
                break (n, retransmit);
            }
        };
        if retransmit {
            self.stats.retransmits += 1;
        } else {
            self.queued_bytes = self.queued_bytes.saturating_sub(n);
        }
        self.budget -= n as f64;
        self.stats.video_packets += 1;
        self.stats.video_bytes += n as u64;
        Some(n)
    }

    /// When paced video may go next, if it is waiting for budget.
    pub fn poll_timeout(&self) -> Option<Instant> {
        if self.rtx.is_empty() && self.queue.is_empty() {
            return None;
        }
        let t = self.refilled?;
        if self.budget > 0.0 {
            return Some(t);
        }
        Some(t + Duration::from_secs_f64((-self.budget + 1.0) / self.pace_rate()))
    }
}

/// Where the flags byte sits in the video and audio headers.
const VIDEO_FLAGS_AT: usize = 7;
const AUDIO_FLAGS_AT: usize = 3;

/// Copies a packet from the history; a retransmission is marked in its flags byte at `rtx_flags`.
fn copy(src: Option<&[u8]>, out: &mut [u8], rtx_flags: Option<usize>) -> Option<usize> {
    let src = src?;
    let dst = out.get_mut(..src.len())?;
    dst.copy_from_slice(src);
    if let Some(at) = rtx_flags {
        *dst.get_mut(at)? |= FLAG_RETRANSMIT;
    }
    Some(src.len())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::media::packet::MediaPacket;
    use crate::session::MAX_PLAINTEXT;

    fn drain(s: &mut MediaSender, now: Instant) -> Vec<Vec<u8>> {
        let mut out = vec![0u8; MAX_PLAINTEXT];
        let mut v = Vec::new();
        while let Some(n) = s.poll_transmit(now, &mut out) {
            v.push(out[..n].to_vec());
        }
        v
    }

    #[test]
    fn fragments_and_paces() {
        let t0 = Instant::now();
        let mut s = MediaSender::new(SenderConfig::default());
        s.reset(1_000_000);
        let frame: Vec<u8> = (0..30_000u32).map(|i| i as u8).collect();
        assert!(s.push_video(t0, 42, true, &frame));
        // 4 Mbit/s pacing with a 40 ms burst lets 20 kB out at once, the rest later.
        let first = drain(&mut s, t0);
        let sent: usize = first.iter().map(|p| p.len()).sum();
        assert!((20_000..22_000).contains(&sent), "{sent}");
        let wake = s.poll_timeout().unwrap();
        assert!(wake > t0 && wake < t0 + Duration::from_millis(5));
        let rest = drain(&mut s, t0 + Duration::from_millis(30));
        let mut all = first;
        all.extend(rest);
        let mut got = Vec::new();
        for (i, p) in all.iter().enumerate() {
            let Some(MediaPacket::Video(h, payload)) = MediaPacket::decode(p) else { panic!("not video") };
            assert_eq!((h.index as usize, h.count, h.frame, h.capture_us, h.flags), (i, 27, 0, 42, FLAG_KEYFRAME));
            got.extend_from_slice(payload);
        }
        assert_eq!(got, frame);
        assert!(s.backlog().is_zero());
    }

    #[test]
    fn audio_jumps_the_video_queue_and_nacks_resend() {
        let t0 = Instant::now();
        let mut s = MediaSender::new(SenderConfig::default());
        s.reset(200_000);
        assert!(s.push_video(t0, 1, true, &[7u8; 9000]));
        let _ = drain(&mut s, t0); // budget spent
        assert!(s.push_video(t0, 2, false, &[8u8; 3000]));
        assert!(s.push_audio(3, &[1, 2, 3]));
        let out = drain(&mut s, t0);
        assert_eq!(out.len(), 1, "only audio goes while video waits for budget");
        assert!(matches!(MediaPacket::decode(&out[0]), Some(MediaPacket::Audio(_, [1, 2, 3]))));
        // NACK for the second packet of the keyframe (seq 1) comes back marked as a retransmission.
        let later = t0 + Duration::from_secs(1);
        s.on_nack(Stream::Video, 1, 0);
        let out = drain(&mut s, later);
        let Some(MediaPacket::Video(h, _)) = MediaPacket::decode(&out[0]) else { panic!() };
        assert_eq!((h.seq, h.index, h.flags), (1, 1, FLAG_KEYFRAME | FLAG_RETRANSMIT));
        assert_eq!(s.stats().retransmits, 1);
    }

    #[test]
    fn keyframe_requests_are_rate_limited() {
        let t0 = Instant::now();
        let mut s = MediaSender::new(SenderConfig::default());
        s.reset(1_000_000);
        assert!(s.take_keyframe_request(t0), "a call starts with a keyframe");
        s.on_keyframe_request();
        assert!(!s.take_keyframe_request(t0 + Duration::from_millis(100)));
        assert!(s.take_keyframe_request(t0 + Duration::from_millis(200)));
        assert!(!s.take_keyframe_request(t0 + Duration::from_millis(500)), "served once");
        assert!(!s.take_keyframe_request(t0 + Duration::from_millis(10_100)));
        assert!(s.take_keyframe_request(t0 + Duration::from_millis(10_200)), "periodic");
    }

    #[test]
    fn dropped_frame_holds_p_frames_until_a_keyframe() {
        let t0 = Instant::now();
        let mut s = MediaSender::new(SenderConfig { history: 64, ..Default::default() });
        s.reset(1_000_000);
        assert!(!s.push_video(t0, 0, false, &[0u8; 40 * MAX_VIDEO_PAYLOAD]), "more than the queue holds");
        assert!(!s.push_video(t0, 1, false, &[0u8; 100]), "would reference the dropped frame");
        assert!(s.take_keyframe_request(t0));
        assert!(s.push_video(t0, 2, true, &[0u8; 100]));
        assert!(s.push_video(t0, 3, false, &[0u8; 100]));
        assert_eq!(s.stats().frames_dropped, 2);
    }
}
