//! Replication and consistency acceptance: zone-aware placement, repair after peer
//! death, trimming and GC when a peer returns, scrub, drain, replica count changes,
//! repair across a tracker restart, restarts that move no data, leaving for good.

use std::collections::{HashMap, HashSet};
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use shoal_client::{Client, Progress, PutOptions, Quiet};
use shoal_proto::v1 as pb;
use shoal_testkit::{file_hash, random_file, wait_for, ClusterOptions, TestCluster};

const CONVERGE: Duration = Duration::from_secs(30);

fn quiet() -> Arc<dyn Progress> {
    Arc::new(Quiet)
}

async fn put(
    c: &Client,
    dir: &Path,
    name: &str,
    len: u64,
    seed: u64,
    replicas: u32,
) -> std::path::PathBuf {
    let p = dir.join(format!("src-{name}"));
    random_file(&p, len, seed).unwrap();
    c.put(
        &p,
        PutOptions {
            name: name.into(),
            replicas,
            overwrite: false,
        },
        quiet(),
    )
    .await
    .unwrap();
    p
}

/// Live replica counts (by peer id) of every chunk of a file.
async fn replicas(c: &Client, name: &str) -> Vec<Vec<pb::PeerRef>> {
    c.stat(name)
        .await
        .unwrap()
        .chunks
        .into_iter()
        .map(|ch| ch.replicas)
        .collect()
}

/// Wait until every chunk has exactly `r` live copies on distinct peers, none of them
/// on a peer that was stopped (a stopped peer counts as live until it is declared dead).
async fn wait_exactly_r(c: &Client, name: &str, r: usize) {
    let what = format!("every chunk of {name} at exactly {r} copies on alive peers");
    wait_for(&what, CONVERGE, || async {
        let alive: HashSet<String> = c
            .peers()
            .await
            .unwrap()
            .into_iter()
            .filter(|p| p.state == pb::PeerState::Alive as i32)
            .map(|p| p.peer.unwrap().id)
            .collect();
        let reps = replicas(c, name).await;
        reps.iter().all(|peers| {
            peers.len() == r
                && peers.iter().map(|p| &p.id).collect::<HashSet<_>>().len() == r
                && peers.iter().all(|p| alive.contains(&p.id))
        })
    })
    .await
    .unwrap_or_else(|e| panic!("{e}"));
}

async fn same_bytes(c: &Client, name: &str, src: &Path, out: &Path) {
    c.get(name, out, quiet())
        .await
        .unwrap_or_else(|e| panic!("get {name}: {e}"));
    assert_eq!(file_hash(out).unwrap(), file_hash(src).unwrap());
}

fn opts(zones: &[&str], r: u32) -> ClusterOptions {
    ClusterOptions::zones(zones).replication(r)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn placement_covers_zones_and_never_repeats_a_peer() {
    let cluster = TestCluster::start(opts(&["a", "a", "b", "b"], 2))
        .await
        .unwrap();
    let c = cluster.client();
    let work = tempfile::tempdir().unwrap();
    put(&c, work.path(), "r2", 40 * 65536, 1, 2).await;
    put(&c, work.path(), "r3", 40 * 65536, 2, 3).await;
    for peers in replicas(&c, "r2").await {
        let zones: Vec<&str> = peers.iter().map(|p| p.zone.as_str()).collect();
        assert_eq!(peers.len(), 2);
        assert!(zones.contains(&"a") && zones.contains(&"b"), "{zones:?}");
    }
    let mut load: HashMap<String, usize> = HashMap::new();
    for peers in replicas(&c, "r3").await {
        let ids: HashSet<&str> = peers.iter().map(|p| p.id.as_str()).collect();
        let zones: HashSet<&str> = peers.iter().map(|p| p.zone.as_str()).collect();
        assert_eq!(ids.len(), 3, "a peer holds two copies");
        assert_eq!(zones.len(), 2, "both zones covered");
        for p in peers {
            *load.entry(p.id).or_default() += 1;
        }
    }
    assert_eq!(load.len(), 4, "all four peers take copies: {load:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn dead_peer_is_repaired_and_its_return_is_trimmed_and_collected() {
    let mut cluster = TestCluster::start(opts(&["a", "a", "b", "b"], 2))
        .await
        .unwrap();
    let c = cluster.client();
    let work = tempfile::tempdir().unwrap();
    let src = put(&c, work.path(), "data", 60 * 65536, 3, 2).await;
    let doomed = put(&c, work.path(), "doomed", 20 * 65536, 4, 2).await;
    let _ = doomed;

    cluster.kill_peer(0);
    cluster.wait_peer_dead(0).await.unwrap();
    wait_exactly_r(&c, "data", 2).await;
    wait_exactly_r(&c, "doomed", 2).await;
    let victim_id = std::fs::read_to_string(cluster.peer_dir(0).join("peer_id")).unwrap();
    for peers in replicas(&c, "data").await {
        assert!(peers.iter().all(|p| p.id != victim_id));
        let zones: HashSet<&str> = peers.iter().map(|p| p.zone.as_str()).collect();
        assert_eq!(zones.len(), 2, "repair keeps the zone spread");
    }
    same_bytes(&c, "data", &src, &work.path().join("o1")).await;
    let info = c.cluster_info().await.unwrap();
    assert_eq!(info.lost_chunks, 0);

    // While it is gone, one file is deleted: its copies on the dead peer become stale.
    c.delete("doomed").await.unwrap();
    cluster.start_peer(0).await.unwrap();
    cluster.wait_live_peers(4).await.unwrap();
    wait_exactly_r(&c, "data", 2).await;
    let chunks = c.stat("data").await.unwrap().chunks.len() as u64;
    wait_for("stale and surplus copies cleaned up", CONVERGE, || async {
        let held: u64 = c.peers().await.unwrap().iter().map(|p| p.chunks).sum();
        held == 2 * chunks
    })
    .await
    .unwrap();
    // And on disk too: the returning peer keeps only chunks something references.
    let referenced: HashSet<String> = c
        .stat("data")
        .await
        .unwrap()
        .chunks
        .into_iter()
        .map(|c| c.hash)
        .collect();
    wait_for(
        "returning peer's disk holds only referenced chunks",
        CONVERGE,
        || async {
            let dir = cluster.peer_dir(0).join("chunks");
            walk(&dir).iter().all(|h| referenced.contains(h))
        },
    )
    .await
    .unwrap();
    same_bytes(&c, "data", &src, &work.path().join("o2")).await;
}

fn walk(dir: &Path) -> Vec<String> {
    let mut out = Vec::new();
    for shard in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        for f in std::fs::read_dir(shard.path())
            .into_iter()
            .flatten()
            .flatten()
        {
            out.push(f.file_name().to_string_lossy().to_string());
        }
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_peers_die_one_after_the_other_with_r3() {
    let mut cluster = TestCluster::start(opts(&["a", "a", "b", "b", "c"], 3))
        .await
        .unwrap();
    let c = cluster.client();
    let work = tempfile::tempdir().unwrap();
    let src = put(&c, work.path(), "precious", 50 * 65536, 5, 3).await;
    cluster.kill_peer(1);
    cluster.wait_peer_dead(1).await.unwrap();
    wait_exactly_r(&c, "precious", 3).await;
    cluster.kill_peer(3);
    cluster.wait_peer_dead(3).await.unwrap();
    wait_exactly_r(&c, "precious", 3).await;
    for peers in replicas(&c, "precious").await {
        let zones: HashSet<&str> = peers.iter().map(|p| p.zone.as_str()).collect();
        assert_eq!(zones.len(), 3, "three zones remain, all covered");
    }
    assert_eq!(c.cluster_info().await.unwrap().lost_chunks, 0);
    same_bytes(&c, "precious", &src, &work.path().join("out")).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn scrub_finds_corruption_and_repair_restores_the_copy() {
    let mut o = opts(&["a", "b", "b"], 2);
    o.peer_tweak = |p| {
        p.scrub.rate_bytes = 1 << 30;
        p.scrub.pause = Duration::from_millis(100);
    };
    let cluster = TestCluster::start(o).await.unwrap();
    let c = cluster.client();
    let work = tempfile::tempdir().unwrap();
    let src = put(&c, work.path(), "f", 10 * 65536, 6, 2).await;
    let d = c.stat("f").await.unwrap();
    let peer0 = std::fs::read_to_string(cluster.peer_dir(0).join("peer_id")).unwrap();
    let on0: Vec<String> = d
        .chunks
        .iter()
        .filter(|ch| ch.replicas.iter().any(|r| r.id == peer0))
        .map(|ch| ch.hash.clone())
        .collect();
    assert!(!on0.is_empty());
    for h in &on0 {
        let f = cluster.chunk_file(0, h);
        let mut b = std::fs::read(&f).unwrap();
        b[0] ^= 1;
        std::fs::write(&f, b).unwrap();
    }
    wait_for("scrub quarantines the corrupt copies", CONVERGE, || async {
        let q = std::fs::read_dir(cluster.peer_dir(0).join("quarantine"))
            .map(|d| d.count())
            .unwrap_or(0);
        q >= on0.len()
    })
    .await
    .unwrap();
    // Every listed copy exists on disk and verifies, R of them per chunk.
    wait_exactly_r(&c, "f", 2).await;
    wait_for("every listed copy verifies on disk", CONVERGE, || async {
        let ids: Vec<String> = (0..3).map(|i| cluster.peer_id(i)).collect();
        c.stat("f").await.unwrap().chunks.iter().all(|ch| {
            ch.replicas.len() == 2
                && ch.replicas.iter().all(|r| {
                    let i = ids.iter().position(|id| *id == r.id).unwrap();
                    std::fs::read(cluster.chunk_file(i, &ch.hash))
                        .is_ok_and(|b| blake3::hash(&b).to_hex().as_str() == ch.hash)
                })
        })
    })
    .await
    .unwrap();
    same_bytes(&c, "f", &src, &work.path().join("out")).await;
}

/// Peers serve chunks without re-hashing them (the reader verifies every byte): a copy
/// corrupted on disk must still be caught by the get that reads it, reported, checked by
/// its peer (quarantined there) and repaired from a good copy. Scrub is off, so only
/// the get can find it.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn corrupt_copy_found_by_a_get_is_quarantined_and_repaired() {
    let mut o = opts(&["a", "b", "b"], 2);
    o.peer_tweak = |p| p.scrub.rate_bytes = 0;
    let cluster = TestCluster::start(o).await.unwrap();
    let c = cluster.client();
    let work = tempfile::tempdir().unwrap();
    let src = put(&c, work.path(), "g", 16 * 65536, 8, 2).await;
    let peer0 = cluster.peer_id(0);
    // The chunks a get reads from peer 0 first (replicas are tried from index mod n).
    let first_on0: Vec<String> = c
        .stat("g")
        .await
        .unwrap()
        .chunks
        .iter()
        .filter(|ch| {
            let n = ch.replicas.len();
            n > 0 && ch.replicas[ch.index as usize % n].id == peer0
        })
        .map(|ch| ch.hash.clone())
        .collect();
    assert!(!first_on0.is_empty(), "no chunk is read from peer 0 first");
    for h in &first_on0 {
        let f = cluster.chunk_file(0, h);
        let mut b = std::fs::read(&f).unwrap();
        b[100] ^= 0x40;
        std::fs::write(&f, b).unwrap();
    }
    let out = work.path().join("out");
    wait_for(
        "gets quarantine every corrupt copy on peer 0",
        CONVERGE,
        || async {
            same_bytes(&c, "g", &src, &out).await;
            let q = std::fs::read_dir(cluster.peer_dir(0).join("quarantine"))
                .map(|d| d.count())
                .unwrap_or(0);
            q >= first_on0.len()
        },
    )
    .await
    .unwrap();
    wait_exactly_r(&c, "g", 2).await;
    wait_for("every listed copy verifies on disk", CONVERGE, || async {
        let ids: Vec<String> = (0..3).map(|i| cluster.peer_id(i)).collect();
        c.stat("g").await.unwrap().chunks.iter().all(|ch| {
            ch.replicas.len() == 2
                && ch.replicas.iter().all(|r| {
                    let i = ids.iter().position(|id| *id == r.id).unwrap();
                    std::fs::read(cluster.chunk_file(i, &ch.hash))
                        .is_ok_and(|b| blake3::hash(&b).to_hex().as_str() == ch.hash)
                })
        })
    })
    .await
    .unwrap();
    same_bytes(&c, "g", &src, &work.path().join("out2")).await;
}

/// A get hashes each chunk once, at its place in the file's tree, and leaves the check
/// against the chunk's name to the file's root (where that finds a mismatch, each chunk
/// is checked against its name to find the bad copy: the test above). A chunk list
/// whose chunks all hold their own bytes but do not make the file (two swapped) is
/// still refused, and nothing appears under the output's name.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_chunk_list_that_does_not_make_the_file_is_refused() {
    let cluster = TestCluster::start(opts(&["a", "b"], 2)).await.unwrap();
    let c = cluster.client();
    let work = tempfile::tempdir().unwrap();
    let src = put(&c, work.path(), "s", 16 * 65536, 9, 2).await;
    let mut detail = c.stat("s").await.unwrap();
    assert!(detail.chunks.len() >= 3, "{} chunks", detail.chunks.len());
    let (a, b) = (detail.chunks[0].clone(), detail.chunks[1].clone());
    detail.chunks[0] = pb::ChunkReplicas { index: 0, ..b };
    detail.chunks[1] = pb::ChunkReplicas { index: 1, ..a };
    let out = work.path().join("out");
    let err = c.get_detail(&detail, &out, quiet()).await.unwrap_err();
    assert!(matches!(err, shoal_client::ClientError::Verify(_)), "{err}");
    assert!(err.to_string().contains("chunk list"), "{err}");
    assert!(!out.exists(), "a file that failed verification was kept");
    // The copies were sound: nothing was reported, and the real list still reads.
    same_bytes(&c, "s", &src, &out).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn drain_rehomes_everything_without_dropping_below_r_minus_1() {
    let cluster = TestCluster::start(opts(&["a", "a", "b", "b"], 2))
        .await
        .unwrap();
    let c = cluster.client();
    let work = tempfile::tempdir().unwrap();
    let src = put(&c, work.path(), "d", 80 * 65536, 7, 2).await;
    let peer = std::fs::read_to_string(cluster.peer_dir(0).join("peer_id")).unwrap();
    let first = c.drain(&peer).await.unwrap();
    assert!(!first.safe_to_remove, "peer 0 held copies: not safe yet");
    let deadline = tokio::time::Instant::now() + CONVERGE;
    loop {
        let min = replicas(&c, "d").await.iter().map(Vec::len).min().unwrap();
        assert!(min >= 1, "a chunk dropped below R-1 during the drain");
        let r = c.drain(&peer).await.unwrap();
        if r.safe_to_remove {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "drain did not finish: {r:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // Copies off the drained peer, R elsewhere; its own copies are trimmed.
    wait_for("drained peer emptied", CONVERGE, || async {
        replicas(&c, "d")
            .await
            .iter()
            .all(|peers| peers.len() == 2 && peers.iter().all(|p| p.id != peer))
    })
    .await
    .unwrap();
    let state = c
        .peers()
        .await
        .unwrap()
        .into_iter()
        .find(|p| p.peer.as_ref().unwrap().id == peer)
        .unwrap();
    assert_eq!(state.state, pb::PeerState::Drained as i32);
    same_bytes(&c, "d", &src, &work.path().join("out")).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn replica_count_changes_converge() {
    let cluster = TestCluster::start(opts(&["a", "a", "b", "b"], 2))
        .await
        .unwrap();
    let c = cluster.client();
    let work = tempfile::tempdir().unwrap();
    let src = put(&c, work.path(), "x", 30 * 65536, 8, 2).await;
    c.set_replicas("x", 4).await.unwrap();
    wait_exactly_r(&c, "x", 4).await;
    c.set_replicas("x", 1).await.unwrap();
    wait_exactly_r(&c, "x", 1).await;
    let e = c.set_replicas("x", 0).await.unwrap_err();
    assert_eq!(e.code(), Some(tonic::Code::InvalidArgument));
    let e = c.set_replicas("x", 1000).await.unwrap_err();
    assert_eq!(e.code(), Some(tonic::Code::InvalidArgument));
    same_bytes(&c, "x", &src, &work.path().join("out")).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn repair_continues_across_a_tracker_restart() {
    let mut o = opts(&["a", "a", "b", "b"], 2);
    // Slow repair: one copy at a time, 64 KiB/s, so the restart lands mid-repair.
    o.tracker.repair.concurrency = 1;
    o.tracker.repair.per_peer = 1;
    o.tracker.repair.bandwidth_bytes = 64 * 1024 * 4;
    let mut cluster = TestCluster::start(o).await.unwrap();
    let c = cluster.client();
    let work = tempfile::tempdir().unwrap();
    let src = put(&c, work.path(), "r", 64 * 65536, 9, 2).await;
    cluster.kill_peer(2);
    wait_for("repair under way", CONVERGE, || async {
        let i = c.cluster_info().await.unwrap();
        i.repair_queue > 0 && i.under_replicated_chunks > 0 && i.under_replicated_chunks < 40
    })
    .await
    .unwrap();
    cluster.restart_tracker().await.unwrap();
    let c = cluster.client();
    let left = c.cluster_info().await.unwrap().repair_queue;
    assert!(left > 0, "the repair queue survives the restart");
    wait_exactly_r(&c, "r", 2).await;
    same_bytes(&c, "r", &src, &work.path().join("out")).await;
}

/// Detection + full repair time for 1,000 chunks after one peer dies (printed, and
/// written to target/bench/repair.txt; no timing assertion).
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn repair_time_for_1000_chunks() {
    let mut o = opts(&["a", "a", "b", "b"], 2);
    o.tracker.chunk.min_bytes = 16 << 10;
    o.tracker.chunk.max_bytes = 16 << 10;
    let mut cluster = TestCluster::start(o).await.unwrap();
    let c = cluster.client();
    let work = tempfile::tempdir().unwrap();
    put(&c, work.path(), "thousand", 1000 * (16 << 10), 10, 2).await;
    let start = tokio::time::Instant::now();
    cluster.kill_peer(0);
    cluster.wait_peer_dead(0).await.unwrap();
    wait_for("under-replication detected", CONVERGE, || async {
        c.cluster_info().await.unwrap().under_replicated_chunks > 0
    })
    .await
    .unwrap();
    let detected = start.elapsed();
    wait_exactly_r(&c, "thousand", 2).await;
    let total = start.elapsed();
    let line = format!(
        "repair of 1000 chunks (16 KiB, R=2, 4 peers) after a peer died: detected in {:.2}s (dead threshold {:?}), fully repaired in {:.2}s",
        detected.as_secs_f64(),
        cluster.opts.tracker.liveness.dead_after,
        total.as_secs_f64()
    );
    println!("{line}");
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../target/bench");
    let _ = std::fs::create_dir_all(&dir);
    let _ = std::fs::write(dir.join("repair.txt"), line + "\n");
}

/// The state the tracker reports for peer `id`.
async fn peer_state(c: &Client, id: &str) -> i32 {
    c.peers()
        .await
        .unwrap()
        .into_iter()
        .find(|p| p.peer.as_ref().is_some_and(|r| r.id == id))
        .unwrap_or_else(|| panic!("peer {id} unknown to the tracker"))
        .state
}

/// Every peer's chunks on disk, by peer index.
fn disks(cluster: &TestCluster) -> Vec<HashSet<String>> {
    (0..cluster.peers.len())
        .map(|i| cluster.chunks_on_disk(i))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_peer_leaving_on_sigterm_deregisters_and_repair_starts_at_once() {
    let mut o = opts(&["a", "a", "b", "b"], 2);
    o.peer_tweak = |c| c.leave_on_shutdown = true;
    let mut cluster = TestCluster::start(o).await.unwrap();
    let c = cluster.client();
    let work = tempfile::tempdir().unwrap();
    let src = put(&c, work.path(), "s", 20 * 65536, 11, 2).await;
    let id = cluster.peer_id(0);
    // Graceful stop (what SIGTERM does) with SHOAL_LEAVE_ON_SHUTDOWN=true: in-flight
    // transfers finish, then Deregister as leaving.
    cluster.stop_peer(0);
    assert_eq!(
        peer_state(&c, &id).await,
        pb::PeerState::Dead as i32,
        "a peer that left: its copies stop counting at once"
    );
    wait_exactly_r(&c, "s", 2).await;
    same_bytes(&c, "s", &src, &work.path().join("out")).await;
}

/// A peer stopped with SIGTERM (the default: restarting) is reported restarting, none of
/// its copies is repaired for well past the dead threshold, and when it comes back it is
/// live with its copies: nothing was copied or trimmed anywhere.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_restarting_peer_moves_no_data() {
    let mut cluster = TestCluster::start(opts(&["a", "a", "b", "b"], 3))
        .await
        .unwrap();
    let c = cluster.client();
    let work = tempfile::tempdir().unwrap();
    let src = put(&c, work.path(), "k", 20 * 65536, 12, 3).await;
    wait_exactly_r(&c, "k", 3).await;
    let before = disks(&cluster);
    assert!(!before[0].is_empty(), "peer 0 holds copies");
    let id = cluster.peer_id(0);
    cluster.stop_peer(0);
    assert_eq!(peer_state(&c, &id).await, pb::PeerState::Restarting as i32);
    // A crashed peer would be dead and repaired after dead_after; watch twice as long.
    let watch = cluster.opts.tracker.liveness.dead_after * 2;
    let until = tokio::time::Instant::now() + watch;
    while tokio::time::Instant::now() < until {
        assert_eq!(peer_state(&c, &id).await, pb::PeerState::Restarting as i32);
        let now = disks(&cluster);
        assert_eq!(now[1..], before[1..], "no copy was made during the grace");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(c.cluster_info().await.unwrap().repair_queue, 0);
    cluster.start_peer(0).await.unwrap();
    wait_for("peer 0 alive again", CONVERGE, || async {
        peer_state(&c, &id).await == pb::PeerState::Alive as i32
    })
    .await
    .unwrap();
    wait_exactly_r(&c, "k", 3).await;
    assert_eq!(disks(&cluster), before, "nothing copied, nothing trimmed");
    same_bytes(&c, "k", &src, &work.path().join("out")).await;
}

/// Puts racing a peer's SIGTERM (a rolling restart under load): the peer says goodbye
/// before it stops taking chunks, so a placement made before the goodbye still lands
/// there and none made after names it. No put ends short of R: nothing to repair.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn puts_racing_a_peer_shutdown_leave_nothing_to_repair() {
    use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};
    let mut cluster = TestCluster::start(opts(&["a", "a", "b", "b"], 3))
        .await
        .unwrap();
    let c = cluster.client();
    let work = tempfile::tempdir().unwrap();
    let (stop, done) = (
        Arc::new(AtomicBool::new(false)),
        Arc::new(AtomicU64::new(0)),
    );
    let puts = {
        let (c, dir) = (cluster.client(), work.path().to_path_buf());
        let (stop, done) = (stop.clone(), done.clone());
        tokio::spawn(async move {
            let mut names = Vec::new();
            while !stop.load(Relaxed) {
                let name = format!("race-{}", names.len());
                put(&c, &dir, &name, 2 * 65536, names.len() as u64, 3).await;
                names.push(name);
                done.fetch_add(1, Relaxed);
            }
            names
        })
    };
    let at_least = |n: u64| {
        let done = done.clone();
        async move {
            wait_for(&format!("{n} puts done"), CONVERGE, || async {
                done.load(Relaxed) >= n
            })
            .await
            .unwrap()
        }
    };
    at_least(3).await;
    // The stop blocks until the peer has left: puts go on from the other workers.
    tokio::task::block_in_place(|| cluster.stop_peer(0));
    at_least(done.load(Relaxed) + 3).await;
    stop.store(true, Relaxed);
    let names = puts.await.unwrap();
    let id = cluster.peer_id(0);
    assert_eq!(peer_state(&c, &id).await, pb::PeerState::Restarting as i32);
    // The stopped peer's copies count (it is restarting): look at every disk.
    let on_disk = disks(&cluster);
    for name in &names {
        for (i, ch) in c.stat(name).await.unwrap().chunks.iter().enumerate() {
            let holders: Vec<usize> = (0..on_disk.len())
                .filter(|&p| on_disk[p].contains(&ch.hash))
                .collect();
            assert_eq!(holders.len(), 3, "{name} chunk {i} on peers {holders:?}");
        }
    }
    assert!(names.len() >= 6, "{} puts", names.len());
}

/// The order of a peer's SIGTERM, step by step: a chunk placed on it just before the
/// stop, sent after the tracker has heard its goodbye, is still taken (the peer serves
/// on after the goodbye until writes have been quiet) and a placement made after the
/// goodbye never names it.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_stopping_peer_says_goodbye_before_it_stops_taking_chunks() {
    use crate::tickets;
    let mut cluster = tickets::cluster(false).await;
    let b = tickets::bytes_for("placed before the stop", 60_000);
    let p = tickets::place(&cluster, &b).await;
    let (head, next) = (p.targets[0].clone(), p.targets[1].clone());
    let i = (0..cluster.peers.len())
        .find(|&i| cluster.peer_id(i) == head.id)
        .unwrap();
    let node = cluster.peers[i].take().unwrap();
    let stopping = std::thread::spawn(move || node.stop());
    let c = cluster.client();
    wait_for("the tracker hears the goodbye", CONVERGE, || async {
        peer_state(&c, &head.id).await == pb::PeerState::Restarting as i32
    })
    .await
    .unwrap();
    let later = tickets::place(&cluster, &tickets::bytes_for("placed after", 60_000)).await;
    assert!(
        later.targets.iter().all(|t| t.id != head.id),
        "placed on a peer that said goodbye: {:?}",
        later.targets
    );
    let r = tickets::put(
        &cluster,
        &head.addr,
        &b,
        vec![next],
        p.ticket.into_iter().collect(),
    )
    .await;
    let stored = r.expect("a chunk placed before the goodbye is taken after it");
    assert_eq!(stored.stored_on.len(), 2, "{stored:?}");
    stopping.join().unwrap();
    let h = blake3::hash(&b).to_hex().to_string();
    assert!(
        cluster.chunks_on_disk(i).contains(&h),
        "on the stopped peer's disk"
    );
}

/// During a restart, a chunk left with fewer than min(2, R) live copies is repaired at
/// once (R=2: one peer away leaves one copy).
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_restart_that_leaves_one_live_copy_is_repaired_at_once() {
    let mut cluster = TestCluster::start(opts(&["a", "a", "b", "b"], 2))
        .await
        .unwrap();
    let c = cluster.client();
    let work = tempfile::tempdir().unwrap();
    let src = put(&c, work.path(), "one", 20 * 65536, 13, 2).await;
    let id = cluster.peer_id(0);
    cluster.stop_peer(0);
    wait_exactly_r(&c, "one", 2).await;
    assert_eq!(
        peer_state(&c, &id).await,
        pb::PeerState::Restarting as i32,
        "repaired while the peer is still within its grace (10 min by default)"
    );
    same_bytes(&c, "one", &src, &work.path().join("out")).await;
}

/// When the grace runs out before the peer is back, its copies are repaired.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_peer_away_past_the_restart_grace_is_repaired() {
    let mut o = opts(&["a", "a", "b", "b"], 3);
    o.tracker.repair.restart_grace = Duration::from_secs(2);
    let mut cluster = TestCluster::start(o).await.unwrap();
    let c = cluster.client();
    let work = tempfile::tempdir().unwrap();
    let src = put(&c, work.path(), "late", 20 * 65536, 14, 3).await;
    let id = cluster.peer_id(0);
    cluster.stop_peer(0);
    assert_eq!(peer_state(&c, &id).await, pb::PeerState::Restarting as i32);
    cluster.wait_peer_dead(0).await.unwrap();
    wait_exactly_r(&c, "late", 3).await;
    same_bytes(&c, "late", &src, &work.path().join("out")).await;
}

/// Drain then undrain: the peer is back to alive and takes copies again.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn undrain_puts_a_peer_back_in_service() {
    let cluster = TestCluster::start(opts(&["a", "b"], 1)).await.unwrap();
    let c = cluster.client();
    let id = cluster.peer_id(0);
    let r = c.drain(&id).await.unwrap();
    assert!(r.state == pb::PeerState::Drained as i32 || r.state == pb::PeerState::Draining as i32);
    let undrain = |id: String| {
        c.trackers.call("undrain", move |mut t| {
            let peer_id = id.clone();
            async move { t.undrain_peer(pb::UndrainPeerRequest { peer_id }).await }
        })
    };
    let r = undrain(id.clone()).await.unwrap();
    assert_eq!(r.state, pb::PeerState::Alive as i32);
    assert_eq!(peer_state(&c, &id).await, pb::PeerState::Alive as i32);
    let e = undrain("no-such-peer".into()).await.unwrap_err();
    assert!(e.to_string().contains("no-such-peer"), "{e}");
}

/// Without SHOAL_CAPACITY_BYTES, a peer restarted with chunks on disk offers the chunks
/// it holds plus the volume's free space: its free space is the volume's, not less.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_restarted_peer_advertises_the_volumes_free_space() {
    let mut o = opts(&["a", "b"], 2);
    o.peer_tweak = |c| c.capacity_bytes = None;
    let mut cluster = TestCluster::start(o).await.unwrap();
    let c = cluster.client();
    let work = tempfile::tempdir().unwrap();
    put(&c, work.path(), "cap", 40 * 65536, 15, 2).await;
    let id = cluster.peer_id(0);
    cluster.stop_peer(0);
    cluster.start_peer(0).await.unwrap();
    cluster.wait_live_peers(2).await.unwrap();
    let p = c
        .peers()
        .await
        .unwrap()
        .into_iter()
        .find(|p| p.peer.as_ref().is_some_and(|r| r.id == id))
        .unwrap();
    assert!(p.used_bytes >= 40 * 65536, "the chunks are counted: {p:?}");
    let advertised = p.capacity_bytes - p.used_bytes;
    let volume = fs4::available_space(cluster.peer_dir(0)).unwrap();
    let diff = advertised.abs_diff(volume) as f64;
    assert!(
        diff <= volume as f64 * 0.01,
        "advertised free {advertised} vs volume free {volume}"
    );
}
