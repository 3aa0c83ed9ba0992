//! Names (issue 15): a name that parses as a content id would shadow that id, so it is
//! refused; input echoed in errors is cut to about 80 characters.

use shoal_proto::v1 as pb;
use shoal_testkit::{ClusterOptions, TestCluster};
use tonic::Code;

fn tracker(c: &TestCluster) -> pb::tracker_client::TrackerClient<shoal_common::grpc::GrpcChannel> {
    pb::tracker_client::TrackerClient::new(
        shoal_common::grpc::channel(&c.tracker_url()).expect("tracker channel"),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_name_that_is_a_content_id_is_refused_and_echoes_are_short() {
    let c = TestCluster::start(ClusterOptions::zones(&["a"]).replication(1))
        .await
        .expect("cluster");
    for name in ["ab".repeat(32), "AB".repeat(32)] {
        let e = tracker(&c)
            .begin_upload(pb::BeginUploadRequest {
                name: name.clone(),
                size: 1,
                ..Default::default()
            })
            .await
            .expect_err("a 64-hex name is refused");
        assert_eq!(e.code(), Code::InvalidArgument, "{e:?}");
        assert!(e.message().contains("content id"), "{}", e.message());
    }
    let long = "n".repeat(10_000);
    let e = tracker(&c)
        .stat_file(pb::StatFileRequest {
            name_or_id: long.clone(),
        })
        .await
        .expect_err("no such file");
    assert_eq!(e.code(), Code::NotFound, "{e:?}");
    assert!(
        e.message().len() < 200,
        "the echoed name is cut: {} bytes",
        e.message().len()
    );
}
