//! `rpsctl cdc-reader`: tails every server's binlog into the shard streams
//! until Ctrl-C / SIGTERM, serving Prometheus metrics and health if asked
//! to. Ready (`/readyz`) while every server's binlog is being streamed, so
//! not during a rebuild from snapshots.
//!
//! The readers run under [`recovery::supervise`]: on a first start over
//! existing history, or after Redis lost the pipeline's state, the read
//! models and checkpoints are rebuilt from consistent snapshots before the
//! readers stream from exactly the snapshot positions.

use crate::runtime;
use anyhow::Context;
use rps_core::Config;
use std::sync::Arc;

#[derive(Debug, clap::Args)]
pub struct Args {
    /// Serve `/metrics`, `/healthz` and `/readyz` on this address (default: `cdc.metrics_bind` of rps.toml).
    #[arg(long)]
    pub metrics_bind: Option<String>,
}

pub async fn run(config: Arc<Config>, args: Args) -> anyhow::Result<()> {
    let bind = args
        .metrics_bind
        .or_else(|| config.cdc.metrics_bind.clone());
    let telemetry = rps_telemetry::init(&config.tracing).context("tracing")?;
    let result = runtime::run_component(bind, |shutdown, ready| {
        recovery::supervise(config.clone(), shutdown, move |token| {
            cdc_reader::run_with_readiness(config.clone(), token, ready.clone())
        })
    })
    .await;
    telemetry.shutdown().await;
    result
}
