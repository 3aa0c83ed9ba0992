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
