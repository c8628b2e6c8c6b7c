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

/// CPU time (user + system) in seconds from a Linux `stat` file: `/proc/self/stat` for the
/// process, `/proc/thread-self/stat` for the calling thread. 0 where there is none.
pub fn cpu_seconds(stat_file: &str) -> f64 {
    std::fs::read_to_string(stat_file).map_or(0.0, |s| parse_cpu_seconds(&s))
}

/// CPU seconds of this process's threads, summed by thread name (both sim devices' threads of
/// one kind together; the network loops run on the main thread, with the benchmark).
pub fn cpu_seconds_by_thread() -> std::collections::BTreeMap<String, f64> {
    let mut by = std::collections::BTreeMap::new();
    let Ok(dir) = std::fs::read_dir("/proc/self/task") else { return by };
    for task in dir.flatten() {
        let Ok(stat) = std::fs::read_to_string(task.path().join("stat")) else { continue };
        let name = stat.split_once('(').and_then(|(_, r)| r.rsplit_once(')')).map_or("?", |(n, _)| n);
        *by.entry(name.to_string()).or_insert(0.0) += parse_cpu_seconds(&stat);
    }
    by
}

/// The fields after the command name (which may contain spaces and parentheses) start after the
/// last ')'; utime and stime are the 12th and 13th of them, in ticks of 1/100 s.
fn parse_cpu_seconds(stat: &str) -> f64 {
    let f: Vec<&str> = stat.rsplit(')').next().unwrap_or("").split_whitespace().collect();
    let ticks = |i: usize| f.get(i).and_then(|x| x.parse::<f64>().ok()).unwrap_or(0.0);
    (ticks(11) + ticks(12)) / 100.0
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

    #[test]
    fn cpu_time_is_parsed() {
        // A real line's shape, with a command name that contains ") (".
        let line = "4242 (peer) (com) S 1 4242 4242 0 -1 4194560 900 0 0 0 1234 56 0 0 20 0 3 0 99 0 0";
        assert_eq!(parse_cpu_seconds(line), 12.9);
        assert_eq!(parse_cpu_seconds("garbage"), 0.0);
        assert_eq!(cpu_seconds("/nonexistent"), 0.0);
    }
}
