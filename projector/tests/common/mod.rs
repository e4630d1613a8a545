//! Test helpers shared by the projector's and rpsctl's projector tests:
//! generate a tournament (valid matches of every kind plus every invalid
//! case), write it to the MySQL shards, read it back with SQL, publish it to
//! the shard streams as cdc-reader would, fold it independently, and compare
//! the read models in Redis with that fold.
#![allow(dead_code)]

use projector::fred::clients::Client;
use projector::fred::prelude::*;
use projector::fred::types::{CustomCommand, Value};
use read_model::redis_util::hash_pairs;
use read_model::GenerationKeys;
use rps_core::fold::{DeadlineChange, MatchStatus};
use rps_core::keys::deadline_member;
use rps_core::{
    EventType, Gesture, MatchEvent, MatchState, Outcome, PlayerStats, SeasonId, ShardId,
    SourcePosition, StreamEvent, Timestamp,
};
use rps_event_store::BatchAppend;
use std::collections::{BTreeMap, HashMap, HashSet};
use test_support::TestEnv;

/// A small deterministic PRNG (xorshift64*), so a failing run can be replayed.
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Self {
        Rng(seed.max(1))
    }
    pub fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
    pub fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
    pub fn gesture(&mut self) -> Gesture {
        Gesture::ALL[self.below(3) as usize]
    }
}

fn base_event(
    match_id: i64,
    version: i32,
    t: EventType,
    season: SeasonId,
    a: i64,
    b: i64,
    at: Timestamp,
) -> MatchEvent {
    MatchEvent::new(
        MatchEvent::timed_out_event_id(match_id, version + 7_000_000),
        match_id,
        version,
        t,
        season,
        (a, b),
        at,
    )
}

fn with_result(mut e: MatchEvent, r: &rps_core::fold::MatchResult) -> MatchEvent {
    e.outcome = r.outcome;
    e.winner_player_id = r.winner;
    e.loser_player_id = r.loser;
    e
}

/// The valid events of `matches` random matches among players `1..=players`,
/// per shard in a plausible interleaving (each match's events in version order).
pub fn tournament(
    seed: u64,
    first_match_id: i64,
    matches: usize,
    players: i64,
    shard_count: u16,
) -> BTreeMap<ShardId, Vec<MatchEvent>> {
    let mut rng = Rng::new(seed);
    let seasons: [SeasonId; 2] = ["2026Q3".parse().unwrap(), "2026Q4".parse().unwrap()];
    let starts = [
        Timestamp::parse("2026-08-01 10:00:00").unwrap(),
        Timestamp::parse("2026-11-01 10:00:00").unwrap(),
    ];
    let mut timed: Vec<(i64, ShardId, MatchEvent)> = Vec::new();
    for i in 0..matches {
        let mid = first_match_id + i as i64;
        let a = 1 + rng.below(players as u64) as i64;
        let mut b = 1 + rng.below(players as u64) as i64;
        if b == a {
            b = a % players + 1;
        }
        let s = (i * 2 / matches.max(1)).min(1);
        let season = seasons[s];
        let t0 = Timestamp(starts[s].as_micros() + (i as i64) * 20_000);
        let shard = rps_core::shard_of(a, shard_count);
        let mut evs = Vec::new();
        let mut start = base_event(mid, 1, EventType::Started, season, a, b, t0);
        start.deadline_at = Some(Timestamp(t0.as_micros() + 30_000_000));
        evs.push(start);
        let kind = rng.below(100);
        let (ga, gb) = (rng.gesture(), rng.gesture());
        let a_first = rng.below(2) == 0;
        let extra = rng.below(3);
        let void = rng.below(100) < 15;
        let jitter: Vec<i64> = (0..6).map(|_| rng.below(900_000) as i64).collect();
        let mut v = 1;
        let mut moved_a = None;
        let mut moved_b = None;
        let push = |evs: &mut Vec<MatchEvent>, v: &mut i32, mut e: MatchEvent| {
            *v += 1;
            e.version = *v;
            e.event_id = MatchEvent::timed_out_event_id(mid, *v + 7_000_000);
            e.occurred_at =
                Timestamp(t0.as_micros() + i64::from(*v) * 1_000_000 + jitter[*v as usize]);
            evs.push(e);
        };
        let moves = match kind {
            0..=54 => 2,
            55..=64 => 1,
            65..=79 => extra,
            _ => extra.min(1),
        };
        for k in 0..moves {
            let mut e = base_event(mid, 0, EventType::Moved, season, a, b, t0);
            if (k == 0) == a_first {
                e.gesture_a = Some(ga);
                moved_a = Some(ga);
            } else {
                e.gesture_b = Some(gb);
                moved_b = Some(gb);
            }
            push(&mut evs, &mut v, e);
        }
        let mut over = false;
        match kind {
            0..=64 => {
                let mut e = base_event(mid, 0, EventType::Finished, season, a, b, t0);
                e.gesture_a = Some(ga);
                e.gesture_b = Some(gb);
                let e = with_result(e, &rps_core::fold::MatchResult::by_gestures(ga, gb, a, b));
                push(&mut evs, &mut v, e);
                over = true;
            }
            65..=79 => {
                let state = MatchState {
                    match_id: mid,
                    version: v,
                    status: MatchStatus::InProgress,
                    season,
                    player_a: a,
                    player_b: b,
                    gesture_a: moved_a,
                    gesture_b: moved_b,
                    result: Default::default(),
                    deadline_at: None,
                    started_at: t0,
                    updated_at: t0,
                };
                let e = base_event(mid, 0, EventType::TimedOut, season, a, b, t0);
                let e = with_result(e, &state.timeout_result());
                push(&mut evs, &mut v, e);
                over = true;
            }
            _ => {}
        }
        if over && void {
            push(
                &mut evs,
                &mut v,
                base_event(mid, 0, EventType::Voided, season, a, b, t0),
            );
        }
        for e in evs {
            timed.push((e.occurred_at.as_micros(), shard, e));
        }
    }
    timed.sort_by_key(|(t, _, e)| (*t, e.match_id, e.version));
    let mut out: BTreeMap<ShardId, Vec<MatchEvent>> = BTreeMap::new();
    for (_, shard, e) in timed {
        out.entry(shard).or_default().push(e);
    }
    out
}

/// One invalid case: the event, the shard table it is written to, and the
/// rejection code it must get. Valid events around it are included too
/// (with `None`) so each case stands in a realistic match.
pub struct Case {
    pub shard: ShardId,
    pub event: MatchEvent,
    pub expect: Option<&'static str>,
}

/// Every invalid case of docs/events.md (validity, bad input) that can be inserted
/// into the table, in matches of their own starting at `first_match_id`.
/// Players are `900_000..` so their counters are easy to check.
pub fn invalid_cases(first_match_id: i64, shard_count: u16) -> Vec<Case> {
    let season: SeasonId = "2026Q4".parse().unwrap();
    let t0 = Timestamp::parse("2026-11-20 12:00:00").unwrap();
    let mut out = Vec::new();
    let mut mid = first_match_id;
    let p = |n: i64| 900_000 + n * i64::from(shard_count); // all route to shard 0
    let mut case = |mid: i64,
                    v: i32,
                    t: EventType,
                    a: i64,
                    b: i64,
                    f: &dyn Fn(&mut MatchEvent),
                    expect: Option<&'static str>| {
        let mut e = base_event(
            mid,
            v,
            t,
            season,
            a,
            b,
            Timestamp(t0.as_micros() + i64::from(v) * 1000),
        );
        e.event_id = MatchEvent::timed_out_event_id(mid, 9_000_000 + out.len() as i32 * 16 + v);
        if t == EventType::Started {
            e.deadline_at = Some(Timestamp(t0.as_micros() + 30_000_000));
        }
        f(&mut e);
        out.push(Case {
            shard: rps_core::shard_of(a, shard_count),
            event: e,
            expect,
        });
    };
    let none = |_: &mut MatchEvent| {};
    let ga = |g: Gesture| move |e: &mut MatchEvent| e.gesture_a = Some(g);
    let gb = |g: Gesture| move |e: &mut MatchEvent| e.gesture_b = Some(g);
    let (a, b) = (p(1), p(2));

    // Version gap: v3 before v2 is rejected; the real v2 still applies.
    case(mid, 1, EventType::Started, a, b, &none, None);
    case(
        mid,
        3,
        EventType::Moved,
        a,
        b,
        &ga(Gesture::Rock),
        Some("version_gap"),
    );
    case(mid, 2, EventType::Moved, a, b, &ga(Gesture::Rock), None);
    mid += 1;
    // Unknown match.
    case(
        mid,
        2,
        EventType::Moved,
        a,
        b,
        &ga(Gesture::Rock),
        Some("unknown_match"),
    );
    mid += 1;
    // (match, version) is unique in the table, so each rejected result
    // stands in a match of its own.
    let fin = |outcome: Outcome, w: i64, l: i64| {
        move |e: &mut MatchEvent| {
            e.gesture_a = Some(Gesture::Rock);
            e.gesture_b = Some(Gesture::Scissors);
            e.outcome = Some(outcome);
            e.winner_player_id = Some(w);
            e.loser_player_id = Some(l);
        }
    };
    // A result contradicting the gestures.
    case(mid, 1, EventType::Started, a, b, &none, None);
    case(mid, 2, EventType::Moved, a, b, &ga(Gesture::Rock), None);
    case(mid, 3, EventType::Moved, a, b, &gb(Gesture::Scissors), None);
    case(
        mid,
        4,
        EventType::Finished,
        a,
        b,
        &fin(Outcome::Lose, b, a),
        Some("result_contradicts_gestures"),
    );
    mid += 1;
    // A result naming a non-player.
    case(mid, 1, EventType::Started, a, b, &none, None);
    case(
        mid,
        2,
        EventType::Finished,
        a,
        b,
        &fin(Outcome::Win, 4242, b),
        Some("non_player"),
    );
    mid += 1;
    // An event after the end.
    case(mid, 1, EventType::Started, a, b, &none, None);
    case(
        mid,
        2,
        EventType::Finished,
        a,
        b,
        &fin(Outcome::Win, a, b),
        None,
    );
    case(
        mid,
        3,
        EventType::Moved,
        a,
        b,
        &gb(Gesture::Paper),
        Some("after_end"),
    );
    mid += 1;
    // Voided of an unfinished match.
    case(mid, 1, EventType::Started, a, b, &none, None);
    case(
        mid,
        2,
        EventType::Voided,
        a,
        b,
        &none,
        Some("void_of_unfinished"),
    );
    mid += 1;
    // Same player on both sides (and what depends on it).
    case(
        mid,
        1,
        EventType::Started,
        p(3),
        p(3),
        &none,
        Some("same_player"),
    );
    case(
        mid,
        2,
        EventType::Moved,
        p(3),
        p(3),
        &ga(Gesture::Paper),
        Some("unknown_match"),
    );
    mid += 1;
    // `moved` with zero and with two gestures.
    case(mid, 1, EventType::Started, a, b, &none, None);
    case(
        mid,
        2,
        EventType::Moved,
        a,
        b,
        &none,
        Some("moved_gesture_count"),
    );
    mid += 1;
    case(mid, 1, EventType::Started, a, b, &none, None);
    case(
        mid,
        2,
        EventType::Moved,
        a,
        b,
        &|e: &mut MatchEvent| {
            e.gesture_a = Some(Gesture::Rock);
            e.gesture_b = Some(Gesture::Rock);
        },
        Some("moved_gesture_count"),
    );
    mid += 1;
    // A player whose only match is voided: on no board, 404.
    case(mid, 1, EventType::Started, p(4), p(5), &none, None);
    case(
        mid,
        2,
        EventType::Finished,
        p(4),
        p(5),
        &|e: &mut MatchEvent| {
            e.gesture_a = Some(Gesture::Paper);
            e.gesture_b = Some(Gesture::Paper);
            e.outcome = Some(Outcome::Draw);
        },
        None,
    );
    case(mid, 3, EventType::Voided, p(4), p(5), &none, None);
    mid += 1;
    // A timeout after one move: the mover wins, the other forfeits; then voided.
    case(mid, 1, EventType::Started, a, p(6), &none, None);
    case(mid, 2, EventType::Moved, a, p(6), &gb(Gesture::Rock), None);
    case(
        mid,
        3,
        EventType::TimedOut,
        a,
        p(6),
        &|e: &mut MatchEvent| {
            e.outcome = Some(Outcome::Lose);
            e.winner_player_id = Some(p(6));
            e.loser_player_id = Some(a);
        },
        None,
    );
    case(mid, 4, EventType::Voided, a, p(6), &none, None);
    mid += 1;
    // A timeout naming the wrong winner.
    case(mid, 1, EventType::Started, a, b, &none, None);
    case(
        mid,
        2,
        EventType::TimedOut,
        a,
        b,
        &|e: &mut MatchEvent| {
            e.outcome = Some(Outcome::Win);
            e.winner_player_id = Some(a);
            e.loser_player_id = Some(b);
        },
        Some("result_contradicts_gestures"),
    );
    let _ = mid;
    out
}

/// Writes events to their shard tables in the given order (one multi-row
/// INSERT per chunk), then reads every shard back with SQL in id order.
pub async fn write_and_read_back(
    env: &TestEnv,
    by_shard: &BTreeMap<ShardId, Vec<MatchEvent>>,
) -> BTreeMap<ShardId, Vec<MatchEvent>> {
    for (shard, events) in by_shard {
        for chunk in events.chunks(500) {
            let appended = env
                .store
                .append_all(*shard, "match_result_events", chunk)
                .await
                .expect("append_all");
            assert_eq!(appended, BatchAppend::Inserted, "append_all");
        }
    }
    read_back(env).await
}

/// Every row of every shard, in primary-key order.
pub async fn read_back(env: &TestEnv) -> BTreeMap<ShardId, Vec<MatchEvent>> {
    env.stored_events().await
}

/// The stream entry cdc-reader would publish for a row.
pub fn stream_event(env: &TestEnv, shard: ShardId, e: &MatchEvent) -> StreamEvent {
    StreamEvent {
        shard,
        event: e.clone(),
        source: SourcePosition {
            server: env.config.server_of(shard).name.clone(),
            database: env.config.database(shard),
            table: "match_result_events".to_string(),
            file: String::new(),
            pos: e.row_id as u64,
            gtid: String::new(),
            commit_ts: e.occurred_at,
        },
    }
}

/// XADDs raw field pairs to a stream, pipelined; returns the entry ids.
pub async fn xadd_raw(
    client: &Client,
    stream: &str,
    entries: &[Vec<(String, String)>],
) -> Vec<String> {
    let mut ids = Vec::with_capacity(entries.len());
    for chunk in entries.chunks(1000) {
        let pipe = client.pipeline();
        for fields in chunk {
            let mut args = vec![stream.to_string(), "*".to_string()];
            for (k, v) in fields {
                args.push(k.clone());
                args.push(v.clone());
            }
            let _: () = pipe
                .custom(
                    CustomCommand::new_static(
                        "XADD",
                        rps_core::redis_client::slot_of(stream),
                        false,
                    ),
                    args,
                )
                .await
                .expect("queue xadd");
        }
        let got: Vec<String> = pipe.all().await.expect("xadd");
        ids.extend(got);
    }
    ids
}

/// Publishes events of one shard; returns `(stream id, event)` in order.
pub async fn publish(
    env: &TestEnv,
    client: &Client,
    shard: ShardId,
    events: &[MatchEvent],
) -> Vec<(String, StreamEvent)> {
    let keys = env.config.keys();
    let ses: Vec<StreamEvent> = events.iter().map(|e| stream_event(env, shard, e)).collect();
    let raw: Vec<Vec<(String, String)>> = ses
        .iter()
        .map(|s| {
            s.to_pairs()
                .into_iter()
                .map(|(k, v)| (k.to_string(), v))
                .collect()
        })
        .collect();
    let ids = xadd_raw(client, &keys.events(shard), &raw).await;
    ids.into_iter().zip(ses).collect()
}

/// The independent fold: what the read models must hold.
#[derive(Debug, Default)]
pub struct Expected {
    pub stats: HashMap<(i64, Option<SeasonId>), PlayerStats>,
    pub matches: HashMap<i64, MatchState>,
    pub deadlines: HashMap<String, i64>,
    /// `(stream id, code)` of every rejected entry.
    pub rejected: Vec<(String, String)>,
    pub last_ids: HashMap<ShardId, String>,
    pub shard_count: u16,
}

/// Folds `(stream id, event)` per shard in order with `rps_core::fold::apply`.
pub fn fold_all(
    published: &BTreeMap<ShardId, Vec<(String, StreamEvent)>>,
    shard_count: u16,
) -> Expected {
    let mut x = Expected {
        shard_count,
        ..Default::default()
    };
    for (shard, entries) in published {
        let mut states: HashMap<i64, MatchState> = HashMap::new();
        for (id, se) in entries {
            x.last_ids.insert(*shard, id.clone());
            let ev = &se.event;
            if rps_core::shard_of(ev.player_a_id, shard_count) != *shard {
                x.rejected.push((id.clone(), "wrong_shard".into()));
                continue;
            }
            match rps_core::fold::apply(states.get(&ev.match_id), ev) {
                Ok(t) => {
                    for d in &t.effects {
                        x.stats
                            .entry((d.player_id, None))
                            .or_default()
                            .add(&d.delta);
                        x.stats
                            .entry((d.player_id, Some(d.season)))
                            .or_default()
                            .add(&d.delta);
                    }
                    let member = deadline_member(*shard, ev.match_id);
                    match t.deadline {
                        DeadlineChange::Set(at) => {
                            x.deadlines.insert(member, at.as_millis());
                        }
                        DeadlineChange::Clear => {
                            x.deadlines.remove(&member);
                        }
                        DeadlineChange::Unchanged => {}
                    }
                    states.insert(ev.match_id, t.state);
                }
                Err(r) => x.rejected.push((id.clone(), r.code().into())),
            }
        }
        x.matches.extend(states);
    }
    x.stats.retain(|_, s| !s.is_zero());
    x
}

/// Asserts the generation's read models equal the expected fold: every
/// player counter, every board's order and scores, every match state, the
/// deadline set and the matches per lifecycle state.
pub async fn assert_matches_fold(client: &Client, gk: &GenerationKeys, x: &Expected) {
    // Every scope's counters, one read each.
    let mut scopes: HashSet<Option<SeasonId>> = x.stats.keys().map(|k| k.1).collect();
    scopes.insert(None);
    for scope in &scopes {
        let actual = read_model::read::scope_counters(client, gk, *scope)
            .await
            .unwrap();
        let expected: HashMap<i64, PlayerStats> = x
            .stats
            .iter()
            .filter(|((_, s), st)| s == scope && st.matches > 0)
            .map(|((p, _), st)| (*p, *st))
            .collect();
        assert_eq!(actual, expected, "counters of scope {scope:?}");
    }
    // Boards: exactly the players with a counted match, in rank order.
    for scope in scopes {
        let mut expected: Vec<(i64, PlayerStats)> = x
            .stats
            .iter()
            .filter(|(k, _)| k.1 == scope)
            .map(|(k, s)| (k.0, *s))
            .collect();
        expected.sort_by_key(|(id, s)| (-s.points(), s.matches, *id));
        // The merge of the partitions, as the API serves it; a member in
        // the wrong partition would find no counters there and drop out.
        let got: Vec<(i64, u64, PlayerStats)> =
            read_model::read::leaderboard(client, gk, scope, 0, expected.len() as u64 + 10)
                .await
                .unwrap()
                .into_iter()
                .map(|e| (e.player_id, e.rank, e.stats))
                .collect();
        let want: Vec<(i64, u64, PlayerStats)> = expected
            .iter()
            .enumerate()
            .map(|(i, (id, s))| (*id, i as u64 + 1, *s))
            .collect();
        assert_eq!(got.len(), want.len(), "size of board {:?}", scope);
        assert_eq!(got, want, "board {:?}", scope);
    }
    // Match states.
    let mut by_shard: BTreeMap<ShardId, Vec<i64>> = BTreeMap::new();
    for (mid, m) in &x.matches {
        by_shard
            .entry(rps_core::shard_of(m.player_a, x.shard_count))
            .or_default()
            .push(*mid);
    }
    for (shard, mids) in &by_shard {
        let rows = read_model::read::match_states(client, gk, *shard, mids)
            .await
            .unwrap();
        for (mid, got) in mids.iter().zip(rows) {
            let got = got.unwrap_or_else(|| panic!("match {mid} missing or malformed"));
            assert_eq!(&got, &x.matches[mid], "match {mid}");
        }
    }
    // Deadlines.
    let mut got: HashMap<String, i64> = HashMap::new();
    for shard in 0..x.shard_count {
        let d: Vec<(String, f64)> = client
            .zrange(gk.deadlines(shard), 0, -1, None, false, None, true)
            .await
            .unwrap();
        got.extend(d.into_iter().map(|(m, s)| (m, s as i64)));
    }
    assert_eq!(got, x.deadlines, "deadline set");
    // Matches per lifecycle state, counted from the expected states.
    let mut want = read_model::lifecycle::MatchCounts::default();
    for m in x.matches.values() {
        want.moved(None, m.status);
    }
    let got = read_model::read::match_counts(client, gk, x.shard_count)
        .await
        .unwrap();
    assert_eq!(got, want, "matches per lifecycle state");
}

/// Stream id of the last applied entry of every shard (of `shard_count`),
/// with the progress bookkeeping beside it.
pub async fn progress_of(
    client: &Client,
    gk: &GenerationKeys,
    shard_count: u16,
) -> HashMap<String, String> {
    read_model::generation::progress_hash(client, gk, shard_count)
        .await
        .unwrap()
}

/// Waits until every shard's progress reached its last published id.
pub async fn wait_caught_up(
    client: &Client,
    gk: &GenerationKeys,
    last: &HashMap<ShardId, String>,
    timeout: std::time::Duration,
) {
    test_support::eventually(
        "projector to catch up with every shard",
        timeout,
        || async {
            let shards = last.keys().max().map_or(0, |s| s + 1);
            let p = progress_of(client, gk, shards).await;
            last.iter()
                .all(|(shard, id)| p.get(&shard.to_string()) == Some(id))
                .then_some(())
        },
    )
    .await;
}

/// Dead letters as `(stream_id, kind, reason, event id, db, table)`.
pub async fn dead_letters(client: &Client, key: &str) -> Vec<HashMap<String, String>> {
    let v: Value = client
        .custom(
            CustomCommand::new_static("XRANGE", rps_core::redis_client::slot_of(key), false),
            vec![key.to_string(), "-".to_string(), "+".to_string()],
        )
        .await
        .unwrap();
    v.into_array()
        .into_iter()
        .map(|e| {
            let fields = e.into_array().into_iter().nth(1).unwrap_or(Value::Null);
            hash_pairs(fields).unwrap_or_default().into_iter().collect()
        })
        .collect()
}
