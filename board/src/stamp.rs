//! A machine-readable stamp drawn into a frame's luma: 64 bits of payload (the sim camera puts
//! the frame number and capture time there) plus a 16-bit Fletcher checksum, as 80 black/white
//! square blocks in two rows at the top of the frame: 16x16 (one macroblock) from 640 pixels
//! wide, smaller on smaller frames. Blocks are macroblock-aligned and the
//! decoder averages each block's centre, so the stamp survives lossy H.264 coding; the checksum
//! tells a damaged stamp from a good one. The receiver reads it back to measure glass-to-glass
//! latency from what it actually decoded.
use crate::frame::I420Frame;

const PER_ROW: usize = 40;
const BITS: usize = 80;
const DARK: u8 = 16;
const LIGHT: u8 = 235;

/// Block size for a frame width: the largest multiple of 4 up to 16 that fits 40 blocks across.
fn block(width: usize, height: usize) -> Option<usize> {
    let b = ((width / PER_ROW).min(16)) & !3;
    (b >= 4 && height >= 2 * b).then_some(b)
}

fn fletcher16(data: &[u8]) -> u16 {
    let (mut a, mut b) = (0u16, 0u16);
    for &x in data {
        a = (a + u16::from(x)) % 255;
        b = (b + a) % 255;
    }
    (b << 8) | a
}

fn bits_of(payload: u64) -> [bool; BITS] {
    let bytes = payload.to_be_bytes();
    let sum = fletcher16(&bytes);
    let mut bits = [false; BITS];
    for (i, b) in bits.iter_mut().enumerate() {
        *b = if i < 64 { (payload >> (63 - i)) & 1 == 1 } else { (sum >> (79 - i)) & 1 == 1 };
    }
    bits
}

/// Draws the stamp; frames narrower or shorter than the stamp are left unchanged (returns false).
pub fn write(frame: &mut I420Frame, payload: u64) -> bool {
    let Some(bs) = block(frame.width, frame.height) else { return false };
    for (i, bit) in bits_of(payload).iter().enumerate() {
        let (bx, by) = ((i % PER_ROW) * bs, (i / PER_ROW) * bs);
        let value = if *bit { LIGHT } else { DARK };
        for y in by..by + bs {
            let row = y * frame.width;
            frame.y[row + bx..row + bx + bs].fill(value);
        }
        // Neutral chroma under the stamp so colour bleeding cannot shift the luma decision.
        let (cw, cx, cy) = (frame.width / 2, bx / 2, by / 2);
        for y in cy..cy + bs / 2 {
            frame.u[y * cw + cx..y * cw + cx + bs / 2].fill(128);
            frame.v[y * cw + cx..y * cw + cx + bs / 2].fill(128);
        }
    }
    true
}

/// Reads a stamp from luma; None if absent or damaged (checksum mismatch).
pub fn read(y_plane: &[u8], width: usize, height: usize) -> Option<u64> {
    let bs = block(width, height)?;
    if y_plane.len() < width * height {
        return None;
    }
    let (lo, hi) = (bs / 4, bs - bs / 4);
    let area = ((hi - lo) * (hi - lo)) as u32;
    let mut payload = 0u64;
    let mut sum = 0u16;
    for i in 0..BITS {
        let (bx, by) = ((i % PER_ROW) * bs, (i / PER_ROW) * bs);
        let mut acc = 0u32;
        for y in by + lo..by + hi {
            acc += y_plane[y * width + bx + lo..y * width + bx + hi].iter().map(|&p| u32::from(p)).sum::<u32>();
        }
        let bit = acc / area >= 128;
        if i < 64 {
            payload = (payload << 1) | u64::from(bit);
        } else {
            sum = (sum << 1) | u16::from(bit);
        }
    }
    (fletcher16(&payload.to_be_bytes()) == sum).then_some(payload)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip() {
        let mut f = I420Frame::new(640, 480);
        for p in [0u64, 1, u64::MAX, 0x0123_4567_89ab_cdef] {
            assert!(write(&mut f, p));
            assert_eq!(read(&f.y, f.width, f.height), Some(p));
        }
    }

    #[test]
    fn survives_noise_and_detects_damage() {
        let mut f = I420Frame::new(640, 480);
        write(&mut f, 0xdead_beef_0000_1234);
        // Heavy noise (as from coarse quantisation) does not change the reading.
        let mut x = 12345u32;
        for p in f.y.iter_mut() {
            x = x.wrapping_mul(1_103_515_245).wrapping_add(12345);
            let n = ((x >> 16) % 121) as i32 - 60;
            *p = (i32::from(*p) + n).clamp(0, 255) as u8;
        }
        assert_eq!(read(&f.y, f.width, f.height), Some(0xdead_beef_0000_1234));
        // A flipped block is caught by the checksum.
        let mut g = I420Frame::new(640, 480);
        write(&mut g, 42);
        for y in 0..16 {
            let flipped = 251 - g.y[y * 640];
            g.y[y * 640..y * 640 + 16].fill(flipped);
        }
        assert_eq!(read(&g.y, 640, 480), None);
        // Smaller frames get smaller blocks; too small a frame gets no stamp, and no panic.
        let mut s = I420Frame::new(320, 240);
        assert!(write(&mut s, 7));
        assert_eq!(read(&s.y, 320, 240), Some(7));
        let mut t = I420Frame::new(120, 96);
        assert!(!write(&mut t, 1));
        assert_eq!(read(&t.y, 120, 96), None);
        assert_eq!(read(&[], 640, 480), None);
    }
}
