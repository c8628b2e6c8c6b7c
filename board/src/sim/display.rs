//! The simulated display: an in-memory framebuffer; `present` keeps a copy of what was shown.
use crate::BoardError;
use crate::display::Display;

pub struct SimDisplay {
    width: usize,
    height: usize,
    back: Vec<u8>,
    shown: Vec<u8>,
    presents: u64,
}

impl SimDisplay {
    pub fn new(width: usize, height: usize) -> Self {
        SimDisplay { width, height, back: vec![0; width * height * 3], shown: vec![0; width * height * 3], presents: 0 }
    }

    /// What the screen shows now (RGB888).
    pub fn shown(&self) -> &[u8] {
        &self.shown
    }

    pub fn presents(&self) -> u64 {
        self.presents
    }

    /// Writes what the screen shows to a PNG file (atomically).
    pub fn save_png(&self, path: impl AsRef<std::path::Path>) -> std::io::Result<()> {
        crate::png::write_rgb(path, self.width, self.height, &self.shown)
    }
}

impl Display for SimDisplay {
    fn size(&self) -> (usize, usize) {
        (self.width, self.height)
    }

    fn framebuffer(&mut self) -> &mut [u8] {
        &mut self.back
    }

    fn present(&mut self) -> Result<(), BoardError> {
        self.shown.copy_from_slice(&self.back);
        self.presents += 1;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    #[test]
    fn present_shows_the_back_buffer() {
        let mut d = SimDisplay::new(2, 2);
        d.framebuffer()[0] = 200;
        assert_eq!(d.shown()[0], 0);
        d.present().unwrap();
        assert_eq!((d.shown()[0], d.presents()), (200, 1));
    }

    #[test]
    fn saves_what_is_shown() {
        let mut d = SimDisplay::new(4, 2);
        d.framebuffer().fill(90);
        d.present().unwrap();
        d.framebuffer().fill(10); // drawn but not presented: not in the screenshot
        let p = std::env::temp_dir().join(format!("peercom-simdisplay-{}.png", std::process::id()));
        d.save_png(&p).unwrap();
        let (w, h, rgb) = crate::png::read_rgb(&p).unwrap();
        let _ = std::fs::remove_file(&p);
        assert_eq!((w, h), (4, 2));
        assert!(rgb.iter().all(|&b| b == 90));
    }
}
