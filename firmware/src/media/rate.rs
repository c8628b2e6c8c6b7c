//! Sender rate control from receiver reports, loss- and delay-based (the rules of Google
//! Congestion Control, simplified): loss above 10% cuts the rate in proportion, a growing
//! queue on the path backs off, and below 2% loss the rate grows by about 8% a second.
use super::packet::{Report, StreamReport};
use std::time::{Duration, Instant};

/// Fewer packets than this between reports say nothing reliable about loss.
const MIN_SAMPLE: u32 = 8;
/// Queueing delay above which the path is taken to be congested.
const QUEUE_LIMIT_US: u32 = 40_000;
/// After a decrease, no increase for this long (let the queue drain first).
const HOLD: Duration = Duration::from_secs(1);

pub struct RateController {
    min_bps: f64,
    max_bps: f64,
    target: f64,
    last: Option<(Instant, StreamReport, StreamReport)>,
    hold_until: Option<Instant>,
    last_queue_us: u32,
    loss: f64,
}

impl RateController {
    pub fn new(min_kbps: u32, max_kbps: u32, start_kbps: u32) -> Self {
        let (min, max) = (f64::from(min_kbps) * 1000.0, f64::from(max_kbps.max(min_kbps)) * 1000.0);
        RateController {
            min_bps: min,
            max_bps: max,
            target: (f64::from(start_kbps) * 1000.0).clamp(min, max),
            last: None,
            hold_until: None,
            last_queue_us: 0,
            loss: 0.0,
        }
    }

    pub fn target_bps(&self) -> u64 {
        self.target as u64
    }

    /// The loss rate last reported, smoothed (0..1): tells Opus how much FEC to spend.
    pub fn loss(&self) -> f64 {
        self.loss
    }

    pub fn on_report(&mut self, now: Instant, r: &Report) {
        let Some((t0, v0, a0)) = self.last.replace((now, r.video, r.audio)) else { return };
        let expected =
            r.video.expected.wrapping_sub(v0.expected).wrapping_add(r.audio.expected.wrapping_sub(a0.expected));
        let received =
            r.video.received.wrapping_sub(v0.received).wrapping_add(r.audio.received.wrapping_sub(a0.received));
        let dt = now.saturating_duration_since(t0).as_secs_f64().min(1.0);
        let queue_us = r.video.queue_us.max(r.audio.queue_us);
        let rising = queue_us > self.last_queue_us;
        self.last_queue_us = queue_us;
        // Counts that went backwards (a new call on the other side) are not a measurement.
        let loss = if (MIN_SAMPLE..1 << 30).contains(&expected) && received <= expected {
            1.0 - f64::from(received) / f64::from(expected)
        } else if expected < MIN_SAMPLE {
            self.loss
        } else {
            return;
        };
        self.loss += (loss - self.loss) * 0.3;
        let holding = self.hold_until.is_some_and(|t| now < t);
        if loss > 0.10 {
            self.target *= 1.0 - 0.5 * loss;
            self.hold_until = Some(now + HOLD);
        } else if queue_us > QUEUE_LIMIT_US && rising {
            self.target *= 0.85;
            self.hold_until = Some(now + HOLD);
        } else if loss < 0.02 && !holding && queue_us <= QUEUE_LIMIT_US {
            self.target *= 1.0 + 0.08 * dt;
        }
        self.target = self.target.clamp(self.min_bps, self.max_bps);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn report(exp: u32, recv: u32, queue_us: u32) -> Report {
        Report { video: StreamReport { expected: exp, received: recv, jitter_us: 0, queue_us }, ..Default::default() }
    }

    /// Feeds one report every 200 ms for `secs` seconds, with `per` packets expected per report.
    fn run(rc: &mut RateController, t: &mut Instant, n: &mut (u32, u32), secs: u32, loss: f64, queue_us: u32) {
        for _ in 0..secs * 5 {
            n.0 += 100;
            n.1 += (100.0 * (1.0 - loss)) as u32;
            *t += Duration::from_millis(200);
            rc.on_report(*t, &report(n.0, n.1, queue_us));
        }
    }

    #[test]
    fn grows_when_clean_cuts_on_loss_and_delay() {
        let mut t = Instant::now();
        let mut n = (0, 0);
        let mut rc = RateController::new(150, 1500, 1000);
        run(&mut rc, &mut t, &mut n, 3, 0.0, 0);
        let grown = rc.target_bps();
        assert!(grown > 1_200_000 && grown < 1_300_000, "8%/s for 3 s: {grown}");
        run(&mut rc, &mut t, &mut n, 10, 0.0, 0);
        assert_eq!(rc.target_bps(), 1_500_000, "capped at max");
        // 5% loss: hold.
        run(&mut rc, &mut t, &mut n, 2, 0.05, 0);
        assert_eq!(rc.target_bps(), 1_500_000);
        // 20% loss: down, but never below min.
        run(&mut rc, &mut t, &mut n, 1, 0.2, 0);
        assert!(rc.target_bps() < 1_000_000, "{}", rc.target_bps());
        run(&mut rc, &mut t, &mut n, 10, 0.3, 0);
        assert_eq!(rc.target_bps(), 150_000);
        assert!(rc.loss() > 0.25);
        // Clean again, but a queue builds: back off while it grows.
        let mut rc = RateController::new(150, 1500, 1000);
        run(&mut rc, &mut t, &mut n, 1, 0.0, 0);
        let before = rc.target_bps();
        for q in 1..5 {
            n.0 += 100;
            n.1 += 100;
            t += Duration::from_millis(200);
            rc.on_report(t, &report(n.0, n.1, 40_000 + q * 10_000));
        }
        assert!(rc.target_bps() < before * 6 / 10, "{} vs {before}", rc.target_bps());
    }
}
