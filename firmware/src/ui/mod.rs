//! The display UI, drawn with embedded-graphics into the board's RGB framebuffer.
//!
//! The caller fills a plain [`Screen`] and calls [`draw`]; nothing here keeps state. Layout scales
//! with the display (one step per 320x240, so 640x480 and 800x480 draw at 2x), every text is cut
//! to the space it has, and any size draws without panicking. The in-call screen is redrawn for
//! every video frame, so drawing allocates nothing: text is formatted on the stack and the
//! embedded-graphics primitives iterate without buffers.
mod call;
pub mod canvas;
mod in_call;
mod ready;
pub mod text;
mod widgets;

use embedded_graphics::pixelcolor::Rgb888;
use peercom_board::frame::I420Frame;

pub use canvas::Canvas;

/// How the device reaches its contacts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NetState {
    /// Contacts on the local network only (no internet, or not yet in the DHT).
    Lan,
    /// Reachable through the internet (the DHT).
    Online,
    /// No network at all.
    Offline,
}

/// A contact on the ready screen, with the button that calls it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ContactLine<'a> {
    pub name: &'a str,
    pub button: Option<u8>,
}

#[derive(Debug, Clone, Copy)]
pub enum Screen<'a> {
    /// Idle: the device's name, its contacts and buttons, the network, missed calls and, if the
    /// display has room, the device ID as a QR code (modules from `identity::qr::matrix`, built
    /// once; `true` is dark).
    Ready {
        device: &'a str,
        id_short: &'a str,
        contacts: &'a [ContactLine<'a>],
        net: NetState,
        missed_calls: u32,
        qr: Option<&'a [Vec<bool>]>,
    },
    /// Dialling out; `cancel_button` is the one to name in the hint (the contact's own button).
    Calling { contact: &'a str, cancel_button: Option<u8> },
    /// Ringing.
    Incoming { contact: &'a str, answer_button: Option<u8>, reject_button: Option<u8> },
    /// In a call: the remote video full screen (kept in proportion), a self-view inset, the name
    /// and timer, and a mute indicator. No remote frame yet shows "Connecting video..."; no local
    /// frame leaves the inset out.
    InCall {
        contact: &'a str,
        elapsed_s: u32,
        muted: bool,
        remote: Option<&'a I420Frame>,
        local: Option<&'a I420Frame>,
    },
    /// Shown briefly after a call: `reason` such as "hung up", "no answer", "busy". `failed`
    /// titles it "Call failed" in red instead of "Call ended".
    Ended { contact: &'a str, reason: &'a str, failed: bool },
}

/// The largest width or height drawn; it keeps all layout arithmetic far from overflow.
pub const MAX_SIDE: usize = 16_384;

/// Draws `screen` over the whole `width`×`height` RGB888 framebuffer `fb`. A buffer shorter than
/// `width * height * 3` only gets the rows it has; sizes beyond [`MAX_SIDE`] are not a display
/// and get nothing.
pub fn draw(screen: &Screen<'_>, fb: &mut [u8], width: usize, height: usize) {
    if width > MAX_SIDE || height > MAX_SIDE {
        return;
    }
    let mut c = Canvas::new(fb, width, height);
    let ui = Ui::for_size(c.width(), c.height());
    match *screen {
        Screen::Ready { device, id_short, contacts, net, missed_calls, qr } => {
            ready::draw(&mut c, &ui, device, id_short, contacts, net, missed_calls, qr)
        }
        Screen::Calling { contact, cancel_button } => call::calling(&mut c, &ui, contact, cancel_button),
        Screen::Incoming { contact, answer_button, reject_button } => {
            call::incoming(&mut c, &ui, contact, answer_button, reject_button)
        }
        Screen::InCall { contact, elapsed_s, muted, remote, local } => {
            in_call::draw(&mut c, &ui, contact, elapsed_s, muted, remote, local)
        }
        Screen::Ended { contact, reason, failed } => call::ended(&mut c, &ui, contact, reason, failed),
    }
}

/// Sizes for one display: everything is a multiple of `k`, the 320x240 steps that fit.
struct Ui {
    w: i32,
    h: i32,
    k: i32,
    /// Margin and gap.
    m: i32,
    /// Names on call screens.
    xl: text::Font,
    /// Headings, contacts, the call bar.
    l: text::Font,
    /// Status and hints.
    s: text::Font,
}

impl Ui {
    fn for_size(w: i32, h: i32) -> Self {
        let k = (w / 320).min(h / 240).max(1);
        Ui { w, h, k, m: 6 * k, xl: text::Font::new(k + 1), l: text::Font::new(k), s: text::Font::new(k - 1) }
    }
}

/// The palette: light on dark, for contrast in a kitchen or a hallway.
mod color {
    use super::Rgb888;
    pub const BG: Rgb888 = Rgb888::new(17, 22, 32);
    pub const PANEL: Rgb888 = Rgb888::new(33, 41, 56);
    pub const TEXT: Rgb888 = Rgb888::new(245, 246, 248);
    pub const DIM: Rgb888 = Rgb888::new(160, 170, 186);
    pub const ACCENT: Rgb888 = Rgb888::new(37, 99, 235);
    pub const GREEN: Rgb888 = Rgb888::new(22, 163, 74);
    pub const LIGHT_GREEN: Rgb888 = Rgb888::new(134, 239, 172);
    pub const INCOMING_BG: Rgb888 = Rgb888::new(10, 46, 32);
    pub const AMBER: Rgb888 = Rgb888::new(251, 191, 36);
    pub const RED: Rgb888 = Rgb888::new(220, 38, 38);
    pub const LIGHT_RED: Rgb888 = Rgb888::new(252, 165, 165);
    pub const BLACK: Rgb888 = Rgb888::new(0, 0, 0);
    pub const WHITE: Rgb888 = Rgb888::new(255, 255, 255);
}

#[cfg(test)]
mod tests {
    use super::*;

    fn all_screens<'a>(
        contacts: &'a [ContactLine<'a>],
        qr: &'a [Vec<bool>],
        f: &'a I420Frame,
        name: &'a str,
    ) -> Vec<Screen<'a>> {
        vec![
            Screen::Ready {
                device: name,
                id_short: name,
                contacts,
                net: NetState::Offline,
                missed_calls: u32::MAX,
                qr: Some(qr),
            },
            Screen::Calling { contact: name, cancel_button: Some(u8::MAX) },
            Screen::Incoming { contact: name, answer_button: Some(0), reject_button: Some(255) },
            Screen::InCall { contact: name, elapsed_s: u32::MAX, muted: true, remote: Some(f), local: Some(f) },
            Screen::InCall { contact: name, elapsed_s: 0, muted: false, remote: None, local: None },
            Screen::Ended { contact: name, reason: name, failed: true },
        ]
    }

    #[test]
    fn any_size_and_any_input_draws_without_panicking() {
        let long = "W".repeat(500) + "\n\t\u{0}日本語\u{202e}";
        let contacts: Vec<ContactLine> =
            (0..100).map(|i| ContactLine { name: &long, button: (i % 3 != 0).then_some(i as u8) }).collect();
        // Ragged and oversized QR matrices are drawn as far as they go.
        let qr: Vec<Vec<bool>> = (0..200).map(|i| vec![true; i % 7]).collect();
        let frames = [I420Frame::new(2, 2), I420Frame::new(640, 480), I420Frame::new(16, 1000)];
        let mut odd = I420Frame::new(8, 8);
        odd.u.clear(); // corrupt: planes too short
        for f in frames.iter().chain([&odd]) {
            for name in ["", "x", long.as_str()] {
                for screen in all_screens(&contacts, &qr, f, name) {
                    for (w, h) in
                        [(0, 0), (1, 1), (3, 500), (320, 240), (641, 479), (2000, 90), (90, 1200), (16_384, 1)]
                    {
                        let mut fb = vec![7u8; w * h * 3];
                        draw(&screen, &mut fb, w, h);
                        draw(&screen, &mut fb[..(w * h * 3) / 2], w, h);
                    }
                    // Absurd sizes with a buffer that cannot hold them.
                    draw(&screen, &mut [0u8; 30], usize::MAX, usize::MAX);
                    draw(&screen, &mut [0u8; 30], MAX_SIDE, 2);
                }
            }
        }
    }
}
