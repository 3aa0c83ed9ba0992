//! The peer's `/metrics`: its store and transfer figures, read at scrape time from the
//! store and the atomics the hot paths already bump (a collector), every series
//! labelled with the peer id and zone so alerts and dashboards can group by zone; and
//! the RPC metrics, which carry neither (the dashboards join them through the target).

use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric};
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::registry::Registry;

use crate::service::PeerCore;

/// The peer's registry, served on its `/metrics`.
pub fn registry(core: Arc<PeerCore>, zone: &str) -> Registry {
    let mut r = Registry::default();
    let labels = [
        ("peer".into(), core.id.clone().into()),
        ("zone".into(), zone.to_string().into()),
    ];
    r.sub_registry_with_labels(labels.into_iter())
        .register_collector(Box::new(PeerFigures(core)));
    shoal_common::rpcmetrics::register(&mut r);
    r
}

struct PeerFigures(Arc<PeerCore>);

impl std::fmt::Debug for PeerFigures {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("PeerFigures")
    }
}

impl Collector for PeerFigures {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let core = &self.0;
        let c = &core.counters;
        // Help texts end with a period here: only `Registry::register` adds one.
        let gauges = [
            (
                "shoal_peer_capacity_bytes",
                "Bytes this peer offers.",
                core.store.capacity(),
            ),
            (
                "shoal_peer_used_bytes",
                "Bytes of chunks stored.",
                core.store.used(),
            ),
            (
                "shoal_peer_chunks",
                "Chunks stored.",
                core.store.len() as u64,
            ),
            (
                "shoal_peer_active_transfers",
                "Chunk transfers in progress.",
                u64::from(c.active_transfers.load(Relaxed)),
            ),
        ];
        for (name, help, v) in gauges {
            let g = ConstGauge::new(v);
            g.encode(encoder.encode_descriptor(name, help, None, g.metric_type())?)?;
        }
        // Names without `_total`: the encoder appends it to counters.
        let counters = [
            (
                "shoal_peer_bytes_received",
                "Chunk bytes received.",
                &c.bytes_in,
            ),
            ("shoal_peer_bytes_sent", "Chunk bytes sent.", &c.bytes_out),
            (
                "shoal_peer_chunks_received",
                "Chunks received and verified.",
                &c.chunks_received,
            ),
            (
                "shoal_peer_verify_failures",
                "Chunks that failed verification on write or read.",
                &c.verify_failures,
            ),
            (
                "shoal_peer_scrubbed_bytes",
                "Bytes re-hashed by scrub.",
                &c.scrubbed_bytes,
            ),
            (
                "shoal_peer_scrub_failures",
                "Corrupt chunks found by scrub.",
                &c.scrub_failures,
            ),
        ];
        for (name, help, v) in counters {
            let n = ConstCounter::new(v.load(Relaxed));
            n.encode(encoder.encode_descriptor(name, help, None, n.metric_type())?)?;
        }
        Ok(())
    }
}
