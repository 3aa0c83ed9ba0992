//! gRPC plumbing shared by every server and client: health (NOT_SERVING until the
//! service says it is ready), reflection v1 and v1alpha with the health descriptors,
//! transport tuning for bulk chunk streams, and channels to other services.

use std::time::Duration;

use tonic::service::interceptor::InterceptedService;
use tonic::transport::{Channel, Endpoint, Server};
use tonic_health::server::HealthReporter;
use tonic_health::ServingStatus;

/// HTTP/2 flow-control windows sized for streaming chunks: the default 64 KiB
/// window stalls a 256 KiB message on every round trip.
pub const STREAM_WINDOW: u32 = 8 * 1024 * 1024;
pub const CONNECTION_WINDOW: u32 = 32 * 1024 * 1024;
/// Largest HTTP/2 DATA frame each side accepts: a chunk message then travels as one
/// frame instead of sixteen of the default 16 KiB (less framing work on both ends).
pub const MAX_FRAME_BYTES: u32 = 1024 * 1024;
/// Concurrent calls one HTTP/2 connection may have in flight.
pub const MAX_STREAMS_PER_CONNECTION: u32 = 256;
/// Longest a call may take before the server gives up on it.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(300);
/// HTTP/2 keep-alive on every server and channel: a peer that stops answering pings
/// (a dead host, a frozen process) fails its connection within interval + timeout.
/// Chunk transfers have their own, per-transfer progress deadline on top of this.
pub const KEEPALIVE_INTERVAL: Duration = Duration::from_secs(10);
pub const KEEPALIVE_TIMEOUT: Duration = Duration::from_secs(10);
/// Largest message any shoal server decodes (the tracker: inventories of big peers).
pub const MAX_MESSAGE_BYTES: usize = 64 * 1024 * 1024;
/// Largest message a peer decodes: chunk data comes in 256 KiB messages, and the
/// longest lists it receives (DeleteChunks, HasChunks) are hashes of 66 bytes each:
/// 32 MiB is about 500,000 of them.
pub const PEER_MAX_MESSAGE_BYTES: usize = 32 * 1024 * 1024;

type Base =
    tower::layer::util::Stack<crate::rpcmetrics::RpcMetricsLayer, tower::layer::util::Identity>;
type Layers = tower::layer::util::Stack<crate::auth::AuthLayer, Base>;

/// The router every shoal server starts from (with RPC metrics on every call).
pub type Router = tonic::transport::server::Router<Layers>;

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
pub async fn server(services: &[&str]) -> (Router, Health) {
    server_with_auth(services, crate::auth::AuthLayer::open()).await
}

/// [`server`] with authentication: every call but health and reflection is checked.
pub async fn server_with_auth(services: &[&str], auth: crate::auth::AuthLayer) -> (Router, Health) {
    server_secured(services, auth, None)
        .await
        .expect("without TLS nothing can fail")
}

/// A service's server from its security settings: tokens resolved (and checked per
/// `policy`), TLS on the listener when configured, and this process's outgoing calls
/// set to TLS too. Returns the tokens so the service can present its cluster token.
pub async fn secure_server(
    services: &[&str],
    auth: &crate::auth::AuthConfig,
    tls: &crate::tls::TlsConfig,
    policy: crate::auth::Policy,
) -> anyhow::Result<(Router, Health, crate::auth::Tokens)> {
    let tokens = auth.resolve()?;
    if tokens.enabled() && !tls.enabled() {
        tracing::warn!(
            "authentication is on without TLS: tokens and tickets cross the network in plaintext \
             (set SHOAL_TLS__CERT_FILE, SHOAL_TLS__KEY_FILE and SHOAL_TLS__CA_FILE)"
        );
    }
    if let Some(c) = tls.client()? {
        crate::tls::set_client(c);
    }
    let layer = crate::auth::AuthLayer::new(tokens.clone(), policy);
    let (router, health) = server_secured(services, layer, tls.server()?).await?;
    Ok((router, health, tokens))
}

/// [`server_with_auth`] with optional TLS (mutual when the config has a CA).
pub async fn server_secured(
    services: &[&str],
    auth: crate::auth::AuthLayer,
    tls: Option<tonic::transport::ServerTlsConfig>,
) -> Result<(Router, Health), tonic::transport::Error> {
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

    let mut server = tuned_server();
    if let Some(tls) = tls {
        server = server.tls_config(tls)?;
    }
    let router = server
        .layer(auth)
        .add_service(health_service)
        .add_service(v1)
        .add_service(v1alpha);
    Ok((router, health))
}

fn tuned_server() -> Server<Base> {
    Server::builder()
        .trace_fn(crate::tracecontext::server_span)
        .initial_stream_window_size(STREAM_WINDOW)
        .initial_connection_window_size(CONNECTION_WINDOW)
        .max_frame_size(MAX_FRAME_BYTES)
        // No `.tcp_nodelay(true)` here: servers accept through `net::incoming`, which
        // tunes every accepted socket (tonic's setting only reaches its own listener).
        .http2_keepalive_interval(Some(KEEPALIVE_INTERVAL))
        .http2_keepalive_timeout(Some(KEEPALIVE_TIMEOUT))
        // Bounds on what one connection can ask at once, and on how long a call may
        // take to answer (a whole chunk upload is one call: generous).
        .max_concurrent_streams(Some(MAX_STREAMS_PER_CONNECTION))
        .concurrency_limit_per_connection(MAX_STREAMS_PER_CONNECTION as usize)
        .timeout(REQUEST_TIMEOUT)
        .layer(crate::rpcmetrics::RpcMetricsLayer)
}

/// `host:port` or a full URL → a URL tonic can dial (https when this process uses TLS).
pub fn url_for(addr: &str) -> String {
    if addr.contains("://") {
        addr.to_string()
    } else if crate::tls::client().is_some() {
        format!("https://{addr}")
    } else {
        format!("http://{addr}")
    }
}

/// A channel that carries the caller's trace context (W3C `traceparent`) on every call.
pub type GrpcChannel = InterceptedService<Channel, crate::tracecontext::Inject>;

/// A lazily connected channel to `addr`, tuned like the servers, injecting trace context.
pub fn channel(addr: &str) -> Result<GrpcChannel, tonic::Status> {
    channel_with(addr, None)
}

/// Like [`channel`], presenting `token` (a bearer token) on every call.
pub fn channel_with(addr: &str, token: Option<&str>) -> Result<GrpcChannel, tonic::Status> {
    let inject = crate::tracecontext::Inject::with_token(token)?;
    Ok(InterceptedService::new(raw_channel(addr)?, inject))
}

fn raw_channel(addr: &str) -> Result<Channel, tonic::Status> {
    let endpoint = Endpoint::from_shared(url_for(addr))
        .map_err(|e| tonic::Status::invalid_argument(format!("bad address {addr:?}: {e}")))?
        .initial_stream_window_size(STREAM_WINDOW)
        .initial_connection_window_size(CONNECTION_WINDOW)
        .max_frame_size(MAX_FRAME_BYTES)
        .tcp_nodelay(true)
        .connect_timeout(Duration::from_secs(5))
        .http2_keep_alive_interval(KEEPALIVE_INTERVAL)
        .keep_alive_timeout(KEEPALIVE_TIMEOUT);
    let endpoint = match crate::tls::client() {
        Some(tls) if endpoint.uri().scheme_str() == Some("https") => endpoint
            .tls_config(tls.clone())
            .map_err(|e| tonic::Status::invalid_argument(format!("TLS for {addr}: {e}")))?,
        _ => endpoint,
    };
    Ok(endpoint.connect_lazy())
}

/// One channel per address, so repeated calls (pipeline forwards, repairs,
/// deletions) reuse one HTTP/2 connection instead of dialing each time. Owned by a
/// service instance: a channel's connection task lives on the runtime that made it.
#[derive(Default)]
pub struct Channels {
    map: std::sync::Mutex<std::collections::HashMap<String, GrpcChannel>>,
    token: Option<String>,
}

impl Channels {
    /// Channels that present `token` on every call.
    pub fn with_token(token: Option<String>) -> Self {
        Self {
            map: Default::default(),
            token,
        }
    }

    pub fn get(&self, addr: &str) -> Result<GrpcChannel, tonic::Status> {
        let mut map = self.map.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(c) = map.get(addr) {
            return Ok(c.clone());
        }
        let c = channel_with(addr, self.token.as_deref())?;
        if map.len() > 4096 {
            map.clear();
        }
        map.insert(addr.to_string(), c.clone());
        Ok(c)
    }
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
