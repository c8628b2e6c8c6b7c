//! The screens around a call: dialling, ringing, ended. One layout for all three (who, in big
//! letters, under their initial; what is happening above the name; which button to press at the
//! bottom), so the eye always finds the same thing in the same place.
use embedded_graphics::pixelcolor::Rgb888;
use embedded_graphics::prelude::*;

use super::canvas::Canvas;
use super::text;
use super::widgets::{self, Seg};
use super::{Ui, color};

pub fn calling(c: &mut Canvas, ui: &Ui, contact: &str, cancel: Option<u8>) {
    let _ = c.clear(color::BG);
    let hint = match cancel {
        Some(b) => &[Seg::Text("Press"), Seg::Button(b, color::RED), Seg::Text("to cancel")][..],
        None => &[Seg::Text("Press a button to cancel")][..],
    };
    card(c, ui, None, "Calling", color::DIM, contact, None, hint);
}

pub fn incoming(c: &mut Canvas, ui: &Ui, contact: &str, answer: Option<u8>, reject: Option<u8>) {
    let _ = c.clear(color::INCOMING_BG);
    let segs;
    let hint = match (answer, reject) {
        (Some(a), Some(r)) => {
            segs =
                [Seg::Button(a, color::GREEN), Seg::Text("answer "), Seg::Button(r, color::RED), Seg::Text("decline")];
            &segs[..]
        }
        (Some(a), None) => &[Seg::Text("Press"), Seg::Button(a, color::GREEN), Seg::Text("to answer")][..],
        (None, _) => &[Seg::Text("Press a button to answer")][..],
    };
    let rings = [Rgb888::new(34, 140, 80), Rgb888::new(22, 90, 55)];
    card(c, ui, Some(rings), "Incoming call", color::LIGHT_GREEN, contact, None, hint);
}

pub fn ended(c: &mut Canvas, ui: &Ui, contact: &str, reason: &str, failed: bool) {
    let _ = c.clear(color::BG);
    let (title, col) = if failed { ("Call failed", color::LIGHT_RED) } else { ("Call ended", color::DIM) };
    card(c, ui, None, title, col, contact, Some(reason), &[]);
}

#[allow(clippy::too_many_arguments)]
fn card(
    c: &mut Canvas,
    ui: &Ui,
    rings: Option<[Rgb888; 2]>,
    title: &str,
    title_col: Rgb888,
    name: &str,
    detail: Option<&str>,
    hint: &[Seg],
) {
    let (w, h, m) = (ui.w, ui.h, ui.m);
    let d = ui.xl.ch() * 2;
    let hint_h = widgets::badge_size(ui, ui.l).1;
    let hint_y = h - 2 * m - hint_h;
    let detail_h = if detail.is_some() { m + ui.l.ch() } else { 0 };
    let stack_h = d + 2 * m + ui.l.ch() + m + ui.xl.ch() + detail_h;
    let area = if hint.is_empty() { h } else { hint_y };
    let mut y = ((area - stack_h) / 2).max(m);

    let cx = w / 2;
    if let Some(rings) = rings {
        widgets::rings(c, cx, y + d / 2, d, ui.k, rings);
    }
    widgets::avatar(c, cx, y + d / 2, d, name, ui.xl);
    y += d + 2 * m;
    text::centered(c, title, cx, y, ui.l, title_col, w - 2 * m);
    y += ui.l.ch() + m;
    text::centered(c, name, cx, y, ui.xl, color::TEXT, w - 2 * m);
    y += ui.xl.ch() + m;
    if let Some(detail) = detail {
        text::centered(c, detail, cx, y, ui.l, color::DIM, w - 2 * m);
    }
    if !hint.is_empty() {
        widgets::hint(c, ui, hint_y, hint, ui.l);
    }
}
