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
    /// Print the closing summary as JSON (on stderr when the rows go to stdout).
    #[arg(long)]
    json: bool,
}

/// What the export wrote, printed once it is done.
#[derive(Debug, serde::Serialize)]
struct Summary {
    format: &'static str,
    /// The file, or `-` for standard output.
    output: String,
    rows: u64,
    seconds: f64,
    rows_per_second: f64,
}

impl Summary {
    fn text(&self) -> String {
        format!(
            "exported {} rows ({}) in {:.2}s ({:.0} rows/s) to {}",
            self.rows,
            self.format,
            self.seconds,
            self.rows_per_second,
            if self.output == "-" {
                "standard output"
            } else {
                &self.output
            }
        )
    }
}

fn format_name(f: Format) -> &'static str {
    match f {
        Format::Ndjson => "ndjson",
        Format::Csv => "csv",
        Format::Parquet => "parquet",
    }
}

pub async fn run(config: Arc<Config>, args: Args) -> anyhow::Result<()> {
    super::common::check_shard(&config, args.shard)?;
    let opts = ExportOptions {
        format: args.format,
        season: args.season,
        from: args.from,
        to: args.to,
        shards: args.shard.map(|s| vec![s]),
    };
    let shutdown = crate::runtime::shutdown_on_signal();
    let to_stdout = args.output.as_os_str() == "-";
    let report = if to_stdout {
        history::export::export(config, opts, std::io::stdout(), shutdown).await
    } else {
        let file = std::fs::File::create(&args.output)
            .with_context(|| format!("creating {}", args.output.display()))?;
        history::export::export(config, opts, file, shutdown).await
    }
    .context("export")?;
    let summary = Summary {
        format: format_name(args.format),
        output: args.output.display().to_string(),
        rows: report.rows,
        seconds: report.seconds,
        rows_per_second: report.rows as f64 / report.seconds.max(1e-9),
    };
    // The rows own stdout when they go there; the summary must not mix in.
    match (args.json, to_stdout) {
        (true, true) => crate::cli::eprint_json(&summary)?,
        (true, false) => crate::cli::print_json(&summary)?,
        (false, true) => eprintln!("{}", summary.text()),
        (false, false) => println!("{}", summary.text()),
    }
    Ok(())
}
