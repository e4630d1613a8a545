//! A read whose reply is lost on the wire: Redis delivered the entries to
//! this consumer (they sit in its pending list) but the projector never saw
//! them. The client must not resend the `XREADGROUP >` (it would return only
//! newer entries and the projector's progress would move past the lost
//! ones); the worker must go back to its pending entries instead.

mod common;

use common::*;
use read_model::ReadModelKeys;
use rps_core::ShardId;
use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;
use test_support::{eventually, ReplyCutter, TestEnv};
use tokio_util::sync::CancellationToken;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_read_reply_lost_on_the_wire_is_applied_not_skipped() {
    // A proxy in front of one Redis: a private one, whatever Redis the
    // other tests share (a cluster would answer the proxied client MOVED).
    let redis = test_support::RedisInstance::start(false).await;
    let env = TestEnv::with_redis("proj_lost_reply", 1, &redis.url()).await;
    let client = env.redis().await;
    let keys = env.config.keys();
    let redis_port: u16 = env
        .config
        .redis
        .url
        .trim_end_matches('/')
        .rsplit(':')
        .next()
        .and_then(|p| p.parse().ok())
        .expect("redis url with a port");
    let cutter = ReplyCutter::start(redis_port).await;
    let mut config = (*env.config).clone();
    config.redis.url = cutter.url();
    let config = Arc::new(config);

    let events = tournament(13, 3_000_000, 600, 60, 1);
    let rows = write_and_read_back(&env, &events).await;
    let all = &rows[&0];
    let (first, rest) = all.split_at(all.len() / 3);
    let (second, third) = rest.split_at(rest.len() / 2);

    let stop = CancellationToken::new();
    let projector = tokio::spawn(projector::run(config.clone(), stop.clone()));
    let gk = keys.generation_keys(1);
    let wait_for = |last: String| {
        let (client, gk) = (client.clone(), gk.clone());
        async move {
            eventually(
                "the projector's progress to reach the last entry",
                Duration::from_secs(60),
                || {
                    let (client, gk, last) = (client.clone(), gk.clone(), last.clone());
                    async move {
                        (progress_of(&client, &gk, 1).await.get("0") == Some(&last)).then_some(())
                    }
                },
            )
            .await
        }
    };

    let mut published = publish(&env, &client, 0, first).await;
    wait_for(published.last().unwrap().0.clone()).await;

    // The worker is blocked in XREADGROUP >; the reply that hands it the
    // next entries (it names the stream) is cut.
    cutter.cut_next_reply_containing(&keys.events(0));
    published.extend(publish(&env, &client, 0, second).await);
    eventually("the reply to be cut", Duration::from_secs(10), || async {
        (cutter.cuts() == 1).then_some(())
    })
    .await;
    published.extend(publish(&env, &client, 0, third).await);
    wait_for(published.last().unwrap().0.clone()).await;

    let by_shard: BTreeMap<ShardId, _> = [(0, published)].into_iter().collect();
    assert_matches_fold(&client, &gk, &fold_all(&by_shard, 1)).await;
    stop.cancel();
    projector.await.unwrap().unwrap();
    env.cleanup().await;
}
