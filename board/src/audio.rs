//! Audio as the firmware sees it: 48 kHz mono 16-bit PCM in 10 or 20 ms blocks, in buffers the
//! caller owns.
use crate::BoardError;

pub const SAMPLE_RATE: u32 = 48_000;

/// Samples in a block of `ms` milliseconds.
pub const fn block_len(ms: u32) -> usize {
    (SAMPLE_RATE / 1000 * ms) as usize
}

/// Microseconds from the start of a block to sample `i`.
pub fn sample_offset_us(i: usize) -> u64 {
    i as u64 * 1_000_000 / u64::from(SAMPLE_RATE)
}

pub trait AudioIn: Send {
    /// Fills `block` with the samples captured from `now_us` (board monotonic clock, µs) on.
    fn read(&mut self, now_us: u64, block: &mut [i16]) -> Result<(), BoardError>;
}

pub trait AudioOut: Send {
    /// Plays `block`, its first sample at `now_us`.
    fn play(&mut self, now_us: u64, block: &[i16]) -> Result<(), BoardError>;

    /// Mouth-to-ear latencies measured from a known test signal, in µs (sim speakers only).
    fn measured_latencies_us(&self) -> &[u64] {
        &[]
    }
}
