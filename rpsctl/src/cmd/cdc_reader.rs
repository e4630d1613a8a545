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
    let bind = args
        .metrics_bind
        .or_else(|| config.cdc.metrics_bind.clone());
    runtime::run_component(bind, |shutdown| {
        recovery::supervise(config.clone(), shutdown, |token| {
            cdc_reader::run(config.clone(), token)
        })
    })
    .await
}
