use std::collections::HashSet;

use shoal_common::hash::Hash;

/// Chunks to evaluate, in shards by first byte: one set of millions would rehash all of
/// them, under the state lock, each time it grows (a register storm stalled a
/// registration for 0.7 s); a shard's growth costs 1/64 of that.
pub struct Dirty {
    shards: Vec<HashSet<Hash>>,
}

const DIRTY_SHARDS: usize = 64;

impl Default for Dirty {
    fn default() -> Self {
        Dirty {
            shards: (0..DIRTY_SHARDS).map(|_| HashSet::new()).collect(),
        }
    }
}

impl Dirty {
    pub fn insert(&mut self, h: Hash) -> bool {
        self.shards[h.0[0] as usize % DIRTY_SHARDS].insert(h)
    }

    pub fn contains(&self, h: &Hash) -> bool {
        self.shards[h.0[0] as usize % DIRTY_SHARDS].contains(h)
    }

    pub fn len(&self) -> usize {
        self.shards.iter().map(HashSet::len).sum()
    }

    pub fn is_empty(&self) -> bool {
        self.shards.iter().all(HashSet::is_empty)
    }

    pub fn iter(&self) -> impl Iterator<Item = &Hash> {
        self.shards.iter().flatten()
    }

    /// Every marked chunk, once.
    pub fn into_vec(self) -> Vec<Hash> {
        let mut out = Vec::with_capacity(self.len());
        for s in self.shards {
            out.extend(s);
        }
        out
    }
}

impl Extend<Hash> for Dirty {
    fn extend<I: IntoIterator<Item = Hash>>(&mut self, iter: I) {
        for h in iter {
            self.insert(h);
        }
    }
}
