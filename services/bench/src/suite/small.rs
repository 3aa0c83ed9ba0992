//! Small calls: what one metadata call and one CLI command cost on loopback.
//!
//! - sequential unary calls over one HTTP/2 connection (`ClusterInfo`, `StatFile` of a
//!   1-chunk and a many-chunk file, `ListFiles` of about BENCH_SMALL_FILES names):
//!   p50/p99 of BENCH_SMALL_CALLS calls per run;
//! - wall time of one `shoal ls`, 4 KiB `put` and 4 KiB `get` process, through the
//!   webserver (`--endpoint`, Discover first) and with `--tracker` (BENCH_SMALL_CLI runs);
//! - BENCH_SMALL_FILES sequential 4 KiB puts, then gets, from one CLI loop and through
//!   the HTTP gateway (`curl`), in files per second.
//!
//! Every file has its own content (no deduplication shortcut). Everything is on 127.0.0.1.

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use shoal_proto::v1 as pb;
use shoal_proto::v1::tracker_client::TrackerClient;

use super::{make_file, Bench};
use crate::report::MetaRow;
use crate::stats::{ms, Latencies};

const SMALL: u64 = 4096;

/// Where a CLI command goes: through the webserver's Discover, or to the tracker.
#[derive(Clone, Copy, PartialEq)]
enum Via {
    Webserver,
    Tracker,
}

impl Via {
    fn label(self) -> &'static str {
        match self {
            Via::Webserver => "via webserver",
            Via::Tracker => "`--tracker`",
        }
    }
}

/// A plain tonic channel (client sockets have TCP_NODELAY): the tracker is measured,
/// not client middleware.
fn tracker(url: &str) -> Result<TrackerClient<tonic::transport::Channel>> {
    let ch = tonic::transport::Endpoint::from_shared(url.to_string())
        .context("tracker URL")?
        .tcp_nodelay(true)
        .connect_lazy();
    Ok(TrackerClient::new(ch).max_decoding_message_size(shoal_common::grpc::MAX_MESSAGE_BYTES))
}

impl Bench {
    fn cli_args(&self, via: Via) -> Result<Vec<String>> {
        let c = self.cluster.as_ref().context("no cluster")?;
        Ok(match via {
            Via::Tracker => vec!["--tracker".into(), c.tracker_url.clone()],
            Via::Webserver => vec![
                "--endpoint".into(),
                c.web.as_ref().context("no webserver")?.grpc_url.clone(),
            ],
        })
    }

    /// Run one short command to completion; its wall time, or why it failed.
    fn run_quiet(program: &Path, args: &[String]) -> Result<Duration> {
        let t = Instant::now();
        let out = Command::new(program)
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .output()
            .with_context(|| format!("starting {}", program.display()))?;
        let wall = t.elapsed();
        if !out.status.success() {
            bail!(
                "{} {} exited with {}: {}",
                program.display(),
                args.join(" "),
                out.status,
                String::from_utf8_lossy(&out.stderr).trim()
            );
        }
        Ok(wall)
    }

    /// `count` small files of distinct content in `dir` (named f0, f1, …).
    fn small_files(dir: &Path, count: usize, seed: u64) -> Result<()> {
        std::fs::create_dir_all(dir)?;
        for i in 0..count {
            make_file(
                &dir.join(format!("f{i}")),
                SMALL,
                seed * 1_000_000 + i as u64,
            )?;
        }
        Ok(())
    }

    /// The whole section: rows are appended to `rows` (skipped or failed rows say so).
    pub(super) fn small_rows(&mut self, rows: &mut Vec<MetaRow>) -> Result<()> {
        self.new_cluster("small")?;
        let c = self.cluster.as_mut().context("no cluster")?;
        c.start_webserver(&self.ctx)?;
        let root = self.work.join("small-files");
        let _ = std::fs::remove_dir_all(&root);
        let (n, cli_runs) = (self.a.small_files, self.a.small_cli);

        // One CLI command at a time, as a person at a prompt.
        for via in [Via::Webserver, Via::Tracker] {
            let tag = if via == Via::Webserver { "w" } else { "t" };
            let src = root.join(format!("cli-{tag}"));
            Self::small_files(&src, cli_runs, 900 + via as u64)?;
            let out = root.join(format!("cli-{tag}-out"));
            std::fs::create_dir_all(&out)?;
            let base = self.cli_args(via)?;
            let mut puts = Vec::new();
            let mut gets = Vec::new();
            let mut lss = Vec::new();
            for i in 0..cli_runs {
                let name = format!("cli-{tag}-{i}");
                let mut a = base.clone();
                a.extend([
                    "put".into(),
                    src.join(format!("f{i}")).display().to_string(),
                    "--name".into(),
                    name.clone(),
                ]);
                puts.push(Self::run_quiet(&self.shoal(), &a)?);
                let mut a = base.clone();
                a.extend([
                    "get".into(),
                    name,
                    "-o".into(),
                    out.join(format!("f{i}")).display().to_string(),
                ]);
                gets.push(Self::run_quiet(&self.shoal(), &a)?);
                let mut a = base.clone();
                a.push("ls".into());
                lss.push(Self::run_quiet(&self.shoal(), &a)?);
            }
            for (what, lat) in [
                ("`shoal ls`", lss),
                ("`shoal put` 4 KiB", puts),
                ("`shoal get` 4 KiB", gets),
            ] {
                let lat = Latencies::new(lat);
                let mut row = MetaRow::new(&format!("{what} {}", via.label()));
                row.rate.push(1.0 / lat.pct(50.0).as_secs_f64().max(1e-9));
                row.p50_ms.push(ms(lat.pct(50.0)));
                row.p99_ms.push(ms(lat.pct(99.0)));
                row.max_ms.push(ms(lat.max()));
                row.note = format!("wall time of one CLI process, {cli_runs} runs");
                rows.push(row);
            }
        }

        // Many small files in a row, from one CLI loop and through the HTTP gateway.
        let mut cli_put = MetaRow::new(&format!("{n} sequential 4 KiB `shoal put` (files/s)"));
        let mut cli_get = MetaRow::new(&format!("{n} sequential 4 KiB `shoal get` (files/s)"));
        let mut web_put = MetaRow::new(&format!("{n} sequential 4 KiB HTTP uploads (files/s)"));
        let mut web_get = MetaRow::new(&format!("{n} sequential 4 KiB HTTP downloads (files/s)"));
        let curl = crate::compare::find_tool("curl").context("curl not found")?;
        let mut unary_done = false;
        for run in 0..self.a.runs {
            let src = root.join(format!("loop-{run}"));
            Self::small_files(&src, n, run as u64 + 1)?;
            let out = root.join(format!("loop-{run}-out"));
            std::fs::create_dir_all(&out)?;
            let base = self.cli_args(Via::Webserver)?;
            let put_args = |i: usize| {
                let mut a = base.clone();
                a.extend([
                    "put".into(),
                    src.join(format!("f{i}")).display().to_string(),
                    "--name".into(),
                    format!("loop-{run}-{i}"),
                ]);
                a
            };
            let get_args = |i: usize| {
                let mut a = base.clone();
                a.extend([
                    "get".into(),
                    format!("loop-{run}-{i}"),
                    "-o".into(),
                    out.join(format!("f{i}")).display().to_string(),
                ]);
                a
            };
            let shoal = self.shoal();
            self.files_per_second(&shoal, n, put_args, &mut cli_put, "CLI put")?;
            self.files_per_second(&shoal, n, get_args, &mut cli_get, "CLI get")?;
            if !unary_done {
                // With the first loop's files in the catalogue: ListFiles of about n names.
                unary_done = true;
                self.unary_rows(&root, rows)?;
            }

            let http = self
                .cluster
                .as_ref()
                .and_then(|c| c.web.as_ref())
                .map(|w| w.http_url.clone())
                .context("no webserver")?;
            let hsrc = root.join(format!("http-{run}"));
            Self::small_files(&hsrc, n, 100 + run as u64)?;
            let hout = root.join(format!("http-{run}-out"));
            std::fs::create_dir_all(&hout)?;
            let up = |i: usize| -> Vec<String> {
                vec![
                    "-sSf".into(),
                    "-o".into(),
                    "/dev/null".into(),
                    // The name first: the webserver stores the file as it arrives.
                    "-F".into(),
                    format!("name=http-{run}-{i}"),
                    "-F".into(),
                    format!("file=@{}", hsrc.join(format!("f{i}")).display()),
                    format!("{http}/upload"),
                ]
            };
            let down = |i: usize| -> Vec<String> {
                vec![
                    "-sSf".into(),
                    "-o".into(),
                    hout.join(format!("f{i}")).display().to_string(),
                    format!("{http}/download/http-{run}-{i}"),
                ]
            };
            self.files_per_second(&curl, n, up, &mut web_put, "HTTP upload")?;
            self.files_per_second(&curl, n, down, &mut web_get, "HTTP download")?;
            for (dir, got) in [(&src, &out), (&hsrc, &hout)] {
                for i in [0, n / 2, n - 1] {
                    let f = format!("f{i}");
                    if std::fs::read(dir.join(&f))? != std::fs::read(got.join(&f))? {
                        bail!("small file {f} of run {run} came back different");
                    }
                }
            }
            let _ = std::fs::remove_dir_all(&src);
            let _ = std::fs::remove_dir_all(&out);
            let _ = std::fs::remove_dir_all(&hsrc);
            let _ = std::fs::remove_dir_all(&hout);
        }
        cli_put.note = "one `shoal --endpoint WEBSERVER put` process per file, R=3".into();
        cli_get.note = "one `shoal --endpoint WEBSERVER get` process per file".into();
        web_put.note = "one `curl -F file=@… /upload` per file, R=3".into();
        web_get.note = "one `curl /download/NAME` per file".into();
        rows.extend([cli_put, cli_get, web_put, web_get]);
        Ok(())
    }

    /// Run `program args(i)` for i in 0..n one after another; one files/s sample.
    fn files_per_second(
        &mut self,
        program: &Path,
        n: usize,
        args: impl Fn(usize) -> Vec<String>,
        row: &mut MetaRow,
        what: &str,
    ) -> Result<()> {
        let mut lat = Vec::with_capacity(n);
        let t = Instant::now();
        for i in 0..n {
            lat.push(Self::run_quiet(program, &args(i)).with_context(|| format!("{what} {i}"))?);
        }
        let rate = n as f64 / t.elapsed().as_secs_f64().max(1e-9);
        let lat = Latencies::new(lat);
        row.rate.push(rate);
        row.p50_ms.push(ms(lat.pct(50.0)));
        row.p99_ms.push(ms(lat.pct(99.0)));
        row.max_ms.push(ms(lat.max()));
        self.raw(format!(
            "{what}: {n} files in {:.2} s = {rate:.1} files/s, p50 {:.1} ms, p99 {:.1} ms",
            t.elapsed().as_secs_f64(),
            ms(lat.pct(50.0)),
            ms(lat.pct(99.0))
        ));
        Ok(())
    }

    /// Sequential unary calls over one connection: p50/p99 per run, BENCH_RUNS runs.
    fn unary_rows(&mut self, root: &Path, rows: &mut Vec<MetaRow>) -> Result<()> {
        // A file of many chunks (about 256 at the default chunk sizes) and one of one.
        let big = root.join("many-chunks.bin");
        make_file(&big, self.size.min(256 << 20), 77)?;
        let base = self.cli_args(Via::Tracker)?;
        for (file, name) in [(&big, "many-chunks"), (&root.join("cli-t/f0"), "one-chunk")] {
            let mut a = base.clone();
            a.extend([
                "put".into(),
                file.display().to_string(),
                "--name".into(),
                name.into(),
            ]);
            Self::run_quiet(&self.shoal(), &a)?;
        }
        let _ = std::fs::remove_file(&big);
        let url = self
            .cluster
            .as_ref()
            .context("no cluster")?
            .tracker_url
            .clone();
        let calls = self.a.small_calls;
        let mut c = {
            let _rt = self.ctx.rt.enter(); // the channel's connection task needs a runtime
            tracker(&url)?
        };
        let runs = self.a.runs;
        let (files, chunks) = self.ctx.rt.block_on(async {
            let files = c
                .list_files(pb::ListFilesRequest::default())
                .await?
                .into_inner();
            let detail = c
                .stat_file(pb::StatFileRequest {
                    name_or_id: "many-chunks".into(),
                })
                .await?
                .into_inner();
            Ok::<_, tonic::Status>((files.files.len(), detail.chunks.len()))
        })?;
        let methods: [(String, u8); 4] = [
            ("`ClusterInfo`".into(), 0),
            ("`StatFile` (1 chunk)".into(), 1),
            (format!("`StatFile` ({chunks} chunks)"), 2),
            (format!("`ListFiles` ({files} files)"), 3),
        ];
        for (label, m) in methods {
            let mut row = MetaRow::new(&format!("{label}, sequential, one connection"));
            for run in 0..runs {
                let (lat, elapsed) = self.ctx.rt.block_on(async {
                    let mut lat = Vec::with_capacity(calls);
                    let start = Instant::now();
                    for _ in 0..calls {
                        let t = Instant::now();
                        match m {
                            0 => c.cluster_info(pb::ClusterInfoRequest {}).await.map(drop),
                            1 | 2 => c
                                .stat_file(pb::StatFileRequest {
                                    name_or_id: if m == 1 { "one-chunk" } else { "many-chunks" }
                                        .into(),
                                })
                                .await
                                .map(drop),
                            _ => c
                                .list_files(pb::ListFilesRequest::default())
                                .await
                                .map(drop),
                        }?;
                        lat.push(t.elapsed());
                    }
                    Ok::<_, tonic::Status>((Latencies::new(lat), start.elapsed()))
                })?;
                row.rate
                    .push(calls as f64 / elapsed.as_secs_f64().max(1e-9));
                row.p50_ms.push(ms(lat.pct(50.0)));
                row.p99_ms.push(ms(lat.pct(99.0)));
                row.max_ms.push(ms(lat.max()));
                self.raw(format!(
                    "{label} run {run}: {calls} calls, p50 {:.3} ms, p99 {:.3} ms",
                    ms(lat.pct(50.0)),
                    ms(lat.pct(99.0))
                ));
            }
            row.note = format!("{calls} calls per run, each waiting for the last");
            rows.push(row);
        }
        Ok(())
    }
}
