//! Verified bad-chunk reports (issue 15): a read-token `ReportBadChunk` makes the
//! tracker ask the peer to re-hash its copy; only a confirmed mismatch removes it
//! (quarantined, then repaired). A report about a good copy changes nothing, so a
//! read token cannot hide good copies or churn repair.

use std::sync::Arc;
use std::time::{Duration, Instant};

use shoal_common::auth::AuthConfig;
use shoal_common::grpc::GrpcChannel;
use shoal_proto::v1 as pb;
use shoal_testkit::{wait_for, ClusterOptions, TestCluster};
use tonic::Code;

const CLUSTER: &str = "reports-cluster-token-0123456789";
const READ: &str = "reports-read-token-0123456789";
const WRITE: &str = "reports-write-token-0123456789";

async fn cluster(tweak: fn(&mut ClusterOptions)) -> TestCluster {
    let mut o = ClusterOptions::zones(&["a", "b", "c"]).replication(2);
    o.auth = AuthConfig {
        required: true,
        cluster_token: Some(CLUSTER.into()),
        read_token: Some(READ.into()),
        write_token: Some(WRITE.into()),
        ..Default::default()
    };
    tweak(&mut o);
    TestCluster::start(o).await.expect("cluster starts")
}

fn reader(c: &TestCluster) -> pb::tracker_client::TrackerClient<GrpcChannel> {
    pb::tracker_client::TrackerClient::new(
        shoal_common::grpc::channel_with(&c.tracker_url(), Some(READ)).expect("tracker channel"),
    )
}

/// Put one single-chunk file; its chunk hash.
async fn put_one(c: &TestCluster, name: &str) -> String {
    let dir = tempfile::tempdir().expect("tempdir");
    let p = dir.path().join(name);
    shoal_testkit::random_file(&p, 30_000, 7).expect("file");
    let opts = shoal_client::PutOptions {
        name: name.into(),
        ..Default::default()
    };
    c.client()
        .put(&p, opts, Arc::new(shoal_client::Quiet))
        .await
        .expect("put");
    let d = c.client().stat(name).await.expect("stat");
    assert_eq!(d.chunks.len(), 1);
    d.chunks[0].hash.clone()
}

async fn listed(c: &TestCluster, name: &str) -> Vec<String> {
    let d = c.client().stat(name).await.expect("stat");
    d.chunks[0].replicas.iter().map(|p| p.id.clone()).collect()
}

fn index_of(c: &TestCluster, id: &str) -> usize {
    (0..c.peers.len())
        .find(|&i| c.peer_id(i) == id)
        .expect("a peer of the cluster")
}

async fn report(
    c: &TestCluster,
    peer: &str,
    hash: &str,
    reason: &str,
) -> Result<(), tonic::Status> {
    reader(c)
        .report_bad_chunk(pb::ReportBadChunkRequest {
            peer_id: peer.into(),
            hash: hash.into(),
            reason: reason.into(),
        })
        .await
        .map(|_| ())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_report_about_a_good_copy_leaves_it_listed() {
    let c = cluster(|_| {}).await;
    let h = put_one(&c, "good.bin").await;
    let holders = listed(&c, "good.bin").await;
    assert_eq!(holders.len(), 2);
    report(&c, &holders[0], &h, "it looked wrong to me")
        .await
        .expect("a report is accepted");
    // The verification runs in the background: watch it long enough to finish.
    let until = Instant::now() + Duration::from_millis(1500);
    while Instant::now() < until {
        let now = listed(&c, "good.bin").await;
        assert!(
            now.contains(&holders[0]),
            "a good copy was unlisted on a client's word: {now:?}"
        );
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    assert!(c.chunks_on_disk(index_of(&c, &holders[0])).contains(&h));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_report_about_a_corrupt_copy_removes_and_repairs_it() {
    let c = cluster(|_| {}).await;
    let h = put_one(&c, "bad.bin").await;
    let holders = listed(&c, "bad.bin").await;
    let bad = index_of(&c, &holders[1]);
    let path = c.chunk_file(bad, &h);
    let mut bytes = std::fs::read(&path).expect("chunk on disk");
    bytes[100] ^= 0xff;
    std::fs::write(&path, &bytes).expect("corrupt the copy");

    report(&c, &holders[1], &h, "hash mismatch on read")
        .await
        .expect("a report is accepted");
    // Removed from the listing, then repaired to two good copies again.
    wait_for(
        "the corrupt copy unlisted and repaired",
        Duration::from_secs(20),
        || {
            let c = &c;
            let h = &h;
            async move {
                let now = listed(c, "bad.bin").await;
                now.len() == 2
                    && now.iter().all(|id| {
                        let p = c.chunk_file(index_of(c, id), h);
                        std::fs::read(p).is_ok_and(|b| blake3::hash(&b).to_hex().as_str() == h)
                    })
            }
        },
    )
    .await
    .expect("repaired");
    assert!(
        std::fs::read(&path).map_or(true, |b| blake3::hash(&b).to_hex().as_str() == h),
        "the corrupt bytes are no longer served as the chunk"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reports_are_checked_capped_and_rate_limited() {
    let c = cluster(|o| o.tracker.repair.bad_reports_per_minute = 5).await;
    let h = put_one(&c, "limits.bin").await;
    let holders = listed(&c, "limits.bin").await;
    let outsider = (0..3)
        .map(|i| c.peer_id(i))
        .find(|id| !holders.contains(id))
        .expect("a peer without the chunk");

    let e = report(&c, &outsider, &h, "x")
        .await
        .expect_err("not a holder");
    assert_eq!(e.code(), Code::FailedPrecondition, "{e:?}");
    let e = report(&c, &holders[0], &h, &"r".repeat(257))
        .await
        .expect_err("reason too long");
    assert_eq!(e.code(), Code::InvalidArgument, "{e:?}");
    assert!(e.message().contains("256"), "{}", e.message());

    let mut limited = None;
    for _ in 0..20 {
        if let Err(e) = report(&c, &holders[0], &h, "again").await {
            limited = Some(e);
            break;
        }
    }
    let e = limited.expect("reports beyond the per-token rate are refused");
    assert_eq!(e.code(), Code::ResourceExhausted, "{e:?}");
    assert_eq!(listed(&c, "limits.bin").await.len(), 2, "still listed");
}
