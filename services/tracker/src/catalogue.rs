//! The catalogue in memory: files by content id, names, and what each referenced chunk
//! needs (its size, how many files use it, its replica target). It mirrors the store and
//! changes only through [`Catalogue::apply`], with changes the store has already taken
//! (persist, then apply). Writers plan on a shared borrow (`plan_*`), so a plan can
//! never change memory by itself. It knows nothing of peers or copies.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};

use shoal_common::hash::Hash;

use crate::error::{Error, Result};
use crate::store::{Change, FileRecord, NameRecord};

/// What the catalogue knows of one referenced chunk.
#[derive(Debug, Clone)]
pub struct ChunkInfo {
    pub size: u64,
    /// Files using the chunk, grouped by their replica target: `(replicas, files)`.
    /// Almost always one entry (kept inline: no allocation per chunk), so the target
    /// needs no scan of the files.
    targets: smallvec::SmallVec<[(u32, u32); 1]>,
}

impl ChunkInfo {
    /// Highest replica target among the files that use the chunk.
    pub fn target(&self) -> u32 {
        self.targets.iter().map(|(r, _)| *r).max().unwrap_or(1)
    }

    fn add(&mut self, replicas: u32) {
        match self.targets.iter_mut().find(|(r, _)| *r == replicas) {
            Some((_, n)) => *n += 1,
            None => self.targets.push((replicas, 1)),
        }
    }

    /// Drop one file of `replicas`; true when no file uses the chunk any more.
    fn remove(&mut self, replicas: u32) -> bool {
        if let Some(i) = self.targets.iter().position(|(r, _)| *r == replicas) {
            self.targets[i].1 -= 1;
            if self.targets[i].1 == 0 {
                self.targets.swap_remove(i);
            }
        }
        self.targets.is_empty()
    }
}

#[derive(Default)]
pub struct Catalogue {
    files: HashMap<Hash, FileRecord>,
    names: BTreeMap<String, NameRecord>,
    /// The names of each content id: finding a file's names is no scan.
    by_id: HashMap<Hash, BTreeSet<String>>,
    chunks: HashMap<Hash, ChunkInfo>,
    /// Changes with each applied change (see [`next_version`]).
    version: u64,
}

/// A number no earlier change in this process had: versions of a catalogue or of the
/// locations stay distinct even across a catalogue reloaded whole.
pub fn next_version() -> u64 {
    static NEXT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(1);
    NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
}

impl Catalogue {
    /// Different after every change: answers derived from the catalogue can be reused
    /// while it stays the same.
    pub fn version(&self) -> u64 {
        self.version
    }

    pub fn new(files: HashMap<Hash, FileRecord>, names: BTreeMap<String, NameRecord>) -> Self {
        let mut c = Catalogue {
            version: next_version(),
            ..Default::default()
        };
        for f in files.into_values() {
            c.add_file(f);
        }
        for (name, rec) in names {
            c.by_id.entry(rec.id).or_default().insert(name.clone());
            c.names.insert(name, rec);
        }
        c
    }

    // ---- reads ----------------------------------------------------------------

    pub fn file(&self, id: &Hash) -> Option<&FileRecord> {
        self.files.get(id)
    }

    pub fn name(&self, name: &str) -> Option<&NameRecord> {
        self.names.get(name)
    }

    /// Names in order, from the first one after `after` (all with `None`).
    pub fn names_after<'a>(
        &'a self,
        after: Option<&str>,
    ) -> impl Iterator<Item = (&'a String, &'a NameRecord)> + 'a {
        use std::ops::Bound;
        let start = match after {
            Some(a) => Bound::Excluded(a.to_string()),
            None => Bound::Unbounded,
        };
        self.names.range((start, Bound::Unbounded))
    }

    pub fn names_of(&self, id: &Hash) -> Vec<String> {
        self.by_id
            .get(id)
            .map(|s| s.iter().cloned().collect())
            .unwrap_or_default()
    }

    /// Resolve a name (first) or a content id.
    pub fn resolve(&self, name_or_id: &str) -> Result<(Option<String>, &FileRecord)> {
        if let Some(n) = self.names.get(name_or_id) {
            let f = self.files.get(&n.id).ok_or_else(|| {
                Error::NotFound(format!(
                    "file {:?} has no content record",
                    shoal_common::names::echo(name_or_id)
                ))
            })?;
            return Ok((Some(name_or_id.to_string()), f));
        }
        if let Ok(id) = name_or_id.parse::<Hash>() {
            if let Some(f) = self.files.get(&id) {
                return Ok((None, f));
            }
        }
        Err(Error::NotFound(format!(
            "no file named or with id {:?}",
            shoal_common::names::echo(name_or_id)
        )))
    }

    pub fn chunk(&self, h: &Hash) -> Option<&ChunkInfo> {
        self.chunks.get(h)
    }

    pub fn is_referenced(&self, h: &Hash) -> bool {
        self.chunks.contains_key(h)
    }

    /// Every referenced chunk with what it needs.
    pub fn chunks(&self) -> impl Iterator<Item = (&Hash, &ChunkInfo)> {
        self.chunks.iter()
    }

    pub fn name_count(&self) -> usize {
        self.names.len()
    }

    pub fn file_count(&self) -> usize {
        self.files.len()
    }

    pub fn chunk_count(&self) -> usize {
        self.chunks.len()
    }

    // ---- plans: the store changes a write needs, decided without changing anything ----

    /// Drop names (one, or every name of a content id); content that loses its last name
    /// goes too. Returns the names and whether the content goes.
    pub fn plan_delete(&self, name_or_id: &str) -> Result<(Vec<String>, bool, Vec<Change>)> {
        let (name, f) = self.resolve(name_or_id)?;
        let id = f.id;
        let names = match name {
            Some(n) => vec![n],
            None => self.names_of(&id),
        };
        let mut changes: Vec<Change> = names
            .iter()
            .map(|n| Change::DeleteName(n.clone()))
            .collect();
        let removed = self.plan_drop_if_unnamed(&id, &names, &mut changes);
        Ok((names, removed, changes))
    }

    /// Drop content `id` when no name but `leaving` points to it.
    fn plan_drop_if_unnamed(
        &self,
        id: &Hash,
        leaving: &[String],
        changes: &mut Vec<Change>,
    ) -> bool {
        let still_named = self
            .by_id
            .get(id)
            .is_some_and(|s| s.iter().any(|n| !leaving.contains(n)));
        if still_named || !self.files.contains_key(id) {
            return false;
        }
        changes.push(Change::DeleteFile(*id));
        true
    }

    /// Bind `name` to content `id`, replacing another content only with `overwrite`;
    /// the replaced content goes when this was its last name.
    pub fn plan_bind(
        &self,
        name: &str,
        id: Hash,
        overwrite: bool,
        created_ms: i64,
        changes: &mut Vec<Change>,
    ) -> Result<()> {
        let previous = self.names.get(name).map(|n| n.id);
        match previous {
            Some(old) if old == id => return Ok(()),
            Some(old) if !overwrite => {
                return Err(Error::AlreadyExists(format!(
                "a different file named {name:?} exists (id {old}); use --overwrite to replace it"
            )))
            }
            _ => {}
        }
        changes.push(Change::PutName(
            name.to_string(),
            NameRecord { id, created_ms },
        ));
        if let Some(old) = previous {
            self.plan_drop_if_unnamed(&old, &[name.to_string()], changes);
        }
        Ok(())
    }

    /// Record content unless it is already there.
    pub fn plan_insert(&self, f: FileRecord, changes: &mut Vec<Change>) {
        if !self.files.contains_key(&f.id) {
            changes.push(Change::PutFile(f));
        }
    }

    pub fn plan_set_replicas(
        &self,
        name_or_id: &str,
        replicas: u32,
    ) -> Result<(Hash, Vec<Change>)> {
        let (_, f) = self.resolve(name_or_id)?;
        let mut f = f.clone();
        f.replicas = replicas;
        Ok((f.id, vec![Change::PutFile(f)]))
    }

    /// The keys a change touches: two plans whose keys meet may not share a commit (the
    /// second was planned without the first's change). Every catalogue fact a plan acts
    /// on is a key it writes (a name it binds or drops, the content it adds, drops or
    /// names), so write keys are enough.
    pub fn keys(&self, c: &Change, out: &mut HashSet<Key>) {
        match c {
            Change::PutFile(f) => {
                out.insert(Key::Content(f.id));
            }
            Change::DeleteFile(id) => {
                out.insert(Key::Content(*id));
            }
            Change::PutName(n, rec) => {
                out.insert(Key::Name(n.clone()));
                out.insert(Key::Content(rec.id));
                if let Some(old) = self.names.get(n) {
                    out.insert(Key::Content(old.id));
                }
            }
            Change::DeleteName(n) => {
                out.insert(Key::Name(n.clone()));
                if let Some(old) = self.names.get(n) {
                    out.insert(Key::Content(old.id));
                }
            }
            Change::PutRepair(r) => {
                out.insert(Key::Repair(r.chunk));
            }
            Change::DeleteRepair(h) => {
                out.insert(Key::Repair(*h));
            }
        }
    }

    // ---- apply ------------------------------------------------------------------

    /// Apply a change the store has taken; returns the chunks no file references any more.
    pub fn apply(&mut self, c: Change) -> Vec<Hash> {
        self.version = next_version();
        match c {
            Change::PutFile(f) => {
                let garbage = self.remove_file(&f.id);
                self.add_file(f);
                garbage
                    .into_iter()
                    .filter(|h| !self.is_referenced(h))
                    .collect()
            }
            Change::DeleteFile(id) => self.remove_file(&id),
            Change::PutName(name, rec) => {
                self.unlink_name(&name);
                self.by_id.entry(rec.id).or_default().insert(name.clone());
                self.names.insert(name, rec);
                Vec::new()
            }
            Change::DeleteName(name) => {
                self.unlink_name(&name);
                Vec::new()
            }
            Change::PutRepair(_) | Change::DeleteRepair(_) => Vec::new(),
        }
    }

    fn unlink_name(&mut self, name: &str) {
        if let Some(old) = self.names.remove(name) {
            if let Some(set) = self.by_id.get_mut(&old.id) {
                set.remove(name);
                if set.is_empty() {
                    self.by_id.remove(&old.id);
                }
            }
        }
    }

    fn add_file(&mut self, f: FileRecord) {
        // A chunk repeated in one file counts once.
        let mut seen = HashSet::new();
        for (i, h) in f.chunks.iter().enumerate() {
            if seen.insert(*h) {
                self.chunks
                    .entry(*h)
                    .or_insert_with(|| ChunkInfo {
                        size: crate::fragment::chunk_len(f.size, f.chunk_size, i as u64),
                        targets: Default::default(),
                    })
                    .add(f.replicas);
            }
        }
        self.files.insert(f.id, f);
    }

    /// Remove a file record; returns the chunks nothing references any more.
    fn remove_file(&mut self, id: &Hash) -> Vec<Hash> {
        let Some(f) = self.files.remove(id) else {
            return Vec::new();
        };
        let unique: HashSet<Hash> = f.chunks.iter().copied().collect();
        let mut garbage = Vec::new();
        for h in unique {
            if let Some(info) = self.chunks.get_mut(&h) {
                if info.remove(f.replicas) {
                    self.chunks.remove(&h);
                    garbage.push(h);
                }
            }
        }
        garbage
    }
}

/// What a catalogue write touches, for batching writes that do not meet.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Key {
    Name(String),
    Content(Hash),
    Repair(Hash),
}

#[cfg(test)]
mod tests {
    use super::*;

    fn file(tag: &[u8], chunks: &[&[u8]], replicas: u32) -> FileRecord {
        FileRecord {
            id: Hash::of(tag),
            size: 4096 * chunks.len() as u64,
            chunk_size: 4096,
            chunks: chunks.iter().map(|c| Hash::of(c)).collect(),
            replicas,
            created_ms: 1,
        }
    }

    fn applied(c: &mut Catalogue, changes: Vec<Change>) -> Vec<Hash> {
        changes.into_iter().flat_map(|x| c.apply(x)).collect()
    }

    /// Targets follow the files that use a chunk, without a scan, through every change.
    #[test]
    fn chunk_targets_and_refs_follow_files() {
        let mut c = Catalogue::default();
        let (a, b) = (file(b"a", &[b"x", b"y", b"x"], 2), file(b"b", &[b"y"], 3));
        applied(
            &mut c,
            vec![Change::PutFile(a.clone()), Change::PutFile(b.clone())],
        );
        let t = |c: &Catalogue, k: &[u8]| c.chunk(&Hash::of(k)).map(|i| i.target());
        assert_eq!((t(&c, b"x"), t(&c, b"y")), (Some(2), Some(3)));
        let (_, changes) = c.plan_set_replicas(&b.id.to_hex(), 1).unwrap();
        assert!(applied(&mut c, changes).is_empty());
        assert_eq!(t(&c, b"y"), Some(2));
        let garbage = applied(&mut c, vec![Change::DeleteFile(a.id)]);
        assert_eq!(garbage, vec![Hash::of(b"x")]);
        assert_eq!((t(&c, b"x"), t(&c, b"y")), (None, Some(1)));
        assert_eq!(
            applied(&mut c, vec![Change::DeleteFile(b.id)]),
            vec![Hash::of(b"y")]
        );
        assert_eq!(c.chunk_count(), 0);
    }

    /// Planning changes nothing; content goes with its last name only.
    #[test]
    fn plans_drop_content_with_its_last_name() {
        let mut c = Catalogue::default();
        let f = file(b"f", &[b"x"], 2);
        let mut changes = vec![];
        c.plan_insert(f.clone(), &mut changes);
        c.plan_bind("one", f.id, false, 1, &mut changes).unwrap();
        applied(&mut c, changes);
        let mut changes = vec![];
        c.plan_bind("two", f.id, false, 1, &mut changes).unwrap();
        applied(&mut c, changes);
        assert_eq!(c.names_of(&f.id), vec!["one", "two"]);
        let (names, removed, changes) = c.plan_delete("one").unwrap();
        assert_eq!((names.len(), removed), (1, false));
        assert!(c.name("one").is_some(), "a plan changes nothing");
        applied(&mut c, changes);
        let (_, removed, changes) = c.plan_delete("two").unwrap();
        assert!(removed);
        assert_eq!(applied(&mut c, changes), vec![Hash::of(b"x")]);
        assert_eq!((c.file_count(), c.name_count()), (0, 0));
    }

    /// Overwriting a name drops the old content only when nothing else names it.
    #[test]
    fn overwrite_drops_the_old_content_when_unnamed() {
        let mut c = Catalogue::default();
        let (f, g) = (file(b"f", &[b"x"], 2), file(b"g", &[b"y"], 2));
        let mut changes = vec![];
        c.plan_insert(f.clone(), &mut changes);
        c.plan_insert(g.clone(), &mut changes);
        c.plan_bind("n", f.id, false, 1, &mut changes).unwrap();
        applied(&mut c, changes);
        let mut changes = vec![];
        assert!(c.plan_bind("n", g.id, false, 1, &mut changes).is_err());
        c.plan_bind("n", g.id, true, 1, &mut changes).unwrap();
        assert_eq!(applied(&mut c, changes), vec![Hash::of(b"x")]);
        assert!(c.file(&f.id).is_none());
        assert_eq!(c.names_of(&g.id), vec!["n"]);
    }
}
