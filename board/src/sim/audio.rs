//! Simulated microphone and speaker that measure mouth-to-ear latency from the sound itself.
//!
//! Both behave like a sound card with its own sample clock. The microphone captures from the
//! moment it starts, one sample every 1/48000 s, into a bounded buffer: a reader that wakes late
//! gets the buffered blocks back to back, and only a buffer overflow loses audio (counted, and
//! the next block's capture time shows the jump). The speaker plays queued blocks end to end; a
//! block written after the queue ran dry starts when it is written (an underrun, counted).
//!
//! The "air" carries a 20 ms tone burst at every multiple of 500 ms of the board clock
//! (silence in between), so a burst's capture time is implied by its position on that grid; the
//! speaker finds burst onsets at the moment it really plays them and reports onset − grid time.
//! This needs no side channel, only a shared clock, which every device on one machine has.
//! Latencies up to 500 ms are measured unambiguously.
use crate::BoardError;
use crate::audio::{AudioIn, AudioOut, Captured, SAMPLE_RATE, Xruns, sample_offset_us};
use std::time::{Duration, Instant};

pub const BURST_PERIOD_US: u64 = 500_000;
pub const BURST_LEN_US: u64 = 20_000;
const AMPLITUDE: f32 = 12_000.0;
const ONSET_THRESHOLD: i16 = 2_000;
/// Silence needed before a new onset counts (longer than any burst, shorter than the period).
const QUIET_US: u64 = 200_000;
/// How much a device buffers, like a typical ALSA buffer: beyond it the microphone overflows
/// and a speaker write waits.
const BUFFER_US: u64 = 320_000;

fn elapsed_us(clock: Instant) -> u64 {
    clock.elapsed().as_micros() as u64
}

fn samples_to_us(n: u64) -> u64 {
    n * 1_000_000 / u64::from(SAMPLE_RATE)
}

fn us_to_samples(us: u64) -> u64 {
    us * u64::from(SAMPLE_RATE) / 1_000_000
}

/// Either a block, or when to ask again.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MicRead {
    Block(Captured),
    NotYet { ready_at_us: u64 },
}

#[derive(Debug)]
pub struct SimMic {
    clock: Instant,
    /// When sample 0 was captured (µs on `clock`); None until the first read after a start.
    start_us: Option<u64>,
    /// When `start` was called.
    started_at_us: Option<u64>,
    /// Block boundaries fall at this phase of the block length (None: wherever `start` was).
    phase_us: Option<u64>,
    /// The next sample to hand out.
    next: u64,
    overruns: Xruns,
    bursts: u64,
}

impl SimMic {
    pub fn new(clock: Instant) -> Self {
        SimMic {
            clock,
            start_us: None,
            started_at_us: None,
            phase_us: None,
            next: 0,
            overruns: Xruns::default(),
            bursts: 0,
        }
    }

    /// A microphone whose blocks end at `phase_us` past every multiple of the block length on
    /// the board clock: a fixed phase against other devices, as a test needs to average over
    /// phases (a real card's phase is wherever it happened to start).
    pub fn with_phase(clock: Instant, phase_us: u64) -> Self {
        SimMic { phase_us: Some(phase_us), ..Self::new(clock) }
    }

    /// The sample the air carries at absolute time `t_us`.
    pub fn sample_at(t_us: u64) -> i16 {
        let p = t_us % BURST_PERIOD_US;
        if p >= BURST_LEN_US {
            return 0;
        }
        let k = t_us / BURST_PERIOD_US;
        // A different pitch per burst (500..2250 Hz) makes bursts easy to tell apart by ear.
        let freq = 500.0 + 250.0 * (k % 8) as f32;
        let secs = p as f32 / 1e6;
        // 1 ms raised-cosine ramps avoid clicks that codecs smear into the silence.
        let ramp_s = 0.001;
        let edge = secs.min(BURST_LEN_US as f32 / 1e6 - secs);
        let gain = if edge < ramp_s { 0.5 - 0.5 * (std::f32::consts::PI * edge / ramp_s).cos() } else { 1.0 };
        (AMPLITUDE * gain * (2.0 * std::f32::consts::PI * freq * secs).sin()) as i16
    }

    /// The air from `at_us` on, into `block` (for virtual-time harnesses).
    pub fn render(at_us: u64, block: &mut [i16]) {
        for (i, s) in block.iter_mut().enumerate() {
            *s = Self::sample_at(at_us + sample_offset_us(i));
        }
    }

    /// Starts the sample clock at `now_us` (or at the next boundary of its phase).
    pub fn start_at(&mut self, now_us: u64) {
        self.start_us = None;
        self.started_at_us = Some(now_us);
        self.next = 0;
    }

    fn first_sample_at(&self, now_us: u64, block_us: u64) -> u64 {
        let req = self.started_at_us.unwrap_or(now_us);
        match self.phase_us {
            Some(ph) if block_us > 0 => req + ((ph % block_us) + block_us - req % block_us) % block_us,
            _ => req,
        }
    }

    /// The next block if the device has captured it by `now_us` (sans-IO core of `read`).
    pub fn read_at(&mut self, now_us: u64, block: &mut [i16]) -> MicRead {
        let n = block.len() as u64;
        let start = match self.start_us {
            Some(s) => s,
            None => {
                let s = self.first_sample_at(now_us, samples_to_us(n));
                self.start_us = Some(s);
                s
            }
        };
        let captured = if now_us < start { 0 } else { us_to_samples(now_us - start) };
        if captured < self.next + n {
            return MicRead::NotYet { ready_at_us: start + samples_to_us(self.next + n) };
        }
        // The buffer keeps the newest BUFFER_US; whole blocks older than that are gone.
        let keep = us_to_samples(BUFFER_US).max(n);
        let mut lost = 0;
        if captured - self.next > keep {
            let blocks = (captured - self.next - keep).div_ceil(n);
            lost = blocks * n;
            self.next += lost;
            self.overruns.count += 1;
            self.overruns.us += samples_to_us(lost);
        }
        let at_us = start + samples_to_us(self.next);
        Self::render(at_us, block);
        // The tail of a burst that began before the microphone started would be heard as an
        // onset with a made-up latency: the measurement only counts whole bursts.
        let first_whole = start.div_ceil(BURST_PERIOD_US) * BURST_PERIOD_US;
        if at_us < first_whole {
            let n_quiet = us_to_samples(first_whole - at_us).min(n) as usize;
            block[..n_quiet].fill(0);
        }
        let end = start + samples_to_us(self.next + n);
        // Grid points in [at, end): bursts whose onset this block carries.
        self.bursts += end.div_ceil(BURST_PERIOD_US) - at_us.div_ceil(BURST_PERIOD_US);
        self.next += n;
        MicRead::Block(Captured { at_us, lost_us: samples_to_us(lost) })
    }
}

impl AudioIn for SimMic {
    fn start(&mut self) -> Result<(), BoardError> {
        self.start_at(elapsed_us(self.clock));
        Ok(())
    }

    fn read(&mut self, block: &mut [i16]) -> Result<Captured, BoardError> {
        loop {
            match self.read_at(elapsed_us(self.clock), block) {
                MicRead::Block(c) => return Ok(c),
                MicRead::NotYet { ready_at_us } => {
                    let now = elapsed_us(self.clock);
                    std::thread::sleep(Duration::from_micros(ready_at_us.saturating_sub(now).max(50)));
                }
            }
        }
    }

    fn overruns(&self) -> Xruns {
        self.overruns
    }

    fn bursts_captured(&self) -> u64 {
        self.bursts
    }
}

/// Records latencies of detected bursts in a fixed ring (no allocation while playing).
#[derive(Debug)]
pub struct SimSpeaker {
    clock: Instant,
    latencies_us: Vec<u64>,
    next: usize,
    count: u64,
    last_loud_us: Option<u64>,
    played_samples: u64,
    /// When the queued audio runs out (µs on `clock`); None when stopped.
    end_us: Option<u64>,
    underruns: Xruns,
}

impl SimSpeaker {
    pub fn new(clock: Instant, capacity: usize) -> Self {
        SimSpeaker {
            clock,
            latencies_us: vec![0; capacity.max(1)],
            next: 0,
            count: 0,
            last_loud_us: None,
            played_samples: 0,
            end_us: None,
            underruns: Xruns::default(),
        }
    }

    /// Latencies measured so far (the most recent `capacity` of them), in µs.
    pub fn latencies_us(&self) -> &[u64] {
        let n = (self.count as usize).min(self.latencies_us.len());
        &self.latencies_us[..n]
    }

    pub fn bursts_heard(&self) -> u64 {
        self.count
    }

    pub fn played_samples(&self) -> u64 {
        self.played_samples
    }

    pub fn delay_at(&self, now_us: u64) -> u64 {
        self.end_us.map_or(0, |e| e.saturating_sub(now_us))
    }

    /// Queues `block` at `now_us` (sans-IO core of `play`); returns when it will be heard.
    pub fn play_at(&mut self, now_us: u64, block: &[i16]) -> u64 {
        let start = match self.end_us {
            Some(e) if e >= now_us => e,
            Some(e) => {
                self.underruns.count += 1;
                self.underruns.us += now_us - e;
                now_us
            }
            None => now_us,
        };
        for (i, &s) in block.iter().enumerate() {
            if s.unsigned_abs() < ONSET_THRESHOLD.unsigned_abs() {
                continue;
            }
            let t = start + sample_offset_us(i);
            let onset = self.last_loud_us.is_none_or(|last| t.saturating_sub(last) >= QUIET_US);
            self.last_loud_us = Some(t);
            if onset {
                // The burst was captured at the last grid point at or before the onset; the ramp and
                // the first sine peak put the detected onset up to 2 ms after the true one.
                let latency = t % BURST_PERIOD_US;
                let n = self.latencies_us.len();
                self.latencies_us[self.next] = latency;
                self.next = (self.next + 1) % n;
                self.count += 1;
            }
        }
        self.played_samples += block.len() as u64;
        self.end_us = Some(start + samples_to_us(block.len() as u64));
        start
    }
}

impl AudioOut for SimSpeaker {
    fn start(&mut self) -> Result<(), BoardError> {
        self.end_us = None;
        Ok(())
    }

    fn delay_us(&mut self) -> u64 {
        self.delay_at(elapsed_us(self.clock))
    }

    fn play(&mut self, block: &[i16]) -> Result<u64, BoardError> {
        // A full buffer makes the writer wait, as a blocking ALSA write does.
        let wait = self.delay_us().saturating_sub(BUFFER_US);
        if wait > 0 {
            std::thread::sleep(Duration::from_micros(wait));
        }
        Ok(self.play_at(elapsed_us(self.clock), block))
    }

    fn underruns(&self) -> Xruns {
        self.underruns
    }

    fn measured_latencies_us(&self) -> &[u64] {
        self.latencies_us()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::audio::block_len;

    fn mic_speaker() -> (SimMic, SimSpeaker) {
        let c = Instant::now();
        (SimMic::new(c), SimSpeaker::new(c, 64))
    }

    /// Mic → fixed delay line → speaker, in 20 ms blocks over 5 s of virtual time.
    fn measure(delay_us: u64) -> Vec<u64> {
        let (mut mic, mut spk) = mic_speaker();
        let mut block = vec![0i16; block_len(20)];
        mic.start_at(977_000); // in the silence before a burst, off the block grid
        let mut now = 1_000_000;
        while now < 6_000_000 {
            if let MicRead::Block(c) = mic.read_at(now, &mut block) {
                assert_eq!(c.lost_us, 0);
                // The block plays `delay_us` after its capture.
                let heard = spk.play_at(c.at_us + delay_us, &block);
                assert_eq!(heard, c.at_us + delay_us);
            }
            now += 1_000;
        }
        spk.latencies_us().to_vec()
    }

    #[test]
    fn measures_the_delay_it_is_given() {
        for delay_ms in [0u64, 37, 60, 150, 420] {
            let l = measure(delay_ms * 1000);
            assert_eq!(l.len(), 10, "one onset per burst at {delay_ms} ms");
            for x in l {
                assert!(x >= delay_ms * 1000 && x < delay_ms * 1000 + 2000, "{delay_ms} ms measured as {x} us");
            }
        }
    }

    #[test]
    fn silence_between_bursts() {
        assert_eq!(SimMic::sample_at(BURST_PERIOD_US + BURST_LEN_US + 1), 0);
        assert!((0..20_000).map(|us| SimMic::sample_at(us).unsigned_abs()).max().unwrap() > 10_000);
    }

    #[test]
    fn a_late_reader_gets_every_block_back_to_back_with_true_capture_times() {
        let (mut mic, _) = mic_speaker();
        let mut b = vec![0i16; block_len(10)];
        mic.start_at(5_000);
        assert_eq!(mic.read_at(14_999, &mut b), MicRead::NotYet { ready_at_us: 15_000 });
        // Asleep for 47 ms: four blocks are waiting, the fifth is not complete.
        let got: Vec<_> = std::iter::from_fn(|| match mic.read_at(62_000, &mut b) {
            MicRead::Block(c) => Some(c),
            MicRead::NotYet { .. } => None,
        })
        .collect();
        let at: Vec<u64> = got.iter().map(|c| c.at_us).collect();
        assert_eq!(at, [5_000, 15_000, 25_000, 35_000, 45_000]);
        assert!(got.iter().all(|c| c.lost_us == 0));
        assert_eq!(mic.read_at(62_000, &mut b), MicRead::NotYet { ready_at_us: 65_000 });
        assert_eq!(mic.overruns(), Xruns::default());
    }

    #[test]
    fn a_phased_microphone_ends_its_blocks_on_its_phase() {
        let mut mic = SimMic::with_phase(Instant::now(), 4_000);
        let mut b = vec![0i16; block_len(10)];
        mic.start_at(1_234_567);
        assert_eq!(mic.read_at(1_234_567, &mut b), MicRead::NotYet { ready_at_us: 1_254_000 });
        let MicRead::Block(c) = mic.read_at(1_254_000, &mut b) else { panic!("ready") };
        assert_eq!(c.at_us, 1_244_000);
    }

    #[test]
    fn an_overflow_loses_whole_blocks_and_says_so() {
        let (mut mic, _) = mic_speaker();
        let mut b = vec![0i16; block_len(20)];
        mic.start_at(0);
        // One second asleep: only the newest 320 ms are kept.
        let MicRead::Block(c) = mic.read_at(1_000_000, &mut b) else { panic!("a block is ready") };
        assert_eq!(c.lost_us, 680_000);
        assert_eq!(c.at_us, 680_000);
        assert_eq!(mic.overruns(), Xruns { count: 1, us: 680_000 });
    }

    #[test]
    fn the_speaker_queues_and_counts_underruns() {
        let (_, mut spk) = mic_speaker();
        let b = vec![0i16; block_len(10)];
        assert_eq!(spk.play_at(1_000, &b), 1_000);
        assert_eq!(spk.play_at(1_500, &b), 11_000);
        assert_eq!(spk.delay_at(2_000), 19_000);
        // Written 4 ms after the queue ran dry: 4 ms of silence, then it plays at once.
        assert_eq!(spk.play_at(25_000, &b), 25_000);
        assert_eq!(spk.underruns(), Xruns { count: 1, us: 4_000 });
    }

    #[test]
    fn bursts_are_counted_where_they_are_captured() {
        let (mut mic, _) = mic_speaker();
        let mut b = vec![0i16; block_len(20)];
        mic.start_at(490_000);
        let mut now = 490_000;
        while now < 2_600_000 {
            while let MicRead::Block(_) = mic.read_at(now, &mut b) {}
            now += 20_000;
        }
        // Onsets at 0.5, 1.0, 1.5, 2.0 and 2.5 s.
        assert_eq!(mic.bursts_captured(), 5);
    }
}
