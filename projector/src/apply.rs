//! The batch applier: folds an ordered run of one shard's stream entries and
//! commits the result to one read-model generation in a single atomic step.
//!
//! Used by the live projector and by `rpsctl replay` (catching a rebuilt
//! generation up from the streams), so both apply events in exactly the same
//! way. It owns the shard's in-memory cache of match states; it does not read
//! streams or hold leases.
//!
//! One batch is one EVALSHA of `read_model`'s commit script, which first checks the fence (the
//! active generation and `progress[shard]` equal what the batch was computed
//! against), then applies per-player deltas, final match states, deadline
//! changes, dead letters and the net change of matches per lifecycle state
//! coalesced in Rust, moves `progress[shard]` and XACKs. A redelivered entry (id at or below progress) is never folded again.

use fred::clients::Client;
use read_model::commit::{BatchWrite, CommitError, Committer, Fence, Outcome};
use read_model::{GenerationKeys, ReadModelKeys};
use rps_core::deadletter::{DeadLetter, Origin};
use rps_core::fold::DeadlineChange;
use rps_core::stream::DecodeError;
use rps_core::{Keys, MatchState, Rejection, ShardId, StreamEvent, Timestamp};
use std::collections::{HashMap, HashSet};

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
    #[error("redis: {0}")]
    Redis(#[from] fred::error::Error),
    #[error(transparent)]
    Commit(#[from] CommitError),
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
    /// Committed `progress[shard]`; `None` until loaded.
    progress: Option<Option<StreamId>>,
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
            committer: Committer::new(client.clone(), keys, generation, shard),
            client,
            shard,
            shard_count,
            options,
            cache: HashMap::new(),
            progress: None,
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
        self.progress = None;
    }

    /// Committed progress of the shard in this generation (loaded if unknown).
    pub async fn progress(&mut self) -> Result<Option<StreamId>, ApplyError> {
        if let Some(p) = self.progress {
            return Ok(p);
        }
        let p = read_model::read::shard_progress(&self.client, &self.gk, self.shard)
            .await?
            .map(|s| s.parse().map_err(ApplyError::BadId))
            .transpose()?;
        self.progress = Some(p);
        Ok(p)
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
        let progress = self.progress().await?;
        let fresh_from = ids
            .iter()
            .position(|id| progress.is_none_or(|p| *id > p))
            .unwrap_or(ids.len());
        let mut report = ApplyReport {
            redelivered: fresh_from,
            progress,
            ..Default::default()
        };
        if fresh_from == entries.len() {
            return Ok(Some(report));
        }
        let fresh = &entries[fresh_from..];
        let fresh_ids = &ids[fresh_from..];
        let t_load = std::time::Instant::now();
        self.load_missing(fresh).await?;
        let t_fold = std::time::Instant::now();

        let mut plan = BatchWrite::default();
        let mut working: HashMap<i64, Option<MatchState>> = HashMap::new();
        for (e, id) in fresh.iter().zip(fresh_ids) {
            let ev = match &e.entry {
                Ok(ev) => ev,
                Err(bad) => {
                    plan.dead.push(undecodable_letter(self.shard, &e.id, bad));
                    report.rejected.push((e.id.clone(), "undecodable"));
                    continue;
                }
            };
            plan.last_at = Some(ev.event.occurred_at);
            if skip(&e.id, ev) {
                report.skipped += 1;
                continue;
            }
            let expected = rps_core::shard_of(ev.event.player_a_id, self.shard_count);
            if expected != self.shard {
                let r = Rejection::WrongShard {
                    expected,
                    got: self.shard,
                };
                report.rejected.push((e.id.clone(), r.code()));
                plan.dead.push(rejection_letter(self.shard, &e.id, ev, &r));
                continue;
            }
            let mid = ev.event.match_id;
            let prev = match working.get(&mid) {
                Some(s) => s.as_ref(),
                None => self.cache.get(&mid).and_then(|s| s.as_ref()),
            };
            let from = prev.map(|p| p.status);
            match rps_core::fold::apply(prev, &ev.event) {
                Ok(t) => {
                    // Summed in memory: the script sees one net change per state.
                    plan.lifecycle.moved(from, t.state.status);
                    for d in &t.effects {
                        plan.stats
                            .entry((d.player_id, None))
                            .or_default()
                            .add(&d.delta);
                        plan.stats
                            .entry((d.player_id, Some(d.season)))
                            .or_default()
                            .add(&d.delta);
                        plan.seasons.insert(d.season);
                    }
                    if t.deadline != DeadlineChange::Unchanged {
                        plan.deadlines.insert(mid, t.deadline);
                    }
                    plan.matches.insert(mid, t.state.clone());
                    working.insert(mid, Some(t.state));
                    report.applied += 1;
                    report.applied_by_type[ev.event.event_type as usize] += 1;
                    report.occurred.push(ev.event.occurred_at);
                    report
                        .published
                        .push(Timestamp(id.ms.saturating_mul(1000) as i64));
                }
                Err(r) => {
                    report.rejected.push((e.id.clone(), r.code()));
                    plan.dead.push(rejection_letter(self.shard, &e.id, ev, &r));
                }
            }
        }

        let last_id = ids[ids.len() - 1];
        let fence = Fence {
            require_active: self.options.require_active,
            expected: progress,
            last_id,
            move_group: self.options.move_group,
        };
        let t_commit = std::time::Instant::now();
        let outcome = self.committer.commit(&plan, &fence).await?;
        tracing::debug!(
            shard = self.shard,
            entries = entries.len(),
            load_us = (t_fold - t_load).as_micros() as u64,
            fold_us = (t_commit - t_fold).as_micros() as u64,
            "batch committed"
        );
        match outcome {
            Outcome::Committed { applied_at } => {
                if self.cache.len() + working.len() > self.options.cache_capacity {
                    self.cache.clear();
                }
                self.cache.extend(working);
                self.progress = Some(Some(last_id));
                report.progress = Some(last_id);
                report.applied_at = applied_at;
                Ok(Some(report))
            }
            Outcome::ProgressMoved => {
                self.invalidate();
                Ok(None)
            }
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
        let mut missing: Vec<i64> = Vec::new();
        let mut seen = HashSet::new();
        for e in entries {
            if let Ok(ev) = &e.entry {
                let mid = ev.event.match_id;
                if !self.cache.contains_key(&mid) && seen.insert(mid) {
                    missing.push(mid);
                }
            }
        }
        if missing.is_empty() {
            return Ok(());
        }
        let states = read_model::read::match_states(&self.client, &self.gk, &missing).await?;
        for (mid, state) in missing.into_iter().zip(states) {
            self.cache.insert(mid, state);
        }
        Ok(())
    }
}

fn rejection_letter(shard: ShardId, id: &str, ev: &StreamEvent, r: &Rejection) -> DeadLetter {
    let s = &ev.source;
    DeadLetter {
        origin: Some(Origin::Projector),
        kind: r.code().to_string(),
        reason: format!(
            "match {} version {} ({}): {r}",
            ev.event.match_id, ev.event.version, ev.event.event_type
        ),
        server: s.server.clone(),
        database: s.database.clone(),
        table: s.table.clone(),
        file: s.file.clone(),
        pos: s.pos,
        gtid: s.gtid.clone(),
        shard: Some(shard),
        match_id: Some(ev.event.match_id),
        event_id: ev.event.event_id.hyphenated().to_string(),
        stream_id: id.to_string(),
        payload: payload_json(&ev.to_named_pairs()),
        at: Timestamp::now(),
    }
}

fn undecodable_letter(shard: ShardId, id: &str, bad: &Undecodable) -> DeadLetter {
    let field = |name: &str| {
        bad.fields
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.clone())
            .unwrap_or_default()
    };
    DeadLetter {
        origin: Some(Origin::Projector),
        kind: "undecodable".to_string(),
        reason: format!("stream entry cannot be decoded: {}", bad.error),
        server: field("srv"),
        database: field("db"),
        table: field("tbl"),
        file: field("file"),
        pos: field("pos").parse().unwrap_or(0),
        gtid: field("gtid"),
        shard: Some(shard),
        match_id: field("mid").parse().ok(),
        event_id: field("eid"),
        stream_id: id.to_string(),
        payload: payload_json(
            &bad.fields
                .iter()
                .map(|(k, v)| (k.as_str(), v.clone()))
                .collect::<Vec<_>>(),
        ),
        at: Timestamp::now(),
    }
}

/// The entry's fields as a flat JSON object, so an operator can read and
/// re-inject it.
fn payload_json<K: AsRef<str>>(pairs: &[(K, String)]) -> String {
    let mut out = String::from("{");
    for (i, (k, v)) in pairs.iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        json_str(&mut out, k.as_ref());
        out.push(':');
        json_str(&mut out, v);
    }
    out.push('}');
    out
}

fn json_str(out: &mut String, s: &str) {
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            c if (c as u32) < 0x20 => out.push_str(&format!("\\u{:04x}", c as u32)),
            c => out.push(c),
        }
    }
    out.push('"');
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

    #[test]
    fn payload_is_escaped_json() {
        let p = payload_json(&[("a", "x\"y\\".to_string()), ("b", "\n".to_string())]);
        assert_eq!(p, r#"{"a":"x\"y\\","b":"\u000a"}"#);
    }
}
