//! Limits on the data path (issue 15): readers that never read cannot take the slots
//! writes need, and an idle chunk stream gives its slot back after the transfer
//! progress deadline (`SHOAL_TRANSFER__PROGRESS_TIMEOUT`).

use std::sync::Arc;
use std::time::Duration;

use shoal_common::grpc::GrpcChannel;
use shoal_proto::v1 as pb;
use shoal_testkit::{ClusterOptions, TestCluster};
use tonic::Code;

/// Chunks larger than what HTTP/2 windows and the peer's pipe buffer, so a reader
/// that never reads really stalls the peer's sender.
const CHUNK: u64 = 16 << 20;
const SLOTS: u32 = 8;

/// Two peers, two copies: a put needs both, so neither may refuse it.
async fn cluster(progress: Duration) -> TestCluster {
    let mut o = ClusterOptions::zones(&["a", "b"]).replication(2);
    o.tracker.chunk.min_bytes = CHUNK;
    o.tracker.chunk.max_bytes = CHUNK;
    o.progress_timeout = Some(progress);
    o.peer_tweak = |p| {
        p.max_transfers = SLOTS;
        p.max_reads = SLOTS;
    };
    TestCluster::start(o).await.expect("cluster starts")
}

/// A client of peer `i` on its own connection (its own flow-control windows).
fn peer(c: &TestCluster, i: usize) -> pb::peer_client::PeerClient<GrpcChannel> {
    let addr = c.peers[i].as_ref().expect("running").addr.to_string();
    pb::peer_client::PeerClient::new(shoal_common::grpc::channel(&addr).expect("channel"))
}

async fn put(c: &TestCluster, name: &str, seed: u64) -> Result<(), shoal_client::ClientError> {
    let dir = tempfile::tempdir().expect("tempdir");
    let p = dir.path().join(name);
    shoal_testkit::random_file(&p, CHUNK, seed).expect("file");
    let opts = shoal_client::PutOptions {
        name: name.into(),
        ..Default::default()
    };
    c.client()
        .put(&p, opts, Arc::new(shoal_client::Quiet))
        .await
        .map(|_| ())
}

/// Open `n` GetChunk streams on peer 0 and never read them.
async fn stalled_readers(
    c: &TestCluster,
    hash: &str,
    n: u32,
) -> Vec<tonic::Streaming<pb::ChunkData>> {
    let mut held = Vec::new();
    for _ in 0..n {
        let s = peer(c, 0)
            .get_chunk(pb::GetChunkRequest {
                hash: hash.into(),
                offset: 0,
                length: 0,
                verify: false,
            })
            .await
            .expect("a read slot is free")
            .into_inner();
        held.push(s);
    }
    held
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stalled_readers_do_not_stop_a_put() {
    // A long deadline: the readers hold their slots for the whole test.
    let c = cluster(Duration::from_secs(60)).await;
    put(&c, "first.bin", 1).await.expect("first put");
    let hash = c.client().stat("first.bin").await.expect("stat").chunks[0]
        .hash
        .clone();
    let held = stalled_readers(&c, &hash, SLOTS).await;
    // Reads are full: one more is refused, and says so.
    let e = peer(&c, 0)
        .get_chunk(pb::GetChunkRequest {
            hash: hash.clone(),
            offset: 0,
            length: 0,
            verify: false,
        })
        .await
        .expect_err("read slots are full");
    assert_eq!(e.code(), Code::ResourceExhausted, "{e:?}");
    // Writes have their own slots.
    put(&c, "second.bin", 2)
        .await
        .expect("a put succeeds while every read slot is held by a stalled reader");
    drop(held);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_idle_get_chunk_stream_gives_its_slot_back_after_the_deadline() {
    let c = cluster(Duration::from_millis(500)).await;
    put(&c, "idle.bin", 3).await.expect("put");
    let hash = c.client().stat("idle.bin").await.expect("stat").chunks[0]
        .hash
        .clone();
    let held = stalled_readers(&c, &hash, SLOTS).await;
    // Within a few deadlines the idle streams are dropped and a new reader is served
    // in full, while the idle ones are still open on the client side.
    shoal_testkit::wait_for(
        "a read slot freed by the idle timeout",
        Duration::from_secs(10),
        || {
            let c = &c;
            let hash = hash.clone();
            async move {
                let Ok(r) = peer(c, 0)
                    .get_chunk(pb::GetChunkRequest {
                        hash,
                        offset: 0,
                        length: 0,
                        verify: false,
                    })
                    .await
                else {
                    return false;
                };
                let mut s = r.into_inner();
                let mut n = 0u64;
                while let Ok(Some(m)) = s.message().await {
                    n += m.data.len() as u64;
                }
                n == CHUNK
            }
        },
    )
    .await
    .expect("served after the idle readers were dropped");
    drop(held);
}

/// A peer decodes messages sized to what it really receives (chunk data of 256 KiB,
/// hash lists from the tracker), not the tracker's 64 MiB for whole inventories.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_peer_refuses_an_oversized_message() {
    let c = TestCluster::start(ClusterOptions::zones(&["a"]).replication(1))
        .await
        .expect("cluster");
    // 600,000 hashes: about 40 MiB.
    let hashes = vec!["ab".repeat(32); 600_000];
    let e = peer(&c, 0)
        .has_chunks(pb::HasChunksRequest { hashes })
        .await
        .map(|_| ())
        .expect_err("an oversized message is refused");
    assert!(
        matches!(e.code(), Code::OutOfRange | Code::ResourceExhausted),
        "{e:?}"
    );
}
