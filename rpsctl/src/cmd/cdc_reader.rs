//! `rpsctl cdc-reader`: tails every server's binlog into the shard streams
//! until Ctrl-C / SIGTERM, serving Prometheus metrics and health if asked
//! to. Ready (`/readyz`) while every server's binlog is being streamed, so
//! not during a rebuild from snapshots.
//!
//! The readers run under [`recovery::supervise`]: on a first start over
//! existing history, or after Redis lost the pipeline's state, the read
//! models and checkpoints are rebuilt from consistent snapshots before the
//! readers stream from exactly the snapshot positions.

use rps_core::Config;
use std::sync::Arc;

#[derive(Debug, clap::Args)]
pub struct Args {
    #[command(flatten)]
    pub metrics: super::common::MetricsBind,
    /// Read only this server's binlog (a name of rps.toml's `[[servers]]`;
    /// repeat for several). Default: every server. One process per server
    /// keeps a server's trouble its own.
    #[arg(long = "server", value_name = "NAME")]
    pub servers: Vec<String>,
}

pub async fn run(config: Arc<Config>, args: Args) -> anyhow::Result<()> {
    let bind = args.metrics.or_configured(&config.cdc.metrics_bind);
    let servers = server_indices(&config, &args.servers)?;
    super::common::run_traced_component(config, bind, |config, shutdown, ready| {
        recovery::supervise(config.clone(), shutdown, move |token| {
            let (config, servers, ready) = (config.clone(), servers.clone(), ready.clone());
            async move { cdc_reader::run_servers(config, &servers, token, ready).await }
        })
    })
    .await
}

/// The indices of the named servers in `config.servers`; every server when
/// none is named.
fn server_indices(config: &Config, names: &[String]) -> anyhow::Result<Vec<usize>> {
    if names.is_empty() {
        return Ok((0..config.servers.len()).collect());
    }
    names
        .iter()
        .map(|n| {
            config
                .servers
                .iter()
                .position(|s| &s.name == n)
                .ok_or_else(|| {
                    let known: Vec<&str> = config.servers.iter().map(|s| s.name.as_str()).collect();
                    crate::failure::usage(format!(
                        "--server {n}: no such server in the topology (servers: {})",
                        known.join(", ")
                    ))
                })
        })
        .collect()
}
