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
    crate::runtime::metrics_handle()?;
    let shutdown = crate::runtime::shutdown_on_signal();
    let bind = args
        .metrics_bind
        .or_else(|| config.projector.metrics_bind.clone());
    let metrics = bind.map(|bind| {
        let token = shutdown.clone();
        tokio::spawn(async move { crate::runtime::serve_metrics(&bind, token).await })
    });
    let result = projector::run(config, shutdown.clone()).await;
    shutdown.cancel();
    if let Some(task) = metrics {
        task.await??;
    }
    Ok(result?)
}
