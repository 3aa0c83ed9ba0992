//! Peer configuration (`SHOAL_*` environment variables).

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use serde::Deserialize;
use shoal_common::config::ConfigError;

#[derive(Debug, Clone, Deserialize)]
pub struct PeerConfig {
    #[serde(default = "default_listen")]
    pub listen_addr: SocketAddr,
    /// What other peers and clients dial; defaults to the listen address
    /// (127.0.0.1 when listening on all interfaces).
    #[serde(default)]
    pub advertise_addr: Option<String>,
    #[serde(default = "default_tracker")]
    pub tracker_url: String,
    #[serde(default = "default_data_dir")]
    pub data_dir: PathBuf,
    #[serde(default = "default_zone")]
    pub zone: String,
    /// A file holding the zone (written by an init step in Kubernetes); wins over `zone`.
    #[serde(default)]
    pub zone_file: Option<PathBuf>,
    /// Bytes this peer offers; default: the bytes of the chunks already stored plus the
    /// free space of the data dir's volume at start.
    #[serde(default)]
    pub capacity_bytes: Option<u64>,
    /// On SIGTERM, leave the cluster for good (its copies are repaired at once) instead
    /// of telling the tracker it is restarting (copies expected back within the grace).
    #[serde(default)]
    pub leave_on_shutdown: bool,
    /// Write chunk files with `O_DIRECT` (past the page cache; see `store/direct.rs`);
    /// a filesystem that refuses it (tmpfs) gets buffered writes. A chunk is written
    /// once and fsynced before it is acknowledged: the page cache buys nothing on the
    /// way in (docs/benchmarks.md, issue 17).
    #[serde(default = "yes")]
    pub direct_writes: bool,
    /// Read chunk files with `O_DIRECT` into pooled buffers lent out as the messages
    /// (see `store::ChunkReader`); a filesystem that refuses it gets cached reads.
    #[serde(default = "yes")]
    pub direct_reads: bool,
    #[serde(default)]
    pub metrics_addr: Option<SocketAddr>,
    #[serde(default)]
    pub scrub: Scrub,
    /// Chunk writes (PutChunk, ReplicateChunk) this peer serves at once; more get
    /// RESOURCE_EXHAUSTED and the client moves to another replica.
    #[serde(default = "default_max_transfers")]
    pub max_transfers: u32,
    /// Chunks per message when the inventory is sent to the tracker: a larger inventory
    /// goes in parts (the tracker swaps it in when the last part arrives).
    #[serde(default = "default_inventory_part")]
    pub inventory_part_chunks: usize,
    /// Chunk reads (GetChunk streams) served at once, counted apart from writes so
    /// readers (a read token) can never take the slots uploads need. A stream that
    /// takes no byte for `transfer.progress_timeout` gives its slot back.
    #[serde(default = "default_max_transfers")]
    pub max_reads: u32,
    #[serde(default)]
    pub auth: shoal_common::auth::AuthConfig,
    #[serde(default)]
    pub tls: shoal_common::tls::TlsConfig,
    /// Progress deadlines of chunk transfers (`SHOAL_TRANSFER__PROGRESS_TIMEOUT`).
    #[serde(default)]
    pub transfer: shoal_common::config::TransferConfig,
    /// Fault injection for in-process tests; never set from the environment.
    #[serde(skip)]
    pub faults: Option<std::sync::Arc<crate::service::Faults>>,
    /// On SIGTERM, how long in-flight transfers may take before the peer leaves.
    #[serde(default = "default_drain_timeout", with = "humantime_serde")]
    pub shutdown_timeout: Duration,
}

#[derive(Debug, Clone, Deserialize)]
pub struct Scrub {
    /// Re-hash rate in bytes per second (0 = scrub off).
    #[serde(default = "default_scrub_rate")]
    pub rate_bytes: u64,
    /// Pause between two full passes.
    #[serde(default = "default_scrub_pause", with = "humantime_serde")]
    pub pause: Duration,
}

fn default_listen() -> SocketAddr {
    "0.0.0.0:50053".parse().expect("valid literal")
}
fn default_tracker() -> String {
    "http://127.0.0.1:50052".into()
}
fn default_data_dir() -> PathBuf {
    PathBuf::from(".shoal/peer")
}
fn default_zone() -> String {
    "default".into()
}
fn default_scrub_rate() -> u64 {
    64 << 20
}
fn default_scrub_pause() -> Duration {
    Duration::from_secs(3600)
}
fn default_inventory_part() -> usize {
    100_000
}

fn default_max_transfers() -> u32 {
    256
}
fn default_drain_timeout() -> Duration {
    Duration::from_secs(30)
}
fn yes() -> bool {
    true
}

impl Default for Scrub {
    fn default() -> Self {
        Self {
            rate_bytes: default_scrub_rate(),
            pause: default_scrub_pause(),
        }
    }
}

impl PeerConfig {
    pub fn from_env() -> Result<Self, ConfigError> {
        let mut c: PeerConfig = shoal_common::config::from_env()?;
        c.resolve()?;
        Ok(c)
    }

    /// Defaults (what an empty environment gives) for tests.
    pub fn for_test(data_dir: PathBuf, tracker_url: String, zone: &str) -> Self {
        let mut c: PeerConfig =
            shoal_common::config::from_vars(Vec::new()).expect("defaults are valid");
        c.data_dir = data_dir;
        c.tracker_url = tracker_url;
        c.zone = zone.to_string();
        c.listen_addr = "127.0.0.1:0".parse().expect("valid literal");
        c
    }

    /// Read the zone file and check values.
    pub fn resolve(&mut self) -> Result<(), ConfigError> {
        if let Some(f) = &self.zone_file {
            let z = std::fs::read_to_string(f)
                .map_err(|e| ConfigError::invalid("zone_file", f.display(), &e.to_string()))?;
            let z = z.trim();
            if !z.is_empty() {
                self.zone = z.to_string();
            }
        }
        if self.zone.is_empty()
            || self.zone.len() > 64
            || !self
                .zone
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c))
        {
            return Err(ConfigError::invalid(
                "zone",
                &self.zone,
                "1-64 letters, digits, '-', '_' or '.'",
            ));
        }
        if let Some(a) = &self.advertise_addr {
            if a.rsplit_once(':')
                .and_then(|(h, p)| (!h.is_empty()).then_some(p))
                .and_then(|p| p.parse::<u16>().ok())
                .is_none()
            {
                return Err(ConfigError::invalid(
                    "advertise_addr",
                    a,
                    "expected host:port",
                ));
            }
        }
        self.transfer.validate()?;
        self.auth.resolve()?;
        self.tls.check_urls("tracker_url", &self.tracker_url)?;
        self.tls.server()?;
        self.tls.client()?;
        if self.max_transfers == 0 {
            return Err(ConfigError::invalid("max_transfers", 0, "must be positive"));
        }
        if self.capacity_bytes == Some(0) {
            return Err(ConfigError::invalid(
                "capacity_bytes",
                0,
                "must be positive",
            ));
        }
        if !self
            .tracker_url
            .split(',')
            .all(|u| u.trim().starts_with("http://") || u.trim().starts_with("https://"))
        {
            return Err(ConfigError::invalid(
                "tracker_url",
                &self.tracker_url,
                "expected http://host:port",
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
        let near = shoal_common::config::allowed_near_settings::<PeerConfig>();
        assert!(near.is_empty(), "allowed names that hide a typo: {near:?}");
    }

    fn load(kv: &[(&str, &str)]) -> Result<PeerConfig, ConfigError> {
        let mut c: PeerConfig = shoal_common::config::from_vars(
            kv.iter().map(|(k, v)| (k.to_string(), v.to_string())),
        )?;
        c.resolve()?;
        Ok(c)
    }

    /// What the chart, compose and scripts give a peer is accepted; a typo is not.
    #[test]
    fn deploy_variables_are_known_and_typos_are_not() {
        let c = load(&[
            ("SHOAL_LISTEN_ADDR", "0.0.0.0:50053"),
            ("SHOAL_ADVERTISE_ADDR", "peer1:50053"),
            ("SHOAL_TRACKER_URL", "http://tracker:50052"),
            ("SHOAL_DATA_DIR", "/var/lib/shoal"),
            ("SHOAL_METRICS_ADDR", "0.0.0.0:9103"),
            ("SHOAL_SHUTDOWN_TIMEOUT", "10s"),
            ("SHOAL_CAPACITY_BYTES", "1073741824"),
            ("SHOAL_ZONE", "a"),
            ("SHOAL_LOG_FORMAT", "json"),
            ("SHOAL_LEAVE_ON_SHUTDOWN", "true"),
            ("SHOAL_SCRUB__RATE_BYTES", "0"),
        ])
        .unwrap_or_else(|e| panic!("{e}"));
        assert!(c.leave_on_shutdown);
        assert!(
            !load(&[])
                .unwrap_or_else(|e| panic!("{e}"))
                .leave_on_shutdown
        );
        // O_DIRECT chunk writes by default; buffered on request.
        assert!(load(&[]).unwrap_or_else(|e| panic!("{e}")).direct_writes);
        assert!(
            !load(&[("SHOAL_DIRECT_WRITES", "false")])
                .unwrap_or_else(|e| panic!("{e}"))
                .direct_writes
        );
        assert!(load(&[]).unwrap_or_else(|e| panic!("{e}")).direct_reads);
        assert!(
            !load(&[("SHOAL_DIRECT_READS", "false")])
                .unwrap_or_else(|e| panic!("{e}"))
                .direct_reads
        );
        let e = load(&[("SHOAL_LEAVE_ON_SHUTDOW", "true")]).unwrap_err();
        assert!(
            e.to_string()
                .contains("did you mean SHOAL_LEAVE_ON_SHUTDOWN?"),
            "{e}"
        );
    }
}
