//! The tracker's `/metrics`: counters bumped as events happen, the state-lock
//! histograms, and gauges read from the state at scrape time (a collector), in one
//! `prometheus-client` registry with the RPC metrics. Nothing here renders text.

use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::Arc;

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{
    DescriptorEncoder, EncodeLabelSet, EncodeMetric, MetricEncoder, NoLabelSet,
};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::metrics::MetricType;
use prometheus_client::registry::Registry;

use crate::Tracker;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct Outcome {
    outcome: &'static str,
}

#[derive(Default)]
pub struct Metrics {
    placements: Family<Outcome, Counter>,
    pub repaired_chunks: Counter,
    pub repaired_bytes: Counter,
    pub repair_failures: Counter,
    pub gc_deleted_chunks: Counter,
    pub trimmed_copies: Counter,
    pub heartbeats: Counter,
    pub log_trimmed: Counter,
    /// How long callers waited for the state lock, and how long they held it.
    pub lock_wait: LockHistogram,
    pub lock_hold: LockHistogram,
}

/// Upper bounds (seconds) of the lock histograms' buckets.
const LOCK_BUCKETS: [f64; 9] = [0.0001, 0.001, 0.005, 0.01, 0.05, 0.1, 0.5, 1.0, 5.0];

/// A histogram of durations over [`LOCK_BUCKETS`], recorded with atomics only: every
/// state-lock acquire and release records into one, where `prometheus-client`'s
/// `Histogram` would take its mutex. The library still encodes it (as a histogram).
#[derive(Clone, Debug, Default)]
pub struct LockHistogram(Arc<LockBuckets>);

#[derive(Debug, Default)]
struct LockBuckets {
    /// Observations per bucket (not cumulative); above the last bound only in `count`.
    buckets: [AtomicU64; LOCK_BUCKETS.len()],
    count: AtomicU64,
    sum_micros: AtomicU64,
}

impl LockHistogram {
    pub fn record(&self, d: std::time::Duration) {
        let h = &self.0;
        let secs = d.as_secs_f64();
        if let Some(i) = LOCK_BUCKETS.iter().position(|b| secs <= *b) {
            h.buckets[i].fetch_add(1, Relaxed);
        }
        h.count.fetch_add(1, Relaxed);
        h.sum_micros
            .fetch_add(d.as_micros().min(u64::MAX as u128) as u64, Relaxed);
    }
}

impl EncodeMetric for LockHistogram {
    fn encode(&self, mut encoder: MetricEncoder) -> Result<(), std::fmt::Error> {
        let h = &self.0;
        let buckets: Vec<(f64, u64)> = LOCK_BUCKETS
            .iter()
            .zip(&h.buckets)
            .map(|(b, n)| (*b, n.load(Relaxed)))
            .collect();
        let sum = h.sum_micros.load(Relaxed) as f64 / 1e6;
        // The encoder adds the `+Inf` bucket (the count) and accumulates the others.
        encoder.encode_histogram::<NoLabelSet>(sum, h.count.load(Relaxed), &buckets, None)
    }

    fn metric_type(&self) -> MetricType {
        MetricType::Histogram
    }
}

impl Metrics {
    pub fn placement(&self, outcome: &'static str) {
        self.placements.get_or_create(&Outcome { outcome }).inc();
    }

    /// Add these counters and histograms to `r` (names without `_total`: the encoder
    /// appends it to counters).
    fn register(&self, r: &mut Registry) {
        let counters = [
            (
                "shoal_tracker_repaired_chunks",
                "Chunk copies made by repair",
                &self.repaired_chunks,
            ),
            (
                "shoal_tracker_repaired_bytes",
                "Bytes copied by repair",
                &self.repaired_bytes,
            ),
            (
                "shoal_tracker_repair_failures",
                "Repair copies that failed",
                &self.repair_failures,
            ),
            (
                "shoal_tracker_gc_deleted_chunks",
                "Unreferenced chunks deleted by GC",
                &self.gc_deleted_chunks,
            ),
            (
                "shoal_tracker_trimmed_copies",
                "Copies removed above the target",
                &self.trimmed_copies,
            ),
            (
                "shoal_tracker_heartbeats",
                "Heartbeats received",
                &self.heartbeats,
            ),
            (
                "shoal_tracker_log_trimmed",
                "Shared catalogue log entries trimmed by this replica as leader (PostgreSQL)",
                &self.log_trimmed,
            ),
        ];
        for (name, help, c) in counters {
            r.register(name, help, c.clone());
        }
        r.register(
            "shoal_tracker_state_lock_wait_seconds",
            "Time spent waiting for the tracker's state lock",
            self.lock_wait.clone(),
        );
        r.register(
            "shoal_tracker_state_lock_hold_seconds",
            "Time the tracker's state lock was held (long holds are logged with their caller)",
            self.lock_hold.clone(),
        );
        r.register(
            "shoal_tracker_placements",
            "Placement decisions by outcome",
            self.placements.clone(),
        );
    }
}

/// The tracker's registry, served on its `/metrics`.
pub fn registry(t: Arc<Tracker>) -> Registry {
    let mut r = Registry::default();
    t.metrics.register(&mut r);
    r.register_collector(Box::new(StateGauges(t)));
    shoal_common::rpcmetrics::register(&mut r);
    r
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct PeerLabels {
    zone: String,
    state: &'static str,
}

/// Gauges read at each scrape: the cluster summary (cached, as `ClusterInfo` answers
/// it) and the peers counted by zone and state.
struct StateGauges(Arc<Tracker>);

impl std::fmt::Debug for StateGauges {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("StateGauges")
    }
}

impl Collector for StateGauges {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let t = &self.0;
        let info = crate::manager::cluster_info(t);
        // Help texts end with a period here: only `Registry::register` adds one.
        let gauges = [
            ("shoal_tracker_files", "Names in the catalogue.", info.files),
            (
                "shoal_tracker_chunks",
                "Distinct chunks referenced by files.",
                info.chunks,
            ),
            (
                "shoal_tracker_under_replicated_chunks",
                "Chunks with fewer live copies than their target.",
                info.under_replicated_chunks,
            ),
            (
                "shoal_tracker_lost_chunks",
                "Chunks with no live copy.",
                info.lost_chunks,
            ),
            (
                "shoal_tracker_repair_queue_depth",
                "Chunks waiting for repair.",
                info.repair_queue,
            ),
            (
                "shoal_tracker_leader",
                "1 while this replica runs the background manager (always with redb).",
                u64::from(t.is_leader()),
            ),
        ];
        for (name, help, v) in gauges {
            let g = ConstGauge::new(v);
            g.encode(encoder.encode_descriptor(name, help, None, g.metric_type())?)?;
        }
        let mut by: std::collections::BTreeMap<(String, &'static str), u64> = Default::default();
        let st = t.state();
        let now = tokio::time::Instant::now();
        for p in st.peers.values() {
            let state = match st.peer_state(p, &t.cfg, now) {
                shoal_proto::v1::PeerState::Alive => "alive",
                shoal_proto::v1::PeerState::Suspect => "suspect",
                shoal_proto::v1::PeerState::Dead => "dead",
                shoal_proto::v1::PeerState::Draining => "draining",
                shoal_proto::v1::PeerState::Drained => "drained",
                shoal_proto::v1::PeerState::Restarting => "restarting",
                shoal_proto::v1::PeerState::Unspecified => "unknown",
            };
            *by.entry((p.zone.clone(), state)).or_default() += 1;
        }
        drop(st);
        if by.is_empty() {
            return Ok(());
        }
        let mut peers = encoder.encode_descriptor(
            "shoal_tracker_peers",
            "Peers by zone and state.",
            None,
            MetricType::Gauge,
        )?;
        for ((zone, state), n) in by {
            ConstGauge::new(n).encode(peers.encode_family(&PeerLabels { zone, state })?)?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn lock_histogram_buckets_are_cumulative_and_counters_keep_their_names() {
        let m = Metrics::default();
        m.lock_wait.record(Duration::from_micros(50));
        m.lock_wait.record(Duration::from_millis(3));
        m.lock_wait.record(Duration::from_secs(9));
        m.heartbeats.inc();
        m.placement("full");
        let mut r = Registry::default();
        m.register(&mut r);
        let out = shoal_common::admin::encode(&r);
        let x = "shoal_tracker_state_lock_wait_seconds";
        for line in [
            format!("# TYPE {x} histogram\n"),
            format!("{x}_bucket{{le=\"0.0001\"}} 1\n"),
            format!("{x}_bucket{{le=\"0.005\"}} 2\n"),
            format!("{x}_bucket{{le=\"5\"}} 2\n"),
            format!("{x}_bucket{{le=\"+Inf\"}} 3\n"),
            format!("{x}_count 3\n"),
            "# TYPE shoal_tracker_heartbeats_total counter\n".into(),
            "shoal_tracker_heartbeats_total 1\n".into(),
            "shoal_tracker_placements_total{outcome=\"full\"} 1\n".into(),
        ] {
            assert!(out.contains(&line), "no {line:?} in\n{out}");
        }
    }
}
