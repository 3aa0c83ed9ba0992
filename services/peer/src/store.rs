//! The chunk store on disk: one file per chunk under `chunks/<first two hex>/<hash>`,
//! the path derived only from the hash. A chunk is written to `tmp/`, hashed while it
//! is written, fsynced and renamed into place only if its BLAKE3 hash matches, so a
//! crash or a bad sender never leaves a half or wrong chunk visible. Corrupt chunks
//! found on read or scrub move to `quarantine/`.
//!
//! Everything here is blocking I/O: call it from `spawn_blocking`.

use std::collections::{BTreeSet, HashMap};
use std::fs::{self, File};
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use shoal_common::hash::Hash;

mod direct;
mod reader;

pub use reader::ChunkReader;

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("chunk {expected} failed verification: received bytes hash to {actual}")]
    Mismatch { expected: Hash, actual: Hash },
    #[error("chunk {hash} declared {declared} bytes, received {received}")]
    WrongSize {
        hash: Hash,
        declared: u64,
        received: u64,
    },
    #[error("chunk {0} is not stored here")]
    Missing(Hash),
    #[error("no space left for chunk {hash}: {needed} bytes needed, {free} free")]
    Full { hash: Hash, needed: u64, free: u64 },
    #[error("chunk store I/O: {0}")]
    Io(#[from] io::Error),
}

impl From<StoreError> for tonic::Status {
    fn from(e: StoreError) -> Self {
        use tonic::Status;
        match e {
            StoreError::Mismatch { .. } => Status::data_loss(e.to_string()),
            StoreError::WrongSize { .. } => Status::invalid_argument(e.to_string()),
            StoreError::Missing(_) => Status::not_found(e.to_string()),
            StoreError::Full { .. } => Status::resource_exhausted(e.to_string()),
            StoreError::Io(_) => Status::internal(e.to_string()),
        }
    }
}

pub struct ChunkStore {
    root: PathBuf,
    capacity: u64,
    used: AtomicU64,
    inventory: Mutex<BTreeSet<Hash>>,
    written: Mutex<Written>,
    /// Names this process's write sequence (see [`ChunkStore::write_mark`]).
    boot: u64,
    /// Write chunk files with `O_DIRECT` (see [`direct`]).
    direct: bool,
    buffers: direct::Pool,
    /// Read chunk files with `O_DIRECT` (see [`ChunkReader`]).
    direct_reads: bool,
    read_buffers: Arc<direct::Pool>,
}

/// Read buffers kept for reuse: enough for every message of a few dozen reads in flight.
const READ_POOL: usize = 32;

/// How long a write is remembered for deletions that must spare it.
pub const SPARE_MAX: Duration = Duration::from_secs(60);

/// Each chunk's last write or acknowledgement, numbered. A deletion the tracker decided
/// may reach this peer after a new upload stored the same chunk here (and was
/// acknowledged, and committed): that copy must survive it. The tracker sends the last
/// [`ChunkStore::write_mark`] it heard before deciding; writes numbered after it are
/// spared. Entries older than [`SPARE_MAX`] are pruned.
#[derive(Default)]
struct Written {
    at: HashMap<Hash, (u64, Instant)>,
    seq: u64,
    prune_above: usize,
}

/// What a deletion that spares recent writes did to one chunk.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Deleted {
    Removed,
    Absent,
    /// Written or acknowledged after the deletion's mark: kept.
    Spared,
}

impl ChunkStore {
    /// Open (creating) the store and scan its chunks. Leftover temp files are removed.
    pub fn open(root: &Path, capacity: u64) -> Result<Self, StoreError> {
        for d in ["chunks", "tmp", "quarantine"] {
            fs::create_dir_all(root.join(d))?;
        }
        for e in fs::read_dir(root.join("tmp"))? {
            let _ = fs::remove_file(e?.path());
        }
        let mut inventory = BTreeSet::new();
        let mut used = 0;
        for shard in fs::read_dir(root.join("chunks"))? {
            let shard = shard?;
            if !shard.file_type()?.is_dir() {
                continue;
            }
            for e in fs::read_dir(shard.path())? {
                let e = e?;
                if let Some(h) = e.file_name().to_str().and_then(|n| n.parse::<Hash>().ok()) {
                    used += e.metadata()?.len();
                    inventory.insert(h);
                }
            }
        }
        Ok(Self {
            root: root.to_path_buf(),
            capacity,
            used: AtomicU64::new(used),
            inventory: Mutex::new(inventory),
            written: Mutex::default(),
            boot: rand::random::<u64>() | 1,
            direct: false,
            buffers: Default::default(),
            direct_reads: false,
            read_buffers: Arc::new(direct::Pool::keeping(READ_POOL)),
        })
    }

    /// Write chunk files with `O_DIRECT` where the filesystem allows (see [`direct`]).
    pub fn set_direct_writes(&mut self, on: bool) {
        self.direct = on;
    }

    /// Read chunk files with `O_DIRECT` where the filesystem allows (see [`ChunkReader`]).
    pub fn set_direct_reads(&mut self, on: bool) {
        self.direct_reads = on;
    }

    pub fn path(&self, h: &Hash) -> PathBuf {
        let hex = h.to_hex();
        self.root.join("chunks").join(&hex[..2]).join(hex)
    }

    fn inv(&self) -> std::sync::MutexGuard<'_, BTreeSet<Hash>> {
        self.inventory.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub fn has(&self, h: &Hash) -> bool {
        self.inv().contains(h)
    }

    pub fn inventory(&self) -> Vec<Hash> {
        self.inv().iter().copied().collect()
    }

    pub fn len(&self) -> usize {
        self.inv().len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    pub fn digest(&self) -> String {
        shoal_common::hash::inventory_digest(self.inv().iter())
    }

    pub fn used(&self) -> u64 {
        self.used.load(Relaxed)
    }

    pub fn capacity(&self) -> u64 {
        self.capacity
    }

    /// Set the bytes offered (at start, once the chunks on disk are counted).
    pub fn set_capacity(&mut self, capacity: u64) {
        self.capacity = capacity;
    }

    /// Start writing chunk `h` of `size` bytes.
    pub fn writer(&self, h: Hash, size: u64) -> Result<ChunkWriter<'_>, StoreError> {
        let free = self.capacity.saturating_sub(self.used());
        if !self.has(&h) && size > free {
            return Err(StoreError::Full {
                hash: h,
                needed: size,
                free,
            });
        }
        let tmp =
            self.root
                .join("tmp")
                .join(format!("{}.{:016x}", h.to_hex(), rand::random::<u64>()));
        let (file, direct) = direct::create(&tmp, self.direct, &self.buffers)?;
        Ok(ChunkWriter {
            store: self,
            file: Some(file),
            direct,
            tmp,
            hasher: blake3::Hasher::new(),
            written: 0,
            hash: h,
            size,
        })
    }

    /// Open a stored chunk for reading.
    pub fn open_chunk(&self, h: &Hash) -> Result<(File, u64), StoreError> {
        match File::open(self.path(h)) {
            Ok(f) => {
                let len = f.metadata()?.len();
                Ok((f, len))
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                self.forget(h, 0);
                Err(StoreError::Missing(*h))
            }
            Err(e) => Err(e.into()),
        }
    }

    fn forget(&self, h: &Hash, bytes: u64) -> bool {
        let removed = self.inv().remove(h);
        if removed {
            self.used.fetch_sub(bytes.min(self.used()), Relaxed);
        }
        removed
    }

    fn written(&self) -> std::sync::MutexGuard<'_, Written> {
        self.written.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Where this process's write sequence stands: `(boot, seq)`. A heartbeat carries
    /// it; a deletion decided after the tracker heard it spares writes numbered later.
    pub fn write_mark(&self) -> (u64, u64) {
        (self.boot, self.written().seq)
    }

    /// A deletion has run, or a copy is stored: advance the sequence so that a later
    /// mark proves an inventory read after it (see `DeleteChunksResponse.mark` and
    /// `ReplicateChunkResponse.mark`); returns the new mark.
    pub fn advance_mark(&self) -> (u64, u64) {
        let mut w = self.written();
        w.seq += 1;
        (self.boot, w.seq)
    }

    /// Note that `h` is being written or acknowledged now, and say whether it is
    /// already here. Atomic with [`Self::delete_unless_written_after`]: a copy
    /// acknowledged here is never removed by a deletion decided before it.
    pub fn claim(&self, h: &Hash) -> bool {
        let mut w = self.written();
        let now = Instant::now();
        w.seq += 1;
        let seq = w.seq;
        w.at.insert(*h, (seq, now));
        if w.at.len() > w.prune_above {
            w.at.retain(|_, (_, t)| now.saturating_duration_since(*t) < SPARE_MAX);
            w.prune_above = (w.at.len() * 2).max(4096);
        }
        self.has(h)
    }

    /// Delete `h` unless it was written or acknowledged after `mark` (a mark of another
    /// process, or none the tracker had heard: after this process started).
    pub fn delete_unless_written_after(
        &self,
        h: &Hash,
        mark: (u64, u64),
    ) -> Result<Deleted, StoreError> {
        let w = self.written();
        if w.at
            .get(h)
            .is_some_and(|(seq, _)| mark.0 != self.boot || *seq > mark.1)
        {
            return Ok(Deleted::Spared);
        }
        // Under the lock, so no acknowledgement slips in between the check and the unlink.
        Ok(if self.delete(h)? {
            Deleted::Removed
        } else {
            Deleted::Absent
        })
    }

    pub fn delete(&self, h: &Hash) -> Result<bool, StoreError> {
        let p = self.path(h);
        let len = fs::metadata(&p).map(|m| m.len()).unwrap_or(0);
        match fs::remove_file(&p) {
            Ok(()) => Ok(self.forget(h, len)),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(self.forget(h, 0)),
            Err(e) => Err(e.into()),
        }
    }

    /// Move a corrupt chunk aside; it is no longer served or counted.
    pub fn quarantine(&self, h: &Hash) -> Result<(), StoreError> {
        let p = self.path(h);
        let len = fs::metadata(&p).map(|m| m.len()).unwrap_or(0);
        let dest =
            self.root
                .join("quarantine")
                .join(format!("{}.{}", h.to_hex(), rand::random::<u32>()));
        match fs::rename(&p, dest) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => return Err(e.into()),
        }
        self.forget(h, len);
        Ok(())
    }

    /// Re-hash a stored chunk: `Ok(true)` when it matches its name.
    pub fn verify(&self, h: &Hash, pace: &mut dyn FnMut(u64)) -> Result<bool, StoreError> {
        // The same reads as serving: past the page cache where the store reads that way.
        let mut r = self.reader(h)?;
        let mut hasher = blake3::Hasher::new();
        let mut pos = 0u64;
        loop {
            let b = r.read_at(pos, shoal_common::STREAM_MESSAGE_BYTES)?;
            if b.is_empty() {
                break;
            }
            hasher.update(&b);
            pos += b.len() as u64;
            pace(b.len() as u64);
        }
        Ok(Hash::from(hasher.finalize()) == *h)
    }
}

/// A chunk being received. Dropped without `commit`, it leaves nothing behind.
pub struct ChunkWriter<'a> {
    store: &'a ChunkStore,
    file: Option<File>,
    /// Set when the file was opened with `O_DIRECT`: bytes gather here first.
    direct: Option<direct::Direct>,
    tmp: PathBuf,
    hasher: blake3::Hasher,
    written: u64,
    hash: Hash,
    size: u64,
}

impl ChunkWriter<'_> {
    pub fn write(&mut self, data: &[u8]) -> Result<(), StoreError> {
        let received = self.written + data.len() as u64;
        if received > self.size {
            return Err(StoreError::WrongSize {
                hash: self.hash,
                declared: self.size,
                received,
            });
        }
        // Large updates use BLAKE3's SIMD paths; 256 KiB messages hash at several GB/s.
        self.hasher.update(data);
        let file = self.file.as_mut().expect("open until commit");
        match self.direct.as_mut() {
            Some(d) => d.write(file, data)?,
            None => file.write_all(data)?,
        }
        self.written = received;
        Ok(())
    }

    /// Verify, fsync and rename into place. `Ok(true)` if the chunk is new here.
    pub fn commit(mut self) -> Result<bool, StoreError> {
        if self.written != self.size {
            return Err(StoreError::WrongSize {
                hash: self.hash,
                declared: self.size,
                received: self.written,
            });
        }
        let actual = Hash::from(self.hasher.finalize());
        if actual != self.hash {
            return Err(StoreError::Mismatch {
                expected: self.hash,
                actual,
            });
        }
        let mut file = self.file.take().expect("open until commit");
        if self.store.claim(&self.hash) {
            return Ok(false);
        }
        if let Some(d) = self.direct.as_mut() {
            d.finish(&mut file, self.size)?;
        }
        file.sync_data()?;
        drop(file);
        let dest = self.store.path(&self.hash);
        let dir = dest.parent().expect("chunk paths have a shard dir");
        fs::create_dir_all(dir)?;
        fs::rename(&self.tmp, &dest)?;
        // The rename is durable only once the directory is.
        File::open(dir)?.sync_all()?;
        if self.store.inv().insert(self.hash) {
            self.store.used.fetch_add(self.size, Relaxed);
        }
        Ok(true)
    }
}

impl Drop for ChunkWriter<'_> {
    fn drop(&mut self) {
        if let Some(d) = self.direct.take() {
            d.release(&self.store.buffers);
        }
        let _ = fs::remove_file(&self.tmp);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn store() -> (tempfile::TempDir, ChunkStore) {
        let d = tempfile::tempdir().unwrap();
        let s = ChunkStore::open(d.path(), 1 << 30).unwrap();
        (d, s)
    }

    /// A deletion keeps a chunk written or acknowledged after the mark it carries, and
    /// removes one written before; a mark of another process spares every recent write.
    #[test]
    fn a_deletion_spares_a_chunk_written_after_its_mark() {
        let (_d, s) = store();
        let data = b"spared".to_vec();
        let h = Hash::of(&data);
        let before = s.write_mark();
        let mut w = s.writer(h, data.len() as u64).unwrap();
        w.write(&data).unwrap();
        assert!(w.commit().unwrap());
        assert_eq!(
            s.delete_unless_written_after(&h, before).unwrap(),
            Deleted::Spared
        );
        assert_eq!(
            s.delete_unless_written_after(&h, (before.0 ^ 2, u64::MAX))
                .unwrap(),
            Deleted::Spared,
            "a mark from another boot"
        );
        assert!(s.has(&h));
        let after = s.write_mark();
        assert_eq!(
            s.delete_unless_written_after(&h, after).unwrap(),
            Deleted::Removed
        );
        assert!(!s.has(&h));
        assert_eq!(
            s.delete_unless_written_after(&h, after).unwrap(),
            Deleted::Absent
        );
        // Written again: an acknowledgement of a present copy is a write too.
        let mut w = s.writer(h, data.len() as u64).unwrap();
        w.write(&data).unwrap();
        assert!(w.commit().unwrap());
        let written = s.write_mark();
        assert!(s.claim(&h), "acknowledged as already here");
        assert_eq!(
            s.delete_unless_written_after(&h, written).unwrap(),
            Deleted::Spared
        );
        assert_eq!(
            s.delete_unless_written_after(&h, s.write_mark()).unwrap(),
            Deleted::Removed
        );
        // The answer's mark follows the deletion: a mark read before it is lower.
        let read_before = s.write_mark();
        let answered = s.advance_mark();
        assert!(answered.1 > read_before.1 && s.write_mark() == answered);
    }

    #[test]
    fn write_verify_read_delete() {
        let (d, s) = store();
        let data = vec![7u8; 300_000];
        let h = Hash::of(&data);
        let mut w = s.writer(h, data.len() as u64).unwrap();
        w.write(&data[..100]).unwrap();
        w.write(&data[100..]).unwrap();
        assert!(w.commit().unwrap());
        assert!(s.has(&h));
        assert_eq!(s.used(), 300_000);
        assert!(s.verify(&h, &mut |_| {}).unwrap());
        let reopened = ChunkStore::open(d.path(), 1 << 30).unwrap();
        assert_eq!(reopened.inventory(), vec![h]);
        assert!(s.delete(&h).unwrap());
        assert_eq!(s.used(), 0);
    }

    #[test]
    fn bad_bytes_leave_nothing() {
        let (d, s) = store();
        let h = Hash::of(b"right");
        let mut w = s.writer(h, 5).unwrap();
        w.write(b"wrong").unwrap();
        assert!(matches!(w.commit(), Err(StoreError::Mismatch { .. })));
        let mut w = s.writer(h, 5).unwrap();
        assert!(matches!(
            w.write(b"toolong"),
            Err(StoreError::WrongSize { .. })
        ));
        drop(w);
        let mut w = s.writer(h, 5).unwrap();
        w.write(b"rig").unwrap();
        assert!(matches!(w.commit(), Err(StoreError::WrongSize { .. })));
        assert!(!s.has(&h));
        assert_eq!(fs::read_dir(d.path().join("tmp")).unwrap().count(), 0);
    }

    #[test]
    fn corruption_is_detected_and_quarantined() {
        let (_d, s) = store();
        let h = Hash::of(b"payload");
        let mut w = s.writer(h, 7).unwrap();
        w.write(b"payload").unwrap();
        w.commit().unwrap();
        fs::write(s.path(&h), b"paXload").unwrap();
        assert!(!s.verify(&h, &mut |_| {}).unwrap());
        s.quarantine(&h).unwrap();
        assert!(!s.has(&h));
        assert!(matches!(s.open_chunk(&h), Err(StoreError::Missing(_))));
    }

    #[test]
    fn full_store_refuses() {
        let d = tempfile::tempdir().unwrap();
        let s = ChunkStore::open(d.path(), 4).unwrap();
        assert!(matches!(
            s.writer(Hash::of(b"12345"), 5),
            Err(StoreError::Full { .. })
        ));
    }
}
