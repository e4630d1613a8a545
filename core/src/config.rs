//! The deployment topology and settings, loaded from `rps.toml`.
//!
//! Config as data: serde structs that reject unknown keys, a doc comment on
//! every field, and [`Config::validate`] for what serde cannot check (every
//! shard hosted exactly once, unique server names). Only `shard_count`,
//! `redis.url`, `api.bind` and `servers` are required; the rest has defaults.

use crate::event::ShardId;
use serde::{Deserialize, Serialize};
use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read config file {path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("config file {path}: {message}")]
    Parse { path: PathBuf, message: String },
    #[error("config file {path}: {message}")]
    Invalid { path: PathBuf, message: String },
}

/// The whole of `rps.toml`.
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// Number of logical shards `S`; a match lives in shard `player_a_id mod S`.
    pub shard_count: u16,
    /// Shard `n` is the database `{database_prefix}{n}` on its server.
    #[serde(default = "default_database_prefix")]
    pub database_prefix: String,
    pub redis: RedisConfig,
    pub api: ApiConfig,
    /// The MySQL servers and the shards each one hosts.
    pub servers: Vec<ServerConfig>,
    #[serde(default)]
    pub cdc: CdcConfig,
    #[serde(default)]
    pub projector: ProjectorConfig,
    #[serde(default)]
    pub compensator: CompensatorConfig,
}

#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct RedisConfig {
    /// `redis://host:port[/db]`.
    pub url: String,
    /// Every key of the pipeline starts with `{prefix}:`; lets several
    /// deployments (or tests) share one Redis.
    #[serde(default = "default_redis_prefix")]
    pub prefix: String,
}

#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct ApiConfig {
    /// Address the leaderboard API listens on (it also serves `/metrics`).
    pub bind: String,
}

#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct ServerConfig {
    /// Stable name, used in checkpoints, source coordinates and metrics.
    pub name: String,
    /// The pipeline's least-privilege account (replication, SELECT, INSERT).
    pub url: String,
    /// An account allowed to create databases and users; only `rpsctl init`
    /// uses it. Without it, `init` cannot run against this server.
    #[serde(default)]
    pub admin_url: Option<String>,
    /// The logical shards whose databases live on this server.
    pub shards: Vec<ShardId>,
}

#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct CdcConfig {
    /// The reader of the i-th server registers as replica `server_id_base + i`;
    /// must not collide with any real server id.
    pub server_id_base: u32,
    /// Heartbeat period requested from the server, so lag is known when idle.
    pub heartbeat_ms: u64,
    /// Rows published (and checkpointed) per atomic step inside a large
    /// transaction; bounds memory.
    pub batch_rows: usize,
    /// Prometheus endpoint of a stand-alone `rpsctl cdc-reader`.
    pub metrics_bind: Option<String>,
    /// When the binlog at a checkpoint was purged, ask the recovery
    /// supervisor to rebuild from consistent snapshots (the events are still
    /// in the tables) instead of stopping that server's reader for an
    /// operator.
    pub resnapshot_when_purged: bool,
    /// Stream entries younger than this are never trimmed, so a replay's
    /// catch-up finds them. They are most of Redis' data set under a steady
    /// load, and so most of what every AOF rewrite writes.
    pub stream_retain_secs: u64,
}

impl Default for CdcConfig {
    fn default() -> Self {
        CdcConfig {
            server_id_base: 4200,
            heartbeat_ms: 1000,
            batch_rows: 4096,
            metrics_bind: None,
            resnapshot_when_purged: true,
            stream_retain_secs: 600,
        }
    }
}

#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct ProjectorConfig {
    /// Stream entries read and applied per atomic step.
    pub batch_size: usize,
    /// How long a read waits for new entries.
    pub block_ms: u64,
    /// Pending entries idle this long are taken over from a dead consumer.
    pub claim_idle_ms: u64,
    /// Prometheus endpoint of a stand-alone `rpsctl projector`.
    pub metrics_bind: Option<String>,
}

impl Default for ProjectorConfig {
    fn default() -> Self {
        ProjectorConfig {
            batch_size: 2000,
            block_ms: 1000,
            claim_idle_ms: 10_000,
            metrics_bind: None,
        }
    }
}

#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct CompensatorConfig {
    /// A claimed deadline returns to the set if not settled within the lease.
    pub lease_ms: u64,
    /// First retry after a failed append.
    pub retry_initial_ms: u64,
    /// Retries back off by doubling up to this.
    pub retry_max_ms: u64,
    /// Attempts before a deadline goes to the dead letter.
    pub max_attempts: u32,
    /// Deadlines claimed per atomic step.
    pub claim_batch: usize,
    /// `innodb_lock_wait_timeout` (seconds, at least 1) of the compensator's
    /// MySQL sessions: an append blocked by a row lock (a prepared XA branch
    /// holding the match) fails after this long and is retried on the
    /// schedule, instead of holding a worker for the server's 50 s.
    pub lock_wait_secs: u32,
    /// Prometheus endpoint of a stand-alone `rpsctl compensator`.
    pub metrics_bind: Option<String>,
}

impl Default for CompensatorConfig {
    fn default() -> Self {
        CompensatorConfig {
            lease_ms: 30_000,
            retry_initial_ms: 5_000,
            retry_max_ms: 60_000,
            max_attempts: 4,
            claim_batch: 512,
            lock_wait_secs: 3,
            metrics_bind: None,
        }
    }
}

fn default_database_prefix() -> String {
    "rps_shard_".to_string()
}

fn default_redis_prefix() -> String {
    "rps".to_string()
}

impl Config {
    /// Reads and validates a config file.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Io {
            path: path.to_path_buf(),
            source,
        })?;
        Self::parse(&text, path)
    }

    /// Parses and validates config text; `path` only names it in errors.
    pub fn parse(text: &str, path: &Path) -> Result<Config, ConfigError> {
        let config: Config = toml::from_str(text).map_err(|e| ConfigError::Parse {
            path: path.to_path_buf(),
            message: e.to_string(),
        })?;
        config.validate().map_err(|message| ConfigError::Invalid {
            path: path.to_path_buf(),
            message,
        })?;
        Ok(config)
    }

    /// What serde cannot check: the topology hosts every shard exactly once.
    pub fn validate(&self) -> Result<(), String> {
        if self.shard_count == 0 {
            return Err("`shard_count` must be at least 1".into());
        }
        if self.servers.is_empty() {
            return Err("`servers` must name at least one server".into());
        }
        let mut names = BTreeSet::new();
        let mut hosted = BTreeSet::new();
        for s in &self.servers {
            if !names.insert(s.name.as_str()) {
                return Err(format!("server name `{}` appears twice", s.name));
            }
            for &shard in &s.shards {
                if shard >= self.shard_count {
                    return Err(format!(
                        "server `{}` lists shard {shard}, but `shard_count` is {}",
                        s.name, self.shard_count
                    ));
                }
                if !hosted.insert(shard) {
                    return Err(format!("shard {shard} is listed by more than one server"));
                }
            }
        }
        let missing: Vec<_> = (0..self.shard_count)
            .filter(|s| !hosted.contains(s))
            .collect();
        if !missing.is_empty() {
            return Err(format!("shards {missing:?} are hosted by no server"));
        }
        if self.redis.prefix.is_empty() || self.redis.prefix.contains(['{', '}']) {
            return Err("`redis.prefix` must be non-empty and contain no braces".into());
        }
        Ok(())
    }

    /// The database that holds a shard.
    pub fn database(&self, shard: ShardId) -> String {
        format!("{}{shard}", self.database_prefix)
    }

    /// The shard a database holds, if it is one of ours.
    pub fn shard_of_database(&self, db: &str) -> Option<ShardId> {
        let n: ShardId = db.strip_prefix(&self.database_prefix)?.parse().ok()?;
        (n < self.shard_count).then_some(n)
    }

    /// The server that hosts a shard.
    pub fn server_of(&self, shard: ShardId) -> &ServerConfig {
        self.servers
            .iter()
            .find(|s| s.shards.contains(&shard))
            .expect("validated: every shard is hosted")
    }

    pub fn server(&self, name: &str) -> Option<&ServerConfig> {
        self.servers.iter().find(|s| s.name == name)
    }

    /// The config as `rps.toml` text (for tools and tests that hand a
    /// generated topology to `rpsctl`).
    pub fn to_toml(&self) -> String {
        toml::to_string(self).unwrap_or_default()
    }

    pub fn keys(&self) -> crate::keys::Keys {
        crate::keys::Keys::new(&self.redis.prefix)
    }
}

/// Whether a table name is one the pipeline follows: `match_result_events`
/// or a season table `match_result_events_<anything>`.
pub fn is_event_table(name: &str) -> bool {
    name == "match_result_events" || name.starts_with("match_result_events_")
}

#[cfg(test)]
mod tests {
    use super::*;

    const EXAMPLE: &str = r#"
shard_count = 4
[redis]
url = "redis://127.0.0.1:6380"
[api]
bind = "127.0.0.1:8080"
[[servers]]
name = "a"
url = "mysql://u:p@127.0.0.1:3307"
shards = [0, 2]
[[servers]]
name = "b"
url = "mysql://u:p@127.0.0.1:3308"
shards = [1, 3]
"#;

    fn parse(s: &str) -> Result<Config, ConfigError> {
        Config::parse(s, Path::new("test.toml"))
    }

    #[test]
    fn example_parses_with_defaults() {
        let c = parse(EXAMPLE).unwrap();
        assert_eq!(c.shard_count, 4);
        assert_eq!(c.redis.prefix, "rps");
        assert_eq!(c.database(3), "rps_shard_3");
        assert_eq!(c.shard_of_database("rps_shard_3"), Some(3));
        assert_eq!(c.shard_of_database("rps_shard_9"), None);
        assert_eq!(c.server_of(3).name, "b");
        assert_eq!(c.compensator.max_attempts, 4);
        assert_eq!(c.cdc.stream_retain_secs, 600);
    }

    #[test]
    fn repository_config_parses() {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../rps.toml");
        let c = Config::load(&path).unwrap();
        assert_eq!(c.shard_count, 8);
        assert_eq!(c.servers.len(), 2);
    }

    #[test]
    fn docker_deployment_is_consistent() {
        let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
        let c = Config::load(&root.join("docker/rps.toml")).unwrap();
        let compose = std::fs::read_to_string(root.join("docker/compose.yml")).unwrap();
        for s in &c.servers {
            let host = s.url.split('@').nth(1).unwrap().split(':').next().unwrap();
            assert!(
                compose.contains(&format!("\n  {host}:\n")),
                "compose lacks service {host}"
            );
        }
        assert!(compose.contains("\n  redis:\n"));
        // Every compose server mounts the settings the pipeline requires,
        // and that file carries them.
        assert_eq!(
            compose
                .matches("../sql/mysql.cnf:/etc/mysql/conf.d/rps.cnf:ro")
                .count(),
            c.servers.len()
        );
        let cnf = std::fs::read_to_string(root.join("sql/mysql.cnf")).unwrap();
        for setting in [
            "binlog_format             = ROW",
            "binlog_row_image          = FULL",
            "binlog_row_metadata       = FULL",
            "gtid_mode                 = ON",
            "enforce_gtid_consistency  = ON",
        ] {
            assert!(cnf.contains(setting), "{setting}");
        }
    }

    #[test]
    fn local_mysql_config_parses() {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../rps-mysql.toml");
        let c = Config::load(&path).unwrap();
        assert_eq!(c.shard_count, 8);
        assert!(c.servers.iter().all(|s| s.url.contains(":331")));
    }

    #[test]
    fn toml_round_trip() {
        let c = parse(EXAMPLE).unwrap();
        assert_eq!(parse(&c.to_toml()).unwrap(), c);
    }

    #[test]
    fn unknown_key_is_named() {
        let err = parse(&EXAMPLE.replace("[api]", "[api]\nport = 1")).unwrap_err();
        assert!(err.to_string().contains("unknown field `port`"), "{err}");
    }

    #[test]
    fn missing_key_is_named() {
        let err = parse(&EXAMPLE.replace("url = \"redis://127.0.0.1:6380\"", "")).unwrap_err();
        assert!(err.to_string().contains("missing field `url`"), "{err}");
    }

    #[test]
    fn topology_errors() {
        let err = parse(&EXAMPLE.replace("[1, 3]", "[1]")).unwrap_err();
        assert!(err.to_string().contains("[3]"), "{err}");
        let err = parse(&EXAMPLE.replace("[1, 3]", "[1, 2, 3]")).unwrap_err();
        assert!(err.to_string().contains("shard 2"), "{err}");
        let err = parse(&EXAMPLE.replace("[1, 3]", "[1, 3, 4]")).unwrap_err();
        assert!(err.to_string().contains("shard 4"), "{err}");
        let err = parse(&EXAMPLE.replace("name = \"b\"", "name = \"a\"")).unwrap_err();
        assert!(err.to_string().contains("appears twice"), "{err}");
    }

    #[test]
    fn event_tables() {
        assert!(is_event_table("match_result_events"));
        assert!(is_event_table("match_result_events_2026Q4"));
        assert!(!is_event_table("match_results"));
    }
}
