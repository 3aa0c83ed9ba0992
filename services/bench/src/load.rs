//! Load generators for the tracker's metadata path: a fixed number of unary RPCs from
//! N concurrent tasks over a few HTTP/2 connections, and a crowd of fake peers that
//! register and then heartbeat at the interval the tracker asks for.
//!
//! Both only dial the tracker address they are given (loopback in the benchmark), and
//! every loop is bounded in count and in time.

use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{bail, Context, Result};
use futures::{stream, StreamExt};
use shoal_common::hash::Hash;
use shoal_proto::v1 as pb;
use shoal_proto::v1::tracker_client::TrackerClient;
use tokio::time::Instant;
use tonic::transport::{Channel, Endpoint};

use crate::stats::Latencies;

#[derive(clap::ValueEnum, Debug, Clone, Copy, PartialEq, Eq)]
pub enum Method {
    /// ClusterInfo: a fixed-size summary of the cluster.
    ClusterInfo,
    /// StatFile of --name: the file's chunks and their replicas.
    StatFile,
    /// StatFile of --name, the answer checked (status, framing) and counted but not
    /// decoded, as h2load would: the tracker's rate, not the client's protobuf decoding
    /// on the same cores.
    StatFileBytes,
}

#[derive(clap::Args, Debug, Clone)]
pub struct RpcArgs {
    /// Tracker URL (loopback in the benchmark).
    #[arg(long, default_value = "http://127.0.0.1:50052")]
    pub tracker: String,
    #[arg(long, value_enum, default_value_t = Method::ClusterInfo)]
    pub method: Method,
    /// File name or id for StatFile.
    #[arg(long, default_value = "")]
    pub name: String,
    /// HTTP/2 connections the tasks share.
    #[arg(long, default_value_t = 4)]
    pub connections: usize,
    /// Concurrent tasks, each with one request in flight.
    #[arg(long, default_value_t = 64)]
    pub concurrency: usize,
    /// Requests in total.
    #[arg(long, default_value_t = 100_000)]
    pub requests: u64,
    /// Stop early after this long.
    #[arg(long, default_value = "60s", value_parser = humantime::parse_duration)]
    pub max_time: Duration,
}

#[derive(Debug)]
pub struct RpcResult {
    pub ok: u64,
    pub errors: u64,
    pub first_error: Option<String>,
    pub elapsed: Duration,
    pub lat: Latencies,
}

impl RpcResult {
    pub fn rate(&self) -> f64 {
        self.ok as f64 / self.elapsed.as_secs_f64().max(1e-9)
    }
}

/// A lazily connected HTTP/2 connection to `url` (one per call: channels are not shared).
/// A plain tonic channel, so the generator measures the tracker, not client middleware.
fn connect(url: &str) -> Result<Channel> {
    let e = Endpoint::from_shared(shoal_common::grpc::url_for(url))
        .with_context(|| format!("bad tracker URL {url:?}"))?
        .tcp_nodelay(true)
        .connect_timeout(Duration::from_secs(5));
    Ok(e.connect_lazy())
}

fn tracker_client(ch: Channel) -> TrackerClient<Channel> {
    TrackerClient::new(ch).max_decoding_message_size(shoal_common::grpc::MAX_MESSAGE_BYTES)
}

async fn call(ch: &Channel, method: Method, name: &str) -> Result<(), tonic::Status> {
    let mut c = tracker_client(ch.clone());
    match method {
        Method::ClusterInfo => c.cluster_info(pb::ClusterInfoRequest {}).await.map(drop),
        Method::StatFile => c
            .stat_file(pb::StatFileRequest {
                name_or_id: name.to_string(),
            })
            .await
            .map(drop),
        Method::StatFileBytes => {
            let mut grpc = tonic::client::Grpc::new(ch.clone());
            grpc.ready()
                .await
                .map_err(|e| tonic::Status::unavailable(e.to_string()))?;
            let answer = grpc
                .unary(
                    tonic::Request::new(pb::StatFileRequest {
                        name_or_id: name.to_string(),
                    }),
                    tonic::codegen::http::uri::PathAndQuery::from_static(
                        "/shoal.v1.Tracker/StatFile",
                    ),
                    Undecoded,
                )
                .await?
                .into_inner();
            if answer.is_empty() {
                return Err(tonic::Status::internal("an empty StatFile answer"));
            }
            Ok(())
        }
    }
}

/// Encodes requests with prost; takes answers as bytes, undecoded.
#[derive(Clone, Copy)]
struct Undecoded;

impl tonic::codec::Codec for Undecoded {
    type Encode = pb::StatFileRequest;
    type Decode = bytes::Bytes;
    type Encoder = Undecoded;
    type Decoder = Undecoded;

    fn encoder(&mut self) -> Self {
        Undecoded
    }

    fn decoder(&mut self) -> Self {
        Undecoded
    }
}

impl tonic::codec::Encoder for Undecoded {
    type Item = pb::StatFileRequest;
    type Error = tonic::Status;

    fn encode(
        &mut self,
        item: Self::Item,
        dst: &mut tonic::codec::EncodeBuf<'_>,
    ) -> Result<(), tonic::Status> {
        prost::Message::encode(&item, dst).map_err(|e| tonic::Status::internal(e.to_string()))
    }
}

impl tonic::codec::Decoder for Undecoded {
    type Item = bytes::Bytes;
    type Error = tonic::Status;

    fn decode(
        &mut self,
        buf: &mut tonic::codec::DecodeBuf<'_>,
    ) -> Result<Option<bytes::Bytes>, tonic::Status> {
        use bytes::Buf;
        Ok(Some(buf.copy_to_bytes(buf.remaining())))
    }
}

/// `a.requests` unary calls from `a.concurrency` tasks over `a.connections` connections.
pub async fn rpc_load(a: &RpcArgs) -> Result<RpcResult> {
    if a.connections == 0 || a.concurrency == 0 {
        bail!("--connections and --concurrency must be at least 1");
    }
    let channels = (0..a.connections)
        .map(|_| connect(&a.tracker))
        .collect::<Result<Vec<_>>>()?;
    // Connect every channel and check the call works before the clock starts.
    for ch in &channels {
        call(ch, a.method, &a.name)
            .await
            .with_context(|| format!("warm-up {:?} against {}", a.method, a.tracker))?;
    }
    let left = Arc::new(AtomicU64::new(a.requests));
    let start = Instant::now();
    let deadline = start + a.max_time;
    let per_task = (a.requests as usize / a.concurrency) + 1;
    let tasks: Vec<_> = (0..a.concurrency)
        .map(|i| {
            let ch = channels[i % channels.len()].clone();
            let (left, method, name) = (left.clone(), a.method, a.name.clone());
            tokio::spawn(async move {
                let mut lat = Vec::with_capacity(per_task);
                let (mut errors, mut first) = (0u64, None);
                while left
                    .fetch_update(Relaxed, Relaxed, |n| n.checked_sub(1))
                    .is_ok()
                    && Instant::now() < deadline
                {
                    let t0 = Instant::now();
                    match call(&ch, method, &name).await {
                        Ok(()) => lat.push(t0.elapsed()),
                        Err(e) => {
                            errors += 1;
                            first.get_or_insert_with(|| e.to_string());
                        }
                    }
                }
                (lat, errors, first)
            })
        })
        .collect();
    let mut all = Vec::with_capacity(a.requests as usize);
    let (mut errors, mut first_error) = (0, None);
    for t in tasks {
        let (lat, e, f) = t.await.context("load task")?;
        all.extend(lat);
        errors += e;
        if first_error.is_none() {
            first_error = f;
        }
    }
    let elapsed = start.elapsed();
    Ok(RpcResult {
        ok: all.len() as u64,
        errors,
        first_error,
        elapsed,
        lat: Latencies::new(all),
    })
}

#[derive(clap::Args, Debug, Clone)]
pub struct HeartbeatArgs {
    /// Tracker URL (loopback in the benchmark). Use a tracker of its own: the fake
    /// peers are registered like real ones and stay in its registry until declared dead.
    #[arg(long, default_value = "http://127.0.0.1:50052")]
    pub tracker: String,
    /// Fake peers.
    #[arg(long, default_value_t = 1000)]
    pub peers: usize,
    /// How long they heartbeat.
    #[arg(long, default_value = "10s", value_parser = humantime::parse_duration)]
    pub duration: Duration,
    /// HTTP/2 connections (0 = one per fake peer, as real peers have).
    #[arg(long, default_value_t = 0)]
    pub connections: usize,
    /// Chunk hashes in each fake peer's inventory (registered, and digested in heartbeats).
    #[arg(long, default_value_t = 0)]
    pub chunks_per_peer: usize,
    /// Registrations in flight at once.
    #[arg(long, default_value_t = 64)]
    pub register_concurrency: usize,
}

#[derive(Debug)]
pub struct HeartbeatResult {
    pub peers: usize,
    pub register_elapsed: Duration,
    pub register_lat: Latencies,
    pub interval: Duration,
    pub sent: u64,
    pub errors: u64,
    pub first_error: Option<String>,
    /// Answers with `known = false` or `resync = true` (the tracker lost or doubts the peer).
    pub anomalies: u64,
    pub lat: Latencies,
    /// How late heartbeats left against their schedule, worst case (a saturated generator).
    pub max_lateness: Duration,
}

/// Register `a.peers` fake peers, then heartbeat each at the tracker's interval for
/// `a.duration`, spread evenly over the interval.
pub async fn heartbeats(a: &HeartbeatArgs) -> Result<HeartbeatResult> {
    if a.peers == 0 {
        bail!("--peers must be at least 1");
    }
    let n_conn = if a.connections == 0 {
        a.peers
    } else {
        a.connections.min(a.peers)
    };
    let channels = (0..n_conn)
        .map(|_| connect(&a.tracker))
        .collect::<Result<Vec<_>>>()?;
    // Inventories: random chunk hashes, and the digest the tracker will compare against.
    let inventories: Vec<(Vec<String>, String)> = (0..a.peers)
        .map(|_| {
            let mut hashes: Vec<Hash> = (0..a.chunks_per_peer)
                .map(|_| Hash(rand::random::<[u8; 32]>()))
                .collect();
            hashes.sort();
            (
                hashes.iter().map(Hash::to_hex).collect(),
                shoal_common::hash::inventory_digest(hashes.iter()),
            )
        })
        .collect();
    let id = |i: usize| format!("bench-fake-peer-{i:05}");

    let reg_start = Instant::now();
    let registered: Vec<Result<(Duration, u64)>> = stream::iter(0..a.peers)
        .map(|i| {
            let mut c = tracker_client(channels[i % n_conn].clone());
            let req = pb::RegisterPeerRequest {
                peer: Some(pb::PeerRef {
                    id: id(i),
                    // Never dialled: the tracker has no file for these peers to hold.
                    addr: format!("127.0.0.1:{}", 20_000 + i % 40_000),
                    zone: format!("bench-z{}", i % 4),
                }),
                capacity_bytes: 1 << 40,
                used_bytes: 0,
                chunks: inventories[i].0.clone(),
                inventory_id: 0,
                write_mark: None,
            };
            async move {
                let t0 = Instant::now();
                let r = c
                    .register_peer(req)
                    .await
                    .with_context(|| format!("registering fake peer {i}"))?;
                Ok((t0.elapsed(), r.into_inner().heartbeat_interval_ms))
            }
        })
        .buffer_unordered(a.register_concurrency.max(1))
        .collect()
        .await;
    let register_elapsed = reg_start.elapsed();
    let mut register_lat = Vec::with_capacity(a.peers);
    let mut interval_ms = u64::MAX;
    for r in registered {
        let (d, ms) = r?;
        register_lat.push(d);
        interval_ms = interval_ms.min(ms);
    }
    let interval = Duration::from_millis(interval_ms.max(1));

    let start = Instant::now() + Duration::from_millis(50);
    let end = start + a.duration;
    let tasks: Vec<_> = (0..a.peers)
        .map(|i| {
            let mut c = tracker_client(channels[i % n_conn].clone());
            let phase = interval.mul_f64(i as f64 / a.peers as f64);
            let req = pb::HeartbeatRequest {
                peer_id: id(i),
                capacity_bytes: 1 << 40,
                used_bytes: 0,
                active_transfers: 0,
                chunk_count: a.chunks_per_peer as u64,
                inventory_digest: inventories[i].1.clone(),
                write_mark: None,
            };
            tokio::spawn(async move {
                let mut lat = Vec::new();
                let (mut errors, mut anomalies, mut first) = (0u64, 0u64, None);
                let mut late = Duration::ZERO;
                let mut due = start + phase;
                while due < end {
                    tokio::time::sleep_until(due).await;
                    let t0 = Instant::now();
                    late = late.max(t0 - due);
                    match c.heartbeat(req.clone()).await {
                        Ok(r) => {
                            lat.push(t0.elapsed());
                            let r = r.into_inner();
                            if !r.known || r.resync {
                                anomalies += 1;
                            }
                        }
                        Err(e) => {
                            errors += 1;
                            first.get_or_insert_with(|| e.to_string());
                        }
                    }
                    due += interval;
                }
                (lat, errors, anomalies, first, late)
            })
        })
        .collect();
    let mut all = Vec::new();
    let (mut errors, mut anomalies, mut first_error, mut max_lateness) =
        (0, 0, None, Duration::ZERO);
    for t in tasks {
        let (lat, e, an, f, late) = t.await.context("heartbeat task")?;
        all.extend(lat);
        errors += e;
        anomalies += an;
        max_lateness = max_lateness.max(late);
        if first_error.is_none() {
            first_error = f;
        }
    }
    Ok(HeartbeatResult {
        peers: a.peers,
        register_elapsed,
        register_lat: Latencies::new(register_lat),
        interval,
        sent: all.len() as u64 + errors,
        errors,
        first_error,
        anomalies,
        lat: Latencies::new(all),
        max_lateness,
    })
}
