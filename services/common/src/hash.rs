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

/// Digest of an inventory: BLAKE3 over the sorted chunk hashes. Two sides that
/// agree on it agree on the whole list.
pub fn inventory_digest<'a>(sorted: impl IntoIterator<Item = &'a Hash>) -> String {
    let mut h = blake3::Hasher::new();
    for c in sorted {
        h.update(&c.0);
    }
    h.finalize().to_hex().to_string()
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
}
