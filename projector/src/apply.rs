//! The batch applier: folds an ordered run of one shard's stream entries and
//! commits the result to one read-model generation in a single atomic step.
//!
//! Used by the live projector and by `rpsctl replay` (catching a rebuilt
//! generation up from the streams), so both apply events in exactly the same
//! way. It owns the shard's in-memory cache of match states; it does not read
//! streams or hold leases.
//!
//! A batch goes in two halves: [`plan`] folds it against the read state (the
//! progress and the match states, loaded here on a miss) into the writes,
//! without I/O; [`Applier`] performs the plan as one EVALSHA of
//! `read_model`'s commit script, which first checks the fence (the active
//! generation and `progress[shard]` equal what the batch was planned
//! against), then applies per-player deltas, final match states, deadline
//! changes, dead letters and the net change of matches per lifecycle state
//! coalesced in Rust, moves `progress[shard]` and XACKs. A redelivered entry
//! (id at or below progress) is never folded again.

pub mod plan;

use fred::clients::Client;
use plan::{CommitPlan, Plan, ReadState, Shard};
use read_model::commit::{CommitError, Committer, Fence, Outcome};
use read_model::generation::switch::Barrier;
use read_model::score::{ScoreError, Scorer};
use read_model::{GenerationKeys, ReadModelKeys};
use rps_core::stream::DecodeError;
use rps_core::{Keys, MatchState, ShardId, StreamEvent, Timestamp};
use std::collections::HashMap;
use std::time::Instant;

/// Matches kept in memory per shard before the cache is dropped and refilled
/// from Redis; bounds memory on long runs.
pub const DEFAULT_CACHE_CAPACITY: usize = 200_000;

pub use rps_core::stream::StreamId;

/// One stream entry as read: decoded, or the reason it could not be.
#[derive(Debug, Clone)]
pub struct BatchEntry {
    pub id: String,
    pub entry: Result<StreamEvent, Undecodable>,
}

/// An entry whose fields do not decode into an event; it becomes a dead letter.
#[derive(Debug, Clone)]
pub struct Undecodable {
    pub error: DecodeError,
    /// The raw fields, kept as the dead letter's payload.
    pub fields: Vec<(String, String)>,
}

/// What one committed batch did.
#[derive(Debug, Clone, Default)]
pub struct ApplyReport {
    /// Events folded into the read models.
    pub applied: usize,
    /// `applied` by event type, indexed by `EventType as usize`.
    pub applied_by_type: [usize; rps_core::EventType::ALL.len()],
    /// Entries the caller's predicate skipped (they still advance progress).
    pub skipped: usize,
    /// Entries at or below the stored progress: already applied, skipped.
    pub redelivered: usize,
    /// `(stream id, Rejection::code() or "undecodable")` of each dead letter written.
    pub rejected: Vec<(String, &'static str)>,
    /// Progress after the batch (unchanged if everything was redelivered).
    pub progress: Option<StreamId>,
    /// Commit time per Redis' clock (micros), if a script ran.
    pub applied_at: Option<Timestamp>,
    /// `occurred_at` of each applied event, for freshness measurements.
    pub occurred: Vec<Timestamp>,
    /// When each applied event entered its stream (the entry id's
    /// milliseconds, Redis' clock), in the order of `occurred`: splits
    /// freshness into the way to the stream and the projector's part.
    pub published: Vec<Timestamp>,
    /// Fence conflicts met (and resolved by recomputing) on the way.
    pub conflicts: u32,
}

#[derive(Debug, thiserror::Error)]
pub enum ApplyError {
    /// The active generation is not the one this applier writes to. The
    /// caller must re-read the generation and start a new applier.
    #[error("generation {expected} is no longer active (active: {active:?})")]
    GenerationChanged {
        expected: u64,
        active: Option<String>,
    },
    /// A generation switch holds the shard. The caller waits for it to end
    /// ([`read_model::generation::switch::resolve`]) and applies the batch
    /// again, into the generation it ends with; nothing was written.
    #[error("a switch from generation {} to {} holds the shard", .0.from, .0.to)]
    Switching(Barrier),
    #[error("redis: {0}")]
    Redis(#[from] fred::error::Error),
    #[error(transparent)]
    Commit(#[from] CommitError),
    /// Applying the player deltas to the partitions.
    #[error(transparent)]
    Score(ScoreError),
    /// The batch is not in stream order; a caller bug, never retried.
    #[error("batch entries are not in increasing stream-id order at {0}")]
    OutOfOrder(String),
    #[error("{0}")]
    BadId(String),
    #[error("unexpected script reply: {0}")]
    Protocol(String),
    /// Progress kept moving under us; another writer is active on the shard.
    #[error(
        "progress of shard {shard} changed {attempts} times in a row; another writer is active"
    )]
    Contended { shard: ShardId, attempts: u32 },
}

impl ApplyError {
    /// Whether waiting and retrying may succeed.
    pub fn is_transient(&self) -> bool {
        matches!(
            self,
            ApplyError::Redis(_)
                | ApplyError::Commit(CommitError::Redis(_))
                | ApplyError::Score(ScoreError::Redis(_) | ScoreError::Contended { .. })
                | ApplyError::Contended { .. }
        )
    }
}

/// How an [`Applier`] is fenced and whether it moves the projector group.
#[derive(Debug, Clone)]
pub struct ApplierOptions {
    /// Refuse to commit unless `keys.generation()` equals the applier's
    /// generation (the live projector). Replay building the next generation
    /// turns it off.
    pub require_active: bool,
    /// Move the projector group to each committed batch (the live projector).
    pub move_group: bool,
    pub cache_capacity: usize,
}

impl Default for ApplierOptions {
    fn default() -> Self {
        ApplierOptions {
            require_active: true,
            move_group: true,
            cache_capacity: DEFAULT_CACHE_CAPACITY,
        }
    }
}

/// Applies batches of one shard to one generation. See the module doc.
pub struct Applier {
    client: Client,
    gk: GenerationKeys,
    committer: Committer,
    shard: ShardId,
    shard_count: u16,
    options: ApplierOptions,
    /// Committed match states; `None` = known to have no valid event yet.
    cache: HashMap<i64, Option<MatchState>>,
    /// Committed `progress[shard]` and the shard's sequence; `None` until
    /// loaded.
    position: Option<(Option<StreamId>, u64)>,
    /// The player partitions' half of each batch.
    scorer: Scorer,
}

impl From<ScoreError> for ApplyError {
    fn from(e: ScoreError) -> Self {
        match e {
            ScoreError::GenerationMoved { expected, active } => {
                match read_model::generation::switch::barrier_in(active.as_deref()) {
                    Some(barrier) => ApplyError::Switching(barrier),
                    None => ApplyError::GenerationChanged { expected, active },
                }
            }
            other => ApplyError::Score(other),
        }
    }
}

impl Applier {
    pub fn new(
        client: Client,
        keys: Keys,
        generation: u64,
        shard: ShardId,
        shard_count: u16,
        options: ApplierOptions,
    ) -> Self {
        Applier {
            gk: keys.generation_keys(generation),
            committer: Committer::new(client.clone(), keys.clone(), generation, shard),
            scorer: Scorer::new(
                client.clone(),
                keys,
                generation,
                shard,
                options.require_active,
            ),
            client,
            shard,
            shard_count,
            options,
            cache: HashMap::new(),
            position: None,
        }
    }

    pub fn generation(&self) -> u64 {
        self.gk.generation
    }

    pub fn shard(&self) -> ShardId {
        self.shard
    }

    /// Forgets everything cached: the next batch reloads progress and states.
    pub fn invalidate(&mut self) {
        self.cache.clear();
        self.position = None;
        self.scorer.invalidate();
    }

    /// Committed progress of the shard in this generation (loaded if unknown).
    pub async fn progress(&mut self) -> Result<Option<StreamId>, ApplyError> {
        Ok(self.position().await?.0)
    }

    async fn position(&mut self) -> Result<(Option<StreamId>, u64), ApplyError> {
        if let Some(p) = self.position {
            return Ok(p);
        }
        let (id, seq) =
            read_model::read::shard_position(&self.client, &self.gk, self.shard).await?;
        let id = id
            .map(|s| s.parse().map_err(ApplyError::BadId))
            .transpose()?;
        self.position = Some((id, seq));
        Ok((id, seq))
    }

    /// Brings every player partition up to what the shard has committed:
    /// after a crash between a batch's two halves, before the next batch.
    pub async fn settle(&mut self) -> Result<(), ApplyError> {
        let (_, seq) = self.position().await?;
        if self.scorer.settled_through(seq) {
            return Ok(());
        }
        let result = self.scorer.settle(seq, seq, &[], &[]).await;
        if result.is_err() {
            self.invalidate();
        }
        Ok(result?)
    }

    /// Applies decoded events (replay's entry point). `skip(id, event)`
    /// answers true for an entry the generation already contains: it is not
    /// folded but still advances progress.
    pub async fn apply_events<F>(
        &mut self,
        entries: &[(String, StreamEvent)],
        skip: F,
    ) -> Result<ApplyReport, ApplyError>
    where
        F: Fn(&str, &StreamEvent) -> bool,
    {
        let batch: Vec<BatchEntry> = entries
            .iter()
            .map(|(id, ev)| BatchEntry {
                id: id.clone(),
                entry: Ok(ev.clone()),
            })
            .collect();
        self.apply(&batch, skip).await
    }

    /// Applies one batch of entries in stream order, atomically. Progress
    /// conflicts are resolved here by reloading and recomputing; a generation
    /// change is returned to the caller.
    pub async fn apply<F>(
        &mut self,
        entries: &[BatchEntry],
        skip: F,
    ) -> Result<ApplyReport, ApplyError>
    where
        F: Fn(&str, &StreamEvent) -> bool,
    {
        let mut ids = Vec::with_capacity(entries.len());
        for e in entries {
            let id: StreamId = e.id.parse().map_err(ApplyError::BadId)?;
            if ids.last().is_some_and(|last| *last >= id) {
                return Err(ApplyError::OutOfOrder(e.id.clone()));
            }
            ids.push(id);
        }
        let mut conflicts = 0;
        loop {
            match self.try_apply(entries, &ids, &skip).await {
                Ok(Some(mut report)) => {
                    report.conflicts = conflicts;
                    return Ok(report);
                }
                Ok(None) => {
                    conflicts += 1;
                    metrics::counter!(crate::metrics::CONFLICTS, "kind" => "progress").increment(1);
                    tracing::info!(
                        shard = self.shard,
                        "progress moved under the batch; recomputing"
                    );
                    if conflicts >= 5 {
                        return Err(ApplyError::Contended {
                            shard: self.shard,
                            attempts: conflicts,
                        });
                    }
                }
                // Refused before writing anything: what is cached still holds.
                Err(e @ ApplyError::Switching(_)) => return Err(e),
                Err(e) => {
                    // The outcome of a failed call is unknown: start from what Redis says.
                    self.invalidate();
                    return Err(e);
                }
            }
        }
    }

    /// `Ok(None)` on a progress conflict (state already invalidated).
    async fn try_apply<F>(
        &mut self,
        entries: &[BatchEntry],
        ids: &[StreamId],
        skip: &F,
    ) -> Result<Option<ApplyReport>, ApplyError>
    where
        F: Fn(&str, &StreamEvent) -> bool,
    {
        self.settle().await?;
        let (progress, sequence) = self.position().await?;
        let t_load = Instant::now();
        let fresh = &entries[plan::fresh_from(ids, progress)..];
        self.load_missing(fresh).await?;
        let t_fold = Instant::now();
        let read = ReadState {
            progress,
            sequence,
            matches: &self.cache,
        };
        let shard = Shard {
            id: self.shard,
            count: self.shard_count,
        };
        let Plan { report, commit } = plan::plan(entries, ids, read, shard, skip);
        let Some(commit) = commit else {
            return Ok(Some(report));
        };
        tracing::debug!(
            shard = self.shard,
            entries = entries.len(),
            load_us = (t_fold - t_load).as_micros() as u64,
            fold_us = t_fold.elapsed().as_micros() as u64,
            "batch planned"
        );
        self.commit(commit, report).await
    }

    /// Performs a plan in one fenced commit; on success the plan's match
    /// states join the cache and its last id becomes the known progress.
    async fn commit(
        &mut self,
        plan: CommitPlan,
        mut report: ApplyReport,
    ) -> Result<Option<ApplyReport>, ApplyError> {
        let fence = Fence {
            require_active: self.options.require_active,
            expected: plan.expected,
            last_id: plan.last_id,
            sequence: (self.position.map(|p| p.1).unwrap_or(0), plan.sequence),
            move_group: self.options.move_group,
        };
        match self.committer.commit(&plan.write, &fence).await? {
            Outcome::Committed { applied_at } => {
                if self.cache.len() + plan.states.len() > self.options.cache_capacity {
                    self.cache.clear();
                }
                self.cache.extend(plan.states);
                self.position = Some((Some(plan.last_id), plan.sequence));
                report.progress = Some(plan.last_id);
                // The batch's scores are readable once every partition has
                // them; a failure here leaves them in the outbox, for the
                // next settle.
                let settling = Instant::now();
                self.scorer
                    .settle(
                        fence.sequence.0,
                        plan.sequence,
                        &plan.write.scored,
                        &plan.write.dead,
                    )
                    .await?;
                report.applied_at = applied_at
                    .map(|t| Timestamp(t.as_micros() + settling.elapsed().as_micros() as i64));
                Ok(Some(report))
            }
            Outcome::ProgressMoved => {
                self.invalidate();
                Ok(None)
            }
            Outcome::Switching(barrier) => Err(ApplyError::Switching(barrier)),
            Outcome::GenerationMoved { active } => {
                self.invalidate();
                metrics::counter!(crate::metrics::CONFLICTS, "kind" => "generation").increment(1);
                Err(ApplyError::GenerationChanged {
                    expected: self.gk.generation,
                    active,
                })
            }
        }
    }

    /// Fills the cache with the committed state of every match the batch
    /// touches that is not cached yet, in one pipeline.
    async fn load_missing(&mut self, entries: &[BatchEntry]) -> Result<(), ApplyError> {
        let missing = plan::missing_matches(entries, &self.cache);
        if missing.is_empty() {
            return Ok(());
        }
        let states =
            read_model::read::match_states(&self.client, &self.gk, self.shard, &missing).await?;
        for (mid, state) in missing.into_iter().zip(states) {
            self.cache.insert(mid, state);
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stream_ids_order_numerically() {
        let a: StreamId = "9-5".parse().unwrap();
        let b: StreamId = "10-0".parse().unwrap();
        assert!(a < b);
        assert_eq!(b.to_string(), "10-0");
        assert!("x-1".parse::<StreamId>().is_err());
    }
}
