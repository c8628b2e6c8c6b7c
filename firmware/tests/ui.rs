//! Golden images of the display UI: every screen in several states, rendered through the sim
//! display and compared byte for byte with the PNG files in `tests/golden/`.
//!
//! A golden that is missing or differs fails its test and leaves the rendering next to it as
//! `tests/golden/<name>.actual.png` (gitignored): open both and compare. If the change is
//! intended, rewrite the goldens and review them before committing:
//!
//!     UPDATE_GOLDEN=1 cargo test -p peercom --test ui
//!
//! Video comes from synthetic I420 frames drawn here (flat shapes, so the goldens stay small and
//! change only when the UI or the blit does).
use std::path::PathBuf;

use peercom::identity::{DeviceKey, qr};
use peercom::ui::{ContactLine, NetState, Screen, draw};
use peercom_board::display::Display;
use peercom_board::frame::I420Frame;
use peercom_board::png;
use peercom_board::sim::SimDisplay;

fn golden_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests").join("golden")
}

/// Checks screens against their goldens, collecting every mismatch before failing.
#[derive(Default)]
struct Goldens {
    failures: Vec<String>,
}

impl Goldens {
    /// Renders `screen` at `w`×`h` through the sim display and compares it with `golden/<name>.png`.
    fn check(&mut self, name: &str, w: usize, h: usize, screen: &Screen) {
        let mut display = SimDisplay::new(w, h);
        draw(screen, display.framebuffer(), w, h);
        display.present().unwrap();
        let dir = golden_dir();
        let golden = dir.join(format!("{name}.png"));
        let actual = dir.join(format!("{name}.actual.png"));
        if std::env::var_os("UPDATE_GOLDEN").is_some_and(|v| v == "1") {
            std::fs::create_dir_all(&dir).unwrap();
            display.save_png(&golden).unwrap();
            let _ = std::fs::remove_file(&actual);
            return;
        }
        let problem = match png::read_rgb(&golden) {
            Err(e) => format!("cannot read {}: {e}", golden.display()),
            Ok((gw, gh, _)) if (gw, gh) != (w, h) => format!("the golden is {gw}x{gh}, the screen {w}x{h}"),
            Ok((_, _, rgb)) if rgb == display.shown() => {
                let _ = std::fs::remove_file(&actual);
                return;
            }
            Ok((_, _, rgb)) => {
                let (mut n, mut x0, mut y0, mut x1, mut y1) = (0, usize::MAX, usize::MAX, 0, 0);
                for (i, (a, b)) in rgb.chunks_exact(3).zip(display.shown().chunks_exact(3)).enumerate() {
                    if a != b {
                        let (x, y) = (i % w, i / w);
                        (n, x0, y0, x1, y1) = (n + 1, x0.min(x), y0.min(y), x1.max(x), y1.max(y));
                    }
                }
                format!("{n} pixels differ, within x {x0}..={x1}, y {y0}..={y1}")
            }
        };
        display.save_png(&actual).unwrap();
        self.failures.push(format!(
            "\"{name}\": {problem}\n    expected: {}\n    actual:   {}",
            golden.display(),
            actual.display()
        ));
    }

    fn finish(self) {
        assert!(
            self.failures.is_empty(),
            "UI goldens differ:\n  {}\nCompare each pair of images; if the change is intended, run\n  \
             UPDATE_GOLDEN=1 cargo test -p peercom --test ui\nand review the new goldens before committing.",
            self.failures.join("\n  ")
        );
    }
}

/// A flat synthetic picture: a sky gradient, a head and shoulders, a window. `tint` varies the
/// colours so the remote and the self-view look different.
fn scene(w: usize, h: usize, tint: u8) -> I420Frame {
    let mut f = I420Frame::new(w, h);
    let (w, h) = (f.width, f.height);
    let (cx, cy, r) = (w as i64 / 2, h as i64 * 2 / 5, (h as i64 / 5).max(1));
    for y in 0..h {
        for x in 0..w {
            let (dx, dy) = (x as i64 - cx, y as i64 - cy);
            f.y[y * w + x] = if dx * dx + dy * dy <= r * r {
                170
            } else if y as i64 > cy + r && dx.abs() < r * 2 {
                70
            } else if x < w / 5 && (h / 8..h / 2).contains(&y) {
                220
            } else {
                (60 + y * 100 / h) as u8
            };
        }
    }
    let (cw, ch) = (w / 2, h / 2);
    for y in 0..ch {
        for x in 0..cw {
            let (dx, dy) = (2 * x as i64 - cx, 2 * y as i64 - cy);
            let (u, v) = if dx * dx + dy * dy <= r * r {
                (110, 155)
            } else if 2 * y as i64 > cy + r && dx.abs() < r * 2 {
                (170u8.wrapping_sub(tint), 110)
            } else {
                (150, 120u8.wrapping_add(tint))
            };
            f.u[y * cw + x] = u;
            f.v[y * cw + x] = v;
        }
    }
    f
}

fn qr_and_id() -> (Vec<Vec<bool>>, String) {
    let id = DeviceKey::from_seed([7; 32]).id();
    (qr::matrix(&id.to_string()).unwrap(), id.short())
}

const FAMILY: [ContactLine<'static>; 3] = [
    ContactLine { name: "Grandma", button: Some(1) },
    ContactLine { name: "Kids", button: Some(2) },
    ContactLine { name: "Office", button: None },
];

#[test]
fn ready() {
    let mut g = Goldens::default();
    let (qr, id) = qr_and_id();
    let ready = |contacts, net, missed_calls, qr| Screen::Ready {
        device: "Kitchen",
        id_short: &id,
        contacts,
        net,
        missed_calls,
        qr,
    };
    g.check("ready_empty", 640, 480, &ready(&[], NetState::Lan, 0, Some(&qr)));
    g.check("ready_family", 640, 480, &ready(&FAMILY, NetState::Online, 0, Some(&qr)));
    g.check("ready_no_qr", 640, 480, &ready(&FAMILY, NetState::Offline, 1, None));
    g.check("ready_800x480", 800, 480, &ready(&FAMILY, NetState::Online, 2, Some(&qr)));
    g.check("ready_320x240", 320, 240, &ready(&FAMILY, NetState::Lan, 2, Some(&qr)));

    let names = [
        "Großmutter Hildegard von Bingen-Müller",
        "Dr. Maximilian Alexander Featherstonehaugh",
        "Zoë",
        "Workshop office (back entrance)",
        "Jo",
        "Neighbours upstairs, flat 4B",
        "Aunt Pat",
        "Door",
        "Überlänge",
        "Ninth",
        "Tenth",
        "Eleventh",
    ];
    let many: Vec<ContactLine> =
        names.iter().enumerate().map(|(i, n)| ContactLine { name: n, button: Some(i as u8 + 1) }).collect();
    let screen = Screen::Ready {
        device: "The kitchen unit at Großmutter's house on the hill",
        id_short: &id,
        contacts: &many,
        net: NetState::Offline,
        missed_calls: 12,
        qr: Some(&qr),
    };
    g.check("ready_many_long", 640, 480, &screen);
    g.finish();
}

#[test]
fn calling_incoming_ended() {
    let mut g = Goldens::default();
    g.check("calling", 640, 480, &Screen::Calling { contact: "Grandma", cancel_button: Some(1) });
    g.check(
        "calling_long_name",
        640,
        480,
        &Screen::Calling { contact: "Dr. Maximilian Alexander Featherstonehaugh", cancel_button: None },
    );
    g.check(
        "incoming",
        640,
        480,
        &Screen::Incoming { contact: "Kids", answer_button: Some(0), reject_button: Some(9) },
    );
    g.check(
        "incoming_320x240",
        320,
        240,
        &Screen::Incoming { contact: "Grandma", answer_button: Some(0), reject_button: None },
    );
    g.check("ended", 640, 480, &Screen::Ended { contact: "Grandma", reason: "hung up", failed: false });
    g.check("ended_failed", 640, 480, &Screen::Ended { contact: "Kids", reason: "no answer", failed: true });
    g.finish();
}

#[test]
fn in_call() {
    let mut g = Goldens::default();
    let remote = scene(640, 480, 0);
    let local = scene(320, 240, 40);
    let call = |contact, elapsed_s, muted, remote, local| Screen::InCall { contact, elapsed_s, muted, remote, local };
    g.check("in_call", 640, 480, &call("Grandma", 65, false, Some(&remote), Some(&local)));
    g.check(
        "in_call_muted_long",
        640,
        480,
        &call("Großmutter Hildegard von Bingen", 3725, true, Some(&remote), Some(&local)),
    );
    g.check("in_call_no_video", 640, 480, &call("Kids", 5, false, None, None));
    g.check("in_call_800x480", 800, 480, &call("Kids", 600, true, Some(&remote), Some(&local)));
    g.check("in_call_320x240", 320, 240, &call("Grandma", 42, true, Some(&remote), Some(&local)));
    g.finish();
}

/// `cargo test --release -p peercom --test ui in_call_draw_timing -- --ignored --nocapture`
#[test]
#[ignore]
fn in_call_draw_timing() {
    let remote = scene(640, 480, 0);
    let local = scene(320, 240, 40);
    for (w, h) in [(640, 480), (800, 480), (1024, 600)] {
        let mut fb = vec![0u8; w * h * 3];
        let screen = Screen::InCall {
            contact: "Grandma",
            elapsed_s: 65,
            muted: true,
            remote: Some(&remote),
            local: Some(&local),
        };
        draw(&screen, &mut fb, w, h); // warm up: page in the buffer
        let n = 300;
        let t = std::time::Instant::now();
        for _ in 0..n {
            draw(&screen, &mut fb, w, h);
        }
        println!("in-call screen {w}x{h}: {:?} per frame", t.elapsed() / n);
    }
}
