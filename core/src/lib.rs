//! The shared vocabulary of the match-result pipeline.
//!
//! Everything that more than one component must agree on lives here and only
//! here: the event model ([`event`]), the per-match state machine and its
//! score effects ([`fold`]), the deployment topology ([`config`]), the Redis
//! key names ([`keys`]), the stream entry codec ([`stream`]) and the match id
//! generator ([`ids`]), and the retry vocabulary ([`retry`]: which errors
//! are transient, and the one backoff). It does no I/O: no MySQL, no Redis,
//! no network; with the `redis` feature it also holds the one Redis client
//! policy ([`redis_client`]) every component connects with, and with the
//! `backoff` feature the timer that waits between attempts.

pub mod checkpoint;
pub mod config;
pub mod deadletter;
pub mod event;
pub mod fold;
pub mod gtid;
pub mod health;
pub mod ids;
pub mod keys;
pub mod metric_catalogue;
#[cfg(feature = "redis")]
pub mod redis_client;
pub mod retry;
pub mod stream;
pub mod time;
pub mod tls;
pub mod xa;

pub use config::{Config, ConfigError, ServerConfig};
pub use event::{EventType, Gesture, MatchEvent, Outcome, SeasonId, ShardId};
pub use fold::{MatchState, MatchStatus, PlayerStats, Rejection, StatsDelta, Transition};
pub use gtid::{Gtid, GtidPosition};
pub use keys::Keys;
pub use stream::{SourcePosition, StreamEvent};
pub use time::Timestamp;
pub use xa::Xid;

/// The logical shard of a match: the challenger's id modulo the shard count.
///
/// Uses the Euclidean remainder so a (never expected) negative id still maps
/// into `0..shard_count` instead of panicking or indexing out of range.
pub fn shard_of(player_a_id: i64, shard_count: u16) -> ShardId {
    player_a_id.rem_euclid(i64::from(shard_count)) as ShardId
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn routing_is_challenger_mod_shard_count() {
        assert_eq!(shard_of(0, 8), 0);
        assert_eq!(shard_of(17, 8), 1);
        assert_eq!(shard_of(i64::MAX, 8), 7);
        assert_eq!(shard_of(-1, 8), 7);
        assert_eq!(shard_of(12345, 1), 0);
    }
}
