//! The receiver's adaptive audio jitter buffer, driven by the playout clock.
//!
//! Frame `n` plays at `capture(n) + base + target`: `base` is the lowest transit time (arrival
//! minus capture, clock offset included) seen in the last few seconds and `target` the margin
//! for delay variation, adapted between `min_delay` and `max_delay` from the recent peak
//! variation (up at once, down slowly). The speaker asks for one frame per tick; a frame that is
//! missing when due is rebuilt from the next packet's in-band FEC, or concealed.
use super::packet::{MAX_AUDIO_PAYLOAD, SeqUnwrapper};
use serde::Serialize;
use std::time::Duration;

#[derive(Debug, Clone, Copy)]
pub struct JitterConfig {
    pub frame: Duration,
    pub min_delay: Duration,
    pub max_delay: Duration,
    pub slots: usize,
}

impl JitterConfig {
    pub fn for_frame_ms(ms: u32) -> Self {
        JitterConfig {
            frame: Duration::from_millis(u64::from(ms)),
            min_delay: Duration::from_millis(20),
            max_delay: Duration::from_millis(80),
            slots: 32,
        }
    }
}

/// What to play for one tick.
#[derive(Debug, PartialEq, Eq)]
pub enum Playout<'a> {
    /// Nothing to play yet (the call's audio has not started): play silence.
    Silence,
    /// Decode this packet.
    Packet(&'a [u8]),
    /// The frame was lost; decode it from the next packet's FEC data.
    Fec(&'a [u8]),
    /// The frame was lost: let the decoder conceal it.
    Conceal,
    /// The buffer is growing its delay: one frame of concealment stretches the audio.
    Stretch,
}

#[derive(Debug, Clone, Copy, Default, Serialize, PartialEq, Eq)]
pub struct JitterStats {
    pub played: u64,
    pub fec: u64,
    pub concealed: u64,
    pub stretched: u64,
    pub late: u64,
    /// Frames dropped to catch up after the delay shrank or playout stalled.
    pub skipped: u64,
    /// The longest run of concealed frames (an audible gap), in frames.
    pub longest_gap: u32,
    pub target_us: u32,
}

struct Slot {
    seq: u64,
    capture_us: u64,
    len: u16,
    data: [u8; MAX_AUDIO_PAYLOAD],
}

const EMPTY: u64 = u64::MAX;
const BASE_WINDOW_US: u64 = 10_000_000;
/// The peak delay variation decays by half in about 3 s of 20 ms frames.
const PEAK_DECAY: f64 = 0.995;

pub struct JitterBuffer {
    cfg: JitterConfig,
    slots: Vec<Slot>,
    unwrap: SeqUnwrapper,
    /// The next frame to play and its capture time (known or extrapolated).
    next: Option<(u64, u64)>,
    base: [(i64, u64); 2],
    peak_us: f64,
    target_us: u64,
    gap: u32,
    /// Capture time of the frame last handed out for playout.
    played_capture_us: Option<u64>,
    stats: JitterStats,
}

impl JitterBuffer {
    pub fn new(cfg: JitterConfig) -> Self {
        let slots = (0..cfg.slots.max(4))
            .map(|_| Slot { seq: EMPTY, capture_us: 0, len: 0, data: [0; MAX_AUDIO_PAYLOAD] })
            .collect();
        JitterBuffer {
            cfg,
            slots,
            unwrap: SeqUnwrapper::default(),
            next: None,
            base: [(i64::MAX, 0); 2],
            peak_us: 0.0,
            target_us: cfg.min_delay.as_micros() as u64,
            gap: 0,
            played_capture_us: None,
            stats: JitterStats::default(),
        }
    }

    /// The capture time of the last frame played, for lip sync.
    pub fn played_capture_us(&self) -> Option<u64> {
        self.played_capture_us
    }

    pub fn reset(&mut self) {
        for s in &mut self.slots {
            s.seq = EMPTY;
        }
        self.unwrap.reset();
        self.next = None;
        self.base = [(i64::MAX, 0); 2];
        self.peak_us = 0.0;
        self.target_us = self.cfg.min_delay.as_micros() as u64;
        self.gap = 0;
        self.played_capture_us = None;
        self.stats = JitterStats::default();
    }

    pub fn stats(&self) -> JitterStats {
        JitterStats { target_us: self.target_us as u32, ..self.stats }
    }

    /// The playout delay on top of the lowest transit time.
    pub fn target(&self) -> Duration {
        Duration::from_micros(self.target_us)
    }

    fn frame_us(&self) -> u64 {
        self.cfg.frame.as_micros() as u64
    }

    fn base(&self) -> i64 {
        self.base[0].0.min(self.base[1].0)
    }

    /// A packet arrived at `now_us` (receiver clock). A retransmission is late by design: it
    /// fills its slot but says nothing about the path's delay variation.
    pub fn push(&mut self, now_us: u64, seq: u16, capture_us: u64, retransmit: bool, payload: &[u8]) {
        let ext = self.unwrap.unwrap(seq);
        if payload.is_empty() || payload.len() > MAX_AUDIO_PAYLOAD {
            return;
        }
        let transit = super::loss::transit_us(now_us, capture_us);
        if !retransmit {
            self.observe(now_us, transit);
        }
        // Too late to play, but its delay above counts: the next ones will be in time.
        if self.next.is_some_and(|(n, _)| ext < n) {
            self.stats.late += 1;
            return;
        }
        let n = self.slots.len() as u64;
        let slot = &mut self.slots[(ext % n) as usize];
        slot.seq = ext;
        slot.capture_us = capture_us;
        slot.len = payload.len() as u16;
        slot.data[..payload.len()].copy_from_slice(payload);
    }

    fn observe(&mut self, now_us: u64, transit: i64) {
        if now_us.saturating_sub(self.base[1].1) > BASE_WINDOW_US / 2 {
            self.base[0] = self.base[1];
            self.base[1] = (transit, now_us);
        }
        self.base[1].0 = self.base[1].0.min(transit);
        let variation = transit.saturating_sub(self.base()).max(0) as f64;
        self.peak_us = (self.peak_us * PEAK_DECAY).max(variation);
        // A couple of ms of margin for the playout tick's own timing.
        let want = (self.peak_us as u64 + 2_000)
            .clamp(self.cfg.min_delay.as_micros() as u64, self.cfg.max_delay.as_micros() as u64);
        // Grow at once; shrink only by clear margins, so the delay does not flap.
        if want > self.target_us || want + self.frame_us() / 2 < self.target_us {
            self.target_us = want;
        }
    }

    fn find(&self, seq: u64) -> Option<&Slot> {
        let s = &self.slots[(seq % self.slots.len() as u64) as usize];
        (s.seq == seq).then_some(s)
    }

    fn due(&self, capture_us: u64) -> i64 {
        (capture_us.min(i64::MAX as u64 / 4) as i64).saturating_add(self.base()).saturating_add(self.target_us as i64)
    }

    /// The frame to play in the block starting at `now_us`.
    pub fn pop(&mut self, now_us: u64) -> Playout<'_> {
        let now = now_us as i64;
        let (mut seq, mut cap) = match self.next {
            Some(x) => x,
            None => {
                // Start with the oldest packet held, once it is due.
                let Some(s) = self.slots.iter().filter(|s| s.seq != EMPTY).min_by_key(|s| s.seq) else {
                    return Playout::Silence;
                };
                (s.seq, s.capture_us)
            }
        };
        // Ticks come once a frame: a frame plays at the tick nearest its due time, so on average
        // it waits exactly `target` (rounding up would add half a frame of delay).
        let half = self.frame_us() as i64 / 2;
        if self.next.is_none() && now + half < self.due(cap) {
            return Playout::Silence;
        }
        if self.next.is_some() && now + half < self.due(cap) {
            self.stats.stretched += 1;
            return Playout::Stretch;
        }
        // More than a frame behind (the delay shrank, or playout stalled): skip to catch up, in
        // one step however far behind (a peer's capture times are not to be trusted).
        let behind = now.saturating_sub(self.due(cap)) / self.frame_us().max(1) as i64;
        if behind >= 2 {
            let skip = (behind - 1) as u64;
            for s in &mut self.slots {
                if s.seq != EMPTY && s.seq >= seq && s.seq - seq < skip {
                    s.seq = EMPTY;
                    self.stats.skipped += 1;
                }
            }
            seq += skip;
            cap = self.find(seq).map_or(cap.saturating_add(skip.saturating_mul(self.frame_us())), |s| s.capture_us);
        }
        let next_cap = self.find(seq + 1).map_or(cap.saturating_add(self.frame_us()), |s| s.capture_us);
        self.next = Some((seq + 1, next_cap));
        self.played_capture_us = Some(cap);
        let i = (seq % self.slots.len() as u64) as usize;
        if self.slots[i].seq == seq {
            self.slots[i].seq = EMPTY;
            self.gap = 0;
            self.stats.played += 1;
            let s = &self.slots[i];
            return Playout::Packet(&s.data[..usize::from(s.len)]);
        }
        let j = ((seq + 1) % self.slots.len() as u64) as usize;
        if self.slots[j].seq == seq + 1 {
            self.gap = 0;
            self.stats.fec += 1;
            let s = &self.slots[j];
            return Playout::Fec(&s.data[..usize::from(s.len)]);
        }
        self.gap += 1;
        self.stats.longest_gap = self.stats.longest_gap.max(self.gap);
        self.stats.concealed += 1;
        Playout::Conceal
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const F: u64 = 20_000;

    fn jb() -> JitterBuffer {
        JitterBuffer::new(JitterConfig::for_frame_ms(20))
    }

    fn kind(p: &Playout) -> char {
        match p {
            Playout::Silence => 's',
            Playout::Packet(_) => 'p',
            Playout::Fec(_) => 'f',
            Playout::Conceal => 'c',
            Playout::Stretch => 'x',
        }
    }

    /// Sends frames captured every 20 ms with transit `delay(seq)` (None = lost) and plays on a
    /// 20 ms tick with phase `phase`; returns what each tick played.
    fn run(b: &mut JitterBuffer, frames: u64, phase: u64, delay: impl Fn(u64) -> Option<u64>) -> String {
        let mut arrivals: Vec<(u64, u64)> =
            (0..frames).filter_map(|s| delay(s).map(|d| (s * F + 1_000_000 + d, s))).collect();
        arrivals.sort();
        let mut out = String::new();
        let mut a = 0;
        let mut t = 1_000_000 + phase;
        while out.chars().filter(|&c| c != 's').count() < frames as usize {
            while a < arrivals.len() && arrivals[a].0 <= t {
                let s = arrivals[a].1;
                b.push(arrivals[a].0, s as u16, s * F + 1_000_000, false, &[s as u8]);
                a += 1;
            }
            out.push(kind(&b.pop(t)));
            t += F;
        }
        out
    }

    #[test]
    fn steady_stream_plays_every_frame_after_min_delay() {
        let mut b = jb();
        let out = run(&mut b, 50, 5_000, |_| Some(21_000));
        assert!(out.trim_start_matches('s').starts_with(&"p".repeat(50)), "{out}");
        assert_eq!(b.target(), Duration::from_millis(20));
        // Played at the first tick at or after capture + 21 ms transit + 20 ms target.
        assert_eq!(out.find('p'), Some(2), "{out}");
    }

    #[test]
    fn loss_uses_fec_then_concealment() {
        let mut b = jb();
        let out = run(&mut b, 30, 5_000, |s| (s != 10 && s != 20 && s != 21).then_some(21_000));
        let body = out.trim_start_matches('s');
        assert_eq!(&body[9..13], "pfpp", "{body}");
        assert_eq!(&body[19..24], "pcfpp", "{body}");
        let st = b.stats();
        assert_eq!((st.fec, st.concealed, st.longest_gap), (2, 1, 1));
    }

    #[test]
    fn adapts_to_jitter_and_stays_within_bounds() {
        let mut b = jb();
        // Every 5th packet 35 ms late: the delay grows to cover it, and no frame is lost.
        let out = run(&mut b, 200, 5_000, |s| Some(21_000 + if s % 5 == 3 { 35_000 } else { 0 }));
        assert!(b.target() >= Duration::from_millis(37) && b.target() <= Duration::from_millis(40), "{:?}", b.target());
        let st = b.stats();
        assert!(st.late <= 2 && st.concealed + st.fec <= 2, "{st:?} {out}");
        // Wild jitter is capped at max_delay: late packets are concealed, not waited for.
        let mut b = jb();
        run(&mut b, 100, 5_000, |s| Some(21_000 + if s % 4 == 0 { 150_000 } else { 0 }));
        assert_eq!(b.target(), Duration::from_millis(80));
        assert!(b.stats().late > 10);
    }
}
