//! An in-process shoal cluster for tests: a tracker, N peers and optionally the
//! webserver, each on port 0 with its own temp dir and **its own tokio runtime on its
//! own thread**, so a test can kill a node abruptly (its runtime is dropped with every
//! connection and task) as well as stop it gracefully. Readiness is polled with
//! deadlines, never slept for.

pub mod procs;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{bail, Context as _};
use shoal_client::Client;
use shoal_peer::PeerConfig;
use shoal_tracker::TrackerConfig;
use shoal_webserver::WebserverConfig;
use tokio_util::sync::CancellationToken;

/// A node running on its own runtime and thread.
pub struct Node {
    pub addr: SocketAddr,
    pub data_dir: PathBuf,
    shutdown: CancellationToken,
    kill: CancellationToken,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Node {
    fn spawn<F, Fut>(name: &str, addr: SocketAddr, data_dir: PathBuf, make: F) -> Node
    where
        F: FnOnce(CancellationToken) -> Fut + Send + 'static,
        Fut: std::future::Future<Output = anyhow::Result<()>> + 'static,
    {
        let shutdown = CancellationToken::new();
        let kill = CancellationToken::new();
        let (s, k, k2) = (shutdown.clone(), kill.clone(), kill.clone());
        let name = name.to_string();
        let thread = std::thread::Builder::new()
            .name(name.clone())
            .spawn(move || {
                let rt = tokio::runtime::Builder::new_multi_thread()
                    .worker_threads(2)
                    .enable_all()
                    .thread_name(name.clone())
                    .build()
                    .expect("test runtime");
                rt.block_on(async move {
                    tokio::select! {
                        r = make(s) => if let Err(e) = r { eprintln!("{name} exited: {e:#}") },
                        _ = k.cancelled() => {}
                    }
                });
                if k2.is_cancelled() {
                    // Dropping the runtime aborts every task and closes every socket: a crash.
                    rt.shutdown_background();
                } else {
                    // A clean stop: wait until every task (and what it holds, like the
                    // tracker's database) is dropped before the node counts as stopped.
                    rt.shutdown_timeout(Duration::from_secs(10));
                }
            })
            .expect("spawn node thread");
        Node {
            addr,
            data_dir,
            shutdown,
            kill,
            thread: Some(thread),
        }
    }

    /// Graceful stop (SIGTERM-like): waits for the node to finish.
    pub fn stop(mut self) {
        self.shutdown.cancel();
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }

    /// Abrupt stop (SIGKILL-like).
    pub fn kill(mut self) {
        self.kill.cancel();
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        self.kill.cancel();
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

fn bind(addr: &str) -> anyhow::Result<std::net::TcpListener> {
    // A restarted tracker wants its old port back; it may take a moment to free.
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    loop {
        match std::net::TcpListener::bind(addr) {
            Ok(l) => {
                l.set_nonblocking(true)?;
                return Ok(l);
            }
            Err(e) if std::time::Instant::now() < deadline => {
                let _ = e;
                std::thread::sleep(Duration::from_millis(50));
            }
            Err(e) => return Err(e).with_context(|| format!("bind {addr}")),
        }
    }
}

/// Where the test cluster's trackers keep the catalogue.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TestStore {
    /// redb in the tracker's temp dir (one tracker).
    Redb,
    /// A fresh database on the server at `SHOAL_TEST_POSTGRES_URL`, shared by every
    /// tracker replica of the cluster.
    Postgres,
}

impl TestStore {
    /// `SHOAL_TEST_STORE=postgres` runs every suite over PostgreSQL (`make test` does,
    /// for the core suites); anything else is redb.
    pub fn from_env() -> Self {
        match std::env::var("SHOAL_TEST_STORE").as_deref() {
            Ok("postgres") => TestStore::Postgres,
            _ => TestStore::Redb,
        }
    }
}

/// A fresh, empty database on the test PostgreSQL server; returns its URL.
pub async fn fresh_postgres_db() -> anyhow::Result<String> {
    let base = std::env::var("SHOAL_TEST_POSTGRES_URL").context(
        "SHOAL_TEST_POSTGRES_URL is unset: start a server with scripts/postgres.sh (make test does)",
    )?;
    let (client, conn) = tokio_postgres::connect(&base, tokio_postgres::NoTls)
        .await
        .with_context(|| format!("connect to {base}"))?;
    let conn = tokio::spawn(conn);
    let name = format!("shoal_test_{}", hex_id());
    client
        .batch_execute(&format!("CREATE DATABASE {name}"))
        .await?;
    drop(client);
    let _ = conn.await;
    let (head, _) = base
        .rsplit_once('/')
        .context("SHOAL_TEST_POSTGRES_URL names no database")?;
    Ok(format!("{head}/{name}"))
}

fn hex_id() -> String {
    use rand::Rng;
    let n: u64 = rand::rng().random();
    format!("{n:016x}")
}

/// Shape and settings of a test cluster.
#[derive(Clone)]
pub struct ClusterOptions {
    /// One entry per peer: its zone.
    pub zones: Vec<String>,
    pub tracker: TrackerConfig,
    /// Applied to every peer's config before start.
    pub peer_tweak: fn(&mut PeerConfig),
    pub webserver: bool,
    /// Applied to the webserver's config before start.
    pub webserver_tweak: fn(&mut WebserverConfig),
    /// Tokens for the tracker and every peer (and the cluster token for the webserver).
    pub auth: shoal_common::auth::AuthConfig,
    /// TLS for the tracker and every peer.
    pub tls: shoal_common::tls::TlsConfig,
    pub store: TestStore,
    /// Tracker replicas (more than one needs `TestStore::Postgres`).
    pub trackers: usize,
    /// Progress deadline of chunk transfers on every peer and the webserver
    /// (`SHOAL_TRANSFER__PROGRESS_TIMEOUT`); the default when `None`.
    pub progress_timeout: Option<Duration>,
}

impl ClusterOptions {
    /// Peers in the given zones, 64 KiB chunks, fast liveness.
    pub fn zones(zones: &[&str]) -> Self {
        let mut tracker = TrackerConfig::for_data_dir(PathBuf::new());
        tracker.chunk.min_bytes = 64 << 10;
        tracker.chunk.max_bytes = 64 << 10;
        tracker.liveness.heartbeat = Duration::from_millis(100);
        // Fast enough for tests, slow enough that a loaded 2-core CI box never flaps a peer.
        tracker.liveness.suspect_after = Duration::from_millis(1500);
        tracker.liveness.dead_after = Duration::from_millis(3000);
        tracker.repair.interval = Duration::from_millis(100);
        tracker.repair.gc_grace = Duration::from_secs(1);
        Self {
            zones: zones.iter().map(|z| z.to_string()).collect(),
            tracker,
            peer_tweak: |_| {},
            webserver: false,
            webserver_tweak: |_| {},
            auth: Default::default(),
            tls: Default::default(),
            store: TestStore::from_env(),
            trackers: 1,
            progress_timeout: None,
        }
    }

    /// `n` tracker replicas over one PostgreSQL database.
    pub fn replicas(mut self, n: usize) -> Self {
        self.store = TestStore::Postgres;
        self.trackers = n;
        self
    }

    pub fn replication(mut self, r: u32) -> Self {
        self.tracker.replication.factor = r;
        self
    }
}

pub struct Webserver {
    pub node: Node,
    pub http: SocketAddr,
}

pub struct TestCluster {
    pub dir: tempfile::TempDir,
    pub opts: ClusterOptions,
    /// The first tracker replica.
    pub tracker: Option<Node>,
    pub tracker_addr: SocketAddr,
    /// Replicas 1.. (with `ClusterOptions::replicas`).
    pub replicas: Vec<Option<Node>>,
    pub replica_addrs: Vec<SocketAddr>,
    /// The cluster's own database (with `TestStore::Postgres`).
    pub store_url: Option<String>,
    pub peers: Vec<Option<Node>>,
    /// Fault injection for peer `i` (kept across restarts): freeze it, make it refuse
    /// uploads, count the calls it got while frozen.
    pub faults: Vec<Arc<shoal_peer::service::Faults>>,
    pub webserver: Option<Webserver>,
}

pub async fn wait_for<F, Fut>(what: &str, timeout: Duration, mut f: F) -> anyhow::Result<()>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        if f().await {
            return Ok(());
        }
        if tokio::time::Instant::now() >= deadline {
            bail!("timed out after {timeout:?} waiting for {what}");
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
}

pub async fn wait_serving(addr: SocketAddr) -> anyhow::Result<()> {
    let a = addr.to_string();
    wait_for(&format!("{addr} SERVING"), Duration::from_secs(20), || {
        let a = a.clone();
        async move {
            shoal_common::grpc::check_health(&a, "")
                .await
                .unwrap_or(false)
        }
    })
    .await
}

impl TestCluster {
    pub async fn start(opts: ClusterOptions) -> anyhow::Result<Self> {
        let dir = tempfile::tempdir()?;
        if opts.trackers > 1 && opts.store != TestStore::Postgres {
            bail!("several tracker replicas need the PostgreSQL store");
        }
        let store_url = match opts.store {
            TestStore::Postgres => Some(fresh_postgres_db().await?),
            TestStore::Redb => None,
        };
        // Every port bound at once, so they are distinct.
        let listeners = (0..opts.trackers.max(1))
            .map(|_| bind("127.0.0.1:0"))
            .collect::<anyhow::Result<Vec<_>>>()?;
        let addrs = listeners
            .iter()
            .map(|l| l.local_addr())
            .collect::<std::io::Result<Vec<_>>>()?;
        drop(listeners);
        let mut c = TestCluster {
            dir,
            opts,
            tracker: None,
            tracker_addr: addrs[0],
            replicas: addrs[1..].iter().map(|_| None).collect(),
            replica_addrs: addrs[1..].to_vec(),
            store_url,
            peers: Vec::new(),
            faults: Vec::new(),
            webserver: None,
        };
        c.faults = (0..c.opts.zones.len()).map(|_| Arc::default()).collect();
        c.start_tracker().await?;
        for i in 1..addrs.len() {
            c.start_replica(i).await?;
        }
        for i in 0..c.opts.zones.len() {
            let n = c.spawn_peer(i)?;
            c.peers.push(Some(n));
        }
        for p in c.peers.iter().flatten() {
            wait_serving(p.addr).await?;
        }
        c.wait_live_peers(c.opts.zones.len()).await?;
        if c.opts.webserver {
            c.start_webserver().await?;
        }
        Ok(c)
    }

    /// Every tracker replica's URL, comma-separated (what peers and clients are given).
    pub fn tracker_url(&self) -> String {
        std::iter::once(&self.tracker_addr)
            .chain(&self.replica_addrs)
            .map(|a| shoal_common::grpc::url_for(&a.to_string()))
            .collect::<Vec<_>>()
            .join(",")
    }

    /// Tracker replica `i`'s address (0 is `tracker_addr`).
    pub fn replica_addr(&self, i: usize) -> SocketAddr {
        if i == 0 {
            self.tracker_addr
        } else {
            self.replica_addrs[i - 1]
        }
    }

    /// A client of replica `i` alone (no failover).
    pub fn replica_client(&self, i: usize) -> Client {
        let token = self.opts.auth.cluster_token.clone();
        let url = shoal_common::grpc::url_for(&self.replica_addr(i).to_string());
        Client::with_token(&url, token).expect("valid URL")
    }

    /// The replica holding the leader lock, as PostgreSQL sees it.
    pub async fn leader(&self) -> anyhow::Result<Option<usize>> {
        let url = self.store_url.as_deref().context("no PostgreSQL store")?;
        let (client, conn) = tokio_postgres::connect(url, tokio_postgres::NoTls).await?;
        let conn = tokio::spawn(conn);
        let rows = client
            .query(
                shoal_tracker::leader::WHO_LEADS_SQL,
                &[&shoal_tracker::pg::LEADER_LOCK],
            )
            .await?;
        drop(client);
        let _ = conn.await;
        let Some(row) = rows.first() else {
            return Ok(None);
        };
        let app: String = row.get(0);
        let me = app.trim_start_matches(shoal_tracker::leader::LEADER_APP_PREFIX);
        Ok((0..=self.replica_addrs.len()).find(|i| self.replica_addr(*i).to_string() == me))
    }

    /// Wait until some replica other than `not` leads; returns it.
    pub async fn wait_leader(&self, not: Option<usize>) -> anyhow::Result<usize> {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
        loop {
            if let Ok(Some(l)) = self.leader().await {
                if Some(l) != not {
                    return Ok(l);
                }
            }
            if tokio::time::Instant::now() >= deadline {
                bail!("timed out waiting for a tracker leader other than {not:?}");
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    fn tracker_config(&self, i: usize) -> TrackerConfig {
        let mut cfg = self.opts.tracker.clone();
        cfg.data_dir = if i == 0 {
            self.dir.path().join("tracker")
        } else {
            self.dir.path().join(format!("tracker{i}"))
        };
        cfg.auth = self.opts.auth.clone();
        cfg.tls = self.opts.tls.clone();
        cfg.store.url = self.store_url.clone();
        cfg
    }

    fn spawn_tracker(&self, i: usize) -> anyhow::Result<Node> {
        let cfg = self.tracker_config(i);
        let addr = self.replica_addr(i);
        let l = bind(&addr.to_string())?;
        Ok(Node::spawn(
            &format!("tracker{i}"),
            addr,
            cfg.data_dir.clone(),
            move |stop| async move {
                shoal_tracker::run(cfg, tokio::net::TcpListener::from_std(l)?, stop).await
            },
        ))
    }

    /// Start (again) tracker replica `i >= 1`; waits until it is SERVING.
    pub async fn start_replica(&mut self, i: usize) -> anyhow::Result<()> {
        let node = self.spawn_tracker(i)?;
        self.replicas[i - 1] = Some(node);
        wait_serving(self.replica_addr(i)).await
    }

    /// Kill tracker replica `i` abruptly (0 is the first tracker).
    pub fn kill_replica(&mut self, i: usize) {
        let node = if i == 0 {
            self.tracker.take()
        } else {
            self.replicas[i - 1].take()
        };
        if let Some(n) = node {
            n.kill();
        }
    }

    /// A client with the cluster's most powerful token (if any).
    pub fn client(&self) -> Client {
        let token = self.opts.auth.cluster_token.clone();
        Client::with_token(&self.tracker_url(), token).expect("valid URL")
    }

    pub async fn start_tracker(&mut self) -> anyhow::Result<()> {
        let node = self.spawn_tracker(0)?;
        self.tracker = Some(node);
        wait_serving(self.tracker_addr).await
    }

    pub fn peer_dir(&self, i: usize) -> PathBuf {
        self.dir.path().join(format!("peer{i}"))
    }

    fn spawn_peer(&self, i: usize) -> anyhow::Result<Node> {
        let mut cfg =
            PeerConfig::for_test(self.peer_dir(i), self.tracker_url(), &self.opts.zones[i]);
        cfg.capacity_bytes = Some(64 << 30);
        cfg.shutdown_timeout = Duration::from_secs(5);
        cfg.auth = self.opts.auth.clone();
        cfg.tls = self.opts.tls.clone();
        cfg.faults = Some(self.faults[i].clone());
        if let Some(t) = self.opts.progress_timeout {
            cfg.transfer.progress_timeout = t;
        }
        (self.opts.peer_tweak)(&mut cfg);
        let l = bind("127.0.0.1:0")?;
        let addr = l.local_addr()?;
        Ok(Node::spawn(
            &format!("peer{i}"),
            addr,
            cfg.data_dir.clone(),
            move |stop| async move {
                shoal_peer::run(cfg, tokio::net::TcpListener::from_std(l)?, stop).await
            },
        ))
    }

    /// Start (again) peer `i` on its data dir; waits until it is SERVING.
    pub async fn start_peer(&mut self, i: usize) -> anyhow::Result<()> {
        let n = self.spawn_peer(i)?;
        let addr = n.addr;
        self.peers[i] = Some(n);
        wait_serving(addr).await
    }

    /// The stable id of peer `i` (from its data dir).
    pub fn peer_id(&self, i: usize) -> String {
        std::fs::read_to_string(self.peer_dir(i).join("peer_id")).unwrap_or_default()
    }

    /// Wait until the tracker reports peer `i` dead.
    pub async fn wait_peer_dead(&self, i: usize) -> anyhow::Result<()> {
        let (client, id) = (self.client(), self.peer_id(i));
        wait_for(
            &format!("peer {i} declared dead"),
            Duration::from_secs(20),
            || {
                let (client, id) = (&client, &id);
                async move {
                    client
                        .peers()
                        .await
                        .map(|ps| {
                            ps.iter().any(|p| {
                                p.peer.as_ref().is_some_and(|r| &r.id == id)
                                    && p.state == shoal_proto::v1::PeerState::Dead as i32
                            })
                        })
                        .unwrap_or(false)
                }
            },
        )
        .await
    }

    pub fn kill_peer(&mut self, i: usize) {
        if let Some(n) = self.peers[i].take() {
            n.kill();
        }
    }

    pub fn stop_peer(&mut self, i: usize) {
        if let Some(n) = self.peers[i].take() {
            n.stop();
        }
    }

    pub async fn restart_tracker(&mut self) -> anyhow::Result<()> {
        if let Some(t) = self.tracker.take() {
            t.stop();
        }
        self.start_tracker().await
    }

    pub async fn start_webserver(&mut self) -> anyhow::Result<()> {
        let mut cfg = WebserverConfig::for_test(self.tracker_url());
        if let Some(t) = self.opts.progress_timeout {
            cfg.transfer.progress_timeout = t;
        }
        cfg.auth = self.opts.auth.clone();
        cfg.tls = self.opts.tls.clone();
        (self.opts.webserver_tweak)(&mut cfg);
        let g = bind("127.0.0.1:0")?;
        let h = bind("127.0.0.1:0")?;
        let (addr, http) = (g.local_addr()?, h.local_addr()?);
        let node = Node::spawn("webserver", addr, PathBuf::new(), move |stop| async move {
            shoal_webserver::run(
                cfg,
                tokio::net::TcpListener::from_std(g)?,
                tokio::net::TcpListener::from_std(h)?,
                stop,
            )
            .await
        });
        self.webserver = Some(Webserver { node, http });
        wait_serving(addr).await
    }

    /// Wait until the tracker reports `n` alive peers.
    pub async fn wait_live_peers(&self, n: usize) -> anyhow::Result<()> {
        let client = self.client();
        wait_for(&format!("{n} live peers"), Duration::from_secs(20), || {
            let client = &client;
            async move {
                client
                    .peers()
                    .await
                    .map(|p| {
                        p.iter()
                            .filter(|p| p.state == shoal_proto::v1::PeerState::Alive as i32)
                            .count()
                            == n
                    })
                    .unwrap_or(false)
            }
        })
        .await
    }

    /// Hashes of the chunks stored on peer `i`'s disk.
    pub fn chunks_on_disk(&self, i: usize) -> std::collections::HashSet<String> {
        let dirs = std::fs::read_dir(self.peer_dir(i).join("chunks"))
            .into_iter()
            .flatten();
        dirs.flatten()
            .filter(|d| d.file_name().len() == 2)
            .flat_map(|d| std::fs::read_dir(d.path()).into_iter().flatten().flatten())
            .filter_map(|f| f.file_name().into_string().ok())
            .filter(|n| n.len() == 64)
            .collect()
    }

    /// The on-disk file of a chunk on peer `i`.
    pub fn chunk_file(&self, i: usize, hash: &str) -> PathBuf {
        self.peer_dir(i).join("chunks").join(&hash[..2]).join(hash)
    }
}

/// Write `len` pseudo-random bytes (seeded) to `path`.
pub fn random_file(path: &Path, len: u64, seed: u64) -> std::io::Result<()> {
    use rand::{RngCore, SeedableRng};
    use std::io::Write;
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    let mut f = std::io::BufWriter::new(std::fs::File::create(path)?);
    let mut buf = vec![0u8; 1 << 16];
    let mut left = len;
    while left > 0 {
        let n = left.min(buf.len() as u64) as usize;
        rng.fill_bytes(&mut buf[..n]);
        f.write_all(&buf[..n])?;
        left -= n as u64;
    }
    f.flush()
}

/// BLAKE3 of a file, hex.
pub fn file_hash(path: &Path) -> std::io::Result<String> {
    let mut h = blake3::Hasher::new();
    h.update_reader(std::fs::File::open(path)?)?;
    Ok(h.finalize().to_hex().to_string())
}

/// Send one chunk down a placement's whole pipeline as an honest client would: a header
/// with the tracker's tickets and the rest of the pipeline, then the bytes, to the first
/// peer (with `token`, if any).
pub async fn push_chunk(
    p: &shoal_proto::v1::ChunkPlacement,
    bytes: &[u8],
    token: Option<&str>,
) -> Result<shoal_proto::v1::PutChunkResponse, tonic::Status> {
    use shoal_proto::v1 as pb;
    use shoal_proto::v1::put_chunk_request::Msg;
    let header = pb::PutChunkHeader {
        hash: blake3::hash(bytes).to_hex().to_string(),
        size: bytes.len() as u64,
        forward: p.targets[1..].to_vec(),
        tickets: p.ticket.iter().cloned().collect(),
    };
    let msgs = vec![
        pb::PutChunkRequest {
            msg: Some(Msg::Header(header)),
        },
        pb::PutChunkRequest {
            msg: Some(Msg::Data(bytes.to_vec().into())),
        },
    ];
    let first = p
        .targets
        .first()
        .ok_or_else(|| tonic::Status::invalid_argument("an empty pipeline"))?;
    pb::peer_client::PeerClient::new(shoal_common::grpc::channel_with(&first.addr, token)?)
        .put_chunk(tokio_stream::iter(msgs))
        .await
        .map(tonic::Response::into_inner)
}
