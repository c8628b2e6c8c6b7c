//! Audio as the firmware sees it: 48 kHz mono 16-bit PCM in 10 or 20 ms blocks, in buffers the
//! caller owns.
//!
//! The devices keep the time, not the caller: a microphone says when its block was captured, a
//! speaker when a block will be heard, both on the board's monotonic clock (µs since
//! `MediaSpec::clock`). A real sound card runs on its own crystal; the audio thread is paced by
//! the microphone's blocks, never by a timer, so it cannot lose or invent samples.
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

/// What the microphone says about a block it handed out.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Captured {
    /// When the block's first sample was captured (board clock, µs).
    pub at_us: u64,
    /// Audio the device lost just before this block (its buffer overflowed), µs; 0 normally.
    pub lost_us: u64,
}

/// Counts of a device's buffer faults: overruns for a microphone, underruns for a speaker.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Xruns {
    pub count: u64,
    /// Audio lost (microphone) or silence played (speaker), µs.
    pub us: u64,
}

pub trait AudioIn: Send {
    /// Starts capturing afresh: anything buffered before is dropped.
    fn start(&mut self) -> Result<(), BoardError>;
    /// Fills `block` with the next samples in order, waiting until the device has them; a late
    /// caller gets buffered blocks at once, back to back.
    fn read(&mut self, block: &mut [i16]) -> Result<Captured, BoardError>;
    fn overruns(&self) -> Xruns {
        Xruns::default()
    }
    /// Test-signal bursts captured so far (sim microphones only; see `sim::audio`).
    fn bursts_captured(&self) -> u64 {
        0
    }
}

pub trait AudioOut: Send {
    /// Starts playing afresh: anything queued is dropped.
    fn start(&mut self) -> Result<(), BoardError>;
    /// How long until a block written now would start to be heard, µs (ALSA's delay).
    fn delay_us(&mut self) -> u64;
    /// Queues `block`; returns when its first sample will be heard (board clock, µs).
    fn play(&mut self, block: &[i16]) -> Result<u64, BoardError>;
    fn underruns(&self) -> Xruns {
        Xruns::default()
    }
    /// Mouth-to-ear latencies measured from a known test signal, in µs (sim speakers only).
    fn measured_latencies_us(&self) -> &[u64] {
        &[]
    }
}
