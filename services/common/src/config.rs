//! Configuration from the environment: `SHOAL_` prefix, `__` for nesting
//! (`SHOAL_REPLICATION__FACTOR=3` is `replication.factor`), through the `config` crate.
//!
//! A bad value stops the service at start with one line naming the variable and the
//! value, and exit code 64 (EX_USAGE). Nothing falls back silently: an unknown `SHOAL_*`
//! variable (a typo like `SHOAL_REPLICATON__FACTOR`) is an error too, naming the
//! closest known setting, unless it is in [`ALLOWED`].

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

/// `SHOAL_*` variables a service accepts without reading them as settings: read by
/// other code (logs), by the `shoal` CLI or scripts that share a shell with services, or
/// set for every component by the Helm chart and compose (`SHOAL_DATA_DIR` on the
/// webserver, which keeps no state), or knobs of the build, compose and container
/// tooling (deploy/) that `make` exports to every recipe, `make run` included.
/// Variables starting with `SHOAL_TEST_` or `SHOAL_E2E_` belong to the test harnesses,
/// `SHOAL_COMPOSE_` to the compose file (deploy/compose). No entry may be a near-typo of
/// a setting: `SHOAL_REPLICATION_FACTOR` once was, and a tracker given it for
/// `SHOAL_REPLICATION__FACTOR` replicated 3 times without a word.
pub const ALLOWED: &[&str] = &[
    "SHOAL_LOG_FORMAT",
    "SHOAL_CONFIG",
    "SHOAL_DATA_DIR",
    "SHOAL_ENDPOINT",
    "SHOAL_TRACKER",
    "SHOAL_PROGRESS_TIMEOUT",
    "SHOAL_TOKEN",
    "SHOAL_TOKEN_FILE",
    "SHOAL_TRACE_FILE",
    "SHOAL_ROOT",
    // Build and container tooling (deploy/containers.mk, deploy/scripts, compose).
    "SHOAL_BASE_IMAGE",
    "SHOAL_SOURCE_BASE_IMAGE",
    "SHOAL_RUST_IMAGE",
    "SHOAL_IMAGE_SOURCE",
    "SHOAL_CACHE_DIR",
    "SHOAL_SERVICES",
    "SHOAL_VERSION",
    "SHOAL_DEPLOY_DIR",
    "SHOAL_UP_TIMEOUT",
    "SHOAL_RESTART_POLICY",
    "SHOAL_WEBSERVER_GRPC_PORT",
    "SHOAL_WEBSERVER_HTTP_PORT",
    "SHOAL_OTLP_ENDPOINT",
];
const ALLOWED_PREFIXES: &[&str] = &["SHOAL_TEST_", "SHOAL_E2E_", "SHOAL_COMPOSE_"];

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
    check_known::<T>(vars.keys())?;
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

/// Every setting `T` reads, as environment variable names (`SHOAL_REPLICATION__FACTOR`).
pub fn known_names<T: DeserializeOwned>() -> Vec<String> {
    let mut out = Vec::new();
    let mut todo: Vec<Vec<&'static str>> = vec![Vec::new()];
    while let Some(path) = todo.pop() {
        match probe::fields::<T>(&path) {
            Some(fields) => todo.extend(fields.iter().map(|f| {
                let mut p = path.clone();
                p.push(*f);
                p
            })),
            None if !path.is_empty() => out.push(env_name(&path.join("."))),
            None => {}
        }
    }
    out.sort();
    out
}

/// Allowed names within two edits of a setting of `T` (and not one itself), with that
/// setting: a typo of the setting spelled like them would be accepted without a word.
/// Each service's tests assert there are none.
pub fn allowed_near_settings<T: DeserializeOwned>() -> Vec<(&'static str, String)> {
    let known = known_names::<T>();
    ALLOWED
        .iter()
        .filter(|a| !known.iter().any(|k| k == *a))
        .flat_map(|a| {
            known
                .iter()
                .filter(|k| edit_distance(a, k) <= 2)
                .map(|k| (*a, k.clone()))
        })
        .collect()
}

/// Refuse `SHOAL_*` variables that are neither a setting of `T` nor allowed.
fn check_known<'a, T: DeserializeOwned>(
    vars: impl Iterator<Item = &'a String>,
) -> Result<(), ConfigError> {
    let allowed =
        |k: &str| ALLOWED.contains(&k) || ALLOWED_PREFIXES.iter().any(|p| k.starts_with(p));
    let mut unknown: Vec<&String> = vars.filter(|k| !allowed(k)).collect();
    if unknown.is_empty() {
        return Ok(());
    }
    let known = known_names::<T>();
    unknown.retain(|k| !known.contains(k));
    unknown.sort();
    let Some(var) = unknown.first() else {
        return Ok(());
    };
    let closest = known
        .iter()
        .map(|k| (edit_distance(var, k), k))
        .min()
        .filter(|(d, _)| *d <= var.len().max(8) / 3);
    Err(ConfigError(match closest {
        Some((_, k)) => format!("unknown setting {var} (did you mean {k}?)"),
        None => format!(
            "unknown setting {var} (not a setting of this service; see the README's settings table)"
        ),
    }))
}

/// Levenshtein distance over bytes (names are ASCII).
fn edit_distance(a: &str, b: &str) -> usize {
    let (a, b) = (a.as_bytes(), b.as_bytes());
    let mut prev: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.iter().enumerate() {
        let mut cur = vec![i + 1; b.len() + 1];
        for (j, cb) in b.iter().enumerate() {
            let sub = prev[j] + usize::from(ca != cb);
            cur[j + 1] = sub.min(prev[j + 1] + 1).min(cur[j] + 1);
        }
        prev = cur;
    }
    prev[b.len()]
}

/// Finding the fields of a config struct without a value: a deserializer that answers
/// the derived code's `deserialize_struct` call (which names every field) and stops.
mod probe {
    use serde::de::value::{BorrowedStrDeserializer, Error};
    use serde::de::{self, DeserializeOwned, Deserializer, MapAccess, Visitor};
    use std::cell::Cell;

    /// The fields of the struct at `path` inside `T` (None: a leaf, or no such path).
    pub fn fields<T: DeserializeOwned>(path: &[&'static str]) -> Option<&'static [&'static str]> {
        let found = Cell::new(None);
        let _ = T::deserialize(Probe {
            path,
            found: &found,
        });
        found.get()
    }

    struct Probe<'p> {
        path: &'p [&'static str],
        found: &'p Cell<Option<&'static [&'static str]>>,
    }

    impl<'de> Deserializer<'de> for Probe<'_> {
        type Error = Error;

        fn deserialize_any<V: Visitor<'de>>(self, _: V) -> Result<V::Value, Error> {
            Err(de::Error::custom("a leaf"))
        }

        fn deserialize_option<V: Visitor<'de>>(self, v: V) -> Result<V::Value, Error> {
            v.visit_some(self)
        }

        fn deserialize_struct<V: Visitor<'de>>(
            self,
            _: &'static str,
            fields: &'static [&'static str],
            v: V,
        ) -> Result<V::Value, Error> {
            match self.path.split_first() {
                None => {
                    self.found.set(Some(fields));
                    Err(de::Error::custom("found"))
                }
                Some((key, rest)) => v.visit_map(OneKey {
                    key: Some(key),
                    value: Probe {
                        path: rest,
                        found: self.found,
                    },
                }),
            }
        }

        serde::forward_to_deserialize_any! {
            bool i8 i16 i32 i64 i128 u8 u16 u32 u64 u128 f32 f64 char str string bytes
            byte_buf unit unit_struct newtype_struct seq tuple tuple_struct map enum
            identifier ignored_any
        }
    }

    /// A map with the one key on the path to descend.
    struct OneKey<'p> {
        key: Option<&'static str>,
        value: Probe<'p>,
    }

    impl<'de> MapAccess<'de> for OneKey<'_> {
        type Error = Error;

        fn next_key_seed<K: de::DeserializeSeed<'de>>(
            &mut self,
            seed: K,
        ) -> Result<Option<K::Value>, Error> {
            match self.key.take() {
                Some(k) => seed.deserialize(BorrowedStrDeserializer::new(k)).map(Some),
                None => Ok(None),
            }
        }

        fn next_value_seed<V: de::DeserializeSeed<'de>>(
            &mut self,
            seed: V,
        ) -> Result<V::Value, Error> {
            seed.deserialize(Probe {
                path: self.value.path,
                found: self.value.found,
            })
        }
    }
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
    /// Every `SHOAL_*` variable the Makefiles export reaches every service `make`
    /// starts (`make run`, `make ui-check`): each must be allowed or a setting.
    #[test]
    fn variables_make_exports_are_allowed() {
        let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
        let mut files = vec![root.join("Makefile")];
        for e in std::fs::read_dir(root.join("deploy")).expect("deploy/") {
            let p = e.expect("entry").path();
            if p.extension().is_some_and(|x| x == "mk") {
                files.push(p);
            }
        }
        let mut exported = Vec::new();
        for f in &files {
            let text = std::fs::read_to_string(f).expect("makefile");
            for line in text.lines().filter(|l| l.starts_with("export ")) {
                exported.extend(
                    line.split_whitespace()
                        .skip(1)
                        .filter(|w| w.starts_with("SHOAL_"))
                        .map(|w| w.split(['=', ' ']).next().unwrap_or(w).to_string()),
                );
            }
        }
        assert!(
            exported.iter().any(|v| v == "SHOAL_BASE_IMAGE"),
            "the scan finds what containers.mk exports: {exported:?}"
        );
        let refused: Vec<&String> = exported
            .iter()
            .filter(|v| !ALLOWED.contains(&v.as_str()))
            .collect();
        assert!(
            refused.is_empty(),
            "exported by make but refused by services: {refused:?}"
        );
    }

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
    fn known_names_walk_nested_structs() {
        assert_eq!(
            known_names::<Sample>(),
            vec![
                "SHOAL_CAPACITY_BYTES",
                "SHOAL_CHUNK__EVERY",
                "SHOAL_CHUNK__MIN_BYTES"
            ]
        );
    }

    #[test]
    fn unknown_variable_names_the_closest_setting() {
        let e = from_vars::<Sample>(vars(&[("SHOAL_CHUNK__MIN_BYTE", "1")])).unwrap_err();
        assert_eq!(
            e.to_string(),
            "invalid configuration: unknown setting SHOAL_CHUNK__MIN_BYTE (did you mean SHOAL_CHUNK__MIN_BYTES?)"
        );
        let e = from_vars::<Sample>(vars(&[("SHOAL_CHUNK", "1")])).unwrap_err();
        assert!(
            e.to_string().contains("unknown setting SHOAL_CHUNK "),
            "{e}"
        );
        let e = from_vars::<Sample>(vars(&[("SHOAL_WHATEVER_ELSE_ENTIRELY", "1")])).unwrap_err();
        assert!(!e.to_string().contains("did you mean"), "{e}");
        // Allowed: read elsewhere, or the harnesses'.
        from_vars::<Sample>(vars(&[
            ("SHOAL_LOG_FORMAT", "json"),
            ("SHOAL_TEST_STORE", "postgres"),
            ("NOT_OURS", "x"),
        ]))
        .unwrap();
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
