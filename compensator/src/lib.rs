//! The compensator: fires each expired saga deadline once, on time, as a
//! `timed_out` event appended to the match's own shard.
//!
//! - [`deadlines`]: the Redis side (atomic claim under a lease, attempt
//!   history, parking, dead letter);
//! - [`decide`]: the pure decision from a match's stored events;
//! - [`fire`]: the MySQL side (read the matches, append the events);
//! - [`retry`]: the retry schedule as a pure function;
//! - [`dlq`]: the operator's dead-letter operations (`rpsctl dlq`);
//! - [`blocker`]: who holds the lock an append timed out on (a prepared XA
//!   branch, from the reader's registry);
//! - this module: the deadline loop that ties them together.
//!
//! It never writes a read model: the `timed_out` reaches them through the
//! binlog, cdc-reader and projector like any other event, and the projector
//! removes the deadline in the step that records the end. See
//! `docs/compensator.md`.
//!
//! A sampled match's compensation shows in its trace (`rps_telemetry`):
//! `claim deadline`, then per round `decide` and `append timed_out`
//! ([`fire`]), and `retry` or `dead letter` after a failed attempt.

pub mod blocker;
pub mod deadlines;
pub mod decide;
pub mod dlq;
pub mod fire;
pub mod metrics;
pub mod retry;

/// The Redis client crate, re-exported so callers (rpsctl, tests) use the
/// very version this crate speaks.
pub use fred;

use crate::deadlines::{Claimed, DeadlineStore};
use crate::fire::{fire_shard, Settled, TableCache};
use crate::retry::{NextStep, RetryPolicy};
use fred::clients::Client;
use fred::interfaces::{ClientLike, EventInterface, PubsubInterface};
use read_model::ReadModelKeys;
use rps_core::health::Readiness;
use rps_core::redis_client::ClientPolicy;
use rps_core::retry::Backoff;
use rps_core::{Config, ShardId, Timestamp};
use rps_event_store::{EventStore, StoreError};
use rps_telemetry::{attr, Component, KeyValue, SpanStart};
use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{Notify, Semaphore};
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

/// With nothing scheduled (or only far-off deadlines), the loop still looks
/// again after this long, in case a deadline was added that is due earlier
/// than the earliest it knew and nobody published a wake-up.
pub const SAFETY_RECHECK: Duration = Duration::from_millis(1000);

/// After a claim that did not fill a batch, the next claim waits at least
/// this long: deadlines falling due meanwhile are fired as one batch (one
/// SELECT and one INSERT per shard) instead of one claim per millisecond,
/// and every claim re-scans the due entries still held by leases.
pub const MIN_CLAIM_INTERVAL: Duration = Duration::from_millis(5);

/// Claimed batches being fired at once. Few, so that under load deadlines
/// accumulate into larger batches (one SELECT and one INSERT per shard).
pub const MAX_IN_FLIGHT: usize = 8;

#[derive(Debug, thiserror::Error)]
pub enum CompensatorError {
    #[error("redis: {0}")]
    Redis(#[from] fred::error::Error),
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// The event store as the compensator uses it: every session waits at most
/// `compensator.lock_wait_secs` for a row lock. A prepared XA branch holding
/// a row of the match would otherwise hold the append (and its firing task)
/// for the server's `innodb_lock_wait_timeout`, 50 s by default, longer than
/// the lease; with a short wait the attempt fails soon, names the branch and
/// is retried on the schedule.
pub fn event_store(config: Arc<Config>) -> Result<EventStore, StoreError> {
    let secs = config.compensator.lock_wait_secs.max(1);
    EventStore::with_session_setup(
        config,
        32,
        vec![format!("SET SESSION innodb_lock_wait_timeout = {secs}")],
    )
}

/// Runs the compensator until `shutdown` is cancelled.
pub async fn run(config: Arc<Config>, shutdown: CancellationToken) -> Result<(), CompensatorError> {
    run_with_readiness(config, shutdown, Readiness::new()).await
}

/// [`run`], keeping `ready`'s check [`READY_CHECK`] current: passing while
/// claims against Redis succeed.
pub async fn run_with_readiness(
    config: Arc<Config>,
    shutdown: CancellationToken,
    ready: Readiness,
) -> Result<(), CompensatorError> {
    metrics::CATALOGUE.describe();
    ready.not_ready(READY_CHECK, "connecting to Redis");
    let client = ClientPolicy::patient().connect(&config.redis).await?;
    let store = event_store(config.clone())?;
    let c = Compensator::new(config, client.clone(), store).with_readiness(ready.clone());
    let res = c.run(shutdown).await;
    ready.not_ready(READY_CHECK, "stopped");
    let _ = client.quit().await;
    res
}

/// The readiness check the deadline loop keeps.
pub const READY_CHECK: &str = "deadlines";

/// One compensator process's state.
#[derive(Clone)]
pub struct Compensator {
    config: Arc<Config>,
    deadlines: DeadlineStore,
    store: EventStore,
    tables: TableCache,
    policy: RetryPolicy,
    ready: Readiness,
}

impl Compensator {
    /// `store` should come from [`event_store`], so appends do not wait out
    /// the server's default lock wait.
    pub fn new(config: Arc<Config>, client: Client, store: EventStore) -> Self {
        Compensator {
            deadlines: DeadlineStore::new(client, config.keys()),
            policy: RetryPolicy::from_config(&config.compensator),
            config,
            store,
            tables: TableCache::default(),
            ready: Readiness::new(),
        }
    }

    /// Reports whether claims succeed to `ready` (check [`READY_CHECK`]).
    pub fn with_readiness(mut self, ready: Readiness) -> Self {
        self.ready = ready;
        self
    }

    /// The deadline loop: claim what is due, hand it to a firing task, sleep
    /// until the next deadline (or a wake-up, or the safety re-check).
    pub async fn run(&self, shutdown: CancellationToken) -> Result<(), CompensatorError> {
        let wake = Arc::new(Notify::new());
        let listener = self
            .listen_for_wakeups(wake.clone(), shutdown.clone())
            .await;
        let slots = Arc::new(Semaphore::new(MAX_IN_FLIGHT));
        let mut tasks = JoinSet::new();
        let mut redis_backoff = Backoff::new(Duration::from_millis(100), Duration::from_secs(5));
        let cc = &self.config.compensator;
        // The series exist from the start, so a rate over a window that
        // begins before the first firing counts it.
        for name in [
            metrics::FIRED,
            metrics::RACED,
            metrics::RETRIES,
            metrics::DEAD_LETTERED,
            metrics::CLAIM_ERRORS,
        ] {
            ::metrics::counter!(name).increment(0);
        }
        let _ = ::metrics::histogram!(metrics::FIRING_DELAY);
        tracing::info!(
            lease_ms = cc.lease_ms,
            claim_batch = cc.claim_batch,
            "compensator started"
        );
        loop {
            while tasks.try_join_next().is_some() {}
            let permit = tokio::select! {
                p = slots.clone().acquire_owned() => match p {
                    Ok(p) => p,
                    Err(_) => break,
                },
                _ = shutdown.cancelled() => break,
            };
            let now_ms = Timestamp::now().as_millis();
            let claim_at = rps_telemetry::now_if_enabled();
            let claim = async {
                let g = self.deadlines.generation().await?;
                let gk = self.deadlines.keys().generation_keys(g);
                self.deadlines
                    .claim(
                        &gk,
                        self.config.shard_count,
                        now_ms,
                        cc.lease_ms,
                        cc.claim_batch,
                    )
                    .await
            };
            let res = match claim.await {
                Ok(r) => {
                    redis_backoff.reset();
                    self.ready.ready(READY_CHECK);
                    r
                }
                Err(e) => {
                    drop(permit);
                    self.ready
                        .not_ready(READY_CHECK, format!("claiming deadlines failed: {e}"));
                    ::metrics::counter!(metrics::CLAIM_ERRORS).increment(1);
                    let wait = redis_backoff
                        .next_delay()
                        .unwrap_or(redis_backoff.max_delay());
                    tracing::warn!(error = %e, retry_in_ms = wait.as_millis() as u64, "claiming deadlines failed");
                    if rps_core::retry::sleep(wait, &shutdown).await {
                        continue;
                    }
                    break;
                }
            };
            if claim_at.is_some() {
                trace_claims(&res.claimed, claim_at, now_ms, cc.lease_ms);
            }
            ::metrics::gauge!(metrics::DEADLINES_PENDING).set(res.pending as f64);
            ::metrics::gauge!(metrics::DEADLINES_OVERDUE).set(res.overdue as f64);
            for m in &res.malformed {
                tracing::warn!(member = %m, "deadline member does not name a match of its set's shard; left leased");
            }
            let full = res.claimed.len() >= cc.claim_batch.max(1);
            if res.claimed.is_empty() {
                drop(permit);
            } else {
                let me = self.clone();
                let claimed = res.claimed;
                let span = tracing::info_span!("fire_batch", claimed = claimed.len());
                tasks.spawn(
                    async move {
                        me.process(claimed).await;
                        drop(permit);
                    }
                    .instrument(span),
                );
            }
            if full {
                continue;
            }
            let now_ms = Timestamp::now().as_millis();
            let wait = match res.next_ms {
                Some(n) => Duration::from_millis(n.saturating_sub(now_ms).max(0) as u64),
                None => SAFETY_RECHECK,
            }
            .clamp(MIN_CLAIM_INTERVAL, SAFETY_RECHECK);
            let until = tokio::time::Instant::now() + wait;
            tokio::select! {
                _ = tokio::time::sleep_until(until) => {},
                _ = wake.notified() => {},
                _ = shutdown.cancelled() => break,
            }
        }
        tracing::info!(in_flight = tasks.len(), "compensator stopping");
        while tasks.join_next().await.is_some() {}
        if let Some(l) = listener {
            l.abort();
        }
        Ok(())
    }

    /// Subscribes to the wake-up channel on a client of its own (a
    /// subscribed connection can run no other command). Without it the
    /// loop still works, bounded by [`SAFETY_RECHECK`].
    async fn listen_for_wakeups(
        &self,
        wake: Arc<Notify>,
        shutdown: CancellationToken,
    ) -> Option<tokio::task::JoinHandle<()>> {
        let sub = self.deadlines.client().clone_new();
        let channel = self.deadlines.keys().compensator_wakeup();
        let setup = async {
            sub.init().await?;
            sub.subscribe(channel.clone()).await
        };
        if let Err(e) = setup.await {
            tracing::warn!(error = %e, "wake-up channel unavailable; relying on the safety re-check");
            return None;
        }
        let mut rx = sub.message_rx();
        Some(tokio::spawn(async move {
            loop {
                tokio::select! {
                    m = rx.recv() => match m {
                        Ok(_) => wake.notify_one(),
                        Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => wake.notify_one(),
                        Err(tokio::sync::broadcast::error::RecvError::Closed) => break,
                    },
                    _ = shutdown.cancelled() => break,
                }
            }
            let _ = sub.quit().await;
        }))
    }

    /// Fires one claimed batch: every shard at once, then settles each
    /// deadline in Redis.
    pub async fn process(&self, claimed: Vec<Claimed>) {
        let mut by_shard: BTreeMap<ShardId, Vec<Claimed>> = BTreeMap::new();
        for c in claimed {
            by_shard.entry(c.shard).or_default().push(c);
        }
        let shards = by_shard.into_iter().map(|(shard, items)| {
            let span = tracing::debug_span!("fire_shard", shard, n = items.len());
            async move {
                if shard >= self.config.shard_count {
                    return items
                        .into_iter()
                        .map(|c| {
                            let msg = format!(
                                "shard {shard} is outside the topology (shard_count {})",
                                self.config.shard_count
                            );
                            (c, Settled::Failed(msg))
                        })
                        .collect();
                }
                fire_shard(&self.store, &self.tables, shard, &items).await
            }
            .instrument(span)
        });
        let results: Vec<(Claimed, Settled)> = futures::future::join_all(shards)
            .await
            .into_iter()
            .flatten()
            .collect();
        if let Err(e) = self.settle(results).await {
            // The leases stay; the deadlines come back when they expire and
            // the event store answers again (a fired one is then `Over`).
            tracing::warn!(error = %e, "recording the outcome of a batch in Redis failed");
        }
    }

    async fn settle(&self, results: Vec<(Claimed, Settled)>) -> Result<(), fred::error::Error> {
        let mut settled: Vec<Claimed> = Vec::new();
        for (c, s) in results {
            match s {
                Settled::Fired { event, committed } => {
                    ::metrics::counter!(metrics::FIRED).increment(1);
                    let delay_us = committed.as_micros() - c.deadline_ms * 1000;
                    ::metrics::histogram!(metrics::FIRING_DELAY).record(delay_us as f64 / 1e6);
                    tracing::debug!(
                        shard = c.shard,
                        match_id = c.match_id,
                        version = event.version,
                        winner = ?event.winner_player_id,
                        delay_ms = delay_us / 1000,
                        "timed_out appended"
                    );
                    settled.push(c);
                }
                Settled::AlreadyFired => settled.push(c),
                Settled::Over(status) => {
                    ::metrics::counter!(metrics::DROPPED, "status" => status.as_str()).increment(1);
                    settled.push(c);
                }
                Settled::NotDue(t) => {
                    self.deadlines.lease_until(&c, t.as_millis()).await?;
                }
                Settled::Raced => {
                    ::metrics::counter!(metrics::RACED).increment(1);
                }
                Settled::LockWait(append) => {
                    let server = self.config.server_of(c.shard).name.clone();
                    let holders = blocker::holders_of(
                        self.deadlines.client(),
                        self.deadlines.keys(),
                        &server,
                        c.shard,
                        c.match_id,
                    )
                    .await
                    .map_err(|e| e.to_string());
                    let found = matches!(&holders, Ok(h) if !h.is_empty());
                    ::metrics::counter!(
                        metrics::LOCK_WAITS,
                        "holder" => if found { "xa_branch" } else { "unknown" }
                    )
                    .increment(1);
                    let reason = blocker::lock_wait_reason(
                        &append,
                        self.config.compensator.lock_wait_secs.max(1),
                        &holders,
                        Timestamp::now(),
                    );
                    self.failed(&c, &reason, holders.unwrap_or_default())
                        .await?
                }
                Settled::Failed(error) => self.failed(&c, &error, Vec::new()).await?,
            }
        }
        // Leases of settled deadlines are kept until they expire: the
        // projector removes the deadline when the end arrives, and the next
        // claim after the expiry drops the orphaned lease. Releasing them now
        // would have them claimed again at once while the projector catches up.
        self.deadlines.clear_attempts(&settled).await
    }

    async fn failed(
        &self,
        c: &Claimed,
        error: &str,
        held_by: Vec<blocker::XaHolder>,
    ) -> Result<(), fred::error::Error> {
        let now = Timestamp::now();
        let h = self
            .deadlines
            .record_failure(c, error, held_by, now)
            .await?;
        let n = h.attempts.len() as u32;
        let step = self.policy.after_failures(n);
        trace_failure(c, n, error, step);
        match step {
            NextStep::RetryAfter(d) => {
                ::metrics::counter!(metrics::RETRIES).increment(1);
                tracing::warn!(
                    shard = c.shard,
                    match_id = c.match_id,
                    attempt = n,
                    retry_in_ms = d.as_millis() as u64,
                    error,
                    "firing a deadline failed; will retry"
                );
                self.deadlines
                    .lease_until(c, now.as_millis() + d.as_millis() as i64)
                    .await
            }
            NextStep::DeadLetter => {
                ::metrics::counter!(metrics::DEAD_LETTERED).increment(1);
                let server = self
                    .config
                    .server_of(c.shard.min(self.config.shard_count - 1));
                let id = self
                    .deadlines
                    .dead_letter(c, h, &self.config.database(c.shard), &server.name)
                    .await?;
                if rps_telemetry::sampled(c.match_id) {
                    let span = SpanStart::new("dead letter").attrs(vec![
                        KeyValue::new(attr::SHARD, i64::from(c.shard)),
                        KeyValue::new(attr::ATTEMPT, i64::from(n)),
                        KeyValue::new(attr::DEAD_LETTER_ID, id.clone()),
                        KeyValue::new(attr::ERROR, error.to_string()),
                    ]);
                    if let Some(mut span) =
                        rps_telemetry::start(Component::Compensator, c.match_id, span)
                    {
                        span.error(format!("given up after {n} attempts"));
                        span.end();
                    }
                }
                tracing::error!(
                    shard = c.shard,
                    match_id = c.match_id,
                    attempts = n,
                    dead_letter = %id,
                    error,
                    "deadline given up after its last attempt; see `rpsctl dlq show {id}`"
                );
                Ok(())
            }
        }
    }
}

/// The `claim deadline` spans of a claim's sampled matches.
fn trace_claims(
    claimed: &[Claimed],
    at: Option<std::time::SystemTime>,
    now_ms: i64,
    lease_ms: u64,
) {
    for c in claimed {
        if !rps_telemetry::sampled(c.match_id) {
            continue;
        }
        let span = SpanStart::new("claim deadline").at(at).attrs(vec![
            KeyValue::new(attr::SHARD, i64::from(c.shard)),
            KeyValue::new(attr::DEADLINE_MS, c.deadline_ms),
            KeyValue::new(attr::OVERDUE_MS, now_ms - c.deadline_ms),
            KeyValue::new(attr::LEASE_MS, lease_ms as i64),
            KeyValue::new(attr::BATCH_ENTRIES, claimed.len() as i64),
        ]);
        if let Some(span) = rps_telemetry::start(Component::Compensator, c.match_id, span) {
            span.end();
        }
    }
}

/// The `retry` span of a failed attempt that will be retried, with its
/// error (the dead letter gets its own span once written).
fn trace_failure(c: &Claimed, attempt: u32, error: &str, step: NextStep) {
    let NextStep::RetryAfter(d) = step else {
        return;
    };
    if !rps_telemetry::sampled(c.match_id) {
        return;
    }
    let span = SpanStart::new("retry").attrs(vec![
        KeyValue::new(attr::SHARD, i64::from(c.shard)),
        KeyValue::new(attr::ATTEMPT, i64::from(attempt)),
        KeyValue::new(attr::RETRY_IN_MS, d.as_millis() as i64),
        KeyValue::new(attr::ERROR, error.to_string()),
    ]);
    if let Some(mut span) = rps_telemetry::start(Component::Compensator, c.match_id, span) {
        span.error(error.to_string());
        span.end();
    }
}
