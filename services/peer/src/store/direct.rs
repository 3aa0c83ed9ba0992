//! Chunk files written with `O_DIRECT` (`SHOAL_DIRECT_WRITES=true`): the bytes go from
//! an aligned buffer of ours to the device, not through the page cache. A chunk is
//! written once and fsynced before it is acknowledged, so the cache buys it nothing on
//! the way in, while copying every byte into freshly allocated cache pages was the
//! biggest cost of a put on a peer (about half its CPU samples on a 2-core VM). The
//! price: the next read of the chunk comes from the device.
//!
//! `O_DIRECT` wants the memory, the file offset and the length of every write aligned
//! to the device's block: bytes are gathered into a [`BLOCK`]-sized buffer aligned to
//! [`ALIGN`], written whole, and the tail is padded to [`ALIGN`] and cut back with
//! `set_len` at commit. A filesystem that refuses `O_DIRECT` (tmpfs) gets the
//! ordinary buffered file.

use std::fs::{File, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;
use std::sync::Mutex;

/// Alignment of memory, offsets and lengths (covers 512 B and 4 KiB devices).
pub const ALIGN: usize = 4096;
/// Bytes gathered before each write: as fast to the device as 1 MiB or 4 MiB writes here
/// (1 GiB in 0.90 s, 0.25 CPU-s), and small enough that the most writes a peer admits
/// at once (`SHOAL_MAX_TRANSFERS`, 256) hold 65 MiB of buffers at worst.
pub const BLOCK: usize = 256 << 10;
/// Buffers kept for reuse (reused pages are already mapped: no page faults per chunk).
const POOL: usize = 8;

/// Spare buffers, shared by the writers of one store.
#[derive(Default)]
pub struct Pool(Mutex<Vec<Vec<u8>>>);

impl Pool {
    fn take(&self) -> Vec<u8> {
        let spare = self.0.lock().unwrap_or_else(|p| p.into_inner()).pop();
        spare.unwrap_or_else(|| vec![0; BLOCK + ALIGN])
    }

    fn give(&self, buf: Vec<u8>) {
        let mut pool = self.0.lock().unwrap_or_else(|p| p.into_inner());
        if pool.len() < POOL {
            pool.push(buf);
        }
    }
}

/// The aligned gathering buffer of one chunk file opened with `O_DIRECT`.
pub struct Direct {
    buf: Vec<u8>,
    /// Where the aligned block starts in `buf`.
    start: usize,
    filled: usize,
}

/// Create `path` for writing, with `O_DIRECT` when `direct` and the filesystem allows.
pub fn create(path: &Path, direct: bool, pool: &Pool) -> io::Result<(File, Option<Direct>)> {
    if direct {
        let flags = rustix::fs::OFlags::DIRECT.bits() as i32;
        match OpenOptions::new()
            .write(true)
            .create_new(true)
            .custom_flags(flags)
            .open(path)
        {
            Ok(f) => {
                let buf = pool.take();
                // Within ALIGN (always, for bytes); kept in bounds whatever it says.
                let start = buf.as_ptr().align_offset(ALIGN).min(ALIGN);
                return Ok((
                    f,
                    Some(Direct {
                        buf,
                        start,
                        filled: 0,
                    }),
                ));
            }
            Err(e) if e.raw_os_error() == Some(rustix::io::Errno::INVAL.raw_os_error()) => {}
            Err(e) => return Err(e),
        }
    }
    Ok((File::create(path)?, None))
}

impl Direct {
    /// Gather `data`, writing every full block.
    pub fn write(&mut self, file: &mut File, mut data: &[u8]) -> io::Result<()> {
        while !data.is_empty() {
            let n = (BLOCK - self.filled).min(data.len());
            let at = self.start + self.filled;
            self.buf[at..at + n].copy_from_slice(&data[..n]);
            self.filled += n;
            data = &data[n..];
            if self.filled == BLOCK {
                file.write_all(&self.buf[self.start..self.start + BLOCK])?;
                self.filled = 0;
            }
        }
        Ok(())
    }

    /// Write the tail, padded to [`ALIGN`], then cut the file back to `size` bytes.
    pub fn finish(&mut self, file: &mut File, size: u64) -> io::Result<()> {
        if self.filled > 0 {
            let padded = self.filled.div_ceil(ALIGN) * ALIGN;
            let at = self.start;
            self.buf[at + self.filled..at + padded].fill(0);
            file.write_all(&self.buf[at..at + padded])?;
            self.filled = 0;
            file.set_len(size)?;
        }
        Ok(())
    }

    /// Hand the buffer back for the next chunk.
    pub fn release(self, pool: &Pool) {
        pool.give(self.buf);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::{ChunkStore, StoreError};
    use shoal_common::hash::Hash;
    use std::io::Read;

    /// On the repository's filesystem (tmpfs, where /tmp may be, refuses O_DIRECT).
    fn direct_store() -> (tempfile::TempDir, ChunkStore) {
        let d = tempfile::tempdir_in(env!("CARGO_MANIFEST_DIR")).unwrap();
        let mut s = ChunkStore::open(d.path(), 1 << 30).unwrap();
        s.set_direct_writes(true);
        (d, s)
    }

    /// Every size around the alignment and block edges, in pieces of odd sizes: the
    /// stored file holds exactly the chunk's bytes (tail padding cut back).
    #[test]
    fn direct_writes_store_exactly_the_bytes_whatever_the_sizes() {
        let (d, s) = direct_store();
        let probe = d.path().join("probe");
        let (_, used) = create(&probe, true, &s.buffers).unwrap();
        eprintln!("O_DIRECT here: {}", used.is_some());
        let sizes = [
            0,
            1,
            ALIGN - 1,
            ALIGN,
            ALIGN + 1,
            BLOCK - 1,
            BLOCK,
            BLOCK + 3,
            3 * BLOCK + 12_345,
        ];
        for (i, size) in sizes.into_iter().enumerate() {
            let data: Vec<u8> = (0..size).map(|_| rand::random::<u8>()).collect();
            let h = Hash::of(&data);
            let mut w = s.writer(h, size as u64).unwrap();
            for piece in data.chunks([7, 1000, 256 << 10][i % 3]) {
                w.write(piece).unwrap();
            }
            assert!(w.commit().unwrap(), "size {size}");
            let (mut f, len) = s.open_chunk(&h).unwrap();
            assert_eq!(len, size as u64, "size {size}");
            let mut back = Vec::new();
            f.read_to_end(&mut back).unwrap();
            assert!(back == data, "size {size}: bytes differ");
        }
    }

    /// A chunk whose bytes do not match its hash is refused and leaves nothing behind.
    #[test]
    fn direct_writes_still_verify() {
        let (d, s) = direct_store();
        let data = vec![7u8; BLOCK + 5];
        let mut w = s
            .writer(Hash::of(b"something else"), data.len() as u64)
            .unwrap();
        w.write(&data).unwrap();
        assert!(matches!(w.commit(), Err(StoreError::Mismatch { .. })));
        assert_eq!(std::fs::read_dir(d.path().join("tmp")).unwrap().count(), 0);
        assert!(s.is_empty());
    }
}
