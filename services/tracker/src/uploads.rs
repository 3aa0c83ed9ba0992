//! Uploads in flight: begun, maybe placed, not yet committed, aborted or expired.
//!
//! An upload's chunks may be on peers before any file references them, so garbage
//! collection keeps every chunk an upload in flight may still commit. With PostgreSQL the
//! same holds across replicas: placed uploads are also recorded in the shared database
//! (see [`crate::pg::PgStore::hold_upload`]), and the leader honours every replica's.

use std::collections::{HashMap, HashSet};

use shoal_common::hash::Hash;
use tokio::time::Instant;

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
    pub avoid: HashSet<String>,
}

/// This replica's uploads in flight, by id.
#[derive(Debug, Default)]
pub struct Uploads {
    by_id: HashMap<String, Upload>,
}

impl Uploads {
    pub fn begin(&mut self, id: String, upload: Upload) {
        self.by_id.insert(id, upload);
    }

    pub fn get(&self, id: &str) -> Option<&Upload> {
        self.by_id.get(id)
    }

    pub fn get_mut(&mut self, id: &str) -> Option<&mut Upload> {
        self.by_id.get_mut(id)
    }

    /// Committed or aborted: its chunks are no longer held by it.
    pub fn end(&mut self, id: &str) -> Option<Upload> {
        self.by_id.remove(id)
    }

    /// Drop the uploads whose time ran out at `now`; returns how many.
    pub fn expire(&mut self, now: Instant) -> usize {
        let before = self.by_id.len();
        self.by_id.retain(|_, u| u.expires_at > now);
        before - self.by_id.len()
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
mod tests {
    use super::*;
    use std::time::Duration;

    fn upload(expires_at: Instant, chunks: &[&[u8]]) -> Upload {
        Upload {
            name: "f".into(),
            size: 1,
            chunk_size: 1,
            replicas: 2,
            overwrite: false,
            expires_at,
            file_id: None,
            chunks: chunks.iter().map(|c| Hash::of(c)).collect(),
            avoid: HashSet::new(),
        }
    }

    #[tokio::test(start_paused = true)]
    async fn expired_uploads_go_and_release_their_chunks() {
        let now = Instant::now();
        let mut u = Uploads::default();
        u.begin(
            "old".into(),
            upload(now + Duration::from_secs(1), &[b"a", b"b"]),
        );
        u.begin(
            "new".into(),
            upload(now + Duration::from_secs(60), &[b"b", b"c"]),
        );
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
}
