//! `rpsctl projector`: folds the shard streams into the read models.
//! Ready (`/readyz`) while no shard is more than
//! [`projector::consumer::READY_MAX_LAG_SECONDS`] behind its stream.

use rps_core::Config;
use std::sync::Arc;

#[derive(Debug, clap::Args)]
pub struct Args {
    /// Serve Prometheus `/metrics`, `/healthz` and `/readyz` here (default: `projector.metrics_bind` of the config).
    #[arg(long)]
    metrics_bind: Option<String>,
}

pub async fn run(config: Arc<Config>, args: Args) -> anyhow::Result<()> {
    let bind = args
        .metrics_bind
        .or_else(|| config.projector.metrics_bind.clone());
    super::common::run_traced_component(config, bind, projector::run_with_readiness).await
}
