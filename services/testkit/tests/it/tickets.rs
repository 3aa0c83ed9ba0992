//! Placement tickets (issue 15): a peer stores a chunk only with a ticket the tracker
//! signed for that chunk and naming that peer, and forwards only to peers a ticket
//! names, at the address the tracker registered — never at one a client supplied, so
//! the cluster token it presents never reaches a client's listener.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use shoal_common::auth::AuthConfig;
use shoal_common::grpc::GrpcChannel;
use shoal_common::ticket::TicketKeys;
use shoal_proto::v1 as pb;
use shoal_proto::v1::put_chunk_request::Msg;
use shoal_testkit::{ClusterOptions, TestCluster};
use tokio::net::TcpListener;
use tonic::Code;

const CLUSTER: &str = "tickets-cluster-token-0123456789";
const READ: &str = "tickets-read-token-0123456789";
const WRITE: &str = "tickets-write-token-0123456789";

/// Three peers in three zones, two copies per chunk: every pipeline leaves one peer out.
pub(crate) async fn cluster(auth: bool) -> TestCluster {
    let mut o = ClusterOptions::zones(&["a", "b", "c"]).replication(2);
    if auth {
        o.auth = AuthConfig {
            required: true,
            cluster_token: Some(CLUSTER.into()),
            read_token: Some(READ.into()),
            write_token: Some(WRITE.into()),
            ..Default::default()
        };
    }
    TestCluster::start(o).await.expect("cluster starts")
}

fn token(c: &TestCluster) -> Option<&'static str> {
    c.opts.auth.write_token.as_ref().map(|_| WRITE)
}

fn tracker(c: &TestCluster) -> pb::tracker_client::TrackerClient<GrpcChannel> {
    pb::tracker_client::TrackerClient::new(
        shoal_common::grpc::channel_with(&c.tracker_url(), token(c)).expect("tracker channel"),
    )
}

fn peer_at(c: &TestCluster, addr: &str) -> pb::peer_client::PeerClient<GrpcChannel> {
    pb::peer_client::PeerClient::new(
        shoal_common::grpc::channel_with(addr, token(c)).expect("peer channel"),
    )
}

pub(crate) fn bytes_for(tag: &str, len: usize) -> Vec<u8> {
    let mut out = vec![0u8; len];
    blake3::Hasher::new()
        .update(tag.as_bytes())
        .finalize_xof()
        .fill(&mut out);
    out
}

/// Begin an upload of one chunk and place it: the tracker's pipeline and ticket.
pub(crate) async fn place(c: &TestCluster, b: &[u8]) -> pb::ChunkPlacement {
    let mut t = tracker(c);
    let h = blake3::hash(b).to_hex().to_string();
    let begin = t
        .begin_upload(pb::BeginUploadRequest {
            name: format!("t-{}", &h[..12]),
            size: b.len() as u64,
            ..Default::default()
        })
        .await
        .expect("begin upload")
        .into_inner();
    let placed = t
        .place_chunks(pb::PlaceChunksRequest {
            upload_id: begin.upload_id,
            file_id: h.clone(),
            chunks: vec![pb::ChunkDigest {
                index: 0,
                hash: h,
                size: b.len() as u64,
            }],
        })
        .await
        .expect("place chunks")
        .into_inner();
    let p = placed.placements.into_iter().next().expect("one placement");
    assert_eq!(p.targets.len(), 2, "a pipeline of two peers");
    assert!(p.ticket.is_some(), "the tracker issues a ticket");
    p
}

/// One PutChunk: header (with `forward` and `tickets`), then the bytes.
pub(crate) async fn put(
    c: &TestCluster,
    addr: &str,
    b: &[u8],
    forward: Vec<pb::PeerRef>,
    tickets: Vec<pb::PlacementTicket>,
) -> Result<pb::PutChunkResponse, tonic::Status> {
    let header = pb::PutChunkHeader {
        hash: blake3::hash(b).to_hex().to_string(),
        size: b.len() as u64,
        forward,
        tickets,
    };
    let msgs = vec![
        pb::PutChunkRequest {
            msg: Some(Msg::Header(header)),
        },
        pb::PutChunkRequest {
            msg: Some(Msg::Data(b.to_vec().into())),
        },
    ];
    peer_at(c, addr)
        .put_chunk(tokio_stream::iter(msgs))
        .await
        .map(|r| r.into_inner())
}

/// Nothing ever connects to `l`: checked after the calls that could have dialed it
/// have all returned, so a short window is enough.
async fn never_dialed(l: &TcpListener) {
    let r = tokio::time::timeout(Duration::from_millis(300), l.accept()).await;
    assert!(
        r.is_err(),
        "a peer dialed the client's listener: {:?}",
        r.map(|a| a.map(|(_, from)| from))
    );
}

fn stored_anywhere(c: &TestCluster, h: &str) -> Vec<usize> {
    (0..c.peers.len())
        .filter(|&i| c.chunks_on_disk(i).contains(h))
        .collect()
}

/// A client puts its own listener in `forward`: under the id of the real next hop
/// (the peer forwards to the tracker's address for that id) and under an id no
/// ticket names (refused). The listener never sees a connection.
async fn forward_to_client_listener(auth: bool) {
    let c = cluster(auth).await;
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let trap = listener.local_addr().expect("addr").to_string();

    let b = bytes_for("real-next-hop", 10_000);
    let p = place(&c, &b).await;
    let (head, next) = (&p.targets[0], &p.targets[1]);
    let r = put(
        &c,
        &head.addr,
        &b,
        vec![pb::PeerRef {
            id: next.id.clone(),
            addr: trap.clone(),
            zone: next.zone.clone(),
        }],
        p.ticket.iter().cloned().collect(),
    )
    .await
    .expect("put with a ticket succeeds");
    assert_eq!(r.stored_on, vec![head.id.clone(), next.id.clone()]);
    assert!(r.failures.is_empty(), "{:?}", r.failures);

    let b = bytes_for("unnamed-hop", 10_000);
    let p = place(&c, &b).await;
    let e = put(
        &c,
        &p.targets[0].addr,
        &b,
        vec![pb::PeerRef {
            id: "client-listener".into(),
            addr: trap.clone(),
            zone: "a".into(),
        }],
        p.ticket.iter().cloned().collect(),
    )
    .await
    .expect_err("a hop no ticket names is refused");
    assert_eq!(e.code(), Code::PermissionDenied, "{e:?}");
    assert!(
        stored_anywhere(&c, &p.hash).is_empty(),
        "nothing stored from a refused put"
    );
    never_dialed(&listener).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn peers_never_dial_a_client_supplied_address_with_auth() {
    forward_to_client_listener(true).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn peers_never_dial_a_client_supplied_address_without_auth() {
    forward_to_client_listener(false).await;
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("clock after 1970")
        .as_millis() as u64
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forged_expired_foreign_and_unnamed_tickets_are_refused() {
    let c = cluster(true).await;
    let b = bytes_for("guarded", 10_000);
    let p = place(&c, &b).await;
    let ticket = p.ticket.clone().expect("ticket");
    let head = &p.targets[0];
    let outsider = (0..3)
        .map(|i| c.peer_id(i))
        .position(|id| !p.targets.iter().any(|t| t.id == id))
        .expect("a peer outside the pipeline");
    let outsider_addr = c.peers[outsider]
        .as_ref()
        .expect("running")
        .addr
        .to_string();

    let mut forged = ticket.clone();
    let mut mac = forged.mac.to_vec();
    mac[0] ^= 1;
    forged.mac = mac.into();
    let keys = TicketKeys::from_token(CLUSTER);
    let expired = keys.sign(pb::PlacementTicket {
        expires_unix_ms: now_ms() - 1_000,
        ..ticket.clone()
    });
    let other = place(&c, &bytes_for("other chunk", 10_000)).await;
    let foreign = other.ticket.clone().expect("ticket");

    for (what, addr, tickets) in [
        ("no ticket", &head.addr, vec![]),
        ("a forged ticket (MAC flipped)", &head.addr, vec![forged]),
        ("an expired ticket", &head.addr, vec![expired]),
        ("a ticket for another chunk", &head.addr, vec![foreign]),
        (
            "a ticket not naming the peer",
            &outsider_addr,
            vec![ticket.clone()],
        ),
    ] {
        let e = put(&c, addr, &b, vec![], tickets).await.expect_err(what);
        assert_eq!(e.code(), Code::PermissionDenied, "{what}: {e:?}");
        assert!(
            e.message().contains("ticket"),
            "{what}: the message says why: {}",
            e.message()
        );
    }
    assert!(
        stored_anywhere(&c, &p.hash).is_empty(),
        "nothing stored from refused puts"
    );
    // The genuine ticket, on the same peer, works: the refusals were the tickets'.
    let r = put(&c, &head.addr, &b, vec![], vec![ticket])
        .await
        .expect("the tracker's ticket is accepted");
    assert_eq!(r.stored_on, vec![head.id.clone()]);
}
