//! `rpsctl replay`: rebuild the read models from the event store into a new
//! generation beside the live one, then switch (see `history::replay`).

use anyhow::Context;
use rps_core::{Config, SeasonId, ShardId, Timestamp};
use std::io::IsTerminal;
use std::sync::Arc;
use std::time::Duration;

#[derive(Debug, clap::Args)]
pub struct Args {
    /// Fold only this season (`2026Q4`). A limited replay only reports; it never switches.
    #[arg(long)]
    season: Option<SeasonId>,
    /// Fold only this shard (limited: reports only).
    #[arg(long)]
    shard: Option<ShardId>,
    /// Fold only events that occurred before this time (limited: reports only).
    #[arg(long, value_parser = parse_time)]
    until: Option<Timestamp>,
    /// Build the new generation and compare it with the live one, then drop it; switch nothing.
    #[arg(long)]
    dry_run: bool,
    /// Give up if the live pipeline has not passed the snapshot within this (`90s`, `5m`).
    #[arg(long, default_value = "5m", value_parser = crate::cli::parse_duration)]
    switch_timeout: Duration,
    /// Longest the switch may hold the live projector before deciding; a replay that dies holding it stalls the pipeline this long at most.
    #[arg(long, default_value = "15s", value_parser = crate::cli::parse_duration)]
    switch_hold: Duration,
    /// Print the report as JSON.
    #[arg(long)]
    json: bool,
}

pub fn parse_time(s: &str) -> Result<Timestamp, String> {
    Timestamp::parse(s).ok_or_else(|| {
        format!("{s:?} is not a time (YYYY-MM-DD HH:MM:SS[.ffffff] UTC, or RFC 3339)")
    })
}

pub async fn run(config: Arc<Config>, args: Args) -> anyhow::Result<()> {
    super::common::check_shard(&config, args.shard)?;
    let opts = history::replay::ReplayOptions {
        fold: history::FoldOptions {
            season: args.season,
            until: args.until,
            shards: args.shard.map(|s| vec![s]),
            ..Default::default()
        },
        dry_run: args.dry_run,
        show_progress: !args.json || std::io::stderr().is_terminal(),
        switch_timeout: args.switch_timeout,
        switch_hold: args.switch_hold,
        ..Default::default()
    };
    let limited = !opts.fold.is_complete();
    let shutdown = crate::runtime::shutdown_on_signal();
    let report = history::replay::run(config, opts, shutdown)
        .await
        .context("replay")?;
    if args.json {
        crate::cli::print_json(&report)?;
    } else {
        print_report(&report, limited);
    }
    match &report.comparison {
        // A dry run that found differences: a replay would change them.
        Some(c) if c.total_differences > 0 => Err(crate::failure::differences(format!(
            "dry run: a replay would change {} differences from the live generation {}",
            c.total_differences, c.generation
        ))),
        _ => Ok(()),
    }
}

fn print_report(report: &history::replay::ReplayReport, limited: bool) {
    let rate = report.events as f64 / report.fold_seconds.max(1e-9);
    println!(
        "folded {} events in {:.2}s ({:.0} events/s): {} matches ({} open), {} players",
        report.events,
        report.fold_seconds,
        rate,
        report.matches,
        report.open_matches,
        report.players
    );
    let rejected: u64 = report.rejections.values().sum();
    if rejected > 0 {
        println!("{rejected} events do not fit their match (the live pipeline dead-lettered them; replay only reports):");
        for (code, n) in &report.rejections {
            println!("  {code}: {n}");
        }
        for r in &report.rejection_samples {
            println!(
                "  shard {} {}.{} row {} match {}: {}",
                r.shard,
                r.database,
                r.table,
                r.row_id,
                r.match_id
                    .map(|m| m.to_string())
                    .unwrap_or_else(|| "-".into()),
                r.reason
            );
        }
    }
    if limited {
        println!("limited replay (--season/--shard/--until): nothing written, the live generation {} is unchanged", report.old_generation);
        return;
    }
    println!(
        "wrote {} keys into generation {} in {:.2}s",
        report.keys_written,
        report.new_generation.unwrap_or_default(),
        report.write_seconds
    );
    if let Some(c) = &report.comparison {
        println!(
            "dry run: compared with the live generation {}: {} keys checked, {} differences{}",
            c.generation,
            c.keys_checked,
            c.total_differences,
            if c.pipeline_moved {
                " (the pipeline moved meanwhile; some may be new events)"
            } else {
                ""
            }
        );
        for d in c.differences.iter().take(50) {
            println!(
                "  {} {} expected={} actual={}",
                d.key,
                d.field,
                d.expected.as_deref().unwrap_or("(none)"),
                d.actual.as_deref().unwrap_or("(none)")
            );
        }
        println!("dry run: the new generation was dropped; nothing switched");
        return;
    }
    println!(
        "caught up {} stream entries ({} already in the snapshot), switched generation {} -> {}, dropped {} old keys; total {:.2}s",
        report.catchup_entries,
        report.catchup_skipped,
        report.old_generation,
        report.new_generation.unwrap_or_default(),
        report.old_keys_dropped,
        report.total_seconds
    );
}
