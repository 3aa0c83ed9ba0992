//! Keeping a replica in step with the others over PostgreSQL, every `store.poll`:
//! read the catalogue log (files and names other replicas committed), write what this
//! replica heard from peers (rows, liveness, location changes, in one transaction), then
//! read every peer's row back (liveness from the database clock, so a peer heartbeating
//! to another replica is alive here too) and reload the locations of peers whose
//! `inventory_version` moved. Heartbeats are batched, not written one by one.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use postgres::Transaction;
use shoal_common::hash::Hash;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tracing::{info, info_span, warn};

use crate::error::Result;
use crate::state::{LocOp, PeerEntry, State};
use crate::store::Change;
use crate::store::{err, StoreError};
use crate::tracker::Tracker;
use crate::writer::{plan_batch, Job, PlannedBatch};

/// Run until `shutdown`; a failed round is logged and the next one runs.
pub async fn run(t: Arc<Tracker>, shutdown: CancellationToken) {
    let mut tick = tokio::time::interval(t.cfg.store.poll);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tick.tick() => {}
        }
        let t2 = t.clone();
        match tokio::task::spawn_blocking(move || round(&t2)).await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => warn!(error = %e, "could not sync with the shared store; retrying"),
            Err(_) => {}
        }
    }
}

/// One sync: read the catalogue log, write peers out, read peers in, then apply the
/// log. A catalogue change is committed together with the locations it created, so
/// applying the log after reading the peers never shows a file without its copies.
pub fn round(t: &Tracker) -> Result<()> {
    let entries = t.fetch_log()?;
    flush_peers(t)?;
    refresh_peers(t)?;
    t.apply_log(entries)?;
    trim_log(t)
}

/// The leader trims catalogue log entries older than `store.log_retention`, at most
/// once per `min(retention, 1 min)`.
fn trim_log(t: &Tracker) -> Result<()> {
    let Some(pg) = t.store.postgres() else {
        return Ok(());
    };
    let every = t.cfg.store.log_retention.min(Duration::from_secs(60));
    let due = {
        let mut last = t.last_trim.lock().unwrap_or_else(|p| p.into_inner());
        let due = t.is_leader() && last.is_none_or(|at| at.elapsed() >= every);
        if due {
            *last = Some(Instant::now());
        }
        due
    };
    if !due {
        return Ok(());
    }
    let _span = info_span!("log.trim", retention = ?t.cfg.store.log_retention).entered();
    let n = pg.trim_log(t.cfg.store.log_retention)?;
    t.metrics.log_trimmed.inc_by(n);
    if n > 0 {
        info!(trimmed = n, "catalogue log trimmed");
    }
    Ok(())
}

/// A peer's row as this replica knows it.
#[derive(Clone)]
struct PeerRow {
    id: String,
    addr: String,
    zone: String,
    capacity: i64,
    used: i64,
    active_transfers: i32,
    /// When this replica last heard from it.
    last_seen: Instant,
}

/// Journal entries taken for writing.
#[derive(Clone)]
pub struct Batch {
    rows: Vec<PeerRow>,
    drained: HashMap<String, bool>,
    ops: Vec<LocOp>,
}

impl Batch {
    /// Take what the journal holds (None: nothing to write).
    pub fn take(st: &mut State) -> Option<Batch> {
        let j = st.journal.as_mut()?;
        let (seen, drained, ops) = (
            std::mem::take(&mut j.seen),
            std::mem::take(&mut j.drained),
            std::mem::take(&mut j.ops),
        );
        let rows: Vec<PeerRow> = seen
            .iter()
            .filter_map(|id| st.peers.get(id))
            .map(|p| PeerRow {
                id: p.id.clone(),
                addr: p.addr.clone(),
                zone: p.zone.clone(),
                capacity: p.capacity as i64,
                used: p.used as i64,
                active_transfers: p.active_transfers as i32,
                last_seen: p.last_seen,
            })
            .collect();
        if rows.is_empty() && drained.is_empty() && ops.is_empty() {
            return None;
        }
        Some(Batch { rows, drained, ops })
    }

    /// Put a batch that was not written back in front of the journal.
    pub fn restore(self, st: &mut State) {
        let Some(j) = st.journal.as_mut() else {
            return;
        };
        // What the journal holds now is newer than the batch.
        for (id, draining) in self.drained {
            j.drained.entry(id).or_insert(draining);
        }
        let newer = std::mem::replace(&mut j.ops, self.ops);
        j.ops.extend(newer);
    }

    /// The batch is committed: note the peers' new inventory versions.
    pub fn written(st: &mut State, versions: Vec<(String, i64)>) {
        for (id, v) in versions {
            if let Some(p) = st.peers.get_mut(&id) {
                // Only if nobody else changed the peer meanwhile; otherwise the
                // refresh reloads it whole.
                if p.inventory_version == v - 1 {
                    p.inventory_version = v;
                }
            }
        }
    }

    /// Write into `txn`; returns the touched peers' new inventory versions.
    pub fn write(&self, txn: &mut Transaction<'_>) -> Result<Vec<(String, i64)>, StoreError> {
        let upsert = txn
            .prepare(
                "INSERT INTO peers (id, addr, zone, capacity, used, active_transfers, last_seen)
                 VALUES ($1, $2, $3, $4, $5, $6, now() - make_interval(secs => $7::float8 / 1000))
                 ON CONFLICT (id) DO UPDATE SET addr = EXCLUDED.addr, zone = EXCLUDED.zone,
                   capacity = EXCLUDED.capacity, used = EXCLUDED.used,
                   active_transfers = EXCLUDED.active_transfers, last_seen = EXCLUDED.last_seen",
            )
            .map_err(err)?;
        for r in &self.rows {
            // The row's time is `now()` (the transaction's start, on the database's clock,
            // so replicas on skewed hosts agree) minus the age: measured here, after that
            // start, so the row is never newer than the heartbeat it records. (An age taken
            // earlier made it newer; a goodbye said just after that heartbeat then looked
            // older than the peer's last word, and a restarting peer was judged dead.)
            let age_ms = r.last_seen.elapsed().as_secs_f64() * 1000.0;
            txn.execute(
                &upsert,
                &[
                    &r.id,
                    &r.addr,
                    &r.zone,
                    &r.capacity,
                    &r.used,
                    &r.active_transfers,
                    &age_ms,
                ],
            )
            .map_err(err)?;
        }
        for (id, draining) in &self.drained {
            txn.execute(
                "UPDATE peers SET draining = $2 WHERE id = $1",
                &[id, draining],
            )
            .map_err(err)?;
        }
        let add = txn
            .prepare("INSERT INTO locations (peer, chunk) VALUES ($1, $2) ON CONFLICT DO NOTHING")
            .map_err(err)?;
        let remove = txn
            .prepare("DELETE FROM locations WHERE peer = $1 AND chunk = $2")
            .map_err(err)?;
        for op in &self.ops {
            match op {
                LocOp::Reset(p) => {
                    txn.execute("DELETE FROM locations WHERE peer = $1", &[p])
                        .map_err(err)?;
                }
                LocOp::Add(p, h) => {
                    txn.execute(&add, &[p, &h.to_hex()]).map_err(err)?;
                }
                LocOp::Remove(p, h) => {
                    txn.execute(&remove, &[p, &h.to_hex()]).map_err(err)?;
                }
            }
        }
        let touched: Vec<&str> = self
            .ops
            .iter()
            .map(LocOp::peer)
            .collect::<HashSet<_>>()
            .into_iter()
            .collect();
        let versions = txn
            .query(
                "UPDATE peers SET inventory_version = inventory_version + 1
                 WHERE id = ANY($1) RETURNING id, inventory_version",
                &[&touched],
            )
            .map_err(err)?
            .iter()
            .map(|r| (r.get(0), r.get(1)))
            .collect();
        Ok(versions)
    }
}

/// Write the journal in one transaction; on failure it is put back for the next round.
pub fn flush_peers(t: &Tracker) -> Result<()> {
    let Some(pg) = t.store.postgres() else {
        return Ok(());
    };
    let Some(batch) = Batch::take(&mut t.state()) else {
        return Ok(());
    };
    let b = batch.clone();
    let written = pg
        .call(move |c| {
            let mut txn = c.transaction().map_err(err)?;
            let versions = b.write(&mut txn)?;
            txn.commit().map_err(err)?;
            Ok(versions)
        })
        .and_then(|r| r);
    let mut st = t.state();
    match written {
        Ok(versions) => {
            Batch::written(&mut st, versions);
            Ok(())
        }
        Err(e) => {
            batch.restore(&mut st);
            Err(e.into())
        }
    }
}

struct DbPeer {
    id: String,
    addr: String,
    zone: String,
    capacity: i64,
    used: i64,
    active_transfers: i32,
    draining: bool,
    age_ms: i64,
    version: i64,
}

/// Read every peer's row; reload the locations of the peers whose version moved.
pub fn refresh_peers(t: &Tracker) -> Result<()> {
    let Some(pg) = t.store.postgres() else {
        return Ok(());
    };
    let local: HashMap<String, i64> = t
        .state()
        .peers
        .values()
        .map(|p| (p.id.clone(), p.inventory_version))
        .collect();
    // Taken before the snapshot starts: the ages read are measured from that start
    // (`now()`), so `asked - age` is never newer than the row (see `Batch::write`).
    let asked = Instant::now();
    let (peers, mut inventories) = pg.call(move |c| {
        let mut txn = crate::pg::snapshot(c)?;
        let peers: Vec<DbPeer> = txn
            .query(
                "SELECT id, addr, zone, capacity, used, active_transfers, draining,
                        ceil(extract(epoch FROM now() - last_seen) * 1000)::bigint,
                        inventory_version
                 FROM peers",
                &[],
            )
            .map_err(err)?
            .iter()
            .map(|r| DbPeer {
                id: r.get(0),
                addr: r.get(1),
                zone: r.get(2),
                capacity: r.get(3),
                used: r.get(4),
                active_transfers: r.get(5),
                draining: r.get(6),
                age_ms: r.get(7),
                version: r.get(8),
            })
            .collect();
        let stale: Vec<&String> = peers
            .iter()
            .filter(|p| local.get(&p.id) != Some(&p.version))
            .map(|p| &p.id)
            .collect();
        let mut inventories: HashMap<String, Vec<Hash>> =
            stale.iter().map(|id| ((*id).clone(), Vec::new())).collect();
        if !stale.is_empty() {
            for r in txn
                .query(
                    "SELECT peer, chunk FROM locations WHERE peer = ANY($1)",
                    &[&stale],
                )
                .map_err(err)?
            {
                let (peer, chunk): (String, &str) = (r.get(0), r.get(1));
                inventories
                    .entry(peer)
                    .or_default()
                    .push(chunk.parse().map_err(err)?);
            }
        }
        txn.commit().map_err(err)?;
        Ok::<_, StoreError>((peers, inventories))
    })??;
    let mut st = t.state();
    let pending: (HashSet<String>, HashMap<String, bool>) = st
        .journal
        .as_ref()
        .map(|j| (j.seen.clone(), j.drained.clone()))
        .unwrap_or_default();
    for d in peers {
        let last_seen = asked
            .checked_sub(Duration::from_millis(d.age_ms.max(0) as u64))
            .unwrap_or(asked);
        let p = st.peers.entry(d.id.clone()).or_insert_with(|| PeerEntry {
            id: d.id.clone(),
            addr: d.addr.clone(),
            zone: d.zone.clone(),
            capacity: 0,
            used: 0,
            active_transfers: 0,
            last_seen,
            draining: false,
            inventory_version: -1,
            write_mark: (0, 0),
        });
        // A peer heard from here since the flush keeps this replica's (newer) view.
        if !pending.0.contains(&d.id) {
            p.addr = d.addr;
            p.zone = d.zone;
            p.capacity = d.capacity.max(0) as u64;
            p.used = d.used.max(0) as u64;
            p.active_transfers = d.active_transfers.max(0) as u32;
            p.last_seen = last_seen;
        }
        if !pending.1.contains_key(&d.id) {
            p.draining = d.draining;
        }
        if let Some(chunks) = inventories.remove(&d.id) {
            st.reload_inventory(&d.id, chunks, d.version);
        }
    }
    Ok(())
}

/// A catalogue commit over PostgreSQL: lock the catalogue, catch up with what other
/// replicas committed, plan the jobs on that up-to-date state, write them with this
/// replica's peer journal, commit, then apply. So a name two replicas race for is
/// decided once: the second sees the first's name and fails. The state lock is taken
/// between statements, never across one. Returns the jobs deferred to the next commit.
pub(crate) fn commit(t: &Arc<Tracker>, jobs: Vec<Job>, now: Instant) -> Vec<Job> {
    let Some(pg) = t.store.postgres() else {
        return jobs;
    };
    let t2 = t.clone();
    match pg.call(move |c| commit_in(&t2, c, jobs, now)) {
        // Applied here, not on the connection's thread: applying sends deletion orders,
        // which needs the runtime.
        Ok((done, deferred)) => {
            if let Some((planned, changes, result)) = done {
                planned.finish(t, changes, result);
            }
            deferred
        }
        // The jobs were dropped with the call: their callers see the writer stop.
        Err(e) => {
            warn!(error = %e, "catalogue commit could not run");
            Vec::new()
        }
    }
}

/// A planned batch with its changes and how its commit went.
type Done = Option<(PlannedBatch, Vec<Change>, Result<()>)>;

fn commit_in(
    t: &Tracker,
    c: &mut postgres::Client,
    jobs: Vec<Job>,
    now: Instant,
) -> (Done, Vec<Job>) {
    let mut txn = match c.transaction().map_err(err) {
        Ok(txn) => txn,
        Err(e) => return (None, fail(jobs, e)),
    };
    let caught_up = (|| {
        crate::pg::lock_catalogue(&mut txn)?;
        let seq = t.state().applied_seq;
        match crate::pg::log_since(&mut txn, seq)? {
            crate::pg::Tail::Entries(missed) => Ok::<_, StoreError>(Err(missed)),
            crate::pg::Tail::Trimmed { through } => {
                warn!(
                    position = seq,
                    trimmed_through = through,
                    "this replica fell behind the trimmed catalogue log; reloading the catalogue"
                );
                Ok(Ok(crate::pg::load_in(&mut txn)?))
            }
        }
    })();
    let caught_up = match caught_up {
        Ok(c) => c,
        Err(e) => return (None, fail(jobs, e)),
    };
    let (changes, planned, deferred, batch) = {
        let mut st = t.state();
        match caught_up {
            Err(missed) => st.replay(missed),
            Ok(loaded) => st.reload_catalogue(loaded),
        }
        let (changes, planned, deferred) = plan_batch(&st, &t.cfg, now, jobs);
        // The locations this change created (and anything else heard from peers) commit
        // with it: a replica that sees the file sees where its chunks are.
        let batch = if planned.is_empty() {
            None
        } else {
            Batch::take(&mut st)
        };
        (changes, planned, deferred, batch)
    };
    if planned.is_empty() {
        let _ = txn.rollback();
        return (None, deferred);
    }
    let written = crate::pg::write_catalogue(&mut txn, &changes).and_then(|last| {
        let versions = match &batch {
            Some(b) => b.write(&mut txn)?,
            None => Vec::new(),
        };
        txn.commit().map_err(err)?;
        Ok((last, versions))
    });
    match written {
        Ok((last, versions)) => {
            {
                let mut st = t.state();
                Batch::written(&mut st, versions);
                if let Some(seq) = last {
                    // A sync round skips these entries: they are applied just below.
                    st.applied_seq = st.applied_seq.max(seq);
                }
            }
            (Some((planned, changes, Ok(()))), deferred)
        }
        Err(e) => {
            if let Some(b) = batch {
                b.restore(&mut t.state());
            }
            let e = crate::error::Error::Unavailable(e.to_string());
            (Some((planned, changes, Err(e))), deferred)
        }
    }
}

fn fail(jobs: Vec<Job>, e: StoreError) -> Vec<Job> {
    let e = crate::error::Error::Unavailable(e.to_string());
    for job in jobs {
        job.fail(e.clone());
    }
    Vec::new()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::TrackerConfig;
    use shoal_proto::v1 as pb;

    /// A heartbeat written out and read back is never newer than it was: a goodbye said
    /// right after it must still count (it did not, now and then: the restarting peer was
    /// judged dead on the PostgreSQL store).
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_round_trip_through_the_store_never_makes_a_peer_newer() {
        // The blocking PostgreSQL client runs a runtime of its own: off the workers.
        let t = tokio::task::spawn_blocking(|| {
            let url = crate::pg::tests::fresh_db()?;
            let mut cfg = TrackerConfig::for_data_dir(std::path::PathBuf::new());
            cfg.store.url = Some(url);
            let keys = shoal_common::ticket::TicketKeys::new(None, None, None);
            Some(Tracker::open(cfg, None, keys).unwrap())
        })
        .await
        .unwrap();
        let Some(t) = t else { return };
        for round_no in 0..20 {
            let heard = Instant::now();
            let peer = pb::PeerRef {
                id: format!("p{round_no}"),
                addr: "127.0.0.1:1".into(),
                zone: "z".into(),
            };
            t.state().register_peer(peer, 1 << 30, 0, Vec::new(), heard);
            let t2 = t.clone();
            tokio::task::spawn_blocking(move || round(&t2))
                .await
                .unwrap()
                .unwrap();
            let st = t.state();
            for p in st.peers.values() {
                assert!(
                    p.last_seen <= heard,
                    "{} read back {:?} after its last heartbeat",
                    p.id,
                    p.last_seen.saturating_duration_since(heard)
                );
            }
        }
    }
}
