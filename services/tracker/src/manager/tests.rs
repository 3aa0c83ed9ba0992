use super::*;
use crate::config::TrackerConfig;
use crate::store::{CatalogueStore, FileRecord, MemoryStore, NameRecord, Store};

/// A tracker over a catalogue of `files` files of `chunks` one-copy chunks each, and
/// peer `p0` registered holding the chunks of the first `held` files.
fn tracker(files: usize, chunks: usize, held: usize) -> (Arc<Tracker>, Vec<Vec<Hash>>) {
    let store = MemoryStore::default();
    let mut all = Vec::new();
    let mut changes = Vec::new();
    for f in 0..files {
        let hashes: Vec<Hash> = (0..chunks)
            .map(|c| Hash::of(format!("{f}/{c}").as_bytes()))
            .collect();
        let id = Hash::of(format!("file {f}").as_bytes());
        changes.push(Change::PutFile(FileRecord {
            id,
            size: chunks as u64,
            chunk_size: 1,
            chunks: hashes.clone(),
            replicas: 1,
            created_ms: 0,
        }));
        changes.push(Change::PutName(
            format!("f{f:03}"),
            NameRecord { id, created_ms: 0 },
        ));
        all.push(hashes);
    }
    store.apply(&changes).unwrap();
    let cfg = TrackerConfig::for_data_dir(std::path::PathBuf::new());
    let keys = shoal_common::ticket::TicketKeys::new(None, None, None);
    let t = Tracker::with_store(cfg, Store::Local(Box::new(store)), None, keys).unwrap();
    let peer = pb::PeerRef {
        id: "p0".into(),
        addr: "127.0.0.1:1".into(),
        zone: "z".into(),
    };
    let inventory = all[..held].concat();
    t.state()
        .register_peer(peer, 1 << 30, 0, inventory, Instant::now());
    (t, all)
}

fn refresh(t: &Tracker) {
    t.state().peers.get_mut("p0").unwrap().last_seen = Instant::now();
}

/// When safe mode ends, the chunks no peer reported are found name by name, a slice
/// per lock hold, and evaluated: lost.
#[tokio::test(start_paused = true)]
async fn unreported_chunks_are_marked_when_safe_mode_ends() {
    let (t, all) = tracker(40, 1000, 39);
    let ms = Arc::new(Mutex::new(ManagerState::default()));
    assert!(
        !note_transitions(&t, &ms, Instant::now()),
        "safe mode at start"
    );
    assert!(evaluate(&t, &ms, Instant::now()).is_empty());
    assert!(t.state().dirty.is_empty());
    // 97.5 % reported: safe mode lasts ten dead_after.
    tokio::time::advance(t.cfg.liveness.dead_after * 10).await;
    refresh(&t);
    assert!(note_transitions(&t, &ms, Instant::now()), "safe mode over");
    let dirty: HashSet<Hash> = t.state().dirty.iter().copied().collect();
    assert_eq!(dirty, all[39].iter().copied().collect::<HashSet<_>>());
    evaluate(&t, &ms, Instant::now());
    let st = t.state();
    assert_eq!(st.health.lost.len(), 1000);
    assert!(st.health.under.is_empty());
}

/// A suspect peer's copies still count: a pause in heartbeats marks nothing; death
/// marks the peer's chunks.
#[tokio::test(start_paused = true)]
async fn only_death_not_suspicion_marks_a_peers_chunks() {
    let (t, all) = tracker(2, 10, 2);
    let ms = Arc::new(Mutex::new(ManagerState::default()));
    let cfg = t.cfg.liveness.clone();
    tokio::time::advance(cfg.dead_after).await;
    refresh(&t);
    assert!(note_transitions(&t, &ms, Instant::now()));
    evaluate(&t, &ms, Instant::now());
    assert!(t.state().dirty.is_empty());
    tokio::time::advance(cfg.suspect_after).await;
    let st = t.state();
    let p = &st.peers["p0"];
    assert_eq!(
        st.peer_state(p, &t.cfg, Instant::now()),
        pb::PeerState::Suspect
    );
    drop(st);
    note_transitions(&t, &ms, Instant::now());
    assert!(t.state().dirty.is_empty(), "suspect: nothing to evaluate");
    tokio::time::advance(cfg.dead_after).await;
    note_transitions(&t, &ms, Instant::now());
    assert_eq!(
        t.state().dirty.len(),
        all.concat().len(),
        "dead: every chunk"
    );
}

/// A tracker on the in-memory store with `files` (replica target, chunks) and peers
/// (id, zone, used of 1,000 bytes, chunks held), every peer registered now.
fn cluster(
    cfg: TrackerConfig,
    files: &[(u32, &[Hash])],
    peers: &[(&str, &str, u64, &[Hash])],
) -> Arc<Tracker> {
    let store = MemoryStore::default();
    let mut changes = Vec::new();
    for (i, (replicas, chunks)) in files.iter().enumerate() {
        let id = Hash::of(format!("file {i}").as_bytes());
        changes.push(Change::PutFile(FileRecord {
            id,
            size: chunks.len() as u64,
            chunk_size: 1,
            chunks: chunks.to_vec(),
            replicas: *replicas,
            created_ms: 0,
        }));
        changes.push(Change::PutName(
            format!("f{i}"),
            NameRecord { id, created_ms: 0 },
        ));
    }
    store.apply(&changes).unwrap();
    let keys = shoal_common::ticket::TicketKeys::new(None, None, None);
    let t = Tracker::with_store(cfg, Store::Local(Box::new(store)), None, keys).unwrap();
    for (id, zone, used, held) in peers {
        let peer = pb::PeerRef {
            id: id.to_string(),
            addr: format!("127.0.0.1:{}", 1 + id.len()),
            zone: zone.to_string(),
        };
        t.state()
            .register_peer(peer, 1000, *used, held.to_vec(), Instant::now());
    }
    t
}

fn hashes(tag: &str, n: usize) -> Vec<Hash> {
    (0..n)
        .map(|i| Hash::of(format!("{tag}{i}").as_bytes()))
        .collect()
}

/// Past safe mode with every peer heard from just now; returns the manager's state
/// after one evaluation of every dirty chunk, and the chunks found below target.
async fn settle(t: &Arc<Tracker>, alive: &[&str]) -> (Arc<Mutex<ManagerState>>, Vec<Hash>) {
    let ms = Arc::new(Mutex::new(ManagerState::default()));
    tokio::time::advance(t.cfg.liveness.dead_after * 10).await;
    hear(t, alive);
    assert!(note_transitions(t, &ms, Instant::now()), "safe mode over");
    let below = evaluate(t, &ms, Instant::now());
    (ms, below)
}

fn hear(t: &Tracker, ids: &[&str]) {
    let mut st = t.state();
    for id in ids {
        st.peers.get_mut(*id).unwrap().last_seen = Instant::now();
    }
}

/// Repair order: chunks with one live copy start before chunks with two (HDFS's
/// UnderReplicatedBlocks), whatever order they were found in, as "high" priority.
#[tokio::test(start_paused = true)]
async fn repairs_start_fewest_live_copies_first() {
    let (two, one) = (hashes("two", 6), hashes("one", 3));
    let mut cfg = TrackerConfig::for_data_dir(std::path::PathBuf::new());
    cfg.repair.concurrency = 3;
    cfg.repair.per_peer = 100;
    cfg.repair.bandwidth_bytes = 0;
    let t = cluster(
        cfg,
        &[(3, &two), (3, &one)],
        &[
            ("p0", "a", 0, &[two.clone(), one.clone()].concat()),
            ("p1", "b", 0, &two),
            ("p2", "c", 0, &[]),
            ("p3", "d", 0, &[]),
        ],
    );
    let (ms, below) = settle(&t, &["p0", "p1", "p2", "p3"]).await;
    assert_eq!(below.len(), 9, "every chunk is below its target of 3");
    let starts = {
        let mut st = t.state();
        let mut m = ms.lock().unwrap();
        schedule(&t, &mut st, &mut m, Instant::now())
    };
    let started: HashSet<Hash> = starts.iter().map(|s| s.0).collect();
    assert_eq!(
        started,
        one.iter().copied().collect(),
        "one-copy chunks first"
    );
    assert!(starts.iter().all(|s| s.2 == 1 && s.4 == "high"));
    // The next round (one-copy chunks in flight) takes the two-copy ones.
    let more = {
        let mut st = t.state();
        let mut m = ms.lock().unwrap();
        m.in_flight.clear();
        m.per_peer.clear();
        for h in &one {
            m.unrank(h);
        }
        schedule(&t, &mut st, &mut m, Instant::now())
    };
    assert_eq!(more.len(), 3);
    assert!(more
        .iter()
        .all(|s| two.contains(&s.0) && s.2 == 2 && s.4 == "normal"));
}

/// A chunk ranked below target that has reached it since its evaluation (a repair
/// finished, a holder came back) is not copied again: the e2e saw two repairs of one
/// chunk 35 ms apart, the second from the first's target, and a fourth copy trimmed.
#[tokio::test(start_paused = true)]
async fn a_ranked_chunk_back_at_target_is_not_repaired_again() {
    let chunks = hashes("c", 4);
    let mut cfg = TrackerConfig::for_data_dir(std::path::PathBuf::new());
    cfg.repair.per_peer = 100;
    cfg.repair.bandwidth_bytes = 0;
    let t = cluster(
        cfg,
        &[(3, &chunks)],
        &[
            ("p0", "a", 0, &chunks),
            ("p1", "b", 0, &chunks),
            ("p2", "c", 0, &[]),
            ("p3", "d", 0, &[]),
        ],
    );
    let (ms, below) = settle(&t, &["p0", "p1", "p2", "p3"]).await;
    assert_eq!(below.len(), 4, "two copies of three: every chunk is ranked");
    // Two of them get their third copy before the next evaluation.
    for h in &chunks[..2] {
        t.state().add_location("p2", *h);
    }
    let starts = {
        let mut st = t.state();
        let mut m = ms.lock().unwrap();
        let starts = schedule(&t, &mut st, &mut m, Instant::now());
        assert!(
            chunks[..2].iter().all(|h| !m.rank_of.contains_key(h)),
            "chunks at target leave the queue"
        );
        starts
    };
    let started: HashSet<Hash> = starts.iter().map(|s| s.0).collect();
    assert_eq!(started, chunks[2..].iter().copied().collect());
}

/// Trim choice: a copy above target goes from the most crowded zone, fullest peer
/// first; and not while any holder is suspect (a pause is not a reason to delete), nor
/// while an upload may be acknowledging the copy (its receipt would count a copy gone).
#[tokio::test(start_paused = true)]
async fn trim_takes_the_fullest_peer_of_the_most_crowded_zone_once_all_are_alive() {
    let chunk = hashes("c", 1);
    let t = cluster(
        TrackerConfig::for_data_dir(std::path::PathBuf::new()),
        &[(2, &chunk)],
        &[
            ("p0", "a", 100, &chunk),
            ("p1", "a", 900, &chunk),
            ("p2", "b", 950, &chunk),
        ],
    );
    let (ms, below) = settle(&t, &["p0", "p1", "p2"]).await;
    assert!(below.is_empty());
    // p2 falls silent past suspect_after: nothing is trimmed.
    tokio::time::advance(t.cfg.liveness.suspect_after + Duration::from_millis(1)).await;
    hear(&t, &["p0", "p1"]);
    let trimmed_unless = |t: &Arc<Tracker>, in_uploads: &HashSet<Hash>| {
        let mut deletions = Vec::new();
        let mut st = t.state();
        let mut m = ms.lock().unwrap();
        trim(
            t,
            &mut st,
            &mut m,
            Instant::now(),
            in_uploads,
            &mut deletions,
        );
        deletions.into_iter().map(|d| d.peer_id).collect::<Vec<_>>()
    };
    let trimmed = |t: &Arc<Tracker>| trimmed_unless(t, &HashSet::new());
    assert!(trimmed(&t).is_empty(), "a suspect holder: no trim");
    hear(&t, &["p2"]);
    let uploading: HashSet<Hash> = chunk.iter().copied().collect();
    assert!(
        trimmed_unless(&t, &uploading).is_empty(),
        "an upload in flight holds it: no trim"
    );
    // Zone a has two copies; of those p1 is fuller (p2, fuller still, is zone b's only).
    assert_eq!(trimmed(&t), vec!["p1".to_string()]);
    assert_eq!(t.state().locations.count(&chunk[0]), 2);
    assert!(trimmed(&t).is_empty(), "trimmed once");
}

/// GC grace: a copy no file references is deleted only after the grace; a chunk an
/// upload in flight holds restarts its grace; once the upload expires it goes.
#[tokio::test(start_paused = true)]
async fn garbage_waits_its_grace_and_for_uploads_to_end() {
    let (kept, orphan, uploading) = (hashes("k", 1), hashes("o", 1), hashes("u", 1));
    let mut cfg = TrackerConfig::for_data_dir(std::path::PathBuf::new());
    cfg.upload.expiry = cfg.repair.gc_grace * 3;
    let grace = cfg.repair.gc_grace;
    let t = cluster(
        cfg,
        &[(1, &kept)],
        &[(
            "p0",
            "a",
            0,
            &[kept.clone(), orphan.clone(), uploading.clone()].concat(),
        )],
    );
    let (ms, _) = settle(&t, &["p0"]).await;
    t.state()
        .uploads
        .begin(
            "up".into(),
            crate::uploads::Upload::for_test(
                Instant::now() + t.cfg.upload.expiry,
                uploading.clone(),
                [0; 32],
            ),
            crate::uploads::Caps {
                overall: 1,
                per_owner: 1,
            },
        )
        .unwrap();
    let collected = |t: &Arc<Tracker>| {
        t.expire_uploads();
        let held = t
            .held_by_uploads()
            .expect("local uploads are always readable");
        let mut deletions = Vec::new();
        let mut st = t.state();
        let mut m = ms.lock().unwrap();
        collect(t, &mut st, &mut m, Instant::now(), &held, &mut deletions);
        deletions
            .into_iter()
            .flat_map(|d| d.chunks)
            .collect::<HashSet<_>>()
    };
    assert!(collected(&t).is_empty(), "within the grace");
    tokio::time::advance(grace / 2).await;
    hear(&t, &["p0"]);
    assert!(collected(&t).is_empty(), "still within the grace");
    tokio::time::advance(grace / 2 + Duration::from_millis(1)).await;
    hear(&t, &["p0"]);
    assert_eq!(
        collected(&t),
        orphan.iter().copied().collect(),
        "past the grace"
    );
    assert!(
        t.state().locations.has(&kept[0]),
        "a referenced chunk stays"
    );
    // The upload holds its chunk until it expires (each round restarts the chunk's
    // grace), then one grace more.
    tokio::time::advance(grace * 2 - Duration::from_millis(2)).await;
    hear(&t, &["p0"]);
    assert!(
        collected(&t).is_empty(),
        "held by the upload, long past a grace"
    );
    tokio::time::advance(Duration::from_millis(2)).await;
    hear(&t, &["p0"]);
    assert!(
        collected(&t).is_empty(),
        "the upload just expired: its grace starts"
    );
    assert_eq!(t.state().uploads.len(), 0, "expired");
    tokio::time::advance(grace + Duration::from_millis(1)).await;
    hear(&t, &["p0"]);
    assert_eq!(collected(&t), uploading.iter().copied().collect());
}
