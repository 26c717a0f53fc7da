//! Latency percentiles and `/proc` readings.

use std::time::Duration;

use crate::error::Error;

/// Latencies of a whole run, in microseconds.
#[derive(Debug, Default)]
pub struct Latencies {
    micros: Vec<u32>,
}

impl Latencies {
    /// Room for `n` latencies.
    pub fn with_capacity(n: usize) -> Latencies {
        Latencies {
            micros: Vec::with_capacity(n),
        }
    }

    /// Records one latency (saturating at `u32::MAX` µs, about 71 minutes).
    pub fn record(&mut self, latency: Duration) {
        let micros = u32::try_from(latency.as_micros()).unwrap_or(u32::MAX);
        self.micros.push(micros);
    }

    /// Adds another set's latencies to this one.
    pub fn merge(&mut self, other: Latencies) {
        self.micros.extend(other.micros);
    }

    /// How many latencies are recorded.
    pub fn len(&self) -> usize {
        self.micros.len()
    }

    /// The `p50` and `p99` latencies, in microseconds.
    pub fn p50_p99(mut self) -> (f64, f64) {
        self.micros.sort_unstable();
        (
            percentile(&self.micros, 0.50),
            percentile(&self.micros, 0.99),
        )
    }
}

/// The nearest-rank percentile `p` (0..=1) of sorted `values`; 0 if empty.
fn percentile(sorted: &[u32], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let rank = (p * sorted.len() as f64).ceil() as usize;
    f64::from(sorted[rank.clamp(1, sorted.len()) - 1])
}

/// A `kB` field (`VmRSS`, `VmHWM`) of `/proc/<pid>/status`; `pid` of `None`
/// reads this process.
///
/// # Errors
///
/// [`Error::Proc`] if the file cannot be read or has no such field.
pub fn status_kb(pid: Option<u32>, field: &'static str) -> Result<u64, Error> {
    let path = match pid {
        Some(pid) => format!("/proc/{pid}/status"),
        None => "/proc/self/status".to_owned(),
    };
    let fail = |reason: String| Error::Proc {
        path: path.clone(),
        field,
        reason,
    };
    let status = std::fs::read_to_string(&path).map_err(|e| fail(e.to_string()))?;
    let line = status
        .lines()
        .find_map(|line| line.strip_prefix(field)?.strip_prefix(':'))
        .ok_or_else(|| fail("no such field".to_owned()))?;
    line.trim()
        .trim_end_matches("kB")
        .trim()
        .parse()
        .map_err(|_| fail(format!("not a number of kB: {line:?}")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nearest_rank_percentiles() {
        let values: Vec<u32> = (1..=100).collect();
        assert_eq!(percentile(&values, 0.50), 50.0);
        assert_eq!(percentile(&values, 0.99), 99.0);
        assert_eq!(percentile(&[7], 0.99), 7.0);
        assert_eq!(percentile(&[], 0.5), 0.0);
    }

    #[test]
    fn latencies_sort_before_percentiles() {
        let mut latencies = Latencies::default();
        for micros in [30, 10, 20] {
            latencies.record(Duration::from_micros(micros));
        }
        assert_eq!(latencies.p50_p99(), (20.0, 30.0));
    }

    #[test]
    fn own_status_has_rss_and_peak() {
        let rss = status_kb(None, "VmRSS").unwrap();
        let peak = status_kb(None, "VmHWM").unwrap();
        assert!(rss > 0 && peak >= rss, "rss {rss} kB, peak {peak} kB");
        assert!(status_kb(None, "NoSuchField").is_err());
    }
}
