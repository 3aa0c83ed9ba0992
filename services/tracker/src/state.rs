//! The tracker's state in memory: catalogue (mirrored to the store), peers and their
//! liveness, where every chunk lives, and uploads in flight. Every method is
//! synchronous and runs under one lock; callers never hold it across an await.

use std::collections::{HashMap, HashSet};

use shoal_common::hash::Hash;
use shoal_proto::v1 as pb;
use tokio::time::Instant;

use crate::catalogue::Catalogue;
use crate::config::TrackerConfig;
use crate::error::{Error, Result};
use crate::locations::Locations;
use crate::store::{Change, FileRecord, Loaded, NameRecord};
use crate::uploads::Uploads;

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

#[derive(Default)]
pub struct State {
    /// Files and names, as the store has them.
    pub catalogue: Catalogue,
    pub peers: HashMap<String, PeerEntry>,
    /// Where every copy is (the peers' word, reconciled).
    pub locations: Locations,
    pub uploads: Uploads,
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
    /// When a peer last registered (safe mode waits for registrations to stop).
    pub last_registration: Option<Instant>,
    /// Inventories arriving in parts, by peer: `(inventory_id, chunks so far)`.
    pub staging: HashMap<String, (u64, Vec<Hash>)>,
    /// Chunks whose copies, target or holders changed since the manager last looked:
    /// it looks at these, never at every chunk.
    pub dirty: Dirty,
    /// Chunks below target (`under`) or with no live copy (`lost`), as last evaluated.
    pub health: Health,
    /// When this tracker came up: a peer known from the store but not heard from since
    /// is judged from then, so a restart does not declare every peer dead at once.
    pub started: Option<Instant>,
}

/// Chunks that are not healthy, kept up to date as dirty chunks are evaluated, so the
/// cluster summary is two counts, not a scan.
#[derive(Debug, Default)]
pub struct Health {
    pub under: HashSet<Hash>,
    pub lost: HashSet<Hash>,
}

impl Health {
    /// Record a chunk's durable copies against its target (`None`: not referenced).
    pub fn note(&mut self, h: Hash, durable: usize, target: Option<u32>) {
        self.under.remove(&h);
        self.lost.remove(&h);
        match target {
            Some(_) if durable == 0 => {
                self.lost.insert(h);
            }
            Some(t) if durable < t as usize => {
                self.under.insert(h);
            }
            _ => {}
        }
    }
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
/// What a peer says in a heartbeat.
pub struct Beat<'a> {
    pub capacity: u64,
    pub used: u64,
    pub active_transfers: u32,
    pub chunk_count: u64,
    pub digest: &'a str,
}

/// The most chunks one peer's inventory may have (staged parts included).
pub const MAX_INVENTORY_CHUNKS: usize = 50_000_000;

/// How long an ordered deletion masks the copy in inventory reports.
pub const DELETION_MASK: std::time::Duration = std::time::Duration::from_secs(30);

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
        let catalogue = Catalogue::new(loaded.files, loaded.names);
        // Peers will report about every catalogue chunk: the map's size in steady state.
        let mut locations = Locations::default();
        locations.reserve(catalogue.chunk_count());
        State {
            catalogue,
            locations,
            applied_seq: loaded.seq,
            started: Some(Instant::now()),
            ..Default::default()
        }
    }

    /// Replace the catalogue (files, names, position) with a fresh load, keeping peers,
    /// locations and uploads: for a replica that fell behind the trimmed shared log.
    pub fn reload_catalogue(&mut self, loaded: Loaded) {
        self.catalogue = Catalogue::new(loaded.files, loaded.names);
        self.applied_seq = loaded.seq;
        let all: Vec<Hash> = self.catalogue.chunks().map(|(h, _)| *h).collect();
        self.dirty.extend(all);
        let c = &self.catalogue;
        self.placement_reasons.retain(|h, _| c.is_referenced(h));
    }

    /// Apply a catalogue change the store has taken; returns the chunks it left without
    /// a file. Every chunk whose target may have moved is marked for the manager.
    pub fn apply_change(&mut self, c: Change) -> Vec<Hash> {
        if let Change::PutFile(f) = &c {
            self.dirty.extend(f.chunks.iter().copied());
        }
        let garbage = self.catalogue.apply(c);
        for h in &garbage {
            self.placement_reasons.remove(h);
        }
        self.dirty.extend(garbage.iter().copied());
        garbage
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
            self.apply_change(e.change);
            self.applied_seq = e.seq;
        }
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
            .holders(chunk)
            .filter_map(|id| self.peers.get(id))
            .map(|p| (p, self.liveness(p, cfg, now)))
            .filter(|(_, l)| *l != Liveness::Dead)
            .collect();
        // Borrowed keys: no allocation per comparison (this runs per chunk, per stat).
        out.sort_by(|(a, la), (b, lb)| {
            let key = |p: &PeerEntry, l: &Liveness| {
                (*l == Liveness::Suspect, p.draining, p.active_transfers)
            };
            key(a, la)
                .cmp(&key(b, lb))
                .then_with(|| a.id.as_str().cmp(b.id.as_str()))
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
            .holders(chunk)
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
        if !self.peers.contains_key(peer_id) {
            return 0;
        }
        self.locations
            .of(peer_id)
            .iter()
            .filter_map(|h| Some((h, self.catalogue.chunk(h)?)))
            .filter(|(h, c)| {
                let target = c.target() as usize;
                self.durable_count(h, cfg, now) < target
            })
            .count()
    }

    /// Highest replica target among the files that use `chunk`.
    pub fn chunk_target(&self, chunk: &Hash) -> Option<u32> {
        self.catalogue.chunk(chunk).map(|c| c.target())
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

    /// A registration: the whole inventory, or (`inventory_id` non-zero) its first part.
    pub fn register(
        &mut self,
        peer: pb::PeerRef,
        capacity: u64,
        used: u64,
        chunks: Vec<Hash>,
        inventory_id: u64,
        now: Instant,
    ) -> Result<()> {
        if inventory_id == 0 {
            self.register_peer(peer, capacity, used, chunks, now);
            Ok(())
        } else {
            self.register_peer_in_parts(peer, capacity, used, chunks, inventory_id, now)
        }
    }

    /// A registration with the whole inventory: it replaces what the tracker believed.
    pub fn register_peer(
        &mut self,
        peer: pb::PeerRef,
        capacity: u64,
        used: u64,
        chunks: Vec<Hash>,
        now: Instant,
    ) {
        let id = peer.id.clone();
        self.upsert_peer(peer, capacity, used, now);
        self.replace_inventory(&id, chunks);
    }

    /// A registration whose inventory comes in parts: the first is staged, and the copies
    /// the tracker knew stay until the last part arrives (see [`State::report_chunks`]).
    pub fn register_peer_in_parts(
        &mut self,
        peer: pb::PeerRef,
        capacity: u64,
        used: u64,
        first: Vec<Hash>,
        inventory_id: u64,
        now: Instant,
    ) -> Result<()> {
        let id = peer.id.clone();
        self.upsert_peer(peer, capacity, used, now);
        self.staging.remove(&id);
        self.stage(&id, inventory_id, first)
    }

    /// Add a part to a peer's staged inventory (a new id starts a new one).
    fn stage(&mut self, peer_id: &str, inventory_id: u64, part: Vec<Hash>) -> Result<()> {
        let staged = self
            .staging
            .entry(peer_id.to_string())
            .or_insert_with(|| (inventory_id, Vec::new()));
        if staged.0 != inventory_id {
            *staged = (inventory_id, Vec::new());
        }
        if staged.1.len() + part.len() > MAX_INVENTORY_CHUNKS {
            self.staging.remove(peer_id);
            return Err(Error::InvalidArgument(format!(
                "an inventory of more than {MAX_INVENTORY_CHUNKS} chunks"
            )));
        }
        staged.1.extend(part);
        Ok(())
    }

    /// Replace a peer's copies with `chunks` (a registration, or a full inventory).
    fn replace_inventory(&mut self, peer_id: &str, chunks: Vec<Hash>) {
        self.forget_inventory(peer_id);
        for h in &chunks {
            self.locations.add(peer_id, *h);
        }
        self.dirty.extend(chunks.iter().copied());
        self.journal_op(LocOp::Reset(peer_id.to_string()));
        for h in &chunks {
            self.journal_op(LocOp::Add(peer_id.to_string(), *h));
        }
    }

    /// Insert or update a peer from its registration, heard from now; its copies untouched.
    fn upsert_peer(&mut self, peer: pb::PeerRef, capacity: u64, used: u64, now: Instant) {
        self.last_registration = Some(now);
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
        self.heard_from(&peer.id);
        self.journal_seen(&peer.id);
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
                inventory_version: version,
            },
        );
    }

    fn forget_inventory(&mut self, peer_id: &str) {
        self.dirty
            .extend(self.locations.of(peer_id).iter().copied());
        self.locations.forget(peer_id);
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
        if !self.peers.contains_key(peer_id) {
            return false;
        }
        if self.locations.add(peer_id, h) {
            self.dirty.insert(h);
        }
        true
    }

    pub fn remove_location(&mut self, peer_id: &str, h: &Hash) {
        self.journal_op(LocOp::Remove(peer_id.to_string(), *h));
        self.drop_location(peer_id, h);
    }

    fn drop_location(&mut self, peer_id: &str, h: &Hash) {
        if self.locations.remove(peer_id, h) {
            self.dirty.insert(*h);
        }
    }

    /// Changes to a peer's copies. With `full`, `added` is its whole inventory — or, with
    /// `part` (`(inventory_id, last)`), one part of it, staged until the last one.
    pub fn report_chunks(
        &mut self,
        peer_id: &str,
        mut added: Vec<Hash>,
        removed: Vec<Hash>,
        full: bool,
        part: Option<(u64, bool)>,
    ) -> Result<()> {
        if !self.peers.contains_key(peer_id) {
            return Err(Error::NotFound(format!(
                "unknown peer {peer_id}: register first"
            )));
        }
        if let (true, Some((id, last))) = (full, part) {
            self.stage(peer_id, id, added)?;
            if !last {
                return Ok(());
            }
            added = self
                .staging
                .remove(peer_id)
                .map(|s| s.1)
                .unwrap_or_default();
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

    /// A heartbeat: the peer's stats, and whether its inventory must be sent again
    /// (`None`: an unknown peer, which must register). O(1): the digest is kept up to date.
    pub fn heartbeat(
        &mut self,
        peer_id: &str,
        beat: Beat<'_>,
        cfg: &TrackerConfig,
        now: Instant,
    ) -> Option<bool> {
        let said_goodbye = self
            .peers
            .get(peer_id)
            .is_some_and(|p| self.goodbye(p).is_some());
        let p = self.peers.get_mut(peer_id)?;
        let was_dead =
            said_goodbye || now.saturating_duration_since(p.last_seen) >= cfg.liveness.dead_after;
        p.last_seen = now;
        p.capacity = beat.capacity;
        p.used = beat.used;
        p.active_transfers = beat.active_transfers;
        self.journal_seen(peer_id);
        self.heard_from(peer_id);
        let held = self.locations.of(peer_id);
        // A digest of another form (an older peer) is not a mismatch: the count decides.
        let digest_differs = beat.digest.starts_with(shoal_common::hash::DIGEST_PREFIX)
            && held.digest() != beat.digest;
        // A peer back from the dead is reconciled, not trusted: ask for its full inventory.
        Some(was_dead || held.len() as u64 != beat.chunk_count || digest_differs)
    }

    pub fn inventory_digest(&self, peer_id: &str) -> Option<String> {
        self.peers.get(peer_id)?;
        Some(self.locations.of(peer_id).digest())
    }

    pub fn peer_info(&self, p: &PeerEntry, cfg: &TrackerConfig, now: Instant) -> pb::PeerInfo {
        pb::PeerInfo {
            peer: Some(p.peer_ref()),
            state: self.peer_state(p, cfg, now) as i32,
            capacity_bytes: p.capacity,
            used_bytes: p.used,
            chunks: self.locations.of(&p.id).len() as u64,
            active_transfers: p.active_transfers,
            last_heartbeat_ms_ago: now.saturating_duration_since(p.last_seen).as_millis() as u64,
        }
    }

    // ---- catalogue reads ----------------------------------------------------------

    pub fn summary(
        &self,
        name: &str,
        n: &NameRecord,
        cfg: &TrackerConfig,
        now: Instant,
    ) -> Option<pb::FileSummary> {
        let f = self.catalogue.file(&n.id)?;
        Some(self.file_summary(name, f, n.created_ms, cfg, now))
    }

    /// A file's summary under `name`; the file need not be in the catalogue yet.
    pub fn file_summary(
        &self,
        name: &str,
        f: &FileRecord,
        created_ms: i64,
        cfg: &TrackerConfig,
        now: Instant,
    ) -> pb::FileSummary {
        let min = f
            .chunks
            .iter()
            .map(|h| self.live_holders(h, cfg, now).len() as u32)
            .min();
        summarise(name, f, created_ms, min)
    }

    /// One page of names after `after` (see `paging::fill`).
    pub fn list(
        &self,
        query: Option<&str>,
        after: Option<&str>,
        size: usize,
        cfg: &TrackerConfig,
        now: Instant,
    ) -> crate::paging::Page<pb::FileSummary> {
        crate::paging::fill(self.catalogue.names_after(after), query, size, |name, n| {
            self.summary(name, n, cfg, now)
        })
    }

    pub fn detail(
        &self,
        name_or_id: &str,
        cfg: &TrackerConfig,
        now: Instant,
    ) -> Result<pb::FileDetail> {
        let (name, f) = self.catalogue.resolve(name_or_id)?;
        let names = self.catalogue.names_of(&f.id);
        let name = name.or_else(|| names.first().cloned()).unwrap_or_default();
        let record = self.catalogue.name(&name).cloned().unwrap_or(NameRecord {
            id: f.id,
            created_ms: f.created_ms,
        });
        // Holders are looked up once per chunk: the summary's minimum comes from them.
        let chunks: Vec<pb::ChunkReplicas> = f
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
        let min = chunks.iter().map(|c| c.replicas.len() as u32).min();
        let summary = self
            .catalogue
            .file(&record.id)
            .map(|f| summarise(&name, f, record.created_ms, min));
        Ok(pb::FileDetail {
            summary,
            chunks,
            names,
        })
    }

    /// Chunks that lost their last file: their copies are deleted at once, except those
    /// an upload in flight may still use — this replica's, and `elsewhere` (other
    /// replicas', from the shared store; `None` when it could not be read: then nothing
    /// is deleted now, and garbage collection finds them after its grace).
    pub fn collect_garbage(
        &mut self,
        garbage: Vec<Hash>,
        elsewhere: Option<&HashSet<Hash>>,
    ) -> Vec<Deletion> {
        if garbage.is_empty() {
            return Vec::new();
        }
        let in_flight = self.uploads.held_chunks();
        let mut by_peer: HashMap<String, Vec<Hash>> = HashMap::new();
        for h in garbage {
            self.placement_reasons.remove(&h);
            let held = elsewhere.is_none_or(|e| e.contains(&h)) || in_flight.contains(&h);
            if self.catalogue.is_referenced(&h) || held {
                continue;
            }
            for peer in self.locations.remove_chunk(&h) {
                self.journal_op(LocOp::Remove(peer.clone(), h));
                by_peer.entry(peer).or_default().push(h);
            }
        }
        by_peer
            .into_iter()
            .filter_map(|(peer_id, chunks)| {
                let addr = self.peers.get(&peer_id)?.addr.clone();
                Some(Deletion {
                    peer_id,
                    addr,
                    chunks,
                })
            })
            .collect()
    }
}

/// Chunks to evaluate, in shards by first byte: one set of millions would rehash all of
/// them, under the state lock, each time it grows (a register storm stalled a
/// registration for 0.7 s); a shard's growth costs 1/64 of that.
pub struct Dirty {
    shards: Vec<HashSet<Hash>>,
}

const DIRTY_SHARDS: usize = 64;

impl Default for Dirty {
    fn default() -> Self {
        Dirty {
            shards: (0..DIRTY_SHARDS).map(|_| HashSet::new()).collect(),
        }
    }
}

impl Dirty {
    pub fn insert(&mut self, h: Hash) -> bool {
        self.shards[h.0[0] as usize % DIRTY_SHARDS].insert(h)
    }

    pub fn contains(&self, h: &Hash) -> bool {
        self.shards[h.0[0] as usize % DIRTY_SHARDS].contains(h)
    }

    pub fn len(&self) -> usize {
        self.shards.iter().map(HashSet::len).sum()
    }

    pub fn is_empty(&self) -> bool {
        self.shards.iter().all(HashSet::is_empty)
    }

    pub fn iter(&self) -> impl Iterator<Item = &Hash> {
        self.shards.iter().flatten()
    }

    /// Every marked chunk, once.
    pub fn into_vec(self) -> Vec<Hash> {
        let mut out = Vec::with_capacity(self.len());
        for s in self.shards {
            out.extend(s);
        }
        out
    }
}

impl Extend<Hash> for Dirty {
    fn extend<I: IntoIterator<Item = Hash>>(&mut self, iter: I) {
        for h in iter {
            self.insert(h);
        }
    }
}

/// A file's summary, given the fewest live copies of any of its chunks (`None`: no chunks).
fn summarise(name: &str, f: &FileRecord, created_ms: i64, min: Option<u32>) -> pb::FileSummary {
    let replicas_min = min.unwrap_or(f.replicas);
    let status = if replicas_min == 0 {
        pb::FileStatus::Unavailable
    } else if replicas_min < f.replicas {
        pb::FileStatus::UnderReplicated
    } else {
        pb::FileStatus::Healthy
    };
    pb::FileSummary {
        name: name.to_string(),
        id: f.id.to_hex(),
        size: f.size,
        chunk_size: f.chunk_size,
        chunks: f.chunks.len() as u32,
        replicas_target: f.replicas,
        replicas_min,
        status: status as i32,
        created_unix_ms: created_ms,
    }
}

#[cfg(test)]
mod tests {
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
        st.report_chunks("p", vec![c], vec![], true, Some((7, false)))
            .unwrap();
        assert!(st.locations.has(&a) && !st.locations.has(&c));
        st.report_chunks("p", vec![], vec![], true, Some((7, true)))
            .unwrap();
        assert!(!st.locations.has(&a), "replaced at the last part");
        assert!(st.locations.has(&b) && st.locations.has(&c));
        assert_eq!(st.locations.of("p").len(), 2);
        // A part of another transfer starts over instead of mixing two inventories.
        st.report_chunks("p", vec![a], vec![], true, Some((8, false)))
            .unwrap();
        st.report_chunks("p", vec![], vec![], true, Some((9, true)))
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
}
