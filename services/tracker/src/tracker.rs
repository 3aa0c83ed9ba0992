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
use crate::state::{now_ms, Deletion, Liveness, State};
use crate::store::{Change, FileRecord, Store};
use crate::uploads::Upload;
use crate::writer::{Planned, Writer};

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
        let now = Instant::now();
        let versions = |st: &State| (st.catalogue.version(), st.locations.version());
        let current = versions(&self.state());
        if let Some(d) = self.stat_cache.get(name_or_id, current, now) {
            return Ok((*d).clone());
        }
        let (detail, at) = {
            let st = self.state();
            (st.detail(name_or_id, &self.cfg, now)?, versions(&st))
        };
        let detail = Arc::new(detail);
        self.stat_cache.put(name_or_id, at, now, detail.clone());
        Ok(Arc::unwrap_or_clone(detail))
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

    // ---- uploads --------------------------------------------------------------

    pub fn begin_upload(&self, req: pb::BeginUploadRequest) -> Result<pb::BeginUploadResponse> {
        shoal_common::names::validate(&req.name)
            .map_err(|e| Error::InvalidArgument(e.to_string()))?;
        let cfg = &self.cfg;
        if req.size > cfg.chunk.max_file_bytes {
            return Err(Error::InvalidArgument(format!(
                "file of {} bytes exceeds the limit of {} bytes",
                req.size, cfg.chunk.max_file_bytes
            )));
        }
        let replicas = if req.replicas == 0 {
            cfg.replication.factor
        } else {
            req.replicas
        };
        if replicas > cfg.replication.max_factor {
            return Err(Error::InvalidArgument(format!(
                "replica count {replicas} exceeds the limit of {}",
                cfg.replication.max_factor
            )));
        }
        let frag = fragment(req.size, cfg.chunk.min_bytes, cfg.chunk.max_bytes);
        // The fragmentation decision, with its reasons, as a span of its own.
        info_span!(
            "fragment",
            file.name = %req.name,
            file.size = req.size,
            fragment.chunk_size = frag.chunk_size,
            fragment.chunks = frag.chunks,
            fragment.policy = %frag.reason,
        )
        .in_scope(|| {
            info!(
                chunk_size = frag.chunk_size,
                chunks = frag.chunks,
                "fragmentation decided"
            )
        });
        let upload_id = hex::encode(rand::random::<[u8; 16]>());
        // A name clash is only known at PlaceChunks: the same content under the same name is fine.
        let mut st = self.state();
        st.uploads.begin(
            upload_id.clone(),
            Upload {
                name: req.name,
                size: req.size,
                chunk_size: frag.chunk_size,
                replicas,
                overwrite: req.overwrite,
                expires_at: Instant::now() + cfg.upload.expiry,
                file_id: None,
                chunks: Vec::new(),
                avoid: Default::default(),
            },
        );
        Ok(pb::BeginUploadResponse {
            upload_id,
            chunk_size: frag.chunk_size,
            replicas,
            fragment_reason: frag.reason,
        })
    }

    pub async fn place_chunks(
        self: &Arc<Self>,
        req: pb::PlaceChunksRequest,
    ) -> Result<pb::PlaceChunksResponse> {
        let file_id = bad_hash(&req.file_id)?;
        let mut digests = req.chunks;
        digests.sort_by_key(|c| c.index);
        let hashes: Vec<Hash> = digests
            .iter()
            .map(|c| bad_hash(&c.hash))
            .collect::<Result<_>>()?;
        let span = info_span!("placement", file.id = %file_id, chunks = digests.len());
        let upload_id = req.upload_id;
        let known = {
            let st = self.state();
            check_placement(&st, &upload_id, file_id, &digests)?;
            st.catalogue.file(&file_id).is_some()
        };
        if known {
            return self
                .place_known_content(upload_id, file_id, digests, hashes, span)
                .await;
        }
        // New content: placement changes no catalogue, so it needs no writer. Facts are
        // read under the lock, decided without it, and recorded under it again.
        let (up, candidates, holders) = {
            let st = self.state();
            let now = Instant::now();
            let up = check_placement(&st, &upload_id, file_id, &digests)?;
            let holders: Vec<Vec<(String, String)>> = hashes
                .iter()
                .map(|h| {
                    st.live_holders(h, &self.cfg, now)
                        .iter()
                        .filter(|p| {
                            !p.draining && st.liveness(p, &self.cfg, now) == Liveness::Alive
                        })
                        .map(|p| (p.id.clone(), p.zone.clone()))
                        .collect()
                })
                .collect();
            (up, self.cached_candidates(&st, now), holders)
        };
        let candidates = (*candidates).clone();
        let decided = span.in_scope(|| place_file(&up, &hashes, candidates, &holders))?;
        let peers: std::collections::HashMap<&str, pb::PeerRef> = {
            let st = self.state();
            decided
                .iter()
                .flat_map(|d| d.decision.chosen.iter())
                .filter_map(|id| st.peers.get(id).map(|p| (id.as_str(), p.peer_ref())))
                .collect()
        };
        let mut placements = Vec::with_capacity(decided.len());
        for (i, (h, d)) in hashes.iter().zip(&decided).enumerate() {
            self.metrics.placement(d.outcome);
            let targets: Vec<pb::PeerRef> = d
                .decision
                .chosen
                .iter()
                .filter_map(|id| peers.get(id.as_str()).cloned())
                .collect();
            let len = chunk_len(up.size, up.chunk_size, i as u64);
            let ticket = (!targets.is_empty()).then(|| self.ticket(&upload_id, h, len, &targets));
            placements.push(pb::ChunkPlacement {
                index: i as u32,
                hash: h.to_hex(),
                targets,
                already_stored: d.outcome == "dedup",
                reason: d.reason.clone(),
                ticket,
            });
        }
        // Other replicas' garbage collection must see these chunks held before any
        // peer stores one (the client learns the targets only from this answer).
        self.hold_upload(&upload_id, &hashes).await?;
        let mut st = self.state();
        for (h, d) in hashes.iter().zip(decided) {
            st.placement_reasons.insert(*h, d.reason);
        }
        let up = st.uploads.get_mut(&upload_id).ok_or_else(|| {
            Error::NotFound(format!("upload {upload_id:?} expired during placement"))
        })?;
        up.file_id = Some(file_id);
        up.chunks = hashes;
        Ok(pb::PlaceChunksResponse {
            deduplicated: false,
            placements,
            file: None,
        })
    }

    /// The content is already stored: the name is all that is new (a catalogue write).
    async fn place_known_content(
        &self,
        upload_id: String,
        file_id: Hash,
        digests: Vec<pb::ChunkDigest>,
        hashes: Vec<Hash>,
        span: tracing::Span,
    ) -> Result<pb::PlaceChunksResponse> {
        let created_ms = now_ms();
        let named_id = upload_id.clone();
        self.write(move |st, cfg, now| {
            let _e = span.enter();
            let up = check_placement(st, &upload_id, file_id, &digests)?;
            let f = st.catalogue.file(&file_id).ok_or_else(|| {
                Error::Unavailable("the content was deleted during the upload; retry".into())
            })?;
            // A name binds only to a record of this very layout (never to a junk record
            // that merely claims the id).
            crate::proof::same_layout(f, up.size, up.chunk_size, &hashes)?;
            let mut changes = Vec::new();
            st.catalogue
                .plan_bind(&up.name, file_id, up.overwrite, created_ms, &mut changes)?;
            let summary = st.file_summary(&up.name, f, created_ms, cfg, now);
            info!(dedup = true, "content already stored; name added");
            let id = upload_id.clone();
            Ok(Planned::new(
                pb::PlaceChunksResponse {
                    deduplicated: true,
                    placements: vec![],
                    file: Some(summary),
                },
                changes,
            )
            .then(move |st| {
                st.uploads.end(&id);
            }))
        })
        .await
        .inspect(|_| self.release_upload(&named_id))
    }

    /// New pipeline targets for one chunk of an upload whose pipeline lost a hop: the
    /// same scoring as [`Tracker::place_chunks`], minus the peers that failed in this
    /// upload (remembered for the rest of it) and the ones that already hold the chunk.
    pub fn replace_targets(
        &self,
        req: pb::ReplaceTargetsRequest,
    ) -> Result<pb::ReplaceTargetsResponse> {
        let cfg = &self.cfg;
        let now = Instant::now();
        if req.failed_peer_ids.len() > MAX_HINTED_PEERS
            || req.holder_peer_ids.len() > MAX_HINTED_PEERS
        {
            return Err(Error::InvalidArgument(format!(
                "at most {MAX_HINTED_PEERS} failed and {MAX_HINTED_PEERS} holder peer ids"
            )));
        }
        let mut guard = self.state();
        let st = &mut *guard;
        let up = st.uploads.get_mut(&req.upload_id).ok_or_else(|| {
            Error::NotFound(format!("unknown or expired upload {:?}", req.upload_id))
        })?;
        let h = *up.chunks.get(req.index as usize).ok_or_else(|| {
            Error::InvalidArgument(format!(
                "chunk index {} out of range (upload has {} placed chunks)",
                req.index,
                up.chunks.len()
            ))
        })?;
        if req.want == 0 || req.want > up.replicas {
            return Err(Error::InvalidArgument(format!(
                "want must be 1..={} copies, got {}",
                up.replicas, req.want
            )));
        }
        // Only ids of peers the tracker knows become hints: the set stays bounded.
        for id in &req.failed_peer_ids {
            if up.avoid.len() < MAX_HINTED_PEERS && st.peers.contains_key(id) {
                up.avoid.insert(id.clone());
            }
        }
        let len = chunk_len(up.size, up.chunk_size, req.index as u64);
        let avoid = up.avoid.clone();
        let st = &*st;
        let mut holders: Vec<(String, String)> = Vec::new();
        for id in req
            .holder_peer_ids
            .iter()
            .chain(st.live_holders(&h, cfg, now).into_iter().map(|p| &p.id))
        {
            if let Some(p) = st.peers.get(id) {
                if !holders.iter().any(|(i, _)| i == id) {
                    holders.push((p.id.clone(), p.zone.clone()));
                }
            }
        }
        let mut cands = Self::candidates(st, cfg, now);
        crate::placement::avoid(&mut cands, &avoid);
        let d = Planner::new(cands).place(&h, len, req.want as usize, &holders);
        let reason = d.reason();
        info_span!(
            "replace",
            chunk.index = req.index,
            chunk.hash = %h,
            placement.avoid = ?avoid,
            placement.chosen = ?d.chosen,
            placement.zones_covered = d.zones_covered,
            placement.reason = %reason,
        )
        .in_scope(|| info!("replacement targets chosen"));
        // Pipeline recoveries show as placements with outcome "replace" (or "replace_none").
        self.metrics.placement(if d.chosen.is_empty() {
            "replace_none"
        } else {
            "replace"
        });
        // Not UNAVAILABLE: clients would take that for this replica being down and ask
        // another, which does not know the upload.
        if d.chosen.is_empty() {
            return Err(Error::FailedPrecondition(format!(
                "no live peer outside the {} that failed in this upload can take chunk {} ({len} bytes)",
                avoid.len(),
                req.index
            )));
        }
        let targets: Vec<pb::PeerRef> = d
            .chosen
            .iter()
            .filter_map(|id| st.peers.get(id))
            .map(|p| p.peer_ref())
            .collect();
        let ticket = self.ticket(&req.upload_id, &h, len, &targets);
        Ok(pb::ReplaceTargetsResponse {
            targets,
            reason,
            ticket: Some(ticket),
        })
    }

    /// The placement ticket for one pipeline of an upload, valid for the upload's
    /// expiry (`SHOAL_UPLOAD__EXPIRY`).
    fn ticket(
        &self,
        upload_id: &str,
        h: &Hash,
        len: u64,
        targets: &[pb::PeerRef],
    ) -> pb::PlacementTicket {
        self.tickets.issue(
            upload_id,
            &h.to_hex(),
            len,
            targets.iter().map(|p| p.id.clone()).collect(),
            self.cfg.upload.expiry,
        )
    }

    pub async fn commit_upload(
        self: &Arc<Self>,
        req: pb::CommitUploadRequest,
    ) -> Result<pb::CommitUploadResponse> {
        let created_ms = now_ms();
        let keys = self.tickets.clone();
        let committed_id = req.upload_id.clone();
        let summary = self
            .write(move |st, cfg, now| {
                let up = st.uploads.get(&req.upload_id).ok_or_else(|| {
                    Error::NotFound(format!("unknown or expired upload {:?}", req.upload_id))
                })?;
                let file_id = up.file_id.ok_or_else(|| {
                    Error::FailedPrecondition(
                        "upload has no placement yet: call PlaceChunks first".into(),
                    )
                })?;
                if let Some(rec) = st.catalogue.file(&file_id) {
                    crate::proof::same_layout(rec, up.size, up.chunk_size, &up.chunks)?;
                }
                // The copies the client stored, counted with the ones already known: only
                // copies a peer signed for (`peer_ids` are claims, never counted).
                let mut seen = HashSet::new();
                let mut stored: Vec<(String, Hash)> = Vec::new();
                for s in &req.stored {
                    let h = *up.chunks.get(s.index as usize).ok_or_else(|| {
                        Error::InvalidArgument(format!("chunk index {} out of range", s.index))
                    })?;
                    if !seen.insert(s.index) {
                        return Err(Error::InvalidArgument(format!(
                            "chunk index {} reported twice",
                            s.index
                        )));
                    }
                    let len = chunk_len(up.size, up.chunk_size, s.index as u64);
                    for peer in
                        crate::proof::receipted_peers(&keys, &req.upload_id, &h, len, &s.receipts)?
                    {
                        if st.peers.contains_key(peer) {
                            stored.push((peer.to_string(), h));
                        }
                    }
                }
                let live = st.live_peer_count(cfg, now).max(1);
                let required = (up.replicas as usize).min(2).min(live);
                for (i, h) in up.chunks.iter().enumerate() {
                    let mut holders: HashSet<&str> = st
                        .live_holders(h, cfg, now)
                        .iter()
                        .map(|p| p.id.as_str())
                        .collect();
                    for (peer, _) in stored.iter().filter(|(_, c)| c == h) {
                        if st
                            .peers
                            .get(peer)
                            .is_some_and(|p| st.liveness(p, cfg, now) != Liveness::Dead)
                        {
                            holders.insert(peer);
                        }
                    }
                    if holders.len() < required {
                        return Err(Error::FailedPrecondition(format!(
                            "chunk {i} is durable on {} peers, {required} required",
                            holders.len()
                        )));
                    }
                }
                let file = FileRecord {
                    id: file_id,
                    size: up.size,
                    chunk_size: up.chunk_size,
                    chunks: up.chunks.clone(),
                    replicas: up.replicas,
                    created_ms,
                };
                // The name is decided here, on the catalogue as the writer has it: another
                // upload (through this replica or another) may have taken it since PlaceChunks.
                let mut changes = Vec::new();
                st.catalogue.plan_insert(file.clone(), &mut changes);
                st.catalogue.plan_bind(
                    &up.name,
                    file_id,
                    up.overwrite,
                    created_ms,
                    &mut changes,
                )?;
                let created = st
                    .catalogue
                    .name(&up.name)
                    .filter(|n| n.id == file_id)
                    .map_or(created_ms, |n| n.created_ms);
                let upload_id = req.upload_id.clone();
                let summary = st.file_summary(&up.name, &file, created, cfg, now);
                Ok(Planned::new(summary, changes).then(move |st| {
                    for (peer, h) in stored {
                        st.add_location(&peer, h);
                    }
                    st.uploads.end(&upload_id);
                }))
            })
            .await?;
        self.release_upload(&committed_id);
        // Counted with the copies the commit recorded.
        let summary = {
            let st = self.state();
            let now = Instant::now();
            st.catalogue
                .name(&summary.name)
                .and_then(|n| st.summary(&summary.name, n, &self.cfg, now))
                .unwrap_or(summary)
        };
        Ok(pb::CommitUploadResponse {
            file: Some(summary),
        })
    }

    pub async fn delete(self: &Arc<Self>, name_or_id: String) -> Result<pb::DeleteFileResponse> {
        let (names, removed) = self
            .write(move |st, _, _| {
                let (names, removed, changes) = st.catalogue.plan_delete(&name_or_id)?;
                Ok(Planned::new((names, removed), changes))
            })
            .await?;
        info!(names = ?names, content_removed = removed, "deleted");
        Ok(pb::DeleteFileResponse {
            names_removed: names,
            content_removed: removed,
        })
    }

    /// Tell peers to delete chunks nothing references. Best effort: a peer that misses
    /// it keeps the chunk until garbage collection finds it unreferenced.
    pub fn send_deletions(&self, deletions: Vec<Deletion>) {
        if !deletions.is_empty() {
            let now = Instant::now();
            let mut st = self.state();
            st.deleting
                .retain(|_, t| now.saturating_duration_since(*t) < crate::state::DELETION_MASK);
            for d in &deletions {
                for h in &d.chunks {
                    st.deleting.insert((d.peer_id.clone(), *h), now);
                }
            }
        }
        for d in deletions {
            let channel = self.channels.get(&d.addr);
            tokio::spawn(async move {
                let req = pb::DeleteChunksRequest {
                    hashes: d.chunks.iter().map(Hash::to_hex).collect(),
                };
                let result = async {
                    let mut c = pb::peer_client::PeerClient::new(channel?);
                    c.delete_chunks(req).await
                }
                .await;
                if let Err(e) = result {
                    warn!(peer = %d.peer_id, error = %e.message(), "chunk deletion failed; GC will retry");
                }
            });
        }
    }

    pub fn expire_uploads(&self) -> usize {
        self.state().uploads.expire(Instant::now())
    }

    /// The client gave up: the upload's chunks are no longer held (GC takes them after
    /// its grace unless a file references them).
    pub fn abort_upload(&self, upload_id: &str) {
        if self.state().uploads.end(upload_id).is_some() {
            self.release_upload(upload_id);
        }
    }

    /// With a shared store, record the chunks `upload_id` may commit, for every
    /// replica's garbage collection (until the upload would expire). Nothing to do on
    /// redb: this tracker's own uploads are all there is.
    async fn hold_upload(self: &Arc<Self>, upload_id: &str, chunks: &[Hash]) -> Result<()> {
        if self.store.postgres().is_none() {
            return Ok(());
        }
        let (t, id, chunks) = (self.clone(), upload_id.to_string(), chunks.to_vec());
        let ttl = self.cfg.upload.expiry;
        tokio::task::spawn_blocking(move || match t.store.postgres() {
            Some(pg) => pg.hold_upload(&id, &chunks, ttl),
            None => Ok(()),
        })
        .await
        .map_err(|e| Error::Unavailable(format!("recording the upload failed: {e}")))?
        .map_err(|e| Error::Unavailable(format!("recording the upload: {e}")))
    }

    fn release_upload(&self, upload_id: &str) {
        if let Some(pg) = self.store.postgres() {
            pg.release_upload(upload_id);
        }
    }

    /// Chunks uploads in flight anywhere may still commit: this replica's, and with a
    /// shared store every replica's (`None` if the store cannot be read — then nothing
    /// may be collected). Blocking: for the manager's thread.
    pub fn held_by_uploads(&self) -> Option<HashSet<Hash>> {
        let mut held = self.state().uploads.held_chunks();
        if let Some(pg) = self.store.postgres() {
            match pg.held_chunks() {
                Ok(shared) => held.extend(shared),
                Err(e) => {
                    warn!(error = %e, "uploads in flight unreadable; no garbage collected this round");
                    return None;
                }
            }
        }
        Some(held)
    }
}

/// What placement needs of an upload, checked against the chunk list a client sent.
struct UploadShape {
    name: String,
    overwrite: bool,
    replicas: u32,
    chunk_size: u64,
    size: u64,
}

/// The upload exists, the chunk list matches its size and chunk size, and the name is
/// free (or the same content, or overwrite was asked for).
fn check_placement(
    st: &State,
    upload_id: &str,
    file_id: Hash,
    digests: &[pb::ChunkDigest],
) -> Result<UploadShape> {
    let up = st
        .uploads
        .get(upload_id)
        .ok_or_else(|| Error::NotFound(format!("unknown or expired upload {upload_id:?}")))?;
    let expected = chunk_count(up.size, up.chunk_size);
    if digests.len() as u64 != expected {
        return Err(Error::InvalidArgument(format!(
            "upload of {} bytes in chunks of {} has {expected} chunks, got {}",
            up.size,
            up.chunk_size,
            digests.len()
        )));
    }
    for (i, d) in digests.iter().enumerate() {
        if d.index as usize != i {
            return Err(Error::InvalidArgument(format!(
                "chunk indices must be 0..{expected} once each; got index {} twice or out of range",
                d.index
            )));
        }
        let want = chunk_len(up.size, up.chunk_size, i as u64);
        if d.size != want {
            return Err(Error::InvalidArgument(format!(
                "chunk {i} must be {want} bytes, got {}",
                d.size
            )));
        }
    }
    if up.size == 0 && file_id != Hash::from(blake3::hash(b"")) {
        return Err(Error::InvalidArgument(
            "an empty file has the BLAKE3 id of empty content".into(),
        ));
    }
    if let Some(existing) = st.catalogue.name(&up.name) {
        if existing.id != file_id && !up.overwrite {
            return Err(Error::AlreadyExists(format!(
                "a different file named {:?} exists (id {}); use --overwrite to replace it",
                up.name, existing.id
            )));
        }
    }
    Ok(UploadShape {
        name: up.name.clone(),
        overwrite: up.overwrite,
        replicas: up.replicas,
        chunk_size: up.chunk_size,
        size: up.size,
    })
}

/// One chunk's placement: the decision, its reason, and its outcome for the metrics.
struct Placed {
    decision: Decision,
    reason: String,
    outcome: &'static str,
}

/// Place every chunk of a new file: for each, the peers that should take a copy, by the
/// one scoring function (`placement`), given who already holds it. A span per chunk
/// carries the decision and its reasons.
fn place_file(
    up: &UploadShape,
    hashes: &[Hash],
    candidates: Vec<Candidate>,
    holders: &[Vec<(String, String)>],
) -> Result<Vec<Placed>> {
    let mut planner = Planner::new(candidates);
    let mut out = Vec::with_capacity(hashes.len());
    for (i, (h, holders)) in hashes.iter().zip(holders).enumerate() {
        let len = chunk_len(up.size, up.chunk_size, i as u64);
        let want = (up.replicas as usize).saturating_sub(holders.len());
        let decision = if want == 0 {
            Decision::default()
        } else {
            planner.place(h, len, want, holders)
        };
        if want > 0 && decision.chosen.is_empty() {
            return Err(Error::Unavailable(format!(
                "no live peer can take chunk {i} ({len} bytes)"
            )));
        }
        let reason = if want == 0 {
            format!("already stored on {} peers", holders.len())
        } else {
            decision.reason()
        };
        info_span!(
            "place",
            chunk.index = i,
            chunk.hash = %h,
            placement.chosen = ?decision.chosen,
            placement.zones_covered = decision.zones_covered,
            placement.zones_available = decision.zones_available,
            placement.candidates = decision.candidates,
            placement.eligible = decision.eligible,
            placement.scores = ?decision.scores,
            placement.reason = %reason,
        )
        .in_scope(|| tracing::debug!("placed"));
        let outcome = if want == 0 {
            "dedup"
        } else if decision.chosen.len() < want {
            "short"
        } else {
            "full"
        };
        out.push(Placed {
            decision,
            reason,
            outcome,
        });
    }
    Ok(out)
}
