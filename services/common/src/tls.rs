//! Optional TLS for every gRPC listener and every outgoing call (rustls through tonic).
//! A certificate and key turn TLS on for a server; a CA makes it mutual: servers then
//! require client certificates signed by that CA, and clients verify servers with it.
//! Clients of a TLS cluster dial `https://`.

use std::path::PathBuf;
use std::sync::OnceLock;

use serde::Deserialize;
use tonic::transport::{Certificate, ClientTlsConfig, Identity, ServerTlsConfig};

use crate::config::ConfigError;

#[derive(Debug, Clone, Default, Deserialize)]
pub struct TlsConfig {
    #[serde(default)]
    pub cert_file: Option<PathBuf>,
    #[serde(default)]
    pub key_file: Option<PathBuf>,
    #[serde(default)]
    pub ca_file: Option<PathBuf>,
}

fn read(key: &str, p: &PathBuf) -> Result<Vec<u8>, ConfigError> {
    std::fs::read(p).map_err(|e| ConfigError::invalid(key, p.display(), &e.to_string()))
}

impl TlsConfig {
    pub fn enabled(&self) -> bool {
        self.cert_file.is_some() || self.key_file.is_some() || self.ca_file.is_some()
    }

    /// With TLS configured, an explicit `http://` URL would skip TLS without a word:
    /// refuse it at start, naming the setting. `urls` may be comma-separated.
    pub fn check_urls(&self, setting: &str, urls: &str) -> Result<(), ConfigError> {
        if !self.enabled() {
            return Ok(());
        }
        match urls.split(',').map(str::trim).find(|u| u.starts_with("http://")) {
            Some(u) => Err(ConfigError::invalid(
                setting,
                u,
                "TLS is configured (SHOAL_TLS__*), so a plaintext http:// URL is refused: use https://",
            )),
            None => Ok(()),
        }
    }

    /// The server side, when a certificate is configured.
    pub fn server(&self) -> Result<Option<ServerTlsConfig>, ConfigError> {
        match (&self.cert_file, &self.key_file) {
            (None, None) => Ok(None),
            (Some(c), Some(k)) => {
                let mut cfg = ServerTlsConfig::new().identity(Identity::from_pem(
                    read("tls.cert_file", c)?,
                    read("tls.key_file", k)?,
                ));
                if let Some(ca) = &self.ca_file {
                    cfg = cfg.client_ca_root(Certificate::from_pem(read("tls.ca_file", ca)?));
                }
                Ok(Some(cfg))
            }
            _ => Err(ConfigError(
                "SHOAL_TLS__CERT_FILE and SHOAL_TLS__KEY_FILE go together".into(),
            )),
        }
    }

    /// The client side: trust the CA, present our certificate (mutual TLS).
    pub fn client(&self) -> Result<Option<ClientTlsConfig>, ConfigError> {
        if !self.enabled() {
            return Ok(None);
        }
        let mut cfg = ClientTlsConfig::new();
        if let Some(ca) = &self.ca_file {
            cfg = cfg.ca_certificate(Certificate::from_pem(read("tls.ca_file", ca)?));
        }
        if let (Some(c), Some(k)) = (&self.cert_file, &self.key_file) {
            cfg = cfg.identity(Identity::from_pem(
                read("tls.cert_file", c)?,
                read("tls.key_file", k)?,
            ));
        }
        Ok(Some(cfg))
    }
}

static CLIENT: OnceLock<ClientTlsConfig> = OnceLock::new();

/// Make every outgoing channel of this process use TLS (set once, at start).
pub fn set_client(cfg: ClientTlsConfig) {
    let _ = CLIENT.set(cfg);
}

pub fn client() -> Option<&'static ClientTlsConfig> {
    CLIENT.get()
}

type TlsConn = (
    tokio_rustls::server::TlsStream<tokio::net::TcpStream>,
    std::net::SocketAddr,
);

/// A TLS listener for axum (`axum::serve(HttpsListener::new(..)?, app)`). Handshakes run
/// concurrently, each bounded in time, so a slow or bad client never holds up others.
pub struct HttpsListener {
    local: std::net::SocketAddr,
    ready: tokio::sync::mpsc::Receiver<TlsConn>,
}

impl HttpsListener {
    pub fn new(tcp: tokio::net::TcpListener, cfg: &TlsConfig) -> Result<Self, ConfigError> {
        use rustls_pki_types::pem::PemObject;
        use rustls_pki_types::{CertificateDer, PrivateKeyDer};
        let (Some(cert), Some(key)) = (&cfg.cert_file, &cfg.key_file) else {
            return Err(ConfigError(
                "HTTPS needs SHOAL_TLS__CERT_FILE and SHOAL_TLS__KEY_FILE".into(),
            ));
        };
        let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(cert)
            .and_then(|i| i.collect())
            .map_err(|e| ConfigError::invalid("tls.cert_file", cert.display(), &e.to_string()))?;
        let key = PrivateKeyDer::from_pem_file(key)
            .map_err(|e| ConfigError::invalid("tls.key_file", key.display(), &e.to_string()))?;
        let provider = std::sync::Arc::new(tokio_rustls::rustls::crypto::ring::default_provider());
        let server = tokio_rustls::rustls::ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map_err(|e| ConfigError(format!("TLS: {e}")))?
            .with_no_client_auth()
            .with_single_cert(certs, key)
            .map_err(|e| ConfigError::invalid("tls.cert_file", cert.display(), &e.to_string()))?;
        let acceptor = tokio_rustls::TlsAcceptor::from(std::sync::Arc::new(server));
        let local = tcp
            .local_addr()
            .map_err(|e| ConfigError(format!("listener: {e}")))?;
        let (tx, ready) = tokio::sync::mpsc::channel(64);
        tokio::spawn(async move {
            loop {
                let (conn, addr) = match tcp.accept().await {
                    Ok(c) => c,
                    Err(e) => {
                        tracing::warn!(error = %e, "accept failed");
                        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                        continue;
                    }
                };
                if tx.is_closed() {
                    return;
                }
                crate::net::tune(&conn);
                let (acceptor, tx) = (acceptor.clone(), tx.clone());
                tokio::spawn(async move {
                    match tokio::time::timeout(
                        std::time::Duration::from_secs(10),
                        acceptor.accept(conn),
                    )
                    .await
                    {
                        Ok(Ok(tls)) => {
                            let _ = tx.send((tls, addr)).await;
                        }
                        Ok(Err(e)) => tracing::debug!(%addr, error = %e, "TLS handshake failed"),
                        Err(_) => tracing::debug!(%addr, "TLS handshake timed out"),
                    }
                });
            }
        });
        Ok(Self { local, ready })
    }
}

impl axum::serve::Listener for HttpsListener {
    type Io = tokio_rustls::server::TlsStream<tokio::net::TcpStream>;
    type Addr = std::net::SocketAddr;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        match self.ready.recv().await {
            Some(c) => c,
            // The accept task only ends with the runtime: nothing more will come.
            None => std::future::pending().await,
        }
    }

    fn local_addr(&self) -> std::io::Result<Self::Addr> {
        Ok(self.local)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plaintext_urls_are_refused_only_with_tls() {
        let off = TlsConfig::default();
        assert!(off.check_urls("tracker_url", "http://t:1").is_ok());
        let on = TlsConfig {
            ca_file: Some("ca.pem".into()),
            ..Default::default()
        };
        assert!(on.check_urls("tracker_url", "https://a:1, t:2").is_ok());
        let e = on
            .check_urls("tracker_url", "https://a:1,http://b:2")
            .expect_err("http:// with TLS");
        let msg = e.to_string();
        assert!(msg.contains("SHOAL_TRACKER_URL=http://b:2"), "{msg}");
        assert!(msg.contains("TLS"), "{msg}");
    }
}
