//! Redis key names, in one place.
//!
//! Layout (with the default prefix `rps`):
//!
//! | key | type | what |
//! |---|---|---|
//! | `rps:events:{n}` | stream | decoded events of shard `n` (braces: a Redis Cluster hash tag) |
//! | `rps:cdc:checkpoint:<server>` | string | reader position, written atomically with the entries it covers |
//! | `rps:cdc:resnapshot` | hash | server → why its reader cannot resume (binlog purged): a request to rebuild from snapshots, cleared by the bootstrap's commit |
//! | `rps:cdc:xa:<server>` | hash | xid key → [`crate::xa::HeldBranch`]: every XA branch the reader saw prepared and not yet decided |
//! | `rps:cdc:xa:<server>:<xid>:rows` | stream | the rows (and dead letters) a prepared branch holds, published when it commits |
//! | `rps:cdc:xa:<server>:<xid>:matches` | set | `<shard>:<match>` of every match a prepared branch holds rows of |
//! | `rps:projector:lease:<n>` | string | the projector worker holding shard `n` (TTL) |
//! | `rps:recovery:bootstrap` | string | the last bootstrap's record; its absence means Redis lost the state |
//! | `rps:deadletter` | stream | rejected events and failed deadlines |
//! | `rps:generation` | string | the active read-model generation `g` |
//! | `rps:g<g>:progress` | hash | shard → last stream id applied to generation `g` |
//! | `rps:g<g>:player:<id>` | hash | all-time counters |
//! | `rps:g<g>:player:<id>:<season>` | hash | season counters |
//! | `rps:g<g>:board` / `rps:g<g>:board:<season>` | sorted set | leaderboards |
//! | `rps:g<g>:seasons` | set | seasons that have a board |
//! | `rps:g<g>:match:<id>` | string | match state |
//! | `rps:g<g>:deadlines` | sorted set | open matches' deadlines, score = ms, member `<shard>:<match>` |
//!
//! Read-model contents (the projector writes them; replay writes the same;
//! verify and the API read them):
//! - player hashes hold the fields [`crate::PlayerStats::STORED_FIELDS`] as
//!   integers (absent = 0; `matches` is their wins + draws + losses); a
//!   player whose matches fall to 0 has no hash and is on no board;
//! - a board member is [`board_member`]`(id)` with score
//!   [`crate::PlayerStats::board_score`], read in ascending score order;
//! - a match key holds [`crate::MatchState::to_value`];
//! - a deadline entry exists exactly while its match is `in_progress`,
//!   score = deadline in Unix milliseconds;
//! - `progress` maps the shard number to the last stream id applied.
//!
//! The deadline set is part of a generation (not a global `rps:deadlines`)
//! because it is derived from the events like every other read model: a
//! rebuild must rebuild it, and the switch must swap it with the rest.

use crate::event::{SeasonId, ShardId};

/// The consumer group every projector joins on every shard stream.
pub const PROJECTOR_GROUP: &str = "projector";

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Keys {
    prefix: String,
}

impl Keys {
    pub fn new(prefix: &str) -> Self {
        Keys {
            prefix: prefix.to_string(),
        }
    }

    pub fn prefix(&self) -> &str {
        &self.prefix
    }

    pub fn events(&self, shard: ShardId) -> String {
        format!("{}:events:{{{shard}}}", self.prefix)
    }

    pub fn cdc_checkpoint(&self, server: &str) -> String {
        format!("{}:cdc:checkpoint:{server}", self.prefix)
    }

    /// Readers that cannot resume from their checkpoint ask the recovery
    /// supervisor for a rebuild here.
    pub fn cdc_resnapshot(&self) -> String {
        format!("{}:cdc:resnapshot", self.prefix)
    }

    /// Prepared XA branches the reader of `server` holds, by [`crate::Xid::key`].
    pub fn cdc_xa_branches(&self, server: &str) -> String {
        format!("{}:cdc:xa:{server}", self.prefix)
    }

    /// The items a prepared branch holds until its decision; `xid_key` is
    /// [`crate::Xid::key`].
    pub fn cdc_xa_held(&self, server: &str, xid_key: &str) -> String {
        format!("{}:cdc:xa:{server}:{xid_key}:rows", self.prefix)
    }

    /// The matches a prepared branch holds rows of (members
    /// [`crate::xa::held_match_member`]), so a compensator blocked by the
    /// branch can name it.
    pub fn cdc_xa_matches(&self, server: &str, xid_key: &str) -> String {
        format!("{}:cdc:xa:{server}:{xid_key}:matches", self.prefix)
    }

    pub fn deadletter(&self) -> String {
        format!("{}:deadletter", self.prefix)
    }

    pub fn generation(&self) -> String {
        format!("{}:generation", self.prefix)
    }

    /// A projector worker's lease on a shard (a consumer's name, with a TTL).
    pub fn projector_lease(&self, shard: ShardId) -> String {
        format!("{}:projector:lease:{shard}", self.prefix)
    }

    /// The recovery bootstrap's record: written by nothing but a bootstrap,
    /// so its absence shows that Redis lost the pipeline's state.
    pub fn bootstrap_record(&self) -> String {
        format!("{}:recovery:bootstrap", self.prefix)
    }

    /// SCAN pattern of every generation's progress hash.
    pub fn all_progress_pattern(&self) -> String {
        format!("{}:g*:progress", self.prefix)
    }

    /// Start of every generation's keys (`{prefix}:g`), for finding which
    /// generations have keys.
    pub fn generations_base(&self) -> String {
        format!("{}:g", self.prefix)
    }

    /// Compensator bookkeeping: leases of claimed deadlines.
    pub fn deadline_leases(&self) -> String {
        format!("{}:compensator:leases", self.prefix)
    }

    /// Compensator bookkeeping: attempt history of deadlines being retried.
    pub fn deadline_attempts(&self) -> String {
        format!("{}:compensator:attempts", self.prefix)
    }

    /// Pub/sub channel that wakes the compensators' deadline loops early:
    /// publish to it after adding a deadline that is already due (a lagging
    /// projector, an operator's `dlq retry`). Losing a message only costs the
    /// loop's bounded safety re-check.
    pub fn compensator_wakeup(&self) -> String {
        format!("{}:compensator:wakeup", self.prefix)
    }

    /// Keys of one read-model generation.
    pub fn generation_keys(&self, generation: u64) -> GenerationKeys {
        GenerationKeys {
            base: format!("{}:g{generation}", self.prefix),
            generation,
        }
    }
}

/// Keys of one read-model generation, `{prefix}:g{n}:…`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GenerationKeys {
    base: String,
    pub generation: u64,
}

/// Board members are zero-padded player ids so that equal scores order by
/// the lower id (Redis breaks score ties lexicographically).
pub fn board_member(player_id: i64) -> String {
    format!("{player_id:019}")
}

pub fn parse_board_member(member: &str) -> Option<i64> {
    member.parse().ok()
}

/// Deadline members name the shard and the match.
pub fn deadline_member(shard: ShardId, match_id: i64) -> String {
    format!("{shard}:{match_id}")
}

pub fn parse_deadline_member(member: &str) -> Option<(ShardId, i64)> {
    let (s, m) = member.split_once(':')?;
    Some((s.parse().ok()?, m.parse().ok()?))
}

impl GenerationKeys {
    /// Prefix of every key of the generation, for SCAN when dropping it.
    pub fn base(&self) -> &str {
        &self.base
    }

    pub fn progress(&self) -> String {
        format!("{}:progress", self.base)
    }

    pub fn player(&self, player_id: i64) -> String {
        format!("{}:player:{player_id}", self.base)
    }

    pub fn player_season(&self, player_id: i64, season: SeasonId) -> String {
        format!("{}:player:{player_id}:{season}", self.base)
    }

    /// The all-time board (`None`) or a season's board.
    pub fn board(&self, season: Option<SeasonId>) -> String {
        match season {
            None => format!("{}:board", self.base),
            Some(s) => format!("{}:board:{s}", self.base),
        }
    }

    pub fn seasons(&self) -> String {
        format!("{}:seasons", self.base)
    }

    pub fn match_state(&self, match_id: i64) -> String {
        format!("{}:match:{match_id}", self.base)
    }

    pub fn deadlines(&self) -> String {
        format!("{}:deadlines", self.base)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names() {
        let k = Keys::new("rps");
        assert_eq!(k.events(3), "rps:events:{3}");
        assert_eq!(k.cdc_checkpoint("mysql-a"), "rps:cdc:checkpoint:mysql-a");
        let g = k.generation_keys(2);
        let s: SeasonId = "2026Q4".parse().unwrap();
        assert_eq!(g.player_season(5, s), "rps:g2:player:5:2026Q4");
        assert_eq!(g.board(Some(s)), "rps:g2:board:2026Q4");
        assert_eq!(g.board(None), "rps:g2:board");
        assert_eq!(g.deadlines(), "rps:g2:deadlines");
    }

    #[test]
    fn members_round_trip_and_sort_by_id() {
        assert!(board_member(9) < board_member(10));
        assert_eq!(parse_board_member(&board_member(1234)), Some(1234));
        assert_eq!(
            parse_deadline_member(&deadline_member(3, 77)),
            Some((3, 77))
        );
    }
}
