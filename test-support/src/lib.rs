//! Harness for tests against real servers.
//!
//! Two kinds of servers:
//! - the shared local environment (`scripts/dev-env.sh up`: MariaDB on 3307
//!   and 3308, Redis on 6380; `up mysql`: MySQL on 3317 and 3318, Redis on
//!   6381; [`TestFlavor`] picks one, and `RPS_TEST_MYSQL_PORTS="3307 3308"`
//!   and `RPS_TEST_REDIS_URL` override it). Each [`TestEnv`] gets its own database prefix
//!   and Redis key prefix, so tests run side by side without seeing each other.
//! - private instances ([`ShardServerInstance`] of the flavor, [`RedisInstance`]) on free ports
//!   with throw-away data folders, for tests that kill, restart or purge a
//!   server and must not disturb anyone else.

mod flavor;
mod mysql_server;
pub mod pipeline;
pub mod redis_cluster;
pub mod shard_load;
pub mod tls;
pub mod xa;
pub use flavor::{binlog_head, purge_all_but_a_new_binlog, ShardServerInstance, TestFlavor};
pub use mysql_server::{mysql_root, MySqlInstance};

use rps_core::config::{ApiConfig, CdcConfig, CompensatorConfig, ProjectorConfig, RedisConfig};
use rps_core::{Config, ServerConfig};
use rps_event_store::EventStore;
use std::future::Future;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

pub const PIPELINE_USER: &str = "rps_pipeline";
pub const PIPELINE_PASSWORD: &str = "rps_pipeline_pw";

/// The repository root (for `sql/` and `rps.toml`).
pub fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// Logs to the test output once per process, filtered by `RUST_LOG`.
pub fn init_tracing() {
    let _ = tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| "info,mysql_async=warn,fred=warn".into()),
        )
        .with_test_writer()
        .try_init();
}

fn unique_name(test: &str) -> String {
    static N: AtomicU32 = AtomicU32::new(0);
    let clean: String = test
        .chars()
        .filter(|c| c.is_ascii_alphanumeric())
        .take(16)
        .collect();
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or(0);
    format!(
        "t{}_{}_{}{}",
        std::process::id() % 100_000,
        N.fetch_add(1, Ordering::Relaxed),
        clean,
        nanos % 1000
    )
}

/// A server of a test topology: its MySQL port.
#[derive(Debug, Clone)]
pub struct TestServer {
    pub name: String,
    pub port: u16,
}

/// One test's slice of the servers: unique database and key prefixes, an
/// initialised schema, and a config pointing at it.
pub struct TestEnv {
    pub name: String,
    pub config: Arc<Config>,
    pub store: EventStore,
}

fn shared_servers(ports: Vec<u16>) -> Vec<TestServer> {
    ports
        .into_iter()
        .enumerate()
        .map(|(i, port)| TestServer {
            name: format!("mysql-{}", (b'a' + i as u8) as char),
            port,
        })
        .collect()
}

fn shared_mysql_ports() -> Vec<u16> {
    std::env::var("RPS_TEST_MYSQL_PORTS")
        .unwrap_or_else(|_| TestFlavor::current().shared_ports().to_string())
        .split_whitespace()
        .filter_map(|p| p.parse().ok())
        .collect()
}

pub fn shared_redis_url() -> String {
    std::env::var("RPS_TEST_REDIS_URL")
        .unwrap_or_else(|_| TestFlavor::current().shared_redis_url().to_string())
}

/// Player partitions of every test deployment.
pub const TEST_PARTITIONS: u16 = 4;

/// A topology of `shard_count` shards spread round-robin over `servers`.
pub fn test_config(
    name: &str,
    shard_count: u16,
    servers: &[TestServer],
    redis_url: &str,
) -> Config {
    let servers = servers
        .iter()
        .enumerate()
        .map(|(i, s)| ServerConfig {
            admin_url: Some(format!("mysql://root@127.0.0.1:{}", s.port)),
            ..ServerConfig::new(
                s.name.clone(),
                format!(
                    "mysql://{PIPELINE_USER}:{PIPELINE_PASSWORD}@127.0.0.1:{}",
                    s.port
                ),
                (0..shard_count)
                    .filter(|sh| usize::from(*sh) % servers.len() == i)
                    .collect(),
            )
        })
        .collect();
    let config = Config {
        shard_count,
        database_prefix: format!("{name}_shard_"),
        redis: RedisConfig {
            prefix: name.to_string(),
            // More than one, so every test reads boards merged across
            // partitions as a cluster deployment does.
            partitions: TEST_PARTITIONS,
            ..RedisConfig::from_url(redis_url)
        },
        api: ApiConfig {
            bind: "127.0.0.1:0".to_string(),
            ..ApiConfig::default()
        },
        servers,
        cdc: CdcConfig {
            // Replica ids must be unique per server across concurrent tests.
            server_id_base: 10_000 + (std::process::id() % 1000) * 100 + next_replica_slot(),
            heartbeat_ms: 500,
            ..CdcConfig::default()
        },
        projector: ProjectorConfig {
            block_ms: 200,
            claim_idle_ms: 2_000,
            ..ProjectorConfig::default()
        },
        compensator: CompensatorConfig::default(),
        tracing: Default::default(),
    };
    config.validate().expect("test topology is valid");
    config
}

fn next_replica_slot() -> u32 {
    static SLOT: AtomicU32 = AtomicU32::new(0);
    (SLOT.fetch_add(4, Ordering::Relaxed)) % 100
}

impl TestEnv {
    /// A fresh slice of the shared local environment: 8 shards on its two
    /// MariaDB servers, initialised.
    pub async fn new(test: &str) -> TestEnv {
        Self::with_shards(test, 8).await
    }

    pub async fn with_shards(test: &str, shard_count: u16) -> TestEnv {
        let servers = shared_servers(shared_mysql_ports());
        Self::on_servers(test, shard_count, &servers, &shared_redis_url()).await
    }

    /// A slice of the shared shard servers with its read models on the
    /// given Redis (a private one, a private cluster).
    pub async fn with_redis(test: &str, shard_count: u16, redis_url: &str) -> TestEnv {
        let servers = shared_servers(shared_mysql_ports());
        Self::on_servers(test, shard_count, &servers, redis_url).await
    }

    /// A slice of the shared environment of `flavor`, whatever
    /// `RPS_TEST_FLAVOR` says: for tests of one flavor's own binlog.
    pub async fn on_flavor(test: &str, flavor: TestFlavor, shard_count: u16) -> TestEnv {
        let ports = flavor
            .shared_ports()
            .split_whitespace()
            .filter_map(|p| p.parse().ok())
            .collect();
        let servers = shared_servers(ports);
        Self::on_servers(test, shard_count, &servers, flavor.shared_redis_url()).await
    }

    /// A slice of the given servers (e.g. private instances).
    pub async fn on_servers(
        test: &str,
        shard_count: u16,
        servers: &[TestServer],
        redis_url: &str,
    ) -> TestEnv {
        init_tracing();
        let name = unique_name(test);
        let config = test_config(&name, shard_count, servers, redis_url);
        Self::from_config(name, config).await
    }

    pub async fn from_config(name: String, config: Config) -> TestEnv {
        rps_event_store::init(&config)
            .await
            .expect("rpsctl init on the test servers (is scripts/dev-env.sh up?)");
        let config = Arc::new(config);
        let store = EventStore::new(config.clone()).expect("event store");
        TestEnv {
            name,
            config,
            store,
        }
    }

    /// Writes the config as a TOML file for `rpsctl --config` and returns its path
    /// (inside the returned temp dir, which must be kept alive).
    pub fn write_config_file(&self) -> (tempfile::TempDir, PathBuf) {
        write_config_file(&self.config)
    }

    /// A connected Redis client.
    pub async fn redis(&self) -> fred::clients::Client {
        rps_core::redis_client::ClientPolicy::default()
            .connect(&self.config.redis)
            .await
            .expect("redis connect")
    }

    /// Rows of `event_type` in every shard's event table, counted on the
    /// servers (the truth a test compares the pipeline's figures with).
    pub async fn count_events(&self, event_type: &str) -> u64 {
        use mysql_async::prelude::Queryable;
        let mut total = 0;
        for shard in 0..self.config.shard_count {
            let mut conn = self.admin_conn(shard).await;
            let n: Option<u64> = conn
                .query_first(format!(
                    "SELECT COUNT(*) FROM `{}`.match_result_events WHERE event_type = '{event_type}'",
                    self.config.database(shard)
                ))
                .await
                .expect("count");
            total += n.unwrap_or(0);
        }
        total
    }

    /// Every stored event of every shard, in primary-key (= commit) order,
    /// read back through the event store.
    pub async fn stored_events(
        &self,
    ) -> std::collections::BTreeMap<rps_core::ShardId, Vec<rps_core::MatchEvent>> {
        let mut out = std::collections::BTreeMap::new();
        for shard in 0..self.config.shard_count {
            let mut reader = self.store.table_reader(
                shard,
                "match_result_events",
                &rps_event_store::HistoryFilter::default(),
                5000,
            );
            let mut rows = Vec::new();
            while let Some(page) = reader.next_page().await.expect("read page") {
                rows.extend(page.into_iter().map(|r| r.expect("row decodes")));
            }
            out.insert(shard, rows);
        }
        out
    }

    /// An admin (root) connection to the server hosting `shard`.
    pub async fn admin_conn(&self, shard: u16) -> mysql_async::Conn {
        admin_conn(self.config.server_of(shard)).await
    }

    /// An admin connection to a server by name.
    pub async fn admin_conn_to(&self, server: &str) -> mysql_async::Conn {
        admin_conn(self.config.server(server).expect("server")).await
    }

    /// Drops the test's databases and Redis keys.
    pub async fn cleanup(&self) {
        use mysql_async::prelude::Queryable;
        for shard in 0..self.config.shard_count {
            let server = self.config.server_of(shard);
            let Ok(opts) = rps_event_store::server_opts(server, rps_event_store::Account::Admin)
            else {
                continue;
            };
            if let Ok(mut c) = mysql_async::Conn::new(opts).await {
                let _ = c
                    .query_drop(format!(
                        "DROP DATABASE IF EXISTS `{}`",
                        self.config.database(shard)
                    ))
                    .await;
            }
        }
        let redis = self.redis().await;
        let pattern = self.config.keys().all_pattern();
        let _ = unlink_matching(&redis, &pattern).await;
    }
}

/// Unlinks every key matching `pattern`, on every master of a cluster.
pub async fn unlink_matching(
    redis: &fred::clients::Client,
    pattern: &str,
) -> Result<(), fred::error::Error> {
    let mut scan = rps_core::redis_client::KeyScan::new(redis, pattern).await?;
    while let Some(page) = scan.next_page(redis).await? {
        rps_core::redis_client::unlink_keys(redis, page).await?;
    }
    Ok(())
}

/// Every key matching `pattern`, from every master of a cluster.
pub async fn scan_keys(redis: &fred::clients::Client, pattern: &str) -> Vec<String> {
    let mut scan = rps_core::redis_client::KeyScan::new(redis, pattern)
        .await
        .expect("scan");
    let mut out = Vec::new();
    while let Some(page) = scan.next_page(redis).await.expect("scan") {
        out.extend(page);
    }
    out
}

/// An admin (root) connection to `server`, with its TLS settings.
pub async fn admin_conn(server: &ServerConfig) -> mysql_async::Conn {
    let opts =
        rps_event_store::server_opts(server, rps_event_store::Account::Admin).expect("admin url");
    mysql_async::Conn::new(opts)
        .await
        .expect("admin connection")
}

/// Writes `config` as `rps.toml` in a new temp dir (keep the dir alive).
pub fn write_config_file(config: &Config) -> (tempfile::TempDir, PathBuf) {
    let dir = tempfile::Builder::new()
        .prefix("rps-config-")
        .tempdir()
        .expect("tempdir");
    let path = dir.path().join("rps.toml");
    std::fs::write(&path, config.to_toml()).expect("write config");
    (dir, path)
}

/// `n` valid `started` events routed to `shard`, match ids from `first_match`.
pub fn started_events(
    shard: rps_core::ShardId,
    shard_count: u16,
    first_match: i64,
    n: usize,
) -> Vec<rps_core::MatchEvent> {
    let now = rps_core::Timestamp::now();
    (0..n as i64)
        .map(|k| {
            let a = i64::from(shard) + i64::from(shard_count) * (k + 1);
            rps_core::MatchEvent::started(
                uuid::Uuid::new_v4(),
                first_match + k,
                "2026Q4".parse().expect("season"),
                (a, a + 1),
                rps_core::Timestamp(now.0 + k),
                rps_core::Timestamp(now.0 + 30_000_000 + k),
            )
        })
        .collect()
}

/// A connected fred client with the pipeline's reconnect policy.
pub async fn redis_client(url: &str) -> fred::clients::Client {
    rps_core::redis_client::ClientPolicy::default()
        .connect(&RedisConfig::from_url(url))
        .await
        .expect("redis connect")
}

/// Polls `check` until it answers `Some`, or panics after `timeout` naming `what`.
pub async fn eventually<T, F, Fut>(what: &str, timeout: Duration, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let start = Instant::now();
    let mut wait = Duration::from_millis(10);
    loop {
        if let Some(v) = check().await {
            return v;
        }
        if start.elapsed() > timeout {
            panic!("timed out after {timeout:?} waiting for: {what}");
        }
        tokio::time::sleep(wait).await;
        wait = (wait * 2).min(Duration::from_millis(250));
    }
}

/// A free TCP port on loopback (bound, then released).
/// Count and event-id checksum of events, as `cdc_reader::inspect` reports
/// them for a stream: equal means every event arrived, none twice.
pub fn count_and_checksum(events: &[rps_core::MatchEvent]) -> (u64, u128) {
    let sum = events
        .iter()
        .fold(0u128, |a, e| a.wrapping_add(e.event_id.as_u128()));
    (events.len() as u64, sum)
}

/// Appends a shard's events in multi-row INSERTs of `chunk` rows, on a task
/// of its own (one per shard loads the servers in parallel).
pub fn spawn_append(
    store: &EventStore,
    shard: rps_core::ShardId,
    events: Vec<rps_core::MatchEvent>,
    chunk: usize,
) -> tokio::task::JoinHandle<()> {
    let store = store.clone();
    tokio::spawn(async move {
        let mut session = store.session(shard).await.expect("connection");
        for c in events.chunks(chunk) {
            let appended = session
                .append_all("match_result_events", c)
                .await
                .expect("append");
            assert_eq!(appended, rps_event_store::BatchAppend::Inserted, "append");
        }
    })
}

pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("free port")
}

fn current_user() -> String {
    std::env::var("USER")
        .ok()
        .filter(|u| !u.is_empty())
        .unwrap_or_else(|| {
            Command::new("id")
                .arg("-un")
                .output()
                .ok()
                .and_then(|o| String::from_utf8(o.stdout).ok())
                .map(|s| s.trim().to_string())
                .unwrap_or_else(|| "root".to_string())
        })
}

/// The process of a private server: killed with -9 or stopped cleanly,
/// and killed when dropped.
#[derive(Default)]
pub(crate) struct ServerProcess(Option<Child>);

impl ServerProcess {
    pub(crate) fn set(&mut self, child: Child) {
        self.0 = Some(child);
    }

    /// The exit status, if the process has already ended.
    pub(crate) fn exited(&mut self) -> Option<std::process::ExitStatus> {
        let status = self.0.as_mut()?.try_wait().ok().flatten();
        if status.is_some() {
            self.0 = None;
        }
        status
    }

    /// kill -9: no shutdown, no flush.
    pub(crate) fn kill9(&mut self) {
        if let Some(mut c) = self.0.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// SIGTERM, then wait: a clean shutdown.
    pub(crate) fn stop(&mut self) {
        if let Some(mut c) = self.0.take() {
            let _ = Command::new("kill").arg(c.id().to_string()).status();
            let _ = c.wait();
        }
    }
}

impl Drop for ServerProcess {
    fn drop(&mut self) {
        self.kill9();
    }
}

/// A private MariaDB server with the pipeline's required settings
/// (`sql/server.cnf`), its own port and data folder. Killed on drop.
pub struct MariaDbInstance {
    // First: fields drop in order, and the server must die before its folder goes.
    process: ServerProcess,
    dir: tempfile::TempDir,
    pub port: u16,
    pub server_id: u32,
    extra_args: Vec<String>,
}

impl MariaDbInstance {
    pub async fn start(server_id: u32) -> MariaDbInstance {
        Self::start_with_args(server_id, Vec::new()).await
    }

    /// With more server options (e.g. TLS), kept across restarts.
    pub async fn start_with_args(server_id: u32, extra_args: Vec<String>) -> MariaDbInstance {
        let dir = tempfile::Builder::new()
            .prefix("rps-mariadb-")
            .tempdir()
            .expect("tempdir");
        // A private tmpdir: servers bootstrapping side by side in a shared
        // /tmp have been seen to trip over each other's temporary tables.
        let tmp = dir.path().join("tmp");
        std::fs::create_dir_all(&tmp).expect("tmpdir");
        let out = Command::new("mariadb-install-db")
            .arg("--no-defaults")
            .arg(format!("--datadir={}", dir.path().join("data").display()))
            .arg(format!("--tmpdir={}", tmp.display()))
            .arg(format!("--user={}", current_user()))
            .arg("--auth-root-authentication-method=normal")
            .arg("--skip-test-db")
            .output()
            .expect("mariadb-install-db (is MariaDB installed? scripts/dev-env.sh up installs it)");
        assert!(
            out.status.success(),
            "mariadb-install-db failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let mut me = MariaDbInstance {
            dir,
            port: free_port(),
            server_id,
            process: ServerProcess::default(),
            extra_args,
        };
        me.launch().await;
        // Root over TCP, as the dev environment has it.
        me.socket_sql(
            "CREATE USER IF NOT EXISTS 'root'@'127.0.0.1'; GRANT ALL ON *.* TO 'root'@'127.0.0.1' WITH GRANT OPTION;",
        );
        me
    }

    fn socket(&self) -> PathBuf {
        self.dir.path().join("mysqld.sock")
    }

    fn socket_sql(&self, sql: &str) {
        let out = Command::new("mariadb")
            .arg(format!("--socket={}", self.socket().display()))
            .arg("-uroot")
            .arg("-e")
            .arg(sql)
            .output()
            .expect("mariadb client");
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }

    async fn launch(&mut self) {
        let data = self.dir.path().join("data");
        let child = Command::new("mariadbd")
            .arg(format!(
                "--defaults-file={}",
                repo_root().join("sql/server.cnf").display()
            ))
            .arg(format!("--datadir={}", data.display()))
            .arg(format!(
                "--tmpdir={}",
                self.dir.path().join("tmp").display()
            ))
            .arg(format!("--port={}", self.port))
            .arg(format!("--socket={}", self.socket().display()))
            .arg(format!("--server-id={}", self.server_id))
            .arg(format!("--log-bin={}", data.join("binlog").display()))
            .arg(format!(
                "--log-error={}",
                self.dir.path().join("error.log").display()
            ))
            .arg(format!(
                "--pid-file={}",
                self.dir.path().join("mysqld.pid").display()
            ))
            .arg(format!("--user={}", current_user()))
            .arg("--innodb-buffer-pool-size=64M")
            .arg("--innodb-log-file-size=48M")
            .args(&self.extra_args)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("mariadbd");
        self.process.set(child);
        let sock = self.socket();
        let port = self.port;
        let ready = eventually(
            "private MariaDB to accept connections",
            Duration::from_secs(60),
            || {
                let sock = sock.clone();
                async move {
                    let ok = Command::new("mariadb-admin")
                        .arg(format!("--socket={}", sock.display()))
                        .arg("-uroot")
                        .arg("ping")
                        .stdout(Stdio::null())
                        .stderr(Stdio::null())
                        .status()
                        .map(|s| s.success())
                        .unwrap_or(false);
                    ok.then_some(())
                }
            },
        )
        .await;
        let _ = (ready, port);
    }

    pub fn test_server(&self, name: &str) -> TestServer {
        TestServer {
            name: name.to_string(),
            port: self.port,
        }
    }

    /// kill -9: no shutdown, no flush.
    pub fn kill9(&mut self) {
        self.process.kill9();
    }

    /// Clean shutdown.
    pub fn stop(&mut self) {
        self.process.stop();
    }

    /// Starts again on the same port and data after [`kill9`](Self::kill9) or [`stop`](Self::stop).
    pub async fn restart(&mut self) {
        self.stop();
        self.launch().await;
    }
}

/// A private Redis on a free port. Killed on drop.
pub struct RedisInstance {
    dir: tempfile::TempDir,
    pub port: u16,
    appendonly: bool,
    child: Option<Child>,
    extra_args: Vec<String>,
    tls: bool,
}

impl RedisInstance {
    /// `appendonly`: AOF with `appendfsync always`, so kill -9 loses nothing acknowledged.
    pub async fn start(appendonly: bool) -> RedisInstance {
        Self::start_with(appendonly, |_| Vec::new(), false).await
    }

    /// With more options, made from the instance's port (e.g. TLS on that
    /// port, `tls`, or `--requirepass`).
    pub async fn start_with(
        appendonly: bool,
        extra_args: impl FnOnce(u16) -> Vec<String>,
        tls: bool,
    ) -> RedisInstance {
        let dir = tempfile::Builder::new()
            .prefix("rps-redis-")
            .tempdir()
            .expect("tempdir");
        let port = free_port();
        let mut me = RedisInstance {
            dir,
            port,
            appendonly,
            child: None,
            extra_args: extra_args(port),
            tls,
        };
        me.launch().await;
        me
    }

    pub fn url(&self) -> String {
        let scheme = if self.tls { "rediss" } else { "redis" };
        format!("{scheme}://127.0.0.1:{}", self.port)
    }

    async fn launch(&mut self) {
        let child = Command::new("redis-server")
            .args([
                "--port",
                &self.port.to_string(),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
            ])
            .args(["--dir", &self.dir.path().display().to_string()])
            .args(["--appendonly", if self.appendonly { "yes" } else { "no" }])
            .args(["--appendfsync", "always"])
            .args(&self.extra_args)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("redis-server (is Redis installed? scripts/dev-env.sh up installs it)");
        self.child = Some(child);
        let port = self.port;
        eventually(
            "private Redis to answer PING",
            Duration::from_secs(20),
            || async move {
                std::net::TcpStream::connect(("127.0.0.1", port))
                    .ok()
                    .map(|_| ())
            },
        )
        .await;
    }

    pub fn kill9(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    pub async fn restart(&mut self) {
        self.kill9();
        self.launch().await;
    }
}

impl Drop for RedisInstance {
    fn drop(&mut self) {
        self.kill9();
    }
}

/// A TCP proxy to a local port that can cut a connection instead of passing
/// on a chosen server reply: the server executed the command, the client
/// never hears of it (a reply lost on the wire).
pub struct ReplyCutter {
    pub port: u16,
    armed: Arc<std::sync::Mutex<Option<Vec<u8>>>>,
    cuts: Arc<std::sync::atomic::AtomicUsize>,
    task: tokio::task::JoinHandle<()>,
}

impl ReplyCutter {
    pub async fn start(target_port: u16) -> ReplyCutter {
        use std::sync::atomic::AtomicUsize;
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let listener = tokio::net::TcpListener::bind(("127.0.0.1", 0))
            .await
            .expect("bind proxy");
        let port = listener.local_addr().expect("proxy addr").port();
        let armed: Arc<std::sync::Mutex<Option<Vec<u8>>>> = Arc::default();
        let cuts = Arc::new(AtomicUsize::new(0));
        let (armed_c, cuts_c) = (armed.clone(), cuts.clone());
        let task = tokio::spawn(async move {
            while let Ok((client, _)) = listener.accept().await {
                let Ok(server) = tokio::net::TcpStream::connect(("127.0.0.1", target_port)).await
                else {
                    continue;
                };
                let (mut cr, mut cw) = client.into_split();
                let (mut sr, mut sw) = server.into_split();
                let upstream = tokio::spawn(async move {
                    let _ = tokio::io::copy(&mut cr, &mut sw).await;
                });
                let (armed, cuts) = (armed_c.clone(), cuts_c.clone());
                tokio::spawn(async move {
                    let mut buf = vec![0u8; 256 * 1024];
                    loop {
                        let n = match sr.read(&mut buf).await {
                            Ok(0) | Err(_) => break,
                            Ok(n) => n,
                        };
                        let cut = {
                            let mut a = armed.lock().expect("cutter lock");
                            let hit = a
                                .as_deref()
                                .is_some_and(|p| buf[..n].windows(p.len()).any(|w| w == p));
                            if hit {
                                *a = None;
                            }
                            hit
                        };
                        if cut {
                            cuts.fetch_add(1, Ordering::SeqCst);
                            break;
                        }
                        if cw.write_all(&buf[..n]).await.is_err() {
                            break;
                        }
                    }
                    // Dropping both halves closes the client's connection.
                    upstream.abort();
                });
            }
        });
        ReplyCutter {
            port,
            armed,
            cuts,
            task,
        }
    }

    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    /// The next server reply containing `needle` (within one read) is not
    /// passed on; its connection is closed instead.
    pub fn cut_next_reply_containing(&self, needle: &str) {
        *self.armed.lock().expect("cutter lock") = Some(needle.as_bytes().to_vec());
    }

    /// Replies cut so far.
    pub fn cuts(&self) -> usize {
        self.cuts.load(Ordering::SeqCst)
    }
}

impl Drop for ReplyCutter {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// A process a test started, killed and reaped when dropped, so that a
/// failing assertion leaves nothing running.
pub struct KillOnDrop(pub Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}
