//! Chunk buffers in anonymous mappings of their own, for the gateway's transfers
//! (streaming puts, streaming reads): a buffer's pages go back to the system the
//! moment the last `Bytes` of it is dropped, and a mapping costs nothing for the
//! pages never written. Heap buffers of a chunk's size stay with the allocator
//! instead: glibc raises its mmap threshold once the first such buffer is freed, and
//! the arenas of a busy runtime then kept about 65 MiB of freed 8 MiB buffers through
//! one 2 GiB web upload (peak RSS 145 MiB; 79 MiB with these buffers).

use bytes::Bytes;

use crate::{ClientError, Result};

/// A fixed-capacity buffer: filled once, then frozen into `Bytes` without a copy.
pub(crate) struct ChunkBuf {
    map: memmap2::MmapMut,
    len: usize,
}

/// The filled part of a buffer, as the owner of a `Bytes`.
struct Filled(ChunkBuf);

impl AsRef<[u8]> for Filled {
    fn as_ref(&self) -> &[u8] {
        &self.0.map[..self.0.len]
    }
}

impl ChunkBuf {
    pub(crate) fn new(capacity: usize) -> Result<Self> {
        let map = memmap2::MmapMut::map_anon(capacity.max(1))
            .map_err(|e| ClientError::Other(format!("a chunk buffer of {capacity} bytes: {e}")))?;
        Ok(Self { map, len: 0 })
    }

    pub(crate) fn len(&self) -> usize {
        self.len
    }

    /// The room left, to read into (then [`ChunkBuf::filled`]).
    pub(crate) fn spare(&mut self) -> &mut [u8] {
        &mut self.map[self.len..]
    }

    /// `n` more bytes of [`ChunkBuf::spare`] hold data.
    pub(crate) fn filled(&mut self, n: usize) {
        self.len = (self.len + n).min(self.map.len());
    }

    /// Append `data`; false (and nothing appended) when it does not fit.
    pub(crate) fn extend_from_slice(&mut self, data: &[u8]) -> bool {
        let Some(dst) = self.map.get_mut(self.len..self.len + data.len()) else {
            return false;
        };
        dst.copy_from_slice(data);
        self.len += data.len();
        true
    }

    pub(crate) fn clear(&mut self) {
        self.len = 0;
    }

    pub(crate) fn freeze(self) -> Bytes {
        if self.len == 0 {
            return Bytes::new();
        }
        Bytes::from_owner(Filled(self))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_buffer_fills_freezes_and_refuses_overflow() {
        let mut b = ChunkBuf::new(8).unwrap();
        assert!(b.extend_from_slice(b"abc"));
        b.spare()[..2].copy_from_slice(b"de");
        b.filled(2);
        assert!(!b.extend_from_slice(b"xyzw"), "over capacity");
        assert!(b.extend_from_slice(b"xyz"));
        assert_eq!(b.len(), 8);
        let bytes = b.freeze();
        assert_eq!(&bytes[..], b"abcdexyz");
        assert_eq!(&bytes.slice(2..4)[..], b"cd");
        let mut c = ChunkBuf::new(4).unwrap();
        c.extend_from_slice(b"ab");
        c.clear();
        assert_eq!(c.len(), 0);
        assert!(c.freeze().is_empty());
    }
}
