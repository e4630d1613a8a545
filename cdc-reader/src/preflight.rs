//! Preflight: before streaming, check that a server writes the binlog the
//! reader needs and that the pipeline account may read it. Every mismatch
//! is reported as setting / expected / actual, and that server's reader
//! does not start.
//!
//! The questions go to the server through [`Flavor`] (settings, grants,
//! binlog head and files), which knows how each server asks them; this
//! module judges the answers and sends no SQL of its own.

use crate::error::Mismatch;
use crate::Checkpoint;
use mysql_async::Conn;
use rps_core::Config;
use rps_event_store::Flavor;

/// What the reader learns about a server that passed preflight.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ServerFacts {
    pub flavor: Flavor,
}

/// Checks settings and grants. The outer error is the query failing
/// (classified by the caller); the inner one the list of mismatches.
pub async fn preflight(
    conn: &mut Conn,
    config: &Config,
    server_index: usize,
) -> Result<Result<ServerFacts, Vec<Mismatch>>, mysql_async::Error> {
    let flavor = Flavor::detect(conn).await?;
    let mut mismatches: Vec<Mismatch> = flavor
        .check_settings(conn)
        .await?
        .into_iter()
        .map(|(setting, expected, actual)| Mismatch {
            setting,
            expected,
            actual,
        })
        .collect();
    let grants = flavor.effective_grants(conn).await?;
    let server = &config.servers[server_index];
    let dbs: Vec<String> = server.shards.iter().map(|s| config.database(*s)).collect();
    mismatches.extend(check_grants(&grants, &dbs));
    if mismatches.is_empty() {
        Ok(Ok(ServerFacts { flavor }))
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
/// starts.
pub async fn current_position(
    conn: &mut Conn,
    flavor: Flavor,
) -> Result<Checkpoint, mysql_async::Error> {
    let head = flavor.current_position(conn).await?;
    Ok(Checkpoint {
        gtid: head.gtid,
        file: head.file,
        pos: head.pos,
        commit_ts: 0,
        inflight: None,
    })
}

/// Bytes of binlog from `(file, pos)` to the server's head; every byte
/// the server has when `file` is gone or not yet known.
pub async fn lag_bytes(
    conn: &mut Conn,
    flavor: Flavor,
    file: &str,
    pos: u64,
) -> Result<u64, mysql_async::Error> {
    let state = rps_event_store::BinlogState::read(conn, flavor).await?;
    Ok(state
        .bytes_behind(file, pos)
        .unwrap_or_else(|| state.total_bytes()))
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
