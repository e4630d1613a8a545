//! Scale: 1M rows across all shards of both shared servers arrive exactly
//! once (per-shard count, distinct event ids and id checksum). The streams
//! go to a private Redis so the shared one is not filled.

mod common;

use common::*;
use std::time::Duration;
use test_support::shard_load::load_every_shard;
use test_support::{RedisInstance, TestEnv, TestServer};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_million_rows_across_all_shards_arrive_exactly_once() {
    let r = RedisInstance::start(false).await;
    let env = TestEnv::on_servers(
        "cdc_million",
        8,
        &[
            TestServer {
                name: "mysql-a".into(),
                port: 3307,
            },
            TestServer {
                name: "mysql-b".into(),
                port: 3308,
            },
        ],
        &r.url(),
    )
    .await;
    let redis = env.redis().await;
    let config = env.config.clone();
    let (stop, task) = spawn_reader(config.clone());
    wait_checkpoints(&redis, &config).await;

    const PER_SHARD: usize = 125_000;
    let want = load_every_shard(&env.store, config.shard_count, 2500, |shard| {
        started_events(
            shard,
            config.shard_count,
            2_000_000_000 * i64::from(shard + 1),
            PER_SHARD,
        )
    })
    .appended()
    .await;
    wait_total(&redis, &config, 1_000_000, Duration::from_secs(240)).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    streams::published_once(&redis, &config, &want).await;
    stop.cancel();
    task.await.unwrap().unwrap();
    env.cleanup().await;
}
