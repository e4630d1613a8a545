//! `rpsctl`: the one operator binary.
//!
//! It parses arguments, loads `rps.toml` and hands typed values to the
//! libraries (cdc-reader, projector, compensator, api, simulator, event
//! store); no component logic lives here.

mod cli;
mod cmd;
mod failure;
mod metrics_catalog;
mod runtime;

use clap::{CommandFactory, Parser, Subcommand};
use failure::Failure;
use rps_core::Config;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

/// CDC-driven event sourcing for rock-paper-scissors match results.
#[derive(Debug, Parser)]
#[command(name = "rpsctl", version, about, after_help = failure::EXIT_CODES_HELP)]
struct Cli {
    /// The deployment description.
    #[arg(long, global = true, env = "RPS_CONFIG", default_value = "rps.toml")]
    config: PathBuf,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Create shard databases, event tables and the pipeline account on every server.
    Init(cmd::init::Args),
    /// Play the upstream game servers: write a simulated tournament into the shards.
    Simulate(cmd::simulate::Args),
    /// Tail every server's binlog into the shard streams.
    CdcReader(cmd::cdc_reader::Args),
    /// Fold the shard streams into the read models.
    Projector(cmd::MetricsBind),
    /// Serve the leaderboard HTTP API (and /metrics).
    Api(cmd::api::Args),
    /// Fire expired saga deadlines as `timed_out` events.
    Compensator(cmd::MetricsBind),
    /// Run cdc-reader, projector, compensator and API in one process.
    Run(cmd::run_all::Args),
    /// Rebuild every read model from the event store into a new generation, then switch.
    Replay(cmd::replay::Args),
    /// Export event history (NDJSON, CSV, Parquet).
    Export(cmd::export::Args),
    /// Recompute the read models from the event store and compare with the live ones.
    Verify(cmd::verify::Args),
    /// Per server and shard: positions, lag, streams, deadlines, dead letters.
    Status(cmd::status::Args),
    /// Inspect and act on dead letters.
    #[command(subcommand)]
    Dlq(cmd::dlq::Command),
    /// Prepared XA branches: list them, commit or roll one back, sweep old ones.
    #[command(subcommand)]
    Xa(cmd::xa::Command),
    /// Live terminal view: leaderboard, events and lag per shard, deadlines, dead letters.
    Top(cmd::top::Args),
    /// End-to-end benchmark in throw-away databases and keys of the configured servers.
    Bench(cmd::bench::Args),
    /// Print a shell completion script: `rpsctl completions bash > /etc/bash_completion.d/rpsctl`.
    Completions(cmd::completions::Args),
    /// GET a component's /readyz (or /healthz): exit 0 on 2xx, 1 otherwise (container health checks).
    Healthcheck(cmd::healthcheck::Args),
}

fn main() -> ExitCode {
    // Usage errors exit here with clap's code 2 (help and version with 0).
    let cli = Cli::parse();
    if let Command::Completions(args) = &cli.command {
        // Needs neither a config file nor a runtime.
        return match cmd::completions::run(args, Cli::command()) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => Failure::from(e).report(),
        };
    }
    if let Command::Healthcheck(args) = &cli.command {
        return match cmd::healthcheck::run(args) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => Failure::from(e).report(),
        };
    }
    runtime::init_tracing();
    let rt = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            return Failure::CouldNotRun(
                anyhow::Error::new(e).context("starting the async runtime"),
            )
            .report()
        }
    };
    match rt.block_on(dispatch(cli)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(f) => f.report(),
    }
}

fn load_config(path: &std::path::Path) -> anyhow::Result<Arc<Config>> {
    Ok(Arc::new(Config::load(path)?))
}

async fn dispatch(cli: Cli) -> Result<(), Failure> {
    let config = load_config(&cli.config)?;
    let result = match cli.command {
        Command::Init(args) => cmd::init::run(config, args).await,
        Command::Simulate(args) => cmd::simulate::run(config, args).await,
        Command::CdcReader(args) => cmd::cdc_reader::run(config, args).await,
        Command::Projector(args) => cmd::projector::run(config, args).await,
        Command::Api(args) => cmd::api::run(config, args).await,
        Command::Compensator(args) => cmd::compensator::run(config, args).await,
        Command::Run(args) => cmd::run_all::run(config, args).await,
        Command::Replay(args) => cmd::replay::run(config, args).await,
        Command::Export(args) => cmd::export::run(config, args).await,
        Command::Verify(args) => cmd::verify::run(config, args).await,
        Command::Status(args) => cmd::status::run(config, args).await,
        Command::Dlq(command) => cmd::dlq::run(config, command).await,
        Command::Xa(command) => cmd::xa::run(config, command).await,
        Command::Bench(args) => cmd::bench::run(config, args).await,
        Command::Top(args) => cmd::top::run(config, args).await,
        Command::Completions(_) | Command::Healthcheck(_) => {
            unreachable!("handled before the runtime starts")
        }
    };
    result.map_err(Failure::from)
}
