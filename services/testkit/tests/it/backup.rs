//! Catalogue backup and restore: a snapshot taken while the tracker serves, the
//! tracker's data dir lost, the snapshot restored into an empty one, and every file of
//! the snapshot served byte-identical again once the peers re-register.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::time::Duration;

use shoal_client::{Client, PutOptions, Quiet};
use shoal_common::auth::AuthConfig;
use shoal_proto::v1 as pb;
use shoal_testkit::procs::bin;
use shoal_testkit::{file_hash, random_file, wait_for, ClusterOptions, TestCluster};

const CLUSTER: &str = "cluster-token-0123456789";
const READ: &str = "read-token-0123456789";
const WRITE: &str = "write-token-0123456789";

/// Three zones, tokens required, and the embedded store whatever `SHOAL_TEST_POSTGRES_URL`
/// says: restore writes a redb data dir (PostgreSQL is restored with its own tools).
fn secured() -> ClusterOptions {
    let mut o = ClusterOptions::zones(&["a", "b", "c"]).replication(2);
    o.store = shoal_testkit::TestStore::Redb;
    o.auth = AuthConfig {
        required: true,
        cluster_token: Some(CLUSTER.into()),
        read_token: Some(READ.into()),
        write_token: Some(WRITE.into()),
        ..Default::default()
    };
    o
}

async fn put(c: &Client, dir: &Path, name: &str, len: u64, seed: u64) -> PathBuf {
    let p = dir.join(format!("src-{seed}"));
    if !p.exists() {
        random_file(&p, len, seed).unwrap();
    }
    let opts = PutOptions {
        name: name.into(),
        ..Default::default()
    };
    c.put(&p, opts, Arc::new(Quiet))
        .await
        .unwrap_or_else(|e| panic!("put {name}: {e}"));
    p
}

/// Every file listed healthy (its copies known again), then each read back identical.
async fn all_served(c: &Client, files: &[(String, PathBuf)], work: &Path) {
    wait_for(
        "every restored file healthy",
        Duration::from_secs(30),
        || async {
            c.list().await.is_ok_and(|l| {
                l.len() == files.len()
                    && l.iter().all(|f| f.status == pb::FileStatus::Healthy as i32)
            })
        },
    )
    .await
    .unwrap();
    for (i, (name, src)) in files.iter().enumerate() {
        let out = work.join(format!("out-{i}"));
        c.get(name, &out, Arc::new(Quiet))
            .await
            .unwrap_or_else(|e| panic!("get {name} after restore: {e}"));
        assert_eq!(
            file_hash(&out).unwrap(),
            file_hash(src).unwrap(),
            "{name}: bytes differ after restore"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn backup_while_serving_then_restore_into_an_empty_data_dir() {
    let mut cluster = TestCluster::start(secured()).await.unwrap();
    let c = cluster.client();
    let work = tempfile::tempdir().unwrap();
    let mut files = Vec::new();
    for (i, len) in [0u64, 1, 70_000, 1_000_000, 3 << 20]
        .into_iter()
        .enumerate()
    {
        let name = format!("dir/file-{i}");
        files.push((
            name.clone(),
            put(&c, work.path(), &name, len, i as u64).await,
        ));
    }
    // A second name for the same content.
    let alias = put(&c, work.path(), "alias-of-3", 0, 3).await;
    files.push(("alias-of-3".into(), alias));

    // Only the cluster token may export the catalogue.
    let snap = work.path().join("catalogue.backup");
    let e = shoal_tracker::backup::backup(&cluster.tracker_url(), Some(WRITE), &snap)
        .await
        .unwrap_err()
        .to_string();
    assert!(e.contains("cluster"), "{e}");
    assert!(!snap.exists());

    // The snapshot is taken while a put is in flight: it holds that file or not, never
    // half of it, and every file committed before it.
    let busy = {
        let (c, dir) = (cluster.client(), work.path().to_path_buf());
        tokio::spawn(async move { put(&c, &dir, "in-flight", 4 << 20, 99).await })
    };
    let s = shoal_tracker::backup::backup(&cluster.tracker_url(), Some(CLUSTER), &snap)
        .await
        .unwrap();
    let in_flight = busy.await.unwrap();
    assert!(s.header.names >= files.len() as u64, "{s}");
    let restored = shoal_tracker::backup::read_file(&snap).unwrap();
    assert_eq!(restored.header.names, s.header.names);
    if s.header.names as usize > files.len() {
        files.push(("in-flight".into(), in_flight));
    }
    // A file put after the snapshot is not in it.
    put(&c, work.path(), "after-backup", 10_000, 100).await;

    // The catalogue's volume is lost.
    let data_dir = cluster.tracker.as_ref().unwrap().data_dir.clone();
    cluster.tracker.take().unwrap().stop();
    std::fs::remove_dir_all(&data_dir).unwrap();
    std::fs::create_dir_all(&data_dir).unwrap();

    let r = shoal_tracker::backup::restore(&snap, &data_dir).unwrap();
    assert_eq!(r.blake3, s.blake3);
    // A second restore over the restored dir is refused.
    let e = shoal_tracker::backup::restore(&snap, &data_dir)
        .unwrap_err()
        .to_string();
    assert!(e.contains("not empty"), "{e}");

    cluster.start_tracker().await.unwrap();
    cluster.wait_live_peers(3).await.unwrap();
    let c = cluster.client();
    all_served(&c, &files, work.path()).await;
    assert!(
        c.stat("after-backup").await.is_err(),
        "a file put after the snapshot came back"
    );
}

/// The binary: `backup` dials `SHOAL_TRACKER_URL` with the cluster token from the
/// tracker's own settings; `restore` refuses a data dir that is not empty with a clear
/// message and a non-zero exit, and fills an empty one.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn backup_and_restore_commands() {
    let cluster = TestCluster::start(secured()).await.unwrap();
    let work = tempfile::tempdir().unwrap();
    let src = put(&cluster.client(), work.path(), "one", 200_000, 1).await;
    let snap = work.path().join("snap");
    let tracker = bin("shoal-tracker");
    let run = |args: &[&str], env: &[(&str, &str)]| {
        let out = Command::new(&tracker)
            .args(args)
            .env_clear()
            .envs(env.iter().copied())
            .output()
            .unwrap();
        (
            out.status.code(),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    };
    let url = cluster.tracker_url();
    let snap_s = snap.to_str().unwrap();

    let (code, _, err) = run(&["backup", snap_s], &[("SHOAL_TRACKER_URL", &url)]);
    assert_eq!(code, Some(1), "{err}");
    assert!(err.contains("cluster"), "without a token: {err}");
    let (code, out, err) = run(
        &["backup", snap_s],
        &[
            ("SHOAL_TRACKER_URL", &url),
            ("SHOAL_AUTH__CLUSTER_TOKEN", CLUSTER),
        ],
    );
    assert_eq!(code, Some(0), "{err}");
    assert!(out.contains("1 files, 1 names"), "{out}");

    let full = cluster.tracker.as_ref().unwrap().data_dir.clone();
    let (code, _, err) = run(
        &["restore", snap_s],
        &[("SHOAL_DATA_DIR", full.to_str().unwrap())],
    );
    assert_eq!(code, Some(1), "{err}");
    assert!(
        err.contains("not empty") && err.contains("catalogue.redb"),
        "{err}"
    );

    let empty = work.path().join("restored");
    let (code, out, err) = run(
        &["restore", snap_s],
        &[("SHOAL_DATA_DIR", empty.to_str().unwrap())],
    );
    assert_eq!(code, Some(0), "{err}");
    assert!(out.contains("1 files, 1 names"), "{out}");
    assert!(empty.join("catalogue.redb").is_file());

    let (code, _, err) = run(&["restore"], &[]);
    assert_eq!(code, Some(64), "{err}");
    let (code, _, err) = run(&["backup", snap_s], &[("SHOAL_TRACKER_URLL", &url)]);
    assert_eq!(code, Some(64), "a typo is refused: {err}");
    let _ = src;
}
