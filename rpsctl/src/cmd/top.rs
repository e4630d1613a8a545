//! `rpsctl top`: a live terminal view of the pipeline: the leaderboard's top
//! ten, events and lag per shard and server, deadlines, timeouts fired and
//! dead letters. `--once` prints one frame (for scripts and the demo's
//! final report).
//!
//! Everything but the server positions comes from the read models in
//! Redis, on one client kept across frames; the timeouts fired are the
//! live generation's timed-out matches (`g<g>:lifecycle`).

use anyhow::Context;
use read_model::ReadModelKeys;
use rps_core::{Config, SeasonId};
use std::fmt::Write as _;
use std::sync::Arc;
use std::time::Duration;

#[derive(Debug, clap::Args)]
pub struct Args {
    /// Print one frame and exit.
    #[arg(long)]
    once: bool,
    /// Show this season's board instead of the all-time one.
    #[arg(long)]
    season: Option<SeasonId>,
    /// Refresh period (`500ms`, `2s`).
    #[arg(long, default_value = "2s", value_parser = crate::cli::parse_duration)]
    interval: Duration,
}

pub async fn run(config: Arc<Config>, args: Args) -> anyhow::Result<()> {
    // One Redis client and one pool per MySQL server for every frame.
    let redis = super::common::connect_redis(&config).await?;
    let store = rps_event_store::EventStore::new(config.clone())?;
    let shutdown = crate::runtime::shutdown_on_signal();
    loop {
        let frame = frame(&store, &redis, args.season).await?;
        if args.once {
            print!("{frame}");
            return Ok(());
        }
        // Clear the screen and draw the frame from the top-left corner.
        print!("\x1b[2J\x1b[H{frame}");
        tokio::select! {
            _ = shutdown.cancelled() => return Ok(()),
            _ = tokio::time::sleep(args.interval) => {}
        }
    }
}

async fn frame(
    store: &rps_event_store::EventStore,
    redis: &history::fred::clients::Client,
    season: Option<SeasonId>,
) -> anyhow::Result<String> {
    let config = store.config();
    let mut out = String::new();
    let status = history::status::collect_with(store, redis).await?;
    let gk = config.keys().generation_keys(status.generation);
    let board = read_model::read::leaderboard(redis, &gk, season, 0, 10).await?;
    let scope = season.map_or("all-time".to_string(), |s| format!("season {s}"));
    let _ = writeln!(
        out,
        "rps pipeline · generation {} · {}\n",
        status.generation, status.at
    );
    let _ = writeln!(out, "Leaderboard ({scope}), top 10");
    let _ = writeln!(
        out,
        "{:>4}  {:>10}  {:>6}  {:>7}  {:>4}  {:>5}  {:>6}  {:>8}",
        "rank", "player", "points", "matches", "wins", "draws", "losses", "forfeits"
    );
    for e in &board {
        let _ = writeln!(
            out,
            "{:>4}  {:>10}  {:>6}  {:>7}  {:>4}  {:>5}  {:>6}  {:>8}",
            e.rank,
            e.player_id,
            e.stats.points(),
            e.stats.matches,
            e.stats.wins,
            e.stats.draws,
            e.stats.losses,
            e.stats.forfeits
        );
    }
    if board.is_empty() {
        let _ = writeln!(out, "  (no counted match yet)");
    }
    let _ = writeln!(out, "\nShards: events in stream, behind the read models");
    for s in &status.shards {
        let _ = writeln!(
            out,
            "  shard {} on {:<8} {:>9} events  lag {:>6} entries / {:>6.2} s",
            s.shard, s.server, s.stream_length, s.lag_entries, s.lag_seconds
        );
    }
    let _ = writeln!(out, "\nServers: binlog not yet published");
    for s in &status.servers {
        match (&s.error, s.lag_bytes) {
            (Some(e), _) => {
                let _ = writeln!(out, "  {:<8} {e}", s.server);
            }
            (None, lag) => {
                let _ = writeln!(
                    out,
                    "  {:<8} lag {:>9} bytes / {:>6.2} s",
                    s.server,
                    lag.unwrap_or(0),
                    s.lag_seconds.unwrap_or(0.0)
                );
            }
        }
    }
    // Timed-out matches as the read models count them (the lifecycle
    // counters the projector keeps), not a scan of every event table.
    let fired = read_model::read::match_counts(redis, &gk, config.shard_count)
        .await
        .context("reading the matches per lifecycle state")?
        .get(rps_core::fold::MatchStatus::TimedOut);
    let _ = writeln!(
        out,
        "\nDeadlines pending {} (overdue {}) · timeouts fired {} · dead letters {}",
        status.deadlines_pending, status.deadlines_overdue, fired, status.dead_letters
    );
    Ok(out)
}
