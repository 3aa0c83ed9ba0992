//! Streaming uploads (issue 16): content placed window by window as it arrives and
//! named at the commit, so a gateway stores an HTTP body it cannot read twice without
//! spooling it. The tracker holds a stream to its rules (windows in order, full chunks
//! but a last short one, within the size it was begun with, the id named at commit),
//! and a stream spreads over equal peers as a whole-file put does.

use std::collections::HashMap;

use shoal_client::{PutOptions, StreamMemory};
use shoal_proto::v1 as pb;
use shoal_testkit::{ClusterOptions, TestCluster};
use tonic::Code;

const CHUNK: u64 = 64 << 10;

fn options(zones: &[&str], replicas: u32) -> ClusterOptions {
    let mut o = ClusterOptions::zones(zones).replication(replicas);
    o.tracker.chunk.min_bytes = CHUNK;
    o.tracker.chunk.max_bytes = CHUNK;
    o
}

fn bytes(len: usize, seed: u8) -> Vec<u8> {
    (0..len)
        .map(|i| (i as u8).wrapping_mul(29) ^ seed ^ (i >> 16) as u8)
        .collect()
}

fn digest(index: u32, data: &[u8]) -> pb::ChunkDigest {
    pb::ChunkDigest {
        index,
        hash: blake3::hash(data).to_hex().to_string(),
        size: data.len() as u64,
    }
}

/// A stream read once from a reader, with a memory of three chunks, is stored byte for
/// byte; its chunks spread over the equal peers of a zone (earlier windows are charged
/// to the next), and the same stream again sends nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stream_is_stored_once_read_and_spreads_over_equal_peers() {
    let c = TestCluster::start(options(&["a", "a", "a", "a"], 1))
        .await
        .expect("cluster starts");
    let client = c.client();
    let content = bytes(40 * CHUNK as usize + 123, 7);
    let memory = StreamMemory::new(3 * CHUNK);
    let opts = PutOptions {
        name: "streamed.bin".into(),
        ..Default::default()
    };
    let most = content.len() as u64 + 1000;
    let s = client
        .put_stream(&content[..], most, opts.clone(), &memory)
        .await
        .expect("streamed");
    assert_eq!((s.size, s.chunks), (content.len() as u64, 41));
    assert_eq!(s.id, blake3::hash(&content).to_hex().to_string());
    let put = s.commit(&client).await.expect("committed");
    assert!(!put.deduplicated);
    assert_eq!(
        memory.available(),
        3 * CHUNK,
        "every chunk buffer given back"
    );

    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("out");
    client
        .get(
            "streamed.bin",
            &out,
            std::sync::Arc::new(shoal_client::Quiet),
        )
        .await
        .expect("get");
    assert_eq!(std::fs::read(&out).unwrap(), content, "bytes differ");

    let stat = client.stat("streamed.bin").await.expect("stat");
    let mut per_peer: HashMap<String, usize> = HashMap::new();
    for ch in &stat.chunks {
        for r in &ch.replicas {
            *per_peer.entry(r.id.clone()).or_default() += 1;
        }
    }
    assert_eq!(
        per_peer.len(),
        4,
        "41 chunks on 4 equal peers: {per_peer:?}"
    );
    assert!(
        per_peer.values().all(|&n| n >= 8),
        "spread evenly, not window after window on one peer: {per_peer:?}"
    );

    let again = client
        .put_stream(
            &content[..],
            most,
            PutOptions {
                name: "again.bin".into(),
                ..Default::default()
            },
            &memory,
        )
        .await
        .expect("streamed again");
    assert!(again.nothing_sent, "every chunk was stored already");
    let again = again.commit(&client).await.expect("committed");
    assert!(again.deduplicated);
}

/// A stream longer than it was begun with fails and names nothing; an empty stream is
/// an empty file.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stream_past_its_bound_fails_and_an_empty_one_is_an_empty_file() {
    let c = TestCluster::start(options(&["a", "b"], 2))
        .await
        .expect("cluster starts");
    let client = c.client();
    let memory = StreamMemory::new(4 * CHUNK);
    let content = bytes(3 * CHUNK as usize, 1);
    let opts = |name: &str| PutOptions {
        name: name.into(),
        ..Default::default()
    };
    let e = client
        .put_stream(&content[..], 2 * CHUNK + 5, opts("long.bin"), &memory)
        .await
        .expect_err("longer than begun with");
    assert!(e.to_string().contains("larger than"), "{e}");
    assert!(client.stat("long.bin").await.is_err());
    assert_eq!(memory.available(), 4 * CHUNK);

    let empty = client
        .put_stream(&b""[..], 1 << 20, opts("empty.bin"), &memory)
        .await
        .expect("empty stream")
        .commit(&client)
        .await
        .expect("committed");
    assert_eq!((empty.size, empty.chunks), (0, 0));
    assert_eq!(empty.id, blake3::hash(b"").to_hex().to_string());
}

/// The tracker's rules for a stream, each a clear INVALID_ARGUMENT.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_tracker_holds_a_stream_to_its_rules() {
    let c = TestCluster::start(options(&["a", "b"], 2))
        .await
        .expect("cluster starts");
    let mut t = pb::tracker_client::TrackerClient::new(
        shoal_common::grpc::channel(&c.tracker_url()).expect("tracker channel"),
    );
    let begin = |name: &str, size: u64| pb::BeginUploadRequest {
        name: name.into(),
        size,
        streaming: true,
        ..Default::default()
    };
    let up = t
        .begin_upload(begin("rules.bin", 3 * CHUNK))
        .await
        .expect("begin")
        .into_inner();
    assert_eq!(up.chunk_size, CHUNK);
    let full = bytes(CHUNK as usize, 2);
    let short = bytes(100, 3);
    let window = |chunks: Vec<pb::ChunkDigest>| pb::PlaceChunksRequest {
        upload_id: up.upload_id.clone(),
        file_id: String::new(),
        chunks,
    };
    let refused = |r: Result<tonic::Response<pb::PlaceChunksResponse>, tonic::Status>,
                   says: &str| {
        let e = r.expect_err("refused");
        assert_eq!(e.code(), Code::InvalidArgument, "{e:?}");
        assert!(e.message().contains(says), "{}", e.message());
    };
    refused(
        t.place_chunks(window(vec![digest(1, &full)])).await,
        "in order",
    );
    refused(
        t.place_chunks(pb::PlaceChunksRequest {
            file_id: blake3::hash(b"x").to_hex().to_string(),
            ..window(vec![digest(0, &full)])
        })
        .await,
        "at CommitUpload",
    );
    refused(
        t.place_chunks(window(vec![digest(0, &short), digest(1, &full)]))
            .await,
        "not the last",
    );
    let placed = t
        .place_chunks(window(vec![digest(0, &full), digest(1, &full)]))
        .await
        .expect("a window in order")
        .into_inner();
    assert_eq!(
        placed
            .placements
            .iter()
            .map(|p| p.index)
            .collect::<Vec<_>>(),
        vec![0, 1]
    );
    refused(
        t.place_chunks(window(vec![digest(2, &full), digest(3, &short)]))
            .await,
        "begun with",
    );
    t.place_chunks(window(vec![digest(2, &short)]))
        .await
        .expect("the last, short chunk");
    refused(
        t.place_chunks(window(vec![digest(3, &short)])).await,
        "short chunk",
    );
    let e = t
        .commit_upload(pb::CommitUploadRequest {
            upload_id: up.upload_id.clone(),
            ..Default::default()
        })
        .await
        .expect_err("no file id");
    assert_eq!(e.code(), Code::InvalidArgument, "{e:?}");
    assert!(e.message().contains("file_id"), "{}", e.message());
}
