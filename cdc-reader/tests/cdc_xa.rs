//! XA branches on the flavor under test: only committed branches reach the
//! shard streams, once, whatever happens between prepare and decision
//! (another session decides, the reader stops hard, the binlog rotates, the
//! branch holds 100k rows).

mod common;

use common::*;
use fred::prelude::*;
use rps_core::event::MatchEvent;
use rps_core::keys::PublishTarget;
use rps_core::ShardId;
use std::collections::HashMap;
use std::time::Duration;
use test_support::xa::{
    decide_branch, full_match, held_branches, rollback_leftovers, write_branch, BranchEnd,
};
use test_support::TestEnv;
use tokio_util::sync::CancellationToken;

/// A plain committed row after the branches: once it is out, the reader
/// has read past everything written before it.
async fn marker(env: &TestEnv, shard: ShardId, match_id: i64) -> MatchEvent {
    let ev = started_events(shard, env.config.shard_count, match_id, 1).remove(0);
    insert(
        env,
        shard,
        "match_result_events",
        std::slice::from_ref(&ev),
        1,
    )
    .await;
    ev
}

async fn wait_for_event(redis: &Client, env: &TestEnv, shard: ShardId, ev: &MatchEvent) {
    let key = env.config.keys().events(shard);
    test_support::eventually(
        "the marker row to be published",
        Duration::from_secs(30),
        || {
            let (redis, key) = (redis.clone(), key.clone());
            let id = ev.event_id;
            async move {
                let entries = read_stream(&redis, &key).await;
                entries
                    .iter()
                    .any(|(_, e)| e.event.event_id == id)
                    .then_some(())
            }
        },
    )
    .await;
}

async fn stream_ids(redis: &Client, env: &TestEnv) -> HashMap<uuid::Uuid, usize> {
    let mut ids = HashMap::new();
    for s in 0..env.config.shard_count {
        for (_, e) in read_stream(redis, &env.config.keys().events(s)).await {
            *ids.entry(e.event.event_id).or_default() += 1;
        }
    }
    ids
}

fn assert_published_once(ids: &HashMap<uuid::Uuid, usize>, events: &[MatchEvent], what: &str) {
    for e in events {
        assert_eq!(ids.get(&e.event_id).copied(), Some(1), "{what}: {e:?}");
    }
}

fn assert_absent(ids: &HashMap<uuid::Uuid, usize>, events: &[MatchEvent], what: &str) {
    for e in events {
        assert!(!ids.contains_key(&e.event_id), "{what}: {e:?}");
    }
}

async fn exists(redis: &Client, key: &str) -> bool {
    let n: u32 = redis.exists(key).await.expect("exists");
    n == 1
}

type Reader = tokio::task::JoinHandle<Result<(), cdc_reader::CdcError>>;

/// The reader streaming from a two-shard slice of the shared servers; with
/// the slice, its Redis and the server of shard 0, which the branches go to.
async fn streaming(test: &str) -> (TestEnv, Client, String, CancellationToken, Reader) {
    let env = TestEnv::with_shards(test, 2).await;
    let redis = env.redis().await;
    let (stop, task) = spawn_reader(env.config.clone());
    wait_checkpoints(&redis, &env.config).await;
    let server = env.config.server_of(0).name.clone();
    (env, redis, server, stop, task)
}

/// An XID of the test's own (as SQL), which [`finish`] finds if it is left.
fn test_xid(env: &TestEnv, name: &str) -> String {
    format!("'{}-{name}'", env.name)
}

/// Stops the reader and leaves nothing behind: no prepared branch of the
/// test (it would hold locks on the shared servers), no databases or keys.
async fn finish(env: &TestEnv, stop: CancellationToken, task: Reader) {
    stop.cancel();
    task.await.unwrap().unwrap();
    rollback_leftovers(env, &env.name).await;
    env.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_committed_branches_are_published() {
    let (env, redis, server, stop, task) = streaming("cdc_xa_basic").await;
    let sc = env.config.shard_count;
    let x = |n| test_xid(&env, n);

    let committed = full_match(0, sc, 1_000);
    let rolled_back = full_match(0, sc, 2_000);
    let one_phase = full_match(0, sc, 3_000);
    let idle_rollback = full_match(0, sc, 4_000);
    write_branch(&env, 0, &x("c"), &committed, 2, BranchEnd::Prepare).await;
    write_branch(&env, 0, &x("r"), &rolled_back, 4, BranchEnd::Prepare).await;
    write_branch(&env, 0, &x("o"), &one_phase, 4, BranchEnd::OnePhase).await;
    write_branch(&env, 0, &x("i"), &idle_rollback, 4, BranchEnd::RollbackIdle).await;
    let m1 = marker(&env, 0, 9_000).await;
    wait_for_event(&redis, &env, 0, &m1).await;

    // Prepared: held, recorded, not published.
    let ids = stream_ids(&redis, &env).await;
    assert_absent(&ids, &committed, "prepared, undecided");
    assert_absent(&ids, &rolled_back, "prepared, undecided");
    assert_absent(&ids, &idle_rollback, "rolled back before prepare");
    assert_published_once(&ids, &one_phase, "one-phase commit");
    let held = held_branches(&env, &server).await;
    assert_eq!(held.len(), 2, "{held:?}");
    let c_key = rps_core::Xid::parse_sql(&x("c")).unwrap().key();
    let r_key = rps_core::Xid::parse_sql(&x("r")).unwrap().key();
    let c = &held[&c_key];
    assert_eq!(c.rows(), 4);
    assert_eq!(c.shards.get(&0), Some(&4));
    assert_eq!(c.matches, 1);
    assert!(c.prepared_ts > 0 && c.seen_ts >= c.prepared_ts - 5_000_000);
    assert!(!c.gtid.is_empty(), "prepare GTID recorded");
    let keys = env.config.keys();
    let c_hold = keys.cdc_xa_held(&server, PublishTarget::Shard(0), &c_key);
    let r_hold = keys.cdc_xa_held(&server, PublishTarget::Shard(0), &r_key);
    let held_len: u64 = redis.xlen(&c_hold).await.unwrap();
    assert_eq!(held_len, 4);
    let member = rps_core::xa::held_match_member(0, 1_000);
    let is_member: bool = redis
        .sismember(keys.cdc_xa_matches(&server, 0, &c_key), member)
        .await
        .unwrap();
    assert!(is_member, "the match set names the held match");

    // Decided from other sessions.
    decide_branch(&env, 0, &x("c"), true).await;
    decide_branch(&env, 0, &x("r"), false).await;
    let m2 = marker(&env, 0, 9_001).await;
    wait_for_event(&redis, &env, 0, &m2).await;
    let ids = stream_ids(&redis, &env).await;
    assert_published_once(&ids, &committed, "committed from another session");
    assert_absent(&ids, &rolled_back, "rolled back after prepare");
    assert!(held_branches(&env, &server).await.is_empty());
    assert!(!exists(&redis, &c_hold).await, "released hold is deleted");
    assert!(!exists(&redis, &r_hold).await, "dropped hold is deleted");
    assert!(
        !exists(&redis, &keys.cdc_xa_matches(&server, 0, &c_key)).await,
        "match set deleted"
    );
    // In commit order: the committed branch comes after the first marker.
    let order: Vec<_> = read_stream(&redis, &keys.events(0))
        .await
        .into_iter()
        .map(|(_, e)| e.event.event_id)
        .collect();
    let pos = |id| order.iter().position(|x| *x == id).unwrap();
    assert!(pos(m1.event_id) < pos(committed[0].event_id));
    assert!(pos(committed[3].event_id) < pos(m2.event_id));
    assert!((0..3).all(|i| pos(committed[i].event_id) < pos(committed[i + 1].event_id)));

    finish(&env, stop, task).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_branch_survives_a_hard_stop_and_a_rotation_between_prepare_and_commit() {
    let env = TestEnv::with_shards("cdc_xa_crash", 2).await;
    let redis = env.redis().await;
    // Small batches: the branch's rows go out to its hold in several steps.
    let config = with_batch_rows(&env.config, 3);
    let (_stop, task) = spawn_reader(config.clone());
    wait_checkpoints(&redis, &config).await;
    let server = config.server_of(0).name.clone();
    let sc = config.shard_count;
    let xid = test_xid(&env, "k");

    let mut branch = full_match(0, sc, 10_000);
    branch.extend(full_match(0, sc, 10_001));
    write_branch(&env, 0, &xid, &branch, 1, BranchEnd::Prepare).await;
    let m1 = marker(&env, 0, 19_000).await;
    wait_for_event(&redis, &env, 0, &m1).await;
    // A hard stop: the task is dropped wherever it is, as a kill would.
    task.abort();
    let _ = task.await;

    let mut conn = env.admin_conn(0).await;
    mysql_async::prelude::Queryable::query_drop(&mut conn, "FLUSH BINARY LOGS")
        .await
        .unwrap();
    drop(conn);
    let during = started_events(0, sc, 20_000, 50);
    insert(&env, 0, "match_result_events", &during, 10).await;
    decide_branch(&env, 0, &xid, true).await;

    let (stop, task) = spawn_reader(config.clone());
    let m2 = marker(&env, 0, 19_001).await;
    wait_for_event(&redis, &env, 0, &m2).await;
    let ids = stream_ids(&redis, &env).await;
    assert_published_once(&ids, &branch, "committed after the reader's restart");
    assert_published_once(&ids, &during, "rows around it");
    assert!(held_branches(&env, &server).await.is_empty());
    finish(&env, stop, task).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_branch_of_100k_rows_is_held_then_released_once() {
    let (env, redis, server, stop, task) = streaming("cdc_xa_large").await;
    let sc = env.config.shard_count;
    let xid = test_xid(&env, "l");

    let rows = started_events(0, sc, 1_000_000, 100_000);
    write_branch(&env, 0, &xid, &rows, 5_000, BranchEnd::Prepare).await;
    let m1 = marker(&env, 0, 9_000_000).await;
    wait_for_event(&redis, &env, 0, &m1).await;
    let key = rps_core::Xid::parse_sql(&xid).unwrap().key();
    let held = held_branches(&env, &server).await;
    assert_eq!(held[&key].rows(), 100_000);
    assert_eq!(held[&key].matches, 100_000);
    let in_hold: u64 = redis
        .xlen(
            env.config
                .keys()
                .cdc_xa_held(&server, PublishTarget::Shard(0), &key),
        )
        .await
        .unwrap();
    assert_eq!(in_hold, 100_000);
    assert_eq!(stream_len(&redis, &env.config.keys().events(0)).await, 1);

    decide_branch(&env, 0, &xid, true).await;
    let m2 = marker(&env, 0, 9_000_001).await;
    wait_for_event(&redis, &env, 0, &m2).await;
    let mut want = HashMap::new();
    let mut all = rows.clone();
    all.push(m1);
    all.push(m2);
    want.insert(0, all);
    assert_exactly_once(&redis, &env.config, &want).await;
    assert!(held_branches(&env, &server).await.is_empty());
    finish(&env, stop, task).await;
}

/// Writes a branch that inserts `events` and then UPDATEs the first of them
/// (a dead letter: the table is append-only), prepares it and decides it
/// from a second session.
async fn branch_with_an_update(env: &TestEnv, xid: &str, events: &[MatchEvent], commit: bool) {
    use mysql_async::prelude::Queryable;
    let mut conn = env.admin_conn(0).await;
    conn.query_drop(format!("XA START {xid}")).await.unwrap();
    env.store
        .append_batch(&mut conn, 0, "match_result_events", events)
        .await
        .unwrap();
    conn.query_drop(format!(
        "UPDATE `{}`.match_result_events SET season_id = '2026Q1' WHERE event_id = '{}'",
        env.config.database(0),
        events[0].event_id
    ))
    .await
    .unwrap();
    conn.query_drop(format!("XA END {xid}")).await.unwrap();
    conn.query_drop(format!("XA PREPARE {xid}")).await.unwrap();
    conn.disconnect().await.unwrap();
    decide_branch(env, 0, xid, commit).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn branches_decided_within_one_batch_of_a_backlog() {
    let (env, redis, server, stop, task) = streaming("cdc_xa_backlog").await;
    stop.cancel();
    task.await.unwrap().unwrap();
    let sc = env.config.shard_count;
    let x = |n| test_xid(&env, n);

    // While no reader runs: a backlog whose branches are prepared and
    // decided close together, so each is decided in the batch holding it.
    let committed = full_match(0, sc, 1_000);
    let rolled_back = full_match(0, sc, 2_000);
    let one_phase = full_match(0, sc, 3_000);
    let with_update = full_match(0, sc, 4_000);
    let rolled_back_update = full_match(0, sc, 5_000);
    write_branch(&env, 0, &x("c"), &committed, 2, BranchEnd::Prepare).await;
    decide_branch(&env, 0, &x("c"), true).await;
    write_branch(&env, 0, &x("r"), &rolled_back, 2, BranchEnd::Prepare).await;
    decide_branch(&env, 0, &x("r"), false).await;
    write_branch(&env, 0, &x("o"), &one_phase, 2, BranchEnd::OnePhase).await;
    branch_with_an_update(&env, &x("u"), &with_update, true).await;
    branch_with_an_update(&env, &x("v"), &rolled_back_update, false).await;
    let m = marker(&env, 0, 9_000).await;

    let (stop, task) = spawn_reader(env.config.clone());
    wait_for_event(&redis, &env, 0, &m).await;
    let ids = stream_ids(&redis, &env).await;
    assert_published_once(&ids, &committed, "committed");
    assert_published_once(&ids, &one_phase, "one-phase");
    assert_published_once(&ids, &with_update, "committed with an update");
    assert_absent(&ids, &rolled_back, "rolled back");
    assert_absent(&ids, &rolled_back_update, "rolled back with an update");
    assert_eq!(ids.len(), 13, "nothing else: {ids:?}");
    let dead = dead_letters(&redis, &env.config.keys().deadletter()).await;
    let updates: Vec<_> = dead
        .iter()
        .filter(|d| d.get("kind").map(String::as_str) == Some("update_on_event_table"))
        .collect();
    assert_eq!(
        updates.len(),
        1,
        "only the committed branch's UPDATE: {dead:?}"
    );
    assert!(held_branches(&env, &server).await.is_empty());
    let keys = env.config.keys();
    for n in ["c", "r", "u", "v"] {
        let key = rps_core::Xid::parse_sql(&x(n)).unwrap().key();
        assert!(
            !exists(
                &redis,
                &keys.cdc_xa_held(&server, PublishTarget::Shard(0), &key)
            )
            .await,
            "{n}: no hold left"
        );
        assert!(
            !exists(
                &redis,
                &keys.cdc_xa_held(&server, PublishTarget::DeadLetters, &key)
            )
            .await,
            "{n}: no hold of dead letters left"
        );
        assert!(
            !exists(&redis, &keys.cdc_xa_matches(&server, 0, &key)).await,
            "{n}: no match set left"
        );
    }
    finish(&env, stop, task).await;
}
