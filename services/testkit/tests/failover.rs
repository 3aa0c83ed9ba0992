//! Reads and writes survive a dead or frozen peer (issue 18): pipeline recovery on
//! replacement targets, progress deadlines instead of connection timeouts, and no
//! going back to a peer that failed within one get or put — for the client and for the
//! webserver's HTTP paths.
//!
//! "Frozen" is the peer's fault hook: it keeps its connections, heartbeats and health
//! but moves no chunk byte, as a SIGSTOPped process whose kernel still accepts — and
//! the tracker never learns of it. Every wait has a deadline; nothing sleeps and hopes.

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::StreamExt;
use shoal_client::{Client, Progress, PutOptions, Quiet};
use shoal_testkit::{file_hash, random_file, wait_for, ClusterOptions, TestCluster};

/// The progress deadline every node and client of these tests runs with.
const PROGRESS: Duration = Duration::from_secs(1);
/// Far below the ~20 s HTTP/2 keep-alive that used to be the only way out.
const QUICK: Duration = Duration::from_secs(15);
const MIB: u64 = 1 << 20;

fn quiet() -> Arc<dyn Progress> {
    Arc::new(Quiet)
}

/// 64 KiB chunks, a 1 s progress deadline everywhere, and no background repair: the
/// copies found after a put are the ones the put made.
fn opts(zones: &[&str], r: u32) -> ClusterOptions {
    let mut o = ClusterOptions::zones(zones).replication(r);
    o.progress_timeout = Some(PROGRESS);
    o.tracker.repair.interval = Duration::from_secs(3600);
    o
}

fn client(c: &TestCluster) -> Arc<Client> {
    let mut cl = c.client();
    cl.options.progress_timeout = PROGRESS;
    Arc::new(cl)
}

fn source(dir: &Path, name: &str, len: u64, seed: u64) -> PathBuf {
    let p = dir.join(format!("src-{name}"));
    random_file(&p, len, seed).unwrap();
    p
}

fn put_opts(name: &str) -> PutOptions {
    PutOptions {
        name: name.into(),
        replicas: 0,
        overwrite: false,
    }
}

/// Every chunk of `name` is on the disks of at least `min` peers outside `except`.
async fn assert_copies(cluster: &TestCluster, c: &Client, name: &str, min: usize, except: usize) {
    let detail = c.stat(name).await.unwrap();
    let disks: Vec<HashSet<String>> = (0..cluster.peers.len())
        .filter(|&i| i != except)
        .map(|i| cluster.chunks_on_disk(i))
        .collect();
    for ch in &detail.chunks {
        let n = disks.iter().filter(|d| d.contains(&ch.hash)).count();
        assert!(
            n >= min,
            "chunk {} is on {n} live peers' disks, {min} required",
            ch.index
        );
    }
}

async fn get_same(c: &Client, name: &str, src: &Path, out: &Path) {
    c.get(name, out, quiet()).await.unwrap();
    assert_eq!(file_hash(out).unwrap(), file_hash(src).unwrap());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn put_survives_a_pipeline_peer_killed_mid_transfer() {
    let mut cluster = TestCluster::start(opts(&["a", "a", "b", "b", "c", "c"], 3))
        .await
        .unwrap();
    let c = client(&cluster);
    let work = tempfile::tempdir().unwrap();
    let src = source(work.path(), "big", 4 * MIB, 1);
    // Peer 1 takes some chunks, then freezes mid-transfer; it is killed while a
    // transfer is held, so its pipelines break in the middle of the put.
    let victim = 1;
    cluster.faults[victim].freeze_after(512 << 10);
    let put = tokio::spawn({
        let (c, src) = (c.clone(), src.clone());
        async move { c.put(&src, put_opts("big"), quiet()).await }
    });
    let faults = cluster.faults[victim].clone();
    wait_for("a transfer held on the victim", QUICK, || {
        let f = faults.clone();
        async move { f.stalled() > 0 }
    })
    .await
    .unwrap();
    assert!(
        !put.is_finished(),
        "the put is still running when the peer dies"
    );
    cluster.kill_peer(victim);
    let r = tokio::time::timeout(Duration::from_secs(60), put)
        .await
        .expect("the put finishes")
        .unwrap();
    let r = r.unwrap_or_else(|e| panic!("put failed after a peer died: {e}"));
    assert_eq!(r.chunks, 64);
    // min(R, 2) copies of every chunk on peers that are still up.
    assert_copies(&cluster, &c, "big", 2, victim).await;
    get_same(&c, "big", &src, &work.path().join("out")).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn put_fails_naming_the_chunk_when_retries_are_exhausted() {
    let cluster = TestCluster::start(opts(&["a", "b", "c"], 2)).await.unwrap();
    let c = client(&cluster);
    let work = tempfile::tempdir().unwrap();
    let src = source(work.path(), "doomed", MIB, 2);
    // Only peer 0 takes uploads: no chunk can reach a second copy.
    cluster.faults[1].refuse_puts(true);
    cluster.faults[2].refuse_puts(true);
    let err = tokio::time::timeout(QUICK, c.put(&src, put_opts("doomed"), quiet()))
        .await
        .expect("the put gives up within the deadline")
        .expect_err("a put that cannot reach 2 copies fails");
    let msg = err.to_string();
    assert!(msg.contains("chunk "), "{msg}");
    assert!(
        msg.contains("is durable on 1 of the 2 peers required"),
        "{msg}"
    );
    assert!(
        msg.contains("refuses uploads"),
        "the reason is named: {msg}"
    );
    assert!(
        msg.contains("no replacement targets"),
        "the tracker had no one left: {msg}"
    );
    // The name never became visible.
    assert!(c.stat("doomed").await.is_err());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn get_with_a_frozen_replica_finishes_quickly_and_avoids_it() {
    let cluster = TestCluster::start(opts(&["a", "b", "c"], 3)).await.unwrap();
    let c = client(&cluster);
    let work = tempfile::tempdir().unwrap();
    let src = source(work.path(), "f", 4 * MIB, 3);
    c.put(&src, put_opts("f"), quiet()).await.unwrap();

    // Peer 1 serves a few chunks, then freezes in the middle of the get.
    let frozen = &cluster.faults[1];
    frozen.freeze_after(256 << 10);
    let t = Instant::now();
    let out = work.path().join("out");
    tokio::time::timeout(QUICK, get_same(&c, "f", &src, &out))
        .await
        .expect("the get finishes well within the keep-alive timeout");
    let took = t.elapsed();
    assert!(
        frozen.held() > 0,
        "the freeze held some of the get's streams"
    );
    // Only the streams already on their way to it when it froze (at most one per
    // parallel fetch) reached it; none after the first stall was noticed.
    let asked = frozen
        .gets_while_frozen
        .load(std::sync::atomic::Ordering::Relaxed);
    assert!(
        asked <= c.options.get_parallelism as u64,
        "the frozen peer was asked {asked} times"
    );
    assert!(took < QUICK, "{took:?}");
    frozen.thaw();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn put_with_a_frozen_pipeline_peer_completes() {
    let cluster = TestCluster::start(opts(&["a", "a", "b", "b", "c", "c"], 3))
        .await
        .unwrap();
    let c = client(&cluster);
    let work = tempfile::tempdir().unwrap();
    let src = source(work.path(), "p", 4 * MIB, 4);
    let frozen = 2;
    cluster.faults[frozen].freeze();
    let t = Instant::now();
    let r = tokio::time::timeout(Duration::from_secs(30), c.put(&src, put_opts("p"), quiet()))
        .await
        .expect("the put finishes")
        .unwrap_or_else(|e| panic!("put failed with a frozen peer: {e}"));
    assert_eq!(r.chunks, 64);
    let f = &cluster.faults[frozen];
    assert!(f.held() > 0, "the frozen peer was in some pipelines");
    // Each pipeline in flight when it froze met it once; later ones avoid it.
    let asked = f
        .puts_while_frozen
        .load(std::sync::atomic::Ordering::Relaxed);
    assert!(
        asked <= c.options.put_parallelism as u64,
        "the frozen peer was sent {asked} chunks; {t:?}",
        t = t.elapsed()
    );
    assert_copies(&cluster, &c, "p", 2, frozen).await;
    f.thaw();
    get_same(&c, "p", &src, &work.path().join("out")).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn http_download_with_a_frozen_replica_completes() {
    let mut o = opts(&["a", "b", "c"], 3);
    o.webserver = true;
    let cluster = TestCluster::start(o).await.unwrap();
    let c = client(&cluster);
    let work = tempfile::tempdir().unwrap();
    let size = 4 * MIB;
    let src = source(work.path(), "w", size, 5);
    c.put(&src, put_opts("w"), quiet()).await.unwrap();
    let base = format!("http://{}", cluster.webserver.as_ref().unwrap().http);

    let frozen = &cluster.faults[2];
    frozen.freeze_after(256 << 10);
    let t = Instant::now();
    let body = async {
        let r = reqwest::get(format!("{base}/download/w")).await.unwrap();
        assert_eq!(r.status(), reqwest::StatusCode::OK);
        let mut body = r.bytes_stream();
        let mut got = Vec::with_capacity(size as usize);
        while let Some(piece) = body.next().await {
            got.extend_from_slice(&piece.expect("the download is not cut short"));
        }
        got
    };
    let got = tokio::time::timeout(QUICK, body)
        .await
        .expect("the download finishes well within the keep-alive timeout");
    assert_eq!(got.len() as u64, size);
    assert_eq!(
        blake3::hash(&got).to_hex().to_string(),
        file_hash(&src).unwrap()
    );
    assert!(
        frozen.held() > 0,
        "the freeze held some of the download's reads"
    );
    let ahead = shoal_webserver::WebserverConfig::for_test(String::new()).download_ahead;
    let asked = frozen
        .gets_while_frozen
        .load(std::sync::atomic::Ordering::Relaxed);
    assert!(
        asked <= ahead as u64,
        "the frozen peer was asked {asked} times; {:?}",
        t.elapsed()
    );
    frozen.thaw();
}
