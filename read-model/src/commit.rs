//! The batch commit: one atomic script that checks the fence and writes one
//! shard's coalesced changes into one generation.
//!
//! The live projector and replay's catch-up fold batches the same way
//! (`projector::apply`) and hand the result here as a [`BatchWrite`]; how it
//! lands in Redis (keys, fields, members, scores, the script's argument
//! layout) is decided in this module and `commit.lua` only.

use crate::generation::switch::Barrier;
use crate::keys::{GenerationKeys, ReadModelKeys};
use crate::lifecycle::MatchCounts;
use crate::redis_util::script_reply;
use crate::score::{encode_deltas, encode_letters, ScoredDelta, ScoredLetter};
use fred::clients::Client;
use fred::types::scripts::Script;
use fred::types::Value;
use rps_core::fold::DeadlineChange;
use rps_core::keys::{deadline_member, PROJECTOR_GROUP};
use rps_core::stream::StreamId;
use rps_core::{Keys, MatchState, ShardId, Timestamp};
use std::collections::HashMap;
use std::sync::LazyLock;

static SCRIPT: LazyLock<Script> = LazyLock::new(|| {
    Script::from_lua(concat!(
        include_str!("prelude.lua"),
        include_str!("commit.lua")
    ))
});

/// How long a shard's outbox keeps entries every partition has applied:
/// long enough to outlast a Redis replica's lag, so a failover that rolls a
/// partition back finds what it lost still there.
pub const OUTBOX_RETAIN_MS: u64 = 10_000;

/// Everything one batch of a shard changes, coalesced per key.
#[derive(Debug, Default)]
pub struct BatchWrite {
    /// Every player delta of the batch with its event's sequence number,
    /// in order: the outbox entry the partitions apply ([`crate::score`]).
    pub scored: Vec<ScoredDelta>,
    /// Final state of every match the batch changed.
    pub matches: HashMap<i64, MatchState>,
    pub deadlines: HashMap<i64, DeadlineChange>,
    /// Rejections, each numbered by its entry: forwarded to the dead-letter
    /// stream through the outbox.
    pub dead: Vec<ScoredLetter>,
    /// `occurred_at` of the batch's last entry.
    pub last_at: Option<Timestamp>,
    /// Net change of the matches per lifecycle state.
    pub lifecycle: MatchCounts,
}

/// The fence a batch is committed under and what it moves.
#[derive(Debug, Clone)]
pub struct Fence {
    /// Refuse unless the generation is the active one (the live projector;
    /// replay building the next generation does not require it).
    pub require_active: bool,
    /// `progress[shard]` the batch was computed against.
    pub expected: Option<StreamId>,
    /// `progress[shard]` after the batch.
    pub last_id: StreamId,
    /// The shard's sequence the batch was computed against, and after it.
    pub sequence: (u64, u64),
    /// Move the projector group's last-delivered id to `last_id` (the live
    /// projector; a generation being rebuilt leaves the group alone).
    pub move_group: bool,
}

/// What the script answered.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// Applied; the commit time per Redis' clock.
    Committed { applied_at: Option<Timestamp> },
    /// `progress[shard]` was not what the batch was computed against.
    ProgressMoved,
    /// The generation is not the active one any more.
    GenerationMoved { active: Option<String> },
    /// A generation switch holds the shard: the caller waits for it
    /// ([`crate::generation::switch::resolve`]) and commits again, into
    /// whichever generation it ends with.
    Switching(Barrier),
}

#[derive(Debug, thiserror::Error)]
pub enum CommitError {
    #[error("redis: {0}")]
    Redis(#[from] fred::error::Error),
    #[error("unexpected reply from the commit script: {0}")]
    Protocol(String),
}

/// Commits batches of one shard into one generation.
pub struct Committer {
    client: Client,
    keys: Keys,
    gk: GenerationKeys,
    shard: ShardId,
}

impl Committer {
    pub fn new(client: Client, keys: Keys, generation: u64, shard: ShardId) -> Self {
        Committer {
            gk: keys.generation_keys(generation),
            keys,
            client,
            shard,
        }
    }

    pub fn generation(&self) -> u64 {
        self.gk.generation
    }

    /// Writes `batch` atomically if the fence holds.
    pub async fn commit(
        &mut self,
        batch: &BatchWrite,
        fence: &Fence,
    ) -> Result<Outcome, CommitError> {
        let (keys, args) = self.script_args(batch, fence);
        let n_args = args.len();
        let started = std::time::Instant::now();
        let reply: Value = SCRIPT.evalsha_with_reload(&self.client, keys, args).await?;
        tracing::debug!(
            shard = self.shard,
            args = n_args,
            eval_us = started.elapsed().as_micros() as u64,
            "commit script returned"
        );
        let (status, detail) = script_reply(reply);
        match status.as_str() {
            "OK" => Ok(Outcome::Committed {
                applied_at: detail.parse().ok().map(Timestamp),
            }),
            "PROGRESS" => Ok(Outcome::ProgressMoved),
            "GENERATION" => Ok(match Barrier::parse(&detail) {
                Some(barrier) => Outcome::Switching(barrier),
                None => Outcome::GenerationMoved {
                    active: (!detail.is_empty()).then_some(detail),
                },
            }),
            other => Err(CommitError::Protocol(other.to_string())),
        }
    }

    fn script_args(&self, plan: &BatchWrite, fence: &Fence) -> (Vec<String>, Vec<String>) {
        let keys = vec![
            self.keys.marker_in_shard(self.shard),
            self.gk.progress(self.shard),
            self.keys.events(self.shard),
            self.gk.deadlines(self.shard),
            self.gk.lifecycle(self.shard),
            self.gk.outbox(self.shard),
        ];
        let mut zadd = Vec::new();
        let mut zrem = Vec::new();
        for (mid, change) in &plan.deadlines {
            match change {
                DeadlineChange::Set(t) => {
                    zadd.push((t.as_millis(), deadline_member(self.shard, *mid)))
                }
                DeadlineChange::Clear => zrem.push(deadline_member(self.shard, *mid)),
                DeadlineChange::Unchanged => {}
            }
        }
        let states: Vec<(&str, i64)> = plan.lifecycle.nonzero().collect();
        let mut a = Vec::with_capacity(
            17 + plan.matches.len() * 2 + zadd.len() * 2 + zrem.len() + states.len() * 2,
        );
        a.push(self.gk.generation.to_string());
        a.push(if fence.require_active { "1" } else { "0" }.to_string());
        a.push(self.shard.to_string());
        a.push(fence.expected.map(|p| p.to_string()).unwrap_or_default());
        a.push(fence.last_id.to_string());
        a.push(
            plan.last_at
                .map(|t| t.as_micros().to_string())
                .unwrap_or_default(),
        );
        a.push(if fence.move_group { "1" } else { "0" }.to_string());
        a.push(PROJECTOR_GROUP.to_string());
        a.push(fence.sequence.0.to_string());
        a.push(fence.sequence.1.to_string());
        a.push(encode_deltas(&plan.scored));
        a.push(OUTBOX_RETAIN_MS.to_string());
        a.push(plan.matches.len().to_string());
        a.push(zadd.len().to_string());
        a.push(zrem.len().to_string());
        a.push(encode_letters(&plan.dead));
        a.push(states.len().to_string());
        for (mid, state) in &plan.matches {
            a.push(self.gk.match_state(self.shard, *mid));
            a.push(state.to_value());
        }
        for (score, member) in zadd {
            a.push(score.to_string());
            a.push(member);
        }
        a.extend(zrem);
        for (field, delta) in states {
            a.push(field.to_string());
            a.push(delta.to_string());
        }
        (keys, a)
    }
}
