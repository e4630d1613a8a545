//! Benchmark: drain a backlog already in the shard streams.
//!
//! Publishes `--events` (default 1,000,000) valid events of a generated
//! tournament to the 8 shard streams of a fresh key prefix on the shared
//! Redis, then starts the projector and measures until every entry is
//! applied. Prints events/s and the CPU time Redis spent per event, summed
//! over every master when the shared Redis is a cluster
//! (`RPS_TEST_REDIS_URL=redis-cluster://…`). With `--keep` the read models
//! stay (for the API benchmark) and the prefix and a config file are
//! printed.
//!
//! `cargo run --release -p projector --example drain -- [--events N] [--partitions P] [--keep] [--commandstats]`

#[path = "../tests/common/mod.rs"]
mod common;

use projector::fred::prelude::*;
use projector::fred::types::{CustomCommand, InfoKind, Value};
use read_model::ReadModelKeys;
use rps_core::ShardId;
use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};
use test_support::TestEnv;
use tokio_util::sync::CancellationToken;

#[tokio::main]
async fn main() {
    let args: Vec<String> = std::env::args().collect();
    let events: usize = args
        .iter()
        .position(|a| a == "--events")
        .and_then(|i| args.get(i + 1))
        .and_then(|s| s.parse().ok())
        .unwrap_or(1_000_000);
    let keep = args.iter().any(|a| a == "--keep");
    // Redis' own per-command time during the drain (resets the server's stats).
    let commandstats = args.iter().any(|a| a == "--commandstats");
    // Player partitions (`redis.partitions`): 1 as on one Redis by default.
    let partitions: u16 = args
        .iter()
        .position(|a| a == "--partitions")
        .and_then(|i| args.get(i + 1))
        .and_then(|s| s.parse().ok())
        .unwrap_or(1);
    let env = TestEnv::new("bench_drain").await;
    let client = env.redis().await;
    let keys = env.config.keys().with_partitions(partitions);
    let n = env.config.shard_count;

    // About 3.5 events per match.
    let matches = events * 2 / 7;
    let t = Instant::now();
    let mut by_shard = common::tournament(99, 10_000_000, matches, (matches as i64 / 3).max(10), n);
    let mut total = 0;
    let mut last: HashMap<ShardId, String> = HashMap::new();
    for (shard, evs) in by_shard.iter_mut() {
        for (i, e) in evs.iter_mut().enumerate() {
            e.row_id = i as i64 + 1;
        }
        let ids = common::publish(&env, &client, *shard, evs).await;
        total += ids.len();
        if let Some((id, _)) = ids.last() {
            last.insert(*shard, id.clone());
        }
    }
    eprintln!(
        "published {total} events in {:.1}s",
        t.elapsed().as_secs_f64()
    );
    drop(by_shard);

    let mut config = (*env.config).clone();
    config.projector = Default::default();
    config.redis.partitions = partitions;
    let config = Arc::new(config);
    let shutdown = CancellationToken::new();
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
    if commandstats {
        let _: Value = client
            .custom(
                CustomCommand::new_static("CONFIG", None::<u16>, false),
                vec!["RESETSTAT"],
            )
            .await
            .unwrap();
    }
    let cpu_before = redis_cpu_seconds(&client).await;
    let started = Instant::now();
    let task = tokio::spawn(projector::run_observed(
        config.clone(),
        shutdown.clone(),
        Some(tx),
    ));
    let mut done = 0usize;
    let mut batches = 0usize;
    let mut rejected = 0usize;
    while done < total {
        match tokio::time::timeout(Duration::from_secs(60), rx.recv()).await {
            Ok(Some((_, r))) => {
                done += r.applied + r.rejected.len() + r.skipped;
                rejected += r.rejected.len();
                batches += 1;
            }
            _ => panic!("projector stalled at {done}/{total}"),
        }
    }
    let secs = started.elapsed().as_secs_f64();
    let cpu = redis_cpu_seconds(&client).await - cpu_before;
    println!(
        "drained {done} events in {secs:.2}s: {:.0} events/s ({batches} batches, {rejected} rejected)",
        done as f64 / secs
    );
    println!(
        "Redis CPU {cpu:.2}s over {} node(s): {:.1} µs per event",
        masters(&client).await.len(),
        cpu * 1e6 / done as f64
    );
    shutdown.cancel();
    task.await.unwrap().unwrap();
    if commandstats {
        let stats: String = client.info(Some(InfoKind::CommandStats)).await.unwrap();
        println!("{stats}");
    }
    let gk = keys.generation_keys(1);
    let p = common::progress_of(&client, &gk, n).await;
    for (shard, id) in &last {
        assert_eq!(
            p.get(&shard.to_string()),
            Some(id),
            "shard {shard} fully applied"
        );
    }
    let players: u64 = read_model::read::board_size(&client, &gk, None)
        .await
        .unwrap();
    println!("all-time board holds {players} players");
    if keep {
        println!(
            "kept prefix {} (database prefix {})",
            config.redis.prefix, config.database_prefix
        );
    } else {
        env.cleanup().await;
    }
}

/// The primaries: every master of a cluster, or the one Redis (`None`).
async fn masters(client: &Client) -> Vec<Option<projector::fred::types::config::Server>> {
    if !client.is_clustered() {
        return vec![None];
    }
    client.sync_cluster().await.unwrap();
    let state = client.cached_cluster_state().expect("cluster state");
    state.unique_primary_nodes().into_iter().map(Some).collect()
}

/// `used_cpu_sys + used_cpu_user` summed over the primaries.
async fn redis_cpu_seconds(client: &Client) -> f64 {
    let mut total = 0.0;
    for node in masters(client).await {
        let info: String = match node {
            None => client.info(Some(InfoKind::Cpu)).await.unwrap(),
            Some(server) => client
                .with_cluster_node(server)
                .info(Some(InfoKind::Cpu))
                .await
                .unwrap(),
        };
        total += info
            .lines()
            .filter_map(|l| {
                let (k, v) = l.trim().split_once(':')?;
                matches!(k, "used_cpu_sys" | "used_cpu_user")
                    .then(|| v.parse::<f64>().ok())
                    .flatten()
            })
            .sum::<f64>();
    }
    total
}
