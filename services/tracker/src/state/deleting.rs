//! Deletions sent to peers and not yet settled. Until the peer answers (and
//! [`DELETION_SETTLE`] after, for reports already on their way), or [`DELETION_MASK`]
//! if it never does, the copy ordered removed may still be on the peer's disk or may
//! vanish any moment, so an inventory report listing it does not count, nor a repair
//! copy the target "already had".
//!
//! A store receipt does count: a deletion carries the peer's write mark as the tracker
//! last heard it before deciding, and the peer spares every chunk written or
//! acknowledged after that mark, so a copy a new upload stored there survives a
//! deletion decided before it (see `ChunkStore::delete_unless_written_after`). No
//! clocks, no windows: however late the deletion arrives.

use std::time::Duration;

use shoal_common::hash::Hash;
use tokio::time::Instant;

use super::State;

/// How long an unanswered deletion masks the copy in inventory reports.
pub const DELETION_MASK: Duration = Duration::from_secs(30);
/// How long an answered deletion still masks it (reports sent before the answer).
pub const DELETION_SETTLE: Duration = Duration::from_secs(2);

/// Where a peer's sequence of chunk writes stood in its last heartbeat: `(boot, seq)`
/// (see `pb::WriteMark`). `(0, 0)` until one says: the peer then spares every write of
/// its current process.
pub type WriteMark = (u64, u64);

/// Chunks to delete on one peer.
#[derive(Debug, Clone, PartialEq)]
pub struct Deletion {
    pub peer_id: String,
    pub addr: String,
    pub chunks: Vec<Hash>,
    /// The peer's write mark when the deletion was decided: later writes are spared.
    pub after: WriteMark,
}

impl State {
    /// A deletion of `chunks` on `peer_id`, decided now (`None` for an unknown peer).
    pub fn deletion(&self, peer_id: &str, chunks: Vec<Hash>) -> Option<Deletion> {
        let p = self.peers.get(peer_id)?;
        Some(Deletion {
            peer_id: peer_id.to_string(),
            addr: p.addr.clone(),
            chunks,
            after: p.write_mark,
        })
    }

    /// Remember deletions about to be sent (and forget settled ones).
    pub fn note_deletions(&mut self, deletions: &[Deletion], now: Instant) {
        self.deleting.retain(|_, until| *until > now);
        for d in deletions {
            for h in &d.chunks {
                self.deleting
                    .insert((d.peer_id.clone(), *h), now + DELETION_MASK);
            }
        }
    }

    /// A peer answered a deletion: what it removed settles soon; what it spared is
    /// still there and counts again at once (a new upload may have stored it).
    pub fn deletion_answered(&mut self, d: &Deletion, spared: &[Hash], now: Instant) {
        for h in &d.chunks {
            let key = (d.peer_id.clone(), *h);
            if spared.contains(h) {
                self.deleting.remove(&key);
            } else if let Some(until) = self.deleting.get_mut(&key) {
                *until = (*until).min(now + DELETION_SETTLE);
            }
        }
    }

    /// Whether a deletion of `h` on `peer_id` is still unsettled.
    pub fn deletion_pending(&self, peer_id: &str, h: &Hash, now: Instant) -> bool {
        self.deleting
            .get(&(peer_id.to_string(), *h))
            .is_some_and(|until| *until > now)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_answer_settles_removed_copies_and_unmasks_spared_ones() {
        let mut st = State::default();
        let (a, b) = (Hash::of(b"a"), Hash::of(b"b"));
        let d = Deletion {
            peer_id: "p".into(),
            addr: String::new(),
            chunks: vec![a, b],
            after: (0, 0),
        };
        let now = Instant::now();
        st.note_deletions(std::slice::from_ref(&d), now);
        assert!(st.deletion_pending("p", &a, now + DELETION_SETTLE * 2));
        st.deletion_answered(&d, &[b], now);
        assert!(!st.deletion_pending("p", &b, now), "spared: counts at once");
        assert!(
            st.deletion_pending("p", &a, now),
            "removed: masked while settling"
        );
        assert!(!st.deletion_pending("p", &a, now + DELETION_SETTLE));
        st.note_deletions(&[], now + DELETION_SETTLE);
        assert!(st.deleting.is_empty(), "settled entries are forgotten");
    }
}
