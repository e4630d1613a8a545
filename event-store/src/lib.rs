//! The event store: the shard databases on the MySQL servers, through SQL.
//!
//! Everything that talks SQL to the event tables goes through here, so the
//! column list, the row decoding and the duplicate-key handling are written
//! once: schema setup (`rpsctl init`), appends (simulator, compensator) and
//! ordered history reads (replay, export, verify, snapshots), XA branches
//! (`rpsctl xa`). The binlog is
//! not read here; that is cdc-reader's job.

pub mod connect;
mod flavor;
mod history;
mod init;
mod snapshot;
pub mod xa;

pub use connect::{server_opts, Account};
pub use flavor::{BinlogPosition, Flavor, SnapshotError, TableListQuery};
pub use history::{
    decode_row, read_ranges_ahead, HistoryFilter, MatchRangeReader, RangePlan, RangeRow, RowResult,
    TableReader, EVENT_COLUMNS,
};
pub use init::{init, InitReport, ServerReport};
pub use snapshot::{end_snapshot, ConsistentSnapshot};

use mysql_async::prelude::*;
use mysql_async::{Conn, OptsBuilder, Pool, PoolConstraints, PoolOpts};
use rps_core::{Config, MatchEvent, ShardId};
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

/// Server errors that go away by themselves: too many connections (1040),
/// shutdown in progress (1053), lock wait timeout (1205), deadlock (1213),
/// read-only during a failover (1290), a table whose definition changed
/// after a snapshot began, e.g. a season table created meanwhile (1412),
/// connection killed (1927), server gone or connection lost (2006, 2013).
/// The one list every component retries on.
pub fn is_transient_server_code(code: u16) -> bool {
    matches!(
        code,
        1040 | 1053 | 1205 | 1213 | 1290 | 1412 | 1927 | 2006 | 2013
    )
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
    pub fn pool_for_shard(&self, shard: ShardId) -> (&Pool, &str) {
        let i = self.server_index(shard);
        (&self.pools[i], &self.config.servers[i].name)
    }

    /// The pool of a server by its position in the topology.
    pub fn pool_for_server(&self, index: usize) -> (&Pool, &str) {
        (&self.pools[index], &self.config.servers[index].name)
    }

    pub async fn conn_for_shard(&self, shard: ShardId) -> Result<Conn, StoreError> {
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
    /// transaction). Fails whole on any duplicate key.
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
        let db = self.config.database(shard);
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
        conn.query_drop(sql).await
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
