//! A throwaway shoal cluster on loopback: a tracker and N peers on free ports, data in
//! a directory of the benchmark's work dir, started from the built binaries.

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use shoal_proto::v1 as pb;

use crate::procs::{clean_env, vm_kib, Procs};

/// What starting processes needs.
pub struct Ctx {
    pub procs: Procs,
    pub rt: tokio::runtime::Runtime,
    /// Directory of the shoal binaries.
    pub bin: PathBuf,
}

impl Ctx {
    pub fn exe(&self, name: &str) -> PathBuf {
        self.bin.join(name)
    }
}

/// A free TCP port on 127.0.0.1 (bound and released; nothing else here races for it).
pub fn free_port() -> Result<u16> {
    let l = TcpListener::bind("127.0.0.1:0").context("binding 127.0.0.1:0")?;
    Ok(l.local_addr()?.port())
}

pub struct PeerProc {
    pub port: u16,
    pub pid: u32,
    pub dir: PathBuf,
    pub zone: String,
}

/// A webserver in front of the cluster's tracker.
pub struct WebProc {
    /// gRPC (`Discover`) URL, for `shoal --endpoint`.
    pub grpc_url: String,
    /// HTTP gateway base URL.
    pub http_url: String,
    pub pid: u32,
}

pub struct Cluster {
    pub tracker_url: String,
    pub tracker_pid: u32,
    pub peers: Vec<PeerProc>,
    pub web: Option<WebProc>,
    pub root: PathBuf,
    tag: String,
    restarts: u32,
}

/// Start a tracker with its data in `dir`; returns its URL and pid once SERVING.
pub fn start_tracker(ctx: &Ctx, dir: &Path, name: &str) -> Result<(String, u32)> {
    let port = free_port()?;
    let mut cmd = Command::new(ctx.exe("shoal-tracker"));
    clean_env(&mut cmd);
    cmd.env("SHOAL_LISTEN_ADDR", format!("127.0.0.1:{port}"))
        .env("SHOAL_DATA_DIR", dir)
        .env("SHOAL_REPLICATION__FACTOR", "3");
    let pid = ctx.procs.spawn(name, cmd)?;
    let addr = format!("127.0.0.1:{port}");
    wait_serving(ctx, &addr, pid, name)?;
    Ok((format!("http://{addr}"), pid))
}

fn wait_serving(ctx: &Ctx, addr: &str, pid: u32, name: &str) -> Result<()> {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        ctx.procs.check_running(pid)?;
        let ok = ctx.rt.block_on(async {
            tokio::time::timeout(
                Duration::from_secs(2),
                shoal_common::grpc::check_health(addr, ""),
            )
            .await
        });
        if let Ok(Ok(true)) = ok {
            return Ok(());
        }
        if Instant::now() > deadline {
            bail!("{name} at {addr} not SERVING after 60 s");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

impl Cluster {
    /// A tracker and `n` peers (zones a, b, c, …) under `root`, scrub off.
    pub fn start(ctx: &Ctx, root: &Path, tag: &str, n: usize) -> Result<Self> {
        std::fs::create_dir_all(root)?;
        let (tracker_url, tracker_pid) =
            start_tracker(ctx, &root.join("tracker"), &format!("{tag}-tracker"))?;
        let mut c = Cluster {
            tracker_url,
            tracker_pid,
            peers: Vec::new(),
            web: None,
            root: root.to_path_buf(),
            tag: tag.to_string(),
            restarts: 0,
        };
        for i in 0..n {
            let port = free_port()?;
            c.peers.push(PeerProc {
                port,
                pid: 0,
                dir: root.join(format!("peer{}", i + 1)),
                zone: ((b'a' + (i % 26) as u8) as char).to_string(),
            });
        }
        c.start_peers(ctx)?;
        Ok(c)
    }

    fn start_peers(&mut self, ctx: &Ctx) -> Result<()> {
        let suffix = if self.restarts == 0 {
            String::new()
        } else {
            format!("-r{}", self.restarts)
        };
        for (i, p) in self.peers.iter_mut().enumerate() {
            let mut cmd = Command::new(ctx.exe("shoal-peer"));
            clean_env(&mut cmd);
            cmd.env("SHOAL_LISTEN_ADDR", format!("127.0.0.1:{}", p.port))
                .env("SHOAL_DATA_DIR", &p.dir)
                .env("SHOAL_TRACKER_URL", &self.tracker_url)
                .env("SHOAL_ZONE", &p.zone)
                .env("SHOAL_SCRUB__RATE_BYTES", "0");
            // BENCH_DIRECT_WRITES=false: the peers write chunk files through the page cache.
            if let Ok(v) = std::env::var("BENCH_DIRECT_WRITES") {
                cmd.env("SHOAL_DIRECT_WRITES", v);
            }
            // BENCH_DIRECT_READS=false: the peers serve chunks through the page cache.
            if let Ok(v) = std::env::var("BENCH_DIRECT_READS") {
                cmd.env("SHOAL_DIRECT_READS", v);
            }
            p.pid = ctx
                .procs
                .spawn(&format!("{}-peer{}{suffix}", self.tag, i + 1), cmd)?;
        }
        for (i, p) in self.peers.iter().enumerate() {
            wait_serving(
                ctx,
                &format!("127.0.0.1:{}", p.port),
                p.pid,
                &format!("peer{}", i + 1),
            )?;
        }
        self.wait_live(ctx, self.peers.len() as u32)
    }

    /// Wait until the tracker counts `n` live peers.
    fn wait_live(&self, ctx: &Ctx, n: u32) -> Result<()> {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let info = ctx.rt.block_on(async {
                let ch = shoal_common::grpc::channel(&self.tracker_url)?;
                pb::tracker_client::TrackerClient::new(ch)
                    .cluster_info(pb::ClusterInfoRequest {})
                    .await
                    .map(|r| r.into_inner())
            });
            if let Ok(i) = &info {
                if i.live_peers == n {
                    return Ok(());
                }
            }
            if Instant::now() > deadline {
                bail!("tracker does not count {n} live peers after 30 s: {info:?}");
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Start a webserver for this cluster (once SERVING, i.e. it reaches the tracker).
    pub fn start_webserver(&mut self, ctx: &Ctx) -> Result<&WebProc> {
        let (grpc, http) = (free_port()?, free_port()?);
        let mut cmd = Command::new(ctx.exe("shoal-webserver"));
        clean_env(&mut cmd);
        cmd.env("SHOAL_LISTEN_ADDR", format!("127.0.0.1:{grpc}"))
            .env("SHOAL_HTTP_ADDR", format!("127.0.0.1:{http}"))
            .env("SHOAL_TRACKER_URL", &self.tracker_url);
        let pid = ctx.procs.spawn(&format!("{}-webserver", self.tag), cmd)?;
        let addr = format!("127.0.0.1:{grpc}");
        wait_serving(ctx, &addr, pid, "webserver")?;
        Ok(self.web.insert(WebProc {
            grpc_url: format!("http://{addr}"),
            http_url: format!("http://127.0.0.1:{http}"),
            pid,
        }))
    }

    /// Restart every peer on the same port and data, so VmHWM counts one run only.
    pub fn restart_peers(&mut self, ctx: &Ctx) -> Result<()> {
        for p in &self.peers {
            ctx.procs.stop(p.pid, Duration::from_secs(30));
        }
        self.restarts += 1;
        self.start_peers(ctx)
    }

    /// Peak RSS (KiB) of the tracker and of each peer since they started.
    pub fn hwm(&self) -> (Option<u64>, Vec<Option<u64>>) {
        (
            vm_kib(self.tracker_pid, "VmHWM"),
            self.peers.iter().map(|p| vm_kib(p.pid, "VmHWM")).collect(),
        )
    }

    /// Stop every process and remove the data.
    pub fn destroy(self, ctx: &Ctx) {
        if let Some(w) = &self.web {
            ctx.procs.stop(w.pid, Duration::from_secs(10));
        }
        for p in &self.peers {
            ctx.procs.stop(p.pid, Duration::from_secs(10));
        }
        ctx.procs.stop(self.tracker_pid, Duration::from_secs(10));
        let _ = std::fs::remove_dir_all(&self.root);
    }
}
