//! Webserver configuration (`SHOAL_*` environment variables).

use std::net::SocketAddr;
use std::time::Duration;

use serde::Deserialize;
use shoal_common::config::ConfigError;

#[derive(Debug, Clone, Deserialize)]
pub struct WebserverConfig {
    #[serde(default = "default_listen")]
    pub listen_addr: SocketAddr,
    #[serde(default = "default_http")]
    pub http_addr: SocketAddr,
    /// What the webserver dials (comma-separated for several trackers).
    #[serde(default = "default_tracker")]
    pub tracker_url: String,
    /// What clients should dial, when it differs from `tracker_url`.
    #[serde(default)]
    pub tracker_public_url: Option<String>,
    /// Health flips to NOT_SERVING when the tracker has been unreachable this long.
    #[serde(default = "default_unreachable", with = "humantime_serde")]
    pub tracker_unreachable_after: Duration,
    /// How often the background probe asks the tracker for `ClusterInfo`.
    #[serde(default = "default_probe", with = "humantime_serde")]
    pub tracker_probe_interval: Duration,
    /// Largest HTTP upload body accepted.
    #[serde(default = "default_max_upload")]
    pub max_upload_bytes: u64,
    /// Memory all HTTP uploads in flight may hold in chunk buffers at once (uploads
    /// stream to the peers, nothing is written to disk): an upload waits for room
    /// before it reads its next chunk. At least one chunk (`SHOAL_CHUNK__MAX_BYTES`
    /// of the tracker, 64 MiB by default, for the largest files).
    #[serde(default = "default_upload_buffer")]
    pub upload_buffer_bytes: u64,
    /// Chunks each HTTP download fetches ahead of the one being sent (memory: this many chunks).
    #[serde(default = "default_download_ahead")]
    pub download_ahead: usize,
    /// On shutdown, how long in-flight requests may take before the server stops anyway.
    #[serde(default = "default_drain", with = "humantime_serde")]
    pub shutdown_timeout: Duration,
    /// An HTTP client must send its whole request head within this time, or the
    /// connection is closed (slowloris).
    #[serde(default = "default_http_header_timeout", with = "humantime_serde")]
    pub http_header_timeout: Duration,
    /// An HTTP request body that delivers no byte for this long while it is being read
    /// (a stalled upload), or a response the client reads no byte of for this long (an
    /// unread download), ends the request and gives its upload or download slot back.
    #[serde(default = "default_http_body_timeout", with = "humantime_serde")]
    pub http_body_timeout: Duration,
    /// HTTP downloads served at once; more get 503 with `Retry-After`.
    #[serde(default = "default_max_transfers")]
    pub max_downloads: usize,
    /// HTTP uploads accepted at once; more get 503 with `Retry-After`.
    #[serde(default = "default_max_transfers")]
    pub max_uploads: usize,
    /// Progress deadlines of the chunk transfers behind HTTP downloads and uploads
    /// (`SHOAL_TRANSFER__PROGRESS_TIMEOUT`).
    #[serde(default)]
    pub transfer: shoal_common::config::TransferConfig,
    #[serde(default)]
    pub auth: shoal_common::auth::AuthConfig,
    #[serde(default)]
    pub tls: shoal_common::tls::TlsConfig,
}

fn default_listen() -> SocketAddr {
    "0.0.0.0:50051".parse().expect("valid literal")
}
fn default_http() -> SocketAddr {
    "0.0.0.0:8080".parse().expect("valid literal")
}
fn default_tracker() -> String {
    "http://127.0.0.1:50052".into()
}
fn default_unreachable() -> Duration {
    Duration::from_secs(10)
}
fn default_probe() -> Duration {
    Duration::from_millis(500)
}
fn default_max_upload() -> u64 {
    1 << 40
}
fn default_upload_buffer() -> u64 {
    64 << 20
}
fn default_download_ahead() -> usize {
    4
}
fn default_drain() -> Duration {
    Duration::from_secs(30)
}
fn default_max_transfers() -> usize {
    64
}
fn default_http_header_timeout() -> Duration {
    Duration::from_secs(10)
}
fn default_http_body_timeout() -> Duration {
    Duration::from_secs(30)
}

impl WebserverConfig {
    pub fn from_env() -> Result<Self, ConfigError> {
        let c: WebserverConfig = shoal_common::config::from_env()?;
        c.validate()?;
        Ok(c)
    }

    pub fn for_test(tracker_url: String) -> Self {
        let mut c: WebserverConfig =
            shoal_common::config::from_vars(Vec::new()).expect("defaults are valid");
        c.tracker_url = tracker_url;
        c.listen_addr = "127.0.0.1:0".parse().expect("valid literal");
        c.http_addr = "127.0.0.1:0".parse().expect("valid literal");
        c.tracker_unreachable_after = Duration::from_secs(2);
        c.tracker_probe_interval = Duration::from_millis(200);
        c.shutdown_timeout = Duration::from_secs(5);
        c
    }

    pub fn validate(&self) -> Result<(), ConfigError> {
        self.transfer.validate()?;
        for (key, v) in [
            ("tracker_url", Some(&self.tracker_url)),
            ("tracker_public_url", self.tracker_public_url.as_ref()),
        ] {
            if let Some(v) = v {
                if !v
                    .split(',')
                    .all(|u| u.trim().starts_with("http://") || u.trim().starts_with("https://"))
                {
                    return Err(ConfigError::invalid(key, v, "expected http://host:port"));
                }
                self.tls.check_urls(key, v)?;
            }
        }
        for (key, n) in [
            ("max_downloads", self.max_downloads),
            ("max_uploads", self.max_uploads),
        ] {
            if n == 0 {
                return Err(ConfigError::invalid(key, n, "expected at least 1"));
            }
        }
        for (key, t) in [
            ("http_header_timeout", self.http_header_timeout),
            ("http_body_timeout", self.http_body_timeout),
        ] {
            if t < Duration::from_millis(100) || t > Duration::from_secs(3600) {
                return Err(ConfigError::invalid(
                    key,
                    format!("{t:?}"),
                    "must be between 100ms and 1h",
                ));
            }
        }
        if self.download_ahead == 0 || self.download_ahead > 64 {
            return Err(ConfigError::invalid(
                "download_ahead",
                self.download_ahead,
                "expected 1 to 64 chunks",
            ));
        }
        if self.tracker_probe_interval.is_zero() {
            return Err(ConfigError::invalid(
                "tracker_probe_interval",
                "0s",
                "expected a positive duration",
            ));
        }
        if self.upload_buffer_bytes < (1 << 20) {
            return Err(ConfigError::invalid(
                "upload_buffer_bytes",
                self.upload_buffer_bytes,
                "expected at least 1048576 (1 MiB)",
            ));
        }
        if self.max_upload_bytes == 0 {
            return Err(ConfigError::invalid(
                "max_upload_bytes",
                0,
                "expected a positive size",
            ));
        }
        Ok(())
    }

    /// The tracker endpoints clients are told to dial.
    pub fn public_tracker_urls(&self) -> Vec<String> {
        let urls = self
            .tracker_public_url
            .as_deref()
            .filter(|u| !u.trim().is_empty())
            .unwrap_or(&self.tracker_url);
        urls.split(',')
            .map(|u| u.trim().to_string())
            .filter(|u| !u.is_empty())
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn no_allowed_name_is_a_near_typo_of_a_setting() {
        let near = shoal_common::config::allowed_near_settings::<WebserverConfig>();
        assert!(near.is_empty(), "allowed names that hide a typo: {near:?}");
    }

    fn load(kv: &[(&str, &str)]) -> Result<WebserverConfig, ConfigError> {
        let c: WebserverConfig = shoal_common::config::from_vars(
            kv.iter().map(|(k, v)| (k.to_string(), v.to_string())),
        )?;
        c.validate()?;
        Ok(c)
    }

    /// What the chart and compose give the webserver (with `SHOAL_DATA_DIR`, set for every
    /// component) is accepted; a typo is not.
    #[test]
    fn deploy_variables_are_known_and_typos_are_not() {
        load(&[
            ("SHOAL_LISTEN_ADDR", "0.0.0.0:50051"),
            ("SHOAL_HTTP_ADDR", "0.0.0.0:8080"),
            ("SHOAL_TRACKER_URL", "http://tracker:50052"),
            ("SHOAL_TRACKER_PUBLIC_URL", "http://tracker:50052"),
            ("SHOAL_DATA_DIR", "/var/lib/shoal"),
            ("SHOAL_LOG_FORMAT", "json"),
            ("SHOAL_UPLOAD_BUFFER_BYTES", "67108864"),
        ])
        .unwrap_or_else(|e| panic!("{e}"));
        let e = load(&[("SHOAL_TRACKER_URLS", "http://tracker:50052")]).unwrap_err();
        assert!(
            e.to_string().contains("did you mean SHOAL_TRACKER_URL?"),
            "{e}"
        );
    }

    #[test]
    fn public_url_wins_for_clients() {
        let c = load(&[("SHOAL_TRACKER_URL", "http://tracker:50052")]).expect("valid");
        assert_eq!(c.public_tracker_urls(), vec!["http://tracker:50052"]);
        let c = load(&[
            ("SHOAL_TRACKER_URL", "http://tracker:50052"),
            (
                "SHOAL_TRACKER_PUBLIC_URL",
                "https://a.example:443, https://b.example:443",
            ),
        ])
        .expect("valid");
        assert_eq!(
            c.public_tracker_urls(),
            vec!["https://a.example:443", "https://b.example:443"]
        );
    }

    #[test]
    fn bad_values_name_the_variable() {
        let e = load(&[("SHOAL_TRACKER_PUBLIC_URL", "tracker:1")]).expect_err("no scheme");
        assert!(
            e.to_string().contains("SHOAL_TRACKER_PUBLIC_URL=tracker:1"),
            "{e}"
        );
        let e = load(&[("SHOAL_UPLOAD_BUFFER_BYTES", "1000")]).expect_err("tiny buffer");
        assert!(
            e.to_string().contains("SHOAL_UPLOAD_BUFFER_BYTES=1000"),
            "{e}"
        );
        let e = load(&[("SHOAL_UPLOAD_SPOOL_BYTES", "2097152")]).expect_err("gone");
        assert!(e.to_string().contains("SHOAL_UPLOAD_SPOOL_BYTES"), "{e}");
        let e = load(&[("SHOAL_DOWNLOAD_AHEAD", "0")]).expect_err("zero");
        assert!(e.to_string().contains("SHOAL_DOWNLOAD_AHEAD=0"), "{e}");
        let c = load(&[("SHOAL_TRACKER_UNREACHABLE_AFTER", "3s")]).expect("valid");
        assert_eq!(c.tracker_unreachable_after, Duration::from_secs(3));
    }
}
