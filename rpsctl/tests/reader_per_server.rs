//! One `rpsctl cdc-reader --server NAME` per MySQL server, as a deployment
//! that outgrows one process runs them: each publishes its own server's
//! shards, a reader killed with kill -9 holds back only its own server, and
//! after its restart every row is in its shard stream exactly once. An
//! unknown server name is a usage error.

use rps_core::event::MatchEvent;
use rps_core::ShardId;
use std::process::{Child, Command, Stdio};
use std::time::Duration;
use test_support::shard_load::started_events_of_fixed_ids;
use test_support::{eventually, KillOnDrop, TestEnv};

fn reader(path: &std::path::Path, server: &str) -> Child {
    Command::new(env!("CARGO_BIN_EXE_rpsctl"))
        .arg("--config")
        .arg(path)
        .args(["cdc-reader", "--server", server])
        .env("RUST_LOG", "warn")
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("rpsctl cdc-reader")
}

async fn stream_len(env: &TestEnv, shard: ShardId) -> u64 {
    use fred::interfaces::StreamsInterface;
    let redis = env.redis().await;
    redis
        .xlen(env.config.keys().events(shard))
        .await
        .unwrap_or(0)
}

async fn wait_len(env: &TestEnv, shard: ShardId, n: u64) {
    eventually(
        &format!("{n} entries in shard {shard}'s stream"),
        Duration::from_secs(60),
        || async move { (stream_len(env, shard).await == n).then_some(()) },
    )
    .await;
}

async fn insert(env: &TestEnv, shard: ShardId, rows: &[MatchEvent]) {
    let mut session = env.store.session(shard).await.expect("session");
    assert_eq!(
        session
            .append_all("match_result_events", rows)
            .await
            .expect("insert"),
        rps_event_store::BatchAppend::Inserted
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_reader_per_server_each_publishes_its_own_shards_once() {
    let env = TestEnv::with_shards("reader_per_server", 2).await;
    let (_dir, path) = env.write_config_file();
    let (a, b) = (
        env.config.server_of(0).name.clone(),
        env.config.server_of(1).name.clone(),
    );
    assert_ne!(a, b, "shards 0 and 1 live on different servers");

    let out = Command::new(env!("CARGO_BIN_EXE_rpsctl"))
        .arg("--config")
        .arg(&path)
        .args(["cdc-reader", "--server", "no-such-server"])
        .output()
        .expect("rpsctl cdc-reader");
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("no-such-server") && err.contains(&a), "{err}");

    let mut reader_a = KillOnDrop(reader(&path, &a));
    let _reader_b = KillOnDrop(reader(&path, &b));
    test_support::pipeline::wait_until_streaming(&env.config).await;
    insert(&env, 0, &started_events_of_fixed_ids(0, 2, 1_000, 500)).await;
    insert(&env, 1, &started_events_of_fixed_ids(1, 2, 2_000, 500)).await;
    wait_len(&env, 0, 500).await;
    wait_len(&env, 1, 500).await;

    // Server a's reader dies: server b's shard goes on alone.
    reader_a.0.kill().expect("kill -9");
    let _ = reader_a.0.wait();
    insert(&env, 0, &started_events_of_fixed_ids(0, 2, 3_000, 500)).await;
    insert(&env, 1, &started_events_of_fixed_ids(1, 2, 4_000, 500)).await;
    wait_len(&env, 1, 1000).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(stream_len(&env, 0).await, 500, "nobody reads server a");

    let _reader_a = KillOnDrop(reader(&path, &a));
    wait_len(&env, 0, 1000).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(stream_len(&env, 0).await, 1000);
    assert_eq!(stream_len(&env, 1).await, 1000);
    env.cleanup().await;
}
