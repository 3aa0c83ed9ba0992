//! The replication and consistency manager: one supervised loop that keeps every
//! chunk at its target. It never scans the catalogue: events (a copy added or dropped,
//! a file added, removed or retargeted) mark chunks dirty in the state, and each round
//! notes which peers changed state (alive, suspect, dead, restarting, draining) and
//! marks their chunks. Each round then evaluates only dirty chunks, in slices with the
//! lock released in between: it keeps the under-replicated and lost sets (the cluster
//! summary), queues chunks below target durably, and notes chunks above target and
//! unreferenced chunks still on peers. The leader then starts repairs in priority order
//! (fewest live copies first; none = lost, reported loudly and kept queued) within a
//! per-peer and a cluster-wide budget, trims copies above target keeping the best zone
//! spread, and deletes unreferenced chunks after a grace period.
//!
//! For one `dead_after` after the tracker starts nothing is queued, trimmed or
//! collected (HDFS's safe mode): peers are still registering, and a chunk whose
//! holders have not all reported yet is not under-replicated. Chunks are evaluated as
//! peers report them all the same; when safe mode ends, the chunks no peer reported and
//! the ones found below target are evaluated again, and queued.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use shoal_common::hash::Hash;
use shoal_proto::v1 as pb;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tracing::{error, info, info_span, warn, Instrument};

use crate::error::{Error, Result};
use crate::placement::Planner;
use crate::state::{now_ms, Deletion, Liveness, State, WriteMark};
use crate::store::{Change, RepairRecord};
use crate::tracker::Tracker;

mod copies;
mod ops;
mod safemode;

use copies::{budget_allows, merge, start_copies};
pub use ops::{cluster_info, drain, undrain};
use safemode::{mark_unreported, safe_mode_over, step_aside};

/// Work in flight and timers the manager keeps between rounds (not persisted).
#[derive(Default)]
pub struct ManagerState {
    in_flight: HashSet<Hash>,
    per_peer: HashMap<String, usize>,
    unreferenced_since: HashMap<Hash, Instant>,
    budget_window: Option<(Instant, u64)>,
    /// Each peer's state class when last looked at: a change marks its chunks dirty.
    classes: HashMap<String, Class>,
    /// Chunks with more copies than their target, to trim once every holder is alive.
    above: HashSet<Hash>,
    /// Whether the evaluation of every chunk after safe mode has been done.
    settled: bool,
    /// Chunks below target that have a live source, by live copies then hash (HDFS's
    /// UnderReplicatedBlocks): repair takes them from the front, never scanning the queue.
    ranked: std::collections::BTreeSet<(usize, Hash)>,
    rank_of: HashMap<Hash, usize>,
    /// Lost chunks when last reported (the log says when the count moves).
    lost_reported: usize,
}

/// What about a peer decides whether its copies count. Suspect is not part of it: a
/// suspect peer's copies still count, and a pause in heartbeats (every peer suspect at
/// once) must not mark every chunk for evaluation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Class {
    dead: bool,
    draining: bool,
    restarting: bool,
}

/// A peer up and serving: first seen so, its copies were marked as they were added.
const SERVING: Class = Class {
    dead: false,
    draining: false,
    restarting: false,
};

/// Dirty chunks evaluated per lock hold: the lock is released between slices, so
/// heartbeats wait for one slice at most.
const SLICE: usize = 512;

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
        // Evaluation runs on a blocking thread: it takes the lock in slices, and steps
        // aside between them (see `step_aside`).
        let (t2, ms2) = (t.clone(), ms.clone());
        let _ = tokio::task::spawn_blocking(move || round(&t2, &ms2)).await;
    }
}

/// One pass of the manager. Synchronous decisions; copies run as spawned tasks. A
/// standby (PostgreSQL, not leader) keeps the health sets and drops its own abandoned
/// uploads, and decides nothing else.
pub fn round(t: &Arc<Tracker>, ms: &Arc<Mutex<ManagerState>>) {
    let expired = t.expire_uploads();
    if expired > 0 {
        info!(expired, "abandoned uploads expired");
    }
    let now = Instant::now();
    let leader = t.is_leader();
    let settled = note_transitions(t, ms, now);
    let below = evaluate(t, ms, now);
    if !leader || !settled {
        return;
    }
    enqueue_repairs(t, below);
    report_lost(t, ms);
    let mut deletions: Vec<Deletion> = Vec::new();
    // Read before the state lock (a database query with PostgreSQL); unreadable means
    // nothing is collected this round.
    let in_uploads = t.held_by_uploads();
    let starts;
    {
        let mut st = t.state();
        let mut m = ms.lock().unwrap_or_else(|p| p.into_inner());
        starts = schedule(t, &mut st, &mut m, now);
        if let Some(held) = &in_uploads {
            trim(t, &mut st, &mut m, now, held, &mut deletions);
            collect(t, &mut st, &mut m, now, held, &mut deletions);
        }
        deletions.extend(retries(t, &mut st, now));
    }
    t.send_deletions(merge(deletions));
    start_copies(t, ms, starts);
}

/// Failed deletions sent again to the peers alive now (their answers settle the copies
/// the tracker stopped listing when they failed; see `state::deleting`).
fn retries(t: &Tracker, st: &mut State, now: Instant) -> Vec<Deletion> {
    if !st.deleting.values().any(|m| m.failed()) {
        return Vec::new();
    }
    let alive: HashSet<String> = st
        .peers
        .values()
        .filter(|p| st.liveness(p, &t.cfg, now) == Liveness::Alive)
        .map(|p| p.id.clone())
        .collect();
    st.deletion_retries(|p| alive.contains(&p.id), now)
}

/// One log line when the number of lost chunks moves, however many there are.
fn report_lost(t: &Tracker, ms: &Arc<Mutex<ManagerState>>) {
    let st = t.state();
    let mut m = ms.lock().unwrap_or_else(|p| p.into_inner());
    let n = st.health.lost.len();
    if n != m.lost_reported {
        m.lost_reported = n;
        if n > 0 {
            let first: Vec<String> = st.health.lost.iter().take(3).map(|h| h.to_hex()).collect();
            error!(
                lost = n,
                ?first,
                "chunks LOST: no live copy; kept queued until a holder returns"
            );
        } else {
            info!("no chunk is lost any more");
        }
    }
}

/// Mark the chunks of every peer whose state class changed; when safe mode ends, mark the
/// chunks no peer reported and the ranked ones. Returns whether safe mode is over.
fn note_transitions(t: &Tracker, ms: &Arc<Mutex<ManagerState>>, now: Instant) -> bool {
    let cfg = &t.cfg;
    let mut st = t.state();
    let mut m = ms.lock().unwrap_or_else(|p| p.into_inner());
    let changed: Vec<String> = st
        .peers
        .values()
        .filter_map(|p| {
            let c = Class {
                dead: st.liveness(p, cfg, now) == Liveness::Dead,
                draining: p.draining,
                restarting: st.restarting(p, cfg, now),
            };
            // A peer first seen serving changed nothing since its copies were marked (a
            // storm's 10,000 registrations re-marked 10 M copies otherwise).
            let changed = match m.classes.insert(p.id.clone(), c) {
                None => c != SERVING,
                Some(before) => before != c,
            };
            changed.then(|| p.id.clone())
        })
        .collect();
    for id in changed {
        let held: Vec<Hash> = st.locations.of(&id).iter().copied().collect();
        st.dirty.extend(held);
    }
    let settled = m.settled || safe_mode_over(&st, cfg, now);
    if settled && !m.settled {
        m.settled = true;
        // Every chunk a peer reported was evaluated as it came (health, rank); never
        // evaluated are the chunks no peer reported. Those, and the ranked ones (for the
        // durable queue), are evaluated now: not millions of healthy ones again.
        let ranked: Vec<Hash> = m.ranked.iter().map(|(_, h)| *h).collect();
        info!(
            below_target = ranked.len(),
            "safe mode over: unreported and under-replicated chunks are evaluated"
        );
        st.dirty.extend(ranked);
        // Unreferenced copies seen during safe mode start their grace now.
        for since in m.unreferenced_since.values_mut() {
            *since = now;
        }
        drop((st, m));
        mark_unreported(t);
    }
    settled
}

/// Evaluate dirty chunks, a slice per lock hold: health sets, chunks above target and
/// unreferenced chunks on peers are noted; chunks below target are returned (to queue).
fn evaluate(t: &Tracker, ms: &Arc<Mutex<ManagerState>>, now: Instant) -> Vec<Hash> {
    let cfg = &t.cfg;
    let mut below = Vec::new();
    // Take the whole set at once (taking slices off a hash set rescans its emptied
    // buckets every time: quadratic over a storm's millions); marks made meanwhile wait
    // for the next round.
    let taken = std::mem::take(&mut t.state().dirty);
    let dirty = taken.into_vec();
    let mut held = Duration::ZERO;
    for (i, slice) in dirty.chunks(SLICE).enumerate() {
        if i > 0 {
            step_aside(held);
        }
        let mut st = t.state();
        let since = std::time::Instant::now();
        let mut m = ms.lock().unwrap_or_else(|p| p.into_inner());
        let mut fixed = Vec::new();
        for &h in slice {
            let Some(target) = st.chunk_target(&h) else {
                st.health.note(h, 0, None);
                m.above.remove(&h);
                m.unrank(&h);
                fixed.push(h);
                // Noted in safe mode too (collected only after it, and after the grace):
                // nothing marks such a chunk again.
                if st.locations.has(&h) {
                    m.unreferenced_since.entry(h).or_insert(now);
                }
                continue;
            };
            m.unreferenced_since.remove(&h);
            let durable = st.durable_count(&h, cfg, now);
            st.health.note(h, durable, Some(target));
            if st.below_target(&h, target, cfg, now) {
                below.push(h);
                if st.live_holders(&h, cfg, now).is_empty() {
                    m.unrank(&h); // lost: nothing to copy from until a holder returns
                } else {
                    m.rank(h, durable);
                }
            } else {
                m.unrank(&h);
                fixed.push(h);
            }
            if st.locations.count(&h) > target as usize {
                m.above.insert(h);
            } else {
                m.above.remove(&h);
            }
        }
        fixed.retain(|h| !m.in_flight.contains(h));
        held = since.elapsed();
        drop((st, m)); // the dequeue is a store write: never under the state lock
        dequeue(t, &fixed);
    }
    below
}

impl ManagerState {
    fn rank(&mut self, h: Hash, live: usize) {
        if let Some(old) = self.rank_of.insert(h, live) {
            self.ranked.remove(&(old, h));
        }
        self.ranked.insert((live, h));
    }

    fn unrank(&mut self, h: &Hash) {
        if let Some(old) = self.rank_of.remove(h) {
            self.ranked.remove(&(old, *h));
        }
    }
}

/// A repair to start: chunk, size, live copies, target, priority, target peer, sources, reason.
type Start = (
    Hash,
    u64,
    usize,
    u32,
    &'static str,
    pb::PeerRef,
    Vec<pb::PeerRef>,
    String,
);

/// Pick repairs from the queue, fewest live copies first, within the budgets.
fn schedule(t: &Tracker, st: &mut State, m: &mut ManagerState, now: Instant) -> Vec<Start> {
    let cfg = &t.cfg;
    // The front of the ranked queue, a bounded look: chunks that cannot start this
    // round (budgets, in flight) stay ranked for the next.
    let look = cfg.repair.concurrency.saturating_mul(16).max(64);
    let ranked: Vec<(usize, Hash)> = m
        .ranked
        .iter()
        .filter(|(_, h)| !m.in_flight.contains(h))
        .take(look)
        .copied()
        .collect();
    let mut starts = Vec::new();
    let mut planner = Planner::new(Tracker::candidates(st, cfg, now));
    for (live, h) in ranked {
        if m.in_flight.len() >= cfg.repair.concurrency {
            break;
        }
        if m.in_flight.contains(&h) {
            continue;
        }
        // The rank is as old as the chunk's last evaluation: a repair finished since (or
        // a holder back) may have brought it to target. Never copy on a stale count.
        let target_n = st.chunk_target(&h).unwrap_or(0);
        if !st.below_target(&h, target_n, cfg, now) {
            m.unrank(&h);
            continue;
        }
        let size = st.catalogue.chunk(&h).map_or(0, |c| c.size);
        if !budget_allows(m, cfg.repair.bandwidth_bytes, size, now) {
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
    starts
}

/// Trim copies above target, only when every holder is alive (no flapping) and no
/// upload in flight may be storing or acknowledging the chunk (`in_uploads`): its
/// receipt from a copy trimmed meanwhile would be counted and then dropped.
fn trim(
    t: &Tracker,
    st: &mut State,
    m: &mut ManagerState,
    now: Instant,
    in_uploads: &HashSet<Hash>,
    deletions: &mut Vec<Deletion>,
) {
    let cfg = &t.cfg;
    let pending: Vec<Hash> = m.above.iter().copied().collect();
    for h in pending {
        if m.in_flight.contains(&h) || in_uploads.contains(&h) {
            continue;
        }
        let Some(target) = st.chunk_target(&h) else {
            m.above.remove(&h);
            continue;
        };
        let holders = st.live_holders(&h, cfg, now);
        let durable = holders.iter().filter(|p| !p.draining).count();
        if holders.len() <= target as usize && st.locations.count(&h) <= target as usize {
            m.above.remove(&h);
            continue;
        }
        let all_alive = holders
            .iter()
            .all(|p| st.liveness(p, cfg, now) == Liveness::Alive);
        if !all_alive || durable < target as usize || holders.len() <= target as usize {
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
        let extra = holders.len() - target as usize;
        let victims: Vec<String> = ranked.iter().take(extra).map(|p| p.id.clone()).collect();
        m.above.remove(&h);
        for id in victims {
            info!(chunk = %h, peer = %id, "trimming a copy above target");
            t.metrics.trimmed_copies.inc();
            deletions.extend(st.deletion(&id, vec![h]));
            st.remove_location(&id, &h);
        }
    }
}

/// Garbage: chunks on peers that no file references and no upload may use (`in_uploads`:
/// uploads in flight through any replica), deleted after the grace.
fn collect(
    t: &Tracker,
    st: &mut State,
    m: &mut ManagerState,
    now: Instant,
    in_uploads: &HashSet<Hash>,
    deletions: &mut Vec<Deletion>,
) {
    let grace = t.cfg.repair.gc_grace;
    let pending: Vec<(Hash, Instant)> =
        m.unreferenced_since.iter().map(|(h, t)| (*h, *t)).collect();
    for (h, since) in pending {
        if st.catalogue.is_referenced(&h) || !st.locations.has(&h) {
            m.unreferenced_since.remove(&h);
            continue;
        }
        if in_uploads.contains(&h) {
            m.unreferenced_since.insert(h, now);
            continue;
        }
        if now.saturating_duration_since(since) < grace {
            continue;
        }
        m.unreferenced_since.remove(&h);
        let _g = info_span!("gc", chunk = %h).entered();
        let holders: Vec<String> = st.locations.holders(&h).map(String::from).collect();
        for id in holders {
            deletions.extend(st.deletion(&id, vec![h]));
            st.remove_location(&id, &h);
            t.metrics.gc_deleted_chunks.inc();
        }
        info!("unreferenced chunk collected");
    }
}

#[cfg(test)]
mod tests;
