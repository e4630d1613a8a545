//! XA branches for tests: write events inside a branch on a real server,
//! prepare it, leave it, and decide it later from another session, as the
//! platform's saga executor does.

use crate::TestEnv;
use mysql_async::prelude::Queryable;
use rps_core::event::{EventType, Gesture, MatchEvent, Outcome};
use rps_core::xa::HeldBranch;
use rps_core::{ShardId, Timestamp};
use std::collections::HashMap;

/// A whole match (started, both moves, finished with A winning): 4 rows of
/// `shard`, players derived from `match_id`.
pub fn full_match(shard: ShardId, shard_count: u16, match_id: i64) -> Vec<MatchEvent> {
    let a = i64::from(shard) + i64::from(shard_count) * (match_id % 1_000_000 + 1);
    let now = Timestamp::now();
    let id = |v: i32| uuid_for(match_id, v);
    let started = MatchEvent::started(
        id(1),
        match_id,
        "2026Q4".parse().expect("season"),
        (a, a + 1),
        now,
        Timestamp(now.0 + 30_000_000),
    );
    let mut moved_a = started.clone();
    moved_a.event_id = id(2);
    moved_a.version = 2;
    moved_a.event_type = EventType::Moved;
    moved_a.deadline_at = None;
    moved_a.gesture_a = Some(Gesture::Rock);
    let mut moved_b = moved_a.clone();
    moved_b.event_id = id(3);
    moved_b.version = 3;
    moved_b.gesture_a = None;
    moved_b.gesture_b = Some(Gesture::Scissors);
    let mut finished = moved_b.clone();
    finished.event_id = id(4);
    finished.version = 4;
    finished.event_type = EventType::Finished;
    finished.gesture_a = Some(Gesture::Rock);
    finished.winner_player_id = Some(a);
    finished.loser_player_id = Some(a + 1);
    finished.outcome = Some(Outcome::Win);
    vec![started, moved_a, moved_b, finished]
}

fn uuid_for(match_id: i64, version: i32) -> uuid::Uuid {
    let n = (u128::from(match_id as u64) << 32) | u128::from(version as u32);
    uuid::Uuid::from_u128(n ^ 0x5a5a_0000_0000_0000_0000_0000_0000_0000)
}

/// How a branch written by [`write_branch`] ends its first phase.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BranchEnd {
    /// `XA PREPARE`, then the session goes away: the branch waits.
    Prepare,
    /// `XA COMMIT … ONE PHASE`.
    OnePhase,
    /// `XA ROLLBACK` before any prepare (the binlog never sees it).
    RollbackIdle,
}

/// Writes `events` (all of `shard`) inside branch `xid` (SQL form, e.g.
/// `'t1'`) in multi-row INSERTs of at most `chunk` rows, and ends it.
pub async fn write_branch(
    env: &TestEnv,
    shard: ShardId,
    xid: &str,
    events: &[MatchEvent],
    chunk: usize,
    end: BranchEnd,
) {
    write_branch_with(env, shard, &[], xid, events, chunk, end).await
}

/// [`write_branch`] on a session prepared by `setup` (e.g. MySQL's
/// `binlog_transaction_compression`).
pub async fn write_branch_with(
    env: &TestEnv,
    shard: ShardId,
    setup: &[&str],
    xid: &str,
    events: &[MatchEvent],
    chunk: usize,
    end: BranchEnd,
) {
    let mut conn = env.admin_conn(shard).await;
    for s in setup {
        conn.query_drop(*s).await.expect("session setup");
    }
    conn.query_drop(format!("XA START {xid}"))
        .await
        .expect("XA START");
    for c in events.chunks(chunk.max(1)) {
        env.store
            .append_batch(&mut conn, shard, "match_result_events", c)
            .await
            .expect("insert inside the branch");
    }
    conn.query_drop(format!("XA END {xid}"))
        .await
        .expect("XA END");
    let last = match end {
        BranchEnd::Prepare => format!("XA PREPARE {xid}"),
        BranchEnd::OnePhase => format!("XA COMMIT {xid} ONE PHASE"),
        BranchEnd::RollbackIdle => format!("XA ROLLBACK {xid}"),
    };
    conn.query_drop(last).await.expect("end of the branch");
    conn.disconnect().await.expect("disconnect");
}

/// Decides a prepared branch from a new session.
pub async fn decide_branch(env: &TestEnv, shard: ShardId, xid: &str, commit: bool) {
    let mut conn = env.admin_conn(shard).await;
    let verb = if commit { "COMMIT" } else { "ROLLBACK" };
    // MariaDB hands a prepared branch over only once the server has
    // finished closing the session that prepared it, which is not yet done
    // when that session's disconnect returns: unknown XID for a moment.
    let mut attempt = 0;
    loop {
        match conn.query_drop(format!("XA {verb} {xid}")).await {
            Ok(()) => break,
            Err(mysql_async::Error::Server(e))
                if e.code == rps_event_store::xa::ER_XAER_NOTA && attempt < 50 =>
            {
                attempt += 1;
                tokio::time::sleep(std::time::Duration::from_millis(50)).await;
            }
            Err(e) => panic!("XA {verb} {xid}: {e}"),
        }
    }
    let _ = conn.disconnect().await;
}

/// Rolls back every branch still prepared on any server of the test whose
/// gtrid starts with `prefix` (the test's own), so a failed test leaves no
/// locks behind on the shared servers.
pub async fn rollback_leftovers(env: &TestEnv, prefix: &str) {
    use rps_event_store::xa::{decide, recover, XaDecision};
    for s in &env.config.servers {
        let mut conn = env.admin_conn_to(&s.name).await;
        if let Ok(xids) = recover(&mut conn).await {
            for x in xids
                .iter()
                .filter(|x| x.gtrid.starts_with(prefix.as_bytes()))
            {
                let _ = decide(&mut conn, x, XaDecision::Rollback).await;
            }
        }
        let _ = conn.disconnect().await;
    }
}

/// The reader's XA registry of `server`: xid key → what it holds.
pub async fn held_branches(env: &TestEnv, server: &str) -> HashMap<String, HeldBranch> {
    let redis = env.redis().await;
    let raw = rps_core::redis_client::xa_registry(
        &redis,
        &env.config.keys(),
        server,
        env.config.shard_count,
    )
    .await
    .expect("registry");
    raw.into_iter()
        .map(|(k, v)| (k, HeldBranch::from_json(&v).expect("registry entry")))
        .collect()
}
