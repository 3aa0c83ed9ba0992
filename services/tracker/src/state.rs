//! The tracker's state in memory: catalogue (mirrored to the store), peers and their
//! liveness, where every chunk lives, and uploads in flight. Every method is
//! synchronous and runs under one lock; callers never hold it across an await.

use std::collections::{HashMap, HashSet};

use shoal_common::hash::Hash;
use shoal_proto::v1 as pb;
use tokio::time::Instant;

use crate::catalogue::Catalogue;
use crate::config::TrackerConfig;
use crate::error::Result;
use crate::locations::Locations;
use crate::store::{Change, FileRecord, Loaded, NameRecord};
use crate::uploads::Uploads;

mod deleting;
mod dirty;
mod inventory;
mod liveness;
mod views;

pub use deleting::{Answer, Deletion, Masked, WriteMark, DELETION_MASK};
pub use dirty::Dirty;
pub use inventory::{Fresh, Snapshot};

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
    pub write_mark: WriteMark,
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
    /// Copies the tracker has told a peer to delete: an inventory report that races the
    /// deletion must not bring them back (see `deleting`).
    pub deleting: HashMap<(String, Hash), Masked>,
    /// Copies a repair or an upload stored, by peer, with the peer's write mark once
    /// stored: a full inventory snapshotted before that mark must not drop them.
    pub fresh: HashMap<String, inventory::Fresh>,
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
    pub mark: WriteMark,
}

/// The most chunks one peer's inventory may have (staged parts included).
pub const MAX_INVENTORY_CHUNKS: usize = 50_000_000;

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
        match &c {
            Change::PutFile(f) => self.dirty.extend(f.chunks.iter().copied()),
            // A removed file may have held up the target of chunks other files still
            // reference: those may be above target now (garbage is marked below).
            Change::DeleteFile(id) => {
                if let Some(f) = self.catalogue.file(id) {
                    self.dirty.extend(f.chunks.iter().copied());
                }
            }
            _ => {}
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

    // ---- peers (registrations and inventories: `inventory`) -------------------

    /// Insert or update a peer from its registration, heard from now; its copies untouched.
    fn upsert_peer(&mut self, peer: pb::PeerRef, capacity: u64, used: u64, now: Instant) {
        self.last_registration = Some(now);
        // Kept through a registration (a resync): a mark of the peer's previous process
        // spares every recent write, and the next heartbeat brings the current one.
        let (draining, version, write_mark) =
            self.peers.get(&peer.id).map_or((false, -1, (0, 0)), |p| {
                (p.draining, p.inventory_version, p.write_mark)
            });
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
                write_mark,
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
        if let Some(fresh) = self.fresh.get_mut(peer_id) {
            fresh.at.remove(h);
        }
        if self.locations.remove(peer_id, h) {
            self.dirty.insert(*h);
        }
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
        p.write_mark = beat.mark;
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
            .filter_map(|(peer_id, chunks)| self.deletion(&peer_id, chunks))
            .collect()
    }
}

#[cfg(test)]
mod tests;
