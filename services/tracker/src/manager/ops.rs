//! What operators ask of the manager: the cluster summary, draining and undraining a
//! peer.

use super::*;

/// How long a computed cluster summary is served before it is computed again: the
/// summary walks every chunk, and dashboards, probes and clients ask for it often.
const SUMMARY_TTL: Duration = Duration::from_millis(250);

/// Cluster facts (counts over every chunk), computed at most every `SUMMARY_TTL`.
pub fn cluster_info(t: &Tracker) -> pb::ClusterInfoResponse {
    let now = Instant::now();
    let mut cache = t.summary.lock().unwrap_or_else(|p| p.into_inner());
    let fresh = cache
        .as_ref()
        .filter(|(at, _)| now.saturating_duration_since(*at) < SUMMARY_TTL);
    let mut info = match fresh {
        Some((_, info)) => info.clone(),
        None => {
            let info = compute_cluster_info(t);
            *cache = Some((now, info.clone()));
            info
        }
    };
    info.leader = t.is_leader(); // never stale: a takeover shows at once
    info
}

fn compute_cluster_info(t: &Tracker) -> pb::ClusterInfoResponse {
    let st = t.state();
    let now = Instant::now();
    let (under, lost) = (st.health.under.len() as u64, st.health.lost.len() as u64);
    pb::ClusterInfoResponse {
        version: shoal_common::VERSION.to_string(),
        replication_factor: t.cfg.replication.factor,
        live_peers: st.live_peer_count(&t.cfg, now) as u32,
        zones: st.live_zone_count(&t.cfg, now) as u32,
        files: st.catalogue.name_count() as u64,
        chunks: st.catalogue.chunk_count() as u64,
        under_replicated_chunks: under,
        lost_chunks: lost,
        repair_queue: t.repairs.lock().unwrap_or_else(|p| p.into_inner()).len() as u64,
        leader: false, // set by the caller
    }
}

pub fn drain(t: &Arc<Tracker>, peer_id: &str) -> Result<pb::DrainPeerResponse> {
    let now = Instant::now();
    let chunks: Vec<Hash> = {
        let mut st = t.state();
        let p = st
            .peers
            .get_mut(peer_id)
            .ok_or_else(|| Error::NotFound(format!("unknown peer {peer_id:?}")))?;
        if !p.draining {
            info!(peer = %peer_id, "drain started");
        }
        p.draining = true;
        let chunks = st.locations.of(peer_id).iter().copied().collect();
        st.journal_drained(peer_id);
        chunks
    };
    t.forget_candidates();
    let _span = info_span!("drain", peer = %peer_id, chunks = chunks.len()).entered();
    enqueue_repairs(t, chunks);
    let st = t.state();
    let remaining = st.drain_remaining(peer_id, &t.cfg, now) as u64;
    let p = &st.peers[peer_id];
    Ok(pb::DrainPeerResponse {
        state: st.peer_state(p, &t.cfg, now) as i32,
        chunks_remaining: remaining,
        safe_to_remove: remaining == 0,
    })
}

/// Stop draining a peer: its copies count and it takes new ones again; copies made
/// meanwhile are above target and trimmed.
pub fn undrain(t: &Arc<Tracker>, peer_id: &str) -> Result<pb::DrainPeerResponse> {
    let now = Instant::now();
    let mut st = t.state();
    let p = st
        .peers
        .get_mut(peer_id)
        .ok_or_else(|| Error::NotFound(format!("unknown peer {peer_id:?}")))?;
    if p.draining {
        info!(peer = %peer_id, "drain cancelled");
    }
    t.forget_candidates();
    p.draining = false;
    st.journal_undrained(peer_id);
    let p = &st.peers[peer_id];
    Ok(pb::DrainPeerResponse {
        state: st.peer_state(p, &t.cfg, now) as i32,
        chunks_remaining: 0,
        safe_to_remove: false,
    })
}
