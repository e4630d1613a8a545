//! A shard's server down while its deadline falls due: retried on the
//! schedule and fired when it returns; down for good: dead-lettered after
//! the last attempt, parked, and fired again after an operator's retry.

mod common;

use common::*;
use compensator::deadlines::{AttemptHistory, PARKED};
use compensator::dlq;
use compensator::fred::interfaces::{SortedSetsInterface, StreamsInterface};
use rps_core::keys::deadline_member;
use std::time::Duration;
use test_support::{eventually, shared_redis_url, ShardServerInstance, TestEnv};
use tokio_util::sync::CancellationToken;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shard_down_while_firing_is_retried_then_fired() {
    let mut db = ShardServerInstance::start(201).await;
    let env = TestEnv::on_servers(
        "comp_down",
        2,
        &[db.test_server("mysql-p")],
        &shared_redis_url(),
    )
    .await;
    let config = with_settings(&env.config, |c| {
        c.retry_initial_ms = 300;
        c.retry_max_ms = 1_200;
        c.max_attempts = 100;
    });
    let m = new_match(&env.config, 4, in_ms(800));
    write_match(&env, &m, Plot::OnlyB(test_gesture()), false).await;
    let member = deadline_member(m.shard, m.match_id);
    db.kill9();

    let shutdown = CancellationToken::new();
    let task = tokio::spawn(compensator::run(config, shutdown.clone()));
    let h = attempts_recorded(&env, &member, 2, Duration::from_secs(20)).await;
    assert!(!h.parked);
    let gap = h.attempts[1].at - h.attempts[0].at;
    assert!(
        gap >= 290_000,
        "second attempt {gap} µs after the first, expected ≥ 300 ms"
    );

    db.restart().await;
    eventually(
        "timed_out after the shard returned",
        Duration::from_secs(30),
        || async { (timed_outs(&stored(&env, &m).await).len() == 1).then_some(()) },
    )
    .await;
    eventually(
        "attempt history cleared",
        Duration::from_secs(5),
        || async { history(&env, &member).await.is_none().then_some(()) },
    )
    .await;
    shutdown.cancel();
    task.await.unwrap().unwrap();
    let evs = stored(&env, &m).await;
    assert_eq!(timed_outs(&evs).len(), 1);
    assert_eq!(timed_outs(&evs)[0].winner_player_id, Some(m.player_b));
    let redis = env.redis().await;
    let dl: u64 = redis.xlen(env.config.keys().deadletter()).await.unwrap();
    assert_eq!(dl, 0, "recovered before the last attempt: no dead letter");
    env.cleanup().await;
}

fn test_gesture() -> rps_core::Gesture {
    rps_core::Gesture::Scissors
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shard_down_for_good_goes_to_the_dead_letter_after_four_attempts() {
    let mut db = ShardServerInstance::start(202).await;
    let env = TestEnv::on_servers(
        "comp_dead",
        2,
        &[db.test_server("mysql-p")],
        &shared_redis_url(),
    )
    .await;
    let config = with_settings(&env.config, |c| {
        c.retry_initial_ms = 200;
        c.retry_max_ms = 400;
        c.max_attempts = 4;
    });
    let m = new_match(&env.config, 6, in_ms(500));
    write_match(&env, &m, Plot::NobodyMoved, false).await;
    let member = deadline_member(m.shard, m.match_id);
    db.kill9();

    let shutdown = CancellationToken::new();
    let task = tokio::spawn(compensator::run(config, shutdown.clone()));
    let redis = env.redis().await;
    let keys = env.config.keys();
    let entries = eventually("a dead letter", Duration::from_secs(20), || async {
        let l = dlq::list(&redis, &keys, None, 10).await.unwrap();
        (!l.is_empty()).then_some(l)
    })
    .await;
    assert_eq!(entries.len(), 1);
    let e = &entries[0];
    assert_eq!(e.origin(), "compensator");
    assert_eq!(e.kind(), "deadline_failed");
    assert_eq!(e.shard(), Some(m.shard));
    assert_eq!(e.match_id(), Some(m.match_id));
    assert!(
        e.get("reason").contains("4 attempts"),
        "{}",
        e.get("reason")
    );
    let h: AttemptHistory = serde_json::from_str(e.get("payload")).unwrap();
    assert_eq!(h.attempts.len(), 4);
    assert!(h.attempts.iter().all(|a| !a.error.is_empty()));
    // The schedule: 200, 400, 400 ms between attempts (clamped).
    let gaps: Vec<i64> = h
        .attempts
        .windows(2)
        .map(|w| (w[1].at - w[0].at) / 1000)
        .collect();
    for (gap, want) in gaps.iter().zip([200, 400, 400]) {
        assert!(*gap >= want - 10 && *gap < want + 1_500, "gaps {gaps:?}");
    }
    // Parked: never claimed again on its own.
    let lease: Option<f64> = redis
        .zscore(keys.deadline_leases(m.shard), &member)
        .await
        .unwrap();
    assert_eq!(lease, Some(PARKED as f64));
    tokio::time::sleep(Duration::from_millis(1_500)).await;
    assert_eq!(history(&env, &member).await.unwrap().attempts.len(), 4);
    assert!(history(&env, &member).await.unwrap().parked);
    assert_eq!(dlq::count(&redis, &keys).await.unwrap(), 1);

    // The operator brings the shard back and retries the dead letter.
    db.restart().await;
    let done = dlq::retry(&redis, &keys, &e.id).await.unwrap();
    assert_eq!(
        done,
        dlq::Retried::DeadlineUnparked {
            member: member.clone()
        }
    );
    assert_eq!(dlq::count(&redis, &keys).await.unwrap(), 0);
    eventually(
        "fired after the operator's retry",
        Duration::from_secs(20),
        || async { (timed_outs(&stored(&env, &m).await).len() == 1).then_some(()) },
    )
    .await;
    shutdown.cancel();
    task.await.unwrap().unwrap();
    assert!(history(&env, &member).await.is_none());
    env.cleanup().await;
}
