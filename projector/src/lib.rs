//! The projector: folds every shard stream into the read models in Redis,
//! exactly once, and the read side of those models.
//!
//! - [`apply`]: the batch applier (fold in Rust, then one atomic commit per
//!   batch through `read_model::commit`, fenced by generation and per-shard
//!   progress). Shared with `rpsctl replay`.
//! - [`consumer`]: one worker per shard (lease, consumer group, takeover).
//! - [`metrics`]: metric names.
//!
//! The layout it writes, and every read of it, is the `read-model` crate's.
//! It does not read MySQL and does not serve HTTP.

pub mod apply;
pub mod consumer;
pub mod metrics;

use fred::interfaces::ClientLike;
use rps_core::health::Readiness;
use rps_core::Config;
use std::sync::Arc;
use tokio_util::sync::CancellationToken;

pub use apply::{Applier, ApplierOptions, ApplyError, ApplyReport, BatchEntry, StreamId};
pub use consumer::Observer;
/// The Redis client library, re-exported so callers name the same version.
pub use fred;

#[derive(Debug, thiserror::Error)]
pub enum ProjectorError {
    #[error("redis: {0}")]
    Redis(#[from] fred::error::Error),
    #[error(transparent)]
    Apply(#[from] ApplyError),
    #[error(transparent)]
    Generation(read_model::generation::GenerationError),
    /// Ending a generation switch the worker found holding its shard.
    #[error(transparent)]
    Switch(read_model::generation::switch::SwitchError),
    #[error("shard worker {shard} stopped unexpectedly: {message}")]
    Worker { shard: u16, message: String },
}

impl ProjectorError {
    /// Whether the worker should back off and try again.
    pub fn is_transient(&self) -> bool {
        match self {
            ProjectorError::Redis(_) => true,
            ProjectorError::Apply(e) => e.is_transient(),
            ProjectorError::Generation(e) => e.is_transient(),
            ProjectorError::Switch(e) => e.is_transient(),
            ProjectorError::Worker { .. } => false,
        }
    }
}

/// Runs the projector until `shutdown` is cancelled or a definite error.
pub async fn run(config: Arc<Config>, shutdown: CancellationToken) -> Result<(), ProjectorError> {
    run_observed(config, shutdown, None).await
}

/// [`run`], reporting every committed batch to `observer`.
pub async fn run_observed(
    config: Arc<Config>,
    shutdown: CancellationToken,
    observer: Option<Observer>,
) -> Result<(), ProjectorError> {
    run_inner(config, shutdown, observer, Readiness::new()).await
}

/// [`run`], keeping `ready`'s lag check current (see
/// [`consumer::READY_MAX_LAG_SECONDS`]).
pub async fn run_with_readiness(
    config: Arc<Config>,
    shutdown: CancellationToken,
    ready: Readiness,
) -> Result<(), ProjectorError> {
    let r = run_inner(config, shutdown, None, ready.clone()).await;
    ready.not_ready(consumer::READY_CHECK, "stopped");
    r
}

async fn run_inner(
    config: Arc<Config>,
    shutdown: CancellationToken,
    observer: Option<Observer>,
    ready: Readiness,
) -> Result<(), ProjectorError> {
    // The series exist from the start, so a rate over a window that
    // begins before the first batch counts that batch.
    let _ = ::metrics::histogram!(metrics::BATCH_SECONDS);
    let _ = ::metrics::histogram!(metrics::FRESHNESS_SECONDS);
    for shard in 0..config.shard_count {
        for t in rps_core::EventType::ALL {
            ::metrics::counter!(metrics::EVENTS_APPLIED, "shard" => shard.to_string(), "type" => t.as_str())
                .increment(0);
        }
    }
    let keys = config.keys();
    let client = read_model::redis_util::connect(&config.redis).await?;
    for shard in 0..config.shard_count {
        create_group(&client, &keys.events(shard)).await?;
    }
    let gen = read_model::generation::ensure(&client, &keys).await?;
    let consumer = format!(
        "projector-{}-{:08x}",
        std::process::id(),
        rand::random::<u32>()
    );
    let p = &config.projector;
    // The lease must outlive a blocking read plus a batch several times over.
    let lease_ms = p.claim_idle_ms.max(4 * p.block_ms).max(1000);
    tracing::info!(generation = gen, %consumer, shards = config.shard_count, "projector starting");

    let workers_stop = shutdown.child_token();
    let mut tasks = tokio::task::JoinSet::new();
    for shard in 0..config.shard_count {
        let ctx = consumer::WorkerContext {
            redis: config.redis.clone(),
            keys: keys.clone(),
            shard,
            shard_count: config.shard_count,
            consumer: consumer.clone(),
            batch_size: p.batch_size.max(1),
            block_ms: p.block_ms,
            lease_ms,
            observer: observer.clone(),
            shutdown: workers_stop.clone(),
        };
        tasks.spawn(async move { (shard, consumer::run_shard(ctx).await) });
    }
    tokio::spawn(consumer::lag_reporter(
        config.redis.clone(),
        keys.clone(),
        config.shard_count,
        workers_stop.clone(),
        ready,
    ));
    let mut first_error = None;
    while let Some(joined) = tasks.join_next().await {
        let outcome = match joined {
            Ok((_, Ok(()))) => None,
            Ok((shard, Err(e))) => {
                tracing::error!(shard, error = %e, "shard worker stopped");
                Some(e)
            }
            Err(e) => Some(ProjectorError::Worker {
                shard: u16::MAX,
                message: e.to_string(),
            }),
        };
        if let Some(e) = outcome {
            workers_stop.cancel();
            first_error.get_or_insert(e);
        }
    }
    workers_stop.cancel();
    let _ = client.quit().await;
    match first_error {
        Some(e) => Err(e),
        None => Ok(()),
    }
}

pub use rps_core::redis_client::create_projector_group as create_group;
