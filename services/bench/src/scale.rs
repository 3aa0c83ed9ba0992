//! `make bench-scale`: one tracker with a real catalogue. Simulated peers (10,000 × 1,000
//! chunks = 10 M copies by default) share a few HTTP/2 connections and one fake peer
//! server that answers the tracker's copy and delete orders at once, so what is measured
//! is the tracker: its registration storm after a restart, heartbeat latency (steady, and
//! while it repairs a dead peer's chunks and clients put), its memory per copy, and
//! metadata rates. The catalogue is written straight into the tracker's redb file before
//! it starts, exactly as a tracker restart finds it.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use futures::{stream, StreamExt};
use shoal_common::hash::Hash;
use shoal_proto::v1 as pb;
use tonic::transport::Channel;

use crate::cluster::{free_port, Ctx};
use crate::procs::{clean_env, vm_kib, Procs};
use crate::stats::{ms, Latencies};

#[derive(clap::Args, Debug, Clone)]
pub struct ScaleArgs {
    /// Simulated peers.
    #[arg(long, env = "SCALE_PEERS", default_value_t = 10_000)]
    pub peers: usize,
    /// Chunks on each simulated peer.
    #[arg(long, env = "SCALE_CHUNKS_PER_PEER", default_value_t = 1_000)]
    pub chunks_per_peer: usize,
    #[arg(long, default_value_t = 3)]
    pub replicas: usize,
    #[arg(long, default_value_t = 4)]
    pub zones: usize,
    /// Chunks per file (256 is what a 1 GiB file gets).
    #[arg(long, default_value_t = 256)]
    pub chunks_per_file: usize,
    /// Seconds of steady heartbeats.
    #[arg(long, env = "SCALE_PHASE_SECS", default_value_t = 20)]
    pub phase_secs: u64,
    /// HTTP/2 connections the simulated peers share.
    #[arg(long, default_value_t = 32)]
    pub connections: usize,
    /// Clients putting (metadata only) while a dead peer is repaired.
    #[arg(long, default_value_t = 8)]
    pub clients: usize,
    /// Names in the catalogue of the listing row.
    #[arg(long, env = "SCALE_LIST_FILES", default_value_t = 1_000_000)]
    pub list_files: usize,
    /// Clients putting real 4 KiB files on a real 3-peer cluster.
    #[arg(long, default_value_t = 16)]
    pub put_clients: usize,
    /// Seconds of the real-put row.
    #[arg(long, default_value_t = 20)]
    pub put_secs: u64,
    /// Send the inventory digest of trackers from before 2026-12-04 (BLAKE3 of the sorted
    /// hashes), to measure one for comparison; also skips the paged-listing row.
    #[arg(long)]
    pub old_tracker: bool,
    /// Print the figures without failing on a missed goal (`make bench-smoke`).
    #[arg(long)]
    pub no_goals: bool,
    /// Work directory (created; removed on success).
    #[arg(long, default_value = "target/bench/scale")]
    pub dir: PathBuf,
    /// Directory of the shoal binaries.
    #[arg(long, env = "BENCH_BIN", default_value = "target/release")]
    pub bin: PathBuf,
    /// Where the markdown table goes.
    #[arg(long, default_value = "target/bench/scale.md")]
    pub out: PathBuf,
}

/// One row of the report.
struct Row {
    what: String,
    figure: String,
    goal: &'static str,
    met: Option<bool>,
}

fn row(
    rows: &mut Vec<Row>,
    what: impl Into<String>,
    figure: String,
    goal: &'static str,
    met: Option<bool>,
) {
    let what = what.into();
    println!("{what}: {figure}");
    rows.push(Row {
        what,
        figure,
        goal,
        met,
    });
}

/// The chunk of global index `i` (deterministic, so inventories need not be stored).
fn chunk_hash(i: u64) -> Hash {
    Hash(*blake3::hash(&i.to_le_bytes()).as_bytes())
}

/// Copy `k` of chunk `i` sits on peer `(i·R + k) mod P`: R consecutive peers, so R
/// different zones when peers take zones round-robin, and every peer the same count.
fn holder(i: u64, k: usize, a: &ScaleArgs) -> usize {
    ((i as usize) * a.replicas + k) % a.peers
}

fn peer_id(p: usize) -> String {
    format!("scale-peer-{p:05}")
}

/// Write `files` files of `chunks_per_file` chunks (the last one shorter) covering chunks
/// `0..chunks` into a redb catalogue under `dir`, as a tracker leaves it.
fn write_catalogue(
    dir: &Path,
    chunks: u64,
    per_file: u64,
    replicas: u32,
    name: &str,
) -> Result<Vec<String>> {
    use shoal_tracker::store::{CatalogueStore, Change, FileRecord, NameRecord, RedbStore};
    let store = RedbStore::open(dir)?;
    let chunk_size = 4u64 << 20;
    let mut names = Vec::new();
    let mut changes = Vec::new();
    let mut first = 0u64;
    while first < chunks {
        let n = per_file.min(chunks - first);
        let f = names.len() as u64;
        let id = Hash(*blake3::hash(format!("{name}-file-{f}").as_bytes()).as_bytes());
        let rec = FileRecord {
            id,
            size: n * chunk_size,
            chunk_size,
            chunks: (first..first + n).map(chunk_hash).collect(),
            replicas,
            created_ms: 1,
        };
        let fname = format!("{name}/{f:07}");
        changes.push(Change::PutFile(rec));
        changes.push(Change::PutName(
            fname.clone(),
            NameRecord { id, created_ms: 1 },
        ));
        names.push(fname);
        if changes.len() >= 20_000 {
            store.apply(&std::mem::take(&mut changes))?;
        }
        first += n;
    }
    store.apply(&changes)?;
    Ok(names)
}

/// A peer server for every simulated peer: copies and deletions succeed at once.
#[derive(Default)]
struct FakePeers {
    replicated: AtomicU64,
}

/// The server side of [`FakePeers`] (shared with the benchmark, which reads the counts).
#[derive(Clone)]
struct FakeServer(Arc<FakePeers>);

type DataStream =
    std::pin::Pin<Box<dyn futures::Stream<Item = Result<pb::ChunkData, tonic::Status>> + Send>>;

#[tonic::async_trait]
impl pb::peer_server::Peer for FakeServer {
    async fn put_chunk(
        &self,
        _: tonic::Request<tonic::Streaming<pb::PutChunkRequest>>,
    ) -> Result<tonic::Response<pb::PutChunkResponse>, tonic::Status> {
        Err(tonic::Status::unimplemented("simulated peer"))
    }
    type GetChunkStream = DataStream;
    async fn get_chunk(
        &self,
        _: tonic::Request<pb::GetChunkRequest>,
    ) -> Result<tonic::Response<DataStream>, tonic::Status> {
        Err(tonic::Status::unimplemented("simulated peer"))
    }
    async fn has_chunks(
        &self,
        _: tonic::Request<pb::HasChunksRequest>,
    ) -> Result<tonic::Response<pb::HasChunksResponse>, tonic::Status> {
        Err(tonic::Status::unimplemented("simulated peer"))
    }
    async fn verify_chunk(
        &self,
        _: tonic::Request<pb::VerifyChunkRequest>,
    ) -> Result<tonic::Response<pb::VerifyChunkResponse>, tonic::Status> {
        Err(tonic::Status::unimplemented("simulated peer"))
    }
    async fn delete_chunks(
        &self,
        _: tonic::Request<pb::DeleteChunksRequest>,
    ) -> Result<tonic::Response<pb::DeleteChunksResponse>, tonic::Status> {
        Ok(tonic::Response::new(Default::default()))
    }
    async fn replicate_chunk(
        &self,
        req: tonic::Request<pb::ReplicateChunkRequest>,
    ) -> Result<tonic::Response<pb::ReplicateChunkResponse>, tonic::Status> {
        self.0.replicated.fetch_add(1, Relaxed);
        let r = req.into_inner();
        Ok(tonic::Response::new(pb::ReplicateChunkResponse {
            bytes: r.size,
            source_peer_id: r.sources.first().map(|s| s.id.clone()).unwrap_or_default(),
            mark: None,
        }))
    }
}

async fn serve_fakes(fakes: Arc<FakePeers>) -> Result<u16> {
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let port = l.local_addr()?.port();
    tokio::spawn(
        tonic::transport::Server::builder()
            .add_service(pb::peer_server::PeerServer::new(FakeServer(fakes)))
            .serve_with_incoming(tokio_stream::wrappers::TcpListenerStream::new(l)),
    );
    Ok(port)
}

struct Tracker {
    url: String,
    pid: u32,
}

async fn start_tracker(ctx: &Ctx, dir: &Path, name: &str) -> Result<Tracker> {
    let port = free_port()?;
    let mut cmd = Command::new(ctx.exe("shoal-tracker"));
    clean_env(&mut cmd);
    cmd.env("SHOAL_LISTEN_ADDR", format!("127.0.0.1:{port}"))
        .env("SHOAL_DATA_DIR", dir)
        .env("SHOAL_REPLICATION__FACTOR", "3")
        .env("SHOAL_LIVENESS__HEARTBEAT", "2s");
    let pid = ctx.procs.spawn(name, cmd)?;
    let addr = format!("127.0.0.1:{port}");
    let deadline = Instant::now() + Duration::from_secs(300);
    loop {
        ctx.procs.check_running(pid)?;
        let ok = tokio::time::timeout(
            Duration::from_secs(2),
            shoal_common::grpc::check_health(&addr, ""),
        )
        .await;
        if let Ok(Ok(true)) = ok {
            break;
        }
        if Instant::now() > deadline {
            bail!("{name} at {addr} not SERVING after 300 s");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    Ok(Tracker {
        url: format!("http://{addr}"),
        pid,
    })
}

fn channels(url: &str, n: usize) -> Result<Vec<Channel>> {
    (0..n.max(1))
        .map(|_| {
            Ok(tonic::transport::Endpoint::from_shared(url.to_string())?
                .tcp_nodelay(true)
                .connect_lazy())
        })
        .collect()
}

fn client(ch: &Channel) -> pb::tracker_client::TrackerClient<Channel> {
    pb::tracker_client::TrackerClient::new(ch.clone())
        .max_decoding_message_size(shoal_common::grpc::MAX_MESSAGE_BYTES)
        .max_encoding_message_size(shoal_common::grpc::MAX_MESSAGE_BYTES)
}

/// Each simulated peer's inventory (sorted), rebuilt from the layout.
fn inventories(a: &ScaleArgs, chunks: u64) -> Vec<Vec<Hash>> {
    let mut inv: Vec<Vec<Hash>> = vec![Vec::with_capacity(a.chunks_per_peer + 1); a.peers];
    for i in 0..chunks {
        let h = chunk_hash(i);
        for k in 0..a.replicas {
            inv[holder(i, k, a)].push(h);
        }
    }
    for v in inv.iter_mut() {
        v.sort();
    }
    inv
}

/// Register every simulated peer with its inventory; returns the time taken.
async fn register_all(
    chs: &[Channel],
    inv: &[Vec<Hash>],
    a: &ScaleArgs,
    fake: &str,
) -> Result<Duration> {
    let t0 = Instant::now();
    let results: Vec<Result<()>> = stream::iter(0..a.peers)
        .map(|p| {
            let mut c = client(&chs[p % chs.len()]);
            let req = pb::RegisterPeerRequest {
                peer: Some(pb::PeerRef {
                    id: peer_id(p),
                    addr: fake.to_string(),
                    zone: format!("z{}", p % a.zones),
                }),
                capacity_bytes: 1 << 42,
                used_bytes: (inv[p].len() as u64) << 22,
                chunks: inv[p].iter().map(Hash::to_hex).collect(),
                inventory_id: 0,
                write_mark: None,
            };
            async move {
                c.register_peer(req)
                    .await
                    .with_context(|| format!("registering {}", peer_id(p)))?;
                Ok(())
            }
        })
        .buffer_unordered(64)
        .collect()
        .await;
    for r in results {
        r?;
    }
    Ok(t0.elapsed())
}

/// Heartbeat results of one phase.
struct Beats {
    lat: Latencies,
    errors: u64,
    resyncs: u64,
}

/// Every simulated peer but `silent` heartbeats every `interval` for `dur`, spread evenly.
async fn heartbeat(
    chs: &[Channel],
    inv: &[Vec<Hash>],
    interval: Duration,
    dur: Duration,
    silent: Option<usize>,
    old_digest: bool,
    stop: Option<Arc<std::sync::atomic::AtomicBool>>,
) -> Beats {
    let start = tokio::time::Instant::now() + Duration::from_millis(50);
    let end = start + dur;
    let n = inv.len();
    let tasks: Vec<_> = (0..n)
        .filter(|p| Some(*p) != silent)
        .map(|p| {
            let mut c = client(&chs[p % chs.len()]);
            let req = pb::HeartbeatRequest {
                peer_id: peer_id(p),
                capacity_bytes: 1 << 42,
                used_bytes: (inv[p].len() as u64) << 22,
                active_transfers: 0,
                chunk_count: inv[p].len() as u64,
                inventory_digest: if old_digest {
                    let mut h = blake3::Hasher::new();
                    for c in &inv[p] {
                        h.update(&c.0);
                    }
                    h.finalize().to_hex().to_string()
                } else {
                    shoal_common::hash::inventory_digest(inv[p].iter())
                },
                write_mark: None,
            };
            let mut due = start + interval.mul_f64(p as f64 / n as f64);
            let stop = stop.clone();
            tokio::spawn(async move {
                let (mut lat, mut errors, mut resyncs) = (Vec::new(), 0u64, 0u64);
                while due < end && !stop.as_ref().is_some_and(|s| s.load(Relaxed)) {
                    tokio::time::sleep_until(due).await;
                    let t0 = Instant::now();
                    match c.heartbeat(req.clone()).await {
                        Ok(r) => {
                            lat.push(t0.elapsed());
                            let r = r.into_inner();
                            if r.resync || !r.known {
                                resyncs += 1;
                            }
                        }
                        Err(_) => errors += 1,
                    }
                    due += interval;
                }
                (lat, errors, resyncs)
            })
        })
        .collect();
    let mut b = Beats {
        lat: Latencies::default(),
        errors: 0,
        resyncs: 0,
    };
    let mut all = Vec::new();
    for t in tasks {
        if let Ok((l, e, r)) = t.await {
            all.extend(l);
            b.errors += e;
            b.resyncs += r;
        } else {
            b.errors += 1;
        }
    }
    b.lat = Latencies::new(all);
    b
}

/// Metadata-only puts (begin, place, commit claiming the placed copies) of one-chunk
/// files, from `clients` loops until `stop`; returns files committed, errors and the
/// first error's message.
async fn meta_puts(
    chs: Vec<Channel>,
    clients: usize,
    stop: Arc<tokio::sync::Notify>,
) -> (u64, u64, Option<String>) {
    let first_error = Arc::new(std::sync::Mutex::new(None::<String>));
    let done = Arc::new(AtomicU64::new(0));
    let errors = Arc::new(AtomicU64::new(0));
    let stopped = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let tasks: Vec<_> = (0..clients)
        .map(|w| {
            let mut c = client(&chs[w % chs.len()]);
            let (done, errors, stopped) = (done.clone(), errors.clone(), stopped.clone());
            let first_error = first_error.clone();
            tokio::spawn(async move {
                let mut i = 0u64;
                while !stopped.load(Relaxed) {
                    i += 1;
                    let tag = format!("scale-put-{w}-{i}");
                    let chunk = Hash(*blake3::hash(tag.as_bytes()).as_bytes());
                    let r = async {
                        let up = c
                            .begin_upload(pb::BeginUploadRequest {
                                name: format!("puts/{tag}"),
                                size: 4096,
                                replicas: 3,
                                overwrite: false,
                                ..Default::default()
                            })
                            .await?
                            .into_inner();
                        let placed = c
                            .place_chunks(pb::PlaceChunksRequest {
                                upload_id: up.upload_id.clone(),
                                file_id: chunk.to_hex(),
                                chunks: vec![pb::ChunkDigest {
                                    index: 0,
                                    hash: chunk.to_hex(),
                                    size: 4096,
                                }],
                            })
                            .await?
                            .into_inner();
                        // Receipts as the simulated peers would sign them (open cluster).
                        let keys = shoal_common::ticket::TicketKeys::new(None, None, None);
                        let receipts = placed
                            .placements
                            .first()
                            .map(|p| {
                                p.targets
                                    .iter()
                                    .map(|t| {
                                        keys.receipt(
                                            &t.id,
                                            &up.upload_id,
                                            &chunk.to_hex(),
                                            4096,
                                            None,
                                        )
                                    })
                                    .collect()
                            })
                            .unwrap_or_default();
                        c.commit_upload(pb::CommitUploadRequest {
                            upload_id: up.upload_id,
                            // peer_ids too, for trackers from before receipts (the
                            // "before" column); receipted trackers ignore them.
                            stored: vec![pb::ChunkStored {
                                index: 0,
                                peer_ids: placed
                                    .placements
                                    .first()
                                    .map(|p| p.targets.iter().map(|t| t.id.clone()).collect())
                                    .unwrap_or_default(),
                                receipts,
                            }],
                            ..Default::default()
                        })
                        .await?;
                        Ok::<_, tonic::Status>(())
                    }
                    .await;
                    match r {
                        Ok(()) => done.fetch_add(1, Relaxed),
                        Err(e) => {
                            first_error
                                .lock()
                                .unwrap_or_else(|p| p.into_inner())
                                .get_or_insert_with(|| format!("{:?}: {}", e.code(), e.message()));
                            errors.fetch_add(1, Relaxed)
                        }
                    };
                }
            })
        })
        .collect();
    stop.notified().await;
    stopped.store(true, Relaxed);
    for t in tasks {
        let _ = t.await;
    }
    let first = first_error.lock().unwrap_or_else(|p| p.into_inner()).take();
    (done.load(Relaxed), errors.load(Relaxed), first)
}

async fn info(ch: &Channel) -> Result<pb::ClusterInfoResponse> {
    Ok(client(ch)
        .cluster_info(pb::ClusterInfoRequest {})
        .await?
        .into_inner())
}

fn mib(kib: Option<u64>) -> f64 {
    kib.unwrap_or(0) as f64 / 1024.0
}

/// The trackers' state-lock holds of 50 ms or more (logged with the line that took the
/// lock), counted by that line over every log in `logs`: where heartbeats waited.
fn slow_holds(logs: &Path) -> String {
    let mut by_site: std::collections::BTreeMap<String, (u64, u64)> = Default::default();
    for e in std::fs::read_dir(logs).into_iter().flatten().flatten() {
        let Ok(text) = std::fs::read_to_string(e.path()) else {
            continue;
        };
        for line in text.lines().filter(|l| l.contains("state lock held long")) {
            let line = strip_ansi(line);
            let field = |k: &str| {
                line.split_whitespace()
                    .find_map(|w| w.strip_prefix(k))
                    .map(str::to_string)
            };
            let (Some(at), Some(ms)) = (field("at="), field("held_ms=")) else {
                continue;
            };
            let ms: u64 = ms.parse().unwrap_or(0);
            let s = by_site.entry(at).or_default();
            s.0 += 1;
            s.1 = s.1.max(ms);
        }
    }
    if by_site.is_empty() {
        return format!(
            "\nNo state-lock hold of 50 ms or more (logs: {}).\n",
            logs.display()
        );
    }
    let mut sites: Vec<_> = by_site.into_iter().collect();
    sites.sort_by_key(|s| std::cmp::Reverse(s.1 .0));
    let mut out = format!(
        "\nState-lock holds of 50 ms or more, by the line that took the lock (logs: {}):\n\n| line | holds | longest |\n|---|---|---|\n",
        logs.display()
    );
    for (at, (n, max)) in sites {
        out.push_str(&format!("| {at} | {n} | {max} ms |\n"));
    }
    out
}

/// A log line without its colour codes (`ESC [ ... m`).
fn strip_ansi(line: &str) -> String {
    let mut out = String::with_capacity(line.len());
    let mut chars = line.chars();
    while let Some(c) = chars.next() {
        if c == '\x1b' {
            for c in chars.by_ref() {
                if c == 'm' {
                    break;
                }
            }
        } else {
            out.push(c);
        }
    }
    out
}

/// The whole scale benchmark; returns whether every goal was met.
pub fn run(a: ScaleArgs) -> Result<bool> {
    if a.peers < a.replicas || a.replicas == 0 || a.zones < a.replicas {
        bail!("need at least as many peers and zones as replicas");
    }
    let _ = std::fs::remove_dir_all(&a.dir);
    std::fs::create_dir_all(&a.dir)?;
    // Logs outlive the run's data: the trackers' slow lock holds are read from them.
    let logs = PathBuf::from(format!("{}-logs", a.dir.display()));
    let _ = std::fs::remove_dir_all(&logs);
    let ctx = Ctx {
        procs: Procs::new(&logs, None)?,
        rt: tokio::runtime::Builder::new_multi_thread()
            .enable_all()
            .build()?,
        bin: std::fs::canonicalize(&a.bin)
            .with_context(|| format!("binaries in {}", a.bin.display()))?,
    };
    let result = ctx
        .rt
        .block_on(async { scale(&ctx, &a).await })
        .and_then(|mut rows| {
            put_row(&ctx, &a, &mut rows)?;
            Ok(rows)
        });
    ctx.procs.stop_all();
    let rows = result?;
    let mut md = format!(
        "## bench-scale\n\n{} simulated peers × {} chunks, R={}, {} zones; CPU: {}; {}\n\n| row | figure | goal | |\n|---|---|---|---|\n",
        a.peers,
        a.chunks_per_peer,
        a.replicas,
        a.zones,
        crate::procs::cpu_model(),
        crate::procs::load_note()
    );
    for r in &rows {
        let mark = match r.met {
            Some(true) => "✅",
            Some(false) => "❌",
            None => "",
        };
        md.push_str(&format!(
            "| {} | {} | {} | {mark} |\n",
            r.what, r.figure, r.goal
        ));
    }
    md.push_str(&slow_holds(&logs));
    println!("\n{md}");
    if let Some(d) = a.out.parent() {
        std::fs::create_dir_all(d)?;
    }
    std::fs::write(&a.out, &md)?;
    let _ = std::fs::remove_dir_all(&a.dir);
    Ok(a.no_goals || rows.iter().all(|r| r.met != Some(false)))
}

/// Real puts of 4 KiB files, R=3, from `put_clients` concurrent clients on a real
/// three-peer cluster on redb: the rate group commit is for.
fn put_row(ctx: &Ctx, a: &ScaleArgs, rows: &mut Vec<Row>) -> Result<()> {
    let root = a.dir.join("puts");
    let cluster = crate::cluster::Cluster::start(ctx, &root, "scale-puts", 3)?;
    let url = cluster.tracker_url.clone();
    let files = root.join("files");
    std::fs::create_dir_all(&files)?;
    let dur = Duration::from_secs(a.put_secs);
    let (ok, failed, first) = ctx.rt.block_on(async {
        let end = Instant::now() + dur;
        let tasks: Vec<_> = (0..a.put_clients)
            .map(|w| {
                let (url, files) = (url.clone(), files.clone());
                tokio::spawn(async move {
                    let c = shoal_client::Client::new(&url)?;
                    let (mut ok, mut failed, mut first) = (0u64, 0u64, None);
                    let mut i = 0u64;
                    while Instant::now() < end {
                        i += 1;
                        let path = files.join(format!("{w}-{i}"));
                        std::fs::write(&path, rand::random::<[u8; 32]>().repeat(128))?;
                        let opts = shoal_client::PutOptions {
                            name: format!("small/{w}-{i}"),
                            replicas: 3,
                            overwrite: false,
                        };
                        match c.put(&path, opts, Arc::new(shoal_client::Quiet)).await {
                            Ok(_) => ok += 1,
                            Err(e) => {
                                failed += 1;
                                first.get_or_insert_with(|| e.to_string());
                            }
                        }
                        let _ = std::fs::remove_file(&path);
                    }
                    anyhow::Ok((ok, failed, first))
                })
            })
            .collect();
        let (mut ok, mut failed, mut first) = (0, 0, None);
        for t in tasks {
            let (o, f, e) = t.await??;
            ok += o;
            failed += f;
            if first.is_none() {
                first = e;
            }
        }
        anyhow::Ok((ok, failed, first))
    })?;
    cluster.destroy(ctx);
    let rate = ok as f64 / dur.as_secs_f64();
    row(
        rows,
        format!(
            "{} clients putting 4 KiB files, R=3, redb, 3 real peers",
            a.put_clients
        ),
        format!(
            "{rate:.0} files/s ({ok} in {} s, {failed} failed{})",
            a.put_secs,
            first.map(|e| format!(": {e}")).unwrap_or_default()
        ),
        "≥ 1,000 files/s",
        Some(rate >= 1000.0 && failed == 0),
    );
    Ok(())
}

async fn scale(ctx: &Ctx, a: &ScaleArgs) -> Result<Vec<Row>> {
    let mut rows = Vec::new();
    let copies = (a.peers * a.chunks_per_peer) as u64;
    let chunks = copies / a.replicas as u64;
    let copies = chunks * a.replicas as u64;

    // An empty tracker, for the baseline memory.
    let empty = start_tracker(ctx, &a.dir.join("empty"), "scale-empty").await?;
    let base_kib = vm_kib(empty.pid, "VmRSS");
    ctx.procs.stop(empty.pid, Duration::from_secs(5));

    let t0 = Instant::now();
    let dir = a.dir.join("tracker");
    let names = {
        let (dir, per_file, r) = (dir.clone(), a.chunks_per_file as u64, a.replicas as u32);
        tokio::task::spawn_blocking(move || write_catalogue(&dir, chunks, per_file, r, "scale"))
            .await??
    };
    let inv = {
        let a = a.clone();
        tokio::task::spawn_blocking(move || inventories(&a, chunks)).await?
    };
    println!(
        "catalogue: {} files, {chunks} chunks, {copies} copies written in {:.1} s",
        names.len(),
        t0.elapsed().as_secs_f64()
    );
    let fakes = Arc::new(FakePeers::default());
    let fake_addr = format!("127.0.0.1:{}", serve_fakes(fakes.clone()).await?);

    // Register storm: the tracker (re)starts with the catalogue while every copy is out there.
    let started = Instant::now();
    let tr = start_tracker(ctx, &dir, "scale-tracker").await?;
    let chs = channels(&tr.url, a.connections)?;
    let loaded = started.elapsed();
    // Peers heartbeat from the start, as real ones do (unknown until registered).
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let beats = heartbeat(
        &chs,
        &inv,
        Duration::from_secs(2),
        Duration::from_secs(600),
        None,
        a.old_tracker,
        Some(stop.clone()),
    );
    let storm = async {
        let registered = register_all(&chs, &inv, a, &fake_addr).await;
        let deadline = Instant::now() + Duration::from_secs(300);
        let healthy = async {
            loop {
                let i = info(&chs[0]).await?;
                if i.live_peers as usize == a.peers
                    && i.under_replicated_chunks == 0
                    && i.lost_chunks == 0
                {
                    return Ok(started.elapsed());
                }
                if Instant::now() > deadline {
                    bail!("not healthy 300 s after the tracker started: {i:?}");
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        };
        let r = match registered {
            Ok(reg) => healthy.await.map(|h| (reg, h)),
            Err(e) => Err(e),
        };
        stop.store(true, Relaxed);
        r
    };
    let (_, storm) = tokio::join!(beats, storm);
    let (registered, healthy) = storm?;
    let repairs = fakes.replicated.load(Relaxed);
    row(
        &mut rows,
        format!("register storm: {} peers re-register {copies} copies after a tracker restart", a.peers),
        format!(
            "all healthy {:.1} s after start (catalogue loaded in {:.1} s, registrations {:.1} s); {repairs} repairs started",
            healthy.as_secs_f64(),
            loaded.as_secs_f64(),
            registered.as_secs_f64()
        ),
        "< 60 s, no repair",
        Some(healthy < Duration::from_secs(60) && repairs == 0),
    );
    let rss = vm_kib(tr.pid, "VmRSS");
    let per_copy =
        (rss.unwrap_or(0).saturating_sub(base_kib.unwrap_or(0)) * 1024) as f64 / copies as f64;
    row(
        &mut rows,
        format!("tracker memory at {copies} copies"),
        format!(
            "RSS {:.0} MiB (peak {:.0} MiB; empty tracker {:.0} MiB): {per_copy:.0} B per copy",
            mib(rss),
            mib(vm_kib(tr.pid, "VmHWM")),
            mib(base_kib)
        ),
        "≤ 2 GiB",
        Some(rss.unwrap_or(u64::MAX) <= 2 << 20),
    );

    let interval = Duration::from_secs(2);
    let b = heartbeat(
        &chs,
        &inv,
        interval,
        Duration::from_secs(a.phase_secs),
        None,
        a.old_tracker,
        None,
    )
    .await;
    row(
        &mut rows,
        format!("heartbeats, steady: {} peers every 2 s", a.peers),
        format!(
            "p50 {:.2} ms, p99 {:.2} ms, max {:.1} ms; {} sent, {} errors, {} resyncs",
            ms(b.lat.pct(50.0)),
            ms(b.lat.pct(99.0)),
            ms(b.lat.max()),
            b.lat.len() as u64 + b.errors,
            b.errors,
            b.resyncs
        ),
        "p99 < 50 ms",
        Some(ms(b.lat.pct(99.0)) < 50.0 && b.errors == 0 && b.resyncs == 0),
    );

    // StatFile of a 256-chunk file, while every peer is still alive (peers are judged
    // dead 30 s after their last heartbeat; this row lasts at most phase_secs): the
    // tracker's rate (answers counted, not decoded), then with a client that decodes
    // them on the same two cores.
    let stat = |method, max_time| crate::load::RpcArgs {
        tracker: tr.url.clone(),
        method,
        name: names[0].clone(),
        connections: 4,
        concurrency: 64,
        requests: 400_000,
        max_time,
    };
    let half = Duration::from_secs(a.phase_secs).div_f64(2.0);
    let r = crate::load::rpc_load(&stat(crate::load::Method::StatFileBytes, half)).await?;
    let decoded = crate::load::rpc_load(&stat(crate::load::Method::StatFile, half)).await?;
    row(
        &mut rows,
        format!(
            "StatFile of a {}-chunk file (64 in flight)",
            a.chunks_per_file
        ),
        format!(
            "{:.0} req/s, p99 {:.2} ms, {} errors (a client decoding the answers on the same cores: {:.0} req/s, p99 {:.2} ms)",
            r.rate(),
            ms(r.lat.pct(99.0)),
            r.errors + decoded.errors,
            decoded.rate(),
            ms(decoded.lat.pct(99.0)),
        ),
        "≥ 20,000 req/s",
        Some(r.rate() >= 20_000.0 && r.errors + decoded.errors == 0),
    );
    // A peer dies: its copies are repaired while the others heartbeat and clients put.
    let stop = Arc::new(tokio::sync::Notify::new());
    // Puts start once every peer has heartbeated again (none did during the StatFile
    // row, so all are suspect and take no new copies until then).
    let puts = {
        let (chs, clients, stop) = (chs.clone(), a.clients, stop.clone());
        tokio::spawn(async move {
            tokio::time::sleep(interval + Duration::from_millis(200)).await;
            meta_puts(chs, clients, stop).await
        })
    };
    let before = fakes.replicated.load(Relaxed);
    // The defaults: dead 30 s after the last heartbeat.
    let phase = Duration::from_secs(30 + a.phase_secs);
    let t_dead = Instant::now();
    let watcher = {
        let fakes = fakes.clone();
        let want = inv[0].len() as u64;
        tokio::spawn(async move {
            while fakes.replicated.load(Relaxed) - before < want {
                if t_dead.elapsed() > Duration::from_secs(600) {
                    return None;
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            Some(t_dead.elapsed())
        })
    };
    let b = heartbeat(&chs, &inv, interval, phase, Some(0), a.old_tracker, None).await;
    stop.notify_one();
    let (put_ok, put_err, put_first) = puts.await?;
    let put_err = match put_first {
        Some(e) => format!("{put_err} (first: {e})"),
        None => put_err.to_string(),
    };
    let repaired_at = watcher.await?;
    row(
        &mut rows,
        format!(
            "heartbeats while a dead peer's {} chunks are repaired and {} clients put",
            inv[0].len(),
            a.clients
        ),
        format!(
            "p50 {:.2} ms, p99 {:.2} ms, max {:.1} ms, {} errors; repaired {} s into the phase (dead 30 s after its last heartbeat); {put_ok} puts ({:.0}/s), {put_err} failed",
            ms(b.lat.pct(50.0)),
            ms(b.lat.pct(99.0)),
            ms(b.lat.max()),
            b.errors,
            repaired_at.map_or("not".into(), |d| format!("{:.1}", d.as_secs_f64())),
            put_ok as f64 / phase.as_secs_f64()
        ),
        "p99 < 50 ms",
        Some(ms(b.lat.pct(99.0)) < 50.0 && b.errors == 0 && repaired_at.is_some()),
    );

    ctx.procs.stop(tr.pid, Duration::from_secs(10));
    if !a.old_tracker {
        list_row(ctx, a, &mut rows).await?;
    }
    Ok(rows)
}

/// A page of 1,000 names from a catalogue of `list_files` one-chunk files.
async fn list_row(ctx: &Ctx, a: &ScaleArgs, rows: &mut Vec<Row>) -> Result<()> {
    let dir = a.dir.join("list");
    let n = a.list_files as u64;
    let names = {
        let dir = dir.clone();
        tokio::task::spawn_blocking(move || write_catalogue(&dir, n, 1, 3, "list")).await??
    };
    let tr = start_tracker(ctx, &dir, "scale-list").await?;
    let ch = channels(&tr.url, 1)?;
    let mut c = client(&ch[0]);
    let mut lat = Vec::new();
    let mut listed = 0usize;
    for i in 0..200usize {
        let after = &names[(i * 7919) % names.len().saturating_sub(1000).max(1)];
        let t0 = Instant::now();
        let r = c
            .list_files(pb::ListFilesRequest {
                page_size: 1000,
                page_token: shoal_tracker::paging::encode_token(after),
            })
            .await?
            .into_inner();
        lat.push(t0.elapsed());
        listed = r.files.len();
    }
    let lat = Latencies::new(lat);
    row(
        rows,
        format!("ListFiles page of 1,000 names, {} files", names.len()),
        format!(
            "p50 {:.2} ms, p99 {:.2} ms ({listed} names a page)",
            ms(lat.pct(50.0)),
            ms(lat.pct(99.0))
        ),
        "p99 ≤ 10 ms",
        Some(ms(lat.pct(99.0)) <= 10.0 && listed == 1000),
    );
    ctx.procs.stop(tr.pid, Duration::from_secs(10));
    Ok(())
}
