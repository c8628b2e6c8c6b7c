//! Minimal logging to stderr with a wall-clock timestamp. Secrets have no Display/Debug, so they
//! cannot reach these lines by accident.
use std::time::{Duration, Instant};

#[macro_export]
macro_rules! log {
    ($($arg:tt)*) => {
        $crate::util::log::write(format_args!($($arg)*))
    };
}

static QUIET: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

/// Silences logging (benchmarks print only their JSON).
pub fn set_quiet(q: bool) {
    QUIET.store(q, std::sync::atomic::Ordering::Relaxed);
}

pub fn write(args: std::fmt::Arguments<'_>) {
    if QUIET.load(std::sync::atomic::Ordering::Relaxed) {
        return;
    }
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default();
    let secs = now.as_secs() % 86_400;
    eprintln!("{:02}:{:02}:{:02}.{:03} {}", secs / 3600, (secs / 60) % 60, secs % 60, now.subsec_millis(), args);
}

/// Allows one message per window; counts the ones suppressed so the next line can say how many.
#[derive(Debug)]
pub struct RateLimit {
    window: Duration,
    last: Option<Instant>,
    suppressed: u64,
}

impl RateLimit {
    pub fn new(window: Duration) -> Self {
        RateLimit { window, last: None, suppressed: 0 }
    }

    /// Returns `Some(suppressed_since_last)` when a message may be logged now.
    pub fn allow(&mut self, now: Instant) -> Option<u64> {
        match self.last {
            Some(t) if now.saturating_duration_since(t) < self.window => {
                self.suppressed += 1;
                None
            }
            _ => {
                self.last = Some(now);
                Some(std::mem::take(&mut self.suppressed))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    #[test]
    fn rate_limit_one_per_window() {
        let t0 = Instant::now();
        let mut r = RateLimit::new(Duration::from_secs(10));
        assert_eq!(r.allow(t0), Some(0));
        assert_eq!(r.allow(t0 + Duration::from_secs(1)), None);
        assert_eq!(r.allow(t0 + Duration::from_secs(9)), None);
        assert_eq!(r.allow(t0 + Duration::from_secs(10)), Some(2));
    }
}
