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
//! | `rps:g<g>:…` | | one read-model generation: its layout (names and values) is `read_model`'s |
//!
//! Everything under `rps:g<g>:` belongs to the `read-model` crate, which
//! owns the layout of the read models (names, stored values, reads and
//! writes); this module names the keys of the pipeline around them.

use crate::event::ShardId;

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

    /// SCAN pattern of every key under the prefix: a test's or a
    /// benchmark's cleanup of its own deployment.
    pub fn all_pattern(&self) -> String {
        format!("{}:*", self.prefix)
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
}

/// Names a match across shards: `<shard>:<match>` (deadline members, the
/// matches an XA branch holds).
pub fn deadline_member(shard: ShardId, match_id: i64) -> String {
    format!("{shard}:{match_id}")
}

pub fn parse_deadline_member(member: &str) -> Option<(ShardId, i64)> {
    let (s, m) = member.split_once(':')?;
    Some((s.parse().ok()?, m.parse().ok()?))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names() {
        let k = Keys::new("rps");
        assert_eq!(k.events(3), "rps:events:{3}");
        assert_eq!(k.cdc_checkpoint("mysql-a"), "rps:cdc:checkpoint:mysql-a");
        assert_eq!(k.all_pattern(), "rps:*");
        assert_eq!(
            parse_deadline_member(&deadline_member(3, 77)),
            Some((3, 77))
        );
    }
}
