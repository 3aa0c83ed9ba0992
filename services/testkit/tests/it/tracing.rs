//! One trace across every hop: real processes (trace sink, tracker, three peers, the
//! CLI) exporting OTLP to the sink; a put is one trace over ≥ 3 services with the
//! fragmentation and placement decisions and peer → peer forwarding; killing a peer
//! produces a repair trace with source, target and priority.

use std::collections::{HashMap, HashSet};
use std::process::Command;
use std::time::Duration;

use shoal_testkit::procs::{bin, free_addr, Proc};
use shoal_testkit::{random_file, wait_for, wait_serving};
use shoal_tracesink::SpanRecord;

fn spans(file: &std::path::Path) -> Vec<SpanRecord> {
    shoal_tracesink::read(file).unwrap_or_default()
}

fn attr<'a>(s: &'a SpanRecord, k: &str) -> Option<&'a serde_json::Value> {
    s.attributes.get(k)
}

/// A numeric attribute (u64 values travel as strings in OTLP).
fn num(s: &SpanRecord, k: &str) -> Option<i64> {
    match s.attributes.get(k)? {
        serde_json::Value::Number(n) => n.as_i64(),
        serde_json::Value::String(t) => t.parse().ok(),
        _ => None,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_put_is_one_trace_across_services_and_a_repair_is_traced() {
    let dir = tempfile::tempdir().unwrap();
    let traces = dir.path().join("traces.jsonl");
    let sink_addr = free_addr();
    let _sink = Proc::spawn(
        "sink",
        "shoal-trace-sink",
        &[
            ("SHOAL_LISTEN_ADDR", sink_addr.to_string()),
            ("SHOAL_TRACE_FILE", traces.display().to_string()),
        ],
        dir.path(),
    );
    wait_serving(sink_addr).await.unwrap();
    let otel = |instance: &str| {
        vec![
            ("OTEL_EXPORTER_OTLP_ENDPOINT", format!("http://{sink_addr}")),
            ("OTEL_BSP_SCHEDULE_DELAY", "100".to_string()),
            (
                "OTEL_RESOURCE_ATTRIBUTES",
                format!("service.instance.id={instance}"),
            ),
        ]
    };
    let tracker_addr = free_addr();
    let mut env = otel("tracker");
    env.extend([
        ("SHOAL_LISTEN_ADDR", tracker_addr.to_string()),
        (
            "SHOAL_DATA_DIR",
            dir.path().join("tracker").display().to_string(),
        ),
        ("SHOAL_CHUNK__MIN_BYTES", "65536".into()),
        ("SHOAL_CHUNK__MAX_BYTES", "65536".into()),
        ("SHOAL_REPLICATION__FACTOR", "2".into()),
        ("SHOAL_LIVENESS__HEARTBEAT", "100ms".into()),
        ("SHOAL_LIVENESS__SUSPECT_AFTER", "500ms".into()),
        ("SHOAL_LIVENESS__DEAD_AFTER", "1s".into()),
        ("SHOAL_REPAIR__INTERVAL", "100ms".into()),
    ]);
    let _tracker = Proc::spawn("tracker", "shoal-tracker", &env, dir.path());
    wait_serving(tracker_addr).await.unwrap();
    let mut peers = Vec::new();
    for (i, zone) in ["a", "a", "b"].iter().enumerate() {
        let addr = free_addr();
        let mut env = otel(&format!("peer{i}"));
        env.extend([
            ("SHOAL_LISTEN_ADDR", addr.to_string()),
            (
                "SHOAL_DATA_DIR",
                dir.path().join(format!("peer{i}")).display().to_string(),
            ),
            ("SHOAL_TRACKER_URL", format!("http://{tracker_addr}")),
            ("SHOAL_ZONE", zone.to_string()),
            ("SHOAL_CAPACITY_BYTES", (1u64 << 30).to_string()),
        ]);
        peers.push(Proc::spawn(
            &format!("peer{i}"),
            "shoal-peer",
            &env,
            dir.path(),
        ));
        wait_serving(addr).await.unwrap();
    }

    let file = dir.path().join("traced.bin");
    random_file(&file, 10 * 65536, 42).unwrap();
    let cli = |args: &[&str]| {
        let mut cmd = Command::new(bin("shoal"));
        cmd.env_clear()
            .arg("--tracker")
            .arg(format!("http://{tracker_addr}"))
            .args(args);
        for (k, v) in otel("cli") {
            cmd.env(k, v);
        }
        cmd.env("SHOAL_TRACE_FILE", &traces);
        let out = cmd.output().unwrap();
        assert!(
            out.status.success(),
            "shoal {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).to_string()
    };
    cli(&["put", file.to_str().unwrap(), "--name", "traced.bin"]);
    cli(&[
        "get",
        "traced.bin",
        "-o",
        dir.path().join("back").to_str().unwrap(),
    ]);

    // One trace id covers the CLI, the tracker and the peers.
    let root_trace = || {
        spans(&traces)
            .into_iter()
            .find(|s| {
                s.name == "put"
                    && attr(s, "file.name").and_then(|v| v.as_str()) == Some("traced.bin")
            })
            .map(|s| s.trace_id)
    };
    wait_for("the CLI's put span", Duration::from_secs(20), || async {
        root_trace().is_some()
    })
    .await
    .unwrap();
    let trace_id = root_trace().unwrap();
    wait_for(
        "spans of ≥ 3 services and peer → peer forwarding in the put trace",
        Duration::from_secs(20),
        || async {
            let all = spans(&traces);
            let t: Vec<&SpanRecord> = all.iter().filter(|s| s.trace_id == trace_id).collect();
            let services: HashSet<&str> = t.iter().map(|s| s.service.as_str()).collect();
            services.len() >= 3 && t.iter().any(|s| s.name == "chunk.forward")
        },
    )
    .await
    .unwrap();
    let all = spans(&traces);
    let t: Vec<&SpanRecord> = all.iter().filter(|s| s.trace_id == trace_id).collect();
    let services: HashSet<&str> = t.iter().map(|s| s.service.as_str()).collect();
    for want in ["shoal-cli", "shoal-tracker", "shoal-peer"] {
        assert!(services.contains(want), "{want} missing from {services:?}");
    }
    let fragment = t
        .iter()
        .find(|s| s.name == "fragment")
        .expect("fragment span");
    assert_eq!(num(fragment, "fragment.chunk_size"), Some(65536));
    assert_eq!(num(fragment, "fragment.chunks"), Some(10));
    assert!(attr(fragment, "fragment.policy").is_some());
    let places: Vec<&&SpanRecord> = t.iter().filter(|s| s.name == "place").collect();
    assert_eq!(places.len(), 10, "one place span per chunk");
    for p in &places {
        for k in [
            "placement.chosen",
            "placement.zones_covered",
            "placement.candidates",
            "placement.scores",
            "chunk.hash",
        ] {
            assert!(
                attr(p, k).is_some(),
                "place span without {k}: {:?}",
                p.attributes
            );
        }
        assert_eq!(num(p, "placement.zones_covered"), Some(2));
    }
    // Peer → peer: a chunk.put on one peer instance whose ancestor is a chunk.forward on another.
    let by_id: HashMap<&str, &SpanRecord> = t.iter().map(|s| (s.span_id.as_str(), *s)).collect();
    let hop = t.iter().filter(|s| s.name == "chunk.put").any(|put| {
        let mut cur = by_id.get(put.parent_span_id.as_str()).copied();
        while let Some(s) = cur {
            if s.name == "chunk.forward" {
                return s.instance != put.instance && s.service == "shoal-peer";
            }
            cur = by_id.get(s.parent_span_id.as_str()).copied();
        }
        false
    });
    assert!(hop, "no peer → peer forwarding hop in the trace");
    // The get is traced too, with verified chunk reads on the peers.
    wait_for("chunk.get spans", Duration::from_secs(20), || async {
        spans(&traces)
            .iter()
            .any(|s| s.name == "chunk.get" && s.service == "shoal-peer")
    })
    .await
    .unwrap();

    // Kill a peer: a repair trace appears with its decision attributes.
    peers[0].kill();
    wait_for("a repair span", Duration::from_secs(30), || async {
        spans(&traces).iter().any(|s| s.name == "repair")
    })
    .await
    .unwrap();
    let all = spans(&traces);
    let repair = all.iter().find(|s| s.name == "repair").unwrap();
    for k in [
        "chunk",
        "repair.source",
        "repair.target",
        "repair.priority",
        "repair.live_replicas",
    ] {
        assert!(
            attr(repair, k).is_some(),
            "repair span without {k}: {:?}",
            repair.attributes
        );
    }
    assert_eq!(repair.service, "shoal-tracker");

    // `shoal trace` prints the tree of the put and of the repairs.
    let tree = cli(&["trace", "traced.bin"]);
    assert!(tree.contains("fragment [shoal-tracker"), "{tree}");
    assert!(tree.contains("chunk.forward [shoal-peer/"), "{tree}");
    assert!(tree.contains("repairs of its chunks"), "{tree}");
}
