//! The shoal peer: a content-addressed chunk store (BLAKE3, verified on every write
//! and read) that serves chunks to clients and peers, forwards uploads down the
//! pipeline, copies chunks when the tracker asks, and scrubs itself.
//!
//! `run` takes a bound listener so tests can use port 0.

pub mod agent;
pub mod config;
pub mod directory;
pub mod metrics;
mod routes;
pub mod service;
pub mod store;

use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use shoal_proto::v1 as pb;
use shoal_proto::v1::peer_server::PeerServer;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

pub use config::PeerConfig;

/// The peer's stable id: generated once, kept in the data dir.
pub fn peer_id(data_dir: &std::path::Path) -> std::io::Result<String> {
    std::fs::create_dir_all(data_dir)?;
    let path = data_dir.join("peer_id");
    match std::fs::read_to_string(&path) {
        Ok(s) if !s.trim().is_empty() => Ok(s.trim().to_string()),
        _ => {
            let id = hex::encode(rand::random::<[u8; 8]>());
            let tmp = data_dir.join("peer_id.tmp");
            std::fs::write(&tmp, &id)?;
            std::fs::rename(&tmp, &path)?;
            Ok(id)
        }
    }
}

fn advertise(cfg: &PeerConfig, local: std::net::SocketAddr) -> String {
    match &cfg.advertise_addr {
        Some(a) => a.clone(),
        None if local.ip().is_unspecified() => format!("127.0.0.1:{}", local.port()),
        None => local.to_string(),
    }
}

/// Serve the peer on `listener` until `shutdown` is cancelled.
pub async fn run(
    cfg: PeerConfig,
    listener: TcpListener,
    shutdown: CancellationToken,
) -> anyhow::Result<()> {
    let (router, health, tokens) =
        shoal_common::grpc::secure_server(&["shoal.v1.Peer"], &cfg.auth, &cfg.tls, policy).await?;
    let cluster_token = tokens.cluster;
    let id =
        peer_id(&cfg.data_dir).with_context(|| format!("peer id in {}", cfg.data_dir.display()))?;
    let dir = cfg.data_dir.clone();
    let fixed = cfg.capacity_bytes;
    let (direct, direct_reads) = (cfg.direct_writes, cfg.direct_reads);
    let store = tokio::task::spawn_blocking(move || -> anyhow::Result<store::ChunkStore> {
        let mut store = store::ChunkStore::open(&dir, fixed.unwrap_or(0))?;
        store.set_direct_writes(direct);
        store.set_direct_reads(direct_reads);
        if fixed.is_none() {
            // The chunks already here are part of what the peer offers: free space alone
            // would shrink the capacity by them at every restart.
            let free = fs4::available_space(&dir)
                .with_context(|| format!("free space of {}", dir.display()))?;
            store.set_capacity(store.used().saturating_add(free));
        }
        Ok(store)
    })
    .await??;
    let capacity = store.capacity();
    let local = listener.local_addr()?;
    let me = pb::PeerRef {
        id: id.clone(),
        addr: advertise(&cfg, local),
        zone: cfg.zone.clone(),
    };
    info!(peer = %id, addr = %me.addr, zone = %me.zone, chunks = store.len(), capacity, "chunk store scanned");

    let (corrupt_tx, corrupt_rx) = tokio::sync::mpsc::unbounded_channel();
    let trackers: Vec<String> = cfg
        .tracker_url
        .split(',')
        .map(|s| s.trim().to_string())
        .filter(|s| !s.is_empty())
        .collect();
    let core = Arc::new(service::PeerCore {
        id,
        store: Arc::new(store),
        counters: Default::default(),
        corrupt: corrupt_tx,
        channels: shoal_common::grpc::Channels::with_token(cluster_token.clone()),
        tickets: cfg.auth.ticket_keys()?,
        directory: directory::Directory::new(trackers.clone()),
        max_transfers: cfg.max_transfers,
        max_reads: cfg.max_reads,
        progress_timeout: cfg.transfer.progress_timeout,
        faults: cfg.faults.clone().unwrap_or_default(),
    });
    let agent = Arc::new(agent::Agent {
        core: core.clone(),
        me,
        trackers,
        inventory_part: cfg.inventory_part_chunks.max(1),
    });

    if let Some(addr) = cfg.metrics_addr {
        let render = shoal_common::admin::render(metrics::registry(core.clone(), &cfg.zone));
        shoal_common::admin::spawn(addr, render, &cfg.tls, shutdown.clone()).await?;
    }
    // Background loops stop on their own token so in-flight transfers can finish first.
    let background = CancellationToken::new();
    let h = health.clone();
    let agent_loop = tokio::spawn(agent.clone().run(
        corrupt_rx,
        move || {
            tokio::spawn(async move { h.set(true).await });
        },
        background.clone(),
    ));
    tokio::spawn(agent::scrub(
        core.clone(),
        cfg.scrub.rate_bytes,
        cfg.scrub.pause,
        background.clone(),
    ));

    let svc = PeerServer::new(service::PeerService { core: core.clone() })
        .max_decoding_message_size(shoal_common::grpc::PEER_MAX_MESSAGE_BYTES)
        .max_encoding_message_size(shoal_common::grpc::MAX_MESSAGE_BYTES);
    let svc = routes::PeerRoutes::new(svc, service::PeerService { core: core.clone() });
    let stop = shutdown.clone();
    let (h, c, timeout) = (health.clone(), core.clone(), cfg.shutdown_timeout);
    let leave = cfg.leave_on_shutdown;
    router
        .add_service(svc)
        .serve_with_incoming_shutdown(shoal_common::net::incoming(listener), async move {
            stop.cancelled().await;
            h.set(false).await;
            let deadline = tokio::time::Instant::now() + timeout;
            // Goodbye first, while chunks are still taken: the tracker stops placing
            // chunks here, and a chunk it placed just before (a put in flight) still
            // lands, so no put ends short of its copies and nothing needs repair.
            background.cancel();
            // A heartbeat still in flight would reach the tracker after the goodbye and
            // undo it (a restarting peer judged by its last heartbeat, dead after
            // dead_after): let the agent finish its step (bounded) first.
            if tokio::time::timeout(Duration::from_secs(5), agent_loop)
                .await
                .is_err()
            {
                warn!("the tracker agent did not stop within 5 s; saying goodbye anyway");
            }
            // A restart (the same id and volume come back) is not a leave: unless told
            // to leave, the tracker keeps this peer's copies expected for its grace.
            agent.deregister(!leave).await;
            settle(&c.counters, deadline).await;
        })
        .await?;
    Ok(())
}

/// After the goodbye, writes placed before it may still arrive: serve until none has
/// started for `SETTLE_QUIET` and no transfer is in flight, or until `deadline`.
async fn settle(counters: &service::Counters, deadline: tokio::time::Instant) {
    let mut seen = counters.writes_started.load(Relaxed);
    let mut quiet_since = tokio::time::Instant::now();
    loop {
        let now = tokio::time::Instant::now();
        let started = counters.writes_started.load(Relaxed);
        if started != seen {
            (seen, quiet_since) = (started, now);
        }
        let idle = counters.active_transfers.load(Relaxed) == 0;
        if (idle && now - quiet_since >= SETTLE_QUIET) || now >= deadline {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// How long writes must have been quiet after the goodbye before the peer stops.
const SETTLE_QUIET: Duration = Duration::from_secs(1);

/// The role each peer method needs: reads for clients with a read token, uploads with a
/// write token, deletions and copies only from the cluster.
pub fn policy(path: &str) -> Option<shoal_common::auth::Role> {
    use shoal_common::auth::Role;
    let method = path.strip_prefix("/shoal.v1.Peer/")?;
    Some(match method {
        "GetChunk" | "HasChunks" => Role::Read,
        "PutChunk" => Role::Write,
        _ => Role::Cluster,
    })
}
