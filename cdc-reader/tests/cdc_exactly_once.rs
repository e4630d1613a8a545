//! Exactly once through restarts: a large transaction published in bounded
//! batches resumes mid-way skipping exactly what was out, and readers
//! stopped, restarted and run twice at once (a fenced zombie) during a load
//! publish every row once.

mod common;

use common::*;
use rand::Rng;
use rps_core::ShardId;
use std::collections::HashMap;
use std::time::Duration;
use test_support::TestEnv;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn large_transaction_resumes_mid_way_skipping_published_rows() {
    let env = TestEnv::new("cdc_bigtrx").await;
    let redis = env.redis().await;
    let config = with_batch_rows(&env.config, 1000);
    let (stop, task) = spawn_reader(config.clone());
    wait_checkpoints(&redis, &config).await;
    let server = config.server_of(0).name.clone();
    let c0 = checkpoint(&redis, &config, &server).await.unwrap();

    let events = started_events(0, config.shard_count, 5_000_000, 20_000);
    insert(&env, 0, "match_result_events", &events, 20_000).await;
    wait_total(&redis, &config, 20_000, Duration::from_secs(60)).await;
    stop.cancel();
    task.await.unwrap().unwrap();
    let key = config.keys().events(0);
    let entries = read_stream(&redis, &key).await;
    assert_eq!(entries.len(), 20_000);
    let gtid = entries[0].1.source.gtid.clone();
    assert!(
        entries.iter().all(|(_, e)| e.source.gtid == gtid),
        "one transaction"
    );
    let after =
        cdc_reader::Checkpoint::decode(&checkpoint(&redis, &config, &server).await.unwrap())
            .unwrap();
    assert_eq!(after.inflight, None);

    // Pretend the reader died after the shard's step that published 7000
    // rows of that transaction, before the server checkpoint moved: the
    // server checkpoint is still the one from before, the shard's own says
    // 7000 are out.
    use fred::prelude::*;
    use rps_core::keys::PublishTarget;
    let start = cdc_reader::Checkpoint::decode(&c0).unwrap();
    let mut shard_ck = start.clone();
    shard_ck.inflight = Some((gtid.parse().unwrap(), 7000));
    let keys = config.keys();
    for k in keys.cdc_target_checkpoints(&server, config.shard_count) {
        let _: () = redis.del(k).await.unwrap();
    }
    let _: () = redis
        .set(
            keys.cdc_checkpoint(&server),
            start.encode("test", 1),
            None,
            None,
            false,
        )
        .await
        .unwrap();
    let _: () = redis
        .set(
            keys.cdc_target_checkpoint(&server, PublishTarget::Shard(0)),
            shard_ck.encode("test", 2),
            None,
            None,
            false,
        )
        .await
        .unwrap();
    let _: () = redis.del(&key).await.unwrap();

    let (stop, task) = spawn_reader(config.clone());
    wait_total(&redis, &config, 13_000, Duration::from_secs(60)).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let again = read_stream(&redis, &key).await;
    assert_eq!(again.len(), 13_000);
    for ((_, got), want) in again.iter().zip(&events[7000..]) {
        assert_eq!(got.event.event_id, want.event_id);
    }
    stop.cancel();
    task.await.unwrap().unwrap();
    env.cleanup().await;
}

/// What a Redis Cluster failover does to one slot: the promoted replica
/// lacks the master's last writes, so the shard's stream and its
/// checkpoint go back together while the server checkpoint (another slot)
/// keeps the step it recorded. The reader sees the target behind the
/// server checkpoint's record, resumes from the target's checkpoint, and
/// the others skip what they have.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_shard_slot_rolled_back_is_published_again_from_its_own_checkpoint() {
    use fred::prelude::*;
    use rps_core::keys::PublishTarget;
    let env = TestEnv::with_shards("cdc_slot_rollback", 2).await;
    let redis = env.redis().await;
    let config = with_batch_rows(&env.config, 500);
    let server = config.server_of(0).name.clone();
    let keys = config.keys();
    let (stop, task) = spawn_reader(config.clone());
    wait_checkpoints(&redis, &config).await;

    let first = started_events(0, config.shard_count, 7_000_000, 1000);
    insert(&env, 0, "match_result_events", &first, 1000).await;
    wait_total(&redis, &config, 1000, Duration::from_secs(60)).await;
    let shard0 = keys.cdc_target_checkpoint(&server, PublishTarget::Shard(0));
    let before: String = redis.get(&shard0).await.unwrap();

    // More rows on both shards: shard 1's slot keeps them.
    let second = started_events(0, config.shard_count, 7_100_000, 1000);
    insert(&env, 0, "match_result_events", &second, 1000).await;
    let other = started_events(1, config.shard_count, 7_200_000, 300);
    insert(&env, 1, "match_result_events", &other, 300).await;
    wait_total(&redis, &config, 2300, Duration::from_secs(60)).await;
    stop.cancel();
    task.await.unwrap().unwrap();

    let stream0 = keys.events(0);
    let entries = read_stream(&redis, &stream0).await;
    assert_eq!(entries.len(), 2000);
    let lost: Vec<String> = entries[1000..].iter().map(|(id, _)| id.clone()).collect();
    let _: i64 = redis.xdel(&stream0, lost).await.unwrap();
    let _: () = redis.set(&shard0, before, None, None, false).await.unwrap();

    let (stop, task) = spawn_reader(config.clone());
    wait_total(&redis, &config, 2300, Duration::from_secs(60)).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let again = read_stream(&redis, &stream0).await;
    let got: Vec<uuid::Uuid> = again.iter().map(|(_, e)| e.event.event_id).collect();
    let want: Vec<uuid::Uuid> = first.iter().chain(&second).map(|e| e.event_id).collect();
    assert_eq!(got, want, "shard 0: every row once, in binlog order");
    let got1: Vec<uuid::Uuid> = read_stream(&redis, &keys.events(1))
        .await
        .iter()
        .map(|(_, e)| e.event.event_id)
        .collect();
    let want1: Vec<uuid::Uuid> = other.iter().map(|e| e.event_id).collect();
    assert_eq!(got1, want1, "shard 1 skipped what its slot kept");
    stop.cancel();
    task.await.unwrap().unwrap();
    env.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn restarts_and_a_fenced_twin_during_load_publish_each_row_once() {
    let env = TestEnv::new("cdc_restart").await;
    let redis = env.redis().await;
    let config = with_batch_rows(&env.config, 300);
    let (mut stop, mut task) = spawn_reader(config.clone());
    wait_checkpoints(&redis, &config).await;

    let mut inserted: HashMap<ShardId, Vec<_>> = HashMap::new();
    let mut loads = Vec::new();
    for shard in 0..config.shard_count {
        let evs = started_events(
            shard,
            config.shard_count,
            10_000_000 * i64::from(shard + 1),
            5000,
        );
        inserted.insert(shard, evs.clone());
        let store = env.store.clone();
        loads.push(tokio::spawn(async move {
            let mut session = store.session(shard).await.unwrap();
            for c in evs.chunks(1000) {
                assert_eq!(
                    session.append_all("match_result_events", c).await.unwrap(),
                    rps_event_store::BatchAppend::Inserted
                );
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }));
    }
    for round in 0..4 {
        let wait = rand::rng().random_range(100..600);
        tokio::time::sleep(Duration::from_millis(wait)).await;
        if round == 2 {
            // A twin on the same checkpoints: the compare-and-set fences one
            // of them at a time; neither may publish a row twice.
            let (stop2, task2) = spawn_reader(config.clone());
            tokio::time::sleep(Duration::from_millis(400)).await;
            stop2.cancel();
            task2.await.unwrap().unwrap();
        }
        stop.cancel();
        task.await.unwrap().unwrap();
        (stop, task) = spawn_reader(config.clone());
    }
    for l in loads {
        l.await.unwrap();
    }
    wait_total(&redis, &config, 40_000, Duration::from_secs(90)).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_exactly_once(&redis, &config, &inserted).await;
    stop.cancel();
    task.await.unwrap().unwrap();
    env.cleanup().await;
}
