//! Lip sync. Both streams carry capture times from the sender's one clock, so the receiver can
//! compare how late each is played without knowing the clock offset. Video is decoded and
//! shown as soon as it is complete, which is usually well ahead of the sound (whose jitter
//! buffer waits); a frame is held back only when the sound would otherwise lag the picture by
//! more than `MAX_LEAD` — under the 80 ms we promise, and the 125 ms at which people notice
//! (ITU-R BT.1359).
pub const MAX_LEAD_US: u64 = 60_000;
/// Never hold a frame longer than this, whatever the audio does.
pub const MAX_HOLD_US: u64 = 150_000;

/// When to present a frame captured at `capture_us` (sender clock), given `now_us` (receiver
/// clock) and the audio's current capture-to-playout delay measured the same way.
pub fn present_at_us(capture_us: u64, now_us: u64, audio_delay_us: Option<u64>) -> u64 {
    match audio_delay_us {
        Some(d) if d > MAX_LEAD_US => {
            let due = capture_us.saturating_add(d - MAX_LEAD_US);
            due.clamp(now_us, now_us + MAX_HOLD_US)
        }
        _ => now_us,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn holds_video_only_when_sound_lags_too_far() {
        // Sound 47 ms behind capture, picture 5 ms: 42 ms apart, shown at once.
        assert_eq!(present_at_us(1_000_000, 1_005_000, Some(47_000)), 1_005_000);
        // Sound 150 ms behind: the picture waits until it is 60 ms ahead of the sound (90 ms).
        assert_eq!(present_at_us(1_000_000, 1_005_000, Some(150_000)), 1_090_000);
        // A picture already later than that, or no audio yet: at once.
        assert_eq!(present_at_us(1_000_000, 1_100_000, Some(150_000)), 1_100_000);
        assert_eq!(present_at_us(1_000_000, 1_005_000, None), 1_005_000);
        // Never more than MAX_HOLD_US.
        assert_eq!(present_at_us(1_000_000, 1_005_000, Some(10_000_000)), 1_005_000 + MAX_HOLD_US);
    }
}
