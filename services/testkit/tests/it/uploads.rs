//! Uploads in flight (issue 15): capped per token and overall, with a clear
//! RESOURCE_EXHAUSTED and a retry hint; and alive as long as they make progress, so a
//! put slower than one expiry still commits while an idle one is dropped.

use std::sync::Arc;
use std::time::Duration;

use shoal_common::auth::AuthConfig;
use shoal_common::grpc::GrpcChannel;
use shoal_proto::v1 as pb;
use shoal_testkit::{random_file, ClusterOptions, TestCluster};
use tonic::Code;

const CLUSTER: &str = "uploads-cluster-token-0123456789";
const WRITE: &str = "uploads-write-token-0123456789";
const CHUNK: u64 = 64 << 10;

fn tracker(c: &TestCluster, token: &str) -> pb::tracker_client::TrackerClient<GrpcChannel> {
    pb::tracker_client::TrackerClient::new(
        shoal_common::grpc::channel_with(&c.tracker_url(), Some(token)).expect("tracker channel"),
    )
}

fn begin(name: &str) -> pb::BeginUploadRequest {
    pb::BeginUploadRequest {
        name: name.into(),
        size: 1,
        replicas: 0,
        overwrite: false,
        ..Default::default()
    }
}

/// A write token at its cap is refused with a retry hint while another token still
/// begins uploads; an aborted upload gives its slot back; the overall cap holds for all.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn uploads_in_flight_are_capped_per_token_and_overall() {
    let mut o = ClusterOptions::zones(&["a", "b"]).replication(2);
    o.auth = AuthConfig {
        required: true,
        cluster_token: Some(CLUSTER.into()),
        write_token: Some(WRITE.into()),
        ..Default::default()
    };
    o.tracker.upload.max_per_token = 3;
    o.tracker.upload.max_in_flight = 5;
    let c = TestCluster::start(o).await.expect("cluster starts");
    let (mut writer, mut other) = (tracker(&c, WRITE), tracker(&c, CLUSTER));
    let mut ids = Vec::new();
    for i in 0..3 {
        let r = writer.begin_upload(begin(&format!("w{i}"))).await;
        ids.push(r.expect("within the cap").into_inner().upload_id);
    }
    let refused = writer.begin_upload(begin("w3")).await.unwrap_err();
    assert_eq!(refused.code(), Code::ResourceExhausted, "{refused:?}");
    assert!(
        refused.message().contains("SHOAL_UPLOAD__MAX_PER_TOKEN")
            && refused.message().contains("retry in"),
        "{}",
        refused.message()
    );
    assert!(refused.metadata().get("retry-after").is_some());
    // Another token is not held up by this one's uploads.
    for i in 0..2 {
        other
            .begin_upload(begin(&format!("o{i}")))
            .await
            .expect("another token has its own count");
    }
    // Five in flight: the overall cap refuses everyone now.
    let full = other.begin_upload(begin("o2")).await.unwrap_err();
    assert_eq!(full.code(), Code::ResourceExhausted);
    assert!(
        full.message().contains("SHOAL_UPLOAD__MAX_IN_FLIGHT"),
        "{}",
        full.message()
    );
    // Ending an upload frees its slot for its token.
    writer
        .abort_upload(pb::AbortUploadRequest {
            upload_id: ids.remove(0),
        })
        .await
        .expect("abort");
    writer
        .begin_upload(begin("w4"))
        .await
        .expect("a slot was freed");
}

/// A client whose put takes longer than one upload expiry: it renews the upload with
/// the receipts it gathers, and the commit succeeds. An upload that makes no progress
/// is dropped after one expiry.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_put_slower_than_one_expiry_commits_and_an_idle_upload_does_not() {
    let mut o = ClusterOptions::zones(&["a", "b"]).replication(2);
    o.tracker.chunk.min_bytes = CHUNK;
    o.tracker.chunk.max_bytes = CHUNK;
    o.tracker.upload.expiry = Duration::from_millis(1500);
    let c = TestCluster::start(o).await.expect("cluster starts");

    // Idle: begun, never placed or renewed; gone once the expiry passed.
    let mut t = pb::tracker_client::TrackerClient::new(
        shoal_common::grpc::channel(&c.tracker_url()).expect("tracker channel"),
    );
    let idle = t
        .begin_upload(begin("idle"))
        .await
        .expect("begin")
        .into_inner();
    assert_eq!(idle.expires_in_ms, 1500);
    shoal_testkit::wait_for("the idle upload to expire", Duration::from_secs(20), || {
        let mut t = t.clone();
        let id = idle.upload_id.clone();
        async move {
            let r = t
                .renew_upload(pb::RenewUploadRequest {
                    upload_id: id,
                    stored: vec![],
                })
                .await;
            matches!(r, Err(s) if s.code() == Code::NotFound)
        }
    })
    .await
    .expect("an idle upload expires");

    // Slow: four chunks, each followed by a pause of half the expiry (a client on a slow
    // link, or reading a slow disk): about three expiries in all.
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("slow");
    random_file(&path, 4 * CHUNK, 7).expect("file");
    let mut client = c.client();
    client.options.put_parallelism = 1;
    let opts = shoal_client::PutOptions {
        name: "slow".into(),
        ..Default::default()
    };
    let started = std::time::Instant::now();
    let put = client
        .put(&path, opts, Arc::new(SlowProgress::after(4 * CHUNK)))
        .await
        .expect("a put that keeps making progress commits");
    assert!(
        started.elapsed() > Duration::from_millis(3000),
        "the put outlived two expiries ({:?}), so renewals kept it",
        started.elapsed()
    );
    assert_eq!(put.chunks, 4);
    let back = dir.path().join("back");
    c.client()
        .get("slow", &back, Arc::new(shoal_client::Quiet))
        .await
        .expect("get");
    assert_eq!(
        shoal_testkit::file_hash(&back).unwrap(),
        shoal_testkit::file_hash(&path).unwrap()
    );
}

/// Stalls the put for 750 ms after every chunk stored, once the first `hashed` bytes
/// (the hashing pass) are counted: the client's only hook into its own pace.
struct SlowProgress {
    hashed: u64,
    seen: std::sync::atomic::AtomicU64,
}

impl SlowProgress {
    fn after(hashed: u64) -> Self {
        Self {
            hashed,
            seen: Default::default(),
        }
    }
}

impl shoal_client::Progress for SlowProgress {
    fn advance(&self, bytes: u64) {
        let before = self
            .seen
            .fetch_add(bytes, std::sync::atomic::Ordering::Relaxed);
        if bytes > 0 && before >= self.hashed {
            std::thread::sleep(Duration::from_millis(750));
        }
    }
}
