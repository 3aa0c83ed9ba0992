//! What one get or put learns about failing peers, and the progress deadline every
//! chunk transfer runs under.
//!
//! A peer that failed or stalled once in a transfer ([`Avoid`]) is tried again only when
//! nothing else holds the chunk: a frozen peer costs one progress deadline per get or
//! put, not one per chunk. A transfer is judged by its progress ([`Clock`]): bytes
//! moving, not a connection being up (HTTP/2 keep-alive answers from a process whose
//! transfers are stuck).

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;

use shoal_proto::v1 as pb;
use tokio::time::Instant;

/// Peer ids named in one replacement request (the tracker accepts up to 64).
pub(crate) const MAX_HINTED_PEERS: usize = 64;

/// Peers that failed or stalled during one get or put, each with the first failure
/// seen (so a chunk that skips the peer can say why).
#[derive(Default)]
pub(crate) struct Avoid {
    ids: Mutex<HashMap<String, String>>,
}

impl Avoid {
    /// Remember `id` as failed for `why`; true when it is news.
    pub fn add(&self, id: &str, why: &str) -> bool {
        let mut ids = self.lock();
        if ids.contains_key(id) {
            return false;
        }
        ids.insert(id.to_string(), why.to_string());
        true
    }

    pub fn has(&self, id: &str) -> bool {
        self.lock().contains_key(id)
    }

    /// Why `id` is avoided (its first failure in this transfer).
    pub fn why(&self, id: &str) -> Option<String> {
        self.lock().get(id).cloned()
    }

    /// Up to [`MAX_HINTED_PEERS`] ids, sorted (for the tracker's hint).
    pub fn list(&self) -> Vec<String> {
        let mut v: Vec<String> = self.lock().keys().cloned().collect();
        v.sort();
        v.truncate(MAX_HINTED_PEERS);
        v
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, String>> {
        self.ids.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// Whether a failed read or write says something about the peer as a whole (it is
/// down, unreachable or stuck) rather than about one chunk (not found, busy, corrupt).
pub(crate) fn peer_failed(code: Option<tonic::Code>) -> bool {
    use tonic::Code::*;
    match code {
        None => true,
        Some(c) => matches!(
            c,
            Unavailable | DeadlineExceeded | Unknown | Cancelled | Internal
        ),
    }
}

/// The replica to try next among `order` (already rotated so parallel chunks start at
/// different peers): one not avoided before one that is, then the least tried.
pub(crate) fn pick(order: &[&pb::PeerRef], tries: &[u32], avoid: &Avoid) -> usize {
    (0..order.len())
        .min_by_key(|&k| (avoid.has(&order[k].id), tries[k], k))
        .unwrap_or(0)
}

/// How long to wait for the answer of a pipeline of `hops` peers once every byte is
/// sent: each hop may spend one progress deadline finding its next hop stuck.
pub(crate) fn answer_deadline(progress: Duration, hops: usize) -> Duration {
    progress * (hops as u32 + 1)
}

/// Progress of one outgoing transfer: when a byte last moved, and whether all moved.
pub(crate) struct Clock {
    state: Mutex<(Instant, bool)>,
}

impl Clock {
    pub fn new() -> Self {
        Self {
            state: Mutex::new((Instant::now(), false)),
        }
    }

    /// Bytes moved; `done` once the last of them has.
    pub fn tick(&self, done: bool) {
        let mut s = self.state.lock().unwrap_or_else(|p| p.into_inner());
        *s = (Instant::now(), s.1 || done);
    }

    /// Resolves with a reason once nothing moved for `idle` while sending, or no answer
    /// came `answer` after the last byte went.
    pub async fn stalled(&self, idle: Duration, answer: Duration) -> String {
        loop {
            let (last, done) = *self.state.lock().unwrap_or_else(|p| p.into_inner());
            let limit = if done { answer } else { idle };
            if Instant::now() >= last + limit {
                return if done {
                    format!("no answer within {limit:?} of the last byte")
                } else {
                    format!("no bytes taken for {limit:?}")
                };
            }
            tokio::time::sleep_until(last + limit).await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn peer(id: &str) -> pb::PeerRef {
        pb::PeerRef {
            id: id.into(),
            ..Default::default()
        }
    }

    #[tokio::test(start_paused = true)]
    async fn clock_fires_on_idle_not_while_bytes_move() {
        let c = std::sync::Arc::new(Clock::new());
        let idle = Duration::from_secs(1);
        let answer = Duration::from_secs(3);
        let watch = tokio::spawn({
            let c = c.clone();
            async move { (Instant::now(), c.stalled(idle, answer).await) }
        });
        let start = Instant::now();
        // Bytes move every 900 ms for 5 s: no stall.
        for _ in 0..5 {
            tokio::time::sleep(Duration::from_millis(900)).await;
            assert!(!watch.is_finished());
            c.tick(false);
        }
        let moved = Instant::now();
        let (_, why) = watch.await.unwrap();
        assert_eq!(
            Instant::now() - moved,
            idle,
            "fired one idle period after the last byte"
        );
        assert!(why.contains("no bytes"), "{why}");
        assert!(Instant::now() - start > Duration::from_secs(4));
    }

    #[tokio::test(start_paused = true)]
    async fn clock_waits_for_the_answer_after_the_last_byte() {
        let c = Clock::new();
        c.tick(true);
        let t = Instant::now();
        let why = c
            .stalled(Duration::from_secs(1), Duration::from_secs(3))
            .await;
        assert_eq!(Instant::now() - t, Duration::from_secs(3));
        assert!(why.contains("no answer"), "{why}");
    }

    #[test]
    fn pick_prefers_healthy_then_least_tried() {
        let (a, b, c) = (peer("a"), peer("b"), peer("c"));
        let order = [&a, &b, &c];
        let avoid = Avoid::default();
        assert_eq!(pick(&order, &[0, 0, 0], &avoid), 0);
        avoid.add("a", "down");
        assert_eq!(pick(&order, &[0, 0, 0], &avoid), 1);
        assert_eq!(pick(&order, &[0, 1, 0], &avoid), 2);
        avoid.add("b", "down");
        avoid.add("c", "down");
        // Everyone failed: the least tried still gets a turn.
        assert_eq!(pick(&order, &[1, 1, 0], &avoid), 2);
        assert_eq!(avoid.list(), vec!["a", "b", "c"]);
    }

    #[test]
    fn avoid_keeps_the_first_reason() {
        let avoid = Avoid::default();
        assert!(avoid.add("a", "refuses uploads"));
        assert!(
            !avoid.add("a", "no bytes taken"),
            "not news the second time"
        );
        assert_eq!(avoid.why("a").as_deref(), Some("refuses uploads"));
        assert_eq!(avoid.why("b"), None);
    }
}
