//! Receipts (issue 15): the tracker counts a copy only when the peer that stored it
//! signed a receipt for it, and binds a name to stored content only when the upload's
//! layout matches the stored record exactly. A write-token client can claim anything;
//! none of its claims may cost a real copy or capture someone else's upload.

use std::time::{Duration, Instant};

use shoal_common::auth::AuthConfig;
use shoal_common::grpc::GrpcChannel;
use shoal_proto::v1 as pb;
use shoal_testkit::{ClusterOptions, TestCluster};
use tonic::Code;

const CLUSTER: &str = "receipts-cluster-token-0123456789";
const READ: &str = "receipts-read-token-0123456789";
const WRITE: &str = "receipts-write-token-0123456789";

/// Three peers in three zones, two copies per chunk.
async fn cluster() -> TestCluster {
    let mut o = ClusterOptions::zones(&["a", "b", "c"]).replication(2);
    o.auth = AuthConfig {
        required: true,
        cluster_token: Some(CLUSTER.into()),
        read_token: Some(READ.into()),
        write_token: Some(WRITE.into()),
        ..Default::default()
    };
    TestCluster::start(o).await.expect("cluster starts")
}

fn tracker(c: &TestCluster) -> pb::tracker_client::TrackerClient<GrpcChannel> {
    pb::tracker_client::TrackerClient::new(
        shoal_common::grpc::channel_with(&c.tracker_url(), Some(WRITE)).expect("tracker channel"),
    )
}

fn bytes_for(tag: &str, len: usize) -> Vec<u8> {
    let mut out = vec![0u8; len];
    blake3::Hasher::new()
        .update(tag.as_bytes())
        .finalize_xof()
        .fill(&mut out);
    out
}

fn hex(b: &[u8]) -> String {
    blake3::hash(b).to_hex().to_string()
}

/// Begin an upload of `chunk` (one chunk) under `name`, claiming content id `file_id`.
async fn place(
    c: &TestCluster,
    name: &str,
    file_id: &str,
    chunk: &[u8],
) -> (String, pb::ChunkPlacement) {
    let mut t = tracker(c);
    let begin = t
        .begin_upload(pb::BeginUploadRequest {
            name: name.into(),
            size: chunk.len() as u64,
            ..Default::default()
        })
        .await
        .expect("begin upload")
        .into_inner();
    let placed = t
        .place_chunks(pb::PlaceChunksRequest {
            upload_id: begin.upload_id.clone(),
            file_id: file_id.into(),
            chunks: vec![pb::ChunkDigest {
                index: 0,
                hash: hex(chunk),
                size: chunk.len() as u64,
            }],
        })
        .await
        .expect("place chunks")
        .into_inner();
    let p = placed.placements.into_iter().next().expect("one placement");
    assert_eq!(p.targets.len(), 2, "a pipeline of two peers");
    (begin.upload_id, p)
}

/// Send the chunk down the tracker's whole pipeline, as an honest client would.
async fn push(p: &pb::ChunkPlacement, b: &[u8]) -> pb::PutChunkResponse {
    shoal_testkit::push_chunk(p, b, Some(WRITE))
        .await
        .expect("put chunk")
}

fn holders_on_disk(c: &TestCluster, h: &str) -> Vec<String> {
    (0..c.peers.len())
        .filter(|&i| c.chunks_on_disk(i).contains(h))
        .map(|i| c.peer_id(i))
        .collect()
}

/// A client stores a chunk on its two pipeline peers, then commits claiming a third
/// copy on the peer that holds none (the emptiest, which trim would spare). The claim
/// is not counted, so no copy is above target and no real copy is ever trimmed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn claimed_copies_are_not_counted_and_trim_keeps_the_real_ones() {
    let c = cluster().await;
    let b = bytes_for("claimed", 20_000);
    let h = hex(&b);
    let (upload, p) = place(&c, "claimed.bin", &h, &b).await;
    let r = push(&p, &b).await;
    let real: Vec<String> = p.targets.iter().map(|t| t.id.clone()).collect();
    assert_eq!(r.stored_on, real);
    let outsider = (0..3)
        .map(|i| c.peer_id(i))
        .find(|id| !real.contains(id))
        .expect("a peer outside the pipeline");
    let mut claimed = real.clone();
    claimed.push(outsider.clone());
    tracker(&c)
        .commit_upload(pb::CommitUploadRequest {
            upload_id: upload,
            stored: vec![pb::ChunkStored {
                index: 0,
                peer_ids: claimed,
                receipts: r.receipts.clone(),
            }],
            ..Default::default()
        })
        .await
        .expect("commit with the receipts of the real copies");

    let detail = tracker(&c)
        .stat_file(pb::StatFileRequest {
            name_or_id: "claimed.bin".into(),
        })
        .await
        .expect("stat")
        .into_inner();
    let listed: Vec<String> = detail.chunks[0]
        .replicas
        .iter()
        .map(|l| l.id.clone())
        .collect();
    assert!(
        !listed.contains(&outsider),
        "a copy without a receipt is not counted: {listed:?}"
    );
    // The manager runs every 100 ms: watch several rounds; both real copies stay.
    let until = Instant::now() + Duration::from_millis(1500);
    while Instant::now() < until {
        let mut on_disk = holders_on_disk(&c, &h);
        on_disk.sort();
        let mut want = real.clone();
        want.sort();
        assert_eq!(on_disk, want, "a real copy was deleted (trimmed)");
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
}

/// Claims alone (no receipt) commit nothing: the chunk is durable on no peer.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_commit_with_claims_only_is_refused() {
    let c = cluster().await;
    let b = bytes_for("claims only", 20_000);
    let (upload, _) = place(&c, "claims-only.bin", &hex(&b), &b).await;
    let ids: Vec<String> = (0..3).map(|i| c.peer_id(i)).collect();
    // A receipt for another upload (same chunk, same peers) does not count either.
    let (other, p) = place(&c, "other.bin", &hex(&b), &b).await;
    let r = push(&p, &b).await;
    let e = tracker(&c)
        .commit_upload(pb::CommitUploadRequest {
            upload_id: upload,
            stored: vec![pb::ChunkStored {
                index: 0,
                peer_ids: ids,
                receipts: r.receipts.clone(),
            }],
            ..Default::default()
        })
        .await
        .expect_err("no receipt for this upload: nothing durable");
    assert_eq!(e.code(), Code::FailedPrecondition, "{e:?}");
    assert!(e.message().contains("durable on 0"), "{}", e.message());
    drop(other);
}

/// A client stores junk under the content id of a file it does not have. A later
/// honest upload of that content is not bound to the junk record.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_junk_record_does_not_capture_the_real_content() {
    let c = cluster().await;
    let dir = tempfile::tempdir().expect("tempdir");
    let real = dir.path().join("real.bin");
    let content = bytes_for("the real content", 20_000);
    std::fs::write(&real, &content).expect("write");
    let id = hex(&content);

    let junk = bytes_for("junk", 20_000);
    let (upload, p) = place(&c, "junk.bin", &id, &junk).await;
    let r = push(&p, &junk).await;
    tracker(&c)
        .commit_upload(pb::CommitUploadRequest {
            upload_id: upload,
            stored: vec![pb::ChunkStored {
                index: 0,
                peer_ids: r.stored_on.clone(),
                receipts: r.receipts.clone(),
            }],
            ..Default::default()
        })
        .await
        .expect("the junk commits under the real content's id");

    let client =
        shoal_client::Client::with_token(&c.tracker_url(), Some(WRITE.into())).expect("client");
    let opts = shoal_client::PutOptions {
        name: "real.bin".into(),
        ..Default::default()
    };
    let put = client
        .put(&real, opts, std::sync::Arc::new(shoal_client::Quiet))
        .await;
    if let Ok(done) = &put {
        assert!(!done.deduplicated, "bound to the junk record: {done:?}");
    }
    match tracker(&c)
        .stat_file(pb::StatFileRequest {
            name_or_id: "real.bin".into(),
        })
        .await
    {
        Ok(d) => {
            let d = d.into_inner();
            let chunks: Vec<String> = d.chunks.iter().map(|c| c.hash.clone()).collect();
            assert_eq!(chunks, vec![hex(&content)], "real.bin names the real bytes");
        }
        Err(e) => {
            assert_eq!(e.code(), Code::NotFound, "{e:?}");
            let e = put.expect_err("the name is not bound, so the put failed");
            let msg = e.to_string();
            assert!(
                msg.contains(&id[..16]) && msg.contains("different"),
                "{msg}"
            );
        }
    }
}
