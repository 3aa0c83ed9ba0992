//! The tracker's operations: each combines the in-memory state, the store and the
//! placement and fragmentation policies. Catalogue changes are applied to the store
//! inside the state lock, on a blocking thread, so memory and disk change together.

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
use crate::state::{now_ms, Deletion, Liveness, State, Upload};
use crate::store::{Change, FileRecord, Store};

/// Peer ids a client may name in one replacement request, and hints kept per upload.
pub const MAX_HINTED_PEERS: usize = 64;

pub struct Tracker {
    pub cfg: TrackerConfig,
    pub store: Store,
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
}

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
    pub fn open(
        cfg: TrackerConfig,
        cluster_token: Option<String>,
        tickets: shoal_common::ticket::TicketKeys,
    ) -> Result<Arc<Self>> {
        let store = Store::open(&cfg)?;
        let loaded = store.load()?;
        let repairs = loaded.repairs.clone();
        let mut state = State::from_loaded(loaded);
        if store.postgres().is_some() {
            state.journal = Some(Default::default());
        }
        info!(
            files = state.files.len(),
            names = state.names.len(),
            repairs = repairs.len(),
            "catalogue loaded"
        );
        Ok(Arc::new(Self {
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
        }))
    }

    pub fn state(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Run a catalogue change on a blocking thread: mutate, then persist.
    pub async fn mutate<R: Send + 'static>(
        self: &Arc<Self>,
        f: impl FnOnce(&mut State, &TrackerConfig, Instant) -> Result<(R, Vec<Change>)> + Send + 'static,
    ) -> Result<R> {
        let this = self.clone();
        let now = Instant::now();
        let result = tokio::task::spawn_blocking(move || match this.store.postgres() {
            None => {
                let mut st = this.state();
                let (r, changes) = f(&mut st, &this.cfg, now)?;
                this.store.apply(&changes)?;
                Ok(r)
            }
            Some(pg) => {
                let t = this.clone();
                pg.call(move |c| t.mutate_shared(c, f, now))?
            }
        })
        .await
        .map_err(|e| Error::Unavailable(format!("tracker task failed: {e}")))?;
        // A caller that changed the catalogue reads its change in the next summary.
        self.forget_summary();
        result
    }

    /// Drop the cached cluster summary (the catalogue changed).
    pub fn forget_summary(&self) {
        *self.summary.lock().unwrap_or_else(|p| p.into_inner()) = None;
    }

    /// A catalogue change over PostgreSQL: lock the catalogue, catch up with what other
    /// replicas committed, decide on that up-to-date state, write, commit. So a name two
    /// replicas race for is decided once: the second sees the first's name and fails.
    fn mutate_shared<R>(
        &self,
        c: &mut postgres::Client,
        f: impl FnOnce(&mut State, &TrackerConfig, Instant) -> Result<(R, Vec<Change>)>,
        now: Instant,
    ) -> Result<R> {
        use crate::store::err;
        let mut txn = c.transaction().map_err(err)?;
        crate::pg::lock_catalogue(&mut txn)?;
        let mut st = self.state();
        match crate::pg::log_since(&mut txn, st.applied_seq)? {
            crate::pg::Tail::Entries(missed) => st.replay(missed),
            crate::pg::Tail::Trimmed { through } => {
                warn!(
                    position = st.applied_seq,
                    trimmed_through = through,
                    "this replica fell behind the trimmed catalogue log; reloading the catalogue"
                );
                st.reload_catalogue(crate::pg::load_in(&mut txn)?);
            }
        }
        let (r, changes) = f(&mut st, &self.cfg, now)?;
        let last = crate::pg::write_catalogue(&mut txn, &changes)?;
        // The locations this change created (and anything else heard from peers) commit
        // with it: a replica that sees the file sees where its chunks are.
        let batch = crate::shared::Batch::take(&mut st);
        let written = match &batch {
            Some(b) => b.write(&mut txn),
            None => Ok(Vec::new()),
        }
        .and_then(|v| txn.commit().map_err(err).map(|()| v));
        match written {
            Ok(versions) => crate::shared::Batch::written(&mut st, versions),
            Err(e) => {
                if let Some(b) = batch {
                    b.restore(&mut st);
                }
                return Err(e.into());
            }
        }
        if let Some(seq) = last {
            st.applied_seq = seq;
        }
        Ok(r)
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

    /// Persist repair-queue changes. Over PostgreSQL they are queued to the store's
    /// connection, in order, without waiting: callers may hold the state lock, which a
    /// catalogue change running on that connection needs.
    pub fn persist(&self, changes: &[Change]) -> Result<()> {
        match self.store.postgres() {
            Some(pg) => Ok(pg.submit(changes)?),
            None => Ok(self.store.apply(changes)?),
        }
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
        st.uploads.insert(
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
        let this = self.clone();
        self.mutate(move |st, cfg, now| {
            let _e = span.enter();
            let up = st
                .uploads
                .get(&req.upload_id)
                .ok_or_else(|| Error::NotFound(format!("unknown or expired upload {:?}", req.upload_id)))?;
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
                    return Err(Error::InvalidArgument(format!("chunk indices must be 0..{expected} once each; got index {} twice or out of range", d.index)));
                }
                let want = chunk_len(up.size, up.chunk_size, i as u64);
                if d.size != want {
                    return Err(Error::InvalidArgument(format!("chunk {i} must be {want} bytes, got {}", d.size)));
                }
            }
            if up.size == 0 && file_id != Hash::from(blake3::hash(b"")) {
                return Err(Error::InvalidArgument("an empty file has the BLAKE3 id of empty content".into()));
            }
            let (name, overwrite, replicas, chunk_size, size) = (up.name.clone(), up.overwrite, up.replicas, up.chunk_size, up.size);
            if let Some(existing) = st.names.get(&name) {
                if existing.id != file_id && !overwrite {
                    return Err(Error::AlreadyExists(format!(
                        "a different file named {name:?} exists (id {}); use --overwrite to replace it",
                        existing.id
                    )));
                }
            }
            let mut changes = Vec::new();
            if let Some(rec) = st.files.get(&file_id) {
                crate::proof::same_layout(rec, size, chunk_size, &hashes)?;
                // Same content already stored: the name is all that is new.
                let deletions = st.bind_name(&name, file_id, overwrite, &mut changes)?;
                st.uploads.remove(&req.upload_id);
                info!(dedup = true, "content already stored; name added");
                let summary = st.summary(&name, &st.names[&name].clone(), cfg, now);
                return Ok(((pb::PlaceChunksResponse { deduplicated: true, placements: vec![], file: summary }, deletions), changes));
            }
            let mut planner = Planner::new(Self::candidates(st, cfg, now));
            let mut placements = Vec::with_capacity(digests.len());
            for (i, h) in hashes.iter().enumerate() {
                let len = chunk_len(size, chunk_size, i as u64);
                let holders: Vec<(String, String)> = st
                    .live_holders(h, cfg, now)
                    .iter()
                    .filter(|p| !p.draining && st.liveness(p, cfg, now) == Liveness::Alive)
                    .map(|p| (p.id.clone(), p.zone.clone()))
                    .collect();
                let want = (replicas as usize).saturating_sub(holders.len());
                let decision: Decision = if want == 0 { Decision::default() } else { planner.place(h, len, want, &holders) };
                if want > 0 && decision.chosen.is_empty() {
                    return Err(Error::Unavailable(format!("no live peer can take chunk {i} ({len} bytes)")));
                }
                let reason = if want == 0 { format!("already stored on {} peers", holders.len()) } else { decision.reason() };
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
                this.metrics.placement(if want == 0 { "dedup" } else if decision.chosen.len() < want { "short" } else { "full" });
                st.placement_reasons.insert(*h, reason.clone());
                let targets: Vec<pb::PeerRef> = decision.chosen.iter().filter_map(|id| st.peers.get(id)).map(|p| p.peer_ref()).collect();
                let ticket = (!targets.is_empty()).then(|| this.ticket(&req.upload_id, h, len, &targets));
                placements.push(pb::ChunkPlacement {
                    index: i as u32,
                    hash: h.to_hex(),
                    targets,
                    already_stored: want == 0,
                    reason,
                    ticket,
                });
            }
            let up = st.uploads.get_mut(&req.upload_id).expect("checked above");
            up.file_id = Some(file_id);
            up.chunks = hashes;
            Ok(((pb::PlaceChunksResponse { deduplicated: false, placements, file: None }, Vec::new()), changes))
        })
        .await
        .map(|(resp, deletions)| {
            self.send_deletions(deletions);
            resp
        })
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
        let keys = self.tickets.clone();
        let (summary, deletions) = self
            .mutate(move |st, cfg, now| {
                let up = st.uploads.get(&req.upload_id).ok_or_else(|| {
                    Error::NotFound(format!("unknown or expired upload {:?}", req.upload_id))
                })?;
                let file_id = up.file_id.ok_or_else(|| {
                    Error::FailedPrecondition(
                        "upload has no placement yet: call PlaceChunks first".into(),
                    )
                })?;
                let chunks = up.chunks.clone();
                let (size, chunk_size) = (up.size, up.chunk_size);
                if let Some(rec) = st.files.get(&file_id) {
                    crate::proof::same_layout(rec, size, chunk_size, &chunks)?;
                }
                let mut seen = HashSet::new();
                for s in &req.stored {
                    let h = *chunks.get(s.index as usize).ok_or_else(|| {
                        Error::InvalidArgument(format!("chunk index {} out of range", s.index))
                    })?;
                    if !seen.insert(s.index) {
                        return Err(Error::InvalidArgument(format!(
                            "chunk index {} reported twice",
                            s.index
                        )));
                    }
                    // Only copies a peer signed for (`peer_ids` are claims, never counted).
                    let len = chunk_len(size, chunk_size, s.index as u64);
                    for peer in crate::proof::receipted_peers(&keys, &req.upload_id, &h, len, &s.receipts)? {
                        st.add_location(peer, h);
                    }
                }
                let up = st.uploads.get(&req.upload_id).expect("checked above");
                let live = st.live_peer_count(cfg, now).max(1);
                let required = (up.replicas as usize).min(2).min(live);
                for (i, h) in chunks.iter().enumerate() {
                    let have = st.live_holders(h, cfg, now).len();
                    if have < required {
                        return Err(Error::FailedPrecondition(format!(
                            "chunk {i} is durable on {have} peers, {required} required"
                        )));
                    }
                }
                // Decide the name before touching anything: another upload (through this
                // replica or another) may have taken it since PlaceChunks.
                if let Some(existing) = st.names.get(&up.name) {
                    if existing.id != file_id && !up.overwrite {
                        return Err(Error::AlreadyExists(format!(
                            "a different file named {:?} exists (id {}); use --overwrite to replace it",
                            up.name, existing.id
                        )));
                    }
                }
                let up = st.uploads.remove(&req.upload_id).expect("checked above");
                let mut changes = Vec::new();
                st.insert_file(
                    FileRecord {
                        id: file_id,
                        size: up.size,
                        chunk_size: up.chunk_size,
                        chunks,
                        replicas: up.replicas,
                        created_ms: now_ms(),
                    },
                    &mut changes,
                );
                let deletions = st.bind_name(&up.name, file_id, up.overwrite, &mut changes)?;
                let rec = st.names[&up.name].clone();
                Ok(((st.summary(&up.name, &rec, cfg, now), deletions), changes))
            })
            .await?;
        self.send_deletions(deletions);
        Ok(pb::CommitUploadResponse { file: summary })
    }

    pub async fn delete(self: &Arc<Self>, name_or_id: String) -> Result<pb::DeleteFileResponse> {
        let (names, removed, deletions) = self
            .mutate(move |st, _, _| {
                let r = st.delete(&name_or_id)?;
                Ok(((r.names, r.content_removed, r.deletions), r.changes))
            })
            .await?;
        info!(names = ?names, content_removed = removed, "deleted");
        self.send_deletions(deletions);
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
        let now = Instant::now();
        let mut st = self.state();
        let before = st.uploads.len();
        st.uploads.retain(|_, u| u.expires_at > now);
        before - st.uploads.len()
    }
}
