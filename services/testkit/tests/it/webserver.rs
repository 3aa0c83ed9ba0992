//! Webserver acceptance: gRPC Discover and the proxied catalogue, health following
//! the tracker, and the HTTP gateway (pages, downloads with ranges, uploads, JSON API,
//! metrics) against an in-process cluster. No fixed ports; every wait has a deadline.

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::StreamExt;
use reqwest::header;
use reqwest::StatusCode;
use serde_json::Value;
use shoal_client::{Client, ClientError, Progress, PutOptions, Quiet};
use shoal_proto::v1 as pb;
use shoal_testkit::{file_hash, random_file, wait_for, ClusterOptions, TestCluster};
use shoal_webserver::http::html::seg;
use shoal_webserver::WebserverConfig;
use tokio_util::sync::CancellationToken;

const CHUNK: u64 = 64 << 10;

fn quiet() -> Arc<dyn Progress> {
    Arc::new(Quiet)
}

async fn cluster(zones: &[&str]) -> TestCluster {
    let mut opts = ClusterOptions::zones(zones).replication(2);
    opts.webserver = true;
    TestCluster::start(opts).await.expect("cluster starts")
}

/// Base URL of the cluster's webserver HTTP listener.
fn base(c: &TestCluster) -> String {
    format!("http://{}", c.webserver.as_ref().expect("webserver").http)
}

fn grpc_url(c: &TestCluster) -> String {
    c.webserver.as_ref().expect("webserver").node.url()
}

/// An HTTP client that shows redirects instead of following them.
fn web() -> reqwest::Client {
    reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .expect("client")
}

async fn put(
    c: &Client,
    dir: &Path,
    name: &str,
    len: u64,
    seed: u64,
) -> (std::path::PathBuf, String) {
    let p = dir.join(format!("src-{seed}"));
    random_file(&p, len, seed).unwrap();
    let r = c
        .put(
            &p,
            PutOptions {
                name: name.into(),
                ..Default::default()
            },
            quiet(),
        )
        .await
        .unwrap();
    (p, r.id)
}

/// A counter from `/metrics` (0 when absent).
async fn metric(base: &str, line_prefix: &str) -> u64 {
    let text = web()
        .get(format!("{base}/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    text.lines()
        .find_map(|l| {
            l.strip_prefix(line_prefix)
                .and_then(|v| v.trim().parse().ok())
        })
        .unwrap_or(0)
}

/// A webserver started by the test itself, for configurations the harness does not make.
struct OwnWebserver {
    grpc: SocketAddr,
    http: SocketAddr,
    stop: CancellationToken,
    task: tokio::task::JoinHandle<anyhow::Result<()>>,
}

impl OwnWebserver {
    async fn start(cfg: WebserverConfig) -> Self {
        let g = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let h = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let (grpc, http) = (g.local_addr().unwrap(), h.local_addr().unwrap());
        let stop = CancellationToken::new();
        let task = tokio::spawn(shoal_webserver::run(cfg, g, h, stop.clone()));
        Self {
            grpc,
            http,
            stop,
            task,
        }
    }

    async fn shutdown(self) {
        self.stop.cancel();
        tokio::time::timeout(Duration::from_secs(10), self.task)
            .await
            .expect("webserver stops")
            .unwrap()
            .unwrap();
    }
}

/// A file detail with each chunk's replicas in a fixed order.
fn normalized(mut d: pb::FileDetail) -> pb::FileDetail {
    for c in &mut d.chunks {
        c.replicas.sort_by(|a, b| a.id.cmp(&b.id));
    }
    d
}

async fn serving(addr: SocketAddr) -> bool {
    shoal_common::grpc::check_health(&addr.to_string(), "")
        .await
        .unwrap_or(false)
}

async fn serving_named(addr: SocketAddr) -> bool {
    shoal_common::grpc::check_health(&addr.to_string(), "shoal.v1.Webserver")
        .await
        .unwrap_or(false)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn discover_round_trip_then_thin_client_put_get() {
    let cluster = cluster(&["a", "a", "b"]).await;
    let endpoint = grpc_url(&cluster);
    let (client, found) = Client::discover(&endpoint).await.unwrap();
    assert_eq!(
        found.tracker_urls,
        vec![cluster.tracker_url()],
        "no public URL set: the tracker URL"
    );
    assert_eq!(found.live_peers, 3);
    assert_eq!(found.zones, 2);
    assert_eq!(found.replication_factor, 2);
    assert_eq!(found.version, shoal_common::VERSION);

    // Put and get knowing only the endpoint.
    let work = tempfile::tempdir().unwrap();
    let src = work.path().join("thin");
    random_file(&src, 3 * CHUNK + 17, 1).unwrap();
    let r = client
        .put(
            &src,
            PutOptions {
                name: "thin.bin".into(),
                ..Default::default()
            },
            quiet(),
        )
        .await
        .unwrap();
    let out = work.path().join("out");
    client.get("thin.bin", &out, quiet()).await.unwrap();
    assert_eq!(file_hash(&out).unwrap(), file_hash(&src).unwrap());

    // Read-only catalogue calls through the webserver agree with the tracker.
    let mut w =
        pb::webserver_client::WebserverClient::new(shoal_common::grpc::channel(&endpoint).unwrap());
    let listed = w
        .list_files(pb::ListFilesRequest::default())
        .await
        .unwrap()
        .into_inner()
        .files;
    assert_eq!(
        listed.iter().map(|f| f.name.as_str()).collect::<Vec<_>>(),
        vec!["thin.bin"]
    );
    let found = w
        .search_files(pb::SearchFilesRequest {
            query: "THIN".into(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner()
        .files;
    assert_eq!(found.len(), 1);
    let none = w
        .search_files(pb::SearchFilesRequest {
            query: "zzz".into(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner()
        .files;
    assert!(none.is_empty());
    let via_web = w
        .stat_file(pb::StatFileRequest {
            name_or_id: r.id.clone(),
        })
        .await
        .unwrap()
        .into_inner();
    // Replicas come best first, and "best" moves with load: compare them as sets.
    assert_eq!(
        normalized(via_web),
        normalized(cluster.client().stat("thin.bin").await.unwrap())
    );
    let e = w
        .stat_file(pb::StatFileRequest {
            name_or_id: "missing".into(),
        })
        .await
        .unwrap_err();
    assert_eq!(e.code(), tonic::Code::NotFound, "{e:?}");

    // With a public URL configured, clients are told that one instead.
    let mut cfg = WebserverConfig::for_test(cluster.tracker_url());
    cfg.tracker_public_url = Some("https://tracker.public.invalid:443".into());
    let own = OwnWebserver::start(cfg).await;
    wait_for("own webserver SERVING", Duration::from_secs(20), || {
        serving(own.grpc)
    })
    .await
    .unwrap();
    let mut w2 = pb::webserver_client::WebserverClient::new(
        shoal_common::grpc::channel(&own.grpc.to_string()).unwrap(),
    );
    let d = w2
        .discover(pb::DiscoverRequest {})
        .await
        .unwrap()
        .into_inner();
    assert_eq!(d.tracker_urls, vec!["https://tracker.public.invalid:443"]);
    assert_eq!(d.live_peers, 3);
    let api: Value = serde_json::from_slice(
        &web()
            .get(format!("http://{}/api/v1/cluster", own.http))
            .send()
            .await
            .unwrap()
            .bytes()
            .await
            .unwrap(),
    )
    .unwrap();
    assert_eq!(
        api["tracker_urls"],
        serde_json::json!(["https://tracker.public.invalid:443"])
    );
    own.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn http_download_with_ranges_etag_and_head() {
    let cluster = cluster(&["a", "a", "b"]).await;
    let (c, b, http) = (cluster.client(), base(&cluster), web());
    let work = tempfile::tempdir().unwrap();
    let size = 5 * CHUNK + 1234;
    let name = "dir/ü & <b>?#%.bin";
    let (src, id) = put(&c, work.path(), name, size, 2).await;
    let bytes = std::fs::read(&src).unwrap();
    // The name percent-encoded by hand, independent of the server's encoder.
    let url = format!("{b}/download/dir%2F%C3%BC%20%26%20%3Cb%3E%3F%23%25.bin");
    assert_eq!(url, format!("{b}/download/{}", seg(name)));

    let r = http.get(&url).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    let h = r.headers().clone();
    assert_eq!(h[header::CONTENT_LENGTH], size.to_string().as_str());
    assert_eq!(h[header::ETAG], format!("\"{id}\"").as_str());
    assert_eq!(h[header::ACCEPT_RANGES], "bytes");
    let cd = h[header::CONTENT_DISPOSITION].to_str().unwrap();
    assert!(
        cd.starts_with("attachment; filename=\"_ & _b__#_.bin\""),
        "{cd}"
    );
    assert!(
        cd.contains("filename*=UTF-8''%C3%BC%20%26%20%3Cb%3E%3F%23%25.bin"),
        "{cd}"
    );
    assert_eq!(
        r.bytes().await.unwrap().as_ref(),
        bytes.as_slice(),
        "downloaded bytes differ"
    );
    // Also by id.
    let by_id = http
        .get(format!("{b}/download/{id}"))
        .send()
        .await
        .unwrap()
        .bytes()
        .await
        .unwrap();
    assert_eq!(by_id.as_ref(), bytes.as_slice());

    let ranged = |spec: String| {
        let (http, url) = (http.clone(), url.clone());
        async move {
            http.get(&url)
                .header(header::RANGE, spec)
                .send()
                .await
                .unwrap()
        }
    };
    // First byte: one chunk fetched, no more.
    let fetched = metric(&b, "shoal_webserver_chunks_fetched_total ").await;
    let r = ranged("bytes=0-0".into()).await;
    assert_eq!(r.status(), StatusCode::PARTIAL_CONTENT);
    assert_eq!(
        r.headers()[header::CONTENT_RANGE],
        format!("bytes 0-0/{size}").as_str()
    );
    assert_eq!(r.headers()[header::CONTENT_LENGTH], "1");
    assert_eq!(r.bytes().await.unwrap().as_ref(), &bytes[..1]);
    assert_eq!(
        metric(&b, "shoal_webserver_chunks_fetched_total ").await - fetched,
        1,
        "only the chunk holding byte 0 is fetched"
    );

    // A middle span crossing two chunk borders.
    let (a, z) = (CHUNK - 100, 2 * CHUNK + 99);
    let r = ranged(format!("bytes={a}-{z}")).await;
    assert_eq!(r.status(), StatusCode::PARTIAL_CONTENT);
    assert_eq!(
        r.headers()[header::CONTENT_RANGE],
        format!("bytes {a}-{z}/{size}").as_str()
    );
    assert_eq!(
        r.bytes().await.unwrap().as_ref(),
        &bytes[a as usize..=z as usize]
    );

    // Suffix, open-ended, past the end.
    let r = ranged("bytes=-1500".into()).await;
    assert_eq!(r.status(), StatusCode::PARTIAL_CONTENT);
    assert_eq!(
        r.headers()[header::CONTENT_RANGE],
        format!("bytes {}-{}/{size}", size - 1500, size - 1).as_str()
    );
    assert_eq!(
        r.bytes().await.unwrap().as_ref(),
        &bytes[(size - 1500) as usize..]
    );
    let r = ranged(format!("bytes={}-", size - 5)).await;
    assert_eq!(r.status(), StatusCode::PARTIAL_CONTENT);
    assert_eq!(
        r.bytes().await.unwrap().as_ref(),
        &bytes[(size - 5) as usize..]
    );
    let r = ranged(format!("bytes={size}-")).await;
    assert_eq!(r.status(), StatusCode::RANGE_NOT_SATISFIABLE);
    assert_eq!(
        r.headers()[header::CONTENT_RANGE],
        format!("bytes */{size}").as_str()
    );
    // Several ranges: the whole file is a valid answer.
    let r = ranged("bytes=0-1,5-6".into()).await;
    assert_eq!(r.status(), StatusCode::OK);
    assert_eq!(r.bytes().await.unwrap().len() as u64, size);

    // Conditional requests.
    let r = http
        .get(&url)
        .header(header::IF_NONE_MATCH, format!("\"{id}\""))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::NOT_MODIFIED);
    assert_eq!(r.headers()[header::ETAG], format!("\"{id}\"").as_str());
    assert!(r.bytes().await.unwrap().is_empty());
    let r = http
        .get(&url)
        .header(header::IF_NONE_MATCH, "\"something-else\"")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    assert_eq!(r.bytes().await.unwrap().len() as u64, size);
    let r = http
        .get(&url)
        .header(header::RANGE, "bytes=0-9")
        .header(header::IF_RANGE, "\"stale\"")
        .send()
        .await
        .unwrap();
    assert_eq!(
        r.status(),
        StatusCode::OK,
        "If-Range that does not match: the whole file"
    );
    assert_eq!(r.bytes().await.unwrap().len() as u64, size);
    let r = http
        .get(&url)
        .header(header::RANGE, "bytes=0-9")
        .header(header::IF_RANGE, format!("\"{id}\""))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::PARTIAL_CONTENT);
    assert_eq!(r.bytes().await.unwrap().as_ref(), &bytes[..10]);

    // HEAD: the same headers, no body, nothing fetched.
    let fetched = metric(&b, "shoal_webserver_chunks_fetched_total ").await;
    let r = http.head(&url).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    assert_eq!(
        r.headers()[header::CONTENT_LENGTH],
        size.to_string().as_str()
    );
    assert_eq!(r.headers()[header::ETAG], format!("\"{id}\"").as_str());
    assert!(r.bytes().await.unwrap().is_empty());
    let r = http
        .head(&url)
        .header(header::RANGE, "bytes=-10")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::PARTIAL_CONTENT);
    assert_eq!(r.headers()[header::CONTENT_LENGTH], "10");
    assert_eq!(
        metric(&b, "shoal_webserver_chunks_fetched_total ").await,
        fetched
    );

    // An empty file downloads as an empty body.
    let (_, _) = put(&c, work.path(), "empty", 0, 3).await;
    let r = http
        .get(format!("{b}/download/empty"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    assert_eq!(r.headers()[header::CONTENT_LENGTH], "0");
    assert!(r.bytes().await.unwrap().is_empty());

    // Metrics count requests by route and status, and bytes sent.
    assert!(
        metric(
            &b,
            "shoal_webserver_http_requests_total{route=\"/download/{name}\",status=\"206\"} "
        )
        .await
            >= 6
    );
    assert!(
        metric(
            &b,
            "shoal_webserver_http_requests_total{route=\"/download/{name}\",status=\"416\"} "
        )
        .await
            >= 1
    );
    assert!(metric(&b, "shoal_webserver_downloaded_bytes_total ").await >= 3 * size);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn http_download_survives_a_peer_killed_mid_stream() {
    let mut cluster = cluster(&["a", "a", "b"]).await;
    let (c, b) = (cluster.client(), base(&cluster));
    let work = tempfile::tempdir().unwrap();
    let size = 32 << 20;
    let (src, _) = put(&c, work.path(), "big", size, 4).await;
    let d = c.stat("big").await.unwrap();
    let victim = std::fs::read_to_string(cluster.peer_dir(0).join("peer_id")).unwrap();
    let late = d
        .chunks
        .iter()
        .filter(|ch| {
            ch.index as u64 * CHUNK > size / 2 && ch.replicas.iter().any(|r| r.id == victim)
        })
        .count();
    assert!(late > 0, "peer 0 holds chunks in the second half");

    let r = web().get(format!("{b}/download/big")).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    let mut body = r.bytes_stream();
    let mut got = Vec::with_capacity(size as usize);
    let mut killed = false;
    while let Some(piece) = body.next().await {
        got.extend_from_slice(&piece.expect("the download is not cut short"));
        if !killed && got.len() as u64 >= 4 << 20 {
            cluster.kill_peer(0);
            killed = true;
        }
    }
    assert!(killed);
    assert_eq!(got.len() as u64, size);
    assert_eq!(
        blake3::hash(&got).to_hex().to_string(),
        file_hash(&src).unwrap(),
        "bytes differ after the peer died"
    );
    assert_eq!(
        metric(&b, "shoal_webserver_download_failures_total ").await,
        0
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn http_upload_streams_to_peers_then_client_get_matches() {
    let cluster = cluster(&["a", "a", "b"]).await;
    let c = cluster.client();
    let work = tempfile::tempdir().unwrap();
    let cfg = WebserverConfig::for_test(cluster.tracker_url());
    let own = OwnWebserver::start(cfg).await;
    wait_for("own webserver SERVING", Duration::from_secs(20), || {
        serving(own.grpc)
    })
    .await
    .unwrap();
    let b = format!("http://{}", own.http);
    let http = web();
    let upload = |form: reqwest::multipart::Form| {
        let (http, url) = (http.clone(), format!("{b}/upload"));
        async move { http.post(url).multipart(form).send().await.unwrap() }
    };
    let file_part = |bytes: Vec<u8>, file_name: &str| {
        reqwest::multipart::Part::bytes(bytes).file_name(file_name.to_string())
    };

    let size = 7 * CHUNK + 5;
    let src = work.path().join("a");
    random_file(&src, size, 5).unwrap();
    let name = "up/loaded ü.bin";
    let form = reqwest::multipart::Form::new()
        .text("name", name)
        .text("replicas", "2")
        .part("file", file_part(std::fs::read(&src).unwrap(), "local.bin"));
    let r = upload(form).await;
    assert_eq!(
        r.status(),
        StatusCode::SEE_OTHER,
        "{}",
        r.text().await.unwrap()
    );
    assert_eq!(
        r.headers()[header::LOCATION],
        "/files/up%2Floaded%20%C3%BC.bin?uploaded=1"
    );
    let out = work.path().join("out-a");
    c.get(name, &out, quiet()).await.unwrap();
    assert_eq!(
        file_hash(&out).unwrap(),
        file_hash(&src).unwrap(),
        "uploaded bytes differ"
    );
    let d = c.stat(name).await.unwrap();
    assert_eq!(d.summary.as_ref().unwrap().replicas_target, 2);
    assert!(
        d.chunks.iter().all(|ch| ch.replicas.len() == 2),
        "placed on peers chosen by the tracker"
    );
    // The web form sends every field before the file (it is stored as it arrives).
    let home = http.get(&b).send().await.unwrap().text().await.unwrap();
    let at = |what: &str| {
        home.find(what)
            .unwrap_or_else(|| panic!("{what} on the page"))
    };
    assert!(
        [
            r#"name="name""#,
            r#"name="replicas""#,
            r#"name="overwrite""#
        ]
        .iter()
        .all(|f| at(f) < at(r#"type="file""#)),
        "a form field after the file input"
    );
    // The redirect target is the file page.
    let page = http
        .get(format!("{b}/files/up%2Floaded%20%C3%BC.bin?uploaded=1"))
        .send()
        .await
        .unwrap();
    assert_eq!(page.status(), StatusCode::OK);
    assert!(page.text().await.unwrap().contains("up/loaded ü.bin"));

    // Different content under the same name: 409 with a message, unless overwrite.
    let other = work.path().join("b");
    random_file(&other, 2 * CHUNK, 6).unwrap();
    let form = reqwest::multipart::Form::new()
        .text("name", name)
        .part("file", file_part(std::fs::read(&other).unwrap(), "b.bin"));
    let r = upload(form).await;
    assert_eq!(r.status(), StatusCode::CONFLICT);
    assert!(r.text().await.unwrap().contains("already exists"));
    let form = reqwest::multipart::Form::new()
        .text("name", name)
        .text("overwrite", "on")
        .text("replicas", "1")
        .part("file", file_part(std::fs::read(&other).unwrap(), "b.bin"));
    let r = upload(form).await;
    assert_eq!(r.status(), StatusCode::SEE_OTHER);
    c.get(name, &out, quiet()).await.unwrap();
    assert_eq!(file_hash(&out).unwrap(), file_hash(&other).unwrap());
    assert_eq!(
        c.stat(name).await.unwrap().summary.unwrap().replicas_target,
        1,
        "the replicas field is honoured"
    );

    // The file part's own name is used when no name is given.
    let form =
        reqwest::multipart::Form::new().part("file", file_part(b"hello".to_vec(), "greeting.txt"));
    let r = upload(form).await;
    assert_eq!(r.status(), StatusCode::SEE_OTHER);
    assert_eq!(
        r.headers()[header::LOCATION],
        "/files/greeting.txt?uploaded=1"
    );
    let form = reqwest::multipart::Form::new()
        .text("name", "greeting copy.txt")
        .part("file", file_part(b"hello".to_vec(), "x"));
    let r = upload(form).await;
    assert_eq!(
        r.headers()[header::LOCATION],
        "/files/greeting%20copy.txt?uploaded=dedup"
    );
    // The file is stored as it arrives: a field after it is refused, and nothing is named.
    let form = reqwest::multipart::Form::new()
        .part("file", file_part(b"late".to_vec(), "x"))
        .text("name", "late.txt");
    let r = upload(form).await;
    assert_eq!(r.status(), StatusCode::BAD_REQUEST);
    assert!(r.text().await.unwrap().contains("comes after the file"));
    assert!(c.stat("late.txt").await.is_err() && c.stat("x").await.is_err());

    // Bad input: 400, never a 500.
    for form in [
        reqwest::multipart::Form::new()
            .text("name", "bad\u{7}name")
            .part("file", file_part(b"x".to_vec(), "x")),
        reqwest::multipart::Form::new().text("name", "no-file"),
        reqwest::multipart::Form::new()
            .text("replicas", "many")
            .part("file", file_part(b"x".to_vec(), "x")),
        reqwest::multipart::Form::new()
            .text("name", "x".repeat(300))
            .part("file", file_part(b"x".to_vec(), "x")),
    ] {
        let r = upload(form).await;
        assert_eq!(r.status(), StatusCode::BAD_REQUEST);
    }
    assert!(metric(&b, "shoal_webserver_uploaded_bytes_total ").await >= size + 2 * 2 * CHUNK);
    assert_eq!(metric(&b, "shoal_webserver_uploads_total ").await, 4);
    own.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn unknown_file_is_a_404_never_a_500() {
    let cluster = cluster(&["a", "b"]).await;
    let (b, http) = (base(&cluster), web());
    for path in [
        "/files/nope",
        "/files/nope/delete",
        "/download/nope",
        "/no/such/page",
        "/files/a%2Fb%3Fc",
    ] {
        let r = http.get(format!("{b}{path}")).send().await.unwrap();
        assert_eq!(r.status(), StatusCode::NOT_FOUND, "{path}");
        assert!(
            r.headers()[header::CONTENT_TYPE]
                .to_str()
                .unwrap()
                .starts_with("text/html"),
            "{path}"
        );
        let text = r.text().await.unwrap();
        assert!(text.contains("Not found"), "{path}: {text}");
    }
    let r = http
        .get(format!("{b}/files/%3Cscript%3Ealert(1)%3C%2Fscript%3E"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::NOT_FOUND);
    let text = r.text().await.unwrap();
    assert!(!text.contains("<script>"), "names are escaped: {text}");
    assert!(text.contains("&lt;script&gt;"));
    let r = http
        .head(format!("{b}/download/nope"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::NOT_FOUND);
    let r = http
        .post(format!("{b}/files/nope/delete"))
        .header(header::CONTENT_TYPE, "application/x-www-form-urlencoded")
        .body("confirm=yes")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::NOT_FOUND);
    for path in ["/api/v1/files/nope", "/api/v1/nothing"] {
        let r = http.get(format!("{b}{path}")).send().await.unwrap();
        assert_eq!(r.status(), StatusCode::NOT_FOUND, "{path}");
        let v: Value = serde_json::from_slice(&r.bytes().await.unwrap()).unwrap();
        assert_eq!(v["error"]["code"], "not_found", "{path}: {v}");
    }
    assert_eq!(
        metric(
            &b,
            "shoal_webserver_http_requests_total{route=\"/files/{name}\",status=\"500\"} "
        )
        .await,
        0
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn health_follows_the_tracker() {
    let mut cluster = cluster(&["a", "b"]).await;
    let ws = cluster.webserver.as_ref().unwrap().node.addr;
    let (b, http) = (base(&cluster), web());
    let status = |path: &'static str| {
        let (http, b) = (http.clone(), b.clone());
        async move {
            http.get(format!("{b}{path}"))
                .send()
                .await
                .map(|r| r.status())
                .unwrap_or(StatusCode::IM_A_TEAPOT)
        }
    };
    assert!(serving(ws).await && serving_named(ws).await);
    assert_eq!(status("/readyz").await, StatusCode::OK);
    assert_eq!(metric(&b, "shoal_webserver_tracker_up ").await, 1);

    let t0 = Instant::now();
    cluster.tracker.take().expect("tracker").stop();
    wait_for("webserver NOT_SERVING", Duration::from_secs(20), || async {
        !serving(ws).await
    })
    .await
    .unwrap();
    let took = t0.elapsed();
    assert!(
        took >= Duration::from_millis(1500),
        "flipped after {took:?}: one missed probe must not flip health"
    );
    assert!(!serving_named(ws).await);
    assert_eq!(status("/readyz").await, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(
        status("/healthz").await,
        StatusCode::OK,
        "the process is still up"
    );
    assert_eq!(
        status("/").await,
        StatusCode::SERVICE_UNAVAILABLE,
        "a page says the cluster is unavailable, not 500"
    );
    assert_eq!(metric(&b, "shoal_webserver_tracker_up ").await, 0);
    // Discover still answers from the last facts it had.
    let (_, d) = Client::discover(&grpc_url(&cluster)).await.unwrap();
    assert_eq!(d.tracker_urls, vec![cluster.tracker_url()]);

    // A webserver that has never reached the tracker is not ready, and cannot discover.
    let fresh = OwnWebserver::start(WebserverConfig::for_test(cluster.tracker_url())).await;
    for _ in 0..6 {
        tokio::time::sleep(Duration::from_millis(250)).await;
        assert!(
            !serving(fresh.grpc).await,
            "NOT_SERVING until the tracker answers"
        );
    }
    let r = http
        .get(format!("http://{}/readyz", fresh.http))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::SERVICE_UNAVAILABLE);
    match Client::discover(&fresh.grpc.to_string()).await {
        Err(ClientError::Rpc {
            code: tonic::Code::Unavailable,
            ..
        }) => {}
        Err(e) => panic!("expected UNAVAILABLE, got {e}"),
        Ok(_) => panic!("discover answered without ever reaching the tracker"),
    }

    cluster.start_tracker().await.unwrap();
    wait_for(
        "webserver SERVING again",
        Duration::from_secs(20),
        || async { serving(ws).await && serving_named(ws).await },
    )
    .await
    .unwrap();
    wait_for("fresh webserver SERVING", Duration::from_secs(20), || {
        serving(fresh.grpc)
    })
    .await
    .unwrap();
    assert_eq!(status("/readyz").await, StatusCode::OK);
    let r = http
        .get(format!("http://{}/readyz", fresh.http))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    fresh.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn pages_show_files_detail_peers_and_delete_with_confirmation() {
    let cluster = cluster(&["a", "a", "b"]).await;
    let (c, b, http) = (cluster.client(), base(&cluster), web());
    let work = tempfile::tempdir().unwrap();
    let (_, alpha_id) = put(&c, work.path(), "alpha.bin", 3 * CHUNK, 7).await;
    put(&c, work.path(), "beta <i>.txt", 1000, 8).await;
    let get = |path: String| {
        let (http, b) = (http.clone(), b.clone());
        async move {
            let r = http.get(format!("{b}{path}")).send().await.unwrap();
            let (status, h) = (r.status(), r.headers().clone());
            (status, h, r.text().await.unwrap())
        }
    };

    let (s, h, index) = get("/".into()).await;
    assert_eq!(s, StatusCode::OK);
    assert!(h[header::CONTENT_TYPE]
        .to_str()
        .unwrap()
        .starts_with("text/html"));
    assert!(h[header::CONTENT_SECURITY_POLICY]
        .to_str()
        .unwrap()
        .contains("default-src 'none'"));
    assert!(index.contains(">alpha.bin</a>"), "{index}");
    assert!(
        index.contains("beta &lt;i&gt;.txt") && !index.contains("beta <i>"),
        "names are escaped"
    );
    assert!(
        index.contains("href=\"/files/beta%20%3Ci%3E.txt\""),
        "links are percent-encoded"
    );
    assert!(index.contains("href=\"/download/alpha.bin\""));
    assert!(index.contains("badge b-ok\">healthy<"));
    assert!(
        index.contains("action=\"/upload\"")
            && index.contains("multipart/form-data")
            && index.contains("name=\"overwrite\"")
    );
    assert!(index.contains("href=\"/peers\""), "navigation");
    let (_, _, found) = get("/?q=ALP".into()).await;
    assert!(
        found.contains(">alpha.bin</a>") && !found.contains("beta &lt;i&gt;"),
        "search filters"
    );

    // Detail: the matrix has a column per peer, grouped by zone, a dot per copy.
    let detail = c.stat("alpha.bin").await.unwrap();
    let peers = c.peers().await.unwrap();
    let (s, _, page) = get("/files/alpha.bin".into()).await;
    assert_eq!(s, StatusCode::OK);
    assert!(page.contains(&alpha_id));
    assert!(page.contains("zone a</th>") && page.contains("zone b</th>"));
    for p in &peers {
        let id = &p.peer.as_ref().unwrap().id;
        assert!(
            page.contains(&format!("title=\"{id} at ")),
            "column for peer {id}"
        );
    }
    let copies: usize = detail.chunks.iter().map(|ch| ch.replicas.len()).sum();
    assert_eq!(page.matches("<span class=\"has\"").count(), copies);
    assert_eq!(copies, 6, "3 chunks × 2 replicas");
    let reason = &detail.chunks[0].placement_reason;
    assert!(
        !reason.is_empty(),
        "the tracker says why chunks sit where they do"
    );
    assert!(
        page.contains(&shoal_webserver::http::html::Esc(reason).to_string()),
        "placement reasons shown"
    );
    assert!(page.contains("href=\"/download/alpha.bin\""));
    assert!(page.contains("action=\"/files/alpha.bin/delete\"") && page.contains("required"));
    let (s, _, by_id) = get(format!("/files/{alpha_id}")).await;
    assert_eq!(s, StatusCode::OK);
    assert!(by_id.contains("alpha.bin"));

    // Peers by zone, with state and usage.
    let (s, _, peers_page) = get("/peers".into()).await;
    assert_eq!(s, StatusCode::OK);
    assert!(peers_page.contains("Zone a</h2>") && peers_page.contains("Zone b</h2>"));
    for p in &peers {
        assert!(peers_page.contains(&p.peer.as_ref().unwrap().id));
    }
    assert_eq!(peers_page.matches("badge b-ok\">alive<").count(), 3);
    assert!(peers_page.contains("class=\"bar\""));

    // Delete: nothing happens without the confirmation; then it is gone.
    let post = |path: &str, body: &'static str| {
        let (http, url) = (http.clone(), format!("{b}{path}"));
        async move {
            http.post(url)
                .header(header::CONTENT_TYPE, "application/x-www-form-urlencoded")
                .body(body)
                .send()
                .await
                .unwrap()
        }
    };
    let r = http
        .post(format!("{b}/files/alpha.bin/delete"))
        .header(header::CONTENT_TYPE, "application/x-www-form-urlencoded")
        .header(header::ORIGIN, "http://elsewhere.invalid")
        .body("confirm=yes")
        .send()
        .await
        .unwrap();
    assert_eq!(
        r.status(),
        StatusCode::FORBIDDEN,
        "a form on another site cannot delete"
    );
    assert!(c.stat("alpha.bin").await.is_ok());
    let r = post("/files/alpha.bin/delete", "").await;
    assert_eq!(r.status(), StatusCode::OK);
    assert!(r.text().await.unwrap().contains("Yes, delete it"));
    let (s, _, confirm) = get("/files/alpha.bin/delete".into()).await;
    assert_eq!(s, StatusCode::OK);
    assert!(confirm.contains("Yes, delete it"));
    assert!(
        c.stat("alpha.bin").await.is_ok(),
        "not deleted without confirmation"
    );
    let r = post("/files/alpha.bin/delete", "confirm=yes").await;
    assert_eq!(r.status(), StatusCode::SEE_OTHER);
    assert_eq!(r.headers()[header::LOCATION], "/?deleted=alpha.bin");
    assert!(matches!(
        c.stat("alpha.bin").await,
        Err(ClientError::Rpc {
            code: tonic::Code::NotFound,
            ..
        })
    ));
    let (_, _, after) = get("/?deleted=alpha.bin".into()).await;
    assert!(after.contains("Deleted “alpha.bin”") && !after.contains(">alpha.bin</a>"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn json_api_uses_the_cli_keys() {
    let cluster = cluster(&["a", "a", "b"]).await;
    let (c, b, http) = (cluster.client(), base(&cluster), web());
    let work = tempfile::tempdir().unwrap();
    put(&c, work.path(), "j/one", 2 * CHUNK + 1, 9).await;
    put(&c, work.path(), "j/two", 10, 10).await;
    let json = |path: String| {
        let (http, b) = (http.clone(), b.clone());
        async move {
            let r = http.get(format!("{b}{path}")).send().await.unwrap();
            assert_eq!(r.status(), StatusCode::OK, "{path}");
            assert!(r.headers()[header::CONTENT_TYPE]
                .to_str()
                .unwrap()
                .starts_with("application/json"));
            serde_json::from_slice::<Value>(&r.bytes().await.unwrap()).unwrap()
        }
    };
    let has = |v: &Value, keys: &[&str]| {
        for k in keys {
            assert!(v.get(k).is_some(), "key {k} missing in {v}");
        }
    };

    let files = json("/api/v1/files".into()).await;
    let files = files.as_array().unwrap();
    assert_eq!(files.len(), 2);
    for f in files {
        has(
            f,
            &[
                "name",
                "id",
                "size",
                "chunks",
                "replicas_target",
                "replicas_min",
                "status",
            ],
        );
        assert_eq!(f["status"], "healthy");
    }
    assert_eq!(files[0]["name"], "j/one");
    assert_eq!(files[0]["chunks"], 3);
    assert_eq!(
        json("/api/v1/files?q=TWO".into())
            .await
            .as_array()
            .unwrap()
            .len(),
        1
    );
    assert_eq!(
        json("/api/v1/search?q=j%2F".into())
            .await
            .as_array()
            .unwrap()
            .len(),
        2
    );

    let stat = json(format!("/api/v1/files/{}", seg("j/one"))).await;
    has(
        &stat,
        &[
            "id",
            "name",
            "size",
            "chunk_size",
            "replicas_target",
            "chunks",
        ],
    );
    let detail = c.stat("j/one").await.unwrap();
    assert_eq!(stat["id"], detail.summary.as_ref().unwrap().id.as_str());
    assert_eq!(stat["chunk_size"], CHUNK);
    let chunks = stat["chunks"].as_array().unwrap();
    assert_eq!(chunks.len(), 3);
    for (j, ch) in chunks.iter().zip(&detail.chunks) {
        has(j, &["index", "hash", "size", "replicas"]);
        assert_eq!(j["hash"], ch.hash.as_str());
        let reps = j["replicas"].as_array().unwrap();
        assert_eq!(reps.len(), ch.replicas.len());
        let mut got: Vec<(String, String, String)> = reps
            .iter()
            .map(|r| {
                has(r, &["peer", "zone", "addr"]);
                let s = |k: &str| r[k].as_str().unwrap().to_string();
                (s("peer"), s("zone"), s("addr"))
            })
            .collect();
        let mut want: Vec<(String, String, String)> = ch
            .replicas
            .iter()
            .map(|p| (p.id.clone(), p.zone.clone(), p.addr.clone()))
            .collect();
        got.sort();
        want.sort();
        assert_eq!(got, want, "chunk {}", ch.index);
    }

    let peers = json("/api/v1/peers".into()).await;
    let peers = peers.as_array().unwrap();
    assert_eq!(peers.len(), 3);
    for p in peers {
        has(
            p,
            &[
                "id",
                "addr",
                "zone",
                "state",
                "chunks",
                "capacity_bytes",
                "used_bytes",
            ],
        );
        assert_eq!(p["state"], "alive");
    }
    let cluster_info = json("/api/v1/cluster".into()).await;
    assert_eq!(cluster_info["live_peers"], 3);
    assert_eq!(cluster_info["zones"], 2);
    assert_eq!(cluster_info["replication_factor"], 2);
    assert_eq!(cluster_info["files"], 2);

    assert!(
        metric(
            &b,
            "shoal_webserver_http_requests_total{route=\"/api/v1/files\",status=\"200\"} "
        )
        .await
            >= 2
    );
    let r = http.get(format!("{b}/healthz")).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::OK);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn http_download_never_sends_a_corrupt_copy() {
    let cluster = cluster(&["a", "b"]).await;
    let (c, b) = (cluster.client(), base(&cluster));
    let work = tempfile::tempdir().unwrap();
    let (src, _) = put(&c, work.path(), "fragile", 6 * CHUNK, 11).await;
    let bytes = std::fs::read(&src).unwrap();
    // Flip one byte of every chunk on peer 0 (same length): only peer 1 has good copies.
    for ch in &c.stat("fragile").await.unwrap().chunks {
        let f = cluster.chunk_file(0, &ch.hash);
        let mut data = std::fs::read(&f).unwrap();
        data[7] ^= 0xff;
        std::fs::write(&f, data).unwrap();
    }
    for k in 0..2 {
        let r = web()
            .get(format!("{b}/download/fragile"))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), StatusCode::OK);
        assert_eq!(
            r.bytes().await.unwrap().as_ref(),
            bytes.as_slice(),
            "round {k}: corrupt bytes were sent"
        );
        let r = web()
            .get(format!("{b}/download/fragile"))
            .header(
                header::RANGE,
                format!("bytes={}-{}", CHUNK + 3, 3 * CHUNK + 3),
            )
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), StatusCode::PARTIAL_CONTENT);
        assert_eq!(
            r.bytes().await.unwrap().as_ref(),
            &bytes[(CHUNK + 3) as usize..=(3 * CHUNK + 3) as usize]
        );
    }
}

/// An upload over `SHOAL_MAX_UPLOAD_BYTES` gets 413 naming it — refused from its
/// declared length, or mid-stream when it declares none, and then nothing is stored —
/// and the memory of refused and stored uploads is given back, so uploads within the
/// limit keep working with an upload memory of a few chunks.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http_upload_over_the_limit_is_a_413_naming_it() {
    use reqwest::multipart::{Form, Part};
    let cluster = cluster(&["a", "b"]).await;
    let work = tempfile::tempdir().unwrap();
    let mut cfg = WebserverConfig::for_test(cluster.tracker_url());
    cfg.max_upload_bytes = 1 << 20;
    cfg.upload_buffer_bytes = 1 << 20;
    let own = OwnWebserver::start(cfg).await;
    wait_for("own webserver SERVING", Duration::from_secs(20), || {
        serving(own.grpc)
    })
    .await
    .unwrap();
    let url = format!("http://{}/upload", own.http);
    let http = web();
    let names_the_limit =
        |body: &str| body.contains("1048576 bytes") && body.contains("SHOAL_MAX_UPLOAD_BYTES");

    // Declared length over the limit: refused before the body is read.
    let form = Form::new().part("file", Part::bytes(vec![7u8; 3 << 20]).file_name("big.bin"));
    let r = http.post(&url).multipart(form).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::PAYLOAD_TOO_LARGE);
    let body = r.text().await.unwrap();
    assert!(names_the_limit(&body), "{body}");

    // No declared length (chunked): refused as soon as the limit is passed.
    let pieces = (0..48).map(|_| Ok::<_, std::io::Error>(vec![9u8; 64 << 10]));
    let part = Part::stream(reqwest::Body::wrap_stream(futures::stream::iter(pieces)))
        .file_name("stream.bin");
    let r = http
        .post(&url)
        .multipart(Form::new().part("file", part))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::PAYLOAD_TOO_LARGE);
    let body = r.text().await.unwrap();
    assert!(names_the_limit(&body), "{body}");
    assert!(
        cluster.client().stat("stream.bin").await.is_err(),
        "nothing is named after a refused stream"
    );

    // Within the limit, twice: the refused uploads' memory was given back.
    for (i, len) in [900_000usize, 1_000_000].into_iter().enumerate() {
        let name = format!("fits-{i}.bin");
        let bytes: Vec<u8> = (0..len).map(|b| (b % 251) as u8 ^ i as u8).collect();
        let form = Form::new()
            .text("name", name.clone())
            .part("file", Part::bytes(bytes.clone()).file_name("x.bin"));
        let r = http.post(&url).multipart(form).send().await.unwrap();
        assert_eq!(
            r.status(),
            StatusCode::SEE_OTHER,
            "{}",
            r.text().await.unwrap()
        );
        let out = work.path().join(format!("out-{i}"));
        cluster.client().get(&name, &out, quiet()).await.unwrap();
        assert_eq!(std::fs::read(&out).unwrap(), bytes, "{name}: bytes differ");
    }
    own.shutdown().await;
}

/// Bytes `i` of the generated upload: a stream made on the fly, so the test holds none of it.
fn generated(mib: usize, seed: u8) -> impl futures::Stream<Item = std::io::Result<Vec<u8>>> {
    futures::stream::iter((0..mib).map(move |i| {
        Ok((0..1usize << 20)
            .map(|b| (b as u8).wrapping_mul(31) ^ (i as u8) ^ seed)
            .collect())
    }))
}

fn peak_rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("VmHWM in /proc/PID/status")
}

/// A real webserver process streams uploads to the peers without holding them or
/// writing them anywhere: a 48 MiB upload (over its 4 MiB upload memory, within its
/// 64 MiB limit) is stored byte for byte, a 100 MiB one is refused with 413 after its
/// body is read and dropped, and the process's peak RSS grows by far less than either.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn web_uploads_keep_the_webserver_memory_bounded() {
    use reqwest::multipart::{Form, Part};
    use shoal_testkit::procs::{free_addr, Proc};
    let cluster = TestCluster::start(ClusterOptions::zones(&["a", "b"]).replication(2))
        .await
        .unwrap();
    let (logs, work) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let (grpc, http) = (free_addr(), free_addr());
    let w = Proc::spawn(
        "webserver",
        "shoal-webserver",
        &[
            ("SHOAL_LISTEN_ADDR", grpc.to_string()),
            ("SHOAL_HTTP_ADDR", http.to_string()),
            ("SHOAL_TRACKER_URL", cluster.tracker_url()),
            ("SHOAL_UPLOAD_BUFFER_BYTES", (4u64 << 20).to_string()),
            ("SHOAL_MAX_UPLOAD_BYTES", (64u64 << 20).to_string()),
        ],
        logs.path(),
    );
    shoal_testkit::wait_serving(grpc).await.unwrap();
    let pid = w.child.id();
    let started = peak_rss_kib(pid);
    let url = format!("http://{http}/upload");
    let client = web();

    let part = Part::stream_with_length(reqwest::Body::wrap_stream(generated(48, 1)), 48 << 20)
        .file_name("fits.bin");
    let r = client
        .post(&url)
        .multipart(Form::new().text("name", "fits.bin").part("file", part))
        .send()
        .await
        .unwrap();
    assert_eq!(
        r.status(),
        StatusCode::SEE_OTHER,
        "{}",
        r.text().await.unwrap()
    );
    let out = work.path().join("fits.bin");
    cluster
        .client()
        .get("fits.bin", &out, quiet())
        .await
        .unwrap();
    let mut want = blake3::Hasher::new();
    futures::StreamExt::for_each(generated(48, 1), |b| {
        want.update(&b.unwrap());
        async {}
    })
    .await;
    assert_eq!(
        file_hash(&out).unwrap(),
        want.finalize().to_hex().to_string()
    );

    let part = Part::stream_with_length(reqwest::Body::wrap_stream(generated(100, 2)), 100 << 20)
        .file_name("big.bin");
    let r = client
        .post(&url)
        .multipart(Form::new().part("file", part))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::PAYLOAD_TOO_LARGE);
    let body = r.text().await.unwrap();
    assert!(body.contains(&format!("{} bytes", 64u64 << 20)), "{body}");

    let peak = peak_rss_kib(pid);
    eprintln!("webserver peak RSS: {started} KiB after start, {peak} KiB after a 48 MiB and a 100 MiB upload");
    assert!(
        peak < started + 20 * 1024,
        "webserver peak RSS grew from {started} KiB to {peak} KiB"
    );
}
