//! `rpsctl dlq`: list, show, retry and drop dead letters of every origin
//! (cdc-reader and projector rejections, failed deadlines).

use anyhow::Context;
use compensator::dlq::{self, Retried};
use rps_core::Config;
use std::sync::Arc;

#[derive(Debug, clap::Args)]
pub struct Args {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, clap::Subcommand)]
enum Command {
    /// One line per dead letter, oldest first: id, time, origin, kind, shard, match, reason.
    List {
        /// Only this origin: cdc-reader, projector, compensator or operator (XA decisions).
        #[arg(long, value_parser = ["cdc-reader", "projector", "compensator", "operator"])]
        origin: Option<String>,
        /// At most this many lines.
        #[arg(long, default_value_t = 100)]
        limit: usize,
    },
    /// Every field of one dead letter.
    Show { id: String },
    /// Re-submit it (un-park a failed deadline, re-queue a rejected event), then remove it.
    Retry { id: String },
    /// Remove it for good; who and when go to the log.
    Drop {
        id: String,
        /// Who decided (default: $USER).
        #[arg(long)]
        by: Option<String>,
    },
}

fn one_line(s: &str, max: usize) -> String {
    let flat: String = s
        .chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect();
    if flat.chars().count() > max {
        let cut: String = flat.chars().take(max.saturating_sub(1)).collect();
        format!("{cut}…")
    } else {
        flat
    }
}

pub async fn run(config: Arc<Config>, args: Args) -> anyhow::Result<()> {
    let client = compensator::connect_redis(&config.redis.url)
        .await
        .with_context(|| format!("connecting to Redis at {}", config.redis.url))?;
    let keys = config.keys();
    match args.command {
        Command::List { origin, limit } => {
            let entries = dlq::list(&client, &keys, origin.as_deref(), limit).await?;
            let total = dlq::count(&client, &keys).await?;
            println!(
                "{:<17} {:<26} {:<11} {:<24} {:>5} {:>20}  REASON",
                "ID", "TIME", "ORIGIN", "KIND", "SHARD", "MATCH"
            );
            for e in &entries {
                println!(
                    "{:<17} {:<26} {:<11} {:<24} {:>5} {:>20}  {}",
                    e.id,
                    e.at().to_rfc3339(),
                    e.origin(),
                    e.kind(),
                    e.get("shard"),
                    e.get("mid"),
                    one_line(e.get("reason"), 120)
                );
            }
            println!("{} shown, {} dead letters in total", entries.len(), total);
        }
        Command::Show { id } => {
            let e = dlq::show(&client, &keys, &id).await?;
            println!("id: {}", e.id);
            println!("time: {}", e.at().to_rfc3339());
            for (k, v) in e.ordered_fields() {
                println!("{k}: {v}");
            }
        }
        Command::Retry { id } => match dlq::retry(&client, &keys, &id).await? {
            Retried::DeadlineUnparked { member } => {
                println!("{id}: deadline {member} is claimable again; dead letter removed")
            }
            Retried::EventRequeued { stream, new_id } => {
                println!("{id}: event re-added to {stream} as {new_id}; dead letter removed")
            }
        },
        Command::Drop { id, by } => {
            let by = by
                .or_else(|| std::env::var("USER").ok())
                .unwrap_or_else(|| "unknown".into());
            let e = dlq::drop_entry(&client, &keys, &id, &by).await?;
            println!(
                "{id}: dropped by {by} ({} {}, shard {}, match {})",
                e.origin(),
                e.kind(),
                e.get("shard"),
                e.get("mid")
            );
        }
    }
    Ok(())
}
