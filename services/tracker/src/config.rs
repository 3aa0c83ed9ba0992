//! Tracker configuration (`SHOAL_*` environment variables).

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use serde::Deserialize;
use shoal_common::config::ConfigError;

#[derive(Debug, Clone, Deserialize)]
pub struct TrackerConfig {
    #[serde(default = "default_listen")]
    pub listen_addr: SocketAddr,
    #[serde(default = "default_data_dir")]
    pub data_dir: PathBuf,
    #[serde(default)]
    pub metrics_addr: Option<SocketAddr>,
    #[serde(default)]
    pub replication: Replication,
    #[serde(default)]
    pub chunk: Chunking,
    #[serde(default)]
    pub liveness: Liveness,
    #[serde(default)]
    pub upload: Uploads,
    #[serde(default)]
    pub repair: Repair,
    #[serde(default)]
    pub auth: shoal_common::auth::AuthConfig,
    #[serde(default)]
    pub tls: shoal_common::tls::TlsConfig,
    #[serde(default)]
    pub store: StoreConfig,
}

/// Where the catalogue lives: redb under `data_dir` unless a PostgreSQL URL is given
/// (`SHOAL_STORE__URL` or `SHOAL_STORE__URL_FILE`), which lets several trackers share it.
#[derive(Debug, Clone, Deserialize)]
pub struct StoreConfig {
    #[serde(default)]
    pub url: Option<String>,
    #[serde(default)]
    pub url_file: Option<PathBuf>,
    /// CA certificate(s), PEM, to verify the PostgreSQL server with (TLS is then always
    /// on, verify-full); unset: see [`crate::pgtls`] for what a URL may ask.
    #[serde(default)]
    pub ca_file: Option<PathBuf>,
    /// How often a replica reads the catalogue changes other replicas made.
    #[serde(default = "default_poll", with = "humantime_serde")]
    pub poll: Duration,
    /// How long catalogue log entries are kept for replicas to catch up from; the leader
    /// trims older ones. A replica further behind reloads the whole catalogue.
    #[serde(default = "default_log_retention", with = "humantime_serde")]
    pub log_retention: Duration,
}

impl Default for StoreConfig {
    fn default() -> Self {
        Self {
            url: None,
            url_file: None,
            ca_file: None,
            poll: default_poll(),
            log_retention: default_log_retention(),
        }
    }
}

impl StoreConfig {
    /// The PostgreSQL URL, if one is configured (the file wins, as for every secret),
    /// as the TLS policy makes it (see [`crate::pgtls::effective_url`]).
    pub fn url(&self) -> Result<Option<String>, crate::store::StoreError> {
        let url =
            shoal_common::config::secret(self.url.clone(), self.url_file.as_deref(), "store.url")
                .map(|u| u.filter(|u| !u.is_empty()))
                .map_err(|e| crate::store::StoreError(e.to_string()))?;
        match url {
            Some(u) if u.starts_with("postgres://") || u.starts_with("postgresql://") => {
                crate::pgtls::effective_url(&u, self.ca_file.is_some())
                    .map(Some)
                    .map_err(crate::store::StoreError)
            }
            other => Ok(other),
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
pub struct Replication {
    #[serde(default = "default_factor")]
    pub factor: u32,
    /// Highest replica count a file may ask for.
    #[serde(default = "default_max_factor")]
    pub max_factor: u32,
}

#[derive(Debug, Clone, Deserialize)]
pub struct Chunking {
    #[serde(default = "default_min_chunk")]
    pub min_bytes: u64,
    #[serde(default = "default_max_chunk")]
    pub max_bytes: u64,
    /// Largest file accepted.
    #[serde(default = "default_max_file")]
    pub max_file_bytes: u64,
}

#[derive(Debug, Clone, Deserialize)]
pub struct Liveness {
    #[serde(default = "default_heartbeat", with = "humantime_serde")]
    pub heartbeat: Duration,
    #[serde(default = "default_suspect", with = "humantime_serde")]
    pub suspect_after: Duration,
    #[serde(default = "default_dead", with = "humantime_serde")]
    pub dead_after: Duration,
}

#[derive(Debug, Clone, Deserialize)]
pub struct Uploads {
    /// An upload not committed within this time is dropped, unless the client renews
    /// it with proof of progress (a new store receipt), which restarts this time.
    #[serde(default = "default_upload_expiry", with = "humantime_serde")]
    pub expiry: Duration,
    /// The longest an upload can live, renewals included (its tickets' validity).
    #[serde(default = "default_upload_max_lifetime", with = "humantime_serde")]
    pub max_lifetime: Duration,
    /// Uploads in flight on this tracker at once; past it BeginUpload is refused
    /// (RESOURCE_EXHAUSTED with a `retry-after`).
    #[serde(default = "default_uploads_in_flight")]
    pub max_in_flight: usize,
    /// Uploads in flight at once per token (per remote address with auth off).
    #[serde(default = "default_uploads_per_token")]
    pub max_per_token: usize,
}

#[derive(Debug, Clone, Deserialize)]
pub struct Repair {
    /// How often the manager looks for work.
    #[serde(default = "default_repair_interval", with = "humantime_serde")]
    pub interval: Duration,
    /// Copies in flight at once, cluster-wide.
    #[serde(default = "default_repair_concurrency")]
    pub concurrency: usize,
    /// Copies in flight at once to or from one peer.
    #[serde(default = "default_repair_per_peer")]
    pub per_peer: usize,
    /// Cluster-wide repair bandwidth budget, bytes per second (0 = unlimited).
    #[serde(default)]
    pub bandwidth_bytes: u64,
    /// Unreferenced chunks younger than this are left alone (uploads in flight).
    #[serde(default = "default_gc_grace", with = "humantime_serde")]
    pub gc_grace: Duration,
    /// How long the copies of a peer that said it is restarting stay expected (not
    /// repaired) while it is away; 0 turns the grace off (a restart is a leave).
    #[serde(default = "default_restart_grace", with = "humantime_serde")]
    pub restart_grace: Duration,
    /// How long the tracker waits for a peer's answer to a `DeleteChunks` (unanswered,
    /// the copies stay masked from that peer's reports for 30 s).
    #[serde(default = "default_delete_timeout", with = "humantime_serde")]
    pub delete_timeout: Duration,
    /// `ReportBadChunk` calls accepted per token (per address with auth off) per
    /// minute; each makes a peer re-hash a copy.
    #[serde(default = "default_bad_reports_per_minute")]
    pub bad_reports_per_minute: u32,
}

fn default_delete_timeout() -> Duration {
    Duration::from_secs(2)
}

fn default_bad_reports_per_minute() -> u32 {
    60
}

fn default_listen() -> SocketAddr {
    "0.0.0.0:50052".parse().expect("valid literal")
}
fn default_data_dir() -> PathBuf {
    PathBuf::from(".shoal/tracker")
}
fn default_factor() -> u32 {
    3
}
fn default_max_factor() -> u32 {
    16
}
fn default_min_chunk() -> u64 {
    1 << 20
}
fn default_max_chunk() -> u64 {
    64 << 20
}
fn default_max_file() -> u64 {
    1 << 40
}
fn default_heartbeat() -> Duration {
    Duration::from_secs(2)
}
fn default_suspect() -> Duration {
    Duration::from_secs(10)
}
fn default_dead() -> Duration {
    Duration::from_secs(30)
}
fn default_upload_expiry() -> Duration {
    Duration::from_secs(3600)
}
fn default_upload_max_lifetime() -> Duration {
    Duration::from_secs(24 * 3600)
}
fn default_uploads_in_flight() -> usize {
    10_000
}
fn default_uploads_per_token() -> usize {
    1_000
}
fn default_repair_interval() -> Duration {
    Duration::from_secs(1)
}
fn default_repair_concurrency() -> usize {
    16
}
fn default_repair_per_peer() -> usize {
    8
}
fn default_poll() -> Duration {
    Duration::from_millis(200)
}
fn default_log_retention() -> Duration {
    Duration::from_secs(3600)
}
fn default_gc_grace() -> Duration {
    Duration::from_secs(600)
}
fn default_restart_grace() -> Duration {
    Duration::from_secs(600)
}

impl Default for Replication {
    fn default() -> Self {
        Self {
            factor: default_factor(),
            max_factor: default_max_factor(),
        }
    }
}
impl Default for Chunking {
    fn default() -> Self {
        Self {
            min_bytes: default_min_chunk(),
            max_bytes: default_max_chunk(),
            max_file_bytes: default_max_file(),
        }
    }
}
impl Default for Liveness {
    fn default() -> Self {
        Self {
            heartbeat: default_heartbeat(),
            suspect_after: default_suspect(),
            dead_after: default_dead(),
        }
    }
}
impl Default for Uploads {
    fn default() -> Self {
        Self {
            expiry: default_upload_expiry(),
            max_lifetime: default_upload_max_lifetime(),
            max_in_flight: default_uploads_in_flight(),
            max_per_token: default_uploads_per_token(),
        }
    }
}
impl Default for Repair {
    fn default() -> Self {
        Self {
            interval: default_repair_interval(),
            concurrency: default_repair_concurrency(),
            per_peer: default_repair_per_peer(),
            bandwidth_bytes: 0,
            gc_grace: default_gc_grace(),
            restart_grace: default_restart_grace(),
            delete_timeout: default_delete_timeout(),
            bad_reports_per_minute: default_bad_reports_per_minute(),
        }
    }
}

impl TrackerConfig {
    /// Defaults for everything (what an empty environment gives).
    pub fn for_data_dir(data_dir: PathBuf) -> Self {
        let mut c: TrackerConfig =
            shoal_common::config::from_vars(Vec::new()).expect("defaults are valid");
        c.data_dir = data_dir;
        c
    }

    pub fn from_env() -> Result<Self, ConfigError> {
        let c: TrackerConfig = shoal_common::config::from_env()?;
        c.validate()?;
        Ok(c)
    }

    pub fn validate(&self) -> Result<(), ConfigError> {
        let r = &self.replication;
        if r.factor == 0 || r.factor > r.max_factor {
            return Err(ConfigError::invalid(
                "replication.factor",
                r.factor,
                &format!("must be between 1 and {}", r.max_factor),
            ));
        }
        let c = &self.chunk;
        for (key, v) in [
            ("chunk.min_bytes", c.min_bytes),
            ("chunk.max_bytes", c.max_bytes),
        ] {
            if !v.is_power_of_two() || !(4096..=(1 << 30)).contains(&v) {
                return Err(ConfigError::invalid(
                    key,
                    v,
                    "must be a power of two between 4096 and 1073741824",
                ));
            }
        }
        if c.min_bytes > c.max_bytes {
            return Err(ConfigError::invalid(
                "chunk.min_bytes",
                c.min_bytes,
                "must not exceed SHOAL_CHUNK__MAX_BYTES",
            ));
        }
        let u = &self.upload;
        if u.max_lifetime < u.expiry {
            return Err(ConfigError::invalid(
                "upload.max_lifetime",
                humantime::format_duration(u.max_lifetime),
                "must be at least SHOAL_UPLOAD__EXPIRY",
            ));
        }
        for (key, v) in [
            ("upload.max_in_flight", u.max_in_flight),
            ("upload.max_per_token", u.max_per_token),
        ] {
            if v == 0 {
                return Err(ConfigError::invalid(key, v, "must be at least 1"));
            }
        }
        let l = &self.liveness;
        if l.heartbeat.is_zero() {
            return Err(ConfigError::invalid(
                "liveness.heartbeat",
                humantime::format_duration(l.heartbeat),
                "must be positive",
            ));
        }
        if l.suspect_after <= l.heartbeat {
            return Err(ConfigError::invalid(
                "liveness.suspect_after",
                humantime::format_duration(l.suspect_after),
                "must exceed SHOAL_LIVENESS__HEARTBEAT",
            ));
        }
        if l.dead_after <= l.suspect_after {
            return Err(ConfigError::invalid(
                "liveness.dead_after",
                humantime::format_duration(l.dead_after),
                "must exceed SHOAL_LIVENESS__SUSPECT_AFTER",
            ));
        }
        self.auth.resolve()?;
        self.tls.server()?;
        self.tls.client()?;
        match self.store.url() {
            Err(e) => return Err(ConfigError(e.0)),
            Ok(Some(u)) if !(u.starts_with("postgres://") || u.starts_with("postgresql://")) => {
                return Err(ConfigError::invalid(
                    "store.url",
                    "(hidden: it may hold a password)",
                    "expected postgres://user:password@host:port/database",
                ));
            }
            Ok(_) => {}
        }
        for (key, d) in [
            ("store.poll", self.store.poll),
            ("store.log_retention", self.store.log_retention),
        ] {
            if d.is_zero() {
                return Err(ConfigError::invalid(
                    key,
                    humantime::format_duration(d),
                    "must be positive",
                ));
            }
        }
        if self.repair.concurrency == 0 || self.repair.per_peer == 0 {
            return Err(ConfigError::invalid(
                "repair.concurrency",
                self.repair.concurrency,
                "must be positive",
            ));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn no_allowed_name_is_a_near_typo_of_a_setting() {
        let near = shoal_common::config::allowed_near_settings::<TrackerConfig>();
        assert!(near.is_empty(), "allowed names that hide a typo: {near:?}");
    }

    fn load(kv: &[(&str, &str)]) -> Result<TrackerConfig, ConfigError> {
        let c: TrackerConfig = shoal_common::config::from_vars(
            kv.iter().map(|(k, v)| (k.to_string(), v.to_string())),
        )?;
        c.validate()?;
        Ok(c)
    }

    #[test]
    fn defaults() {
        let c = load(&[]).unwrap();
        assert_eq!(c.replication.factor, 3);
        assert_eq!(c.chunk.min_bytes, 1 << 20);
        assert_eq!(c.liveness.dead_after, Duration::from_secs(30));
        assert_eq!(c.repair.restart_grace, Duration::from_secs(600));
    }

    /// Every variable the chart, compose and scripts give the tracker is a setting (or
    /// allowed), and a typo is refused naming the setting meant.
    #[test]
    fn deploy_variables_are_known_and_typos_are_not() {
        load(&[
            ("SHOAL_LISTEN_ADDR", "0.0.0.0:50052"),
            ("SHOAL_DATA_DIR", "/var/lib/shoal"),
            ("SHOAL_METRICS_ADDR", "0.0.0.0:9102"),
            ("SHOAL_LOG_FORMAT", "json"),
            ("SHOAL_REPLICATION__FACTOR", "3"),
            ("SHOAL_CHUNK__MIN_BYTES", "1048576"),
            ("SHOAL_CHUNK__MAX_BYTES", "67108864"),
            ("SHOAL_LIVENESS__HEARTBEAT", "500ms"),
            ("SHOAL_LIVENESS__SUSPECT_AFTER", "2s"),
            ("SHOAL_LIVENESS__DEAD_AFTER", "5s"),
            ("SHOAL_REPAIR__RESTART_GRACE", "5m"),
            ("SHOAL_AUTH__REQUIRED", "false"),
            ("SHOAL_AUTH__CLUSTER_TOKEN", "0123456789abcdef0"),
            ("SHOAL_STORE__POLL", "200ms"),
        ])
        .unwrap_or_else(|e| panic!("{e}"));
        let e = load(&[("SHOAL_REPLICATON__FACTOR", "2")]).unwrap_err();
        assert_eq!(
            e.to_string(),
            "invalid configuration: unknown setting SHOAL_REPLICATON__FACTOR (did you mean SHOAL_REPLICATION__FACTOR?)"
        );
        // One underscore for two: the name the compose file once used for its own knob.
        let e = load(&[("SHOAL_REPLICATION_FACTOR", "2")]).unwrap_err();
        assert_eq!(
            e.to_string(),
            "invalid configuration: unknown setting SHOAL_REPLICATION_FACTOR (did you mean SHOAL_REPLICATION__FACTOR?)"
        );
    }

    #[test]
    fn rejects_bad_values() {
        for (k, v) in [
            ("SHOAL_REPLICATION__FACTOR", "0"),
            ("SHOAL_REPLICATION__FACTOR", "x"),
            ("SHOAL_CHUNK__MIN_BYTES", "1000"),
            ("SHOAL_LIVENESS__HEARTBEAT", "0s"),
            ("SHOAL_LIVENESS__DEAD_AFTER", "1s"),
            ("SHOAL_LISTEN_ADDR", "nowhere"),
            ("SHOAL_STORE__URL", "mysql://x"),
        ] {
            let e = load(&[(k, v)]).unwrap_err().to_string();
            assert!(e.contains(k), "{k}={v}: {e}");
        }
    }
}
