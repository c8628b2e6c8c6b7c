//! The simulated camera: a moving test pattern (a drifting colour gradient and a bouncing box,
//! enough motion to exercise an encoder) carrying a stamp with its frame number and capture time.
use crate::camera::{Camera, pack_stamp};
use crate::frame::I420Frame;
use crate::{BoardError, stamp};

/// Period of the luma and chroma ramps, in pixels.
const LUMA_PERIOD: usize = 220;
const CHROMA_PERIOD: usize = 128;

pub struct SimCamera {
    width: usize,
    height: usize,
    fps: u32,
    seq: u64,
    /// One ramp period longer than a row: every row is a window into it, copied without per-pixel
    /// arithmetic (capture is then a few memcpys, not a modulo per pixel).
    luma_ramp: Vec<u8>,
    chroma_ramp: Vec<u8>,
}

impl SimCamera {
    pub fn new(width: usize, height: usize, fps: u32) -> Self {
        let (w, h) = (width & !1, height & !1);
        let luma_ramp = (0..w + LUMA_PERIOD).map(|i| (16 + i % LUMA_PERIOD) as u8).collect();
        let chroma_ramp = (0..w / 2 + CHROMA_PERIOD).map(|i| (64 + i % CHROMA_PERIOD) as u8).collect();
        SimCamera { width: w, height: h, fps: fps.max(1), seq: 0, luma_ramp, chroma_ramp }
    }
}

impl Camera for SimCamera {
    fn size(&self) -> (usize, usize) {
        (self.width, self.height)
    }

    fn fps(&self) -> u32 {
        self.fps
    }

    fn capture(&mut self, now_us: u64, f: &mut I420Frame) -> Result<(), BoardError> {
        if f.width != self.width || f.height != self.height {
            return Err(BoardError(format!(
                "frame buffer is {}x{}, camera is {}x{}",
                f.width, f.height, self.width, self.height
            )));
        }
        let t = self.seq as usize;
        let (w, h) = (self.width, self.height);
        // Luma 16 + (x + y + 2t) mod 220, U 64 + (x + t) mod 128, V 64 + (y + 2t) mod 128.
        if w > 0 {
            for (y, row) in f.y.chunks_exact_mut(w).enumerate() {
                let s = (y + 2 * t) % LUMA_PERIOD;
                row.copy_from_slice(&self.luma_ramp[s..s + w]);
            }
            let s = t % CHROMA_PERIOD;
            let u_row = &self.chroma_ramp[s..s + w / 2];
            for (y, (u, v)) in f.u.chunks_exact_mut(w / 2).zip(f.v.chunks_exact_mut(w / 2)).enumerate() {
                u.copy_from_slice(u_row);
                v.fill((64 + (y + 2 * t) % CHROMA_PERIOD) as u8);
            }
        }
        // A box bouncing across the lower part of the picture.
        let size = (h / 6).max(8);
        let span_x = w.saturating_sub(size).max(1);
        let span_y = (h / 2).saturating_sub(size).max(1);
        let bx = bounce(4 * t, span_x);
        let by = h / 2 + bounce(3 * t, span_y);
        for y in by..(by + size).min(h) {
            f.y[y * w + bx..y * w + (bx + size).min(w)].fill(235);
        }
        f.seq = self.seq;
        f.captured_us = now_us;
        stamp::write(f, pack_stamp(self.seq, now_us));
        self.seq += 1;
        Ok(())
    }
}

fn bounce(pos: usize, span: usize) -> usize {
    let p = pos % (2 * span);
    if p < span { p } else { 2 * span - p - 1 }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::camera::unpack_stamp;

    #[test]
    fn frames_move_and_carry_their_stamp() {
        let mut cam = SimCamera::new(640, 480, 30);
        let mut a = I420Frame::new(640, 480);
        let mut b = I420Frame::new(640, 480);
        cam.capture(1_000, &mut a).unwrap();
        cam.capture(34_333, &mut b).unwrap();
        assert_ne!(a.y, b.y, "the picture moves");
        assert_eq!(stamp::read(&b.y, 640, 480).map(unpack_stamp), Some((1, 34_333)));
        assert_eq!((b.seq, b.captured_us), (1, 34_333));
        let mut wrong = I420Frame::new(320, 240);
        assert!(cam.capture(0, &mut wrong).is_err());
        let mut empty = I420Frame::new(0, 0);
        assert!(SimCamera::new(0, 0, 30).capture(0, &mut empty).is_ok());
    }

    #[test]
    fn pattern_is_the_documented_formula() {
        let mut cam = SimCamera::new(64, 48, 30);
        let mut f = I420Frame::new(64, 48);
        for t in 0..300usize {
            cam.capture(0, &mut f).unwrap();
            // Below the stamp and left of the box (which starts at the picture's vertical middle).
            for y in 20..24 {
                for x in 0..64 {
                    assert_eq!(f.y[y * 64 + x], (16 + (x + y + 2 * t) % 220) as u8);
                }
            }
            for y in 10..12 {
                for x in 0..32 {
                    assert_eq!(f.u[y * 32 + x], (64 + (x + t) % 128) as u8);
                    assert_eq!(f.v[y * 32 + x], (64 + (y + 2 * t) % 128) as u8);
                }
            }
        }
    }

    #[test]
    fn stamp_packing() {
        assert_eq!(unpack_stamp(pack_stamp(5, 123_456_789)), (5, 123_456_789));
        assert_eq!(unpack_stamp(pack_stamp(1 << 24, 1 << 40)), (0, 0));
    }
}
