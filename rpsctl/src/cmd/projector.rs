//! `rpsctl projector`: folds the shard streams into the read models.

use rps_core::Config;
use std::sync::Arc;

#[derive(Debug, clap::Args)]
pub struct Args {
    /// Serve Prometheus `/metrics` here (default: `projector.metrics_bind` of the config).
    #[arg(long)]
    metrics_bind: Option<String>,
}

pub async fn run(config: Arc<Config>, args: Args) -> anyhow::Result<()> {
    let bind = args
        .metrics_bind
        .or_else(|| config.projector.metrics_bind.clone());
    crate::runtime::run_component(bind, |shutdown| projector::run(config, shutdown)).await
}
