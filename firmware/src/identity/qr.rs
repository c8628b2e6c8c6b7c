//! The device ID as a QR code: a module matrix for the display, and a terminal rendering with
//! Unicode half blocks (two rows per line) and the 4-module quiet zone scanners need.
use qrcodegen::{QrCode, QrCodeEcc};

/// QR modules of `text`; `true` is dark.
pub fn matrix(text: &str) -> Option<Vec<Vec<bool>>> {
    let qr = QrCode::encode_text(&text.to_uppercase(), QrCodeEcc::Medium).ok()?;
    let n = qr.size();
    Some((0..n).map(|y| (0..n).map(|x| qr.get_module(x, y)).collect()).collect())
}

pub fn render_terminal(text: &str) -> Option<String> {
    let m = matrix(text)?;
    const QUIET: usize = 4;
    let n = m.len() + 2 * QUIET;
    let dark = |x: usize, y: usize| -> bool {
        x >= QUIET && y >= QUIET && x < n - QUIET && y < n - QUIET && m[y - QUIET][x - QUIET]
    };
    let mut out = String::new();
    // Light-on-dark terminals are common, so draw light modules as blocks (inverted), which
    // scanners read either way round.
    for y in (0..n).step_by(2) {
        for x in 0..n {
            let top = !dark(x, y);
            let bottom = y + 1 < n && !dark(x, y + 1);
            out.push(match (top, bottom) {
                (true, true) => '█',
                (true, false) => '▀',
                (false, true) => '▄',
                (false, false) => ' ',
            });
        }
        out.push('\n');
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    #[test]
    fn id_fits_and_renders() {
        let id = crate::identity::DeviceKey::from_seed([5u8; 32]).id().to_string();
        let m = matrix(&id).unwrap();
        // Upper-cased base32 uses QR alphanumeric mode: 59 chars fit in a version 3 code (29x29).
        assert!(m.len() <= 29, "QR too large: {}", m.len());
        let t = render_terminal(&id).unwrap();
        assert_eq!(t.lines().count(), (m.len() + 8).div_ceil(2));
    }
}
