//! The display: an RGB888 framebuffer the firmware draws into, then presents.
use crate::BoardError;
use crate::frame::I420Frame;

pub trait Display: Send {
    fn size(&self) -> (usize, usize);
    /// The back buffer: width × height × 3 bytes, RGB, row by row.
    fn framebuffer(&mut self) -> &mut [u8];
    fn present(&mut self) -> Result<(), BoardError>;
}

/// Draws `src` (I420, BT.601 limited range) into an RGB888 buffer of width `dst_w` at (x0, y0),
/// scaled by nearest neighbour to `w`×`h`; parts outside the buffer are clipped.
#[allow(clippy::too_many_arguments)]
pub fn blit_i420(
    src: &I420Frame,
    dst: &mut [u8],
    dst_w: usize,
    dst_h: usize,
    x0: usize,
    y0: usize,
    w: usize,
    h: usize,
) {
    if src.width == 0 || src.height == 0 || w == 0 || h == 0 {
        return;
    }
    let cw = src.width / 2;
    for dy in 0..h.min(dst_h.saturating_sub(y0)) {
        let sy = dy * src.height / h;
        for dx in 0..w.min(dst_w.saturating_sub(x0)) {
            let sx = dx * src.width / w;
            let yv = i32::from(src.y[sy * src.width + sx]) - 16;
            let u = i32::from(src.u[(sy / 2) * cw + sx / 2]) - 128;
            let v = i32::from(src.v[(sy / 2) * cw + sx / 2]) - 128;
            // Integer BT.601: R = 1.164Y + 1.596V, G = 1.164Y - 0.392U - 0.813V, B = 1.164Y + 2.017U.
            let c = 298 * yv + 128;
            let px = ((y0 + dy) * dst_w + x0 + dx) * 3;
            dst[px] = ((c + 409 * v) >> 8).clamp(0, 255) as u8;
            dst[px + 1] = ((c - 100 * u - 208 * v) >> 8).clamp(0, 255) as u8;
            dst[px + 2] = ((c + 516 * u) >> 8).clamp(0, 255) as u8;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn converts_and_clips() {
        let mut f = I420Frame::new(4, 4);
        f.y.fill(235); // white
        let mut fb = vec![0u8; 6 * 6 * 3];
        blit_i420(&f, &mut fb, 6, 6, 4, 4, 4, 4); // half off-screen
        assert_eq!(&fb[(4 * 6 + 4) * 3..(4 * 6 + 4) * 3 + 3], &[255, 255, 255]);
        assert_eq!(&fb[0..3], &[0, 0, 0], "outside the target area untouched");
        f.y.fill(16); // black
        blit_i420(&f, &mut fb, 6, 6, 0, 0, 2, 2);
        assert_eq!(&fb[0..3], &[0, 0, 0]);
        // Pure red in BT.601: Y=81, U=90, V=240.
        f.y.fill(81);
        f.u.fill(90);
        f.v.fill(240);
        blit_i420(&f, &mut fb, 6, 6, 0, 0, 2, 2);
        let (r, g, b) = (fb[0], fb[1], fb[2]);
        assert!(r > 250 && g < 5 && b < 5, "{r} {g} {b}");
    }
}
