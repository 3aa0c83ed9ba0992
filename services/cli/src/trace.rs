//! `shoal trace NAME`: the span tree of the latest put of a file, and of the repairs
//! of its chunks, read from the JSON lines the trace sink writes — the fragmentation
//! and replication flow without Jaeger.

use std::collections::{BTreeMap, HashSet};
use std::path::Path;

use shoal_tracesink::SpanRecord;

const HIDDEN: [&str; 4] = ["busy_ns", "idle_ns", "otel.kind", "otel.name"];

fn shown(key: &str) -> bool {
    !HIDDEN.contains(&key)
        && !key.starts_with("code.")
        && !key.starts_with("thread.")
        && key != "target"
}

fn print_tree(spans: &[&SpanRecord], out: &mut String) {
    let ids: HashSet<&str> = spans.iter().map(|s| s.span_id.as_str()).collect();
    let mut children: BTreeMap<&str, Vec<&SpanRecord>> = BTreeMap::new();
    for s in spans {
        let parent = if ids.contains(s.parent_span_id.as_str()) {
            s.parent_span_id.as_str()
        } else {
            ""
        };
        children.entry(parent).or_default().push(s);
    }
    for v in children.values_mut() {
        v.sort_by_key(|s| s.start_unix_nano);
    }
    fn walk(id: &str, depth: usize, children: &BTreeMap<&str, Vec<&SpanRecord>>, out: &mut String) {
        for s in children.get(id).map(Vec::as_slice).unwrap_or_default() {
            let ms = s.end_unix_nano.saturating_sub(s.start_unix_nano) as f64 / 1e6;
            let who = if s.instance.is_empty() {
                s.service.clone()
            } else {
                format!("{}/{}", s.service, s.instance)
            };
            let name = match s.attributes.get("otel.name").and_then(|v| v.as_str()) {
                Some(n) if s.name == "grpc.server" => format!("rpc {n}"),
                _ => s.name.clone(),
            };
            let attrs: Vec<String> = s
                .attributes
                .iter()
                .filter(|(k, _)| shown(k))
                .map(|(k, v)| match v {
                    serde_json::Value::String(s) => format!("{k}={s}"),
                    other => format!("{k}={other}"),
                })
                .collect();
            out.push_str(&format!(
                "{}{name} [{who}] {ms:.1}ms {}\n",
                "  ".repeat(depth),
                attrs.join(" ")
            ));
            walk(&s.span_id, depth + 1, children, out);
        }
    }
    walk("", 0, &children, out);
}

/// Render the trees for `name` (whose chunks are `chunks`, when known).
pub fn render(file: &Path, name: &str, chunks: &HashSet<String>) -> Result<String, String> {
    let spans = shoal_tracesink::read(file).map_err(|e| {
        format!(
            "{}: {e} (is the trace sink running? OTEL=1 make run)",
            file.display()
        )
    })?;
    let is_put = |s: &&SpanRecord| {
        (s.name == "put" || s.name == "fragment")
            && s.attributes.get("file.name").and_then(|v| v.as_str()) == Some(name)
    };
    let mut out = String::new();
    match spans
        .iter()
        .filter(is_put)
        .max_by_key(|s| s.start_unix_nano)
    {
        Some(root) => {
            let trace: Vec<&SpanRecord> = spans
                .iter()
                .filter(|s| s.trace_id == root.trace_id)
                .collect();
            let services: HashSet<&str> = trace.iter().map(|s| s.service.as_str()).collect();
            out.push_str(&format!(
                "put of {name:?}: trace {} ({} spans, {} services)\n",
                root.trace_id,
                trace.len(),
                services.len()
            ));
            print_tree(&trace, &mut out);
        }
        None => out.push_str(&format!(
            "no put of {name:?} recorded in {}\n",
            file.display()
        )),
    }
    let mut repairs: Vec<&SpanRecord> = spans
        .iter()
        .filter(|s| {
            s.name == "repair"
                && s.attributes
                    .get("chunk")
                    .and_then(|v| v.as_str())
                    .is_some_and(|c| chunks.contains(c))
        })
        .collect();
    repairs.sort_by_key(|s| std::cmp::Reverse(s.start_unix_nano));
    if !repairs.is_empty() {
        out.push_str(&format!(
            "\nrepairs of its chunks: {} (latest 5 shown)\n",
            repairs.len()
        ));
        for r in repairs.iter().take(5) {
            let trace: Vec<&SpanRecord> =
                spans.iter().filter(|s| s.trace_id == r.trace_id).collect();
            print_tree(&trace, &mut out);
        }
    }
    Ok(out)
}
