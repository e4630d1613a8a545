//! `rpsctl compensator`: fires expired saga deadlines as `timed_out` events.
//! Ready (`/readyz`) while its claims against Redis succeed.

use rps_core::Config;
use std::sync::Arc;

#[derive(Debug, clap::Args)]
pub struct Args {
    /// Serve Prometheus `/metrics`, `/healthz` and `/readyz` here (default: `compensator.metrics_bind` of the config).
    #[arg(long)]
    metrics_bind: Option<String>,
}

pub async fn run(config: Arc<Config>, args: Args) -> anyhow::Result<()> {
    let bind = args
        .metrics_bind
        .or_else(|| config.compensator.metrics_bind.clone());
    super::common::run_traced_component(config, bind, compensator::run_with_readiness).await
}
