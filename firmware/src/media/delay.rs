//! How much playout delay an audio stream needs, from how late its packets really arrive.
//!
//! A packet's lateness is its transit (arrival − capture, both clocks' offset included) above the
//! lowest transit seen in the last few seconds. Every arrival counts, late ones most of all: a
//! histogram of lateness (1 ms buckets) forgets old arrivals exponentially, and the delay asked
//! for is its 95th percentile, as WebRTC's NetEQ does. Nothing here grows: the histogram is fixed.
use super::loss::transit_us;

const BUCKETS: usize = 256;
const BUCKET_US: u64 = 1_000;
/// The lowest transit is the minimum over 5..10 s (two halves of a 10 s window).
const BASE_WINDOW_US: u64 = 10_000_000;
/// Old arrivals weigh half as much after this long.
const HALF_LIFE_US: f64 = 5_000_000.0;
/// Weights are rescaled before they lose precision.
const RESCALE_AT: f64 = 1e12;

pub struct DelayEstimator {
    buckets: [f64; BUCKETS],
    total: f64,
    /// Weight of the next arrival; grows by 1/decay per arrival instead of decaying the rest.
    weight: f64,
    decay: f64,
    /// (lowest transit, since when) for the older and the current half window.
    base: [(i64, u64); 2],
    observed: u64,
}

impl DelayEstimator {
    /// For a stream with one packet per `frame_us`.
    pub fn new(frame_us: u64) -> Self {
        let per_half_life = (HALF_LIFE_US / frame_us.max(1) as f64).max(1.0);
        DelayEstimator {
            buckets: [0.0; BUCKETS],
            total: 0.0,
            weight: 1.0,
            decay: 0.5f64.powf(1.0 / per_half_life),
            base: [(i64::MAX, 0); 2],
            observed: 0,
        }
    }

    pub fn reset(&mut self) {
        self.buckets = [0.0; BUCKETS];
        self.total = 0.0;
        self.weight = 1.0;
        self.base = [(i64::MAX, 0); 2];
        self.observed = 0;
    }

    /// Forgets everything and starts again from one arrival (the sender's clock jumped).
    pub fn rebase(&mut self, now_us: u64, capture_us: u64) {
        self.reset();
        self.observe(now_us, capture_us);
    }

    /// The lowest recent transit, µs (0 before any arrival).
    pub fn base(&self) -> i64 {
        let b = self.base[0].0.min(self.base[1].0);
        if b == i64::MAX { 0 } else { b }
    }

    pub fn observed(&self) -> u64 {
        self.observed
    }

    /// One arrival at `now_us` of a packet captured at `capture_us`; returns its lateness, µs.
    pub fn observe(&mut self, now_us: u64, capture_us: u64) -> u64 {
        let transit = transit_us(now_us, capture_us);
        if self.observed == 0 || now_us.saturating_sub(self.base[1].1) > BASE_WINDOW_US / 2 {
            self.base[0] = self.base[1];
            self.base[1] = (transit, now_us);
        }
        self.base[1].0 = self.base[1].0.min(transit);
        self.observed += 1;
        let late = transit.saturating_sub(self.base()).max(0) as u64;
        let i = ((late / BUCKET_US) as usize).min(BUCKETS - 1);
        self.buckets[i] += self.weight;
        self.total += self.weight;
        self.weight /= self.decay;
        if self.weight > RESCALE_AT {
            let k = 1.0 / self.weight;
            self.buckets.iter_mut().for_each(|b| *b *= k);
            self.total *= k;
            self.weight = 1.0;
        }
        late
    }

    /// The lateness that fraction `q` of recent arrivals stayed within, µs (a bucket's upper
    /// edge, so a steady stream needs 1 ms).
    pub fn quantile_us(&self, q: f64) -> u64 {
        if self.total <= 0.0 {
            return 0;
        }
        let over = self.total * (1.0 - q.clamp(0.0, 1.0));
        let mut above = 0.0;
        for i in (0..BUCKETS).rev() {
            above += self.buckets[i];
            if above > over {
                return (i as u64 + 1) * BUCKET_US;
            }
        }
        BUCKET_US
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const F: u64 = 10_000;

    #[test]
    fn a_steady_stream_needs_almost_nothing() {
        let mut d = DelayEstimator::new(F);
        for k in 0..500 {
            assert_eq!(d.observe(k * F + 3_000, k * F), 0);
        }
        assert_eq!(d.base(), 3_000);
        assert_eq!(d.quantile_us(0.95), 1_000);
    }

    #[test]
    fn the_95th_percentile_of_lateness_counts_every_arrival() {
        let mut d = DelayEstimator::new(F);
        // One packet in ten is 30 ms late, one in fifty 60 ms: the 95th percentile is 30 ms.
        for k in 0..3_000u64 {
            let extra = if k % 50 == 7 {
                60_000
            } else if k % 10 == 3 {
                30_000
            } else {
                0
            };
            d.observe(k * F + 2_000 + extra, k * F);
        }
        assert_eq!(d.quantile_us(0.95), 31_000);
        assert_eq!(d.quantile_us(0.99), 61_000);
    }

    #[test]
    fn old_jitter_is_forgotten() {
        let mut d = DelayEstimator::new(F);
        for k in 0..1_000u64 {
            d.observe(k * F + if k % 2 == 0 { 40_000 } else { 0 }, k * F);
        }
        assert!(d.quantile_us(0.95) > 40_000);
        // 26 s of a clean path: the late arrivals, aged five half-lives, are about 1% of the weight.
        for k in 1_000..3_600u64 {
            d.observe(k * F, k * F);
        }
        assert_eq!(d.quantile_us(0.95), 1_000);
    }

    #[test]
    fn the_base_follows_a_slower_path_after_its_window() {
        let mut d = DelayEstimator::new(F);
        for k in 0..100u64 {
            d.observe(k * F + 5_000, k * F);
        }
        // The path gets 20 ms slower for good: late at first, the new normal within 10 s.
        let mut late = 0;
        for k in 100..1_200u64 {
            late = d.observe(k * F + 25_000, k * F);
        }
        assert_eq!((late, d.base()), (0, 25_000));
    }

    #[test]
    fn weights_stay_finite_over_a_long_call() {
        let mut d = DelayEstimator::new(F);
        // Eight hours of 10 ms packets.
        for k in 0..2_880_000u64 {
            d.observe(k * F + (k % 7) * 1_000, k * F);
        }
        assert!(d.total.is_finite() && d.weight.is_finite());
        assert_eq!(d.quantile_us(0.95), 7_000);
    }
}
