//! Authentication: bearer tokens in the `authorization` metadata, three roles.
//!
//! - `cluster`: what peers, the tracker and the webserver present to each other;
//! - `write`: clients that put, remove, drain or change replica counts;
//! - `read`: clients that list, search, stat and get.
//!
//! A role includes the ones below it (cluster ⊇ write ⊇ read). Tokens are compared in
//! constant time. Health and reflection stay open so probes and `grpcurl list` work.
//! With no token configured the servers are open (and say so at start) unless
//! `SHOAL_AUTH__REQUIRED=true`, which makes a missing token a configuration error.

use std::future::Future;
use std::path::PathBuf;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use serde::Deserialize;

use crate::config::{secret, ConfigError};

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Role {
    Read,
    Write,
    Cluster,
}

impl Role {
    pub fn name(self) -> &'static str {
        match self {
            Role::Read => "read",
            Role::Write => "write",
            Role::Cluster => "cluster",
        }
    }
}

#[derive(Debug, Clone, Default, Deserialize)]
pub struct AuthConfig {
    #[serde(default)]
    pub required: bool,
    #[serde(default)]
    pub cluster_token: Option<String>,
    #[serde(default)]
    pub cluster_token_file: Option<PathBuf>,
    #[serde(default)]
    pub read_token: Option<String>,
    #[serde(default)]
    pub read_token_file: Option<PathBuf>,
    #[serde(default)]
    pub write_token: Option<String>,
    #[serde(default)]
    pub write_token_file: Option<PathBuf>,
    /// Former (or next) tokens, still accepted for their role while clients move over:
    /// set, swap, remove — a rotation without downtime (docs/security.md). Only ever
    /// accepted, never sent.
    #[serde(default)]
    pub cluster_token_previous: Option<String>,
    #[serde(default)]
    pub cluster_token_previous_file: Option<PathBuf>,
    #[serde(default)]
    pub read_token_previous: Option<String>,
    #[serde(default)]
    pub read_token_previous_file: Option<PathBuf>,
    #[serde(default)]
    pub write_token_previous: Option<String>,
    #[serde(default)]
    pub write_token_previous_file: Option<PathBuf>,
    /// The key placement tickets are signed with (`SHOAL_AUTH__TICKET_KEY`); unset,
    /// it is derived from the cluster token (see `ticket`).
    #[serde(default)]
    pub ticket_key: Option<String>,
    #[serde(default)]
    pub ticket_key_file: Option<PathBuf>,
    /// A former ticket key, still accepted while tickets it signed may be in flight.
    #[serde(default)]
    pub ticket_key_previous: Option<String>,
    #[serde(default)]
    pub ticket_key_previous_file: Option<PathBuf>,
}

/// The tokens a server accepts, resolved from `X` or `X_FILE`.
#[derive(Debug, Clone, Default)]
pub struct Tokens {
    pub cluster: Option<String>,
    pub read: Option<String>,
    pub write: Option<String>,
    /// Tokens also accepted during a rotation, with their role.
    pub previous: Vec<(String, Role)>,
}

fn check_token(key: &str, t: &Option<String>) -> Result<(), ConfigError> {
    if let Some(t) = t {
        if t.len() < 16 || !t.chars().all(|c| c.is_ascii_graphic()) {
            return Err(ConfigError(format!(
                "{}: a token must be at least 16 printable ASCII characters",
                crate::config::env_name(key)
            )));
        }
    }
    Ok(())
}

impl AuthConfig {
    /// The placement-ticket keys: `ticket_key` (or `_FILE`), else derived from the
    /// cluster token, else the public open key; plus the previous key if set.
    pub fn ticket_keys(&self) -> Result<crate::ticket::TicketKeys, ConfigError> {
        let tokens = self.resolve()?;
        let key = secret(
            self.ticket_key.clone(),
            self.ticket_key_file.as_deref(),
            "auth.ticket_key",
        )?;
        let previous = secret(
            self.ticket_key_previous.clone(),
            self.ticket_key_previous_file.as_deref(),
            "auth.ticket_key_previous",
        )?;
        check_token("auth.ticket_key", &key)?;
        check_token("auth.ticket_key_previous", &previous)?;
        Ok(crate::ticket::TicketKeys::new(
            key.as_deref(),
            previous.as_deref(),
            tokens.cluster.as_deref(),
        ))
    }

    pub fn resolve(&self) -> Result<Tokens, ConfigError> {
        let t = Tokens {
            cluster: secret(
                self.cluster_token.clone(),
                self.cluster_token_file.as_deref(),
                "auth.cluster_token",
            )?,
            read: secret(
                self.read_token.clone(),
                self.read_token_file.as_deref(),
                "auth.read_token",
            )?,
            write: secret(
                self.write_token.clone(),
                self.write_token_file.as_deref(),
                "auth.write_token",
            )?,
            previous: Vec::new(),
        };
        check_token("auth.cluster_token", &t.cluster)?;
        check_token("auth.read_token", &t.read)?;
        check_token("auth.write_token", &t.write)?;
        let mut t = t;
        for (key, value, file, role) in [
            (
                "auth.cluster_token_previous",
                &self.cluster_token_previous,
                &self.cluster_token_previous_file,
                Role::Cluster,
            ),
            (
                "auth.read_token_previous",
                &self.read_token_previous,
                &self.read_token_previous_file,
                Role::Read,
            ),
            (
                "auth.write_token_previous",
                &self.write_token_previous,
                &self.write_token_previous_file,
                Role::Write,
            ),
        ] {
            let prev = secret(value.clone(), file.as_deref(), key)?;
            check_token(key, &prev)?;
            if let Some(p) = prev {
                t.previous.push((p, role));
            }
        }
        if self.required && t.cluster.is_none() {
            return Err(ConfigError(
                "SHOAL_AUTH__REQUIRED=true needs SHOAL_AUTH__CLUSTER_TOKEN (or _FILE)".into(),
            ));
        }
        Ok(t)
    }
}

/// Constant-time equality (length is not secret).
fn same(a: &str, b: &str) -> bool {
    a.len() == b.len()
        && a.bytes()
            .zip(b.bytes())
            .fold(0u8, |acc, (x, y)| acc | (x ^ y))
            == 0
}

impl Tokens {
    pub fn enabled(&self) -> bool {
        self.cluster.is_some() || self.read.is_some() || self.write.is_some()
    }

    /// The role a presented token carries.
    pub fn role_of(&self, presented: &str) -> Option<Role> {
        let mut role = None;
        // Check every token, always: no early exit that would time which one matched.
        let current = [
            (self.read.as_deref(), Role::Read),
            (self.write.as_deref(), Role::Write),
            (self.cluster.as_deref(), Role::Cluster),
        ];
        let previous = self.previous.iter().map(|(t, r)| (Some(t.as_str()), *r));
        for (t, r) in current.into_iter().chain(previous) {
            if t.is_some_and(|t| same(t, presented)) {
                role = role.max(Some(r));
            }
        }
        role
    }

    /// Check an `authorization` header value against the role a call needs.
    pub fn authorize(&self, header: Option<&str>, needed: Role) -> Result<(), tonic::Status> {
        if !self.enabled() {
            return Ok(());
        }
        let token = header
            .and_then(|h| h.strip_prefix("Bearer "))
            .map(str::trim);
        let Some(token) = token.filter(|t| !t.is_empty()) else {
            return Err(tonic::Status::unauthenticated(
                "missing token: send `authorization: Bearer <token>` (shoal --token / SHOAL_TOKEN)",
            ));
        };
        match self.role_of(token) {
            None => Err(tonic::Status::unauthenticated("invalid token")),
            Some(r) if r < needed => Err(tonic::Status::permission_denied(format!(
                "a {} token cannot do this: it needs the {} role",
                r.name(),
                needed.name()
            ))),
            Some(_) => Ok(()),
        }
    }
}

/// Which role a method needs (`None`: open to all). Given the gRPC path.
pub type Policy = fn(&str) -> Option<Role>;

/// Health, reflection: open. Everything else per the service's policy.
pub fn open_probes(path: &str) -> bool {
    path.starts_with("/grpc.health.") || path.starts_with("/grpc.reflection.")
}

#[derive(Clone)]
pub struct AuthLayer {
    pub tokens: Arc<Tokens>,
    pub policy: Policy,
}

impl AuthLayer {
    pub fn new(tokens: Tokens, policy: Policy) -> Self {
        if !tokens.enabled() {
            tracing::warn!("authentication is off: anyone who reaches this port can call it (set SHOAL_AUTH__* tokens)");
        }
        Self {
            tokens: Arc::new(tokens),
            policy,
        }
    }

    /// No tokens: everything open (tests, the trace sink).
    pub fn open() -> Self {
        Self {
            tokens: Arc::new(Tokens::default()),
            policy: |_| None,
        }
    }
}

impl<S> tower::Layer<S> for AuthLayer {
    type Service = Auth<S>;
    fn layer(&self, inner: S) -> Self::Service {
        Auth {
            inner,
            tokens: self.tokens.clone(),
            policy: self.policy,
        }
    }
}

#[derive(Clone)]
pub struct Auth<S> {
    inner: S,
    tokens: Arc<Tokens>,
    policy: Policy,
}

impl<S, B, R> tower::Service<http::Request<B>> for Auth<S>
where
    S: tower::Service<http::Request<B>, Response = http::Response<R>>,
    S::Future: Send + 'static,
    R: Default + Send + 'static,
    S::Error: Send + 'static,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = Pin<Box<dyn Future<Output = Result<S::Response, S::Error>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: http::Request<B>) -> Self::Future {
        let path = req.uri().path();
        if !open_probes(path) {
            if let Some(needed) = (self.policy)(path) {
                let header = req
                    .headers()
                    .get("authorization")
                    .and_then(|v| v.to_str().ok());
                if let Err(status) = self.tokens.authorize(header, needed) {
                    let resp = status.into_http::<R>();
                    return Box::pin(async move { Ok(resp) });
                }
            }
        }
        Box::pin(self.inner.call(req))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tokens() -> Tokens {
        Tokens {
            cluster: Some("c".repeat(16)),
            read: Some("r".repeat(16)),
            write: Some("w".repeat(16)),
            previous: Vec::new(),
        }
    }

    /// During a rotation both the current and the previous token of a role are
    /// accepted, each for its own role only; without the previous one, only the current.
    #[test]
    fn previous_tokens_are_accepted_for_their_role_during_a_rotation() {
        let cfg = AuthConfig {
            cluster_token: Some("new-cluster-token-0123".into()),
            write_token: Some("new-write-token-0123".into()),
            write_token_previous: Some("old-write-token-0123".into()),
            read_token_previous: Some("old-read-token-01234".into()),
            ..Default::default()
        };
        let t = cfg.resolve().unwrap();
        let bearer = |s: &str| format!("Bearer {s}");
        for token in ["new-write-token-0123", "old-write-token-0123"] {
            assert!(
                t.authorize(Some(&bearer(token)), Role::Write).is_ok(),
                "{token}"
            );
            assert_eq!(
                t.authorize(Some(&bearer(token)), Role::Cluster)
                    .unwrap_err()
                    .code(),
                tonic::Code::PermissionDenied
            );
        }
        assert_eq!(t.role_of("old-read-token-01234"), Some(Role::Read));
        let without = AuthConfig {
            write_token_previous: None,
            ..cfg.clone()
        }
        .resolve()
        .unwrap();
        assert_eq!(without.role_of("old-write-token-0123"), None);
        let short = AuthConfig {
            cluster_token_previous: Some("short".into()),
            ..cfg
        };
        assert!(short
            .resolve()
            .unwrap_err()
            .0
            .contains("CLUSTER_TOKEN_PREVIOUS"));
    }

    #[test]
    fn roles_nest() {
        let t = tokens();
        let bearer = |s: &str| format!("Bearer {s}");
        assert!(t
            .authorize(Some(&bearer(&"r".repeat(16))), Role::Read)
            .is_ok());
        assert_eq!(
            t.authorize(Some(&bearer(&"r".repeat(16))), Role::Write)
                .unwrap_err()
                .code(),
            tonic::Code::PermissionDenied
        );
        assert!(t
            .authorize(Some(&bearer(&"w".repeat(16))), Role::Read)
            .is_ok());
        assert!(t
            .authorize(Some(&bearer(&"c".repeat(16))), Role::Cluster)
            .is_ok());
        assert_eq!(
            t.authorize(Some(&bearer("nope")), Role::Read)
                .unwrap_err()
                .code(),
            tonic::Code::Unauthenticated
        );
        assert_eq!(
            t.authorize(None, Role::Read).unwrap_err().code(),
            tonic::Code::Unauthenticated
        );
        assert_eq!(
            t.authorize(Some("Basic abc"), Role::Read)
                .unwrap_err()
                .code(),
            tonic::Code::Unauthenticated
        );
        assert!(Tokens::default().authorize(None, Role::Cluster).is_ok());
    }

    #[test]
    fn required_needs_a_cluster_token_and_short_tokens_are_refused() {
        let c = AuthConfig {
            required: true,
            ..Default::default()
        };
        assert!(c.resolve().is_err());
        let c = AuthConfig {
            cluster_token: Some("short".into()),
            ..Default::default()
        };
        assert!(c
            .resolve()
            .unwrap_err()
            .to_string()
            .contains("SHOAL_AUTH__CLUSTER_TOKEN"));
    }

    #[test]
    fn ticket_keys_come_from_the_ticket_key_or_the_cluster_token() {
        let token = "cluster-token-0123456789";
        let by_token = AuthConfig {
            cluster_token: Some(token.into()),
            ..Default::default()
        };
        let t = by_token.ticket_keys().unwrap().issue(
            "u",
            "ab",
            1,
            vec!["p".into()],
            std::time::Duration::from_secs(60),
        );
        assert!(crate::ticket::TicketKeys::from_token(token)
            .verify(&t)
            .is_ok());
        // A dedicated key replaces the derived one; the old one stays accepted as previous.
        let rotated = AuthConfig {
            cluster_token: Some(token.into()),
            ticket_key: Some("ticket-key-0123456789".into()),
            ticket_key_previous: Some(token.into()),
            ..Default::default()
        };
        let keys = rotated.ticket_keys().unwrap();
        assert!(keys.verify(&t).is_ok());
        assert!(crate::ticket::TicketKeys::from_token(token)
            .verify(&keys.sign(t.clone()))
            .is_err());
        let short = AuthConfig {
            ticket_key: Some("short".into()),
            ..Default::default()
        };
        assert!(short
            .ticket_keys()
            .err()
            .is_some_and(|e| e.to_string().contains("SHOAL_AUTH__TICKET_KEY")));
        assert!(AuthConfig::default().ticket_keys().unwrap().is_open());
    }
}
