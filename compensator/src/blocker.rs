//! Who blocks an append that timed out on a row lock.
//!
//! The usual culprit is a prepared XA branch that nobody decides: it keeps
//! the InnoDB locks of the rows it inserted (say version n+1 of the match)
//! for as long as it hangs, across disconnects and restarts, so the
//! compensator's `timed_out` (also version n+1) waits on `uk_match_version`
//! every time it tries. The database does not say which transaction holds
//! the lock in a form the pipeline's account can read on both flavors, but
//! cdc-reader records every branch it sees prepared and not yet decided:
//! per shard `Keys::cdc_xa_branches(server, shard)` (xid key →
//! [`HeldBranch`]) and, per branch, `Keys::cdc_xa_matches(server, shard,
//! xid key)` (the `shard:match` members it holds rows of). Looking the match up there lets the failure name the
//! branch, so the operator reading the dead letter knows what to decide
//! (`rpsctl xa commit|rollback XID`).

use fred::clients::Client;
use fred::interfaces::{HashesInterface, SetsInterface};
use rps_core::keys::{Keys, PublishTarget};
use rps_core::xa::{held_match_member, HeldBranch};
use rps_core::{ShardId, Timestamp, Xid};
use serde::{Deserialize, Serialize};
use std::collections::HashMap;

/// A prepared branch that holds rows of the blocked match, as the reader
/// recorded it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct XaHolder {
    /// The server the branch is prepared on.
    pub server: String,
    /// The xid in SQL form, ready for `XA COMMIT` / `XA ROLLBACK` (and
    /// `rpsctl xa commit|rollback`).
    pub xid: String,
    /// GTID of the prepare part (empty when the reader did not know it).
    pub gtid: String,
    /// When the server prepared it (binlog time, Unix micros; 0: unknown).
    pub prepared_ts: i64,
}

/// The held branches of `server` whose match set has `shard:match_id`,
/// oldest prepare first. Several are possible (two branches holding
/// different versions of one match); usually there is one or none.
pub async fn holders_of(
    client: &Client,
    keys: &Keys,
    server: &str,
    shard: ShardId,
    match_id: i64,
) -> Result<Vec<XaHolder>, fred::error::Error> {
    let registry = keys.cdc_xa_branches(server, PublishTarget::Shard(shard));
    let branches: HashMap<String, String> = client.hgetall(registry).await?;
    if branches.is_empty() {
        return Ok(Vec::new());
    }
    let member = held_match_member(shard, match_id);
    // One round trip for all of them: a stuck transaction manager can leave
    // many branches prepared at once.
    let branches: Vec<(String, String)> = branches.into_iter().collect();
    let pipeline = client.pipeline();
    for (key, _) in &branches {
        let () = pipeline
            .sismember(keys.cdc_xa_matches(server, shard, key), member.as_str())
            .await?;
    }
    let held: Vec<bool> = pipeline.all().await?;
    let mut out: Vec<XaHolder> = branches
        .into_iter()
        .zip(held)
        .filter(|(_, is)| *is)
        .map(|((key, json), _)| holder(server, &key, &json))
        .collect();
    out.sort_by(|a, b| (a.prepared_ts, &a.xid).cmp(&(b.prepared_ts, &b.xid)));
    Ok(out)
}

/// One registry entry as a holder. An entry whose JSON does not parse (a
/// newer reader's format, a hand edit) still names the branch: the field
/// is the xid key.
fn holder(server: &str, key: &str, json: &str) -> XaHolder {
    match HeldBranch::from_json(json) {
        Ok(b) => XaHolder {
            server: server.to_string(),
            xid: if b.xid.is_empty() {
                xid_of_key(key)
            } else {
                b.xid
            },
            gtid: b.gtid,
            prepared_ts: b.prepared_ts,
        },
        Err(_) => XaHolder {
            server: server.to_string(),
            xid: xid_of_key(key),
            gtid: String::new(),
            prepared_ts: 0,
        },
    }
}

fn xid_of_key(key: &str) -> String {
    Xid::from_key(key).map_or_else(|_| key.to_string(), |x| x.to_string())
}

/// What the failure says after a lock wait: the append, how long it waited,
/// and who holds the lock (or that the reader knows of nobody). `holders` is
/// the registry lookup; its error text when Redis could not answer.
pub fn lock_wait_reason(
    append: &str,
    lock_wait_secs: u32,
    holders: &Result<Vec<XaHolder>, String>,
    now: Timestamp,
) -> String {
    let head = format!("lock wait timeout after {lock_wait_secs} s: {append}");
    match holders {
        Ok(h) if h.is_empty() => format!(
            "{head}; blocked by a lock held by another transaction \
             (a prepared XA branch not seen by the reader?)"
        ),
        Ok(h) => {
            let named: Vec<String> = h.iter().map(|x| describe(x, now)).collect();
            let decide = h
                .iter()
                .map(|x| {
                    format!(
                        "`rpsctl xa commit|rollback \"{}\" --server {}`",
                        x.xid, x.server
                    )
                })
                .collect::<Vec<_>>()
                .join(", ");
            format!(
                "{head}; blocked by {} (it holds rows of the match); decide it with {decide}",
                named.join(" and ")
            )
        }
        Err(e) => format!(
            "{head}; blocked by a lock held by another transaction \
             (the reader's XA registry could not be read: {e})"
        ),
    }
}

fn describe(h: &XaHolder, now: Timestamp) -> String {
    let mut s = format!("prepared XA branch {} on server `{}`", h.xid, h.server);
    if let Some(t) = Xid::parse_sql(&h.xid)
        .ok()
        .and_then(|x| x.gtrid_text().map(str::to_owned))
    {
        s.push_str(&format!(" (gtrid '{t}')"));
    }
    if !h.gtid.is_empty() {
        s.push_str(&format!(", prepare gtid {}", h.gtid));
    }
    if h.prepared_ts > 0 {
        let held_s = (now.as_micros() - h.prepared_ts).max(0) / 1_000_000;
        s.push_str(&format!(
            ", prepared {} UTC ({held_s} s ago)",
            Timestamp(h.prepared_ts)
        ));
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    const APPEND: &str =
        "server `mysql-a`: appending `timed_out` version 3 of match 7 to `d`.`t`: \
                          Lock wait timeout exceeded; try restarting transaction";

    #[test]
    fn names_the_branch_with_its_gtid_and_prepare_time() {
        let xid = Xid::parse_sql("'uniq'").unwrap().to_string();
        let prepared = Timestamp(1_795_000_000_000_000);
        let h = XaHolder {
            server: "mysql-a".into(),
            xid: xid.clone(),
            gtid: "0-1-42".into(),
            prepared_ts: prepared.0,
        };
        let r = lock_wait_reason(APPEND, 3, &Ok(vec![h]), Timestamp(prepared.0 + 90_000_000));
        assert!(
            r.starts_with("lock wait timeout after 3 s: server `mysql-a`"),
            "{r}"
        );
        assert!(
            r.contains(&format!("prepared XA branch {xid} on server `mysql-a`")),
            "{r}"
        );
        assert!(r.contains("(gtrid 'uniq')"), "{r}");
        assert!(r.contains("prepare gtid 0-1-42"), "{r}");
        assert!(
            r.contains(&format!("prepared {prepared} UTC (90 s ago)")),
            "{r}"
        );
        assert!(
            r.contains(&format!(
                "`rpsctl xa commit|rollback \"{xid}\" --server mysql-a`"
            )),
            "{r}"
        );
    }

    #[test]
    fn nobody_known_or_registry_unreadable() {
        let r = lock_wait_reason(APPEND, 2, &Ok(vec![]), Timestamp::now());
        assert!(
            r.contains(
                "a lock held by another transaction (a prepared XA branch not seen by the reader?)"
            ),
            "{r}"
        );
        let r = lock_wait_reason(
            APPEND,
            2,
            &Err("connection refused".into()),
            Timestamp::now(),
        );
        assert!(r.contains("could not be read: connection refused"), "{r}");
    }

    #[test]
    fn unreadable_entry_still_names_the_branch() {
        let x = Xid::parse_sql("'g','b',7").unwrap();
        let h = holder("mysql-b", &x.key(), "{not json");
        assert_eq!(h.xid, x.to_string());
        assert_eq!(h.gtid, "");
        let h = holder(
            "mysql-b",
            &x.key(),
            &HeldBranch {
                gtid: "g:1".into(),
                ..Default::default()
            }
            .to_json(),
        );
        assert_eq!(
            (h.xid.as_str(), h.gtid.as_str()),
            (x.to_string().as_str(), "g:1")
        );
    }
}
