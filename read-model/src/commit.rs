//! The batch commit: one atomic script that checks the fence and writes one
//! shard's coalesced changes into one generation.
//!
//! The live projector and replay's catch-up fold batches the same way
//! (`projector::apply`) and hand the result here as a [`BatchWrite`]; how it
//! lands in Redis (keys, fields, members, scores, the script's argument
//! layout) is decided in this module and `commit.lua` only.

use crate::keys::{board_member, counter_fields, GenerationKeys, ReadModelKeys};
use crate::lifecycle::MatchCounts;
use crate::redis_util::{is_noscript, value_text};
use fred::clients::Client;
use fred::interfaces::LuaInterface;
use fred::types::Value;
use rps_core::deadletter::DeadLetter;
use rps_core::fold::DeadlineChange;
use rps_core::keys::{deadline_member, PROJECTOR_GROUP};
use rps_core::stream::StreamId;
use rps_core::{Keys, MatchState, PlayerStats, SeasonId, ShardId, Timestamp};
use std::collections::{HashMap, HashSet};

const SCRIPT: &str = include_str!("commit.lua");

/// Everything one batch of a shard changes, coalesced per key.
#[derive(Debug, Default)]
pub struct BatchWrite {
    /// Counter deltas per player scope (`None`: all-time).
    pub stats: HashMap<(i64, Option<SeasonId>), PlayerStats>,
    /// Final state of every match the batch changed.
    pub matches: HashMap<i64, MatchState>,
    pub deadlines: HashMap<i64, DeadlineChange>,
    pub dead: Vec<DeadLetter>,
    /// Seasons the batch scored in (their boards exist from now on).
    pub seasons: HashSet<SeasonId>,
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
    sha: Option<String>,
}

impl Committer {
    pub fn new(client: Client, keys: Keys, generation: u64, shard: ShardId) -> Self {
        Committer {
            gk: keys.generation_keys(generation),
            keys,
            client,
            shard,
            sha: None,
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
        let reply = self.eval(keys, args).await?;
        tracing::debug!(
            shard = self.shard,
            args = n_args,
            eval_us = started.elapsed().as_micros() as u64,
            "commit script returned"
        );
        let mut parts = reply.into_array().into_iter();
        let status = parts
            .next()
            .and_then(|v| value_text(&v))
            .unwrap_or_default();
        let detail = parts
            .next()
            .and_then(|v| value_text(&v))
            .unwrap_or_default();
        match status.as_str() {
            "OK" => Ok(Outcome::Committed {
                applied_at: detail.parse().ok().map(Timestamp),
            }),
            "PROGRESS" => Ok(Outcome::ProgressMoved),
            "GENERATION" => Ok(Outcome::GenerationMoved {
                active: (!detail.is_empty()).then_some(detail),
            }),
            other => Err(CommitError::Protocol(other.to_string())),
        }
    }

    fn script_args(&self, plan: &BatchWrite, fence: &Fence) -> (Vec<String>, Vec<String>) {
        let keys = vec![
            self.keys.generation(),
            self.gk.progress(),
            self.keys.events(self.shard),
            self.keys.deadletter(),
            self.gk.deadlines(),
            self.gk.seasons(),
            self.gk.lifecycle(),
        ];
        let mut boards: HashMap<Option<SeasonId>, Vec<(i64, &PlayerStats)>> = HashMap::new();
        for ((player, season), d) in &plan.stats {
            if !d.is_zero() {
                boards.entry(*season).or_default().push((*player, d));
            }
        }
        let members: usize = boards.values().map(Vec::len).sum();
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
            15 + boards.len() * 4
                + members * 5
                + plan.matches.len() * 2
                + zadd.len() * 2
                + zrem.len()
                + plan.dead.len() * 30
                + plan.seasons.len()
                + states.len() * 2,
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
        a.push(boards.len().to_string());
        a.push(plan.matches.len().to_string());
        a.push(zadd.len().to_string());
        a.push(zrem.len().to_string());
        a.push(plan.dead.len().to_string());
        a.push(plan.seasons.len().to_string());
        a.push(states.len().to_string());
        for (season, deltas) in &boards {
            let fields: Vec<(String, i64)> = deltas
                .iter()
                .flat_map(|(player, d)| counter_fields(*player).into_iter().zip(d.stored_values()))
                .filter(|(_, v)| *v != 0)
                .collect();
            a.push(self.gk.board(*season));
            a.push(self.gk.counters(*season));
            a.push(deltas.len().to_string());
            a.push(fields.len().to_string());
            a.extend(deltas.iter().map(|(player, _)| board_member(*player)));
            a.extend(deltas.iter().map(|(_, d)| d.board_score().to_string()));
            a.extend(fields.iter().map(|(f, _)| f.clone()));
            a.extend(fields.iter().map(|(_, v)| v.to_string()));
        }
        for (mid, state) in &plan.matches {
            a.push(self.gk.match_state(*mid));
            a.push(state.to_value());
        }
        for (score, member) in zadd {
            a.push(score.to_string());
            a.push(member);
        }
        a.extend(zrem);
        for d in &plan.dead {
            for (k, v) in d.to_pairs() {
                a.push(k.to_string());
                a.push(v);
            }
        }
        a.extend(plan.seasons.iter().map(|s| s.to_string()));
        for (field, delta) in states {
            a.push(field.to_string());
            a.push(delta.to_string());
        }
        (keys, a)
    }

    async fn eval(&mut self, keys: Vec<String>, args: Vec<String>) -> Result<Value, CommitError> {
        let sha = match &self.sha {
            Some(s) => s.clone(),
            None => {
                let s: String = self.client.script_load(SCRIPT).await?;
                self.sha = Some(s.clone());
                s
            }
        };
        match self.client.evalsha(sha, keys.clone(), args.clone()).await {
            Err(e) if is_noscript(&e) => {
                // Redis restarted or flushed its script cache: load again once.
                let s: String = self.client.script_load(SCRIPT).await?;
                self.sha = Some(s.clone());
                Ok(self.client.evalsha(s, keys, args).await?)
            }
            other => Ok(other?),
        }
    }
}
