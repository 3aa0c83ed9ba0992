//! Configuration from the environment: `SHOAL_` prefix, `__` for nesting
//! (`SHOAL_REPLICATION__FACTOR=3` is `replication.factor`), through the `config` crate.
//!
//! A bad value stops the service at start with one line naming the variable and the
//! value, and exit code 64 (EX_USAGE). Nothing falls back silently.

use std::collections::HashMap;

use serde::de::DeserializeOwned;

/// Exit code for a configuration error (sysexits EX_USAGE).
pub const EXIT_USAGE: i32 = 64;

#[derive(Debug, thiserror::Error)]
#[error("invalid configuration: {}", one_line(.0))]
pub struct ConfigError(pub String);

/// The message stays one line whatever a value holds: control characters (a newline
/// in a variable's value) are shown escaped.
fn one_line(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        if c.is_control() {
            out.extend(c.escape_default());
        } else {
            out.push(c);
        }
    }
    out
}

impl ConfigError {
    /// A value that parsed but is out of range.
    pub fn invalid(key: &str, value: impl std::fmt::Display, why: &str) -> Self {
        ConfigError(format!("{}={value}: {why}", env_name(key)))
    }
}

/// The environment variable behind a config key (`chunk.min_bytes` → `SHOAL_CHUNK__MIN_BYTES`).
pub fn env_name(key: &str) -> String {
    format!("SHOAL_{}", key.replace('.', "__").to_uppercase())
}

/// Load `T` from the process environment.
pub fn from_env<T: DeserializeOwned>() -> Result<T, ConfigError> {
    from_vars(std::env::vars())
}

/// Load `T` from the given variables (tests pass a map instead of touching the process env).
pub fn from_vars<T: DeserializeOwned>(
    vars: impl IntoIterator<Item = (String, String)>,
) -> Result<T, ConfigError> {
    let vars: HashMap<String, String> = vars
        .into_iter()
        .filter(|(k, _)| k.starts_with("SHOAL_"))
        .collect();
    let cfg = config::Config::builder()
        .add_source(
            config::Environment::with_prefix("SHOAL")
                .prefix_separator("_")
                .separator("__")
                .source(Some(vars.clone())),
        )
        .build()
        .map_err(|e| describe(e, &vars))?;
    cfg.try_deserialize().map_err(|e| describe(e, &vars))
}

/// Read a secret given as `X` or `X_FILE` (the file wins; trailing newline trimmed).
pub fn secret(
    value: Option<String>,
    file: Option<&std::path::Path>,
    key: &str,
) -> Result<Option<String>, ConfigError> {
    match file {
        Some(path) => std::fs::read_to_string(path)
            .map(|s| Some(s.trim_end_matches(['\n', '\r']).to_string()))
            .map_err(|e| {
                ConfigError::invalid(&format!("{key}_file"), path.display(), &e.to_string())
            }),
        None => Ok(value),
    }
}

fn describe(err: config::ConfigError, vars: &HashMap<String, String>) -> ConfigError {
    use config::ConfigError as E;
    let text = err.to_string().replace('\n', " ");
    // The config crate names the key as "... for key `chunk.min_bytes` ..."; name the
    // variable and its value instead.
    let key = match &err {
        E::Type { key: Some(k), .. } => Some(k.clone()),
        _ => text
            .split("for key `")
            .nth(1)
            .and_then(|rest| rest.split('`').next())
            .map(str::to_string),
    };
    match key {
        Some(key) => {
            let var = env_name(&key);
            let value = vars.get(&var).map(String::as_str).unwrap_or("?");
            let why = text.split(" for key `").next().unwrap_or(&text);
            ConfigError(format!("{var}={value}: {why}"))
        }
        None => ConfigError(text),
    }
}

/// How chunk transfers notice a dead or frozen party (`SHOAL_TRANSFER__*`), shared by the
/// peer and the webserver (the CLI takes the same setting as a flag).
#[derive(Debug, Clone, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TransferConfig {
    /// A chunk transfer (in or out) that moves no byte for this long is abandoned and
    /// its peer treated as failed.
    #[serde(default = "default_progress_timeout", with = "humantime_serde")]
    pub progress_timeout: std::time::Duration,
}

/// The default progress deadline of a chunk transfer.
pub const DEFAULT_PROGRESS_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);

fn default_progress_timeout() -> std::time::Duration {
    DEFAULT_PROGRESS_TIMEOUT
}

impl Default for TransferConfig {
    fn default() -> Self {
        Self {
            progress_timeout: DEFAULT_PROGRESS_TIMEOUT,
        }
    }
}

impl TransferConfig {
    /// Between 10 ms and 1 hour.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let t = self.progress_timeout;
        if t < std::time::Duration::from_millis(10) || t > std::time::Duration::from_secs(3600) {
            return Err(ConfigError::invalid(
                "transfer.progress_timeout",
                format!("{t:?}"),
                "must be between 10ms and 1h",
            ));
        }
        Ok(())
    }
}

/// Print the error as one line on stderr and exit 64.
pub fn exit_on_error<T>(r: Result<T, ConfigError>) -> T {
    match r {
        Ok(t) => t,
        Err(e) => {
            eprintln!("{e}");
            std::process::exit(EXIT_USAGE);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde::Deserialize;
    use std::time::Duration;

    #[derive(Debug, Deserialize)]
    struct Sample {
        #[serde(default)]
        capacity_bytes: Option<u64>,
        #[serde(default)]
        chunk: Chunk,
    }

    #[derive(Debug, Deserialize, Default)]
    struct Chunk {
        #[serde(default, with = "humantime_serde")]
        every: Option<Duration>,
        #[serde(default)]
        min_bytes: u64,
    }

    fn vars(kv: &[(&str, &str)]) -> Vec<(String, String)> {
        kv.iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn nested_keys_and_durations() {
        let s: Sample = from_vars(vars(&[
            ("SHOAL_CAPACITY_BYTES", "1024"),
            ("SHOAL_CHUNK__MIN_BYTES", "65536"),
            ("SHOAL_CHUNK__EVERY", "500ms"),
            ("OTHER", "x"),
        ]))
        .unwrap();
        assert_eq!(s.capacity_bytes, Some(1024));
        assert_eq!(s.chunk.min_bytes, 65536);
        assert_eq!(s.chunk.every, Some(Duration::from_millis(500)));
    }

    #[test]
    fn bad_value_names_the_variable() {
        let e = from_vars::<Sample>(vars(&[("SHOAL_CAPACITY_BYTES", "abc")])).unwrap_err();
        let msg = e.to_string();
        assert!(msg.contains("SHOAL_CAPACITY_BYTES=abc"), "{msg}");
        assert!(!msg.contains('\n'));
        let e = from_vars::<Sample>(vars(&[("SHOAL_CHUNK__EVERY", "soon")])).unwrap_err();
        assert!(e.to_string().contains("SHOAL_CHUNK__EVERY=soon"), "{e}");
    }

    #[test]
    fn values_with_newlines_stay_on_one_line() {
        let e = from_vars::<Sample>(vars(&[("SHOAL_CAPACITY_BYTES", "1\n2\r")])).unwrap_err();
        let msg = e.to_string();
        assert!(msg.contains(r"SHOAL_CAPACITY_BYTES=1\n2\r"), "{msg}");
        let e = ConfigError::invalid("zone", "a\nb", "bad zone");
        assert_eq!(
            e.to_string(),
            r"invalid configuration: SHOAL_ZONE=a\nb: bad zone"
        );
    }
}
