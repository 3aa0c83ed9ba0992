//! Uploads in flight: begun, maybe placed, not yet committed, aborted or expired.
//!
//! An upload's chunks may be on peers before any file references them, so garbage
//! collection keeps every chunk an upload in flight may still commit. With PostgreSQL the
//! same holds across replicas: placed uploads are also recorded in the shared database
//! (see [`crate::pg::PgStore::hold_upload`]), and the leader honours every replica's.

use std::collections::{HashMap, HashSet};

use shoal_common::hash::Hash;
use tokio::time::Instant;

use crate::error::{Error, Result};

/// Who began an upload, for the caps: a digest of the token presented (or, with
/// auth off, of the remote address); see [`crate::badreport::caller`].
pub type Owner = [u8; 32];

#[derive(Debug)]
pub struct Upload {
    pub name: String,
    /// The file's size; in a streaming upload, the bytes placed so far.
    pub size: u64,
    /// A streaming upload: the most it may hold (windows are placed as the content
    /// arrives, and the id is named at commit). `None`: the size is exact.
    pub streaming: Option<u64>,
    /// Bytes and copies placed on each peer by this upload's earlier windows: charged
    /// to the candidates of the next one, so a stream spreads over equal peers as one
    /// whole-file placement does.
    pub charged: HashMap<String, (u64, u64)>,
    pub chunk_size: u64,
    pub replicas: u32,
    pub overwrite: bool,
    pub expires_at: Instant,
    pub file_id: Option<Hash>,
    pub chunks: Vec<Hash>,
    /// Peers a client saw fail in this upload: placement avoids them for the rest of
    /// it. A hint scoped to the upload, never proof (liveness and copies are untouched).
    pub avoid: HashSet<String>,
    /// Who began it (counted against `upload.max_per_token`).
    pub owner: Owner,
    /// When it began: renewals never carry it past `upload.max_lifetime` from here.
    pub begun: Instant,
    /// The (chunk index, peer) copies receipts proved so far: a renewal needs a new one.
    pub proven: HashSet<(u32, String)>,
}

/// This replica's uploads in flight, by id.
#[derive(Debug, Default)]
pub struct Uploads {
    by_id: HashMap<String, Upload>,
    /// Uploads in flight per owner (owners with none are not kept).
    per_owner: HashMap<Owner, usize>,
}

/// How many uploads may be in flight on this replica.
#[derive(Debug, Clone, Copy)]
pub struct Caps {
    pub overall: usize,
    pub per_owner: usize,
}

/// What a refused caller is told to wait before trying again.
pub const RETRY_AFTER_SECS: u64 = 5;

impl Uploads {
    /// Begin `upload` unless that would pass a cap: RESOURCE_EXHAUSTED with a hint.
    pub fn begin(&mut self, id: String, upload: Upload, caps: Caps) -> Result<()> {
        let mine = self.per_owner.get(&upload.owner).copied().unwrap_or(0);
        if mine >= caps.per_owner {
            return Err(Error::ResourceExhausted(format!(
                "{mine} uploads of this token are in flight, the most allowed \
                 (SHOAL_UPLOAD__MAX_PER_TOKEN); retry in {RETRY_AFTER_SECS}s, when one ends"
            )));
        }
        if self.by_id.len() >= caps.overall {
            return Err(Error::ResourceExhausted(format!(
                "{} uploads are in flight on this tracker, the most allowed \
                 (SHOAL_UPLOAD__MAX_IN_FLIGHT); retry in {RETRY_AFTER_SECS}s",
                self.by_id.len()
            )));
        }
        *self.per_owner.entry(upload.owner).or_default() += 1;
        if let Some(old) = self.by_id.insert(id, upload) {
            self.forget_owner(&old.owner); // ids are random: never in practice
        }
        Ok(())
    }

    fn forget_owner(&mut self, owner: &Owner) {
        if let Some(n) = self.per_owner.get_mut(owner) {
            *n -= 1;
            if *n == 0 {
                self.per_owner.remove(owner);
            }
        }
    }

    pub fn get(&self, id: &str) -> Option<&Upload> {
        self.by_id.get(id)
    }

    pub fn get_mut(&mut self, id: &str) -> Option<&mut Upload> {
        self.by_id.get_mut(id)
    }

    /// Committed or aborted: its chunks are no longer held by it.
    pub fn end(&mut self, id: &str) -> Option<Upload> {
        let up = self.by_id.remove(id)?;
        self.forget_owner(&up.owner);
        Some(up)
    }

    /// Drop the uploads whose time ran out at `now`; returns how many.
    pub fn expire(&mut self, now: Instant) -> usize {
        let gone: Vec<String> = self
            .by_id
            .iter()
            .filter(|(_, u)| u.expires_at <= now)
            .map(|(id, _)| id.clone())
            .collect();
        for id in &gone {
            self.end(id);
        }
        gone.len()
    }

    pub fn len(&self) -> usize {
        self.by_id.len()
    }

    pub fn is_empty(&self) -> bool {
        self.by_id.is_empty()
    }

    /// Every chunk an upload in flight here may still commit.
    pub fn held_chunks(&self) -> HashSet<Hash> {
        self.by_id
            .values()
            .flat_map(|u| u.chunks.iter().copied())
            .collect()
    }
}

#[cfg(test)]
impl Upload {
    /// A placed upload of `chunks` by `owner`, one byte per chunk, for tests.
    pub fn for_test(expires_at: Instant, chunks: Vec<Hash>, owner: Owner) -> Upload {
        Upload {
            name: "f".into(),
            size: chunks.len() as u64,
            streaming: None,
            charged: HashMap::new(),
            chunk_size: 1,
            replicas: 2,
            overwrite: false,
            expires_at,
            file_id: None,
            chunks,
            avoid: HashSet::new(),
            owner,
            begun: Instant::now(),
            proven: HashSet::new(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    const CAPS: Caps = Caps {
        overall: 100,
        per_owner: 100,
    };

    fn upload(expires_at: Instant, chunks: &[&[u8]]) -> Upload {
        let chunks: Vec<Hash> = chunks.iter().map(|c| Hash::of(c)).collect();
        Upload::for_test(expires_at, chunks, [0; 32])
    }

    #[tokio::test(start_paused = true)]
    async fn expired_uploads_go_and_release_their_chunks() {
        let now = Instant::now();
        let mut u = Uploads::default();
        u.begin(
            "old".into(),
            upload(now + Duration::from_secs(1), &[b"a", b"b"]),
            CAPS,
        )
        .unwrap();
        u.begin(
            "new".into(),
            upload(now + Duration::from_secs(60), &[b"b", b"c"]),
            CAPS,
        )
        .unwrap();
        assert_eq!(u.held_chunks().len(), 3);
        assert_eq!(u.expire(now), 0, "nothing has expired yet");
        tokio::time::advance(Duration::from_secs(2)).await;
        assert_eq!(u.expire(Instant::now()), 1);
        assert!(u.get("old").is_none() && u.get("new").is_some());
        let held = u.held_chunks();
        assert!(
            !held.contains(&Hash::of(b"a")),
            "the expired upload's own chunk is released"
        );
        assert!(held.contains(&Hash::of(b"b")) && held.contains(&Hash::of(b"c")));
        assert!(u.end("new").is_some());
        assert!(u.is_empty() && u.held_chunks().is_empty());
    }

    #[tokio::test(start_paused = true)]
    async fn caps_count_per_owner_and_overall_and_free_up_when_uploads_end() {
        let caps = Caps {
            overall: 3,
            per_owner: 2,
        };
        let later = Instant::now() + Duration::from_secs(60);
        let (a, b) = ([1; 32], [2; 32]);
        let mut u = Uploads::default();
        let by = |owner| Upload::for_test(later, Vec::new(), owner);
        u.begin("a1".into(), by(a), caps).unwrap();
        u.begin("a2".into(), by(a), caps).unwrap();
        let e = u.begin("a3".into(), by(a), caps).unwrap_err();
        assert!(
            matches!(&e, Error::ResourceExhausted(m) if m.contains("MAX_PER_TOKEN")),
            "{e}"
        );
        u.begin("b1".into(), by(b), caps).unwrap();
        let e = u.begin("b2".into(), by(b), caps).unwrap_err();
        assert!(
            matches!(&e, Error::ResourceExhausted(m) if m.contains("MAX_IN_FLIGHT")),
            "{e}"
        );
        let status = tonic::Status::from(e);
        assert_eq!(status.code(), tonic::Code::ResourceExhausted);
        assert!(
            status.metadata().get("retry-after").is_some(),
            "a retry hint"
        );
        // Ending and expiring both give the slot back.
        u.end("a1").unwrap();
        u.begin("a3".into(), by(a), caps).unwrap();
        u.begin(
            "x".into(),
            Upload::for_test(Instant::now(), Vec::new(), a),
            caps,
        )
        .unwrap_err();
        tokio::time::advance(Duration::from_secs(61)).await;
        assert_eq!(u.expire(Instant::now()), 3);
        assert!(u.per_owner.is_empty(), "no owner left counted");
        u.begin("a4".into(), by(a), caps).unwrap();
    }
}
