//! The tracker's operations: each combines the in-memory state, the store and the
//! placement and fragmentation policies. Catalogue changes go through the writer
//! (`writer`): planned on the state, persisted, then applied — never under a lock held
//! across the store's I/O.

use std::collections::HashSet;
use std::sync::{Arc, Mutex, MutexGuard};

use shoal_common::hash::Hash;
use shoal_proto::v1 as pb;
use tokio::time::Instant;
use tracing::{info, info_span, warn};

use crate::config::TrackerConfig;
use crate::error::{bad_hash, Error, Result};
use crate::fragment::{chunk_count, chunk_len, fragment};
use crate::placement::{Candidate, Decision, Planner};
use crate::state::{now_ms, Deletion, Liveness, State, WriteMark};
use crate::store::{Change, FileRecord, Store};
use crate::uploads::Upload;
use crate::writer::{Planned, Writer};

mod commit;
mod inflight;
mod put;
mod window;

/// Peer ids a client may name in one replacement request, and hints kept per upload.
pub const MAX_HINTED_PEERS: usize = 64;

pub struct Tracker {
    pub cfg: TrackerConfig,
    pub store: Store,
    /// The one path by which the catalogue changes.
    writer: Writer,
    /// Whether this replica runs the background manager (always, with redb; with
    /// PostgreSQL, while it holds the leader lock).
    pub leader: std::sync::atomic::AtomicBool,
    state: Mutex<State>,
    pub metrics: crate::metrics::Metrics,
    /// Chunks waiting for repair (persisted); priority is computed when scheduling.
    pub repairs: Mutex<std::collections::BTreeSet<Hash>>,
    pub channels: shoal_common::grpc::Channels,
    /// Signs placement tickets (a key only cluster members hold).
    tickets: shoal_common::ticket::TicketKeys,
    /// The last cluster summary and when it was computed.
    pub summary: Mutex<Option<(Instant, pb::ClusterInfoResponse)>>,
    /// When this replica last trimmed the shared catalogue log (as leader).
    pub last_trim: Mutex<Option<Instant>>,
    /// The last placement candidates and when they were computed.
    candidates_cache: Mutex<Option<(Instant, Arc<Vec<Candidate>>)>>,
    /// Recent `StatFile` answers.
    stat_cache: crate::statcache::StatCache,
}

/// A state-lock hold at least this long is logged with its caller: every RPC that needs
/// the state waited that long.
pub const SLOW_HOLD: std::time::Duration = std::time::Duration::from_millis(50);

/// The locked state (see [`Tracker::state`]); on drop, the hold is recorded.
pub struct StateGuard<'a> {
    guard: MutexGuard<'a, State>,
    locked: std::time::Instant,
    at: &'static std::panic::Location<'static>,
    metrics: &'a crate::metrics::Metrics,
}

impl std::ops::Deref for StateGuard<'_> {
    type Target = State;
    fn deref(&self) -> &State {
        &self.guard
    }
}

impl std::ops::DerefMut for StateGuard<'_> {
    fn deref_mut(&mut self) -> &mut State {
        &mut self.guard
    }
}

impl Drop for StateGuard<'_> {
    fn drop(&mut self) {
        let held = self.locked.elapsed();
        self.metrics.lock_hold.record(held);
        if held >= SLOW_HOLD {
            warn!(at = %self.at, held_ms = held.as_millis() as u64, "state lock held long; every RPC needing it waited");
        }
    }
}

/// How long placement candidates are reused (see [`Tracker::cached_candidates`]).
const CANDIDATES_TTL: std::time::Duration = std::time::Duration::from_millis(250);

pub fn validate_zone(zone: &str) -> Result<()> {
    if zone.is_empty()
        || zone.len() > 64
        || !zone
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c))
    {
        return Err(Error::InvalidArgument(format!(
            "zone {:?} is invalid: 1-64 characters of letters, digits, '-', '_' or '.'",
            zone.chars().take(80).collect::<String>()
        )));
    }
    Ok(())
}

pub fn validate_addr(addr: &str) -> Result<()> {
    let ok = addr.rsplit_once(':').is_some_and(|(host, port)| {
        !host.is_empty()
            && port.parse::<u16>().is_ok_and(|p| p != 0)
            && !host.contains(['/', ' ', '@'])
    });
    if !ok || addr.len() > 255 {
        return Err(Error::InvalidArgument(format!(
            "peer address {:?} is invalid: expected host:port",
            addr.chars().take(80).collect::<String>()
        )));
    }
    Ok(())
}

impl Tracker {
    /// Open the configured store and start the writer (needs a tokio runtime).
    pub fn open(
        cfg: TrackerConfig,
        cluster_token: Option<String>,
        tickets: shoal_common::ticket::TicketKeys,
    ) -> Result<Arc<Self>> {
        let store = Store::open(&cfg)?;
        Self::with_store(cfg, store, cluster_token, tickets)
    }

    /// A tracker over a given store (tests use [`crate::store::MemoryStore`]).
    pub fn with_store(
        cfg: TrackerConfig,
        store: Store,
        cluster_token: Option<String>,
        tickets: shoal_common::ticket::TicketKeys,
    ) -> Result<Arc<Self>> {
        let loaded = store.load()?;
        let repairs = loaded.repairs.clone();
        let mut state = State::from_loaded(loaded);
        if store.postgres().is_some() {
            state.journal = Some(Default::default());
        }
        info!(
            files = state.catalogue.file_count(),
            names = state.catalogue.name_count(),
            repairs = repairs.len(),
            "catalogue loaded"
        );
        Ok(Arc::new_cyclic(|me| Self {
            writer: Writer::start(me.clone()),
            cfg,
            leader: std::sync::atomic::AtomicBool::new(store.postgres().is_none()),
            store,
            state: Mutex::new(state),
            metrics: Default::default(),
            repairs: Mutex::new(repairs.into_iter().map(|r| r.chunk).collect()),
            channels: shoal_common::grpc::Channels::with_token(cluster_token),
            tickets,
            summary: Mutex::new(None),
            last_trim: Mutex::new(None),
            candidates_cache: Mutex::new(None),
            stat_cache: Default::default(),
        }))
    }

    /// The state, locked. Waits and holds are measured; a hold longer than
    /// [`SLOW_HOLD`] is logged with the line that took the lock.
    #[track_caller]
    pub fn state(&self) -> StateGuard<'_> {
        let asked = std::time::Instant::now();
        let guard = self.state.lock().unwrap_or_else(|p| p.into_inner());
        let locked = std::time::Instant::now();
        self.metrics.lock_wait.record(locked - asked);
        StateGuard {
            guard,
            locked,
            at: std::panic::Location::caller(),
            metrics: &self.metrics,
        }
    }

    /// Change the catalogue: `plan` decides on the state as it is (it may run more than
    /// once, and only reads), the writer persists its changes, then applies them.
    pub async fn write<R: Send + 'static>(
        &self,
        plan: impl FnMut(&State, &TrackerConfig, Instant) -> Result<Planned<R>> + Send + 'static,
    ) -> Result<R> {
        self.writer.write(plan).await
    }

    /// Drop the cached cluster summary (the catalogue changed).
    pub fn forget_summary(&self) {
        *self.summary.lock().unwrap_or_else(|p| p.into_inner()) = None;
    }

    /// What other replicas committed since this one last looked (PostgreSQL).
    pub fn fetch_log(&self) -> Result<crate::pg::Tail> {
        let Some(pg) = self.store.postgres() else {
            return Ok(crate::pg::Tail::Entries(Vec::new()));
        };
        let seq = self.state().applied_seq;
        Ok(pg.log_since(seq)?)
    }

    /// Apply fetched log entries (those already applied are skipped). A replica that
    /// fell behind the trimmed log reloads the whole catalogue instead.
    pub fn apply_log(&self, tail: crate::pg::Tail) -> Result<()> {
        match tail {
            crate::pg::Tail::Entries(entries) if entries.is_empty() => return Ok(()),
            crate::pg::Tail::Entries(entries) => self.state().replay(entries),
            crate::pg::Tail::Trimmed { through } => {
                let Some(pg) = self.store.postgres() else {
                    return Ok(());
                };
                let loaded = pg.load()?;
                let mut st = self.state();
                warn!(
                    position = st.applied_seq,
                    trimmed_through = through,
                    "this replica fell behind the trimmed catalogue log; reloading the catalogue"
                );
                st.reload_catalogue(loaded);
            }
        }
        self.forget_summary();
        Ok(())
    }

    pub fn is_leader(&self) -> bool {
        self.leader.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// Persist repair-queue changes without waiting (callers may hold the state lock):
    /// queued to the writer, or over PostgreSQL to the store's connection, in order.
    /// The queue in memory changes first: it is a hint each manager round re-derives.
    pub fn persist(&self, changes: &[Change]) -> Result<()> {
        match self.store.postgres() {
            Some(pg) => Ok(pg.submit(changes)?),
            None => {
                self.writer.submit(changes.to_vec());
                Ok(())
            }
        }
    }

    /// Placement candidates, computed at most every [`CANDIDATES_TTL`]: each put would
    /// otherwise walk every peer under the lock (10,000 peers: a millisecond a put).
    /// Liveness, free space and load a quarter of a second old place as well.
    fn cached_candidates(&self, st: &State, now: Instant) -> Arc<Vec<Candidate>> {
        let mut cache = self
            .candidates_cache
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        if let Some((at, c)) = cache.as_ref() {
            if now.saturating_duration_since(*at) < CANDIDATES_TTL {
                return c.clone();
            }
        }
        let c = Arc::new(Self::candidates(st, &self.cfg, now));
        *cache = Some((now, c.clone()));
        c
    }

    /// Recompute placement candidates at the next placement (a peer joined, left or
    /// changed its drain state).
    pub fn forget_candidates(&self) {
        self.stat_cache.clear();
        *self
            .candidates_cache
            .lock()
            .unwrap_or_else(|p| p.into_inner()) = None;
    }

    /// A file's detail (`StatFile`): reused while nothing it depends on changed (see
    /// [`crate::statcache`]), so hot files cost no lock time per request.
    pub fn stat(&self, name_or_id: &str) -> Result<pb::FileDetail> {
        Ok(self.stat_answer(name_or_id)?.detail.clone())
    }

    /// [`Tracker::stat`] as protobuf bytes, sent as they are by [`crate::statfast`].
    pub fn stat_encoded(&self, name_or_id: &str) -> Result<bytes::Bytes> {
        Ok(self.stat_answer(name_or_id)?.encoded.clone())
    }

    fn stat_answer(&self, name_or_id: &str) -> Result<Arc<crate::statcache::Answer>> {
        let now = Instant::now();
        let versions = |st: &State| (st.catalogue.version(), st.locations.version());
        let current = versions(&self.state());
        if let Some(a) = self.stat_cache.get(name_or_id, current, now) {
            return Ok(a);
        }
        let (detail, at) = {
            let st = self.state();
            (st.detail(name_or_id, &self.cfg, now)?, versions(&st))
        };
        let answer = Arc::new(crate::statcache::Answer::new(detail));
        self.stat_cache.put(name_or_id, at, now, answer.clone());
        Ok(answer)
    }

    /// Candidates for new copies, as the placement policy sees them.
    pub fn candidates(st: &State, cfg: &TrackerConfig, now: Instant) -> Vec<Candidate> {
        let mut v: Vec<Candidate> = st
            .peers
            .values()
            .map(|p| Candidate {
                id: p.id.clone(),
                zone: p.zone.clone(),
                free_bytes: p.capacity.saturating_sub(p.used),
                load: p.active_transfers as u64,
                excluded: match (st.liveness(p, cfg, now), p.draining) {
                    (Liveness::Dead, _) => Some("dead"),
                    (Liveness::Suspect, _) => Some("suspect"),
                    (_, true) => Some("draining"),
                    _ => None,
                },
            })
            .collect();
        v.sort_by(|a, b| a.id.cmp(&b.id));
        v
    }
}
