//! Catalogue backup and restore: the backup file format, the `ExportCatalogue` stream
//! the running tracker serves, and the `shoal-tracker backup PATH` / `restore PATH`
//! commands.
//!
//! redb lets one process open a database file, so a backup cannot read
//! `catalogue.redb` beside the running tracker: it asks the tracker, which takes a
//! snapshot from one read transaction ([`Store::load`]) and streams it. Restore writes
//! a fresh `catalogue.redb` into an empty data dir through [`RedbStore::apply`], in one
//! transaction, before any tracker runs on it. This module owns the file format only; it
//! must not reach into the tracker's state: chunk locations are not backed up (peers
//! re-register with their inventories after a restore).
//!
//! The format (version 1) is JSON lines: a `header` record (format name, version, when,
//! how many records of each kind), one record per file, name and queued repair (files
//! sorted by id, names by name, so two backups of one catalogue are identical but for
//! the time), and an `end` record with the record count and the BLAKE3 of every byte
//! before it. Restore and the backup command itself verify all of it.

use std::collections::HashSet;
use std::io::BufRead;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use shoal_proto::v1 as pb;
use tokio_stream::wrappers::ReceiverStream;
use tonic::Status;

use crate::store::{
    CatalogueStore, Change, FileRecord, Loaded, NameRecord, RedbStore, RepairRecord,
};
use crate::tracker::Tracker;

/// The `format` every backup file's header names.
pub const FORMAT: &str = "shoal-catalogue";
/// The version this tracker writes and reads.
pub const VERSION: u32 = 1;
/// Bytes per `CatalogueBytes` message.
const MESSAGE_BYTES: usize = 1 << 20;
/// A backup stream that makes no progress for this long is abandoned, on either side.
pub const IDLE_TIMEOUT: Duration = Duration::from_secs(60);
/// The entry a freshly formatted volume holds (ext4): an empty data dir may have it.
const LOST_AND_FOUND: &str = "lost+found";

#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct BackupError(String);

fn fail(msg: impl Into<String>) -> BackupError {
    BackupError(msg.into())
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Header {
    pub format: String,
    pub version: u32,
    pub created_ms: i64,
    pub files: u64,
    pub names: u64,
    pub repairs: u64,
}

#[derive(Debug, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", deny_unknown_fields)]
enum Record {
    Header(Header),
    File(FileRecord),
    Name { name: String, record: NameRecord },
    Repair(RepairRecord),
    End { records: u64, blake3: String },
}

/// What a backup file holds, checked.
#[derive(Debug)]
pub struct Snapshot {
    pub header: Header,
    /// The catalogue as store changes (files, then names, then repairs).
    pub changes: Vec<Change>,
    /// BLAKE3 of the file up to its end record, hex.
    pub blake3: String,
    /// Size of the whole file.
    pub bytes: u64,
}

/// Encode `loaded` as a backup file, handing it to `sink` in pieces of about
/// [`MESSAGE_BYTES`]; stops early (returning false) when `sink` does.
pub fn encode(loaded: &Loaded, created_ms: i64, mut sink: impl FnMut(Vec<u8>) -> bool) -> bool {
    let mut files: Vec<&FileRecord> = loaded.files.values().collect();
    files.sort_by_key(|f| f.id);
    let mut repairs: Vec<&RepairRecord> = loaded.repairs.iter().collect();
    repairs.sort_by_key(|r| r.chunk);
    let header = Header {
        format: FORMAT.into(),
        version: VERSION,
        created_ms,
        files: files.len() as u64,
        names: loaded.names.len() as u64,
        repairs: repairs.len() as u64,
    };
    let records = std::iter::once(Record::Header(header))
        .chain(files.into_iter().cloned().map(Record::File))
        .chain(loaded.names.iter().map(|(name, record)| Record::Name {
            name: name.clone(),
            record: record.clone(),
        }))
        .chain(repairs.into_iter().cloned().map(Record::Repair));
    let mut hasher = blake3::Hasher::new();
    let mut buf = Vec::with_capacity(MESSAGE_BYTES + 4096);
    let mut count = 0u64;
    for r in records {
        let start = buf.len();
        // Serialising these plain records cannot fail (string keys, no maps of non-strings).
        if serde_json::to_writer(&mut buf, &r).is_err() {
            return false;
        }
        buf.push(b'\n');
        hasher.update(&buf[start..]);
        if !matches!(r, Record::Header(_)) {
            count += 1;
        }
        if buf.len() >= MESSAGE_BYTES && !sink(std::mem::take(&mut buf)) {
            return false;
        }
    }
    let end = Record::End {
        records: count,
        blake3: hasher.finalize().to_hex().to_string(),
    };
    if serde_json::to_writer(&mut buf, &end).is_err() {
        return false;
    }
    buf.push(b'\n');
    sink(buf)
}

/// Read and check a backup file: format and version, every record, the counts the header
/// and the end record announce, the BLAKE3 checksum, and that every name points to a
/// file of the snapshot. Nothing may follow the end record.
pub fn decode(mut r: impl BufRead) -> Result<Snapshot, BackupError> {
    let mut hasher = blake3::Hasher::new();
    let mut line = Vec::new();
    let mut lineno = 0u64;
    let mut bytes = 0u64;
    let mut header: Option<Header> = None;
    let mut changes = Vec::new();
    let (mut files, mut names, mut repairs) = (0u64, 0u64, 0u64);
    let mut ids = HashSet::new();
    let mut named = Vec::new();
    loop {
        line.clear();
        let n = r
            .read_until(b'\n', &mut line)
            .map_err(|e| fail(format!("read: {e}")))?;
        if n == 0 {
            return Err(fail(if header.is_none() {
                "empty file: not a shoal catalogue backup".to_string()
            } else {
                format!("truncated after line {lineno}: no end record (an interrupted copy?)")
            }));
        }
        lineno += 1;
        bytes += n as u64;
        if line.last() != Some(&b'\n') {
            return Err(fail(format!(
                "truncated at line {lineno}: the last record is incomplete"
            )));
        }
        let rec: Record = serde_json::from_slice(&line).map_err(|e| {
            if lineno == 1 {
                fail(format!("not a shoal catalogue backup ({e})"))
            } else {
                fail(format!("line {lineno}: bad record: {e}"))
            }
        })?;
        let is_end = matches!(rec, Record::End { .. });
        if !is_end {
            hasher.update(&line);
        }
        match (rec, &header) {
            (Record::Header(h), None) => {
                if h.format != FORMAT {
                    return Err(fail(format!(
                        "format {:?} is not a shoal catalogue backup",
                        h.format.chars().take(40).collect::<String>()
                    )));
                }
                if h.version != VERSION {
                    return Err(fail(format!(
                        "backup format version {} is not supported (this shoal-tracker reads version {VERSION})",
                        h.version
                    )));
                }
                header = Some(h);
            }
            (_, None) => return Err(fail("not a shoal catalogue backup (no header record)")),
            (Record::Header(_), Some(_)) => {
                return Err(fail(format!("line {lineno}: a second header record")))
            }
            (Record::File(f), Some(_)) => {
                if !ids.insert(f.id) {
                    return Err(fail(format!(
                        "line {lineno}: file {} appears twice",
                        f.id.to_hex()
                    )));
                }
                files += 1;
                changes.push(Change::PutFile(f));
            }
            (Record::Name { name, record }, Some(_)) => {
                names += 1;
                named.push((lineno, record.id));
                changes.push(Change::PutName(name, record));
            }
            (Record::Repair(rep), Some(_)) => {
                repairs += 1;
                changes.push(Change::PutRepair(rep));
            }
            (Record::End { records, blake3 }, Some(h)) => {
                let actual = hasher.finalize().to_hex().to_string();
                if actual != blake3 {
                    return Err(fail(format!(
                        "checksum mismatch: the end record says BLAKE3 {}, the records hash to {actual} (the file is damaged)",
                        blake3.chars().take(64).collect::<String>()
                    )));
                }
                if records != files + names + repairs
                    || (h.files, h.names, h.repairs) != (files, names, repairs)
                {
                    return Err(fail(format!(
                        "record counts disagree: header says {} files, {} names, {} repairs; end says {records} records; found {files}, {names}, {repairs}",
                        h.files, h.names, h.repairs
                    )));
                }
                let mut rest = [0u8; 1];
                let more = r.read(&mut rest).map_err(|e| fail(format!("read: {e}")))?;
                if more != 0 {
                    return Err(fail(format!("data after the end record (line {lineno})")));
                }
                if let Some((at, id)) = named.iter().find(|(_, id)| !ids.contains(id)) {
                    return Err(fail(format!(
                        "line {at}: a name points to file {} which the backup does not hold",
                        id.to_hex()
                    )));
                }
                return Ok(Snapshot {
                    header: h.clone(),
                    changes,
                    blake3,
                    bytes,
                });
            }
        }
    }
}

/// Read and check the backup file at `path`.
pub fn read_file(path: &Path) -> Result<Snapshot, BackupError> {
    let f = std::fs::File::open(path).map_err(|e| fail(format!("{}: {e}", path.display())))?;
    decode(std::io::BufReader::new(f)).map_err(|e| fail(format!("{}: {e}", path.display())))
}

fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

pub type ExportStream = ReceiverStream<Result<pb::CatalogueBytes, Status>>;

/// The `ExportCatalogue` stream: a snapshot from one read transaction, encoded on a
/// blocking thread and sent with a bounded queue; a reader that stops reading for
/// [`IDLE_TIMEOUT`] ends it.
pub fn export(tracker: Arc<Tracker>) -> ExportStream {
    let (tx, rx) = tokio::sync::mpsc::channel(4);
    let rt = tokio::runtime::Handle::current();
    tokio::task::spawn_blocking(move || {
        let loaded = match tracker.store.load() {
            Ok(l) => l,
            Err(e) => {
                tracing::warn!(error = %e, "catalogue backup: snapshot failed");
                let _ = tx.blocking_send(Err(Status::unavailable(format!(
                    "catalogue snapshot failed: {e}"
                ))));
                return;
            }
        };
        let (files, names) = (loaded.files.len(), loaded.names.len());
        let done = encode(&loaded, now_ms(), |data| {
            rt.block_on(tx.send_timeout(Ok(pb::CatalogueBytes { data: data.into() }), IDLE_TIMEOUT))
                .is_ok()
        });
        if done {
            tracing::info!(files, names, "catalogue backup streamed");
        } else {
            tracing::warn!(files, names, "catalogue backup abandoned by the reader");
        }
    });
    ReceiverStream::new(rx)
}

/// What a backup or a restore wrote.
#[derive(Debug)]
pub struct Summary {
    pub header: Header,
    pub bytes: u64,
    pub blake3: String,
}

impl std::fmt::Display for Summary {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} files, {} names, {} queued repairs, {} bytes, BLAKE3 {}",
            self.header.files, self.header.names, self.header.repairs, self.bytes, self.blake3
        )
    }
}

impl From<Snapshot> for Summary {
    fn from(s: Snapshot) -> Self {
        Summary {
            header: s.header,
            bytes: s.bytes,
            blake3: s.blake3,
        }
    }
}

/// Ask the tracker at `urls` (comma-separated replicas, tried in order) for a snapshot
/// and write it to `path` atomically: a temp file in the same directory, fsync, check
/// it reads back whole, rename, fsync the directory.
pub async fn backup(urls: &str, token: Option<&str>, path: &Path) -> Result<Summary, BackupError> {
    let mut last = fail(format!("no tracker URL in {urls:?}"));
    for url in urls.split(',').map(str::trim).filter(|u| !u.is_empty()) {
        match backup_from(url, token, path).await {
            Ok(s) => return Ok(s),
            Err(e) => last = e,
        }
    }
    Err(last)
}

async fn backup_from(url: &str, token: Option<&str>, path: &Path) -> Result<Summary, BackupError> {
    use shoal_proto::v1::tracker_client::TrackerClient;
    let ch = shoal_common::grpc::channel_with(url, token)
        .map_err(|e| fail(format!("tracker {url}: {}", e.message())))?;
    let mut client =
        TrackerClient::new(ch).max_decoding_message_size(shoal_common::grpc::MAX_MESSAGE_BYTES);
    let mut stream = client
        .export_catalogue(pb::ExportCatalogueRequest {})
        .await
        .map_err(|e| {
            let hint = match e.code() {
                tonic::Code::Unauthenticated | tonic::Code::PermissionDenied => {
                    " (a backup needs the cluster token: SHOAL_AUTH__CLUSTER_TOKEN or _FILE)"
                }
                _ => "",
            };
            fail(format!("tracker {url}: {}{hint}", e.message()))
        })?
        .into_inner();
    let tmp = temp_path(path)?;
    let result = async {
        let mut f = tokio::fs::File::create(&tmp)
            .await
            .map_err(|e| fail(format!("{}: {e}", tmp.display())))?;
        loop {
            let msg = tokio::time::timeout(IDLE_TIMEOUT, stream.message())
                .await
                .map_err(|_| fail(format!("tracker {url}: no data for {IDLE_TIMEOUT:?}")))?
                .map_err(|e| fail(format!("tracker {url}: {}", e.message())))?;
            let Some(msg) = msg else { break };
            tokio::io::AsyncWriteExt::write_all(&mut f, &msg.data)
                .await
                .map_err(|e| fail(format!("{}: {e}", tmp.display())))?;
        }
        f.sync_all()
            .await
            .map_err(|e| fail(format!("{}: {e}", tmp.display())))?;
        drop(f);
        let (t, p) = (tmp.clone(), path.to_path_buf());
        tokio::task::spawn_blocking(move || {
            let snap = read_file(&t)?;
            std::fs::rename(&t, &p).map_err(|e| fail(format!("rename to {}: {e}", p.display())))?;
            sync_dir(p.parent().unwrap_or(Path::new(".")))?;
            Ok(Summary::from(snap))
        })
        .await
        .map_err(|e| fail(format!("backup check: {e}")))?
    }
    .await;
    if result.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    result
}

fn temp_path(path: &Path) -> Result<PathBuf, BackupError> {
    let name = path
        .file_name()
        .ok_or_else(|| fail(format!("{}: not a file path", path.display())))?;
    let mut tmp = std::ffi::OsString::from(".");
    tmp.push(name);
    tmp.push(format!(".tmp-{}", std::process::id()));
    Ok(path.with_file_name(tmp))
}

fn sync_dir(dir: &Path) -> Result<(), BackupError> {
    let dir = if dir.as_os_str().is_empty() {
        Path::new(".")
    } else {
        dir
    };
    std::fs::File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(|e| fail(format!("fsync {}: {e}", dir.display())))
}

/// Load the backup at `backup` into `data_dir`, which must be empty (or not exist): the
/// catalogue is written to a temp directory inside it in one transaction and renamed
/// into place, so an interrupted restore leaves no `catalogue.redb` a tracker could
/// start on half-filled.
pub fn restore(backup: &Path, data_dir: &Path) -> Result<Summary, BackupError> {
    if let Ok(entries) = std::fs::read_dir(data_dir) {
        let mut found: Vec<String> = entries
            .flatten()
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .filter(|n| n != LOST_AND_FOUND)
            .collect();
        if !found.is_empty() {
            found.sort();
            found.truncate(5);
            return Err(fail(format!(
                "refusing to restore into {}: the data dir is not empty (it holds {}); restore needs an empty data dir, so move the old one aside first",
                data_dir.display(),
                found.join(", ")
            )));
        }
    }
    let snap = read_file(backup)?;
    std::fs::create_dir_all(data_dir)
        .map_err(|e| fail(format!("create {}: {e}", data_dir.display())))?;
    let tmp = data_dir.join(".restore-tmp");
    let result = (|| {
        let store = RedbStore::open(&tmp).map_err(|e| fail(e.to_string()))?;
        store
            .apply(&snap.changes)
            .map_err(|e| fail(e.to_string()))?;
        drop(store);
        std::fs::rename(tmp.join("catalogue.redb"), data_dir.join("catalogue.redb"))
            .map_err(|e| fail(format!("rename into {}: {e}", data_dir.display())))?;
        sync_dir(data_dir)
    })();
    let _ = std::fs::remove_dir_all(&tmp);
    result?;
    Ok(Summary::from(snap))
}

const USAGE: &str = "usage: shoal-tracker                serve (settings from SHOAL_* variables)
       shoal-tracker backup PATH    write a catalogue snapshot of the running tracker
                                    (SHOAL_TRACKER_URL, default this tracker's listen address)
       shoal-tracker restore PATH   load a snapshot into the empty SHOAL_DATA_DIR";

/// The variable naming the tracker `backup` dials; read here, not a tracker setting.
pub const TRACKER_URL_VAR: &str = "SHOAL_TRACKER_URL";

/// The `backup` and `restore` subcommands: `None` when `args` (without the program name)
/// ask to serve, else the process exit code.
pub async fn command(args: &[String]) -> Option<i32> {
    let (cmd, path) = match args {
        [] => return None,
        [c, p] if c == "backup" || c == "restore" => (c.as_str(), PathBuf::from(p)),
        [h] if h == "-h" || h == "--help" || h == "help" => {
            println!("{USAGE}");
            return Some(0);
        }
        _ => {
            eprintln!("{USAGE}");
            return Some(shoal_common::config::EXIT_USAGE);
        }
    };
    // The tracker's own settings (tokens, TLS, data dir), so the commands run in the
    // tracker's environment (`kubectl exec`) as well as in a backup job's.
    let mut vars: Vec<(String, String)> = std::env::vars().collect();
    let url = vars
        .iter()
        .position(|(k, _)| k == TRACKER_URL_VAR)
        .map(|i| vars.remove(i).1);
    let cfg = match shoal_common::config::from_vars::<crate::TrackerConfig>(vars)
        .and_then(|c| c.validate().map(|()| c))
    {
        Ok(c) => c,
        Err(e) => {
            eprintln!("shoal-tracker {cmd}: {e}");
            return Some(shoal_common::config::EXIT_USAGE);
        }
    };
    let result = match cmd {
        "backup" => run_backup(&cfg, url, &path).await,
        _ => run_restore(&cfg, &path).await,
    };
    Some(match result {
        Ok(s) => {
            println!("shoal-tracker {cmd}: {}: {s}", path.display());
            0
        }
        Err(e) => {
            eprintln!("shoal-tracker {cmd}: {e}");
            1
        }
    })
}

async fn run_backup(
    cfg: &crate::TrackerConfig,
    url: Option<String>,
    path: &Path,
) -> Result<Summary, BackupError> {
    let tokens = cfg.auth.resolve().map_err(|e| fail(e.to_string()))?;
    if let Some(c) = cfg.tls.client().map_err(|e| fail(e.to_string()))? {
        shoal_common::tls::set_client(c);
    }
    let url = url.unwrap_or_else(|| {
        let mut a = cfg.listen_addr;
        if a.ip().is_unspecified() {
            a.set_ip(std::net::Ipv4Addr::LOCALHOST.into());
        }
        shoal_common::grpc::url_for(&a.to_string())
    });
    backup(&url, tokens.cluster.as_deref(), path).await
}

async fn run_restore(cfg: &crate::TrackerConfig, path: &Path) -> Result<Summary, BackupError> {
    if cfg.store.url().map_err(|e| fail(e.to_string()))?.is_some() {
        return Err(fail(
            "the catalogue is in PostgreSQL (SHOAL_STORE__URL): restore it with pg_restore or from an RDS snapshot (docs/operations.md); restore writes a redb data dir",
        ));
    }
    let (p, dir) = (path.to_path_buf(), cfg.data_dir.clone());
    tokio::task::spawn_blocking(move || restore(&p, &dir))
        .await
        .map_err(|e| fail(format!("restore: {e}")))?
}

#[cfg(test)]
mod tests;
