//! The processes the benchmark starts, and what it reads about them from /proc.
//!
//! Every child is registered, and its pid is kept in a pid file that the wrapper
//! script's EXIT trap reads, so nothing outlives an interrupted run. A process is
//! stopped by its pid (and its descendants' pids): SIGTERM, then SIGKILL after a grace
//! period. Timed commands run under GNU time (`/usr/bin/time`) for the child's peak RSS
//! (wait4's maxrss), with the wall clock taken here.

use std::collections::BTreeMap;
use std::fs::{self, File};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{mpsc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context, Result};

pub const GNU_TIME: &str = "/usr/bin/time";

/// A long-running process (a service, nginx, a seeder).
struct Service {
    name: String,
    child: Child,
}

pub struct Procs {
    services: Mutex<Vec<Service>>,
    /// pid → name of everything alive that this run started (services and timed commands).
    live: Mutex<BTreeMap<u32, String>>,
    pidfile: Option<PathBuf>,
    pub logs: PathBuf,
}

/// A finished timed command.
#[derive(Debug, Clone)]
pub struct Timed {
    pub wall: Duration,
    /// Peak RSS of the command (KiB), from wait4 via GNU time.
    pub maxrss_kib: u64,
    /// User + system CPU-seconds of the command, from wait4 via GNU time.
    pub cpu_s: f64,
    pub status: ExitStatus,
    pub log: PathBuf,
}

impl Timed {
    /// The command's result as an error when it failed, with the end of its log.
    pub fn check(&self, what: &str) -> Result<()> {
        if self.status.success() {
            return Ok(());
        }
        bail!(
            "{what} exited with {}: {}",
            self.status,
            log_tail(&self.log, 6)
        )
    }
}

/// A timed command in flight.
pub struct Pending {
    pid: u32,
    started: Instant,
    done: mpsc::Receiver<(Instant, std::io::Result<ExitStatus>)>,
    rss_file: PathBuf,
    log: PathBuf,
}

impl Procs {
    pub fn new(logs: &Path, pidfile: Option<PathBuf>) -> Result<Self> {
        fs::create_dir_all(logs).with_context(|| format!("creating {}", logs.display()))?;
        let p = Self {
            services: Mutex::new(Vec::new()),
            live: Mutex::new(BTreeMap::new()),
            pidfile,
            logs: logs.to_path_buf(),
        };
        p.write_pidfile();
        Ok(p)
    }

    fn write_pidfile(&self) {
        let Some(path) = &self.pidfile else { return };
        let live = self.live.lock().unwrap_or_else(|p| p.into_inner());
        let text: String = live.keys().map(|p| format!("{p}\n")).collect();
        // Best effort: the pid file is a safety net for the wrapper's trap only.
        let _ = fs::write(path, text);
    }

    fn note(&self, pid: u32, name: &str) {
        self.live
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(pid, name.to_string());
        self.write_pidfile();
    }

    fn forget(&self, pid: u32) {
        self.live
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(&pid);
        self.write_pidfile();
    }

    pub fn log_path(&self, name: &str) -> PathBuf {
        self.logs.join(format!("{name}.log"))
    }

    fn redirect(&self, cmd: &mut Command, name: &str) -> Result<PathBuf> {
        let path = self.log_path(name);
        let log = File::create(&path).with_context(|| format!("creating {}", path.display()))?;
        cmd.stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log);
        Ok(path)
    }

    /// Start a long-running process; its output goes to `logs/NAME.log`.
    pub fn spawn(&self, name: &str, mut cmd: Command) -> Result<u32> {
        self.redirect(&mut cmd, name)?;
        let child = cmd
            .spawn()
            .with_context(|| format!("starting {name} ({:?})", cmd.get_program()))?;
        let pid = child.id();
        self.note(pid, name);
        self.services
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push(Service {
                name: name.to_string(),
                child,
            });
        Ok(pid)
    }

    /// An error if the service `pid` has exited (with the end of its log).
    pub fn check_running(&self, pid: u32) -> Result<()> {
        let mut services = self.services.lock().unwrap_or_else(|p| p.into_inner());
        let Some(s) = services.iter_mut().find(|s| s.child.id() == pid) else {
            bail!("process {pid} is not one of ours");
        };
        if let Some(status) = s.child.try_wait()? {
            let name = s.name.clone();
            drop(services);
            self.forget(pid);
            bail!(
                "{name} exited early with {status}: {}",
                log_tail(&self.log_path(&name), 8)
            );
        }
        Ok(())
    }

    /// Stop a service started by `spawn`: SIGTERM to it and its descendants, SIGKILL
    /// after `grace`.
    pub fn stop(&self, pid: u32, grace: Duration) {
        let service = {
            let mut services = self.services.lock().unwrap_or_else(|p| p.into_inner());
            services
                .iter()
                .position(|s| s.child.id() == pid)
                .map(|i| services.swap_remove(i))
        };
        if let Some(mut s) = service {
            terminate(&mut s.child, grace);
        }
        self.forget(pid);
    }

    /// Stop every service still running (reverse start order).
    pub fn stop_all(&self) {
        let all: Vec<Service> = {
            let mut services = self.services.lock().unwrap_or_else(|p| p.into_inner());
            services.drain(..).rev().collect()
        };
        for mut s in all {
            terminate(&mut s.child, Duration::from_secs(5));
            self.forget(s.child.id());
        }
        // Timed commands abandoned by an error path.
        let left: Vec<u32> = self
            .live
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .keys()
            .copied()
            .collect();
        for pid in left {
            signal_tree(pid, "KILL");
            self.forget(pid);
        }
    }

    /// Start `program args` under GNU time; output to `logs/NAME.log`.
    pub fn start_timed(
        &self,
        name: &str,
        program: &Path,
        args: &[String],
        env: &[(String, String)],
    ) -> Result<Pending> {
        let rss_file = self.logs.join(format!("{name}.maxrss"));
        let mut cmd = Command::new(GNU_TIME);
        cmd.arg("-f")
            .arg("%M %U %S")
            .arg("-o")
            .arg(&rss_file)
            .arg(program)
            .args(args);
        clean_env(&mut cmd);
        cmd.envs(env.iter().map(|(k, v)| (k, v)));
        let log = self.redirect(&mut cmd, name)?;
        let started = Instant::now();
        let mut child = cmd
            .spawn()
            .with_context(|| format!("starting {GNU_TIME} {}", program.display()))?;
        let pid = child.id();
        self.note(pid, name);
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            let r = child.wait();
            let _ = tx.send((Instant::now(), r));
        });
        Ok(Pending {
            pid,
            started,
            done: rx,
            rss_file,
            log,
        })
    }

    /// Wait for a timed command; killed (with its descendants) after `timeout`.
    pub fn finish(&self, p: Pending, timeout: Duration) -> Result<Timed> {
        let r = match p.done.recv_timeout(timeout) {
            Ok(r) => r,
            Err(_) => {
                signal_tree(p.pid, "KILL");
                self.forget(p.pid);
                let _ = p.done.recv_timeout(Duration::from_secs(10));
                bail!(
                    "timed out after {} s: {}",
                    timeout.as_secs(),
                    log_tail(&p.log, 6)
                );
            }
        };
        self.forget(p.pid);
        let (ended, status) = r;
        let status = status.context("waiting for a timed command")?;
        // The last line "MAXRSS USER SYS" (a failed command's status line comes first).
        let (maxrss_kib, cpu_s) = fs::read_to_string(&p.rss_file)
            .ok()
            .and_then(|s| {
                s.lines().rev().find_map(|l| {
                    let f: Vec<&str> = l.split_whitespace().collect();
                    let [m, u, s] = f[..] else { return None };
                    let cpu = u.parse::<f64>().ok()? + s.parse::<f64>().ok()?;
                    Some((m.parse::<u64>().ok()?, cpu))
                })
            })
            .unwrap_or((0, 0.0));
        Ok(Timed {
            wall: ended - p.started,
            maxrss_kib,
            cpu_s,
            status,
            log: p.log,
        })
    }

    /// Start and wait for one timed command.
    pub fn run_timed(
        &self,
        name: &str,
        program: &Path,
        args: &[String],
        timeout: Duration,
    ) -> Result<Timed> {
        let p = self.start_timed(name, program, args, &[])?;
        self.finish(p, timeout)
    }
}

impl Drop for Procs {
    fn drop(&mut self) {
        self.stop_all();
    }
}

/// Children see no SHOAL_* or RUST_LOG from the caller's environment: the benchmark's
/// configuration is only what it sets (services refuse unknown SHOAL_ variables).
pub fn clean_env(cmd: &mut Command) {
    for (k, _) in std::env::vars_os() {
        let k = k.to_string_lossy();
        if k.starts_with("SHOAL_") || k == "RUST_LOG" {
            cmd.env_remove(k.as_ref());
        }
    }
}

fn terminate(child: &mut Child, grace: Duration) {
    if matches!(child.try_wait(), Ok(Some(_))) {
        return;
    }
    signal_tree(child.id(), "TERM");
    let deadline = Instant::now() + grace;
    while Instant::now() < deadline {
        if matches!(child.try_wait(), Ok(Some(_))) {
            return;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    signal_tree(child.id(), "KILL");
    let _ = child.wait();
}

/// User + system CPU-seconds used so far by the processes `pids` (all their threads),
/// from /proc/PID/stat; a process that is gone counts 0.
pub fn proc_cpu_seconds(pids: &[u32]) -> f64 {
    let ticks: u64 = pids
        .iter()
        .filter_map(|p| {
            let s = fs::read_to_string(format!("/proc/{p}/stat")).ok()?;
            // After "pid (comm)": state is field 3, utime 14, stime 15.
            let rest: Vec<&str> = s[s.rfind(')')? + 1..].split_whitespace().collect();
            Some(rest.get(11)?.parse::<u64>().ok()? + rest.get(12)?.parse::<u64>().ok()?)
        })
        .sum();
    ticks as f64 / clock_ticks()
}

/// `pid` and its children (nginx's master and workers).
pub fn with_children(pid: u32) -> Vec<u32> {
    let mut v = vec![pid];
    v.extend(children_of(pid));
    v
}

/// The pids whose parent is `pid`, from /proc/*/stat.
fn children_of(pid: u32) -> Vec<u32> {
    let Ok(dir) = fs::read_dir("/proc") else {
        return Vec::new();
    };
    dir.filter_map(|e| e.ok())
        .filter_map(|e| e.file_name().to_str()?.parse::<u32>().ok())
        .filter(|&p| {
            fs::read_to_string(format!("/proc/{p}/stat"))
                .ok()
                .and_then(|s| {
                    // "pid (comm) state ppid ...": comm may hold spaces and parentheses.
                    let rest = &s[s.rfind(')')? + 1..];
                    rest.split_whitespace().nth(1)?.parse::<u32>().ok()
                })
                == Some(pid)
        })
        .collect()
}

/// Send SIGNAL to `pid` and every descendant (descendants first), by pid.
pub fn signal_tree(pid: u32, signal: &str) {
    let mut all = vec![pid];
    let mut i = 0;
    while i < all.len() {
        all.extend(children_of(all[i]));
        i += 1;
    }
    for p in all.iter().rev() {
        let _ = Command::new("kill")
            .arg(format!("-{signal}"))
            .arg(p.to_string())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
    }
}

/// The last `n` lines of a log, on one line.
pub fn log_tail(path: &Path, n: usize) -> String {
    let text = fs::read_to_string(path).unwrap_or_default();
    let lines: Vec<&str> = text.lines().filter(|l| !l.trim().is_empty()).collect();
    let tail = lines[lines.len().saturating_sub(n)..].join(" | ");
    if tail.is_empty() {
        format!("(empty log {})", path.display())
    } else {
        format!("{tail} (log {})", path.display())
    }
}

/// Busy CPU-seconds of the whole box since boot (every state of /proc/stat's `cpu`
/// line except idle and iowait).
pub fn box_cpu_seconds() -> Result<f64> {
    let stat = fs::read_to_string("/proc/stat").context("reading /proc/stat")?;
    let line = stat
        .lines()
        .find(|l| l.starts_with("cpu "))
        .ok_or_else(|| anyhow!("/proc/stat has no cpu line"))?;
    let v: Vec<u64> = line
        .split_whitespace()
        .skip(1)
        .filter_map(|x| x.parse().ok())
        .collect();
    if v.len() < 8 {
        bail!("/proc/stat cpu line too short: {line}");
    }
    // user nice system idle iowait irq softirq steal (guest is already in user)
    let busy = v[0] + v[1] + v[2] + v[5] + v[6] + v[7];
    Ok(busy as f64 / clock_ticks())
}

fn clock_ticks() -> f64 {
    static TICKS: std::sync::OnceLock<f64> = std::sync::OnceLock::new();
    *TICKS.get_or_init(|| {
        Command::new("getconf")
            .arg("CLK_TCK")
            .output()
            .ok()
            .and_then(|o| String::from_utf8_lossy(&o.stdout).trim().parse().ok())
            .unwrap_or(100.0)
    })
}

/// A `Vm*` field of /proc/PID/status in KiB (VmHWM: peak since start; VmRSS: now).
pub fn vm_kib(pid: u32, field: &str) -> Option<u64> {
    let s = fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    s.lines()
        .find(|l| l.starts_with(field) && l[field.len()..].starts_with(':'))?
        .split_whitespace()
        .nth(1)?
        .parse()
        .ok()
}

/// What else the machine was doing as a section started, for the record: load averages,
/// the busy share of all CPUs over one second, and how many compilers were running.
pub fn load_note() -> String {
    let load = fs::read_to_string("/proc/loadavg")
        .map(|s| s.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_else(|_| "?".into());
    let busy = (|| {
        let c0 = box_cpu_seconds().ok()?;
        let t0 = Instant::now();
        std::thread::sleep(Duration::from_secs(1));
        let c1 = box_cpu_seconds().ok()?;
        let cpus = std::thread::available_parallelism().ok()?.get() as f64;
        Some(100.0 * (c1 - c0) / (t0.elapsed().as_secs_f64() * cpus))
    })()
    .map(|b| format!("{b:.0}%"))
    .unwrap_or_else(|| "?".into());
    let rustc = Command::new("pgrep")
        .arg("-c")
        .arg("-x")
        .arg("rustc")
        .output()
        .ok()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
        .unwrap_or_else(|| "?".into());
    format!("load {load}, box busy {busy} over 1 s before, rustc processes {rustc}")
}

/// Flush dirty pages so one run's writeback does not land in the next run's time.
pub fn sync() {
    let _ = Command::new("sync").status();
}

/// The CPU model and core count, for reports (figures compare within one host only).
pub fn cpu_model() -> String {
    let info = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let model = info
        .lines()
        .find_map(|l| l.strip_prefix("model name"))
        .and_then(|l| l.split_once(':'))
        .map(|(_, m)| m.trim().to_string())
        .unwrap_or_else(|| "unknown CPU".into());
    let cores = std::thread::available_parallelism().map_or(0, |n| n.get());
    format!("{model}, {cores} cores")
}
