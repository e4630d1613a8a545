//! The read models as one in-memory value: what the fold of history says
//! every Redis key of a generation must hold.
//!
//! Memory is proportional to matches and players, never to events: a match
//! is one [`CompactMatch`] (56 bytes) however many events it had, a player
//! one counter set per scope. Boards, the seasons set and the deadlines are derived from
//! those on demand ([`Model::expected`]), not stored twice.

use read_model::board_member;
use read_model::lifecycle::MatchCounts;
use rps_core::fold::{self, MatchResult, MatchState, MatchStatus, PlayerStats, Rejection};
use rps_core::keys::deadline_member;
use rps_core::{shard_of, Gesture, MatchEvent, Outcome, SeasonId, ShardId, Timestamp};
use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};

/// A player's counters in one scope: all-time (`None`) or a season.
pub type PlayerKey = (i64, Option<SeasonId>);

/// How many rejected events are kept with their details (the rest are counted).
pub const REJECTION_SAMPLES: usize = 1000;

/// An event of history that does not fit its match (or the event model).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct RejectedEvent {
    pub shard: ShardId,
    pub database: String,
    pub table: String,
    pub row_id: i64,
    pub match_id: Option<i64>,
    pub event_id: String,
    /// The same low-cardinality code the projector uses (`Rejection::code`),
    /// or `bad_row` for a row that does not decode.
    pub code: String,
    pub reason: String,
}

/// Counts of rejections by code, with the first [`REJECTION_SAMPLES`] in full.
#[derive(Debug, Clone, Default)]
pub struct Rejections {
    pub by_code: BTreeMap<String, u64>,
    pub samples: Vec<RejectedEvent>,
}

impl Rejections {
    pub fn total(&self) -> u64 {
        self.by_code.values().sum()
    }

    pub fn record(&mut self, r: RejectedEvent) {
        metrics::counter!(crate::metrics::REPLAY_REJECTED_TOTAL, "code" => code_label(&r.code))
            .increment(1);
        *self.by_code.entry(r.code.clone()).or_default() += 1;
        if self.samples.len() < REJECTION_SAMPLES {
            self.samples.push(r);
        }
    }

    pub fn merge(&mut self, other: Rejections) {
        for (k, v) in other.by_code {
            *self.by_code.entry(k).or_default() += v;
        }
        for s in other.samples {
            if self.samples.len() < REJECTION_SAMPLES {
                self.samples.push(s);
            }
        }
    }
}

/// Metric labels must come from a closed set; codes are `&'static str` in
/// core, so map back to one of them.
fn code_label(code: &str) -> &'static str {
    const CODES: [&str; 18] = [
        "version_gap",
        "version_repeat",
        "unknown_match",
        "after_end",
        "void_of_unfinished",
        "same_player",
        "moved_gesture_count",
        "moved_twice",
        "players_changed",
        "season_changed",
        "missing_deadline",
        "unexpected_column",
        "missing_gesture",
        "gesture_contradicts_move",
        "result_contradicts_gestures",
        "non_player",
        "wrong_shard",
        "bad_row",
    ];
    CODES
        .iter()
        .copied()
        .find(|c| *c == code)
        .unwrap_or("other")
}

/// Keys touched since the last [`Model::take_dirty`], for incremental writes.
#[derive(Debug, Default)]
pub struct Dirty {
    pub matches: HashSet<i64>,
    pub players: HashSet<PlayerKey>,
}

/// The fold of (part of) history.
#[derive(Debug, Default)]
pub struct Model {
    pub shard_count: u16,
    pub matches: HashMap<i64, CompactMatch>,
    pub players: HashMap<PlayerKey, PlayerStats>,
    /// Matches per lifecycle state, per shard (each shard's counts live in
    /// its slot). Kept as the fold goes rather than counted from `matches`,
    /// which a spilling fold empties range by range.
    pub lifecycle: BTreeMap<ShardId, MatchCounts>,
    pub rejections: Rejections,
    /// Events folded, valid or not.
    pub events: u64,
    dirty: Option<Dirty>,
}

/// One Redis value of a generation, as the fold says it must be.
#[derive(Debug, Clone, PartialEq)]
pub enum Expected {
    /// Hash fields and values.
    Hash(Vec<(String, String)>),
    /// A match state, stored as one string value.
    Match(MatchState),
    /// Sorted-set members and integer scores.
    ZSet(Vec<(String, i64)>),
    Set(BTreeSet<String>),
}

impl Model {
    pub fn new(shard_count: u16) -> Self {
        Model {
            shard_count,
            ..Default::default()
        }
    }

    /// Starts recording touched keys (replay's catch-up writes only those).
    pub fn track_dirty(&mut self) {
        self.dirty = Some(Dirty::default());
    }

    pub fn take_dirty(&mut self) -> Dirty {
        self.dirty.as_mut().map(std::mem::take).unwrap_or_default()
    }

    /// Folds one event of `shard`. Invalid events change nothing; the
    /// rejection is returned for the caller to report with coordinates.
    pub fn apply(&mut self, shard: ShardId, ev: &MatchEvent) -> Result<(), Rejection> {
        self.events += 1;
        let expected = shard_of(ev.player_a_id, self.shard_count);
        if expected != shard {
            return Err(Rejection::WrongShard {
                expected,
                got: shard,
            });
        }
        let prev = self.match_state(ev.match_id);
        let t = fold::apply(prev.as_ref(), ev)?;
        self.lifecycle
            .entry(shard)
            .or_default()
            .moved(prev.map(|p| p.status), t.state.status);
        for e in &t.effects {
            for key in [(e.player_id, None), (e.player_id, Some(e.season))] {
                self.players.entry(key).or_default().add(&e.delta);
                if let Some(d) = &mut self.dirty {
                    d.players.insert(key);
                }
            }
        }
        if let Some(d) = &mut self.dirty {
            d.matches.insert(ev.match_id);
        }
        self.matches
            .insert(ev.match_id, CompactMatch::from_state(&t.state));
        Ok(())
    }

    /// The full state of a match, if it has a valid `started`.
    pub fn match_state(&self, match_id: i64) -> Option<MatchState> {
        self.matches.get(&match_id).map(|c| c.state(match_id))
    }

    /// Folds an event and records its rejection, if any, with its coordinates.
    pub fn apply_reporting(
        &mut self,
        shard: ShardId,
        database: &str,
        table: &str,
        ev: &MatchEvent,
    ) {
        if let Err(r) = self.apply(shard, ev) {
            self.rejections.record(RejectedEvent {
                shard,
                database: database.to_string(),
                table: table.to_string(),
                row_id: ev.row_id,
                match_id: Some(ev.match_id),
                event_id: ev.event_id.hyphenated().to_string(),
                code: r.code().to_string(),
                reason: r.to_string(),
            });
        }
    }

    /// Adds another shard's fold. Matches are disjoint between shards
    /// (a match lives in its challenger's shard); player counters add up.
    pub fn merge(&mut self, other: Model) {
        self.events += other.events;
        self.matches.extend(other.matches);
        for (shard, counts) in other.lifecycle {
            self.lifecycle.entry(shard).or_default().add(&counts);
        }
        for (k, v) in other.players {
            self.players.entry(k).or_default().add(&v);
        }
        self.rejections.merge(other.rejections);
    }

    /// Counters of players with at least one counted match, by scope.
    pub fn counted_players(&self) -> impl Iterator<Item = (&PlayerKey, &PlayerStats)> {
        self.players.iter().filter(|(_, s)| s.matches > 0)
    }

    /// Seasons in which some result was ever scored (the live projector
    /// adds a season on its first score effect and never removes it, even if
    /// every match of it is voided later).
    pub fn seasons(&self) -> BTreeSet<SeasonId> {
        self.players.keys().filter_map(|(_, s)| *s).collect()
    }

    /// `(player, season)` of every player who ever scored in a season:
    /// what the partitions' seasons sets are built from.
    pub fn scored_seasons(&self) -> impl Iterator<Item = (i64, SeasonId)> + '_ {
        self.players.keys().filter_map(|(id, s)| Some((*id, (*s)?)))
    }

    /// Every board, built from the counters: scope → members and scores.
    pub fn boards(&self) -> BTreeMap<Option<SeasonId>, Vec<(String, i64)>> {
        let mut boards: BTreeMap<Option<SeasonId>, Vec<(String, i64)>> = BTreeMap::new();
        for ((id, season), s) in self.counted_players() {
            boards
                .entry(*season)
                .or_default()
                .push((board_member(*id), s.board_score()));
        }
        for members in boards.values_mut() {
            members.sort();
        }
        boards
    }

    /// Deadline members of open matches and their score (ms).
    pub fn deadlines(&self) -> Vec<(String, i64)> {
        let mut d: Vec<(String, i64)> = self
            .matches
            .iter()
            .filter_map(|(id, m)| m.deadline_entry(*id, self.shard_count))
            .collect();
        d.sort();
        d
    }

    /// [`Model::deadlines`] by the shard that owns each match.
    pub fn deadlines_by_shard(&self) -> BTreeMap<ShardId, Vec<(String, i64)>> {
        let mut out: BTreeMap<ShardId, Vec<(String, i64)>> = BTreeMap::new();
        for (id, m) in &self.matches {
            if let Some(entry) = m.deadline_entry(*id, self.shard_count) {
                out.entry(shard_of(m.player_a, self.shard_count))
                    .or_default()
                    .push(entry);
            }
        }
        for d in out.values_mut() {
            d.sort();
        }
        out
    }

    /// Matches per lifecycle state over every shard.
    pub fn lifecycle_total(&self) -> MatchCounts {
        let mut total = MatchCounts::default();
        for c in self.lifecycle.values() {
            total.add(c);
        }
        total
    }

    /// The deadline entry of one match, if it is open.
    pub fn deadline_of(&self, m: &MatchState) -> Option<(String, i64)> {
        CompactMatch::from_state(m).deadline_entry(m.match_id, self.shard_count)
    }
}

/// A match state in 56 bytes instead of [`MatchState`]'s ~130: gestures and
/// outcome as small codes, winner and loser derived from the outcome (they
/// always follow from it and the players, see [`MatchState::timeout_result`]
/// and [`MatchResult::by_gestures`]), the match id kept only as the map key.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CompactMatch {
    pub player_a: i64,
    pub player_b: i64,
    /// `i64::MIN` when there is none.
    deadline_at: i64,
    started_at: i64,
    updated_at: i64,
    pub version: i32,
    pub season: SeasonId,
    pub status: MatchStatus,
    /// Gesture codes: 0 none, 1 + index in `Gesture::ALL`.
    gesture_a: u8,
    gesture_b: u8,
    /// 0 none, 1 + index in `Outcome::ALL`; bit 4 forfeit A, bit 5 forfeit B.
    result: u8,
}

fn code<T: PartialEq + Copy>(all: &[T], v: Option<T>) -> u8 {
    v.and_then(|v| all.iter().position(|x| *x == v))
        .map_or(0, |i| i as u8 + 1)
}

fn decode<T: Copy>(all: &[T], c: u8) -> Option<T> {
    (c > 0)
        .then(|| all.get(usize::from(c - 1)).copied())
        .flatten()
}

impl CompactMatch {
    pub fn from_state(m: &MatchState) -> Self {
        let r = &m.result;
        CompactMatch {
            player_a: m.player_a,
            player_b: m.player_b,
            deadline_at: m.deadline_at.map_or(i64::MIN, Timestamp::as_micros),
            started_at: m.started_at.as_micros(),
            updated_at: m.updated_at.as_micros(),
            version: m.version,
            season: m.season,
            status: m.status,
            gesture_a: code(Gesture::ALL, m.gesture_a),
            gesture_b: code(Gesture::ALL, m.gesture_b),
            result: code(Outcome::ALL, r.outcome)
                | (u8::from(r.forfeit_a) << 4)
                | (u8::from(r.forfeit_b) << 5),
        }
    }

    pub fn deadline(&self) -> Option<Timestamp> {
        (self.deadline_at != i64::MIN).then_some(Timestamp(self.deadline_at))
    }

    /// The match's entry in the deadline set (member, ms), if it is open.
    pub fn deadline_entry(&self, match_id: i64, shard_count: u16) -> Option<(String, i64)> {
        (self.status == MatchStatus::InProgress)
            .then(|| self.deadline())
            .flatten()
            .map(|t| {
                (
                    deadline_member(shard_of(self.player_a, shard_count), match_id),
                    t.as_millis(),
                )
            })
    }

    pub fn state(&self, match_id: i64) -> MatchState {
        let outcome = decode(Outcome::ALL, self.result & 0x0f);
        let (winner, loser) = match outcome {
            Some(Outcome::Win) => (Some(self.player_a), Some(self.player_b)),
            Some(Outcome::Lose) => (Some(self.player_b), Some(self.player_a)),
            _ => (None, None),
        };
        MatchState {
            match_id,
            version: self.version,
            status: self.status,
            season: self.season,
            player_a: self.player_a,
            player_b: self.player_b,
            gesture_a: decode(Gesture::ALL, self.gesture_a),
            gesture_b: decode(Gesture::ALL, self.gesture_b),
            result: MatchResult {
                outcome,
                winner,
                loser,
                forfeit_a: self.result & 0x10 != 0,
                forfeit_b: self.result & 0x20 != 0,
            },
            deadline_at: self.deadline(),
            started_at: Timestamp(self.started_at),
            updated_at: Timestamp(self.updated_at),
        }
    }
}

/// A match state's named fields, for field-by-field comparison.
pub fn match_fields(m: &MatchState) -> Vec<(String, String)> {
    m.to_pairs()
        .into_iter()
        .map(|(f, v)| (f.to_string(), v))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use rps_core::{EventType, Gesture, Outcome, Timestamp};

    fn ev(version: i32, t: EventType) -> MatchEvent {
        MatchEvent {
            row_id: i64::from(version),
            ..MatchEvent::new(
                uuid::Uuid::new_v4(),
                77,
                version,
                t,
                "2026Q4".parse().unwrap(),
                (16, 3),
                Timestamp(1_790_000_000_000_000 + i64::from(version)),
            )
        }
    }

    #[test]
    fn fold_scores_reverses_and_derives_boards() {
        let mut m = Model::new(8);
        let mut start = ev(1, EventType::Started);
        start.deadline_at = Some(Timestamp(1_790_000_030_000_000));
        m.apply(0, &start).unwrap();
        assert_eq!(m.deadlines(), vec![("0:77".to_string(), 1_790_000_030_000)]);
        let mut fin = ev(2, EventType::Finished);
        fin.gesture_a = Some(Gesture::Rock);
        fin.gesture_b = Some(Gesture::Scissors);
        fin.outcome = Some(Outcome::Win);
        fin.winner_player_id = Some(16);
        fin.loser_player_id = Some(3);
        // Wrong shard: 16 routes to shard 0.
        assert_eq!(m.apply(1, &fin).unwrap_err().code(), "wrong_shard");
        m.apply(0, &fin).unwrap();
        assert!(m.deadlines().is_empty());
        assert_eq!(m.players[&(16, None)].wins, 1);
        let boards = m.boards();
        assert_eq!(boards[&None][0].0, board_member(3));
        assert_eq!(m.seasons().len(), 1);
        m.apply_reporting(0, "db", "t", &ev(2, EventType::Voided));
        assert_eq!(m.rejections.by_code["version_repeat"], 1);
        m.apply(0, &ev(3, EventType::Voided)).unwrap();
        assert!(m.boards().is_empty());
        assert_eq!(
            m.seasons().len(),
            1,
            "a season stays listed after its results are voided"
        );
        assert_eq!(m.matches[&77].status, MatchStatus::Voided);
        assert_eq!(
            m.lifecycle_total().nonzero().collect::<Vec<_>>(),
            [("voided", 1)]
        );
        let st = m.match_state(77).unwrap();
        assert_eq!(st.result.winner, Some(16));
        assert_eq!(CompactMatch::from_state(&st).state(77), st);
        assert!(std::mem::size_of::<CompactMatch>() <= 56);
    }
}
