use super::*;
use std::time::Duration;

/// A fresh database on the test server. `make test` always starts one and sets
/// `SHOAL_TEST_POSTGRES_URL`; without it a test fails rather than passing unrun,
/// unless skipping was asked for (`SHOAL_TEST_SKIP_POSTGRES=1`: then None).
pub fn fresh_db() -> Option<String> {
    let Ok(base) = std::env::var("SHOAL_TEST_POSTGRES_URL") else {
        if std::env::var("SHOAL_TEST_SKIP_POSTGRES").is_ok_and(|v| v == "1") {
            eprintln!("SHOAL_TEST_SKIP_POSTGRES=1: this PostgreSQL test is skipped");
            return None;
        }
        panic!(
            "SHOAL_TEST_POSTGRES_URL is unset: start a server with scripts/postgres.sh \
             (make test does), or set SHOAL_TEST_SKIP_POSTGRES=1 to skip this test"
        );
    };
    let name = format!("shoal_unit_{}", hex::encode(rand::random::<[u8; 6]>()));
    let mut c = Client::connect(&base, postgres::NoTls).expect("test PostgreSQL reachable");
    c.batch_execute(&format!("CREATE DATABASE {name}"))
        .expect("create test database");
    let (head, _) = base.rsplit_once('/').expect("URL has a database");
    Some(format!("{head}/{name}"))
}

fn plain() -> Tls {
    crate::pgtls::connector(None).unwrap()
}

fn uses_tls(c: &mut Client) -> bool {
    c.query_one(
        "SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()",
        &[],
    )
    .unwrap()
    .get(0)
}

/// `make test`'s server has TLS on (a certificate for 127.0.0.1 from a throwaway CA, path in
/// `SHOAL_TEST_POSTGRES_CA`): sslmode=require encrypts; with the CA file the
/// certificate is verified, and a wrong CA is refused.
#[test]
fn tls_follows_sslmode_and_verifies_with_a_ca_file() {
    let Some(url) = fresh_db() else { return };
    let Ok(ca) = std::env::var("SHOAL_TEST_POSTGRES_CA") else {
        eprintln!("SHOAL_TEST_POSTGRES_CA is unset: skipping (make test sets it)");
        return;
    };
    let ca = std::path::PathBuf::from(ca);
    let require = format!("{url}?sslmode=require");
    assert!(uses_tls(&mut connect(&require, &plain()).unwrap()));
    let verified = crate::pgtls::connector(Some(&ca)).unwrap();
    assert!(uses_tls(&mut connect(&require, &verified).unwrap()));
    assert!(!uses_tls(
        &mut connect(&format!("{url}?sslmode=disable"), &plain()).unwrap()
    ));
    // Some other CA: the server's certificate does not chain to it.
    let dir = tempfile::tempdir().unwrap();
    let other = dir.path().join("other.pem");
    let ok = std::process::Command::new("openssl")
        .args([
            "req",
            "-x509",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:P-256",
            "-nodes",
            "-days",
            "1",
            "-subj",
            "/CN=other",
        ])
        .arg("-keyout")
        .arg(dir.path().join("k.pem"))
        .arg("-out")
        .arg(&other)
        .output()
        .unwrap()
        .status
        .success();
    assert!(ok, "openssl made a CA");
    let wrong = crate::pgtls::connector(Some(&other)).unwrap();
    let e = connect(&require, &wrong)
        .err()
        .expect("a wrong CA is refused");
    assert!(e.to_string().contains("connect"), "{e}");
}

#[test]
fn migrations_apply_once_even_when_raced() {
    let Some(url) = fresh_db() else { return };
    let runs: Vec<_> = (0..3)
        .map(|_| {
            let url = url.clone();
            std::thread::spawn(move || migrate(&mut connect(&url, &plain()).unwrap()).unwrap())
        })
        .collect();
    let applied: Vec<i32> = runs.into_iter().flat_map(|h| h.join().unwrap()).collect();
    let mut applied = applied;
    applied.sort();
    assert_eq!(
        applied,
        MIGRATIONS.iter().map(|m| m.0).collect::<Vec<_>>(),
        "each version exactly once across racing runners"
    );
    let mut c = connect(&url, &plain()).unwrap();
    assert!(migrate(&mut c).unwrap().is_empty(), "nothing left to apply");
    let versions: Vec<i32> = c
        .query(
            "SELECT version FROM schema_migrations ORDER BY version",
            &[],
        )
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    assert_eq!(versions, MIGRATIONS.iter().map(|m| m.0).collect::<Vec<_>>());
}

#[test]
fn store_round_trip_and_log_order() {
    let Some(url) = fresh_db() else { return };
    let s = PgStore::connect(&url, plain()).unwrap();
    let h = shoal_common::hash::Hash::of(b"f");
    let f = FileRecord {
        id: h,
        size: 3,
        chunk_size: 4096,
        chunks: vec![shoal_common::hash::Hash::of(b"c")],
        replicas: 2,
        created_ms: 7,
    };
    let changes = vec![
        Change::PutFile(f.clone()),
        Change::PutName(
            "a".into(),
            NameRecord {
                id: h,
                created_ms: 7,
            },
        ),
        Change::PutName(
            "b".into(),
            NameRecord {
                id: h,
                created_ms: 8,
            },
        ),
        Change::DeleteName("b".into()),
        Change::PutRepair(RepairRecord {
            chunk: h,
            enqueued_ms: 1,
        }),
    ];
    s.apply(&changes).unwrap();
    let loaded = s.load().unwrap();
    assert_eq!(loaded.files.get(&h), Some(&f));
    assert_eq!(loaded.names.keys().collect::<Vec<_>>(), vec!["a"]);
    assert_eq!(loaded.repairs.len(), 1);
    let log = entries(s.log_since(0).unwrap());
    assert_eq!(
        log.iter().map(|e| e.change.clone()).collect::<Vec<_>>(),
        changes[..4].to_vec(),
        "catalogue changes logged in order, the repair queue not"
    );
    assert_eq!(loaded.seq, log.last().unwrap().seq);
    assert!(entries(s.log_since(loaded.seq).unwrap()).is_empty());
}

fn entries(t: Tail) -> Vec<LogEntry> {
    match t {
        Tail::Entries(e) => e,
        Tail::Trimmed { through } => panic!("unexpectedly trimmed through {through}"),
    }
}

fn name(n: &str, id: &str) -> Change {
    Change::PutName(
        n.into(),
        NameRecord {
            id: shoal_common::hash::Hash::of(id.as_bytes()),
            created_ms: 1,
        },
    )
}

/// Trimming removes only entries older than the retention and never the newest; a
/// reader behind the trim mark is told to reload, one at or past it reads on; the
/// catalogue loads the same after a trim.
#[test]
fn trim_keeps_recent_entries_and_the_newest_and_flags_readers_behind() {
    let Some(url) = fresh_db() else { return };
    let s = PgStore::connect(&url, plain()).unwrap();
    for i in 0..5 {
        s.apply(&[name(&format!("old{i}"), "x")]).unwrap();
    }
    let before = s.load().unwrap();
    assert_eq!(
        s.trim_log(Duration::from_secs(3600)).unwrap(),
        0,
        "nothing is old yet"
    );
    // Age the first five entries by an hour, then write two more.
    s.call(|c| c.execute("UPDATE catalogue_log SET at = at - interval '2 hours'", &[]))
        .unwrap()
        .unwrap();
    s.apply(&[name("new0", "y")]).unwrap();
    s.apply(&[Change::DeleteName("old0".into())]).unwrap();
    let reader_behind = before.seq - 2;
    assert_eq!(s.trim_log(Duration::from_secs(3600)).unwrap(), 5);
    let kept = entries(s.log_since(before.seq).unwrap());
    assert_eq!(kept.len(), 2, "the recent entries stay");
    match s.log_since(reader_behind).unwrap() {
        Tail::Trimmed { through } => assert_eq!(through, before.seq),
        Tail::Entries(e) => panic!("a reader at {reader_behind} got {} entries", e.len()),
    }
    let after = s.load().unwrap();
    assert_eq!(after.seq, kept.last().unwrap().seq);
    let names: Vec<_> = after.names.keys().cloned().collect();
    assert_eq!(names, ["new0", "old1", "old2", "old3", "old4"]);
    // Everything old: the newest entry is kept, so the position survives.
    s.call(|c| c.execute("UPDATE catalogue_log SET at = at - interval '2 hours'", &[]))
        .unwrap()
        .unwrap();
    assert_eq!(s.trim_log(Duration::from_secs(3600)).unwrap(), 1);
    assert_eq!(s.load().unwrap().seq, after.seq);
    assert!(entries(s.log_since(after.seq).unwrap()).is_empty());
}

/// A streaming upload's windows add to its held chunks; a placement or renewal sets
/// them; a released upload holds nothing.
#[test]
fn upload_holds_append_by_window_and_set_otherwise() {
    let Some(url) = fresh_db() else { return };
    let s = PgStore::connect(&url, plain()).unwrap();
    let h = |b: &[u8]| shoal_common::hash::Hash::of(b);
    let ttl = Duration::from_secs(60);
    s.hold_upload("u", &[h(b"a")], true, ttl).unwrap();
    s.hold_upload("u", &[h(b"b"), h(b"c")], true, ttl).unwrap();
    let held = s.held_chunks().unwrap();
    assert_eq!(held.len(), 3, "windows add up");
    s.hold_upload("u", &[h(b"d")], false, ttl).unwrap();
    assert_eq!(
        s.held_chunks().unwrap(),
        [h(b"d")].into_iter().collect(),
        "a placement sets the list"
    );
    s.release_upload("u");
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while !s.held_chunks().unwrap().is_empty() {
        assert!(
            std::time::Instant::now() < deadline,
            "release never applied"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}
