//! Accepted sockets for every shoal server (gRPC, HTTP, admin/metrics).
//!
//! A server that passes its own listener to tonic (`serve_with_incoming…`) or axum
//! never gets tonic's `tcp_nodelay(true)`: each accepted socket keeps Nagle's
//! algorithm, and a small answer waits for the client's delayed ACK (~40 ms per unary
//! call on Linux). Every listener goes through this module instead, which sets
//! `TCP_NODELAY` and TCP keep-alive on each accepted connection.

use std::io;
use std::time::Duration;

use tokio::net::{TcpListener, TcpStream};
use tokio_stream::Stream;

/// Idle time before the kernel probes a silent connection (and the probe interval).
/// Dead clients then free their sockets in minutes, not the kernel's default two hours.
pub const TCP_KEEPALIVE: Duration = Duration::from_secs(60);

/// Tune one accepted (or dialed) socket: no Nagle delay, kernel keep-alive probes.
/// Failures are logged and ignored: the connection still works, only slower.
pub fn tune(stream: &TcpStream) {
    if let Err(e) = stream.set_nodelay(true) {
        tracing::debug!(error = %e, "TCP_NODELAY not set");
    }
    let keepalive = socket2::TcpKeepalive::new()
        .with_time(TCP_KEEPALIVE)
        .with_interval(TCP_KEEPALIVE);
    if let Err(e) = socket2::SockRef::from(stream).set_tcp_keepalive(&keepalive) {
        tracing::debug!(error = %e, "TCP keep-alive not set");
    }
}

/// The incoming-connection stream for tonic's `serve_with_incoming…`: every accepted
/// socket tuned by [`tune`]. Accept errors pass through (tonic logs and goes on).
pub fn incoming(listener: TcpListener) -> impl Stream<Item = io::Result<TcpStream>> {
    use tokio_stream::StreamExt;
    tokio_stream::wrappers::TcpListenerStream::new(listener).map(|r| r.inspect(tune))
}

/// A listener for `axum::serve` whose accepted sockets are tuned by [`tune`].
pub struct HttpListener(TcpListener);

impl HttpListener {
    pub fn new(listener: TcpListener) -> Self {
        Self(listener)
    }
}

impl axum::serve::Listener for HttpListener {
    type Io = TcpStream;
    type Addr = std::net::SocketAddr;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        loop {
            match self.0.accept().await {
                Ok((s, addr)) => {
                    tune(&s);
                    return (s, addr);
                }
                // Out of file descriptors and the like: back off instead of spinning,
                // as axum's own TcpListener does.
                Err(e) => {
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            }
        }
    }

    fn local_addr(&self) -> io::Result<Self::Addr> {
        self.0.local_addr()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio_stream::StreamExt;

    async fn bound() -> (TcpListener, std::net::SocketAddr) {
        let l = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = l.local_addr().expect("addr");
        (l, addr)
    }

    #[tokio::test]
    async fn incoming_sockets_have_nodelay_and_keepalive() {
        let (l, addr) = bound().await;
        let mut incoming = Box::pin(incoming(l));
        let _client = TcpStream::connect(addr).await.expect("connect");
        let s = incoming.next().await.expect("one").expect("accepted");
        assert!(s.nodelay().expect("nodelay"));
        assert!(socket2::SockRef::from(&s).keepalive().expect("keepalive"));
    }

    #[tokio::test]
    async fn http_listener_sockets_have_nodelay() {
        use axum::serve::Listener as _;
        let (l, addr) = bound().await;
        let mut l = HttpListener::new(l);
        assert_eq!(l.local_addr().expect("addr"), addr);
        let _client = TcpStream::connect(addr).await.expect("connect");
        let (s, _) = l.accept().await;
        assert!(s.nodelay().expect("nodelay"));
    }
}
