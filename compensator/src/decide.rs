//! The decision for one claimed deadline, from the match's stored events.
//!
//! Pure: given every row of the match read from the event store (the source
//! of truth; the read model may lag) and the current time, answer whether the
//! match is already over, not due yet, or must be closed by the `timed_out`
//! event built here. No I/O, so the three result cases and the edge cases are
//! tested without servers.

use rps_core::fold::{apply, MatchState};
use rps_core::{EventType, MatchEvent, Timestamp};

/// What to do with a claimed deadline.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    /// The match has a result (or was voided): nothing to write.
    Over(MatchState),
    /// The stored deadline is still ahead (the read model's score was early):
    /// look again at this time.
    NotDue(Timestamp),
    /// Append this `timed_out` event.
    Fire(MatchEvent),
    /// No valid `started` event for the match in the event store.
    Unknown,
}

/// Folds `events` (any order; invalid ones are skipped as the projector
/// skips them) and decides. `now` becomes the event's `occurred_at`.
pub fn decide(events: &[MatchEvent], now: Timestamp) -> Decision {
    let mut sorted: Vec<&MatchEvent> = events.iter().collect();
    sorted.sort_by_key(|e| (e.version, e.row_id));
    let mut state: Option<MatchState> = None;
    for ev in sorted {
        if let Ok(t) = apply(state.as_ref(), ev) {
            state = Some(t.state);
        }
    }
    let Some(state) = state else {
        return Decision::Unknown;
    };
    if state.status.is_over() {
        return Decision::Over(state);
    }
    match state.deadline_at {
        Some(d) if d > now => return Decision::NotDue(d),
        _ => {}
    }
    Decision::Fire(timed_out_event(&state, now))
}

/// The `timed_out` event that closes `state`, as docs/events.md says.
pub fn timed_out_event(state: &MatchState, now: Timestamp) -> MatchEvent {
    let result = state.timeout_result();
    let version = state.version + 1;
    MatchEvent {
        row_id: 0,
        event_id: MatchEvent::timed_out_event_id(state.match_id, version),
        match_id: state.match_id,
        version,
        event_type: EventType::TimedOut,
        season_id: state.season,
        player_a_id: state.player_a,
        player_b_id: state.player_b,
        gesture_a: state.gesture_a,
        gesture_b: state.gesture_b,
        winner_player_id: result.winner,
        loser_player_id: result.loser,
        outcome: result.outcome,
        deadline_at: None,
        occurred_at: now,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rps_core::fold::MatchStatus;
    use rps_core::{Gesture, Outcome};
    use uuid::Uuid;

    const START: i64 = 1_795_000_000_000_000;

    fn ev(version: i32, t: EventType) -> MatchEvent {
        MatchEvent {
            row_id: i64::from(version),
            deadline_at: (t == EventType::Started).then_some(Timestamp(START + 30_000_000)),
            ..MatchEvent::new(
                Uuid::new_v4(),
                77,
                version,
                t,
                "2026Q4".parse().unwrap(),
                (10, 20),
                Timestamp(START + i64::from(version)),
            )
        }
    }

    fn moved(version: i32, a: Option<Gesture>, b: Option<Gesture>) -> MatchEvent {
        MatchEvent {
            gesture_a: a,
            gesture_b: b,
            ..ev(version, EventType::Moved)
        }
    }

    fn after_deadline() -> Timestamp {
        Timestamp(START + 30_000_001)
    }

    fn fire(events: &[MatchEvent]) -> MatchEvent {
        match decide(events, after_deadline()) {
            Decision::Fire(e) => e,
            other => panic!("expected Fire, got {other:?}"),
        }
    }

    /// The built event must itself be valid for the fold.
    fn assert_valid(events: &[MatchEvent], t: &MatchEvent) -> MatchState {
        let mut s: Option<MatchState> = None;
        for e in events.iter().chain([t]) {
            s = Some(apply(s.as_ref(), e).unwrap().state);
        }
        let s = s.unwrap();
        assert_eq!(s.status, MatchStatus::TimedOut);
        s
    }

    #[test]
    fn neither_moved_both_forfeit_no_winner() {
        let evs = vec![ev(1, EventType::Started)];
        let t = fire(&evs);
        assert_eq!(t.version, 2);
        assert_eq!(t.event_type, EventType::TimedOut);
        assert_eq!((t.winner_player_id, t.loser_player_id), (None, None));
        assert_eq!(t.outcome, None);
        assert_eq!(t.event_id, MatchEvent::timed_out_event_id(77, 2));
        let s = assert_valid(&evs, &t);
        assert!(s.result.forfeit_a && s.result.forfeit_b);
    }

    #[test]
    fn one_moved_that_one_wins_other_forfeits() {
        let evs = vec![
            ev(1, EventType::Started),
            moved(2, None, Some(Gesture::Rock)),
        ];
        let t = fire(&evs);
        assert_eq!(t.version, 3);
        assert_eq!(
            (t.winner_player_id, t.loser_player_id),
            (Some(20), Some(10))
        );
        assert_eq!(t.outcome, Some(Outcome::Lose));
        let s = assert_valid(&evs, &t);
        assert!(s.result.forfeit_a && !s.result.forfeit_b);
    }

    #[test]
    fn both_moved_gestures_decide_nobody_forfeits() {
        let evs = vec![
            ev(1, EventType::Started),
            moved(2, Some(Gesture::Scissors), None),
            moved(3, None, Some(Gesture::Paper)),
        ];
        let t = fire(&evs);
        assert_eq!(t.version, 4);
        assert_eq!(
            (t.winner_player_id, t.loser_player_id),
            (Some(10), Some(20))
        );
        assert_eq!(t.outcome, Some(Outcome::Win));
        let s = assert_valid(&evs, &t);
        assert!(!s.result.forfeit_a && !s.result.forfeit_b);
    }

    #[test]
    fn finished_match_is_over_whatever_the_order_of_rows() {
        let mut fin = ev(4, EventType::Finished);
        fin.gesture_a = Some(Gesture::Rock);
        fin.gesture_b = Some(Gesture::Rock);
        fin.outcome = Some(Outcome::Draw);
        let evs = vec![
            fin,
            moved(3, None, Some(Gesture::Rock)),
            ev(1, EventType::Started),
            moved(2, Some(Gesture::Rock), None),
        ];
        match decide(&evs, after_deadline()) {
            Decision::Over(s) => assert_eq!(s.status, MatchStatus::Finished),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn invalid_rows_do_not_advance_the_match() {
        // Version 3 is missing, so the `finished` at 4 is a gap: the match
        // is still open at version 2 and the timeout takes version 3.
        let mut fin = ev(4, EventType::Finished);
        fin.gesture_a = Some(Gesture::Rock);
        fin.gesture_b = Some(Gesture::Paper);
        fin.outcome = Some(Outcome::Lose);
        fin.winner_player_id = Some(20);
        fin.loser_player_id = Some(10);
        let evs = vec![
            ev(1, EventType::Started),
            moved(2, Some(Gesture::Rock), None),
            fin,
        ];
        let t = fire(&evs);
        assert_eq!(t.version, 3);
        assert_eq!(t.winner_player_id, Some(10));
    }

    #[test]
    fn not_due_and_unknown() {
        let evs = vec![ev(1, EventType::Started)];
        assert_eq!(
            decide(&evs, Timestamp(START + 1)),
            Decision::NotDue(Timestamp(START + 30_000_000))
        );
        assert_eq!(decide(&[], after_deadline()), Decision::Unknown);
        assert_eq!(
            decide(&[moved(2, Some(Gesture::Rock), None)], after_deadline()),
            Decision::Unknown
        );
    }
}
