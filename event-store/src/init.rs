//! `rpsctl init`: shard databases, event tables, the pipeline account and
//! its grants on every server, idempotently, with a report of what changed.

use crate::{pool_opts, server_opts, Account, Flavor, StoreError};
use mysql_async::prelude::*;
use mysql_async::{Conn, Opts, Pool};
use rps_core::Config;

/// The fixed event table, as shipped in `sql/schema.sql`.
pub const SCHEMA_SQL: &str = include_str!("../../sql/schema.sql");
/// The grants template, as shipped in `sql/grants.sql`.
pub const GRANTS_SQL: &str = include_str!("../../sql/grants.sql");

/// What `init` did on one server.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ServerReport {
    pub server: String,
    pub databases_created: Vec<String>,
    pub tables_created: Vec<String>,
    pub user_created: Option<String>,
    /// Server settings that differ from what the pipeline needs: (setting, expected, actual).
    pub setting_mismatches: Vec<(String, String, String)>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct InitReport {
    pub servers: Vec<ServerReport>,
}

impl InitReport {
    pub fn changed_anything(&self) -> bool {
        self.servers.iter().any(|s| {
            !s.databases_created.is_empty()
                || !s.tables_created.is_empty()
                || s.user_created.is_some()
        })
    }
}

/// Applies schema, account and grants to every server of the topology.
pub async fn init(config: &Config) -> Result<InitReport, StoreError> {
    let mut report = InitReport::default();
    for server in &config.servers {
        let pool = Pool::new(pool_opts(server, Account::Admin, 2)?);
        let mut conn = pool
            .get_conn()
            .await
            .map_err(StoreError::mysql(&server.name))?;
        let r = init_server(config, server, &mut conn)
            .await
            .map_err(StoreError::mysql(&server.name))?;
        drop(conn);
        let _ = pool.disconnect().await;
        report.servers.push(r?);
    }
    Ok(report)
}

/// Drops every shard database of the topology (the inverse of [`init`]'s
/// schema; the account and its grants stay). For throw-away deployments
/// such as a benchmark's: history is gone for good.
pub async fn drop_shard_databases(config: &Config) -> Result<(), StoreError> {
    for server in &config.servers {
        let mut conn = Conn::new(server_opts(server, Account::Admin)?)
            .await
            .map_err(StoreError::mysql(&server.name))?;
        for &shard in &server.shards {
            conn.query_drop(format!(
                "DROP DATABASE IF EXISTS `{}`",
                config.database(shard)
            ))
            .await
            .map_err(StoreError::mysql(&server.name))?;
        }
        let _ = conn.disconnect().await;
    }
    Ok(())
}

async fn init_server(
    config: &Config,
    server: &rps_core::ServerConfig,
    conn: &mut Conn,
) -> Result<Result<ServerReport, StoreError>, mysql_async::Error> {
    let mut r = ServerReport {
        server: server.name.clone(),
        ..Default::default()
    };
    let pipeline = match server_opts(server, Account::Pipeline) {
        Ok(o) => Opts::from(o),
        Err(e) => return Ok(Err(e)),
    };
    let user = pipeline.user().unwrap_or("rps_pipeline").to_string();
    let password = pipeline.pass().unwrap_or("").to_string();
    if [&user, &password]
        .iter()
        .any(|s| s.contains(['\'', '\\', '`']))
    {
        return Ok(Err(StoreError::Invalid(format!(
            "server `{}`: the pipeline user name and password must not contain quotes or backslashes",
            server.name
        ))));
    }

    let flavor = Flavor::detect(conn).await?;

    let user_existed: Option<String> = conn
        .exec_first(
            "SELECT user FROM mysql.user WHERE user = ? AND host = '%'",
            (&user,),
        )
        .await?;
    if user_existed.is_none() {
        r.user_created = Some(user.clone());
    }

    for &shard in &server.shards {
        let db = config.database(shard);
        let exists: Option<String> = conn
            .exec_first(
                "SELECT schema_name FROM information_schema.schemata WHERE schema_name = ?",
                (&db,),
            )
            .await?;
        if exists.is_none() {
            conn.query_drop(format!("CREATE DATABASE `{db}`")).await?;
            r.databases_created.push(db.clone());
        }
        let table_exists: Option<String> = conn
            .exec_first(
                "SELECT table_name FROM information_schema.tables WHERE table_schema = ? AND table_name = 'match_result_events'",
                (&db,),
            )
            .await?;
        conn.query_drop(format!("USE `{db}`")).await?;
        conn.query_drop(SCHEMA_SQL).await?;
        if table_exists.is_none() {
            r.tables_created.push(format!("{db}.match_result_events"));
        }
        // Grant INSERT on every event table of the shard, season tables included.
        let tables: Vec<String> = conn
            .exec(
                "SELECT table_name FROM information_schema.tables WHERE table_schema = ?",
                (&db,),
            )
            .await?;
        for table in tables
            .iter()
            .filter(|t| rps_core::config::is_event_table(t))
        {
            for stmt in GRANTS_SQL
                .replace("{user}", &user)
                .replace("{password}", &password)
                .replace("{database}", &db)
                .replace("{table}", table)
                .replace("BINLOG MONITOR", flavor.binlog_monitor_privilege())
                .split(';')
                .map(|s| {
                    s.lines()
                        .filter(|l| !l.trim_start().starts_with("--"))
                        .collect::<Vec<_>>()
                        .join("\n")
                })
                .filter(|s| !s.trim().is_empty())
            {
                conn.query_drop(stmt).await?;
            }
        }
        for privilege in flavor.xa_privileges() {
            conn.query_drop(format!("GRANT {privilege} ON *.* TO '{user}'@'%'"))
                .await?;
        }
        for privilege in flavor.snapshot_privileges() {
            conn.query_drop(format!("GRANT {privilege} ON `{db}`.* TO '{user}'@'%'"))
                .await?;
        }
    }

    r.setting_mismatches = flavor.check_settings(conn).await?;
    Ok(Ok(r))
}
