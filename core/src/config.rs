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
    #[serde(default)]
    pub tracing: TracingConfig,
}

#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct RedisConfig {
    /// `redis://host:port[/db]`, or `rediss://…` for TLS. A password in the
    /// URL works, but [`RedisConfig::password_file`] or the environment
    /// (`RPS_REDIS_PASSWORD`, `RPS_REDIS_PASSWORD_FILE`) keep it out of the
    /// file.
    pub url: String,
    /// Every key of the pipeline starts with `{prefix}:`; lets several
    /// deployments (or tests) share one Redis.
    #[serde(default = "default_redis_prefix")]
    pub prefix: String,
    /// How many hash slots the players' counters and boards are spread
    /// over (docs/cluster.md): 1 on one Redis, where every read is one
    /// command; more than the masters on a cluster. Recorded by each
    /// read-model generation; changing it takes a `rpsctl replay`.
    #[serde(default = "default_partitions")]
    pub partitions: u16,
    /// A file holding the password (a mounted secret); its trailing newline
    /// is not part of it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub password_file: Option<PathBuf>,
    /// TLS to Redis; `rediss://` alone turns it on with full verification.
    #[serde(default, skip_serializing_if = "TlsConfig::is_unset")]
    pub tls: TlsConfig,
    /// The password from the environment or `password_file`, resolved when
    /// the config is loaded; overrides the URL's.
    #[serde(skip)]
    pub password: Option<Secret>,
}

impl RedisConfig {
    /// A config for `url` with the default prefix and no TLS settings.
    pub fn from_url(url: impl Into<String>) -> Self {
        RedisConfig {
            url: url.into(),
            prefix: default_redis_prefix(),
            partitions: default_partitions(),
            password_file: None,
            tls: TlsConfig::default(),
            password: None,
        }
    }

    /// The TLS mode in effect: an explicit `tls.mode`, else full
    /// verification for `rediss://` or when a CA or client certificate is
    /// given, else none.
    pub fn tls_mode(&self) -> TlsMode {
        self.tls
            .effective_mode(self.url.starts_with("rediss://") || self.url.starts_with("valkeys://"))
    }

    /// The URL with any password masked, for messages.
    pub fn display_url(&self) -> String {
        redact_url(&self.url)
    }
}

#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct ApiConfig {
    /// Address the leaderboard API listens on (it also serves `/metrics`).
    pub bind: String,
    /// A request still unanswered after this long gets a 504; bounds what
    /// a slow or unreachable Redis costs each caller.
    #[serde(default = "ApiConfig::default_request_timeout_ms")]
    pub request_timeout_ms: u64,
    /// Origins browsers may call the API from (`https://host[:port]`, or
    /// `*` for any). Empty: no CORS headers at all, so browsers refuse
    /// cross-origin reads.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub cors_allow_origins: Vec<String>,
}

impl ApiConfig {
    fn default_request_timeout_ms() -> u64 {
        5_000
    }
}

impl Default for ApiConfig {
    fn default() -> Self {
        ApiConfig {
            bind: "127.0.0.1:8080".to_string(),
            request_timeout_ms: Self::default_request_timeout_ms(),
            cors_allow_origins: Vec::new(),
        }
    }
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
    /// A file holding the pipeline account's password.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub password_file: Option<PathBuf>,
    /// A file holding the admin account's password.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub admin_password_file: Option<PathBuf>,
    /// TLS to this server, for both accounts.
    #[serde(default, skip_serializing_if = "TlsConfig::is_unset")]
    pub tls: TlsConfig,
    /// The pipeline account's password from the environment or
    /// `password_file`, resolved at load; overrides the URL's.
    #[serde(skip)]
    pub password: Option<Secret>,
    /// The same for the admin account.
    #[serde(skip)]
    pub admin_password: Option<Secret>,
}

impl ServerConfig {
    /// A server reached at `url` hosting `shards`, without admin account,
    /// password sources or TLS.
    pub fn new(name: impl Into<String>, url: impl Into<String>, shards: Vec<ShardId>) -> Self {
        ServerConfig {
            name: name.into(),
            url: url.into(),
            admin_url: None,
            shards,
            password_file: None,
            admin_password_file: None,
            tls: TlsConfig::default(),
            password: None,
            admin_password: None,
        }
    }

    /// The TLS mode in effect (none unless configured).
    pub fn tls_mode(&self) -> TlsMode {
        self.tls.effective_mode(false)
    }

    /// The pipeline URL with any password masked, for messages.
    pub fn display_url(&self) -> String {
        redact_url(&self.url)
    }
}

/// How a connection is secured, after MySQL's `--ssl-mode` (`PREFERRED`,
/// which silently falls back to plain text, is deliberately absent).
#[derive(Debug, Clone, Copy, Deserialize, Serialize, PartialEq, Eq)]
#[serde(rename_all = "kebab-case")]
pub enum TlsMode {
    /// Plain text.
    Disabled,
    /// Encrypted, but any certificate is accepted.
    Required,
    /// Encrypted, the certificate must chain to the CA; any host name.
    VerifyCa,
    /// Encrypted, chained to the CA and issued for the host connected to.
    VerifyIdentity,
}

impl TlsMode {
    pub fn is_enabled(self) -> bool {
        self != TlsMode::Disabled
    }
}

/// TLS settings of one server or of Redis.
#[derive(Debug, Clone, Default, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct TlsConfig {
    /// Absent: `verify-identity` when any other TLS setting (or a
    /// `rediss://` URL) asks for TLS, else `disabled`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mode: Option<TlsMode>,
    /// PEM file of the certificate authorities to trust instead of the
    /// system's.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ca_file: Option<PathBuf>,
    /// PEM client certificate chain, for servers that require one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cert_file: Option<PathBuf>,
    /// PEM private key of `cert_file`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key_file: Option<PathBuf>,
}

impl TlsConfig {
    fn is_unset(&self) -> bool {
        *self == TlsConfig::default()
    }

    fn effective_mode(&self, url_asks_for_tls: bool) -> TlsMode {
        match self.mode {
            Some(mode) => mode,
            None if url_asks_for_tls || self.ca_file.is_some() || self.cert_file.is_some() => {
                TlsMode::VerifyIdentity
            }
            None => TlsMode::Disabled,
        }
    }

    fn validate(&self, what: &str) -> Result<(), String> {
        if self.cert_file.is_some() != self.key_file.is_some() {
            return Err(format!(
                "{what}: `tls.cert_file` and `tls.key_file` go together"
            ));
        }
        for file in [&self.ca_file, &self.cert_file, &self.key_file]
            .into_iter()
            .flatten()
        {
            if !file.is_file() {
                return Err(format!(
                    "{what}: TLS file {} does not exist",
                    file.display()
                ));
            }
        }
        Ok(())
    }
}

/// A password: never printed, compared or serialized by accident.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    pub fn new(value: impl Into<String>) -> Self {
        Secret(value.into())
    }

    /// The password itself, for handing to a client library.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Secret(***)")
    }
}

/// `scheme://user:password@host/…` with the password replaced by `***`;
/// anything else unchanged.
pub fn redact_url(url: &str) -> String {
    let Some(scheme_end) = url.find("://").map(|i| i + 3) else {
        return url.to_string();
    };
    let rest = &url[scheme_end..];
    let authority_end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    let Some(at) = rest[..authority_end].rfind('@') else {
        return url.to_string();
    };
    match rest[..at].find(':') {
        Some(colon) => format!(
            "{}{}:***{}",
            &url[..scheme_end],
            &rest[..colon],
            &rest[at..]
        ),
        None => url.to_string(),
    }
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

/// OpenTelemetry traces, one per match (`docs/tracing.md`). Off unless an
/// endpoint is named here or in `OTEL_EXPORTER_OTLP_ENDPOINT`; the
/// standard `OTEL_*` variables override these keys.
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct TracingConfig {
    /// Base URL of an OTLP/HTTP collector, plain `http://` (an agent or
    /// sidecar beside the process); spans go to `{url}/v1/traces`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub otlp_endpoint: Option<String>,
    /// Share of matches traced, 0 to 1, decided from the match id: every
    /// component must have the same ratio to keep whole traces.
    pub sample_ratio: f64,
    /// `service.name` of the spans (default `rps`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub service_name: Option<String>,
}

impl Default for TracingConfig {
    fn default() -> Self {
        TracingConfig {
            otlp_endpoint: None,
            sample_ratio: 1.0,
            service_name: None,
        }
    }
}

/// `mysql-a.eu` → `MYSQL_A_EU`, the server's part of its variable names.
pub fn env_name(server: &str) -> String {
    server
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() {
                c.to_ascii_uppercase()
            } else {
                '_'
            }
        })
        .collect()
}

fn resolve_secret(
    env: &dyn Fn(&str) -> Option<String>,
    var: &str,
    config_file: Option<&Path>,
) -> Result<Option<Secret>, String> {
    if let Some(value) = env(var) {
        return Ok(Some(Secret::new(value)));
    }
    let (file, named_by) = match (env(&format!("{var}_FILE")), config_file) {
        (Some(file), _) => (PathBuf::from(file), format!("{var}_FILE")),
        (None, Some(file)) => (file.to_path_buf(), "the config".to_string()),
        (None, None) => return Ok(None),
    };
    let text = std::fs::read_to_string(&file).map_err(|e| {
        format!(
            "cannot read the password file {} (named by {named_by}): {e}",
            file.display()
        )
    })?;
    Ok(Some(Secret::new(text.trim_end_matches(['\n', '\r']))))
}

fn default_database_prefix() -> String {
    "rps_shard_".to_string()
}

fn default_redis_prefix() -> String {
    "rps".to_string()
}

impl Config {
    /// Reads a config file, applies the process environment's overrides
    /// (see [`Config::apply_environment`]), resolves passwords and validates.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Io {
            path: path.to_path_buf(),
            source,
        })?;
        Self::parse_with_env(&text, path, &|name| std::env::var(name).ok())
    }

    /// Parses and validates config text without looking at the environment;
    /// `path` only names it in errors.
    pub fn parse(text: &str, path: &Path) -> Result<Config, ConfigError> {
        Self::parse_with_env(text, path, &|_| None)
    }

    /// [`Config::parse`] with `env` as the environment.
    pub fn parse_with_env(
        text: &str,
        path: &Path,
        env: &dyn Fn(&str) -> Option<String>,
    ) -> Result<Config, ConfigError> {
        let mut config: Config = toml::from_str(text).map_err(|e| ConfigError::Parse {
            path: path.to_path_buf(),
            message: e.to_string(),
        })?;
        let invalid = |message| ConfigError::Invalid {
            path: path.to_path_buf(),
            message,
        };
        config.apply_environment(env).map_err(invalid)?;
        config.validate().map_err(invalid)?;
        Ok(config)
    }

    /// The overrides an operator sets per environment, and the passwords.
    ///
    /// `RPS_REDIS_URL`, `RPS_REDIS_PREFIX`, `RPS_API_BIND`, and per server
    /// `RPS_SERVER_<NAME>_URL` / `_ADMIN_URL` (`<NAME>` upper-cased, other
    /// characters than letters and digits as `_`) replace the file's values.
    /// Each password comes from the first of: `<VAR>`, the file named by
    /// `<VAR>_FILE`, the config's `*password_file`, the URL; `<VAR>` is
    /// `RPS_REDIS_PASSWORD`, `RPS_SERVER_<NAME>_PASSWORD` or
    /// `RPS_SERVER_<NAME>_ADMIN_PASSWORD`.
    pub fn apply_environment(
        &mut self,
        env: &dyn Fn(&str) -> Option<String>,
    ) -> Result<(), String> {
        if let Some(url) = env("RPS_REDIS_URL") {
            self.redis.url = url;
        }
        if let Some(prefix) = env("RPS_REDIS_PREFIX") {
            self.redis.prefix = prefix;
        }
        if let Some(bind) = env("RPS_API_BIND") {
            self.api.bind = bind;
        }
        self.redis.password = resolve_secret(
            env,
            "RPS_REDIS_PASSWORD",
            self.redis.password_file.as_deref(),
        )?;
        for server in &mut self.servers {
            let var = format!("RPS_SERVER_{}", env_name(&server.name));
            if let Some(url) = env(&format!("{var}_URL")) {
                server.url = url;
            }
            if let Some(url) = env(&format!("{var}_ADMIN_URL")) {
                server.admin_url = Some(url);
            }
            server.password = resolve_secret(
                env,
                &format!("{var}_PASSWORD"),
                server.password_file.as_deref(),
            )?;
            server.admin_password = resolve_secret(
                env,
                &format!("{var}_ADMIN_PASSWORD"),
                server.admin_password_file.as_deref(),
            )?;
        }
        Ok(())
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
            // Server names are part of key names ahead of a slot's hash
            // tag (`rps:cdc:checkpoint:<server>:{n}`): a brace would move it.
            if s.name.is_empty() || s.name.contains(['{', '}']) {
                return Err(format!(
                    "server name `{}` must be non-empty and contain no braces",
                    s.name
                ));
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
        if !(1..=MAX_PARTITIONS).contains(&self.redis.partitions) {
            return Err(format!(
                "`redis.partitions` must be between 1 and {MAX_PARTITIONS}, got {}",
                self.redis.partitions
            ));
        }
        if self.redis.prefix.is_empty() || self.redis.prefix.contains(['{', '}']) {
            return Err("`redis.prefix` must be non-empty and contain no braces".into());
        }
        self.redis.tls.validate("redis")?;
        for s in &self.servers {
            s.tls.validate(&format!("server `{}`", s.name))?;
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
        crate::keys::Keys::new(&self.redis.prefix).with_partitions(self.redis.partitions)
    }
}

/// Whether a table name is one the pipeline follows: `match_result_events`
/// or a season table `match_result_events_<anything>`.
pub fn is_event_table(name: &str) -> bool {
    name == "match_result_events" || name.starts_with("match_result_events_")
}

/// The most player partitions a deployment may have (a rank reads every
/// one of them).
pub const MAX_PARTITIONS: u16 = 256;

fn default_partitions() -> u16 {
    1
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
    fn the_cluster_example_loads() {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../rps-cluster.toml");
        let c = Config::load(&path).unwrap();
        assert!(
            c.redis.url.starts_with("redis-cluster://"),
            "{}",
            c.redis.url
        );
        assert_eq!(c.redis.partitions, 16);
    }

    #[test]
    fn docker_cluster_deployment_is_consistent() {
        let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
        let single = Config::load(&root.join("docker/rps.toml")).unwrap();
        let c = Config::load(&root.join("docker/rps-cluster.toml")).unwrap();
        let compose = std::fs::read_to_string(root.join("docker/compose.cluster.yml")).unwrap();
        // The same shard servers as the single-Redis deployment it overrides.
        assert_eq!(c.shard_count, single.shard_count);
        assert_eq!(
            c.servers
                .iter()
                .map(|s| (&s.name, &s.url, &s.shards))
                .collect::<Vec<_>>(),
            single
                .servers
                .iter()
                .map(|s| (&s.name, &s.url, &s.shards))
                .collect::<Vec<_>>()
        );
        // Every seed node is a service, and every server has its own reader.
        let seeds = c.redis.url.trim_start_matches("redis-cluster://");
        for seed in seeds.split(['?', '&']) {
            let host = seed.trim_start_matches("node=").split(':').next().unwrap();
            assert!(
                compose.contains(&format!("\n  {host}: ")),
                "compose.cluster.yml lacks service {host}"
            );
        }
        for s in &c.servers {
            assert!(
                compose.contains(&format!("\"--server\", \"{}\"", s.name)),
                "no reader of {}",
                s.name
            );
        }
        assert!(c.redis.partitions > 1);
        assert!(compose.contains("./rps-cluster.toml:/etc/rps/rps.toml:ro"));
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
        // The passwords reach every server's accounts as secret files.
        for s in &c.servers {
            assert_eq!(
                redact_url(&s.url),
                s.url,
                "docker/rps.toml holds a password"
            );
            for var in ["PASSWORD_FILE", "ADMIN_PASSWORD_FILE"] {
                let var = format!("RPS_SERVER_{}_{var}:", env_name(&s.name));
                assert!(compose.contains(&var), "compose lacks {var}");
            }
        }
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
    fn environment_overrides_and_passwords() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("pw");
        std::fs::write(&file, "from-file\n").unwrap();
        let text = EXAMPLE.replace(
            "shards = [1, 3]",
            &format!(
                "shards = [1, 3]\nadmin_password_file = {:?}",
                file.display().to_string()
            ),
        );
        let vars: std::collections::HashMap<&str, String> = [
            ("RPS_REDIS_URL", "rediss://cache.internal:6380".to_string()),
            ("RPS_API_BIND", "0.0.0.0:80".to_string()),
            ("RPS_REDIS_PASSWORD", "r-secret".to_string()),
            (
                "RPS_SERVER_A_URL",
                "mysql://u@db-a.internal:3306".to_string(),
            ),
            ("RPS_SERVER_A_PASSWORD_FILE", file.display().to_string()),
        ]
        .into_iter()
        .collect();
        let env = |k: &str| vars.get(k).cloned();
        let c = Config::parse_with_env(&text, Path::new("t.toml"), &env).unwrap();
        assert_eq!(c.redis.url, "rediss://cache.internal:6380");
        assert_eq!(c.redis.tls_mode(), TlsMode::VerifyIdentity);
        assert_eq!(c.api.bind, "0.0.0.0:80");
        assert_eq!(c.redis.password, Some(Secret::new("r-secret")));
        assert_eq!(c.servers[0].url, "mysql://u@db-a.internal:3306");
        assert_eq!(c.servers[0].password, Some(Secret::new("from-file")));
        assert_eq!(c.servers[1].password, None);
        assert_eq!(c.servers[1].admin_password, Some(Secret::new("from-file")));
        assert_eq!(c.servers[0].tls_mode(), TlsMode::Disabled);
        // Resolved passwords never reach the file or a debug print.
        assert!(!c.to_toml().contains("from-file") && !c.to_toml().contains("r-secret"));
        assert!(!format!("{c:?}").contains("r-secret"));

        let missing =
            |k: &str| (k == "RPS_SERVER_B_PASSWORD_FILE").then(|| "/nonexistent/pw".into());
        let err = Config::parse_with_env(EXAMPLE, Path::new("t.toml"), &missing).unwrap_err();
        assert!(
            err.to_string().contains("RPS_SERVER_B_PASSWORD_FILE"),
            "{err}"
        );
    }

    #[test]
    fn tls_settings() {
        let text = EXAMPLE.replace(
            "shards = [1, 3]",
            "shards = [1, 3]\n[servers.tls]\nmode = \"verify-ca\"\ncert_file = \"/x.pem\"",
        );
        let err = parse(&text).unwrap_err();
        assert!(err.to_string().contains("go together"), "{err}");
        let err = parse(&text.replace("verify-ca", "preferred")).unwrap_err();
        assert!(
            err.to_string().contains("unknown variant `preferred`"),
            "{err}"
        );
        let c = parse(&EXAMPLE.replace(
            "shards = [1, 3]",
            "shards = [1, 3]\n[servers.tls]\nmode = \"required\"",
        ))
        .unwrap();
        assert_eq!(c.servers[1].tls_mode(), TlsMode::Required);
        assert_eq!(parse(&c.to_toml()).unwrap(), c);
    }

    #[test]
    fn urls_are_masked() {
        assert_eq!(
            redact_url("mysql://u:pw@h:3306/db"),
            "mysql://u:***@h:3306/db"
        );
        assert_eq!(redact_url("redis://:p@ss@h:6379"), "redis://:***@h:6379");
        assert_eq!(redact_url("redis://h:6379"), "redis://h:6379");
        assert_eq!(redact_url("mysql://u@h"), "mysql://u@h");
        assert_eq!(redact_url("not a url"), "not a url");
    }

    #[test]
    fn event_tables() {
        assert!(is_event_table("match_result_events"));
        assert!(is_event_table("match_result_events_2026Q4"));
        assert!(!is_event_table("match_results"));
    }
}
