//! Deletions sent to peers and not yet old: until [`DELETION_MASK`] has passed, the
//! copy they order removed may still be on the peer's disk or may vanish any moment,
//! so nothing that says it is there counts — neither an inventory report, nor a store
//! receipt (a peer that already had the chunk acknowledges it at once), nor a repair
//! copy the target "already had".

use shoal_common::hash::Hash;
use tokio::time::Instant;

use super::State;

/// How long an ordered deletion masks the copy in inventory reports.
pub const DELETION_MASK: std::time::Duration = std::time::Duration::from_secs(30);

/// Chunks to delete on one peer.
#[derive(Debug, Clone, PartialEq)]
pub struct Deletion {
    pub peer_id: String,
    pub addr: String,
    pub chunks: Vec<Hash>,
}

impl State {
    /// Remember deletions about to be sent (and forget ones past the mask).
    pub fn note_deletions(&mut self, deletions: &[Deletion], now: Instant) {
        self.deleting
            .retain(|_, t| now.saturating_duration_since(*t) < DELETION_MASK);
        for d in deletions {
            for h in &d.chunks {
                self.deleting.insert((d.peer_id.clone(), *h), now);
            }
        }
    }

    /// Whether a deletion of `h` on `peer_id` went out less than [`DELETION_MASK`] ago.
    pub fn deletion_pending(&self, peer_id: &str, h: &Hash, now: Instant) -> bool {
        self.deleting
            .get(&(peer_id.to_string(), *h))
            .is_some_and(|t| now.saturating_duration_since(*t) < DELETION_MASK)
    }
}
