//! Pieces shared by the screens: button badges, hint lines, avatars, the mute icon.
use std::fmt::Write;

use embedded_graphics::pixelcolor::Rgb888;
use embedded_graphics::prelude::*;
use embedded_graphics::primitives::{
    Arc, Circle, Line, PrimitiveStyle, PrimitiveStyleBuilder, Rectangle, RoundedRectangle, StrokeAlignment,
};

use super::canvas::Canvas;
use super::text::{self, Font, StackStr};
use super::{Ui, color};

pub fn rounded(c: &mut Canvas, x: i32, y: i32, w: i32, h: i32, r: i32, fill: Rgb888) {
    if w <= 0 || h <= 0 {
        return;
    }
    let rect = Rectangle::new(Point::new(x, y), Size::new(w as u32, h as u32));
    let r = r.clamp(0, w.min(h) / 2) as u32;
    let _ = RoundedRectangle::with_equal_corners(rect, Size::new(r, r))
        .into_styled(PrimitiveStyle::with_fill(fill))
        .draw(c);
}

/// Size of a button badge ("1" .. "63") for text in `font`.
pub fn badge_size(ui: &Ui, font: Font) -> (i32, i32) {
    (2 * font.cw() + ui.k * 6, font.ch() + ui.k * 2)
}

/// A button number in a rounded box, as the physical button might be labelled.
pub fn badge(c: &mut Canvas, ui: &Ui, x: i32, y: i32, button: u8, font: Font, fill: Rgb888) -> i32 {
    let (w, h) = badge_size(ui, font);
    rounded(c, x, y, w, h, 3 * ui.k, fill);
    let mut n = StackStr::<4>::new();
    let _ = write!(n, "{button}");
    text::centered(c, n.as_str(), x + w / 2, y + ui.k, font, color::WHITE, w);
    w
}

/// A piece of a hint line.
#[derive(Clone, Copy)]
pub enum Seg<'a> {
    Text(&'a str),
    Button(u8, Rgb888),
}

/// A centred line of text and button badges, e.g. "Press [1] to cancel". Returns its height.
pub fn hint(c: &mut Canvas, ui: &Ui, y: i32, segs: &[Seg], font: Font) -> i32 {
    let gap = font.cw() / 2;
    let seg_w = |s: &Seg| match s {
        Seg::Text(t) => text::width(t, font, ui.w),
        Seg::Button(..) => badge_size(ui, font).0,
    };
    let total: i32 = segs.iter().map(|s| seg_w(s) + gap).sum::<i32>() - gap;
    let h = badge_size(ui, font).1;
    // Too wide for the screen: the text is cut at the right edge (never wraps).
    let mut x = ((ui.w - total) / 2).max(ui.m);
    for s in segs {
        match *s {
            Seg::Text(t) => x += text::draw(c, t, x, y + ui.k, font, color::TEXT, ui.w - ui.m - x),
            Seg::Button(b, fill) => x += badge(c, ui, x, y, b, font, fill),
        }
        x += gap;
    }
    h
}

/// A circle with the name's initial: who is calling, recognisable from across the room.
pub fn avatar(c: &mut Canvas, cx: i32, cy: i32, d: i32, name: &str, font: Font) {
    const FILLS: [Rgb888; 6] = [
        Rgb888::new(37, 99, 235),
        Rgb888::new(147, 51, 234),
        Rgb888::new(219, 39, 119),
        Rgb888::new(234, 88, 12),
        Rgb888::new(13, 148, 136),
        Rgb888::new(101, 163, 13),
    ];
    if d <= 0 {
        return;
    }
    let sum = name.bytes().fold(0usize, |a, b| a.wrapping_mul(31).wrapping_add(usize::from(b)));
    let fill = FILLS[sum % FILLS.len()];
    let _ = Circle::with_center(Point::new(cx, cy), d as u32).into_styled(PrimitiveStyle::with_fill(fill)).draw(c);
    let initial = name.trim_start().chars().next().and_then(|ch| ch.to_uppercase().next()).unwrap_or('?');
    let mut buf = [0u8; 4];
    text::centered(c, initial.encode_utf8(&mut buf), cx, cy - font.ch() / 2, font, color::WHITE, d);
}

/// Rings around an avatar: ringing.
pub fn rings(c: &mut Canvas, cx: i32, cy: i32, d: i32, k: i32, fill: [Rgb888; 2]) {
    for (i, col) in fill.iter().enumerate() {
        let dd = d + (i as i32 + 1) * 12 * k;
        let style = PrimitiveStyleBuilder::new()
            .stroke_color(*col)
            .stroke_width((2 * k) as u32)
            .stroke_alignment(StrokeAlignment::Inside)
            .build();
        let _ = Circle::with_center(Point::new(cx, cy), dd.max(0) as u32).into_styled(style).draw(c);
    }
}

/// A microphone with a slash through it, `size` pixels tall, its top-left at (x, y), on `bg`.
pub fn mic_off(c: &mut Canvas, x: i32, y: i32, size: i32, col: Rgb888, bg: Rgb888) {
    // On a 10x10 grid of `u`.
    let u = (size / 10).max(1);
    let cx = x + size / 2;
    // Capsule, then the cradle around its lower half, one grid step away.
    rounded(c, cx - 3 * u / 2, y, 3 * u, 6 * u, 3 * u / 2, col);
    let cradle = Arc::with_center(Point::new(cx, y + 4 * u), (7 * u) as u32, 0.0.deg(), 180.0.deg());
    let _ = cradle.into_styled(PrimitiveStyle::with_stroke(col, u as u32)).draw(c);
    // Stem and foot.
    c.fill_rect(cx - u / 2, y + 15 * u / 2, u, 3 * u / 2, col);
    c.fill_rect(cx - 2 * u, y + 9 * u, 4 * u, u, col);
    // The slash, cut out of the microphone by a background-coloured edge so the two stay apart.
    let slash = Line::new(Point::new(x + u, y + u), Point::new(x + size - u, y + size - u));
    let _ = slash.into_styled(PrimitiveStyle::with_stroke(bg, (3 * u) as u32)).draw(c);
    let _ = slash.into_styled(PrimitiveStyle::with_stroke(col, u as u32)).draw(c);
}
