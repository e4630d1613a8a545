//! Trimming never removes an entry some consumer group has not
//! acknowledged, and leaves streams without groups alone.

use fred::prelude::*;
use fred::types::Value;
use test_support::TestEnv;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn trims_only_below_what_every_group_acknowledged() {
    let env = TestEnv::with_shards("cdc_trim", 2).await;
    let redis = env.redis().await;
    let keys = env.config.keys();
    let (s0, s1) = (keys.events(0), keys.events(1));
    // Old ids (ms 1000..1010), far below now − 10 min.
    for k in [&s0, &s1] {
        for i in 0..10u64 {
            let _: String = redis
                .xadd(
                    k.as_str(),
                    false,
                    None,
                    format!("{}-0", 1000 + i),
                    vec![("f", "v")],
                )
                .await
                .unwrap();
        }
    }
    // Stream 0: two groups; one read 6 entries and acked 4, one read 8 and acked all.
    let _: Value = redis.xgroup_create(&s0, "g1", "0", false).await.unwrap();
    let _: Value = redis.xgroup_create(&s0, "g2", "0", false).await.unwrap();
    let _: Value = redis
        .xreadgroup("g1", "c", Some(6), None, false, &s0, ">")
        .await
        .unwrap();
    let _: u64 = redis
        .xack(&s0, "g1", vec!["1000-0", "1001-0", "1002-0", "1003-0"])
        .await
        .unwrap();
    let _: Value = redis
        .xreadgroup("g2", "c", Some(8), None, false, &s0, ">")
        .await
        .unwrap();
    let ids: Vec<String> = (0..8).map(|i| format!("{}-0", 1000 + i)).collect();
    let _: u64 = redis.xack(&s0, "g2", ids).await.unwrap();

    let now = rps_core::Timestamp::now().as_millis() as u64;
    let removed = cdc_reader::trim::trim_once(&redis, &env.config, now)
        .await
        .unwrap();
    // g1's oldest pending entry is 1004-0: 1000..1003 go, the rest stays.
    assert_eq!(removed, 4);
    let left: Vec<(String, std::collections::HashMap<String, String>)> =
        redis.xrange(&s0, "-", "+", None).await.unwrap();
    assert_eq!(left.first().map(|e| e.0.as_str()), Some("1004-0"));
    assert_eq!(left.len(), 6);
    // Stream 1 has no group: untouched.
    let n: u64 = redis.xlen(&s1).await.unwrap();
    assert_eq!(n, 10);

    // Once g1 acknowledges everything it read, the trim point is the lower
    // of the two groups' last-delivered ids (g1: 1005-0).
    let _: u64 = redis
        .xack(&s0, "g1", vec!["1004-0", "1005-0"])
        .await
        .unwrap();
    cdc_reader::trim::trim_once(&redis, &env.config, now)
        .await
        .unwrap();
    let left: Vec<(String, std::collections::HashMap<String, String>)> =
        redis.xrange(&s0, "-", "+", None).await.unwrap();
    assert_eq!(left.first().map(|e| e.0.as_str()), Some("1005-0"));
    env.cleanup().await;
}
