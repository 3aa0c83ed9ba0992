//! Content hashes. A chunk is named by the BLAKE3 hash of its bytes, a file by the
//! BLAKE3 hash of its whole content; both travel as lowercase hex.

use std::fmt;
use std::str::FromStr;

/// A BLAKE3 digest (of a chunk or of a whole file).
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Hash(pub [u8; 32]);

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("malformed hash {shown:?}: expected 64 hex characters")]
pub struct BadHash {
    shown: String,
}

impl Hash {
    pub fn of(data: &[u8]) -> Self {
        Hash(*blake3::hash(data).as_bytes())
    }

    pub fn to_hex(&self) -> String {
        hex::encode(self.0)
    }
}

impl From<blake3::Hash> for Hash {
    fn from(h: blake3::Hash) -> Self {
        Hash(*h.as_bytes())
    }
}

impl FromStr for Hash {
    type Err = BadHash;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let mut out = [0u8; 32];
        if s.len() != 64 || hex::decode_to_slice(s, &mut out).is_err() {
            // Never echo a huge or binary input back whole.
            let shown: String = s.chars().take(80).collect();
            return Err(BadHash { shown });
        }
        Ok(Hash(out))
    }
}

impl fmt::Display for Hash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_hex())
    }
}

impl fmt::Debug for Hash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Hash({})", &self.to_hex()[..12])
    }
}

/// Digest of a set of chunks that is kept up to date one chunk at a time: the XOR of the
/// chunk hashes. A set holds each hash once, so nothing cancels by accident: two sides
/// that agree on it and on the count agree on the set (short of a forged collision,
/// which only a cluster member could attempt, and which hides nothing it could not
/// hide by lying outright). Order does not matter, so neither side sorts.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct InventoryDigest([u8; 32]);

/// The prefix of digests in this form (older peers sent an unprefixed BLAKE3 of the
/// sorted list, which a tracker now ignores rather than taking for a mismatch).
pub const DIGEST_PREFIX: &str = "x1:";

impl InventoryDigest {
    /// Add a chunk that was absent, or remove one that was present.
    pub fn toggle(&mut self, h: &Hash) {
        for (a, b) in self.0.iter_mut().zip(h.0.iter()) {
            *a ^= b;
        }
    }

    pub fn render(&self) -> String {
        format!("{DIGEST_PREFIX}{}", hex::encode(self.0))
    }
}

/// The digest of a set of chunks, each given once, in any order.
pub fn inventory_digest<'a>(chunks: impl IntoIterator<Item = &'a Hash>) -> String {
    let mut d = InventoryDigest::default();
    for c in chunks {
        d.toggle(c);
    }
    d.render()
}

/// A file's BLAKE3 tree seen chunk by chunk. When the chunk size is a power of two of at
/// least one BLAKE3 chunk (1 KiB) and the file has more than one chunk, every chunk is a
/// whole subtree of the file's tree: hashing each chunk at its offset gives its chaining
/// value, and merging the values in tree order gives the file's id without reading the
/// file a second time. (A one-chunk file's id is the chunk's own hash.)
#[derive(Debug, Clone, Copy)]
pub struct ChunkTree {
    chunk_size: u64,
    size: u64,
}

/// A chunk's chaining value within its file's tree.
pub type ChainingValue = blake3::hazmat::ChainingValue;

impl ChunkTree {
    /// `None` when the chunks are not subtrees (then hash the whole file instead).
    pub fn new(size: u64, chunk_size: u64) -> Option<Self> {
        let subtrees = chunk_size.is_power_of_two() && chunk_size >= blake3::CHUNK_LEN as u64;
        (subtrees && size > chunk_size).then_some(Self { chunk_size, size })
    }

    pub fn chunks(&self) -> u64 {
        self.size.div_ceil(self.chunk_size)
    }

    /// A hasher for chunk `index`: feed it the chunk's bytes, then `chaining_value`.
    pub fn hasher(&self, index: u64) -> blake3::Hasher {
        use blake3::hazmat::HasherExt;
        let mut h = blake3::Hasher::new();
        h.set_input_offset(index * self.chunk_size);
        h
    }

    pub fn chaining_value(hasher: &blake3::Hasher) -> ChainingValue {
        use blake3::hazmat::HasherExt;
        hasher.finalize_non_root()
    }

    /// The file's id from every chunk's chaining value, in order.
    pub fn root(&self, cvs: &[ChainingValue]) -> Option<Hash> {
        use blake3::hazmat::{
            left_subtree_len, merge_subtrees_non_root, merge_subtrees_root, Mode,
        };
        if cvs.len() as u64 != self.chunks() {
            return None;
        }
        // The subtree over `len` bytes whose first chunk is `cvs[0]`.
        fn merge(cvs: &[ChainingValue], len: u64, chunk_size: u64) -> ChainingValue {
            if len <= chunk_size {
                return cvs[0];
            }
            let left = left_subtree_len(len);
            let k = (left / chunk_size) as usize;
            let l = merge(&cvs[..k], left, chunk_size);
            let r = merge(&cvs[k..], len - left, chunk_size);
            merge_subtrees_non_root(&l, &r, Mode::Hash)
        }
        let left = left_subtree_len(self.size);
        let k = (left / self.chunk_size) as usize;
        let l = merge(&cvs[..k], left, self.chunk_size);
        let r = merge(&cvs[k..], self.size - left, self.chunk_size);
        Some(merge_subtrees_root(&l, &r, Mode::Hash).into())
    }
}

/// Parse a hex hash from the wire into a `tonic::Status` on failure.
pub fn parse(s: &str) -> Result<Hash, tonic::Status> {
    s.parse()
        .map_err(|e: BadHash| tonic::Status::invalid_argument(e.to_string()))
}

impl serde::Serialize for Hash {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.to_hex())
    }
}

impl<'de> serde::Deserialize<'de> for Hash {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = <std::borrow::Cow<'de, str>>::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hex_round_trip() {
        let h = Hash::of(b"shoal");
        assert_eq!(h.to_hex().parse::<Hash>().unwrap(), h);
    }

    #[test]
    fn rejects_bad_hex() {
        for bad in ["", "zz", &"a".repeat(63), &"g".repeat(64), &"a".repeat(65)] {
            assert!(bad.parse::<Hash>().is_err(), "{bad}");
        }
    }

    #[test]
    fn chunk_tree_root_is_the_file_hash() {
        let data: Vec<u8> = (0..1_000_000u32).map(|i| (i * 7 + i / 251) as u8).collect();
        for chunk_size in [1024u64, 4096, 65536] {
            for size in [
                chunk_size + 1,
                2 * chunk_size,
                3 * chunk_size - 5,
                5 * chunk_size,
                7 * chunk_size + 1000,
                data.len() as u64,
            ] {
                let tree = ChunkTree::new(size, chunk_size).unwrap();
                let file = &data[..size as usize];
                let cvs: Vec<_> = file
                    .chunks(chunk_size as usize)
                    .enumerate()
                    .map(|(i, c)| {
                        let mut h = tree.hasher(i as u64);
                        h.update(c);
                        ChunkTree::chaining_value(&h)
                    })
                    .collect();
                assert_eq!(tree.root(&cvs), Some(Hash::of(file)), "{size}/{chunk_size}");
                // A wrong chunk, or a missing one, never gives the file's id.
                let mut bad = cvs.clone();
                bad[0][0] ^= 1;
                assert_ne!(tree.root(&bad), Some(Hash::of(file)));
                assert_eq!(tree.root(&cvs[1..]), None);
            }
        }
    }

    #[test]
    fn chunk_tree_needs_whole_subtrees() {
        assert!(ChunkTree::new(10_000, 3000).is_none(), "not a power of two");
        assert!(
            ChunkTree::new(10_000, 512).is_none(),
            "smaller than a BLAKE3 chunk"
        );
        assert!(
            ChunkTree::new(4096, 4096).is_none(),
            "one chunk: its hash is the id"
        );
        assert!(ChunkTree::new(0, 4096).is_none());
        assert_eq!(ChunkTree::new(4097, 4096).unwrap().chunks(), 2);
    }
}
