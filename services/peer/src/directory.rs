//! The peer directory: peer id → address, as the tracker knows it. A peer forwards a
//! chunk only to a peer id its placement ticket names, at the address this directory
//! gives — never at an address a client put in a message — so the cluster token it
//! presents on that call only ever reaches a registered peer.
//!
//! Filled from the tracker's `ListPeers` (called with the cluster token), kept for a
//! short TTL, refreshed on a miss. It owns no other state and dials nothing but the
//! configured trackers.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;

use shoal_common::grpc::Channels;
use shoal_proto::v1 as pb;
use shoal_proto::v1::tracker_client::TrackerClient;
use tokio::time::Instant;
use tonic::Status;

/// How long a directory listing is trusted before the next lookup refreshes it.
pub const DIRECTORY_TTL: Duration = Duration::from_secs(5);
/// Shortest time between two refreshes caused by misses (an unknown id cannot make a
/// peer hammer the tracker).
const MISS_REFRESH: Duration = Duration::from_millis(200);

pub struct Directory {
    trackers: Vec<String>,
    /// When the map was fetched, and the map.
    cache: Mutex<Option<(Instant, HashMap<String, String>)>>,
    /// One refresh at a time; the others wait for it and read its result.
    refresh: tokio::sync::Mutex<()>,
}

impl Directory {
    pub fn new(trackers: Vec<String>) -> Self {
        Self {
            trackers,
            cache: Mutex::new(None),
            refresh: tokio::sync::Mutex::new(()),
        }
    }

    fn cached(&self, id: &str, max_age: Duration) -> Option<String> {
        let c = self.cache.lock().unwrap_or_else(|p| p.into_inner());
        c.as_ref()
            .filter(|(at, _)| at.elapsed() < max_age)
            .and_then(|(_, m)| m.get(id).cloned())
    }

    fn fetched_within(&self, age: Duration) -> bool {
        let c = self.cache.lock().unwrap_or_else(|p| p.into_inner());
        c.as_ref().is_some_and(|(at, _)| at.elapsed() < age)
    }

    /// Drop what is known of peer `id` (its address stopped answering: it may have
    /// restarted elsewhere), so the next lookup asks the tracker again.
    pub fn forget(&self, id: &str) {
        let mut c = self.cache.lock().unwrap_or_else(|p| p.into_inner());
        if let Some((_, m)) = c.as_mut() {
            m.remove(id);
        }
    }

    /// The address the tracker registered for peer `id`.
    pub async fn addr(&self, channels: &Channels, id: &str) -> Result<String, Status> {
        if let Some(a) = self.cached(id, DIRECTORY_TTL) {
            return Ok(a);
        }
        let _one = self.refresh.lock().await;
        // Someone else may have refreshed while we waited.
        if let Some(a) = self.cached(id, DIRECTORY_TTL) {
            return Ok(a);
        }
        if !self.fetched_within(MISS_REFRESH) {
            let map = self.fetch(channels).await?;
            *self.cache.lock().unwrap_or_else(|p| p.into_inner()) = Some((Instant::now(), map));
        }
        self.cached(id, DIRECTORY_TTL).ok_or_else(|| {
            Status::failed_precondition(format!(
                "peer {} is not in the tracker's peer directory",
                id.chars().take(64).collect::<String>()
            ))
        })
    }

    async fn fetch(&self, channels: &Channels) -> Result<HashMap<String, String>, Status> {
        let mut last = Status::unavailable("no tracker configured");
        for url in &self.trackers {
            let mut c = TrackerClient::new(channels.get(url)?)
                .max_decoding_message_size(shoal_common::grpc::MAX_MESSAGE_BYTES);
            match c.list_peers(pb::ListPeersRequest {}).await {
                Ok(r) => {
                    return Ok(r
                        .into_inner()
                        .peers
                        .into_iter()
                        .filter_map(|p| p.peer)
                        .map(|p| (p.id, p.addr))
                        .collect())
                }
                Err(e) => last = e,
            }
        }
        Err(Status::unavailable(format!(
            "peer directory: no tracker answered: {}",
            last.message()
        )))
    }
}
