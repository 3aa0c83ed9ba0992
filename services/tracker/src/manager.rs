//! The replication and consistency manager: one supervised loop that keeps every
//! chunk at its target. Each round it expires abandoned uploads, finds chunks below
//! target (dead, draining or corrupt copies) and queues them durably, starts repairs
//! in priority order (fewest live copies first; none = lost, reported loudly and kept
//! queued) within a per-peer and a cluster-wide budget, trims copies above target
//! keeping the best zone spread, and deletes unreferenced chunks after a grace period.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::Ordering::Relaxed;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use shoal_common::hash::Hash;
use shoal_proto::v1 as pb;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tracing::{error, info, info_span, warn, Instrument};

use crate::error::{Error, Result};
use crate::placement::Planner;
use crate::state::{now_ms, Deletion, Liveness, State};
use crate::store::{Change, RepairRecord};
use crate::tracker::Tracker;

/// Work in flight and timers the manager keeps between rounds (not persisted).
#[derive(Default)]
pub struct ManagerState {
    in_flight: HashSet<Hash>,
    per_peer: HashMap<String, usize>,
    unreferenced_since: HashMap<Hash, Instant>,
    budget_window: Option<(Instant, u64)>,
}

/// Wakes the manager early (a copy finished, so a slot is free).
static WAKE: std::sync::LazyLock<tokio::sync::Notify> =
    std::sync::LazyLock::new(tokio::sync::Notify::new);

/// Queue chunks for repair (persisted, so repair survives a restart).
pub fn enqueue_repairs(t: &Tracker, chunks: impl IntoIterator<Item = Hash>) {
    let mut q = t.repairs.lock().unwrap_or_else(|p| p.into_inner());
    let changes: Vec<Change> = chunks
        .into_iter()
        .filter(|h| q.insert(*h))
        .map(|chunk| {
            Change::PutRepair(RepairRecord {
                chunk,
                enqueued_ms: now_ms(),
            })
        })
        .collect();
    if let Err(e) = t.persist(&changes) {
        error!(error = %e, "could not persist the repair queue");
    }
}

/// Drop finished chunks from the queue, in one transaction.
fn dequeue(t: &Tracker, done: &[Hash]) {
    if done.is_empty() {
        return;
    }
    let mut q = t.repairs.lock().unwrap_or_else(|p| p.into_inner());
    let changes: Vec<Change> = done
        .iter()
        .filter(|h| q.remove(h))
        .map(|h| Change::DeleteRepair(*h))
        .collect();
    if let Err(e) = t.persist(&changes) {
        error!(error = %e, "could not persist the repair queue");
    }
}

/// Target replica count of every referenced chunk (highest among its files).
fn targets(st: &State) -> HashMap<Hash, u32> {
    let mut out: HashMap<Hash, u32> = HashMap::with_capacity(st.chunk_refs.len());
    for f in st.files.values() {
        for h in &f.chunks {
            let e = out.entry(*h).or_default();
            *e = (*e).max(f.replicas);
        }
    }
    out
}

/// How long a computed cluster summary is served before it is computed again: the
/// summary walks every chunk, and dashboards, probes and clients ask for it often.
const SUMMARY_TTL: Duration = Duration::from_millis(250);

/// Cluster facts (counts over every chunk), computed at most every `SUMMARY_TTL`.
pub fn cluster_info(t: &Tracker) -> pb::ClusterInfoResponse {
    let now = Instant::now();
    let mut cache = t.summary.lock().unwrap_or_else(|p| p.into_inner());
    if let Some((at, info)) = cache.as_ref() {
        if now.saturating_duration_since(*at) < SUMMARY_TTL {
            return info.clone();
        }
    }
    let info = compute_cluster_info(t);
    *cache = Some((now, info.clone()));
    info
}

fn compute_cluster_info(t: &Tracker) -> pb::ClusterInfoResponse {
    let st = t.state();
    let now = Instant::now();
    let (mut under, mut lost) = (0, 0);
    for (h, target) in targets(&st) {
        let n = st.durable_count(&h, &t.cfg, now);
        if n == 0 {
            lost += 1;
        } else if n < target as usize {
            under += 1;
        }
    }
    pb::ClusterInfoResponse {
        version: shoal_common::VERSION.to_string(),
        replication_factor: t.cfg.replication.factor,
        live_peers: st.live_peer_count(&t.cfg, now) as u32,
        zones: st.live_zone_count(&t.cfg, now) as u32,
        files: st.names.len() as u64,
        chunks: st.chunk_refs.len() as u64,
        under_replicated_chunks: under,
        lost_chunks: lost,
        repair_queue: t.repairs.lock().unwrap_or_else(|p| p.into_inner()).len() as u64,
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
        let chunks = p.chunks.iter().copied().collect();
        st.journal_drained(peer_id);
        chunks
    };
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
    p.draining = false;
    st.journal_undrained(peer_id);
    let p = &st.peers[peer_id];
    Ok(pb::DrainPeerResponse {
        state: st.peer_state(p, &t.cfg, now) as i32,
        chunks_remaining: 0,
        safe_to_remove: false,
    })
}

/// Run the manager until `shutdown`; a failed round is logged and the next one runs.
pub async fn run(t: Arc<Tracker>, shutdown: CancellationToken) {
    let ms = Arc::new(Mutex::new(ManagerState::default()));
    let mut tick = tokio::time::interval(t.cfg.repair.interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tick.tick() => {}
            _ = WAKE.notified() => {}
        }
        if t.is_leader() {
            round(&t, &ms);
        } else {
            // A standby still drops its own abandoned uploads.
            t.expire_uploads();
        }
    }
}

/// One pass of the manager. Synchronous decisions; copies run as spawned tasks.
pub fn round(t: &Arc<Tracker>, ms: &Arc<Mutex<ManagerState>>) {
    let expired = t.expire_uploads();
    if expired > 0 {
        info!(expired, "abandoned uploads expired");
    }
    let now = Instant::now();
    let cfg = &t.cfg;
    let mut deletions: Vec<Deletion> = Vec::new();
    let mut starts = Vec::new();
    {
        let mut st = t.state();
        let mut m = ms.lock().unwrap_or_else(|p| p.into_inner());
        let targets = targets(&st);

        // 1. Find chunks below target.
        let below: Vec<Hash> = targets
            .iter()
            .filter(|(h, target)| st.below_target(h, **target, cfg, now))
            .map(|(h, _)| *h)
            .collect();
        drop(m);
        drop(st);
        enqueue_repairs(t, below);
        st = t.state();
        m = ms.lock().unwrap_or_else(|p| p.into_inner());

        // 2. Schedule repairs, fewest live copies first.
        let queue: Vec<Hash> = t
            .repairs
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .iter()
            .copied()
            .collect();
        let mut ranked: Vec<(usize, Hash)> = Vec::new();
        let mut done = Vec::new();
        for h in queue {
            let Some(&target) = targets.get(&h) else {
                done.push(h); // no file uses it any more
                continue;
            };
            let live = st.durable_count(&h, cfg, now);
            if !st.below_target(&h, target, cfg, now) {
                // At target, or its missing copies are on a peer restarting in its grace.
                done.push(h);
            } else if live == 0 && st.live_holders(&h, cfg, now).is_empty() {
                error!(chunk = %h, "chunk LOST: no live copy; kept queued until a holder returns");
            } else {
                ranked.push((live, h));
            }
        }
        done.retain(|h| !m.in_flight.contains(h));
        dequeue(t, &done);
        ranked.sort();
        let mut planner = Planner::new(Tracker::candidates(&st, cfg, now));
        for (live, h) in ranked {
            if m.in_flight.len() >= cfg.repair.concurrency {
                break;
            }
            if m.in_flight.contains(&h) {
                continue;
            }
            let size = st.chunk_sizes.get(&h).copied().unwrap_or(0);
            if !budget_allows(&mut m, cfg.repair.bandwidth_bytes, size, now) {
                break;
            }
            let holders = st.live_holders(&h, cfg, now);
            let sources: Vec<pb::PeerRef> = holders
                .iter()
                .filter(|p| m.per_peer.get(&p.id).copied().unwrap_or(0) < cfg.repair.per_peer)
                .map(|p| p.peer_ref())
                .collect();
            if sources.is_empty() {
                continue;
            }
            let existing: Vec<(String, String)> = holders
                .iter()
                .map(|p| (p.id.clone(), p.zone.clone()))
                .collect();
            let target_n = targets[&h];
            let d = planner.place(&h, size, 1, &existing);
            let Some(target_id) = d.chosen.first() else {
                warn!(chunk = %h, live, "no eligible peer to repair onto");
                continue;
            };
            if m.per_peer.get(target_id).copied().unwrap_or(0) >= cfg.repair.per_peer {
                continue;
            }
            let target = st.peers[target_id].peer_ref();
            m.in_flight.insert(h);
            for id in [target.id.clone(), sources[0].id.clone()] {
                *m.per_peer.entry(id).or_default() += 1;
            }
            let priority = if live <= 1 { "high" } else { "normal" };
            st.placement_reasons
                .insert(h, format!("repair: {}", d.reason()));
            starts.push((
                h,
                size,
                live,
                target_n,
                priority,
                target,
                sources,
                d.reason(),
            ));
        }

        // 3. Trim copies above target (only when every holder is alive: no flapping).
        for (h, target) in &targets {
            if m.in_flight.contains(h) {
                continue;
            }
            let holders = st.live_holders(h, cfg, now);
            let durable = holders.iter().filter(|p| !p.draining).count();
            let all_alive = holders
                .iter()
                .all(|p| st.liveness(p, cfg, now) == Liveness::Alive);
            if !all_alive || durable < *target as usize || holders.len() <= *target as usize {
                continue;
            }
            // Draining copies go first, then copies from the most crowded zone, fullest peer first.
            let mut zone_count: HashMap<&str, usize> = HashMap::new();
            for p in &holders {
                *zone_count.entry(p.zone.as_str()).or_default() += 1;
            }
            let mut ranked: Vec<_> = holders.iter().collect();
            ranked.sort_by_key(|p| {
                (
                    std::cmp::Reverse(p.draining),
                    std::cmp::Reverse(zone_count[p.zone.as_str()]),
                    p.capacity.saturating_sub(p.used),
                    p.id.clone(),
                )
            });
            let extra = holders.len() - *target as usize;
            let victims: Vec<(String, String)> = ranked
                .iter()
                .take(extra)
                .map(|p| (p.id.clone(), p.addr.clone()))
                .collect();
            for (id, addr) in victims {
                info!(chunk = %h, peer = %id, "trimming a copy above target");
                t.metrics.trimmed_copies.fetch_add(1, Relaxed);
                st.remove_location(&id, h);
                deletions.push(Deletion {
                    peer_id: id,
                    addr,
                    chunks: vec![*h],
                });
            }
        }

        // 4. Garbage: chunks on peers that no file references and no upload may use.
        let in_uploads: HashSet<Hash> = st
            .uploads
            .values()
            .flat_map(|u| u.chunks.iter().copied())
            .collect();
        let unreferenced: Vec<Hash> = st
            .locations
            .keys()
            .filter(|h| !st.chunk_refs.contains_key(h) && !in_uploads.contains(h))
            .copied()
            .collect();
        let seen: HashSet<Hash> = unreferenced.iter().copied().collect();
        m.unreferenced_since.retain(|h, _| seen.contains(h));
        let grace = cfg.repair.gc_grace;
        for h in unreferenced {
            let since = *m.unreferenced_since.entry(h).or_insert(now);
            if now.saturating_duration_since(since) < grace {
                continue;
            }
            m.unreferenced_since.remove(&h);
            let _g = info_span!("gc", chunk = %h).entered();
            for id in st.locations.get(&h).cloned().unwrap_or_default() {
                if let Some(p) = st.peers.get(&id) {
                    deletions.push(Deletion {
                        peer_id: id.clone(),
                        addr: p.addr.clone(),
                        chunks: vec![h],
                    });
                }
                st.remove_location(&id, &h);
                t.metrics.gc_deleted_chunks.fetch_add(1, Relaxed);
            }
            info!("unreferenced chunk collected");
        }
    }
    t.send_deletions(merge(deletions));
    for (h, size, live, target_n, priority, target, sources, reason) in starts {
        let span = info_span!("repair", chunk = %h, repair.live_replicas = live, repair.target_replicas = target_n, repair.priority = priority, repair.source = %sources[0].id, repair.target = %target.id, placement.reason = %reason);
        let (t, ms) = (t.clone(), ms.clone());
        tokio::spawn(
            async move {
                let result = copy(t.channels.get(&target.addr), &h, size, sources.clone()).await;
                let mut m = ms.lock().unwrap_or_else(|p| p.into_inner());
                m.in_flight.remove(&h);
                for id in [&target.id, &sources[0].id] {
                    if let Some(n) = m.per_peer.get_mut(id) {
                        *n = n.saturating_sub(1);
                    }
                }
                drop(m);
                WAKE.notify_one();
                match result {
                    Ok(resp) => {
                        t.state().add_location(&target.id, h);
                        t.metrics.repaired_chunks.fetch_add(1, Relaxed);
                        t.metrics.repaired_bytes.fetch_add(resp.bytes, Relaxed);
                        info!(source = %resp.source_peer_id, bytes = resp.bytes, "repaired");
                    }
                    Err(e) => {
                        t.metrics.repair_failures.fetch_add(1, Relaxed);
                        warn!(error = %e.message(), "repair copy failed; will retry");
                    }
                }
            }
            .instrument(span),
        );
    }
}

fn merge(deletions: Vec<Deletion>) -> Vec<Deletion> {
    let mut by_peer: HashMap<String, Deletion> = HashMap::new();
    for d in deletions {
        by_peer
            .entry(d.peer_id.clone())
            .or_insert_with(|| Deletion {
                peer_id: d.peer_id.clone(),
                addr: d.addr.clone(),
                chunks: vec![],
            })
            .chunks
            .extend(d.chunks);
    }
    by_peer.into_values().collect()
}

/// The cluster-wide repair bandwidth budget, in one-second windows.
fn budget_allows(m: &mut ManagerState, bytes_per_sec: u64, size: u64, now: Instant) -> bool {
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
