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
