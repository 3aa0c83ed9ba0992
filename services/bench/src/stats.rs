//! Small statistics: medians with min–max over runs, latency percentiles.

use std::time::Duration;

/// Values of one quantity over several runs.
#[derive(Debug, Clone, Default)]
pub struct Samples(pub Vec<f64>);

impl Samples {
    pub fn push(&mut self, v: f64) {
        self.0.push(v);
    }

    fn sorted(&self) -> Vec<f64> {
        let mut v = self.0.clone();
        v.sort_by(f64::total_cmp);
        v
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// The median (the mean of the two middle values for an even count).
    pub fn median(&self) -> Option<f64> {
        let v = self.sorted();
        let n = v.len();
        match n {
            0 => None,
            _ if n % 2 == 1 => Some(v[n / 2]),
            _ => Some((v[n / 2 - 1] + v[n / 2]) / 2.0),
        }
    }

    pub fn min(&self) -> Option<f64> {
        self.sorted().first().copied()
    }

    pub fn max(&self) -> Option<f64> {
        self.sorted().last().copied()
    }

    /// "median (min–max)" with `prec` decimals, or "–".
    pub fn show(&self, prec: usize) -> String {
        match (self.median(), self.min(), self.max()) {
            (Some(m), Some(lo), Some(hi)) if self.0.len() > 1 => {
                format!("{m:.prec$} ({lo:.prec$}–{hi:.prec$})")
            }
            (Some(m), _, _) => format!("{m:.prec$}"),
            _ => "–".into(),
        }
    }
}

/// Request latencies, sorted.
#[derive(Debug, Clone, Default)]
pub struct Latencies(Vec<Duration>);

impl Latencies {
    pub fn new(mut v: Vec<Duration>) -> Self {
        v.sort();
        Self(v)
    }

    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// The `p`-th percentile (nearest rank), 0 when empty.
    pub fn pct(&self, p: f64) -> Duration {
        if self.0.is_empty() {
            return Duration::ZERO;
        }
        let rank = ((p / 100.0) * self.0.len() as f64).ceil() as usize;
        self.0[rank.clamp(1, self.0.len()) - 1]
    }

    pub fn max(&self) -> Duration {
        self.0.last().copied().unwrap_or_default()
    }
}

pub fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn median_and_range() {
        let s = Samples(vec![3.0, 1.0, 2.0]);
        assert_eq!(s.median(), Some(2.0));
        assert_eq!(s.show(1), "2.0 (1.0–3.0)");
        assert_eq!(Samples(vec![1.0, 4.0]).median(), Some(2.5));
        assert_eq!(Samples::default().show(1), "–");
    }

    #[test]
    fn percentiles() {
        let l = Latencies::new((1..=100).rev().map(Duration::from_millis).collect());
        assert_eq!(l.pct(50.0), Duration::from_millis(50));
        assert_eq!(l.pct(99.0), Duration::from_millis(99));
        assert_eq!(l.pct(100.0), Duration::from_millis(100));
        assert_eq!(Latencies::default().pct(99.0), Duration::ZERO);
    }
}
