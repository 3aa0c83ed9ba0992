//! What the CLI prints: aligned tables for people, stable JSON keys for scripts.

use std::io::Write as _;
use std::sync::Arc;

/// println! that ends quietly when stdout is closed (e.g. piped into `head`).
macro_rules! out {
    ($($t:tt)*) => {{
        if writeln!(std::io::stdout().lock(), $($t)*).is_err() {
            std::process::exit(0);
        }
    }};
}

use indicatif::{ProgressBar, ProgressStyle};
use serde_json::{json, Value};
use shoal_client::display::{human, state_word, status_word};
use shoal_client::{GetResult, Progress, PutResult};
use shoal_proto::v1 as pb;

fn table(header: &[&str], rows: Vec<Vec<String>>) {
    let mut widths: Vec<usize> = header.iter().map(|h| h.len()).collect();
    for r in &rows {
        for (i, c) in r.iter().enumerate() {
            widths[i] = widths[i].max(c.chars().count());
        }
    }
    let line = |cells: Vec<String>| {
        let s: Vec<String> = cells
            .iter()
            .enumerate()
            .map(|(i, c)| format!("{c:<w$}", w = widths[i]))
            .collect();
        out!("{}", s.join("  ").trim_end());
    };
    line(header.iter().map(|s| s.to_string()).collect());
    for r in rows {
        line(r);
    }
}

fn print_json(v: Value) {
    out!(
        "{}",
        serde_json::to_string_pretty(&v).expect("JSON values serialize")
    );
}

struct Bar(ProgressBar);

impl Progress for Bar {
    fn start(&self, total: u64, what: &str) {
        self.0.set_length(total);
        self.0.set_position(0);
        self.0.set_message(what.to_string());
    }
    fn advance(&self, n: u64) {
        self.0.inc(n);
    }
    fn finish(&self) {
        self.0.finish_and_clear();
    }
}

pub fn progress(show: bool) -> Arc<dyn Progress> {
    if !show {
        return Arc::new(shoal_client::Quiet);
    }
    let bar = ProgressBar::new(0);
    bar.set_style(
        ProgressStyle::with_template(
            "{msg:12} [{bar:40}] {bytes}/{total_bytes} {bytes_per_sec} eta {eta}",
        )
        .expect("valid template")
        .progress_chars("=> "),
    );
    Arc::new(Bar(bar))
}

pub fn put(r: &PutResult, json: bool) {
    if json {
        print_json(
            json!({"id": r.id, "name": r.name, "size": r.size, "chunk_size": r.chunk_size, "chunks": r.chunks}),
        );
    } else {
        out!("{}", r.id);
        let how = if r.deduplicated {
            " (content already stored: name added)"
        } else {
            ""
        };
        eprintln!(
            "stored {:?}: {}, {} chunks of {}{how}",
            r.name,
            human(r.size),
            r.chunks,
            human(r.chunk_size)
        );
    }
}

pub fn get(r: &GetResult, json: bool) {
    if json {
        let peers: Vec<Value> = r
            .from_peers
            .iter()
            .map(|(p, n)| json!({"peer": p, "bytes": n}))
            .collect();
        print_json(
            json!({"id": r.id, "name": r.name, "size": r.size, "path": r.path, "chunks": r.chunks, "resumed_chunks": r.resumed_chunks, "peers": peers}),
        );
    } else {
        let resumed = if r.resumed_chunks > 0 {
            format!(", {} chunks resumed", r.resumed_chunks)
        } else {
            String::new()
        };
        eprintln!(
            "{} → {} ({}, verified, from {} peers{resumed})",
            r.name,
            r.path.display(),
            human(r.size),
            r.from_peers.len()
        );
    }
}

pub fn files(files: &[pb::FileSummary], json: bool) {
    if json {
        print_json(Value::Array(
            files
                .iter()
                .map(|f| json!({"name": f.name, "id": f.id, "size": f.size, "chunks": f.chunks, "replicas_target": f.replicas_target, "replicas_min": f.replicas_min, "status": status_word(f.status)}))
                .collect(),
        ));
        return;
    }
    table(
        &["NAME", "SIZE", "CHUNKS", "REPLICAS", "STATUS", "ID"],
        files
            .iter()
            .map(|f| {
                vec![
                    f.name.clone(),
                    human(f.size),
                    f.chunks.to_string(),
                    format!("{}/{}", f.replicas_min, f.replicas_target),
                    status_word(f.status).into(),
                    f.id[..16.min(f.id.len())].to_string(),
                ]
            })
            .collect(),
    );
}

pub fn stat(d: &pb::FileDetail, json: bool) {
    let s = d.summary.clone().unwrap_or_default();
    if json {
        let chunks: Vec<Value> = d
            .chunks
            .iter()
            .map(|c| {
                let replicas: Vec<Value> = c
                    .replicas
                    .iter()
                    .map(|p| json!({"peer": p.id, "zone": p.zone, "addr": p.addr}))
                    .collect();
                json!({"index": c.index, "hash": c.hash, "size": c.size, "replicas": replicas})
            })
            .collect();
        print_json(
            json!({"id": s.id, "name": s.name, "size": s.size, "chunk_size": s.chunk_size, "replicas_target": s.replicas_target, "chunks": chunks}),
        );
        return;
    }
    out!("name      {}", s.name);
    out!("id        {}", s.id);
    out!("size      {} ({} bytes)", human(s.size), s.size);
    out!("chunks    {} × {}", s.chunks, human(s.chunk_size));
    out!(
        "replicas  {} of {} ({})",
        s.replicas_min,
        s.replicas_target,
        status_word(s.status)
    );
    if d.names.len() > 1 {
        out!("names     {}", d.names.join(", "));
    }
    out!();
    table(
        &["#", "HASH", "SIZE", "REPLICAS"],
        d.chunks
            .iter()
            .map(|c| {
                let reps: Vec<String> = c
                    .replicas
                    .iter()
                    .map(|p| format!("{}@{}", &p.id[..8.min(p.id.len())], p.zone))
                    .collect();
                vec![
                    c.index.to_string(),
                    c.hash[..16].to_string(),
                    human(c.size),
                    reps.join(" "),
                ]
            })
            .collect(),
    );
}

pub fn rm(r: &pb::DeleteFileResponse, json: bool) {
    if json {
        print_json(json!({"names_removed": r.names_removed, "content_removed": r.content_removed}));
    } else {
        let what = if r.content_removed {
            "; content deleted"
        } else {
            "; content kept (other names use it)"
        };
        eprintln!("removed {}{what}", r.names_removed.join(", "));
    }
}

pub fn peers(peers: &[pb::PeerInfo], json: bool) {
    if json {
        print_json(Value::Array(
            peers
                .iter()
                .map(|p| {
                    let r = p.peer.clone().unwrap_or_default();
                    json!({"id": r.id, "addr": r.addr, "zone": r.zone, "state": state_word(p.state), "chunks": p.chunks, "capacity_bytes": p.capacity_bytes, "used_bytes": p.used_bytes})
                })
                .collect(),
        ));
        return;
    }
    table(
        &[
            "ID",
            "ZONE",
            "STATE",
            "ADDR",
            "CHUNKS",
            "USED",
            "CAPACITY",
            "LAST SEEN",
        ],
        peers
            .iter()
            .map(|p| {
                let r = p.peer.clone().unwrap_or_default();
                vec![
                    r.id,
                    r.zone,
                    state_word(p.state).into(),
                    r.addr,
                    p.chunks.to_string(),
                    human(p.used_bytes),
                    human(p.capacity_bytes),
                    format!("{:.1}s ago", p.last_heartbeat_ms_ago as f64 / 1000.0),
                ]
            })
            .collect(),
    );
}

pub fn drain(peer: &str, r: &pb::DrainPeerResponse, json: bool) {
    if json {
        print_json(
            json!({"peer": peer, "state": state_word(r.state), "chunks_remaining": r.chunks_remaining, "safe_to_remove": r.safe_to_remove}),
        );
    } else if r.safe_to_remove {
        out!("{peer}: drained, safe to remove");
    } else {
        out!(
            "{peer}: draining, {} chunks still to re-home (run again to check)",
            r.chunks_remaining
        );
    }
}

pub fn info(i: &pb::ClusterInfoResponse, json: bool) {
    if json {
        print_json(
            json!({"version": i.version, "replication_factor": i.replication_factor, "live_peers": i.live_peers, "zones": i.zones, "files": i.files, "chunks": i.chunks, "under_replicated_chunks": i.under_replicated_chunks, "lost_chunks": i.lost_chunks, "repair_queue": i.repair_queue}),
        );
    } else {
        out!(
            "version {}  replication {}  peers {} in {} zones",
            i.version,
            i.replication_factor,
            i.live_peers,
            i.zones
        );
        out!(
            "files {}  chunks {}  under-replicated {}  lost {}  repair queue {}",
            i.files,
            i.chunks,
            i.under_replicated_chunks,
            i.lost_chunks,
            i.repair_queue
        );
    }
}
