//! The output file of a get, written past the page cache where it can be: a download
//! is not read back by us, and filling fresh cache pages with every byte was most of
//! the client's CPU in a get (`make bench-profile`: 61 % of its samples). Chunks
//! arrive in pieces, each chunk's in order from its start (a failed stream continues
//! where it stopped; a chunk that fails verification starts again at its start), so
//! each chunk under way gathers its bytes in an aligned block of its own
//! (`shoal_common::direct`), written whole with `O_DIRECT`; the file's last block is
//! padded and the file cut back to its size.
//!
//! Direct writes are used only when every chunk starts on the alignment (a chunk size
//! that is a multiple of it) and the filesystem takes them; otherwise, and for a piece
//! that does not continue a chunk under way, the ordinary positional write.

use std::collections::HashMap;
use std::fs::{File, OpenOptions};
use std::io;
use std::os::unix::fs::FileExt;
use std::path::Path;

use shoal_common::direct::{AlignedBuf, Pool, ALIGN};

/// One chunk under way: its gathered bytes start at file offset `at`.
struct Stage {
    buf: AlignedBuf,
    at: u64,
    /// Where the chunk ends in the file.
    end: u64,
}

pub(crate) struct OutFile {
    buffered: File,
    direct: Option<File>,
    /// Chunks under way, by the file offset their next byte goes to.
    stages: HashMap<u64, Stage>,
    pool: Pool,
    size: u64,
}

impl OutFile {
    /// `file` is the open output; `path` is opened again with `O_DIRECT` when `direct`,
    /// the chunk size allows and the filesystem takes it.
    pub(crate) fn new(
        file: File,
        path: &Path,
        chunk_size: u64,
        size: u64,
        direct: bool,
    ) -> io::Result<Self> {
        let direct = if direct && chunk_size > 0 && chunk_size.is_multiple_of(ALIGN as u64) {
            shoal_common::direct::open(path, OpenOptions::new().write(true))?
        } else {
            None
        };
        Ok(Self {
            buffered: file,
            direct,
            stages: HashMap::new(),
            pool: Pool::default(),
            size,
        })
    }

    #[cfg(test)]
    pub(crate) fn is_direct(&self) -> bool {
        self.direct.is_some()
    }

    /// Write `data` at `off`, a piece of the chunk that ends at `end`.
    pub(crate) fn write(&mut self, off: u64, mut data: &[u8], end: u64) -> io::Result<()> {
        let mut stage = match self.stages.remove(&off) {
            Some(s) => s,
            None if self.direct.is_some() && off.is_multiple_of(ALIGN as u64) => Stage {
                buf: self.pool.take(),
                at: off,
                end,
            },
            // Not the continuation of a chunk under way, or no direct writes: as is.
            None => return self.buffered.write_all_at(data, off),
        };
        while !data.is_empty() {
            data = &data[stage.buf.fill(data)..];
            if stage.buf.is_full() {
                let at = stage.at;
                stage.at += self.put(stage.buf.take_padded(), at)?;
            }
        }
        let next = stage.at + stage.buf.filled() as u64;
        if next < stage.end {
            self.stages.insert(next, stage);
            return Ok(());
        }
        // The chunk is complete: its tail goes out padded (only the file's last chunk
        // has a tail off the alignment), and the padding is cut at once: the `.part`
        // file keeps its size, which is what a resumed get checks first.
        let tail = stage.buf.filled();
        if tail > 0 {
            self.put(stage.buf.take_padded(), stage.at)?;
            if !tail.is_multiple_of(ALIGN) {
                self.buffered.set_len(self.size)?;
            }
        }
        self.pool.give(stage.buf);
        Ok(())
    }

    /// One aligned block out; a filesystem that took `O_DIRECT` at open but refuses the
    /// write (EINVAL) gets it, and every later one, through the cache (chunks under way
    /// keep gathering: their blocks go out whole either way).
    fn put(&mut self, block: &[u8], at: u64) -> io::Result<u64> {
        if let Some(d) = &self.direct {
            match d.write_all_at(block, at) {
                Ok(()) => return Ok(block.len() as u64),
                Err(e) if e.kind() == io::ErrorKind::InvalidInput => {
                    tracing::warn!(error = %e, "O_DIRECT write refused; writing through the cache");
                    self.direct = None;
                }
                Err(e) => return Err(e),
            }
        }
        self.buffered.write_all_at(block, at)?;
        Ok(block.len() as u64)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use shoal_common::direct::BLOCK;

    /// On the repository's filesystem (tmpfs, where /tmp may be, refuses O_DIRECT).
    fn out(size: u64, chunk: u64) -> (tempfile::TempDir, std::path::PathBuf, OutFile) {
        let d = tempfile::tempdir_in(env!("CARGO_MANIFEST_DIR")).unwrap();
        let p = d.path().join("out.part");
        let f = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&p)
            .unwrap();
        f.set_len(size).unwrap();
        let o = OutFile::new(f, &p, chunk, size, true).unwrap();
        (d, p, o)
    }

    fn bytes(n: usize, seed: u8) -> Vec<u8> {
        (0..n)
            .map(|i| (i as u8).wrapping_mul(31).wrapping_add(seed))
            .collect()
    }

    /// Chunks interleaved in pieces of odd sizes, a stream that stopped and continued,
    /// a chunk that started again with other bytes first, an unaligned last chunk: the
    /// file holds exactly the final bytes.
    #[test]
    fn interleaved_continued_and_restarted_chunks_land_exactly() {
        let chunk = 2 * BLOCK as u64;
        for size in [0, 1, 4095, 4096, chunk - 1, chunk, 3 * chunk + 12_345] {
            let (_d, p, mut o) = out(size, chunk);
            eprintln!("O_DIRECT here: {}", o.is_direct());
            let want = bytes(size as usize, 7);
            let n = size.div_ceil(chunk);
            // The first chunk is sent once with wrong bytes, stopped half way.
            if n > 0 {
                let end = chunk.min(size);
                let junk = bytes((end / 2) as usize, 99);
                o.write(0, &junk, end).unwrap();
            }
            // Then every chunk, round robin, in pieces of 7, 1000 and 300,000 bytes.
            let mut pos: Vec<u64> = (0..n).map(|i| i * chunk).collect();
            let mut round = 0;
            while pos
                .iter()
                .enumerate()
                .any(|(i, &p)| p < ((i as u64 + 1) * chunk).min(size))
            {
                for (i, p) in pos.iter_mut().enumerate() {
                    let end = ((i as u64 + 1) * chunk).min(size);
                    if *p < end {
                        let len = [7, 1000, 300_000][(round + i) % 3].min((end - *p) as usize);
                        o.write(*p, &want[*p as usize..*p as usize + len], end)
                            .unwrap();
                        *p += len as u64;
                    }
                }
                round += 1;
            }
            let back = std::fs::read(&p).unwrap();
            assert_eq!(back.len() as u64, size);
            assert!(back == want, "size {size}: bytes differ");
        }
    }

    /// A direct write the filesystem refuses (here: memory off the alignment, EINVAL)
    /// goes through the cache, and so does every later one.
    #[test]
    fn a_refused_direct_write_falls_back_to_the_cache() {
        let (_d, p, mut o) = out(2 * ALIGN as u64, BLOCK as u64);
        if !o.is_direct() {
            return eprintln!("no O_DIRECT on this filesystem: nothing to refuse");
        }
        let want = bytes(2 * ALIGN + 1, 3);
        assert_eq!(o.put(&want[1..ALIGN + 1], 0).unwrap(), ALIGN as u64);
        assert!(!o.is_direct(), "direct writes given up");
        o.write(ALIGN as u64, &want[ALIGN + 1..], 2 * ALIGN as u64)
            .unwrap();
        assert!(std::fs::read(&p).unwrap() == want[1..], "bytes differ");
    }

    /// A chunk size off the alignment: ordinary writes, same bytes.
    #[test]
    fn unaligned_chunk_sizes_write_through_the_cache() {
        let (_d, p, mut o) = out(10_000, 3000);
        assert!(!o.is_direct());
        let want = bytes(10_000, 1);
        for (i, c) in want.chunks(3000).enumerate() {
            let at = i as u64 * 3000;
            o.write(at, c, at + c.len() as u64).unwrap();
        }
        assert_eq!(std::fs::read(&p).unwrap(), want);
    }
}
