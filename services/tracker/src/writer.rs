//! Catalogue writes go through one writer task. Each job is *planned* on the state (a
//! shared borrow: a plan cannot change memory), its changes are *persisted*, and only
//! then *applied* to memory — so a failed store write changes nothing, and no lock is
//! held while the disk or the database works.
//!
//! Jobs that wait together share one transaction and one fsync (group commit), unless
//! they touch the same name or content: the later one is planned again after the first
//! is applied, so every commit is as if the jobs ran one by one.

use std::any::Any;
use std::collections::{HashSet, VecDeque};
use std::sync::{Arc, Weak};

use tokio::sync::{mpsc, oneshot};
use tokio::time::Instant;
use tracing::warn;

use crate::catalogue::Key;
use crate::config::TrackerConfig;
use crate::error::{Error, Result};
use shoal_common::hash::Hash;

use crate::state::{Deletion, State};
use crate::store::Change;
use crate::tracker::Tracker;

/// A change to memory beyond the catalogue's, made once the commit is durable.
pub type Effect = Box<dyn FnOnce(&mut State) + Send>;

/// What a plan decided: the answer, the store changes, and the memory effect.
pub struct Planned<R> {
    pub value: R,
    pub changes: Vec<Change>,
    pub effect: Option<Effect>,
}

impl<R> Planned<R> {
    pub fn new(value: R, changes: Vec<Change>) -> Self {
        Planned {
            value,
            changes,
            effect: None,
        }
    }

    pub fn then(mut self, f: impl FnOnce(&mut State) + Send + 'static) -> Self {
        self.effect = Some(Box::new(f));
        self
    }
}

type AnyValue = Box<dyn Any + Send>;
type Plan = Box<dyn FnMut(&State, &TrackerConfig, Instant) -> Result<Planned<AnyValue>> + Send>;

pub(crate) struct Job {
    plan: Plan,
    reply: Box<dyn FnOnce(Result<AnyValue>) + Send>,
}

impl Job {
    /// Answer without running (the store could not even start a commit).
    pub(crate) fn fail(self, e: Error) {
        (self.reply)(Err(e))
    }
}

/// Most jobs in one commit.
const MAX_BATCH: usize = 512;

/// The sending side; the task ends when the tracker (and with it this) is dropped.
pub struct Writer {
    tx: mpsc::UnboundedSender<Job>,
}

impl Writer {
    /// Start the writer task for `tracker` (held weakly, so dropping it ends the task).
    pub fn start(tracker: Weak<Tracker>) -> Self {
        let (tx, rx) = mpsc::unbounded_channel();
        tokio::spawn(run(tracker, rx));
        Writer { tx }
    }

    /// Plan, persist, apply; the plan may run more than once (it must only read).
    pub async fn write<R: Send + 'static>(
        &self,
        mut plan: impl FnMut(&State, &TrackerConfig, Instant) -> Result<Planned<R>> + Send + 'static,
    ) -> Result<R> {
        let (tx, rx) = oneshot::channel();
        let job = Job {
            plan: Box::new(move |st, cfg, now| {
                plan(st, cfg, now).map(|p| Planned {
                    value: Box::new(p.value) as AnyValue,
                    changes: p.changes,
                    effect: p.effect,
                })
            }),
            reply: Box::new(move |r| {
                let _ = tx.send(r);
            }),
        };
        self.tx
            .send(job)
            .map_err(|_| Error::Unavailable("the tracker is shutting down".into()))?;
        let value = rx
            .await
            .map_err(|_| Error::Unavailable("the catalogue writer stopped".into()))??;
        Ok(*value
            .downcast::<R>()
            .expect("the value of this job's own plan"))
    }

    /// Persist changes that need no plan (the repair queue), without waiting.
    pub fn submit(&self, changes: Vec<Change>) {
        if changes.is_empty() {
            return;
        }
        let mut once = Some(changes);
        let job = Job {
            plan: Box::new(move |_, _, _| {
                Ok(Planned::new(
                    Box::new(()) as AnyValue,
                    once.take().unwrap_or_default(),
                ))
            }),
            reply: Box::new(|r| {
                if let Err(e) = r {
                    warn!(error = %e, "could not persist the repair queue");
                }
            }),
        };
        let _ = self.tx.send(job);
    }
}

/// Jobs planned into one commit.
struct Batch {
    changes: Vec<Change>,
    keys: HashSet<Key>,
    done: Vec<(Job, AnyValue, Option<Effect>)>,
}

async fn run(tracker: Weak<Tracker>, mut rx: mpsc::UnboundedReceiver<Job>) {
    let mut waiting: VecDeque<Job> = VecDeque::new();
    loop {
        if waiting.is_empty() {
            match rx.recv().await {
                Some(job) => waiting.push_back(job),
                None => return,
            }
        }
        while waiting.len() < MAX_BATCH {
            match rx.try_recv() {
                Ok(job) => waiting.push_back(job),
                Err(_) => break,
            }
        }
        let Some(t) = tracker.upgrade() else { return };
        let jobs: Vec<Job> = waiting.drain(..).collect();
        let deferred = commit(&t, jobs).await;
        waiting.extend(deferred);
        t.forget_summary();
    }
}

/// Plan `jobs` on the state as it is: a job whose keys meet an earlier job's is
/// deferred; a plan that fails is answered at once.
fn plan(st: &State, cfg: &TrackerConfig, now: Instant, jobs: Vec<Job>) -> (Batch, Vec<Job>) {
    let mut b = Batch {
        changes: Vec::new(),
        keys: HashSet::new(),
        done: Vec::new(),
    };
    let mut deferred = Vec::new();
    for mut job in jobs {
        match (job.plan)(st, cfg, now) {
            Err(e) => (job.reply)(Err(e)),
            Ok(p) => {
                let mut keys = HashSet::new();
                for c in &p.changes {
                    st.catalogue.keys(c, &mut keys);
                }
                if !deferred.is_empty() || !keys.is_disjoint(&b.keys) {
                    // Planned without an earlier job's change: plan it again after.
                    deferred.push(job);
                    continue;
                }
                b.keys.extend(keys);
                b.changes.extend(p.changes);
                b.done.push((job, p.value, p.effect));
            }
        }
    }
    (b, deferred)
}

/// Apply a durable batch to memory: catalogue changes, then the effects, then the
/// deletion of chunks no file references any more (unless an upload still uses them:
/// here, or, per `elsewhere`, through another replica).
fn apply(st: &mut State, b: &mut Batch, elsewhere: Option<&HashSet<Hash>>) -> Vec<Deletion> {
    let mut garbage = Vec::new();
    for c in std::mem::take(&mut b.changes) {
        garbage.extend(st.apply_change(c));
    }
    for (_, _, effect) in b.done.iter_mut() {
        if let Some(f) = effect.take() {
            f(st);
        }
    }
    st.collect_garbage(garbage, elsewhere)
}

/// Plan, persist and apply one batch; returns the jobs deferred to the next one.
async fn commit(t: &Arc<Tracker>, jobs: Vec<Job>) -> Vec<Job> {
    let now = Instant::now();
    if t.store.postgres().is_some() {
        let t2 = t.clone();
        return match tokio::task::spawn_blocking(move || crate::shared::commit(&t2, jobs, now))
            .await
        {
            Ok(deferred) => deferred,
            Err(e) => {
                warn!(error = %e, "catalogue commit task failed");
                Vec::new()
            }
        };
    }
    let (mut b, deferred) = plan(&t.state(), &t.cfg, now, jobs);
    if b.done.is_empty() {
        return deferred;
    }
    let t2 = t.clone();
    let changes = std::mem::take(&mut b.changes);
    let persisted = tokio::task::spawn_blocking(move || {
        let r = t2.store.apply(&changes);
        (r, changes)
    })
    .await;
    let result = match persisted {
        Ok((Ok(()), changes)) => {
            b.changes = changes;
            Ok(())
        }
        Ok((Err(e), _)) => Err(Error::Unavailable(e.to_string())),
        Err(e) => Err(Error::Unavailable(format!("catalogue write failed: {e}"))),
    };
    finish(t, b, result);
    deferred
}

/// Apply a batch the store took (or fail every job of one it refused), then answer.
fn finish(t: &Arc<Tracker>, mut b: Batch, result: Result<()>) {
    match result {
        Ok(()) => {
            let elsewhere = held_elsewhere(t, &b.changes);
            let deletions = apply(&mut t.state(), &mut b, elsewhere.as_ref());
            t.send_deletions(deletions);
            for (job, value, _) in b.done {
                (job.reply)(Ok(value));
            }
        }
        Err(e) => {
            warn!(error = %e, jobs = b.done.len(), "catalogue write failed; nothing changed");
            for (job, _, _) in b.done {
                (job.reply)(Err(e.clone()));
            }
        }
    }
}

/// The chunks other replicas' uploads hold, when `changes` may leave garbage and the
/// store is shared (read before the state lock is taken; `None` if it cannot be read).
/// On PostgreSQL this runs on the commit's blocking thread.
fn held_elsewhere(t: &Tracker, changes: &[Change]) -> Option<HashSet<Hash>> {
    let Some(pg) = t.store.postgres() else {
        return Some(HashSet::new());
    };
    let drops_chunks = changes.iter().any(|c| match c {
        Change::DeleteFile(_) => true,
        // Only a record replaced can drop chunks (a new file adds references).
        Change::PutFile(f) => t.state().catalogue.file(&f.id).is_some(),
        _ => false,
    });
    if !drops_chunks {
        return Some(HashSet::new());
    }
    pg.held_chunks()
        .inspect_err(
            |e| warn!(error = %e, "uploads in flight unreadable; garbage left to collection"),
        )
        .ok()
}

/// For the PostgreSQL commit, which plans inside its transaction.
pub(crate) fn plan_batch(
    st: &State,
    cfg: &TrackerConfig,
    now: Instant,
    jobs: Vec<Job>,
) -> (Vec<Change>, PlannedBatch, Vec<Job>) {
    let (mut b, deferred) = plan(st, cfg, now, jobs);
    let changes = std::mem::take(&mut b.changes);
    (changes, PlannedBatch(b), deferred)
}

/// A batch planned for PostgreSQL, waiting for its commit.
pub(crate) struct PlannedBatch(Batch);

impl PlannedBatch {
    pub fn is_empty(&self) -> bool {
        self.0.done.is_empty()
    }

    pub fn finish(self, t: &Arc<Tracker>, changes: Vec<Change>, result: Result<()>) {
        let mut b = self.0;
        b.changes = changes;
        finish(t, b, result)
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::store::{CatalogueStore, MemoryStore, Store};
    use shoal_common::hash::Hash;
    use shoal_proto::v1 as pb;
    use std::time::Duration;

    fn tracker(store: &MemoryStore) -> Arc<Tracker> {
        tracker_with(
            TrackerConfig::for_data_dir(std::path::PathBuf::new()),
            store,
        )
    }

    /// A tracker on `store` with three peers (p0..p2, one per zone) registered.
    pub(crate) fn tracker_with(cfg: TrackerConfig, store: &MemoryStore) -> Arc<Tracker> {
        let keys = shoal_common::ticket::TicketKeys::new(None, None, None);
        let t = Tracker::with_store(cfg, Store::Local(Box::new(store.clone())), None, keys)
            .expect("a memory store opens");
        let mut st = t.state();
        for i in 0..3 {
            let peer = pb::PeerRef {
                id: format!("p{i}"),
                addr: format!("127.0.0.1:{}", 1000 + i),
                zone: format!("z{i}"),
            };
            st.register_peer(peer, 1 << 30, 0, vec![], Instant::now());
        }
        drop(st);
        t
    }

    /// Put `name` with one chunk of content `tag`, as a client would (copies claimed on
    /// every placed target).
    async fn put(t: &Arc<Tracker>, name: &str, tag: &[u8], overwrite: bool) -> Result<()> {
        let up = t.begin_upload(
            [0; 32],
            pb::BeginUploadRequest {
                name: name.into(),
                size: tag.len() as u64,
                replicas: 2,
                overwrite,
                ..Default::default()
            },
        )?;
        let chunk = Hash::of(tag);
        let placed = t
            .place_chunks(pb::PlaceChunksRequest {
                upload_id: up.upload_id.clone(),
                file_id: Hash::of(&[tag, b"-file"].concat()).to_hex(),
                chunks: vec![pb::ChunkDigest {
                    index: 0,
                    hash: chunk.to_hex(),
                    size: tag.len() as u64,
                }],
            })
            .await?;
        if placed.deduplicated {
            return Ok(());
        }
        // Receipts as the placed peers would sign them (an open cluster's keys).
        let keys = shoal_common::ticket::TicketKeys::new(None, None, None);
        let receipts = placed.placements[0]
            .targets
            .iter()
            .map(|p| {
                keys.receipt(
                    &p.id,
                    &up.upload_id,
                    &chunk.to_hex(),
                    tag.len() as u64,
                    None,
                )
            })
            .collect();
        t.commit_upload(pb::CommitUploadRequest {
            upload_id: up.upload_id,
            stored: vec![pb::ChunkStored {
                index: 0,
                peer_ids: vec![],
                receipts,
            }],
            ..Default::default()
        })
        .await?;
        Ok(())
    }

    /// Content deleted and put again at once: the deletion is on its way to the peers
    /// when the new upload stores the chunk there. Their receipts count (a peer spares
    /// a chunk acknowledged since the deletion was decided), so the put commits, and
    /// the committed copies are no longer masked from inventory reports.
    #[tokio::test(start_paused = true)]
    async fn a_receipt_for_a_chunk_whose_deletion_is_in_flight_counts() {
        let t = tracker(&MemoryStore::default());
        let chunk = Hash::of(b"racy bytes");
        let deletions: Vec<_> = (0..3)
            .map(|i| crate::state::Deletion {
                peer_id: format!("p{i}"),
                addr: String::new(),
                chunks: vec![chunk],
                after: (0, 0),
            })
            .collect();
        t.state().note_deletions(&deletions, Instant::now());
        put(&t, "racy", b"racy bytes", false).await.unwrap();
        let st = t.state();
        assert_eq!(st.locations.count(&chunk), 2);
        let now = Instant::now();
        for p in st.locations.holders(&chunk) {
            assert!(!st.deletion_pending(p, &chunk, now), "{p} still masked");
        }
    }

    fn names(t: &Tracker) -> Vec<String> {
        let st = t.state();
        st.catalogue
            .names_after(None)
            .map(|(n, _)| n.clone())
            .collect()
    }

    /// A write the store refuses changes nothing in memory: the file stays listed with
    /// its copies, garbage collection past its grace deletes nothing, and the same delete
    /// succeeds once the store is back.
    #[tokio::test(start_paused = true)]
    async fn a_failed_write_changes_nothing_in_memory() {
        let store = MemoryStore::default();
        let t = tracker(&store);
        put(&t, "kept", b"kept bytes", false).await.unwrap();
        let chunk = Hash::of(b"kept bytes");
        let copies = |t: &Tracker| t.state().locations.count(&chunk);
        assert_eq!(copies(&t), 2);
        store.fail_writes(true);
        let err = t.delete("kept".into()).await.unwrap_err();
        assert!(matches!(err, Error::Unavailable(_)), "{err:?}");
        assert_eq!(names(&t), vec!["kept"]);
        assert_eq!(
            copies(&t),
            2,
            "no copy was dropped for a delete that did not happen"
        );
        assert!(t.state().catalogue.is_referenced(&chunk));
        // Manager rounds past safe mode and the GC grace (peers heard from) collect an
        // orphan copy (so GC runs) and nothing of the file still named.
        let orphan = Hash::of(b"orphan");
        t.state()
            .report_chunks("p0", vec![orphan], vec![], false, None, None)
            .unwrap();
        let ms = Arc::new(std::sync::Mutex::new(
            crate::manager::ManagerState::default(),
        ));
        for _ in 0..2 {
            tokio::time::advance(t.cfg.liveness.dead_after * 10 + t.cfg.repair.gc_grace).await;
            for i in 0..3 {
                t.state().heartbeat(
                    &format!("p{i}"),
                    crate::state::Beat {
                        capacity: 1 << 30,
                        used: 0,
                        active_transfers: 0,
                        chunk_count: 1,
                        digest: "",
                        mark: (0, 0),
                    },
                    &t.cfg,
                    Instant::now(),
                );
            }
            crate::manager::round(&t, &ms);
        }
        assert_eq!(copies(&t), 2, "GC kept the copies of the file still named");
        let collected = t.metrics.gc_deleted_chunks.get();
        assert_eq!(collected, 1, "the orphan, and only it");
        assert!(!t.state().locations.has(&orphan));
        // An upload that cannot commit stays open, and is committed on a retry.
        let err = put(&t, "new", b"new bytes", false).await.unwrap_err();
        assert!(matches!(err, Error::Unavailable(_)), "{err:?}");
        assert_eq!(names(&t), vec!["kept"]);
        assert_eq!(
            t.state().uploads.len(),
            1,
            "the failed commit left its upload"
        );
        store.fail_writes(false);
        t.delete("kept".into()).await.unwrap();
        assert!(names(&t).is_empty());
        assert_eq!(copies(&t), 0);
        assert!(store.load().unwrap().names.is_empty());
    }

    /// Writes that wait together share one store transaction.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn concurrent_commits_share_transactions() {
        let store = MemoryStore::default();
        let t = tracker(&store);
        store.set_delay(Duration::from_millis(20));
        let puts: Vec<_> = (0..40)
            .map(|i| {
                let t = t.clone();
                tokio::spawn(async move {
                    put(&t, &format!("f{i}"), format!("bytes {i}").as_bytes(), false).await
                })
            })
            .collect();
        for p in puts {
            p.await.unwrap().unwrap();
        }
        assert_eq!(names(&t).len(), 40);
        assert_eq!(store.load().unwrap().names.len(), 40);
        assert!(
            store.applies() < 40,
            "40 commits took {} transactions",
            store.applies()
        );
    }

    /// Two writes that meet (the same name) never share a commit: the second is planned
    /// again on the first's result, so exactly one of two racing uploads wins the name.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn racing_writes_to_one_name_are_decided_once() {
        let store = MemoryStore::default();
        let t = tracker(&store);
        store.set_delay(Duration::from_millis(20));
        // Keep the writer busy so both racers land in the same waiting batch.
        let busy = {
            let t = t.clone();
            tokio::spawn(async move { put(&t, "busy", b"busy", false).await })
        };
        let racers: Vec<_> = [b"one".as_slice(), b"two".as_slice()]
            .into_iter()
            .map(|tag| {
                let t = t.clone();
                tokio::spawn(async move { put(&t, "same", tag, false).await })
            })
            .collect();
        busy.await.unwrap().unwrap();
        let mut results = Vec::new();
        for r in racers {
            results.push(r.await.unwrap());
        }
        let won = results.iter().filter(|r| r.is_ok()).count();
        assert_eq!(won, 1, "{results:?}");
        assert!(results
            .iter()
            .any(|r| matches!(r, Err(Error::AlreadyExists(_)))));
        let stored = store.load().unwrap();
        assert_eq!(stored.names.len(), 2);
        assert_eq!(
            stored.files.len(),
            2,
            "the loser's content was not recorded"
        );
    }
}
