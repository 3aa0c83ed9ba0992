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
