//! Test fixtures: matches written to the event store and projected into
//! Redis the way the projector does (match hash, deadline entry), so the
//! compensator can be tested against real servers on its own.
#![allow(dead_code)]

use compensator::deadlines::AttemptHistory;
use compensator::fred::interfaces::{
    ClientLike, HashesInterface, KeysInterface, SortedSetsInterface,
};
use mysql_async::prelude::Queryable;
use read_model::ReadModelKeys;
use rps_core::fold::{apply, MatchState};
use rps_core::keys::deadline_member;
use rps_core::{shard_of, Config, EventType, Gesture, MatchEvent, Outcome, Timestamp};
use rps_event_store::{decode_row, AppendOutcome, EVENT_COLUMNS};
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::Arc;
use std::time::Duration;
use test_support::{eventually, TestEnv};

pub const TABLE: &str = "match_result_events";
pub const GENERATION: u64 = 3;

/// A fresh match id (unique within the process; tests use their own databases).
pub fn next_match_id() -> i64 {
    static N: AtomicI64 = AtomicI64::new(1_000_000);
    N.fetch_add(1, Ordering::Relaxed)
}

/// How a match goes before its deadline.
#[derive(Debug, Clone, Copy)]
pub enum Plot {
    NobodyMoved,
    OnlyB(Gesture),
    Both(Gesture, Gesture),
    /// Both moved and `finished` was written.
    Finished(Gesture, Gesture),
}

pub struct Match {
    pub match_id: i64,
    pub player_a: i64,
    pub player_b: i64,
    pub shard: u16,
    pub deadline: Timestamp,
}

fn base(m: &Match, version: i32, t: EventType, at: Timestamp) -> MatchEvent {
    MatchEvent::new(
        uuid::Uuid::new_v4(),
        m.match_id,
        version,
        t,
        rps_core::SeasonId::of(at),
        (m.player_a, m.player_b),
        at,
    )
}

/// The events of a plot, in version order.
pub fn events(m: &Match, plot: Plot) -> Vec<MatchEvent> {
    let start = Timestamp(m.deadline.0 - 30_000_000);
    let mut v = vec![MatchEvent {
        deadline_at: Some(m.deadline),
        ..base(m, 1, EventType::Started, start)
    }];
    let mv = |version, a: Option<Gesture>, b: Option<Gesture>| MatchEvent {
        gesture_a: a,
        gesture_b: b,
        ..base(
            m,
            version,
            EventType::Moved,
            Timestamp(start.0 + i64::from(version)),
        )
    };
    match plot {
        Plot::NobodyMoved => {}
        Plot::OnlyB(g) => v.push(mv(2, None, Some(g))),
        Plot::Both(a, b) | Plot::Finished(a, b) => {
            v.push(mv(2, Some(a), None));
            v.push(mv(3, None, Some(b)));
        }
    }
    if let Plot::Finished(a, b) = plot {
        let outcome = Gesture::duel(a, b);
        let (w, l) = match outcome {
            Outcome::Win => (Some(m.player_a), Some(m.player_b)),
            Outcome::Lose => (Some(m.player_b), Some(m.player_a)),
            Outcome::Draw => (None, None),
        };
        // Just before the deadline.
        v.push(MatchEvent {
            gesture_a: Some(a),
            gesture_b: Some(b),
            outcome: Some(outcome),
            winner_player_id: w,
            loser_player_id: l,
            ..base(m, 4, EventType::Finished, Timestamp(m.deadline.0 - 100_000))
        });
    }
    v
}

pub fn new_match(config: &Config, player_a: i64, deadline: Timestamp) -> Match {
    Match {
        match_id: next_match_id(),
        player_a,
        player_b: player_a + 1_000_000,
        shard: shard_of(player_a, config.shard_count),
        deadline,
    }
}

/// Writes the plot to the event store and projects it into Redis as the
/// projector would. `projector_lags`: the deadline entry is left in place
/// even though the match ended (the projector has not caught up yet).
pub async fn write_match(env: &TestEnv, m: &Match, plot: Plot, projector_lags: bool) -> MatchState {
    let redis = env.redis().await;
    let mut state: Option<MatchState> = None;
    for ev in events(m, plot) {
        let out = env.store.append(m.shard, TABLE, &ev).await.expect("append");
        assert_eq!(out, AppendOutcome::Inserted);
        state = Some(apply(state.as_ref(), &ev).expect("valid plot").state);
    }
    let state = state.expect("started");
    let g = env.config.keys().generation_keys(GENERATION);
    let _: () = redis
        .set(
            env.config.keys().generation(),
            GENERATION.to_string(),
            None,
            None,
            false,
        )
        .await
        .unwrap();
    let _: () = redis
        .set(
            g.match_state(m.shard, m.match_id),
            state.to_value(),
            None,
            None,
            false,
        )
        .await
        .unwrap();
    if !state.status.is_over() || projector_lags {
        let _: () = redis
            .zadd(
                g.deadlines(m.shard),
                None,
                None,
                false,
                false,
                (
                    m.deadline.as_millis() as f64,
                    deadline_member(m.shard, m.match_id),
                ),
            )
            .await
            .unwrap();
    }
    let _ = redis.quit().await;
    state
}

/// Every stored row of a match, in version order.
pub async fn stored(env: &TestEnv, m: &Match) -> Vec<MatchEvent> {
    let mut conn = env.admin_conn(m.shard).await;
    let rows: Vec<mysql_async::Row> = conn
        .query(format!(
            "SELECT {EVENT_COLUMNS} FROM `{}`.`{TABLE}` WHERE match_id = {} ORDER BY version",
            env.config.database(m.shard),
            m.match_id
        ))
        .await
        .unwrap();
    let _ = conn.disconnect().await;
    rows.iter().map(|r| decode_row(r).unwrap()).collect()
}

pub fn timed_outs(events: &[MatchEvent]) -> Vec<&MatchEvent> {
    events
        .iter()
        .filter(|e| e.event_type == EventType::TimedOut)
        .collect()
}

/// The test's config with other compensator settings.
pub fn with_settings(
    config: &Config,
    f: impl FnOnce(&mut rps_core::config::CompensatorConfig),
) -> Arc<Config> {
    let mut c = config.clone();
    f(&mut c.compensator);
    Arc::new(c)
}

pub fn in_ms(ms: i64) -> Timestamp {
    Timestamp(Timestamp::now().0 + ms * 1000)
}

/// A deadline's attempt history, kept with the bookkeeping of the shard
/// its member names.
pub async fn history(env: &TestEnv, member: &str) -> Option<AttemptHistory> {
    let shard = rps_core::keys::parse_deadline_member(member).unwrap().0;
    let redis = env.redis().await;
    let raw: Option<String> = redis
        .hget(env.config.keys().deadline_attempts(shard), member)
        .await
        .unwrap();
    raw.map(|r| serde_json::from_str(&r).unwrap())
}

/// Waits until the deadline of `member` has `attempts` attempts or more
/// recorded; returns its history.
pub async fn attempts_recorded(
    env: &TestEnv,
    member: &str,
    attempts: usize,
    timeout: Duration,
) -> AttemptHistory {
    let what = format!("{attempts} attempts recorded for {member}");
    eventually(&what, timeout, || async {
        history(env, member)
            .await
            .filter(|h| h.attempts.len() >= attempts)
    })
    .await
}
