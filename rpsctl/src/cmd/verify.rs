//! `rpsctl verify`: recompute every read model from the event store and
//! compare with the live generation; `--repair` rewrites what differs.

use anyhow::Context;
use rps_core::Config;
use std::io::IsTerminal;
use std::sync::Arc;

#[derive(Debug, clap::Args)]
pub struct Args {
    /// Rewrite every differing key to what the event store says.
    #[arg(long)]
    repair: bool,
    /// Differences printed (all are counted).
    #[arg(long, default_value_t = 100)]
    limit: usize,
    /// Print the report as JSON.
    #[arg(long)]
    json: bool,
}

pub async fn run(config: Arc<Config>, args: Args) -> anyhow::Result<()> {
    let opts = history::verify::VerifyOptions {
        repair: args.repair,
        show_progress: std::io::stderr().is_terminal(),
    };
    let shutdown = crate::runtime::shutdown_on_signal();
    let report = history::verify::run(config, opts, shutdown)
        .await
        .context("verify")?;
    if args.json {
        crate::cli::print_json(&report)?;
    } else {
        println!(
            "generation {}: {} keys checked, {} differences",
            report.generation, report.keys_checked, report.total_differences
        );
        if report.total_differences > 0 {
            println!(
                "{:<40} {:<12} {:<24} {:<24}",
                "key", "field", "expected", "actual"
            );
        }
        for d in report.differences.iter().take(args.limit) {
            println!(
                "{:<40} {:<12} {:<24} {:<24}",
                d.key,
                d.field,
                d.expected.as_deref().unwrap_or("(none)"),
                d.actual.as_deref().unwrap_or("(none)")
            );
        }
        if report.pipeline_moved {
            println!("note: the live pipeline applied events while verifying; run again when it is quiet");
        }
        if report.repaired_keys > 0 {
            println!("repaired {} keys", report.repaired_keys);
        }
    }
    if report.total_differences > 0 && report.repaired_keys == 0 {
        return Err(crate::failure::differences(format!(
            "{} differences between the event store and the live read models",
            report.total_differences
        )));
    }
    Ok(())
}
