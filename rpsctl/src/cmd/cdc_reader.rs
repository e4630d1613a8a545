//! `rpsctl cdc-reader`: tails every server's binlog into the shard streams
//! until Ctrl-C / SIGTERM, serving Prometheus metrics if asked to.

use crate::runtime;
use rps_core::Config;
use std::sync::Arc;

#[derive(Debug, clap::Args)]
pub struct Args {
    /// Serve `/metrics` on this address (default: `cdc.metrics_bind` of rps.toml).
    #[arg(long)]
    pub metrics_bind: Option<String>,
}

pub async fn run(config: Arc<Config>, args: Args) -> anyhow::Result<()> {
    runtime::metrics_handle()?;
    let shutdown = runtime::shutdown_on_signal();
    let metrics = match args
        .metrics_bind
        .or_else(|| config.cdc.metrics_bind.clone())
    {
        Some(bind) => {
            let token = shutdown.clone();
            Some(tokio::spawn(async move {
                runtime::serve_metrics(&bind, token).await
            }))
        }
        None => None,
    };
    let result = cdc_reader::run(config, shutdown.clone()).await;
    shutdown.cancel();
    if let Some(m) = metrics {
        m.await??;
    }
    result.map_err(anyhow::Error::from)
}
