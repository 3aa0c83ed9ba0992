//! The tracker's state in memory: catalogue (mirrored to the store), peers and their
//! liveness, where every chunk lives, and uploads in flight. Every method is
//! synchronous and runs under one lock; callers never hold it across an await.

use std::collections::{BTreeMap, HashMap, HashSet};

use shoal_common::hash::Hash;
use shoal_proto::v1 as pb;
use tokio::time::Instant;

use crate::config::TrackerConfig;
use crate::error::{Error, Result};
use crate::store::{Change, FileRecord, Loaded, NameRecord};

#[derive(Debug, Clone)]
pub struct PeerEntry {
    pub id: String,
    pub addr: String,
    pub zone: String,
    pub capacity: u64,
    pub used: u64,
    pub active_transfers: u32,
    pub last_seen: Instant,
    pub draining: bool,
    pub chunks: HashSet<Hash>,
    /// The shared `inventory_version` these chunks reflect (PostgreSQL store).
    pub inventory_version: i64,
}

impl PeerEntry {
    pub fn peer_ref(&self) -> pb::PeerRef {
        pb::PeerRef {
            id: self.id.clone(),
            addr: self.addr.clone(),
            zone: self.zone.clone(),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Liveness {
    Alive,
    Suspect,
    Dead,
}

/// What a peer said when it stopped (Deregister), until it is heard from again.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Goodbye {
    /// Back soon with the same id and volume: its copies are expected for the restart grace.
    Restarting(Instant),
    /// Gone for good: its copies stop counting at once.
    Left(Instant),
}

impl Goodbye {
    fn at(self) -> Instant {
        match self {
            Goodbye::Restarting(at) | Goodbye::Left(at) => at,
        }
    }
}

/// Whether a chunk needs a new copy: `live` copies serve, `expected` sit on peers
/// restarting within their grace. Expected copies count towards `target` (a rolling
/// restart moves no data), but never below `min(2, target)` live copies: one more loss
/// there would lose the chunk, so it is repaired at once.
pub fn needs_repair(live: usize, expected: usize, target: usize) -> bool {
    if live >= target {
        return false;
    }
    if live < target.min(2) {
        return true;
    }
    live + expected < target
}

#[derive(Debug)]
pub struct Upload {
    pub name: String,
    pub size: u64,
    pub chunk_size: u64,
    pub replicas: u32,
    pub overwrite: bool,
    pub expires_at: Instant,
    pub file_id: Option<Hash>,
    pub chunks: Vec<Hash>,
    /// Peers a client saw fail in this upload: placement avoids them for the rest of
    /// it. A hint scoped to the upload, never proof (liveness and copies are untouched).
    pub avoid: std::collections::HashSet<String>,
}

#[derive(Default)]
pub struct State {
    pub files: HashMap<Hash, FileRecord>,
    pub names: BTreeMap<String, NameRecord>,
    /// How many files reference each chunk.
    pub chunk_refs: HashMap<Hash, u32>,
    /// Size of every referenced chunk.
    pub chunk_sizes: HashMap<Hash, u64>,
    pub peers: HashMap<String, PeerEntry>,
    pub locations: HashMap<Hash, HashSet<String>>,
    pub uploads: HashMap<String, Upload>,
    /// Last placement reason per chunk, shown by stat and the web UI.
    pub placement_reasons: HashMap<Hash, String>,
    /// Copies the tracker has told a peer to delete, and when: an inventory report that
    /// races the deletion must not bring them back.
    pub deleting: HashMap<(String, Hash), Instant>,
    /// The last shared catalogue log entry this state includes (PostgreSQL store).
    pub applied_seq: i64,
    /// Peer and location changes not yet written to the shared store (PostgreSQL only).
    pub journal: Option<Journal>,
    /// Peers that said goodbye and have not been heard from since.
    pub goodbyes: HashMap<String, Goodbye>,
    /// When this tracker came up: a peer known from the store but not heard from since
    /// is judged from then, so a restart does not declare every peer dead at once.
    pub started: Option<Instant>,
}

/// What this replica changed about peers since its last sync with the database.
#[derive(Debug, Default)]
pub struct Journal {
    /// Peers heard from (register, heartbeat, deregister): their row is written whole.
    pub seen: HashSet<String>,
    /// Peers put into drain (true) or taken out of it (false) here.
    pub drained: HashMap<String, bool>,
    /// Location changes, in order.
    pub ops: Vec<LocOp>,
}

#[derive(Debug, Clone, PartialEq)]
pub enum LocOp {
    /// Forget every location of the peer (a full inventory follows as `Add`s).
    Reset(String),
    Add(String, Hash),
    Remove(String, Hash),
}

impl LocOp {
    pub fn peer(&self) -> &str {
        match self {
            LocOp::Reset(p) | LocOp::Add(p, _) | LocOp::Remove(p, _) => p,
        }
    }
}
/// How long an ordered deletion masks the copy in inventory reports.
pub const DELETION_MASK: std::time::Duration = std::time::Duration::from_secs(30);

/// What a delete did.
pub struct Removal {
    pub names: Vec<String>,
    pub content_removed: bool,
    pub changes: Vec<Change>,
    pub deletions: Vec<Deletion>,
}

/// Chunks to delete on one peer.
#[derive(Debug, Clone, PartialEq)]
pub struct Deletion {
    pub peer_id: String,
    pub addr: String,
    pub chunks: Vec<Hash>,
}

pub fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

impl State {
    pub fn from_loaded(loaded: Loaded) -> Self {
        let mut s = State {
            names: loaded.names,
            applied_seq: loaded.seq,
            started: Some(Instant::now()),
            ..Default::default()
        };
        for f in loaded.files.into_values() {
            s.add_file(f);
        }
        s
    }

    /// Replace the catalogue (files, names, position) with a fresh load, keeping peers,
    /// locations and uploads: for a replica that fell behind the trimmed shared log.
    pub fn reload_catalogue(&mut self, loaded: Loaded) {
        self.files.clear();
        self.chunk_refs.clear();
        self.chunk_sizes.clear();
        self.names = loaded.names;
        self.applied_seq = loaded.seq;
        for f in loaded.files.into_values() {
            self.add_file(f);
        }
        let refs = &self.chunk_refs;
        self.placement_reasons.retain(|h, _| refs.contains_key(h));
    }

    fn journal_op(&mut self, op: LocOp) {
        if let Some(j) = self.journal.as_mut() {
            j.ops.push(op);
        }
    }

    /// Note that a peer's row changed here (stats, liveness), for the shared store.
    pub fn journal_seen(&mut self, peer_id: &str) {
        if let Some(j) = self.journal.as_mut() {
            j.seen.insert(peer_id.to_string());
        }
    }

    pub fn journal_drained(&mut self, peer_id: &str) {
        if let Some(j) = self.journal.as_mut() {
            j.drained.insert(peer_id.to_string(), true);
        }
    }

    pub fn journal_undrained(&mut self, peer_id: &str) {
        if let Some(j) = self.journal.as_mut() {
            j.drained.insert(peer_id.to_string(), false);
        }
    }

    /// Replace a peer's locations with what the shared store holds, then replay the
    /// changes made here and not written yet (they are newer).
    pub fn reload_inventory(&mut self, peer_id: &str, chunks: Vec<Hash>, version: i64) {
        self.forget_inventory(peer_id);
        for h in chunks {
            self.insert_location(peer_id, h);
        }
        let pending: Vec<LocOp> = self
            .journal
            .as_ref()
            .map(|j| {
                j.ops
                    .iter()
                    .filter(|o| o.peer() == peer_id)
                    .cloned()
                    .collect()
            })
            .unwrap_or_default();
        for op in pending {
            match op {
                LocOp::Reset(p) => self.forget_inventory(&p),
                LocOp::Add(p, h) => {
                    self.insert_location(&p, h);
                }
                LocOp::Remove(p, h) => self.drop_location(&p, &h),
            }
        }
        if let Some(p) = self.peers.get_mut(peer_id) {
            p.inventory_version = version;
        }
    }

    /// Bring in catalogue changes another replica committed (entries at or below
    /// `applied_seq` are already here and skipped). Chunks that lose their last file are
    /// left where they are: the leader's garbage collection deletes them after the grace.
    pub fn replay(&mut self, entries: Vec<crate::pg::LogEntry>) {
        for e in entries {
            if e.seq <= self.applied_seq {
                continue;
            }
            match e.change {
                Change::PutFile(f) => match self.files.get_mut(&f.id) {
                    Some(old) => *old = f,
                    None => self.add_file(f),
                },
                Change::DeleteFile(id) => {
                    self.remove_file(&id);
                }
                Change::PutName(name, n) => {
                    self.names.insert(name, n);
                }
                Change::DeleteName(name) => {
                    self.names.remove(&name);
                }
                Change::PutRepair(_) | Change::DeleteRepair(_) => {}
            }
            self.applied_seq = e.seq;
        }
    }

    fn add_file(&mut self, f: FileRecord) {
        let unique: HashSet<Hash> = f.chunks.iter().copied().collect();
        for (i, h) in f.chunks.iter().enumerate() {
            self.chunk_sizes
                .entry(*h)
                .or_insert_with(|| crate::fragment::chunk_len(f.size, f.chunk_size, i as u64));
        }
        for h in unique {
            *self.chunk_refs.entry(h).or_default() += 1;
        }
        self.files.insert(f.id, f);
    }

    /// Remove a file record; returns the chunks nothing references any more.
    fn remove_file(&mut self, id: &Hash) -> Vec<Hash> {
        let Some(f) = self.files.remove(id) else {
            return Vec::new();
        };
        let unique: HashSet<Hash> = f.chunks.into_iter().collect();
        let mut garbage = Vec::new();
        for h in unique {
            if let Some(n) = self.chunk_refs.get_mut(&h) {
                *n -= 1;
                if *n == 0 {
                    self.chunk_refs.remove(&h);
                    self.chunk_sizes.remove(&h);
                    self.placement_reasons.remove(&h);
                    garbage.push(h);
                }
            }
        }
        garbage
    }

    // ---- liveness -------------------------------------------------------------

    /// The goodbye a peer said, if it has not been heard from since (another replica
    /// may have heard it: its `last_seen` is then newer).
    pub fn goodbye(&self, p: &PeerEntry) -> Option<Goodbye> {
        self.goodbyes
            .get(&p.id)
            .copied()
            .filter(|g| p.last_seen <= g.at())
    }

    /// A peer heard from (register, heartbeat) is no longer gone.
    pub fn heard_from(&mut self, peer_id: &str) {
        self.goodbyes.remove(peer_id);
    }

    /// A peer restarting within its grace: offline, its copies expected back.
    pub fn restarting(&self, p: &PeerEntry, cfg: &TrackerConfig, now: Instant) -> bool {
        matches!(self.goodbye(p), Some(Goodbye::Restarting(at))
            if !p.draining && now.saturating_duration_since(at) < cfg.repair.restart_grace)
    }

    pub fn liveness(&self, p: &PeerEntry, cfg: &TrackerConfig, now: Instant) -> Liveness {
        if self.goodbye(p).is_some() {
            // Stopped: it neither serves nor takes copies, whatever it said.
            return Liveness::Dead;
        }
        let seen = match self.started {
            Some(started) => p.last_seen.max(started),
            None => p.last_seen,
        };
        let age = now.saturating_duration_since(seen);
        if age >= cfg.liveness.dead_after {
            Liveness::Dead
        } else if age >= cfg.liveness.suspect_after {
            Liveness::Suspect
        } else {
            Liveness::Alive
        }
    }

    pub fn peer_state(&self, p: &PeerEntry, cfg: &TrackerConfig, now: Instant) -> pb::PeerState {
        if self.restarting(p, cfg, now) {
            return pb::PeerState::Restarting;
        }
        match (self.liveness(p, cfg, now), p.draining) {
            (Liveness::Dead, _) => pb::PeerState::Dead,
            (_, true) if self.drain_remaining(&p.id, cfg, now) == 0 => pb::PeerState::Drained,
            (_, true) => pb::PeerState::Draining,
            (Liveness::Suspect, _) => pb::PeerState::Suspect,
            (Liveness::Alive, _) => pb::PeerState::Alive,
        }
    }

    /// Peers holding `chunk` that are not dead, alive before suspect.
    pub fn live_holders(&self, chunk: &Hash, cfg: &TrackerConfig, now: Instant) -> Vec<&PeerEntry> {
        let mut out: Vec<(&PeerEntry, Liveness)> = self
            .locations
            .get(chunk)
            .into_iter()
            .flatten()
            .filter_map(|id| self.peers.get(id))
            .map(|p| (p, self.liveness(p, cfg, now)))
            .filter(|(_, l)| *l != Liveness::Dead)
            .collect();
        out.sort_by_key(|(p, l)| {
            (
                *l == Liveness::Suspect,
                p.draining,
                p.active_transfers,
                p.id.clone(),
            )
        });
        out.into_iter().map(|(p, _)| p).collect()
    }

    /// Live copies that count towards the target (draining peers are leaving).
    pub fn durable_count(&self, chunk: &Hash, cfg: &TrackerConfig, now: Instant) -> usize {
        self.live_holders(chunk, cfg, now)
            .iter()
            .filter(|p| !p.draining)
            .count()
    }

    /// Copies on peers restarting within their grace (not draining).
    pub fn expected_count(&self, chunk: &Hash, cfg: &TrackerConfig, now: Instant) -> usize {
        self.locations
            .get(chunk)
            .into_iter()
            .flatten()
            .filter_map(|id| self.peers.get(id))
            .filter(|p| self.restarting(p, cfg, now))
            .count()
    }

    /// Whether `chunk` needs a new copy to reach `target` (see [`needs_repair`]).
    pub fn below_target(
        &self,
        chunk: &Hash,
        target: u32,
        cfg: &TrackerConfig,
        now: Instant,
    ) -> bool {
        let live = self.durable_count(chunk, cfg, now);
        let target = target as usize;
        live < target && needs_repair(live, self.expected_count(chunk, cfg, now), target)
    }

    /// Chunks of a draining peer that still need a copy elsewhere.
    pub fn drain_remaining(&self, peer_id: &str, cfg: &TrackerConfig, now: Instant) -> usize {
        let Some(p) = self.peers.get(peer_id) else {
            return 0;
        };
        p.chunks
            .iter()
            .filter(|h| self.chunk_refs.contains_key(h))
            .filter(|h| {
                let target = self.chunk_target(h).unwrap_or(1) as usize;
                self.durable_count(h, cfg, now) < target
            })
            .count()
    }

    /// Highest replica target among the files that use `chunk`.
    pub fn chunk_target(&self, chunk: &Hash) -> Option<u32> {
        // Small clusters have few files per chunk; a reverse index is not worth its memory yet.
        self.files
            .values()
            .filter(|f| f.chunks.contains(chunk))
            .map(|f| f.replicas)
            .max()
    }

    pub fn live_peer_count(&self, cfg: &TrackerConfig, now: Instant) -> usize {
        self.peers
            .values()
            .filter(|p| self.liveness(p, cfg, now) == Liveness::Alive && !p.draining)
            .count()
    }

    pub fn live_zone_count(&self, cfg: &TrackerConfig, now: Instant) -> usize {
        self.peers
            .values()
            .filter(|p| self.liveness(p, cfg, now) == Liveness::Alive && !p.draining)
            .map(|p| p.zone.as_str())
            .collect::<HashSet<_>>()
            .len()
    }

    // ---- peers ------------------------------------------------------------------

    pub fn register_peer(
        &mut self,
        peer: pb::PeerRef,
        capacity: u64,
        used: u64,
        chunks: Vec<Hash>,
        now: Instant,
    ) {
        let draining = self
            .peers
            .get(&peer.id)
            .map(|p| p.draining)
            .unwrap_or(false);
        let version = self
            .peers
            .get(&peer.id)
            .map(|p| p.inventory_version)
            .unwrap_or(-1);
        self.forget_inventory(&peer.id);
        self.heard_from(&peer.id);
        for h in &chunks {
            self.locations
                .entry(*h)
                .or_default()
                .insert(peer.id.clone());
        }
        self.journal_seen(&peer.id);
        self.journal_op(LocOp::Reset(peer.id.clone()));
        for h in &chunks {
            self.journal_op(LocOp::Add(peer.id.clone(), *h));
        }
        self.peers.insert(
            peer.id.clone(),
            PeerEntry {
                id: peer.id,
                addr: peer.addr,
                zone: peer.zone,
                capacity,
                used,
                active_transfers: 0,
                last_seen: now,
                draining,
                chunks: chunks.into_iter().collect(),
                inventory_version: version,
            },
        );
    }

    fn forget_inventory(&mut self, peer_id: &str) {
        if let Some(p) = self.peers.get_mut(peer_id) {
            for h in p.chunks.drain() {
                if let Some(set) = self.locations.get_mut(&h) {
                    set.remove(peer_id);
                    if set.is_empty() {
                        self.locations.remove(&h);
                    }
                }
            }
        }
    }

    pub fn add_location(&mut self, peer_id: &str, h: Hash) -> bool {
        // A copy placed again (upload, repair) is no longer one being deleted.
        self.deleting.remove(&(peer_id.to_string(), h));
        let known = self.insert_location(peer_id, h);
        if known {
            self.journal_op(LocOp::Add(peer_id.to_string(), h));
        }
        known
    }

    fn insert_location(&mut self, peer_id: &str, h: Hash) -> bool {
        let Some(p) = self.peers.get_mut(peer_id) else {
            return false;
        };
        p.chunks.insert(h);
        self.locations
            .entry(h)
            .or_default()
            .insert(peer_id.to_string());
        true
    }

    pub fn remove_location(&mut self, peer_id: &str, h: &Hash) {
        self.journal_op(LocOp::Remove(peer_id.to_string(), *h));
        self.drop_location(peer_id, h);
    }

    fn drop_location(&mut self, peer_id: &str, h: &Hash) {
        if let Some(p) = self.peers.get_mut(peer_id) {
            p.chunks.remove(h);
        }
        if let Some(set) = self.locations.get_mut(h) {
            set.remove(peer_id);
            if set.is_empty() {
                self.locations.remove(h);
            }
        }
    }

    pub fn report_chunks(
        &mut self,
        peer_id: &str,
        added: Vec<Hash>,
        removed: Vec<Hash>,
        full: bool,
    ) -> Result<()> {
        if !self.peers.contains_key(peer_id) {
            return Err(Error::NotFound(format!(
                "unknown peer {peer_id}: register first"
            )));
        }
        if full {
            self.forget_inventory(peer_id);
            self.journal_op(LocOp::Reset(peer_id.to_string()));
        }
        let now = Instant::now();
        for h in added {
            let masked = self
                .deleting
                .get(&(peer_id.to_string(), h))
                .is_some_and(|t| now.saturating_duration_since(*t) < DELETION_MASK);
            if !masked {
                self.add_location(peer_id, h);
            }
        }
        for h in removed {
            self.remove_location(peer_id, &h);
        }
        Ok(())
    }

    pub fn inventory_digest(&self, peer_id: &str) -> Option<String> {
        let p = self.peers.get(peer_id)?;
        let mut v: Vec<&Hash> = p.chunks.iter().collect();
        v.sort();
        Some(shoal_common::hash::inventory_digest(v))
    }

    pub fn peer_info(&self, p: &PeerEntry, cfg: &TrackerConfig, now: Instant) -> pb::PeerInfo {
        pb::PeerInfo {
            peer: Some(p.peer_ref()),
            state: self.peer_state(p, cfg, now) as i32,
            capacity_bytes: p.capacity,
            used_bytes: p.used,
            chunks: p.chunks.len() as u64,
            active_transfers: p.active_transfers,
            last_heartbeat_ms_ago: now.saturating_duration_since(p.last_seen).as_millis() as u64,
        }
    }

    // ---- catalogue reads ----------------------------------------------------------

    /// Resolve a name (first) or a content id.
    pub fn resolve(&self, name_or_id: &str) -> Result<(Option<String>, &FileRecord)> {
        if let Some(n) = self.names.get(name_or_id) {
            let f = self.files.get(&n.id).ok_or_else(|| {
                Error::NotFound(format!(
                    "file {:?} has no content record",
                    shoal_common::names::echo(name_or_id)
                ))
            })?;
            return Ok((Some(name_or_id.to_string()), f));
        }
        if let Ok(id) = name_or_id.parse::<Hash>() {
            if let Some(f) = self.files.get(&id) {
                return Ok((None, f));
            }
        }
        Err(Error::NotFound(format!(
            "no file named or with id {:?}",
            shoal_common::names::echo(name_or_id)
        )))
    }

    pub fn names_of(&self, id: &Hash) -> Vec<String> {
        self.names
            .iter()
            .filter(|(_, n)| n.id == *id)
            .map(|(k, _)| k.clone())
            .collect()
    }

    pub fn summary(
        &self,
        name: &str,
        n: &NameRecord,
        cfg: &TrackerConfig,
        now: Instant,
    ) -> Option<pb::FileSummary> {
        let f = self.files.get(&n.id)?;
        let min = f
            .chunks
            .iter()
            .map(|h| self.live_holders(h, cfg, now).len() as u32)
            .min();
        let replicas_min = min.unwrap_or(f.replicas);
        let status = if replicas_min == 0 {
            pb::FileStatus::Unavailable
        } else if replicas_min < f.replicas {
            pb::FileStatus::UnderReplicated
        } else {
            pb::FileStatus::Healthy
        };
        Some(pb::FileSummary {
            name: name.to_string(),
            id: f.id.to_hex(),
            size: f.size,
            chunk_size: f.chunk_size,
            chunks: f.chunks.len() as u32,
            replicas_target: f.replicas,
            replicas_min,
            status: status as i32,
            created_unix_ms: n.created_ms,
        })
    }

    pub fn list(
        &self,
        query: Option<&str>,
        cfg: &TrackerConfig,
        now: Instant,
    ) -> Vec<pb::FileSummary> {
        let q = query.map(str::to_lowercase);
        self.names
            .iter()
            .filter(|(name, _)| q.as_deref().is_none_or(|q| name.to_lowercase().contains(q)))
            .filter_map(|(name, n)| self.summary(name, n, cfg, now))
            .collect()
    }

    pub fn detail(
        &self,
        name_or_id: &str,
        cfg: &TrackerConfig,
        now: Instant,
    ) -> Result<pb::FileDetail> {
        let (name, f) = self.resolve(name_or_id)?;
        let names = self.names_of(&f.id);
        let name = name.or_else(|| names.first().cloned()).unwrap_or_default();
        let record = self.names.get(&name).cloned().unwrap_or(NameRecord {
            id: f.id,
            created_ms: f.created_ms,
        });
        let summary = self.summary(&name, &record, cfg, now);
        let chunks = f
            .chunks
            .iter()
            .enumerate()
            .map(|(i, h)| pb::ChunkReplicas {
                index: i as u32,
                hash: h.to_hex(),
                size: crate::fragment::chunk_len(f.size, f.chunk_size, i as u64),
                replicas: self
                    .live_holders(h, cfg, now)
                    .iter()
                    .map(|p| p.peer_ref())
                    .collect(),
                placement_reason: self.placement_reasons.get(h).cloned().unwrap_or_default(),
            })
            .collect();
        Ok(pb::FileDetail {
            summary,
            chunks,
            names,
        })
    }

    // ---- catalogue writes (each returns the store changes to apply) ----------------

    /// Drop names; content that loses its last name is removed and its chunks become
    /// garbage (deleted on their peers unless an upload in flight uses them).
    pub fn delete(&mut self, name_or_id: &str) -> Result<Removal> {
        let (name, f) = self.resolve(name_or_id)?;
        let id = f.id;
        let names = match name {
            Some(n) => vec![n],
            None => self.names_of(&id),
        };
        let mut changes = Vec::new();
        for n in &names {
            self.names.remove(n);
            changes.push(Change::DeleteName(n.clone()));
        }
        let (content_removed, deletions) = self.drop_content_if_unnamed(&id, &mut changes);
        Ok(Removal {
            names,
            content_removed,
            changes,
            deletions,
        })
    }

    fn drop_content_if_unnamed(
        &mut self,
        id: &Hash,
        changes: &mut Vec<Change>,
    ) -> (bool, Vec<Deletion>) {
        if self.names.values().any(|n| n.id == *id) {
            return (false, Vec::new());
        }
        let garbage = self.remove_file(id);
        changes.push(Change::DeleteFile(*id));
        let in_flight: HashSet<Hash> = self
            .uploads
            .values()
            .flat_map(|u| u.chunks.iter().copied())
            .collect();
        let mut by_peer: HashMap<String, Vec<Hash>> = HashMap::new();
        for h in garbage.into_iter().filter(|h| !in_flight.contains(h)) {
            for peer in self.locations.remove(&h).unwrap_or_default() {
                if let Some(p) = self.peers.get_mut(&peer) {
                    p.chunks.remove(&h);
                }
                self.journal_op(LocOp::Remove(peer.clone(), h));
                by_peer.entry(peer).or_default().push(h);
            }
        }
        let deletions = by_peer
            .into_iter()
            .filter_map(|(peer_id, chunks)| {
                let addr = self.peers.get(&peer_id)?.addr.clone();
                Some(Deletion {
                    peer_id,
                    addr,
                    chunks,
                })
            })
            .collect();
        (true, deletions)
    }

    /// Bind `name` to content `id`, replacing another content only with `overwrite`.
    pub fn bind_name(
        &mut self,
        name: &str,
        id: Hash,
        overwrite: bool,
        changes: &mut Vec<Change>,
    ) -> Result<Vec<Deletion>> {
        let previous = self.names.get(name).map(|n| n.id);
        match previous {
            Some(old) if old == id => return Ok(Vec::new()),
            Some(old) if !overwrite => {
                return Err(Error::AlreadyExists(format!(
                "a different file named {name:?} exists (id {old}); use --overwrite to replace it"
            )))
            }
            _ => {}
        }
        let rec = NameRecord {
            id,
            created_ms: now_ms(),
        };
        self.names.insert(name.to_string(), rec.clone());
        changes.push(Change::PutName(name.to_string(), rec));
        Ok(match previous {
            Some(old) => self.drop_content_if_unnamed(&old, changes).1,
            None => Vec::new(),
        })
    }

    pub fn insert_file(&mut self, f: FileRecord, changes: &mut Vec<Change>) {
        if !self.files.contains_key(&f.id) {
            changes.push(Change::PutFile(f.clone()));
            self.add_file(f);
        }
    }

    pub fn set_replicas(&mut self, name_or_id: &str, replicas: u32) -> Result<(Hash, Vec<Change>)> {
        let (_, f) = self.resolve(name_or_id)?;
        let id = f.id;
        let f = self.files.get_mut(&id).expect("resolved above");
        f.replicas = replicas;
        Ok((id, vec![Change::PutFile(f.clone())]))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

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
            !st.locations.contains_key(&h),
            "reconciled, not trusted: the copy it lost is gone"
        );
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
        assert_eq!(st.files.keys().collect::<Vec<_>>(), vec![&f2.id]);
        assert_eq!(st.names.keys().collect::<Vec<_>>(), vec!["two"]);
        assert_eq!(st.applied_seq, 42);
        let refs: HashSet<Hash> = st.chunk_refs.keys().copied().collect();
        assert_eq!(refs, [Hash::of(b"b"), Hash::of(b"c")].into_iter().collect());
        assert!(st.peers.contains_key("p"));
        assert!(
            st.locations.contains_key(&Hash::of(b"a")),
            "locations are the peers' word, kept"
        );
    }
}
