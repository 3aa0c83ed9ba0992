//! Serving a stored chunk: [`ChunkReader`].

use std::fs::{File, OpenOptions};
use std::io;
use std::sync::Arc;

use bytes::Bytes;
use shoal_common::direct::{self, ALIGN};
use shoal_common::hash::Hash;

use super::{ChunkStore, StoreError};

impl ChunkStore {
    /// Open a stored chunk to serve it (see [`ChunkReader`]).
    pub fn reader(&self, h: &Hash) -> Result<ChunkReader, StoreError> {
        let opened = if self.direct_reads {
            direct::open(&self.path(h), OpenOptions::new().read(true))
        } else {
            Ok(None)
        };
        match opened {
            Ok(Some(file)) => Ok(ChunkReader {
                len: file.metadata()?.len(),
                file,
                pos: 0,
                direct: Some(self.read_buffers.clone()),
            }),
            Err(e) if e.kind() != io::ErrorKind::NotFound => Err(e.into()),
            // Not asked for, refused by the filesystem (tmpfs), or missing: through the
            // cache, and `open_chunk` says which chunk is missing.
            _ => {
                let (file, len) = self.open_chunk(h)?;
                Ok(ChunkReader {
                    file,
                    len,
                    pos: 0,
                    direct: None,
                })
            }
        }
    }
}

/// A stored chunk open for serving. With `O_DIRECT` (`SHOAL_DIRECT_READS`, on by
/// default) each block goes from the device into a pooled, already mapped buffer that
/// is lent out as the message itself: no page-cache pages are filled, and `GetChunk`
/// hands the buffer to h2 as it is (`routes.rs`), so the only copy left on the peer is
/// the kernel's into the socket. Chunks are written past the
/// cache too, so a read comes from the device either way; through the cache, each read
/// filled fresh cache pages and copied them out, two thirds of a peer's CPU samples
/// while serving a get on a 2-core VM (docs/benchmarks.md, issue 17). Elsewhere (tmpfs,
/// or switched off) it reads through the cache with read-ahead hints.
pub struct ChunkReader {
    file: File,
    len: u64,
    /// Where the next cached read starts.
    pos: u64,
    direct: Option<Arc<direct::Pool>>,
}

impl ChunkReader {
    /// The chunk file's length.
    pub fn len(&self) -> u64 {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Say that `len` bytes from `offset` will be read in order (read-ahead of the whole
    /// range at once instead of growing its window step by step). Hints only.
    pub fn advise(&self, offset: u64, len: u64) {
        use rustix::fs::{fadvise, Advice};
        if self.direct.is_some() {
            return; // no cache to fill ahead
        }
        let len = std::num::NonZeroU64::new(len);
        let _ = fadvise(&self.file, offset, len, Advice::Sequential);
        let _ = fadvise(&self.file, offset, len, Advice::WillNeed);
    }

    /// Up to `max` bytes from `offset`: fewer where a block ends or at the end of the
    /// file, none only there.
    pub fn read_at(&mut self, offset: u64, max: usize) -> io::Result<Bytes> {
        let Some(pool) = &self.direct else {
            use std::io::{Seek, SeekFrom};
            if self.pos != offset {
                self.file.seek(SeekFrom::Start(offset))?;
            }
            let b = shoal_common::read_message(&mut self.file, max)?;
            self.pos = offset + b.len() as u64;
            return Ok(b.into());
        };
        let skip = (offset % ALIGN as u64) as usize;
        let mut b = pool.take();
        let n = b.read_at(&self.file, offset - skip as u64)?;
        if n <= skip {
            pool.give(b);
            return Ok(Bytes::new());
        }
        let end = n.min(skip.saturating_add(max));
        Ok(pool.lend(b).slice(skip..end))
    }
}
