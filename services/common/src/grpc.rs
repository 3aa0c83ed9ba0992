//! gRPC plumbing shared by every server and client: health (NOT_SERVING until the
//! service says it is ready), reflection v1 and v1alpha with the health descriptors,
//! transport tuning for bulk chunk streams, and channels to other services.

use std::time::Duration;

use tonic::transport::{Channel, Endpoint, Server};
use tonic_health::server::HealthReporter;
use tonic_health::ServingStatus;

/// HTTP/2 flow-control windows sized for streaming chunks: the default 64 KiB
/// window stalls a 256 KiB message on every round trip.
pub const STREAM_WINDOW: u32 = 8 * 1024 * 1024;
pub const CONNECTION_WINDOW: u32 = 32 * 1024 * 1024;
/// Largest message any shoal server decodes (inventories of big peers).
pub const MAX_MESSAGE_BYTES: usize = 64 * 1024 * 1024;

/// The health of one server: every listed service and "" flip together.
#[derive(Clone)]
pub struct Health {
    reporter: HealthReporter,
    services: Vec<String>,
}

impl Health {
    pub async fn set(&self, serving: bool) {
        let status = if serving {
            ServingStatus::Serving
        } else {
            ServingStatus::NotServing
        };
        for s in self.services.iter().map(String::as_str).chain([""]) {
            self.reporter.set_service_status(s, status).await;
        }
    }
}

/// A server builder tuned for chunk streams, with health (everything NOT_SERVING)
/// and both versions of reflection already added. The caller adds its service and serves.
pub async fn server(services: &[&str]) -> (tonic::transport::server::Router, Health) {
    let (reporter, health_service) = tonic_health::server::health_reporter();
    let health = Health {
        reporter,
        services: services.iter().map(|s| s.to_string()).collect(),
    };
    health.set(false).await;

    let reflection = || {
        tonic_reflection::server::Builder::configure()
            .register_encoded_file_descriptor_set(shoal_proto::FILE_DESCRIPTOR_SET)
            .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
    };
    let v1 = reflection()
        .build_v1()
        .expect("embedded descriptor sets are valid");
    let v1alpha = reflection()
        .build_v1alpha()
        .expect("embedded descriptor sets are valid");

    let router = tuned_server()
        .add_service(health_service)
        .add_service(v1)
        .add_service(v1alpha);
    (router, health)
}

fn tuned_server() -> Server {
    Server::builder()
        .initial_stream_window_size(STREAM_WINDOW)
        .initial_connection_window_size(CONNECTION_WINDOW)
        .tcp_nodelay(true)
        .http2_keepalive_interval(Some(Duration::from_secs(20)))
        .http2_keepalive_timeout(Some(Duration::from_secs(20)))
}

/// `host:port` or a full URL → a URL tonic can dial.
pub fn url_for(addr: &str) -> String {
    if addr.contains("://") {
        addr.to_string()
    } else {
        format!("http://{addr}")
    }
}

/// A lazily connected channel to `addr`, tuned like the servers.
pub fn channel(addr: &str) -> Result<Channel, tonic::Status> {
    let endpoint = Endpoint::from_shared(url_for(addr))
        .map_err(|e| tonic::Status::invalid_argument(format!("bad address {addr:?}: {e}")))?
        .initial_stream_window_size(STREAM_WINDOW)
        .initial_connection_window_size(CONNECTION_WINDOW)
        .tcp_nodelay(true)
        .connect_timeout(Duration::from_secs(5))
        .http2_keep_alive_interval(Duration::from_secs(20))
        .keep_alive_timeout(Duration::from_secs(20));
    Ok(endpoint.connect_lazy())
}

/// Ask a server's standard health service whether it is SERVING.
pub async fn check_health(addr: &str, service: &str) -> Result<bool, tonic::Status> {
    use tonic_health::pb::{health_client::HealthClient, HealthCheckRequest};
    let mut client = HealthClient::new(channel(addr)?);
    let resp = client
        .check(HealthCheckRequest {
            service: service.to_string(),
        })
        .await?
        .into_inner();
    Ok(resp.status == tonic_health::pb::health_check_response::ServingStatus::Serving as i32)
}
