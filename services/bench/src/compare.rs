//! The systems shoal is compared with, on loopback only: nginx serving the file with
//! sendfile, and a BitTorrent swarm of aria2c seeders announced through a local
//! opentracker (whitelisted info hash; DHT, LPD and peer exchange off, private torrent).

use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};

use crate::cluster::{free_port, Ctx};

/// `which`-style lookup on PATH.
pub fn find_tool(name: &str) -> Option<PathBuf> {
    if name.contains('/') {
        let p = PathBuf::from(name);
        return p.is_file().then_some(p);
    }
    std::env::var_os("PATH").and_then(|path| {
        std::env::split_paths(&path)
            .map(|d| d.join(name))
            .find(|p| p.is_file())
    })
}

pub fn need_tools(names: &[&str]) -> Result<()> {
    let missing: Vec<&str> = names
        .iter()
        .copied()
        .filter(|n| find_tool(n).is_none())
        .collect();
    if missing.is_empty() {
        Ok(())
    } else {
        bail!(
            "missing tools: {} (scripts/bench.sh installs them with apt-get)",
            missing.join(", ")
        )
    }
}

fn wait_port(port: u16, pid: u32, ctx: &Ctx, what: &str) -> Result<()> {
    let deadline = Instant::now() + Duration::from_secs(20);
    while TcpStream::connect(("127.0.0.1", port)).is_err() {
        ctx.procs.check_running(pid)?;
        if Instant::now() > deadline {
            bail!("{what} is not listening on 127.0.0.1:{port} after 20 s");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    Ok(())
}

fn is_root() -> bool {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("Uid:"))
                .map(|l| l.split_whitespace().nth(2) == Some("0"))
        })
        .unwrap_or(false)
}

pub struct Nginx {
    pub pid: u32,
    pub port: u16,
}

impl Nginx {
    /// nginx serving `root` on 127.0.0.1 with sendfile, its files under `dir`.
    pub fn start(ctx: &Ctx, dir: &Path, root: &Path) -> Result<Self> {
        need_tools(&["nginx"])?;
        let port = free_port()?;
        let tmp = dir.join("tmp");
        std::fs::create_dir_all(&tmp)?;
        let d = dir.display();
        // Workers read the benchmark's files: as root, keep them root.
        let user = if is_root() { "user root;" } else { "" };
        let conf = format!(
            "daemon off;\nmaster_process on;\nworker_processes 2;\n{user}\n\
             pid {d}/nginx.pid;\nerror_log {d}/error.log warn;\n\
             events {{ worker_connections 256; }}\n\
             http {{\n  access_log off;\n  sendfile on;\n  tcp_nopush on;\n\
               default_type application/octet-stream;\n\
               client_body_temp_path {t}/body;\n  proxy_temp_path {t}/proxy;\n\
               fastcgi_temp_path {t}/fastcgi;\n  uwsgi_temp_path {t}/uwsgi;\n\
               scgi_temp_path {t}/scgi;\n\
               server {{ listen 127.0.0.1:{port}; root {r}; }}\n}}\n",
            t = tmp.display(),
            r = root.display(),
        );
        let conf_path = dir.join("nginx.conf");
        std::fs::write(&conf_path, conf)?;
        let mut cmd = Command::new("nginx");
        cmd.arg("-p")
            .arg(dir)
            .arg("-e")
            .arg(dir.join("error.log"))
            .arg("-c")
            .arg(&conf_path);
        let pid = ctx.procs.spawn("nginx", cmd)?;
        wait_port(port, pid, ctx, "nginx")?;
        Ok(Self { pid, port })
    }

    pub fn url(&self, file: &str) -> String {
        format!("http://127.0.0.1:{}/{file}", self.port)
    }
}

/// Flags that keep aria2c's BitTorrent on loopback and quiet.
fn aria2_bt_flags(port: u16) -> Vec<String> {
    [
        "--enable-dht=false",
        "--enable-dht6=false",
        "--bt-enable-lpd=false",
        "--enable-peer-exchange=false",
        "--disable-ipv6=true",
        "--file-allocation=none",
        "--console-log-level=notice",
    ]
    .iter()
    .map(|s| s.to_string())
    .chain([format!("--listen-port={port}")])
    .collect()
}

pub struct Swarm {
    pub torrent: PathBuf,
    pub tracker_pid: u32,
    pub seeders: Vec<u32>,
}

impl Swarm {
    /// A private torrent of `file` (1 MiB pieces) announced to a local opentracker, and
    /// `n` aria2c seeders, each with a hard link of the file, seeding once verified.
    pub fn start(ctx: &Ctx, dir: &Path, file: &Path, n: usize) -> Result<Self> {
        need_tools(&["aria2c", "mktorrent", "opentracker"])?;
        std::fs::create_dir_all(dir)?;
        let name = file
            .file_name()
            .and_then(|n| n.to_str())
            .context("file without a name")?
            .to_string();
        let tport = free_port()?;
        let torrent = dir.join("bench.torrent");
        let _ = std::fs::remove_file(&torrent);
        let out = Command::new("mktorrent")
            .args(["-l", "20", "-p", "-n", &name])
            .arg("-a")
            .arg(format!("http://127.0.0.1:{tport}/announce"))
            .arg("-o")
            .arg(&torrent)
            .arg(file)
            .output()
            .context("running mktorrent")?;
        if !out.status.success() {
            bail!("mktorrent: {}", String::from_utf8_lossy(&out.stderr));
        }
        // Debian's opentracker serves whitelisted info hashes only.
        let show = Command::new("aria2c")
            .arg("-S")
            .arg(&torrent)
            .output()
            .context("aria2c -S")?;
        let info_hash = String::from_utf8_lossy(&show.stdout)
            .lines()
            .find_map(|l| {
                l.strip_prefix("Info Hash: ")
                    .map(str::trim)
                    .map(String::from)
            })
            .context("aria2c -S printed no info hash")?;
        let otdir = dir.join("opentracker");
        std::fs::create_dir_all(&otdir)?;
        std::fs::write(otdir.join("whitelist"), format!("{info_hash}\n"))?;
        let mut cmd = Command::new("opentracker");
        cmd.current_dir(&otdir)
            .args(["-i", "127.0.0.1"])
            .args(["-p", &tport.to_string(), "-P", &tport.to_string()])
            .arg("-d")
            .arg(&otdir)
            .args(["-w", "whitelist"]);
        let tracker_pid = ctx.procs.spawn("opentracker", cmd)?;
        wait_port(tport, tracker_pid, ctx, "opentracker")?;

        let mut swarm = Swarm {
            torrent,
            tracker_pid,
            seeders: Vec::new(),
        };
        let mut logs = Vec::new();
        for i in 1..=n {
            let sdir = dir.join(format!("seed{i}"));
            std::fs::create_dir_all(&sdir)?;
            let link = sdir.join(&name);
            if !link.exists() {
                std::fs::hard_link(file, &link)
                    .or_else(|_| std::fs::copy(file, &link).map(drop))
                    .with_context(|| format!("linking {} into {}", name, sdir.display()))?;
            }
            let mut cmd = Command::new("aria2c");
            cmd.args(aria2_bt_flags(free_port()?))
                .args([
                    "--seed-ratio=0.0",
                    "--check-integrity=true",
                    "--bt-seed-unverified=true",
                    "--summary-interval=1",
                ])
                .arg("-d")
                .arg(&sdir)
                .arg(&swarm.torrent);
            let log = format!("bt-seeder{i}");
            swarm.seeders.push(ctx.procs.spawn(&log, cmd)?);
            logs.push(ctx.procs.log_path(&log));
        }
        // Seeding once the summary says SEED; give the announce a moment after that.
        let deadline = Instant::now() + Duration::from_secs(120);
        for (pid, log) in swarm.seeders.iter().zip(&logs) {
            loop {
                ctx.procs.check_running(*pid)?;
                let text = std::fs::read_to_string(log).unwrap_or_default();
                if text.contains("SEED(") {
                    break;
                }
                if text.contains("ERROR") || Instant::now() > deadline {
                    bail!(
                        "seeder did not start seeding: {}",
                        crate::procs::log_tail(log, 6)
                    );
                }
                std::thread::sleep(Duration::from_millis(100));
            }
        }
        std::thread::sleep(Duration::from_millis(500));
        Ok(swarm)
    }

    /// The leecher's arguments: download into `dir`, exit when complete.
    pub fn leech_args(&self, dir: &Path) -> Result<Vec<String>> {
        let mut a = aria2_bt_flags(free_port()?);
        a.extend([
            "--seed-time=0".to_string(),
            "--summary-interval=0".to_string(),
            "-d".to_string(),
            dir.display().to_string(),
            self.torrent.display().to_string(),
        ]);
        Ok(a)
    }

    /// Seeders first (their "stopped" announce needs the tracker), then the tracker.
    pub fn stop(self, ctx: &Ctx) {
        for pid in &self.seeders {
            ctx.procs.stop(*pid, Duration::from_secs(3));
        }
        ctx.procs.stop(self.tracker_pid, Duration::from_secs(3));
    }
}
