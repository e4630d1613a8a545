//! Failure paths on private servers that may be killed, restarted and
//! purged: binlog rotation and a MariaDB kill -9 mid-stream, a Redis
//! restart, a purged binlog (definite error naming the fix) and a
//! misconfigured server (preflight).

mod common;

use common::*;
use fred::clients::Client;
use mysql_async::prelude::*;
use rps_core::{Config, MatchEvent, ShardId};
use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;
use test_support::{RedisInstance, ShardServerInstance, TestEnv};

const TABLE: &str = "match_result_events";

/// Two shards on a private server of their own, which the test may kill,
/// restart or purge; the read models on the shared Redis.
async fn on_private_server(
    server_id: u32,
    test: &str,
    server: &str,
) -> (ShardServerInstance, TestEnv) {
    let db = ShardServerInstance::start(server_id).await;
    let servers = [db.test_server(server)];
    let env = TestEnv::on_servers(test, 2, &servers, &test_support::shared_redis_url()).await;
    (db, env)
}

/// `n` events for each of `shards` shards, the shards' match ids `spacing`
/// apart.
fn events_per_shard(shards: u16, spacing: i64, n: usize) -> HashMap<ShardId, Vec<MatchEvent>> {
    (0..shards)
        .map(|shard| {
            let first = spacing * i64::from(shard + 1);
            (shard, started_events(shard, shards, first, n))
        })
        .collect()
}

/// Waits until every row of `inserted` is out, and a moment more for any
/// duplicate to show; then the streams must hold each exactly once.
async fn arrived_once(
    redis: &Client,
    config: &Config,
    inserted: &HashMap<ShardId, Vec<MatchEvent>>,
    timeout: Duration,
) {
    let total = inserted.values().map(|e| e.len() as u64).sum();
    wait_total(redis, config, total, timeout).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_exactly_once(redis, config, inserted).await;
}

/// Server 0's reader run to its end, which a definite error must bring.
async fn definite_error(config: &Arc<Config>) -> cdc_reader::Definite {
    tokio::time::timeout(
        Duration::from_secs(30),
        cdc_reader::run_server(config.clone(), 0, Default::default()),
    )
    .await
    .expect("a definite error stops the reader, no endless retry")
    .unwrap_err()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rotation_and_a_server_kill9_mid_stream_lose_and_repeat_nothing() {
    let (mut db, env) = on_private_server(61, "cdc_mdb", "priv-a").await;
    let redis = env.redis().await;
    let config = with_batch_rows(&env.config, 200);
    let (stop, task) = spawn_reader(config.clone());
    wait_checkpoints(&redis, &config).await;

    let inserted = events_per_shard(2, 100_000, 3000);
    // Phase 1 with rotations between chunks.
    for (i, chunk) in (0..1500).step_by(250).enumerate() {
        for shard in 0..2u16 {
            insert_retrying(
                &env,
                shard,
                TABLE,
                &inserted[&shard][chunk..chunk + 250],
                50,
            )
            .await;
        }
        if i % 2 == 0 {
            let mut a = env.admin_conn(0).await;
            a.query_drop("FLUSH BINARY LOGS").await.unwrap();
        }
    }
    wait_total(&redis, &config, 1000, Duration::from_secs(30)).await;
    db.kill9();
    tokio::time::sleep(Duration::from_millis(700)).await;
    db.restart().await;
    for shard in 0..2u16 {
        insert_retrying(&env, shard, TABLE, &inserted[&shard][1500..], 100).await;
    }
    let mut a = env.admin_conn(0).await;
    a.query_drop("FLUSH BINARY LOGS").await.unwrap();
    arrived_once(&redis, &config, &inserted, Duration::from_secs(90)).await;
    stop.cancel();
    task.await.unwrap().unwrap();
    env.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_redis_restart_mid_stream_loses_and_repeats_nothing() {
    let mut r = RedisInstance::start(true).await;
    let env = TestEnv::on_servers(
        "cdc_redis",
        4,
        &[
            test_support::TestServer {
                name: "mysql-a".into(),
                port: 3307,
            },
            test_support::TestServer {
                name: "mysql-b".into(),
                port: 3308,
            },
        ],
        &r.url(),
    )
    .await;
    let redis = env.redis().await;
    let config = with_batch_rows(&env.config, 250);
    let (stop, task) = spawn_reader(config.clone());
    wait_checkpoints(&redis, &config).await;
    let inserted = events_per_shard(4, 300_000, 2000);
    for shard in 0..4u16 {
        insert(&env, shard, TABLE, &inserted[&shard][..1000], 100).await;
    }
    wait_total(&redis, &config, 1000, Duration::from_secs(30)).await;
    r.kill9();
    for shard in 0..4u16 {
        insert(&env, shard, TABLE, &inserted[&shard][1000..], 100).await;
    }
    tokio::time::sleep(Duration::from_secs(1)).await;
    r.restart().await;
    arrived_once(&redis, &config, &inserted, Duration::from_secs(90)).await;
    stop.cancel();
    task.await.unwrap().unwrap();
    env.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_purged_binlog_and_a_misconfigured_server_are_definite() {
    let (_db, env) = on_private_server(62, "cdc_purge", "priv-p").await;
    let redis = env.redis().await;
    let config = env.config.clone();
    let (stop, task) = spawn_reader(config.clone());
    wait_checkpoints(&redis, &config).await;
    insert(&env, 0, TABLE, &started_events(0, 2, 1, 10), 10).await;
    wait_total(&redis, &config, 10, Duration::from_secs(30)).await;
    stop.cancel();
    task.await.unwrap().unwrap();

    // While the reader is down, its position is purged away.
    insert(&env, 1, TABLE, &started_events(1, 2, 100, 10), 10).await;
    let mut a = env.admin_conn(0).await;
    a.query_drop("FLUSH BINARY LOGS").await.unwrap();
    let (file, _) = test_support::binlog_head(&mut a).await;
    // The stopped reader's dump thread may linger a moment and hold the file.
    test_support::eventually("binlogs purged", Duration::from_secs(20), || {
        let (url, file) = (config.servers[0].admin_url.clone().unwrap(), file.clone());
        async move {
            let mut a = mysql_async::Conn::new(mysql_async::Opts::from_url(&url).unwrap())
                .await
                .ok()?;
            a.query_drop(format!("PURGE BINARY LOGS TO '{file}'"))
                .await
                .ok()?;
            let logs: Vec<mysql_async::Row> = a.query("SHOW BINARY LOGS").await.ok()?;
            let first: Option<String> = logs.first().and_then(|l| l.get(0));
            (first.as_ref() == Some(&file)).then_some(())
        }
    })
    .await;

    let err = definite_error(&config).await;
    assert!(
        matches!(err, cdc_reader::Definite::BinlogUnavailable { .. }),
        "{err}"
    );
    assert!(err.to_string().contains("rpsctl replay"), "{err}");

    // Preflight names setting, expected and actual, and does not stream.
    a.query_drop("SET GLOBAL binlog_row_metadata = 'MINIMAL'")
        .await
        .unwrap();
    match definite_error(&config).await {
        cdc_reader::Definite::Misconfigured { mismatches, .. } => {
            assert_eq!(mismatches.len(), 1, "{mismatches:?}");
            assert_eq!(mismatches[0].setting, "binlog_row_metadata");
            assert_eq!(mismatches[0].expected, "FULL");
            assert_eq!(mismatches[0].actual, "MINIMAL");
        }
        other => panic!("expected a preflight failure, got {other}"),
    }
    env.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn branches_prepared_before_a_server_kill9_are_decided_after_it() {
    use test_support::xa::{decide_branch, full_match, held_branches, write_branch, BranchEnd};
    let (mut db, env) = on_private_server(64, "cdc_xa_srv", "priv-xa").await;
    let redis = env.redis().await;
    let (stop, task) = spawn_reader(env.config.clone());
    wait_checkpoints(&redis, &env.config).await;
    let commit = full_match(0, 2, 500);
    let rollback = full_match(1, 2, 600);
    write_branch(&env, 0, "'srv-c'", &commit, 4, BranchEnd::Prepare).await;
    write_branch(&env, 1, "'srv-r'", &rollback, 4, BranchEnd::Prepare).await;
    test_support::eventually("both branches held", Duration::from_secs(30), || async {
        (held_branches(&env, "priv-xa").await.len() == 2).then_some(())
    })
    .await;

    // The server dies with both branches prepared; InnoDB recovers them
    // as prepared from the binlog, and they are decided after the restart.
    db.kill9();
    tokio::time::sleep(Duration::from_millis(500)).await;
    db.restart().await;
    let mut conn = env.admin_conn(0).await;
    let prepared = rps_event_store::xa::recover(&mut conn).await.unwrap();
    assert_eq!(prepared.len(), 2, "both branches survive the restart");
    drop(conn);
    decide_branch(&env, 0, "'srv-c'", true).await;
    decide_branch(&env, 1, "'srv-r'", false).await;
    let marker = started_events(1, 2, 700, 1);
    insert_retrying(&env, 1, TABLE, &marker, 1).await;
    let want = HashMap::from([(0, commit), (1, marker)]);
    arrived_once(&redis, &env.config, &want, Duration::from_secs(60)).await;
    assert!(held_branches(&env, "priv-xa").await.is_empty());
    stop.cancel();
    task.await.unwrap().unwrap();
    env.cleanup().await;
}
