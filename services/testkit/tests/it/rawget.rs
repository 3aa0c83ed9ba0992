//! The raw-get path (`shoal_common::rawget`): gets read chunks with it where peers
//! offer it and over gRPC where they do not; a raw request is checked as `GetChunk`
//! is (token role, hash, range) and a hostile one costs the peer nothing.

use std::net::SocketAddr;
use std::sync::Arc;

use shoal_client::{Client, PutOptions, Quiet};
use shoal_common::auth::AuthConfig;
use shoal_common::rawget::{headers, read_frame, write_frame, MAGIC, MAX_FRAME};
use shoal_proto::v1 as pb;
use shoal_testkit::{file_hash, random_file, ClusterOptions, TestCluster};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tonic::Code;

const CLUSTER: &str = "cluster-token-0123456789";
const READ: &str = "read-token-0123456789";
const WRITE: &str = "write-token-0123456789";

/// Put a 1 MiB file as "f" with `c`, get it back, and say how its chunks were read.
async fn round_trip(c: &Client) -> (u64, u64) {
    let work = tempfile::tempdir().unwrap();
    let src = work.path().join("src");
    random_file(&src, 1 << 20, 7).unwrap();
    let opts = PutOptions {
        name: "f".into(),
        ..Default::default()
    };
    c.put(&src, opts, Arc::new(Quiet)).await.unwrap();
    let out = work.path().join("out");
    c.get("f", &out, Arc::new(Quiet)).await.unwrap();
    assert_eq!(file_hash(&out).unwrap(), file_hash(&src).unwrap());
    c.reads_by_path()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gets_read_chunks_on_the_raw_path_where_peers_offer_it_else_grpc() {
    let cluster = TestCluster::start(ClusterOptions::zones(&["a", "b"]).replication(2))
        .await
        .unwrap();
    let mut c = cluster.client();
    c.options.raw_gets = true;
    let (raw, grpc) = round_trip(&c).await;
    assert!(raw >= 16, "16 chunks of 64 KiB, every one raw: {raw}");
    assert_eq!(grpc, 0);
    // By default, gRPC.
    let (raw, grpc) = round_trip(&cluster.client()).await;
    assert_eq!((raw, grpc >= 16), (0, true));

    // Peers with raw gets off answer a raw request with nothing in kind: the client
    // reads them over gRPC, and the get is as good.
    let mut o = ClusterOptions::zones(&["a", "b"]).replication(2);
    o.peer_tweak = |p| p.raw_gets = false;
    let off = TestCluster::start(o).await.unwrap();
    let mut c = off.client();
    c.options.raw_gets = true;
    let (raw, grpc) = round_trip(&c).await;
    assert_eq!((raw, grpc >= 16), (0, true));
}

/// Open a raw-get connection to `addr` and send `req`.
async fn ask(addr: SocketAddr, req: &pb::RawGetRequest) -> (TcpStream, pb::RawGetAnswer) {
    let mut s = TcpStream::connect(addr).await.unwrap();
    s.write_all(MAGIC).await.unwrap();
    write_frame(&mut s, req).await.unwrap();
    let a = read_frame(&mut s).await.unwrap();
    (s, a)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_raw_get_is_checked_as_get_chunk_is() {
    let mut o = ClusterOptions::zones(&["a"]).replication(1);
    o.auth = AuthConfig {
        required: true,
        cluster_token: Some(CLUSTER.into()),
        read_token: Some(READ.into()),
        write_token: Some(WRITE.into()),
        ..Default::default()
    };
    let cluster = TestCluster::start(o).await.unwrap();
    let mut c = Client::with_token(&cluster.tracker_url(), Some(READ.into())).unwrap();
    c.options.raw_gets = true;
    let writer = Client::with_token(&cluster.tracker_url(), Some(WRITE.into())).unwrap();
    let work = tempfile::tempdir().unwrap();
    let src = work.path().join("src");
    random_file(&src, 100_000, 3).unwrap();
    let opts = PutOptions {
        name: "f".into(),
        ..Default::default()
    };
    writer.put(&src, opts, Arc::new(Quiet)).await.unwrap();
    let out = work.path().join("out");
    c.get("f", &out, Arc::new(Quiet)).await.unwrap();
    assert_eq!(file_hash(&out).unwrap(), file_hash(&src).unwrap());
    assert_eq!(
        c.reads_by_path().1,
        0,
        "a read token reads raw: {:?}",
        c.reads_by_path()
    );

    let chunk = c.stat("f").await.unwrap().chunks[0].clone();
    let peer = cluster.peers[0].as_ref().unwrap().addr;
    let req = |token: Option<&str>, offset, length| pb::RawGetRequest {
        hash: chunk.hash.clone(),
        offset,
        length,
        headers: headers(token),
    };
    for (token, code) in [
        (None, Code::Unauthenticated),
        (Some("wrong-token-0123456789"), Code::Unauthenticated),
    ] {
        let (_, a) = ask(peer, &req(token, 0, 0)).await;
        assert_eq!(Code::from(a.code), code, "{token:?}: {}", a.message);
        assert_eq!(a.length, 0);
    }
    // A range past the end, then a bad hash, on one connection: each refused, and the
    // connection still serves a good request after them.
    let (mut s, a) = ask(peer, &req(Some(READ), chunk.size, 1)).await;
    assert_eq!(Code::from(a.code), Code::OutOfRange, "{}", a.message);
    let bad = pb::RawGetRequest {
        hash: "zz".into(),
        ..req(Some(READ), 0, 0)
    };
    write_frame(&mut s, &bad).await.unwrap();
    let a: pb::RawGetAnswer = read_frame(&mut s).await.unwrap();
    assert_eq!(Code::from(a.code), Code::InvalidArgument, "{}", a.message);
    write_frame(&mut s, &req(Some(READ), 10, 20)).await.unwrap();
    let a: pb::RawGetAnswer = read_frame(&mut s).await.unwrap();
    assert_eq!((a.code, a.length), (0, 20), "{}", a.message);
    let mut got = vec![0u8; 20];
    s.read_exact(&mut got).await.unwrap();
    let whole = std::fs::read(&src).unwrap();
    assert_eq!(got, whole[10..30], "the bytes of the range asked");

    // A length prefix past the cap: refused before anything is read or allocated,
    // and the connection closed.
    let mut s = TcpStream::connect(peer).await.unwrap();
    s.write_all(MAGIC).await.unwrap();
    s.write_all(&((MAX_FRAME as u32) * 1024).to_le_bytes())
        .await
        .unwrap();
    let a: pb::RawGetAnswer = read_frame(&mut s).await.unwrap();
    assert_eq!(Code::from(a.code), Code::InvalidArgument, "{}", a.message);
    let mut rest = Vec::new();
    assert_eq!(s.read_to_end(&mut rest).await.unwrap(), 0, "closed");

    // gRPC on the same port is untouched.
    assert!(c.stat("f").await.is_ok());
}
