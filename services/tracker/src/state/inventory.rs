//! A peer's inventory as it reports it: whole at registration, or in parts, and
//! snapshotted at a write mark so that a report older than a deletion's answer cannot
//! bring the removed copy back (see `deleting`), and a report older than a copy stored
//! by a repair or an upload cannot drop it: the repair's answer and the upload's signed
//! receipt carry the peer's mark once the copy was stored, and a full inventory
//! snapshotted before that mark keeps it listed (else the chunk looked short, was
//! copied again elsewhere, and came back one copy over target).

use std::time::Duration;

use shoal_common::hash::Hash;
use shoal_proto::v1 as pb;
use tokio::time::Instant;

use super::{LocOp, State, WriteMark, MAX_INVENTORY_CHUNKS};
use crate::error::{Error, Result};

/// How long a stored copy outlives full inventories snapshotted before it was stored
/// (one is applied within a heartbeat call of being taken: far less).
pub const FRESH_FOR: Duration = Duration::from_secs(60);
/// Copies remembered per peer before the first pruning.
pub(super) const FRESH_PRUNE: usize = 4096;

/// Copies stored on one peer that a whole inventory may not list yet: by chunk, the
/// peer's write mark once stored and when the tracker learned of it.
#[derive(Debug, Default)]
pub struct Fresh {
    pub at: std::collections::HashMap<Hash, (WriteMark, Instant)>,
    /// Size past which the next insert drops what no report can predate any more
    /// (doubling: a commit of many chunks costs no quadratic scan).
    pub(super) prune_above: usize,
}

/// Whether a report snapshotted at `seen` lists a copy stored at `stored`.
fn covers(seen: WriteMark, stored: WriteMark) -> bool {
    seen.0 == stored.0 && seen.1 >= stored.1
}

/// A full inventory as a peer sent it: its chunks (all, or the first part when `id` is
/// non-zero) and its write mark when it was taken (`None` from a peer that sends none).
#[derive(Debug, Default)]
pub struct Snapshot {
    pub chunks: Vec<Hash>,
    pub id: u64,
    pub mark: Option<WriteMark>,
}

impl State {
    /// A registration: the whole inventory, or (`inventory_id` non-zero) its first part.
    pub fn register(
        &mut self,
        peer: pb::PeerRef,
        capacity: u64,
        used: u64,
        inventory: Snapshot,
        now: Instant,
    ) -> Result<()> {
        let Snapshot { chunks, id, mark } = inventory;
        if id == 0 {
            let peer_id = peer.id.clone();
            self.upsert_peer(peer, capacity, used, now);
            self.replace_inventory(&peer_id, chunks, mark, now);
            Ok(())
        } else {
            self.register_peer_in_parts(peer, capacity, used, chunks, id, now)
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
        self.replace_inventory(&id, chunks, None, now);
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

    /// Replace a peer's copies with `chunks` (a registration), snapshotted at `mark`:
    /// copies under deletion it may predate stay out (see [`State::report_masked`]).
    fn replace_inventory(
        &mut self,
        peer_id: &str,
        mut chunks: Vec<Hash>,
        mark: Option<WriteMark>,
        now: Instant,
    ) {
        if !self.deleting.is_empty() {
            chunks.retain(|h| !self.report_masked(peer_id, h, mark, now));
        }
        chunks.extend(self.predated(peer_id, mark, now));
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

    /// Changes to a peer's copies. With `full`, `added` is its whole inventory — or, with
    /// `part` (`(inventory_id, last)`), one part of it, staged until the last one —
    /// snapshotted at `mark` (see [`State::report_masked`]).
    pub fn report_chunks(
        &mut self,
        peer_id: &str,
        mut added: Vec<Hash>,
        removed: Vec<Hash>,
        full: bool,
        part: Option<(u64, bool)>,
        mark: Option<WriteMark>,
    ) -> Result<()> {
        if !self.peers.contains_key(peer_id) {
            return Err(Error::NotFound(format!(
                "unknown peer {peer_id}: register first"
            )));
        }
        if let (true, Some((id, last))) = (full, part) {
            self.stage(peer_id, id, added)?;
            if !last {
                self.refresh(peer_id);
                return Ok(());
            }
            added = self
                .staging
                .remove(peer_id)
                .map(|s| s.1)
                .unwrap_or_default();
        }
        let now = Instant::now();
        if full {
            self.forget_inventory(peer_id);
            self.journal_op(LocOp::Reset(peer_id.to_string()));
        }
        if full {
            added.extend(self.predated(peer_id, mark, now));
        }
        for h in added {
            if !self.report_masked(peer_id, &h, mark, now) {
                self.add_location(peer_id, h);
            }
        }
        for h in removed {
            self.remove_location(peer_id, &h);
        }
        if full && part.is_some() {
            // The last part of an inventory sent in parts, applied: a sign of life (a big
            // one may take longer than dead_after to send and apply).
            self.refresh(peer_id);
        }
        Ok(())
    }

    /// A repair or an upload (its signed receipt) stored `h` on `peer_id`, whose write
    /// mark was `mark` once it had (`None` from a peer that sends none): listed now, and
    /// through full inventories snapshotted before `mark`.
    pub fn add_stored(&mut self, peer_id: &str, h: Hash, mark: Option<WriteMark>, now: Instant) {
        if !self.add_location(peer_id, h) {
            return;
        }
        let Some(mark) = mark else { return };
        // A peer sends a whole inventory only after a heartbeat's answer asks for it,
        // snapshotted then: a copy its last heartbeat's mark covers is in every one to
        // come (most of a big upload's copies, stored long before its commit).
        let heard = self.peers.get(peer_id).map(|p| p.write_mark);
        if heard.is_some_and(|seen| covers(seen, mark)) {
            return;
        }
        let fresh = self.fresh.entry(peer_id.to_string()).or_default();
        if fresh.at.len() >= fresh.prune_above {
            fresh.at.retain(|_, (stored, at)| {
                now.saturating_duration_since(*at) < FRESH_FOR
                    && !heard.is_some_and(|seen| covers(seen, *stored))
            });
            fresh.prune_above = (fresh.at.len() * 2).max(FRESH_PRUNE);
        }
        fresh.at.insert(h, (mark, now));
    }

    /// A full inventory snapshotted at `mark` is replacing `peer_id`'s copies: the copies
    /// stored after that mark, which it may not list yet, and are not being
    /// deleted. The ones it covers are forgotten (it is the truth for them).
    fn predated(&mut self, peer_id: &str, mark: Option<WriteMark>, now: Instant) -> Vec<Hash> {
        let Some(fresh) = self.fresh.get_mut(peer_id) else {
            return Vec::new();
        };
        fresh.at.retain(|_, (stored, at)| {
            now.saturating_duration_since(*at) < FRESH_FOR
                && mark.is_some_and(|seen| seen.0 == stored.0 && !covers(seen, *stored))
        });
        let kept: Vec<Hash> = fresh.at.keys().copied().collect();
        if kept.is_empty() {
            self.fresh.remove(peer_id);
        }
        kept.into_iter()
            .filter(|h| !self.deleting.contains_key(&(peer_id.to_string(), *h)))
            .collect()
    }

    /// A part of a big inventory counts as a sign of life, on this replica only and
    /// never over a goodbye (parts still arriving from a peer that said it stopped).
    fn refresh(&mut self, peer_id: &str) {
        let said_goodbye = self
            .peers
            .get(peer_id)
            .is_some_and(|p| self.goodbye(p).is_some());
        if let (false, Some(p)) = (said_goodbye, self.peers.get_mut(peer_id)) {
            p.last_seen = p.last_seen.max(Instant::now());
        }
    }
}
