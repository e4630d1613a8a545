//! The per-match state machine: which events are valid and what they do.
//!
//! This is docs/events.md (validity, results and scoring) as code, shared
//! by everything that folds events: the live projector, replay, verify and
//! the compensator (which asks [`MatchState::timeout_result`] what a
//! `timed_out` must say). It is pure:
//! given the match so far and the next event it answers either the new state
//! with its score effects, or a [`Rejection`] that changes nothing.

use crate::event::{EventType, Gesture, MatchEvent, Outcome, SeasonId};
use crate::time::Timestamp;
use std::fmt;

/// Where a match stands after its last valid event.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum MatchStatus {
    InProgress,
    Finished,
    TimedOut,
    Voided,
}

impl MatchStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            MatchStatus::InProgress => "in_progress",
            MatchStatus::Finished => "finished",
            MatchStatus::TimedOut => "timed_out",
            MatchStatus::Voided => "voided",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "in_progress" => MatchStatus::InProgress,
            "finished" => MatchStatus::Finished,
            "timed_out" => MatchStatus::TimedOut,
            "voided" => MatchStatus::Voided,
            _ => return None,
        })
    }

    /// Whether the match has a result (that counts, or counted before a void).
    pub fn is_over(self) -> bool {
        !matches!(self, MatchStatus::InProgress)
    }
}

/// A match's result as it is scored.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct MatchResult {
    /// From A's side; `None` when neither player moved before the timeout.
    pub outcome: Option<Outcome>,
    pub winner: Option<i64>,
    pub loser: Option<i64>,
    /// A lost by forfeit (timeout without a move).
    pub forfeit_a: bool,
    /// B lost by forfeit.
    pub forfeit_b: bool,
}

/// The fold of a match's valid events.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MatchState {
    pub match_id: i64,
    pub version: i32,
    pub status: MatchStatus,
    pub season: SeasonId,
    pub player_a: i64,
    pub player_b: i64,
    pub gesture_a: Option<Gesture>,
    pub gesture_b: Option<Gesture>,
    pub result: MatchResult,
    pub deadline_at: Option<Timestamp>,
    pub started_at: Timestamp,
    /// `occurred_at` of the last valid event.
    pub updated_at: Timestamp,
}

/// Counters of one player in one scope (all-time or one season).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Hash)]
pub struct PlayerStats {
    pub matches: i64,
    pub wins: i64,
    pub draws: i64,
    pub losses: i64,
    /// Losses by timeout; also counted in `losses`.
    pub forfeits: i64,
}

/// Ranks are encoded in one sorted-set score so Redis orders a board by
/// itself: points descending, then matches ascending, then (by member, which
/// is the zero-padded player id) the lower id. Boards are read in ascending
/// score order. Points are scaled above the largest match count a player can
/// reach; both stay below 2^53, so the score is an exact integer in an f64
/// and the encoding is linear (deltas can be added with ZINCRBY).
pub const POINTS_SCALE: i64 = 1 << 26;

impl PlayerStats {
    pub fn points(&self) -> i64 {
        3 * self.wins + self.draws
    }

    pub fn board_score(&self) -> i64 {
        -self.points() * POINTS_SCALE + self.matches
    }

    pub fn is_zero(&self) -> bool {
        *self == PlayerStats::default()
    }

    pub fn add(&mut self, d: &PlayerStats) {
        self.matches += d.matches;
        self.wins += d.wins;
        self.draws += d.draws;
        self.losses += d.losses;
        self.forfeits += d.forfeits;
    }

    pub fn negated(&self) -> PlayerStats {
        PlayerStats {
            matches: -self.matches,
            wins: -self.wins,
            draws: -self.draws,
            losses: -self.losses,
            forfeits: -self.forfeits,
        }
    }

    /// The counters that are stored: wins, draws, losses, forfeits.
    /// `matches` is not: every counted match is exactly one win, draw or
    /// loss (a forfeit is also a loss), so it is their sum.
    pub fn stored_values(&self) -> [i64; 4] {
        [self.wins, self.draws, self.losses, self.forfeits]
    }

    /// Counters from the stored values, in [`PlayerStats::stored_values`]
    /// order; an absent value is 0.
    pub fn from_stored(v: &[Option<i64>]) -> Self {
        let at = |i: usize| v.get(i).copied().flatten().unwrap_or(0);
        PlayerStats {
            matches: at(0) + at(1) + at(2),
            wins: at(0),
            draws: at(1),
            losses: at(2),
            forfeits: at(3),
        }
    }
}

/// A change to one player's counters, applied to both the all-time and the
/// match's season scope.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StatsDelta {
    pub player_id: i64,
    pub season: SeasonId,
    pub delta: PlayerStats,
}

/// What happens to the match's saga deadline.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DeadlineChange {
    Unchanged,
    Set(Timestamp),
    Clear,
}

/// The effect of one valid event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Transition {
    pub state: MatchState,
    /// Zero (start, move) or two (a result or its reversal) entries.
    pub effects: Vec<StatsDelta>,
    pub deadline: DeadlineChange,
}

/// Why an event does not fit its match. It changes nothing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Rejection {
    VersionGap {
        last: i32,
        got: i32,
    },
    VersionRepeat {
        last: i32,
        got: i32,
    },
    UnknownMatch {
        version: i32,
    },
    AfterEnd {
        status: MatchStatus,
        event_type: EventType,
    },
    VoidOfUnfinished,
    SamePlayer {
        player: i64,
    },
    MovedGestureCount {
        count: usize,
    },
    MovedTwice {
        player: i64,
    },
    PlayersChanged,
    SeasonChanged,
    MissingDeadline,
    UnexpectedColumn {
        column: &'static str,
    },
    MissingGesture {
        column: &'static str,
    },
    GestureContradictsMove {
        column: &'static str,
    },
    ResultContradictsGestures {
        expected: String,
        got: String,
    },
    NonPlayer {
        column: &'static str,
        player: i64,
    },
    WrongShard {
        expected: u16,
        got: u16,
    },
}

impl Rejection {
    /// A stable, low-cardinality code for metrics labels and scripts.
    pub fn code(&self) -> &'static str {
        match self {
            Rejection::VersionGap { .. } => "version_gap",
            Rejection::VersionRepeat { .. } => "version_repeat",
            Rejection::UnknownMatch { .. } => "unknown_match",
            Rejection::AfterEnd { .. } => "after_end",
            Rejection::VoidOfUnfinished => "void_of_unfinished",
            Rejection::SamePlayer { .. } => "same_player",
            Rejection::MovedGestureCount { .. } => "moved_gesture_count",
            Rejection::MovedTwice { .. } => "moved_twice",
            Rejection::PlayersChanged => "players_changed",
            Rejection::SeasonChanged => "season_changed",
            Rejection::MissingDeadline => "missing_deadline",
            Rejection::UnexpectedColumn { .. } => "unexpected_column",
            Rejection::MissingGesture { .. } => "missing_gesture",
            Rejection::GestureContradictsMove { .. } => "gesture_contradicts_move",
            Rejection::ResultContradictsGestures { .. } => "result_contradicts_gestures",
            Rejection::NonPlayer { .. } => "non_player",
            Rejection::WrongShard { .. } => "wrong_shard",
        }
    }
}

impl fmt::Display for Rejection {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Rejection::VersionGap { last, got } => write!(
                f,
                "version gap: match is at version {last}, event has version {got} (expected {})",
                last + 1
            ),
            Rejection::VersionRepeat { last, got } => write!(
                f,
                "version repeat: match is already at version {last}, event has version {got}"
            ),
            Rejection::UnknownMatch { version } => write!(
                f,
                "unknown match: version {version} for a match with no valid `started` event"
            ),
            Rejection::AfterEnd { status, event_type } => write!(
                f,
                "event after the end: `{event_type}` for a match that is already {}",
                status.as_str()
            ),
            Rejection::VoidOfUnfinished => {
                write!(f, "`voided` of a match that has no result to void")
            }
            Rejection::SamePlayer { player } => {
                write!(f, "player {player} is on both sides of the match")
            }
            Rejection::MovedGestureCount { count } => write!(
                f,
                "`moved` must carry exactly one gesture, this one carries {count}"
            ),
            Rejection::MovedTwice { player } => {
                write!(f, "player {player} has already committed a gesture")
            }
            Rejection::PlayersChanged => {
                write!(f, "players differ from the ones the match started with")
            }
            Rejection::SeasonChanged => {
                write!(f, "season differs from the one the match started in")
            }
            Rejection::MissingDeadline => write!(f, "`started` without `deadline_at`"),
            Rejection::UnexpectedColumn { column } => {
                write!(f, "column `{column}` must be NULL for this event type")
            }
            Rejection::MissingGesture { column } => {
                write!(f, "column `{column}` is required for this event type")
            }
            Rejection::GestureContradictsMove { column } => write!(
                f,
                "`{column}` contradicts the gesture the player committed earlier"
            ),
            Rejection::ResultContradictsGestures { expected, got } => write!(
                f,
                "result contradicts the gestures: expected {expected}, event says {got}"
            ),
            Rejection::NonPlayer { column, player } => {
                write!(
                    f,
                    "`{column}` names {player}, who is not a player of the match"
                )
            }
            Rejection::WrongShard { expected, got } => write!(
                f,
                "event is in shard {got} but its challenger routes to shard {expected}"
            ),
        }
    }
}

fn describe(outcome: Option<Outcome>, winner: Option<i64>, loser: Option<i64>) -> String {
    fn opt<T: fmt::Display>(v: Option<T>) -> String {
        v.map_or_else(|| "NULL".to_string(), |v| v.to_string())
    }
    format!(
        "outcome={} winner={} loser={}",
        opt(outcome),
        opt(winner),
        opt(loser)
    )
}

impl MatchResult {
    /// The result decided by both gestures (a `finished`, or a timeout after both moved).
    pub fn by_gestures(a: Gesture, b: Gesture, player_a: i64, player_b: i64) -> Self {
        let outcome = Gesture::duel(a, b);
        let (winner, loser) = match outcome {
            Outcome::Win => (Some(player_a), Some(player_b)),
            Outcome::Lose => (Some(player_b), Some(player_a)),
            Outcome::Draw => (None, None),
        };
        MatchResult {
            outcome: Some(outcome),
            winner,
            loser,
            forfeit_a: false,
            forfeit_b: false,
        }
    }

    /// The counters this result adds to each player: `[A, B]`.
    pub fn effects(&self, player_a: i64, player_b: i64) -> [(i64, PlayerStats); 2] {
        let mut a = PlayerStats {
            matches: 1,
            ..Default::default()
        };
        let mut b = a;
        let score = |p: &mut PlayerStats, id: i64, forfeit: bool| {
            if self.winner == Some(id) {
                p.wins = 1;
            } else if self.loser == Some(id) || forfeit {
                p.losses = 1;
            } else {
                p.draws = 1;
            }
            if forfeit {
                p.forfeits = 1;
            }
        };
        score(&mut a, player_a, self.forfeit_a);
        score(&mut b, player_b, self.forfeit_b);
        [(player_a, a), (player_b, b)]
    }
}

impl MatchState {
    /// What a `timed_out` must say for this match (docs/events.md):
    /// one player moved, that player wins and the other forfeits; neither
    /// moved, nobody wins and both forfeit; both moved, the gestures decide.
    pub fn timeout_result(&self) -> MatchResult {
        match (self.gesture_a, self.gesture_b) {
            (Some(a), Some(b)) => MatchResult::by_gestures(a, b, self.player_a, self.player_b),
            (Some(_), None) => MatchResult {
                outcome: Some(Outcome::Win),
                winner: Some(self.player_a),
                loser: Some(self.player_b),
                forfeit_a: false,
                forfeit_b: true,
            },
            (None, Some(_)) => MatchResult {
                outcome: Some(Outcome::Lose),
                winner: Some(self.player_b),
                loser: Some(self.player_a),
                forfeit_a: true,
                forfeit_b: false,
            },
            (None, None) => MatchResult {
                outcome: None,
                winner: None,
                loser: None,
                forfeit_a: true,
                forfeit_b: true,
            },
        }
    }

    fn effects(&self, sign: i64) -> Vec<StatsDelta> {
        self.result
            .effects(self.player_a, self.player_b)
            .into_iter()
            .map(|(player_id, d)| StatsDelta {
                player_id,
                season: self.season,
                delta: if sign < 0 { d.negated() } else { d },
            })
            .collect()
    }

    /// The counters this match currently contributes (zero unless it is
    /// finished or timed out; a voided match contributes nothing).
    pub fn counted_effects(&self) -> Vec<StatsDelta> {
        match self.status {
            MatchStatus::Finished | MatchStatus::TimedOut => self.effects(1),
            _ => Vec::new(),
        }
    }
}

/// Folds one event into its match. `state` is `None` for a match with no
/// valid event yet.
pub fn apply(state: Option<&MatchState>, ev: &MatchEvent) -> Result<Transition, Rejection> {
    let Some(prev) = state else {
        if ev.version != 1 || ev.event_type != EventType::Started {
            return Err(Rejection::UnknownMatch {
                version: ev.version,
            });
        }
        return start(ev);
    };
    if ev.version <= prev.version {
        return Err(Rejection::VersionRepeat {
            last: prev.version,
            got: ev.version,
        });
    }
    if ev.version != prev.version + 1 {
        return Err(Rejection::VersionGap {
            last: prev.version,
            got: ev.version,
        });
    }
    if ev.player_a_id != prev.player_a || ev.player_b_id != prev.player_b {
        return Err(Rejection::PlayersChanged);
    }
    if ev.season_id != prev.season {
        return Err(Rejection::SeasonChanged);
    }
    match (prev.status, ev.event_type) {
        (MatchStatus::Voided, t) => {
            return Err(Rejection::AfterEnd {
                status: prev.status,
                event_type: t,
            })
        }
        (MatchStatus::Finished | MatchStatus::TimedOut, EventType::Voided) => {}
        (MatchStatus::Finished | MatchStatus::TimedOut, t) => {
            return Err(Rejection::AfterEnd {
                status: prev.status,
                event_type: t,
            })
        }
        (MatchStatus::InProgress, EventType::Voided) => return Err(Rejection::VoidOfUnfinished),
        (MatchStatus::InProgress, EventType::Started) => {
            return Err(Rejection::VersionRepeat {
                last: prev.version,
                got: 1,
            })
        }
        (MatchStatus::InProgress, _) => {}
    }

    let mut next = prev.clone();
    next.version = ev.version;
    next.updated_at = ev.occurred_at;
    match ev.event_type {
        EventType::Moved => {
            no_result_columns(ev)?;
            let (slot, gesture, player) = match (ev.gesture_a, ev.gesture_b) {
                (Some(g), None) => (&mut next.gesture_a, g, prev.player_a),
                (None, Some(g)) => (&mut next.gesture_b, g, prev.player_b),
                (a, b) => {
                    return Err(Rejection::MovedGestureCount {
                        count: usize::from(a.is_some()) + usize::from(b.is_some()),
                    })
                }
            };
            if slot.is_some() {
                return Err(Rejection::MovedTwice { player });
            }
            *slot = Some(gesture);
            Ok(Transition {
                state: next,
                effects: Vec::new(),
                deadline: DeadlineChange::Unchanged,
            })
        }
        EventType::Finished => {
            let a = ev.gesture_a.ok_or(Rejection::MissingGesture {
                column: "gesture_a",
            })?;
            let b = ev.gesture_b.ok_or(Rejection::MissingGesture {
                column: "gesture_b",
            })?;
            if prev.gesture_a.is_some_and(|g| g != a) {
                return Err(Rejection::GestureContradictsMove {
                    column: "gesture_a",
                });
            }
            if prev.gesture_b.is_some_and(|g| g != b) {
                return Err(Rejection::GestureContradictsMove {
                    column: "gesture_b",
                });
            }
            let result = MatchResult::by_gestures(a, b, prev.player_a, prev.player_b);
            check_result(ev, prev, &result)?;
            next.gesture_a = Some(a);
            next.gesture_b = Some(b);
            next.result = result;
            next.status = MatchStatus::Finished;
            let effects = next.effects(1);
            Ok(Transition {
                state: next,
                effects,
                deadline: DeadlineChange::Clear,
            })
        }
        EventType::TimedOut => {
            for (column, got, known) in [
                ("gesture_a", ev.gesture_a, prev.gesture_a),
                ("gesture_b", ev.gesture_b, prev.gesture_b),
            ] {
                if got.is_some() && got != known {
                    return Err(Rejection::GestureContradictsMove { column });
                }
            }
            let result = prev.timeout_result();
            check_result(ev, prev, &result)?;
            next.result = result;
            next.status = MatchStatus::TimedOut;
            let effects = next.effects(1);
            Ok(Transition {
                state: next,
                effects,
                deadline: DeadlineChange::Clear,
            })
        }
        EventType::Voided => {
            let effects = prev.effects(-1);
            next.status = MatchStatus::Voided;
            Ok(Transition {
                state: next,
                effects,
                deadline: DeadlineChange::Unchanged,
            })
        }
        EventType::Started => unreachable!("handled above"),
    }
}

fn start(ev: &MatchEvent) -> Result<Transition, Rejection> {
    if ev.player_a_id == ev.player_b_id {
        return Err(Rejection::SamePlayer {
            player: ev.player_a_id,
        });
    }
    for (column, set) in [
        ("gesture_a", ev.gesture_a.is_some()),
        ("gesture_b", ev.gesture_b.is_some()),
    ] {
        if set {
            return Err(Rejection::UnexpectedColumn { column });
        }
    }
    no_result_columns(ev)?;
    let deadline = ev.deadline_at.ok_or(Rejection::MissingDeadline)?;
    Ok(Transition {
        state: MatchState {
            match_id: ev.match_id,
            version: 1,
            status: MatchStatus::InProgress,
            season: ev.season_id,
            player_a: ev.player_a_id,
            player_b: ev.player_b_id,
            gesture_a: None,
            gesture_b: None,
            result: MatchResult::default(),
            deadline_at: Some(deadline),
            started_at: ev.occurred_at,
            updated_at: ev.occurred_at,
        },
        effects: Vec::new(),
        deadline: DeadlineChange::Set(deadline),
    })
}

fn no_result_columns(ev: &MatchEvent) -> Result<(), Rejection> {
    for (column, set) in [
        ("winner_player_id", ev.winner_player_id.is_some()),
        ("loser_player_id", ev.loser_player_id.is_some()),
        ("outcome", ev.outcome.is_some()),
    ] {
        if set {
            return Err(Rejection::UnexpectedColumn { column });
        }
    }
    Ok(())
}

fn check_result(
    ev: &MatchEvent,
    prev: &MatchState,
    expected: &MatchResult,
) -> Result<(), Rejection> {
    for (column, named) in [
        ("winner_player_id", ev.winner_player_id),
        ("loser_player_id", ev.loser_player_id),
    ] {
        if let Some(p) = named {
            if p != prev.player_a && p != prev.player_b {
                return Err(Rejection::NonPlayer { column, player: p });
            }
        }
    }
    if ev.outcome != expected.outcome
        || ev.winner_player_id != expected.winner
        || ev.loser_player_id != expected.loser
    {
        return Err(Rejection::ResultContradictsGestures {
            expected: describe(expected.outcome, expected.winner, expected.loser),
            got: describe(ev.outcome, ev.winner_player_id, ev.loser_player_id),
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests;

/// Format tag in front of a stored match state.
const MATCH_VALUE_TAG: &str = "1";

/// Field names of a match state, in [`MatchState::to_pairs`] order.
pub const MATCH_FIELDS: [&str; 15] = [
    "match_id",
    "status",
    "version",
    "season",
    "player_a",
    "player_b",
    "gesture_a",
    "gesture_b",
    "outcome",
    "winner",
    "loser",
    "forfeit_a",
    "forfeit_b",
    "deadline_at",
    "started_at",
];

impl MatchState {
    /// The stored form: one string value, the format tag and the values of
    /// [`MatchState::to_pairs`] joined by `|` (no value can hold a `|`).
    /// One value instead of a 16-field hash lets the projector write every
    /// match of a batch with one MSET.
    pub fn to_value(&self) -> String {
        let mut out = String::with_capacity(128);
        out.push_str(MATCH_VALUE_TAG);
        for (_, v) in self.to_pairs() {
            out.push('|');
            out.push_str(&v);
        }
        out
    }

    /// Reads the stored form back; `None` if it is malformed.
    pub fn from_value(value: &str) -> Option<MatchState> {
        let mut parts = value.split('|');
        if parts.next() != Some(MATCH_VALUE_TAG) {
            return None;
        }
        let values: Vec<&str> = parts.collect();
        if values.len() != MATCH_FIELDS.len() + 1 {
            return None;
        }
        let names = MATCH_FIELDS.iter().copied().chain(["updated_at"]);
        MatchState::from_pairs(names.zip(values))
    }

    /// Named fields and values (what the API and reports show). NULL is an
    /// empty value; `updated_at` comes last.
    pub fn to_pairs(&self) -> Vec<(&'static str, String)> {
        fn opt<T: ToString>(v: Option<T>) -> String {
            v.map(|v| v.to_string()).unwrap_or_default()
        }
        let values = [
            self.match_id.to_string(),
            self.status.as_str().to_string(),
            self.version.to_string(),
            self.season.to_string(),
            self.player_a.to_string(),
            self.player_b.to_string(),
            opt(self.gesture_a),
            opt(self.gesture_b),
            opt(self.result.outcome),
            opt(self.result.winner),
            opt(self.result.loser),
            u8::from(self.result.forfeit_a).to_string(),
            u8::from(self.result.forfeit_b).to_string(),
            opt(self.deadline_at.map(Timestamp::as_micros)),
            self.started_at.as_micros().to_string(),
        ];
        let mut pairs: Vec<_> = MATCH_FIELDS.iter().copied().zip(values).collect();
        pairs.push(("updated_at", self.updated_at.as_micros().to_string()));
        pairs
    }

    /// Reads a match-state hash back; `None` if a field is missing or malformed.
    pub fn from_pairs<'a, I>(pairs: I) -> Option<MatchState>
    where
        I: IntoIterator<Item = (&'a str, &'a str)>,
    {
        let mut v: [Option<&str>; 16] = [None; 16];
        for (k, val) in pairs {
            if let Some(i) = MATCH_FIELDS.iter().position(|f| *f == k) {
                v[i] = Some(val);
            } else if k == "updated_at" {
                v[15] = Some(val);
            }
        }
        let req = |i: usize| v[i];
        let opt = |i: usize| v[i].filter(|s| !s.is_empty());
        let int = |i: usize| req(i)?.parse::<i64>().ok();
        let opt_int = |i: usize| -> Option<Option<i64>> {
            match opt(i) {
                None => Some(None),
                Some(s) => s.parse().ok().map(Some),
            }
        };
        let gesture = |i: usize| -> Option<Option<Gesture>> {
            match opt(i) {
                None => Some(None),
                Some(s) => s.parse().ok().map(Some),
            }
        };
        Some(MatchState {
            match_id: int(0)?,
            status: MatchStatus::parse(req(1)?)?,
            version: req(2)?.parse().ok()?,
            season: req(3)?.parse().ok()?,
            player_a: int(4)?,
            player_b: int(5)?,
            gesture_a: gesture(6)?,
            gesture_b: gesture(7)?,
            result: MatchResult {
                outcome: match opt(8) {
                    None => None,
                    Some(s) => Some(s.parse().ok()?),
                },
                winner: opt_int(9)?,
                loser: opt_int(10)?,
                forfeit_a: req(11)? == "1",
                forfeit_b: req(12)? == "1",
            },
            deadline_at: opt_int(13)?.map(Timestamp),
            started_at: Timestamp(int(14)?),
            updated_at: Timestamp(int(15).unwrap_or(0)),
        })
    }
}
