//! The simulator plays the upstream game servers: it writes a tournament of
//! rock-paper-scissors matches into the shard tables, as fast as the servers
//! take it or at a given rate of match starts.
//!
//! Matches are full (started, both moves in random order, finished), later
//! voided, or abandoned after zero, one or both moves so that the
//! compensator has deadlines to fire. Every event goes to the challenger's
//! shard; within a match the events are committed strictly in version order
//! and `uk_match_version` is respected (see [`writer`] for how). This crate
//! only writes to MySQL: it reads no binlog and touches no Redis.
//!
//! Split: [`plan`] decides what a match does (pure), [`pacer`] when matches
//! start, [`writer`] how one shard's events reach the table; [`run`] wires one
//! writer per shard and adds up their reports.

pub mod pacer;
pub mod plan;
mod writer;

use rand::rngs::StdRng;
use rand::SeedableRng;
use rps_core::ids::MatchIdGenerator;
use rps_core::ShardId;
use rps_event_store::{EventStore, StoreError};
use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;
use tokio_util::sync::CancellationToken;

/// Metric names (Prometheus style, see docs/simulator.md), with the help
/// text and histogram buckets `rpsctl` registers them with.
pub mod metric {
    use rps_core::metric_catalogue::MetricCatalogue;

    /// Counter, label `shard`: events committed.
    pub const EVENTS_WRITTEN: &str = "rps_simulator_events_written_total";
    /// Counter: matches started (planned and admitted into a writer).
    pub const MATCHES_STARTED: &str = "rps_simulator_matches_started_total";
    /// Counter, label `reason` (`duplicate_key`, `transient`): batches that failed and were reconciled.
    pub const BATCH_RETRIES: &str = "rps_simulator_batch_retries_total";
    /// Counter: matches given up because another writer took their next version.
    pub const VERSION_CONFLICTS: &str = "rps_simulator_version_conflicts_total";
    /// Histogram, label `shard`: duration of one multi-row INSERT.
    pub const BATCH_SECONDS: &str = "rps_simulator_batch_seconds";

    /// Every metric with its help text; histogram bounds in seconds: a
    /// multi-row INSERT commits in milliseconds, seconds when the server
    /// stalls on a flush.
    pub const CATALOGUE: MetricCatalogue = MetricCatalogue {
        counters: &[
            (EVENTS_WRITTEN, "Simulated events committed, per shard"),
            (MATCHES_STARTED, "Simulated matches started"),
            (
                BATCH_RETRIES,
                "Insert batches that failed and were reconciled, per reason",
            ),
            (
                VERSION_CONFLICTS,
                "Simulated matches given up because another writer took their next version",
            ),
        ],
        gauges: &[],
        histograms: &[(
            BATCH_SECONDS,
            "Duration of one multi-row INSERT, per shard",
            &[
                0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0,
            ],
        )],
    };
}

/// What to simulate. Built by `rpsctl simulate` from its arguments.
#[derive(Debug, Clone, PartialEq)]
pub struct SimulateOptions {
    /// Player ids are `1..=players`.
    pub players: u64,
    /// Matches to play.
    pub matches: u64,
    /// Matches started per second over all shards; `None` = as fast as possible.
    pub rate: Option<f64>,
    /// Matches in flight at once over all shards; bounds the batch size.
    pub concurrency: usize,
    /// Share of matches abandoned before `finished` (they must time out).
    pub abandoned: f64,
    /// Share of matches voided after `finished`.
    pub voided: f64,
    /// `deadline_at` = start + this.
    pub deadline: Duration,
    /// Seed of the match plans; `None` draws one (reported, so a run can be repeated).
    pub seed: Option<u64>,
    /// Rows per multi-row INSERT at most.
    pub batch_rows: usize,
    /// Simulated game-server nodes, each with its own match id generator.
    pub nodes: u8,
    /// Node number of the first node: give concurrent simulators disjoint
    /// ranges so their match ids cannot collide.
    pub first_node: u8,
    /// Datacenter bits of the match ids.
    pub datacenter: u8,
    /// Event table in every shard database.
    pub table: String,
}

impl Default for SimulateOptions {
    fn default() -> Self {
        SimulateOptions {
            players: 1000,
            matches: 10_000,
            rate: None,
            concurrency: 8000,
            abandoned: 0.05,
            voided: 0.02,
            deadline: Duration::from_secs(30),
            seed: None,
            batch_rows: 1000,
            nodes: 4,
            first_node: 0,
            datacenter: 0,
            table: "match_result_events".to_string(),
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum SimulateError {
    #[error("invalid simulation options: {0}")]
    Options(String),
    #[error("shard {shard}: {source}")]
    Store {
        shard: ShardId,
        #[source]
        source: StoreError,
    },
    #[error("shard {shard} on `{server}`: a batch failed with a duplicate key, yet none of its versions is stored; is another process writing the same event ids?")]
    UnexplainedDuplicate { shard: ShardId, server: String },
    #[error("a shard writer stopped unexpectedly: {0}")]
    Task(String),
}

/// What a run did.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Report {
    /// The seed the plans were drawn from.
    pub seed: u64,
    pub matches_started: u64,
    /// Finished and not voided.
    pub finished: u64,
    /// Draws among `finished`.
    pub draws: u64,
    pub voided: u64,
    /// Left without `finished`, for the compensator to time out.
    pub abandoned: u64,
    /// Given up because another writer took a version first.
    pub conflicts: u64,
    /// In flight when a shutdown interrupted a retry.
    pub interrupted: u64,
    /// Events committed.
    pub events: u64,
    /// Multi-row INSERTs committed or reconciled.
    pub batches: u64,
    /// Batches that failed and were reconciled.
    pub failed_batches: u64,
    pub elapsed: Duration,
    /// Events committed per shard (every shard of the topology is listed).
    pub rows_per_shard: BTreeMap<ShardId, u64>,
}

impl Report {
    pub fn events_per_second(&self) -> f64 {
        let s = self.elapsed.as_secs_f64();
        if s > 0.0 {
            self.events as f64 / s
        } else {
            0.0
        }
    }
}

impl SimulateOptions {
    fn validate(&self) -> Result<plan::FateMix, SimulateError> {
        let bad = |m: String| Err(SimulateError::Options(m));
        if self.players < 2 {
            return bad(format!(
                "--players must be at least 2 (a match has two distinct players), got {}",
                self.players
            ));
        }
        if self.players > i64::MAX as u64 {
            return bad("--players does not fit a BIGINT".into());
        }
        if self.concurrency == 0 || self.batch_rows == 0 {
            return bad("--concurrency and the batch size must be at least 1".into());
        }
        if self.nodes == 0 || u32::from(self.first_node) + u32::from(self.nodes) > 128 {
            return bad(format!(
                "nodes {}..{} do not fit the 7 node bits of a match id",
                self.first_node,
                u32::from(self.first_node) + u32::from(self.nodes)
            ));
        }
        if let Some(r) = self.rate {
            if !(r > 0.0 && r.is_finite()) {
                return bad(format!("--rate must be a positive number, got {r}"));
            }
        }
        if self.deadline.is_zero() {
            return bad("--deadline must be positive".into());
        }
        plan::FateMix::new(self.abandoned, self.voided).map_err(SimulateError::Options)
    }
}

/// Plays `options.matches` matches into the shards of `store`'s topology.
///
/// On shutdown no new match starts; those in flight are played to their
/// planned end (a few more batches) and the report covers what was written.
pub async fn run(
    store: EventStore,
    options: SimulateOptions,
    shutdown: CancellationToken,
) -> Result<Report, SimulateError> {
    let mix = options.validate()?;
    let shard_count = store.config().shard_count;
    let seed = options.seed.unwrap_or_else(rand::random);
    let players = plan::PlayerPool {
        players: options.players,
        shard_count,
    };
    let nodes = (0..options.nodes)
        .map(|n| MatchIdGenerator::new(options.datacenter, options.first_node + n))
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| SimulateError::Options(e.to_string()))?;
    let per_shard = plan::matches_per_shard(&players, options.matches);
    let shared = Arc::new(writer::Shared {
        store,
        table: options.table.clone(),
        mix,
        players,
        nodes,
        pacer: pacer::Pacer::new(options.rate),
        batch_rows: options.batch_rows,
        deadline_micros: i64::try_from(options.deadline.as_micros()).unwrap_or(i64::MAX),
        // A child token: a failing writer stops its siblings, not the caller.
        shutdown: shutdown.child_token(),
    });
    tracing::info!(
        seed,
        matches = options.matches,
        players = options.players,
        shards = shard_count,
        "simulating"
    );

    let started = std::time::Instant::now();
    let mut tasks = tokio::task::JoinSet::new();
    for (shard, &matches) in per_shard.iter().enumerate() {
        if matches == 0 {
            continue;
        }
        let shard = shard as ShardId;
        // Slots in proportion to the shard's share of matches.
        let slots = ((options.concurrency as u128 * u128::from(matches)
            / u128::from(options.matches.max(1))) as usize)
            .clamp(1, matches.try_into().unwrap_or(usize::MAX));
        let job = writer::ShardJob {
            shard,
            matches,
            slots,
            rng: StdRng::seed_from_u64(
                seed ^ (u64::from(shard) + 1).wrapping_mul(0x9E37_79B9_7F4A_7C15),
            ),
        };
        let shared = shared.clone();
        tasks.spawn(async move { (shard, writer::write_shard(shared, job).await) });
    }

    let mut report = Report {
        seed,
        rows_per_shard: (0..shard_count).map(|s| (s, 0)).collect(),
        ..Report::default()
    };
    let mut first_error = None;
    while let Some(joined) = tasks.join_next().await {
        let (shard, result) = match joined {
            Ok(r) => r,
            Err(e) => {
                first_error.get_or_insert(SimulateError::Task(e.to_string()));
                continue;
            }
        };
        match result {
            Ok(t) => {
                report.matches_started += t.matches_started;
                report.finished += t.finished;
                report.draws += t.draws;
                report.voided += t.voided;
                report.abandoned += t.abandoned;
                report.conflicts += t.conflicts;
                report.interrupted += t.interrupted;
                report.events += t.events;
                report.batches += t.batches;
                report.failed_batches += t.failed_batches;
                report.rows_per_shard.insert(shard, t.events);
            }
            Err(e) => {
                tracing::error!(shard, error = %e, "shard writer failed; stopping the others");
                shared.shutdown.cancel();
                first_error.get_or_insert(e);
            }
        }
    }
    report.elapsed = started.elapsed();
    match first_error {
        Some(e) => Err(e),
        None => Ok(report),
    }
}
