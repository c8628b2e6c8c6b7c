//! Percentiles over measured samples.
use serde::Serialize;

#[derive(Debug, Clone, Copy, Serialize)]
pub struct Percentiles {
    pub p50: f64,
    pub p95: f64,
    pub min: f64,
    pub max: f64,
}

/// Nearest-rank percentiles of `samples` (sorted in place). Empty input gives zeros.
pub fn percentiles(samples: &mut [f64]) -> Percentiles {
    if samples.is_empty() {
        return Percentiles { p50: 0.0, p95: 0.0, min: 0.0, max: 0.0 };
    }
    samples.sort_by(|a, b| a.total_cmp(b));
    let rank = |p: f64| samples[(((p / 100.0) * samples.len() as f64).ceil() as usize).clamp(1, samples.len()) - 1];
    let round = |x: f64| (x * 1000.0).round() / 1000.0;
    Percentiles {
        p50: round(rank(50.0)),
        p95: round(rank(95.0)),
        min: round(samples[0]),
        max: round(samples[samples.len() - 1]),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    #[test]
    fn nearest_rank() {
        let mut v: Vec<f64> = (1..=100).rev().map(f64::from).collect();
        let p = percentiles(&mut v);
        assert_eq!((p.p50, p.p95, p.min, p.max), (50.0, 95.0, 1.0, 100.0));
        assert_eq!(percentiles(&mut []).p50, 0.0);
    }
}
