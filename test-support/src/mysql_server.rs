//! Private MySQL servers for tests, from the Debian sid root that
//! `scripts/dev-env.sh up mysql` builds (MySQL 9.7 needs a newer glibc than
//! the host's, so `mysqld` runs chrooted; it shares the host's network).

use crate::{free_port, repo_root, ServerProcess, TestServer};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// The sid root holding `mysqld`: `RPS_MYSQL_ROOT`, or `.dev-env/mysql-root`.
pub fn mysql_root() -> PathBuf {
    std::env::var_os("RPS_MYSQL_ROOT")
        .map(PathBuf::from)
        .unwrap_or_else(|| repo_root().join(".dev-env/mysql-root"))
}

fn require_root() -> PathBuf {
    let root = mysql_root();
    assert!(
        root.join("usr/sbin/mysqld").exists(),
        "no MySQL server in {}: run `scripts/dev-env.sh up mysql` first",
        root.display()
    );
    root
}

/// Copies `sql/mysql.cnf` into the root (the chrooted server sees nothing
/// outside it) and returns its path inside the root.
fn install_cnf(root: &Path) -> &'static str {
    let dir = root.join("etc/rps");
    std::fs::create_dir_all(&dir).expect("etc/rps in the MySQL root");
    let text = std::fs::read_to_string(repo_root().join("sql/mysql.cnf")).expect("sql/mysql.cnf");
    let dest = dir.join("mysql-test.cnf");
    // Written to a temp file first: parallel tests must never see a half
    // file. The temp name is unique per call, not just per process: tests
    // of one binary start servers from several threads at once.
    static SEQ: AtomicU64 = AtomicU64::new(0);
    let seq = SEQ.fetch_add(1, Ordering::Relaxed);
    let tmp = dir.join(format!("mysql-test.cnf.{}.{seq}", std::process::id()));
    std::fs::write(&tmp, text).expect("write cnf");
    std::fs::rename(&tmp, &dest).expect("install cnf");
    "/etc/rps/mysql-test.cnf"
}

/// An initialised data directory to copy: `--initialize-insecure` takes
/// seconds, a copy a fraction of that. Made once per root; tests starting
/// side by side each build one and the first rename wins.
fn template(root: &Path) -> PathBuf {
    let tpl = root.join("var/lib/rps/test-template");
    if tpl.join("mysql.ibd").exists() {
        return tpl;
    }
    std::fs::create_dir_all(root.join("var/lib/rps")).expect("var/lib/rps");
    let name = format!("test-template.{}.{}", std::process::id(), free_port());
    let partial = root.join("var/lib/rps").join(&name);
    let out = Command::new("chroot")
        .arg(root)
        .args([
            "mysqld",
            "--no-defaults",
            "--initialize-insecure",
            "--user=root",
        ])
        .arg(format!("--datadir=/var/lib/rps/{name}"))
        .output()
        .expect("chroot mysqld --initialize-insecure");
    assert!(
        out.status.success(),
        "mysqld --initialize-insecure failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    // Each copy must get a server uuid of its own (GTIDs name it).
    let _ = std::fs::remove_file(partial.join("auto.cnf"));
    if std::fs::rename(&partial, &tpl).is_err() {
        let _ = std::fs::remove_dir_all(&partial);
    }
    assert!(
        tpl.join("mysql.ibd").exists(),
        "MySQL test template in place"
    );
    tpl
}

/// A private MySQL server with the pipeline's required settings
/// (`sql/mysql.cnf`), its own port and data folder. Killed on drop.
pub struct MySqlInstance {
    // First: fields drop in order, and the server must die before its folder goes.
    process: ServerProcess,
    root: PathBuf,
    dir: tempfile::TempDir,
    pub port: u16,
    pub server_id: u32,
    extra_args: Vec<String>,
}

impl MySqlInstance {
    pub async fn start(server_id: u32) -> MySqlInstance {
        Self::start_with_args(server_id, Vec::new()).await
    }

    /// With more server options (paths as seen inside the root), kept
    /// across restarts.
    pub async fn start_with_args(server_id: u32, extra_args: Vec<String>) -> MySqlInstance {
        let root = require_root();
        let tmp_base = root.join("var/tmp");
        std::fs::create_dir_all(&tmp_base).expect("var/tmp in the MySQL root");
        let dir = tempfile::Builder::new()
            .prefix("rps-mysql-")
            .tempdir_in(&tmp_base)
            .expect("tempdir");
        let tpl = template(&root);
        let st = Command::new("cp")
            .arg("-a")
            .arg(&tpl)
            .arg(dir.path().join("data"))
            .status()
            .expect("cp");
        assert!(st.success(), "copying the MySQL template failed");
        std::fs::create_dir_all(dir.path().join("tmp")).expect("tmp");
        let mut me = MySqlInstance {
            root,
            dir,
            port: free_port(),
            server_id,
            process: ServerProcess::default(),
            extra_args,
        };
        me.launch().await;
        me.socket_sql(
            "CREATE USER IF NOT EXISTS 'root'@'127.0.0.1'; GRANT ALL ON *.* TO 'root'@'127.0.0.1' WITH GRANT OPTION;",
        );
        me
    }

    /// A path of this instance's folder as the chrooted server sees it.
    fn inner(&self, rel: &str) -> String {
        let host = self.dir.path().join(rel);
        let inner = host.strip_prefix(&self.root).expect("inside the root");
        format!("/{}", inner.display())
    }

    pub fn data_dir_host(&self) -> PathBuf {
        self.dir.path().join("data")
    }

    /// Runs SQL as root through the socket with the root's `mysql` client.
    pub fn socket_sql(&self, sql: &str) {
        let out = Command::new("chroot")
            .arg(&self.root)
            .arg("mysql")
            .arg(format!("--socket={}", self.inner("mysqld.sock")))
            .args(["-uroot", "-e", sql])
            .output()
            .expect("mysql client");
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }

    async fn launch(&mut self) {
        let cnf = install_cnf(&self.root);
        let child = Command::new("chroot")
            .arg(&self.root)
            .arg("mysqld")
            .arg(format!("--defaults-file={cnf}"))
            .arg(format!("--datadir={}", self.inner("data")))
            .arg(format!("--tmpdir={}", self.inner("tmp")))
            .arg(format!("--port={}", self.port))
            .arg(format!("--socket={}", self.inner("mysqld.sock")))
            .arg(format!("--pid-file={}", self.inner("mysqld.pid")))
            .arg(format!("--log-error={}", self.inner("error.log")))
            .arg(format!("--log-bin={}", self.inner("data/binlog")))
            .arg(format!("--server-id={}", self.server_id))
            .arg("--user=root")
            .arg("--innodb-buffer-pool-size=64M")
            .arg("--innodb-redo-log-capacity=64M")
            .args(&self.extra_args)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("chroot mysqld");
        self.process.set(child);
        // Ready when it answers a ping through its socket; a server that
        // exits first (port taken, bad setting) fails at once with its log.
        let started = Instant::now();
        let mut wait = Duration::from_millis(50);
        loop {
            let ping = Command::new("chroot")
                .arg(&self.root)
                .arg("mysqladmin")
                .arg(format!("--socket={}", self.inner("mysqld.sock")))
                .args(["-uroot", "ping"])
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status()
                .map(|s| s.success())
                .unwrap_or(false);
            if ping {
                return;
            }
            if let Some(status) = self.process.exited() {
                panic!(
                    "private MySQL on port {} exited while starting ({status}); error log:\n{}",
                    self.port,
                    self.error_log_tail()
                );
            }
            if started.elapsed() > Duration::from_secs(60) {
                panic!(
                    "timed out after 60s waiting for private MySQL on port {}; error log:\n{}",
                    self.port,
                    self.error_log_tail()
                );
            }
            tokio::time::sleep(wait).await;
            wait = (wait * 2).min(Duration::from_millis(250));
        }
    }

    fn error_log_tail(&self) -> String {
        let log = std::fs::read_to_string(self.dir.path().join("error.log")).unwrap_or_default();
        let lines: Vec<&str> = log.lines().collect();
        lines[lines.len().saturating_sub(20)..].join("\n")
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

#[cfg(test)]
mod tests {
    use super::*;
    use mysql_async::prelude::*;

    async fn gtid_mode_and_row_metadata(port: u16) -> (String, String) {
        let mut conn = mysql_async::Conn::from_url(format!("mysql://root@127.0.0.1:{port}"))
            .await
            .expect("connect as root over TCP");
        let row: Option<(String, String)> = conn
            .query_first("SELECT @@gtid_mode, @@binlog_row_metadata")
            .await
            .expect("select settings");
        conn.disconnect().await.expect("disconnect");
        row.expect("one row")
    }

    #[tokio::test]
    async fn private_mysql_starts_with_the_pipeline_settings_restarts_and_dies() {
        let t = Instant::now();
        let mut my = MySqlInstance::start(41).await;
        eprintln!("MySqlInstance::start took {:?}", t.elapsed());
        assert_eq!(
            gtid_mode_and_row_metadata(my.port).await,
            ("ON".to_string(), "FULL".to_string())
        );
        assert!(my.data_dir_host().join("mysql.ibd").exists());
        // A server uuid of its own, not the template's.
        assert!(my.data_dir_host().join("auto.cnf").exists());
        my.socket_sql("CREATE DATABASE rps_selftest; CREATE TABLE rps_selftest.t (id INT PRIMARY KEY); INSERT INTO rps_selftest.t VALUES (1);");

        let t = Instant::now();
        my.restart().await;
        eprintln!("MySqlInstance::restart took {:?}", t.elapsed());
        assert_eq!(
            gtid_mode_and_row_metadata(my.port).await,
            ("ON".to_string(), "FULL".to_string())
        );
        my.socket_sql("SELECT id FROM rps_selftest.t");

        my.kill9();
        assert!(
            mysql_async::Conn::from_url(format!("mysql://root@127.0.0.1:{}", my.port))
                .await
                .is_err(),
            "killed server still answers"
        );
        my.restart().await;
        my.socket_sql("INSERT INTO rps_selftest.t VALUES (2)");
    }

    #[tokio::test]
    async fn two_private_mysql_servers_have_their_own_server_uuid() {
        let (a, b) = tokio::join!(MySqlInstance::start(42), MySqlInstance::start(43));
        let uuid = |port: u16| async move {
            let mut conn = mysql_async::Conn::from_url(format!("mysql://root@127.0.0.1:{port}"))
                .await
                .expect("connect");
            let u: Option<String> = conn
                .query_first("SELECT @@server_uuid")
                .await
                .expect("uuid");
            u.expect("uuid row")
        };
        assert_ne!(uuid(a.port).await, uuid(b.port).await);
    }
}
