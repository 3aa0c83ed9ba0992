//! The table's machinery: one cluster with auth on and a few files put at the start,
//! the case type, raw clients with any token, and the check that every file is still
//! listed and downloads byte-identical.

use std::future::Future;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering::Relaxed};
use std::sync::Arc;
use std::time::Duration;

use futures::future::BoxFuture;
use shoal_client::{PutOptions, Quiet};
use shoal_common::auth::AuthConfig;
use shoal_common::grpc::GrpcChannel;
use shoal_proto::v1 as pb;
use shoal_testkit::{file_hash, random_file, ClusterOptions, TestCluster};
use tonic::{Code, Status};

pub const CLUSTER: &str = "bad-input-cluster-token-0123";
pub const READ: &str = "bad-input-read-token-0123456";
pub const WRITE: &str = "bad-input-write-token-012345";
/// Chunk size of the test cluster.
pub const CHUNK: u64 = 64 << 10;
/// How long an upload may stay uncommitted in this cluster (the expiry case waits it out).
pub const UPLOAD_EXPIRY: Duration = Duration::from_secs(4);

/// What a bad input got back.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    Grpc(Code),
    Http(u16),
    Exit(i32),
}

impl std::fmt::Display for Outcome {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Outcome::Grpc(c) => write!(f, "gRPC {c:?}"),
            Outcome::Http(s) => write!(f, "HTTP {s}"),
            Outcome::Exit(c) => write!(f, "exit {c}"),
        }
    }
}

/// A case's answer: the outcome, or why a side condition failed (something stored
/// that should not be, a stderr of several lines, ...).
pub type Answer = Result<Outcome, String>;

type Run = Box<dyn Fn(Arc<Ctx>) -> BoxFuture<'static, Answer>>;

pub struct Case {
    pub name: String,
    pub expect: Outcome,
    pub run: Run,
}

/// One row of the table.
pub fn case<F, Fut>(name: impl Into<String>, expect: Outcome, f: F) -> Case
where
    F: Fn(Arc<Ctx>) -> Fut + 'static,
    Fut: Future<Output = Answer> + Send + 'static,
{
    Case {
        name: name.into(),
        expect,
        run: Box::new(move |c| Box::pin(f(c))),
    }
}

/// The code of a unary call's result.
pub fn code<T>(r: Result<T, Status>) -> Answer {
    Ok(Outcome::Grpc(match r {
        Ok(_) => Code::Ok,
        Err(s) => s.code(),
    }))
}

/// A file put at the start that must survive every case.
pub struct Good {
    pub name: String,
    pub id: String,
    pub hash: String,
    pub size: u64,
}

pub struct Ctx {
    pub cluster: TestCluster,
    pub work: tempfile::TempDir,
    pub files: Vec<Good>,
    pub http: reqwest::Client,
    checks: AtomicUsize,
}

impl Ctx {
    /// Two zones, replication 2, tokens for every role, the webserver, three files.
    pub async fn start() -> Ctx {
        let mut o = ClusterOptions::zones(&["a", "b"]).replication(2);
        o.auth = AuthConfig {
            required: true,
            cluster_token: Some(CLUSTER.into()),
            read_token: Some(READ.into()),
            write_token: Some(WRITE.into()),
            ..Default::default()
        };
        o.webserver = true;
        o.tracker.upload.expiry = UPLOAD_EXPIRY;
        let cluster = TestCluster::start(o).await.expect("cluster starts");
        let work = tempfile::tempdir().expect("temp dir");
        let writer = shoal_client::Client::with_token(&cluster.tracker_url(), Some(WRITE.into()))
            .expect("tracker URL");
        let mut files = Vec::new();
        for (name, size, seed) in [
            ("empty", 0u64, 1u64),
            ("small.txt", 1000, 2),
            ("multi.bin", 5 * CHUNK + 123, 3),
        ] {
            let src = work.path().join(format!("src-{name}"));
            random_file(&src, size, seed).expect("source file");
            let r = writer
                .put(
                    &src,
                    PutOptions {
                        name: name.into(),
                        ..Default::default()
                    },
                    Arc::new(Quiet),
                )
                .await
                .unwrap_or_else(|e| panic!("put {name}: {e}"));
            files.push(Good {
                name: name.into(),
                id: r.id,
                hash: file_hash(&src).expect("hash"),
                size,
            });
        }
        let http = reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .expect("HTTP client");
        Ctx {
            cluster,
            work,
            files,
            http,
            checks: AtomicUsize::new(0),
        }
    }

    pub fn file(&self, name: &str) -> &Good {
        self.files
            .iter()
            .find(|f| f.name == name)
            .expect("a file put at the start")
    }

    pub fn tracker(&self, token: Option<&str>) -> pb::tracker_client::TrackerClient<GrpcChannel> {
        pb::tracker_client::TrackerClient::new(
            shoal_common::grpc::channel_with(&self.cluster.tracker_url(), token)
                .expect("tracker channel"),
        )
    }

    pub fn peer_addr(&self, i: usize) -> String {
        self.cluster.peers[i]
            .as_ref()
            .expect("peer running")
            .addr
            .to_string()
    }

    pub fn peer(&self, i: usize, token: Option<&str>) -> pb::peer_client::PeerClient<GrpcChannel> {
        pb::peer_client::PeerClient::new(
            shoal_common::grpc::channel_with(&self.peer_addr(i), token).expect("peer channel"),
        )
    }

    pub fn webserver(
        &self,
        token: Option<&str>,
    ) -> pb::webserver_client::WebserverClient<GrpcChannel> {
        let addr = self
            .cluster
            .webserver
            .as_ref()
            .expect("webserver")
            .node
            .addr;
        pb::webserver_client::WebserverClient::new(
            shoal_common::grpc::channel_with(&addr.to_string(), token).expect("webserver channel"),
        )
    }

    /// `http://host:port` of the webserver's HTTP side.
    pub fn base(&self) -> String {
        format!(
            "http://{}",
            self.cluster.webserver.as_ref().expect("webserver").http
        )
    }

    /// The chunk hashes of a file, in order.
    pub async fn chunks(&self, name: &str) -> Vec<String> {
        self.tracker(Some(READ))
            .stat_file(pb::StatFileRequest {
                name_or_id: name.into(),
            })
            .await
            .expect("stat")
            .into_inner()
            .chunks
            .into_iter()
            .map(|c| c.hash)
            .collect()
    }

    /// Does peer `i` hold chunk `hash`?
    pub async fn peer_has(&self, i: usize, hash: &str) -> Result<bool, String> {
        let r = self
            .peer(i, Some(READ))
            .has_chunks(pb::HasChunksRequest {
                hashes: vec![hash.into()],
            })
            .await
            .map_err(|e| format!("HasChunks: {e}"))?;
        Ok(r.into_inner().present.first().copied().unwrap_or(false))
    }

    /// Chunk `hash` is on no peer, in memory or on disk, and no peer has a temp file
    /// left. Waits for the temp dirs first: a writer the call abandoned finishes on its
    /// own thread, after the call has returned.
    pub async fn nothing_stored(&self, hash: &str) -> Result<(), String> {
        let peers = self.cluster.peers.len();
        let tmp_empty = || {
            (0..peers).all(|i| {
                std::fs::read_dir(self.cluster.peer_dir(i).join("tmp"))
                    .map(|d| d.count() == 0)
                    .unwrap_or(true)
            })
        };
        shoal_testkit::wait_for("peer temp dirs empty", Duration::from_secs(10), || {
            let empty = tmp_empty();
            async move { empty }
        })
        .await
        .map_err(|e| e.to_string())?;
        // A commit renames before it counts the chunk: give a finishing writer a moment.
        tokio::time::sleep(Duration::from_millis(100)).await;
        for i in 0..peers {
            if self.peer_has(i, hash).await? || self.cluster.chunk_file(i, hash).exists() {
                return Err(format!(
                    "peer {i} stored chunk {hash} from a failed PutChunk"
                ));
            }
        }
        Ok(())
    }

    /// Every file put at the start is listed under its name and id and downloads
    /// byte-identical.
    pub async fn check_files(&self) -> Result<(), String> {
        let client = self.cluster.client();
        let listed = client.list().await.map_err(|e| format!("list: {e}"))?;
        let n = self.checks.fetch_add(1, Relaxed);
        let dir = self.work.path().join(format!("check-{n}"));
        std::fs::create_dir_all(&dir).map_err(|e| e.to_string())?;
        for f in &self.files {
            if !listed
                .iter()
                .any(|s| s.name == f.name && s.id == f.id && s.size == f.size)
            {
                return Err(format!("{} is no longer listed with id {}", f.name, f.id));
            }
            let out = dir.join(&f.name);
            client
                .get(&f.name, &out, Arc::new(Quiet))
                .await
                .map_err(|e| format!("get {}: {e}", f.name))?;
            let got = file_hash(&out).map_err(|e| e.to_string())?;
            if got != f.hash {
                return Err(format!(
                    "{} downloads with hash {got}, not {}",
                    f.name, f.hash
                ));
            }
        }
        let _ = std::fs::remove_dir_all(&dir);
        Ok(())
    }

    /// A fresh directory under the work dir.
    pub fn dir(&self, name: &str) -> PathBuf {
        let p = self.work.path().join(name);
        std::fs::create_dir_all(&p).expect("work dir");
        p
    }
}

/// Begin an upload (write token); its id.
pub async fn begin(c: &Ctx, name: &str, size: u64) -> Result<String, String> {
    c.tracker(Some(WRITE))
        .begin_upload(pb::BeginUploadRequest {
            name: name.into(),
            size,
            ..Default::default()
        })
        .await
        .map(|r| r.into_inner().upload_id)
        .map_err(|e| format!("BeginUpload: {e}"))
}

/// What a process did: exit code and stderr.
pub struct Ran {
    pub code: i32,
    pub stderr: String,
}

/// Run a workspace binary with only `env` (and PATH), in `cwd`, killed after `limit`.
pub async fn run_bin(
    bin: &str,
    args: Vec<String>,
    env: Vec<(String, String)>,
    cwd: Option<PathBuf>,
    limit: Duration,
) -> Result<Ran, String> {
    let path = shoal_testkit::procs::bin(bin);
    let bin = bin.to_string();
    tokio::task::spawn_blocking(move || {
        let mut cmd = Command::new(path);
        cmd.env_clear()
            .env("PATH", std::env::var("PATH").unwrap_or_default())
            .args(&args)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        for (k, v) in env {
            cmd.env(k, v);
        }
        if let Some(d) = cwd {
            cmd.current_dir(d);
        }
        let mut child = cmd.spawn().map_err(|e| format!("spawn {bin}: {e}"))?;
        let deadline = std::time::Instant::now() + limit;
        loop {
            match child.try_wait().map_err(|e| e.to_string())? {
                Some(_) => break,
                None if std::time::Instant::now() >= deadline => {
                    let _ = child.kill();
                    let _ = child.wait();
                    return Err(format!("{bin} still running after {limit:?}"));
                }
                None => std::thread::sleep(Duration::from_millis(20)),
            }
        }
        let out = child.wait_with_output().map_err(|e| e.to_string())?;
        Ok(Ran {
            code: out.status.code().unwrap_or(-1),
            stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        })
    })
    .await
    .map_err(|e| e.to_string())?
}

/// stderr says what went wrong on exactly one line, and nothing panicked.
pub fn one_line(stderr: &str) -> Result<(), String> {
    no_panic(stderr)?;
    let lines = stderr.lines().filter(|l| !l.trim().is_empty()).count();
    if lines != 1 {
        return Err(format!("stderr has {lines} lines, want 1: {stderr:?}"));
    }
    Ok(())
}

pub fn no_panic(stderr: &str) -> Result<(), String> {
    if stderr.contains("panicked") || stderr.contains("RUST_BACKTRACE") {
        return Err(format!("the process panicked: {stderr:?}"));
    }
    Ok(())
}

/// Files (not directories) under `dir`, relative, sorted.
pub fn files_under(dir: &Path) -> Vec<String> {
    fn walk(root: &Path, d: &Path, out: &mut Vec<String>) {
        for e in std::fs::read_dir(d).into_iter().flatten().flatten() {
            let p = e.path();
            if p.is_dir() {
                walk(root, &p, out);
            } else if let Ok(r) = p.strip_prefix(root) {
                out.push(r.display().to_string());
            }
        }
    }
    let mut out = Vec::new();
    walk(dir, dir, &mut out);
    out.sort();
    out
}
