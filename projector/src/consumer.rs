//! One shard's worker: lease, the read loop, and handing batches to the
//! applier.
//!
//! Only the process holding the shard's lease reads the shard, so its
//! entries are applied strictly in stream order; others stand by and take
//! over when the lease lapses. The lease is an efficiency measure, not the
//! safety fence: the commit refuses any batch computed against stale
//! progress, so a paused former owner that wakes up cannot apply twice.
//!
//! The worker reads the stream from the committed progress with a plain
//! `XREAD`, not through the consumer group: progress is moved in the same
//! atomic step that applies the batch, so a pending list and `XACK` would
//! only repeat it at a cost per entry. A new owner simply reads on from
//! progress. The commit moves the projector group's last-delivered id to
//! progress, so the group still tells observers and the stream trimmer
//! what has been applied.
//!
//! Each entry of a sampled match gets an `apply <type>` span of its trace
//! (`rps_telemetry`), from the batch's start to its commit, with what the
//! applier's report says became of it.

use crate::apply::{
    Applier, ApplierOptions, ApplyError, ApplyReport, BatchEntry, StreamId, Undecodable,
};
use crate::metrics as m;
use crate::ProjectorError;
use fred::clients::Client;
use fred::prelude::*;
use fred::types::{CustomCommand, Value};
use read_model::generation::switch::{self, Barrier, Resolution, SwitchError};
use read_model::generation::{self, GenerationError};
use read_model::redis_util::value_text;
use rps_core::config::RedisConfig;
use rps_core::redis_client::ClientPolicy;
use rps_core::retry::{self, Backoff};
use rps_core::{Keys, ShardId, StreamEvent};
use rps_telemetry::{attr, Component, KeyValue, SpanKind, SpanStart};
use std::time::{Duration, Instant, SystemTime};
use tokio::sync::mpsc::UnboundedSender;
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

/// Observes every committed batch (benchmarks, tests).
pub type Observer = UnboundedSender<(ShardId, ApplyReport)>;

/// Settings one worker needs.
#[derive(Clone)]
pub struct WorkerContext {
    pub redis: RedisConfig,
    pub keys: Keys,
    pub shard: ShardId,
    pub shard_count: u16,
    pub consumer: String,
    pub batch_size: usize,
    pub block_ms: u64,
    pub lease_ms: u64,
    pub observer: Option<Observer>,
    pub shutdown: CancellationToken,
}

/// Takes the lease if it is free, or keeps it if this consumer holds it
/// already (a worker restarting after a transient error must not stand by
/// until its own lease lapses).
const ACQUIRE: &str = "if redis.call('GET', KEYS[1]) == ARGV[1] then \
    redis.call('PEXPIRE', KEYS[1], ARGV[2]) return 1 end \
    if redis.call('SET', KEYS[1], ARGV[1], 'NX', 'PX', ARGV[2]) then return 1 end \
    return 0";
const RENEW: &str = "if redis.call('GET', KEYS[1]) == ARGV[1] then \
    return redis.call('PEXPIRE', KEYS[1], ARGV[2]) else return 0 end";
const RELEASE: &str = "if redis.call('GET', KEYS[1]) == ARGV[1] then \
    return redis.call('DEL', KEYS[1]) else return 0 end";

/// How often a worker held by a generation switch looks whether it ended:
/// a switch holds the shards for the time of one catch-up round.
const SWITCH_POLL: Duration = Duration::from_millis(20);

/// Waits after a transient failure: from 50 ms, capped at 5 s.
fn backoff() -> Backoff {
    Backoff::new(Duration::from_millis(50), Duration::from_secs(5))
}

enum Stop {
    Shutdown,
    LeaseLost,
}

pub async fn run_shard(ctx: WorkerContext) -> Result<(), ProjectorError> {
    let span = tracing::info_span!("shard", shard = ctx.shard);
    async move {
        let mut delays = backoff();
        let client = loop {
            match ClientPolicy::default().connect(&ctx.redis).await {
                Ok(c) => break c,
                Err(e) => {
                    tracing::warn!(error = %e, "connecting to Redis; retrying");
                    if !delays.wait(&ctx.shutdown).await {
                        return Ok(());
                    }
                }
            }
        };
        let mut worker = Worker {
            client,
            lease: ctx.keys.projector_lease(ctx.shard),
            last_renew: Instant::now(),
            ctx,
        };
        let result = worker.run().await;
        worker.release().await;
        result
    }
    .instrument(span)
    .await
}

struct Worker {
    client: Client,
    ctx: WorkerContext,
    lease: String,
    last_renew: Instant,
}

impl Worker {
    async fn run(&mut self) -> Result<(), ProjectorError> {
        let mut delays = backoff();
        let standby = Duration::from_millis((self.ctx.lease_ms / 3).max(50));
        while !self.ctx.shutdown.is_cancelled() {
            match self.acquire().await {
                Ok(true) => {}
                Ok(false) => {
                    if !retry::sleep(standby, &self.ctx.shutdown).await {
                        return Ok(());
                    }
                    continue;
                }
                Err(e) => {
                    tracing::warn!(error = %e, "acquiring the shard lease; retrying");
                    metrics::counter!(m::RETRIES).increment(1);
                    if !delays.wait(&self.ctx.shutdown).await {
                        return Ok(());
                    }
                    continue;
                }
            }
            metrics::counter!(m::LEASES_ACQUIRED, "shard" => self.ctx.shard.to_string())
                .increment(1);
            tracing::info!(consumer = %self.ctx.consumer, "holding the shard lease");
            match self.work(&mut delays).await {
                Ok(Stop::Shutdown) => return Ok(()),
                Ok(Stop::LeaseLost) => {
                    tracing::warn!("shard lease lost; standing by");
                }
                Err(e) if e.is_transient() => {
                    tracing::warn!(error = %e, "transient failure; retrying");
                    metrics::counter!(m::RETRIES).increment(1);
                    if !delays.wait(&self.ctx.shutdown).await {
                        return Ok(());
                    }
                }
                Err(e) => return Err(e),
            }
        }
        Ok(())
    }

    async fn acquire(&mut self) -> Result<bool, fred::error::Error> {
        let started = Instant::now();
        let ok: i64 = self
            .client
            .eval(
                ACQUIRE,
                vec![self.lease.clone()],
                vec![self.ctx.consumer.clone(), self.ctx.lease_ms.to_string()],
            )
            .await?;
        self.last_renew = started;
        Ok(ok == 1)
    }

    /// Renews the lease when a third of it has passed; false if lost.
    async fn renew_if_due(&mut self) -> Result<bool, fred::error::Error> {
        if self.last_renew.elapsed() < Duration::from_millis(self.ctx.lease_ms / 3) {
            return Ok(true);
        }
        let started = Instant::now();
        let ok: i64 = self
            .client
            .eval(
                RENEW,
                vec![self.lease.clone()],
                vec![self.ctx.consumer.clone(), self.ctx.lease_ms.to_string()],
            )
            .await?;
        self.last_renew = started;
        Ok(ok == 1)
    }

    async fn release(&self) {
        let _: Result<i64, _> = self
            .client
            .eval(
                RELEASE,
                vec![self.lease.clone()],
                vec![self.ctx.consumer.clone()],
            )
            .await;
    }

    async fn work(&mut self, delays: &mut Backoff) -> Result<Stop, ProjectorError> {
        let keys = self.ctx.keys.clone();
        // Again on every (re)start: a Redis that lost its data lost the group too.
        crate::create_group(&self.client, &keys.events(self.ctx.shard)).await?;
        let gen = match generation::active(&self.client, &keys).await? {
            Some(g) => g,
            None => generation::ensure(&self.client, &keys).await?,
        };
        let mut applier = self.applier(gen);
        // The switch whose barrier the last batch met, so a wait is told
        // once.
        let mut held_by: Option<Barrier> = None;
        // A worker that died between a batch's two halves left its player
        // deltas in the outbox: the partitions get them before anything new.
        applier.settle().await?;
        loop {
            if self.ctx.shutdown.is_cancelled() {
                return Ok(Stop::Shutdown);
            }
            if !self.renew_if_due().await? {
                return Ok(Stop::LeaseLost);
            }
            let from = applier.progress().await?;
            let read = tokio::select! {
                _ = self.ctx.shutdown.cancelled() => return Ok(Stop::Shutdown),
                r = self.read(from) => r?,
            };
            if read.is_empty() {
                continue;
            }
            let started = Instant::now();
            let traced_from = rps_telemetry::now_if_enabled();
            let result = applier
                .apply(&read, |_, _| false)
                .instrument(tracing::debug_span!("batch", entries = read.len()))
                .await;
            if let Some(at) = traced_from {
                self.trace_batch(&read, from, at, &result);
            }
            match result {
                Ok(report) => {
                    delays.reset();
                    held_by = None;
                    self.record(&report, started);
                }
                Err(ApplyError::GenerationChanged { expected, active }) => {
                    tracing::info!(from = expected, to = ?active, "generation switched; reloading");
                    // The copy the commit checks names the generation to
                    // write; the readers' marker may still be ahead of or
                    // behind it while a switch finishes.
                    let gen = match active.as_deref().and_then(|a| a.parse().ok()) {
                        Some(g) => g,
                        None => generation::ensure(&self.client, &keys).await?,
                    };
                    applier = self.applier(gen);
                }
                Err(ApplyError::Switching(barrier)) => {
                    if held_by.as_ref() != Some(&barrier) {
                        tracing::info!(
                            from = barrier.from,
                            to = barrier.to,
                            "a generation switch holds the shard; waiting for it"
                        );
                        metrics::counter!(m::CONFLICTS, "kind" => "switching").increment(1);
                        held_by = Some(barrier.clone());
                    }
                    let gen = match switch::resolve(
                        &self.client,
                        &keys,
                        self.ctx.shard_count,
                        &barrier,
                        false,
                    )
                    .await?
                    {
                        Resolution::Wait(left) => {
                            let pause = SWITCH_POLL.min(left.max(Duration::from_millis(1)));
                            if !retry::sleep(pause, &self.ctx.shutdown).await {
                                return Ok(Stop::Shutdown);
                            }
                            continue;
                        }
                        Resolution::Resumed => {
                            tracing::warn!(
                                generation = barrier.from,
                                abandoned = barrier.to,
                                "the switch was abandoned before it was decided \
                                 (its replay stopped?); resuming"
                            );
                            barrier.from
                        }
                        Resolution::Switched => {
                            tracing::info!(to = barrier.to, "generation switched");
                            barrier.to
                        }
                    };
                    if applier.generation() != gen {
                        applier = self.applier(gen);
                    }
                }
                Err(e) => return Err(e.into()),
            }
        }
    }

    fn applier(&self, generation: u64) -> Applier {
        Applier::new(
            self.client.clone(),
            self.ctx.keys.clone(),
            generation,
            self.ctx.shard,
            self.ctx.shard_count,
            ApplierOptions::default(),
        )
    }

    fn record(&self, report: &ApplyReport, started: Instant) {
        let shard = self.ctx.shard.to_string();
        metrics::histogram!(m::BATCH_SECONDS).record(started.elapsed().as_secs_f64());
        for (t, n) in rps_core::EventType::ALL.iter().zip(report.applied_by_type) {
            if n > 0 {
                metrics::counter!(m::EVENTS_APPLIED, "shard" => shard.clone(), "type" => t.as_str())
                    .increment(n as u64);
            }
        }
        if report.redelivered > 0 {
            metrics::counter!(m::REDELIVERED, "shard" => shard.clone())
                .increment(report.redelivered as u64);
        }
        for (_, code) in &report.rejected {
            metrics::counter!(m::REJECTIONS, "shard" => shard.clone(), "code" => *code)
                .increment(1);
        }
        if let Some(at) = report.applied_at {
            let h = metrics::histogram!(m::FRESHNESS_SECONDS);
            for t in &report.occurred {
                h.record((at.as_micros() - t.as_micros()) as f64 / 1e6);
            }
        }
        if let Some(obs) = &self.ctx.observer {
            let _ = obs.send((self.ctx.shard, report.clone()));
        }
    }

    /// The spans of a batch's entries of sampled matches: applied, rejected
    /// (with the rejection's code), redelivered (at or below the progress
    /// the batch was read from), or failed with the batch (then read and
    /// applied again, under new spans).
    fn trace_batch(
        &self,
        read: &[BatchEntry],
        from: Option<StreamId>,
        at: SystemTime,
        result: &Result<ApplyReport, ApplyError>,
    ) {
        let end = SystemTime::now();
        let batch_id = read.last().map(|e| e.id.as_str()).unwrap_or_default();
        for entry in read {
            let Ok(ev) = &entry.entry else { continue };
            let e = &ev.event;
            if !rps_telemetry::sampled(e.match_id) {
                continue;
            }
            let span = SpanStart::new(rps_telemetry::apply_name(e.event_type))
                .kind(SpanKind::Consumer)
                .at(Some(at))
                .attrs(vec![
                    KeyValue::new(attr::SHARD, i64::from(self.ctx.shard)),
                    KeyValue::new(attr::EVENT_TYPE, e.event_type.as_str()),
                    KeyValue::new(attr::VERSION, i64::from(e.version)),
                    KeyValue::new(attr::STREAM_ID, entry.id.clone()),
                    KeyValue::new(attr::BATCH_ID, batch_id.to_string()),
                    KeyValue::new(attr::BATCH_ENTRIES, read.len() as i64),
                ]);
            let Some(mut span) = rps_telemetry::start(Component::Projector, e.match_id, span)
            else {
                continue;
            };
            let outcome = match result {
                Ok(report) => {
                    let redelivered = matches!(
                        (StreamId::parse(&entry.id), from),
                        (Some(id), Some(p)) if id <= p
                    );
                    match report.rejected.iter().find(|(id, _)| *id == entry.id) {
                        Some((_, code)) => {
                            span.event("rejected", vec![KeyValue::new(attr::REASON, *code)]);
                            span.error(*code);
                            "rejected"
                        }
                        None if redelivered => "redelivered",
                        None => "applied",
                    }
                }
                Err(err) => {
                    span.error(err.to_string());
                    "failed"
                }
            };
            span.set(KeyValue::new(attr::OUTCOME, outcome));
            span.end_at(end);
        }
    }

    /// One blocking `XREAD` of the entries after `from` (up to `block_ms`).
    async fn read(&self, from: Option<StreamId>) -> Result<Vec<BatchEntry>, fred::error::Error> {
        let stream = self.ctx.keys.events(self.ctx.shard);
        let slot = rps_core::redis_client::slot_of(&stream);
        let args = vec![
            "COUNT".to_string(),
            self.ctx.batch_size.to_string(),
            "BLOCK".to_string(),
            self.ctx.block_ms.to_string(),
            "STREAMS".to_string(),
            stream,
            from.unwrap_or_default().to_string(),
        ];
        let v: Value = self
            .client
            .custom(CustomCommand::new_static("XREAD", slot, true), args)
            .await?;
        Ok(parse_read(v))
    }
}

/// `[[stream, [[id, [f, v, …]], …]]]` → entries, decoded where possible.
pub fn parse_read(v: Value) -> Vec<BatchEntry> {
    let mut out = Vec::new();
    for stream in v.into_array() {
        let Some(entries) = stream.into_array().into_iter().nth(1) else {
            continue;
        };
        for entry in entries.into_array() {
            let mut parts = entry.into_array().into_iter();
            let Some(id) = parts.next().and_then(|v| value_text(&v)) else {
                continue;
            };
            let fields = parts.next().unwrap_or(Value::Null);
            out.push(BatchEntry {
                id,
                entry: decode_fields(fields),
            });
        }
    }
    out
}

/// Decodes an entry's field list; an entry deleted from the stream while
/// pending comes back without fields and is reported, not dropped.
pub fn decode_fields(fields: Value) -> Result<StreamEvent, Undecodable> {
    let raw: Vec<Value> = match fields {
        Value::Array(a) => a,
        Value::Map(m) => m
            .inner()
            .into_iter()
            .flat_map(|(k, v)| [Value::from(k), v])
            .collect(),
        _ => Vec::new(),
    };
    let pairs: Vec<(&[u8], &[u8])> = raw
        .chunks(2)
        .filter_map(|c| Some((c.first()?.as_bytes()?, c.get(1)?.as_bytes()?)))
        .collect();
    StreamEvent::decode(pairs.iter().copied()).map_err(|error| Undecodable {
        error,
        fields: rps_core::stream::named_fields(pairs.iter().copied()),
    })
}

/// A projector is ready (`/readyz`) while no shard of the live generation
/// is further behind its stream than this, in event time: a replica
/// catching up on a backlog is alive but serves stale read models.
pub const READY_MAX_LAG_SECONDS: f64 = 10.0;

/// The readiness check the lag reporter keeps.
pub const READY_CHECK: &str = "lag";

/// Publishes the lag gauges of every shard once a second, and keeps
/// `ready`'s lag check against [`READY_MAX_LAG_SECONDS`].
pub async fn lag_reporter(
    redis: RedisConfig,
    keys: Keys,
    shard_count: u16,
    shutdown: CancellationToken,
    ready: rps_core::health::Readiness,
) {
    let mut delays = backoff();
    let client = loop {
        match ClientPolicy::default().connect(&redis).await {
            Ok(c) => break c,
            Err(e) => {
                tracing::warn!(error = %e, "lag reporter cannot connect; retrying");
                ready.not_ready(READY_CHECK, format!("connecting to Redis: {e}"));
                if !delays.wait(&shutdown).await {
                    return;
                }
            }
        }
    };
    loop {
        if !retry::sleep(Duration::from_secs(1), &shutdown).await {
            return;
        }
        let gen = match generation::active(&client, &keys).await {
            Ok(Some(g)) => g,
            Ok(None) => {
                ready.not_ready(READY_CHECK, "no active read-model generation");
                continue;
            }
            Err(e) => {
                ready.not_ready(READY_CHECK, format!("reading the generation: {e}"));
                continue;
            }
        };
        match read_model::read::progress_with_lag(&client, &keys, gen, shard_count).await {
            Ok(shards) => {
                let mut behind = Vec::new();
                for p in shards {
                    let shard = p.shard.to_string();
                    if let Some(n) = p.lag_entries {
                        metrics::gauge!(m::LAG_ENTRIES, "shard" => shard.clone()).set(n as f64);
                    }
                    if let Some(s) = p.lag_seconds {
                        metrics::gauge!(m::LAG_SECONDS, "shard" => shard).set(s);
                        if s > READY_MAX_LAG_SECONDS {
                            behind.push(format!("shard {} {s:.1} s", p.shard));
                        }
                    }
                }
                if behind.is_empty() {
                    ready.ready(READY_CHECK);
                } else {
                    ready.not_ready(
                        READY_CHECK,
                        format!(
                            "behind its stream by more than {READY_MAX_LAG_SECONDS} s: {}",
                            behind.join(", ")
                        ),
                    );
                }
            }
            Err(e) => ready.not_ready(READY_CHECK, format!("reading the progress: {e}")),
        }
    }
}

impl From<GenerationError> for ProjectorError {
    fn from(e: GenerationError) -> Self {
        ProjectorError::Generation(e)
    }
}

impl From<SwitchError> for ProjectorError {
    fn from(e: SwitchError) -> Self {
        ProjectorError::Switch(e)
    }
}
