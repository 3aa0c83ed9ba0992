//! Chunk files written with `O_DIRECT` (`SHOAL_DIRECT_WRITES`, on by default; see
//! `shoal_common::direct`): a chunk is written once and fsynced before it is
//! acknowledged, so the page cache buys it nothing on the way in, while copying every
//! byte into freshly allocated cache pages was the biggest cost of a put on a peer
//! (about half its CPU samples on a 2-core VM). The price: the next read of the chunk
//! comes from the device. Bytes are gathered into an aligned block, written whole, and
//! the tail is padded and cut back with `set_len` at commit.

use std::fs::{File, OpenOptions};
use std::io::{self, Write};
use std::path::Path;

use shoal_common::direct::AlignedBuf;
pub use shoal_common::direct::Pool;
#[cfg(test)]
use shoal_common::direct::{ALIGN, BLOCK};

/// The aligned gathering buffer of one chunk file opened with `O_DIRECT`.
pub struct Direct(AlignedBuf);

/// Create `path` for writing, with `O_DIRECT` when `direct` and the filesystem allows.
pub fn create(path: &Path, direct: bool, pool: &Pool) -> io::Result<(File, Option<Direct>)> {
    if direct {
        let opened =
            shoal_common::direct::open(path, OpenOptions::new().write(true).create_new(true))?;
        if let Some(f) = opened {
            return Ok((f, Some(Direct(pool.take()))));
        }
    }
    Ok((File::create(path)?, None))
}

impl Direct {
    /// Gather `data`, writing every full block.
    pub fn write(&mut self, file: &mut File, mut data: &[u8]) -> io::Result<()> {
        while !data.is_empty() {
            data = &data[self.0.fill(data)..];
            if self.0.is_full() {
                file.write_all(self.0.take_padded())?;
            }
        }
        Ok(())
    }

    /// Write the tail, padded to the alignment, then cut the file back to `size` bytes.
    pub fn finish(&mut self, file: &mut File, size: u64) -> io::Result<()> {
        if self.0.filled() > 0 {
            file.write_all(self.0.take_padded())?;
            file.set_len(size)?;
        }
        Ok(())
    }

    /// Hand the buffer back for the next chunk.
    pub fn release(self, pool: &Pool) {
        pool.give(self.0);
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

    /// A reader gives the same bytes with and without `O_DIRECT`, from every offset
    /// (aligned or not), in pieces of every size, up to and past the end; a direct
    /// read never crosses a block, so no message outgrows the pooled buffer.
    #[test]
    fn direct_reads_give_the_cached_bytes_from_any_offset() {
        let (_d, mut s) = direct_store();
        let data: Vec<u8> = (0..3 * BLOCK + 12_345)
            .map(|_| rand::random::<u8>())
            .collect();
        let h = Hash::of(&data);
        let mut w = s.writer(h, data.len() as u64).unwrap();
        w.write(&data).unwrap();
        w.commit().unwrap();
        let len = data.len() as u64;
        for direct in [true, false] {
            s.set_direct_reads(direct);
            let mut r = s.reader(&h).unwrap();
            assert_eq!(r.len(), len);
            for from in [
                0,
                1,
                ALIGN as u64 - 1,
                ALIGN as u64,
                BLOCK as u64 + 7,
                len - 1,
                len,
            ] {
                for piece in [4097, BLOCK - 1, BLOCK, 2 * BLOCK] {
                    r.advise(from, len - from);
                    let (mut pos, mut got) = (from, Vec::new());
                    loop {
                        let b = r.read_at(pos, piece).unwrap();
                        if b.is_empty() {
                            break;
                        }
                        let most = if direct { piece.min(BLOCK) } else { piece };
                        assert!(b.len() <= most, "a read of {} bytes", b.len());
                        pos += b.len() as u64;
                        got.extend_from_slice(&b);
                    }
                    assert!(
                        got == data[from as usize..],
                        "direct {direct}, from {from}, pieces of {piece}: bytes differ"
                    );
                }
            }
            assert!(r.read_at(len + 5, 10).unwrap().is_empty());
        }
        // A chunk that vanished is missing, whichever way it is read.
        std::fs::remove_file(s.path(&h)).unwrap();
        assert!(matches!(s.reader(&h), Err(StoreError::Missing(_))));
    }
}
