use super::*;
use std::time::Duration;

#[test]
fn dirty_keeps_each_chunk_once_across_shards() {
    let mut d = Dirty::default();
    let hs: Vec<Hash> = (0..1000u32).map(|i| Hash::of(&i.to_le_bytes())).collect();
    d.extend(hs.iter().copied());
    d.extend(hs.iter().copied());
    assert_eq!(d.len(), 1000);
    assert!(d.contains(&hs[7]) && !d.is_empty());
    let mut v = std::mem::take(&mut d).into_vec();
    assert!(d.is_empty());
    v.sort();
    let mut want = hs.clone();
    want.sort();
    assert_eq!(v, want);
}

fn peer(id: &str) -> pb::PeerRef {
    pb::PeerRef {
        id: id.into(),
        addr: "127.0.0.1:1".into(),
        zone: "a".into(),
    }
}

/// Liveness follows the configured thresholds exactly (paused clock, no sleeping).
#[tokio::test(start_paused = true)]
async fn alive_then_suspect_then_dead_then_back() {
    let cfg = TrackerConfig::for_data_dir(std::path::PathBuf::new());
    let mut st = State::default();
    let h = Hash::of(b"c");
    st.register_peer(peer("p"), 1 << 30, 0, vec![h], Instant::now());
    let state = |st: &State| st.peer_state(&st.peers["p"], &cfg, Instant::now());
    assert_eq!(state(&st), pb::PeerState::Alive);
    tokio::time::advance(cfg.liveness.suspect_after - Duration::from_millis(1)).await;
    assert_eq!(state(&st), pb::PeerState::Alive);
    tokio::time::advance(Duration::from_millis(1)).await;
    assert_eq!(state(&st), pb::PeerState::Suspect);
    assert_eq!(
        st.live_holders(&h, &cfg, Instant::now()).len(),
        1,
        "a suspect copy still serves"
    );
    tokio::time::advance(cfg.liveness.dead_after - cfg.liveness.suspect_after).await;
    assert_eq!(state(&st), pb::PeerState::Dead);
    assert!(
        st.live_holders(&h, &cfg, Instant::now()).is_empty(),
        "a dead copy does not count"
    );
    assert_eq!(st.live_peer_count(&cfg, Instant::now()), 0);
    // It comes back: registration replaces what the tracker believed with its inventory.
    st.register_peer(peer("p"), 1 << 30, 0, vec![], Instant::now());
    assert_eq!(state(&st), pb::PeerState::Alive);
    assert!(
        !st.locations.has(&h),
        "reconciled, not trusted: the copy it lost is gone"
    );
}

/// An inventory sent in parts replaces the tracker's view only when the last part
/// arrives: until then the copies it knew stay, so nothing looks under-replicated.
#[tokio::test(start_paused = true)]
async fn an_inventory_in_parts_is_swapped_in_at_the_last_part() {
    let (a, b, c) = (Hash::of(b"a"), Hash::of(b"b"), Hash::of(b"c"));
    let mut st = State::default();
    st.register_peer(peer("p"), 1 << 30, 0, vec![a], Instant::now());
    st.register_peer_in_parts(peer("p"), 1 << 30, 0, vec![b], 7, Instant::now())
        .unwrap();
    assert!(
        st.locations.has(&a) && !st.locations.has(&b),
        "old view kept"
    );
    st.report_chunks("p", vec![c], vec![], true, Some((7, false)), None)
        .unwrap();
    assert!(st.locations.has(&a) && !st.locations.has(&c));
    st.report_chunks("p", vec![], vec![], true, Some((7, true)), None)
        .unwrap();
    assert!(!st.locations.has(&a), "replaced at the last part");
    assert!(st.locations.has(&b) && st.locations.has(&c));
    assert_eq!(st.locations.of("p").len(), 2);
    // A part of another transfer starts over instead of mixing two inventories.
    st.report_chunks("p", vec![a], vec![], true, Some((8, false)), None)
        .unwrap();
    st.report_chunks("p", vec![], vec![], true, Some((9, true)), None)
        .unwrap();
    assert_eq!(st.locations.of("p").len(), 0);
    assert!(st.staging.is_empty());
}

/// A config whose liveness never gets in the way of the grace being tested.
fn grace_cfg() -> TrackerConfig {
    let mut cfg = TrackerConfig::for_data_dir(std::path::PathBuf::new());
    cfg.liveness.suspect_after = Duration::from_secs(3000);
    cfg.liveness.dead_after = Duration::from_secs(3600);
    cfg.repair.restart_grace = Duration::from_secs(600);
    cfg
}

/// `n` peers all holding `h`.
fn holders(n: usize, h: Hash) -> State {
    let mut st = State::default();
    for i in 0..n {
        st.register_peer(peer(&format!("p{i}")), 1 << 30, 0, vec![h], Instant::now());
    }
    st
}

#[test]
fn needs_repair_counts_expected_copies_only_above_two_live() {
    // (live, expected, target) -> repair?
    for (live, expected, target, want) in [
        (3, 0, 3, false),
        (2, 1, 3, false), // one peer restarting: wait for it
        (2, 0, 3, true),  // gone: repair
        (1, 2, 3, true),  // below min(2, R): at once
        (1, 1, 2, true),  // R=2: a restart leaves one copy, repair at once
        (0, 1, 1, true),  // R=1: the only copy is away; nothing to copy from, but due
        (1, 0, 1, false),
        (4, 0, 3, false),
    ] {
        assert_eq!(
            needs_repair(live, expected, target),
            want,
            "live {live}, expected {expected}, target {target}"
        );
    }
}

/// A peer that said it is restarting: no repair during the grace, repair after it.
#[tokio::test(start_paused = true)]
async fn restarting_peer_is_not_repaired_during_the_grace_then_is() {
    let cfg = grace_cfg();
    let h = Hash::of(b"c");
    let mut st = holders(3, h);
    st.goodbyes
        .insert("p2".into(), Goodbye::Restarting(Instant::now()));
    let state = |st: &State| st.peer_state(&st.peers["p2"], &cfg, Instant::now());
    assert_eq!(state(&st), pb::PeerState::Restarting);
    assert_eq!(
        st.live_holders(&h, &cfg, Instant::now()).len(),
        2,
        "a restarting peer serves nothing"
    );
    assert!(!st.below_target(&h, 3, &cfg, Instant::now()));
    tokio::time::advance(cfg.repair.restart_grace - Duration::from_millis(1)).await;
    assert_eq!(state(&st), pb::PeerState::Restarting);
    assert!(!st.below_target(&h, 3, &cfg, Instant::now()));
    tokio::time::advance(Duration::from_millis(1)).await;
    assert_eq!(state(&st), pb::PeerState::Dead);
    assert!(
        st.below_target(&h, 3, &cfg, Instant::now()),
        "after the grace, its copies are repaired"
    );
}

/// Below min(2, R) live copies a chunk is repaired at once, grace or not.
#[tokio::test(start_paused = true)]
async fn one_live_copy_is_repaired_at_once_during_the_grace() {
    let cfg = grace_cfg();
    let h = Hash::of(b"c");
    let mut st = holders(2, h);
    st.goodbyes
        .insert("p1".into(), Goodbye::Restarting(Instant::now()));
    assert!(st.below_target(&h, 2, &cfg, Instant::now()), "R=2");
    let mut st = holders(3, h);
    for p in ["p1", "p2"] {
        st.goodbyes
            .insert(p.into(), Goodbye::Restarting(Instant::now()));
    }
    assert!(
        st.below_target(&h, 3, &cfg, Instant::now()),
        "R=3, two away"
    );
}

/// Coming back is registering again: alive with its copies, nothing to repair.
#[tokio::test(start_paused = true)]
async fn a_restarted_peer_is_live_again_with_its_copies() {
    let cfg = grace_cfg();
    let h = Hash::of(b"c");
    let mut st = holders(3, h);
    st.goodbyes
        .insert("p2".into(), Goodbye::Restarting(Instant::now()));
    tokio::time::advance(Duration::from_secs(60)).await;
    st.register_peer(peer("p2"), 1 << 30, 0, vec![h], Instant::now());
    assert_eq!(
        st.peer_state(&st.peers["p2"], &cfg, Instant::now()),
        pb::PeerState::Alive
    );
    assert_eq!(st.durable_count(&h, &cfg, Instant::now()), 3);
    tokio::time::advance(cfg.repair.restart_grace).await;
    assert!(
        !st.below_target(&h, 3, &cfg, Instant::now()),
        "grace over, still fine"
    );
}

/// A peer that left (or crashed past dead_after) is repaired at once; a draining peer
/// that restarts gets no grace (it is leaving anyway).
#[tokio::test(start_paused = true)]
async fn leaving_and_draining_peers_get_no_grace() {
    let cfg = grace_cfg();
    let h = Hash::of(b"c");
    let mut st = holders(3, h);
    st.goodbyes
        .insert("p2".into(), Goodbye::Left(Instant::now()));
    assert_eq!(
        st.peer_state(&st.peers["p2"], &cfg, Instant::now()),
        pb::PeerState::Dead
    );
    assert!(st.below_target(&h, 3, &cfg, Instant::now()));
    let mut st = holders(3, h);
    if let Some(p) = st.peers.get_mut("p2") {
        p.draining = true;
    }
    st.goodbyes
        .insert("p2".into(), Goodbye::Restarting(Instant::now()));
    assert!(st.below_target(&h, 3, &cfg, Instant::now()));
}

/// After a tracker restart, peers known from the store but silent since are judged
/// from the tracker's start: suspect and dead only after the usual delays.
#[tokio::test(start_paused = true)]
async fn peers_from_the_store_are_judged_from_the_trackers_start() {
    let cfg = TrackerConfig::for_data_dir(std::path::PathBuf::new());
    let mut st = State::from_loaded(Loaded::default());
    let now = Instant::now();
    let long_ago = now
        .checked_sub(cfg.liveness.dead_after * 10)
        .expect("the clock runs longer than five minutes");
    for id in ["silent", "heard"] {
        st.register_peer(peer(id), 1 << 30, 0, vec![], long_ago);
    }
    let state = |st: &State, id: &str| st.peer_state(&st.peers[id], &cfg, Instant::now());
    assert_eq!(state(&st, "silent"), pb::PeerState::Alive);
    tokio::time::advance(cfg.liveness.dead_after - Duration::from_millis(1)).await;
    if let Some(p) = st.peers.get_mut("heard") {
        p.last_seen = Instant::now();
    }
    assert_eq!(state(&st, "silent"), pb::PeerState::Suspect);
    tokio::time::advance(Duration::from_millis(1)).await;
    assert_eq!(state(&st, "silent"), pb::PeerState::Dead);
    assert_eq!(state(&st, "heard"), pb::PeerState::Alive);
    tokio::time::advance(cfg.liveness.dead_after).await;
    assert_eq!(
        state(&st, "heard"),
        pb::PeerState::Dead,
        "a peer heard from is judged from when it was heard"
    );
}

fn file(tag: &[u8], chunks: &[&[u8]]) -> FileRecord {
    FileRecord {
        id: Hash::of(tag),
        size: 4096 * chunks.len() as u64,
        chunk_size: 4096,
        chunks: chunks.iter().map(|c| Hash::of(c)).collect(),
        replicas: 2,
        created_ms: 1,
    }
}

/// A replica behind the trimmed log swaps in a fresh catalogue: files, names, chunk
/// references and position are the loaded ones; peers and locations stay.
#[test]
fn reload_catalogue_replaces_files_names_and_refs_only() {
    let (f1, f2) = (file(b"f1", &[b"a", b"b"]), file(b"f2", &[b"b", b"c"]));
    let name = |f: &FileRecord| NameRecord {
        id: f.id,
        created_ms: 1,
    };
    let mut old = Loaded::default();
    old.files.insert(f1.id, f1.clone());
    old.names.insert("one".into(), name(&f1));
    let mut st = State::from_loaded(old);
    st.register_peer(peer("p"), 1 << 30, 0, vec![Hash::of(b"a")], Instant::now());
    let mut fresh = Loaded::default();
    fresh.files.insert(f2.id, f2.clone());
    fresh.names.insert("two".into(), name(&f2));
    fresh.seq = 42;
    st.reload_catalogue(fresh);
    assert!(st.catalogue.file(&f1.id).is_none());
    assert!(st.catalogue.file(&f2.id).is_some());
    let names: Vec<&String> = st.catalogue.names_after(None).map(|(n, _)| n).collect();
    assert_eq!(names, vec!["two"]);
    assert_eq!(st.applied_seq, 42);
    let refs: HashSet<Hash> = st.catalogue.chunks().map(|(h, _)| *h).collect();
    assert_eq!(refs, [Hash::of(b"b"), Hash::of(b"c")].into_iter().collect());
    assert!(st.peers.contains_key("p"));
    assert!(
        st.locations.has(&Hash::of(b"a")),
        "locations are the peers' word, kept"
    );
}

/// Removing a file of R=3 that shares a chunk with a file of R=2 lowers that chunk's
/// target: the chunk is marked for the manager, which trims its third copy (the
/// model-based test found such a copy kept for good: nothing else marked it).
#[test]
fn removing_a_file_marks_the_chunks_it_shared_whose_target_fell() {
    let low = file(b"low", &[b"shared", b"own"]);
    let high = FileRecord {
        replicas: 3,
        ..file(b"high", &[b"shared"])
    };
    let mut st = State::default();
    st.apply_change(Change::PutFile(low));
    st.apply_change(Change::PutFile(high.clone()));
    let shared = Hash::of(b"shared");
    assert_eq!(st.chunk_target(&shared), Some(3));
    let _ = std::mem::take(&mut st.dirty);
    let garbage = st.apply_change(Change::DeleteFile(high.id));
    assert!(garbage.is_empty(), "the shared chunk is still referenced");
    assert_eq!(st.chunk_target(&shared), Some(2));
    assert!(
        st.dirty.contains(&shared),
        "a chunk whose target fell is evaluated again"
    );
}

/// A repair copy stored after a full inventory was snapshotted is not dropped when that
/// inventory arrives (the chunk would look short, be copied again elsewhere and come
/// back one copy over target); an inventory snapshotted after the copy is the truth.
#[tokio::test(start_paused = true)]
async fn a_full_inventory_older_than_a_repair_copy_keeps_it() {
    let (a, b) = (Hash::of(b"a"), Hash::of(b"b"));
    let mut st = State::default();
    st.register_peer(peer("p"), 1 << 30, 0, vec![a], Instant::now());
    st.add_stored("p", b, Some((7, 10)), Instant::now());
    // Snapshotted at mark 9, before the copy was stored: whole, and in parts.
    st.report_chunks("p", vec![a], vec![], true, None, Some((7, 9)))
        .unwrap();
    assert!(
        st.locations.has(&b),
        "a report older than the copy keeps it"
    );
    st.register(
        peer("p"),
        1 << 30,
        0,
        inventory::Snapshot {
            chunks: vec![a],
            id: 0,
            mark: Some((7, 9)),
        },
        Instant::now(),
    )
    .unwrap();
    assert!(st.locations.has(&b), "so does a registration");
    // Snapshotted at the copy's mark or later: the peer's word goes.
    st.report_chunks("p", vec![a], vec![], true, None, Some((7, 10)))
        .unwrap();
    assert!(
        !st.locations.has(&b),
        "a report at the copy's mark is the truth"
    );
    assert!(st.fresh.is_empty(), "and the copy is forgotten");
}

/// What protects a repair copy ends with the peer's process, its own removal, a
/// deletion, or time; a peer that sends no marks is believed as before.
#[tokio::test(start_paused = true)]
async fn a_repair_copy_is_protected_only_by_a_mark_of_the_same_process() {
    let (a, b) = (Hash::of(b"a"), Hash::of(b"b"));
    let full = |st: &mut State, mark| {
        st.report_chunks("p", vec![a], vec![], true, None, mark)
            .unwrap()
    };
    let mut st = State::default();
    st.register_peer(peer("p"), 1 << 30, 0, vec![a], Instant::now());
    st.add_stored("p", b, Some((7, 10)), Instant::now());
    full(&mut st, Some((8, 1)));
    assert!(
        !st.locations.has(&b),
        "another boot: the report is the truth"
    );

    st.add_stored("p", b, Some((7, 10)), Instant::now());
    full(&mut st, None);
    assert!(!st.locations.has(&b), "no mark: the report is the truth");

    st.add_stored("p", b, Some((7, 10)), Instant::now());
    st.report_chunks("p", vec![], vec![b], false, None, None)
        .unwrap();
    full(&mut st, Some((7, 9)));
    assert!(!st.locations.has(&b), "the peer removed it itself");

    st.add_stored("p", b, Some((7, 10)), Instant::now());
    let trim = Deletion {
        peer_id: "p".into(),
        addr: String::new(),
        chunks: vec![b],
        after: (7, 10),
    };
    st.note_deletions(std::slice::from_ref(&trim), Instant::now());
    full(&mut st, Some((7, 9)));
    assert!(!st.locations.has(&b), "being deleted");

    st.add_stored("p", b, Some((7, 10)), Instant::now());
    tokio::time::advance(inventory::FRESH_FOR).await;
    full(&mut st, Some((7, 9)));
    assert!(!st.locations.has(&b), "expired");
    assert!(st.fresh.is_empty());
}

/// A commit of many chunks, most stored long before it: only the copies the peer's last
/// heartbeat has not covered are remembered, and remembering stays linear (no rescan of
/// the whole set per copy).
#[tokio::test(start_paused = true)]
async fn only_copies_newer_than_the_last_heartbeat_are_remembered() {
    let mut st = State::default();
    st.register_peer(peer("p"), 1 << 30, 0, vec![], Instant::now());
    st.peers.get_mut("p").unwrap().write_mark = (7, 100_000);
    let hs: Vec<Hash> = (0..200_000u32)
        .map(|i| Hash::of(&i.to_le_bytes()))
        .collect();
    for (i, h) in hs.iter().enumerate() {
        st.add_stored("p", *h, Some((7, i as u64 + 1)), Instant::now());
    }
    // Pruned only when the set doubled since the last pruning: a rescan per copy would
    // have left the threshold at its floor.
    let f = &st.fresh["p"];
    assert!(
        f.prune_above > f.at.len() && f.prune_above >= 2 * inventory::FRESH_PRUNE,
        "threshold {} for {} copies",
        f.prune_above,
        f.at.len()
    );
    assert_eq!(st.locations.of("p").len(), 200_000, "every copy counted");
    assert_eq!(
        st.fresh["p"].at.len(),
        100_000,
        "only the ones after mark 100,000"
    );
    // A whole inventory snapshotted after all of them settles them at once.
    st.report_chunks("p", hs.clone(), vec![], true, None, Some((7, 200_000)))
        .unwrap();
    assert!(st.fresh.is_empty());
    assert_eq!(st.locations.of("p").len(), 200_000);
}
