//! Repairs under way: each copy is a span with its reasons, sent from a source peer
//! to the chosen target within the cluster-wide bandwidth budget.

use super::*;

pub(super) fn start_copies(t: &Arc<Tracker>, ms: &Arc<Mutex<ManagerState>>, starts: Vec<Start>) {
    for (h, size, live, target_n, priority, target, sources, reason) in starts {
        let span = info_span!("repair", chunk = %h, repair.live_replicas = live, repair.target_replicas = target_n, repair.priority = priority, repair.source = %sources[0].id, repair.target = %target.id, placement.reason = %reason);
        let (t, ms) = (t.clone(), ms.clone());
        tokio::spawn(
            async move {
                let result = copy(t.channels.get(&target.addr), &h, size, sources.clone()).await;
                // The copy is listed before the chunk leaves `in_flight`: in between, a
                // round would see it neither in flight nor copied and start it again.
                match result {
                    Ok(resp) => {
                        let mut st = t.state();
                        if st.deletion_pending(&target.id, &h, Instant::now()) {
                            // The target "had" a copy a deletion is on its way to.
                            drop(st);
                            warn!("repair target held a copy being deleted; not counted, repaired again later");
                        } else {
                            let mark = crate::service::write_mark(resp.mark);
                            st.add_stored(&target.id, h, mark, Instant::now());
                            drop(st);
                            t.metrics.repaired_chunks.inc();
                            t.metrics.repaired_bytes.inc_by(resp.bytes);
                            info!(source = %resp.source_peer_id, bytes = resp.bytes, "repaired");
                        }
                    }
                    Err(e) => {
                        t.metrics.repair_failures.inc();
                        warn!(error = %e.message(), "repair copy failed; will retry");
                    }
                }
                let mut m = ms.lock().unwrap_or_else(|p| p.into_inner());
                m.in_flight.remove(&h);
                for id in [&target.id, &sources[0].id] {
                    if let Some(n) = m.per_peer.get_mut(id) {
                        *n = n.saturating_sub(1);
                    }
                }
                drop(m);
                WAKE.notify_one();
            }
            .instrument(span),
        );
    }
}

pub(super) fn merge(deletions: Vec<Deletion>) -> Vec<Deletion> {
    // Keyed by mark too: a retried deletion keeps the older mark it was decided at.
    let mut by_peer: HashMap<(String, WriteMark), Deletion> = HashMap::new();
    for d in deletions {
        by_peer
            .entry((d.peer_id.clone(), d.after))
            .or_insert_with(|| Deletion {
                peer_id: d.peer_id.clone(),
                addr: d.addr.clone(),
                chunks: vec![],
                after: d.after,
            })
            .chunks
            .extend(d.chunks);
    }
    by_peer.into_values().collect()
}

/// The cluster-wide repair bandwidth budget, in one-second windows.
pub(super) fn budget_allows(
    m: &mut ManagerState,
    bytes_per_sec: u64,
    size: u64,
    now: Instant,
) -> bool {
    if bytes_per_sec == 0 {
        return true;
    }
    let (start, used) = m.budget_window.get_or_insert((now, 0));
    if now.saturating_duration_since(*start) >= Duration::from_secs(1) {
        *start = now;
        *used = 0;
    }
    // One copy may always start in a window, however large.
    if *used > 0 && *used + size > bytes_per_sec {
        return false;
    }
    *used += size;
    true
}

async fn copy(
    channel: Result<shoal_common::grpc::GrpcChannel, tonic::Status>,
    h: &Hash,
    size: u64,
    sources: Vec<pb::PeerRef>,
) -> Result<pb::ReplicateChunkResponse, tonic::Status> {
    let mut c = pb::peer_client::PeerClient::new(channel?);
    let req = pb::ReplicateChunkRequest {
        hash: h.to_hex(),
        size,
        sources,
    };
    Ok(c.replicate_chunk(req).await?.into_inner())
}
