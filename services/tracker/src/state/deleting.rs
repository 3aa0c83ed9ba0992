//! Deletions sent to peers and not yet settled. The copy ordered removed may still be
//! on the peer's disk or vanish any moment, so until the peer answers an inventory
//! report listing it does not count, nor a repair copy the target "already had".
//!
//! A store receipt does count: a deletion carries the peer's write mark as the tracker
//! last heard it before deciding, and the peer spares every chunk written or
//! acknowledged after that mark, so a copy a new upload stored there survives a
//! deletion decided before it (see `ChunkStore::delete_unless_written_after`). No
//! clocks, no windows: however late the deletion arrives. The answer is the truth for
//! what it did not spare: a copy listed again meanwhile (a receipt for a chunk the
//! peer acknowledged before the mark) is dropped.
//!
//! The answer also carries the peer's write mark after the deletion. An inventory
//! snapshotted before it (a report's mark is taken before its snapshot) may still list
//! the removed copy, however late it arrives, so it does not count; one snapshotted
//! after does. A peer that sends no marks (an older one) is trusted
//! [`DELETION_SETTLE`] after its answer, and an unanswered deletion masks the copy for
//! [`DELETION_MASK`].
//!
//! A deletion that failed (no answer: the peer was down, or slow) may or may not have
//! happened, so the copy is not listed; it is sent again, with the mark it was decided
//! at, once the peer is alive, and that answer settles it. Deleting a copy the tracker
//! no longer counts never lowers a count it relies on, and what was stored since the
//! first decision is spared as before.

use std::time::Duration;

use std::collections::HashMap;

use shoal_common::hash::Hash;
use tokio::time::Instant;

use super::{PeerEntry, State};

/// How long an unanswered deletion masks the copy in inventory reports, and how long
/// an answered one is remembered.
pub const DELETION_MASK: Duration = Duration::from_secs(30);
/// How long an answered deletion masks the copy in reports without a write mark, and
/// in repair copies (reports and results sent before the answer).
pub const DELETION_SETTLE: Duration = Duration::from_secs(2);
/// How long after a failed deletion it is sent again (if the peer is alive by then).
pub const DELETION_RETRY: Duration = Duration::from_secs(1);

/// Where a peer's sequence of chunk writes stood: `(boot, seq)` (see `pb::WriteMark`).
/// `(0, 0)` until one says: the peer then spares every write of its current process.
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

/// A copy under deletion, as the tracker knows it.
#[derive(Debug, Clone, Copy)]
pub struct Masked {
    /// When the entry is forgotten (and reports count again whatever their mark).
    until: Instant,
    /// The peer's answer: when, and its write mark after deleting (if it sends one).
    answered: Option<(Instant, Option<WriteMark>)>,
    /// The deletion failed: the mark it was decided at, and when it failed.
    failed: Option<(WriteMark, Instant)>,
}

/// What the peer said of a deletion.
#[derive(Debug, Clone, Default)]
pub struct Answer {
    /// Kept: written or acknowledged since the deletion was decided.
    pub spared: Vec<Hash>,
    /// The peer's write mark after deleting (`None` from a peer that sends none).
    pub mark: Option<WriteMark>,
}

impl Masked {
    /// Whether the deletion failed and waits to be sent again.
    pub fn failed(&self) -> bool {
        self.failed.is_some()
    }
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
        self.deleting.retain(|_, m| m.until > now);
        for d in deletions {
            for h in &d.chunks {
                let m = Masked {
                    until: now + DELETION_MASK,
                    answered: None,
                    failed: None,
                };
                self.deleting.insert((d.peer_id.clone(), *h), m);
            }
        }
    }

    /// A peer answered a deletion (`None`: it did not, or failed; the copies may be gone
    /// or not). What it spared is still there and counts again at once (a new upload may
    /// have stored it); the rest is not listed, whatever was counted meanwhile, and
    /// reports snapshotted before the answer's mark do not bring it back.
    pub fn deletion_answered(&mut self, d: &Deletion, answer: Option<&Answer>, now: Instant) {
        for h in &d.chunks {
            let key = (d.peer_id.clone(), *h);
            if answer.is_some_and(|a| a.spared.contains(h)) {
                self.deleting.remove(&key);
                continue;
            }
            if self.locations.of(&d.peer_id).contains(h) {
                self.remove_location(&d.peer_id, h);
            }
            let entry = self.deleting.entry(key).or_insert(Masked {
                until: now + DELETION_MASK,
                answered: None,
                failed: None,
            });
            entry.until = now + DELETION_MASK;
            match answer {
                Some(a) => entry.answered = Some((now, a.mark)),
                None => entry.failed = Some((d.after, now)),
            }
        }
    }

    /// Failed deletions to send again, as decided (same mark), to the peers `alive`
    /// says are up, [`DELETION_RETRY`] after they failed.
    pub fn deletion_retries(
        &mut self,
        alive: impl Fn(&PeerEntry) -> bool,
        now: Instant,
    ) -> Vec<Deletion> {
        let mut by: HashMap<(String, WriteMark), Vec<Hash>> = HashMap::new();
        for ((peer_id, h), m) in self.deleting.iter_mut() {
            let Some((after, at)) = m.failed else {
                continue;
            };
            if m.until <= now || now < at + DELETION_RETRY {
                continue;
            }
            if !self.peers.get(peer_id).is_some_and(&alive) {
                continue;
            }
            m.failed = None;
            by.entry((peer_id.clone(), after)).or_default().push(*h);
        }
        by.into_iter()
            .filter_map(|((peer_id, after), chunks)| {
                let addr = self.peers.get(&peer_id)?.addr.clone();
                Some(Deletion {
                    peer_id,
                    addr,
                    chunks,
                    after,
                })
            })
            .collect()
    }

    /// Whether a repair copy of `h` on `peer_id` may be one a deletion is removing:
    /// unanswered, or answered within [`DELETION_SETTLE`].
    pub fn deletion_pending(&self, peer_id: &str, h: &Hash, now: Instant) -> bool {
        self.deleting
            .get(&(peer_id.to_string(), *h))
            .is_some_and(|m| {
                m.until > now && m.answered.is_none_or(|(at, _)| now < at + DELETION_SETTLE)
            })
    }

    /// Whether an inventory report by `peer_id` snapshotted at `mark` (`None`: it sends
    /// none) must not list `h`: a deletion of it is unanswered, or was answered at a
    /// later mark of the same process.
    pub fn report_masked(
        &self,
        peer_id: &str,
        h: &Hash,
        mark: Option<WriteMark>,
        now: Instant,
    ) -> bool {
        let Some(m) = self.deleting.get(&(peer_id.to_string(), *h)) else {
            return false;
        };
        if m.until <= now {
            return false;
        }
        match (m.answered, mark) {
            (None, _) => true,
            (Some((_, Some(done))), Some(seen)) => seen.0 == done.0 && seen.1 < done.1,
            (Some((at, _)), _) => now < at + DELETION_SETTLE,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn registered(id: &str, chunks: Vec<Hash>) -> State {
        let mut st = State::default();
        let peer = shoal_proto::v1::PeerRef {
            id: id.into(),
            addr: "127.0.0.1:1".into(),
            zone: "a".into(),
        };
        st.register_peer(peer, 1 << 30, 0, chunks, Instant::now());
        st
    }

    fn deletion(chunks: Vec<Hash>) -> Deletion {
        Deletion {
            peer_id: "p".into(),
            addr: String::new(),
            chunks,
            after: (7, 3),
        }
    }

    #[test]
    fn an_answer_unmasks_spared_copies_and_orders_reports_by_its_mark() {
        let (a, b) = (Hash::of(b"a"), Hash::of(b"b"));
        let mut st = registered("p", vec![]);
        let d = deletion(vec![a, b]);
        let now = Instant::now();
        st.note_deletions(std::slice::from_ref(&d), now);
        let late = now + DELETION_SETTLE * 10;
        assert!(st.report_masked("p", &a, Some((7, 99)), late), "unanswered");
        let answer = Answer {
            spared: vec![b],
            mark: Some((7, 10)),
        };
        st.deletion_answered(&d, Some(&answer), now);
        assert!(
            !st.report_masked("p", &b, Some((7, 1)), now),
            "spared: counts at once"
        );
        assert!(
            st.report_masked("p", &a, Some((7, 9)), late),
            "a snapshot before the deletion never brings the copy back, however late"
        );
        assert!(
            !st.report_masked("p", &a, Some((7, 10)), now),
            "one after it counts"
        );
        assert!(
            !st.report_masked("p", &a, Some((8, 1)), now),
            "so does a new process's"
        );
        assert!(
            st.report_masked("p", &a, None, now),
            "no mark: masked while settling"
        );
        assert!(!st.report_masked("p", &a, None, now + DELETION_SETTLE));
        assert!(st.deletion_pending("p", &a, now) && !st.deletion_pending("p", &a, late));
        st.note_deletions(&[], now + DELETION_MASK);
        assert!(st.deleting.is_empty(), "settled entries are forgotten");
    }

    #[test]
    fn a_copy_counted_while_its_deletion_was_in_flight_goes_unless_spared() {
        let (a, b) = (Hash::of(b"a"), Hash::of(b"b"));
        let mut st = registered("p", vec![]);
        let d = deletion(vec![a, b]);
        let now = Instant::now();
        st.note_deletions(std::slice::from_ref(&d), now);
        // Receipts for both arrive before the answer (acknowledged before the mark, or after).
        st.add_location("p", a);
        st.add_location("p", b);
        let answer = Answer {
            spared: vec![b],
            mark: Some((7, 10)),
        };
        st.deletion_answered(&d, Some(&answer), now);
        let held = st.locations.of("p");
        assert!(!held.contains(&a), "the peer removed it: not listed");
        assert!(held.contains(&b), "the peer kept it: listed");
        // No answer at all: the copy may be gone, so it is not listed either.
        let c = Hash::of(b"c");
        let d = deletion(vec![c]);
        st.note_deletions(std::slice::from_ref(&d), now);
        st.add_location("p", c);
        st.deletion_answered(&d, None, now);
        assert!(!st.locations.of("p").contains(&c));
        assert!(st.report_masked("p", &c, Some((7, 99)), now));
    }

    #[test]
    fn a_failed_deletion_is_sent_again_as_decided_once_the_peer_is_up() {
        let (a, b) = (Hash::of(b"a"), Hash::of(b"b"));
        let mut st = registered("p", vec![a, b]);
        let d = deletion(vec![a, b]);
        let now = Instant::now();
        st.note_deletions(std::slice::from_ref(&d), now);
        assert!(st
            .deletion_retries(|_| true, now + DELETION_MASK / 2)
            .is_empty());
        st.deletion_answered(&d, None, now);
        let later = now + DELETION_RETRY;
        assert!(st.deletion_retries(|_| true, now).is_empty(), "not at once");
        assert!(
            st.deletion_retries(|_| false, later).is_empty(),
            "peer down"
        );
        let mut again = st.deletion_retries(|_| true, later);
        assert_eq!(again.len(), 1);
        let r = again.remove(0);
        assert_eq!(
            (r.peer_id.as_str(), r.after),
            ("p", d.after),
            "the mark decided"
        );
        assert_eq!(r.chunks.len(), 2);
        assert!(st.deletion_retries(|_| true, later).is_empty(), "sent once");
        // Until its answer, even a new process's inventory does not list the copies.
        st.note_deletions(std::slice::from_ref(&r), later);
        assert!(st.report_masked("p", &a, Some((8, 1)), later));
        let answer = Answer {
            spared: vec![b],
            mark: Some((8, 2)),
        };
        st.deletion_answered(&r, Some(&answer), later);
        assert!(!st.report_masked("p", &a, Some((8, 2)), later), "settled");
        assert!(!st.report_masked("p", &b, Some((8, 1)), later), "spared");
        assert!(st
            .deletion_retries(|_| true, later + DELETION_MASK)
            .is_empty());
    }
}
