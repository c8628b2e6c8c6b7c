//! Video frames as the board delivers them: I420 (planar Y, then U and V at half resolution).
//! Buffers are allocated once and refilled in place, so capture allocates nothing per frame.

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct I420Frame {
    pub width: usize,
    pub height: usize,
    pub y: Vec<u8>,
    pub u: Vec<u8>,
    pub v: Vec<u8>,
    /// Capture sequence number, from 0.
    pub seq: u64,
    /// Capture time in microseconds on the board's monotonic clock.
    pub captured_us: u64,
}

impl I420Frame {
    /// A black frame; `width` and `height` must be even (I420 chroma is subsampled 2x2).
    pub fn new(width: usize, height: usize) -> Self {
        let (w, h) = (width & !1, height & !1);
        I420Frame {
            width: w,
            height: h,
            y: vec![16; w * h],
            u: vec![128; (w / 2) * (h / 2)],
            v: vec![128; (w / 2) * (h / 2)],
            seq: 0,
            captured_us: 0,
        }
    }
}
