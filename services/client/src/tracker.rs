//! Calls to the tracker, with failover over several URLs on UNAVAILABLE.

use std::sync::atomic::{AtomicUsize, Ordering::Relaxed};

use shoal_common::grpc::GrpcChannel as Channel;
use shoal_proto::v1 as pb;
use shoal_proto::v1::tracker_client::TrackerClient;

use crate::{ClientError, Result};

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
    pub async fn list(&self) -> Result<Vec<pb::FileSummary>> {
        Ok(self
            .trackers
            .call("list", |mut c| async move {
                c.list_files(pb::ListFilesRequest {}).await
            })
            .await?
            .files)
    }

    pub async fn search(&self, query: &str) -> Result<Vec<pb::FileSummary>> {
        let q = query.to_string();
        Ok(self
            .trackers
            .call("search", |mut c| {
                let query = q.clone();
                async move { c.search_files(pb::SearchFilesRequest { query }).await }
            })
            .await?
            .files)
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
