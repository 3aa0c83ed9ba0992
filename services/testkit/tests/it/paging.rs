//! Paged listings end to end: more names than a page through the gRPC API (a bad token
//! refused), the `shoal` CLI (`ls --json` follows pages, `--limit` stops early), and the
//! webserver's JSON endpoint and file list pages.

use std::collections::BTreeMap;
use std::process::Command;
use std::sync::Arc;

use reqwest::StatusCode;
use serde_json::Value;
use shoal_client::{Client, PutOptions, Quiet};
use shoal_proto::v1 as pb;
use shoal_testkit::procs::bin;
use shoal_testkit::{ClusterOptions, TestCluster};

/// More names than the small page sizes below; mixed case, so byte order is visible
/// ("Report…" sorts before "data…").
const FILES: usize = 25;

fn name(i: usize) -> String {
    if i.is_multiple_of(5) {
        format!("Report {i:02}.txt")
    } else {
        format!("data-{i:02}.bin")
    }
}

/// A cluster (with a webserver) holding `n` small files; returns their names in byte
/// order.
async fn cluster_with_files(n: usize) -> (TestCluster, Vec<String>) {
    let mut opts = ClusterOptions::zones(&["a"]).replication(1);
    opts.webserver = true;
    let c = TestCluster::start(opts).await.expect("cluster starts");
    c.wait_live_peers(1).await.expect("peer registers");
    let client = c.client();
    let mut names = BTreeMap::new();
    for i in 0..n {
        let p = c.dir.path().join(format!("src-{i}"));
        std::fs::write(&p, format!("content {i}")).unwrap();
        let opts = PutOptions {
            name: name(i),
            ..Default::default()
        };
        client.put(&p, opts, Arc::new(Quiet)).await.unwrap();
        names.insert(name(i), ());
    }
    (c, names.into_keys().collect())
}

fn names_of(files: &[pb::FileSummary]) -> Vec<String> {
    files.iter().map(|f| f.name.clone()).collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn pages_through_the_api_and_the_cli() {
    let (c, want) = cluster_with_files(FILES).await;
    let client: Client = c.client();

    // gRPC: pages of 7 cover every name once, in byte order; the last has no token.
    let (mut got, mut token, mut pages) = (Vec::new(), String::new(), 0);
    loop {
        let p = client.files_page(None, 7, &token).await.unwrap();
        assert!(p.files.len() <= 7);
        got.extend(names_of(&p.files));
        pages += 1;
        if p.next_page_token.is_empty() {
            break;
        }
        token = p.next_page_token;
    }
    assert_eq!((got, pages), (want.clone(), FILES.div_ceil(7)));
    // An old client's request (no paging fields) gets the first page: all 25 here.
    let old = client.files_page(None, 0, "").await.unwrap();
    assert_eq!(names_of(&old.files), want);
    assert!(old.next_page_token.is_empty());
    // Search pages hold only matches.
    let found = client.files(Some("report"), None, 2).await.unwrap();
    assert_eq!(
        names_of(&found),
        want.iter()
            .filter(|n| n.starts_with("Report"))
            .cloned()
            .collect::<Vec<_>>()
    );
    assert_eq!(client.files(None, Some(5), 2).await.unwrap().len(), 5);
    // A token the tracker did not issue is refused, and says what to send instead.
    for bad in ["zz", "c3", &"ab".repeat(1000)] {
        let e = client.files_page(None, 5, bad).await.unwrap_err();
        assert_eq!(
            e.code(),
            Some(tonic::Code::InvalidArgument),
            "{bad:.20}: {e}"
        );
        assert!(e.to_string().contains("page_token"), "{e}");
        let e = client.files_page(Some("x"), 5, bad).await.unwrap_err();
        assert_eq!(e.code(), Some(tonic::Code::InvalidArgument), "{e}");
    }

    // The CLI: `ls --json` follows pages into one document; `--limit` stops early.
    let shoal = |args: &[&str]| shoal(&c, args);
    assert_eq!(
        json_names(&shoal(&["--json", "ls", "--page-size", "7"])),
        want
    );
    assert_eq!(json_names(&shoal(&["--json", "ls"])), want);
    assert_eq!(
        json_names(&shoal(&[
            "--json",
            "ls",
            "--limit",
            "5",
            "--page-size",
            "2"
        ])),
        want[..5]
    );
    assert_eq!(
        json_names(&shoal(&["--json", "ls", "--limit", "5"])),
        want[..5]
    );
    assert_eq!(
        json_names(&shoal(&["--json", "search", "REPORT", "--page-size", "1"])).len(),
        FILES / 5
    );
    let table = shoal(&["ls", "--limit", "3"]);
    assert_eq!(table.lines().count(), 4, "a header and 3 rows:\n{table}");
}

/// More names than the tracker's default page (1,000): an old client's request gets
/// the first 1,000 and a token; `shoal ls --json` with no flags still lists them all.
#[tokio::test(flavor = "multi_thread")]
async fn more_than_the_default_page() {
    let (c, want) = cluster_with_files(1_003).await;
    let first = c.client().files_page(None, 0, "").await.unwrap();
    assert_eq!(names_of(&first.files), want[..1_000]);
    assert!(!first.next_page_token.is_empty());
    // A page size above the maximum is served (clamped, here to everything).
    let big = c.client().files_page(None, 50_000, "").await.unwrap();
    assert_eq!(names_of(&big.files), want);
    assert!(big.next_page_token.is_empty());
    assert_eq!(json_names(&shoal(&c, &["--json", "ls"])), want);
    assert_eq!(
        json_names(&shoal(&c, &["--json", "ls", "--limit", "5"])),
        want[..5]
    );
}

/// `shoal --tracker URL ARGS…`: its stdout, after checking it succeeded.
fn shoal(c: &TestCluster, args: &[&str]) -> String {
    let out = Command::new(bin("shoal"))
        .arg("--tracker")
        .arg(c.tracker_url())
        .args(args)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "shoal {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

/// The names in a `--json` listing, which must be one JSON array.
fn json_names(text: &str) -> Vec<String> {
    let v: Value = serde_json::from_str(text).expect("one JSON document");
    v.as_array()
        .expect("an array")
        .iter()
        .map(|f| f["name"].as_str().unwrap().to_string())
        .collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn the_webserver_pages_its_json_endpoint_and_file_list() {
    let (c, want) = cluster_with_files(FILES).await;
    let base = format!("http://{}", c.webserver.as_ref().expect("webserver").http);
    let web = reqwest::Client::new();

    // JSON: an array per page, the next page named in a header and a Link.
    let (mut got, mut url, mut pages) =
        (Vec::new(), format!("{base}/api/v1/files?page_size=10"), 0);
    loop {
        let r = web.get(&url).send().await.unwrap();
        assert_eq!(r.status(), StatusCode::OK);
        let next = r
            .headers()
            .get("x-next-page-token")
            .map(|v| v.to_str().unwrap().to_string());
        let link = r
            .headers()
            .get("link")
            .map(|v| v.to_str().unwrap().to_string());
        let body: Value = serde_json::from_str(&r.text().await.unwrap()).unwrap();
        let page: Vec<String> = body
            .as_array()
            .unwrap()
            .iter()
            .map(|f| f["name"].as_str().unwrap().to_string())
            .collect();
        assert!(page.len() <= 10);
        got.extend(page);
        pages += 1;
        let Some(token) = next else {
            assert!(link.is_none());
            break;
        };
        let link = link.expect("a Link header with the token");
        assert!(
            link.ends_with("rel=\"next\"") && link.contains(&token),
            "{link}"
        );
        let path = link
            .trim_start_matches('<')
            .split('>')
            .next()
            .unwrap()
            .to_string();
        url = format!("{base}{path}");
    }
    assert_eq!((got, pages), (want.clone(), 3));
    // Search through the same endpoint, one match per page.
    let r = web
        .get(format!("{base}/api/v1/search?q=report&page_size=1"))
        .send()
        .await
        .unwrap();
    assert!(r.headers().contains_key("x-next-page-token"));
    let v: Value = serde_json::from_str(&r.text().await.unwrap()).unwrap();
    assert_eq!(v.as_array().unwrap().len(), 1);
    // Bad paging input: 400 with a JSON error, not a 500.
    for q in ["page_token=nothex", "page_size=many", "page_size=-1"] {
        let r = web
            .get(format!("{base}/api/v1/files?{q}"))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), StatusCode::BAD_REQUEST, "{q}");
        let v: Value = serde_json::from_str(&r.text().await.unwrap()).unwrap();
        assert_eq!(v["error"]["code"], "invalid_argument", "{q}: {v}");
    }

    // The file list: 100 per page by default (all 25 here, no pager) ...
    let html = web.get(&base).send().await.unwrap().text().await.unwrap();
    assert!(!html.contains("Next page"));
    assert!(want.iter().all(|n| html.contains(n.as_str())));
    // ... and Next / First page links when there are more.
    let mut url = format!("{base}/?page_size=10");
    let mut seen = Vec::new();
    for page in 0..3 {
        let html = web.get(&url).send().await.unwrap().text().await.unwrap();
        seen.extend(want.iter().filter(|n| html.contains(n.as_str())).cloned());
        assert_eq!(html.contains("First page"), page > 0, "page {page}");
        let next = html
            .split("rel=\"next\" href=\"")
            .nth(1)
            .map(|s| s.split('"').next().unwrap().replace("&amp;", "&"));
        match next {
            Some(href) => url = format!("{base}{href}"),
            None => assert_eq!(page, 2, "the last page has no next link"),
        }
    }
    assert_eq!(seen, want);
}
