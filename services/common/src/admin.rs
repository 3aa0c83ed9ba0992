//! The admin HTTP listener every service may expose (`SHOAL_METRICS_ADDR`):
//! `/metrics` and `/healthz`.
//!
//! Every `/metrics` is one `prometheus-client` [`Registry`] per process, encoded in the
//! Prometheus text format (version 0.0.4): names, types, label escaping and histogram
//! series come from the library, never from text written by hand.

use std::net::SocketAddr;
use std::sync::Arc;

use axum::routing::get;
use prometheus_client::encoding::prometheus_text;
use prometheus_client::registry::Registry;
use tokio_util::sync::CancellationToken;

/// Produces the body of one scrape.
pub type Render = Arc<dyn Fn() -> String + Send + Sync>;

/// `registry` in the Prometheus text format.
pub fn encode(registry: &Registry) -> String {
    let mut out = String::new();
    // Writing to a String cannot fail; only a collector could, and then the scrape is
    // partial rather than missing.
    if let Err(e) = prometheus_text::encode(&mut out, registry) {
        tracing::warn!(error = %e, "encoding the metrics failed; this scrape is partial");
    }
    out
}

/// A [`Render`] of `registry`, for services with nothing to update before a scrape
/// (values read from state at scrape time come from the registry's collectors).
pub fn render(registry: Registry) -> Render {
    Arc::new(move || encode(&registry))
}

/// The `/metrics` route, for servers that mount it on their own router.
pub fn metrics_route<S: Clone + Send + Sync + 'static>(render: Render) -> axum::Router<S> {
    axum::Router::new().route(
        "/metrics",
        get(move || {
            let render = render.clone();
            async move { ([("content-type", prometheus_text::CONTENT_TYPE)], render()) }
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
