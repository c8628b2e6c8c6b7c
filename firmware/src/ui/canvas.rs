//! An embedded-graphics draw target over the board's RGB888 framebuffer, plus the few raw
//! operations (solid fills, darkening) the screens need to be fast at 30 fps.
use std::convert::Infallible;

use embedded_graphics::pixelcolor::{Rgb888, RgbColor};
use embedded_graphics::prelude::*;
use embedded_graphics::primitives::Rectangle;

/// A `width`×`height` RGB888 framebuffer, row by row. Every drawing call clips to it, so nothing
/// drawn can write outside the buffer, whatever the coordinates.
pub struct Canvas<'a> {
    buf: &'a mut [u8],
    w: usize,
    h: usize,
}

impl<'a> Canvas<'a> {
    /// A buffer shorter than `width * height * 3` is treated as having fewer rows.
    pub fn new(buf: &'a mut [u8], width: usize, height: usize) -> Self {
        let rows = width.checked_mul(3).and_then(|stride| buf.len().checked_div(stride)).unwrap_or(0);
        let h = height.min(rows);
        Canvas { buf, w: width, h }
    }

    pub fn width(&self) -> i32 {
        i32::try_from(self.w).unwrap_or(i32::MAX)
    }

    pub fn height(&self) -> i32 {
        i32::try_from(self.h).unwrap_or(i32::MAX)
    }

    /// The raw pixels, for blitting video.
    pub fn raw(&mut self) -> (&mut [u8], usize, usize) {
        (self.buf, self.w, self.h)
    }

    /// The part of (x, y, w, h) on screen, as usize ranges.
    fn clip(&self, x: i32, y: i32, w: i32, h: i32) -> Option<(usize, usize, usize, usize)> {
        let x1 = (i64::from(x) + i64::from(w.max(0))).clamp(0, self.w as i64) as usize;
        let y1 = (i64::from(y) + i64::from(h.max(0))).clamp(0, self.h as i64) as usize;
        let (x0, y0) = (x.max(0) as usize, y.max(0) as usize);
        (x0 < x1 && y0 < y1).then_some((x0, y0, x1, y1))
    }

    pub fn fill_rect(&mut self, x: i32, y: i32, w: i32, h: i32, c: Rgb888) {
        let Some((x0, y0, x1, y1)) = self.clip(x, y, w, h) else { return };
        let px = [c.r(), c.g(), c.b()];
        let stride = self.w * 3;
        let first = y0 * stride;
        let row = &mut self.buf[first + x0 * 3..first + x1 * 3];
        if px[0] == px[1] && px[1] == px[2] {
            row.fill(px[0]);
        } else {
            for p in row.chunks_exact_mut(3) {
                p.copy_from_slice(&px);
            }
        }
        // Later rows copy the first: a memcpy each.
        for y in y0 + 1..y1 {
            self.buf.copy_within(first + x0 * 3..first + x1 * 3, y * stride + x0 * 3);
        }
    }

    /// Scales every channel in the rectangle to 3/8: a translucent dark strip that keeps white
    /// text readable over any video.
    pub fn darken(&mut self, x: i32, y: i32, w: i32, h: i32) {
        let Some((x0, y0, x1, y1)) = self.clip(x, y, w, h) else { return };
        let stride = self.w * 3;
        for y in y0..y1 {
            for b in &mut self.buf[y * stride + x0 * 3..y * stride + x1 * 3] {
                *b = ((u16::from(*b) * 3) >> 3) as u8;
            }
        }
    }

    /// A rectangle outline `t` pixels thick, drawn outside (x, y, w, h).
    pub fn frame(&mut self, x: i32, y: i32, w: i32, h: i32, t: i32, c: Rgb888) {
        self.fill_rect(x - t, y - t, w + 2 * t, t, c);
        self.fill_rect(x - t, y + h, w + 2 * t, t, c);
        self.fill_rect(x - t, y, t, h, c);
        self.fill_rect(x + w, y, t, h, c);
    }
}

impl OriginDimensions for Canvas<'_> {
    fn size(&self) -> Size {
        Size::new(u32::try_from(self.w).unwrap_or(u32::MAX), u32::try_from(self.h).unwrap_or(u32::MAX))
    }
}

impl DrawTarget for Canvas<'_> {
    type Color = Rgb888;
    type Error = Infallible;

    fn draw_iter<I: IntoIterator<Item = Pixel<Rgb888>>>(&mut self, pixels: I) -> Result<(), Infallible> {
        for Pixel(p, c) in pixels {
            if let (Ok(x), Ok(y)) = (usize::try_from(p.x), usize::try_from(p.y))
                && x < self.w
                && y < self.h
            {
                let i = (y * self.w + x) * 3;
                self.buf[i..i + 3].copy_from_slice(&[c.r(), c.g(), c.b()]);
            }
        }
        Ok(())
    }

    fn fill_solid(&mut self, area: &Rectangle, color: Rgb888) -> Result<(), Infallible> {
        let (w, h) = (i32::try_from(area.size.width), i32::try_from(area.size.height));
        self.fill_rect(area.top_left.x, area.top_left.y, w.unwrap_or(i32::MAX), h.unwrap_or(i32::MAX), color);
        Ok(())
    }

    fn clear(&mut self, color: Rgb888) -> Result<(), Infallible> {
        self.fill_rect(0, 0, self.width(), self.height(), color);
        Ok(())
    }
}

/// Draws onto a canvas magnified `s` times from `origin`: how the built-in bitmap fonts (20 px at
/// most) become big enough to read across a room.
pub struct Scaled<'c, 'a> {
    pub canvas: &'c mut Canvas<'a>,
    pub origin: Point,
    pub s: i32,
}

impl Dimensions for Scaled<'_, '_> {
    fn bounding_box(&self) -> Rectangle {
        let s = self.s.max(1);
        Rectangle::new(
            Point::new(-self.origin.x / s, -self.origin.y / s),
            Size::new((self.canvas.width() / s + 1) as u32, (self.canvas.height() / s + 1) as u32),
        )
    }
}

impl DrawTarget for Scaled<'_, '_> {
    type Color = Rgb888;
    type Error = Infallible;

    fn draw_iter<I: IntoIterator<Item = Pixel<Rgb888>>>(&mut self, pixels: I) -> Result<(), Infallible> {
        let s = self.s.max(1);
        for Pixel(p, c) in pixels {
            let (x, y) = (
                self.origin.x.saturating_add(p.x.saturating_mul(s)),
                self.origin.y.saturating_add(p.y.saturating_mul(s)),
            );
            self.canvas.fill_rect(x, y, s, s, c);
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn clips_everything() {
        let mut buf = vec![0u8; 4 * 3 * 3];
        let mut c = Canvas::new(&mut buf, 4, 3);
        c.fill_rect(-5, -5, 7, 6, Rgb888::new(1, 2, 3)); // covers (0,0)..(2,1)
        c.darken(-9, -9, 99, 99);
        c.darken(i32::MIN, i32::MIN, i32::MAX, i32::MAX);
        c.fill_rect(i32::MAX, i32::MIN, i32::MAX, i32::MAX, Rgb888::WHITE);
        c.fill_rect(3, 2, i32::MAX, i32::MAX, Rgb888::WHITE);
        c.draw_iter([Pixel(Point::new(-1, 0), Rgb888::RED), Pixel(Point::new(4, 0), Rgb888::RED)]).unwrap();
        assert_eq!(&buf[0..3], &[0, 0, 1]);
        assert_eq!(&buf[(2 * 4 + 3) * 3..], &[255, 255, 255]);
        assert_eq!(&buf[(2 * 4) * 3..(2 * 4) * 3 + 3], &[0, 0, 0]);
        // A buffer too short for the claimed size loses rows, not memory safety.
        let mut short = vec![0u8; 10];
        let mut c = Canvas::new(&mut short, 4, 3);
        assert_eq!((c.width(), c.height()), (4, 0));
        c.clear(Rgb888::WHITE).unwrap();
        assert!(short.iter().all(|&b| b == 0));
        let mut none: [u8; 0] = [];
        Canvas::new(&mut none, 0, 0).clear(Rgb888::WHITE).unwrap();
    }
}
