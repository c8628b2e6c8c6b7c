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
}
