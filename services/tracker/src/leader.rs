//! Leader election over PostgreSQL: the replica holding the session advisory lock
//! `LEADER_LOCK` runs the background manager (repair, trim, GC, drain decisions); the
//! others answer reads and catalogue writes only. The lock lives as long as the
//! connection: a leader that dies (or loses the database) releases it, and a standby,
//! trying every `RETRY`, takes over within seconds. A leader that cannot ping the
//! database within `RETRY` steps down at once, before another can have been elected
//! for long (the database ends its session once it sees the connection gone).

use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;
use std::time::Duration;

use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use crate::tracker::Tracker;

/// `application_name` of the election connections: this prefix and the replica's address.
pub const LEADER_APP_PREFIX: &str = "shoal-tracker ";

/// Which replica holds the leader lock (its `me`), as the database sees it.
pub const WHO_LEADS_SQL: &str = "SELECT a.application_name FROM pg_locks l
     JOIN pg_stat_activity a ON a.pid = l.pid
     WHERE l.locktype = 'advisory' AND l.granted
       AND l.classid::bigint = ($1::bigint >> 32) AND l.objid::bigint = ($1::bigint & 4294967295)";

/// How often a standby tries the lock and a leader checks it still holds it.
pub const RETRY: Duration = Duration::from_secs(1);

/// Campaign until `shutdown`. `me` names this replica in `pg_stat_activity`
/// (`application_name`), so operators (and tests) can see who holds the lock.
pub async fn run(
    t: Arc<Tracker>,
    url: String,
    tls: crate::pgtls::Tls,
    me: String,
    shutdown: CancellationToken,
) {
    loop {
        let result = hold(&t, &url, &tls, &me, &shutdown).await;
        if t.leader.swap(false, Relaxed) {
            warn!("no longer the leader: the background manager stops here");
        }
        if let Err(e) = result {
            warn!(error = %e, "leader election: database unreachable; retrying");
        }
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tokio::time::sleep(RETRY) => {}
        }
    }
}

/// Stops the connection's task when the session ends, so the lock goes with it.
struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

async fn hold(
    t: &Arc<Tracker>,
    url: &str,
    tls: &crate::pgtls::Tls,
    me: &str,
    shutdown: &CancellationToken,
) -> anyhow::Result<()> {
    let mut cfg: tokio_postgres::Config = url.parse()?;
    cfg.application_name(format!("{LEADER_APP_PREFIX}{me}"));
    let (client, conn) = cfg.connect(tls.clone()).await?;
    let _conn = AbortOnDrop(tokio::spawn(async move {
        let _ = conn.await;
    }));
    loop {
        if t.is_leader() {
            tokio::time::timeout(RETRY, client.simple_query("SELECT 1"))
                .await
                .map_err(|_| anyhow::anyhow!("leader lock check timed out"))??;
        } else {
            let got: bool = client
                .query_one(
                    "SELECT pg_try_advisory_lock($1)",
                    &[&crate::pg::LEADER_LOCK],
                )
                .await?
                .get(0);
            if got {
                elected(t).await;
            }
        }
        tokio::select! {
            _ = shutdown.cancelled() => return Ok(()),
            _ = tokio::time::sleep(RETRY) => {}
        }
    }
}

/// Take over: the repair queue the previous leader left in the database is ours now.
async fn elected(t: &Arc<Tracker>) {
    let t2 = t.clone();
    let queued = tokio::task::spawn_blocking(move || match t2.store.postgres() {
        Some(pg) => pg.repairs(),
        None => Ok(Vec::new()),
    })
    .await;
    let n = match queued {
        Ok(Ok(rs)) => {
            let mut q = t.repairs.lock().unwrap_or_else(|p| p.into_inner());
            q.extend(rs.into_iter().map(|r| r.chunk));
            q.len()
        }
        Ok(Err(e)) => {
            warn!(error = %e, "could not load the repair queue; the manager rebuilds it");
            0
        }
        Err(_) => 0,
    };
    t.leader.store(true, Relaxed);
    info!(
        repair_queue = n,
        "elected leader: running the background manager"
    );
}
