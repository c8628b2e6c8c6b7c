//! The in-call screen, redrawn for every video frame: remote video full screen, self-view inset,
//! a darkened bar with the name and timer, a mute badge. Nothing here allocates.
use embedded_graphics::prelude::*;
use peercom_board::display::blit_i420;
use peercom_board::frame::I420Frame;

use super::canvas::Canvas;
use super::{Ui, color, text, widgets};

pub fn draw(
    c: &mut Canvas,
    ui: &Ui,
    contact: &str,
    elapsed_s: u32,
    muted: bool,
    remote: Option<&I420Frame>,
    local: Option<&I420Frame>,
) {
    let (w, h, m) = (ui.w, ui.h, ui.m);

    match remote.filter(|f| usable(f)) {
        Some(f) => {
            let (vx, vy, vw, vh) = fit(f, 0, 0, w, h);
            // Only the bars around the picture: the picture itself overwrites the rest.
            c.fill_rect(0, 0, w, vy, color::BLACK);
            c.fill_rect(0, vy + vh, w, h - vy - vh, color::BLACK);
            c.fill_rect(0, vy, vx, vh, color::BLACK);
            c.fill_rect(vx + vw, vy, w - vx - vw, vh, color::BLACK);
            blit(c, f, vx, vy, vw, vh);
        }
        None => {
            let _ = c.clear(color::BLACK);
            text::centered(c, "Connecting video...", w / 2, (h - ui.l.ch()) / 2, ui.l, color::DIM, w - 2 * m);
        }
    }

    // Self-view: within a quarter of the width and height, bottom right, framed so it reads as
    // separate from the remote picture.
    if let Some(f) = local.filter(|f| usable(f)) {
        let (_, _, iw, ih) = fit(f, 0, 0, w / 4, h / 4);
        let (ix, iy) = (w - m - iw, h - m - ih);
        c.frame(ix, iy, iw, ih, ui.k, color::TEXT);
        blit(c, f, ix, iy, iw, ih);
    }

    // Name and timer on a translucent bar.
    let bar_h = ui.l.ch() + 2 * m;
    c.darken(0, 0, w, bar_h);
    let t = text::elapsed(elapsed_s);
    let tw = text::width(t.as_str(), ui.l, w - 2 * m);
    text::right(c, t.as_str(), w - m, m, ui.l, color::TEXT, w - 2 * m);
    text::draw(c, contact, m, m, ui.l, color::TEXT, w - 3 * m - tw);

    if muted {
        let f = ui.l;
        let pill_h = f.ch() + m;
        let icon = f.ch();
        let label = "Muted";
        let pill_w = m + icon + m / 2 + text::width(label, f, w) + m;
        let (px, py) = (m, h - m - pill_h);
        widgets::rounded(c, px, py, pill_w, pill_h, pill_h / 2, color::RED);
        widgets::mic_off(c, px + m, py + (pill_h - icon) / 2, icon, color::WHITE, color::RED);
        text::draw(c, label, px + m + icon + m / 2, py + m / 2, f, color::WHITE, w - px - m - icon);
    }
}

/// A frame worth drawing: a real size and planes as long as that size needs.
fn usable(f: &I420Frame) -> bool {
    let (cw, ch) = (f.width.div_ceil(2), f.height.div_ceil(2));
    f.width > 0
        && f.height > 0
        && f.width.checked_mul(f.height).is_some_and(|n| f.y.len() >= n)
        && f.u.len() >= cw * ch
        && f.v.len() >= cw * ch
}

/// The largest rectangle of the frame's proportions inside (x, y, w, h), centred.
fn fit(f: &I420Frame, x: i32, y: i32, w: i32, h: i32) -> (i32, i32, i32, i32) {
    let (fw, fh) = (f.width as i64, f.height as i64);
    let (w64, h64) = (i64::from(w), i64::from(h));
    let (vw, vh) = if w64 * fh <= h64 * fw { (w64, fh * w64 / fw) } else { (fw * h64 / fh, h64) };
    let (vw, vh) = (vw as i32, vh as i32);
    (x + (w - vw) / 2, y + (h - vh) / 2, vw, vh)
}

fn blit(c: &mut Canvas, f: &I420Frame, x: i32, y: i32, w: i32, h: i32) {
    let (Ok(x), Ok(y), Ok(w), Ok(h)) = (usize::try_from(x), usize::try_from(y), usize::try_from(w), usize::try_from(h))
    else {
        return;
    };
    let (buf, bw, bh) = c.raw();
    blit_i420(f, buf, bw, bh, x, y, w, h);
}
