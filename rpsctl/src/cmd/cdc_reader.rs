//! `rpsctl cdc-reader`: tails every server's binlog into the shard streams
//! until Ctrl-C / SIGTERM, serving Prometheus metrics if asked to.
//!
//! The readers run under [`recovery::supervise`]: on a first start over
//! existing history, or after Redis lost the pipeline's state, the read
//! models and checkpoints are rebuilt from consistent snapshots before the
//! readers stream from exactly the snapshot positions.

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
    let result = recovery::supervise(config.clone(), shutdown.clone(), |token| {
        cdc_reader::run(config.clone(), token)
    })
    .await;
    shutdown.cancel();
    if let Some(m) = metrics {
        m.await??;
    }
    result.map_err(anyhow::Error::from)
}
