use super::*;
use crate::event::{EventType::*, Gesture::*};
use uuid::Uuid;

const A: i64 = 10;
const B: i64 = 21;

fn ev(version: i32, t: EventType) -> MatchEvent {
    MatchEvent {
        row_id: version as i64,
        ..MatchEvent::new(
            Uuid::new_v4(),
            7,
            version,
            t,
            "2026Q4".parse().unwrap(),
            (A, B),
            Timestamp(1_000_000 * version as i64),
        )
    }
}

fn started() -> MatchEvent {
    MatchEvent {
        deadline_at: Some(Timestamp(31_000_000)),
        ..ev(1, Started)
    }
}

fn moved(version: i32, a: Option<Gesture>, b: Option<Gesture>) -> MatchEvent {
    MatchEvent {
        gesture_a: a,
        gesture_b: b,
        ..ev(version, Moved)
    }
}

fn fold_all(events: &[MatchEvent]) -> Result<(MatchState, Vec<StatsDelta>), (usize, Rejection)> {
    let mut state: Option<MatchState> = None;
    let mut effects = Vec::new();
    for (i, e) in events.iter().enumerate() {
        let t = apply(state.as_ref(), e).map_err(|r| (i, r))?;
        effects.extend(t.effects);
        state = Some(t.state);
    }
    Ok((state.unwrap(), effects))
}

fn totals(effects: &[StatsDelta], player: i64) -> PlayerStats {
    let mut s = PlayerStats::default();
    for e in effects.iter().filter(|e| e.player_id == player) {
        s.add(&e.delta);
    }
    s
}

#[test]
fn full_match_scores_winner_and_loser() {
    let finished = MatchEvent {
        gesture_a: Some(Rock),
        gesture_b: Some(Scissors),
        outcome: Some(Outcome::Win),
        winner_player_id: Some(A),
        loser_player_id: Some(B),
        ..ev(4, Finished)
    };
    let (state, effects) = fold_all(&[
        started(),
        moved(2, None, Some(Scissors)),
        moved(3, Some(Rock), None),
        finished,
    ])
    .unwrap();
    assert_eq!(state.status, MatchStatus::Finished);
    assert_eq!(state.version, 4);
    let a = totals(&effects, A);
    let b = totals(&effects, B);
    assert_eq!((a.matches, a.wins, a.points()), (1, 1, 3));
    assert_eq!((b.matches, b.losses, b.forfeits, b.points()), (1, 1, 0, 0));
}

#[test]
fn draw_gives_a_point_each() {
    let finished = MatchEvent {
        gesture_a: Some(Paper),
        gesture_b: Some(Paper),
        outcome: Some(Outcome::Draw),
        ..ev(2, Finished)
    };
    let (_, effects) = fold_all(&[started(), finished]).unwrap();
    assert_eq!(totals(&effects, A).draws, 1);
    assert_eq!(totals(&effects, B).points(), 1);
}

#[test]
fn timeouts_in_all_three_cases() {
    // Neither moved: both forfeit, nobody wins.
    let t = MatchEvent { ..ev(2, TimedOut) };
    let (state, effects) = fold_all(&[started(), t]).unwrap();
    assert_eq!(state.status, MatchStatus::TimedOut);
    for p in [A, B] {
        let s = totals(&effects, p);
        assert_eq!((s.matches, s.losses, s.forfeits, s.wins), (1, 1, 1, 0));
    }

    // B moved: B wins, A forfeits.
    let t = MatchEvent {
        outcome: Some(Outcome::Lose),
        winner_player_id: Some(B),
        loser_player_id: Some(A),
        ..ev(3, TimedOut)
    };
    let (_, effects) = fold_all(&[started(), moved(2, None, Some(Rock)), t]).unwrap();
    assert_eq!(totals(&effects, B).wins, 1);
    assert_eq!(totals(&effects, A).forfeits, 1);
    assert_eq!(totals(&effects, B).forfeits, 0);

    // Both moved: the gestures decide, no forfeit.
    let t = MatchEvent {
        gesture_a: Some(Rock),
        gesture_b: Some(Paper),
        outcome: Some(Outcome::Lose),
        winner_player_id: Some(B),
        loser_player_id: Some(A),
        ..ev(4, TimedOut)
    };
    let (_, effects) = fold_all(&[
        started(),
        moved(2, None, Some(Paper)),
        moved(3, Some(Rock), None),
        t,
    ])
    .unwrap();
    assert_eq!(totals(&effects, A).forfeits, 0);
    assert_eq!(totals(&effects, A).losses, 1);
    assert_eq!(totals(&effects, B).wins, 1);
}

#[test]
fn void_reverses_exactly_including_forfeits() {
    let t = ev(2, TimedOut);
    let (state, effects) = fold_all(&[started(), t, ev(3, Voided)]).unwrap();
    assert_eq!(state.status, MatchStatus::Voided);
    assert!(totals(&effects, A).is_zero());
    assert!(totals(&effects, B).is_zero());
    assert!(state.counted_effects().is_empty());
}

#[test]
fn rejections() {
    let cases: Vec<(Vec<MatchEvent>, &str)> = vec![
        (vec![ev(2, Moved)], "unknown_match"),
        (vec![started(), moved(3, Some(Rock), None)], "version_gap"),
        (vec![started(), started()], "version_repeat"),
        (vec![started(), moved(2, None, None)], "moved_gesture_count"),
        (
            vec![started(), moved(2, Some(Rock), Some(Rock))],
            "moved_gesture_count",
        ),
        (
            vec![
                started(),
                moved(2, Some(Rock), None),
                moved(3, Some(Paper), None),
            ],
            "moved_twice",
        ),
        (vec![started(), ev(2, Voided)], "void_of_unfinished"),
        (
            vec![MatchEvent {
                player_b_id: A,
                ..started()
            }],
            "same_player",
        ),
        (vec![ev(1, Started)], "missing_deadline"),
        (
            vec![
                started(),
                MatchEvent {
                    gesture_a: Some(Rock),
                    gesture_b: Some(Scissors),
                    outcome: Some(Outcome::Lose),
                    winner_player_id: Some(B),
                    loser_player_id: Some(A),
                    ..ev(2, Finished)
                },
            ],
            "result_contradicts_gestures",
        ),
        (
            vec![
                started(),
                MatchEvent {
                    gesture_a: Some(Rock),
                    gesture_b: Some(Scissors),
                    outcome: Some(Outcome::Win),
                    winner_player_id: Some(99),
                    loser_player_id: Some(B),
                    ..ev(2, Finished)
                },
            ],
            "non_player",
        ),
        (
            vec![
                started(),
                moved(2, Some(Paper), None),
                MatchEvent {
                    gesture_a: Some(Rock),
                    gesture_b: Some(Scissors),
                    outcome: Some(Outcome::Win),
                    winner_player_id: Some(A),
                    loser_player_id: Some(B),
                    ..ev(3, Finished)
                },
            ],
            "gesture_contradicts_move",
        ),
        (
            vec![started(), ev(2, TimedOut), moved(3, Some(Rock), None)],
            "after_end",
        ),
        (
            vec![started(), ev(2, TimedOut), ev(3, Voided), ev(4, Voided)],
            "after_end",
        ),
        (
            vec![
                started(),
                MatchEvent {
                    player_b_id: 99,
                    ..moved(2, Some(Rock), None)
                },
            ],
            "players_changed",
        ),
    ];
    for (events, code) in cases {
        let err = fold_all(&events).unwrap_err();
        assert_eq!(err.0, events.len() - 1, "{code}: rejected the wrong event");
        assert_eq!(err.1.code(), code, "{}", err.1);
    }
}

#[test]
fn rejected_event_does_not_advance_the_match() {
    let s = apply(None, &started()).unwrap().state;
    assert!(apply(Some(&s), &moved(2, None, None)).is_err());
    // The next event that depended on the rejected one is a gap.
    let err = apply(Some(&s), &moved(3, Some(Rock), None)).unwrap_err();
    assert_eq!(err.code(), "version_gap");
    assert_eq!(s.version, 1);
}

#[test]
fn board_score_orders_points_then_fewer_matches() {
    let strong = PlayerStats {
        matches: 3,
        wins: 2,
        losses: 1,
        ..Default::default()
    };
    let efficient = PlayerStats {
        matches: 2,
        wins: 2,
        ..Default::default()
    };
    let weak = PlayerStats {
        matches: 1,
        draws: 1,
        ..Default::default()
    };
    assert!(efficient.board_score() < strong.board_score());
    assert!(strong.board_score() < weak.board_score());
    // Linear: the score of a sum is the sum of the scores.
    let mut sum = strong;
    sum.add(&weak);
    assert_eq!(sum.board_score(), strong.board_score() + weak.board_score());
}

#[test]
fn match_state_hash_round_trip() {
    let t = MatchEvent {
        outcome: Some(Outcome::Lose),
        winner_player_id: Some(B),
        loser_player_id: Some(A),
        ..ev(3, TimedOut)
    };
    let (state, _) = fold_all(&[started(), moved(2, None, Some(Rock)), t]).unwrap();
    assert_eq!(
        MatchState::from_value(&state.to_value()).as_ref(),
        Some(&state)
    );
    assert_eq!(MatchState::from_value("1|2|3"), None);
    assert_eq!(
        MatchState::from_value(&state.to_value().replacen('1', "9", 1)),
        None
    );
    let pairs = state.to_pairs();
    let back = MatchState::from_pairs(pairs.iter().map(|(k, v)| (*k, v.as_str()))).unwrap();
    assert_eq!(back, state);
    assert!(MatchState::from_pairs([("status", "finished")]).is_none());
}
