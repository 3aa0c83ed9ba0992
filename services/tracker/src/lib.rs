//! The shoal tracker: peer registry, catalogue (redb), fragmentation, placement and
//! the replication manager. It never carries chunk bytes.
//!
//! `run` takes a bound listener so tests can use port 0.

pub mod backup;
pub mod badreport;
pub mod catalogue;
pub mod config;
pub mod error;
pub mod fragment;
pub mod leader;
pub mod locations;
pub mod manager;
pub mod metrics;
pub mod paging;
pub mod pg;
pub mod pgtls;
pub mod placement;
pub mod proof;
pub mod service;
pub mod shared;
pub mod statcache;
pub mod state;
pub mod statfast;
pub mod store;
pub mod tracker;
pub mod uploads;
pub mod writer;

use std::sync::Arc;

use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

pub use config::TrackerConfig;
pub use tracker::Tracker;

/// Serve the tracker on `listener` until `shutdown` is cancelled.
pub async fn run(
    cfg: TrackerConfig,
    listener: TcpListener,
    shutdown: CancellationToken,
) -> anyhow::Result<()> {
    let (router, health, tokens) =
        shoal_common::grpc::secure_server(&["shoal.v1.Tracker"], &cfg.auth, &cfg.tls, policy)
            .await?;
    let cluster_token = tokens.cluster;
    let tickets = cfg.auth.ticket_keys()?;
    let tracker = Tracker::open(cfg.clone(), cluster_token, tickets)?;
    if let Some(addr) = cfg.metrics_addr {
        let t = tracker.clone();
        let render = Arc::new(move || render_metrics(&t));
        shoal_common::admin::spawn(addr, render, &cfg.tls, shutdown.clone()).await?;
    }
    if let Some(pg) = tracker.store.postgres() {
        // Several replicas may share this database: follow their catalogue changes and
        // run the background manager only while elected.
        tokio::spawn(shared::run(tracker.clone(), shutdown.clone()));
        tokio::spawn(leader::run(
            tracker.clone(),
            pg.url().to_string(),
            pg.tls(),
            listener.local_addr()?.to_string(),
            shutdown.clone(),
        ));
    }
    tokio::spawn(manager::run(tracker.clone(), shutdown.clone()));
    let svc = statfast::TrackerGrpc::new(tracker.clone());
    health.set(true).await;
    tracing::info!(addr = %listener.local_addr()?, "tracker serving");
    let h = health.clone();
    let stop = shutdown.clone();
    router
        .add_service(svc)
        .serve_with_incoming_shutdown(shoal_common::net::incoming(listener), async move {
            stop.cancelled().await;
            h.set(false).await;
        })
        .await?;
    Ok(())
}

/// The role each tracker method needs: peers' calls need the cluster token, catalogue
/// changes a write token, reads a read token.
pub fn policy(path: &str) -> Option<shoal_common::auth::Role> {
    use shoal_common::auth::Role;
    let method = path.strip_prefix("/shoal.v1.Tracker/")?;
    Some(match method {
        "ListFiles" | "SearchFiles" | "StatFile" | "ListPeers" | "ClusterInfo"
        | "ReportBadChunk" => Role::Read,
        "BeginUpload" | "PlaceChunks" | "ReplaceTargets" | "CommitUpload" | "AbortUpload"
        | "RenewUpload" | "DeleteFile" | "SetReplicas" | "DrainPeer" | "UndrainPeer" => Role::Write,
        _ => Role::Cluster,
    })
}

/// Prometheus text for the tracker.
pub fn render_metrics(t: &Tracker) -> String {
    use std::fmt::Write as _;
    let mut out = String::new();
    let info = manager::cluster_info(t);
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
    ];
    let leader = (
        "shoal_tracker_leader",
        "1 while this replica runs the background manager (always with redb).",
        t.is_leader() as u64,
    );
    for (name, help, v) in gauges.into_iter().chain([leader]) {
        let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} gauge\n{name} {v}");
    }
    let st = t.state();
    let now = tokio::time::Instant::now();
    let mut by: std::collections::BTreeMap<(String, &'static str), u64> = Default::default();
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
    let _ = writeln!(
        out,
        "# HELP shoal_tracker_peers Peers by zone and state.\n# TYPE shoal_tracker_peers gauge"
    );
    for ((zone, state), n) in by {
        let _ = writeln!(
            out,
            "shoal_tracker_peers{{zone=\"{zone}\",state=\"{state}\"}} {n}"
        );
    }
    t.metrics.render(&mut out);
    shoal_common::rpcmetrics::render(&mut out);
    out
}
