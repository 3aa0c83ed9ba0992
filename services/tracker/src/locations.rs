//! Where every copy is: for each chunk the peers holding it, and for each peer its chunks
//! with their digest, kept in step by the only methods that change them. Peers are
//! numbered once (a `u32` per copy instead of an id string), which is most of what a
//! copy costs: at ten million copies, bytes per copy are the tracker's memory.
//! It knows nothing of liveness or the catalogue.

use std::collections::{BTreeSet, HashMap};

use shoal_common::hash::{Hash, InventoryDigest};
use smallvec::SmallVec;

/// A peer's number within this tracker (never reused).
type Slot = u32;

/// One peer's chunks and their digest. A B-tree, not a hash set: about 45 bytes a
/// chunk instead of 67 (a hash set's power-of-two tables are half empty after growing).
#[derive(Debug, Default)]
pub struct Holdings {
    chunks: BTreeSet<Hash>,
    digest: InventoryDigest,
}

impl Holdings {
    pub fn len(&self) -> usize {
        self.chunks.len()
    }

    pub fn is_empty(&self) -> bool {
        self.chunks.is_empty()
    }

    pub fn contains(&self, h: &Hash) -> bool {
        self.chunks.contains(h)
    }

    pub fn iter(&self) -> impl Iterator<Item = &Hash> {
        self.chunks.iter()
    }

    /// The digest a peer holding exactly these chunks reports.
    pub fn digest(&self) -> String {
        self.digest.render()
    }

    fn insert(&mut self, h: Hash) -> bool {
        let new = self.chunks.insert(h);
        if new {
            self.digest.toggle(&h);
        }
        new
    }

    fn remove(&mut self, h: &Hash) -> bool {
        let had = self.chunks.remove(h);
        if had {
            self.digest.toggle(h);
        }
        had
    }
}

static EMPTY: std::sync::LazyLock<Holdings> = std::sync::LazyLock::new(Holdings::default);

#[derive(Default)]
pub struct Locations {
    by_chunk: HashMap<Hash, SmallVec<[Slot; 3]>>,
    by_peer: Vec<Holdings>,
    ids: Vec<String>,
    slots: HashMap<String, Slot>,
    /// Changes with every copy added or removed.
    version: u64,
}

impl Locations {
    fn slot(&mut self, peer: &str) -> Slot {
        if let Some(s) = self.slots.get(peer) {
            return *s;
        }
        let s = self.ids.len() as Slot;
        self.ids.push(peer.to_string());
        self.by_peer.push(Holdings::default());
        self.slots.insert(peer.to_string(), s);
        s
    }

    /// Room for `chunks` chunks: the map of millions otherwise rehashes them all, under
    /// the state lock, each time it doubles during a register storm.
    pub fn reserve(&mut self, chunks: usize) {
        self.by_chunk
            .reserve(chunks.saturating_sub(self.by_chunk.len()));
    }

    /// Different after every change (see [`crate::catalogue::next_version`]).
    pub fn version(&self) -> u64 {
        self.version
    }

    /// Peers holding `h`.
    pub fn holders<'a>(&'a self, h: &Hash) -> impl Iterator<Item = &'a str> + 'a {
        self.by_chunk
            .get(h)
            .into_iter()
            .flatten()
            .map(|s| self.ids[*s as usize].as_str())
    }

    pub fn count(&self, h: &Hash) -> usize {
        self.by_chunk.get(h).map_or(0, |v| v.len())
    }

    /// Chunks held by some peer.
    pub fn chunk_count(&self) -> usize {
        self.by_chunk.len()
    }

    /// Whether any peer holds `h`.
    pub fn has(&self, h: &Hash) -> bool {
        self.by_chunk.contains_key(h)
    }

    /// Every chunk some peer holds.
    pub fn chunks(&self) -> impl Iterator<Item = &Hash> {
        self.by_chunk.keys()
    }

    /// A peer's chunks (empty for a peer never heard of).
    pub fn of(&self, peer: &str) -> &Holdings {
        self.slots
            .get(peer)
            .map_or(&*EMPTY, |s| &self.by_peer[*s as usize])
    }

    /// Record a copy; false if it was known.
    pub fn add(&mut self, peer: &str, h: Hash) -> bool {
        let s = self.slot(peer);
        if !self.by_peer[s as usize].insert(h) {
            return false;
        }
        self.version = crate::catalogue::next_version();
        self.by_chunk.entry(h).or_default().push(s);
        true
    }

    /// Forget a copy; false if it was not known.
    pub fn remove(&mut self, peer: &str, h: &Hash) -> bool {
        let Some(&s) = self.slots.get(peer) else {
            return false;
        };
        if !self.by_peer[s as usize].remove(h) {
            return false;
        }
        self.version = crate::catalogue::next_version();
        self.unlink(h, s);
        true
    }

    fn unlink(&mut self, h: &Hash, s: Slot) {
        if let Some(v) = self.by_chunk.get_mut(h) {
            v.retain(|x| *x != s);
            if v.is_empty() {
                self.by_chunk.remove(h);
            }
        }
    }

    /// Forget every copy of a peer.
    pub fn forget(&mut self, peer: &str) {
        let Some(&s) = self.slots.get(peer) else {
            return;
        };
        self.version = crate::catalogue::next_version();
        let held = std::mem::take(&mut self.by_peer[s as usize]);
        for h in held.chunks {
            self.unlink(&h, s);
        }
    }

    /// Forget every copy of a chunk; returns the peers that held it.
    pub fn remove_chunk(&mut self, h: &Hash) -> Vec<String> {
        let Some(v) = self.by_chunk.remove(h) else {
            return Vec::new();
        };
        self.version = crate::catalogue::next_version();
        v.into_iter()
            .map(|s| {
                self.by_peer[s as usize].remove(h);
                self.ids[s as usize].clone()
            })
            .collect()
    }
}

impl Locations {
    /// Whether both directions and every digest agree (for tests and fuzzing; it walks
    /// every copy): the first disagreement found, described.
    pub fn check(&self) -> Result<(), String> {
        for (h, slots) in &self.by_chunk {
            if slots.is_empty() {
                return Err(format!("chunk {h} listed with no holder"));
            }
            for s in slots {
                if !self.by_peer[*s as usize].contains(h) {
                    return Err(format!(
                        "{} missing {h} in its own set",
                        self.ids[*s as usize]
                    ));
                }
            }
        }
        for (s, held) in self.by_peer.iter().enumerate() {
            let id = &self.ids[s];
            for h in held.iter() {
                if !self
                    .by_chunk
                    .get(h)
                    .is_some_and(|v| v.contains(&(s as Slot)))
                {
                    return Err(format!("{id} holds {h} but the chunk index disagrees"));
                }
            }
            if held.digest() != shoal_common::hash::inventory_digest(held.iter()) {
                return Err(format!("{id}: digest out of step with its chunks"));
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Both directions and the digest stay in step through every change.
    #[test]
    fn both_sides_and_the_digest_agree() {
        let mut l = Locations::default();
        let (a, b) = (Hash::of(b"a"), Hash::of(b"b"));
        assert!(l.add("p", a) && l.add("p", b) && l.add("q", a));
        assert!(!l.add("p", a), "known already");
        let holders = |l: &Locations, h| {
            let mut v: Vec<String> = l.holders(h).map(String::from).collect();
            v.sort();
            v
        };
        assert_eq!(holders(&l, &a), vec!["p", "q"]);
        assert_eq!(
            l.of("p").digest(),
            shoal_common::hash::inventory_digest([&b, &a])
        );
        assert!(l.remove("p", &a));
        assert!(!l.remove("p", &a));
        assert_eq!(
            l.of("p").digest(),
            shoal_common::hash::inventory_digest([&b])
        );
        assert_eq!(l.remove_chunk(&a), vec!["q"]);
        assert!(!l.has(&a) && l.of("q").is_empty());
        l.forget("p");
        assert!(!l.has(&b) && l.of("p").is_empty());
        assert_eq!(l.of("p").digest(), shoal_common::hash::inventory_digest([]));
        assert_eq!(l.of("nobody").len(), 0);
        l.check().unwrap();
    }
}
