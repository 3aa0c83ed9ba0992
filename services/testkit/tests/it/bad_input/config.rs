//! Configuration values out of range and misspelt settings: each service binary exits
//! 64 with one line on stderr naming the variable, before it binds or writes anything.

use std::time::Duration;

use super::harness::{case, one_line, run_bin, Case, Outcome};

/// Run `bin` with a clean environment plus `vars`; a config that is unexpectedly
/// valid still cannot take a real port or data dir (and is killed by the limit).
fn config_case(bin: &'static str, var: &'static str, value: &'static str) -> Case {
    let name = format!("{bin}: {var}={}", value.escape_debug());
    case(name, Outcome::Exit(64), move |c| async move {
        let data = c.dir(&format!("cfg-{bin}-{}", var.to_lowercase()));
        let r = run_with(bin, data, var, value).await?;
        if !r.stderr.contains(var) {
            return Err(format!("stderr does not name {var}: {:?}", r.stderr));
        }
        Ok(Outcome::Exit(r.code))
    })
}

/// Run `bin` with harmless valid settings plus `var=value`; stderr must be one line.
async fn run_with(
    bin: &'static str,
    data: std::path::PathBuf,
    var: &str,
    value: &str,
) -> Result<super::harness::Ran, String> {
    let mut env = vec![
        ("SHOAL_DATA_DIR".to_string(), data.display().to_string()),
        ("SHOAL_LISTEN_ADDR".to_string(), "127.0.0.1:0".to_string()),
        ("RUST_LOG".to_string(), "warn".to_string()),
    ];
    if bin == "shoal-webserver" {
        env.push(("SHOAL_HTTP_ADDR".to_string(), "127.0.0.1:0".to_string()));
    }
    env.retain(|(k, _)| k != var);
    env.push((var.to_string(), value.to_string()));
    let r = run_bin(bin, vec![], env, None, Duration::from_secs(20)).await?;
    one_line(&r.stderr)?;
    Ok(r)
}

/// A misspelt setting stops the service (exit 64) naming it and the setting meant.
fn typo_case(bin: &'static str, typo: &'static str, meant: &'static str) -> Case {
    let name = format!("{bin}: unknown {typo}");
    case(name, Outcome::Exit(64), move |c| async move {
        let data = c.dir(&format!("typo-{bin}-{}", typo.to_lowercase()));
        let r = run_with(bin, data, typo, "2").await?;
        let want = format!("unknown setting {typo} (did you mean {meant}?)");
        if !r.stderr.contains(&want) {
            return Err(format!("stderr does not say {want:?}: {:?}", r.stderr));
        }
        Ok(Outcome::Exit(r.code))
    })
}

pub fn cases() -> Vec<Case> {
    vec![
        config_case("shoal-peer", "SHOAL_CAPACITY_BYTES", "abc"),
        config_case("shoal-peer", "SHOAL_CAPACITY_BYTES", "-1"),
        config_case("shoal-peer", "SHOAL_CAPACITY_BYTES", "0"),
        config_case("shoal-peer", "SHOAL_ZONE", "no spaces allowed"),
        config_case("shoal-peer", "SHOAL_ZONE", "a\nb"),
        config_case("shoal-peer", "SHOAL_MAX_TRANSFERS", "0"),
        config_case("shoal-peer", "SHOAL_TRACKER_URL", "tracker:50052"),
        config_case("shoal-peer", "SHOAL_SCRUB__PAUSE", "soon"),
        config_case("shoal-peer", "SHOAL_ADVERTISE_ADDR", "no-port"),
        config_case("shoal-peer", "SHOAL_TRANSFER__PROGRESS_TIMEOUT", "soon"),
        config_case("shoal-peer", "SHOAL_TRANSFER__PROGRESS_TIMEOUT", "0s"),
        config_case("shoal-webserver", "SHOAL_TRANSFER__PROGRESS_TIMEOUT", "2h"),
        config_case("shoal-tracker", "SHOAL_REPLICATION__FACTOR", "0"),
        config_case("shoal-tracker", "SHOAL_REPLICATION__FACTOR", "1000"),
        config_case(
            "shoal-tracker",
            "SHOAL_REPLICATION__FACTOR",
            "99999999999999999999",
        ),
        config_case("shoal-tracker", "SHOAL_LISTEN_ADDR", "nowhere"),
        config_case("shoal-tracker", "SHOAL_CHUNK__MIN_BYTES", "1000"),
        config_case("shoal-tracker", "SHOAL_CHUNK__MAX_BYTES", "-65536"),
        config_case("shoal-tracker", "SHOAL_LIVENESS__DEAD_AFTER", "1s"),
        config_case("shoal-tracker", "SHOAL_LIVENESS__HEARTBEAT", "0s"),
        config_case("shoal-tracker", "SHOAL_REPAIR__CONCURRENCY", "0"),
        config_case("shoal-tracker", "SHOAL_AUTH__REQUIRED", "true"),
        config_case("shoal-tracker", "SHOAL_AUTH__REQUIRED", "maybe"),
        config_case("shoal-tracker", "SHOAL_AUTH__CLUSTER_TOKEN", "short"),
        config_case("shoal-tracker", "SHOAL_METRICS_ADDR", "local\rhost"),
        config_case("shoal-tracker", "SHOAL_STORE__URL", "mysql://db/shoal"),
        config_case("shoal-tracker", "SHOAL_STORE__POLL", "0s"),
        config_case("shoal-tracker", "SHOAL_STORE__LOG_RETENTION", "0s"),
        config_case("shoal-tracker", "SHOAL_STORE__LOG_RETENTION", "forever"),
        config_case("shoal-webserver", "SHOAL_DOWNLOAD_AHEAD", "0"),
        config_case("shoal-webserver", "SHOAL_TRACKER_URL", "tracker:50052"),
        config_case("shoal-webserver", "SHOAL_MAX_UPLOAD_BYTES", "0"),
        config_case("shoal-webserver", "SHOAL_HTTP_ADDR", "[::1"),
        typo_case(
            "shoal-tracker",
            "SHOAL_REPLICATON__FACTOR",
            "SHOAL_REPLICATION__FACTOR",
        ),
        typo_case("shoal-peer", "SHOAL_CAPACITY_BYTE", "SHOAL_CAPACITY_BYTES"),
        typo_case(
            "shoal-peer",
            "SHOAL_LEAVE_ON_SHUTDOWNN",
            "SHOAL_LEAVE_ON_SHUTDOWN",
        ),
        typo_case("shoal-webserver", "SHOAL_TRACKER_URLS", "SHOAL_TRACKER_URL"),
    ]
}
