//! Files written with `O_DIRECT`: bytes go from an aligned buffer of ours to the device,
//! not into page-cache pages. Peers write chunk files this way (written once, fsynced,
//! then read rarely) and the client its output file (a download the reader does not
//! read back): copying every byte into freshly allocated cache pages was the largest
//! single cost of both on a 2-core VM (docs/benchmarks.md, issue 17).
//!
//! `O_DIRECT` wants the memory, the file offset and the length of every write aligned
//! to the device's block: callers gather bytes into an [`AlignedBuf`] of [`BLOCK`]
//! bytes aligned to [`ALIGN`], write it whole, and pad a file's tail to [`ALIGN`] before
//! cutting the file back with `set_len`. A filesystem that refuses `O_DIRECT` (tmpfs)
//! gets the ordinary buffered file.

use std::fs::{File, OpenOptions};
use std::io;
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;
use std::sync::{Arc, Mutex};

use bytes::Bytes;

/// Alignment of memory, offsets and lengths (covers 512 B and 4 KiB devices).
pub const ALIGN: usize = 4096;
/// Bytes gathered before each write: as fast to the device as 1 MiB or 4 MiB writes here
/// (1 GiB in 0.90 s, 0.25 CPU-s), and small enough that the most writes a peer admits
/// at once (`SHOAL_MAX_TRANSFERS`, 256) hold 65 MiB of buffers at worst.
pub const BLOCK: usize = 256 << 10;
/// Buffers kept for reuse (reused pages are already mapped: no page faults per chunk).
const POOL: usize = 8;

/// Spare buffers, shared by the writers of one store or one download (or the readers
/// of one store).
pub struct Pool {
    spare: Mutex<Vec<Vec<u8>>>,
    /// Buffers kept for reuse at most.
    keep: usize,
}

impl Default for Pool {
    fn default() -> Self {
        Self::keeping(POOL)
    }
}

impl Pool {
    /// A pool that keeps up to `keep` spare buffers.
    pub fn keeping(keep: usize) -> Self {
        Self {
            spare: Mutex::default(),
            keep,
        }
    }

    /// A [`BLOCK`]-sized buffer aligned to [`ALIGN`], empty.
    pub fn take(&self) -> AlignedBuf {
        let spare = self.spare.lock().unwrap_or_else(|p| p.into_inner()).pop();
        let buf = spare.unwrap_or_else(|| vec![0; BLOCK + ALIGN]);
        // Within ALIGN (always, for bytes); kept in bounds whatever it says.
        let start = buf.as_ptr().align_offset(ALIGN).min(ALIGN);
        AlignedBuf {
            buf,
            start,
            filled: 0,
        }
    }

    /// Hand a buffer back for the next writer.
    pub fn give(&self, b: AlignedBuf) {
        let mut pool = self.spare.lock().unwrap_or_else(|p| p.into_inner());
        if pool.len() < self.keep {
            pool.push(b.buf);
        }
    }

    /// Lend `b`'s bytes out as [`Bytes`] without copying them: the buffer comes back to
    /// this pool when the last slice of them is dropped.
    pub fn lend(self: &Arc<Self>, b: AlignedBuf) -> Bytes {
        Bytes::from_owner(Lent {
            buf: Some(b),
            pool: self.clone(),
        })
    }
}

/// A buffer lent out by [`Pool::lend`].
struct Lent {
    buf: Option<AlignedBuf>,
    pool: Arc<Pool>,
}

impl AsRef<[u8]> for Lent {
    fn as_ref(&self) -> &[u8] {
        self.buf.as_ref().map_or(&[], AlignedBuf::bytes)
    }
}

impl Drop for Lent {
    fn drop(&mut self) {
        if let Some(b) = self.buf.take() {
            self.pool.give(b);
        }
    }
}

/// [`BLOCK`] bytes at an [`ALIGN`]ed address, filled from the front.
pub struct AlignedBuf {
    buf: Vec<u8>,
    /// Where the aligned block starts in `buf`.
    start: usize,
    filled: usize,
}

impl AlignedBuf {
    /// Copy as much of `data` as fits; returns how much did.
    pub fn fill(&mut self, data: &[u8]) -> usize {
        let n = (BLOCK - self.filled).min(data.len());
        let at = self.start + self.filled;
        self.buf[at..at + n].copy_from_slice(&data[..n]);
        self.filled += n;
        n
    }

    pub fn filled(&self) -> usize {
        self.filled
    }

    /// The bytes gathered or read so far.
    pub fn bytes(&self) -> &[u8] {
        &self.buf[self.start..self.start + self.filled]
    }

    /// Fill the buffer from `file` at `offset`, a multiple of [`ALIGN`]: [`BLOCK`] bytes,
    /// fewer only at the end of the file. What it held before is dropped. Works on a
    /// file opened with `O_DIRECT` (the memory, offset and length are all aligned) and
    /// on any other.
    pub fn read_at(&mut self, file: &File, offset: u64) -> io::Result<usize> {
        use std::os::unix::fs::FileExt;
        self.filled = 0;
        let block = self.start..self.start + BLOCK;
        while self.filled < BLOCK {
            let at = block.start + self.filled;
            let n = file.read_at(&mut self.buf[at..block.end], offset + self.filled as u64)?;
            if n == 0 {
                break;
            }
            self.filled += n;
            if !self.filled.is_multiple_of(ALIGN) {
                break; // a short read off the alignment: the end of the file
            }
        }
        Ok(self.filled)
    }

    pub fn is_full(&self) -> bool {
        self.filled == BLOCK
    }

    /// The bytes gathered, zero-padded to [`ALIGN`] (what one direct write takes); the
    /// buffer is empty afterwards.
    pub fn take_padded(&mut self) -> &[u8] {
        let padded = self.filled.div_ceil(ALIGN) * ALIGN;
        let at = self.start;
        self.buf[at + self.filled..at + padded].fill(0);
        self.filled = 0;
        &self.buf[at..at + padded]
    }
}

/// Open `path` with `opts` plus `O_DIRECT`; `None` where the filesystem refuses it.
pub fn open(path: &Path, opts: &mut OpenOptions) -> io::Result<Option<File>> {
    let flags = rustix::fs::OFlags::DIRECT.bits() as i32;
    match opts.custom_flags(flags).open(path) {
        Ok(f) => Ok(Some(f)),
        Err(e) if e.raw_os_error() == Some(rustix::io::Errno::INVAL.raw_os_error()) => Ok(None),
        Err(e) => Err(e),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buffers_are_aligned_and_pad_to_the_alignment() {
        let pool = Pool::default();
        let mut b = pool.take();
        assert_eq!(b.fill(&[1; 10]), 10);
        let out = b.take_padded();
        assert_eq!(out.as_ptr() as usize % ALIGN, 0);
        assert_eq!(out.len(), ALIGN);
        assert_eq!(
            (&out[..10], out[10..].iter().all(|&x| x == 0)),
            (&[1; 10][..], true)
        );
        assert_eq!(b.filled(), 0);
        assert_eq!(b.fill(&vec![2; BLOCK + 5]), BLOCK);
        assert!(b.is_full());
        assert_eq!(b.take_padded().len(), BLOCK);
        pool.give(b);
        assert_eq!(pool.take().filled(), 0, "a reused buffer starts empty");
    }

    #[test]
    fn blocks_read_whole_then_short_at_the_end_and_lent_buffers_come_back() {
        let dir = tempfile::tempdir_in(env!("CARGO_MANIFEST_DIR")).unwrap();
        let path = dir.path().join("f");
        let data: Vec<u8> = (0..BLOCK + 3 * ALIGN + 17)
            .map(|i| (i % 251) as u8)
            .collect();
        std::fs::write(&path, &data).unwrap();
        // O_DIRECT where the filesystem allows, the page cache elsewhere: the same bytes.
        let direct = open(&path, OpenOptions::new().read(true)).unwrap();
        for file in [direct, Some(File::open(&path).unwrap())]
            .into_iter()
            .flatten()
        {
            let pool = Arc::new(Pool::keeping(2));
            let mut b = pool.take();
            assert_eq!(b.read_at(&file, 0).unwrap(), BLOCK);
            assert_eq!(b.bytes(), &data[..BLOCK]);
            let first = pool.lend(b);
            let mut b = pool.take();
            assert_eq!(b.read_at(&file, BLOCK as u64).unwrap(), 3 * ALIGN + 17);
            assert_eq!(b.bytes(), &data[BLOCK..]);
            let tail = pool.lend(b).slice(ALIGN..);
            assert_eq!(&tail[..], &data[BLOCK + ALIGN..]);
            assert_eq!(pool.spare.lock().unwrap().len(), 0, "both buffers are lent");
            drop(first);
            drop(tail);
            assert_eq!(pool.spare.lock().unwrap().len(), 2, "both came back");
            let mut b = pool.take();
            assert_eq!(b.filled(), 0, "a returned buffer starts empty");
            assert_eq!(b.read_at(&file, (BLOCK + 4 * ALIGN) as u64).unwrap(), 0);
        }
    }
}
