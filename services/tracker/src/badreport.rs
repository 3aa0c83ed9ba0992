//! Verified bad-chunk reports (issue 15). A client's `ReportBadChunk` is a hint, not
//! a fact: the tracker asks the reported peer to re-hash its copy (`VerifyChunk`, a
//! cluster-only peer RPC) and removes the copy only when the peer confirms it is
//! corrupt or gone; the peer quarantines a corrupt copy itself and repair restores
//! the count. So a read token can neither hide good copies nor churn repair.
//!
//! Owns the per-caller rate limit and the set of checks in flight; never holds the
//! tracker's state lock across an await.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use shoal_common::hash::Hash;
use shoal_proto::v1 as pb;
use tokio::time::Instant;
use tonic::Status;
use tracing::{info, warn};

use crate::error::bad_hash;
use crate::tracker::Tracker;

/// Longest `reason` accepted (it is logged).
pub const MAX_REASON_BYTES: usize = 256;
/// The window `repair.bad_reports_per_minute` counts over.
const WINDOW: Duration = Duration::from_secs(60);
/// Callers remembered before old windows are dropped.
const MAX_CALLERS: usize = 4096;
/// How long the reported peer has to re-hash its copy.
const VERIFY_TIMEOUT: Duration = Duration::from_secs(60);

/// Rate limits and checks in flight.
#[derive(Default)]
pub struct Reports {
    windows: Mutex<HashMap<[u8; 32], (Instant, u32)>>,
    checking: Arc<Mutex<HashSet<(String, Hash)>>>,
}

/// Who is calling, for the rate limit: the token presented (hashed, never kept), or,
/// with auth off, the remote address.
pub fn caller<T>(req: &tonic::Request<T>) -> [u8; 32] {
    match req.metadata().get("authorization") {
        Some(v) => *blake3::hash(v.as_bytes()).as_bytes(),
        None => {
            let ip = req
                .remote_addr()
                .map(|a| a.ip().to_string())
                .unwrap_or_default();
            *blake3::hash(ip.as_bytes()).as_bytes()
        }
    }
}

impl Reports {
    /// Count one report of `who`; refuse past `per_minute` in the current window.
    fn admit(&self, who: [u8; 32], per_minute: u32, now: Instant) -> Result<(), Status> {
        let mut w = self.windows.lock().unwrap_or_else(|p| p.into_inner());
        if w.len() >= MAX_CALLERS {
            w.retain(|_, (start, _)| now.saturating_duration_since(*start) < WINDOW);
        }
        let e = w.entry(who).or_insert((now, 0));
        if now.saturating_duration_since(e.0) >= WINDOW {
            *e = (now, 0);
        }
        if e.1 >= per_minute {
            let left = WINDOW.saturating_sub(now.saturating_duration_since(e.0));
            return Err(Status::resource_exhausted(format!(
                "at most {per_minute} bad-chunk reports per minute per token; retry in {}s",
                left.as_secs().max(1)
            )));
        }
        e.1 += 1;
        Ok(())
    }

    /// Check a report and start verifying it. Returns once the check is under way:
    /// the copy stays listed unless its peer confirms it is bad.
    pub fn handle(
        &self,
        t: &Arc<Tracker>,
        who: [u8; 32],
        req: pb::ReportBadChunkRequest,
    ) -> Result<(), Status> {
        if req.reason.len() > MAX_REASON_BYTES {
            return Err(Status::invalid_argument(format!(
                "reason is {} bytes; at most {MAX_REASON_BYTES}",
                req.reason.len()
            )));
        }
        let h = bad_hash(&req.hash)?;
        self.admit(who, t.cfg.repair.bad_reports_per_minute, Instant::now())?;
        let peer = {
            let st = t.state();
            let holds = st.locations.of(&req.peer_id).contains(&h);
            st.peers
                .get(&req.peer_id)
                .filter(|_| holds)
                .map(|p| p.peer_ref())
        };
        let Some(peer) = peer else {
            return Err(Status::failed_precondition(format!(
                "peer {:?} is not a current holder of chunk {h}",
                req.peer_id.chars().take(80).collect::<String>()
            )));
        };
        warn!(peer = %peer.id, chunk = %h, reason = %req.reason, "client reported a bad copy; asking the peer to verify it");
        let key = (peer.id.clone(), h);
        if !self
            .checking
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(key.clone())
        {
            return Ok(()); // already being checked
        }
        let (t, checking) = (t.clone(), self.checking.clone());
        tokio::spawn(async move {
            verify(&t, &peer, h).await;
            checking
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .remove(&key);
        });
        Ok(())
    }
}

/// Ask `peer` to re-hash its copy of `h`; drop the copy only on a confirmed mismatch
/// (or when the peer no longer has it).
async fn verify(t: &Arc<Tracker>, peer: &pb::PeerRef, h: Hash) {
    let answer = async {
        let mut c = pb::peer_client::PeerClient::new(t.channels.get(&peer.addr)?);
        tokio::time::timeout(
            VERIFY_TIMEOUT,
            c.verify_chunk(pb::VerifyChunkRequest { hash: h.to_hex() }),
        )
        .await
        .map_err(|_| Status::deadline_exceeded("peer did not verify in time"))?
        .map(|r| r.into_inner())
    }
    .await;
    match answer {
        Ok(r) if r.present && r.intact => {
            info!(peer = %peer.id, chunk = %h, "reported copy verified intact; kept");
        }
        Ok(r) => {
            let why = if r.present {
                "corrupt (quarantined by the peer)"
            } else {
                "missing"
            };
            warn!(peer = %peer.id, chunk = %h, why, "reported copy confirmed bad; removed and queued for repair");
            t.state().remove_location(&peer.id, &h);
            crate::manager::enqueue_repairs(t, vec![h]);
        }
        Err(e) => {
            // Unconfirmed: the copy stays; the peer's own scrub still checks it.
            warn!(peer = %peer.id, chunk = %h, error = %e.message(), "could not verify a reported copy; kept");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn the_rate_limit_counts_per_caller_and_per_minute() {
        let r = Reports::default();
        let (a, b) = ([1u8; 32], [2u8; 32]);
        let now = Instant::now();
        for _ in 0..3 {
            r.admit(a, 3, now).expect("within the limit");
        }
        let e = r.admit(a, 3, now).expect_err("over the limit");
        assert_eq!(e.code(), tonic::Code::ResourceExhausted);
        r.admit(b, 3, now)
            .expect("another caller has its own budget");
        r.admit(a, 3, now + WINDOW).expect("a new window");
    }
}
