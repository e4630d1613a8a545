//! `rpsctl export`: the event history of all shards, merged in `occurred_at`
//! order, as NDJSON, CSV or Parquet.

use anyhow::Context;
use history::export::{ExportOptions, Format};
use rps_core::{Config, SeasonId, ShardId, Timestamp};
use std::path::PathBuf;
use std::sync::Arc;

#[derive(Debug, clap::Args)]
pub struct Args {
    /// ndjson, csv or parquet.
    #[arg(long)]
    format: Format,
    /// Only this season.
    #[arg(long)]
    season: Option<SeasonId>,
    /// Only events that occurred at or after this time (UTC).
    #[arg(long, value_parser = super::replay::parse_time)]
    from: Option<Timestamp>,
    /// Only events that occurred before this time (UTC).
    #[arg(long, value_parser = super::replay::parse_time)]
    to: Option<Timestamp>,
    /// Only this shard.
    #[arg(long)]
    shard: Option<ShardId>,
    /// Output file, or `-` for standard output.
    #[arg(long, default_value = "-")]
    output: PathBuf,
}

pub async fn run(config: Arc<Config>, args: Args) -> anyhow::Result<()> {
    if let Some(s) = args.shard {
        anyhow::ensure!(
            s < config.shard_count,
            "shard {s} does not exist (shard_count is {})",
            config.shard_count
        );
    }
    let opts = ExportOptions {
        format: args.format,
        season: args.season,
        from: args.from,
        to: args.to,
        shards: args.shard.map(|s| vec![s]),
    };
    let shutdown = crate::runtime::shutdown_on_signal();
    let report = if args.output.as_os_str() == "-" {
        history::export::export(config, opts, std::io::stdout(), shutdown).await
    } else {
        let file = std::fs::File::create(&args.output)
            .with_context(|| format!("creating {}", args.output.display()))?;
        history::export::export(config, opts, file, shutdown).await
    }
    .context("export")?;
    tracing::info!(
        rows = report.rows,
        seconds = report.seconds,
        rows_per_second = report.rows as f64 / report.seconds.max(1e-9),
        "export done"
    );
    Ok(())
}
