//! Benchmark: freshness at a steady load.
//!
//! Publishes `--rate` events/s (default 10,000) to the 8 shard streams of a
//! fresh prefix for `--secs` seconds (default 60), each stamped with
//! `occurred_at` = the moment it is published, while the projector runs in
//! the same process. Freshness = the batch's commit time (Redis `TIME` in the
//! apply script) minus `occurred_at`. Prints p50/p99/p99.9/p99.99/max.
//!
//! This measures stream → read model. The end-to-end figure (MySQL insert →
//! binlog → cdc-reader → stream → read model) adds the reader's delay.
//!
//! `cargo run --release -p projector --example freshness -- [--rate N] [--secs S]`

#[path = "../tests/common/mod.rs"]
mod common;

use hdrhistogram::Histogram;
use projector::fred::prelude::*;
use rps_core::Timestamp;
use std::sync::Arc;
use std::time::{Duration, Instant};
use test_support::TestEnv;
use tokio_util::sync::CancellationToken;

fn arg(args: &[String], name: &str, default: u64) -> u64 {
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1))
        .and_then(|s| s.parse().ok())
        .unwrap_or(default)
}

#[tokio::main]
async fn main() {
    let args: Vec<String> = std::env::args().collect();
    let rate = arg(&args, "--rate", 10_000);
    let secs = arg(&args, "--secs", 60);
    let env = TestEnv::new("bench_fresh").await;
    let producer = env.redis().await;
    let keys = env.config.keys();
    let n = env.config.shard_count;
    let total = (rate * secs) as usize;
    let mut by_shard = common::tournament(5, 20_000_000, total * 2 / 7 + 10, 50_000, n);
    // One global sequence in event-time order, so every shard sees a steady share.
    let mut all: Vec<(u16, rps_core::MatchEvent)> = Vec::new();
    for (shard, evs) in by_shard.iter_mut() {
        for (i, e) in evs.drain(..).enumerate() {
            let mut e = e;
            e.row_id = i as i64 + 1;
            all.push((*shard, e));
        }
    }
    all.sort_by_key(|(_, e)| e.occurred_at);
    all.truncate(total);

    let config = Arc::new((*env.config).clone());
    let shutdown = CancellationToken::new();
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
    let task = tokio::spawn(projector::run_observed(config, shutdown.clone(), Some(tx)));
    // Let the workers take their leases before the clock starts.
    tokio::time::sleep(Duration::from_secs(1)).await;

    let collector = tokio::spawn(async move {
        let mut h = Histogram::<u64>::new_with_bounds(1, 60_000_000, 3).unwrap();
        let mut seen = 0usize;
        while seen < total {
            match tokio::time::timeout(Duration::from_secs(30), rx.recv()).await {
                Ok(Some((_, r))) => {
                    seen += r.applied + r.rejected.len() + r.skipped;
                    if let Some(at) = r.applied_at {
                        for t in &r.occurred {
                            h.saturating_record((at.as_micros() - t.as_micros()).max(1) as u64);
                        }
                    }
                }
                _ => break,
            }
        }
        (h, seen)
    });

    // 1 ms ticks; each tick publishes what is due by then, so the average
    // rate is exact and bursts are at most one tick's worth.
    let start = Instant::now();
    let mut sent = 0usize;
    let mut tick = tokio::time::interval(Duration::from_millis(1));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
    while sent < all.len() {
        tick.tick().await;
        let due = ((start.elapsed().as_secs_f64() * rate as f64) as usize).min(all.len());
        if due <= sent {
            continue;
        }
        let pipe = producer.pipeline();
        let now = Timestamp::now();
        for (shard, e) in &mut all[sent..due] {
            e.occurred_at = now;
            let se = common::stream_event(&env, *shard, e);
            let mut a = vec![keys.events(*shard), "*".to_string()];
            for (k, v) in se.to_pairs() {
                a.push(k.to_string());
                a.push(v);
            }
            let _: () = pipe
                .custom(
                    projector::fred::types::CustomCommand::new_static(
                        "XADD",
                        rps_core::redis_client::slot_of(&keys.events(*shard)),
                        false,
                    ),
                    a,
                )
                .await
                .unwrap();
        }
        let _: Vec<String> = pipe.all().await.unwrap();
        sent = due;
    }
    let publish_secs = start.elapsed().as_secs_f64();
    let (h, seen) = collector.await.unwrap();
    shutdown.cancel();
    task.await.unwrap().unwrap();
    let ms = |q: f64| h.value_at_quantile(q) as f64 / 1000.0;
    println!(
        "{seen}/{total} events at {:.0} events/s over {publish_secs:.1}s; freshness ms: p50 {:.2} p99 {:.2} p99.9 {:.2} p99.99 {:.2} max {:.2}",
        sent as f64 / publish_secs,
        ms(0.5),
        ms(0.99),
        ms(0.999),
        ms(0.9999),
        h.max() as f64 / 1000.0
    );
    env.cleanup().await;
}
