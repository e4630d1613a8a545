//! What one simulated match will do, decided up front, and the events it
//! turns into.
//!
//! A [`MatchPlan`] is drawn from the seeded random generator when the match
//! starts; it fixes the players, the gestures, who moves first and the
//! match's fate. [`MatchPlan::event`] then builds the event of a given
//! version at the moment it is written, so `occurred_at` is the real time of
//! the insert. No I/O here: the writer decides when, this module decides what.

use rand::Rng;
use rps_core::{EventType, Gesture, MatchEvent, SeasonId, Timestamp};
use uuid::Uuid;

/// How a match ends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fate {
    /// `started`, two `moved`, `finished`.
    Finished,
    /// As `Finished`, then `voided` (anti-cheat or admin reversal).
    Voided,
    /// The game server stops after `moves` (0, 1 or 2) moves and never writes
    /// `finished`: the compensator must time the match out.
    Abandoned { moves: u8 },
}

/// Shares of the match fates, validated once.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct FateMix {
    abandoned: f64,
    /// Probability that a match which is not abandoned is voided, so that
    /// the voided share of *all* matches is what the caller asked for.
    voided_if_played: f64,
}

impl FateMix {
    /// `abandoned` and `voided` are shares of all matches.
    pub fn new(abandoned: f64, voided: f64) -> Result<Self, String> {
        for (name, v) in [("abandoned", abandoned), ("voided", voided)] {
            if !(0.0..=1.0).contains(&v) {
                return Err(format!("--{name} is a share between 0 and 1, got {v}"));
            }
        }
        if abandoned + voided > 1.0 + 1e-9 {
            return Err(format!(
                "--abandoned {abandoned} plus --voided {voided} exceed 1: a match is either abandoned or voided"
            ));
        }
        let voided_if_played = if abandoned >= 1.0 {
            0.0
        } else {
            (voided / (1.0 - abandoned)).min(1.0)
        };
        Ok(FateMix {
            abandoned,
            voided_if_played,
        })
    }

    pub fn draw<R: Rng>(&self, rng: &mut R) -> Fate {
        if rng.random_bool(self.abandoned) {
            // Mostly zero or one move; both moves without `finished` (the
            // game server died at the worst moment) is the rare case.
            let moves = match rng.random_range(0..20) {
                0..=8 => 0,
                9..=17 => 1,
                _ => 2,
            };
            Fate::Abandoned { moves }
        } else if rng.random_bool(self.voided_if_played) {
            Fate::Voided
        } else {
            Fate::Finished
        }
    }
}

/// The players of one shard: every id in `1..=players` congruent to the shard.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PlayerPool {
    pub players: u64,
    pub shard_count: u16,
}

impl PlayerPool {
    fn first_of(&self, shard: u16) -> u64 {
        if shard == 0 {
            u64::from(self.shard_count)
        } else {
            u64::from(shard)
        }
    }

    /// How many players have `shard` as their shard (challengers of that shard).
    pub fn challengers(&self, shard: u16) -> u64 {
        let first = self.first_of(shard);
        if first > self.players {
            0
        } else {
            (self.players - first) / u64::from(self.shard_count) + 1
        }
    }

    /// A random challenger of `shard` and a distinct random opponent.
    /// Needs `challengers(shard) > 0` and at least two players.
    pub fn draw_pair<R: Rng>(&self, shard: u16, rng: &mut R) -> (i64, i64) {
        let a = self.first_of(shard)
            + u64::from(self.shard_count) * rng.random_range(0..self.challengers(shard));
        let mut b = rng.random_range(1..self.players);
        if b >= a {
            b += 1;
        }
        (a as i64, b as i64)
    }
}

/// Splits `matches` over the shards in proportion to their challengers,
/// largest remainders first, so the parts add up exactly.
pub fn matches_per_shard(pool: &PlayerPool, matches: u64) -> Vec<u64> {
    let weights: Vec<u64> = (0..pool.shard_count).map(|s| pool.challengers(s)).collect();
    let total: u64 = weights.iter().sum();
    if total == 0 {
        return vec![0; weights.len()];
    }
    let mut parts: Vec<u64> = weights
        .iter()
        .map(|w| (u128::from(matches) * u128::from(*w) / u128::from(total)) as u64)
        .collect();
    let mut rest = matches - parts.iter().sum::<u64>();
    let mut order: Vec<usize> = (0..weights.len()).collect();
    order.sort_by_key(|&i| {
        std::cmp::Reverse(u128::from(matches) * u128::from(weights[i]) % u128::from(total))
    });
    for i in order {
        if rest == 0 {
            break;
        }
        if weights[i] > 0 {
            parts[i] += 1;
            rest -= 1;
        }
    }
    parts
}

/// Everything decided about a match when it starts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MatchPlan {
    pub match_id: i64,
    pub player_a: i64,
    pub player_b: i64,
    pub gesture_a: Gesture,
    pub gesture_b: Gesture,
    pub a_moves_first: bool,
    pub fate: Fate,
}

fn random_gesture<R: Rng>(rng: &mut R) -> Gesture {
    Gesture::ALL[rng.random_range(0..Gesture::ALL.len())]
}

impl MatchPlan {
    pub fn draw<R: Rng>(
        rng: &mut R,
        match_id: i64,
        (player_a, player_b): (i64, i64),
        mix: &FateMix,
    ) -> Self {
        MatchPlan {
            match_id,
            player_a,
            player_b,
            gesture_a: random_gesture(rng),
            gesture_b: random_gesture(rng),
            a_moves_first: rng.random_bool(0.5),
            fate: mix.draw(rng),
        }
    }

    /// Number of events the game server writes for this match.
    pub fn event_count(&self) -> i32 {
        match self.fate {
            Fate::Finished => 4,
            Fate::Voided => 5,
            Fate::Abandoned { moves } => 1 + i32::from(moves),
        }
    }

    /// The event of `version` (1-based, at most [`Self::event_count`]).
    ///
    /// `started_at` is the `occurred_at` of version 1 (ignored for version 1
    /// itself, which starts now); it fixes the season and the deadline.
    pub fn event(
        &self,
        version: i32,
        event_id: Uuid,
        now: Timestamp,
        started_at: Timestamp,
        deadline_micros: i64,
    ) -> MatchEvent {
        let started_at = if version == 1 { now } else { started_at };
        let mut ev = MatchEvent::new(
            event_id,
            self.match_id,
            version,
            EventType::Started,
            SeasonId::of(started_at),
            (self.player_a, self.player_b),
            now,
        );
        match version {
            1 => {
                ev.deadline_at = Some(Timestamp(started_at.as_micros() + deadline_micros));
            }
            2 | 3 => {
                ev.event_type = EventType::Moved;
                if (version == 2) == self.a_moves_first {
                    ev.gesture_a = Some(self.gesture_a);
                } else {
                    ev.gesture_b = Some(self.gesture_b);
                }
            }
            4 => {
                ev.event_type = EventType::Finished;
                ev.gesture_a = Some(self.gesture_a);
                ev.gesture_b = Some(self.gesture_b);
                let outcome = Gesture::duel(self.gesture_a, self.gesture_b);
                ev.outcome = Some(outcome);
                (ev.winner_player_id, ev.loser_player_id) = match outcome {
                    rps_core::Outcome::Win => (Some(self.player_a), Some(self.player_b)),
                    rps_core::Outcome::Lose => (Some(self.player_b), Some(self.player_a)),
                    rps_core::Outcome::Draw => (None, None),
                };
            }
            _ => ev.event_type = EventType::Voided,
        }
        ev
    }

    /// Whether the finished result is a draw (for the report).
    pub fn is_draw(&self) -> bool {
        self.gesture_a == self.gesture_b
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::rngs::StdRng;
    use rand::SeedableRng;
    use rps_core::fold::{apply, MatchStatus};

    const DEADLINE: i64 = 30_000_000;

    fn events(plan: &MatchPlan) -> Vec<MatchEvent> {
        let t0 = Timestamp::parse("2026-11-27 08:00:00.123456").unwrap();
        (1..=plan.event_count())
            .map(|v| {
                let now = Timestamp(t0.as_micros() + i64::from(v) * 17);
                plan.event(v, Uuid::new_v4(), now, t0, DEADLINE)
            })
            .collect()
    }

    /// Every planned match, folded by the pipeline's own state machine, is
    /// valid event by event and ends in the state its fate promises.
    #[test]
    fn every_plan_folds_cleanly_into_its_fate() {
        let mut rng = StdRng::seed_from_u64(7);
        let mix = FateMix::new(0.3, 0.2).unwrap();
        let pool = PlayerPool {
            players: 50,
            shard_count: 8,
        };
        let mut seen_moves = [0u32; 3];
        let mut draws = 0;
        for i in 0..5_000 {
            let shard = (i % 8) as u16;
            let pair = pool.draw_pair(shard, &mut rng);
            let plan = MatchPlan::draw(&mut rng, 1_000 + i, pair, &mix);
            assert_ne!(plan.player_a, plan.player_b);
            assert_eq!(rps_core::shard_of(plan.player_a, 8), shard);
            assert!((1..=50).contains(&plan.player_b));
            let mut state = None;
            for ev in events(&plan) {
                let t = apply(state.as_ref(), &ev)
                    .unwrap_or_else(|r| panic!("{plan:?} v{}: {r}", ev.version));
                state = Some(t.state);
            }
            let state = state.unwrap();
            match plan.fate {
                Fate::Finished => {
                    assert_eq!(state.status, MatchStatus::Finished);
                    draws += u32::from(plan.is_draw());
                }
                Fate::Voided => assert_eq!(state.status, MatchStatus::Voided),
                Fate::Abandoned { moves } => {
                    assert_eq!(state.status, MatchStatus::InProgress);
                    seen_moves[usize::from(moves)] += 1;
                }
            }
        }
        // Abandoned after zero, one and (rarely) both moves all occur.
        assert!(seen_moves[0] > 300 && seen_moves[1] > 300, "{seen_moves:?}");
        assert!(seen_moves[2] > 30 && seen_moves[2] < seen_moves[1] / 3);
        assert!(draws > 500, "draws happen when gestures are equal");
    }

    #[test]
    fn finished_names_winner_and_loser_or_none_on_a_draw() {
        let plan = |a, b| MatchPlan {
            match_id: 1,
            player_a: 10,
            player_b: 20,
            gesture_a: a,
            gesture_b: b,
            a_moves_first: false,
            fate: Fate::Finished,
        };
        let t = Timestamp::now();
        let f = plan(Gesture::Rock, Gesture::Scissors).event(4, Uuid::nil(), t, t, 0);
        assert_eq!(
            (f.outcome, f.winner_player_id, f.loser_player_id),
            (Some(rps_core::Outcome::Win), Some(10), Some(20))
        );
        let f = plan(Gesture::Rock, Gesture::Paper).event(4, Uuid::nil(), t, t, 0);
        assert_eq!(
            (f.winner_player_id, f.loser_player_id),
            (Some(20), Some(10))
        );
        let f = plan(Gesture::Paper, Gesture::Paper).event(4, Uuid::nil(), t, t, 0);
        assert_eq!(
            (f.outcome, f.winner_player_id, f.loser_player_id),
            (Some(rps_core::Outcome::Draw), None, None)
        );
        // B moved first here.
        let m = plan(Gesture::Rock, Gesture::Paper).event(2, Uuid::nil(), t, t, 0);
        assert_eq!((m.gesture_a, m.gesture_b), (None, Some(Gesture::Paper)));
    }

    #[test]
    fn started_carries_deadline_and_season_of_its_own_time() {
        let plan = MatchPlan {
            match_id: 1,
            player_a: 1,
            player_b: 2,
            gesture_a: Gesture::Rock,
            gesture_b: Gesture::Rock,
            a_moves_first: true,
            fate: Fate::Finished,
        };
        let now = Timestamp::parse("2026-12-31 23:59:50.000001").unwrap();
        let s = plan.event(1, Uuid::nil(), now, Timestamp(0), DEADLINE);
        assert_eq!(
            s.deadline_at.unwrap().to_string(),
            "2027-01-01 00:00:20.000001"
        );
        assert_eq!(s.season_id.as_str(), "2026Q4");
        // Later events keep the season of the start even across a quarter.
        let later = Timestamp::parse("2027-01-01 00:00:01").unwrap();
        let m = plan.event(2, Uuid::nil(), later, now, DEADLINE);
        assert_eq!(m.season_id.as_str(), "2026Q4");
        assert_eq!(m.deadline_at, None);
    }

    #[test]
    fn shares_are_validated_and_honoured() {
        assert!(FateMix::new(-0.1, 0.0).is_err());
        assert!(FateMix::new(0.6, 0.5).is_err());
        let mix = FateMix::new(0.1, 0.05).unwrap();
        let mut rng = StdRng::seed_from_u64(1);
        let n = 100_000;
        let (mut ab, mut vo) = (0, 0);
        for _ in 0..n {
            match mix.draw(&mut rng) {
                Fate::Abandoned { .. } => ab += 1,
                Fate::Voided => vo += 1,
                Fate::Finished => {}
            }
        }
        assert!((ab as f64 / n as f64 - 0.1).abs() < 0.01, "{ab}");
        assert!((vo as f64 / n as f64 - 0.05).abs() < 0.01, "{vo}");
    }

    #[test]
    fn matches_split_over_shards_exactly_by_challengers() {
        let pool = PlayerPool {
            players: 10,
            shard_count: 8,
        };
        // Players 1..=10: shards 1 and 2 have two challengers each (1, 9 and 2, 10).
        assert_eq!(pool.challengers(0), 1);
        assert_eq!(pool.challengers(1), 2);
        assert_eq!(pool.challengers(3), 1);
        let parts = matches_per_shard(&pool, 1001);
        assert_eq!(parts.iter().sum::<u64>(), 1001);
        assert!(parts[1] == 200 || parts[1] == 201, "{parts:?}");
        let few = PlayerPool {
            players: 3,
            shard_count: 8,
        };
        let parts = matches_per_shard(&few, 10);
        assert_eq!(parts.iter().sum::<u64>(), 10);
        assert!(parts[4..].iter().all(|p| *p == 0) && parts[0] == 0);
    }
}
