//! The shoal webserver: the entry point clients ask where the tracker is (gRPC
//! `Discover`), read-only catalogue calls proxied to the tracker, and the HTTP gateway
//! (web UI, streamed downloads and uploads, JSON API, health and metrics).
//!
//! It holds no state of its own beyond a cached `ClusterInfo`: every answer comes from
//! the tracker, every byte from the peers, through the same client library as the CLI.

pub mod config;
pub mod grpc;
pub mod http;
mod idle;
pub mod metrics;
pub mod probe;
mod serve;

use std::sync::Arc;

use shoal_client::Client;
use shoal_proto::v1::webserver_server::WebserverServer;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

pub use config::WebserverConfig;

/// What every handler shares.
pub struct AppState {
    pub cfg: WebserverConfig,
    pub client: Arc<Client>,
    pub tracker: probe::TrackerStatus,
    pub metrics: metrics::Metrics,
    /// Tokens HTTP users must present (bearer header or the `shoal_token` cookie).
    pub tokens: Arc<shoal_common::auth::Tokens>,
    /// Chunk buffers of the HTTP uploads in flight (`SHOAL_UPLOAD_BUFFER_BYTES`).
    pub upload_memory: shoal_client::StreamMemory,
}

/// Serve gRPC on `grpc` and HTTP on `http` until `shutdown` is cancelled.
pub async fn run(
    cfg: WebserverConfig,
    grpc: TcpListener,
    http: TcpListener,
    shutdown: CancellationToken,
) -> anyhow::Result<()> {
    let (router, health, tokens) =
        shoal_common::grpc::secure_server(&["shoal.v1.Webserver"], &cfg.auth, &cfg.tls, |path| {
            path.starts_with("/shoal.v1.Webserver/")
                .then_some(shoal_common::auth::Role::Read)
        })
        .await?;
    // The webserver acts for its users towards the tracker and peers: the cluster token.
    let mut client = Client::with_token(&cfg.tracker_url, tokens.cluster.clone())?;
    // HTTP downloads and uploads go through the same client code as the CLI, with the
    // same failover, under the webserver's transfer settings.
    client.options.progress_timeout = cfg.transfer.progress_timeout;
    let client = Arc::new(client);
    let http_tokens = Arc::new(tokens);
    let drain = cfg.shutdown_timeout;
    let state = Arc::new(AppState {
        upload_memory: shoal_client::StreamMemory::new(cfg.upload_buffer_bytes),
        cfg,
        client,
        tracker: probe::TrackerStatus::default(),
        metrics: metrics::Metrics::default(),
        tokens: http_tokens,
    });
    tokio::spawn(probe::run(state.clone(), health.clone(), shutdown.clone()));

    tracing::info!(grpc = %grpc.local_addr()?, http = %http.local_addr()?, tracker = %state.cfg.tracker_url, "webserver starting");
    let svc = WebserverServer::new(grpc::WebserverService::new(state.clone()))
        .max_encoding_message_size(shoal_common::grpc::MAX_MESSAGE_BYTES);
    let stop = shutdown.clone();
    let grpc_server = router.add_service(svc).serve_with_incoming_shutdown(
        shoal_common::net::incoming(grpc),
        async move {
            stop.cancelled().await;
            health.set(false).await;
        },
    );
    let app = http::router(state.clone());
    let stop_http = shutdown.clone().cancelled_owned();
    let http_server = async move {
        let (headers, bodies) = (state.cfg.http_header_timeout, state.cfg.http_body_timeout);
        if state.cfg.tls.cert_file.is_some() {
            let tls = shoal_common::tls::HttpsListener::new(http, &state.cfg.tls)?;
            serve::serve(tls, app, headers, bodies, stop_http).await;
        } else {
            let plain = shoal_common::net::HttpListener::new(http);
            serve::serve(plain, app, headers, bodies, stop_http).await;
        }
        anyhow::Ok(())
    };
    let serve = async {
        let (g, h) = tokio::join!(grpc_server, http_server);
        g?;
        h?;
        anyhow::Ok(())
    };
    // In-flight downloads may be long: drain them for a bounded time, then stop anyway.
    tokio::select! {
        r = serve => r,
        _ = async { shutdown.cancelled().await; tokio::time::sleep(drain).await } => {
            tracing::warn!(timeout = ?drain, "in-flight requests still running at shutdown; stopping anyway");
            Ok(())
        }
    }
}
