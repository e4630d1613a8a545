//! `rpsctl verify`.

use rps_core::Config;
use std::sync::Arc;

#[derive(Debug, clap::Args)]
pub struct Args {}

pub async fn run(_config: Arc<Config>, _args: Args) -> anyhow::Result<()> {
    anyhow::bail!("`rpsctl verify` is being built")
}
