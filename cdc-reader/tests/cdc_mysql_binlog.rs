//! MySQL's binlog as it really is, on the shared MySQL pair whatever flavor
//! the rest of the suite runs against: compressed transactions
//! (TRANSACTION_PAYLOAD), tagged GTIDs and a resume by GTID set, and
//! PARTIAL_UPDATE_ROWS events.

mod common;

use common::*;
use mysql_async::prelude::*;
use rps_core::ShardId;
use std::collections::HashMap;
use std::time::Duration;
use test_support::{TestEnv, TestFlavor};

/// Inserts `events` as root on a session with the given setup statements
/// (compression, a GTID tag), in multi-row transactions of `chunk` rows.
async fn insert_as_root(
    env: &TestEnv,
    shard: ShardId,
    setup: &[&str],
    events: &[rps_core::MatchEvent],
    chunk: usize,
) {
    let mut conn = env.admin_conn(shard).await;
    for s in setup {
        conn.query_drop(*s).await.expect("session setup");
    }
    for c in events.chunks(chunk) {
        env.store
            .append_batch(&mut conn, shard, "match_result_events", c)
            .await
            .expect("insert");
    }
}

/// The binlog head of the server hosting `shard`: where
/// [`payload_events_since`] starts counting.
async fn binlog_head(env: &TestEnv, shard: ShardId) -> (String, u64) {
    test_support::binlog_head(&mut env.admin_conn(shard).await).await
}

/// Transaction payload events the server hosting `shard` logged since
/// `from`, in that binlog file and every later one (other tests share the
/// server and may rotate it). A file the server is writing can end in a
/// half-written event (error 1220) while other sessions commit; the read
/// is then repeated.
async fn payload_events_since(env: &TestEnv, shard: ShardId, from: &(String, u64)) -> usize {
    let mut conn = env.admin_conn(shard).await;
    let logs: Vec<mysql_async::Row> = conn.query("SHOW BINARY LOGS").await.expect("binary logs");
    let mut files: Vec<String> = logs
        .iter()
        .filter_map(|r| r.get::<String, _>(0))
        .filter(|f| f.as_str() >= from.0.as_str())
        .collect();
    files.sort();
    let mut payloads = 0;
    for file in files {
        let query = if file == from.0 {
            format!("SHOW BINLOG EVENTS IN '{file}' FROM {}", from.1)
        } else {
            format!("SHOW BINLOG EVENTS IN '{file}'")
        };
        let mut attempt = 0;
        let rows: Vec<mysql_async::Row> = loop {
            match conn.query(&query).await {
                Ok(rows) => break rows,
                Err(mysql_async::Error::Server(e)) if e.code == 1220 && attempt < 50 => {
                    attempt += 1;
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
                Err(e) => panic!("binlog events of {file}: {e}"),
            }
        };
        payloads += rows
            .iter()
            .filter(|r| r.get::<String, _>(2).as_deref() == Some("Transaction_payload"))
            .count();
    }
    payloads
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn compressed_and_tagged_transactions_arrive_once_and_resume_by_gtid_set() {
    let env = TestEnv::on_flavor("cdc_mysql_payload", TestFlavor::MySql, 4).await;
    let redis = env.redis().await;
    let (stop, task) = spawn_reader(env.config.clone());
    wait_checkpoints(&redis, &env.config).await;
    let before = binlog_head(&env, 0).await;

    let compressed = ["SET SESSION binlog_transaction_compression = ON"];
    let tagged = [
        "SET SESSION binlog_transaction_compression = ON",
        "SET SESSION gtid_next = 'AUTOMATIC:rps_test'",
    ];
    let mut inserted: HashMap<ShardId, Vec<_>> = HashMap::new();
    let a = started_events(0, 4, 7_000_000, 3_000);
    insert_as_root(&env, 0, &compressed, &a, 500).await;
    let b = started_events(1, 4, 8_000_000, 1_000);
    insert_as_root(&env, 1, &tagged, &b, 250).await;
    inserted.insert(0, a);
    inserted.insert(1, b);
    wait_total(&redis, &env.config, 4_000, Duration::from_secs(60)).await;
    assert_exactly_once(&redis, &env.config, &inserted).await;
    assert!(
        payload_events_since(&env, 0, &before).await >= 6,
        "the transactions were logged compressed"
    );
    // The commit position is the payload's end, never an inner event's 0.
    for (_, e) in read_stream(&redis, &env.config.keys().events(0)).await {
        assert!(e.source.pos > 4, "{:?}", e.source);
    }
    let server_b = env.config.server_of(1).name.clone();
    let ck = checkpoint(&redis, &env.config, &server_b).await.unwrap();
    assert!(
        ck.contains(":rps_test:"),
        "the tag is in the checkpoint: {ck}"
    );

    // Stopped, written to meanwhile (tagged and compressed), restarted: the
    // reader resumes by the GTID set and publishes each row once.
    stop.cancel();
    task.await.unwrap().unwrap();
    let c = started_events(1, 4, 9_000_000, 1_500);
    insert_as_root(&env, 1, &tagged, &c, 300).await;
    let d = started_events(2, 4, 9_500_000, 500);
    insert_as_root(&env, 2, &[], &d, 100).await;
    inserted.get_mut(&1).unwrap().extend(c);
    inserted.insert(2, d);
    let (stop, task) = spawn_reader(env.config.clone());
    wait_total(&redis, &env.config, 6_000, Duration::from_secs(60)).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_exactly_once(&redis, &env.config, &inserted).await;
    stop.cancel();
    task.await.unwrap().unwrap();
    env.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_partial_json_update_is_a_dead_letter_and_the_reader_goes_on() {
    let env = TestEnv::on_flavor("cdc_mysql_partial", TestFlavor::MySql, 2).await;
    let redis = env.redis().await;
    let db = env.config.database(0);
    let mut root = env.admin_conn(0).await;
    // A season table with an extra JSON column: followed like any event
    // table (columns are found by name).
    root.query_drop(format!(
        "CREATE TABLE `{db}`.match_result_events_json LIKE `{db}`.match_result_events"
    ))
    .await
    .unwrap();
    root.query_drop(format!(
        "ALTER TABLE `{db}`.match_result_events_json ADD COLUMN note JSON NULL"
    ))
    .await
    .unwrap();
    let (stop, task) = spawn_reader(env.config.clone());
    wait_checkpoints(&redis, &env.config).await;

    let evs = started_events(0, 2, 5_000_000, 10);
    // As root: the pipeline account may insert only into the tables that
    // existed at `rpsctl init`.
    let mut conn = env.admin_conn(0).await;
    env.store
        .append_batch(&mut conn, 0, "match_result_events_json", &evs)
        .await
        .unwrap();
    root.query_drop("SET SESSION binlog_row_value_options = 'PARTIAL_JSON'")
        .await
        .unwrap();
    root.query_drop(format!(
        "UPDATE `{db}`.match_result_events_json SET note = JSON_OBJECT('a', 1) WHERE match_id = 5000000"
    ))
    .await
    .unwrap();
    root.query_drop(format!(
        "UPDATE `{db}`.match_result_events_json SET note = JSON_SET(note, '$.a', 2) WHERE match_id = 5000000"
    ))
    .await
    .unwrap();
    let more = started_events(0, 2, 6_000_000, 5);
    insert(&env, 0, "match_result_events", &more, 5).await;
    wait_total(&redis, &env.config, 15, Duration::from_secs(30)).await;

    let dl_key = env.config.keys().deadletter();
    let dls = test_support::eventually("two UPDATE dead letters", Duration::from_secs(30), || {
        let (redis, key) = (redis.clone(), dl_key.clone());
        async move {
            let d = dead_letters(&redis, &key).await;
            (d.len() >= 2).then_some(d)
        }
    })
    .await;
    assert_eq!(dls.len(), 2, "{dls:?}");
    assert!(
        dls.iter().all(|d| d["kind"] == "update_on_event_table"),
        "{dls:?}"
    );
    assert!(
        dls.iter().any(|d| d["reason"].contains("partial JSON")),
        "the second UPDATE is logged as a partial one: {dls:?}"
    );
    stop.cancel();
    task.await.unwrap().unwrap();
    env.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn compressed_xa_branches_are_held_and_decided_like_plain_ones() {
    use test_support::xa::{
        decide_branch, full_match, held_branches, write_branch_with, BranchEnd,
    };
    let env = TestEnv::on_flavor("cdc_mysql_xa_zstd", TestFlavor::MySql, 2).await;
    let redis = env.redis().await;
    let (stop, task) = spawn_reader(env.config.clone());
    wait_checkpoints(&redis, &env.config).await;
    let server = env.config.server_of(0).name.clone();
    let before = binlog_head(&env, 0).await;
    let zstd = ["SET SESSION binlog_transaction_compression = ON"];
    let tag = env.name.clone();
    let x = |n: &str| format!("'{tag}-{n}'");
    let committed = full_match(0, 2, 100);
    let rolled_back = full_match(0, 2, 200);
    let one_phase = full_match(0, 2, 300);
    write_branch_with(&env, 0, &zstd, &x("c"), &committed, 4, BranchEnd::Prepare).await;
    write_branch_with(&env, 0, &zstd, &x("r"), &rolled_back, 4, BranchEnd::Prepare).await;
    write_branch_with(&env, 0, &zstd, &x("o"), &one_phase, 4, BranchEnd::OnePhase).await;
    test_support::eventually("two branches held", Duration::from_secs(30), || async {
        (held_branches(&env, &server).await.len() == 2).then_some(())
    })
    .await;
    assert!(
        payload_events_since(&env, 0, &before).await >= 3,
        "the prepare parts were logged compressed"
    );
    decide_branch(&env, 0, &x("c"), true).await;
    decide_branch(&env, 0, &x("r"), false).await;
    wait_total(&redis, &env.config, 8, Duration::from_secs(30)).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let mut want = HashMap::new();
    want.insert(0 as ShardId, [one_phase, committed].concat());
    assert_exactly_once(&redis, &env.config, &want).await;
    assert!(held_branches(&env, &server).await.is_empty());
    stop.cancel();
    task.await.unwrap().unwrap();
    env.cleanup().await;
}
