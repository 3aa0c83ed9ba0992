//! The HTTP accept loop: the axum router over hyper, with what `axum::serve` does not
//! offer — a header-read timeout (`SHOAL_HTTP_HEADER_TIMEOUT`), so a client that
//! never finishes its request head (slowloris) is disconnected instead of holding a
//! connection and a task forever; and idle deadlines on bodies both ways
//! (`SHOAL_HTTP_BODY_TIMEOUT`, see [`crate::idle`]).
//!
//! Owns connections only; routing, limits per route and handlers live in `http`.

use std::fmt::Debug;
use std::future::Future;
use std::time::Duration;

use axum::serve::Listener;
use axum::Router;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto::Builder;
use hyper_util::service::TowerToHyperService;
use tokio::sync::watch;

use crate::idle::{IdleBody, WriteIdle};

/// Serve `app` on `listener` until `shutdown`, then let open connections finish
/// (the caller bounds how long).
pub async fn serve<L>(
    mut listener: L,
    app: Router,
    header_timeout: Duration,
    body_timeout: Duration,
    shutdown: impl Future<Output = ()>,
) where
    L: Listener,
    L::Addr: Debug,
{
    let (stop_tx, stop_rx) = watch::channel(false);
    let mut shutdown = std::pin::pin!(shutdown);
    loop {
        let (io, _remote) = tokio::select! {
            conn = listener.accept() => conn,
            _ = &mut shutdown => break,
        };
        let app = tower::ServiceBuilder::new()
            .map_request(move |req: axum::extract::Request<hyper::body::Incoming>| {
                req.map(|b| axum::body::Body::new(IdleBody::new(b, body_timeout)))
            })
            .service(app.clone());
        let svc = TowerToHyperService::new(app);
        let mut stop = stop_rx.clone();
        tokio::spawn(async move {
            let mut b = Builder::new(TokioExecutor::new());
            b.http1()
                .timer(TokioTimer::new())
                .header_read_timeout(header_timeout);
            let io = TokioIo::new(WriteIdle::new(io, body_timeout));
            let conn = b.serve_connection_with_upgrades(io, svc);
            let mut conn = std::pin::pin!(conn);
            tokio::select! {
                r = conn.as_mut() => {
                    if let Err(e) = r {
                        tracing::debug!(error = %e, "HTTP connection ended with an error");
                    }
                }
                _ = async { let _ = stop.wait_for(|s| *s).await; } => {
                    conn.as_mut().graceful_shutdown();
                    let _ = conn.await;
                }
            }
        });
    }
    let _ = stop_tx.send(true);
    drop(stop_rx);
    // Every connection task holds a receiver: wait for the last one to finish.
    stop_tx.closed().await;
}
