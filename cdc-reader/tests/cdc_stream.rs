//! End to end against the shared dev servers: rows inserted into the shard
//! databases arrive in the shard streams, decoded, exactly once.

mod common;

use common::*;
use rps_core::ShardId;
use std::collections::HashMap;
use std::time::Duration;
use test_support::TestEnv;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn inserted_rows_arrive_decoded_with_coordinates() {
    let env = TestEnv::new("cdc_basic").await;
    let redis = env.redis().await;
    let (stop, task) = spawn_reader(env.config.clone());
    // Wait until both readers stored their starting checkpoint.
    for s in &env.config.servers {
        let name = s.name.clone();
        test_support::eventually("initial checkpoint", Duration::from_secs(20), || {
            let redis = redis.clone();
            let config = env.config.clone();
            let name = name.clone();
            async move { checkpoint(&redis, &config, &name).await }
        })
        .await;
    }
    let mut inserted: HashMap<ShardId, Vec<_>> = HashMap::new();
    for shard in 0..env.config.shard_count {
        let evs = started_events(
            shard,
            env.config.shard_count,
            1_000_000 * i64::from(shard + 1),
            50,
        );
        insert(&env, shard, "match_result_events", &evs, 20).await;
        inserted.insert(shard, evs);
    }
    wait_total(&redis, &env.config, 400, Duration::from_secs(30)).await;
    assert_exactly_once(&redis, &env.config, &inserted).await;

    // Full precision and coordinates survive.
    let entries = read_stream(&redis, &env.config.keys().events(3)).await;
    let want = &inserted[&3];
    for ((_, got), w) in entries.iter().zip(want) {
        let mut w = w.clone();
        w.row_id = got.event.row_id;
        assert_eq!(got.event, w);
        assert_eq!(got.source.database, env.config.database(3));
        assert_eq!(got.source.table, "match_result_events");
        assert_eq!(got.source.server, env.config.server_of(3).name);
        assert!(
            got.source.pos > 4 && got.source.file.contains('.'),
            "{:?}",
            got.source
        );
        assert!(
            got.source.gtid.parse::<rps_core::Gtid>().is_ok(),
            "{:?}",
            got.source.gtid
        );
    }
    let ck = checkpoint(&redis, &env.config, &env.config.servers[0].name)
        .await
        .unwrap();
    assert!(ck.contains("\"inflight_gtid\":null"), "{ck}");
    stop.cancel();
    task.await.unwrap().unwrap();
    env.cleanup().await;
}
