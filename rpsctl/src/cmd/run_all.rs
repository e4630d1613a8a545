//! `rpsctl run`: cdc-reader, projector, compensator and API in one process,
//! for small deployments and the demo. They share one metrics registry
//! (served by the API's `/metrics`).
//!
//! The API runs for the life of the process (it answers 503 while there is
//! no read-model generation). The other three run under
//! [`recovery::supervise`]: before they start, the state in Redis must be
//! whole, or it is rebuilt from consistent snapshots of the shards (first
//! start on existing history, or Redis lost its data); when state is lost
//! while they run, they are stopped, the state is rebuilt, and they start
//! again. If one of them stops with an error, the others are stopped too
//! and the process exits non-zero, so a process supervisor restarts it;
//! each component resumes from its own checkpoint.

use anyhow::Context;
use rps_core::Config;
use std::sync::Arc;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

#[derive(Debug, clap::Args)]
pub struct Args {
    /// Do not run the compensator (deadlines are then never fired by this process).
    #[arg(long)]
    no_compensator: bool,
}

pub async fn run(config: Arc<Config>, args: Args) -> anyhow::Result<()> {
    let handle = crate::runtime::metrics_handle()?;
    let telemetry = rps_telemetry::init(&config.tracing).context("tracing")?;
    let shutdown = crate::runtime::shutdown_on_signal();
    let result = run_components(config, handle, !args.no_compensator, shutdown).await;
    telemetry.shutdown().await;
    result
}

/// Runs the API and the supervised components until `shutdown` or the first failure.
pub async fn run_components(
    config: Arc<Config>,
    handle: metrics_exporter_prometheus::PrometheusHandle,
    with_compensator: bool,
    shutdown: CancellationToken,
) -> anyhow::Result<()> {
    let api = {
        let (c, s) = (config.clone(), shutdown.clone());
        tokio::spawn(async move { rps_api::run(c, handle, s).await.context("api") })
    };
    tracing::info!(api = %config.api.bind, "pipeline starting");
    let supervised = recovery::supervise(config.clone(), shutdown.clone(), |token| {
        pipeline(config.clone(), with_compensator, token)
    })
    .await
    .context("recovery");
    shutdown.cancel();
    let api = api.await.context("the API task panicked")?;
    supervised?;
    api
}

/// cdc-reader, projector and (optionally) compensator until `shutdown` or
/// the first failure, which stops the others.
async fn pipeline(
    config: Arc<Config>,
    with_compensator: bool,
    shutdown: CancellationToken,
) -> anyhow::Result<()> {
    let mut tasks: JoinSet<(&'static str, anyhow::Result<()>)> = JoinSet::new();
    {
        let (c, s) = (config.clone(), shutdown.clone());
        tasks.spawn(async move {
            let r = cdc_reader::run(c, s).await.context("cdc-reader");
            ("cdc-reader", r)
        });
    }
    {
        let (c, s) = (config.clone(), shutdown.clone());
        tasks.spawn(async move {
            let r = projector::run(c, s).await.context("projector");
            ("projector", r)
        });
    }
    if with_compensator {
        let (c, s) = (config.clone(), shutdown.clone());
        tasks.spawn(async move {
            let r = compensator::run(c, s).await.context("compensator");
            ("compensator", r)
        });
    }

    let mut first_error = None;
    while let Some(joined) = tasks.join_next().await {
        let (name, result) = joined.context("a component panicked")?;
        match result {
            Ok(()) if shutdown.is_cancelled() => tracing::info!(component = name, "stopped"),
            Ok(()) => {
                tracing::warn!(component = name, "stopped by itself; stopping the pipeline");
                shutdown.cancel();
            }
            Err(e) => {
                tracing::error!(component = name, error = %format!("{e:#}"), "failed; stopping the pipeline");
                shutdown.cancel();
                first_error.get_or_insert(e);
            }
        }
    }
    match first_error {
        Some(e) => Err(e),
        None => Ok(()),
    }
}
