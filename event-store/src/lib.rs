//! The event store: the shard databases on the MySQL servers, through SQL.
//!
//! This is the one crate that sends SQL to the shard servers, so the column
//! list, the row decoding and the duplicate-key handling are written once:
//! schema setup (`rpsctl init`), appends (simulator, compensator), reads of
//! some matches' events (compensator) and ordered history reads (replay,
//! export, verify, snapshots), server checks (cdc-reader's preflight, behind
//! [`Flavor`]) and XA branches (`rpsctl xa`). Callers get named operations
//! with typed answers, never a connection: the pools stay inside
//! [`EventStore`], and a writer that wants one session of its own holds a
//! [`ShardSession`], which only offers the store's operations. The binlog is
//! not read here; that is cdc-reader's job.

mod binlog;
pub mod connect;
mod flavor;
mod history;
mod init;
mod session;
mod snapshot;
pub mod xa;

pub use binlog::BinlogState;
pub use connect::{server_opts, Account};
pub use flavor::{BinlogPosition, Flavor, SnapshotError, TableListQuery};
pub use history::{
    decode_row, read_in_time_order, read_ranges_ahead, HistoryFilter, MatchRangeReader, RangePlan,
    RangeRow, RowResult, StoredRow, TableReader, TimeOrderedChunk, EVENT_COLUMNS,
};
pub use init::{drop_shard_databases, init, InitReport, ServerReport};
pub use session::ShardSession;
pub use snapshot::{ConsistentSnapshot, SnapshotRangeReader};

use mysql_async::prelude::*;
use mysql_async::{Conn, OptsBuilder, Pool, PoolConstraints, PoolOpts};
use rps_core::{Config, MatchEvent, ShardId};
use std::collections::HashMap;
use std::sync::Arc;

/// MySQL's duplicate-key error.
/// <https://mariadb.com/kb/en/mariadb-error-code-reference/> (1062, ER_DUP_ENTRY)
pub const ER_DUP_ENTRY: u16 = 1062;

/// InnoDB gave up waiting for a row lock (`innodb_lock_wait_timeout`);
/// only the statement is rolled back.
/// <https://mariadb.com/kb/en/mariadb-error-code-reference/> (1205, ER_LOCK_WAIT_TIMEOUT)
pub const ER_LOCK_WAIT_TIMEOUT: u16 = 1205;

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("server `{server}`: {source}")]
    Mysql {
        server: String,
        #[source]
        source: mysql_async::Error,
    },
    #[error("server `{server}`: the TLS handshake failed ({message}). Check `tls.mode`, `tls.ca_file` \
             and the client certificate of this server in rps.toml against the server's certificate")]
    Tls { server: String, message: String },
    #[error("invalid MySQL url for server `{server}`: {message}")]
    Url { server: String, message: String },
    #[error("server `{server}` has no `admin_url`; `rpsctl init` needs an account that can create databases and users")]
    NoAdminUrl { server: String },
    #[error("row {row_id} of {database}.{table} does not fit the event model: {message}")]
    BadRow {
        database: String,
        table: String,
        row_id: i64,
        message: String,
    },
    #[error("{0}")]
    Invalid(String),
    #[error("server `{server}` ({flavor}): {source}")]
    Snapshot {
        server: String,
        flavor: String,
        #[source]
        source: SnapshotError,
    },
}

impl StoreError {
    pub(crate) fn mysql(server: &str) -> impl FnOnce(mysql_async::Error) -> StoreError + '_ {
        move |source| {
            if rps_core::tls::is_certificate_rejection(&source) {
                StoreError::Tls {
                    server: server.to_string(),
                    message: source.to_string(),
                }
            } else {
                StoreError::Mysql {
                    server: server.to_string(),
                    source,
                }
            }
        }
    }

    /// Whether retrying later may succeed (connection trouble, server restarting).
    pub fn is_transient(&self) -> bool {
        match self {
            StoreError::Mysql { source, .. } => is_transient_mysql(source),
            StoreError::Snapshot {
                source: SnapshotError::Mysql(source),
                ..
            } => is_transient_mysql(source),
            _ => false,
        }
    }
}

/// Whether a server error code goes away by itself: the one list,
/// [`rps_core::retry::mysql::TRANSIENT`] (1290, read-only during a failover,
/// among them).
pub fn is_transient_server_code(code: u16) -> bool {
    rps_core::retry::mysql::classify_code(code).is_transient()
}

/// Whether a MySQL error may go away by itself: connection trouble, or one
/// of [`is_transient_server_code`]. A refused TLS certificate never is.
pub fn is_transient_mysql(e: &mysql_async::Error) -> bool {
    if rps_core::tls::is_certificate_rejection(e) {
        return false;
    }
    match e {
        mysql_async::Error::Io(_) | mysql_async::Error::Driver(_) => true,
        mysql_async::Error::Server(e) => is_transient_server_code(e.code),
        _ => false,
    }
}

/// What happened to an append.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AppendOutcome {
    Inserted,
    /// `uk_match_version`: someone else appended this version first.
    VersionTaken,
    /// `uk_event`: this very event is already stored (a retried append).
    AlreadyStored,
}

/// What happened to a multi-row append. A duplicate key fails the whole
/// statement, so which rows collided is for the caller to find out (append
/// them one by one, or look their versions up with
/// [`EventStore::stored_versions`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[must_use]
pub enum BatchAppend {
    /// Every row was inserted, in one transaction.
    Inserted,
    /// Some row's `uk_event` or `uk_match_version` was taken: nothing was
    /// inserted.
    DuplicateKey,
}

/// The event id stored under each `(match_id, version)`, as the table holds
/// it (text: a row whose id is not a UUID still answers).
pub type StoredVersions = HashMap<(i64, i32), String>;

/// Connection pools to every server of the topology, with the pipeline's account.
#[derive(Clone)]
pub struct EventStore {
    config: Arc<Config>,
    pools: Arc<Vec<Pool>>,
}

/// Pool options for `account` on `server`: at most `max_conns`
/// connections, sessions in UTC.
pub(crate) fn pool_opts(
    server: &rps_core::ServerConfig,
    account: Account,
    max_conns: usize,
) -> Result<OptsBuilder, StoreError> {
    let constraints = PoolConstraints::new(1, max_conns.max(1)).expect("1 <= max");
    Ok(server_opts(server, account)?
        .pool_opts(PoolOpts::default().with_constraints(constraints))
        .init(vec!["SET time_zone = '+00:00'"]))
}

impl EventStore {
    /// Pools are lazy: nothing connects until the first query.
    pub fn new(config: Arc<Config>) -> Result<Self, StoreError> {
        Self::with_pool_size(config, 32)
    }

    pub fn with_pool_size(config: Arc<Config>, max_conns: usize) -> Result<Self, StoreError> {
        Self::with_session_setup(config, max_conns, Vec::new())
    }

    /// Pools whose sessions run `setup` (e.g. `SET SESSION
    /// innodb_lock_wait_timeout = 3`) on connect and again after each reset
    /// of a connection returned to the pool, which clears session variables.
    pub fn with_session_setup(
        config: Arc<Config>,
        max_conns: usize,
        setup: Vec<String>,
    ) -> Result<Self, StoreError> {
        let pools = config
            .servers
            .iter()
            .map(|s| {
                let o = pool_opts(s, Account::Pipeline, max_conns)?;
                Ok(Pool::new(o.setup(setup.clone())))
            })
            .collect::<Result<Vec<_>, StoreError>>()?;
        Ok(EventStore {
            config,
            pools: Arc::new(pools),
        })
    }

    pub fn config(&self) -> &Config {
        &self.config
    }

    fn server_index(&self, shard: ShardId) -> usize {
        self.config
            .servers
            .iter()
            .position(|s| s.shards.contains(&shard))
            .expect("validated topology hosts every shard")
    }

    /// The pool of the server hosting `shard` and that server's name.
    pub(crate) fn pool_for_shard(&self, shard: ShardId) -> (&Pool, &str) {
        let i = self.server_index(shard);
        (&self.pools[i], &self.config.servers[i].name)
    }

    /// The pool of a server by its position in the topology.
    pub(crate) fn pool_for_server(&self, index: usize) -> (&Pool, &str) {
        (&self.pools[index], &self.config.servers[index].name)
    }

    pub(crate) async fn conn_for_shard(&self, shard: ShardId) -> Result<Conn, StoreError> {
        let (pool, server) = self.pool_for_shard(shard);
        pool.get_conn().await.map_err(StoreError::mysql(server))
    }

    /// Appends one event to `table` of its shard. A duplicate key is an
    /// answer, not an error: the caller decides (re-read and retry, or stop).
    pub async fn append(
        &self,
        shard: ShardId,
        table: &str,
        ev: &MatchEvent,
    ) -> Result<AppendOutcome, StoreError> {
        let (pool, server) = self.pool_for_shard(shard);
        let db = self.config.database(shard);
        let sql = format!(
            "INSERT INTO `{db}`.`{table}` ({}) VALUES ({})",
            INSERT_COLUMNS.join(", "),
            vec!["?"; INSERT_COLUMNS.len()].join(", ")
        );
        let mut conn = pool.get_conn().await.map_err(StoreError::mysql(server))?;
        match conn.exec_drop(sql, insert_params(ev)).await {
            Ok(()) => Ok(AppendOutcome::Inserted),
            Err(mysql_async::Error::Server(e)) if e.code == ER_DUP_ENTRY => {
                if e.message.contains("uk_event") {
                    Ok(AppendOutcome::AlreadyStored)
                } else {
                    Ok(AppendOutcome::VersionTaken)
                }
            }
            Err(e) => Err(StoreError::mysql(server)(e)),
        }
    }

    /// Appends many events of one shard in one multi-row INSERT (one
    /// transaction) on a pooled connection. A duplicate key is an answer:
    /// nothing was inserted, and the caller finds out which row collided.
    pub async fn append_all(
        &self,
        shard: ShardId,
        table: &str,
        events: &[MatchEvent],
    ) -> Result<BatchAppend, StoreError> {
        if events.is_empty() {
            return Ok(BatchAppend::Inserted);
        }
        let mut conn = self.conn_for_shard(shard).await?;
        let server = self.pool_for_shard(shard).1;
        batch_answer(self.append_batch(&mut conn, shard, table, events).await)
            .map_err(StoreError::mysql(server))
    }

    /// Appends many events of one shard in one multi-row INSERT on a
    /// connection the caller opened itself and may hold inside a
    /// transaction of its own (the tests' XA branches, on an admin
    /// connection). Fails whole on any duplicate key. The pipeline appends
    /// through [`EventStore::append_all`] or a [`ShardSession`] instead.
    pub async fn append_batch(
        &self,
        conn: &mut Conn,
        shard: ShardId,
        table: &str,
        events: &[MatchEvent],
    ) -> Result<(), mysql_async::Error> {
        if events.is_empty() {
            return Ok(());
        }
        conn.query_drop(batch_insert_sql(
            &self.config.database(shard),
            table,
            events,
        ))
        .await
    }

    /// Which event id holds each `(match_id, version)` of the given matches
    /// in `table`: after a multi-row append failed, this tells an event
    /// committed after all (its own id) from a version another writer took.
    pub async fn stored_versions(
        &self,
        shard: ShardId,
        table: &str,
        match_ids: &[i64],
    ) -> Result<StoredVersions, StoreError> {
        if match_ids.is_empty() {
            return Ok(StoredVersions::new());
        }
        let (pool, server) = self.pool_for_shard(shard);
        let db = self.config.database(shard);
        let mut conn = pool.get_conn().await.map_err(StoreError::mysql(server))?;
        let rows: Vec<(i64, i32, String)> = conn
            .query(format!(
                "SELECT match_id, version, event_id FROM `{db}`.`{table}` WHERE match_id IN ({})",
                id_list(match_ids)
            ))
            .await
            .map_err(StoreError::mysql(server))?;
        Ok(rows.into_iter().map(|(m, v, e)| ((m, v), e)).collect())
    }

    /// The last stored version of a match, if any (any event table of the shard).
    pub async fn last_version(
        &self,
        shard: ShardId,
        table: &str,
        match_id: i64,
    ) -> Result<Option<i32>, StoreError> {
        let (pool, server) = self.pool_for_shard(shard);
        let db = self.config.database(shard);
        let mut conn = pool.get_conn().await.map_err(StoreError::mysql(server))?;
        let v: Option<Option<i32>> = conn
            .exec_first(
                format!("SELECT MAX(version) FROM `{db}`.`{table}` WHERE match_id = ?"),
                (match_id,),
            )
            .await
            .map_err(StoreError::mysql(server))?;
        Ok(v.flatten())
    }

    /// The event tables of a shard (`match_result_events` and season tables).
    pub async fn event_tables(&self, shard: ShardId) -> Result<Vec<String>, StoreError> {
        let (pool, server) = self.pool_for_shard(shard);
        let db = self.config.database(shard);
        let mut conn = pool.get_conn().await.map_err(StoreError::mysql(server))?;
        let names: Vec<String> = conn
            .exec(
                "SELECT table_name FROM information_schema.tables WHERE table_schema = ? ORDER BY table_name",
                (db,),
            )
            .await
            .map_err(StoreError::mysql(server))?;
        Ok(names
            .into_iter()
            .filter(|t| rps_core::config::is_event_table(t))
            .collect())
    }

    /// Closes every pool (waits for connections to be returned).
    pub async fn disconnect(self) {
        if let Ok(pools) = Arc::try_unwrap(self.pools) {
            for p in pools {
                let _ = p.disconnect().await;
            }
        }
    }
}

/// Match ids as the literal list of an `IN (…)`: integers only, so safe to
/// splice.
pub(crate) fn id_list(ids: &[i64]) -> String {
    ids.iter().map(i64::to_string).collect::<Vec<_>>().join(",")
}

/// A multi-row INSERT's answer: a duplicate key is an outcome, any other
/// error stays one.
pub(crate) fn batch_answer(
    r: Result<(), mysql_async::Error>,
) -> Result<BatchAppend, mysql_async::Error> {
    match r {
        Ok(()) => Ok(BatchAppend::Inserted),
        Err(mysql_async::Error::Server(e)) if e.code == ER_DUP_ENTRY => {
            Ok(BatchAppend::DuplicateKey)
        }
        Err(e) => Err(e),
    }
}

/// The multi-row INSERT of `events` into `db`.`table`.
pub(crate) fn batch_insert_sql(db: &str, table: &str, events: &[MatchEvent]) -> String {
    let mut sql = String::with_capacity(64 + events.len() * 200);
    sql.push_str(&format!(
        "INSERT INTO `{db}`.`{table}` ({}) VALUES ",
        INSERT_COLUMNS.join(", ")
    ));
    for (i, ev) in events.iter().enumerate() {
        if i > 0 {
            sql.push(',');
        }
        push_values_literal(&mut sql, ev);
    }
    sql
}

/// Every column but the auto-increment `id`.
pub const INSERT_COLUMNS: &[&str] = match rps_core::event::COLUMNS.split_first() {
    Some((_, rest)) => rest,
    None => &[],
};

fn insert_params(ev: &MatchEvent) -> Vec<mysql_async::Value> {
    use mysql_async::Value;
    let s = |v: &str| Value::from(v);
    let opt_s = |v: Option<&str>| v.map_or(Value::NULL, Value::from);
    let opt_i = |v: Option<i64>| v.map_or(Value::NULL, Value::from);
    vec![
        s(&ev.event_id.hyphenated().to_string()),
        Value::from(ev.match_id),
        Value::from(ev.version),
        s(ev.event_type.as_str()),
        s(ev.season_id.as_str()),
        Value::from(ev.player_a_id),
        Value::from(ev.player_b_id),
        opt_s(ev.gesture_a.map(|g| g.as_str())),
        opt_s(ev.gesture_b.map(|g| g.as_str())),
        opt_i(ev.winner_player_id),
        opt_i(ev.loser_player_id),
        opt_s(ev.outcome.map(|o| o.as_str())),
        ev.deadline_at.map_or(Value::NULL, |t| s(&t.to_string())),
        s(&ev.occurred_at.to_string()),
    ]
}

/// `(…)` of a multi-row INSERT. Every value is either a number, one of the
/// model's enum labels, a UUID or a formatted timestamp, none of which can
/// contain a quote, so literal SQL is safe here and much faster than binding
/// 14 parameters per row.
fn push_values_literal(sql: &mut String, ev: &MatchEvent) {
    use std::fmt::Write;
    fn opt<T: std::fmt::Display>(sql: &mut String, v: Option<T>, quote: bool) {
        match v {
            None => sql.push_str("NULL"),
            Some(v) if quote => {
                let _ = write!(sql, "'{v}'");
            }
            Some(v) => {
                let _ = write!(sql, "{v}");
            }
        }
    }
    let _ = write!(
        sql,
        "('{}',{},{},'{}','{}',{},{},",
        ev.event_id.hyphenated(),
        ev.match_id,
        ev.version,
        ev.event_type,
        ev.season_id,
        ev.player_a_id,
        ev.player_b_id
    );
    opt(sql, ev.gesture_a, true);
    sql.push(',');
    opt(sql, ev.gesture_b, true);
    sql.push(',');
    opt(sql, ev.winner_player_id, false);
    sql.push(',');
    opt(sql, ev.loser_player_id, false);
    sql.push(',');
    opt(sql, ev.outcome, true);
    sql.push(',');
    opt(sql, ev.deadline_at, true);
    let _ = write!(sql, ",'{}')", ev.occurred_at);
}
