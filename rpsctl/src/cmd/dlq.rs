//! `rpsctl dlq`: list, show, retry and drop dead letters of every origin
//! (cdc-reader and projector rejections, failed deadlines).

use compensator::dlq::{self, DlqEntry, Retried};
use rps_core::Config;
use serde::Serialize;
use std::collections::BTreeMap;
use std::sync::Arc;

#[derive(Debug, clap::Subcommand)]
pub enum Command {
    /// One line per dead letter, oldest first: id, time, origin, kind, shard, match, reason.
    List {
        /// Only this origin: cdc-reader, projector, compensator or operator (XA decisions).
        #[arg(long, value_parser = ["cdc-reader", "projector", "compensator", "operator"])]
        origin: Option<String>,
        /// At most this many lines.
        #[arg(long, default_value_t = 100)]
        limit: usize,
        /// Print JSON (for scripts) instead of the table.
        #[arg(long)]
        json: bool,
    },
    /// Every field of one dead letter.
    Show {
        id: String,
        /// Print JSON (for scripts).
        #[arg(long)]
        json: bool,
    },
    /// Re-submit it (un-park a failed deadline, re-queue a rejected event), then remove it.
    Retry {
        id: String,
        /// Print what was done as JSON.
        #[arg(long)]
        json: bool,
    },
    /// Remove it for good; who and when go to the log.
    Drop {
        id: String,
        /// Who decided (default: $USER).
        #[arg(long)]
        by: Option<String>,
        /// Print what was done as JSON.
        #[arg(long)]
        json: bool,
    },
}

/// A dead letter as `list --json` shows it: the table's columns.
#[derive(Debug, Serialize)]
struct Line<'a> {
    id: &'a str,
    at: String,
    origin: &'a str,
    kind: &'a str,
    shard: Option<u16>,
    match_id: Option<i64>,
    reason: &'a str,
}

impl<'a> Line<'a> {
    fn of(e: &'a DlqEntry) -> Self {
        Line {
            id: &e.id,
            at: e.at().to_rfc3339(),
            origin: e.origin(),
            kind: e.kind(),
            shard: e.shard(),
            match_id: e.match_id(),
            reason: e.get("reason"),
        }
    }
}

#[derive(Debug, Serialize)]
struct ListReport<'a> {
    /// Dead letters in the stream, of every origin.
    total: u64,
    shown: usize,
    entries: Vec<Line<'a>>,
}

/// `show --json`: every stored field, as stored.
#[derive(Debug, Serialize)]
struct ShowReport<'a> {
    id: &'a str,
    at: String,
    fields: BTreeMap<&'a str, &'a str>,
}

#[derive(Debug, Serialize)]
#[serde(tag = "action", rename_all = "snake_case")]
enum RetryReport<'a> {
    DeadlineUnparked {
        id: &'a str,
        member: &'a str,
    },
    EventRequeued {
        id: &'a str,
        stream: &'a str,
        new_id: &'a str,
    },
}

#[derive(Debug, Serialize)]
struct DropReport<'a> {
    dropped_by: &'a str,
    #[serde(flatten)]
    entry: Line<'a>,
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

pub async fn run(config: Arc<Config>, command: Command) -> anyhow::Result<()> {
    let client = super::common::connect_redis(&config).await?;
    let keys = config.keys();
    match command {
        Command::List {
            origin,
            limit,
            json,
        } => {
            let entries = dlq::list(&client, &keys, origin.as_deref(), limit).await?;
            let total = dlq::count(&client, &keys).await?;
            if json {
                return crate::cli::print_json(&ListReport {
                    total,
                    shown: entries.len(),
                    entries: entries.iter().map(Line::of).collect(),
                });
            }
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
        Command::Show { id, json } => {
            let e = dlq::show(&client, &keys, &id).await?;
            if json {
                return crate::cli::print_json(&ShowReport {
                    id: &e.id,
                    at: e.at().to_rfc3339(),
                    fields: e
                        .fields
                        .iter()
                        .map(|(k, v)| (k.as_str(), v.as_str()))
                        .collect(),
                });
            }
            println!("id: {}", e.id);
            println!("time: {}", e.at().to_rfc3339());
            for (k, v) in e.ordered_fields() {
                println!("{k}: {v}");
            }
        }
        Command::Retry { id, json } => {
            let retried = dlq::retry(&client, &keys, &id).await?;
            if json {
                return crate::cli::print_json(&match &retried {
                    Retried::DeadlineUnparked { member } => {
                        RetryReport::DeadlineUnparked { id: &id, member }
                    }
                    Retried::EventRequeued { stream, new_id } => RetryReport::EventRequeued {
                        id: &id,
                        stream,
                        new_id,
                    },
                });
            }
            match retried {
                Retried::DeadlineUnparked { member } => {
                    println!("{id}: deadline {member} is claimable again; dead letter removed")
                }
                Retried::EventRequeued { stream, new_id } => {
                    println!("{id}: event re-added to {stream} as {new_id}; dead letter removed")
                }
            }
        }
        Command::Drop { id, by, json } => {
            let by = by
                .or_else(|| std::env::var("USER").ok())
                .unwrap_or_else(|| "unknown".into());
            let e = dlq::drop_entry(&client, &keys, &id, &by).await?;
            if json {
                return crate::cli::print_json(&DropReport {
                    dropped_by: &by,
                    entry: Line::of(&e),
                });
            }
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
