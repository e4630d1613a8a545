//! The event model: one row of `match_result_events`, typed.
//!
//! The table is owned by the game servers (docs/events.md); this module
//! mirrors it exactly and nothing more. Whether an event *fits its match* is
//! the job of [`crate::fold`], not of these types.

use crate::time::Timestamp;
use std::fmt;
use std::str::FromStr;
use uuid::Uuid;

/// A logical shard number, `0..shard_count`.
pub type ShardId = u16;

/// A value that does not fit the event model, e.g. an unknown enum label.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid {field}: {value:?} ({expected})")]
pub struct ModelError {
    pub field: &'static str,
    pub value: String,
    pub expected: &'static str,
}

impl ModelError {
    pub fn new(field: &'static str, value: impl Into<String>, expected: &'static str) -> Self {
        ModelError {
            field,
            value: value.into(),
            expected,
        }
    }
}

macro_rules! string_enum {
    ($(#[$doc:meta])* $name:ident, $field:literal { $($variant:ident = $label:literal),+ $(,)? }) => {
        $(#[$doc])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
        pub enum $name { $($variant),+ }

        impl $name {
            /// Every value, in the order of the SQL `ENUM` definition.
            pub const ALL: &'static [$name] = &[$($name::$variant),+];

            /// The SQL `ENUM` label.
            pub fn as_str(self) -> &'static str {
                match self { $($name::$variant => $label),+ }
            }

            /// Parses the label, as bytes straight from a binlog or a stream entry.
            pub fn from_bytes(b: &[u8]) -> Result<Self, ModelError> {
                match b {
                    $(_ if b == $label.as_bytes() => Ok($name::$variant),)+
                    _ => Err(ModelError::new($field, String::from_utf8_lossy(b), concat!("one of ", $($label, " "),+))),
                }
            }
        }

        impl FromStr for $name {
            type Err = ModelError;
            fn from_str(s: &str) -> Result<Self, ModelError> { Self::from_bytes(s.as_bytes()) }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result { f.write_str(self.as_str()) }
        }
    };
}

string_enum!(
    /// `event_type`.
    EventType, "event_type" {
        Started = "started",
        Moved = "moved",
        Finished = "finished",
        TimedOut = "timed_out",
        Voided = "voided",
    }
);

string_enum!(
    /// `gesture_a` / `gesture_b`.
    Gesture, "gesture" {
        Rock = "rock",
        Paper = "paper",
        Scissors = "scissors",
    }
);

string_enum!(
    /// `outcome`, always from player A's side.
    Outcome, "outcome" {
        Win = "win",
        Lose = "lose",
        Draw = "draw",
    }
);

impl Gesture {
    /// Rock beats scissors, scissors beat paper, paper beats rock.
    pub fn beats(self, other: Gesture) -> bool {
        matches!(
            (self, other),
            (Gesture::Rock, Gesture::Scissors)
                | (Gesture::Scissors, Gesture::Paper)
                | (Gesture::Paper, Gesture::Rock)
        )
    }

    /// The outcome from A's side when A plays `a` and B plays `b`.
    pub fn duel(a: Gesture, b: Gesture) -> Outcome {
        if a == b {
            Outcome::Draw
        } else if a.beats(b) {
            Outcome::Win
        } else {
            Outcome::Lose
        }
    }
}

/// `season_id CHAR(6)`: a UTC quarter such as `2026Q4`.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct SeasonId([u8; 6]);

impl SeasonId {
    /// Accepts exactly `YYYYQn` with n in 1..=4.
    pub fn parse_bytes(b: &[u8]) -> Result<Self, ModelError> {
        let ok = b.len() == 6
            && b[..4].iter().all(u8::is_ascii_digit)
            && b[4] == b'Q'
            && (b'1'..=b'4').contains(&b[5]);
        if !ok {
            return Err(ModelError::new(
                "season_id",
                String::from_utf8_lossy(b),
                "YYYYQn with n in 1..4",
            ));
        }
        let mut a = [0u8; 6];
        a.copy_from_slice(b);
        Ok(SeasonId(a))
    }

    /// The season of a UTC instant: its year and quarter.
    pub fn of(t: Timestamp) -> Self {
        use chrono::Datelike;
        let d = t.to_naive().date();
        let q = (d.month0() / 3) + 1;
        let s = format!("{:04}Q{}", d.year().clamp(0, 9999), q);
        SeasonId::parse_bytes(s.as_bytes()).expect("formatted season is valid")
    }

    pub fn as_str(&self) -> &str {
        // Only ASCII is ever admitted by `parse_bytes`.
        std::str::from_utf8(&self.0).unwrap_or("??????")
    }
}

impl FromStr for SeasonId {
    type Err = ModelError;
    fn from_str(s: &str) -> Result<Self, ModelError> {
        Self::parse_bytes(s.as_bytes())
    }
}

impl fmt::Display for SeasonId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl fmt::Debug for SeasonId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "SeasonId({})", self.as_str())
    }
}

/// The columns of `match_result_events`, in table order (`sql/schema.sql`).
pub const COLUMNS: [&str; 15] = [
    "id",
    "event_id",
    "match_id",
    "version",
    "event_type",
    "season_id",
    "player_a_id",
    "player_b_id",
    "gesture_a",
    "gesture_b",
    "winner_player_id",
    "loser_player_id",
    "outcome",
    "deadline_at",
    "occurred_at",
];

/// One row of `match_result_events`, typed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MatchEvent {
    /// The table's `id` (per shard table, not global).
    pub row_id: i64,
    pub event_id: Uuid,
    pub match_id: i64,
    pub version: i32,
    pub event_type: EventType,
    pub season_id: SeasonId,
    pub player_a_id: i64,
    pub player_b_id: i64,
    pub gesture_a: Option<Gesture>,
    pub gesture_b: Option<Gesture>,
    pub winner_player_id: Option<i64>,
    pub loser_player_id: Option<i64>,
    pub outcome: Option<Outcome>,
    pub deadline_at: Option<Timestamp>,
    pub occurred_at: Timestamp,
}

impl MatchEvent {
    /// An event of a match with the fields every type has, and no gesture,
    /// result or deadline (those a type carries are set with struct update
    /// syntax). The row id is 0: the table assigns it.
    pub fn new(
        event_id: Uuid,
        match_id: i64,
        version: i32,
        event_type: EventType,
        season_id: SeasonId,
        (player_a_id, player_b_id): (i64, i64),
        occurred_at: Timestamp,
    ) -> MatchEvent {
        MatchEvent {
            row_id: 0,
            event_id,
            match_id,
            version,
            event_type,
            season_id,
            player_a_id,
            player_b_id,
            gesture_a: None,
            gesture_b: None,
            winner_player_id: None,
            loser_player_id: None,
            outcome: None,
            deadline_at: None,
            occurred_at,
        }
    }

    /// A `started` event (version 1) of a new match.
    pub fn started(
        event_id: Uuid,
        match_id: i64,
        season_id: SeasonId,
        players: (i64, i64),
        occurred_at: Timestamp,
        deadline_at: Timestamp,
    ) -> MatchEvent {
        MatchEvent {
            deadline_at: Some(deadline_at),
            ..MatchEvent::new(
                event_id,
                match_id,
                1,
                EventType::Started,
                season_id,
                players,
                occurred_at,
            )
        }
    }

    /// The deterministic event id of a compensator-written `timed_out`, so a
    /// retried append can never create a second distinct event.
    pub fn timed_out_event_id(match_id: i64, version: i32) -> Uuid {
        const NAMESPACE: Uuid = Uuid::from_u128(0x8f5e_2a61_4c3b_4d8e_9a0f_7b6c_5d4e_3f21);
        Uuid::new_v5(
            &NAMESPACE,
            format!("timed_out:{match_id}:{version}").as_bytes(),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rules_of_the_game() {
        use Gesture::*;
        assert_eq!(Gesture::duel(Rock, Scissors), Outcome::Win);
        assert_eq!(Gesture::duel(Scissors, Paper), Outcome::Win);
        assert_eq!(Gesture::duel(Paper, Rock), Outcome::Win);
        assert_eq!(Gesture::duel(Rock, Paper), Outcome::Lose);
        assert_eq!(Gesture::duel(Paper, Paper), Outcome::Draw);
    }

    #[test]
    fn enum_labels_round_trip_and_reject_unknown() {
        for t in EventType::ALL {
            assert_eq!(t.as_str().parse::<EventType>().unwrap(), *t);
        }
        let err = "lizard".parse::<Gesture>().unwrap_err();
        assert_eq!(err.field, "gesture");
        assert!(err.to_string().contains("lizard"));
    }

    #[test]
    fn seasons() {
        assert_eq!("2026Q4".parse::<SeasonId>().unwrap().as_str(), "2026Q4");
        assert!("2026Q5".parse::<SeasonId>().is_err());
        assert!("26Q4".parse::<SeasonId>().is_err());
        let t = Timestamp::parse("2026-11-27 07:00:00").unwrap();
        assert_eq!(SeasonId::of(t).as_str(), "2026Q4");
        let t = Timestamp::parse("2026-03-31 23:59:59.999999").unwrap();
        assert_eq!(SeasonId::of(t).as_str(), "2026Q1");
    }

    #[test]
    fn timed_out_ids_are_deterministic() {
        let a = MatchEvent::timed_out_event_id(42, 3);
        assert_eq!(a, MatchEvent::timed_out_event_id(42, 3));
        assert_ne!(a, MatchEvent::timed_out_event_id(42, 4));
    }
}
