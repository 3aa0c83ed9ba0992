//! Deletions sent to peers and not yet settled. Until the peer answers (and
//! [`DELETION_SETTLE`] after, for reports already on their way), or [`DELETION_MASK`]
//! if it never does, the copy ordered removed may still be on the peer's disk or may
//! vanish any moment, so an inventory report listing it does not count, nor a repair
//! copy the target "already had".
//!
//! A store receipt does count: the peer spares a chunk written or acknowledged within
//! [`spare_window`] of the deletion's arrival, so a copy a new upload stored there
//! survives a deletion decided before it (see `ChunkStore::delete_unless_written_within`).

use std::time::Duration;

use shoal_common::hash::Hash;
use tokio::time::Instant;

use super::State;

/// How long an unanswered deletion masks the copy in inventory reports.
pub const DELETION_MASK: Duration = Duration::from_secs(30);
/// How long an answered deletion still masks it (reports sent before the answer).
pub const DELETION_SETTLE: Duration = Duration::from_secs(2);
/// How long a deletion request may take before the tracker gives up on its answer.
pub const DELETION_TIMEOUT: Duration = Duration::from_secs(5);

/// How far back a peer spares recent writes from a deletion decided `decided_ago`
/// before it is sent: the decision, the request's whole timeout, and a second more.
/// Any store after the decision reaches the peer inside this window.
pub fn spare_window(decided_ago: Duration) -> Duration {
    decided_ago + DELETION_TIMEOUT + Duration::from_secs(1)
}

/// Chunks to delete on one peer.
#[derive(Debug, Clone, PartialEq)]
pub struct Deletion {
    pub peer_id: String,
    pub addr: String,
    pub chunks: Vec<Hash>,
}

impl State {
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
