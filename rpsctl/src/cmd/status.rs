//! `rpsctl status`: per server and shard — checkpoint, binlog head, lag,
//! streams, projector progress, deadlines and dead letters.

use anyhow::Context;
use rps_core::Config;
use std::sync::Arc;

#[derive(Debug, clap::Args)]
pub struct Args {
    /// Print JSON (for scripts) instead of the table.
    #[arg(long)]
    json: bool,
}

pub async fn run(config: Arc<Config>, args: Args) -> anyhow::Result<()> {
    let status = history::status::collect(config).await.context("status")?;
    if args.json {
        crate::cli::print_json(&status)?;
    } else {
        print!("{}", status.render());
    }
    Ok(())
}
