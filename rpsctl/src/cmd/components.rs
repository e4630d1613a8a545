//! The long-running components: each subcommand wires a library's `run`
//! to the shutdown signal and, stand-alone, to a `/metrics` endpoint.

use rps_core::Config;
use std::sync::Arc;

#[derive(Debug, clap::Args)]
pub struct MetricsArgs {
    /// Serve Prometheus metrics on this address (overrides the config).
    #[arg(long)]
    pub metrics_bind: Option<String>,
}

pub async fn cdc_reader(_config: Arc<Config>, _args: MetricsArgs) -> anyhow::Result<()> {
    anyhow::bail!("`rpsctl cdc-reader` is being built")
}

pub async fn projector(_config: Arc<Config>, _args: MetricsArgs) -> anyhow::Result<()> {
    anyhow::bail!("`rpsctl projector` is being built")
}

pub async fn api(_config: Arc<Config>) -> anyhow::Result<()> {
    anyhow::bail!("`rpsctl api` is being built")
}

pub async fn compensator(_config: Arc<Config>, _args: MetricsArgs) -> anyhow::Result<()> {
    anyhow::bail!("`rpsctl compensator` is being built")
}

pub async fn run_all(_config: Arc<Config>) -> anyhow::Result<()> {
    anyhow::bail!("`rpsctl run` is being built")
}
