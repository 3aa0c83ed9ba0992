//! TLS to PostgreSQL (rustls, ring), and no silent plaintext.
//!
//! With `SHOAL_STORE__CA_FILE` every connection uses TLS (an URL's `sslmode=prefer`,
//! the default, becomes `require`: no downgrade) and the server certificate is verified
//! against that CA and the host name in the URL — libpq's `verify-full`. Without it, a
//! server on loopback (or a Unix socket) is used as the URL says; any other host must
//! be written with an explicit `sslmode=require` (encrypted, the server unverified: a
//! warning at start) or `sslmode=disable` (plaintext by choice); `prefer`, which an
//! active attacker can downgrade to plaintext, is a start-up error there.

use std::path::Path;
use std::sync::Arc;

use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, ServerName, UnixTime};
use tokio_rustls::rustls::client::danger::{
    HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier,
};
use tokio_rustls::rustls::{self, crypto::CryptoProvider, DigitallySignedStruct, SignatureScheme};

use crate::store::StoreError;

/// The URL to connect with, after the policy above: `url` as given, or with
/// `sslmode=require` appended when a CA is configured; an error (naming the settings,
/// never the URL, which may hold a password) when it would allow silent plaintext.
pub fn effective_url(url: &str, with_ca: bool) -> Result<String, String> {
    use tokio_postgres::config::{Host, SslMode};
    let cfg: tokio_postgres::Config = url
        .parse()
        .map_err(|e| format!("SHOAL_STORE__URL does not parse: {e}"))?;
    let mode = cfg.get_ssl_mode();
    if with_ca {
        return match mode {
            SslMode::Disable => Err("SHOAL_STORE__CA_FILE is set but SHOAL_STORE__URL says \
                 sslmode=disable: remove one of the two"
                .into()),
            SslMode::Prefer => {
                let sep = if url.contains('?') { '&' } else { '?' };
                Ok(format!("{url}{sep}sslmode=require"))
            }
            _ => Ok(url.to_string()),
        };
    }
    let remote = cfg.get_hosts().iter().find_map(|h| match h {
        Host::Tcp(name) if !is_loopback(name) => Some(name.clone()),
        _ => None,
    });
    match (remote, mode) {
        (Some(host), SslMode::Prefer) => Err(format!(
            "SHOAL_STORE__URL names {host}, not a loopback host, without verified TLS: set \
             SHOAL_STORE__CA_FILE (TLS, server verified), or write sslmode=require (encrypted, \
             unverified) or sslmode=disable (plaintext) in the URL explicitly"
        )),
        _ => Ok(url.to_string()),
    }
}

/// The warning to log once at start when the connection is encrypted but the server
/// is not verified, or plaintext by choice, to a remote host.
pub fn weakness(url: &str, with_ca: bool) -> Option<&'static str> {
    use tokio_postgres::config::{Host, SslMode};
    let cfg: tokio_postgres::Config = url.parse().ok()?;
    let remote = cfg
        .get_hosts()
        .iter()
        .any(|h| matches!(h, Host::Tcp(name) if !is_loopback(name)));
    match (with_ca, remote, cfg.get_ssl_mode()) {
        (false, true, SslMode::Require) => Some(
            "PostgreSQL: encrypted, but the server certificate is not verified (set SHOAL_STORE__CA_FILE)",
        ),
        (false, true, SslMode::Disable) => Some(
            "PostgreSQL: plaintext to a remote host (sslmode=disable): passwords and the catalogue cross the network unencrypted",
        ),
        _ => None,
    }
}

fn is_loopback(host: &str) -> bool {
    let bare = host.trim_start_matches('[').trim_end_matches(']');
    host.eq_ignore_ascii_case("localhost")
        || bare
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback())
}

/// What every PostgreSQL connection of the tracker is made with.
pub type Tls = tokio_postgres_rustls::MakeRustlsConnect;

pub fn connector(ca_file: Option<&Path>) -> Result<Tls, StoreError> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = rustls::ClientConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .map_err(|e| StoreError(format!("TLS to PostgreSQL: {e}")))?;
    let cfg = match ca_file {
        Some(path) => {
            let bad = |e: &dyn std::fmt::Display| {
                StoreError(format!("SHOAL_STORE__CA_FILE={}: {e}", path.display()))
            };
            let mut roots = rustls::RootCertStore::empty();
            for cert in CertificateDer::pem_file_iter(path).map_err(|e| bad(&e))? {
                roots.add(cert.map_err(|e| bad(&e))?).map_err(|e| bad(&e))?;
            }
            if roots.is_empty() {
                return Err(bad(&"no certificate in the file"));
            }
            builder.with_root_certificates(roots).with_no_client_auth()
        }
        None => builder
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(EncryptOnly(provider)))
            .with_no_client_auth(),
    };
    Ok(tokio_postgres_rustls::MakeRustlsConnect::new(cfg))
}

/// Accepts any server certificate but still checks the handshake signatures: encryption
/// without authentication, libpq's `sslmode=require`.
#[derive(Debug)]
struct EncryptOnly(Arc<CryptoProvider>);

impl ServerCertVerifier for EncryptOnly {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_ca_forces_tls_and_remote_hosts_need_an_explicit_choice() {
        let remote = "postgres://u:secret@db.example:5432/shoal";
        // With a CA: TLS always (prefer becomes require), disable contradicts it.
        assert_eq!(
            effective_url(remote, true).unwrap(),
            format!("{remote}?sslmode=require")
        );
        assert_eq!(
            effective_url(&format!("{remote}?application_name=t&sslmode=prefer"), true).unwrap(),
            format!("{remote}?application_name=t&sslmode=prefer&sslmode=require")
        );
        let forced: tokio_postgres::Config =
            effective_url(&format!("{remote}?sslmode=prefer"), true)
                .unwrap()
                .parse()
                .unwrap();
        assert_eq!(
            forced.get_ssl_mode(),
            tokio_postgres::config::SslMode::Require,
            "the last sslmode wins"
        );
        assert!(effective_url(&format!("{remote}?sslmode=disable"), true)
            .unwrap_err()
            .contains("SHOAL_STORE__CA_FILE"));
        // Without a CA: a remote host with the downgradable default is refused, naming
        // the host and the settings but never the password.
        let e = effective_url(remote, false).unwrap_err();
        assert!(
            e.contains("db.example") && e.contains("SHOAL_STORE__CA_FILE"),
            "{e}"
        );
        assert!(!e.contains("secret"), "{e}");
        assert!(effective_url(&format!("{remote}?sslmode=prefer"), false).is_err());
        for explicit in ["sslmode=disable", "sslmode=require"] {
            let u = format!("{remote}?{explicit}");
            assert_eq!(effective_url(&u, false).unwrap(), u);
            assert!(weakness(&u, false).is_some(), "{u} is logged as weak");
        }
        // Loopback is left as the URL says.
        for local in [
            "postgres://u@localhost/shoal",
            "postgres://u@127.0.0.1:5432/shoal",
            "postgres://u@[::1]:5432/shoal",
        ] {
            assert_eq!(effective_url(local, false).unwrap(), local);
            assert!(weakness(local, false).is_none());
        }
    }
}
