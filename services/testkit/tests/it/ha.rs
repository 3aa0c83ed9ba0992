//! Tracker high availability over PostgreSQL: several replicas over one database.
//! Any replica takes catalogue writes and answers reads; exactly one wins a name two
//! replicas race for; a peer heartbeating to one replica is alive on the others, with
//! its chunk locations; the leader dies during repair and a standby finishes it.
//! Needs `SHOAL_TEST_POSTGRES_URL` (make test starts a server).

use std::collections::HashSet;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use shoal_client::{Client, ClientError, Progress, PutOptions, Quiet};
use shoal_common::grpc::GrpcChannel;
use shoal_proto::v1 as pb;
use shoal_testkit::{file_hash, random_file, wait_for, ClusterOptions, TestCluster};

const CONVERGE: Duration = Duration::from_secs(30);
const CHUNK: u64 = 64 << 10;

fn quiet() -> Arc<dyn Progress> {
    Arc::new(Quiet)
}

async fn put(c: &Client, src: &Path, name: &str) -> Result<String, ClientError> {
    let opts = PutOptions {
        name: name.into(),
        ..Default::default()
    };
    c.put(src, opts, quiet()).await.map(|r| r.id)
}

fn source(dir: &Path, tag: &str, len: u64, seed: u64) -> std::path::PathBuf {
    let p = dir.join(format!("src-{tag}"));
    random_file(&p, len, seed).unwrap();
    p
}

/// Wait until `c` (one replica) counts `n` live peers.
async fn wait_live_peers(c: &Client, who: &str, n: usize) {
    wait_for(&format!("{who} sees {n} live peers"), CONVERGE, || async {
        c.peers().await.is_ok_and(|ps| {
            ps.iter()
                .filter(|p| p.state == pb::PeerState::Alive as i32)
                .count()
                == n
        })
    })
    .await
    .unwrap();
}

async fn names(c: &Client) -> HashSet<String> {
    c.list()
        .await
        .map(|fs| fs.into_iter().map(|f| f.name).collect())
        .unwrap_or_default()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_replicas_take_puts_and_exactly_one_wins_a_name() {
    let cluster = TestCluster::start(ClusterOptions::zones(&["a", "b", "c"]).replicas(2))
        .await
        .unwrap();
    let (a, b) = (cluster.replica_client(0), cluster.replica_client(1));
    let work = tempfile::tempdir().unwrap();
    // The peers registered through replica 0; replica 1 must see them before placing.
    wait_live_peers(&b, "replica 1", 3).await;

    // Different files through different replicas at once: both land, both visible from both.
    let (x, y) = (
        source(work.path(), "x", 5 * CHUNK + 7, 1),
        source(work.path(), "y", 3 * CHUNK, 2),
    );
    let (rx, ry) = tokio::join!(put(&a, &x, "x"), put(&b, &y, "y"));
    assert_eq!(rx.unwrap(), file_hash(&x).unwrap());
    assert_eq!(ry.unwrap(), file_hash(&y).unwrap());
    for c in [&a, &b] {
        wait_for("x and y listed by both replicas", CONVERGE, || async {
            let n = names(c).await;
            n.contains("x") && n.contains("y")
        })
        .await
        .unwrap();
    }
    // And their bytes come back through the other replica.
    b.get("x", &work.path().join("x.out"), quiet())
        .await
        .unwrap();
    a.get("y", &work.path().join("y.out"), quiet())
        .await
        .unwrap();
    assert_eq!(
        file_hash(&work.path().join("x.out")).unwrap(),
        file_hash(&x).unwrap()
    );

    // The same name, different contents, through both replicas at once, several rounds:
    // exactly one wins each time, the other is told ALREADY_EXISTS.
    for round in 0..4u64 {
        let name = format!("race-{round}");
        let (p, q) = (
            source(work.path(), &format!("p{round}"), 2 * CHUNK, 10 + round),
            source(work.path(), &format!("q{round}"), 2 * CHUNK, 20 + round),
        );
        let (rp, rq) = tokio::join!(put(&a, &p, &name), put(&b, &q, &name));
        let winner = match (&rp, &rq) {
            (Ok(id), Err(e)) | (Err(e), Ok(id)) => {
                assert_eq!(e.code(), Some(tonic::Code::AlreadyExists), "{e}");
                id.clone()
            }
            other => panic!("{name}: exactly one put must win, got {other:?}"),
        };
        for c in [&a, &b] {
            wait_for("both replicas agree on the winner", CONVERGE, || async {
                c.stat(&name)
                    .await
                    .is_ok_and(|d| d.summary.is_some_and(|s| s.id == winner))
            })
            .await
            .unwrap();
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn liveness_and_locations_are_the_same_from_every_replica() {
    let cluster = TestCluster::start(ClusterOptions::zones(&["a", "b", "c"]).replicas(2))
        .await
        .unwrap();
    let (a, b) = (cluster.replica_client(0), cluster.replica_client(1));
    let work = tempfile::tempdir().unwrap();
    // Peers talk to replica 0 only (the first URL), yet replica 1 sees them alive…
    let ids: HashSet<String> = (0..3).map(|i| cluster.peer_id(i)).collect();
    wait_for("replica 1 sees every peer alive", CONVERGE, || async {
        b.peers().await.is_ok_and(|ps| {
            ps.iter()
                .filter(|p| p.state == pb::PeerState::Alive as i32)
                .filter_map(|p| p.peer.as_ref())
                .map(|p| p.id.clone())
                .collect::<HashSet<_>>()
                == ids
        })
    })
    .await
    .unwrap();
    // …and keeps seeing them alive, at every look, well past the dead threshold
    // (heartbeats keep landing).
    let until = tokio::time::Instant::now()
        + cluster.opts.tracker.liveness.dead_after
        + Duration::from_millis(500);
    while tokio::time::Instant::now() < until {
        let alive = b
            .peers()
            .await
            .unwrap()
            .iter()
            .filter(|p| p.state == pb::PeerState::Alive as i32)
            .count();
        assert_eq!(
            alive, 3,
            "heartbeats to replica 0 keep peers alive on replica 1"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    // A put through replica 0: replica 1's stat shows the same locations.
    let src = source(work.path(), "f", 4 * CHUNK + 1, 3);
    put(&a, &src, "f").await.unwrap();
    let want: Vec<Vec<String>> = a
        .stat("f")
        .await
        .unwrap()
        .chunks
        .iter()
        .map(|c| {
            let mut v: Vec<String> = c.replicas.iter().map(|p| p.id.clone()).collect();
            v.sort();
            v
        })
        .collect();
    assert!(want.iter().all(|v| !v.is_empty()));
    wait_for("replica 1 has the same locations", CONVERGE, || async {
        b.stat("f").await.is_ok_and(|d| {
            let got: Vec<Vec<String>> = d
                .chunks
                .iter()
                .map(|c| {
                    let mut v: Vec<String> = c.replicas.iter().map(|p| p.id.clone()).collect();
                    v.sort();
                    v
                })
                .collect();
            got == want
        })
    })
    .await
    .unwrap();

    // A peer killed is declared dead by both replicas.
    let mut cluster = cluster;
    let dead = cluster.peer_id(2);
    cluster.kill_peer(2);
    for c in [&a, &b] {
        wait_for("peer dead on both replicas", CONVERGE, || async {
            c.peers().await.is_ok_and(|ps| {
                ps.iter().any(|p| {
                    p.peer.as_ref().is_some_and(|r| r.id == dead)
                        && p.state == pb::PeerState::Dead as i32
                })
            })
        })
        .await
        .unwrap();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_standby_takes_over_when_the_leader_dies_during_repair() {
    let mut o = ClusterOptions::zones(&["a", "a", "b", "b"])
        .replication(2)
        .replicas(2);
    // Slow repair (one copy at a time, 256 KiB/s), so the leader dies mid-repair.
    o.tracker.repair.concurrency = 1;
    o.tracker.repair.per_peer = 1;
    o.tracker.repair.bandwidth_bytes = 4 * CHUNK;
    let mut cluster = TestCluster::start(o).await.unwrap();
    let leader = cluster.wait_leader(None).await.unwrap();
    let standby = 1 - leader;
    let c = cluster.client();
    let work = tempfile::tempdir().unwrap();
    let src = source(work.path(), "r", 64 * CHUNK, 9);
    put(&c, &src, "r").await.unwrap();
    cluster.kill_peer(2);
    let watch = cluster.replica_client(standby);
    wait_for("repair under way", CONVERGE, || async {
        watch
            .cluster_info()
            .await
            .is_ok_and(|i| i.under_replicated_chunks > 0 && i.under_replicated_chunks < 40)
    })
    .await
    .unwrap();
    let clients = [cluster.replica_client(0), cluster.replica_client(1)];
    let leads = |i: usize| {
        let c = &clients[i];
        async move { c.cluster_info().await.map(|i| i.leader) }
    };
    assert!(leads(leader).await.unwrap(), "the leader says it leads");
    assert!(
        !leads(standby).await.unwrap(),
        "the standby says it does not"
    );
    let started = std::time::Instant::now();
    cluster.kill_replica(leader);
    // The standby itself takes the lead (the database's lock holder is the survivor).
    wait_for("the standby says it leads", CONVERGE, || async {
        leads(standby).await.unwrap_or(false)
    })
    .await
    .unwrap();
    assert_eq!(cluster.leader().await.unwrap(), Some(standby));
    eprintln!("standby took over in {:?}", started.elapsed());
    // The survivor finishes the repair: every chunk back at 2 live copies.
    wait_for(
        "repair finished by the new leader",
        Duration::from_secs(60),
        || async {
            watch
                .cluster_info()
                .await
                .is_ok_and(|i| i.under_replicated_chunks == 0 && i.lost_chunks == 0 && i.chunks > 0)
                && watch
                    .stat("r")
                    .await
                    .is_ok_and(|d| d.chunks.iter().all(|ch| ch.replicas.len() >= 2))
        },
    )
    .await
    .unwrap();
    watch
        .get("r", &work.path().join("out"), quiet())
        .await
        .unwrap();
    assert_eq!(
        file_hash(&work.path().join("out")).unwrap(),
        file_hash(&src).unwrap()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn no_lost_update_when_two_replicas_change_one_file() {
    let cluster = TestCluster::start(ClusterOptions::zones(&["a", "b", "c"]).replicas(2))
        .await
        .unwrap();
    let (a, b) = (cluster.replica_client(0), cluster.replica_client(1));
    let work = tempfile::tempdir().unwrap();
    wait_for("replica 1 sees the peers", CONVERGE, || async {
        b.cluster_info().await.is_ok_and(|i| i.live_peers == 3)
    })
    .await
    .unwrap();

    // SetReplicas through one replica races DeleteFile through the other. Whatever the
    // order, the delete must stick: a stale replica writing the file record back after
    // the delete would resurrect content no name points to.
    for round in 0..4u64 {
        let name = format!("d{round}");
        let src = source(work.path(), &name, 2 * CHUNK, 30 + round);
        let id = put(&a, &src, &name).await.unwrap();
        wait_for("replica 1 sees the file", CONVERGE, || async {
            b.stat(&name).await.is_ok()
        })
        .await
        .unwrap();
        let (set, del) = tokio::join!(a.set_replicas(&name, 3), b.delete(&name));
        del.unwrap();
        if let Err(e) = set {
            assert_eq!(e.code(), Some(tonic::Code::NotFound), "{e}");
        }
        for c in [&a, &b] {
            wait_for("the content is gone on both replicas", CONVERGE, || async {
                c.stat(&id)
                    .await
                    .is_err_and(|e| e.code() == Some(tonic::Code::NotFound))
            })
            .await
            .unwrap();
        }
    }

    // Two overwrites of one name at once: both succeed, one is last, and the other
    // content is not left behind without a name.
    let (p, q) = (
        source(work.path(), "o1", 3 * CHUNK, 41),
        source(work.path(), "o2", 3 * CHUNK, 42),
    );
    let ow = |name: &str| PutOptions {
        name: name.into(),
        overwrite: true,
        ..Default::default()
    };
    let (rp, rq) = tokio::join!(a.put(&p, ow("o"), quiet()), b.put(&q, ow("o"), quiet()));
    let (idp, idq) = (rp.unwrap().id, rq.unwrap().id);
    for c in [&a, &b] {
        wait_for("one content left for the name", CONVERGE, || async {
            let Ok(d) = c.stat("o").await else {
                return false;
            };
            let now = d.summary.map(|s| s.id).unwrap_or_default();
            let other = if now == idp { &idq } else { &idp };
            (now == idp || now == idq)
                && c.stat(other)
                    .await
                    .is_err_and(|e| e.code() == Some(tonic::Code::NotFound))
                && c.list().await.is_ok_and(|l| l.len() == 1)
        })
        .await
        .unwrap();
    }
}

/// Rows in the cluster's shared catalogue log.
async fn log_rows(cluster: &TestCluster) -> i64 {
    let url = cluster.store_url.as_deref().expect("PostgreSQL store");
    let (client, conn) = tokio_postgres::connect(url, tokio_postgres::NoTls)
        .await
        .unwrap();
    let conn = tokio::spawn(conn);
    let n: i64 = client
        .query_one("SELECT count(*) FROM catalogue_log", &[])
        .await
        .unwrap()
        .get(0);
    drop(client);
    let _ = conn.await;
    n
}

/// With a short retention the leader trims the shared catalogue log: it stays bounded
/// while names keep changing through both replicas, and both still agree on the catalogue.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_catalogue_log_is_trimmed_and_replicas_still_agree() {
    let mut opts = ClusterOptions::zones(&["a", "b"])
        .replicas(2)
        .replication(2);
    opts.tracker.store.log_retention = Duration::from_millis(300);
    let cluster = TestCluster::start(opts).await.unwrap();
    let (a, b) = (cluster.replica_client(0), cluster.replica_client(1));
    let work = tempfile::tempdir().unwrap();
    let src = source(work.path(), "same", 2 * CHUNK, 9);
    wait_live_peers(&b, "replica 1", 2).await;
    // 24 names of one content through alternating replicas, every third removed again:
    // 32 catalogue changes, written over more than the retention.
    let mut expected = HashSet::new();
    for i in 0..24 {
        let (via, name) = (if i % 2 == 0 { &a } else { &b }, format!("n{i}"));
        put(via, &src, &name).await.unwrap();
        if i % 3 == 0 {
            via.delete(&name).await.unwrap();
        } else {
            expected.insert(name);
        }
        tokio::time::sleep(Duration::from_millis(40)).await;
    }
    let written = 24 + 8;
    wait_for(
        "the log trimmed to its newest entries",
        CONVERGE,
        || async { log_rows(&cluster).await <= 2 },
    )
    .await
    .unwrap();
    assert!(log_rows(&cluster).await < written);
    for c in [&a, &b] {
        wait_for(
            "both replicas list exactly the names left",
            CONVERGE,
            || async { names(c).await == expected },
        )
        .await
        .unwrap();
    }
    // And the trimmed cluster still takes changes that both replicas see.
    put(&b, &src, "after-trim").await.unwrap();
    expected.insert("after-trim".into());
    for c in [&a, &b] {
        wait_for("the new name on both replicas", CONVERGE, || async {
            names(c).await == expected
        })
        .await
        .unwrap();
    }
}

/// A restarted tracker judges a peer known from the store from its own start: a peer
/// that went silent while the tracker was down (longer ago than `dead_after`) is not
/// declared dead, and nothing is repaired, until one `dead_after` after the tracker is
/// back; then it is, and its copies are repaired.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_restarted_tracker_judges_silent_peers_only_after_dead_after() {
    let mut o = ClusterOptions::zones(&["a", "a", "b"])
        .replicas(1)
        .replication(2);
    o.tracker.liveness.suspect_after = Duration::from_secs(5);
    o.tracker.liveness.dead_after = Duration::from_secs(10);
    let dead_after = o.tracker.liveness.dead_after;
    let mut cluster = TestCluster::start(o).await.unwrap();
    let work = tempfile::tempdir().unwrap();
    let src = source(work.path(), "judged", 20 * CHUNK, 21);
    put(&cluster.client(), &src, "judged").await.unwrap();
    let id = cluster.peer_id(0);
    let copies_on_survivors =
        |c: &TestCluster| (1..3).map(|i| c.chunks_on_disk(i).len()).sum::<usize>();
    let before = copies_on_survivors(&cluster);
    if let Some(t) = cluster.tracker.take() {
        t.stop();
    }
    cluster.kill_peer(0);
    // The store's last heartbeat of peer 0 must be older than dead_after when the
    // tracker comes back: this wait is the scenario, not a hope.
    tokio::time::sleep(dead_after + Duration::from_secs(1)).await;
    let back = tokio::time::Instant::now();
    cluster.start_tracker().await.unwrap();
    let c = cluster.client();
    let state = |ps: Vec<pb::PeerInfo>| {
        ps.into_iter()
            .find(|p| p.peer.as_ref().is_some_and(|r| r.id == id))
            .map(|p| p.state)
    };
    // Peers come from the store with the replica's first sync.
    wait_for("peer 0 known from the store", CONVERGE, || async {
        c.peers().await.is_ok_and(|ps| state(ps).is_some())
    })
    .await
    .unwrap();
    // Watch until the peer is declared dead; every look taken well before dead_after
    // (timed from before the tracker started, so never late) must show it not dead and
    // nothing under-replicated.
    let mut early_looks = 0;
    let deadline = back + dead_after + CONVERGE;
    loop {
        let (ps, info) = (c.peers().await.unwrap(), c.cluster_info().await.unwrap());
        let seen = state(ps);
        let looked = back.elapsed();
        if seen == Some(pb::PeerState::Dead as i32) {
            assert!(
                looked + Duration::from_secs(2) >= dead_after,
                "declared dead {looked:?} after the tracker came back, before dead_after"
            );
            break;
        }
        if looked + Duration::from_secs(2) < dead_after {
            early_looks += 1;
            assert!(seen.is_some(), "peer 0 known: {seen:?}");
            // (under_replicated_chunks may count peer 0's unconfirmed copies: health only.)
            assert_eq!(info.repair_queue, 0, "no repair queued: {info:?}");
            assert_eq!(copies_on_survivors(&cluster), before, "no copy made");
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "peer 0 never declared dead"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert!(
        early_looks > 0,
        "no look before dead_after: the test proved nothing"
    );
    wait_for("the dead peer's copies repaired", CONVERGE, || async {
        c.stat("judged").await.is_ok_and(|d| {
            d.chunks
                .iter()
                .all(|ch| ch.replicas.len() == 2 && ch.replicas.iter().all(|r| r.id != id))
        })
    })
    .await
    .unwrap();
}

fn tracker_at(cluster: &TestCluster, i: usize) -> pb::tracker_client::TrackerClient<GrpcChannel> {
    let url = shoal_common::grpc::url_for(&cluster.replica_addr(i).to_string());
    pb::tracker_client::TrackerClient::new(
        shoal_common::grpc::channel_with(&url, None).expect("tracker channel"),
    )
}

/// Begin and place a one-chunk upload of `b` through replica `via`, and store the chunk
/// down its pipeline as a client would; returns the upload id and the peers' receipts.
async fn upload_unfinished(
    cluster: &TestCluster,
    via: usize,
    name: &str,
    b: &[u8],
) -> (String, pb::ChunkStored) {
    let mut t = tracker_at(cluster, via);
    let begin = t
        .begin_upload(pb::BeginUploadRequest {
            name: name.into(),
            size: b.len() as u64,
            ..Default::default()
        })
        .await
        .expect("begin upload")
        .into_inner();
    let hash = blake3::hash(b).to_hex().to_string();
    let placed = t
        .place_chunks(pb::PlaceChunksRequest {
            upload_id: begin.upload_id.clone(),
            file_id: hash.clone(),
            chunks: vec![pb::ChunkDigest {
                index: 0,
                hash: hash.clone(),
                size: b.len() as u64,
            }],
        })
        .await
        .expect("place chunks")
        .into_inner();
    let p = placed.placements.into_iter().next().expect("one placement");
    let stored = shoal_testkit::push_chunk(&p, b, None)
        .await
        .expect("put chunk");
    assert_eq!(stored.stored_on.len(), p.targets.len(), "{stored:?}");
    (
        begin.upload_id,
        pb::ChunkStored {
            index: 0,
            peer_ids: stored.stored_on,
            receipts: stored.receipts,
        },
    )
}

/// An upload in flight through a standby holds its chunks through the leader's garbage
/// collection: the leader sees them on the peers, referenced by no file, for longer than
/// the grace, and keeps them because the standby recorded the upload in the database. An
/// aborted upload's chunk, stored the same way, is collected (so collection did run).
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_upload_through_a_standby_keeps_its_chunks_through_the_leaders_gc() {
    let cluster = TestCluster::start(
        ClusterOptions::zones(&["a", "b", "c"])
            .replicas(2)
            .replication(2),
    )
    .await
    .unwrap();
    let leader = cluster.wait_leader(None).await.unwrap();
    let standby = 1 - leader;
    wait_live_peers(&cluster.replica_client(standby), "the standby", 3).await;
    wait_live_peers(&cluster.replica_client(leader), "the leader", 3).await;
    let kept = random_bytes(40_000, 71);
    let dropped = random_bytes(40_000, 72);
    let (kept_id, kept_stored) = upload_unfinished(&cluster, standby, "kept", &kept).await;
    let (dropped_id, _) = upload_unfinished(&cluster, standby, "dropped", &dropped).await;
    tracker_at(&cluster, standby)
        .abort_upload(pb::AbortUploadRequest {
            upload_id: dropped_id,
        })
        .await
        .unwrap();
    let on_disk = |h: &str| {
        (0..3)
            .filter(|&i| cluster.chunks_on_disk(i).contains(h))
            .count()
    };
    let (kept_h, dropped_h) = (
        blake3::hash(&kept).to_hex().to_string(),
        blake3::hash(&dropped).to_hex().to_string(),
    );
    // The aborted upload's chunk goes after the grace (1 s): the leader collected garbage.
    wait_for("the aborted upload's chunk collected", CONVERGE, || async {
        on_disk(&dropped_h) == 0
    })
    .await
    .unwrap();
    assert_eq!(on_disk(&kept_h), 2, "the upload in flight kept both copies");
    // And the upload still commits, through the standby, and reads back.
    tracker_at(&cluster, standby)
        .commit_upload(pb::CommitUploadRequest {
            upload_id: kept_id,
            stored: vec![kept_stored],
            ..Default::default()
        })
        .await
        .expect("commit after the grace");
    let work = tempfile::tempdir().unwrap();
    let out = work.path().join("kept.out");
    // The leader replays the standby's commit from the database, then serves it.
    let via_leader = cluster.replica_client(leader);
    wait_for("the leader serves the committed file", CONVERGE, || async {
        via_leader.get("kept", &out, quiet()).await.is_ok()
    })
    .await
    .unwrap();
    assert_eq!(std::fs::read(&out).unwrap(), kept);
}

fn random_bytes(len: usize, seed: u64) -> Vec<u8> {
    let mut out = vec![0u8; len];
    blake3::Hasher::new()
        .update(&seed.to_le_bytes())
        .finalize_xof()
        .fill(&mut out);
    out
}
