//! `rpsctl simulate`: plays the upstream game servers.
//!
//! Parses the arguments into [`simulator::SimulateOptions`], runs the
//! simulator library against the topology of `rps.toml` and prints what it
//! wrote: events, events per second, rows per shard and per server.

use anyhow::Context;
use rps_core::{Config, ShardId};
use rps_event_store::EventStore;
use simulator::SimulateOptions;
use std::sync::Arc;
use std::time::Duration;

#[derive(Debug, clap::Args)]
pub struct Args {
    /// Player ids are 1..=P.
    #[arg(long, default_value_t = 1000)]
    players: u64,
    /// Matches to play.
    #[arg(long, default_value_t = 10_000)]
    matches: u64,
    /// Matches started per second over all shards (default: as fast as possible).
    #[arg(long)]
    rate: Option<f64>,
    /// Matches in flight at once over all shards.
    #[arg(long, default_value_t = 8000)]
    concurrency: usize,
    /// Share of matches abandoned before `finished` (the compensator times them out).
    #[arg(long, default_value_t = 0.05)]
    abandoned: f64,
    /// Share of matches voided after `finished`.
    #[arg(long, default_value_t = 0.02)]
    voided: f64,
    /// Match deadline after the start: `30s`, `500ms`, `2m`, `1h`.
    #[arg(long, default_value = "30s", value_parser = crate::cli::parse_duration)]
    deadline: Duration,
    /// Seed of the match plans (default: random, printed so the run can be repeated).
    #[arg(long)]
    seed: Option<u64>,
    /// Rows per multi-row INSERT at most.
    #[arg(long, default_value_t = 1000)]
    batch_rows: usize,
    /// Simulated game-server nodes (match id generators).
    #[arg(long, default_value_t = 4)]
    nodes: u8,
    /// Node number of the first node; concurrent simulators need disjoint node ranges.
    #[arg(long, default_value_t = 0)]
    first_node: u8,
    /// Print the summary as JSON.
    #[arg(long)]
    json: bool,
}

/// What the run wrote, as `--json` prints it.
#[derive(Debug, serde::Serialize)]
struct Summary {
    seed: u64,
    matches_started: u64,
    finished: u64,
    draws: u64,
    voided: u64,
    abandoned: u64,
    conflicts: u64,
    interrupted: u64,
    events: u64,
    seconds: f64,
    events_per_second: f64,
    batches: u64,
    failed_batches: u64,
    shards: Vec<ShardRows>,
    servers: Vec<ServerRows>,
}

#[derive(Debug, serde::Serialize)]
struct ShardRows {
    shard: ShardId,
    database: String,
    server: String,
    rows: u64,
}

#[derive(Debug, serde::Serialize)]
struct ServerRows {
    server: String,
    rows: u64,
}

fn summary(config: &Config, report: &simulator::Report) -> Summary {
    Summary {
        seed: report.seed,
        matches_started: report.matches_started,
        finished: report.finished,
        draws: report.draws,
        voided: report.voided,
        abandoned: report.abandoned,
        conflicts: report.conflicts,
        interrupted: report.interrupted,
        events: report.events,
        seconds: report.elapsed.as_secs_f64(),
        events_per_second: report.events_per_second(),
        batches: report.batches,
        failed_batches: report.failed_batches,
        shards: report
            .rows_per_shard
            .iter()
            .map(|(&shard, &rows)| ShardRows {
                shard,
                database: config.database(shard),
                server: config.server_of(shard).name.clone(),
                rows,
            })
            .collect(),
        servers: config
            .servers
            .iter()
            .map(|server| ServerRows {
                server: server.name.clone(),
                rows: server
                    .shards
                    .iter()
                    .map(|s| report.rows_per_shard.get(s).copied().unwrap_or(0))
                    .sum(),
            })
            .collect(),
    }
}

pub async fn run(config: Arc<Config>, args: Args) -> anyhow::Result<()> {
    let options = SimulateOptions {
        players: args.players,
        matches: args.matches,
        rate: args.rate,
        concurrency: args.concurrency,
        abandoned: args.abandoned,
        voided: args.voided,
        deadline: args.deadline,
        seed: args.seed,
        batch_rows: args.batch_rows,
        nodes: args.nodes,
        first_node: args.first_node,
        ..SimulateOptions::default()
    };
    // One connection per shard writer plus one for re-reads is all it uses.
    let store = EventStore::with_pool_size(config.clone(), usize::from(config.shard_count) + 2)?;
    let shutdown = crate::runtime::shutdown_on_signal();
    let report = simulator::run(store.clone(), options, shutdown)
        .await
        .context("simulation failed")?;
    store.disconnect().await;
    let summary = summary(&config, &report);
    if args.json {
        return crate::cli::print_json(&summary);
    }

    println!(
        "simulated {} matches (seed {}): {} finished ({} draws), {} voided, {} abandoned for the compensator, {} given up on a version conflict{}",
        report.matches_started,
        report.seed,
        report.finished,
        report.draws,
        report.voided,
        report.abandoned,
        report.conflicts,
        if report.interrupted > 0 {
            format!(", {} interrupted", report.interrupted)
        } else {
            String::new()
        }
    );
    println!(
        "events written: {} in {:.2} s = {:.0} events/s ({} batches, {} reconciled)",
        report.events,
        report.elapsed.as_secs_f64(),
        report.events_per_second(),
        report.batches,
        report.failed_batches
    );
    println!("rows per shard:");
    for s in &summary.shards {
        println!("  {:<24} {:>10}  ({})", s.database, s.rows, s.server);
    }
    println!("rows per server:");
    for s in &summary.servers {
        println!("  {:<24} {:>10}", s.server, s.rows);
    }
    Ok(())
}
