//! Tracker counters, rendered as Prometheus text on `/metrics`.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::Mutex;

#[derive(Default)]
pub struct Metrics {
    placements: Mutex<BTreeMap<&'static str, u64>>,
    pub repaired_chunks: AtomicU64,
    pub repaired_bytes: AtomicU64,
    pub repair_failures: AtomicU64,
    pub gc_deleted_chunks: AtomicU64,
    pub trimmed_copies: AtomicU64,
    pub heartbeats: AtomicU64,
    pub log_trimmed: AtomicU64,
    /// How long callers waited for the state lock, and how long they held it.
    pub lock_wait: Histogram,
    pub lock_hold: Histogram,
}

/// Upper bounds (seconds) of the lock histograms' buckets.
const LOCK_BUCKETS: [f64; 9] = [0.0001, 0.001, 0.005, 0.01, 0.05, 0.1, 0.5, 1.0, 5.0];

/// A Prometheus histogram of durations over [`LOCK_BUCKETS`], lock-free to record.
#[derive(Default)]
pub struct Histogram {
    buckets: [AtomicU64; LOCK_BUCKETS.len()],
    count: AtomicU64,
    sum_micros: AtomicU64,
}

impl Histogram {
    pub fn record(&self, d: std::time::Duration) {
        let secs = d.as_secs_f64();
        if let Some(i) = LOCK_BUCKETS.iter().position(|b| secs <= *b) {
            self.buckets[i].fetch_add(1, Relaxed);
        }
        self.count.fetch_add(1, Relaxed);
        self.sum_micros
            .fetch_add(d.as_micros().min(u64::MAX as u128) as u64, Relaxed);
    }

    fn render(&self, out: &mut String, name: &str, help: &str) {
        let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} histogram");
        let mut cumulative = 0;
        for (b, n) in LOCK_BUCKETS.iter().zip(&self.buckets) {
            cumulative += n.load(Relaxed);
            let _ = writeln!(out, "{name}_bucket{{le=\"{b}\"}} {cumulative}");
        }
        let count = self.count.load(Relaxed);
        let _ = writeln!(out, "{name}_bucket{{le=\"+Inf\"}} {count}");
        let sum = self.sum_micros.load(Relaxed) as f64 / 1e6;
        let _ = writeln!(out, "{name}_sum {sum}\n{name}_count {count}");
    }
}

impl Metrics {
    pub fn placement(&self, outcome: &'static str) {
        *self
            .placements
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .entry(outcome)
            .or_default() += 1;
    }

    /// Counters in Prometheus text format (gauges come from the state, rendered by the caller).
    pub fn render(&self, out: &mut String) {
        let counters = [
            (
                "shoal_tracker_repaired_chunks_total",
                "Chunk copies made by repair.",
                &self.repaired_chunks,
            ),
            (
                "shoal_tracker_repaired_bytes_total",
                "Bytes copied by repair.",
                &self.repaired_bytes,
            ),
            (
                "shoal_tracker_repair_failures_total",
                "Repair copies that failed.",
                &self.repair_failures,
            ),
            (
                "shoal_tracker_gc_deleted_chunks_total",
                "Unreferenced chunks deleted by GC.",
                &self.gc_deleted_chunks,
            ),
            (
                "shoal_tracker_trimmed_copies_total",
                "Copies removed above the target.",
                &self.trimmed_copies,
            ),
            (
                "shoal_tracker_heartbeats_total",
                "Heartbeats received.",
                &self.heartbeats,
            ),
            (
                "shoal_tracker_log_trimmed_total",
                "Shared catalogue log entries trimmed by this replica as leader (PostgreSQL).",
                &self.log_trimmed,
            ),
        ];
        for (name, help, v) in counters {
            let _ = writeln!(
                out,
                "# HELP {name} {help}\n# TYPE {name} counter\n{name} {}",
                v.load(Relaxed)
            );
        }
        self.lock_wait.render(
            out,
            "shoal_tracker_state_lock_wait_seconds",
            "Time spent waiting for the tracker's state lock.",
        );
        self.lock_hold.render(
            out,
            "shoal_tracker_state_lock_hold_seconds",
            "Time the tracker's state lock was held (long holds are logged with their caller).",
        );
        let _ = writeln!(out, "# HELP shoal_tracker_placements_total Placement decisions by outcome.\n# TYPE shoal_tracker_placements_total counter");
        for (outcome, n) in self
            .placements
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .iter()
        {
            let _ = writeln!(
                out,
                "shoal_tracker_placements_total{{outcome=\"{outcome}\"}} {n}"
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn histogram_buckets_are_cumulative() {
        let h = Histogram::default();
        h.record(Duration::from_micros(50));
        h.record(Duration::from_millis(3));
        h.record(Duration::from_secs(9));
        let mut out = String::new();
        h.render(&mut out, "x", "help");
        assert!(out.contains("x_bucket{le=\"0.0001\"} 1\n"), "{out}");
        assert!(out.contains("x_bucket{le=\"0.005\"} 2\n"), "{out}");
        assert!(out.contains("x_bucket{le=\"5\"} 2\n"), "{out}");
        assert!(out.contains("x_bucket{le=\"+Inf\"} 3\n"), "{out}");
        assert!(out.contains("x_count 3\n"), "{out}");
    }
}
