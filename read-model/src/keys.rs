//! Key names of one read-model generation, `{prefix}:g<g>:…`, and the
//! members stored in them.

use rps_core::{Keys, SeasonId, ShardId};

/// The generation keys of the pipeline's [`Keys`].
pub trait ReadModelKeys {
    /// Keys of one read-model generation.
    fn generation_keys(&self, generation: u64) -> GenerationKeys;

    /// The copy of the generation marker in a shard's slot, which the
    /// shard's commit checks: a script cannot read the marker itself from
    /// another slot.
    fn marker_in_shard(&self, shard: ShardId) -> String;

    /// The copy of the generation marker in a partition's slot.
    fn marker_in_partition(&self, partition: Partition) -> String;

    /// The configured partition count ([`Keys::partitions`]).
    fn partitions_of_keys(&self) -> u16;

    /// The record of the last generation switch
    /// ([`crate::generation::switch`]), in the marker's slot: the step that
    /// decides a switch also flips the marker, atomically.
    fn switch_record(&self) -> String;

    /// Every slot's copy of the marker, for a switch to write.
    fn marker_copies(&self, shard_count: u16) -> Vec<String> {
        (0..shard_count)
            .map(|s| self.marker_in_shard(s))
            .chain((0..self.partitions_of_keys()).map(|p| self.marker_in_partition(p)))
            .collect()
    }
}

impl ReadModelKeys for Keys {
    fn generation_keys(&self, generation: u64) -> GenerationKeys {
        GenerationKeys {
            base: format!("{}:g{generation}", self.prefix()),
            generation,
            partitions: self.partitions(),
        }
    }

    fn marker_in_shard(&self, shard: ShardId) -> String {
        format!("{}:{{{shard}}}", self.generation())
    }

    fn partitions_of_keys(&self) -> u16 {
        self.partitions()
    }

    fn marker_in_partition(&self, partition: Partition) -> String {
        format!("{}:{{p{partition}}}", self.generation())
    }

    fn switch_record(&self) -> String {
        let marker = self.generation();
        if hash_tag(&marker).is_some() {
            // Already tagged (a prefix with braces): the first tag decides.
            format!("{marker}:switch")
        } else {
            // An untagged key hashes whole, so the whole name as the tag
            // lands in the same slot.
            format!("{marker}:switch:{{{marker}}}")
        }
    }
}

/// The part of a key Redis Cluster hashes, when it has a tag: what lies
/// between the first `{` and the first `}` after it, if not empty.
fn hash_tag(key: &str) -> Option<&str> {
    let open = key.find('{')?;
    let len = key[open + 1..].find('}')?;
    (len > 0).then(|| &key[open + 1..open + 1 + len])
}

/// A player partition (`0..partitions`).
pub type Partition = u16;

/// Keys of one read-model generation, `{prefix}:g{n}:…`. A player's
/// counters and board entries live in partition `id mod partitions`, one
/// hash slot each (hash tag `{p<n>}`), so a cluster spreads the players'
/// writes over its masters; the count is `redis.partitions`
/// ([`Keys::partitions`]), recorded by the generation ([`crate::score`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GenerationKeys {
    base: String,
    pub generation: u64,
    partitions: u16,
}

/// Board members are zero-padded player ids so that equal scores order by
/// the lower id (Redis breaks score ties lexicographically).
pub fn board_member(player_id: i64) -> String {
    format!("{player_id:019}")
}

pub fn parse_board_member(member: &str) -> Option<i64> {
    member.parse().ok()
}

/// Suffixes of a player's fields in a counters hash, in
/// [`rps_core::PlayerStats::stored_values`] order: wins, draws, losses,
/// forfeits. `matches` is not stored (wins + draws + losses).
pub const COUNTER_SUFFIXES: [&str; 4] = ["w", "d", "l", "f"];

/// A player's fields in a counters hash: `<id>:w`, `<id>:d`, `<id>:l`, `<id>:f`.
pub fn counter_fields(player_id: i64) -> [String; 4] {
    COUNTER_SUFFIXES.map(|c| format!("{player_id}:{c}"))
}

/// `(player, index in COUNTER_SUFFIXES)` of a counters-hash field.
pub fn parse_counter_field(field: &str) -> Option<(i64, usize)> {
    let (id, c) = field.rsplit_once(':')?;
    Some((
        id.parse().ok()?,
        COUNTER_SUFFIXES.iter().position(|s| *s == c)?,
    ))
}

impl GenerationKeys {
    /// Prefix of every key of the generation, for SCAN when dropping it.
    pub fn base(&self) -> &str {
        &self.base
    }

    /// SCAN pattern of every key of the generation.
    pub fn pattern(&self) -> String {
        format!("{}:*", self.base)
    }

    /// What the generation has applied of a shard's stream: fields `id`
    /// (the last entry), `q` (the shard's sequence), `at` (event time of
    /// the last event) and `applied_at` (commit time).
    pub fn progress(&self, shard: ShardId) -> String {
        format!("{}:{{{shard}}}:progress", self.base)
    }

    /// How many player partitions the generation has.
    pub fn partitions(&self) -> u16 {
        self.partitions
    }

    /// Every partition, in order.
    pub fn all_partitions(&self) -> std::ops::Range<Partition> {
        0..self.partitions
    }

    /// The partition holding a player's counters and board entries.
    pub fn partition_of(&self, player_id: i64) -> Partition {
        player_id.rem_euclid(i64::from(self.partitions)) as Partition
    }

    /// The counters of a partition's players in one scope (`None`:
    /// all-time), a hash of [`counter_fields`].
    pub fn counters(&self, partition: Partition, season: Option<SeasonId>) -> String {
        match season {
            None => format!("{}:{{p{partition}}}:counters", self.base),
            Some(s) => format!("{}:{{p{partition}}}:counters:{s}", self.base),
        }
    }

    /// A partition's part of the all-time board (`None`) or of a season's.
    pub fn board(&self, partition: Partition, season: Option<SeasonId>) -> String {
        match season {
            None => format!("{}:{{p{partition}}}:board", self.base),
            Some(s) => format!("{}:{{p{partition}}}:board:{s}", self.base),
        }
    }

    /// Seasons a partition has board entries in.
    pub fn seasons(&self, partition: Partition) -> String {
        format!("{}:{{p{partition}}}:seasons", self.base)
    }

    /// shard → the last outbox sequence number of that shard applied to
    /// the partition ([`crate::score`]).
    pub fn fences(&self, partition: Partition) -> String {
        format!("{}:{{p{partition}}}:fences", self.base)
    }

    /// shard → the last sequence number of the shard whose rejections were
    /// forwarded to the dead-letter stream (in its slot, `{dl}`).
    pub fn deadletter_fences(&self) -> String {
        format!("{}:{{dl}}:fences", self.base)
    }

    /// A shard's outbox: the player deltas of its committed batches, each
    /// event's tagged with its sequence number, waiting for the partitions
    /// ([`crate::score`]). Tagged like the shard's stream.
    pub fn outbox(&self, shard: ShardId) -> String {
        format!("{}:{{{shard}}}:outbox", self.base)
    }

    /// A match's state, in the slot of the shard that owns the match.
    pub fn match_state(&self, shard: ShardId, match_id: i64) -> String {
        format!("{}:{{{shard}}}:match:{match_id}", self.base)
    }

    /// SCAN pattern of every match key of the generation.
    pub fn all_matches_pattern(&self) -> String {
        format!("{}:{{*}}:match:*", self.base)
    }

    /// The open matches' deadlines of a shard.
    pub fn deadlines(&self, shard: ShardId) -> String {
        format!("{}:{{{shard}}}:deadlines", self.base)
    }

    /// Matches per lifecycle state, a hash of
    /// [`crate::lifecycle::MatchCounts`] fields.
    pub fn lifecycle(&self, shard: ShardId) -> String {
        format!("{}:{{{shard}}}:lifecycle", self.base)
    }
}

/// The hash slot a generation key lives in: a shard's or a partition's.
#[derive(Debug, Clone, Copy)]
enum Slot {
    Shard(ShardId),
    Partition(Partition),
}

/// Which read model a key is, for reports and metrics labels.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum KeyKind {
    Counters,
    Board,
    Seasons,
    Match,
    Deadlines,
    Lifecycle,
}

impl KeyKind {
    pub fn as_str(self) -> &'static str {
        match self {
            KeyKind::Counters => "counters",
            KeyKind::Board => "board",
            KeyKind::Seasons => "seasons",
            KeyKind::Match => "match",
            KeyKind::Deadlines => "deadlines",
            KeyKind::Lifecycle => "lifecycle",
        }
    }
}

/// A read-model key, parsed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum KeyRef {
    Counters(Partition, Option<SeasonId>),
    Board(Partition, Option<SeasonId>),
    Seasons(Partition),
    Match(ShardId, i64),
    Deadlines(ShardId),
    Lifecycle(ShardId),
}

impl GenerationKeys {
    /// What a key of the generation is, from its name (`None`: not a read
    /// model, e.g. `progress`, or not ours).
    pub fn classify(&self, key: &str) -> Option<(KeyKind, KeyRef)> {
        let rest = key.strip_prefix(self.base())?.strip_prefix(':')?;
        let mut parts = rest.split(':');
        let mut kind = parts.next()?;
        let mut slot = None;
        if let Some(tag) = kind.strip_prefix('{').and_then(|k| k.strip_suffix('}')) {
            slot = Some(match tag.strip_prefix('p') {
                Some(p) => {
                    let p: Partition = p.parse().ok()?;
                    if p >= self.partitions {
                        return None;
                    }
                    Slot::Partition(p)
                }
                None => Slot::Shard(tag.parse().ok()?),
            });
            kind = parts.next()?;
        }
        let a = parts.next();
        if parts.next().is_some() {
            return None;
        }
        let season = |s: &str| s.parse::<SeasonId>().ok();
        use Slot::{Partition as P, Shard as S};
        match (slot?, kind, a) {
            (P(p), "counters", None) => Some((KeyKind::Counters, KeyRef::Counters(p, None))),
            (P(p), "counters", Some(s)) => {
                Some((KeyKind::Counters, KeyRef::Counters(p, Some(season(s)?))))
            }
            (P(p), "board", None) => Some((KeyKind::Board, KeyRef::Board(p, None))),
            (P(p), "board", Some(s)) => Some((KeyKind::Board, KeyRef::Board(p, Some(season(s)?)))),
            (P(p), "seasons", None) => Some((KeyKind::Seasons, KeyRef::Seasons(p))),
            (S(s), "match", Some(id)) => Some((KeyKind::Match, KeyRef::Match(s, id.parse().ok()?))),
            (S(s), "deadlines", None) => Some((KeyKind::Deadlines, KeyRef::Deadlines(s))),
            (S(s), "lifecycle", None) => Some((KeyKind::Lifecycle, KeyRef::Lifecycle(s))),
            _ => None,
        }
    }

    /// The name of a parsed key.
    pub fn name_of(&self, key: &KeyRef) -> (String, KeyKind) {
        match key {
            KeyRef::Counters(p, s) => (self.counters(*p, *s), KeyKind::Counters),
            KeyRef::Match(s, id) => (self.match_state(*s, *id), KeyKind::Match),
            KeyRef::Board(p, s) => (self.board(*p, *s), KeyKind::Board),
            KeyRef::Seasons(p) => (self.seasons(*p), KeyKind::Seasons),
            KeyRef::Deadlines(s) => (self.deadlines(*s), KeyKind::Deadlines),
            KeyRef::Lifecycle(s) => (self.lifecycle(*s), KeyKind::Lifecycle),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names() {
        let k = Keys::new("rps").with_partitions(16);
        let g = k.generation_keys(2);
        let s: SeasonId = "2026Q4".parse().unwrap();
        assert_eq!(g.counters(3, Some(s)), "rps:g2:{p3}:counters:2026Q4");
        assert_eq!(g.counters(0, None), "rps:g2:{p0}:counters");
        assert_eq!(g.board(15, Some(s)), "rps:g2:{p15}:board:2026Q4");
        assert_eq!(g.board(1, None), "rps:g2:{p1}:board");
        assert_eq!(g.outbox(4), "rps:g2:{4}:outbox");
        assert_eq!(g.partition_of(33), 1);
        assert_eq!(k.marker_in_shard(3), "rps:generation:{3}");
        assert_eq!(k.marker_in_partition(3), "rps:generation:{p3}");
        assert_eq!(g.partition_of(-1), 15);
        assert_eq!(g.deadlines(1), "rps:g2:{1}:deadlines");
        assert_eq!(g.lifecycle(0), "rps:g2:{0}:lifecycle");
        assert_eq!(g.match_state(5, 77), "rps:g2:{5}:match:77");
        assert_eq!(g.progress(5), "rps:g2:{5}:progress");
        assert_eq!(k.switch_record(), "rps:generation:switch:{rps:generation}");
    }

    #[test]
    fn the_switch_record_shares_the_markers_slot() {
        for prefix in ["rps", "t42_hist_replay", "a{b}c"] {
            let k = Keys::new(prefix);
            assert_eq!(
                fred::util::redis_keyslot(k.switch_record().as_bytes()),
                fred::util::redis_keyslot(k.generation().as_bytes()),
                "{prefix}"
            );
        }
    }

    #[test]
    fn keys_classify_back() {
        let g = Keys::new("rps").with_partitions(16).generation_keys(3);
        let s: SeasonId = "2026Q4".parse().unwrap();
        for key in [
            KeyRef::Counters(2, Some(s)),
            KeyRef::Counters(0, None),
            KeyRef::Board(15, Some(s)),
            KeyRef::Board(3, None),
            KeyRef::Match(3, 9),
            KeyRef::Seasons(7),
            KeyRef::Deadlines(0),
            KeyRef::Lifecycle(12),
        ] {
            let (name, kind) = g.name_of(&key);
            assert_eq!(g.classify(&name), Some((kind, key)), "{name}");
        }
        assert_eq!(g.classify(&g.progress(1)), None);
        assert_eq!(g.classify(&g.fences(2)), None);
        assert_eq!(g.classify(&g.outbox(2)), None);
        assert_eq!(g.classify("rps:g4:board"), None);
        assert_eq!(g.classify("rps:g3:board"), None);
        assert_eq!(g.classify("rps:g3:{p16}:board"), None);
    }

    #[test]
    fn members_round_trip_and_sort_by_id() {
        assert!(board_member(9) < board_member(10));
        assert_eq!(parse_board_member(&board_member(1234)), Some(1234));
        assert_eq!(parse_counter_field(&counter_fields(77)[3]), Some((77, 3)));
        assert_eq!(parse_counter_field("77:x"), None);
    }
}
