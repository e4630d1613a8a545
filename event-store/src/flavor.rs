//! MySQL and MariaDB: every place where the two servers differ for the
//! pipeline, behind one type.
//!
//! The flavor is known from the connection itself (the handshake version
//! and `VERSION()`), so one topology may mix both. What differs:
//!
//! | | MariaDB 10.5+ | MySQL 8.0 / 8.4 / 9.x |
//! |---|---|---|
//! | binlog position | `@@gtid_binlog_pos`, `SHOW MASTER STATUS` | `SHOW BINARY LOG STATUS` (8.2+; `SHOW MASTER STATUS` before) with its `Executed_Gtid_Set` |
//! | `SHOW BINARY LOGS` | 2 columns | 3 columns (`Encrypted`) |
//! | resume | `@slave_connect_state` + COM_BINLOG_DUMP | COM_BINLOG_DUMP_GTID with the GTID set |
//! | heartbeat | `@master_heartbeat_period` | `@source_heartbeat_period` (8.0.26+), `@master_…` before |
//! | consistent snapshot | `binlog_snapshot_file/position` of the snapshot | a short `LOCK TABLES … READ` on the event tables around the snapshot's start |
//! | binlog monitor privilege | `BINLOG MONITOR` | `REPLICATION CLIENT` |
//! | required settings | `sql/server.cnf` | `sql/mysql.cnf` (also GTIDs on) |
//! | privileges through roles | `SHOW GRANTS` as is | `SHOW GRANTS … USING` the active roles |
//!
//! The checks a reader runs before streaming (settings, grants) are here
//! too; cdc-reader's preflight only judges their answers.

use mysql_async::prelude::*;
use mysql_async::{BinlogStreamRequest, Conn, Row};
use rps_core::gtid::{GtidPosition, MySqlGtidSet};
use std::fmt;
use std::time::Duration;

/// Which server a connection talks to, and its version.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Flavor {
    MariaDb { version: (u16, u16, u16) },
    MySql { version: (u16, u16, u16) },
}

/// A point in a server's binlog: GTID position, file and end position.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct BinlogPosition {
    pub gtid: GtidPosition,
    pub file: String,
    pub pos: u64,
}

impl fmt::Display for Flavor {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let (name, (a, b, c)) = match self {
            Flavor::MariaDb { version } => ("MariaDB", version),
            Flavor::MySql { version } => ("MySQL", version),
        };
        write!(f, "{name} {a}.{b}.{c}")
    }
}

/// How long the snapshot's table lock waits for writers in flight before
/// it gives up and tries again (writers queue behind a waiting lock).
const SNAPSHOT_LOCK_WAIT_SECS: u32 = 5;
const SNAPSHOT_LOCK_ATTEMPTS: u32 = 10;

impl Flavor {
    /// The flavor of the server `conn` is connected to.
    pub async fn detect(conn: &mut Conn) -> Result<Flavor, mysql_async::Error> {
        let version = conn.server_version();
        let text: Option<String> = conn.query_first("SELECT VERSION()").await?;
        Ok(if text.unwrap_or_default().contains("MariaDB") {
            Flavor::MariaDb { version }
        } else {
            Flavor::MySql { version }
        })
    }

    pub fn is_mysql(&self) -> bool {
        matches!(self, Flavor::MySql { .. })
    }

    /// Why a prepared branch can answer "unknown XID" to `XA COMMIT` or
    /// `XA ROLLBACK` and still be listed by `XA RECOVER`, and what to do.
    pub fn unknown_xid_but_listed(&self) -> &'static str {
        match self {
            Flavor::MySql { .. } => {
                "the server answers \"unknown XID\" but still lists it; try again"
            }
            Flavor::MariaDb { .. } => {
                "the server answers \"unknown XID\" but still lists it: on MariaDB a prepared \
                 branch belongs to the client session that prepared it until that session \
                 disconnects; decide it from that client, or end its connection (KILL) and \
                 run this again"
            }
        }
    }

    /// Server settings the reader requires, as (variable, value).
    pub fn required_settings(&self) -> &'static [(&'static str, &'static str)] {
        const COMMON: [(&str, &str); 4] = [
            ("log_bin", "ON"),
            ("binlog_format", "ROW"),
            ("binlog_row_image", "FULL"),
            ("binlog_row_metadata", "FULL"),
        ];
        const MYSQL: [(&str, &str); 7] = [
            COMMON[0],
            COMMON[1],
            COMMON[2],
            COMMON[3],
            ("gtid_mode", "ON"),
            ("enforce_gtid_consistency", "ON"),
            // PARTIAL_JSON would log updates as diffs; the reader wants
            // every image whole (an UPDATE is a dead letter either way).
            ("binlog_row_value_options", ""),
        ];
        match self {
            Flavor::MariaDb { .. } => &COMMON,
            Flavor::MySql { .. } => &MYSQL,
        }
    }

    /// Each required setting that differs, as (setting, expected, actual).
    /// A setting the server does not know shows as `(not supported)`.
    pub async fn check_settings(
        &self,
        conn: &mut Conn,
    ) -> Result<Vec<(String, String, String)>, mysql_async::Error> {
        let mut out = Vec::new();
        for &(setting, expected) in self.required_settings() {
            let actual: Option<Option<String>> = conn
                .query_first(format!("SELECT CAST(@@GLOBAL.{setting} AS CHAR)"))
                .await
                .or_else(|e| match e {
                    // ER_UNKNOWN_SYSTEM_VARIABLE: a server without the setting.
                    mysql_async::Error::Server(ref s) if s.code == 1193 => Ok(Some(None)),
                    e => Err(e),
                })?;
            let actual = match actual {
                Some(Some(v)) => v,
                _ => "(not supported)".to_string(),
            };
            // Boolean settings show as 1/0 on some versions.
            let shown = match actual.as_str() {
                "1" => "ON",
                "0" => "OFF",
                v => v,
            };
            if !shown.eq_ignore_ascii_case(expected) {
                let expected = if expected.is_empty() { "''" } else { expected };
                out.push((setting.to_string(), expected.to_string(), actual));
            }
        }
        Ok(out)
    }

    /// `SHOW GRANTS` of the session's account, with the privileges of its
    /// active roles expanded where the server can (MySQL's `SHOW GRANTS …
    /// USING role`; elsewhere the plain list stands), so a privilege granted
    /// through a role counts.
    pub async fn effective_grants(
        &self,
        conn: &mut Conn,
    ) -> Result<Vec<String>, mysql_async::Error> {
        let mut grants: Vec<String> = conn.query("SHOW GRANTS").await?;
        let roles: Option<Option<String>> = conn
            .query_first("SELECT CURRENT_ROLE()")
            .await
            .or_else(|_| Ok::<_, mysql_async::Error>(None))?;
        if let Some(roles) = roles.flatten().filter(|r| r != "NONE" && !r.is_empty()) {
            // CURRENT_ROLE() lists `name`@`host` quoted and comma-separated.
            if let Ok(more) = conn
                .query::<String, _>(format!("SHOW GRANTS FOR CURRENT_USER() USING {roles}"))
                .await
            {
                grants = more;
            }
        }
        Ok(grants)
    }

    /// The privilege that lets the pipeline read binlog coordinates.
    pub fn binlog_monitor_privilege(&self) -> &'static str {
        match self {
            Flavor::MariaDb { .. } => "BINLOG MONITOR",
            Flavor::MySql { .. } => "REPLICATION CLIENT",
        }
    }

    /// Privileges on each shard database beyond SELECT and INSERT, and why.
    pub fn snapshot_privileges(&self) -> &'static [&'static str] {
        match self {
            Flavor::MariaDb { .. } => &[],
            // The consistent snapshot's brief table lock (see
            // `begin_consistent_snapshot`).
            Flavor::MySql { .. } => &["LOCK TABLES"],
        }
    }

    /// Global privileges beyond replication, and why: MySQL lists other
    /// sessions' prepared XA branches (`rpsctl xa`) only with
    /// XA_RECOVER_ADMIN; MariaDB lists them to any account.
    pub fn xa_privileges(&self) -> &'static [&'static str] {
        match self {
            Flavor::MariaDb { .. } => &[],
            Flavor::MySql { .. } => &["XA_RECOVER_ADMIN"],
        }
    }

    /// The statement that shows the binlog head.
    fn status_statement(&self) -> &'static str {
        match self {
            Flavor::MySql { version } if *version >= (8, 2, 0) => "SHOW BINARY LOG STATUS",
            _ => "SHOW MASTER STATUS",
        }
    }

    /// The server's current binlog head with the GTID position of that point.
    pub async fn current_position(
        &self,
        conn: &mut Conn,
    ) -> Result<BinlogPosition, mysql_async::Error> {
        let status: Option<Row> = conn.query_first(self.status_statement()).await?;
        let (file, pos, executed) = match status {
            Some(row) => (
                row.get::<Option<String>, _>(0)
                    .flatten()
                    .unwrap_or_default(),
                row.get::<Option<u64>, _>(1).flatten().unwrap_or(4),
                // MySQL's fifth column is the executed GTID set of that
                // same point.
                row.get::<Option<String>, _>(4).flatten(),
            ),
            None => (String::new(), 4, None),
        };
        let text = match self {
            Flavor::MySql { .. } => executed.unwrap_or_default(),
            Flavor::MariaDb { .. } => {
                let g: Option<Option<String>> =
                    conn.query_first("SELECT @@gtid_binlog_pos").await?;
                g.flatten().unwrap_or_default()
            }
        };
        Ok(BinlogPosition {
            gtid: parse_position(&text)?,
            file,
            pos,
        })
    }

    /// `SHOW BINARY LOGS` as (file, size), oldest first.
    pub async fn binary_logs(
        &self,
        conn: &mut Conn,
    ) -> Result<Vec<(String, u64)>, mysql_async::Error> {
        let rows: Vec<Row> = conn.query("SHOW BINARY LOGS").await?;
        Ok(rows
            .into_iter()
            .map(|r| {
                (
                    r.get::<String, _>(0).unwrap_or_default(),
                    r.get::<u64, _>(1).unwrap_or_default(),
                )
            })
            .collect())
    }

    /// Turns `conn` into a binlog stream as replica `server_id`, from
    /// `start`: by GTID position when it has one, else by file and position.
    pub async fn open_binlog(
        &self,
        mut conn: Conn,
        server_id: u32,
        start: &BinlogPosition,
        heartbeat: Duration,
    ) -> Result<mysql_async::BinlogStream, mysql_async::Error> {
        let nanos = heartbeat.as_nanos();
        match self {
            Flavor::MariaDb { .. } => {
                // Capability 4: GTID events as such (MariaDB 10.0+ replica).
                conn.query_drop(format!(
                    "SET @mariadb_slave_capability=4, @master_heartbeat_period={nanos}"
                ))
                .await?;
            }
            Flavor::MySql { version } => {
                let var = if *version >= (8, 0, 26) {
                    "source"
                } else {
                    "master"
                };
                conn.query_drop(format!(
                    "SET @{var}_heartbeat_period={nanos}, @{var}_binlog_checksum='CRC32'"
                ))
                .await?;
            }
        }
        let file = start.file.clone().into_bytes();
        let request = BinlogStreamRequest::new(server_id);
        match &start.gtid {
            GtidPosition::MariaDb(state) if !state.is_empty() => {
                conn.query_drop(format!(
                    "SET @slave_connect_state='{state}', @slave_gtid_strict_mode=0"
                ))
                .await?;
                conn.get_binlog_stream(request).await
            }
            GtidPosition::MySql(set) if !set.is_empty() => {
                let request = request.with_gtid().with_gtid_set(dump_sids(set)?);
                conn.get_binlog_stream(request).await
            }
            _ => {
                let request = request.with_filename(&file).with_pos(start.pos.max(4));
                conn.get_binlog_stream(request).await
            }
        }
    }

    /// Starts a consistent read-only snapshot on `conn` and returns the
    /// binlog point it corresponds to: every event-table row committed
    /// before the point is visible to the snapshot, none after it is.
    ///
    /// MariaDB tells that point itself (`binlog_snapshot_file/position`).
    /// MySQL does not, so `locker` (a second connection to the same server)
    /// holds `LOCK TABLES … READ` on every event table `event_tables` lists while the
    /// snapshot starts and the binlog head is read: no event-table write can
    /// commit in between, so the head is exact for those tables. The lock
    /// lasts two round trips; transactions of other tables are not blocked.
    /// A table created meanwhile would not be locked, so the list is checked
    /// again under the snapshot and the whole step retried if it changed.
    pub async fn begin_consistent_snapshot(
        &self,
        conn: &mut Conn,
        locker: &mut Conn,
        event_tables: &TableListQuery,
    ) -> Result<BinlogPosition, SnapshotError> {
        conn.query_drop("SET SESSION TRANSACTION ISOLATION LEVEL REPEATABLE READ")
            .await?;
        match self {
            Flavor::MariaDb { .. } => {
                conn.query_drop("START TRANSACTION WITH CONSISTENT SNAPSHOT, READ ONLY")
                    .await?;
                let status: Vec<(String, String)> =
                    conn.query("SHOW STATUS LIKE 'binlog_snapshot_%'").await?;
                let get = |name: &str| {
                    status
                        .iter()
                        .find(|(k, _)| k.eq_ignore_ascii_case(name))
                        .map(|(_, v)| v.clone())
                };
                let (Some(file), Some(pos)) = (
                    get("binlog_snapshot_file").filter(|f| !f.is_empty()),
                    get("binlog_snapshot_position").and_then(|p| p.parse::<u64>().ok()),
                ) else {
                    return Err(SnapshotError::NoBinlog);
                };
                let gtid: Option<Option<String>> = conn
                    .exec_first("SELECT BINLOG_GTID_POS(?, ?)", (file.as_str(), pos))
                    .await?;
                Ok(BinlogPosition {
                    gtid: parse_position(&gtid.flatten().unwrap_or_default())?,
                    file,
                    pos,
                })
            }
            Flavor::MySql { .. } => {
                locker
                    .query_drop(format!(
                        "SET SESSION lock_wait_timeout = {SNAPSHOT_LOCK_WAIT_SECS}"
                    ))
                    .await?;
                let mut last_err = None;
                for _ in 0..SNAPSHOT_LOCK_ATTEMPTS {
                    let before = event_tables.run(locker).await?;
                    if before.is_empty() {
                        conn.query_drop("START TRANSACTION WITH CONSISTENT SNAPSHOT, READ ONLY")
                            .await?;
                        let head = self.current_position(conn).await?;
                        if head.file.is_empty() {
                            return Err(SnapshotError::NoBinlog);
                        }
                        return Ok(head);
                    }
                    let lock = format!(
                        "LOCK TABLES {}",
                        before
                            .iter()
                            .map(|(d, t)| format!("`{d}`.`{t}` READ"))
                            .collect::<Vec<_>>()
                            .join(", ")
                    );
                    match locker.query_drop(lock).await {
                        Ok(()) => {}
                        // Lock wait timeout: a long writer, or a prepared XA
                        // branch, which keeps its metadata locks until it is
                        // decided. While the READ lock waits, new writers of
                        // the table queue behind it, so a branch ends the
                        // attempts at once. Without XA_RECOVER_ADMIN the
                        // list is empty and the attempts go on.
                        Err(mysql_async::Error::Server(e)) if e.code == 1205 => {
                            let prepared = crate::xa::recover(locker).await.unwrap_or_default();
                            if !prepared.is_empty() {
                                return Err(SnapshotError::PreparedXa(prepared));
                            }
                            last_err = Some(e.message);
                            continue;
                        }
                        Err(e) => return Err(e.into()),
                    }
                    let started = async {
                        conn.query_drop("START TRANSACTION WITH CONSISTENT SNAPSHOT, READ ONLY")
                            .await?;
                        self.current_position(conn).await
                    }
                    .await;
                    locker.query_drop("UNLOCK TABLES").await?;
                    let head = started?;
                    if head.file.is_empty() {
                        return Err(SnapshotError::NoBinlog);
                    }
                    let after = event_tables.run(conn).await?;
                    if after == before {
                        return Ok(head);
                    }
                    conn.query_drop("ROLLBACK").await?;
                }
                Err(SnapshotError::LockTimeout(last_err.unwrap_or_else(|| {
                    "event tables kept changing while the snapshot started".into()
                })))
            }
        }
    }
}

/// Lists the event tables to lock for a snapshot, as (database, table).
pub struct TableListQuery {
    pub databases: Vec<String>,
}

impl TableListQuery {
    async fn run(&self, conn: &mut Conn) -> Result<Vec<(String, String)>, mysql_async::Error> {
        let mut out = Vec::new();
        for db in &self.databases {
            let names: Vec<String> = conn
                .exec(
                    "SELECT table_name FROM information_schema.tables WHERE table_schema = ? ORDER BY table_name",
                    (db.as_str(),),
                )
                .await?;
            out.extend(
                names
                    .into_iter()
                    .filter(|t| rps_core::config::is_event_table(t))
                    .map(|t| (db.clone(), t)),
            );
        }
        Ok(out)
    }
}

/// Why a consistent snapshot could not start.
#[derive(Debug, thiserror::Error)]
pub enum SnapshotError {
    #[error(transparent)]
    Mysql(#[from] mysql_async::Error),
    #[error("the server reports no binlog position for the snapshot: binary logging must be on (log_bin; sql/server.cnf or sql/mysql.cnf)")]
    NoBinlog,
    #[error("the event tables could not be locked for the snapshot's start: {0}")]
    LockTimeout(String),
    #[error(
        "the event tables could not be locked for the snapshot's start, and the server has \
         prepared XA branches, which keep their tables' metadata locks until decided (on MySQL a \
         snapshot cannot start beside one): {}; decide them first (`rpsctl xa list`, `rpsctl xa \
         commit|rollback XID`)",
        .0.iter().map(|x| x.to_string()).collect::<Vec<_>>().join(", ")
    )]
    PreparedXa(Vec<rps_core::Xid>),
    #[error("the server's GTID position is not valid: {0}")]
    BadGtid(#[from] rps_core::gtid::GtidParseError),
}

fn parse_position(text: &str) -> Result<GtidPosition, mysql_async::Error> {
    text.parse()
        .map_err(|e: rps_core::gtid::GtidParseError| mysql_async::Error::Other(Box::new(e)))
}

/// The GTID set as COM_BINLOG_DUMP_GTID takes it (half-open intervals,
/// one block per uuid and tag). A tag is only reachable through the text
/// form, so each block is built from its text.
fn dump_sids(set: &MySqlGtidSet) -> Result<Vec<mysql_async::Sid<'static>>, mysql_async::Error> {
    set.blocks()
        .map(|(sid, tag, intervals)| {
            let mut text = sid.to_string();
            if let Some(t) = tag {
                text.push(':');
                text.push_str(t);
            }
            for &(a, b) in intervals {
                text.push_str(&format!(":{a}-{}", b - 1));
            }
            text.parse::<mysql_async::Sid<'static>>()
                .map_err(|e| mysql_async::Error::Other(Box::new(e)))
        })
        .collect()
}
