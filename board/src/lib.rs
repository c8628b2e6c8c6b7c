//! Hardware abstraction for peercom: what the firmware needs from a board, and its backends.
//! Only the `sim` board exists so far; the Raspberry Pi/Linux backend (gpiocdev, V4L2, ALSA)
//! implements the same traits. Media traits (camera, audio, display) hand data in caller-owned buffers.
pub mod audio;
pub mod camera;
pub mod display;
pub mod frame;
pub mod png;
pub mod sim;
pub mod stamp;

use std::fmt;

/// The LEDs an appliance has: "ready" (power/network) and "call" (ringing / in call).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Led {
    Ready,
    Call,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LedState {
    Off,
    On,
    BlinkSlow,
    BlinkFast,
}

impl LedState {
    pub fn as_str(&self) -> &'static str {
        match self {
            LedState::Off => "off",
            LedState::On => "on",
            LedState::BlinkSlow => "blink-slow",
            LedState::BlinkFast => "blink-fast",
        }
    }
}

/// A board's buttons report presses through this callback (button number).
pub type ButtonSink = Box<dyn Fn(u8) + Send + Sync>;

/// A board's media devices, handed to the media threads when the device starts.
pub struct MediaDevices {
    pub camera: Box<dyn camera::Camera>,
    pub mic: Box<dyn audio::AudioIn>,
    pub speaker: Box<dyn audio::AudioOut>,
    pub display: Box<dyn display::Display>,
}

/// What the firmware asks of the media devices (from the config).
#[derive(Debug, Clone, Copy)]
pub struct MediaSpec {
    pub width: usize,
    pub height: usize,
    pub fps: u32,
    /// The zero of the µs timestamps the devices report (capture and playout times).
    pub clock: std::time::Instant,
}

pub trait Board: Send {
    fn kind(&self) -> &'static str;
    /// Opens camera, microphone, speaker and display. Called once at start-up.
    fn media(&mut self, spec: MediaSpec) -> Result<MediaDevices, BoardError>;
    /// Starts reporting button presses to `sink`. Boards whose buttons are driven from outside
    /// (the simulator: `peercom ctl press N`) may ignore it.
    fn start_buttons(&mut self, sink: ButtonSink) -> Result<(), BoardError>;
    fn set_led(&mut self, led: Led, state: LedState);
    fn led(&self, led: Led) -> LedState;
}

#[derive(Debug)]
pub struct BoardError(pub String);

impl fmt::Display for BoardError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for BoardError {}

/// Opens a board by name (`--board`).
pub fn open(kind: &str) -> Result<Box<dyn Board>, BoardError> {
    match kind {
        "sim" => Ok(Box::new(sim::SimBoard::default())),
        other => Err(BoardError(format!("unknown board \"{other}\" (available: sim)"))),
    }
}
