//! What the LEDs show for each call phase.
use crate::call::Phase;
use peercom_board::{Board, Led, LedState};

pub fn show(board: &mut dyn Board, phase: Phase) {
    board.set_led(Led::Ready, LedState::On);
    let call = match phase {
        Phase::Idle => LedState::Off,
        Phase::Dialing | Phase::Ringing => LedState::BlinkSlow,
        Phase::Incoming => LedState::BlinkFast,
        Phase::InCall => LedState::On,
    };
    board.set_led(Led::Call, call);
}
