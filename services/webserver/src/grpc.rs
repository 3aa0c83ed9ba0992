//! `shoal.v1.Webserver` over gRPC: `Discover` (where the tracker is, plus cluster
//! facts) and the read-only catalogue calls, proxied to the tracker so a thin client
//! needs one address. Tracker errors keep their gRPC code.

use std::sync::Arc;
use std::time::Duration;

use shoal_client::ClientError;
use shoal_proto::v1 as pb;
use shoal_proto::v1::webserver_server::Webserver;
use tonic::{Request, Response, Status};

use crate::AppState;

/// How long `Discover` waits for fresh facts before answering from the probe's cache.
const DISCOVER_FRESH_WITHIN: Duration = Duration::from_secs(2);

pub struct WebserverService {
    state: Arc<AppState>,
}

impl WebserverService {
    pub fn new(state: Arc<AppState>) -> Self {
        Self { state }
    }
}

/// A client-library error as the status a gRPC caller should see.
pub fn status(e: ClientError) -> Status {
    match e {
        ClientError::Rpc { code, message, .. } => Status::new(code, message),
        ClientError::Verify(m) => Status::data_loss(m),
        ClientError::Io { .. } | ClientError::Other(_) => Status::unavailable(e.to_string()),
    }
}

#[tonic::async_trait]
impl Webserver for WebserverService {
    async fn discover(
        &self,
        _: Request<pb::DiscoverRequest>,
    ) -> Result<Response<pb::DiscoverResponse>, Status> {
        let st = &self.state;
        let info = match tokio::time::timeout(DISCOVER_FRESH_WITHIN, st.client.cluster_info()).await
        {
            Ok(Ok(info)) => {
                st.tracker.record_ok(info.clone());
                info
            }
            // The tracker is slow or away: the last facts we had are still the best answer.
            _ => st.tracker.info().ok_or_else(|| {
                Status::unavailable(format!(
                    "tracker {} has not answered yet: {}",
                    st.cfg.tracker_url,
                    st.tracker.last_error().unwrap_or_default()
                ))
            })?,
        };
        Ok(Response::new(pb::DiscoverResponse {
            tracker_urls: st.cfg.public_tracker_urls(),
            version: info.version,
            replication_factor: info.replication_factor,
            live_peers: info.live_peers,
            zones: info.zones,
        }))
    }

    async fn list_files(
        &self,
        req: Request<pb::ListFilesRequest>,
    ) -> Result<Response<pb::ListFilesResponse>, Status> {
        let req = req.into_inner();
        let page = self
            .state
            .client
            .files_page(None, req.page_size, &req.page_token)
            .await
            .map_err(status)?;
        Ok(Response::new(page))
    }

    async fn search_files(
        &self,
        req: Request<pb::SearchFilesRequest>,
    ) -> Result<Response<pb::ListFilesResponse>, Status> {
        let req = req.into_inner();
        let page = self
            .state
            .client
            .files_page(Some(&req.query), req.page_size, &req.page_token)
            .await
            .map_err(status)?;
        Ok(Response::new(page))
    }

    async fn stat_file(
        &self,
        req: Request<pb::StatFileRequest>,
    ) -> Result<Response<pb::FileDetail>, Status> {
        Ok(Response::new(
            self.state
                .client
                .stat(&req.into_inner().name_or_id)
                .await
                .map_err(status)?,
        ))
    }
}
