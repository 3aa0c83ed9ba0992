//! Core acceptance: real bytes through the in-process cluster (tracker + peers on
//! port 0, temp dirs, each node on its own runtime).

use std::collections::HashSet;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use shoal_client::{Client, ClientError, Progress, PutOptions, Quiet};
use shoal_proto::v1 as pb;
use shoal_testkit::{file_hash, random_file, ClusterOptions, TestCluster};

const CHUNK: u64 = 64 << 10;

fn quiet() -> Arc<dyn Progress> {
    Arc::new(Quiet)
}

fn opts(name: &str) -> PutOptions {
    PutOptions {
        name: name.into(),
        ..Default::default()
    }
}

async fn put_file(
    c: &Client,
    dir: &Path,
    name: &str,
    len: u64,
    seed: u64,
) -> (std::path::PathBuf, String) {
    let p = dir.join(format!("src-{name}"));
    random_file(&p, len, seed).unwrap();
    let r = c.put(&p, opts(name), quiet()).await.unwrap();
    assert_eq!(
        r.id,
        file_hash(&p).unwrap(),
        "file id is the BLAKE3 of the content"
    );
    (p, r.id)
}

async fn get_same(c: &Client, name: &str, src: &Path, out: &Path) {
    c.get(name, out, quiet())
        .await
        .unwrap_or_else(|e| panic!("get {name}: {e}"));
    assert_eq!(
        file_hash(out).unwrap(),
        file_hash(src).unwrap(),
        "{name}: bytes differ"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn round_trip_sizes_spread_over_peers_and_zones() {
    let cluster = TestCluster::start(ClusterOptions::zones(&["a", "a", "b"]).replication(2))
        .await
        .unwrap();
    let c = cluster.client();
    let work = tempfile::tempdir().unwrap();
    for (i, len) in [0, 1, CHUNK - 1, CHUNK, CHUNK + 1, 50 << 20]
        .into_iter()
        .enumerate()
    {
        let name = format!("size-{len}");
        let (src, _) = put_file(&c, work.path(), &name, len, i as u64).await;
        get_same(&c, &name, &src, &work.path().join(format!("out-{len}"))).await;
        let d = c.stat(&name).await.unwrap();
        let s = d.summary.clone().unwrap();
        assert_eq!(s.size, len);
        assert_eq!(s.chunk_size, CHUNK);
        assert_eq!(d.chunks.len() as u64, len.div_ceil(CHUNK));
        let mut peers = HashSet::new();
        for ch in &d.chunks {
            let zones: HashSet<&str> = ch.replicas.iter().map(|r| r.zone.as_str()).collect();
            assert_eq!(
                ch.replicas.len(),
                2,
                "chunk {} of {name}: {:?}",
                ch.index,
                ch.replicas
            );
            assert_eq!(
                zones.len(),
                2,
                "chunk {} of {name} not spread over zones",
                ch.index
            );
            peers.extend(ch.replicas.iter().map(|r| r.id.clone()));
        }
        if len > 0 {
            assert!(peers.len() >= 2, "{name} on {} peers", peers.len());
            assert_eq!(s.status, pb::FileStatus::Healthy as i32);
        }
    }
    // The big file's chunks use all three peers (zone a's two peers share its copies).
    let d = c.stat("size-52428800").await.unwrap();
    let peers: HashSet<String> = d
        .chunks
        .iter()
        .flat_map(|c| c.replicas.iter().map(|r| r.id.clone()))
        .collect();
    assert_eq!(peers.len(), 3);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn same_content_is_stored_once_and_names_are_protected() {
    let cluster = TestCluster::start(ClusterOptions::zones(&["a", "b"]).replication(2))
        .await
        .unwrap();
    let c = cluster.client();
    let work = tempfile::tempdir().unwrap();
    let (src, id) = put_file(&c, work.path(), "one", 300_000, 1).await;
    let used_before: u64 = c.peers().await.unwrap().iter().map(|p| p.chunks).sum();
    let again = c.put(&src, opts("two"), quiet()).await.unwrap();
    assert!(again.deduplicated, "same content must not be sent again");
    assert_eq!(again.id, id);
    let used_after: u64 = c.peers().await.unwrap().iter().map(|p| p.chunks).sum();
    assert_eq!(used_before, used_after, "one set of chunks");
    let names: Vec<String> = c
        .list()
        .await
        .unwrap()
        .into_iter()
        .map(|f| f.name)
        .collect();
    assert_eq!(names, vec!["one", "two"]);
    get_same(&c, "two", &src, &work.path().join("o2")).await;

    // Same name, other content: refused unless overwrite.
    let other = work.path().join("other");
    random_file(&other, 200_000, 2).unwrap();
    let e = c.put(&other, opts("one"), quiet()).await.unwrap_err();
    assert_eq!(e.code(), Some(tonic::Code::AlreadyExists), "{e}");
    get_same(&c, "one", &src, &work.path().join("o1")).await;
    let r = c
        .put(
            &other,
            PutOptions {
                name: "one".into(),
                overwrite: true,
                ..Default::default()
            },
            quiet(),
        )
        .await
        .unwrap();
    assert_ne!(r.id, id);
    get_same(&c, "one", &other, &work.path().join("o1b")).await;
    // The old content is still named "two".
    get_same(&c, "two", &src, &work.path().join("o2b")).await;
    // Same content under the same name again: fine, nothing changes.
    assert!(
        c.put(&other, opts("one"), quiet())
            .await
            .unwrap()
            .deduplicated
    );

    // Bad names are refused with a clear error.
    for bad in ["", "a\0b", &"x".repeat(256)] {
        let e = c.put(&other, opts(bad), quiet()).await.unwrap_err();
        assert_eq!(e.code(), Some(tonic::Code::InvalidArgument), "{bad:?}: {e}");
    }
    // Delete by name, then by id: chunks go away once nothing names the content.
    c.delete("two").await.unwrap();
    assert!(matches!(
        c.stat("two").await,
        Err(ClientError::Rpc {
            code: tonic::Code::NotFound,
            ..
        })
    ));
    let gone = c.delete(&id).await;
    assert!(gone.is_err(), "content {id} lost its last name and is gone");
    shoal_testkit::wait_for(
        "deleted chunks removed from peers",
        Duration::from_secs(10),
        || async {
            let held: u64 = c.peers().await.unwrap().iter().map(|p| p.chunks).sum();
            held == 2 * 200_000u64.div_ceil(CHUNK)
        },
    )
    .await
    .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn tracker_and_peer_restarts_keep_everything() {
    let mut cluster = TestCluster::start(ClusterOptions::zones(&["a", "a", "b"]).replication(2))
        .await
        .unwrap();
    let work = tempfile::tempdir().unwrap();
    let (src, _) = put_file(&cluster.client(), work.path(), "keep", 1_000_000, 3).await;

    cluster.restart_tracker().await.unwrap();
    cluster.wait_live_peers(3).await.unwrap();
    let c = cluster.client();
    let ls = c.list().await.unwrap();
    assert_eq!(ls.len(), 1);
    shoal_testkit::wait_for("locations rebuilt", Duration::from_secs(10), || async {
        c.list()
            .await
            .map(|l| l[0].status == pb::FileStatus::Healthy as i32)
            .unwrap_or(false)
    })
    .await
    .unwrap();
    get_same(&c, "keep", &src, &work.path().join("a")).await;

    // Restart every peer, one at a time (killed: no goodbye): each registers again with
    // what is on its disk. Afterwards every chunk has its 2 copies, and the tracker never
    // claims a copy a peer does not hold. (Not "view == disk": on a slow box a restart
    // can outlast the dead threshold, and a trim's deletion sent while a peer was down
    // leaves that copy on disk until it is trimmed again.)
    for i in 0..3 {
        cluster.kill_peer(i);
        cluster.start_peer(i).await.unwrap();
    }
    cluster.wait_live_peers(3).await.unwrap();
    let views_held_and_complete = || async {
        let Ok(d) = c.stat("keep").await else {
            return false;
        };
        let complete = d.chunks.iter().all(|ch| ch.replicas.len() >= 2);
        complete
            && (0..3).all(|i| {
                let id = cluster.peer_id(i);
                let on_disk = cluster.chunks_on_disk(i);
                d.chunks
                    .iter()
                    .filter(|ch| ch.replicas.iter().any(|r| r.id == id))
                    .all(|ch| on_disk.contains(&ch.hash))
            })
    };
    shoal_testkit::wait_for(
        "every chunk at 2 copies, each held where the tracker says",
        Duration::from_secs(20),
        views_held_and_complete,
    )
    .await
    .unwrap();
    get_same(&c, "keep", &src, &work.path().join("b")).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn corrupt_copy_is_never_returned() {
    let cluster = TestCluster::start(ClusterOptions::zones(&["a", "b"]).replication(2))
        .await
        .unwrap();
    let c = cluster.client();
    let work = tempfile::tempdir().unwrap();
    let (src, _) = put_file(&c, work.path(), "fragile", 5 * CHUNK, 4).await;
    let d = c.stat("fragile").await.unwrap();
    // Corrupt every chunk on peer 0: one byte flipped, same length.
    for ch in &d.chunks {
        let f = cluster.chunk_file(0, &ch.hash);
        let mut bytes = std::fs::read(&f).unwrap();
        bytes[7] ^= 0xff;
        std::fs::write(&f, bytes).unwrap();
    }
    for k in 0..3 {
        get_same(&c, "fragile", &src, &work.path().join(format!("out{k}"))).await;
    }
}

struct KillAt {
    at: u64,
    seen: AtomicU64,
    fire: std::sync::Mutex<Option<tokio::sync::oneshot::Sender<()>>>,
}

impl Progress for KillAt {
    fn advance(&self, n: u64) {
        if self.seen.fetch_add(n, Ordering::SeqCst) + n >= self.at {
            if let Some(tx) = self.fire.lock().unwrap().take() {
                let _ = tx.send(());
            }
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn peer_killed_mid_get_is_survived() {
    let mut cluster = TestCluster::start(ClusterOptions::zones(&["a", "a", "b"]).replication(2))
        .await
        .unwrap();
    let c = Arc::new(cluster.client());
    let work = tempfile::tempdir().unwrap();
    let size = 40 << 20;
    let (src, _) = put_file(&c, work.path(), "big", size, 5).await;
    let (tx, rx) = tokio::sync::oneshot::channel();
    let progress = Arc::new(KillAt {
        at: size / 4,
        seen: AtomicU64::new(0),
        fire: std::sync::Mutex::new(Some(tx)),
    });
    let out = work.path().join("out");
    let (c2, out2) = (c.clone(), out.clone());
    let get = tokio::spawn(async move { c2.get("big", &out2, progress).await });
    rx.await.unwrap();
    cluster.kill_peer(0);
    let r = get.await.unwrap().unwrap();
    assert_eq!(file_hash(&out).unwrap(), file_hash(&src).unwrap());
    assert!(r.from_peers.len() >= 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn interrupted_get_resumes_from_part_file() {
    let cluster = TestCluster::start(ClusterOptions::zones(&["a", "b"]).replication(2))
        .await
        .unwrap();
    let c = cluster.client();
    let work = tempfile::tempdir().unwrap();
    let (src, _) = put_file(&c, work.path(), "resume", 20 * CHUNK, 6).await;
    // A .part file with the first half right and the rest garbage, as a crash leaves it.
    let out = work.path().join("out");
    let mut bytes = std::fs::read(&src).unwrap();
    for b in &mut bytes[(10 * CHUNK as usize)..] {
        *b = 0;
    }
    std::fs::write(shoal_client::get_part_path(&out), &bytes).unwrap();
    let r = c.get("resume", &out, quiet()).await.unwrap();
    assert_eq!(r.resumed_chunks, 10);
    assert_eq!(file_hash(&out).unwrap(), file_hash(&src).unwrap());
    assert!(!shoal_client::get_part_path(&out).exists());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn many_clients_at_once() {
    let cluster = TestCluster::start(ClusterOptions::zones(&["a", "a", "b"]).replication(2))
        .await
        .unwrap();
    let work = tempfile::tempdir().unwrap();
    let c = Arc::new(cluster.client());
    let (src, _) = put_file(&c, work.path(), "shared", 8 << 20, 7).await;
    let mut tasks = Vec::new();
    for k in 0..8 {
        let (c, out) = (c.clone(), work.path().join(format!("get{k}")));
        tasks.push(tokio::spawn(async move {
            c.get("shared", &out, quiet()).await.map(|_| out)
        }));
    }
    let dup = work.path().join("dup");
    random_file(&dup, 3 << 20, 8).unwrap();
    let mut puts = Vec::new();
    for (name, path) in [("dup-a", dup.clone()), ("dup-b", dup.clone())] {
        let c = c.clone();
        puts.push(tokio::spawn(async move {
            c.put(&path, opts(name), quiet()).await
        }));
    }
    for k in 0..2 {
        let p = work.path().join(format!("uniq{k}"));
        random_file(&p, 2 << 20, 9 + k).unwrap();
        let c = c.clone();
        puts.push(tokio::spawn(async move {
            c.put(&p, opts(&format!("uniq{k}")), quiet()).await
        }));
    }
    for t in tasks {
        let out = t.await.unwrap().unwrap();
        assert_eq!(file_hash(&out).unwrap(), file_hash(&src).unwrap());
    }
    for p in puts {
        p.await.unwrap().unwrap();
    }
    let files = c.list().await.unwrap();
    let names: Vec<&str> = files.iter().map(|f| f.name.as_str()).collect();
    assert_eq!(names, vec!["dup-a", "dup-b", "shared", "uniq0", "uniq1"]);
    let a = files.iter().find(|f| f.name == "dup-a").unwrap();
    let b = files.iter().find(|f| f.name == "dup-b").unwrap();
    assert_eq!(a.id, b.id);
    assert!(files
        .iter()
        .all(|f| f.status == pb::FileStatus::Healthy as i32));
    get_same(&c, "dup-b", &dup, &work.path().join("dup-out")).await;
}

/// Peers whose inventory does not fit one message send it in parts (here three chunks a
/// part): registration after a tracker restart, and a resync, still rebuild every copy.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn inventories_in_parts_rebuild_every_copy() {
    let mut opts = ClusterOptions::zones(&["a", "b", "c"]).replication(2);
    opts.peer_tweak = |p| p.inventory_part_chunks = 3;
    let mut cluster = TestCluster::start(opts).await.unwrap();
    let work = tempfile::tempdir().unwrap();
    let (src, _) = put_file(&cluster.client(), work.path(), "parts", 20 * 65536, 3).await;
    let c = cluster.client();
    let copies = || async {
        c.stat("parts")
            .await
            .map(|d| d.chunks.iter().map(|ch| ch.replicas.len()).sum::<usize>())
            .unwrap_or(0)
    };
    let before = copies().await;
    assert!(before >= 2 * 20, "every chunk placed twice: {before}");
    cluster.restart_tracker().await.unwrap();
    cluster.wait_live_peers(3).await.unwrap();
    let c = cluster.client();
    shoal_testkit::wait_for(
        "every copy re-registered",
        Duration::from_secs(20),
        || async {
            c.stat("parts")
                .await
                .map(|d| d.chunks.iter().map(|ch| ch.replicas.len()).sum::<usize>() == before)
                .unwrap_or(false)
        },
    )
    .await
    .unwrap();
    get_same(&c, "parts", &src, &work.path().join("back")).await;
}

/// A peer with 1,000,000 chunks registers: its inventory (66 MB of hex, over the 64 MiB
/// message cap in one piece) goes as a first part and `ReportChunks` parts, as the peer
/// agent sends it; then the tracker holds every copy and agrees with its digest.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_peer_with_a_million_chunks_registers() {
    const CHUNKS: usize = 1_000_000;
    const PART: usize = 100_000;
    let cluster = TestCluster::start(ClusterOptions::zones(&["a"]))
        .await
        .unwrap();
    let url = cluster.tracker_url();
    let url = url.split(',').next().unwrap();
    let mut t = pb::tracker_client::TrackerClient::new(
        shoal_common::grpc::channel_with(url, None).unwrap(),
    )
    .max_encoding_message_size(shoal_common::grpc::MAX_MESSAGE_BYTES);
    let inventory: Vec<shoal_common::hash::Hash> = (0..CHUNKS as u64)
        .map(|i| shoal_common::hash::Hash::of(&i.to_le_bytes()))
        .collect();
    let hex: Vec<String> = inventory.iter().map(|h| h.to_hex()).collect();
    let mut parts = hex.chunks(PART);
    t.register_peer(pb::RegisterPeerRequest {
        peer: Some(pb::PeerRef {
            id: "big".into(),
            addr: "127.0.0.1:9".into(),
            zone: "b".into(),
        }),
        capacity_bytes: 1 << 50,
        used_bytes: 1 << 40,
        chunks: parts.next().unwrap().to_vec(),
        inventory_id: 7,
        write_mark: None,
    })
    .await
    .expect("first part");
    let rest = parts.len();
    for (i, part) in parts.enumerate() {
        t.report_chunks(pb::ReportChunksRequest {
            peer_id: "big".into(),
            added: part.to_vec(),
            full: true,
            inventory_id: 7,
            last: i + 1 == rest,
            ..Default::default()
        })
        .await
        .expect("a part");
    }
    let beat = t
        .heartbeat(pb::HeartbeatRequest {
            peer_id: "big".into(),
            capacity_bytes: 1 << 50,
            used_bytes: 1 << 40,
            active_transfers: 0,
            chunk_count: CHUNKS as u64,
            inventory_digest: shoal_common::hash::inventory_digest(inventory.iter()),
            write_mark: None,
        })
        .await
        .unwrap()
        .into_inner();
    assert!(beat.known && !beat.resync, "{beat:?}");
    let peers = t
        .list_peers(pb::ListPeersRequest::default())
        .await
        .unwrap()
        .into_inner()
        .peers;
    let big = peers
        .iter()
        .find(|p| p.peer.as_ref().is_some_and(|r| r.id == "big"))
        .expect("registered");
    assert_eq!(big.chunks, CHUNKS as u64);
    assert_eq!(big.state, pb::PeerState::Alive as i32);
}

/// Content deleted and put again at once: the deletion the tracker decided is on its
/// way to the peers while the new upload stores the same chunks there. The put
/// commits, and the peers spare what they acknowledged since the deletion was decided:
/// every copy the tracker lists is on that peer's disk and the file reads back.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn content_deleted_and_put_again_at_once_keeps_its_copies() {
    let cluster = TestCluster::start(ClusterOptions::zones(&["a", "b"]).replication(2))
        .await
        .unwrap();
    let c = cluster.client();
    let work = tempfile::tempdir().unwrap();
    let (src, _) = put_file(&c, work.path(), "again", 4 * CHUNK, 3).await;
    for round in 0..5 {
        c.delete("again").await.unwrap();
        c.put(&src, opts("again"), quiet())
            .await
            .unwrap_or_else(|e| panic!("put again, round {round}: {e}"));
    }
    let ids: Vec<String> = (0..2).map(|i| cluster.peer_id(i)).collect();
    shoal_testkit::wait_for(
        "both copies of every chunk listed and on disk",
        Duration::from_secs(20),
        || async {
            let detail = c.stat("again").await.unwrap();
            let disks: Vec<HashSet<String>> = (0..2).map(|i| cluster.chunks_on_disk(i)).collect();
            detail.chunks.iter().all(|ch| {
                ch.replicas.len() == 2
                    && ch.replicas.iter().all(|p| {
                        ids.iter()
                            .position(|id| *id == p.id)
                            .is_some_and(|i| disks[i].contains(&ch.hash))
                    })
            })
        },
    )
    .await
    .unwrap();
    get_same(&c, "again", &src, &work.path().join("out")).await;
}
