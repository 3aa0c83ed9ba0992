//! The peer's side of the conversation with the tracker: register with the full
//! inventory, heartbeat with stats, register again when the tracker forgot us, send a
//! full inventory when the tracker's digest differs, report corrupt chunks; and the
//! background scrub that re-hashes every chunk at a bounded rate.

use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;
use std::time::Duration;

use shoal_common::grpc::GrpcChannel as Channel;
use shoal_common::hash::Hash;
use shoal_proto::v1 as pb;
use shoal_proto::v1::tracker_client::TrackerClient;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tracing::{info, info_span, warn};

use crate::service::PeerCore;

pub struct Agent {
    pub core: Arc<PeerCore>,
    pub me: pb::PeerRef,
    pub trackers: Vec<String>,
    /// Chunks per inventory message (`SHOAL_INVENTORY_PART_CHUNKS`).
    pub inventory_part: usize,
}

impl Agent {
    fn client(&self, i: usize) -> Result<TrackerClient<Channel>, tonic::Status> {
        let url = &self.trackers[i % self.trackers.len()];
        Ok(TrackerClient::new(self.core.channels.get(url)?)
            .max_decoding_message_size(shoal_common::grpc::MAX_MESSAGE_BYTES)
            .max_encoding_message_size(shoal_common::grpc::MAX_MESSAGE_BYTES))
    }

    /// The inventory in messages of at most `inventory_part` chunks (one, maybe empty,
    /// when it fits), and the write mark read just before it: a deletion answered at a
    /// later mark may not show in it yet.
    fn inventory_parts(&self) -> (pb::WriteMark, std::vec::IntoIter<Vec<String>>) {
        let (boot, seq) = self.core.store.write_mark();
        let mark = pb::WriteMark { boot, seq };
        let inv: Vec<String> = self
            .core
            .store
            .inventory()
            .iter()
            .map(Hash::to_hex)
            .collect();
        if inv.len() <= self.inventory_part {
            return (mark, vec![inv].into_iter());
        }
        let parts: Vec<Vec<String>> = inv
            .chunks(self.inventory_part)
            .map(<[String]>::to_vec)
            .collect();
        (mark, parts.into_iter())
    }

    /// Send the remaining parts of inventory `id` (`last` on the final one).
    async fn send_parts(
        &self,
        c: &mut TrackerClient<Channel>,
        id: u64,
        (mark, mut parts): (pb::WriteMark, std::vec::IntoIter<Vec<String>>),
    ) -> Result<(), tonic::Status> {
        while let Some(part) = parts.next() {
            c.report_chunks(pb::ReportChunksRequest {
                peer_id: self.me.id.clone(),
                added: part,
                full: true,
                inventory_id: id,
                last: parts.len() == 0,
                write_mark: Some(mark),
                ..Default::default()
            })
            .await?;
        }
        Ok(())
    }

    pub async fn register(
        &self,
        c: &mut TrackerClient<Channel>,
    ) -> Result<Duration, tonic::Status> {
        let store = &self.core.store;
        let (mark, mut parts) = self.inventory_parts();
        let first = parts.next().unwrap_or_default();
        let id = if parts.len() > 0 {
            rand::random::<u64>() | 1
        } else {
            0
        };
        let resp = c
            .register_peer(pb::RegisterPeerRequest {
                peer: Some(self.me.clone()),
                capacity_bytes: store.capacity(),
                used_bytes: store.used(),
                chunks: first,
                inventory_id: id,
                write_mark: Some(mark),
            })
            .await?
            .into_inner();
        self.send_parts(c, id, (mark, parts)).await?;
        info!(
            tracker_heartbeat_ms = resp.heartbeat_interval_ms,
            chunks = store.len(),
            "registered with the tracker"
        );
        Ok(Duration::from_millis(resp.heartbeat_interval_ms.max(50)))
    }

    /// Register (retrying until it works), then heartbeat until shutdown. `ready` is
    /// called once, after the first registration.
    pub async fn run(
        self: Arc<Self>,
        mut corrupt: mpsc::UnboundedReceiver<Hash>,
        ready: impl FnOnce(),
        shutdown: CancellationToken,
    ) {
        let mut which = 0usize;
        let mut interval = Duration::from_secs(1);
        let mut ready = Some(ready);
        let mut registered = false;
        loop {
            let mut c = match self.client(which) {
                Ok(c) => c,
                Err(e) => {
                    warn!(error = %e.message(), "bad tracker URL");
                    return;
                }
            };
            let step = async {
                if !registered {
                    interval = self.register(&mut c).await?;
                    registered = true;
                    if let Some(r) = ready.take() {
                        r();
                    }
                }
                let mut bad = Vec::new();
                while let Ok(h) = corrupt.try_recv() {
                    bad.push(h.to_hex());
                }
                if !bad.is_empty() {
                    c.report_chunks(pb::ReportChunksRequest {
                        peer_id: self.me.id.clone(),
                        corrupt: bad,
                        ..Default::default()
                    })
                    .await?;
                }
                let store = &self.core.store;
                let hb = c
                    .heartbeat(pb::HeartbeatRequest {
                        peer_id: self.me.id.clone(),
                        capacity_bytes: store.capacity(),
                        used_bytes: store.used(),
                        active_transfers: self.core.counters.active_transfers.load(Relaxed),
                        chunk_count: store.len() as u64,
                        inventory_digest: store.digest(),
                        write_mark: Some({
                            let (boot, seq) = store.write_mark();
                            pb::WriteMark { boot, seq }
                        }),
                    })
                    .await?
                    .into_inner();
                interval = Duration::from_millis(hb.heartbeat_interval_ms.max(50));
                if !hb.known {
                    info!("tracker does not know this peer (restarted?); registering again");
                    registered = false;
                } else if hb.resync {
                    let _s =
                        info_span!("reconcile", peer = %self.me.id, chunks = store.len()).entered();
                    info!("inventory differs from the tracker's view; sending it whole");
                    drop(_s);
                    let parts = self.inventory_parts();
                    let id = if parts.1.len() > 1 {
                        rand::random::<u64>() | 1
                    } else {
                        0
                    };
                    self.send_parts(&mut c, id, parts).await?;
                }
                Ok::<(), tonic::Status>(())
            };
            if let Err(e) = step.await {
                warn!(error = %e.message(), code = ?e.code(), "tracker unreachable; retrying");
                if e.code() == tonic::Code::Unavailable {
                    which += 1; // fail over to the next tracker URL, if several
                }
                registered = registered && e.code() != tonic::Code::NotFound;
            }
            tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = tokio::time::sleep(interval) => {}
            }
        }
    }

    /// Leaving on purpose: tell the tracker so repair starts now, not after the dead threshold.
    /// Say goodbye: `restarting` (back soon with the same id and volume, copies kept
    /// expected) or leaving for good (copies stop counting at once).
    pub async fn deregister(&self, restarting: bool) {
        // Any tracker replica will do: the next one if this one is unreachable.
        for i in 0..self.trackers.len() {
            let Ok(mut c) = self.client(i) else { continue };
            let r = c
                .deregister(pb::DeregisterRequest {
                    peer_id: self.me.id.clone(),
                    restarting,
                })
                .await;
            match r {
                Ok(_) => return info!(restarting, "said goodbye to the tracker"),
                Err(e) if e.code() == tonic::Code::Unavailable => {
                    warn!(error = %e.message(), tracker = %self.trackers[i], "could not deregister; trying the next tracker")
                }
                Err(e) => return warn!(error = %e.message(), "could not deregister"),
            }
        }
    }
}

/// Re-hash every chunk, pass after pass, at `rate` bytes per second. A corrupt chunk is
/// quarantined and reported so the tracker repairs it from another copy.
pub async fn scrub(core: Arc<PeerCore>, rate: u64, pause: Duration, shutdown: CancellationToken) {
    if rate == 0 {
        return;
    }
    loop {
        let chunks = core.store.inventory();
        let span = info_span!("scrub", peer = %core.id, chunks = chunks.len());
        let mut corrupt = 0;
        for h in chunks {
            if shutdown.is_cancelled() {
                return;
            }
            let c = core.clone();
            let start = tokio::time::Instant::now();
            let result = tokio::task::spawn_blocking(move || {
                c.store.verify(&h, &mut |n| {
                    c.counters.scrubbed_bytes.fetch_add(n, Relaxed);
                })
            })
            .await;
            let size = match result {
                Ok(Ok(true)) => core.store.path(&h).metadata().map(|m| m.len()).unwrap_or(0),
                Ok(Ok(false)) => {
                    corrupt += 1;
                    core.counters.scrub_failures.fetch_add(1, Relaxed);
                    span.in_scope(|| warn!(chunk = %h, "scrub found a corrupt chunk; quarantined and reported"));
                    let _ = core.store.quarantine(&h);
                    let _ = core.corrupt.send(h);
                    0
                }
                _ => 0, // deleted meanwhile
            };
            // Pace: this chunk may take size/rate seconds in all.
            let budget = Duration::from_secs_f64(size as f64 / rate as f64);
            let wait = budget.saturating_sub(start.elapsed());
            tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = tokio::time::sleep(wait) => {}
            }
        }
        span.in_scope(|| info!(corrupt, "scrub pass finished"));
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tokio::time::sleep(pause) => {}
        }
    }
}
