//! The claim against Redis alone: each shard's leases and attempt histories
//! are its own, so a claim of one shard neither sees nor cleans another's.

use compensator::deadlines::{AttemptHistory, Claimed, DeadlineStore, PARKED};
use compensator::fred::interfaces::{HashesInterface, SortedSetsInterface};
use read_model::ReadModelKeys;
use rps_core::keys::deadline_member;
use rps_core::Timestamp;
use test_support::TestEnv;

const GENERATION: u64 = 5;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn leases_and_histories_stay_with_their_shard() {
    let env = TestEnv::with_shards("comp_claim", 2).await;
    let redis = env.redis().await;
    let keys = env.config.keys();
    let g = keys.generation_keys(GENERATION);
    let now = Timestamp::now().as_millis();
    let history = serde_json::to_string(&AttemptHistory::default()).unwrap();

    // Shard 0: one due deadline, and one whose member names shard 1.
    let _: () = redis
        .zadd(
            g.deadlines(0),
            None,
            None,
            false,
            false,
            vec![
                ((now - 1_000) as f64, deadline_member(0, 10)),
                ((now - 900) as f64, deadline_member(1, 99)),
            ],
        )
        .await
        .unwrap();
    // Shard 1: a due deadline, a parked one, and an expired lease (with its
    // history) of a deadline that is gone.
    let _: () = redis
        .zadd(
            g.deadlines(1),
            None,
            None,
            false,
            false,
            vec![
                ((now - 800) as f64, deadline_member(1, 11)),
                ((now - 700) as f64, deadline_member(1, 12)),
            ],
        )
        .await
        .unwrap();
    let _: () = redis
        .zadd(
            keys.deadline_leases(1),
            None,
            None,
            false,
            false,
            vec![
                (PARKED as f64, deadline_member(1, 12)),
                ((now - 5) as f64, deadline_member(1, 13)),
            ],
        )
        .await
        .unwrap();
    for m in [12, 13] {
        let _: () = redis
            .hset(
                keys.deadline_attempts(1),
                (deadline_member(1, m), history.clone()),
            )
            .await
            .unwrap();
    }

    let store = DeadlineStore::new(redis.clone(), keys.clone());
    let r = store.claim(&g, 2, now, 60_000, 10).await.unwrap();
    let mut claimed = r.claimed.clone();
    claimed.sort_by_key(|c| c.match_id);
    assert_eq!(
        claimed,
        vec![
            Claimed {
                shard: 0,
                match_id: 10,
                deadline_ms: now - 1_000
            },
            Claimed {
                shard: 1,
                match_id: 11,
                deadline_ms: now - 800
            },
        ]
    );
    assert_eq!(r.malformed, vec![deadline_member(1, 99)]);
    assert_eq!((r.pending, r.overdue), (4, 4));

    // Each lease in its own shard's key.
    let lease = |shard, m| {
        let redis = redis.clone();
        let key = keys.deadline_leases(shard);
        async move {
            let s: Option<f64> = redis.zscore(key, deadline_member(shard, m)).await.unwrap();
            s
        }
    };
    assert_eq!(lease(0, 10).await, Some((now + 60_000) as f64));
    assert_eq!(lease(1, 11).await, Some((now + 60_000) as f64));
    let none: Option<f64> = redis
        .zscore(keys.deadline_leases(1), deadline_member(0, 10))
        .await
        .unwrap();
    assert_eq!(none, None);
    // The parked one stays parked with its history; the orphan is gone.
    assert_eq!(lease(1, 12).await, Some(PARKED as f64));
    assert!(store.attempts(1, 12).await.unwrap().is_some());
    assert_eq!(lease(1, 13).await, None);
    assert!(store.attempts(1, 13).await.unwrap().is_none());

    // Settling and parking write to the deadline's shard.
    let c = claimed[1];
    store
        .record_failure(&c, "down", Vec::new(), Timestamp::now())
        .await
        .unwrap();
    assert_eq!(
        store.attempts(1, 11).await.unwrap().unwrap().attempts.len(),
        1
    );
    assert!(store.attempts(0, 11).await.unwrap().is_none());
    store.clear_attempts(&claimed).await.unwrap();
    assert!(store.attempts(1, 11).await.unwrap().is_none());
    store.unpark(1, 12).await.unwrap();
    assert_eq!(lease(1, 12).await, None);
    assert!(store.attempts(1, 12).await.unwrap().is_none());
    env.cleanup().await;
}
