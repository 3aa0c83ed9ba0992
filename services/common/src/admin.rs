//! The admin HTTP listener every service may expose (`SHOAL_METRICS_ADDR`):
//! `/metrics` in Prometheus text and `/healthz`.

use std::net::SocketAddr;
use std::sync::Arc;

use axum::routing::get;
use tokio_util::sync::CancellationToken;

pub type Render = Arc<dyn Fn() -> String + Send + Sync>;

/// The `/metrics` route, for servers that mount it on their own router.
pub fn metrics_route<S: Clone + Send + Sync + 'static>(render: Render) -> axum::Router<S> {
    axum::Router::new().route(
        "/metrics",
        get(move || {
            let render = render.clone();
            async move { ([("content-type", "text/plain; version=0.0.4")], render()) }
        }),
    )
}

/// Bind `addr` and serve `/metrics` and `/healthz` (over HTTPS when the service has a
/// certificate) until `shutdown`.
pub async fn spawn(
    addr: SocketAddr,
    render: Render,
    tls: &crate::tls::TlsConfig,
    shutdown: CancellationToken,
) -> anyhow::Result<SocketAddr> {
    let listener = tokio::net::TcpListener::bind(addr).await?;
    let local = listener.local_addr()?;
    let app = metrics_route(render).route("/healthz", get(|| async { "ok" }));
    // The service's certificate, when it has one, covers this listener too.
    if tls.cert_file.is_some() {
        let https = crate::tls::HttpsListener::new(listener, tls)?;
        tokio::spawn(async move {
            let _ = axum::serve(https, app)
                .with_graceful_shutdown(shutdown.cancelled_owned())
                .await;
        });
    } else {
        tokio::spawn(async move {
            let _ = axum::serve(crate::net::HttpListener::new(listener), app)
                .with_graceful_shutdown(shutdown.cancelled_owned())
                .await;
        });
    }
    Ok(local)
}
