//! Redis key names, in one place.
//!
//! Layout (with the default prefix `rps`):
//!
//! | key | type | what |
//! |---|---|---|
//! | `rps:events:{n}` | stream | decoded events of shard `n` (braces: a Redis Cluster hash tag) |
//! | `rps:cdc:checkpoint:<server>` | string | where the reader of `server` resumes: written after the target steps of each batch, with the step number of every target's last step |
//! | `rps:cdc:checkpoint:<server>:{t}` | string | what target `t` (a shard `{n}` or the dead letters `{dl}`) has of `server`'s binlog, written atomically with the items it covers |
//! | `rps:cdc:resnapshot` | hash | server → why its reader cannot resume (binlog purged): a request to rebuild from snapshots, cleared by the bootstrap's commit |
//! | `rps:cdc:xa:<server>:{t}` | hash | xid key → [`crate::xa::HeldBranch`]: every XA branch of `server` the reader saw prepared and not yet decided that holds items for target `t` |
//! | `rps:cdc:xa:<server>:{t}:<xid>:rows` | stream | the rows (or dead letters) for target `t` a prepared branch holds, published when it commits |
//! | `rps:cdc:xa:<server>:{n}:<xid>:matches` | set | `<shard>:<match>` of every match of shard `n` a prepared branch holds rows of |
//! | `rps:projector:lease:<n>` | string | the projector worker holding shard `n` (TTL) |
//! | `rps:recovery:bootstrap` | string | the last bootstrap's record; its absence means Redis lost the state |
//! | `rps:recovery:lock` | string | the supervisor bootstrapping now (TTL, renewed) |
//! | `rps:deadletter:{dl}` | stream | rejected events and failed deadlines |
//! | `rps:compensator:{n}:leases` | sorted set | deadline member of shard `n` → until when (Unix ms) no compensator may take it |
//! | `rps:compensator:{n}:attempts` | hash | deadline member of shard `n` → its attempt history while it is retried or parked |
//! | `rps:compensator:wakeup` | pub/sub channel | wakes the compensators' deadline loops early |
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
    partitions: u16,
}

impl Keys {
    /// The keys under `prefix`, with one player partition.
    pub fn new(prefix: &str) -> Self {
        Keys {
            prefix: prefix.to_string(),
            partitions: 1,
        }
    }

    /// The same keys with the players spread over `partitions` partitions
    /// (`redis.partitions`).
    pub fn with_partitions(mut self, partitions: u16) -> Self {
        self.partitions = partitions.max(1);
        self
    }

    pub fn prefix(&self) -> &str {
        &self.prefix
    }

    /// How many partitions the players' read models are spread over.
    pub fn partitions(&self) -> u16 {
        self.partitions
    }

    pub fn events(&self, shard: ShardId) -> String {
        format!("{}:events:{}", self.prefix, shard_tag(shard))
    }

    pub fn cdc_checkpoint(&self, server: &str) -> String {
        format!("{}:cdc:checkpoint:{server}", self.prefix)
    }

    /// Readers that cannot resume from their checkpoint ask the recovery
    /// supervisor for a rebuild here.
    pub fn cdc_resnapshot(&self) -> String {
        format!("{}:cdc:resnapshot", self.prefix)
    }

    /// What `target` has of `server`'s binlog: the checkpoint its own
    /// publish steps compare and set, in the target's slot.
    pub fn cdc_target_checkpoint(&self, server: &str, target: PublishTarget) -> String {
        format!("{}:cdc:checkpoint:{server}:{}", self.prefix, target.tag())
    }

    /// Every target checkpoint of `server`: a rewind of the server
    /// checkpoint (a bootstrap, a benchmark) deletes them, else the targets
    /// would skip what they already had.
    pub fn cdc_target_checkpoints(&self, server: &str, shard_count: u16) -> Vec<String> {
        PublishTarget::all(shard_count)
            .map(|t| self.cdc_target_checkpoint(server, t))
            .collect()
    }

    /// Prepared XA branches of `server` holding items for `target`, by
    /// [`crate::Xid::key`].
    pub fn cdc_xa_branches(&self, server: &str, target: PublishTarget) -> String {
        format!("{}:cdc:xa:{server}:{}", self.prefix, target.tag())
    }

    /// The items for `target` a prepared branch holds until its decision;
    /// `xid_key` is [`crate::Xid::key`].
    pub fn cdc_xa_held(&self, server: &str, target: PublishTarget, xid_key: &str) -> String {
        format!(
            "{}:cdc:xa:{server}:{}:{xid_key}:rows",
            self.prefix,
            target.tag()
        )
    }

    /// The matches of `shard` a prepared branch holds rows of (members
    /// [`crate::xa::held_match_member`]), so a compensator blocked by the
    /// branch can name it.
    pub fn cdc_xa_matches(&self, server: &str, shard: ShardId, xid_key: &str) -> String {
        format!(
            "{}:cdc:xa:{server}:{}:{xid_key}:matches",
            self.prefix,
            shard_tag(shard)
        )
    }

    /// The dead-letter stream. Tagged `{dl}`: the projector forwards a
    /// batch's rejections here in one step with its fence
    /// (`read_model::score`), whose key shares the tag.
    pub fn deadletter(&self) -> String {
        format!(
            "{}:deadletter:{}",
            self.prefix,
            PublishTarget::DeadLetters.tag()
        )
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

    /// Held (with a TTL, renewed) by the one recovery supervisor that
    /// bootstraps: several supervise at once when readers run one process
    /// per server.
    pub fn bootstrap_lock(&self) -> String {
        format!("{}:recovery:lock", self.prefix)
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

    /// Compensator bookkeeping: leases of a shard's claimed deadlines. In
    /// the shard's slot, because the claim reads it in one script with the
    /// shard's deadline set.
    pub fn deadline_leases(&self, shard: ShardId) -> String {
        format!("{}:compensator:{}:leases", self.prefix, shard_tag(shard))
    }

    /// Compensator bookkeeping: attempt history of a shard's deadlines
    /// being retried or parked. In the shard's slot: the claim drops the
    /// history of a deadline that is gone with its lease.
    pub fn deadline_attempts(&self, shard: ShardId) -> String {
        format!("{}:compensator:{}:attempts", self.prefix, shard_tag(shard))
    }

    /// Pub/sub channel that wakes the compensators' deadline loops early:
    /// publish to it after adding a deadline that is already due (a lagging
    /// projector, an operator's `dlq retry`). Losing a message only costs the
    /// loop's bounded safety re-check.
    pub fn compensator_wakeup(&self) -> String {
        format!("{}:compensator:wakeup", self.prefix)
    }
}

/// The hash tag of a shard's slot, `{n}`, which the generation's per-shard
/// keys (`read_model::GenerationKeys`) spell the same way: a script may
/// touch keys of one slot only on Redis Cluster, and a shard's steps (the
/// projector's commit, the compensator's claim) span several of them.
pub fn shard_tag(shard: ShardId) -> String {
    format!("{{{shard}}}")
}

/// Where a reader's item goes: a shard's stream, or the dead letters. Each
/// target is one slot on Redis Cluster, and the reader's publish steps are
/// one per target ([`Keys::cdc_target_checkpoint`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum PublishTarget {
    Shard(ShardId),
    DeadLetters,
}

impl PublishTarget {
    /// Every target of a deployment of `shard_count` shards, in a fixed order
    /// ([`PublishTarget::index`]).
    pub fn all(shard_count: u16) -> impl Iterator<Item = PublishTarget> {
        (0..shard_count)
            .map(PublishTarget::Shard)
            .chain(std::iter::once(PublishTarget::DeadLetters))
    }

    /// Position in [`PublishTarget::all`].
    pub fn index(self, shard_count: u16) -> usize {
        match self {
            PublishTarget::Shard(s) => usize::from(s),
            PublishTarget::DeadLetters => usize::from(shard_count),
        }
    }

    /// The slot's hash tag: the shard's (`{n}`) or the dead letters' (`{dl}`).
    pub fn tag(self) -> String {
        match self {
            PublishTarget::Shard(s) => shard_tag(s),
            PublishTarget::DeadLetters => "{dl}".to_string(),
        }
    }

    /// The name in a server checkpoint's step record: `<n>` or `dl`.
    pub fn name(self) -> String {
        match self {
            PublishTarget::Shard(s) => s.to_string(),
            PublishTarget::DeadLetters => "dl".to_string(),
        }
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
        assert_eq!(k.deadline_leases(3), "rps:compensator:{3}:leases");
        assert_eq!(k.deadline_attempts(3), "rps:compensator:{3}:attempts");
        assert_eq!(k.cdc_checkpoint("mysql-a"), "rps:cdc:checkpoint:mysql-a");
        assert_eq!(
            k.cdc_target_checkpoint("mysql-a", PublishTarget::Shard(3)),
            "rps:cdc:checkpoint:mysql-a:{3}"
        );
        assert_eq!(
            k.cdc_xa_held("a", PublishTarget::DeadLetters, "x"),
            "rps:cdc:xa:a:{dl}:x:rows"
        );
        assert_eq!(k.deadletter(), "rps:deadletter:{dl}");
        assert_eq!(k.all_pattern(), "rps:*");
        assert_eq!(
            parse_deadline_member(&deadline_member(3, 77)),
            Some((3, 77))
        );
    }
}
