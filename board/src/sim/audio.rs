//! Simulated microphone and speaker that measure mouth-to-ear latency from the sound itself.
//!
//! The microphone emits a 20 ms tone burst at every multiple of 500 ms of the monotonic clock
//! (silence in between), so a burst's capture time is implied by its position on that grid; the
//! speaker finds burst onsets in what it plays and reports onset − grid time. This needs no side
//! channel, only a shared clock, which every device on one machine has. Latencies up to 500 ms
//! are measured unambiguously.
use crate::BoardError;
use crate::audio::{AudioIn, AudioOut, sample_offset_us};

pub const BURST_PERIOD_US: u64 = 500_000;
pub const BURST_LEN_US: u64 = 20_000;
const AMPLITUDE: f32 = 12_000.0;
const ONSET_THRESHOLD: i16 = 2_000;
/// Silence needed before a new onset counts (longer than any burst, shorter than the period).
const QUIET_US: u64 = 200_000;

#[derive(Debug, Default)]
pub struct SimMic;

impl SimMic {
    /// The sample the microphone produces at absolute time `t_us`.
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
}

impl AudioIn for SimMic {
    fn read(&mut self, now_us: u64, block: &mut [i16]) -> Result<(), BoardError> {
        for (i, s) in block.iter_mut().enumerate() {
            *s = Self::sample_at(now_us + sample_offset_us(i));
        }
        Ok(())
    }
}

/// Records latencies of detected bursts in a fixed ring (no allocation while playing).
#[derive(Debug)]
pub struct SimSpeaker {
    latencies_us: Vec<u64>,
    next: usize,
    count: u64,
    last_loud_us: Option<u64>,
    played_samples: u64,
}

impl SimSpeaker {
    pub fn new(capacity: usize) -> Self {
        SimSpeaker { latencies_us: vec![0; capacity.max(1)], next: 0, count: 0, last_loud_us: None, played_samples: 0 }
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
}

impl AudioOut for SimSpeaker {
    fn play(&mut self, now_us: u64, block: &[i16]) -> Result<(), BoardError> {
        for (i, &s) in block.iter().enumerate() {
            if s.unsigned_abs() < ONSET_THRESHOLD.unsigned_abs() {
                continue;
            }
            let t = now_us + sample_offset_us(i);
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
        Ok(())
    }

    fn measured_latencies_us(&self) -> &[u64] {
        self.latencies_us()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::audio::block_len;

    /// Mic → fixed delay line → speaker, in 20 ms blocks over 5 s of virtual time.
    fn measure(delay_us: u64) -> Vec<u64> {
        let mut mic = SimMic;
        let mut spk = SimSpeaker::new(64);
        let n = block_len(20);
        let mut block = vec![0i16; n];
        let mut t = 1_000_000; // start off the grid
        while t < 6_000_000 {
            mic.read(t, &mut block).unwrap();
            spk.play(t + delay_us, &block).unwrap();
            t += 20_000;
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
}
