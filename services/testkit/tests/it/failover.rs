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

/// The progress deadline every node and client of these tests runs with (short, yet
/// long enough that a loaded 2-core CI box does not stall a healthy peer).
const PROGRESS: Duration = Duration::from_secs(2);
/// Far below the ~20 s HTTP/2 keep-alive that used to be the only way out.
const QUICK: Duration = Duration::from_secs(15);
const MIB: u64 = 1 << 20;

fn quiet() -> Arc<dyn Progress> {
    Arc::new(Quiet)
}

/// 64 KiB chunks, a short progress deadline everywhere, and no background repair: the
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

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn http_upload_with_a_frozen_peer_completes() {
    let mut o = opts(&["a", "b", "c"], 2);
    o.webserver = true;
    let cluster = TestCluster::start(o).await.unwrap();
    let c = client(&cluster);
    let work = tempfile::tempdir().unwrap();
    let size = 2 * MIB;
    let src = source(work.path(), "u", size, 6);
    let base = format!("http://{}", cluster.webserver.as_ref().unwrap().http);
    let frozen = &cluster.faults[0];
    frozen.freeze();
    let form = reqwest::multipart::Form::new().text("name", "u").part(
        "file",
        reqwest::multipart::Part::bytes(std::fs::read(&src).unwrap()).file_name("u.bin"),
    );
    let http = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    let r = tokio::time::timeout(
        Duration::from_secs(30),
        http.post(format!("{base}/upload")).multipart(form).send(),
    )
    .await
    .expect("the upload finishes")
    .unwrap();
    let status = r.status();
    assert_eq!(
        status,
        reqwest::StatusCode::SEE_OTHER,
        "{}",
        r.text().await.unwrap()
    );
    assert!(frozen.held() > 0, "the frozen peer was in some pipelines");
    assert_copies(&cluster, &c, "u", 2, 0).await;
    frozen.thaw();
    get_same(&c, "u", &src, &work.path().join("out")).await;
}

/// The tracker hears of failed peers with each replacement request and avoids them for
/// the rest of that upload only: another upload may still use them, and liveness does
/// not change on a client's word.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn replacement_hints_are_scoped_to_the_upload() {
    use shoal_proto::v1 as pb;
    let cluster = TestCluster::start(opts(&["a", "b", "c"], 2)).await.unwrap();
    let ch = shoal_common::grpc::channel(&cluster.tracker_addr.to_string()).unwrap();
    let t = pb::tracker_client::TrackerClient::new(ch);
    let ids: Vec<String> = (0..3).map(|i| cluster.peer_id(i)).collect();
    let upload = |name: &'static str| {
        let mut t = t.clone();
        async move {
            let up = t
                .begin_upload(pb::BeginUploadRequest {
                    name: name.into(),
                    size: 10,
                    replicas: 2,
                    overwrite: false,
                    ..Default::default()
                })
                .await
                .unwrap()
                .into_inner()
                .upload_id;
            let hash = blake3::hash(name.as_bytes()).to_hex().to_string();
            t.place_chunks(pb::PlaceChunksRequest {
                upload_id: up.clone(),
                file_id: hash.clone(),
                chunks: vec![pb::ChunkDigest {
                    index: 0,
                    hash,
                    size: 10,
                }],
            })
            .await
            .unwrap();
            up
        }
    };
    let replace = |up: &str, failed: Vec<String>| {
        let mut t = t.clone();
        let req = pb::ReplaceTargetsRequest {
            upload_id: up.into(),
            index: 0,
            want: 1,
            failed_peer_ids: failed,
            holder_peer_ids: vec![ids[0].clone()],
        };
        async move { t.replace_targets(req).await }
    };
    let targets = |r: Result<tonic::Response<pb::ReplaceTargetsResponse>, tonic::Status>| {
        r.unwrap()
            .into_inner()
            .targets
            .into_iter()
            .map(|p| p.id)
            .collect::<Vec<_>>()
    };

    let first = upload("first").await;
    // Peer 1 failed: the replacement goes to zone c, not to the holder's zone.
    assert_eq!(
        targets(replace(&first, vec![ids[1].clone()]).await),
        vec![ids[2].clone()]
    );
    // Remembered for this upload without being named again.
    assert_eq!(targets(replace(&first, vec![]).await), vec![ids[2].clone()]);
    // Everyone but the holder failed: a clear refusal, not another tracker's business.
    let err = replace(&first, vec![ids[2].clone()]).await.unwrap_err();
    assert_eq!(err.code(), tonic::Code::FailedPrecondition, "{err:?}");
    assert!(err.message().contains("chunk 0"), "{}", err.message());

    // Another upload is not affected by the first one's hints.
    let second = upload("second").await;
    assert_eq!(
        targets(replace(&second, vec![ids[2].clone()]).await),
        vec![ids[1].clone()]
    );
    // No peer's liveness changed on a client's word.
    let peers = t
        .clone()
        .list_peers(pb::ListPeersRequest {})
        .await
        .unwrap()
        .into_inner()
        .peers;
    assert_eq!(peers.len(), 3);
    assert!(peers.iter().all(|p| p.state == pb::PeerState::Alive as i32));
    // Unknown ids are ignored as hints but do not fail the request.
    assert_eq!(
        targets(replace(&second, vec!["no-such-peer".into()]).await).len(),
        1
    );
}

/// A repair copy whose source freezes moves on to the next source within the progress
/// deadline instead of waiting on the frozen one.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn repair_copy_from_a_frozen_source_moves_to_the_next() {
    use shoal_proto::v1 as pb;
    let cluster = TestCluster::start(opts(&["a", "b", "c", "a"], 3))
        .await
        .unwrap();
    let c = client(&cluster);
    let work = tempfile::tempdir().unwrap();
    let src = source(work.path(), "r", MIB, 7);
    c.put(&src, put_opts("r"), quiet()).await.unwrap();
    let ids: Vec<String> = (0..4).map(|i| cluster.peer_id(i)).collect();
    // A chunk some peer lacks: that peer copies it from a frozen holder, then a healthy one.
    let detail = c.stat("r").await.unwrap();
    let (chunk, target) = detail
        .chunks
        .iter()
        .find_map(|ch| {
            let held: Vec<&String> = ch.replicas.iter().map(|r| &r.id).collect();
            (0..4)
                .find(|&i| !held.contains(&&ids[i]))
                .map(|t| (ch.clone(), t))
        })
        .expect("with 4 peers and R=3 every chunk misses one");
    let holders: Vec<usize> = (0..4)
        .filter(|&i| chunk.replicas.iter().any(|r| r.id == ids[i]))
        .collect();
    let (frozen, healthy) = (holders[0], holders[1]);
    let peer_ref = |i: usize| pb::PeerRef {
        id: ids[i].clone(),
        addr: cluster.peers[i].as_ref().unwrap().addr.to_string(),
        zone: cluster.opts.zones[i].clone(),
    };
    cluster.faults[frozen].freeze();
    let addr = cluster.peers[target].as_ref().unwrap().addr.to_string();
    let mut p = pb::peer_client::PeerClient::new(shoal_common::grpc::channel(&addr).unwrap());
    let r = tokio::time::timeout(
        QUICK,
        p.replicate_chunk(pb::ReplicateChunkRequest {
            hash: chunk.hash.clone(),
            size: chunk.size,
            sources: vec![peer_ref(frozen), peer_ref(healthy)],
        }),
    )
    .await
    .expect("the copy moves on within the deadline")
    .unwrap()
    .into_inner();
    assert_eq!(r.source_peer_id, ids[healthy]);
    assert!(
        cluster.faults[frozen].held() > 0,
        "the frozen source was tried first"
    );
    assert!(cluster.chunks_on_disk(target).contains(&chunk.hash));
    cluster.faults[frozen].thaw();
}
