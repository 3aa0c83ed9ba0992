//! Every metric a Grafana panel or an alert rule queries exists in a real scrape of a
//! running cluster (real processes: tracker, peer, webserver, after a put and a get);
//! a peer stopped with a real SIGTERM shows as restarting in the metrics and the CLI;
//! calls to paths the API does not define neither break a scrape nor grow it.

use std::collections::BTreeSet;
use std::path::Path;
use std::process::Command;

use shoal_testkit::procs::{bin, free_addr, Proc};
use shoal_testkit::{random_file, wait_for, wait_serving, ClusterOptions, TestCluster};

fn names_in(text: &str) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    let b = text.as_bytes();
    let mut i = 0;
    while let Some(pos) = text[i..].find("shoal_") {
        let start = i + pos;
        let mut end = start;
        while end < b.len()
            && (b[end].is_ascii_lowercase() || b[end].is_ascii_digit() || b[end] == b'_')
        {
            end += 1;
        }
        // Skip ids that are part of a longer word (e.g. "dashboard_shoal_x").
        if start == 0 || !(b[start - 1].is_ascii_alphanumeric() || b[start - 1] == b'_') {
            out.insert(text[start..end].to_string());
        }
        i = end.max(start + 1);
    }
    out
}

/// Metric names used in the `expr` of every dashboard panel and alert rule.
fn queried() -> BTreeSet<String> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    let mut names = BTreeSet::new();
    for entry in std::fs::read_dir(root.join("deploy/grafana")).unwrap() {
        let v: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(entry.unwrap().path()).unwrap()).unwrap();
        fn walk(v: &serde_json::Value, names: &mut BTreeSet<String>) {
            match v {
                serde_json::Value::Object(m) => {
                    for (k, v) in m {
                        match (k.as_str(), v) {
                            ("expr" | "query", serde_json::Value::String(s)) => {
                                names.extend(names_in(s))
                            }
                            _ => walk(v, names),
                        }
                    }
                }
                serde_json::Value::Array(a) => a.iter().for_each(|v| walk(v, names)),
                _ => {}
            }
        }
        walk(&v, &mut names);
    }
    let alerts = std::fs::read_to_string(root.join("deploy/prometheus/alerts.yml")).unwrap();
    for line in alerts
        .lines()
        .filter(|l| l.trim_start().starts_with("expr:"))
    {
        names.extend(names_in(line));
    }
    names
}

async fn scrape(addr: &str) -> String {
    let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    stream
        .write_all(format!("GET /metrics HTTP/1.0\r\nHost: {addr}\r\n\r\n").as_bytes())
        .await
        .unwrap();
    let mut body = String::new();
    stream.read_to_string(&mut body).await.unwrap();
    body
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_dashboard_and_alert_metric_exists_in_a_real_scrape() {
    let wanted = queried();
    assert!(
        wanted.len() > 20,
        "dashboards query few metrics: {wanted:?}"
    );
    let dir = tempfile::tempdir().unwrap();
    let (tracker, tracker_m) = (free_addr(), free_addr());
    let _t = Proc::spawn(
        "tracker",
        "shoal-tracker",
        &[
            ("SHOAL_LISTEN_ADDR", tracker.to_string()),
            ("SHOAL_METRICS_ADDR", tracker_m.to_string()),
            ("SHOAL_DATA_DIR", dir.path().join("t").display().to_string()),
            ("SHOAL_REPLICATION__FACTOR", "1".into()),
        ],
        dir.path(),
    );
    wait_serving(tracker).await.unwrap();
    let (peer, peer_m) = (free_addr(), free_addr());
    let _p = Proc::spawn(
        "peer",
        "shoal-peer",
        &[
            ("SHOAL_LISTEN_ADDR", peer.to_string()),
            ("SHOAL_METRICS_ADDR", peer_m.to_string()),
            ("SHOAL_DATA_DIR", dir.path().join("p").display().to_string()),
            ("SHOAL_TRACKER_URL", format!("http://{tracker}")),
            ("SHOAL_CAPACITY_BYTES", (1u64 << 30).to_string()),
            ("SHOAL_ZONE", "zone-m".into()),
        ],
        dir.path(),
    );
    wait_serving(peer).await.unwrap();
    let (web, web_http) = (free_addr(), free_addr());
    let _w = Proc::spawn(
        "webserver",
        "shoal-webserver",
        &[
            ("SHOAL_LISTEN_ADDR", web.to_string()),
            ("SHOAL_HTTP_ADDR", web_http.to_string()),
            ("SHOAL_TRACKER_URL", format!("http://{tracker}")),
        ],
        dir.path(),
    );
    wait_serving(web).await.unwrap();
    let f = dir.path().join("f");
    random_file(&f, 3 << 20, 1).unwrap();
    let endpoint = format!("http://{web}");
    for args in [
        vec!["put", f.to_str().unwrap()],
        vec!["get", "f", "-o", dir.path().join("o").to_str().unwrap()],
        vec!["ls"],
    ] {
        let out = Command::new(bin("shoal"))
            .arg("--endpoint")
            .arg(&endpoint)
            .args(&args)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let _ = scrape(&web_http.to_string()).await; // one request so HTTP metrics have a series
    let mut exposed = BTreeSet::new();
    for addr in [tracker_m, peer_m, web_http] {
        let text = scrape(&addr.to_string()).await;
        for line in text.lines().filter(|l| !l.starts_with('#')) {
            if let Some(name) = line.split(['{', ' ']).next() {
                exposed.insert(name.to_string());
            }
        }
    }
    // Every peer series names its zone (alerts and dashboards group by it).
    let peer_text = scrape(&peer_m.to_string()).await;
    let unzoned: Vec<&str> = peer_text
        .lines()
        .filter(|l| l.starts_with("shoal_peer_") && !l.contains("zone=\"zone-m\""))
        .collect();
    assert!(
        unzoned.is_empty(),
        "peer series without their zone: {unzoned:?}"
    );
    let missing: Vec<&String> = wanted.iter().filter(|n| !exposed.contains(*n)).collect();
    assert!(
        missing.is_empty(),
        "queried but never exposed: {missing:?}\nexposed: {exposed:?}"
    );
}

/// SIGTERM to a real peer process: it says it is restarting, and the tracker's metrics
/// and `shoal peers --json` say so too.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_peer_stopped_with_sigterm_is_restarting_in_metrics_and_cli() {
    let dir = tempfile::tempdir().unwrap();
    let (tracker, tracker_m) = (free_addr(), free_addr());
    let _t = Proc::spawn(
        "tracker",
        "shoal-tracker",
        &[
            ("SHOAL_LISTEN_ADDR", tracker.to_string()),
            ("SHOAL_METRICS_ADDR", tracker_m.to_string()),
            ("SHOAL_DATA_DIR", dir.path().join("t").display().to_string()),
            ("SHOAL_REPLICATION__FACTOR", "1".into()),
        ],
        dir.path(),
    );
    wait_serving(tracker).await.unwrap();
    let peer = free_addr();
    let mut p = Proc::spawn(
        "peer",
        "shoal-peer",
        &[
            ("SHOAL_LISTEN_ADDR", peer.to_string()),
            ("SHOAL_DATA_DIR", dir.path().join("p").display().to_string()),
            ("SHOAL_TRACKER_URL", format!("http://{tracker}")),
            ("SHOAL_ZONE", "z1".into()),
        ],
        dir.path(),
    );
    wait_serving(peer).await.unwrap();
    let status = Command::new("kill")
        .args(["-TERM", &p.child.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    let exit = loop {
        if let Some(s) = p.child.try_wait().unwrap() {
            break s;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "peer did not stop on SIGTERM"
        );
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    };
    assert!(exit.success(), "peer exit on SIGTERM: {exit:?}");
    let series = "shoal_tracker_peers{zone=\"z1\",state=\"restarting\"} 1";
    let addr = tracker_m.to_string();
    wait_for(series, std::time::Duration::from_secs(10), || async {
        scrape(&addr).await.contains(series)
    })
    .await
    .unwrap();
    let out = Command::new(bin("shoal"))
        .args(["--tracker", &format!("http://{tracker}"), "--json", "peers"])
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let peers: serde_json::Value = serde_json::from_str(&stdout).unwrap();
    assert_eq!(peers[0]["state"], "restarting", "{stdout}");
}

/// One gRPC call to `path` (any path, as a client may send it); the answer is not read.
async fn call_path(mut ch: tonic::transport::Channel, path: &str) {
    use tonic::codegen::{http, Service};
    let req = http::Request::builder()
        .method("POST")
        .uri(path)
        .header("content-type", "application/grpc")
        .header("te", "trailers")
        .body(tonic::body::Body::empty())
        .unwrap();
    std::future::poll_fn(|cx| ch.poll_ready(cx)).await.unwrap();
    let _ = ch.call(req).await;
}

/// Series in a Prometheus text scrape; panics on a line that is not a comment or
/// `name{label="value",...} number` with label values escaped.
fn series(text: &str) -> usize {
    let mut n = 0;
    for line in text
        .lines()
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
    {
        let (head, value) = line.rsplit_once(' ').expect("name and value");
        value
            .parse::<f64>()
            .unwrap_or_else(|_| panic!("bad value in {line:?}"));
        let (name, mut labels) = head.split_once('{').unwrap_or((head, "}"));
        assert!(
            !name.is_empty() && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_'),
            "bad name in {line:?}"
        );
        while labels != "}" {
            let (key, rest) = labels
                .split_once("=\"")
                .unwrap_or_else(|| panic!("bad label in {line:?}"));
            assert!(
                key.chars().all(|c| c.is_ascii_alphanumeric() || c == '_'),
                "bad label name in {line:?}"
            );
            let mut chars = rest.char_indices();
            let end = loop {
                match chars.next() {
                    Some((_, '\\')) => assert!(
                        matches!(chars.next(), Some((_, '\\' | '"' | 'n'))),
                        "bad escape in {line:?}"
                    ),
                    Some((i, '"')) => break i,
                    Some(_) => {}
                    None => panic!("unterminated label value in {line:?}"),
                }
            };
            labels = &rest[end + 1..];
            labels = labels.strip_prefix(',').unwrap_or(labels);
        }
        n += 1;
    }
    n
}

/// 10,000 calls to paths the API does not define (some with `"`, braces or a `%22`)
/// neither break a real tracker's `/metrics` nor add a series to it: they are all
/// recorded as `unknown`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_paths_neither_break_nor_grow_a_real_scrape() {
    use futures::StreamExt as _;
    let metrics = free_addr();
    let mut opts = ClusterOptions::zones(&[]);
    opts.tracker.metrics_addr = Some(metrics);
    let cluster = TestCluster::start(opts).await.unwrap();
    let ch = tonic::transport::Endpoint::from_shared(format!("http://{}", cluster.tracker_addr))
        .unwrap()
        .connect_lazy();
    let get = || async {
        reqwest::get(format!("http://{metrics}/metrics"))
            .await
            .unwrap()
            .text()
            .await
            .unwrap()
    };
    let paths = |range: std::ops::Range<usize>| {
        range.map(|i| match i % 4 {
            0 => format!("/shoal.v1.Tracker/Nope{i}"),
            1 => format!("/x\"y/{i}\""),
            2 => format!("/shoal.v1.Peer{i}/GetChunk"),
            _ => format!("/{{{i}}}%22%0A"),
        })
    };
    // Every kind of unknown call once, so its series exists before the count.
    for p in paths(0..4) {
        call_path(ch.clone(), &p).await;
    }
    call_path(ch.clone(), "/shoal.v1.Tracker/ListFiles").await;
    let before = get().await;
    let count = series(&before);
    assert!(
        before.contains("shoal_rpc_requests_total{method=\"unknown\",")
            && before.contains("method=\"shoal.v1.Tracker/ListFiles\""),
        "{before}"
    );
    futures::stream::iter(paths(4..10_004))
        .for_each_concurrent(32, |p| {
            let ch = ch.clone();
            async move { call_path(ch, &p).await }
        })
        .await;
    let after = get().await;
    assert_eq!(
        series(&after),
        count,
        "unknown paths added series:\n{after}"
    );
    let unknown: u64 = after
        .lines()
        .filter(|l| l.starts_with("shoal_rpc_requests_total{method=\"unknown\","))
        .map(|l| l.rsplit_once(' ').unwrap().1.parse::<u64>().unwrap())
        .sum();
    assert_eq!(unknown, 10_004, "{after}");
}
