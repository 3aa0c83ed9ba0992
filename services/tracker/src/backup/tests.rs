use super::*;
use shoal_common::hash::Hash;

fn catalogue() -> Loaded {
    let mut l = Loaded::default();
    for i in 0..50u32 {
        let f = FileRecord {
            id: Hash::of(&i.to_le_bytes()),
            size: 100 + u64::from(i),
            chunk_size: 4096,
            chunks: vec![Hash::of(&[i as u8, 1]), Hash::of(&[i as u8, 2])],
            replicas: 3,
            created_ms: 7,
        };
        l.names.insert(
            format!("dir/file-{i}"),
            NameRecord {
                id: f.id,
                created_ms: 8,
            },
        );
        l.files.insert(f.id, f);
    }
    l.repairs.push(RepairRecord {
        chunk: Hash::of(b"r"),
        enqueued_ms: 9,
    });
    l
}

fn bytes(l: &Loaded) -> Vec<u8> {
    let mut out = Vec::new();
    assert!(encode(l, 42, |b| {
        out.extend(b);
        true
    }));
    out
}

#[test]
fn round_trip_through_a_redb_data_dir() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("cat.backup");
    let l = catalogue();
    std::fs::write(&file, bytes(&l)).unwrap();
    let data = dir.path().join("data");
    let s = restore(&file, &data).unwrap();
    assert_eq!(
        (s.header.files, s.header.names, s.header.repairs),
        (50, 50, 1)
    );
    let back = RedbStore::open(&data).unwrap().load().unwrap();
    assert_eq!(back.files, l.files);
    assert_eq!(back.names, l.names);
    assert_eq!(back.repairs, l.repairs);
    // Nothing but the catalogue is left behind.
    let entries: Vec<_> = std::fs::read_dir(&data).unwrap().flatten().collect();
    assert_eq!(entries.len(), 1);
}

#[test]
fn same_catalogue_same_bytes() {
    assert_eq!(bytes(&catalogue()), bytes(&catalogue()));
}

#[test]
fn empty_catalogue_round_trips() {
    let snap = decode(&bytes(&Loaded::default())[..]).unwrap();
    assert!(snap.changes.is_empty());
}

#[test]
fn refuses_a_data_dir_that_is_not_empty() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("cat.backup");
    std::fs::write(&file, bytes(&catalogue())).unwrap();
    let data = dir.path().join("data");
    RedbStore::open(&data).unwrap();
    let e = restore(&file, &data).unwrap_err().to_string();
    assert!(
        e.contains("not empty") && e.contains("catalogue.redb"),
        "{e}"
    );
    // A fresh volume's lost+found does not count.
    let fresh = dir.path().join("fresh");
    std::fs::create_dir_all(fresh.join(LOST_AND_FOUND)).unwrap();
    restore(&file, &fresh).unwrap();
}

#[test]
fn a_flipped_byte_fails_the_checksum_and_restores_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let mut b = bytes(&catalogue());
    // Inside a record, keeping it valid JSON: a digit of a size.
    let at = b.windows(7).position(|w| w == b"\"size\":").unwrap() + 8;
    b[at] = if b[at] == b'1' { b'2' } else { b'1' };
    let file = dir.path().join("cat.backup");
    std::fs::write(&file, &b).unwrap();
    let data = dir.path().join("data");
    let e = restore(&file, &data).unwrap_err().to_string();
    assert!(e.contains("checksum mismatch"), "{e}");
    assert!(!data.join("catalogue.redb").exists());
}

#[test]
fn truncated_and_foreign_files_are_refused() {
    let b = bytes(&catalogue());
    let cut = &b[..b.len() / 2];
    let e = decode(cut).unwrap_err().to_string();
    assert!(e.contains("truncated"), "{e}");
    let whole_lines = &b[..=cut.iter().rposition(|c| *c == b'\n').unwrap()];
    let e = decode(whole_lines).unwrap_err().to_string();
    assert!(e.contains("no end record"), "{e}");
    let e = decode(&b"hello\n"[..]).unwrap_err().to_string();
    assert!(e.contains("not a shoal catalogue backup"), "{e}");
    let e = decode(&b""[..]).unwrap_err().to_string();
    assert!(e.contains("empty file"), "{e}");
    let mut extra = b.clone();
    extra.extend(b"{}\n");
    let e = decode(&extra[..]).unwrap_err().to_string();
    assert!(e.contains("after the end record"), "{e}");
}

#[test]
fn a_newer_version_is_named() {
    let b = String::from_utf8(bytes(&catalogue())).unwrap();
    let b = b.replacen("\"version\":1", "\"version\":2", 1);
    let e = decode(b.as_bytes()).unwrap_err().to_string();
    assert!(e.contains("version 2 is not supported"), "{e}");
}
