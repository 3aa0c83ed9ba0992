//! The whole benchmark (`make bench`): a random file of BENCH_SIZE_MIB, a loopback
//! cluster (tracker + 3 peers, R=3), and for each row several runs of:
//! `shoal put`, `shoal get`, 8 concurrent gets, nginx → curl, nginx → aria2c -x4,
//! a BitTorrent swarm of 3 aria2c seeders → 1 leecher, tracker unary RPC load and
//! 1,000 heartbeating fake peers. Every output is verified against the source's BLAKE3.
//! A row that fails is reported as failed and the rest still run; the exit code says
//! whether every row ran.
//!
//! Data lives in a fresh directory under the work dir (real disk, never tmpfs: the
//! comparisons write to disk too) and is removed at the end.

use std::fs::{self, File};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use anyhow::{bail, Context, Result};

use crate::cluster::{start_tracker, Cluster, Ctx};
use crate::compare::{find_tool, Nginx, Swarm};
use crate::load::{self, HeartbeatArgs, Method, RpcArgs};
use crate::procs::{self, box_cpu_seconds, load_note, Procs, Timed};
use crate::report::{Goal, MetaRow, Report, Row};
use crate::stats::{ms, Samples};

#[derive(clap::Args, Debug, Clone)]
pub struct Args {
    /// Size of the benchmark file, MiB.
    #[arg(long, env = "BENCH_SIZE_MIB", default_value_t = 1024)]
    pub size_mib: u64,
    /// Runs per row (the median is reported).
    #[arg(long, env = "BENCH_RUNS", default_value_t = 3)]
    pub runs: usize,
    /// Directory holding shoal, shoal-tracker and shoal-peer.
    #[arg(long, env = "BENCH_BIN", default_value = "target/release")]
    pub bin: PathBuf,
    /// Work directory (on a real disk); a fresh subdirectory is used and removed.
    #[arg(long, env = "BENCH_WORK", default_value = "target/bench")]
    pub work: PathBuf,
    /// Results file (markdown).
    #[arg(long, env = "BENCH_OUT", default_value = "target/bench/results.md")]
    pub out: PathBuf,
    /// File listing the pids of the processes started, for a wrapper's EXIT trap.
    #[arg(long, env = "BENCH_PIDFILE")]
    pub pidfile: Option<PathBuf>,
    /// Clients of the concurrency row, each getting its own file of SIZE/CLIENTS.
    #[arg(long, env = "BENCH_CLIENTS", default_value_t = 8)]
    pub clients: usize,
    /// Requests per run of each tracker RPC load row.
    #[arg(long, env = "BENCH_RPC_REQUESTS", default_value_t = 100_000)]
    pub rpc_requests: u64,
    #[arg(long, env = "BENCH_RPC_CONNECTIONS", default_value_t = 4)]
    pub rpc_connections: usize,
    #[arg(long, env = "BENCH_RPC_CONCURRENCY", default_value_t = 64)]
    pub rpc_concurrency: usize,
    /// A run of an RPC load row stops after this many seconds even if requests are left.
    #[arg(long, env = "BENCH_RPC_MAX_SECS", default_value_t = 20)]
    pub rpc_max_secs: u64,
    /// Fake peers heartbeating against one tracker.
    #[arg(long, env = "BENCH_HB_PEERS", default_value_t = 1000)]
    pub hb_peers: usize,
    /// Seconds they heartbeat for, per run.
    #[arg(long, env = "BENCH_HB_SECS", default_value_t = 10)]
    pub hb_secs: u64,
    /// Also run the heartbeat row with this many chunks in each fake peer's inventory.
    #[arg(long, env = "BENCH_HB_CHUNKS", default_value_t = 0)]
    pub hb_chunks: usize,
    /// Small calls: 4 KiB files put then got in a row, per run (and ListFiles' size).
    #[arg(long, env = "BENCH_SMALL_FILES", default_value_t = 1000)]
    pub small_files: usize,
    /// Small calls: runs of each one-command CLI row (`shoal ls`, 4 KiB put and get).
    #[arg(long, env = "BENCH_SMALL_CLI", default_value_t = 20)]
    pub small_cli: usize,
    /// Small calls: sequential unary calls per run of each latency row.
    #[arg(long, env = "BENCH_SMALL_CALLS", default_value_t = 1000)]
    pub small_calls: usize,
    /// Sections to skip, comma-separated: put,get,concurrency,rpc,small,nginx,bittorrent,heartbeats.
    #[arg(long, env = "BENCH_SKIP", default_value = "")]
    pub skip: String,
    /// How the benchmark was started, for the record.
    #[arg(long, env = "BENCH_COMMAND", default_value = "")]
    pub command: String,
}

mod small;

const NAME: &str = "bench";
const FILE: &str = "bench.bin";

struct Bench {
    a: Args,
    ctx: Ctx,
    work: PathBuf,
    data: PathBuf,
    out: PathBuf,
    src: PathBuf,
    src_hash: blake3::Hash,
    size: u64,
    timeout: Duration,
    report: Report,
    cluster: Option<Cluster>,
}

/// Run everything; `Ok(false)` when some row failed.
pub fn run(a: Args) -> Result<bool> {
    if a.size_mib == 0 || a.runs == 0 || a.clients == 0 {
        bail!("BENCH_SIZE_MIB, BENCH_RUNS and BENCH_CLIENTS must be at least 1");
    }
    for b in ["shoal", "shoal-tracker", "shoal-peer"] {
        if !a.bin.join(b).is_file() {
            bail!(
                "{} not found: build with `cargo build --release --bins` (or set BENCH_BIN)",
                a.bin.join(b).display()
            );
        }
    }
    if find_tool(procs::GNU_TIME).is_none() {
        bail!(
            "{} (Debian package `time`) is needed for peak RSS",
            procs::GNU_TIME
        );
    }
    fs::create_dir_all(&a.work)?;
    let work = a.work.join(format!("run-{}", std::process::id()));
    fs::create_dir_all(&work)?;
    let work = fs::canonicalize(&work)?;
    // nginx workers may run as another user: the path must be traversable.
    let _ = Command::new("chmod").arg("755").arg(&work).status();
    let logs = a.work.join("logs");
    let _ = fs::remove_dir_all(&logs);
    let size = a.size_mib << 20;
    let need = size * 8 + (1 << 30);
    if let Some(free) = free_bytes(&work) {
        if free < need {
            let _ = fs::remove_dir_all(&work);
            bail!(
                "{} has {} MiB free; the benchmark needs about {} MiB",
                work.display(),
                free >> 20,
                need >> 20
            );
        }
    }
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("tokio runtime")?;
    let ctx = Ctx {
        procs: Procs::new(&logs, a.pidfile.clone())?,
        rt,
        bin: fs::canonicalize(&a.bin)?,
    };
    let mut b = Bench {
        data: work.join("data"),
        out: work.join("out"),
        src: work.join("data").join(FILE),
        src_hash: blake3::hash(b""),
        size,
        timeout: Duration::from_secs((a.size_mib * 3 / 5).max(120)),
        report: Report::default(),
        cluster: None,
        work,
        a,
        ctx,
    };
    let result = b.run_all();
    if let Some(c) = b.cluster.take() {
        c.destroy(&b.ctx);
    }
    b.ctx.procs.stop_all();
    let _ = fs::remove_dir_all(&b.work);
    result?;
    let md = b.report.markdown();
    if let Some(dir) = b.a.out.parent() {
        fs::create_dir_all(dir)?;
    }
    fs::write(&b.a.out, &md).with_context(|| format!("writing {}", b.a.out.display()))?;
    println!("{md}");
    println!("results written to {}", b.a.out.display());
    let failures = b.report.failures();
    for f in &failures {
        eprintln!("bench: row failed: {f}");
    }
    Ok(failures.is_empty())
}

fn free_bytes(dir: &Path) -> Option<u64> {
    let out = Command::new("df").arg("-Pk").arg(dir).output().ok()?;
    let text = String::from_utf8_lossy(&out.stdout);
    let kib: u64 = text
        .lines()
        .nth(1)?
        .split_whitespace()
        .nth(3)?
        .parse()
        .ok()?;
    Some(kib * 1024)
}

/// A file of `size` pseudo-random bytes (BLAKE3 XOF of `seed`); returns its hash.
pub(crate) fn make_file(path: &Path, size: u64, seed: u64) -> Result<blake3::Hash> {
    let mut xof = blake3::Hasher::new()
        .update(b"shoal-bench")
        .update(&seed.to_le_bytes())
        .finalize_xof();
    let mut f = File::create(path).with_context(|| format!("creating {}", path.display()))?;
    let mut h = blake3::Hasher::new();
    let mut buf = vec![0u8; 4 << 20];
    let mut left = size;
    while left > 0 {
        let n = left.min(buf.len() as u64) as usize;
        xof.fill(&mut buf[..n]);
        h.update(&buf[..n]);
        f.write_all(&buf[..n])?;
        left -= n as u64;
    }
    Ok(h.finalize())
}

/// The output must be the source, byte for byte (BLAKE3 of both).
fn verify(path: &Path, size: u64, expect: &blake3::Hash) -> Result<()> {
    let len = fs::metadata(path)
        .with_context(|| format!("no output at {}", path.display()))?
        .len();
    if len != size {
        bail!("{} has {len} bytes, expected {size}", path.display());
    }
    let mut h = blake3::Hasher::new();
    let mut f = File::open(path)?;
    let mut buf = vec![0u8; 4 << 20];
    loop {
        let n = std::io::Read::read(&mut f, &mut buf)?;
        if n == 0 {
            break;
        }
        h.update_rayon(&buf[..n]);
    }
    if h.finalize() != *expect {
        bail!("{} differs from the source", path.display());
    }
    Ok(())
}

fn strings<const N: usize>(v: [&str; N]) -> Vec<String> {
    v.iter().map(|s| s.to_string()).collect()
}

fn kib(v: Option<u64>) -> String {
    v.map(|k| format!("{:.1}", k as f64 / 1024.0))
        .unwrap_or_else(|| "?".into())
}

impl Bench {
    fn skip(&self, section: &str) -> bool {
        self.a.skip.split(',').any(|s| s.trim() == section)
    }

    fn section(&mut self, name: &str) {
        let note = load_note();
        eprintln!("bench: == {name} ({note})");
        self.report.sections.push((name.to_string(), note));
    }

    fn raw(&mut self, line: String) {
        eprintln!("bench:    {line}");
        self.report.raw.push(line);
    }

    /// CPU-seconds used so far by the cluster's tracker and peers.
    fn services_cpu(&self) -> Result<f64> {
        let c = self.cluster.as_ref().context("no cluster")?;
        let mut pids = vec![c.tracker_pid];
        pids.extend(c.peers.iter().map(|p| p.pid));
        Ok(procs::proc_cpu_seconds(&pids))
    }

    fn shoal(&self) -> PathBuf {
        self.ctx.exe("shoal")
    }

    /// Run `program args` timed, with the box's busy CPU over the run.
    fn timed(&self, name: &str, program: &Path, args: &[String]) -> Result<(Timed, f64)> {
        procs::sync();
        let c0 = box_cpu_seconds()?;
        let t = self
            .ctx
            .procs
            .run_timed(name, program, args, self.timeout)?;
        let c1 = box_cpu_seconds()?;
        Ok((t, c1 - c0))
    }

    fn run_all(&mut self) -> Result<()> {
        self.header();
        fs::create_dir_all(&self.data)?;
        fs::create_dir_all(&self.out)?;
        eprintln!(
            "bench: writing a {} MiB random file in {}",
            self.a.size_mib,
            self.data.display()
        );
        self.src_hash = make_file(&self.src, self.size, 1)?;
        procs::sync();

        let mut put = Row::new("`shoal put` (R=3)", self.size);
        if self.skip("put") {
            put.skipped = true;
        } else {
            self.section("shoal put");
            if let Err(e) = self.put_rows(&mut put) {
                put.error = Some(format!("{e:#}"));
            }
        }
        self.report.put_rss = ["CLI", "tracker", "peer1", "peer2", "peer3"]
            .iter()
            .map(|w| (w.to_string(), put.rss.get(*w).copied()))
            .collect();
        self.report.rows.push(put);

        let mut get = Row::new("`shoal get` (3 peers → file)", self.size);
        let mut conc = Row::new(
            &format!("{} × `shoal get` at once", self.a.clients),
            self.conc_size() * self.a.clients as u64,
        );
        if self.skip("get") {
            get.skipped = true;
        } else {
            self.section("shoal get");
            if let Err(e) = self.get_rows(&mut get) {
                get.error = Some(format!("{e:#}"));
            }
        }
        if self.skip("concurrency") {
            conc.skipped = true;
        } else {
            self.section("concurrent gets");
            if let Err(e) = self.concurrency_rows(&mut conc) {
                conc.error = Some(format!("{e:#}"));
            }
        }

        let mut metas = Vec::new();
        for (method, label) in [
            (Method::ClusterInfo, "Tracker `ClusterInfo`"),
            (Method::StatFile, "Tracker `StatFile`"),
        ] {
            let mut m = MetaRow::new(&format!(
                "{label} ({} tasks, {} HTTP/2 conns)",
                self.a.rpc_concurrency, self.a.rpc_connections
            ));
            if self.skip("rpc") {
                m.skipped = true;
            } else {
                self.section(&format!("tracker RPC load {method:?}"));
                if let Err(e) = self.rpc_rows(method, &mut m) {
                    m.error = Some(format!("{e:#}"));
                }
            }
            metas.push(m);
        }
        if let Some(c) = self.cluster.take() {
            c.destroy(&self.ctx);
        }

        if !self.skip("small") {
            self.section("small calls");
            let mut small = Vec::new();
            if let Err(e) = self.small_rows(&mut small) {
                let mut failed = MetaRow::new("small calls");
                failed.error = Some(format!("{e:#}"));
                small.push(failed);
            }
            if let Some(c) = self.cluster.take() {
                c.destroy(&self.ctx);
            }
            self.report.small = small;
        }

        let mut curl = Row::new("nginx → `curl -o file`", self.size);
        let mut curl_null = Row::new("nginx → `curl -o /dev/null`", self.size);
        let mut aria_x4 = Row::new("nginx → `aria2c -x4` (file)", self.size);
        if self.skip("nginx") {
            for r in [&mut curl, &mut curl_null, &mut aria_x4] {
                r.skipped = true;
            }
        } else {
            self.section("nginx");
            if let Err(e) = self.nginx_rows(&mut curl, &mut curl_null, &mut aria_x4) {
                for r in [&mut curl, &mut curl_null, &mut aria_x4] {
                    if r.wall.0.len() < self.a.runs && r.error.is_none() {
                        r.error = Some(format!("{e:#}"));
                    }
                }
            }
        }

        let mut bt = Row::new("BitTorrent: 3 aria2c seeders → 1 aria2c", self.size);
        if self.skip("bittorrent") {
            bt.skipped = true;
        } else {
            self.section("bittorrent");
            if let Err(e) = self.bt_rows(&mut bt) {
                bt.error = Some(format!("{e:#}"));
            }
        }

        let mut hbs = Vec::new();
        let variants = if self.a.hb_chunks > 0 {
            vec![0, self.a.hb_chunks]
        } else {
            vec![0]
        };
        for chunks in variants {
            let mut m = MetaRow::new(&format!(
                "{} peers heartbeating{}",
                self.a.hb_peers,
                if chunks > 0 {
                    format!(", {chunks} chunks each")
                } else {
                    String::new()
                }
            ));
            if self.skip("heartbeats") {
                m.skipped = true;
            } else {
                self.section(&format!("heartbeats ({chunks} chunks per peer)"));
                if let Err(e) = self.heartbeat_rows(chunks, &mut m) {
                    m.error = Some(format!("{e:#}"));
                }
            }
            hbs.push(m);
        }

        self.report
            .rows
            .extend([get, conc, curl, curl_null, aria_x4, bt]);
        self.report.meta.extend(metas);
        self.report.meta.extend(hbs);
        self.goals();
        Ok(())
    }

    fn header(&mut self) {
        let cpu = fs::read_to_string("/proc/cpuinfo")
            .ok()
            .and_then(|s| {
                s.lines()
                    .find(|l| l.starts_with("model name"))
                    .and_then(|l| l.split_once(':'))
                    .map(|(_, v)| v.trim().to_string())
            })
            .unwrap_or_else(|| "?".into());
        let nproc = std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(0);
        let kernel = fs::read_to_string("/proc/sys/kernel/osrelease")
            .map(|s| s.trim().to_string())
            .unwrap_or_default();
        let mem = fs::read_to_string("/proc/meminfo")
            .ok()
            .and_then(|s| {
                s.lines()
                    .next()
                    .and_then(|l| l.split_whitespace().nth(1))
                    .and_then(|k| k.parse::<u64>().ok())
            })
            .map(|k| format!("{:.1} GiB", k as f64 / 1024.0 / 1024.0))
            .unwrap_or_default();
        let sh = |c: &str, args: &[&str]| {
            Command::new(c)
                .args(args)
                .output()
                .ok()
                .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
                .unwrap_or_default()
        };
        let date = sh("date", &["-u", "+%Y-%m-%d %H:%M UTC"]);
        let mut rev = sh("git", &["rev-parse", "--short", "HEAD"]);
        if !sh("git", &["status", "--porcelain", "--untracked-files=no"]).is_empty() {
            rev.push_str(" + uncommitted changes");
        }
        let fs_type = sh("df", &["--output=fstype", &self.work.display().to_string()])
            .lines()
            .last()
            .unwrap_or("?")
            .to_string();
        let command = if self.a.command.is_empty() {
            std::env::args().collect::<Vec<_>>().join(" ")
        } else {
            self.a.command.clone()
        };
        let h = &mut self.report.header;
        h.push(("Date".into(), date));
        h.push(("Command".into(), format!("`{command}`")));
        h.push((
            "Machine".into(),
            format!("{nproc} CPUs ({cpu}), {mem} RAM, Linux {kernel}"),
        ));
        h.push((
            "Data".into(),
            format!(
                "{} MiB random file, {} runs per row, work dir on {fs_type} ({})",
                self.a.size_mib,
                self.a.runs,
                self.work.display()
            ),
        ));
        h.push(("Commit".into(), rev));
        h.push(("Binaries".into(), self.ctx.bin.display().to_string()));
    }

    // ---- shoal ---------------------------------------------------------------

    fn new_cluster(&mut self, tag: &str) -> Result<()> {
        if let Some(c) = self.cluster.take() {
            c.destroy(&self.ctx);
        }
        procs::sync();
        let c = Cluster::start(&self.ctx, &self.work.join(tag), tag, 3)?;
        self.cluster = Some(c);
        Ok(())
    }

    fn put_args(&self, file: &Path, name: &str) -> Result<Vec<String>> {
        let c = self.cluster.as_ref().context("no cluster")?;
        Ok(vec![
            "--tracker".into(),
            c.tracker_url.clone(),
            "put".into(),
            file.display().to_string(),
            "--name".into(),
            name.into(),
            "--replicas".into(),
            "3".into(),
        ])
    }

    fn get_args(&self, name: &str, out: &Path) -> Result<Vec<String>> {
        let c = self.cluster.as_ref().context("no cluster")?;
        let mut args = vec![
            "--tracker".into(),
            c.tracker_url.clone(),
            "get".into(),
            name.into(),
            "-o".into(),
            out.display().to_string(),
        ];
        // BENCH_GET_DIRECT=true: the CLI writes its output with O_DIRECT.
        if std::env::var("BENCH_GET_DIRECT").is_ok_and(|v| v == "true") {
            args.push("--direct".into());
        }
        Ok(args)
    }

    /// Each run on a fresh cluster (so nothing is deduplicated and VmHWM is per run).
    fn put_rows(&mut self, row: &mut Row) -> Result<()> {
        for run in 0..self.a.runs {
            self.new_cluster(&format!("put{run}"))?;
            let args = self.put_args(&self.src, NAME)?;
            let svc0 = self.services_cpu()?;
            let (t, cpu) = self.timed(&format!("put-{run}"), &self.shoal(), &args)?;
            t.check("shoal put")?;
            let proc_cpu = t.cpu_s + self.services_cpu()? - svc0;
            row.add_run(t.wall.as_secs_f64(), cpu);
            row.add_proc_cpu(proc_cpu);
            let c = self.cluster.as_ref().context("no cluster")?;
            let (tr, peers) = c.hwm();
            row.rss("CLI", Some(t.maxrss_kib));
            row.rss("tracker", tr);
            for (i, p) in peers.iter().enumerate() {
                row.rss(&format!("peer{}", i + 1), *p);
            }
            self.raw(format!(
                "put run {run}: {:.3} s, box CPU {cpu:.2} s, process CPU {proc_cpu:.2} s (CLI {:.2}), RSS MiB: CLI {}, tracker {}, peers {}",
                t.wall.as_secs_f64(),
                t.cpu_s,
                kib(Some(t.maxrss_kib)),
                kib(tr),
                peers.iter().map(|p| kib(*p)).collect::<Vec<_>>().join("/")
            ));
        }
        row.note = "fresh cluster per run; each chunk fsynced on 3 peers".into();
        Ok(())
    }

    fn get_rows(&mut self, row: &mut Row) -> Result<()> {
        if self.cluster.is_none() || self.skip("put") {
            // The put rows did not leave a cluster holding the file: make one.
            self.new_cluster("get")?;
            let args = self.put_args(&self.src, NAME)?;
            self.ctx
                .procs
                .run_timed("get-setup-put", &self.shoal(), &args, self.timeout)?
                .check("shoal put")?;
        }
        for run in 0..self.a.runs {
            self.cluster
                .as_mut()
                .context("no cluster")?
                .restart_peers(&self.ctx)?;
            let out = self.out.join(format!("get-{run}.bin"));
            let args = self.get_args(NAME, &out)?;
            let svc0 = self.services_cpu()?;
            let (t, cpu) = self.timed(&format!("get-{run}"), &self.shoal(), &args)?;
            t.check("shoal get")?;
            let proc_cpu = t.cpu_s + self.services_cpu()? - svc0;
            verify(&out, self.size, &self.src_hash)?;
            let _ = fs::remove_file(&out);
            row.add_run(t.wall.as_secs_f64(), cpu);
            row.add_proc_cpu(proc_cpu);
            row.rss("CLI", Some(t.maxrss_kib));
            let (_, peers) = self.cluster.as_ref().context("no cluster")?.hwm();
            for (i, p) in peers.iter().enumerate() {
                row.rss(&format!("peer{}", i + 1), *p);
            }
            self.raw(format!(
                "get run {run}: {:.3} s, box CPU {cpu:.2} s, process CPU {proc_cpu:.2} s (CLI {:.2}), RSS MiB: CLI {}, peers {}",
                t.wall.as_secs_f64(),
                t.cpu_s,
                kib(Some(t.maxrss_kib)),
                peers.iter().map(|p| kib(*p)).collect::<Vec<_>>().join("/")
            ));
        }
        row.note = "verified (CLI: every chunk and the file id from the chunk tree; bench: BLAKE3 vs source)".into();
        Ok(())
    }

    fn conc_size(&self) -> u64 {
        ((self.a.size_mib / self.a.clients as u64).max(1)) << 20
    }

    fn concurrency_rows(&mut self, row: &mut Row) -> Result<()> {
        if self.cluster.is_none() {
            self.new_cluster("conc")?;
        }
        let n = self.a.clients;
        let each = self.conc_size();
        let mut files = Vec::new();
        let mut put_secs = 0.0;
        for i in 0..n {
            let p = self.data.join(format!("conc-{i}.bin"));
            let h = make_file(&p, each, 100 + i as u64)?;
            let args = self.put_args(&p, &format!("conc-{i}"))?;
            let t = self.ctx.procs.run_timed(
                &format!("conc-put-{i}"),
                &self.shoal(),
                &args,
                self.timeout,
            )?;
            t.check("shoal put")?;
            put_secs += t.wall.as_secs_f64();
            files.push((p, h));
        }
        let mut slowest = Samples::default();
        for run in 0..self.a.runs {
            self.cluster
                .as_mut()
                .context("no cluster")?
                .restart_peers(&self.ctx)?;
            procs::sync();
            let c0 = box_cpu_seconds()?;
            let t0 = std::time::Instant::now();
            let mut pending = Vec::new();
            for i in 0..n {
                let out = self.out.join(format!("conc-{run}-{i}.bin"));
                let args = self.get_args(&format!("conc-{i}"), &out)?;
                pending.push((
                    out,
                    self.ctx.procs.start_timed(
                        &format!("conc-get-{run}-{i}"),
                        &self.shoal(),
                        &args,
                        &[],
                    )?,
                ));
            }
            let mut done = Vec::new();
            for (out, p) in pending {
                done.push((out, self.ctx.procs.finish(p, self.timeout)?));
            }
            let all = t0.elapsed().as_secs_f64();
            let cpu = box_cpu_seconds()? - c0;
            let mut worst: f64 = 0.0;
            for (i, (out, t)) in done.iter().enumerate() {
                t.check("shoal get")?;
                verify(out, each, &files[i].1)?;
                let _ = fs::remove_file(out);
                worst = worst.max(t.wall.as_secs_f64());
                row.rss("CLI", Some(t.maxrss_kib));
            }
            // Wall = the slowest client; MB/s = everything over the time all took.
            row.bytes = each * n as u64;
            row.add_run(worst, cpu);
            if let Some(last) = row.mbps.0.last_mut() {
                *last = row.bytes as f64 / 1e6 / all;
            }
            slowest.push(worst);
            let (_, peers) = self.cluster.as_ref().context("no cluster")?.hwm();
            for (i, p) in peers.iter().enumerate() {
                row.rss(&format!("peer{}", i + 1), *p);
            }
            self.raw(format!(
                "concurrent run {run}: all {n} done in {all:.3} s, slowest client {worst:.3} s, box CPU {cpu:.2} s, peers RSS MiB {}",
                peers.iter().map(|p| kib(*p)).collect::<Vec<_>>().join("/")
            ));
        }
        for (p, _) in &files {
            let _ = fs::remove_file(p);
        }
        row.note = format!(
            "{n} files of {} MiB, aggregate MB/s; wall = slowest client {} s; (their puts took {put_secs:.1} s in total)",
            each >> 20,
            slowest.show(2)
        );
        Ok(())
    }

    fn rpc_rows(&mut self, method: Method, row: &mut MetaRow) -> Result<()> {
        if self.cluster.is_none() {
            self.new_cluster("rpc")?;
            let args = self.put_args(&self.src, NAME)?;
            self.ctx
                .procs
                .run_timed("rpc-setup-put", &self.shoal(), &args, self.timeout)?
                .check("shoal put")?;
        }
        let url = self
            .cluster
            .as_ref()
            .context("no cluster")?
            .tracker_url
            .clone();
        let args = RpcArgs {
            tracker: url,
            method,
            name: NAME.into(),
            connections: self.a.rpc_connections,
            concurrency: self.a.rpc_concurrency,
            requests: self.a.rpc_requests,
            max_time: Duration::from_secs(self.a.rpc_max_secs),
        };
        let mut capped = 0;
        for run in 0..self.a.runs {
            let r = self.ctx.rt.block_on(load::rpc_load(&args))?;
            if r.ok == 0 {
                bail!(
                    "no request succeeded: {}",
                    r.first_error.unwrap_or_default()
                );
            }
            row.rate.push(r.rate());
            row.p50_ms.push(ms(r.lat.pct(50.0)));
            row.p99_ms.push(ms(r.lat.pct(99.0)));
            row.max_ms.push(ms(r.lat.max()));
            row.errors += r.errors;
            if r.ok + r.errors < self.a.rpc_requests {
                capped += 1;
            }
            self.raw(format!(
                "{method:?} run {run}: {} ok, {} errors in {:.3} s = {:.0} req/s, p50 {:.2} ms, p99 {:.2} ms{}",
                r.ok,
                r.errors,
                r.elapsed.as_secs_f64(),
                r.rate(),
                ms(r.lat.pct(50.0)),
                ms(r.lat.pct(99.0)),
                r.first_error.map(|e| format!(" (first error: {e})")).unwrap_or_default()
            ));
        }
        row.note = format!(
            "{} requests per run, load generator on the same box",
            self.a.rpc_requests
        );
        if capped > 0 {
            row.note.push_str(&format!(
                "; {capped} run(s) stopped at the {} s cap",
                self.a.rpc_max_secs
            ));
        }
        if method == Method::StatFile {
            row.note
                .push_str(&format!("; file of {} chunks × 3 replicas", self.chunks()));
        }
        if row.errors > 0 {
            bail!("{} requests failed", row.errors);
        }
        Ok(())
    }

    fn chunks(&self) -> u64 {
        // The tracker's policy: ~256 chunks, power of two in [1, 64] MiB.
        let cs = (self.size.div_ceil(256))
            .next_power_of_two()
            .clamp(1 << 20, 64 << 20);
        self.size.div_ceil(cs)
    }

    // ---- comparisons -----------------------------------------------------------

    fn nginx_rows(&mut self, curl: &mut Row, null: &mut Row, x4: &mut Row) -> Result<()> {
        let nginx = Nginx::start(&self.ctx, &self.work.join("nginx"), &self.data)?;
        let r = self.nginx_runs(&nginx, curl, null, x4);
        self.ctx.procs.stop(nginx.pid, Duration::from_secs(5));
        r
    }

    fn nginx_runs(
        &mut self,
        nginx: &Nginx,
        curl: &mut Row,
        null: &mut Row,
        x4: &mut Row,
    ) -> Result<()> {
        let url = nginx.url(FILE);
        let curl_bin = find_tool("curl").context("curl is missing")?;
        for run in 0..self.a.runs {
            let out = self.out.join(format!("curl-{run}.bin"));
            let args = vec![
                "-sS".into(),
                "--fail".into(),
                "-o".into(),
                out.display().to_string(),
                url.clone(),
            ];
            let servers = procs::with_children(nginx.pid);
            let svc0 = procs::proc_cpu_seconds(&servers);
            let (t, cpu) = self.timed(&format!("curl-{run}"), &curl_bin, &args)?;
            t.check("curl")?;
            let proc_cpu = t.cpu_s + procs::proc_cpu_seconds(&servers) - svc0;
            verify(&out, self.size, &self.src_hash)?;
            let _ = fs::remove_file(&out);
            curl.add_run(t.wall.as_secs_f64(), cpu);
            curl.add_proc_cpu(proc_cpu);
            curl.rss("curl", Some(t.maxrss_kib));
            self.raw(format!(
                "curl to file run {run}: {:.3} s, box CPU {cpu:.2} s, process CPU {proc_cpu:.2} s (curl {:.2})",
                t.wall.as_secs_f64(),
                t.cpu_s
            ));
        }
        curl.note = "sendfile; verified".into();
        for run in 0..self.a.runs {
            let args = vec![
                "-sS".into(),
                "--fail".into(),
                "-o".into(),
                "/dev/null".into(),
                url.clone(),
            ];
            let (t, cpu) = self.timed(&format!("curl-null-{run}"), &curl_bin, &args)?;
            t.check("curl")?;
            null.add_run(t.wall.as_secs_f64(), cpu);
            null.rss("curl", Some(t.maxrss_kib));
            self.raw(format!(
                "curl to /dev/null run {run}: {:.3} s, box CPU {cpu:.2} s",
                t.wall.as_secs_f64()
            ));
        }
        null.note = "network only (reference)".into();
        let aria = find_tool("aria2c").context("aria2c is missing (Debian package aria2)")?;
        for run in 0..self.a.runs {
            let name = format!("aria2-x4-{run}.bin");
            let args = strings([
                "-x4",
                "-s4",
                "-k1M",
                "--file-allocation=none",
                "--allow-overwrite=true",
                "--auto-file-renaming=false",
                "--console-log-level=warn",
                "--summary-interval=0",
                "--enable-dht=false",
                "--disable-ipv6=true",
            ])
            .into_iter()
            .chain([
                "-d".into(),
                self.out.display().to_string(),
                "-o".into(),
                name.clone(),
                url.clone(),
            ])
            .collect::<Vec<_>>();
            let (t, cpu) = self.timed(&format!("aria2-x4-{run}"), &aria, &args)?;
            t.check("aria2c -x4")?;
            let out = self.out.join(&name);
            verify(&out, self.size, &self.src_hash)?;
            let _ = fs::remove_file(&out);
            x4.add_run(t.wall.as_secs_f64(), cpu);
            x4.rss("aria2c", Some(t.maxrss_kib));
            self.raw(format!(
                "aria2c -x4 run {run}: {:.3} s, box CPU {cpu:.2} s",
                t.wall.as_secs_f64()
            ));
        }
        x4.note = "4 connections, 1 MiB pieces; verified".into();
        Ok(())
    }

    fn bt_rows(&mut self, row: &mut Row) -> Result<()> {
        let dir = self.work.join("bt");
        let swarm = Swarm::start(&self.ctx, &dir, &self.src, 3)?;
        let r = self.bt_runs(&swarm, &dir, row);
        swarm.stop(&self.ctx);
        let _ = fs::remove_dir_all(&dir);
        r
    }

    fn bt_runs(&mut self, swarm: &Swarm, dir: &Path, row: &mut Row) -> Result<()> {
        let aria = find_tool("aria2c").context("aria2c is missing")?;
        for run in 0..self.a.runs {
            let ldir = dir.join(format!("leech{run}"));
            fs::create_dir_all(&ldir)?;
            let args = swarm.leech_args(&ldir)?;
            let (t, cpu) = self.timed(&format!("bt-leech-{run}"), &aria, &args)?;
            t.check("aria2c leecher")?;
            verify(&ldir.join(FILE), self.size, &self.src_hash)?;
            let _ = fs::remove_dir_all(&ldir);
            row.add_run(t.wall.as_secs_f64(), cpu);
            row.rss("leecher", Some(t.maxrss_kib));
            self.raw(format!(
                "bittorrent run {run}: {:.3} s, box CPU {cpu:.2} s",
                t.wall.as_secs_f64()
            ));
        }
        row.note = "1 MiB pieces, local opentracker, DHT/LPD/PEX off; verified".into();
        Ok(())
    }

    // ---- heartbeats ------------------------------------------------------------

    fn heartbeat_rows(&mut self, chunks: usize, row: &mut MetaRow) -> Result<()> {
        let (peers, secs) = (self.a.hb_peers, self.a.hb_secs);
        let args_for = |url: String| HeartbeatArgs {
            tracker: url,
            peers,
            duration: Duration::from_secs(secs),
            connections: 0,
            chunks_per_peer: chunks,
            register_concurrency: 64,
        };
        let mut reg = Samples::default();
        let mut reg_p99 = Samples::default();
        let mut interval = Duration::ZERO;
        let mut anomalies = 0;
        let mut lateness = Duration::ZERO;
        let mut hwm = Samples::default();
        for run in 0..self.a.runs {
            let dir = self.work.join(format!("hb-tracker-{chunks}-{run}"));
            let (url, pid) = start_tracker(&self.ctx, &dir, &format!("hb-tracker-{chunks}-{run}"))?;
            let r = self.ctx.rt.block_on(load::heartbeats(&args_for(url)));
            if let Some(k) = procs::vm_kib(pid, "VmHWM") {
                hwm.push(k as f64 / 1024.0);
            }
            self.ctx.procs.stop(pid, Duration::from_secs(5));
            let _ = fs::remove_dir_all(&dir);
            let r = r?;
            let rate = r.lat.len() as f64 / self.a.hb_secs as f64;
            row.rate.push(rate);
            row.p50_ms.push(ms(r.lat.pct(50.0)));
            row.p99_ms.push(ms(r.lat.pct(99.0)));
            row.max_ms.push(ms(r.lat.max()));
            row.errors += r.errors;
            reg.push(r.register_elapsed.as_secs_f64());
            reg_p99.push(ms(r.register_lat.pct(99.0)));
            interval = r.interval;
            anomalies += r.anomalies;
            lateness = lateness.max(r.max_lateness);
            self.raw(format!(
                "heartbeats ({chunks} chunks/peer) run {run}: {} peers registered in {:.2} s (p99 {:.1} ms); {} heartbeats, {} errors, {} known=false/resync, p50 {:.2} ms, p99 {:.2} ms, max {:.1} ms, worst send lateness {:.1} ms",
                r.peers,
                r.register_elapsed.as_secs_f64(),
                ms(r.register_lat.pct(99.0)),
                r.sent,
                r.errors,
                r.anomalies,
                ms(r.lat.pct(50.0)),
                ms(r.lat.pct(99.0)),
                ms(r.lat.max()),
                ms(r.max_lateness)
            ));
            if r.errors > 0 {
                bail!(
                    "{} heartbeats failed: {}",
                    r.errors,
                    r.first_error.unwrap_or_default()
                );
            }
        }
        row.note = format!(
            "interval {} ms, {} s per run, one connection per peer; registration of all {} s (p99 {} ms); {anomalies} known=false/resync; worst send lateness {:.0} ms; tracker peak RSS {} MiB",
            interval.as_millis(),
            self.a.hb_secs,
            reg.show(2),
            reg_p99.show(1),
            ms(lateness),
            hwm.show(0)
        );
        Ok(())
    }

    // ---- goals -----------------------------------------------------------------

    fn goals(&mut self) {
        let r = &self.report;
        let med = |label: &str, f: fn(&Row) -> &Samples| {
            r.row(label).filter(|x| x.ok()).and_then(|x| f(x).median())
        };
        let get_wall = med("`shoal get`", |x| &x.wall);
        let get_mbps = med("`shoal get`", |x| &x.mbps);
        let bt_wall = med("BitTorrent", |x| &x.wall);
        let curl_mbps = med("nginx → `curl -o file`", |x| &x.mbps);
        let put_mbps = med("`shoal put`", |x| &x.mbps);
        let mut ratios = Vec::new();
        let mut goals = Vec::new();
        // CPU per GiB of get against curl to a file: the whole box, and the transfer's
        // own processes (the fair one when the machine is shared).
        for (what, f) in [
            ("box", (|x: &Row| &x.cpu_per_gib) as fn(&Row) -> &Samples),
            ("process", |x: &Row| &x.proc_cpu_per_gib),
        ] {
            let g = med("`shoal get`", f);
            let c = med("nginx → `curl -o file`", f);
            let ratio = g.zip(c).map(|(g, c)| g / c.max(1e-9));
            ratios.push((
                format!("shoal get {what} CPU per GiB / curl-to-file's"),
                ratio.map(|v| format!("{v:.2}")).unwrap_or("–".into()),
            ));
            goals.push(Goal {
                what: format!("`shoal get` {what} CPU-s per GiB vs nginx → curl to file"),
                target: "≤ 1.5×".into(),
                measured: ratio
                    .map(|v| {
                        format!(
                            "{v:.2}× ({:.2} vs {:.2} s/GiB)",
                            g.unwrap_or(0.0),
                            c.unwrap_or(0.0)
                        )
                    })
                    .unwrap_or("–".into()),
                met: ratio.map(|v| v <= 1.5),
            });
        }

        let ratio_bt = get_wall.zip(bt_wall).map(|(g, b)| g / b);
        ratios.push((
            "shoal get time / aria2 BitTorrent time".to_string(),
            ratio_bt.map(|v| format!("{v:.3}")).unwrap_or("–".into()),
        ));
        goals.push(Goal {
            what: "`shoal get` time vs aria2 BitTorrent".into(),
            target: "≤ 1/4 (0.250)".into(),
            measured: ratio_bt
                .map(|v| {
                    format!(
                        "{v:.3} ({:.2} s vs {:.2} s)",
                        get_wall.unwrap_or(0.0),
                        bt_wall.unwrap_or(0.0)
                    )
                })
                .unwrap_or("–".into()),
            met: ratio_bt.map(|v| v <= 0.25),
        });
        let ratio_curl = get_mbps.zip(curl_mbps).map(|(g, c)| g / c);
        ratios.push((
            "shoal get MB/s / curl-to-file MB/s".to_string(),
            ratio_curl
                .map(|v| format!("{:.0}%", v * 100.0))
                .unwrap_or("–".into()),
        ));
        goals.push(Goal {
            what: "`shoal get` throughput vs nginx → curl to file".into(),
            target: "≥ 90%".into(),
            measured: ratio_curl
                .map(|v| {
                    format!(
                        "{:.0}% ({:.0} vs {:.0} MB/s)",
                        v * 100.0,
                        get_mbps.unwrap_or(0.0),
                        curl_mbps.unwrap_or(0.0)
                    )
                })
                .unwrap_or("–".into()),
            met: ratio_curl.map(|v| v >= 0.9),
        });
        goals.push(Goal {
            what: "`shoal put` R=3 throughput".into(),
            target: "≥ 300 MB/s".into(),
            measured: put_mbps
                .map(|v| format!("{v:.0} MB/s"))
                .unwrap_or("–".into()),
            met: put_mbps.map(|v| v >= 300.0),
        });
        let max_rss = |prefix: &str| {
            ["`shoal put`", "`shoal get`"]
                .iter()
                .filter_map(|l| r.row(l).and_then(|x| x.max_rss(prefix)))
                .max()
        };
        let peer = max_rss("peer");
        goals.push(Goal {
            what: "Peak RSS of a peer (put and get)".into(),
            target: "≤ 64 MiB".into(),
            measured: peer
                .map(|k| format!("{:.1} MiB", k as f64 / 1024.0))
                .unwrap_or("–".into()),
            met: peer.map(|k| (k as f64) <= 64.0 * 1024.0),
        });
        let cli = max_rss("CLI");
        goals.push(Goal {
            what: "Peak RSS of the CLI (put and get)".into(),
            target: "≤ 100 MiB".into(),
            measured: cli
                .map(|k| format!("{:.1} MiB", k as f64 / 1024.0))
                .unwrap_or("–".into()),
            met: cli.map(|k| (k as f64) <= 100.0 * 1024.0),
        });
        let rate = r
            .meta_row("Tracker `ClusterInfo`")
            .filter(|m| m.ok())
            .and_then(|m| m.rate.median());
        goals.push(Goal {
            what: "Tracker metadata requests (ClusterInfo)".into(),
            target: "≥ 20,000 req/s".into(),
            measured: rate.map(|v| format!("{v:.0} req/s")).unwrap_or("–".into()),
            met: rate.map(|v| v >= 20_000.0),
        });
        for m in r.meta.iter().filter(|m| m.label.contains("heartbeating")) {
            let p99 = m.ok().then(|| m.p99_ms.median()).flatten();
            goals.push(Goal {
                what: format!("{}: heartbeat p99", m.label),
                target: "< 50 ms".into(),
                measured: p99.map(|v| format!("{v:.2} ms")).unwrap_or("–".into()),
                met: p99.map(|v| v < 50.0),
            });
        }
        let put_rss_ok = r
            .put_rss
            .iter()
            .map(|(_, k)| k.map(|k| (k as f64) < 100.0 * 1024.0))
            .collect::<Option<Vec<bool>>>()
            .map(|v| v.iter().all(|x| *x));
        goals.push(Goal {
            what: "Peak RSS of tracker, each peer and CLI during `shoal put`".into(),
            target: "< 100 MiB each".into(),
            measured: r
                .put_rss
                .iter()
                .map(|(w, k)| format!("{w} {}", kib(*k)))
                .collect::<Vec<_>>()
                .join(", "),
            met: put_rss_ok,
        });
        goals.extend(small_goals(&self.report.small));
        self.report.ratios = ratios;
        self.report.goals = goals;
    }
}

/// The small-call goals: loopback latency of one call and of one CLI command.
fn small_goals(rows: &[MetaRow]) -> Vec<Goal> {
    let find = |prefix: &str| rows.iter().find(|r| r.label.starts_with(prefix) && r.ok());
    let p50 = |prefix: &str| find(prefix).and_then(|r| r.p50_ms.median());
    let rate = |prefix: &str, contains: &str| {
        rows.iter()
            .find(|r| r.label.contains(prefix) && r.label.contains(contains) && r.ok())
            .and_then(|r| r.rate.median())
    };
    let below = |what: &str, target: f64, v: Option<f64>| Goal {
        what: what.into(),
        target: format!("< {target} ms p50"),
        measured: v.map(|v| format!("{v:.2} ms")).unwrap_or("–".into()),
        met: v.map(|v| v < target),
    };
    let at_least = |what: &str, target: f64, v: Option<f64>| Goal {
        what: what.into(),
        target: format!("≥ {target} files/s"),
        measured: v.map(|v| format!("{v:.1} files/s")).unwrap_or("–".into()),
        met: v.map(|v| v >= target),
    };
    if rows.is_empty() {
        return Vec::new();
    }
    vec![
        below("`ClusterInfo`, sequential", 1.0, p50("`ClusterInfo`")),
        below(
            "`StatFile` of a 1-chunk file, sequential",
            1.0,
            p50("`StatFile` (1 chunk)"),
        ),
        below(
            "`ListFiles` of about 1,000 files, sequential",
            5.0,
            p50("`ListFiles`"),
        ),
        below(
            "`shoal ls` via the webserver (wall)",
            15.0,
            p50("`shoal ls` via webserver"),
        ),
        at_least(
            "sequential 4 KiB `shoal put`",
            50.0,
            rate("sequential", "`shoal put`"),
        ),
        at_least(
            "sequential 4 KiB `shoal get`",
            100.0,
            rate("sequential", "`shoal get`"),
        ),
    ]
}
