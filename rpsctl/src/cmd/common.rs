//! What several subcommands do the same way.

use anyhow::Context;
use rps_core::health::Readiness;
use rps_core::Config;
use std::future::Future;
use std::sync::Arc;
use tokio_util::sync::CancellationToken;

/// The address flag of every long-running component.
#[derive(Debug, clap::Args)]
pub struct MetricsBind {
    /// Serve Prometheus `/metrics`, `/healthz` and `/readyz` here (default: the component's `metrics_bind` in the config).
    #[arg(long = "metrics-bind", value_name = "ADDR")]
    addr: Option<String>,
}

impl MetricsBind {
    /// The flag's address, else the one the config gives the component.
    pub fn or_configured(self, configured: &Option<String>) -> Option<String> {
        self.addr.or_else(|| configured.clone())
    }
}

/// Runs a stand-alone component under [`crate::runtime::run_component`]
/// with the configured tracing, whose spans are flushed when the component
/// ends, by error too.
pub async fn run_traced_component<F, Fut, E>(
    config: Arc<Config>,
    metrics_bind: Option<String>,
    component: F,
) -> anyhow::Result<()>
where
    F: FnOnce(Arc<Config>, CancellationToken, Readiness) -> Fut,
    Fut: Future<Output = Result<(), E>>,
    E: Into<anyhow::Error>,
{
    let telemetry = rps_telemetry::init(&config.tracing).context("tracing")?;
    let result = crate::runtime::run_component(metrics_bind, |shutdown, ready| {
        component(config, shutdown, ready)
    })
    .await;
    telemetry.shutdown().await;
    result
}

/// The operator commands' client of the pipeline's Redis: one that waits
/// out a Redis restart rather than failing the command.
pub async fn connect_redis(config: &Config) -> anyhow::Result<fred::clients::Client> {
    rps_core::redis_client::ClientPolicy::patient()
        .connect(&config.redis)
        .await
        .with_context(|| format!("connecting to Redis at {}", config.redis.display_url()))
}

/// A `--shard` of a command that reads history: one of the topology's, or a
/// usage error (exit 2).
pub fn check_shard(config: &Config, shard: Option<rps_core::ShardId>) -> anyhow::Result<()> {
    match shard {
        Some(s) if s >= config.shard_count => Err(crate::failure::usage(format!(
            "shard {s} does not exist (shard_count is {})",
            config.shard_count
        ))),
        _ => Ok(()),
    }
}
