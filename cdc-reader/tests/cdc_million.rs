//! Scale: 1M rows across all shards of both shared servers arrive exactly
//! once (per-shard count, distinct event ids and id checksum). The streams
//! go to a private Redis so the shared one is not filled.

mod common;

use common::*;
use rps_core::ShardId;
use std::collections::HashMap;
use std::time::Duration;
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
    let mut want: HashMap<ShardId, (u64, u128)> = HashMap::new();
    let mut loads = Vec::new();
    for shard in 0..config.shard_count {
        let evs = started_events(
            shard,
            config.shard_count,
            2_000_000_000 * i64::from(shard + 1),
            PER_SHARD,
        );
        want.insert(shard, test_support::count_and_checksum(&evs));
        loads.push(test_support::spawn_append(&env.store, shard, evs, 2500));
    }
    for l in loads {
        l.await.unwrap();
    }
    wait_total(&redis, &config, 1_000_000, Duration::from_secs(240)).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let got = cdc_reader::inspect::all_streams(&redis, &config)
        .await
        .unwrap();
    for (shard, (n, sum)) in &want {
        let s = &got[shard];
        assert_eq!(s.entries, *n, "shard {shard}: entries");
        assert_eq!(s.distinct_events, *n, "shard {shard}: duplicates");
        assert_eq!(s.id_checksum, *sum, "shard {shard}: id checksum");
    }
    stop.cancel();
    task.await.unwrap().unwrap();
    env.cleanup().await;
}
