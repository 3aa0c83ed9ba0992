//! Authentication: roles per method, clear codes, probes open.

use std::sync::Arc;

use shoal_client::{Client, PutOptions, Quiet};
use shoal_common::auth::AuthConfig;
use shoal_proto::v1 as pb;
use shoal_testkit::{file_hash, random_file, ClusterOptions, TestCluster};
use tonic::Code;

const CLUSTER: &str = "cluster-token-0123456789";
const READ: &str = "read-token-0123456789";
const WRITE: &str = "write-token-0123456789";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tokens_and_roles_are_enforced() {
    let mut o = ClusterOptions::zones(&["a", "b"]).replication(2);
    o.auth = AuthConfig {
        required: true,
        cluster_token: Some(CLUSTER.into()),
        read_token: Some(READ.into()),
        write_token: Some(WRITE.into()),
        ..Default::default()
    };
    o.webserver = true;
    // Peers register with the cluster token, or start() would time out.
    let cluster = TestCluster::start(o).await.unwrap();
    let url = cluster.tracker_url();
    let client = |t: Option<&str>| Client::with_token(&url, t.map(str::to_string)).unwrap();
    let work = tempfile::tempdir().unwrap();
    let src = work.path().join("f");
    random_file(&src, 200_000, 1).unwrap();
    let put = |c: Client| {
        let src = src.clone();
        async move {
            c.put(
                &src,
                PutOptions {
                    name: "f".into(),
                    ..Default::default()
                },
                Arc::new(Quiet),
            )
            .await
        }
    };

    assert_eq!(
        client(None).list().await.unwrap_err().code(),
        Some(Code::Unauthenticated)
    );
    assert_eq!(
        client(Some("wrong-token-0123456789"))
            .list()
            .await
            .unwrap_err()
            .code(),
        Some(Code::Unauthenticated)
    );
    assert_eq!(
        put(client(Some(READ))).await.unwrap_err().code(),
        Some(Code::PermissionDenied)
    );
    put(client(Some(WRITE))).await.unwrap();
    assert_eq!(client(Some(READ)).list().await.unwrap().len(), 1);
    let out = work.path().join("out");
    client(Some(READ))
        .get("f", &out, Arc::new(Quiet))
        .await
        .unwrap();
    assert_eq!(file_hash(&out).unwrap(), file_hash(&src).unwrap());
    assert_eq!(
        client(Some(READ)).delete("f").await.unwrap_err().code(),
        Some(Code::PermissionDenied)
    );
    assert_eq!(
        client(Some(WRITE))
            .drain("nobody")
            .await
            .unwrap_err()
            .code(),
        Some(Code::NotFound)
    );

    // Peers: reads with a read token, deletions only from the cluster.
    let peer = cluster.peers[0].as_ref().unwrap().addr.to_string();
    let hash = client(Some(READ)).stat("f").await.unwrap().chunks[0]
        .hash
        .clone();
    let peer_client = |t: &str| {
        pb::peer_client::PeerClient::new(shoal_common::grpc::channel_with(&peer, Some(t)).unwrap())
    };
    let has = peer_client(READ)
        .has_chunks(pb::HasChunksRequest {
            hashes: vec![hash.clone()],
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(has.present, vec![true]);
    let del = peer_client(WRITE)
        .delete_chunks(pb::DeleteChunksRequest {
            hashes: vec![hash.clone()],
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(del.code(), Code::PermissionDenied);
    let reg = pb::tracker_client::TrackerClient::new(
        shoal_common::grpc::channel_with(&url, Some(WRITE)).unwrap(),
    )
    .heartbeat(pb::HeartbeatRequest {
        peer_id: "x".into(),
        ..Default::default()
    })
    .await
    .unwrap_err();
    assert_eq!(
        reg.code(),
        Code::PermissionDenied,
        "a client cannot pose as a peer"
    );

    // Health stays open without a token.
    assert!(shoal_common::grpc::check_health(&peer, "").await.unwrap());
    assert!(shoal_common::grpc::check_health(&url, "shoal.v1.Tracker")
        .await
        .unwrap());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_webserver_checks_tokens_over_grpc_and_http() {
    let mut o = ClusterOptions::zones(&["a"]).replication(1);
    o.auth = AuthConfig {
        cluster_token: Some(CLUSTER.into()),
        read_token: Some(READ.into()),
        write_token: Some(WRITE.into()),
        ..Default::default()
    };
    o.webserver = true;
    let cluster = TestCluster::start(o).await.unwrap();
    let web = cluster.webserver.as_ref().unwrap();
    let endpoint = format!("http://{}", web.node.addr);
    assert_eq!(
        Client::discover(&endpoint)
            .await
            .err()
            .and_then(|e| e.code()),
        Some(Code::Unauthenticated)
    );
    let (c, _) = Client::discover_with_token(&endpoint, Some(READ.into()))
        .await
        .unwrap();
    assert!(c.list().await.unwrap().is_empty());

    let http = reqwest::Client::new();
    let base = format!("http://{}", web.http);
    let status = |r: reqwest::Response| r.status().as_u16();
    assert_eq!(
        status(http.get(format!("{base}/")).send().await.unwrap()),
        401
    );
    assert_eq!(
        status(http.get(format!("{base}/healthz")).send().await.unwrap()),
        200
    );
    assert_eq!(
        status(
            http.get(format!("{base}/api/v1/files"))
                .bearer_auth(READ)
                .send()
                .await
                .unwrap()
        ),
        200
    );
    assert_eq!(
        status(
            http.get(format!("{base}/?token={READ}"))
                .send()
                .await
                .unwrap()
        ),
        200
    );
    assert_eq!(
        status(
            http.get(format!("{base}/"))
                .bearer_auth("wrong-token-0123456789")
                .send()
                .await
                .unwrap()
        ),
        401
    );
    let form = || {
        reqwest::multipart::Form::new().part(
            "file",
            reqwest::multipart::Part::bytes(b"hello".to_vec()).file_name("h.txt"),
        )
    };
    assert_eq!(
        status(
            http.post(format!("{base}/upload"))
                .bearer_auth(READ)
                .multipart(form())
                .send()
                .await
                .unwrap()
        ),
        403
    );
    let r = http
        .post(format!("{base}/upload"))
        .bearer_auth(WRITE)
        .multipart(form())
        .send()
        .await
        .unwrap();
    assert!(
        r.status().is_success() || r.status().is_redirection(),
        "{}",
        r.status()
    );
}
