//! The shoal client library, shared by the `shoal` CLI and the webserver's gateway.
//!
//! `put` asks the tracker for a chunk size, hashes the file once (chunk hashes and the
//! file id), asks where each chunk goes, and streams every chunk once to the first peer
//! of its pipeline; peers forward it down the pipeline. `get` fetches chunks from
//! several peers in parallel, verifies each and the whole file, and resumes from a
//! `.part` file. Memory stays bounded: files are streamed, never loaded whole.

mod body;
mod buf;
pub mod display;
mod error;
mod failover;
mod get;
mod outfile;
mod put;
mod putstream;
mod renewal;
mod replica;
mod stream;
mod tracker;
mod verify;

use std::collections::HashMap;
use std::sync::Mutex;

use shoal_common::grpc::GrpcChannel as Channel;
use shoal_proto::v1 as pb;

pub use error::ClientError;
pub use get::{part_path as get_part_path, GetResult};
pub use put::{PutOptions, PutResult};
pub use putstream::{StreamMemory, Streamed};
pub use tracker::Trackers;

pub type Result<T, E = ClientError> = std::result::Result<T, E>;

/// Receives progress of a put or get (a progress bar, or nothing).
pub trait Progress: Send + Sync {
    fn start(&self, _total_bytes: u64, _what: &str) {}
    fn advance(&self, _bytes: u64) {}
    fn finish(&self) {}
}

/// No progress reporting.
pub struct Quiet;
impl Progress for Quiet {}

/// Tuning for transfers.
#[derive(Debug, Clone)]
pub struct Options {
    /// Chunks downloaded at once (from different peers when possible).
    pub get_parallelism: usize,
    /// Chunks uploaded at once.
    pub put_parallelism: usize,
    /// A chunk transfer (a get stream, or a put pipeline taking no bytes or giving no
    /// answer) that makes no progress for this long is abandoned, and its peer avoided
    /// for the rest of the get or put.
    pub progress_timeout: std::time::Duration,
    /// Pipelines one chunk of a put may try, the first included, before the put fails.
    pub put_attempts: usize,
    /// Write a get's output file with `O_DIRECT` where the filesystem allows (past the
    /// page cache). Off by default: through the cache the writes cost a copy and no
    /// wait for the device, and the get ends as soon as the bytes are in.
    pub direct_output: bool,
}

impl Default for Options {
    fn default() -> Self {
        Self {
            get_parallelism: 8,
            put_parallelism: 4,
            progress_timeout: shoal_common::config::DEFAULT_PROGRESS_TIMEOUT,
            put_attempts: 4,
            direct_output: false,
        }
    }
}

pub struct Client {
    pub trackers: Trackers,
    peers: Mutex<HashMap<String, Channel>>,
    token: Option<String>,
    pub options: Options,
}

impl Client {
    /// A client for the given tracker URL(s) (comma-separated; fails over on UNAVAILABLE).
    pub fn new(tracker_urls: &str) -> Result<Self> {
        Self::with_token(tracker_urls, None)
    }

    /// A client presenting `token` (read or write role) to trackers and peers.
    pub fn with_token(tracker_urls: &str, token: Option<String>) -> Result<Self> {
        Ok(Self {
            trackers: Trackers::new(tracker_urls, token.as_deref())?,
            peers: Mutex::new(HashMap::new()),
            token,
            options: Options::default(),
        })
    }

    /// Ask the webserver at `endpoint` where the tracker is, then connect to it.
    pub async fn discover(endpoint: &str) -> Result<(Self, pb::DiscoverResponse)> {
        Self::discover_with_token(endpoint, None).await
    }

    /// [`Client::discover`], presenting `token` to the webserver, trackers and peers.
    pub async fn discover_with_token(
        endpoint: &str,
        token: Option<String>,
    ) -> Result<(Self, pb::DiscoverResponse)> {
        let ch = shoal_common::grpc::channel_with(endpoint, token.as_deref())
            .map_err(|e| ClientError::rpc("discover", e))?;
        let resp = pb::webserver_client::WebserverClient::new(ch)
            .discover(pb::DiscoverRequest {})
            .await
            .map_err(|e| ClientError::rpc(&format!("discover via {endpoint}"), e))?
            .into_inner();
        if resp.tracker_urls.is_empty() {
            return Err(ClientError::Other(format!(
                "{endpoint} returned no tracker endpoint"
            )));
        }
        Ok((Self::with_token(&resp.tracker_urls.join(","), token)?, resp))
    }

    pub(crate) fn peer(&self, addr: &str) -> Result<pb::peer_client::PeerClient<Channel>> {
        Ok(pb::peer_client::PeerClient::new(self.peer_channel(addr)?)
            .max_decoding_message_size(shoal_common::grpc::MAX_MESSAGE_BYTES))
    }

    /// The one channel to the peer at `addr`.
    pub(crate) fn peer_channel(&self, addr: &str) -> Result<Channel> {
        let mut peers = self.peers.lock().unwrap_or_else(|p| p.into_inner());
        let ch = match peers.get(addr) {
            Some(c) => c.clone(),
            None => {
                let c = shoal_common::grpc::channel_with(addr, self.token.as_deref())
                    .map_err(|e| ClientError::rpc("peer address", e))?;
                peers.insert(addr.to_string(), c.clone());
                c
            }
        };
        Ok(ch)
    }
}
