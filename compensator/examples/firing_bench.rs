//! Benchmark: 100k abandoned matches whose deadlines fall due over 10 s,
//! while 1M more deadlines wait further out; then the same 100k all due at
//! once (capacity). Reports firing delay p50/p99/max and timeouts/s.
//!
//! Runs against the dev servers (`scripts/dev-env.sh up`) under a private
//! prefix, and removes its data afterwards:
//!
//! ```text
//! cargo run --release -p compensator --example firing_bench
//! ```
//!
//! The projector is stood in for by a task that tails the `timed_out` rows
//! of every shard (every 10 ms) and removes their deadline entries, as the
//! projector does when the event arrives through the binlog.

use compensator::fred::interfaces::SortedSetsInterface;
use metrics_exporter_prometheus::PrometheusBuilder;
use mysql_async::prelude::Queryable;
use read_model::ReadModelKeys;
use rps_core::keys::deadline_member;
use rps_core::{MatchEvent, SeasonId, Timestamp};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use test_support::{redis_client, TestEnv};
use tokio_util::sync::CancellationToken;

const TABLE: &str = "match_result_events";
const MATCHES: usize = 100_000;
const FAR_DEADLINES: usize = 1_000_000;

fn started(match_id: i64, player_a: i64, deadline: Timestamp) -> MatchEvent {
    MatchEvent::started(
        uuid::Uuid::new_v4(),
        match_id,
        SeasonId::of(deadline),
        (player_a, player_a + 10_000_000),
        Timestamp(deadline.0 - 30_000_000),
        deadline,
    )
}

/// Writes `MATCHES` open matches (ids from `first_id`) with deadlines
/// `start + i * spread / MATCHES` to MySQL; returns the Redis entries.
async fn write_matches(
    env: &TestEnv,
    first_id: i64,
    start: Timestamp,
    spread_us: i64,
) -> Vec<(f64, String)> {
    let shards = env.config.shard_count;
    let mut per_shard: Vec<Vec<MatchEvent>> = vec![Vec::new(); usize::from(shards)];
    let mut entries = Vec::with_capacity(MATCHES);
    for i in 0..MATCHES {
        let deadline = Timestamp(start.0 + (i as i64) * spread_us / MATCHES as i64);
        let player_a = i as i64 + 1;
        let shard = rps_core::shard_of(player_a, shards);
        let match_id = first_id + i as i64;
        per_shard[usize::from(shard)].push(started(match_id, player_a, deadline));
        entries.push((
            deadline.as_millis() as f64,
            deadline_member(shard, match_id),
        ));
    }
    let writers = per_shard.into_iter().enumerate().map(|(shard, evs)| {
        let store = env.store.clone();
        async move {
            let shard = shard as u16;
            let mut session = store.session(shard).await.unwrap();
            for chunk in evs.chunks(2_000) {
                assert_eq!(
                    session.append_all(TABLE, chunk).await.unwrap(),
                    rps_event_store::BatchAppend::Inserted
                );
            }
        }
    });
    futures::future::join_all(writers).await;
    entries
}

/// Stands in for the projector: removes the deadline of every match whose
/// `timed_out` row appears, and counts them.
async fn fake_projector(env: Arc<TestEnv>, removed: Arc<AtomicUsize>, stop: CancellationToken) {
    let redis = redis_client(&env.config.redis.url).await;
    let g = env.config.keys().generation_keys(0);
    let mut last = vec![0i64; usize::from(env.config.shard_count)];
    let mut conns = Vec::new();
    for shard in 0..env.config.shard_count {
        conns.push(env.admin_conn(shard).await);
    }
    while !stop.is_cancelled() {
        for shard in 0..env.config.shard_count {
            let db = env.config.database(shard);
            let rows: Vec<(i64, i64)> = conns[usize::from(shard)]
                .query(format!(
                    "SELECT id, match_id FROM `{db}`.`{TABLE}` WHERE id > {} AND event_type = 'timed_out' ORDER BY id LIMIT 10000",
                    // Concurrent inserts commit out of id order: look back a
                    // little; ZREM of a removed member is a no-op.
                    (last[usize::from(shard)] - 5_000).max(0)
                ))
                .await
                .unwrap();
            if let Some((id, _)) = rows.last() {
                last[usize::from(shard)] = *id;
                let members: Vec<String> = rows
                    .iter()
                    .map(|(_, m)| deadline_member(shard, *m))
                    .collect();
                let n: usize = redis.zrem(g.deadlines(shard), members).await.unwrap();
                removed.fetch_add(n, Ordering::Relaxed);
            }
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// Adds `(deadline ms, member)` entries to their shards' deadline sets.
async fn add_deadlines(
    redis: &fred::clients::Client,
    g: &read_model::GenerationKeys,
    entries: &[(f64, String)],
) {
    let mut by_shard: std::collections::BTreeMap<u16, Vec<(f64, String)>> = Default::default();
    for (ms, member) in entries {
        let (shard, _) = rps_core::keys::parse_deadline_member(member).expect("member");
        by_shard
            .entry(shard)
            .or_default()
            .push((*ms, member.clone()));
    }
    for (shard, d) in by_shard {
        let _: () = redis
            .zadd(g.deadlines(shard), None, None, false, false, d)
            .await
            .unwrap();
    }
}

/// Decision-time delay (`occurred_at - deadline_at`) of every `timed_out`
/// of matches `first_id..first_id + MATCHES`, from the event store.
async fn stored_delays(env: &TestEnv, first_id: i64) -> hdrhistogram::Histogram<u64> {
    let mut h = hdrhistogram::Histogram::<u64>::new(3).unwrap();
    for shard in 0..env.config.shard_count {
        let mut conn = env.admin_conn(shard).await;
        let db = env.config.database(shard);
        let rows: Vec<i64> = conn
            .query(format!(
                "SELECT TIMESTAMPDIFF(MICROSECOND, s.deadline_at, t.occurred_at) FROM `{db}`.`{TABLE}` t \
                 JOIN `{db}`.`{TABLE}` s ON s.match_id = t.match_id AND s.version = 1 \
                 WHERE t.event_type = 'timed_out' AND t.match_id >= {first_id} AND t.match_id < {}",
                first_id + MATCHES as i64
            ))
            .await
            .unwrap();
        for d in rows {
            h.record(d.max(0) as u64).unwrap();
        }
    }
    h
}

fn quantiles(render: &str) -> Vec<(String, f64)> {
    render
        .lines()
        .filter(|l| l.starts_with(compensator::metrics::FIRING_DELAY) && l.contains("quantile"))
        .filter_map(|l| {
            let q = l
                .split("quantile=\"")
                .nth(1)?
                .split('"')
                .next()?
                .to_string();
            let v: f64 = l.rsplit(' ').next()?.parse().ok()?;
            Some((q, v * 1000.0))
        })
        .collect()
}

/// Writes the matches of a phase (deadlines from `start`, spread over
/// `spread`) to MySQL, then their deadline entries to Redis.
async fn phase(env: &Arc<TestEnv>, name: &str, first_id: i64, start: Timestamp, spread: Duration) {
    let t = Instant::now();
    let entries = write_matches(env, first_id, start, spread.as_micros() as i64).await;
    let redis = redis_client(&env.config.redis.url).await;
    let g = env.config.keys().generation_keys(0);
    for chunk in entries.chunks(20_000) {
        add_deadlines(&redis, &g, chunk).await;
    }
    let ahead = start.0 - Timestamp::now().0;
    println!(
        "{name}: {MATCHES} matches written in {:?}; first deadline {} ms ahead",
        t.elapsed(),
        ahead / 1000
    );
    assert!(
        spread.is_zero() || ahead > 0,
        "writing took longer than the lead; raise it"
    );
}

#[tokio::main]
async fn main() {
    let handle = PrometheusBuilder::new().install_recorder().unwrap();
    let env = Arc::new(TestEnv::new("comp_bench").await);
    let redis = redis_client(&env.config.redis.url).await;
    let g = env.config.keys().generation_keys(0);

    // 1M deadlines far out (an hour and more): only in Redis, never due here.
    let far = Timestamp::now().as_millis() + 3_600_000;
    let t = Instant::now();
    for chunk in (0..FAR_DEADLINES).collect::<Vec<_>>().chunks(20_000) {
        let entries: Vec<(f64, String)> = chunk
            .iter()
            .map(|i| {
                (
                    (far + *i as i64) as f64,
                    deadline_member((*i % 8) as u16, 900_000_000 + *i as i64),
                )
            })
            .collect();
        add_deadlines(&redis, &g, &entries).await;
    }
    println!("{FAR_DEADLINES} far deadlines added in {:?}", t.elapsed());

    let removed = Arc::new(AtomicUsize::new(0));
    let stop = CancellationToken::new();
    let projector = tokio::spawn(fake_projector(env.clone(), removed.clone(), stop.clone()));
    let shutdown = CancellationToken::new();
    let comp = tokio::spawn(compensator::run(env.config.clone(), shutdown.clone()));

    // Phase 1: due over 10 s.
    let start = Timestamp(Timestamp::now().0 + 40_000_000);
    phase(&env, "spread", 1, start, Duration::from_secs(10)).await;
    let wait = Duration::from_micros((start.0 - Timestamp::now().0).max(0) as u64);
    tokio::time::sleep(wait).await;
    let t = Instant::now();
    while removed.load(Ordering::Relaxed) < MATCHES && t.elapsed() < Duration::from_secs(120) {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let render = handle.render();
    println!(
        "spread phase: {} fired and cleared {:?} after the first deadline ({:.0} timeouts/s)",
        removed.load(Ordering::Relaxed),
        t.elapsed(),
        removed.load(Ordering::Relaxed) as f64 / t.elapsed().as_secs_f64()
    );
    for (q, ms) in quantiles(&render) {
        println!("  firing delay (commit - deadline) q{q}: {ms:.1} ms");
    }
    let h = stored_delays(&env, 1).await;
    println!(
        "  decision delay (occurred_at - deadline_at), n={}: p50 {:.1} ms, p99 {:.1} ms, max {:.1} ms",
        h.len(),
        h.value_at_quantile(0.5) as f64 / 1000.0,
        h.value_at_quantile(0.99) as f64 / 1000.0,
        h.max() as f64 / 1000.0
    );

    // Phase 2: 100k due at once (a backlog, e.g. after an outage).
    shutdown.cancel();
    comp.await.unwrap().unwrap();
    phase(&env, "burst", 10_000_001, Timestamp::now(), Duration::ZERO).await;
    let before = removed.load(Ordering::Relaxed);
    let fired_before = fired_total(&handle.render());
    let shutdown = CancellationToken::new();
    let t = Instant::now();
    let comp = tokio::spawn(compensator::run(env.config.clone(), shutdown.clone()));
    while fired_total(&handle.render()) < fired_before + MATCHES as f64
        && t.elapsed() < Duration::from_secs(120)
    {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let took = t.elapsed();
    println!(
        "burst phase: {} fired in {:?}: {:.0} timeouts/s",
        fired_total(&handle.render()) - fired_before,
        took,
        MATCHES as f64 / took.as_secs_f64()
    );
    let t2 = Instant::now();
    while removed.load(Ordering::Relaxed) < before + MATCHES
        && t2.elapsed() < Duration::from_secs(60)
    {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    shutdown.cancel();
    comp.await.unwrap().unwrap();
    stop.cancel();
    projector.await.unwrap();
    env.cleanup().await;
}

fn fired_total(render: &str) -> f64 {
    render
        .lines()
        .find(|l| l.starts_with(compensator::metrics::FIRED))
        .and_then(|l| l.rsplit(' ').next()?.parse().ok())
        .unwrap_or(0.0)
}
