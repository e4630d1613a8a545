//! One harness, two server flavors: `RPS_TEST_FLAVOR=mariadb` (the default)
//! or `mysql` picks which shared servers a [`crate::TestEnv`] uses and what a
//! [`ShardServerInstance`] starts, so every integration test runs unchanged
//! against either. `scripts/test.sh` runs the suite once per flavor.

use crate::{MariaDbInstance, MySqlInstance, TestServer};
use mysql_async::prelude::*;
use std::process::Command;

/// The server flavor the tests of this process run against.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TestFlavor {
    MariaDb,
    MySql,
}

impl TestFlavor {
    /// From `RPS_TEST_FLAVOR`; MariaDB when unset.
    pub fn current() -> TestFlavor {
        match std::env::var("RPS_TEST_FLAVOR").as_deref() {
            Ok("mysql") => TestFlavor::MySql,
            Ok("mariadb") | Ok("") | Err(_) => TestFlavor::MariaDb,
            Ok(other) => panic!("RPS_TEST_FLAVOR={other:?}: expected mariadb or mysql"),
        }
    }

    /// The shared servers `scripts/dev-env.sh up [mysql]` starts.
    pub fn shared_ports(&self) -> &'static str {
        match self {
            TestFlavor::MariaDb => "3307 3308",
            TestFlavor::MySql => "3317 3318",
        }
    }

    /// The Redis of that environment.
    pub fn shared_redis_url(&self) -> &'static str {
        match self {
            TestFlavor::MariaDb => "redis://127.0.0.1:6380",
            TestFlavor::MySql => "redis://127.0.0.1:6381",
        }
    }

    /// The command that prints a server's binlog decoded (`-v`), read from
    /// the server over TCP as root: `mariadb-binlog`, or MySQL's own
    /// `mysqlbinlog` from the sid root.
    pub fn binlog_dump_command(&self) -> Command {
        match self {
            TestFlavor::MariaDb => Command::new("mariadb-binlog"),
            TestFlavor::MySql => {
                let mut c = Command::new("chroot");
                c.arg(crate::mysql_root()).arg("mysqlbinlog");
                c
            }
        }
    }
}

/// A private shard server of the current flavor, with the pipeline's
/// required settings, its own port and data folder. Killed on drop.
pub enum ShardServerInstance {
    MariaDb(MariaDbInstance),
    MySql(MySqlInstance),
}

impl ShardServerInstance {
    pub async fn start(server_id: u32) -> ShardServerInstance {
        match TestFlavor::current() {
            TestFlavor::MariaDb => {
                ShardServerInstance::MariaDb(MariaDbInstance::start(server_id).await)
            }
            TestFlavor::MySql => ShardServerInstance::MySql(MySqlInstance::start(server_id).await),
        }
    }

    /// With more server options (e.g. [`crate::tls::TestCerts::mysql_server_args`]).
    pub async fn start_with_args(server_id: u32, args: Vec<String>) -> ShardServerInstance {
        match TestFlavor::current() {
            TestFlavor::MariaDb => ShardServerInstance::MariaDb(
                MariaDbInstance::start_with_args(server_id, args).await,
            ),
            TestFlavor::MySql => {
                ShardServerInstance::MySql(MySqlInstance::start_with_args(server_id, args).await)
            }
        }
    }

    pub fn port(&self) -> u16 {
        match self {
            ShardServerInstance::MariaDb(s) => s.port,
            ShardServerInstance::MySql(s) => s.port,
        }
    }

    pub fn test_server(&self, name: &str) -> TestServer {
        match self {
            ShardServerInstance::MariaDb(s) => s.test_server(name),
            ShardServerInstance::MySql(s) => s.test_server(name),
        }
    }

    /// kill -9: no shutdown, no flush.
    pub fn kill9(&mut self) {
        match self {
            ShardServerInstance::MariaDb(s) => s.kill9(),
            ShardServerInstance::MySql(s) => s.kill9(),
        }
    }

    /// Clean shutdown.
    pub fn stop(&mut self) {
        match self {
            ShardServerInstance::MariaDb(s) => s.stop(),
            ShardServerInstance::MySql(s) => s.stop(),
        }
    }

    /// Starts again on the same port and data.
    pub async fn restart(&mut self) {
        match self {
            ShardServerInstance::MariaDb(s) => s.restart().await,
            ShardServerInstance::MySql(s) => s.restart().await,
        }
    }
}

/// The server's binlog head `(file, position)`, whatever its flavor.
pub async fn binlog_head(conn: &mut mysql_async::Conn) -> (String, u64) {
    let flavor = rps_event_store::Flavor::detect(conn)
        .await
        .expect("server flavor");
    let head = flavor.current_position(conn).await.expect("binlog head");
    (head.file, head.pos)
}

/// Rotates the binlog and purges every earlier file, waiting until only the
/// new one is left (a file still needed for crash recovery is kept until
/// its checkpoint passes).
pub async fn purge_all_but_a_new_binlog(conn: &mut mysql_async::Conn) {
    conn.query_drop("FLUSH BINARY LOGS")
        .await
        .expect("flush binary logs");
    let (file, _) = binlog_head(conn).await;
    for _ in 0..50 {
        conn.query_drop(format!("PURGE BINARY LOGS TO '{file}'"))
            .await
            .expect("purge binary logs");
        let logs: Vec<mysql_async::Row> = conn.query("SHOW BINARY LOGS").await.expect("logs");
        if logs.len() == 1 {
            return;
        }
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    }
    let logs: Vec<mysql_async::Row> = conn.query("SHOW BINARY LOGS").await.expect("logs");
    assert_eq!(logs.len(), 1, "only the current binlog is left");
}
