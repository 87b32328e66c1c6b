//! Settings: `config/default.toml`, then `--config FILE`, then environment
//! variables, which win (docs/protocol.md 5).
//!
//! The defaults file is compiled into the binary, so the broker runs from any
//! directory, and it is also the documentation of every key: a key that is
//! not in it does not exist, and a `--config` file naming one is refused.

use serde::Deserialize;
use std::fmt;
use std::path::{Path, PathBuf};
use toml::{Table, Value};

/// The documented defaults, compiled in.
pub const DEFAULTS: &str = include_str!("../config/default.toml");

/// Keys docs/protocol.md names, read from variables of their own short names.
const SHORT_ENV: [&str; 5] = [
    "ws_port",
    "bind_addr",
    "data_dir",
    "mongodb_uri",
    "redis_url",
];

/// Every setting of the broker; `config/default.toml` documents each.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
#[allow(missing_docs)] // each field is documented in config/default.toml
pub struct Config {
    pub ws_port: u16,
    pub bind_addr: String,
    pub data_dir: PathBuf,
    pub mongodb_uri: String,
    pub mongodb_database: String,
    pub persist_batch_max: usize,
    pub persist_batch_ms: u64,
    pub persist_backlog_max: usize,
    pub sqlite_busy_timeout_ms: u64,
    pub sqlite_checkpoint_pages: u32,
    pub retention_max_age_secs: u64,
    pub retention_max_executions: u64,
    pub retention_interval_secs: u64,
    pub redis_url: String,
    pub node_id: String,
    pub redis_key_prefix: String,
    pub redis_stream_max_len: u64,
    pub redis_cluster_nodes: String,
    pub cluster_partitions: usize,
    pub cluster_store_once: bool,
    pub cluster_store_claim_idle_ms: u64,
    pub buffer_size: usize,
    pub max_buffered_executions: usize,
    pub max_buffered_bytes: usize,
    pub execution_idle_secs: u64,
    pub max_event_bytes: usize,
    pub max_replay_events: usize,
    pub max_batch_events: usize,
    pub idempotency_window_secs: u64,
    pub max_body_bytes: usize,
    pub heartbeat_interval_ms: u64,
    pub client_timeout_ms: u64,
    pub max_subscriptions: usize,
    pub max_message_bytes: usize,
    pub max_frame_bytes: usize,
    pub session_queue_bytes: usize,
    pub close_timeout_ms: u64,
    pub shutdown_timeout_ms: u64,
    pub demo_pace_ms: u64,
    pub auth_hmac_secret: Secret,
    pub auth_public_key_file: PathBuf,
    pub auth_algorithm: String,
    pub auth_timeout_ms: u64,
    pub allowed_origins: String,
    pub max_connections: usize,
    pub max_connections_per_ip: usize,
    pub request_header_timeout_ms: u64,
    pub request_body_timeout_ms: u64,
    pub max_messages_per_sec: u64,
    pub max_events_per_sec_per_producer: u64,
    pub max_events_per_sec_per_execution: u64,
    pub notify_rules_file: PathBuf,
    pub notify_secret: Secret,
    pub notify_timeout_ms: u64,
    pub notify_max_attempts: u32,
    pub notify_backoff_base_ms: u64,
    pub notify_backoff_max_ms: u64,
    pub notify_concurrency: usize,
    pub notify_poll_ms: u64,
    pub notify_keep_secs: u64,
}

/// A setting that must never be printed: its `Debug` says only whether it is set.
#[derive(Clone, Default, Deserialize)]
#[serde(transparent)]
pub struct Secret(String);

impl Secret {
    /// The value, for the one place that uses it.
    pub fn expose(&self) -> &str {
        &self.0
    }

    /// Whether it is unset.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// Its length, to check a minimum without looking at it.
    pub fn len(&self) -> usize {
        self.0.len()
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(if self.0.is_empty() {
            "<unset>"
        } else {
            "<redacted>"
        })
    }
}

/// A setting that could not be used, with where it came from.
#[derive(Debug)]
pub struct ConfigError(String);

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for ConfigError {}

/// The environment variable that overrides `key`.
pub fn env_name(key: &str) -> String {
    if SHORT_ENV.contains(&key) {
        key.to_uppercase()
    } else {
        format!("AGENT_EVENTS_{}", key.to_uppercase())
    }
}

impl Config {
    /// Loads the defaults, then `file` if given, then the environment.
    pub fn load(file: Option<&Path>) -> Result<Config, ConfigError> {
        Self::load_with(file, |name| std::env::var(name).ok())
    }

    /// As [`Config::load`], reading variables through `env` (so tests need not touch the process).
    pub fn load_with(
        file: Option<&Path>,
        env: impl Fn(&str) -> Option<String>,
    ) -> Result<Config, ConfigError> {
        let mut table: Table = DEFAULTS
            .parse()
            .map_err(|e| ConfigError(format!("built-in defaults: {e}")))?;
        if let Some(path) = file {
            merge_file(&mut table, path)?;
        }
        apply_env(&mut table, env)?;
        let config: Config = Value::Table(table)
            .try_into()
            .map_err(|e| ConfigError(format!("settings: {e}")))?;
        config.check()?;
        Ok(config)
    }

    fn check(&self) -> Result<(), ConfigError> {
        let positive = [
            ("heartbeat_interval_ms", self.heartbeat_interval_ms),
            ("client_timeout_ms", self.client_timeout_ms),
            ("max_subscriptions", self.max_subscriptions as u64),
            ("max_message_bytes", self.max_message_bytes as u64),
            ("session_queue_bytes", self.session_queue_bytes as u64),
            ("max_event_bytes", self.max_event_bytes as u64),
            ("max_batch_events", self.max_batch_events as u64),
            ("idempotency_window_secs", self.idempotency_window_secs),
            ("persist_batch_max", self.persist_batch_max as u64),
            ("persist_backlog_max", self.persist_backlog_max as u64),
            (
                "sqlite_checkpoint_pages",
                u64::from(self.sqlite_checkpoint_pages),
            ),
            ("demo_pace_ms", self.demo_pace_ms),
            ("max_connections", self.max_connections as u64),
            ("max_connections_per_ip", self.max_connections_per_ip as u64),
            ("request_header_timeout_ms", self.request_header_timeout_ms),
            ("request_body_timeout_ms", self.request_body_timeout_ms),
            ("max_messages_per_sec", self.max_messages_per_sec),
            (
                "max_events_per_sec_per_producer",
                self.max_events_per_sec_per_producer,
            ),
            ("notify_timeout_ms", self.notify_timeout_ms),
            ("notify_max_attempts", u64::from(self.notify_max_attempts)),
            ("notify_concurrency", self.notify_concurrency as u64),
            ("notify_poll_ms", self.notify_poll_ms),
            (
                "cluster_store_claim_idle_ms",
                self.cluster_store_claim_idle_ms,
            ),
        ];
        if let Some((key, _)) = positive.iter().find(|(_, value)| *value == 0) {
            return Err(ConfigError(format!("{key} must be greater than 0")));
        }
        self.check_cluster()?;
        if self.max_frame_bytes < self.max_message_bytes {
            return Err(ConfigError(
                "max_frame_bytes must be at least max_message_bytes".into(),
            ));
        }
        Ok(())
    }

    /// The MongoDB URI, if MongoDB is the store.
    pub fn mongodb_uri(&self) -> Option<&str> {
        Some(self.mongodb_uri.as_str()).filter(|uri| !uri.is_empty())
    }

    /// The Origins allowed to open WebSockets and call the API (`*`: any).
    pub fn allowed_origins(&self) -> Vec<String> {
        self.allowed_origins
            .split(',')
            .map(str::trim)
            .filter(|o| !o.is_empty())
            .map(str::to_owned)
            .collect()
    }

    /// The Redis URL, if this node joins a cluster on one Redis server.
    pub fn redis_url(&self) -> Option<&str> {
        Some(self.redis_url.as_str()).filter(|url| !url.is_empty())
    }

    /// The seed nodes, if this node joins a cluster on a Redis Cluster.
    pub fn redis_cluster_nodes(&self) -> Vec<&str> {
        self.redis_cluster_nodes
            .split(',')
            .map(str::trim)
            .filter(|url| !url.is_empty())
            .collect()
    }

    /// The cluster settings fit together: one kind of Redis, a partition
    /// count in range.
    fn check_cluster(&self) -> Result<(), ConfigError> {
        use agent_events_actors::cluster_keys::MAX_PARTITIONS;
        if self.redis_url().is_some() && !self.redis_cluster_nodes().is_empty() {
            return Err(ConfigError(
                "set either redis_url (one Redis server) or redis_cluster_nodes (a Redis Cluster), not both".into(),
            ));
        }
        if self.cluster_store_once && self.mongodb_uri().is_none() {
            return Err(ConfigError(
                "cluster_store_once needs a store every node shares: set mongodb_uri (with SQLite every node stores every event in its own file)".into(),
            ));
        }
        let clustered = self.redis_url().is_some() || !self.redis_cluster_nodes().is_empty();
        if !clustered && (self.cluster_store_once || self.cluster_partitions > 1) {
            return Err(ConfigError(
                "cluster_store_once and cluster_partitions are cluster settings: set redis_url or redis_cluster_nodes too".into(),
            ));
        }
        let min_claim_idle = agent_events_actors::stream_store::MIN_CLAIM_IDLE.as_millis() as u64;
        // Past ten minutes a dead node's partitions would go unstored for longer
        // than anyone would wait to see them in a replay.
        let max_claim_idle = 600_000;
        if !(min_claim_idle..=max_claim_idle).contains(&self.cluster_store_claim_idle_ms) {
            return Err(ConfigError(format!(
                "cluster_store_claim_idle_ms must be between {min_claim_idle} and {max_claim_idle}, not {}",
                self.cluster_store_claim_idle_ms
            )));
        }
        if !(1..=MAX_PARTITIONS).contains(&self.cluster_partitions) {
            return Err(ConfigError(format!(
                "cluster_partitions must be between 1 and {MAX_PARTITIONS}, not {}",
                self.cluster_partitions
            )));
        }
        Ok(())
    }
}

fn merge_file(table: &mut Table, path: &Path) -> Result<(), ConfigError> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| ConfigError(format!("--config {}: {e}", path.display())))?;
    let overrides: Table = text
        .parse()
        .map_err(|e| ConfigError(format!("--config {}: {e}", path.display())))?;
    for (key, value) in overrides {
        if !table.contains_key(&key) {
            return Err(ConfigError(format!(
                "--config {}: unknown setting `{key}` (see config/default.toml)",
                path.display()
            )));
        }
        table.insert(key, value);
    }
    Ok(())
}

/// Replaces each key whose variable is set, parsed as the default's type.
fn apply_env(table: &mut Table, env: impl Fn(&str) -> Option<String>) -> Result<(), ConfigError> {
    for (key, value) in table.iter_mut() {
        let name = env_name(key);
        let Some(text) = env(&name) else { continue };
        *value = match value {
            Value::Integer(_) => text
                .trim()
                .parse::<i64>()
                .map(Value::Integer)
                .map_err(|_| ConfigError(format!("{name}={text}: expected a whole number")))?,
            Value::Boolean(_) => text
                .trim()
                .parse::<bool>()
                .map(Value::Boolean)
                .map_err(|_| ConfigError(format!("{name}={text}: expected true or false")))?,
            _ => Value::String(text),
        };
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn load(env: &[(&str, &str)], file: Option<&Path>) -> Result<Config, ConfigError> {
        let env: HashMap<String, String> = env
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        Config::load_with(file, |name| env.get(name).cloned())
    }

    #[test]
    fn defaults_are_the_protocols() {
        let config = load(&[], None).unwrap();
        assert_eq!(config.ws_port, 3001);
        assert_eq!(config.bind_addr, "127.0.0.1");
        assert_eq!(config.buffer_size, 100);
        assert_eq!(config.heartbeat_interval_ms, 30_000);
        assert_eq!(config.client_timeout_ms, 60_000);
        assert_eq!(config.mongodb_uri(), None);
        assert_eq!(config.redis_url(), None);
    }

    #[test]
    fn env_wins_over_file_which_wins_over_defaults() {
        let dir = std::env::temp_dir().join(format!("ae-config-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let file = dir.join("c.toml");
        std::fs::write(&file, "ws_port = 4000\nbuffer_size = 7\n").unwrap();
        let config = load(
            &[("WS_PORT", "5000"), ("AGENT_EVENTS_MAX_SUBSCRIPTIONS", "3")],
            Some(&file),
        )
        .unwrap();
        assert_eq!(config.ws_port, 5000);
        assert_eq!(config.buffer_size, 7);
        assert_eq!(config.max_subscriptions, 3);
        std::fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn secrets_never_print() {
        let config = load(
            &[(
                "AGENT_EVENTS_AUTH_HMAC_SECRET",
                "very-secret-value-0123456789abcdef",
            )],
            None,
        )
        .unwrap();
        let printed = format!("{config:?}");
        assert!(!printed.contains("very-secret"), "{printed}");
        assert!(printed.contains("<redacted>"));
    }

    #[test]
    fn mistakes_are_refused_with_the_name() {
        let err = load(&[("WS_PORT", "lots")], None).unwrap_err().to_string();
        assert!(err.contains("WS_PORT=lots"), "{err}");
        let err = load(&[("AGENT_EVENTS_MAX_SUBSCRIPTIONS", "0")], None)
            .unwrap_err()
            .to_string();
        assert!(err.contains("max_subscriptions"), "{err}");
        let dir = std::env::temp_dir().join(format!("ae-config-typo-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let file = dir.join("c.toml");
        std::fs::write(&file, "ws_prot = 1\n").unwrap();
        let err = load(&[], Some(&file)).unwrap_err().to_string();
        assert!(err.contains("unknown setting `ws_prot`"), "{err}");
        std::fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn cluster_settings_that_do_not_fit_are_refused() {
        let err = load(
            &[
                ("REDIS_URL", "redis://127.0.0.1:6379"),
                ("AGENT_EVENTS_REDIS_CLUSTER_NODES", "redis://127.0.0.1:7000"),
            ],
            None,
        )
        .unwrap_err()
        .to_string();
        assert!(err.contains("not both"), "{err}");
        let redis = ("REDIS_URL", "redis://127.0.0.1:6379");
        for partitions in ["0", "1025"] {
            let err = load(
                &[redis, ("AGENT_EVENTS_CLUSTER_PARTITIONS", partitions)],
                None,
            )
            .unwrap_err()
            .to_string();
            assert!(
                err.contains("cluster_partitions must be between 1 and 1024"),
                "{err}"
            );
        }
        let config = load(
            &[(
                "AGENT_EVENTS_REDIS_CLUSTER_NODES",
                " redis://a:7000, redis://b:7000 ,",
            )],
            None,
        )
        .unwrap();
        assert_eq!(
            config.redis_cluster_nodes(),
            ["redis://a:7000", "redis://b:7000"]
        );
        assert_eq!(config.cluster_partitions, 1);
        let err = load(&[("AGENT_EVENTS_CLUSTER_STORE_ONCE", "true")], None)
            .unwrap_err()
            .to_string();
        assert!(err.contains("cluster_store_once needs"), "{err}");
        // Cluster settings without a cluster would silently do nothing.
        let mongodb = ("MONGODB_URI", "mongodb://127.0.0.1:27017");
        for setting in [
            ("AGENT_EVENTS_CLUSTER_PARTITIONS", "4"),
            ("AGENT_EVENTS_CLUSTER_STORE_ONCE", "true"),
        ] {
            let err = load(&[mongodb, setting], None).unwrap_err().to_string();
            assert!(err.contains("are cluster settings"), "{setting:?}: {err}");
            assert!(
                load(&[mongodb, redis, setting], None).is_ok(),
                "{setting:?}"
            );
        }
        for idle in ["100", "3600000"] {
            let err = load(&[("AGENT_EVENTS_CLUSTER_STORE_CLAIM_IDLE_MS", idle)], None)
                .unwrap_err()
                .to_string();
            assert!(
                err.contains("cluster_store_claim_idle_ms must be between"),
                "{err}"
            );
        }
    }

    #[test]
    fn every_default_key_is_documented_with_its_variable() {
        let table: Table = DEFAULTS.parse().unwrap();
        for key in table.keys() {
            assert!(
                DEFAULTS.contains(&format!("({})", env_name(key))),
                "{key} lacks its variable in default.toml"
            );
        }
    }
}
