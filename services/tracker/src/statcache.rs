//! Recent `StatFile` answers. A 256-chunk file's answer looks up 768 holders under the
//! state lock; a popular file is asked for by every client that downloads it. An answer
//! is reused while the catalogue and the copies are as they were (their versions) and for
//! at most [`TTL`], which bounds how old its holders' liveness and load order can be.
//! A peer joining, leaving or changing drain state clears every answer.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use shoal_proto::v1 as pb;
use tokio::time::Instant;

/// How long an answer is reused at most.
pub const TTL: std::time::Duration = std::time::Duration::from_millis(500);
/// Chunks over all kept answers (each ~150 bytes of answer, and as much encoded): about
/// 30 MB.
const MAX_CHUNKS: usize = 100_000;

/// The versions an answer was computed at: (catalogue, locations).
pub type Versions = (u64, u64);

struct Entry {
    at: Instant,
    versions: Versions,
    answer: Arc<Answer>,
}

/// An answer and its protobuf encoding (sent as it is, see [`crate::statfast`]).
pub struct Answer {
    pub detail: pb::FileDetail,
    pub encoded: bytes::Bytes,
}

impl Answer {
    pub fn new(detail: pb::FileDetail) -> Self {
        let encoded = prost::Message::encode_to_vec(&detail).into();
        Answer { detail, encoded }
    }
}

#[derive(Default)]
pub struct StatCache {
    inner: Mutex<Inner>,
}

#[derive(Default)]
struct Inner {
    entries: HashMap<String, Entry>,
    chunks: usize,
}

impl StatCache {
    /// The answer for `key` if computed at `versions` less than [`TTL`] before `now`.
    pub fn get(&self, key: &str, versions: Versions, now: Instant) -> Option<Arc<Answer>> {
        let inner = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        let e = inner.entries.get(key)?;
        (e.versions == versions && now.saturating_duration_since(e.at) < TTL)
            .then(|| e.answer.clone())
    }

    pub fn put(&self, key: &str, versions: Versions, now: Instant, answer: Arc<Answer>) {
        let n = answer.detail.chunks.len();
        if n > MAX_CHUNKS / 4 {
            return; // a huge file's answer would crowd out every other
        }
        let mut inner = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        if inner.chunks + n > MAX_CHUNKS {
            inner
                .entries
                .retain(|_, e| e.versions == versions && now.saturating_duration_since(e.at) < TTL);
            inner.chunks = inner
                .entries
                .values()
                .map(|e| e.answer.detail.chunks.len())
                .sum();
            if inner.chunks + n > MAX_CHUNKS {
                inner.entries.clear();
                inner.chunks = 0;
            }
        }
        let old = inner.entries.insert(
            key.to_string(),
            Entry {
                at: now,
                versions,
                answer,
            },
        );
        inner.chunks += n;
        inner.chunks -= old.map_or(0, |e| e.answer.detail.chunks.len());
    }

    /// Forget every answer (a peer joined, left or changed drain state).
    pub fn clear(&self) {
        let mut inner = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        inner.entries.clear();
        inner.chunks = 0;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn detail(chunks: usize) -> Arc<Answer> {
        Arc::new(Answer::new(pb::FileDetail {
            chunks: vec![pb::ChunkReplicas::default(); chunks],
            ..Default::default()
        }))
    }

    #[test]
    fn an_answer_is_reused_only_at_the_same_versions_and_within_the_ttl() {
        let c = StatCache::default();
        let now = Instant::now();
        c.put("f", (1, 1), now, detail(3));
        assert!(c.get("f", (1, 1), now + TTL / 2).is_some());
        assert!(c.get("f", (2, 1), now).is_none(), "the catalogue changed");
        assert!(c.get("f", (1, 2), now).is_none(), "a copy changed");
        assert!(c.get("f", (1, 1), now + TTL).is_none(), "too old");
        assert!(c.get("g", (1, 1), now).is_none());
        c.clear();
        assert!(c.get("f", (1, 1), now).is_none(), "cleared");
    }

    #[test]
    fn memory_is_bounded_by_chunks() {
        let c = StatCache::default();
        let now = Instant::now();
        for i in 0..100 {
            c.put(&format!("f{i}"), (1, 1), now, detail(MAX_CHUNKS / 10));
            let inner = c.inner.lock().unwrap();
            assert!(inner.chunks <= MAX_CHUNKS, "{} chunks kept", inner.chunks);
        }
        c.put("huge", (1, 1), now, detail(MAX_CHUNKS));
        assert!(c.get("huge", (1, 1), now).is_none(), "not kept");
    }
}
