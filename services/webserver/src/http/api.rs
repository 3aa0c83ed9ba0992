//! The JSON API under `/api/v1/`: the same key names as the CLI's `--json`, so
//! scripts can switch between them. Keys may be added, never renamed.

use axum::extract::{Path, Query, State};
use axum::Json;
use serde::Deserialize;
use serde_json::{json, Value};
use shoal_proto::v1 as pb;

use super::{ApiError, Shared};
use shoal_client::display::{state_word, status_word};

#[derive(Deserialize, Default)]
pub struct SearchQuery {
    #[serde(default)]
    q: Option<String>,
}

/// One line of `shoal ls --json`.
pub fn file_json(f: &pb::FileSummary) -> Value {
    json!({
        "name": f.name, "id": f.id, "size": f.size, "chunks": f.chunks,
        "replicas_target": f.replicas_target, "replicas_min": f.replicas_min, "status": status_word(f.status),
        "chunk_size": f.chunk_size, "created_unix_ms": f.created_unix_ms,
    })
}

/// `shoal stat --json`, plus every name, the replica health and placement reasons.
pub fn detail_json(d: &pb::FileDetail) -> Value {
    let s = d.summary.clone().unwrap_or_default();
    let chunks: Vec<Value> = d
        .chunks
        .iter()
        .map(|c| {
            let replicas: Vec<Value> = c.replicas.iter().map(|p| json!({"peer": p.id, "zone": p.zone, "addr": p.addr})).collect();
            json!({"index": c.index, "hash": c.hash, "size": c.size, "replicas": replicas, "placement_reason": c.placement_reason})
        })
        .collect();
    json!({
        "id": s.id, "name": s.name, "size": s.size, "chunk_size": s.chunk_size, "replicas_target": s.replicas_target,
        "chunks": chunks, "names": d.names, "replicas_min": s.replicas_min, "status": status_word(s.status),
        "created_unix_ms": s.created_unix_ms,
    })
}

/// One line of `shoal peers --json`.
pub fn peer_json(p: &pb::PeerInfo) -> Value {
    let r = p.peer.clone().unwrap_or_default();
    json!({
        "id": r.id, "addr": r.addr, "zone": r.zone, "state": state_word(p.state), "chunks": p.chunks,
        "capacity_bytes": p.capacity_bytes, "used_bytes": p.used_bytes,
        "active_transfers": p.active_transfers, "last_heartbeat_ms_ago": p.last_heartbeat_ms_ago,
    })
}

/// `GET /api/v1/files[?q=]`.
pub async fn files(
    State(st): Shared,
    Query(q): Query<SearchQuery>,
) -> Result<Json<Value>, ApiError> {
    let query = q.q.as_deref().map(str::trim).unwrap_or("");
    let files = if query.is_empty() {
        st.client.list().await?
    } else {
        st.client.search(query).await?
    };
    Ok(Json(Value::Array(files.iter().map(file_json).collect())))
}

/// `GET /api/v1/search?q=`.
pub async fn search(
    State(st): Shared,
    Query(q): Query<SearchQuery>,
) -> Result<Json<Value>, ApiError> {
    let files = st.client.search(q.q.as_deref().unwrap_or("")).await?;
    Ok(Json(Value::Array(files.iter().map(file_json).collect())))
}

/// `GET /api/v1/files/{name-or-id}`.
pub async fn file(State(st): Shared, Path(name): Path<String>) -> Result<Json<Value>, ApiError> {
    Ok(Json(detail_json(&st.client.stat(&name).await?)))
}

/// `GET /api/v1/peers`.
pub async fn peers(State(st): Shared) -> Result<Json<Value>, ApiError> {
    Ok(Json(Value::Array(
        st.client.peers().await?.iter().map(peer_json).collect(),
    )))
}

/// `GET /api/v1/cluster`: `shoal info --json`, plus the tracker endpoints clients should use.
pub async fn cluster(State(st): Shared) -> Result<Json<Value>, ApiError> {
    let i = st.client.cluster_info().await?;
    Ok(Json(json!({
        "version": i.version, "replication_factor": i.replication_factor, "live_peers": i.live_peers, "zones": i.zones,
        "files": i.files, "chunks": i.chunks, "under_replicated_chunks": i.under_replicated_chunks,
        "lost_chunks": i.lost_chunks, "repair_queue": i.repair_queue, "tracker_urls": st.cfg.public_tracker_urls(),
    })))
}
