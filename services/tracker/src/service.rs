//! `shoal.v1.Tracker` over gRPC: decode and validate requests, call the tracker, encode.

use std::sync::Arc;

use shoal_common::hash::Hash;
use shoal_proto::v1 as pb;
use shoal_proto::v1::tracker_server::Tracker as TrackerRpc;
use tokio::time::Instant;
use tonic::{Request, Response, Status};
use tracing::{info, warn};

use crate::error::{bad_hash, Error};
use crate::paging;
use crate::state::Goodbye;
use crate::tracker::{validate_addr, validate_zone, Tracker};

pub struct TrackerService {
    pub tracker: Arc<Tracker>,
    /// Rate limits and checks in flight of client bad-chunk reports.
    pub reports: crate::badreport::Reports,
}

fn hashes(list: &[String]) -> Result<Vec<Hash>, Status> {
    list.iter()
        .map(|s| bad_hash(s).map_err(Status::from))
        .collect()
}

type R<T> = Result<Response<T>, Status>;

#[tonic::async_trait]
impl TrackerRpc for TrackerService {
    async fn register_peer(
        &self,
        req: Request<pb::RegisterPeerRequest>,
    ) -> R<pb::RegisterPeerResponse> {
        let req = req.into_inner();
        let peer = req
            .peer
            .ok_or_else(|| Status::invalid_argument("registration without a peer"))?;
        if peer.id.is_empty()
            || peer.id.len() > 128
            || !peer
                .id
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '-')
        {
            return Err(Status::invalid_argument(format!(
                "peer id {:?} is invalid",
                peer.id.chars().take(80).collect::<String>()
            )));
        }
        validate_addr(&peer.addr)?;
        validate_zone(&peer.zone)?;
        let chunks = hashes(&req.chunks)?;
        info!(peer = %peer.id, addr = %peer.addr, zone = %peer.zone, chunks = chunks.len(), "peer registered");
        let t = &self.tracker;
        let now = Instant::now();
        let inventory = crate::state::Snapshot {
            chunks,
            id: req.inventory_id,
            mark: write_mark(req.write_mark),
        };
        t.state()
            .register(peer, req.capacity_bytes, req.used_bytes, inventory, now)?;
        t.forget_candidates();
        Ok(Response::new(pb::RegisterPeerResponse {
            heartbeat_interval_ms: t.cfg.liveness.heartbeat.as_millis() as u64,
        }))
    }

    async fn heartbeat(&self, req: Request<pb::HeartbeatRequest>) -> R<pb::HeartbeatResponse> {
        let req = req.into_inner();
        let t = &self.tracker;
        t.metrics.heartbeats.inc();
        let interval = t.cfg.liveness.heartbeat.as_millis() as u64;
        let beat = crate::state::Beat {
            capacity: req.capacity_bytes,
            used: req.used_bytes,
            active_transfers: req.active_transfers,
            chunk_count: req.chunk_count,
            digest: &req.inventory_digest,
            mark: write_mark(req.write_mark).unwrap_or((0, 0)),
        };
        let answer = t
            .state()
            .heartbeat(&req.peer_id, beat, &t.cfg, Instant::now());
        Ok(Response::new(pb::HeartbeatResponse {
            known: answer.is_some(),
            heartbeat_interval_ms: interval,
            resync: answer.unwrap_or(false),
        }))
    }

    async fn report_chunks(
        &self,
        req: Request<pb::ReportChunksRequest>,
    ) -> R<pb::ReportChunksResponse> {
        let req = req.into_inner();
        let (added, removed, corrupt) = (
            hashes(&req.added)?,
            hashes(&req.removed)?,
            hashes(&req.corrupt)?,
        );
        if !corrupt.is_empty() {
            warn!(peer = %req.peer_id, chunks = corrupt.len(), "peer reported corrupt chunks; queued for repair");
        }
        let t = &self.tracker;
        let mut removed_all = removed;
        removed_all.extend(corrupt.iter().copied());
        let part = (req.inventory_id != 0).then_some((req.inventory_id, req.last));
        let mark = write_mark(req.write_mark);
        t.state()
            .report_chunks(&req.peer_id, added, removed_all, req.full, part, mark)?;
        if !corrupt.is_empty() {
            crate::manager::enqueue_repairs(t, corrupt);
        }
        Ok(Response::new(pb::ReportChunksResponse {}))
    }

    async fn list_peers(&self, _: Request<pb::ListPeersRequest>) -> R<pb::ListPeersResponse> {
        let t = &self.tracker;
        let st = t.state();
        let now = Instant::now();
        let mut peers: Vec<pb::PeerInfo> = st
            .peers
            .values()
            .map(|p| st.peer_info(p, &t.cfg, now))
            .collect();
        peers.sort_by(|a, b| {
            let (a, b) = (a.peer.as_ref().expect("set"), b.peer.as_ref().expect("set"));
            (&a.zone, &a.id).cmp(&(&b.zone, &b.id))
        });
        Ok(Response::new(pb::ListPeersResponse { peers }))
    }

    async fn drain_peer(&self, req: Request<pb::DrainPeerRequest>) -> R<pb::DrainPeerResponse> {
        let id = req.into_inner().peer_id;
        Ok(Response::new(crate::manager::drain(&self.tracker, &id)?))
    }

    async fn undrain_peer(&self, req: Request<pb::UndrainPeerRequest>) -> R<pb::DrainPeerResponse> {
        let id = req.into_inner().peer_id;
        Ok(Response::new(crate::manager::undrain(&self.tracker, &id)?))
    }

    async fn deregister(&self, req: Request<pb::DeregisterRequest>) -> R<pb::DeregisterResponse> {
        let req = req.into_inner();
        let (id, now) = (req.peer_id, Instant::now());
        let t = &self.tracker;
        t.forget_candidates();
        let mut st = t.state();
        let Some(p) = st.peers.get_mut(&id) else {
            return Ok(Response::new(pb::DeregisterResponse {}));
        };
        let goodbye = if req.restarting && !t.cfg.repair.restart_grace.is_zero() {
            info!(peer = %id, grace = ?t.cfg.repair.restart_grace, "peer restarting; its copies stay expected for the grace");
            // Last seen is kept: other replicas (PostgreSQL) judge it as a crash.
            Goodbye::Restarting(now)
        } else {
            info!(peer = %id, "peer left; its copies stop counting now");
            p.last_seen = now - t.cfg.liveness.dead_after;
            st.journal_seen(&id);
            Goodbye::Left(now)
        };
        st.goodbyes.insert(id, goodbye);
        Ok(Response::new(pb::DeregisterResponse {}))
    }

    async fn begin_upload(
        &self,
        req: Request<pb::BeginUploadRequest>,
    ) -> R<pb::BeginUploadResponse> {
        let who = crate::badreport::caller(&req);
        Ok(Response::new(
            self.tracker.begin_upload(who, req.into_inner())?,
        ))
    }

    async fn place_chunks(
        &self,
        req: Request<pb::PlaceChunksRequest>,
    ) -> R<pb::PlaceChunksResponse> {
        Ok(Response::new(
            self.tracker.place_chunks(req.into_inner()).await?,
        ))
    }

    async fn commit_upload(
        &self,
        req: Request<pb::CommitUploadRequest>,
    ) -> R<pb::CommitUploadResponse> {
        Ok(Response::new(
            self.tracker.commit_upload(req.into_inner()).await?,
        ))
    }

    async fn renew_upload(
        &self,
        req: Request<pb::RenewUploadRequest>,
    ) -> R<pb::RenewUploadResponse> {
        Ok(Response::new(
            self.tracker.renew_upload(req.into_inner()).await?,
        ))
    }

    async fn replace_targets(
        &self,
        req: Request<pb::ReplaceTargetsRequest>,
    ) -> R<pb::ReplaceTargetsResponse> {
        Ok(Response::new(
            self.tracker.replace_targets(req.into_inner())?,
        ))
    }

    async fn abort_upload(
        &self,
        req: Request<pb::AbortUploadRequest>,
    ) -> R<pb::AbortUploadResponse> {
        self.tracker.abort_upload(&req.into_inner().upload_id);
        Ok(Response::new(pb::AbortUploadResponse {}))
    }

    async fn list_files(&self, req: Request<pb::ListFilesRequest>) -> R<pb::ListFilesResponse> {
        let req = req.into_inner();
        let after = paging::decode_token(&req.page_token)?;
        let size = paging::page_size(req.page_size);
        let t = &self.tracker;
        let page = t
            .state()
            .list(None, after.as_deref(), size, &t.cfg, Instant::now());
        Ok(Response::new(pb::ListFilesResponse {
            next_page_token: page.next_token(),
            files: page.items,
        }))
    }

    async fn search_files(&self, req: Request<pb::SearchFilesRequest>) -> R<pb::ListFilesResponse> {
        let req = req.into_inner();
        if req.query.len() > shoal_common::names::MAX_NAME_BYTES {
            return Err(Status::invalid_argument(
                "search query longer than the longest name",
            ));
        }
        let after = paging::decode_token(&req.page_token)?;
        let size = paging::page_size(req.page_size);
        let t = &self.tracker;
        let page = t.state().list(
            Some(&req.query),
            after.as_deref(),
            size,
            &t.cfg,
            Instant::now(),
        );
        Ok(Response::new(pb::ListFilesResponse {
            next_page_token: page.next_token(),
            files: page.items,
        }))
    }

    async fn stat_file(&self, req: Request<pb::StatFileRequest>) -> R<pb::FileDetail> {
        Ok(Response::new(
            self.tracker.stat(&req.into_inner().name_or_id)?,
        ))
    }

    async fn delete_file(&self, req: Request<pb::DeleteFileRequest>) -> R<pb::DeleteFileResponse> {
        Ok(Response::new(
            self.tracker.delete(req.into_inner().name_or_id).await?,
        ))
    }

    async fn set_replicas(
        &self,
        req: Request<pb::SetReplicasRequest>,
    ) -> R<pb::SetReplicasResponse> {
        let req = req.into_inner();
        let t = &self.tracker;
        if req.replicas == 0 || req.replicas > t.cfg.replication.max_factor {
            return Err(Error::InvalidArgument(format!(
                "replica count must be between 1 and {}, got {}",
                t.cfg.replication.max_factor, req.replicas
            ))
            .into());
        }
        let n = req.name_or_id.clone();
        let replicas = req.replicas;
        let chunks = t
            .write(move |st, _, _| {
                let (id, changes) = st.catalogue.plan_set_replicas(&n, replicas)?;
                let chunks = st
                    .catalogue
                    .file(&id)
                    .map(|f| f.chunks.clone())
                    .unwrap_or_default();
                Ok(crate::writer::Planned::new(chunks, changes))
            })
            .await?;
        crate::manager::enqueue_repairs(t, chunks);
        let d = t.state().detail(&req.name_or_id, &t.cfg, Instant::now())?;
        Ok(Response::new(pb::SetReplicasResponse { file: d.summary }))
    }

    async fn report_bad_chunk(
        &self,
        req: Request<pb::ReportBadChunkRequest>,
    ) -> R<pb::ReportBadChunkResponse> {
        // A hint only: the peer re-hashes its copy, and only a confirmed mismatch
        // removes it (see badreport).
        let who = crate::badreport::caller(&req);
        self.reports.handle(&self.tracker, who, req.into_inner())?;
        Ok(Response::new(pb::ReportBadChunkResponse {}))
    }

    async fn cluster_info(&self, _: Request<pb::ClusterInfoRequest>) -> R<pb::ClusterInfoResponse> {
        Ok(Response::new(crate::manager::cluster_info(&self.tracker)))
    }

    type ExportCatalogueStream = crate::backup::ExportStream;

    async fn export_catalogue(
        &self,
        _: Request<pb::ExportCatalogueRequest>,
    ) -> R<Self::ExportCatalogueStream> {
        Ok(Response::new(crate::backup::export(self.tracker.clone())))
    }
}

/// A peer's write mark as sent (`None`: it sent none; a peer's boot is never 0).
pub(crate) fn write_mark(m: Option<pb::WriteMark>) -> Option<crate::state::WriteMark> {
    m.filter(|m| m.boot != 0).map(|m| (m.boot, m.seq))
}
