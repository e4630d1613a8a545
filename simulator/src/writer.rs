//! One shard's writer: plays many matches of that shard at once and writes
//! their events in multi-row INSERTs, keeping each match in version order.
//!
//! Each round takes the next event of up to `batch_rows` in-flight matches
//! (one event per match, so a batch never holds two versions of a match)
//! and appends them in one INSERT, one transaction. A match's next event is
//! only built after the previous one is known committed, so versions reach
//! the table, and the binlog, in order.
//!
//! Appends go through the writer's own [`ShardSession`], kept across
//! batches; a broken one is opened again. When an INSERT fails the batch
//! is reconciled against the table ([`EventStore::stored_versions`]): an event
//! stored under its own id was committed after all (the connection broke on
//! the way back); a version stored under another id was taken by another
//! writer (`uk_match_version`), so the match is re-read and given up, never
//! overwritten; anything absent is written again in the next round.

use crate::pacer::Pacer;
use crate::plan::{Fate, FateMix, MatchPlan, PlayerPool};
use crate::{metric, Report, SimulateError};
use backon::Retryable;
use rand::rngs::StdRng;
use rand::Rng;
use rps_core::ids::MatchIdGenerator;
use rps_core::retry::Backoff;
use rps_core::{MatchEvent, ShardId, Timestamp};
use rps_event_store::{BatchAppend, EventStore, ShardSession, StoreError};
use std::collections::VecDeque;
use std::sync::Arc;
use std::time::Duration;
use tokio_util::sync::CancellationToken;
use tracing::Instrument;
use uuid::Uuid;

/// What every shard writer of one run shares.
pub(crate) struct Shared {
    pub store: EventStore,
    pub table: String,
    pub mix: FateMix,
    pub players: PlayerPool,
    /// One generator per simulated game-server node.
    pub nodes: Vec<MatchIdGenerator>,
    pub pacer: Pacer,
    pub batch_rows: usize,
    pub deadline_micros: i64,
    pub shutdown: CancellationToken,
}

/// One shard's share of the run.
pub(crate) struct ShardJob {
    pub shard: ShardId,
    pub matches: u64,
    /// Matches of this shard in flight at once.
    pub slots: usize,
    pub rng: StdRng,
}

struct InFlight {
    plan: MatchPlan,
    /// The version of the next event to write.
    next_version: i32,
    started_at: Timestamp,
    /// Kept across retries of the same version, so an append that did commit
    /// is recognised as ours.
    pending_id: Option<Uuid>,
}

/// What reconciliation found for one event of a failed batch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum RowFate {
    Committed,
    /// Another writer holds this version of the match.
    Taken,
    Absent,
}

/// Plays one shard's job. Of the [`Report`] only the counts are filled: the
/// seed, the elapsed time and the rows per shard are the whole run's.
pub(crate) async fn write_shard(
    shared: Arc<Shared>,
    job: ShardJob,
) -> Result<Report, SimulateError> {
    let span = tracing::info_span!("shard_writer", shard = job.shard, matches = job.matches);
    run_writer(shared, job).instrument(span).await
}

async fn run_writer(shared: Arc<Shared>, mut job: ShardJob) -> Result<Report, SimulateError> {
    let shard = job.shard;
    let mut tally = Report::default();
    let mut inflight: VecDeque<InFlight> = VecDeque::with_capacity(job.slots);
    let mut remaining = job.matches;
    // A match starts only on a writer that can write it: connect before the
    // first claim. (Writers share the pacer; one that wins its first start
    // late, just before a shutdown, must not be caught still connecting.)
    let mut conn: Option<ShardSession> = None;
    if job.matches > 0 {
        match connect(&shared, shard).await? {
            Some(c) => conn = Some(c),
            None => return Ok(tally),
        }
    }
    let shard_label = shard.to_string();
    let events_written = metrics::counter!(metric::EVENTS_WRITTEN, "shard" => shard_label.clone());
    let batch_seconds = metrics::histogram!(metric::BATCH_SECONDS, "shard" => shard_label);

    loop {
        // On shutdown no new match starts, but the ones in flight are played
        // to their planned end so that no unplanned abandoned match is left.
        if remaining > 0 && !shared.shutdown.is_cancelled() {
            let free = job.slots.saturating_sub(inflight.len()) as u64;
            let granted = shared.pacer.claim(free.min(remaining));
            for _ in 0..granted {
                inflight.push_back(start_match(&shared, &mut job.rng, shard));
            }
            remaining -= granted;
            tally.matches_started += granted;
            metrics::counter!(metric::MATCHES_STARTED).increment(granted);
        }
        if inflight.is_empty() {
            if remaining == 0 || shared.shutdown.is_cancelled() {
                break;
            }
            tokio::select! {
                _ = tokio::time::sleep_until(shared.pacer.next_due()) => {}
                _ = shared.shutdown.cancelled() => {}
            }
            continue;
        }

        let take = inflight.len().min(shared.batch_rows);
        let mut batch: Vec<InFlight> = inflight.drain(..take).collect();
        let events: Vec<MatchEvent> = batch
            .iter_mut()
            .map(|m| {
                let id = *m.pending_id.get_or_insert_with(Uuid::new_v4);
                m.plan.event(
                    m.next_version,
                    id,
                    Timestamp::now(),
                    m.started_at,
                    shared.deadline_micros,
                )
            })
            .collect();

        let t = std::time::Instant::now();
        let fates = match write_batch(&shared, &mut conn, shard, &events).await? {
            Some(f) => f,
            None => {
                // Interrupted while the server was unreachable.
                tally.interrupted += (batch.len() + inflight.len()) as u64;
                break;
            }
        };
        batch_seconds.record(t.elapsed().as_secs_f64());
        tally.batches += 1;
        if fates.iter().any(|f| *f != RowFate::Committed) {
            tally.failed_batches += 1;
        }

        for ((mut m, ev), fate) in batch.into_iter().zip(&events).zip(fates) {
            match fate {
                RowFate::Absent => inflight.push_back(m),
                RowFate::Taken => {
                    tracing::info!(
                        match_id = m.plan.match_id,
                        version = m.next_version,
                        "version taken by another writer; the match is given up"
                    );
                    metrics::counter!(metric::VERSION_CONFLICTS).increment(1);
                    tally.conflicts += 1;
                }
                RowFate::Committed => {
                    tally.events += 1;
                    events_written.increment(1);
                    if m.next_version == 1 {
                        m.started_at = ev.occurred_at;
                    }
                    m.pending_id = None;
                    if m.next_version == m.plan.event_count() {
                        match m.plan.fate {
                            Fate::Finished => {
                                tally.finished += 1;
                                tally.draws += u64::from(m.plan.is_draw());
                            }
                            Fate::Voided => tally.voided += 1,
                            Fate::Abandoned { .. } => tally.abandoned += 1,
                        }
                    } else {
                        m.next_version += 1;
                        inflight.push_back(m);
                    }
                }
            }
        }
    }
    tracing::info!(events = tally.events, batches = tally.batches, "shard done");
    Ok(tally)
}

fn start_match(shared: &Shared, rng: &mut StdRng, shard: ShardId) -> InFlight {
    let node = &shared.nodes[rng.random_range(0..shared.nodes.len())];
    let pair = shared.players.draw_pair(shard, rng);
    let plan = MatchPlan::draw(rng, node.next_id(), pair, &shared.mix);
    InFlight {
        plan,
        next_version: 1,
        started_at: Timestamp(0),
        pending_id: None,
    }
}

fn backoff() -> Backoff {
    Backoff::new(Duration::from_millis(100), Duration::from_secs(5)).with_max_times(15)
}

/// A session on the shard's server, retrying transient failures.
/// `Ok(None)` when shutdown was requested while waiting.
async fn connect(shared: &Shared, shard: ShardId) -> Result<Option<ShardSession>, SimulateError> {
    let attempt = (|| shared.store.session(shard))
        .retry(backoff())
        .when(StoreError::is_transient)
        .notify(|e, wait| tracing::warn!(error = %e, ?wait, "cannot connect; retrying"));
    tokio::select! {
        biased;
        r = attempt => r.map(Some).map_err(|source| SimulateError::Store { shard, source }),
        _ = shared.shutdown.cancelled() => Ok(None),
    }
}

/// Writes one batch and says what became of each event. `Ok(None)` when
/// shutdown was requested while waiting for an unreachable server.
async fn write_batch(
    shared: &Shared,
    conn: &mut Option<ShardSession>,
    shard: ShardId,
    events: &[MatchEvent],
) -> Result<Option<Vec<RowFate>>, SimulateError> {
    let c = match conn {
        Some(c) => c,
        None => match connect(shared, shard).await? {
            Some(c) => conn.insert(c),
            None => return Ok(None),
        },
    };
    let server = c.server().to_string();
    let duplicate = match c.append_all(&shared.table, events).await {
        Ok(BatchAppend::Inserted) => return Ok(Some(vec![RowFate::Committed; events.len()])),
        Ok(BatchAppend::DuplicateKey) => true,
        Err(err) if err.is_transient() => {
            metrics::counter!(metric::BATCH_RETRIES, "reason" => "transient").increment(1);
            tracing::warn!(error = %err, rows = events.len(), "batch failed; reconnecting to learn what was stored");
            *conn = None;
            false
        }
        Err(err) => return Err(SimulateError::Store { shard, source: err }),
    };
    if duplicate {
        metrics::counter!(metric::BATCH_RETRIES, "reason" => "duplicate_key").increment(1);
        tracing::info!(
            rows = events.len(),
            "duplicate key in batch; re-reading versions"
        );
    }

    // Whether a broken INSERT committed is unknown until the table says so.
    let attempt = (|| reconcile(&shared.store, shard, &shared.table, events))
        .retry(backoff())
        .when(StoreError::is_transient)
        .notify(|e, wait| tracing::warn!(error = %e, ?wait, "cannot re-read versions; retrying"));
    let fates = tokio::select! {
        biased;
        r = attempt => r.map_err(|source| SimulateError::Store { shard, source })?,
        _ = shared.shutdown.cancelled() => return Ok(None),
    };
    if duplicate && fates.iter().all(|f| *f == RowFate::Absent) {
        return Err(SimulateError::UnexplainedDuplicate { shard, server });
    }
    Ok(Some(fates))
}

/// Looks up every `(match_id, version)` of `events` in the table.
pub(crate) async fn reconcile(
    store: &EventStore,
    shard: ShardId,
    table: &str,
    events: &[MatchEvent],
) -> Result<Vec<RowFate>, StoreError> {
    if events.is_empty() {
        return Ok(Vec::new());
    }
    let ids: Vec<i64> = events.iter().map(|e| e.match_id).collect();
    let stored = store.stored_versions(shard, table, &ids).await?;
    Ok(events
        .iter()
        .map(|e| match stored.get(&(e.match_id, e.version)) {
            None => RowFate::Absent,
            Some(id) if *id == e.event_id.hyphenated().to_string() => RowFate::Committed,
            Some(_) => RowFate::Taken,
        })
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::plan::Fate;
    use rps_core::{EventType, Gesture};
    use rps_event_store::{AppendOutcome, HistoryFilter};
    use test_support::TestEnv;

    const TABLE: &str = "match_result_events";

    fn shared(store: EventStore) -> Shared {
        Shared {
            store,
            table: TABLE.to_string(),
            mix: FateMix::new(0.0, 0.0).unwrap(),
            players: PlayerPool {
                players: 10,
                shard_count: 2,
            },
            nodes: vec![MatchIdGenerator::new(0, 1).unwrap()],
            pacer: Pacer::new(None),
            batch_rows: 100,
            deadline_micros: 30_000_000,
            shutdown: CancellationToken::new(),
        }
    }

    fn plan(match_id: i64, player_a: i64) -> MatchPlan {
        MatchPlan {
            match_id,
            player_a,
            player_b: 1,
            gesture_a: Gesture::Rock,
            gesture_b: Gesture::Paper,
            a_moves_first: true,
            fate: Fate::Finished,
        }
    }

    /// The optimistic-concurrency path against the real server: a retried
    /// batch that had committed is recognised as ours, a version another
    /// writer took is reported as taken (never overwritten), and the rest of
    /// a failed batch is written in the next round.
    #[tokio::test]
    async fn duplicate_keys_are_reconciled_never_overwritten() {
        let env = TestEnv::with_shards("simocc", 2).await;
        let shared = shared(env.store.clone());
        let t0 = Timestamp::now();
        let plans = [plan(11, 2), plan(12, 4), plan(13, 6)];
        let events = |version: i32| -> Vec<MatchEvent> {
            plans
                .iter()
                .map(|p| p.event(version, Uuid::new_v4(), Timestamp::now(), t0, 30_000_000))
                .collect()
        };
        let mut conn = None;

        let v1 = events(1);
        let all = Some(vec![RowFate::Committed; 3]);
        assert_eq!(write_batch(&shared, &mut conn, 0, &v1).await.unwrap(), all);
        // The same batch again, as after a lost acknowledgement.
        assert_eq!(write_batch(&shared, &mut conn, 0, &v1).await.unwrap(), all);

        // Another writer takes version 2 of match 12 first.
        let mut foreign = plans[1].event(2, Uuid::new_v4(), Timestamp::now(), t0, 0);
        foreign.event_type = EventType::TimedOut;
        foreign.gesture_a = None;
        assert_eq!(
            env.store.append(0, TABLE, &foreign).await.unwrap(),
            AppendOutcome::Inserted
        );
        let v2 = events(2);
        assert_eq!(
            write_batch(&shared, &mut conn, 0, &v2).await.unwrap(),
            Some(vec![RowFate::Absent, RowFate::Taken, RowFate::Absent])
        );
        let retry = [v2[0].clone(), v2[2].clone()];
        assert_eq!(
            write_batch(&shared, &mut conn, 0, &retry).await.unwrap(),
            Some(vec![RowFate::Committed; 2])
        );

        // Stored: three starts, our two moves, and the other writer's event untouched.
        let fates = reconcile(&env.store, 0, TABLE, &v2).await.unwrap();
        assert_eq!(
            fates,
            vec![RowFate::Committed, RowFate::Taken, RowFate::Committed]
        );
        let mut reader = env
            .store
            .table_reader(0, TABLE, &HistoryFilter::default(), 100);
        let mut rows: Vec<(i64, i32, String)> = Vec::new();
        while let Some(page) = reader.next_page().await.unwrap() {
            rows.extend(page.into_iter().map(|r| {
                let e = r.unwrap();
                (e.match_id, e.version, e.event_type.as_str().to_string())
            }));
        }
        assert_eq!(rows.len(), 6, "{rows:?}");
        assert!(rows.contains(&(12, 2, "timed_out".to_string())));
        env.cleanup().await;
    }
}
