//! Text in the built-in bitmap font, magnified, truncated to fit, formatted without allocating.
use std::fmt::{self, Write};

use embedded_graphics::mono_font::{MonoFont, MonoTextStyle};
use embedded_graphics::pixelcolor::Rgb888;
use embedded_graphics::prelude::*;
use embedded_graphics::text::Baseline;
use embedded_graphics::text::renderer::TextRenderer;

use super::canvas::{Canvas, Scaled};

/// Latin-1 covers the accented names a family config will have; other characters draw as '?'.
const BASE: MonoFont<'static> = embedded_graphics::mono_font::iso_8859_1::FONT_9X18_BOLD;

/// The base font at an integer magnification.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Font {
    pub scale: i32,
}

impl Font {
    pub fn new(scale: i32) -> Self {
        Font { scale: scale.max(1) }
    }

    /// Cell width in pixels (the font has no extra spacing between cells).
    pub fn cw(&self) -> i32 {
        (BASE.character_size.width + BASE.character_spacing) as i32 * self.scale
    }

    /// Cell height in pixels.
    pub fn ch(&self) -> i32 {
        BASE.character_size.height as i32 * self.scale
    }

    /// How many cells fit in `w` pixels.
    pub fn cells(&self, w: i32) -> usize {
        usize::try_from(w / self.cw()).unwrap_or(0)
    }
}

/// What of `s` fits in `cells` cells: a prefix, and whether an ellipsis cell follows it.
fn fit(s: &str, cells: usize) -> (&str, bool) {
    if cells == 0 {
        return ("", false);
    }
    if s.chars().count() <= cells {
        return (s, false);
    }
    let end = s.char_indices().nth(cells - 1).map_or(s.len(), |(i, _)| i);
    (s[..end].trim_end(), true)
}

/// Width of `s` when drawn within `max_w` (after truncation).
pub fn width(s: &str, font: Font, max_w: i32) -> i32 {
    let (shown, ellipsis) = fit(s, font.cells(max_w));
    (shown.chars().count() + usize::from(ellipsis)) as i32 * font.cw()
}

/// Draws `s` with its top-left at (x, y), cut to `max_w` pixels: a name too long ends in an
/// ellipsis drawn in a single cell. Returns the width drawn.
pub fn draw(c: &mut Canvas, s: &str, x: i32, y: i32, font: Font, color: Rgb888, max_w: i32) -> i32 {
    let (shown, ellipsis) = fit(s, font.cells(max_w));
    let style = MonoTextStyle::new(&BASE, color);
    let mut target = Scaled { canvas: c, origin: Point::new(x, y), s: font.scale };
    let _ = style.draw_string(shown, Point::zero(), Baseline::Top, &mut target);
    let mut drawn = shown.chars().count() as i32 * font.cw();
    if ellipsis {
        // Three dots on the baseline, one cell wide.
        let dot = (font.scale * 2).max(2);
        let base_y = y + BASE.baseline as i32 * font.scale - dot + font.scale;
        let step = font.cw() / 3;
        for i in 0..3 {
            c.fill_rect(x + drawn + i * step + (step - dot) / 2, base_y, dot, dot, color);
        }
        drawn += font.cw();
    }
    drawn
}

/// Draws `s` centred on `cx`, cut to `max_w`.
pub fn centered(c: &mut Canvas, s: &str, cx: i32, y: i32, font: Font, color: Rgb888, max_w: i32) {
    let w = width(s, font, max_w);
    draw(c, s, cx - w / 2, y, font, color, max_w);
}

/// Draws `s` ending at `right`, cut to `max_w`.
pub fn right(c: &mut Canvas, s: &str, right: i32, y: i32, font: Font, color: Rgb888, max_w: i32) {
    let w = width(s, font, max_w);
    draw(c, s, right - w, y, font, color, max_w);
}

/// A string formatted on the stack (`write!` into it): the in-call screen formats its timer
/// 30 times a second, so no `format!`. Output past the capacity is dropped.
pub struct StackStr<const N: usize> {
    buf: [u8; N],
    len: usize,
}

impl<const N: usize> StackStr<N> {
    pub fn new() -> Self {
        StackStr { buf: [0; N], len: 0 }
    }

    pub fn as_str(&self) -> &str {
        // A write cut at the capacity may end mid-character: stop before it.
        match std::str::from_utf8(&self.buf[..self.len]) {
            Ok(s) => s,
            Err(e) => std::str::from_utf8(&self.buf[..e.valid_up_to()]).unwrap_or(""),
        }
    }
}

impl<const N: usize> Default for StackStr<N> {
    fn default() -> Self {
        Self::new()
    }
}

impl<const N: usize> Write for StackStr<N> {
    fn write_str(&mut self, s: &str) -> fmt::Result {
        let n = s.len().min(N - self.len);
        self.buf[self.len..self.len + n].copy_from_slice(&s.as_bytes()[..n]);
        self.len += n;
        if n < s.len() { Err(fmt::Error) } else { Ok(()) }
    }
}

/// A call timer: "m:ss" below ten minutes, "mm:ss" below an hour, "h:mm:ss" after.
pub fn elapsed(secs: u32) -> StackStr<16> {
    let mut out = StackStr::new();
    let (h, m, s) = (secs / 3600, secs / 60 % 60, secs % 60);
    let _ = if h > 0 { write!(out, "{h}:{m:02}:{s:02}") } else { write!(out, "{m:02}:{s:02}") };
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timer_formats() {
        assert_eq!(elapsed(0).as_str(), "00:00");
        assert_eq!(elapsed(65).as_str(), "01:05");
        assert_eq!(elapsed(3599).as_str(), "59:59");
        assert_eq!(elapsed(3600).as_str(), "1:00:00");
        assert_eq!(elapsed(36_000 + 62).as_str(), "10:01:02");
        assert_eq!(elapsed(u32::MAX).as_str(), "1193046:28:15");
    }

    #[test]
    fn stack_str_truncates_on_char_boundaries() {
        let mut s = StackStr::<4>::new();
        assert!(write!(s, "aé€").is_err());
        assert_eq!(s.as_str(), "aé");
    }

    #[test]
    fn long_text_is_cut_with_an_ellipsis() {
        let f = Font::new(1);
        let cw = f.cw();
        assert_eq!(width("abc", f, 1000), 3 * cw);
        assert_eq!(width("abcdef", f, 4 * cw + 5), 4 * cw);
        // No space before the ellipsis.
        assert_eq!(width("ab cdef", f, 4 * cw), 3 * cw);
        let mut buf = vec![0u8; 60 * 20 * 3];
        let mut c = Canvas::new(&mut buf, 60, 20);
        assert_eq!(draw(&mut c, "Großmutter Müller", 0, 0, f, Rgb888::WHITE, 4 * cw + 5), 4 * cw);
        assert_eq!(draw(&mut c, "x", 0, 0, f, Rgb888::WHITE, cw - 1), 0);
        assert_eq!(draw(&mut c, "日本語テキスト", -30, -5, Font::new(9), Rgb888::WHITE, i32::MAX), 7 * 9 * cw);
        assert!(buf.iter().any(|&b| b != 0));
    }
}
