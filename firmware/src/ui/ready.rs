//! The idle screen: who this is, who it can call (with which button), and how it is connected.
use std::fmt::Write;

use embedded_graphics::prelude::*;
use embedded_graphics::primitives::{Circle, PrimitiveStyle};

use super::canvas::Canvas;
use super::text::{self, StackStr};
use super::widgets;
use super::{ContactLine, NetState, Ui, color};

/// The QR code's quiet zone in modules (the standard's 4; the white box provides it).
const QUIET: i32 = 4;
/// Smaller modules are hard for a phone to read off a screen: no QR then.
const MIN_MODULE_PX: i32 = 2;

#[allow(clippy::too_many_arguments)]
pub fn draw(
    c: &mut Canvas,
    ui: &Ui,
    device: &str,
    id_short: &str,
    contacts: &[ContactLine],
    net: NetState,
    missed: u32,
    qr: Option<&[Vec<bool>]>,
) {
    let (w, h, m) = (ui.w, ui.h, ui.m);
    let _ = c.clear(color::BG);

    // Header: device name left, network state right.
    let head_h = ui.l.ch() + 2 * m;
    c.fill_rect(0, 0, w, head_h, color::PANEL);
    let status_w = net_status(c, ui, net, w - m, head_h);
    text::draw(c, device, m, m, ui.l, color::TEXT, w - 3 * m - status_w);
    let mut y = head_h + m;

    if missed > 0 {
        let mut s = StackStr::<32>::new();
        let _ = write!(s, "{missed} missed call{}", if missed == 1 { "" } else { "s" });
        let d = ui.l.ch() / 2;
        let _ = Circle::new(Point::new(m, y + (ui.l.ch() - d) / 2), d as u32)
            .into_styled(PrimitiveStyle::with_fill(color::AMBER))
            .draw(c);
        text::draw(c, s.as_str(), m + d + m, y, ui.l, color::AMBER, w - 3 * m - d);
        y += ui.l.ch() + m;
    }

    // The device ID as a QR code in the right column, if it fits at a readable size.
    let mut list_right = w - m;
    let mut qr_bottom = 0;
    if let Some(qr) = qr.filter(|q| !q.is_empty()) {
        let n = i32::try_from(qr.len()).unwrap_or(i32::MAX / 4);
        let total = n.saturating_add(2 * QUIET);
        let caption_h = ui.s.ch() + m / 2;
        let px = ((h - y - m - caption_h) / total).min(w * 2 / 5 / total);
        if px >= MIN_MODULE_PX {
            let side = px * total;
            let (qx, qy) = (w - m - side, y);
            c.fill_rect(qx, qy, side, side, color::WHITE);
            for (my, row) in qr.iter().enumerate().take(n as usize) {
                for (mx, &dark) in row.iter().enumerate().take(n as usize) {
                    if dark {
                        c.fill_rect(qx + (QUIET + mx as i32) * px, qy + (QUIET + my as i32) * px, px, px, color::BLACK);
                    }
                }
            }
            text::centered(c, id_short, qx + side / 2, qy + side + m / 2, ui.s, color::DIM, side + m);
            list_right = qx - 2 * m;
            qr_bottom = qy + side + m / 2 + ui.s.ch();
        }
    }

    contact_list(c, ui, contacts, m, y, list_right, qr_bottom);
}

/// A coloured dot and the state's name, right-aligned at `right` and centred in the header.
/// Returns the width used.
fn net_status(c: &mut Canvas, ui: &Ui, net: NetState, right: i32, head_h: i32) -> i32 {
    let (label, dot) = match net {
        NetState::Online => ("Online", color::GREEN),
        NetState::Lan => ("LAN only", color::AMBER),
        NetState::Offline => ("Offline", color::RED),
    };
    let f = ui.l;
    let tw = text::width(label, f, ui.w);
    let d = f.ch() / 2;
    let total = d + f.cw() / 2 + tw;
    let x = right - total;
    let _ = Circle::new(Point::new(x, (head_h - d) / 2), d as u32).into_styled(PrimitiveStyle::with_fill(dot)).draw(c);
    text::draw(c, label, x + d + f.cw() / 2, (head_h - f.ch()) / 2, f, color::DIM, tw);
    total
}

/// The contacts from (x, top), within `right`; the footer hint may run wider below `qr_bottom`.
fn contact_list(c: &mut Canvas, ui: &Ui, contacts: &[ContactLine], x: i32, top: i32, right: i32, qr_bottom: i32) {
    let (m, f) = (ui.m, ui.l);
    let max_w = right - x;
    if contacts.is_empty() {
        text::draw(c, "No contacts yet", x, top, f, color::TEXT, max_w);
        let mut y = top + f.ch() + m;
        for line in ["Add their keys to", "peercom.toml, or", "pair with a button."] {
            text::draw(c, line, x, y, ui.s, color::DIM, max_w);
            y += ui.s.ch() + ui.k * 2;
        }
        return;
    }

    let (badge_w, badge_h) = widgets::badge_size(ui, f);
    let pitch = badge_h + m;
    let footer_h = ui.s.ch() + m;
    let bottom = ui.h - m;
    let any_button = contacts.iter().any(|c| c.button.is_some());
    // The footer hint goes if the list needs its room.
    let rows_with_footer = ((bottom - footer_h - top + m) / pitch).max(0) as usize;
    let footer = any_button && rows_with_footer >= contacts.len();
    let rows = if footer { rows_with_footer } else { ((bottom - top + m) / pitch).max(0) as usize };
    let shown = if contacts.len() > rows { rows.saturating_sub(1) } else { contacts.len() };

    let mut y = top;
    for contact in &contacts[..shown] {
        if let Some(b) = contact.button {
            widgets::badge(c, ui, x, y, b, f, color::ACCENT);
        }
        let nx = x + badge_w + m;
        text::draw(c, contact.name, nx, y + (badge_h - f.ch()) / 2, f, color::TEXT, right - nx);
        y += pitch;
    }
    if shown < contacts.len() && rows > 0 {
        let mut s = StackStr::<24>::new();
        let _ = write!(s, "+{} more", contacts.len() - shown);
        text::draw(c, s.as_str(), x + badge_w + m, y + (badge_h - f.ch()) / 2, f, color::DIM, right - x - badge_w - m);
    }
    if footer {
        let fy = ui.h - m - ui.s.ch();
        let fw = if fy >= qr_bottom + m / 2 { ui.w - 2 * m } else { max_w };
        text::draw(c, "Press a button to call", x, fy, ui.s, color::DIM, fw);
    }
}
