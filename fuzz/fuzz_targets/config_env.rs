//! Configuration from the environment, for the tracker, the peer and the webserver:
//! any set of `SHOAL_*` variables with any values loads or fails with a one-line error
//! naming a variable, and never panics. Keys come mostly from the real ones (so the
//! fuzzer reaches validation) and sometimes are made up.
#![no_main]

use arbitrary::Arbitrary;
use libfuzzer_sys::fuzz_target;

const KEYS: &[&str] = &[
    "SHOAL_LISTEN_ADDR",
    "SHOAL_HTTP_ADDR",
    "SHOAL_ADVERTISE_ADDR",
    "SHOAL_DATA_DIR",
    "SHOAL_METRICS_ADDR",
    "SHOAL_TRACKER_URL",
    "SHOAL_TRACKER_PUBLIC_URL",
    "SHOAL_ZONE",
    "SHOAL_CAPACITY_BYTES",
    "SHOAL_MAX_TRANSFERS",
    "SHOAL_SHUTDOWN_TIMEOUT",
    "SHOAL_SCRUB__RATE_BYTES",
    "SHOAL_SCRUB__PAUSE",
    "SHOAL_REPLICATION__FACTOR",
    "SHOAL_REPLICATION__MAX_FACTOR",
    "SHOAL_CHUNK__MIN_BYTES",
    "SHOAL_CHUNK__MAX_BYTES",
    "SHOAL_CHUNK__MAX_FILE_BYTES",
    "SHOAL_LIVENESS__HEARTBEAT",
    "SHOAL_LIVENESS__SUSPECT_AFTER",
    "SHOAL_LIVENESS__DEAD_AFTER",
    "SHOAL_UPLOAD__EXPIRY",
    "SHOAL_REPAIR__INTERVAL",
    "SHOAL_REPAIR__CONCURRENCY",
    "SHOAL_REPAIR__PER_PEER",
    "SHOAL_REPAIR__BANDWIDTH_BYTES",
    "SHOAL_REPAIR__GC_GRACE",
    "SHOAL_AUTH__REQUIRED",
    "SHOAL_AUTH__CLUSTER_TOKEN",
    "SHOAL_AUTH__READ_TOKEN",
    "SHOAL_AUTH__WRITE_TOKEN",
    "SHOAL_DOWNLOAD_AHEAD",
    "SHOAL_MAX_UPLOAD_BYTES",
    "SHOAL_UPLOAD_BUFFER_BYTES",
    "SHOAL_TRACKER_PROBE_INTERVAL",
    "SHOAL_TRACKER_UNREACHABLE_AFTER",
    "SHOAL_REPLICATION",
    "SHOAL_CHUNK",
    "SHOAL_",
    "SHOAL__",
];

#[derive(Arbitrary, Debug)]
enum Key {
    Known(u8),
    /// `SHOAL_` + anything: nesting separators, case, empty segments.
    Made(String),
}

#[derive(Arbitrary, Debug)]
struct Input {
    vars: Vec<(Key, String)>,
}

/// Variables that name files are left out: reading `/dev/zero` as a token is the
/// operator's choice, not input this target is about.
fn names_a_file(k: &str) -> bool {
    let k = k.to_ascii_uppercase();
    k.contains("FILE") || k.contains("TLS")
}

fn one_line(e: &shoal_common::config::ConfigError) {
    let msg = e.to_string();
    assert!(!msg.contains('\n'), "multi-line config error: {msg:?}");
}

fuzz_target!(|input: Input| {
    let vars: Vec<(String, String)> = input
        .vars
        .into_iter()
        .map(|(k, v)| {
            let k = match k {
                Key::Known(i) => KEYS[i as usize % KEYS.len()].to_string(),
                Key::Made(s) => format!("SHOAL_{s}"),
            };
            (k, v)
        })
        .filter(|(k, _)| !names_a_file(k))
        .collect();

    match shoal_common::config::from_vars::<shoal_tracker::TrackerConfig>(vars.clone()) {
        Ok(c) => {
            if let Err(e) = c.validate() {
                one_line(&e);
            }
        }
        Err(e) => one_line(&e),
    }
    match shoal_common::config::from_vars::<shoal_peer::PeerConfig>(vars.clone()) {
        Ok(mut c) => {
            if let Err(e) = c.resolve() {
                one_line(&e);
            }
        }
        Err(e) => one_line(&e),
    }
    match shoal_common::config::from_vars::<shoal_webserver::WebserverConfig>(vars) {
        Ok(c) => {
            if let Err(e) = c.validate() {
                one_line(&e);
            }
        }
        Err(e) => one_line(&e),
    }
});
