//! Every server answers the standard health service and lists its services through
//! reflection (v1 and v1alpha, which grpcurl 1.8 speaks).

use shoal_testkit::{ClusterOptions, TestCluster};
use tokio_stream::StreamExt;

async fn list_v1(addr: &str) -> Vec<String> {
    use tonic_reflection::pb::v1::{
        server_reflection_client::ServerReflectionClient,
        server_reflection_request::MessageRequest, server_reflection_response::MessageResponse,
        ServerReflectionRequest,
    };
    let mut c = ServerReflectionClient::new(shoal_common::grpc::channel(addr).unwrap());
    let req = ServerReflectionRequest {
        host: String::new(),
        message_request: Some(MessageRequest::ListServices(String::new())),
    };
    let mut resp = c
        .server_reflection_info(tokio_stream::iter(vec![req]))
        .await
        .unwrap()
        .into_inner();
    match resp.next().await.unwrap().unwrap().message_response {
        Some(MessageResponse::ListServicesResponse(l)) => {
            l.service.into_iter().map(|s| s.name).collect()
        }
        other => panic!("unexpected reflection answer {other:?}"),
    }
}

async fn list_v1alpha(addr: &str) -> Vec<String> {
    use tonic_reflection::pb::v1alpha::{
        server_reflection_client::ServerReflectionClient,
        server_reflection_request::MessageRequest, server_reflection_response::MessageResponse,
        ServerReflectionRequest,
    };
    let mut c = ServerReflectionClient::new(shoal_common::grpc::channel(addr).unwrap());
    let req = ServerReflectionRequest {
        host: String::new(),
        message_request: Some(MessageRequest::ListServices(String::new())),
    };
    let mut resp = c
        .server_reflection_info(tokio_stream::iter(vec![req]))
        .await
        .unwrap()
        .into_inner();
    match resp.next().await.unwrap().unwrap().message_response {
        Some(MessageResponse::ListServicesResponse(l)) => {
            l.service.into_iter().map(|s| s.name).collect()
        }
        other => panic!("unexpected reflection answer {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn health_and_reflection_on_every_server() {
    let mut opts = ClusterOptions::zones(&["a"]);
    opts.webserver = true;
    let cluster = TestCluster::start(opts).await.unwrap();
    let web = cluster.webserver.as_ref().unwrap().node.addr.to_string();
    let servers = [
        (cluster.tracker_addr.to_string(), "shoal.v1.Tracker"),
        (
            cluster.peers[0].as_ref().unwrap().addr.to_string(),
            "shoal.v1.Peer",
        ),
        (web, "shoal.v1.Webserver"),
    ];
    for (addr, service) in servers {
        for name in ["", service] {
            assert!(
                shoal_common::grpc::check_health(&addr, name).await.unwrap(),
                "{addr} {name:?} not SERVING"
            );
        }
        for listed in [list_v1(&addr).await, list_v1alpha(&addr).await] {
            for want in [service, "grpc.health.v1.Health"] {
                assert!(
                    listed.iter().any(|s| s == want),
                    "{addr}: {want} missing from {listed:?}"
                );
            }
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn servers_start_not_serving() {
    // Before `run` marks itself ready, every name reports NOT_SERVING (checked on the
    // shared builder every server uses).
    let (router, health) = shoal_common::grpc::server_with_auth(
        &["shoal.v1.Tracker"],
        shoal_common::auth::AuthLayer::open(),
    )
    .await;
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap().to_string();
    tokio::spawn(router.serve_with_incoming(shoal_common::net::incoming(l)));
    for name in ["", "shoal.v1.Tracker"] {
        assert!(!shoal_common::grpc::check_health(&addr, name).await.unwrap());
    }
    health.set(true).await;
    for name in ["", "shoal.v1.Tracker"] {
        assert!(shoal_common::grpc::check_health(&addr, name).await.unwrap());
    }
}
