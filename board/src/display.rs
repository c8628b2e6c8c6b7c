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
/// scaled by nearest neighbour to `w`×`h`; parts outside the buffer are clipped. A frame whose
/// planes are shorter than its size says is not drawn. Called for every shown video frame, so it
/// allocates nothing, divides only once per row and converts each repeated row once.
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
    let (sw, sh) = (src.width, src.height);
    let (cw, ch) = (sw.div_ceil(2), sh.div_ceil(2));
    let planes_ok =
        sw.checked_mul(sh).is_some_and(|n| src.y.len() >= n) && src.u.len() >= cw * ch && src.v.len() >= cw * ch;
    if sw == 0 || sh == 0 || w == 0 || h == 0 || dst_w == 0 || !planes_ok {
        return;
    }
    let rows = dst_h.min(dst.len() / 3 / dst_w);
    let vis_w = w.min(dst_w.saturating_sub(x0));
    let vis_h = h.min(rows.saturating_sub(y0));
    if vis_w == 0 || vis_h == 0 {
        return;
    }
    let one_to_one = w == sw && h == sh;
    // Source row for each output row, stepped exactly as floor(dy * sh / h) without overflow.
    let (row_q, row_r) = (sh / h, sh % h);
    let (mut sy, mut row_acc) = (0, 0);
    let mut prev_sy = usize::MAX;
    for dy in 0..vis_h {
        let start = ((y0 + dy) * dst_w + x0) * 3;
        if sy == prev_sy {
            // Scaling up repeats source rows: copy the row just converted.
            let prev = start - dst_w * 3;
            dst.copy_within(prev..prev + vis_w * 3, start);
        } else {
            let out = &mut dst[start..start + vis_w * 3];
            let yrow = &src.y[sy * sw..(sy + 1) * sw];
            let crow = (sy / 2) * cw;
            let (urow, vrow) = (&src.u[crow..crow + cw], &src.v[crow..crow + cw]);
            if one_to_one {
                row_1to1(out, yrow, urow, vrow);
            } else {
                row_scaled(out, yrow, urow, vrow, w);
            }
        }
        prev_sy = sy;
        sy += row_q;
        row_acc += row_r;
        if row_acc >= h {
            row_acc -= h;
            sy += 1;
        }
    }
}

/// Pixels converted per block: small arrays the compiler turns into SIMD (8-10x faster than
/// converting pixel by pixel straight into the interleaved output).
const BLOCK: usize = 32;

#[inline(always)]
fn sat(x: i32) -> u8 {
    (x >> 8).clamp(0, 255) as u8
}

/// Interleaves planar R, G, B into `out` (RGB888, up to BLOCK pixels).
#[inline(always)]
fn interleave(out: &mut [u8], r: &[u8; BLOCK], g: &[u8; BLOCK], b: &[u8; BLOCK]) {
    for (i, o) in out.chunks_exact_mut(3).take(BLOCK).enumerate() {
        o[0] = r[i];
        o[1] = g[i];
        o[2] = b[i];
    }
}

/// Same size: each chroma sample's terms are computed once for its two pixels, BLOCK pixels at a
/// time, with no index arithmetic.
fn row_1to1(out: &mut [u8], yrow: &[u8], urow: &[u8], vrow: &[u8]) {
    let (mut r, mut g, mut b) = ([0u8; BLOCK], [0u8; BLOCK], [0u8; BLOCK]);
    let blocks =
        out.chunks_mut(3 * BLOCK).zip(yrow.chunks(BLOCK)).zip(urow.chunks(BLOCK / 2)).zip(vrow.chunks(BLOCK / 2));
    for (((o, y), u), v) in blocks {
        if let (Ok(y), Ok(u), Ok(v)) =
            (<&[u8; BLOCK]>::try_from(y), <&[u8; BLOCK / 2]>::try_from(u), <&[u8; BLOCK / 2]>::try_from(v))
        {
            for i in 0..BLOCK / 2 {
                let (cu, cv) = (i32::from(u[i]) - 128, i32::from(v[i]) - 128);
                let (cr, cg, cb) = (409 * cv, -100 * cu - 208 * cv, 516 * cu);
                let c0 = 298 * (i32::from(y[2 * i]) - 16) + 128;
                let c1 = 298 * (i32::from(y[2 * i + 1]) - 16) + 128;
                (r[2 * i], r[2 * i + 1]) = (sat(c0 + cr), sat(c1 + cr));
                (g[2 * i], g[2 * i + 1]) = (sat(c0 + cg), sat(c1 + cg));
                (b[2 * i], b[2 * i + 1]) = (sat(c0 + cb), sat(c1 + cb));
            }
        } else {
            // The row's last partial block (or an odd width): pixel by pixel.
            for (x, &yv) in y.iter().enumerate() {
                let (Some(&u), Some(&v)) = (u.get(x / 2), v.get(x / 2)) else { break };
                (r[x], g[x], b[x]) = convert(yv, u, v);
            }
        }
        interleave(o, &r, &g, &b);
    }
}

/// Scaled to `w` columns: the source column steps incrementally (exactly floor(dx * sw / w));
/// each block gathers its samples, then converts them in one vectorisable pass.
fn row_scaled(out: &mut [u8], yrow: &[u8], urow: &[u8], vrow: &[u8], w: usize) {
    let sw = yrow.len();
    let (q, rem) = (sw / w, sw % w);
    let (mut sx, mut acc) = (0usize, 0usize);
    let (mut ys, mut us, mut vs) = ([0u8; BLOCK], [0u8; BLOCK], [0u8; BLOCK]);
    let (mut r, mut g, mut b) = ([0u8; BLOCK], [0u8; BLOCK], [0u8; BLOCK]);
    for o in out.chunks_mut(3 * BLOCK) {
        for i in 0..o.len() / 3 {
            ys[i] = yrow[sx];
            us[i] = urow[sx / 2];
            vs[i] = vrow[sx / 2];
            sx += q;
            acc += rem;
            if acc >= w {
                acc -= w;
                sx += 1;
            }
        }
        for i in 0..BLOCK {
            (r[i], g[i], b[i]) = convert(ys[i], us[i], vs[i]);
        }
        interleave(o, &r, &g, &b);
    }
}

/// Integer BT.601: R = 1.164Y + 1.596V, G = 1.164Y - 0.392U - 0.813V, B = 1.164Y + 2.017U.
#[inline(always)]
fn convert(y: u8, u: u8, v: u8) -> (u8, u8, u8) {
    let (u, v) = (i32::from(u) - 128, i32::from(v) - 128);
    let c = 298 * (i32::from(y) - 16) + 128;
    (sat(c + 409 * v), sat(c - 100 * u - 208 * v), sat(c + 516 * u))
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

    /// The straightforward per-pixel version the fast one must match byte for byte.
    #[allow(clippy::too_many_arguments)]
    fn reference(
        src: &I420Frame,
        dst: &mut [u8],
        dst_w: usize,
        dst_h: usize,
        x0: usize,
        y0: usize,
        w: usize,
        h: usize,
    ) {
        let cw = src.width / 2;
        for dy in 0..h.min(dst_h.saturating_sub(y0)) {
            let sy = dy * src.height / h;
            for dx in 0..w.min(dst_w.saturating_sub(x0)) {
                let sx = dx * src.width / w;
                let yv = i32::from(src.y[sy * src.width + sx]) - 16;
                let u = i32::from(src.u[(sy / 2) * cw + sx / 2]) - 128;
                let v = i32::from(src.v[(sy / 2) * cw + sx / 2]) - 128;
                let c = 298 * yv + 128;
                let px = ((y0 + dy) * dst_w + x0 + dx) * 3;
                dst[px] = ((c + 409 * v) >> 8).clamp(0, 255) as u8;
                dst[px + 1] = ((c - 100 * u - 208 * v) >> 8).clamp(0, 255) as u8;
                dst[px + 2] = ((c + 516 * u) >> 8).clamp(0, 255) as u8;
            }
        }
    }

    struct Rng(u64);
    impl Rng {
        fn next(&mut self) -> u64 {
            // xorshift64*: deterministic, no dependency.
            self.0 ^= self.0 >> 12;
            self.0 ^= self.0 << 25;
            self.0 ^= self.0 >> 27;
            self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
        }
        fn below(&mut self, n: usize) -> usize {
            (self.next() % n as u64) as usize
        }
    }

    fn random_frame(rng: &mut Rng, w: usize, h: usize) -> I420Frame {
        let mut f = I420Frame::new(w, h);
        for p in f.y.iter_mut().chain(f.u.iter_mut()).chain(f.v.iter_mut()) {
            *p = rng.next() as u8;
        }
        f
    }

    #[test]
    fn fast_path_matches_reference_exactly() {
        let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
        for case in 0..400 {
            let (sw, sh) = (2 + 2 * rng.below(40), 2 + 2 * rng.below(30));
            let f = random_frame(&mut rng, sw, sh);
            let (dw, dh) = (1 + rng.below(90), 1 + rng.below(70));
            // Every fifth case is 1:1, the rest any scale up or down.
            let (w, h) = if case % 5 == 0 { (sw, sh) } else { (1 + rng.below(100), 1 + rng.below(80)) };
            let (x0, y0) = (rng.below(dw + 5), rng.below(dh + 5));
            let init: Vec<u8> = (0..dw * dh * 3).map(|_| rng.next() as u8).collect();
            let (mut a, mut b) = (init.clone(), init);
            blit_i420(&f, &mut a, dw, dh, x0, y0, w, h);
            reference(&f, &mut b, dw, dh, x0, y0, w, h);
            assert!(a == b, "case {case}: {sw}x{sh} -> {w}x{h} at ({x0},{y0}) in {dw}x{dh}");
        }
    }

    #[test]
    fn bad_frames_and_buffers_do_not_panic() {
        let mut f = I420Frame::new(8, 8);
        let mut fb = vec![0u8; 10 * 10 * 3];
        f.u.truncate(3); // planes shorter than the size claims: nothing drawn
        blit_i420(&f, &mut fb, 10, 10, 0, 0, 10, 10);
        assert!(fb.iter().all(|&b| b == 0));
        let f = I420Frame::new(8, 8);
        blit_i420(&f, &mut fb[..50], 10, 10, 0, 0, 10, 10); // buffer shorter than w*h*3
        blit_i420(&f, &mut fb, 10, 10, usize::MAX, usize::MAX, usize::MAX, usize::MAX);
        blit_i420(&f, &mut fb, 0, 10, 0, 0, 4, 4);
        let odd = I420Frame {
            width: 7,
            height: 5,
            y: vec![16; 35],
            u: vec![128; 12],
            v: vec![128; 12],
            seq: 0,
            captured_us: 0,
        };
        blit_i420(&odd, &mut fb, 10, 10, 0, 0, 7, 5);
        blit_i420(&odd, &mut fb, 10, 10, 0, 0, 10, 10);
    }

    /// This thread's CPU time (Linux), so a busy machine inflates the numbers less than wall time.
    fn cpu_ns() -> Option<u64> {
        std::fs::read_to_string("/proc/thread-self/schedstat").ok()?.split_whitespace().next()?.parse().ok()
    }

    /// `cargo test --release -p peercom-board blit_timing -- --ignored --nocapture`
    #[test]
    #[ignore]
    fn blit_timing() {
        let mut rng = Rng(1);
        let f = random_frame(&mut rng, 640, 480);
        let cases = [
            ("640x480 -> 640x480", 640, 480, 640, 480),
            ("640x480 -> 160x120 inset", 640, 480, 160, 120),
            ("640x480 -> 800x600", 1024, 600, 800, 600),
        ];
        for (name, dw, dh, w, h) in cases {
            let mut fb = vec![0u8; dw * dh * 3];
            let n = 300u32;
            let mut time = |blit: &mut dyn FnMut(&mut [u8])| {
                let (t, c) = (std::time::Instant::now(), cpu_ns());
                for _ in 0..n {
                    blit(&mut fb);
                }
                let cpu = cpu_ns().zip(c).map(|(b, a)| std::time::Duration::from_nanos((b - a) / u64::from(n)));
                (t.elapsed() / n, cpu)
            };
            let fast = time(&mut |fb| blit_i420(&f, fb, dw, dh, 0, 0, w, h));
            let slow = time(&mut |fb| reference(&f, fb, dw, dh, 0, 0, w, h));
            let cpu = |d: Option<std::time::Duration>| d.map_or("?".to_string(), |d| format!("{d:?}"));
            println!(
                "{name}: {:?} wall, {} cpu per blit (reference {:?} wall, {} cpu)",
                fast.0,
                cpu(fast.1),
                slow.0,
                cpu(slow.1)
            );
        }
    }
}
