//! Preflight: before streaming, check that a server writes the binlog the
//! reader needs and that the pipeline account may read it. Every mismatch
//! is reported as setting / expected / actual, and that server's reader
//! does not start.

use crate::error::Mismatch;
use crate::gtid::GtidState;
use crate::Checkpoint;
use mysql_async::prelude::*;
use mysql_async::Conn;
use rps_core::Config;

/// What the reader learns about a server that passed preflight.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServerFacts {
    /// Events carry a CRC32 checksum (`binlog_checksum` is not NONE).
    pub checksum: bool,
}

/// Required settings and their values (DESIGN.md section 2).
pub const REQUIRED: [(&str, &str); 4] = [
    ("log_bin", "ON"),
    ("binlog_format", "ROW"),
    ("binlog_row_image", "FULL"),
    ("binlog_row_metadata", "FULL"),
];

/// Checks settings and grants. The outer error is the query failing
/// (classified by the caller); the inner one the list of mismatches.
pub async fn preflight(
    conn: &mut Conn,
    config: &Config,
    server_index: usize,
) -> Result<Result<ServerFacts, Vec<Mismatch>>, mysql_async::Error> {
    let mut mismatches = Vec::new();
    for (setting, expected) in REQUIRED {
        let actual: Option<Option<String>> = conn
            .query_first(format!("SELECT CAST(@@{setting} AS CHAR)"))
            .await
            .or_else(|e| match e {
                // Unknown system variable: an old server without the setting.
                mysql_async::Error::Server(ref s) if s.code == 1193 => Ok(Some(None)),
                e => Err(e),
            })?;
        let mut actual = actual.flatten().unwrap_or_else(|| "(not supported)".into());
        // Some versions show boolean settings as 1/0.
        if actual == "1" {
            actual = "ON".into();
        } else if actual == "0" {
            actual = "OFF".into();
        }
        if !actual.eq_ignore_ascii_case(expected) {
            mismatches.push(Mismatch {
                setting: setting.to_string(),
                expected: expected.to_string(),
                actual,
            });
        }
    }
    let checksum: Option<String> = conn
        .query_first("SELECT CAST(@@binlog_checksum AS CHAR)")
        .await?;
    let grants: Vec<String> = conn.query("SHOW GRANTS").await?;
    let server = &config.servers[server_index];
    let dbs: Vec<String> = server.shards.iter().map(|s| config.database(*s)).collect();
    mismatches.extend(check_grants(&grants, &dbs));
    if mismatches.is_empty() {
        Ok(Ok(ServerFacts {
            checksum: !checksum.unwrap_or_default().eq_ignore_ascii_case("NONE"),
        }))
    } else {
        Ok(Err(mismatches))
    }
}

/// Parses `SHOW GRANTS` lines into missing privileges.
pub fn check_grants(grants: &[String], databases: &[String]) -> Vec<Mismatch> {
    // (privileges, object) per GRANT line, upper-cased privileges.
    let parsed: Vec<(String, String)> = grants
        .iter()
        .filter_map(|g| {
            let rest = g.strip_prefix("GRANT ")?;
            let on = rest.find(" ON ")?;
            let privs = rest[..on].to_ascii_uppercase();
            let obj = rest[on + 4..].split(" TO ").next()?.trim().to_string();
            Some((privs, obj))
        })
        .collect();
    let has = |priv_names: &[&str], obj_ok: &dyn Fn(&str) -> bool| {
        parsed.iter().any(|(p, o)| {
            obj_ok(o)
                && (p.contains("ALL PRIVILEGES")
                    || priv_names
                        .iter()
                        .any(|n| p.split(',').any(|x| x.trim() == *n)))
        })
    };
    let global = |o: &str| o == "*.*";
    let mut out = Vec::new();
    if !has(&["REPLICATION SLAVE", "REPLICATION REPLICA"], &global) {
        out.push(missing("grant REPLICATION SLAVE ON *.*"));
    }
    if !has(&["BINLOG MONITOR", "REPLICATION CLIENT"], &global) {
        out.push(missing("grant BINLOG MONITOR (REPLICATION CLIENT) ON *.*"));
    }
    for db in databases {
        let on_db = |o: &str| {
            let o = o.replace('`', "").replace("\\_", "_");
            o == "*.*" || o == format!("{db}.*")
        };
        if !has(&["SELECT"], &on_db) {
            out.push(missing(&format!("grant SELECT ON `{db}`.*")));
        }
    }
    out
}

fn missing(what: &str) -> Mismatch {
    Mismatch {
        setting: what.to_string(),
        expected: "granted".to_string(),
        actual: "missing".to_string(),
    }
}

/// The server's current position: where a reader without a checkpoint
/// starts (`@@gtid_binlog_pos` and SHOW MASTER STATUS).
pub async fn current_position(conn: &mut Conn) -> Result<Checkpoint, mysql_async::Error> {
    let gtid: Option<String> = conn.query_first("SELECT @@gtid_binlog_pos").await?;
    let status: Option<mysql_async::Row> = conn.query_first("SHOW MASTER STATUS").await?;
    let (file, pos) = match status {
        Some(row) => (
            row.get::<String, _>(0).unwrap_or_default(),
            row.get::<u64, _>(1).unwrap_or(4),
        ),
        None => (String::new(), 4),
    };
    let gtid = gtid
        .unwrap_or_default()
        .parse::<GtidState>()
        .unwrap_or_default();
    Ok(Checkpoint {
        gtid,
        file,
        pos,
        commit_ts: 0,
        inflight: None,
    })
}

/// Bytes of binlog from `(file, pos)` to the server's head (SHOW BINARY LOGS).
pub async fn lag_bytes(conn: &mut Conn, file: &str, pos: u64) -> Result<u64, mysql_async::Error> {
    let logs: Vec<(String, u64)> = conn.query("SHOW BINARY LOGS").await?;
    let mut total = 0u64;
    let mut seen = false;
    for (name, size) in logs {
        if name == file {
            seen = true;
            total += size.saturating_sub(pos);
        } else if seen || file.is_empty() || name.as_str() > file {
            total += size;
        }
    }
    Ok(total)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grants_are_checked_per_privilege_and_database() {
        let g = vec![
            "GRANT REPLICATION SLAVE, BINLOG MONITOR ON *.* TO `rps_pipeline`@`%` IDENTIFIED BY PASSWORD '*x'".to_string(),
            "GRANT SELECT ON `rps_shard_0`.* TO `rps_pipeline`@`%`".to_string(),
        ];
        let dbs = vec!["rps_shard_0".to_string(), "rps_shard_2".to_string()];
        let m = check_grants(&g, &dbs);
        assert_eq!(m.len(), 1);
        assert_eq!(m[0].setting, "grant SELECT ON `rps_shard_2`.*");
        let all = vec!["GRANT ALL PRIVILEGES ON *.* TO `root`@`localhost`".to_string()];
        assert!(check_grants(&all, &dbs).is_empty());
        assert_eq!(check_grants(&[], &dbs).len(), 4);
    }
}
