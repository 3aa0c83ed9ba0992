//! Calls to the tracker, with failover over several URLs on UNAVAILABLE.

use std::sync::atomic::{AtomicUsize, Ordering::Relaxed};

use shoal_common::grpc::GrpcChannel as Channel;
use shoal_proto::v1 as pb;
use shoal_proto::v1::tracker_client::TrackerClient;

use crate::{ClientError, Result};

/// The tracker's page size for `page_size` 0; used to bound a page when a limit is near.
const DEFAULT_PAGE_SIZE: u32 = 1_000;

pub struct Trackers {
    urls: Vec<String>,
    channels: Vec<Channel>,
    current: AtomicUsize,
}

impl Trackers {
    pub fn new(urls: &str, token: Option<&str>) -> Result<Self> {
        let urls: Vec<String> = urls
            .split(',')
            .map(|s| s.trim().to_string())
            .filter(|s| !s.is_empty())
            .collect();
        if urls.is_empty() {
            return Err(ClientError::Other("no tracker URL given".into()));
        }
        let channels = urls
            .iter()
            .map(|u| {
                shoal_common::grpc::channel_with(u, token)
                    .map_err(|e| ClientError::rpc("tracker URL", e))
            })
            .collect::<Result<_>>()?;
        Ok(Self {
            urls,
            channels,
            current: AtomicUsize::new(0),
        })
    }

    pub fn urls(&self) -> &[String] {
        &self.urls
    }

    /// Run `f` against the current tracker; on UNAVAILABLE try the others once each.
    pub async fn call<T, F, Fut>(&self, what: &str, f: F) -> Result<T>
    where
        F: Fn(TrackerClient<Channel>) -> Fut,
        Fut: std::future::Future<Output = Result<tonic::Response<T>, tonic::Status>>,
    {
        let start = self.current.load(Relaxed);
        let mut last = None;
        for k in 0..self.channels.len() {
            let i = (start + k) % self.channels.len();
            let client = TrackerClient::new(self.channels[i].clone())
                .max_decoding_message_size(shoal_common::grpc::MAX_MESSAGE_BYTES)
                .max_encoding_message_size(shoal_common::grpc::MAX_MESSAGE_BYTES);
            match f(client).await {
                Ok(r) => {
                    self.current.store(i, Relaxed);
                    return Ok(r.into_inner());
                }
                Err(s) if s.code() == tonic::Code::Unavailable => last = Some(s),
                Err(s) => return Err(ClientError::rpc(what, s)),
            }
        }
        Err(ClientError::rpc(
            &format!("{what} (tracker {})", self.urls.join(",")),
            last.expect("at least one URL"),
        ))
    }
}

impl crate::Client {
    /// Every name (following pages). Prefer `files` with a limit for a big catalogue.
    pub async fn list(&self) -> Result<Vec<pb::FileSummary>> {
        self.files(None, None, 0).await
    }

    /// Every name containing `query`, case-insensitive (following pages).
    pub async fn search(&self, query: &str) -> Result<Vec<pb::FileSummary>> {
        self.files(Some(query), None, 0).await
    }

    /// One page of `ListFiles` (`query` None) or `SearchFiles`: names in byte order after
    /// `page_token` (empty: from the start); page_size 0 is the tracker's default.
    pub async fn files_page(
        &self,
        query: Option<&str>,
        page_size: u32,
        page_token: &str,
    ) -> Result<pb::ListFilesResponse> {
        let page_token = page_token.to_string();
        match query {
            None => {
                self.trackers
                    .call("list", |mut c| {
                        let page_token = page_token.clone();
                        async move {
                            c.list_files(pb::ListFilesRequest {
                                page_size,
                                page_token,
                            })
                            .await
                        }
                    })
                    .await
            }
            Some(q) => {
                let q = q.to_string();
                self.trackers
                    .call("search", |mut c| {
                        let (query, page_token) = (q.clone(), page_token.clone());
                        async move {
                            c.search_files(pb::SearchFilesRequest {
                                query,
                                page_size,
                                page_token,
                            })
                            .await
                        }
                    })
                    .await
            }
        }
    }

    /// Up to `limit` names (None: all) of a listing or search, one page of `page_size`
    /// (0: the tracker's default) at a time, never asking for more than the limit needs.
    pub async fn files(
        &self,
        query: Option<&str>,
        limit: Option<usize>,
        page_size: u32,
    ) -> Result<Vec<pb::FileSummary>> {
        let mut out = Vec::new();
        let mut token = String::new();
        loop {
            let size = match limit.map(|l| l.saturating_sub(out.len())) {
                Some(0) => return Ok(out),
                Some(left) => {
                    let want = if page_size == 0 {
                        DEFAULT_PAGE_SIZE
                    } else {
                        page_size
                    };
                    want.min(u32::try_from(left).unwrap_or(u32::MAX))
                }
                None => page_size,
            };
            let page = self.files_page(query, size, &token).await?;
            out.extend(page.files);
            if page.next_page_token.is_empty() {
                if let Some(l) = limit {
                    out.truncate(l);
                }
                return Ok(out);
            }
            // Tokens only move forward; the same one twice would loop for ever.
            if page.next_page_token == token {
                return Err(ClientError::Other(
                    "the tracker returned the same page token twice".into(),
                ));
            }
            token = page.next_page_token;
        }
    }

    pub async fn stat(&self, name_or_id: &str) -> Result<pb::FileDetail> {
        let n = name_or_id.to_string();
        self.trackers
            .call(&format!("stat {name_or_id:?}"), |mut c| {
                let name_or_id = n.clone();
                async move { c.stat_file(pb::StatFileRequest { name_or_id }).await }
            })
            .await
    }

    pub async fn delete(&self, name_or_id: &str) -> Result<pb::DeleteFileResponse> {
        let n = name_or_id.to_string();
        self.trackers
            .call(&format!("rm {name_or_id:?}"), |mut c| {
                let name_or_id = n.clone();
                async move { c.delete_file(pb::DeleteFileRequest { name_or_id }).await }
            })
            .await
    }

    pub async fn peers(&self) -> Result<Vec<pb::PeerInfo>> {
        Ok(self
            .trackers
            .call("peers", |mut c| async move {
                c.list_peers(pb::ListPeersRequest {}).await
            })
            .await?
            .peers)
    }

    pub async fn drain(&self, peer_id: &str) -> Result<pb::DrainPeerResponse> {
        let p = peer_id.to_string();
        self.trackers
            .call(&format!("drain {peer_id}"), |mut c| {
                let peer_id = p.clone();
                async move { c.drain_peer(pb::DrainPeerRequest { peer_id }).await }
            })
            .await
    }

    pub async fn set_replicas(
        &self,
        name_or_id: &str,
        replicas: u32,
    ) -> Result<pb::SetReplicasResponse> {
        let n = name_or_id.to_string();
        self.trackers
            .call(&format!("replicas {name_or_id:?}"), |mut c| {
                let name_or_id = n.clone();
                async move {
                    c.set_replicas(pb::SetReplicasRequest {
                        name_or_id,
                        replicas,
                    })
                    .await
                }
            })
            .await
    }

    pub async fn cluster_info(&self) -> Result<pb::ClusterInfoResponse> {
        self.trackers
            .call("cluster info", |mut c| async move {
                c.cluster_info(pb::ClusterInfoRequest {}).await
            })
            .await
    }

    pub(crate) async fn report_bad(&self, peer_id: &str, hash: &str, reason: &str) {
        let (p, h, r) = (peer_id.to_string(), hash.to_string(), reason.to_string());
        let _ = self
            .trackers
            .call("report bad chunk", |mut c| {
                let req = pb::ReportBadChunkRequest {
                    peer_id: p.clone(),
                    hash: h.clone(),
                    reason: r.clone(),
                };
                async move { c.report_bad_chunk(req).await }
            })
            .await;
    }
}
