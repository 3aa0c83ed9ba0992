//! `shoal-bench`: the benchmark behind `make bench` (`run`), and the tracker load
//! generators it uses, runnable on their own (`rpc-load`, `heartbeats`).
//!
//! Everything it starts or dials is on 127.0.0.1; every loop is bounded.

mod cluster;
mod compare;
mod load;
mod procs;
mod report;
mod scale;
mod stats;
mod suite;

use std::process::ExitCode;

use anyhow::Result;
use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(name = "shoal-bench", version, about = "shoal benchmarks on loopback")]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// The whole benchmark: prints a markdown table and writes it to --out.
    Run(suite::Args),
    /// Unary RPCs against a tracker: rate and latency percentiles.
    RpcLoad(load::RpcArgs),
    /// Fake peers registering and heartbeating against a tracker.
    Heartbeats(load::HeartbeatArgs),
    /// One tracker with a real catalogue: register storm, heartbeats, memory per copy
    /// and metadata rates with 10,000 simulated peers (`make bench-scale`).
    Scale(scale::ScaleArgs),
    /// A loopback cluster (tracker + peers, scrub off) kept up until SIGINT/SIGTERM or
    /// --max-time, for profiling by hand (scripts/bench-profile.sh).
    Cluster(ClusterArgs),
}

#[derive(clap::Args)]
struct ClusterArgs {
    /// Data directory (created; removed on exit).
    #[arg(long)]
    dir: std::path::PathBuf,
    #[arg(long, default_value_t = 3)]
    peers: usize,
    /// Directory of the shoal binaries.
    #[arg(long, env = "BENCH_BIN", default_value = "target/release")]
    bin: std::path::PathBuf,
    #[arg(long, default_value = "1h", value_parser = humantime::parse_duration)]
    max_time: std::time::Duration,
}

fn keep_cluster(a: ClusterArgs) -> Result<bool> {
    use std::io::Write;
    let ctx = cluster::Ctx {
        procs: procs::Procs::new(&a.dir.join("logs"), None)?,
        rt: tokio::runtime::Runtime::new()?,
        bin: std::fs::canonicalize(&a.bin)?,
    };
    let c = cluster::Cluster::start(&ctx, &a.dir.join("data"), "cluster", a.peers)?;
    let pids: Vec<String> = c.peers.iter().map(|p| p.pid.to_string()).collect();
    let addrs: Vec<String> = c
        .peers
        .iter()
        .map(|p| format!("127.0.0.1:{}", p.port))
        .collect();
    println!("tracker={}", c.tracker_url);
    println!("tracker_pid={}", c.tracker_pid);
    println!("peer_pids={}", pids.join(" "));
    println!("peer_addrs={}", addrs.join(" "));
    println!("ready");
    std::io::stdout().flush()?;
    ctx.rt.block_on(async {
        use tokio::signal::unix::{signal, SignalKind};
        let mut term = signal(SignalKind::terminate())?;
        tokio::select! {
            _ = tokio::signal::ctrl_c() => {}
            _ = term.recv() => {}
            _ = tokio::time::sleep(a.max_time) => {}
        }
        Ok::<_, std::io::Error>(())
    })?;
    c.destroy(&ctx);
    let _ = std::fs::remove_dir_all(&a.dir);
    Ok(true)
}

fn main() -> ExitCode {
    match run(Cli::parse()) {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::FAILURE,
        Err(e) => {
            eprintln!("shoal-bench: {e:#}");
            ExitCode::from(2)
        }
    }
}

fn run(cli: Cli) -> Result<bool> {
    match cli.cmd {
        Cmd::Run(a) => suite::run(a),
        Cmd::Scale(a) => scale::run(a),
        Cmd::Cluster(a) => keep_cluster(a),
        Cmd::RpcLoad(a) => {
            let rt = tokio::runtime::Runtime::new()?;
            let r = rt.block_on(load::rpc_load(&a))?;
            println!(
                "{:?}: {} ok, {} errors in {:.3} s = {:.0} req/s; latency p50 {:.2} ms, p99 {:.2} ms, max {:.2} ms",
                a.method,
                r.ok,
                r.errors,
                r.elapsed.as_secs_f64(),
                r.rate(),
                stats::ms(r.lat.pct(50.0)),
                stats::ms(r.lat.pct(99.0)),
                stats::ms(r.lat.max()),
            );
            if let Some(e) = r.first_error {
                eprintln!("first error: {e}");
            }
            Ok(r.errors == 0)
        }
        Cmd::Heartbeats(a) => {
            let rt = tokio::runtime::Runtime::new()?;
            let r = rt.block_on(load::heartbeats(&a))?;
            println!(
                "{} peers registered in {:.2} s (p99 {:.2} ms); heartbeat every {} ms for {} s: {} sent, {} errors, {} known=false/resync; latency p50 {:.2} ms, p99 {:.2} ms, max {:.2} ms; worst send lateness {:.1} ms",
                r.peers,
                r.register_elapsed.as_secs_f64(),
                stats::ms(r.register_lat.pct(99.0)),
                r.interval.as_millis(),
                a.duration.as_secs(),
                r.sent,
                r.errors,
                r.anomalies,
                stats::ms(r.lat.pct(50.0)),
                stats::ms(r.lat.pct(99.0)),
                stats::ms(r.lat.max()),
                stats::ms(r.max_lateness),
            );
            if let Some(e) = r.first_error {
                eprintln!("first error: {e}");
            }
            Ok(r.errors == 0)
        }
    }
}
