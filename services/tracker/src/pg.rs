//! The catalogue on PostgreSQL, for several tracker replicas over one database.
//!
//! Tables: `files`, `names`, `repairs` (the state), `catalogue_log` (every catalogue
//! change, in commit order), `peers` and `locations` (written by `shared`). A catalogue write takes `pg_advisory_xact_lock(CATALOGUE)`
//! first, replays the log entries this replica has not seen yet, *then* decides (so two
//! replicas racing on one name cannot both see it free), writes the rows and the log
//! entries, and commits: one transaction per catalogue change. Other replicas tail the log.
//!
//! The synchronous `postgres` client runs on a dedicated thread (it brings its own
//! runtime, which must not be entered from the tracker's): callers block on a reply,
//! exactly as they block on a redb transaction, except repair-queue writes, which are
//! queued without waiting (their callers may hold the state lock). One connection per
//! replica serialises that replica's store work; a pool is the next step if it becomes
//! the bottleneck. Migrations ship in the binary
//! (`migrations/*.sql`) and run at start under a session advisory lock.

use std::sync::mpsc;
use std::sync::Mutex;

use postgres::{Client, GenericClient, Transaction};

use shoal_common::hash::Hash;

use crate::pgtls::Tls;
use crate::store::{err, Change, FileRecord, Loaded, NameRecord, RepairRecord, StoreError};

/// Advisory lock keys (arbitrary, fixed: every replica must use the same ones).
pub const MIGRATION_LOCK: i64 = 0x5348_4f41_4c01; // "SHOAL" 1
pub const CATALOGUE_LOCK: i64 = 0x5348_4f41_4c02;
pub const LEADER_LOCK: i64 = 0x5348_4f41_4c03;

/// Schema versions shipped with the binary, applied in order, each once.
pub const MIGRATIONS: &[(i32, &str, &str)] = &[
    (
        1,
        "catalogue",
        include_str!("../migrations/0001_catalogue.sql"),
    ),
    (2, "peers", include_str!("../migrations/0002_peers.sql")),
    (
        3,
        "log_trim",
        include_str!("../migrations/0003_log_trim.sql"),
    ),
    (4, "uploads", include_str!("../migrations/0004_uploads.sql")),
];

/// Apply the migrations not applied yet; returns the versions applied now. Two trackers
/// starting at once serialise on `MIGRATION_LOCK`, so each version runs exactly once.
pub fn migrate(c: &mut Client) -> Result<Vec<i32>, StoreError> {
    c.execute("SELECT pg_advisory_lock($1)", &[&MIGRATION_LOCK])
        .map_err(err)?;
    let result = (|| {
        c.batch_execute(
            "CREATE TABLE IF NOT EXISTS schema_migrations (
                 version     integer PRIMARY KEY,
                 name        text NOT NULL,
                 applied_at  timestamptz NOT NULL DEFAULT now()
             )",
        )
        .map_err(err)?;
        let mut applied = Vec::new();
        for (version, name, sql) in MIGRATIONS {
            let mut txn = c.transaction().map_err(err)?;
            let done = txn
                .query_opt(
                    "SELECT 1 FROM schema_migrations WHERE version = $1",
                    &[version],
                )
                .map_err(err)?
                .is_some();
            if done {
                continue;
            }
            txn.batch_execute(sql)
                .map_err(|e| StoreError(format!("migration {version} ({name}): {e}")))?;
            txn.execute(
                "INSERT INTO schema_migrations (version, name) VALUES ($1, $2)",
                &[version, name],
            )
            .map_err(err)?;
            txn.commit().map_err(err)?;
            applied.push(*version);
        }
        Ok(applied)
    })();
    let unlock = c.execute("SELECT pg_advisory_unlock($1)", &[&MIGRATION_LOCK]);
    let applied = result?;
    unlock.map_err(err)?;
    Ok(applied)
}

type Job = Box<dyn FnOnce(&mut Client) + Send>;

/// A PostgreSQL catalogue: one connection on its own thread.
pub struct PgStore {
    jobs: Mutex<mpsc::Sender<Job>>,
    url: String,
    tls: Tls,
}

/// One catalogue log entry.
#[derive(Debug, Clone)]
pub struct LogEntry {
    pub seq: i64,
    pub change: Change,
}

/// What a replica reads from the catalogue log after its position.
#[derive(Debug)]
pub enum Tail {
    /// The entries after it, in order.
    Entries(Vec<LogEntry>),
    /// Entries it never saw were trimmed (through this seq): it must reload the catalogue.
    Trimmed { through: i64 },
}

fn connect(url: &str, tls: &Tls) -> Result<Client, StoreError> {
    Client::connect(url, tls.clone()).map_err(|e| StoreError(format!("connect to PostgreSQL: {e}")))
}

impl PgStore {
    /// Connect, migrate, and start the connection's thread.
    pub fn connect(url: &str, tls: Tls) -> Result<Self, StoreError> {
        let (ready_tx, ready_rx) = mpsc::channel();
        let (jobs, rx) = mpsc::channel::<Job>();
        let (u, t) = (url.to_string(), tls.clone());
        std::thread::Builder::new()
            .name("shoal-pg".into())
            .spawn(move || {
                let mut client = match connect(&u, &t).and_then(|mut c| migrate(&mut c).map(|_| c)) {
                    Ok(c) => {
                        let _ = ready_tx.send(Ok(()));
                        c
                    }
                    Err(e) => {
                        let _ = ready_tx.send(Err(e));
                        return;
                    }
                };
                // Ends when the store (the only sender) is dropped.
                while let Ok(job) = rx.recv() {
                    if client.is_closed() {
                        match connect(&u, &t) {
                            Ok(c) => client = c,
                            Err(e) => {
                                tracing::warn!(error = %e, "PostgreSQL connection lost; retrying with the next call");
                                drop(job); // the caller sees the worker's reply channel close
                                continue;
                            }
                        }
                    }
                    job(&mut client);
                }
            })
            .map_err(|e| StoreError(format!("spawn the PostgreSQL thread: {e}")))?;
        ready_rx
            .recv()
            .map_err(|_| StoreError("PostgreSQL thread died at start".into()))??;
        Ok(Self {
            jobs: Mutex::new(jobs),
            url: url.to_string(),
            tls,
        })
    }

    pub fn url(&self) -> &str {
        &self.url
    }

    pub fn tls(&self) -> Tls {
        self.tls.clone()
    }

    /// Run `f` with the connection, blocking until it is done.
    pub fn call<R: Send + 'static>(
        &self,
        f: impl FnOnce(&mut Client) -> R + Send + 'static,
    ) -> Result<R, StoreError> {
        let (tx, rx) = mpsc::sync_channel(1);
        self.jobs
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .send(Box::new(move |c| {
                let _ = tx.send(f(c));
            }))
            .map_err(|_| StoreError("PostgreSQL thread stopped".into()))?;
        rx.recv()
            .map_err(|_| StoreError("PostgreSQL connection lost".into()))
    }

    /// The whole catalogue and the log position it reflects, from one snapshot.
    pub fn load(&self) -> Result<Loaded, StoreError> {
        self.call(|c| {
            let mut txn = snapshot(c)?;
            let out = load_in(&mut txn)?;
            txn.commit().map_err(err)?;
            Ok(out)
        })?
    }

    /// Apply changes in one transaction (used for the repair queue; catalogue changes go
    /// through [`write_catalogue`] inside a caught-up transaction).
    pub fn apply(&self, changes: &[Change]) -> Result<(), StoreError> {
        if changes.is_empty() {
            return Ok(());
        }
        let changes = changes.to_vec();
        self.call(move |c| apply_in(c, &changes))?
    }

    /// Queue changes for the connection's thread and return at once; a failure is logged.
    pub fn submit(&self, changes: &[Change]) -> Result<(), StoreError> {
        if changes.is_empty() {
            return Ok(());
        }
        let changes = changes.to_vec();
        self.jobs
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .send(Box::new(move |c| {
                if let Err(e) = apply_in(c, &changes) {
                    tracing::error!(error = %e, "could not persist the repair queue");
                }
            }))
            .map_err(|_| StoreError("PostgreSQL thread stopped".into()))
    }

    /// Catalogue log entries after `seq`, in order (or word that some were trimmed).
    pub fn log_since(&self, seq: i64) -> Result<Tail, StoreError> {
        self.call(move |c| log_since(c, seq))?
    }

    /// Delete log entries older than `retention`, always keeping the newest; returns how
    /// many went. Run by the leader.
    pub fn trim_log(&self, retention: std::time::Duration) -> Result<u64, StoreError> {
        self.call(move |c| trim_log(c, retention))?
    }

    pub fn repairs(&self) -> Result<Vec<RepairRecord>, StoreError> {
        self.call(load_repairs)?
    }

    /// Record that upload `id` may still commit `chunks` until `ttl` from now (database
    /// time): every replica's garbage collection keeps them until then.
    pub fn hold_upload(
        &self,
        id: &str,
        chunks: &[Hash],
        append: bool,
        ttl: std::time::Duration,
    ) -> Result<(), StoreError> {
        let id = id.to_string();
        let bytes: Vec<u8> = chunks.iter().flat_map(|h| h.0).collect();
        let ms = ttl.as_millis().min(i64::MAX as u128) as f64;
        // A streaming upload's windows add to its row; a placement or renewal sets it.
        let sql = if append {
            "INSERT INTO uploads (upload_id, chunks, expires_at)
             VALUES ($1, $2, now() + $3 * interval '1 millisecond')
             ON CONFLICT (upload_id) DO UPDATE
             SET chunks = uploads.chunks || EXCLUDED.chunks, expires_at = EXCLUDED.expires_at"
        } else {
            "INSERT INTO uploads (upload_id, chunks, expires_at)
             VALUES ($1, $2, now() + $3 * interval '1 millisecond')
             ON CONFLICT (upload_id) DO UPDATE
             SET chunks = EXCLUDED.chunks, expires_at = EXCLUDED.expires_at"
        };
        self.call(move |c| c.execute(sql, &[&id, &bytes, &ms]).map(|_| ()).map_err(err))?
    }

    /// Forget upload `id` (committed or aborted); queued, a failure is logged (the row
    /// then only holds its chunks until it expires).
    pub fn release_upload(&self, id: &str) {
        let id = id.to_string();
        let sent = self
            .jobs
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .send(Box::new(move |c| {
                if let Err(e) = c.execute("DELETE FROM uploads WHERE upload_id = $1", &[&id]) {
                    tracing::warn!(error = %e, "could not release an upload's chunks; they are held until it expires");
                }
            }));
        if sent.is_err() {
            tracing::warn!(
                "PostgreSQL thread stopped; an upload's chunks are held until it expires"
            );
        }
    }

    /// The chunks every replica's unexpired uploads may still commit; expired uploads are
    /// deleted first. Run by the leader before it collects garbage.
    pub fn held_chunks(&self) -> Result<std::collections::HashSet<Hash>, StoreError> {
        self.call(|c| {
            c.execute("DELETE FROM uploads WHERE expires_at <= now()", &[])
                .map_err(err)?;
            let mut held = std::collections::HashSet::new();
            for row in c.query("SELECT chunks FROM uploads", &[]).map_err(err)? {
                let bytes: Vec<u8> = row.get(0);
                for h in bytes.chunks_exact(32) {
                    let mut a = [0u8; 32];
                    a.copy_from_slice(h);
                    held.insert(Hash(a));
                }
            }
            Ok(held)
        })?
    }
}

/// A read-only transaction that sees one snapshot for all its statements.
pub fn snapshot(c: &mut Client) -> Result<Transaction<'_>, StoreError> {
    c.build_transaction()
        .isolation_level(postgres::IsolationLevel::RepeatableRead)
        .read_only(true)
        .start()
        .map_err(err)
}

/// The whole catalogue and the log position it reflects, read in `c`'s snapshot.
pub fn load_in(c: &mut impl GenericClient) -> Result<Loaded, StoreError> {
    let mut out = Loaded::default();
    for row in c
        .query("SELECT record::text FROM files", &[])
        .map_err(err)?
    {
        let f: FileRecord = serde_json::from_str(row.get(0)).map_err(err)?;
        out.files.insert(f.id, f);
    }
    for row in c
        .query("SELECT name, id, created_ms FROM names", &[])
        .map_err(err)?
    {
        let id: &str = row.get(1);
        out.names.insert(
            row.get(0),
            NameRecord {
                id: id.parse().map_err(err)?,
                created_ms: row.get(2),
            },
        );
    }
    out.repairs = load_repairs(c)?;
    out.seq = c
        .query_one("SELECT coalesce(max(seq), 0) FROM catalogue_log", &[])
        .map_err(err)?
        .get(0);
    Ok(out)
}

fn apply_in(c: &mut Client, changes: &[Change]) -> Result<(), StoreError> {
    let mut txn = c.transaction().map_err(err)?;
    if changes.iter().any(Change::is_catalogue) {
        lock_catalogue(&mut txn)?;
    }
    write_catalogue(&mut txn, changes)?;
    txn.commit().map_err(err)
}

fn load_repairs(c: &mut impl GenericClient) -> Result<Vec<RepairRecord>, StoreError> {
    c.query("SELECT chunk, enqueued_ms FROM repairs", &[])
        .map_err(err)?
        .iter()
        .map(|row| {
            let chunk: &str = row.get(0);
            Ok(RepairRecord {
                chunk: chunk.parse().map_err(err)?,
                enqueued_ms: row.get(1),
            })
        })
        .collect()
}

/// Serialise catalogue writers until the transaction ends.
pub fn lock_catalogue(txn: &mut Transaction<'_>) -> Result<(), StoreError> {
    txn.execute("SELECT pg_advisory_xact_lock($1)", &[&CATALOGUE_LOCK])
        .map_err(err)?;
    Ok(())
}

/// The log after `seq` and the trim mark, in one statement (one snapshot): a trim that
/// commits meanwhile is seen whole or not at all.
pub fn log_since(c: &mut impl GenericClient, seq: i64) -> Result<Tail, StoreError> {
    let rows = c
        .query(
            "SELECT t.through, l.seq, l.change::text
               FROM catalogue_log_trimmed t
               LEFT JOIN catalogue_log l ON l.seq > $1
              ORDER BY l.seq",
            &[&seq],
        )
        .map_err(err)?;
    let through: i64 = rows.first().map_or(0, |r| r.get(0));
    if through > seq {
        return Ok(Tail::Trimmed { through });
    }
    rows.iter()
        .filter_map(|row| {
            let seq: Option<i64> = row.get(1);
            let change: Option<&str> = row.get(2);
            Some((seq?, change?))
        })
        .map(|(seq, change)| {
            Ok(LogEntry {
                seq,
                change: serde_json::from_str(change).map_err(err)?,
            })
        })
        .collect::<Result<_, StoreError>>()
        .map(Tail::Entries)
}

/// Delete entries older than `retention` (never the newest, whose seq is the catalogue's
/// position) and raise the trim mark, in one transaction; returns how many went.
pub fn trim_log(c: &mut Client, retention: std::time::Duration) -> Result<u64, StoreError> {
    let mut txn = c.transaction().map_err(err)?;
    let gone = txn
        .query(
            "DELETE FROM catalogue_log
              WHERE at < now() - make_interval(secs => $1)
                AND seq < (SELECT max(seq) FROM catalogue_log)
          RETURNING seq",
            &[&retention.as_secs_f64()],
        )
        .map_err(err)?;
    let through = gone.iter().map(|r| r.get::<_, i64>(0)).max();
    if let Some(through) = through {
        txn.execute(
            "UPDATE catalogue_log_trimmed SET through = greatest(through, $1)",
            &[&through],
        )
        .map_err(err)?;
    }
    txn.commit().map_err(err)?;
    Ok(gone.len() as u64)
}

/// Write the rows and, for catalogue changes, the log entries; returns the last log
/// sequence written. The caller holds the catalogue lock when any change is a catalogue one.
pub fn write_catalogue(
    txn: &mut Transaction<'_>,
    changes: &[Change],
) -> Result<Option<i64>, StoreError> {
    let mut last = None;
    for c in changes {
        match c {
            Change::PutFile(f) => {
                let v = serde_json::to_string(f).map_err(err)?;
                txn.execute(
                    "INSERT INTO files (id, record) VALUES ($1, $2::text::jsonb)
                     ON CONFLICT (id) DO UPDATE SET record = EXCLUDED.record",
                    &[&f.id.to_hex(), &v],
                )
                .map_err(err)?;
            }
            Change::DeleteFile(id) => {
                txn.execute("DELETE FROM files WHERE id = $1", &[&id.to_hex()])
                    .map_err(err)?;
            }
            Change::PutName(name, n) => {
                txn.execute(
                    "INSERT INTO names (name, id, created_ms) VALUES ($1, $2, $3)
                     ON CONFLICT (name) DO UPDATE SET id = EXCLUDED.id, created_ms = EXCLUDED.created_ms",
                    &[name, &n.id.to_hex(), &n.created_ms],
                )
                .map_err(err)?;
            }
            Change::DeleteName(name) => {
                txn.execute("DELETE FROM names WHERE name = $1", &[name])
                    .map_err(err)?;
            }
            Change::PutRepair(r) => {
                txn.execute(
                    "INSERT INTO repairs (chunk, enqueued_ms) VALUES ($1, $2)
                     ON CONFLICT (chunk) DO NOTHING",
                    &[&r.chunk.to_hex(), &r.enqueued_ms],
                )
                .map_err(err)?;
            }
            Change::DeleteRepair(h) => {
                txn.execute("DELETE FROM repairs WHERE chunk = $1", &[&h.to_hex()])
                    .map_err(err)?;
            }
        }
        if c.is_catalogue() {
            let v = serde_json::to_string(c).map_err(err)?;
            let seq: i64 = txn
                .query_one(
                    "INSERT INTO catalogue_log (change) VALUES ($1::text::jsonb) RETURNING seq",
                    &[&v],
                )
                .map_err(err)?
                .get(0);
            last = Some(seq);
        }
    }
    Ok(last)
}

#[cfg(test)]
pub(crate) mod tests;
