//! What a download's bytes must hash to: each chunk as it streams in (against its
//! name and, when the file's chunks are subtrees, as its part of the file's BLAKE3
//! tree), the chunks already right in a `.part` file being resumed, and the whole file
//! against its id (from the chunks' chaining values, without reading it again, or by a
//! second pass when the chunks are not subtrees).

use std::fs::File;
use std::os::unix::fs::FileExt;
use std::path::Path;

use shoal_common::hash::{ChainingValue, ChunkTree, Hash};
use shoal_proto::v1 as pb;

use crate::{ClientError, Result};

/// BLAKE3 of a whole file, read in 8 MiB blocks hashed on all cores: memory stays at
/// one block (a memory map would count the whole file in the process's RSS).
pub(crate) fn whole_file_hash(path: &Path) -> std::io::Result<blake3::Hash> {
    use std::io::Read;
    let mut f = File::open(path)?;
    let mut h = blake3::Hasher::new();
    let mut buf = vec![0u8; 8 << 20];
    loop {
        let mut n = 0;
        while n < buf.len() {
            match f.read(&mut buf[n..])? {
                0 => break,
                k => n += k,
            }
        }
        if n == 0 {
            break;
        }
        h.update_rayon(&buf[..n]);
        if n < buf.len() {
            break;
        }
    }
    Ok(h.finalize())
}

/// The hashes a chunk is checked with as its bytes arrive: its own (against the
/// chunk's name) and, when the file's chunks are subtrees, its place in the file's tree.
/// The own hash may be left out when there is a tree: the file's root then checks the
/// chunk's bytes, at the cost of finding which chunk was bad only after the fact.
pub(crate) struct ChunkHash {
    index: u64,
    own: Option<blake3::Hasher>,
    tree: Option<(ChunkTree, blake3::Hasher)>,
}

impl ChunkHash {
    /// `own`: hash the chunk against its name too (always, without a tree).
    pub(crate) fn new(index: u64, tree: Option<ChunkTree>, own: bool) -> Self {
        Self {
            index,
            own: (own || tree.is_none()).then(blake3::Hasher::new),
            tree: tree.map(|t| (t, t.hasher(index))),
        }
    }

    pub(crate) fn update(&mut self, data: &[u8]) {
        if let Some(h) = &mut self.own {
            h.update(data);
        }
        if let Some((_, h)) = &mut self.tree {
            h.update(data);
        }
    }

    pub(crate) fn reset(&mut self) {
        *self = Self::new(
            self.index,
            self.tree.as_ref().map(|(t, _)| *t),
            self.own.is_some(),
        );
    }

    /// Whether the bytes hash to `expected`; `None` when that check is the root's.
    pub(crate) fn own_matches(&self, expected: &Hash) -> Option<bool> {
        self.own
            .as_ref()
            .map(|h| Hash::from(h.finalize()) == *expected)
    }

    pub(crate) fn chaining_value(&self) -> Option<ChainingValue> {
        self.tree
            .as_ref()
            .map(|(_, h)| ChunkTree::chaining_value(h))
    }
}

/// A chunk that holds the right bytes, with its chaining value in the file's tree.
pub(crate) type Verified = Option<ChainingValue>;

/// Which chunks of an existing `.part` file already hold the right bytes.
pub(crate) fn verify_existing(
    file: &File,
    chunks: &[pb::ChunkReplicas],
    chunk_size: u64,
    tree: Option<ChunkTree>,
) -> Vec<Option<Verified>> {
    let mut buf = Vec::new();
    chunks
        .iter()
        .map(|c| {
            buf.resize(c.size as usize, 0);
            file.read_exact_at(&mut buf, c.index as u64 * chunk_size)
                .ok()?;
            let mut h = ChunkHash::new(c.index as u64, tree, true);
            h.update(&buf);
            let expected: Hash = c.hash.parse().ok()?;
            h.own_matches(&expected)?.then(|| h.chaining_value())
        })
        .collect()
}

/// Check the downloaded file against its id: from the chunks' chaining values when the
/// chunks are subtrees, from the single chunk's hash for a one-chunk file, else by
/// hashing the file again.
pub(crate) fn verify_file(
    part: &Path,
    summary: &pb::FileSummary,
    chunks: &[pb::ChunkReplicas],
    tree: Option<ChunkTree>,
    cvs: &[Verified],
) -> Result<()> {
    let whole = match tree {
        Some(t) => {
            let cvs: Option<Vec<ChainingValue>> = cvs.iter().copied().collect();
            cvs.and_then(|cvs| t.root(&cvs)).map(|h| h.to_hex())
        }
        None if chunks.len() == 1 && summary.size > 0 => Some(chunks[0].hash.clone()),
        None => None,
    };
    let whole = match whole {
        Some(h) => h,
        None => whole_file_hash(part)
            .map_err(|e| ClientError::io(part, e))?
            .to_hex()
            .to_string(),
    };
    if whole != summary.id {
        return Err(ClientError::Verify(format!(
            "file hashes to {whole}, expected {}",
            summary.id
        )));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn digest(data: &[u8], chunk_size: u64) -> (pb::FileSummary, Vec<pb::ChunkReplicas>) {
        let summary = pb::FileSummary {
            id: blake3::hash(data).to_hex().to_string(),
            size: data.len() as u64,
            chunk_size,
            ..Default::default()
        };
        let chunks = data
            .chunks(chunk_size as usize)
            .enumerate()
            .map(|(i, c)| pb::ChunkReplicas {
                index: i as u32,
                hash: blake3::hash(c).to_hex().to_string(),
                size: c.len() as u64,
                ..Default::default()
            })
            .collect();
        (summary, chunks)
    }

    /// The id check from chaining values agrees with hashing the file, for chunk trees,
    /// one-chunk files and the fallback pass, and rejects a file that is not the id's.
    #[test]
    fn verify_file_by_tree_single_chunk_and_second_pass() {
        let dir = tempfile::tempdir().unwrap();
        let part = dir.path().join("f.part");
        let data: Vec<u8> = (0..100_000u32).map(|i| (i % 251) as u8).collect();
        for (len, chunk_size) in [(100_000, 4096), (3000, 4096), (100_000, 3000), (0, 4096)] {
            let data = &data[..len];
            std::fs::write(&part, data).unwrap();
            let (mut summary, chunks) = digest(data, chunk_size);
            let tree = ChunkTree::new(summary.size, chunk_size);
            let file = File::open(&part).unwrap();
            let cvs: Vec<Verified> = verify_existing(&file, &chunks, chunk_size, tree)
                .into_iter()
                .map(|v| v.expect("every chunk verifies"))
                .collect();
            verify_file(&part, &summary, &chunks, tree, &cvs).unwrap();
            summary.id = blake3::hash(b"another file").to_hex().to_string();
            let err = verify_file(&part, &summary, &chunks, tree, &cvs).unwrap_err();
            assert!(
                matches!(err, ClientError::Verify(_)),
                "{len}/{chunk_size}: {err}"
            );
        }
    }
}
