//! Baseline for the simulator benchmark: one client, one server, one shard,
//! back-to-back 1000-row INSERTs of ready-made events. It measures what the
//! server takes from a single connection, with none of the simulator's
//! ordering work, so the two numbers can be set side by side.
//!
//! ```text
//! cargo run --release -p simulator --example baseline_insert -- [rps.toml] [rows] [shard]
//! ```
//! Writes into shard `shard` (default 0) of the given topology; run
//! `rpsctl init` on it first. Prints rows per second.

use rps_core::{Config, MatchEvent, SeasonId, Timestamp};
use rps_event_store::{BatchAppend, EventStore};
use std::sync::Arc;

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let path = args.next().unwrap_or_else(|| "rps.toml".into());
    let rows: usize = args.next().map_or(Ok(200_000), |s| s.parse())?;
    let shard: u16 = args.next().map_or(Ok(0), |s| s.parse())?;
    let config = Arc::new(Config::load(std::path::Path::new(&path))?);
    let store = EventStore::with_pool_size(config.clone(), 1)?;
    let mut session = store.session(shard).await?;

    // Distinct `started` events of distinct matches, all challenged from `shard`.
    let base_match = rand::random::<u32>() as i64 * 1_000_000_000;
    let make = |i: usize| {
        let now = Timestamp::now();
        let player_a = i64::from(shard) + i64::from(config.shard_count) * (i as i64 % 500 + 1);
        MatchEvent::started(
            uuid::Uuid::new_v4(),
            base_match + i as i64,
            SeasonId::of(now),
            (player_a, player_a + 1),
            now,
            Timestamp(now.as_micros() + 30_000_000),
        )
    };

    let started = std::time::Instant::now();
    let mut written = 0;
    while written < rows {
        let n = (rows - written).min(1000);
        let batch: Vec<MatchEvent> = (written..written + n).map(make).collect();
        if session.append_all("match_result_events", &batch).await? != BatchAppend::Inserted {
            return Err("duplicate key: the batch was not inserted".into());
        }
        written += n;
    }
    let secs = started.elapsed().as_secs_f64();
    println!(
        "baseline: {written} rows into {} ({}) in {secs:.2} s = {:.0} rows/s",
        config.database(shard),
        config.server_of(shard).name,
        written as f64 / secs
    );
    drop(session);
    store.disconnect().await;
    Ok(())
}
