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
        let render = shoal_common::admin::render(metrics::registry(tracker.clone()));
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
