//! `rpsctl top`: a live terminal view of the pipeline: the leaderboard's top
//! ten, events and lag per shard and server, deadlines, timeouts fired and
//! dead letters. `--once` prints one frame (for scripts and the demo's
//! final report).

use anyhow::Context;
use mysql_async::prelude::Queryable;
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
    let redis = history::connect_redis(&config).await?;
    let store = rps_event_store::EventStore::with_pool_size(config.clone(), 2)?;
    let shutdown = crate::runtime::shutdown_on_signal();
    loop {
        let frame = frame(&config, &redis, &store, args.season).await?;
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

async fn timeouts_fired(
    config: &Config,
    store: &rps_event_store::EventStore,
) -> anyhow::Result<u64> {
    let mut total = 0u64;
    for shard in 0..config.shard_count {
        let mut conn = store.conn_for_shard(shard).await?;
        for table in store.event_tables(shard).await? {
            let n: Option<u64> = conn
                .query_first(format!(
                    "SELECT COUNT(*) FROM `{}`.`{table}` WHERE event_type = 'timed_out'",
                    config.database(shard)
                ))
                .await
                .context("counting timed_out events")?;
            total += n.unwrap_or(0);
        }
    }
    Ok(total)
}

async fn frame(
    config: &Arc<Config>,
    redis: &history::fred::clients::Client,
    store: &rps_event_store::EventStore,
    season: Option<SeasonId>,
) -> anyhow::Result<String> {
    let mut out = String::new();
    let status = history::status::collect(config.clone()).await?;
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
    let fired = timeouts_fired(config, store).await?;
    let _ = writeln!(
        out,
        "\nDeadlines pending {} (overdue {}) · timeouts fired {} · dead letters {}",
        status.deadlines_pending, status.deadlines_overdue, fired, status.dead_letters
    );
    Ok(out)
}
