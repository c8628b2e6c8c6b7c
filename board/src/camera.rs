//! The camera as the firmware sees it: I420 frames with a sequence number and capture time,
//! written into a frame the caller owns (no allocation per frame).
use crate::BoardError;
use crate::frame::I420Frame;

pub trait Camera: Send {
    fn size(&self) -> (usize, usize);
    fn fps(&self) -> u32;
    /// Fills `frame` with the next picture, captured at `now_us` (board monotonic clock, µs).
    fn capture(&mut self, now_us: u64, frame: &mut I420Frame) -> Result<(), BoardError>;
}

/// The stamp payload the sim camera writes: frame number (24 bits) and capture time (40 bits of
/// microseconds, about 12 days before it wraps).
pub fn pack_stamp(seq: u64, captured_us: u64) -> u64 {
    ((seq & 0xff_ffff) << 40) | (captured_us & 0xff_ffff_ffff)
}

pub fn unpack_stamp(p: u64) -> (u64, u64) {
    (p >> 40, p & 0xff_ffff_ffff)
}
