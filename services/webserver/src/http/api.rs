//! The JSON API under `/api/v1/`: the same key names as the CLI's `--json`, so
//! scripts can switch between them. Keys may be added, never renamed.

use axum::extract::{Path, Query, State};
use axum::http::{header, HeaderValue};
use axum::response::{IntoResponse, Response};
use axum::Json;
use percent_encoding::{utf8_percent_encode, NON_ALPHANUMERIC};
use serde::Deserialize;
use serde_json::{json, Value};
use shoal_proto::v1 as pb;

use super::{ApiError, AppError, Shared};
use shoal_client::display::{state_word, status_word};

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

/// The query of the paged listings: `q`, `page_size` (0 or absent: the tracker's
/// default, 1,000; at most 10,000) and `page_token` (from the previous page's
/// `X-Next-Page-Token` header; absent: the first page).
#[derive(Deserialize, Default)]
pub struct FilesQuery {
    #[serde(default)]
    q: Option<String>,
    #[serde(default)]
    page_size: Option<String>,
    #[serde(default)]
    page_token: Option<String>,
}

impl FilesQuery {
    fn page_size(&self) -> Result<u32, ApiError> {
        match self.page_size.as_deref().map(str::trim) {
            None | Some("") => Ok(0),
            Some(s) => s.parse().map_err(|_| {
                ApiError(AppError::bad_request(
                    "page_size must be a whole number (0: the default, 1,000; at most 10,000)",
                ))
            }),
        }
    }
}

/// The header that carries the next page's token; absent on the last page.
pub const NEXT_PAGE_TOKEN: &str = "x-next-page-token";

/// One page as a JSON array (the shape `shoal ls --json` prints), with the next page
/// named in `X-Next-Page-Token` and a `Link: <…>; rel="next"` header.
fn page_response(path: &str, q: &str, page_size: u32, page: pb::ListFilesResponse) -> Response {
    let body = Json(Value::Array(page.files.iter().map(file_json).collect()));
    let mut resp = body.into_response();
    if page.next_page_token.is_empty() {
        return resp;
    }
    let enc = |s: &str| utf8_percent_encode(s, NON_ALPHANUMERIC).to_string();
    let mut next = format!("{path}?page_token={}", enc(&page.next_page_token));
    if page_size != 0 {
        next += &format!("&page_size={page_size}");
    }
    if !q.is_empty() {
        next += &format!("&q={}", enc(q));
    }
    let h = resp.headers_mut();
    if let Ok(v) = HeaderValue::from_str(&page.next_page_token) {
        h.insert(NEXT_PAGE_TOKEN, v);
    }
    if let Ok(v) = HeaderValue::from_str(&format!("<{next}>; rel=\"next\"")) {
        h.insert(header::LINK, v);
    }
    resp
}

/// `GET /api/v1/files[?q=][&page_size=][&page_token=]`: one page of names in byte order.
pub async fn files(State(st): Shared, Query(q): Query<FilesQuery>) -> Result<Response, ApiError> {
    let query = q.q.as_deref().map(str::trim).unwrap_or("");
    let size = q.page_size()?;
    let token = q.page_token.as_deref().unwrap_or("");
    let page = st
        .client
        .files_page((!query.is_empty()).then_some(query), size, token)
        .await?;
    Ok(page_response("/api/v1/files", query, size, page))
}

/// `GET /api/v1/search?q=[&page_size=][&page_token=]`: one page of matches.
pub async fn search(State(st): Shared, Query(q): Query<FilesQuery>) -> Result<Response, ApiError> {
    let query = q.q.as_deref().unwrap_or("");
    let size = q.page_size()?;
    let token = q.page_token.as_deref().unwrap_or("");
    let page = st.client.files_page(Some(query), size, token).await?;
    Ok(page_response("/api/v1/search", query, size, page))
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
