//! The simulated board: buttons are pressed through the control socket, LEDs are remembered so
//! tests and `peercom ctl status` can read them.
mod audio;
mod camera;
mod display;
pub mod y4m;

pub use audio::{MicRead, SimMic, SimSpeaker};
pub use camera::SimCamera;
pub use display::SimDisplay;

use crate::{Board, BoardError, ButtonSink, Led, LedState, MediaDevices, MediaSpec};

#[derive(Debug)]
pub struct SimBoard {
    ready: LedState,
    call: LedState,
    audio_phase_us: Option<u64>,
    /// Play this YUV4MPEG2 file instead of the test pattern.
    camera_file: Option<std::path::PathBuf>,
}

impl Default for SimBoard {
    fn default() -> Self {
        SimBoard { ready: LedState::Off, call: LedState::Off, audio_phase_us: None, camera_file: None }
    }
}

impl SimBoard {
    /// A board whose microphone's blocks end at a fixed phase (`SimMic::with_phase`).
    pub fn with_audio_phase(phase_us: u64) -> Self {
        SimBoard { audio_phase_us: Some(phase_us), ..Self::default() }
    }

    /// The camera plays `path` (`sim::y4m`) in a loop.
    pub fn with_camera_file(self, path: Option<std::path::PathBuf>) -> Self {
        SimBoard { camera_file: path, ..self }
    }
}

impl Board for SimBoard {
    fn kind(&self) -> &'static str {
        "sim"
    }

    fn media(&mut self, spec: MediaSpec) -> Result<MediaDevices, BoardError> {
        let camera: Box<dyn crate::camera::Camera> = match &self.camera_file {
            Some(p) => Box::new(y4m::Y4mCamera::open(p, spec.width, spec.height, spec.fps)?),
            None => Box::new(SimCamera::new(spec.width, spec.height, spec.fps)),
        };
        Ok(MediaDevices {
            camera,
            mic: Box::new(match self.audio_phase_us {
                Some(ph) => SimMic::with_phase(spec.clock, ph),
                None => SimMic::new(spec.clock),
            }),
            speaker: Box::new(SimSpeaker::new(spec.clock, 1024)),
            // The sim display matches the camera, like a 640x480 panel showing 640x480 video.
            display: Box::new(SimDisplay::new(spec.width, spec.height)),
        })
    }

    fn start_buttons(&mut self, _sink: ButtonSink) -> Result<(), BoardError> {
        Ok(())
    }

    fn set_led(&mut self, led: Led, state: LedState) {
        match led {
            Led::Ready => self.ready = state,
            Led::Call => self.call = state,
        }
    }

    fn led(&self, led: Led) -> LedState {
        match led {
            Led::Ready => self.ready,
            Led::Call => self.call,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    #[test]
    fn leds_remember_state() {
        let mut b = crate::open("sim").unwrap();
        assert_eq!(b.led(Led::Call), LedState::Off);
        b.set_led(Led::Call, LedState::BlinkFast);
        assert_eq!(b.led(Led::Call), LedState::BlinkFast);
        assert!(crate::open("nope").is_err());
    }
}
