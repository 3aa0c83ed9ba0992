//! The catalogue store: files by content id, names, and the repair queue. Two
//! implementations chosen by configuration: redb under `SHOAL_DATA_DIR` (the default, one
//! tracker) and PostgreSQL (`SHOAL_STORE__URL`, several tracker replicas; see `pg`).
//! One transaction per catalogue change. Chunk locations are not stored in redb: peers
//! re-register with their inventories after a restart.

use std::collections::{BTreeMap, HashMap};
use std::path::Path;

use redb::{Database, ReadableDatabase, ReadableTable, TableDefinition};
use serde::{Deserialize, Serialize};
use shoal_common::hash::Hash;

const FILES: TableDefinition<&str, &[u8]> = TableDefinition::new("files");
const NAMES: TableDefinition<&str, &[u8]> = TableDefinition::new("names");
const REPAIRS: TableDefinition<&str, &[u8]> = TableDefinition::new("repairs");

/// A file's content: what every name of it points to.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct FileRecord {
    pub id: Hash,
    pub size: u64,
    pub chunk_size: u64,
    /// Chunk hashes in order.
    pub chunks: Vec<Hash>,
    pub replicas: u32,
    pub created_ms: i64,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct NameRecord {
    pub id: Hash,
    pub created_ms: i64,
}

/// A chunk waiting for repair, persisted so repair survives a restart.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct RepairRecord {
    pub chunk: Hash,
    pub enqueued_ms: i64,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub enum Change {
    PutFile(FileRecord),
    DeleteFile(Hash),
    PutName(String, NameRecord),
    DeleteName(String),
    PutRepair(RepairRecord),
    DeleteRepair(Hash),
}

impl Change {
    /// Part of the catalogue every replica mirrors (the repair queue is the leader's).
    pub fn is_catalogue(&self) -> bool {
        !matches!(self, Change::PutRepair(_) | Change::DeleteRepair(_))
    }
}

#[derive(Debug, Clone, thiserror::Error)]
#[error("catalogue store: {0}")]
pub struct StoreError(pub(crate) String);

pub(crate) fn err(e: impl std::fmt::Display) -> StoreError {
    StoreError(e.to_string())
}

/// A store that keeps the catalogue of one tracker: redb on disk, or memory in tests.
/// `apply` is all or nothing, and durable when it returns.
pub trait CatalogueStore: Send + Sync {
    fn load(&self) -> Result<Loaded, StoreError>;
    fn apply(&self, changes: &[Change]) -> Result<(), StoreError>;
}

/// The catalogue store the configuration chose. PostgreSQL is not a [`CatalogueStore`]:
/// several replicas share it, so its writes run inside a transaction that first catches
/// up with the others (see `writer`).
pub enum Store {
    Local(Box<dyn CatalogueStore>),
    Postgres(crate::pg::PgStore),
}

impl Store {
    /// PostgreSQL when a store URL is configured, else redb under the data dir.
    pub fn open(cfg: &crate::config::TrackerConfig) -> Result<Self, StoreError> {
        match cfg.store.url()? {
            Some(url) => {
                if let Some(w) = crate::pgtls::weakness(&url, cfg.store.ca_file.is_some()) {
                    tracing::warn!("{w}");
                }
                let tls = crate::pgtls::connector(cfg.store.ca_file.as_deref())?;
                Ok(Store::Postgres(crate::pg::PgStore::connect(&url, tls)?))
            }
            None => Ok(Store::Local(Box::new(RedbStore::open(&cfg.data_dir)?))),
        }
    }

    pub fn load(&self) -> Result<Loaded, StoreError> {
        match self {
            Store::Local(s) => s.load(),
            Store::Postgres(s) => s.load(),
        }
    }

    /// Apply the changes in one transaction: all or nothing.
    pub fn apply(&self, changes: &[Change]) -> Result<(), StoreError> {
        match self {
            Store::Local(s) => s.apply(changes),
            Store::Postgres(s) => s.apply(changes),
        }
    }

    pub fn postgres(&self) -> Option<&crate::pg::PgStore> {
        match self {
            Store::Postgres(s) => Some(s),
            Store::Local(_) => None,
        }
    }
}

pub struct RedbStore {
    db: Database,
}

/// Everything the store holds, loaded at start.
#[derive(Default)]
pub struct Loaded {
    pub files: HashMap<Hash, FileRecord>,
    pub names: BTreeMap<String, NameRecord>,
    pub repairs: Vec<RepairRecord>,
    /// The last catalogue log entry the load includes (PostgreSQL; 0 for redb).
    pub seq: i64,
}

impl RedbStore {
    pub fn open(dir: &Path) -> Result<Self, StoreError> {
        std::fs::create_dir_all(dir)
            .map_err(|e| StoreError(format!("create {}: {e}", dir.display())))?;
        let db = Database::create(dir.join("catalogue.redb")).map_err(err)?;
        let txn = db.begin_write().map_err(err)?;
        for t in [FILES, NAMES, REPAIRS] {
            txn.open_table(t).map_err(err)?;
        }
        txn.commit().map_err(err)?;
        Ok(Self { db })
    }
}

impl CatalogueStore for RedbStore {
    fn load(&self) -> Result<Loaded, StoreError> {
        let txn = self.db.begin_read().map_err(err)?;
        let mut out = Loaded::default();
        for row in txn.open_table(FILES).map_err(err)?.iter().map_err(err)? {
            let (_, v) = row.map_err(err)?;
            let f: FileRecord = serde_json::from_slice(v.value()).map_err(err)?;
            out.files.insert(f.id, f);
        }
        for row in txn.open_table(NAMES).map_err(err)?.iter().map_err(err)? {
            let (k, v) = row.map_err(err)?;
            out.names.insert(
                k.value().to_string(),
                serde_json::from_slice(v.value()).map_err(err)?,
            );
        }
        for row in txn.open_table(REPAIRS).map_err(err)?.iter().map_err(err)? {
            let (_, v) = row.map_err(err)?;
            out.repairs
                .push(serde_json::from_slice(v.value()).map_err(err)?);
        }
        Ok(out)
    }

    /// Apply the changes in one durable transaction: all or nothing.
    fn apply(&self, changes: &[Change]) -> Result<(), StoreError> {
        if changes.is_empty() {
            return Ok(());
        }
        let txn = self.db.begin_write().map_err(err)?;
        {
            let mut files = txn.open_table(FILES).map_err(err)?;
            let mut names = txn.open_table(NAMES).map_err(err)?;
            let mut repairs = txn.open_table(REPAIRS).map_err(err)?;
            for c in changes {
                match c {
                    Change::PutFile(f) => {
                        let v = serde_json::to_vec(f).map_err(err)?;
                        files
                            .insert(f.id.to_hex().as_str(), v.as_slice())
                            .map_err(err)?;
                    }
                    Change::DeleteFile(id) => {
                        files.remove(id.to_hex().as_str()).map_err(err)?;
                    }
                    Change::PutName(name, n) => {
                        let v = serde_json::to_vec(n).map_err(err)?;
                        names.insert(name.as_str(), v.as_slice()).map_err(err)?;
                    }
                    Change::DeleteName(name) => {
                        names.remove(name.as_str()).map_err(err)?;
                    }
                    Change::PutRepair(r) => {
                        let v = serde_json::to_vec(r).map_err(err)?;
                        repairs
                            .insert(r.chunk.to_hex().as_str(), v.as_slice())
                            .map_err(err)?;
                    }
                    Change::DeleteRepair(h) => {
                        repairs.remove(h.to_hex().as_str()).map_err(err)?;
                    }
                }
            }
        }
        txn.commit().map_err(err)
    }
}

/// The catalogue in memory, for tests: shared by its clones, so a test can hold one
/// and make its writes fail (`fail_writes`) while a tracker uses another.
#[derive(Clone, Default)]
pub struct MemoryStore {
    inner: std::sync::Arc<MemoryInner>,
}

#[derive(Default)]
struct MemoryInner {
    data: std::sync::Mutex<Loaded>,
    failing: std::sync::atomic::AtomicBool,
    applies: std::sync::atomic::AtomicU64,
    /// How long each write takes (a slow disk), to test batching.
    delay_ms: std::sync::atomic::AtomicU64,
}

impl MemoryStore {
    /// Make every later write fail (true) or succeed again (false).
    pub fn fail_writes(&self, fail: bool) {
        self.inner
            .failing
            .store(fail, std::sync::atomic::Ordering::SeqCst);
    }

    /// Make every write take this long.
    pub fn set_delay(&self, d: std::time::Duration) {
        self.inner
            .delay_ms
            .store(d.as_millis() as u64, std::sync::atomic::Ordering::SeqCst);
    }

    /// Successful non-empty writes so far (transactions, not changes).
    pub fn applies(&self) -> u64 {
        self.inner.applies.load(std::sync::atomic::Ordering::SeqCst)
    }
}

impl CatalogueStore for MemoryStore {
    fn load(&self) -> Result<Loaded, StoreError> {
        let d = self.inner.data.lock().unwrap_or_else(|p| p.into_inner());
        Ok(Loaded {
            files: d.files.clone(),
            names: d.names.clone(),
            repairs: d.repairs.clone(),
            seq: 0,
        })
    }

    fn apply(&self, changes: &[Change]) -> Result<(), StoreError> {
        use std::sync::atomic::Ordering::SeqCst;
        if changes.is_empty() {
            return Ok(());
        }
        let delay = self.inner.delay_ms.load(SeqCst);
        if delay > 0 {
            std::thread::sleep(std::time::Duration::from_millis(delay));
        }
        if self.inner.failing.load(SeqCst) {
            return Err(StoreError("injected write failure".into()));
        }
        let mut d = self.inner.data.lock().unwrap_or_else(|p| p.into_inner());
        for c in changes {
            match c {
                Change::PutFile(f) => {
                    d.files.insert(f.id, f.clone());
                }
                Change::DeleteFile(id) => {
                    d.files.remove(id);
                }
                Change::PutName(n, r) => {
                    d.names.insert(n.clone(), r.clone());
                }
                Change::DeleteName(n) => {
                    d.names.remove(n);
                }
                Change::PutRepair(r) => {
                    d.repairs.retain(|x| x.chunk != r.chunk);
                    d.repairs.push(r.clone());
                }
                Change::DeleteRepair(h) => d.repairs.retain(|x| x.chunk != *h),
            }
        }
        self.inner.applies.fetch_add(1, SeqCst);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn survives_reopen() {
        let dir = tempfile::tempdir().unwrap();
        let f = FileRecord {
            id: Hash::of(b"f"),
            size: 3,
            chunk_size: 4096,
            chunks: vec![Hash::of(b"c")],
            replicas: 2,
            created_ms: 7,
        };
        {
            let s = RedbStore::open(dir.path()).unwrap();
            s.apply(&[
                Change::PutFile(f.clone()),
                Change::PutName(
                    "a".into(),
                    NameRecord {
                        id: f.id,
                        created_ms: 7,
                    },
                ),
                Change::PutName(
                    "b".into(),
                    NameRecord {
                        id: f.id,
                        created_ms: 8,
                    },
                ),
                Change::DeleteName("b".into()),
                Change::PutRepair(RepairRecord {
                    chunk: Hash::of(b"c"),
                    enqueued_ms: 1,
                }),
            ])
            .unwrap();
        }
        let loaded = RedbStore::open(dir.path()).unwrap().load().unwrap();
        assert_eq!(loaded.files.get(&f.id), Some(&f));
        assert_eq!(loaded.names.keys().collect::<Vec<_>>(), vec!["a"]);
        assert_eq!(loaded.repairs.len(), 1);
    }
}
