//! The results as markdown: transfer rows, metadata rows, goals (✅/❌), peak RSS
//! during a put, the machine and the load while each section ran.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use crate::stats::Samples;

pub const MB: f64 = 1e6;
pub const GIB: f64 = (1u64 << 30) as f64;

/// One row of the transfer table.
#[derive(Debug, Default)]
pub struct Row {
    pub label: String,
    /// Bytes moved in one run.
    pub bytes: u64,
    pub wall: Samples,
    pub mbps: Samples,
    pub cpu_per_gib: Samples,
    /// CPU-seconds of the processes doing the transfer (client and servers), per GiB:
    /// unlike box CPU, it does not count other work on a shared machine.
    pub proc_cpu_per_gib: Samples,
    /// Peak RSS (KiB) per process, the highest over the runs.
    pub rss: BTreeMap<String, u64>,
    pub note: String,
    pub error: Option<String>,
    pub skipped: bool,
}

impl Row {
    pub fn new(label: &str, bytes: u64) -> Self {
        Self {
            label: label.to_string(),
            bytes,
            ..Default::default()
        }
    }

    /// Record one run: wall seconds and busy box CPU-seconds.
    pub fn add_run(&mut self, wall: f64, cpu: f64) {
        self.wall.push(wall);
        self.mbps.push(self.bytes as f64 / MB / wall.max(1e-9));
        self.cpu_per_gib
            .push(cpu / (self.bytes as f64 / GIB).max(1e-12));
    }

    /// Record one run's CPU-seconds of the transfer's own processes.
    pub fn add_proc_cpu(&mut self, cpu: f64) {
        self.proc_cpu_per_gib
            .push(cpu / (self.bytes as f64 / GIB).max(1e-12));
    }

    pub fn rss(&mut self, who: &str, kib: Option<u64>) {
        if let Some(k) = kib {
            let e = self.rss.entry(who.to_string()).or_default();
            *e = (*e).max(k);
        }
    }

    pub fn max_rss(&self, prefix: &str) -> Option<u64> {
        self.rss
            .iter()
            .filter(|(k, _)| k.starts_with(prefix))
            .map(|(_, v)| *v)
            .max()
    }

    fn rss_text(&self) -> String {
        self.rss
            .iter()
            .map(|(k, v)| format!("{k} {:.0}", *v as f64 / 1024.0))
            .collect::<Vec<_>>()
            .join(", ")
    }

    pub fn ok(&self) -> bool {
        self.error.is_none() && !self.skipped && !self.wall.is_empty()
    }
}

/// One row of the metadata table.
#[derive(Debug, Default)]
pub struct MetaRow {
    pub label: String,
    /// Requests per second, per run.
    pub rate: Samples,
    pub p50_ms: Samples,
    pub p99_ms: Samples,
    pub max_ms: Samples,
    pub errors: u64,
    pub note: String,
    pub error: Option<String>,
    pub skipped: bool,
}

impl MetaRow {
    pub fn new(label: &str) -> Self {
        Self {
            label: label.to_string(),
            ..Default::default()
        }
    }
    pub fn ok(&self) -> bool {
        self.error.is_none() && !self.skipped && !self.rate.is_empty()
    }
}

pub struct Goal {
    pub what: String,
    pub target: String,
    pub measured: String,
    /// None: not measured.
    pub met: Option<bool>,
}

#[derive(Default)]
pub struct Report {
    pub header: Vec<(String, String)>,
    pub sections: Vec<(String, String)>,
    pub rows: Vec<Row>,
    pub meta: Vec<MetaRow>,
    /// Small calls: one metadata call, one CLI command, many small files in a row.
    pub small: Vec<MetaRow>,
    pub ratios: Vec<(String, String)>,
    pub goals: Vec<Goal>,
    pub put_rss: Vec<(String, Option<u64>)>,
    pub raw: Vec<String>,
}

/// A row's note followed by its status (error or skipped), `; `-separated.
fn row_note(note: &str, error: &Option<String>, skipped: bool) -> String {
    let st = status(error, skipped);
    [note, st.as_str()]
        .into_iter()
        .filter(|x| !x.is_empty())
        .collect::<Vec<_>>()
        .join("; ")
}

fn status(error: &Option<String>, skipped: bool) -> String {
    if skipped {
        "skipped".into()
    } else if let Some(e) = error {
        format!("**FAILED**: {}", e.replace('|', "\\|").replace('\n', " "))
    } else {
        String::new()
    }
}

impl Report {
    pub fn row(&self, label_prefix: &str) -> Option<&Row> {
        self.rows.iter().find(|r| r.label.starts_with(label_prefix))
    }

    pub fn meta_row(&self, label_prefix: &str) -> Option<&MetaRow> {
        self.meta.iter().find(|r| r.label.starts_with(label_prefix))
    }

    pub fn failures(&self) -> Vec<String> {
        let mut f: Vec<String> = self
            .rows
            .iter()
            .filter_map(|r| r.error.as_ref().map(|e| format!("{}: {e}", r.label)))
            .collect();
        f.extend(
            self.meta
                .iter()
                .chain(&self.small)
                .filter_map(|r| r.error.as_ref().map(|e| format!("{}: {e}", r.label))),
        );
        f
    }

    pub fn markdown(&self) -> String {
        let mut s = String::new();
        let _ = writeln!(s, "# shoal benchmark results\n");
        for (k, v) in &self.header {
            let _ = writeln!(s, "- **{k}**: {v}");
        }
        let _ = writeln!(
            s,
            "\nMedians of the runs with (min–max). MB = 10^6 bytes. Box CPU = busy \
             CPU-seconds of the whole machine (/proc/stat) per GiB moved; Proc CPU = user + \
             system CPU-seconds of the transfer's own processes (client, peers or nginx) per \
             GiB, which other work on a shared machine does not inflate. Peak RSS in MiB \
             (CLI: wait4 maxrss; services: VmHWM, restarted before each run).\n"
        );
        let _ = writeln!(s, "## Transfers\n");
        let _ = writeln!(
            s,
            "| Row | Wall s | MB/s | Box CPU s/GiB | Proc CPU s/GiB | Peak RSS MiB | Notes |"
        );
        let _ = writeln!(s, "|---|---|---|---|---|---|---|");
        for r in &self.rows {
            let note = row_note(&r.note, &r.error, r.skipped);
            let _ = writeln!(
                s,
                "| {} | {} | {} | {} | {} | {} | {} |",
                r.label,
                r.wall.show(2),
                r.mbps.show(0),
                r.cpu_per_gib.show(2),
                r.proc_cpu_per_gib.show(2),
                r.rss_text(),
                note
            );
        }
        if !self.ratios.is_empty() {
            let _ = writeln!(s);
            for (k, v) in &self.ratios {
                let _ = writeln!(s, "- {k}: **{v}**");
            }
        }
        let _ = writeln!(s, "\n## Tracker metadata load\n");
        meta_table(&mut s, "Load", "Rate req/s", &self.meta);
        if !self.small.is_empty() {
            let _ = writeln!(s, "\n## Small calls\n");
            meta_table(&mut s, "Call", "Rate /s", &self.small);
        }
        let _ = writeln!(
            s,
            "\n## Peak RSS during `shoal put` (core issue: < 100 MiB each)\n"
        );
        let _ = writeln!(s, "| Process | Peak RSS MiB (max over runs) | < 100 MiB |");
        let _ = writeln!(s, "|---|---|---|");
        for (who, kib) in &self.put_rss {
            let (v, ok) = match kib {
                Some(k) => (
                    format!("{:.1}", *k as f64 / 1024.0),
                    if (*k as f64) < 100.0 * 1024.0 {
                        "✅"
                    } else {
                        "❌"
                    },
                ),
                None => ("–".into(), "–"),
            };
            let _ = writeln!(s, "| {who} | {v} | {ok} |");
        }
        let _ = writeln!(s, "\n## Goals\n");
        let _ = writeln!(s, "| Goal | Target | Measured | |");
        let _ = writeln!(s, "|---|---|---|---|");
        for g in &self.goals {
            let mark = match g.met {
                Some(true) => "✅",
                Some(false) => "❌",
                None => "–",
            };
            let _ = writeln!(s, "| {} | {} | {} | {mark} |", g.what, g.target, g.measured);
        }
        let _ = writeln!(s, "\n## Load while each section ran\n");
        for (k, v) in &self.sections {
            let _ = writeln!(s, "- {k}: {v}");
        }
        if !self.raw.is_empty() {
            let _ = writeln!(s, "\n## Runs\n\n```");
            for l in &self.raw {
                let _ = writeln!(s, "{l}");
            }
            let _ = writeln!(s, "```");
        }
        s
    }
}

fn meta_table(s: &mut String, first: &str, rate: &str, rows: &[MetaRow]) {
    let _ = writeln!(
        s,
        "| {first} | {rate} | p50 ms | p99 ms | max ms | Errors | Notes |"
    );
    let _ = writeln!(s, "|---|---|---|---|---|---|---|");
    for r in rows {
        let note = row_note(&r.note, &r.error, r.skipped);
        let _ = writeln!(
            s,
            "| {} | {} | {} | {} | {} | {} | {} |",
            r.label,
            r.rate.show(0),
            r.p50_ms.show(2),
            r.p99_ms.show(2),
            r.max_ms.show(1),
            r.errors,
            note
        );
    }
}
