//! `rpsctl api`: serves the leaderboard API (and `/metrics`) on `api.bind`.

use rps_core::Config;
use std::sync::Arc;

#[derive(Debug, clap::Args)]
pub struct Args {
    /// Listen here instead of `api.bind` from the config.
    #[arg(long)]
    bind: Option<String>,
}

pub async fn run(config: Arc<Config>, args: Args) -> anyhow::Result<()> {
    let handle = crate::runtime::metrics_handle()?;
    let shutdown = crate::runtime::shutdown_on_signal();
    let config = match args.bind {
        Some(bind) => {
            let mut c = (*config).clone();
            c.api.bind = bind;
            Arc::new(c)
        }
        None => config,
    };
    rps_api::run(config, handle, shutdown).await?;
    Ok(())
}
