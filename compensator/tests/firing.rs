//! Firing against the real dev servers: the three timeout results, a match
//! that ends just in time, and two compensators side by side.

mod common;

use common::*;
use read_model::ReadModelKeys;
use rps_core::{Gesture, Outcome, Timestamp};
use std::time::Duration;
use test_support::{eventually, TestEnv};
use tokio_util::sync::CancellationToken;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_deadline_fires_once_with_the_right_result() {
    let env = TestEnv::new("comp_fire").await;
    let deadline = in_ms(1500);
    let nobody = new_match(&env.config, 8, deadline);
    let only_b = new_match(&env.config, 9, deadline);
    let both = new_match(&env.config, 10, deadline);
    let finished_lagging = new_match(&env.config, 11, deadline);
    let finished = new_match(&env.config, 12, deadline);
    write_match(&env, &nobody, Plot::NobodyMoved, false).await;
    write_match(&env, &only_b, Plot::OnlyB(Gesture::Paper), false).await;
    write_match(
        &env,
        &both,
        Plot::Both(Gesture::Rock, Gesture::Paper),
        false,
    )
    .await;
    // Finished 100 ms before the deadline; the projector has not yet removed
    // the deadline entry, so the compensator claims it and must find the end
    // in the event store.
    write_match(
        &env,
        &finished_lagging,
        Plot::Finished(Gesture::Scissors, Gesture::Paper),
        true,
    )
    .await;
    write_match(
        &env,
        &finished,
        Plot::Finished(Gesture::Rock, Gesture::Rock),
        false,
    )
    .await;

    // Two compensators side by side.
    let shutdown = CancellationToken::new();
    let config = with_settings(&env.config, |c| c.lease_ms = 2_000);
    let a = tokio::spawn(compensator::run(config.clone(), shutdown.clone()));
    let b = tokio::spawn(compensator::run(config.clone(), shutdown.clone()));

    for m in [&nobody, &only_b, &both] {
        eventually("timed_out stored", Duration::from_secs(15), || async {
            (!timed_outs(&stored(&env, m).await).is_empty()).then_some(())
        })
        .await;
    }
    // Let leases expire and be re-claimed once: a second claim must find the
    // match over and write nothing.
    tokio::time::sleep(Duration::from_millis(2_800)).await;
    shutdown.cancel();
    a.await.unwrap().unwrap();
    b.await.unwrap().unwrap();

    let check = |evs: &[rps_core::MatchEvent], version: i32| {
        let t = timed_outs(evs);
        assert_eq!(t.len(), 1, "exactly one timed_out: {evs:?}");
        let t = t[0].clone();
        assert_eq!(t.version, version);
        assert_eq!(evs.len() as i32, version, "nothing after it");
        assert_eq!(
            t.event_id,
            rps_core::MatchEvent::timed_out_event_id(t.match_id, version)
        );
        // Fired after the deadline, and soon after it.
        assert!(
            t.occurred_at >= deadline,
            "{} < {}",
            t.occurred_at,
            deadline
        );
        assert!(
            t.occurred_at.0 - deadline.0 < 1_000_000,
            "late: {}",
            t.occurred_at
        );
        t
    };
    let t = check(&stored(&env, &nobody).await, 2);
    assert_eq!(
        (t.winner_player_id, t.loser_player_id, t.outcome),
        (None, None, None)
    );

    let t = check(&stored(&env, &only_b).await, 3);
    assert_eq!(t.winner_player_id, Some(only_b.player_b));
    assert_eq!(t.loser_player_id, Some(only_b.player_a));
    assert_eq!(t.outcome, Some(Outcome::Lose));

    let t = check(&stored(&env, &both).await, 4);
    assert_eq!(t.winner_player_id, Some(both.player_b), "paper covers rock");
    assert_eq!(t.loser_player_id, Some(both.player_a));
    assert_eq!(t.outcome, Some(Outcome::Lose));

    for m in [&finished_lagging, &finished] {
        let evs = stored(&env, m).await;
        assert!(timed_outs(&evs).is_empty(), "finished in time: {evs:?}");
        assert_eq!(evs.len(), 4);
    }
    // Nothing failed, so no attempt history and no dead letter.
    let redis = env.redis().await;
    use compensator::fred::interfaces::{HashesInterface, StreamsInterface};
    for shard in 0..env.config.shard_count {
        let attempts: u64 = redis
            .hlen(env.config.keys().deadline_attempts(shard))
            .await
            .unwrap();
        assert_eq!(attempts, 0, "shard {shard}");
    }
    let dl: u64 = redis.xlen(env.config.keys().deadletter()).await.unwrap();
    assert_eq!(dl, 0);
    env.cleanup().await;
}

/// A deadline that is not due yet by the event store (the read model's score
/// was early) is left alone until it is.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn early_score_waits_for_the_stored_deadline() {
    use compensator::fred::interfaces::SortedSetsInterface;
    let env = TestEnv::new("comp_early").await;
    let m = new_match(&env.config, 5, in_ms(2_500));
    write_match(&env, &m, Plot::NobodyMoved, false).await;
    // The read model claims the deadline is already past.
    let redis = env.redis().await;
    let g = env.config.keys().generation_keys(GENERATION);
    let _: () = redis
        .zadd(
            g.deadlines(m.shard),
            None,
            None,
            false,
            false,
            (
                (Timestamp::now().as_millis() - 10_000) as f64,
                rps_core::keys::deadline_member(m.shard, m.match_id),
            ),
        )
        .await
        .unwrap();
    let shutdown = CancellationToken::new();
    let task = tokio::spawn(compensator::run(env.config.clone(), shutdown.clone()));
    tokio::time::sleep(Duration::from_millis(1_000)).await;
    assert!(
        timed_outs(&stored(&env, &m).await).is_empty(),
        "fired before the stored deadline"
    );
    let t = eventually(
        "fired at the stored deadline",
        Duration::from_secs(10),
        || async {
            timed_outs(&stored(&env, &m).await)
                .first()
                .map(|t| (*t).clone())
        },
    )
    .await;
    assert!(t.occurred_at >= m.deadline);
    shutdown.cancel();
    task.await.unwrap().unwrap();
    env.cleanup().await;
}
