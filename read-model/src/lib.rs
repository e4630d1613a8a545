//! The read models' layout in Redis, owned in one place.
//!
//! Everything under `{prefix}:g<g>:` is a read-model generation `g`: the
//! projector writes it batch by batch ([`commit`]), replay and the recovery
//! bootstrap write whole generations ([`bulk`]), the API, `rpsctl verify`
//! and the compensator read it ([`read`]), and [`generation`] says which one
//! is live. Key names are in [`keys`]. A change to the layout is a change to
//! this crate.
//!
//! | key | type | what |
//! |---|---|---|
//! | `rps:g<g>:progress` | hash | shard → last stream id applied to generation `g` (plus `<shard>:at`, `<shard>:applied_at`, `<shard>:q` the shard's sequence) |
//! | `rps:g<g>:{<shard>}:outbox` | stream | the player deltas of the shard's committed batches, for the partitions ([`score`]) |
//! | `rps:g<g>:{p<n>}:counters` / `rps:g<g>:{p<n>}:counters:<season>` | hash | partition `n`'s players' counters in the scope, fields `<id>:w`, `<id>:d`, `<id>:l`, `<id>:f` |
//! | `rps:g<g>:{p<n>}:board` / `rps:g<g>:{p<n>}:board:<season>` | sorted set | partition `n`'s part of a leaderboard |
//! | `rps:g<g>:{p<n>}:seasons` | set | seasons partition `n`'s players scored in |
//! | `rps:g<g>:{p<n>}:fences` | hash | shard → the last sequence number of the shard partition `n` has applied |
//! | `rps:g<g>:match:<id>` | string | match state |
//! | `rps:g<g>:deadlines` | sorted set | open matches' deadlines, score = ms, member `<shard>:<match>` |
//! | `rps:g<g>:lifecycle` | hash | matches per lifecycle state: `in_progress`, `finished`, `timed_out`, `voided` |
//!
//! Players are spread over `redis.partitions` partitions (`id mod n`; 1 on
//! one Redis), each one Redis Cluster hash slot (`{p<n>}`); a board is
//! the union of its partitions' parts, read back merged ([`read`]). A
//! batch is committed in two steps, each in one slot but for the marker:
//! the shard's ([`commit`]) and one per partition ([`score`]).
//!
//! Contents:
//! - a counters hash holds wins, draws, losses and forfeits of each player
//!   of its scope ([`keys::counter_fields`]) as integers; a counter that is
//!   0 is absent, and `matches` is wins + draws + losses, so a player whose
//!   matches fall to 0 has no field and is on no board. One hash per scope
//!   (not one per player) lets a batch read and write every player of a
//!   scope with one HMGET and one HSET;
//! - a board member is [`keys::board_member`]`(id)` with score
//!   [`rps_core::PlayerStats::board_score`], read in ascending score order;
//! - a match key holds [`rps_core::MatchState::to_value`];
//! - a deadline entry exists exactly while its match is `in_progress`,
//!   score = deadline in Unix milliseconds;
//! - `progress` maps the shard number to the last stream id applied;
//! - `lifecycle` counts the match keys by their state ([`lifecycle`]):
//!   the projector moves it by each batch's net change, so it is exact
//!   with the match keys at every commit.
//!
//! The deadline set is part of a generation (not a global `rps:deadlines`)
//! because it is derived from the events like every other read model: a
//! rebuild must rebuild it, and the switch must swap it with the rest.

pub mod bulk;
pub mod commit;
pub mod generation;
pub mod keys;
pub mod lifecycle;
pub mod read;
pub mod redis_util;
pub mod score;

pub use keys::{board_member, parse_board_member, GenerationKeys, KeyKind, KeyRef, ReadModelKeys};
