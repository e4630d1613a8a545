//! `rpsctl simulate`: plays the upstream game servers.
//!
//! Parses the arguments into [`simulator::SimulateOptions`], runs the
//! simulator library against the topology of `rps.toml` and prints what it
//! wrote: events, events per second, rows per shard and per server.

use anyhow::Context;
use rps_core::Config;
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
    /// Match deadline after the start: `30s`, `500ms`, `2m`, `1h` or plain seconds.
    #[arg(long, default_value = "30s", value_parser = parse_duration)]
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
}

/// Parses `30s`, `250ms`, `2m`, `1h` or a plain number of seconds.
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let s = s.trim();
    let split = s.find(|c: char| c.is_ascii_alphabetic()).unwrap_or(s.len());
    let (num, unit) = s.split_at(split);
    let n: f64 = num
        .trim()
        .parse()
        .map_err(|_| format!("`{s}` is not a duration like 30s, 500ms, 2m"))?;
    let secs = match unit {
        "" | "s" => n,
        "ms" => n / 1000.0,
        "m" | "min" => n * 60.0,
        "h" => n * 3600.0,
        _ => {
            return Err(format!(
                "unknown unit `{unit}` in `{s}` (use ms, s, m or h)"
            ))
        }
    };
    if !(secs.is_finite() && secs > 0.0) {
        return Err(format!("`{s}` must be a positive duration"));
    }
    Ok(Duration::from_secs_f64(secs))
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
    for (shard, rows) in &report.rows_per_shard {
        println!(
            "  {:<24} {:>10}  ({})",
            config.database(*shard),
            rows,
            config.server_of(*shard).name
        );
    }
    println!("rows per server:");
    for server in &config.servers {
        let rows: u64 = server
            .shards
            .iter()
            .map(|s| report.rows_per_shard.get(s).copied().unwrap_or(0))
            .sum();
        println!("  {:<24} {:>10}", server.name, rows);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::parse_duration;
    use std::time::Duration;

    #[test]
    fn durations() {
        assert_eq!(parse_duration("30s"), Ok(Duration::from_secs(30)));
        assert_eq!(parse_duration("45"), Ok(Duration::from_secs(45)));
        assert_eq!(parse_duration("250ms"), Ok(Duration::from_millis(250)));
        assert_eq!(parse_duration("2m"), Ok(Duration::from_secs(120)));
        assert!(parse_duration("3 days").is_err());
        assert!(parse_duration("0s").is_err());
        assert!(parse_duration("s").is_err());
    }
}
