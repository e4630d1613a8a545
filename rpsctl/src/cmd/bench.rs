//! `rpsctl bench`: the end-to-end benchmark of the whole pipeline.
//!
//! It runs on the servers of the config but in its own databases
//! (`rpsbench<t>_shard_<n>`) and Redis key prefix, so it never touches the
//! deployment's data, and removes both at the end. Phases, in one run:
//!
//! 1. baselines: the simulator alone (the servers' maximum write rate) and
//!    the Redis round trip (the floor of any Redis-fed freshness);
//! 2. drain: a backlog written to the binlog while the reader is stopped,
//!    then cdc-reader + projector started: events/s from binlog to read models;
//! 3. sustained: the simulator at full speed with the pipeline running; the
//!    lag (now − `occurred_at` of the last applied event) sampled over time
//!    must stay flat;
//! 4. freshness at a steady rate: read-model commit time − `occurred_at`
//!    (the simulator's insert time) for every event.

use anyhow::Context;
use hdrhistogram::Histogram;
use rps_core::{Config, Timestamp};
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio_util::sync::CancellationToken;

#[derive(Debug, clap::Args)]
pub struct Args {
    /// Events in the drain backlog.
    #[arg(long, default_value_t = 1_000_000)]
    backlog: u64,
    /// Seconds of full-speed load with the pipeline running.
    #[arg(long, default_value_t = 30)]
    sustained_secs: u64,
    /// Events per second of the freshness phase.
    #[arg(long, default_value_t = 10_000)]
    fresh_rate: u64,
    /// Seconds of the freshness phase.
    #[arg(long, default_value_t = 30)]
    fresh_secs: u64,
    /// Distinct players.
    #[arg(long, default_value_t = 100_000)]
    players: u64,
}

/// Events per match of the simulator's default mix, measured (started,
/// two moves, finished, a few voids and abandons): converts an event rate
/// into the simulator's match rate.
const EVENTS_PER_MATCH: f64 = 4.0;

#[derive(Default)]
struct Observed {
    applied: AtomicU64,
    /// Largest `occurred_at` applied so far (micros).
    newest_occurred: AtomicI64,
    /// Record freshness samples into `fresh` while set.
    recording: AtomicBool,
    fresh: Mutex<Option<Freshness>>,
}

/// Freshness samples (µs): the whole way, and its two parts split at the
/// stream entry's id (XADD time, millisecond resolution).
struct Freshness {
    total: Histogram<u64>,
    to_stream: Histogram<u64>,
    in_projector: Histogram<u64>,
}

impl Freshness {
    fn new() -> Self {
        Freshness {
            total: histogram(),
            to_stream: histogram(),
            in_projector: histogram(),
        }
    }
}

fn histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, 600_000_000, 3).expect("valid histogram bounds")
}

fn isolated(config: &Config) -> Config {
    let tag = format!(
        "rpsbench{}",
        Timestamp::now().as_micros() / 1_000_000 % 1_000_000
    );
    let mut c = config.clone();
    c.database_prefix = format!("{tag}_shard_");
    c.redis.prefix = tag;
    c
}

pub async fn run(config: Arc<Config>, args: Args) -> anyhow::Result<()> {
    let config = Arc::new(isolated(&config));
    rps_event_store::init(&config)
        .await
        .context("creating the benchmark databases (needs admin_url)")?;
    let result = phases(config.clone(), &args).await;
    cleanup(&config).await;
    let lines = result?;
    println!("{}", lines.join("\n"));
    Ok(())
}

async fn phases(config: Arc<Config>, args: &Args) -> anyhow::Result<Vec<String>> {
    let store = rps_event_store::EventStore::new(config.clone())?;
    let sim = |matches: u64, rate: Option<f64>| simulator::SimulateOptions {
        players: args.players,
        matches,
        rate,
        abandoned: 0.0,
        voided: 0.02,
        ..Default::default()
    };
    let mut out = vec![format!(
        "| measure | value | baseline (same run) | ratio |\n|---|---|---|---|"
    )];

    // 1. Baselines.
    let base = simulator::run(
        store.clone(),
        sim((args.backlog as f64 / EVENTS_PER_MATCH) as u64, None),
        CancellationToken::new(),
    )
    .await?;
    let write_rate = base.events as f64 / base.elapsed.as_secs_f64();
    tracing::info!(
        events = base.events,
        rate = write_rate as u64,
        "baseline: simulator alone"
    );
    let ping = redis_ping_histogram(&config).await?;

    // 2. Drain: the reader stores its start position, stops; a backlog piles
    // up in the binlog; then the pipeline starts and drains it.
    let stop = CancellationToken::new();
    let reader = tokio::spawn(cdc_reader::run(config.clone(), stop.clone()));
    wait_for_checkpoints(&config).await?;
    stop.cancel();
    let _ = reader.await;
    let backlog = simulator::run(
        store.clone(),
        sim((args.backlog as f64 / EVENTS_PER_MATCH) as u64, None),
        CancellationToken::new(),
    )
    .await?;
    let observed = Arc::new(Observed::default());
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<(u16, projector::ApplyReport)>();
    {
        let observed = observed.clone();
        tokio::spawn(async move {
            while let Some((_, r)) = rx.recv().await {
                observed
                    .applied
                    .fetch_add((r.applied + r.rejected.len()) as u64, Ordering::Relaxed);
                if let Some(max) = r.occurred.iter().map(|t| t.as_micros()).max() {
                    observed.newest_occurred.fetch_max(max, Ordering::Relaxed);
                }
                if observed.recording.load(Ordering::Relaxed) {
                    if let (Some(at), Ok(mut h)) = (r.applied_at, observed.fresh.lock()) {
                        if let Some(h) = h.as_mut() {
                            let sample = |a: Timestamp, b: Timestamp| {
                                (a.as_micros() - b.as_micros()).max(1) as u64
                            };
                            for (t, p) in r.occurred.iter().zip(&r.published) {
                                let _ = h.total.record(sample(at, *t));
                                let _ = h.to_stream.record(sample(*p, *t));
                                let _ = h.in_projector.record(sample(at, *p));
                            }
                        }
                    }
                }
            }
        });
    }
    let pipeline = CancellationToken::new();
    let started = Instant::now();
    let reader = tokio::spawn(cdc_reader::run(config.clone(), pipeline.clone()));
    let proj = tokio::spawn(projector::run_observed(
        config.clone(),
        pipeline.clone(),
        Some(tx),
    ));
    while observed.applied.load(Ordering::Relaxed) < backlog.events {
        if started.elapsed() > Duration::from_secs(1800)
            || reader.is_finished()
            || proj.is_finished()
        {
            anyhow::bail!(
                "drain did not finish: {} of {} events applied",
                observed.applied.load(Ordering::Relaxed),
                backlog.events
            );
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let drain_secs = started.elapsed().as_secs_f64();
    let drain_rate = backlog.events as f64 / drain_secs;
    out.push(format!(
        "| drain of a {}-event backlog, binlog → read models | {:.0} events/s ({:.1} s) | simulator alone: {:.0} events/s | {:.2} |",
        backlog.events, drain_rate, drain_secs, write_rate, drain_rate / write_rate
    ));

    // 3. Sustained: full-speed writes while the pipeline runs.
    let applied_before = observed.applied.load(Ordering::Relaxed);
    let load_stop = CancellationToken::new();
    let load = tokio::spawn(simulator::run(
        store.clone(),
        sim(u64::MAX / 8, None),
        load_stop.clone(),
    ));
    let t0 = Instant::now();
    let mut lags = Vec::new();
    while t0.elapsed() < Duration::from_secs(args.sustained_secs) {
        tokio::time::sleep(Duration::from_secs(1)).await;
        let newest = observed.newest_occurred.load(Ordering::Relaxed);
        lags.push((Timestamp::now().as_micros() - newest) as f64 / 1000.0);
    }
    load_stop.cancel();
    let sustained = load.await.context("load task")??;
    let sustained_write = sustained.events as f64 / sustained.elapsed.as_secs_f64();
    // Let the pipeline finish what was written, then count.
    let target = applied_before + sustained.events;
    let catch_up = Instant::now();
    while observed.applied.load(Ordering::Relaxed) < target
        && catch_up.elapsed() < Duration::from_secs(120)
    {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let sustained_applied = (observed.applied.load(Ordering::Relaxed) - applied_before) as f64
        / (t0.elapsed().as_secs_f64());
    let q = |p: f64| {
        lags.get(((lags.len() as f64 - 1.0) * p) as usize)
            .copied()
            .unwrap_or(0.0)
    };
    out.push(format!(
        "| sustained at both servers' full write rate ({} s) | {:.0} events/s written, lag {:.0} / {:.0} / {:.0} / {:.0} ms at 25/50/75/100% of the run, max {:.0} ms | simulator alone: {:.0} events/s | {:.2} |",
        args.sustained_secs,
        sustained_write,
        q(0.25), q(0.5), q(0.75), q(1.0),
        lags.iter().cloned().fold(0.0, f64::max),
        write_rate,
        sustained_write / write_rate
    ));
    let _ = sustained_applied;

    // 4. Freshness at a steady rate.
    if let Ok(mut h) = observed.fresh.lock() {
        *h = Some(Freshness::new());
    }
    observed.recording.store(true, Ordering::Relaxed);
    let matches = (args.fresh_rate * args.fresh_secs) as f64 / EVENTS_PER_MATCH;
    let steady = simulator::run(
        store.clone(),
        sim(
            matches as u64,
            Some(args.fresh_rate as f64 / EVENTS_PER_MATCH),
        ),
        CancellationToken::new(),
    )
    .await?;
    let target = observed.applied.load(Ordering::Relaxed);
    let settle = Instant::now();
    while settle.elapsed() < Duration::from_secs(5)
        && observed.applied.load(Ordering::Relaxed) == target
    {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    observed.recording.store(false, Ordering::Relaxed);
    let f = observed
        .fresh
        .lock()
        .ok()
        .and_then(|mut h| h.take())
        .unwrap_or_else(Freshness::new);
    let h = &f.total;
    let ms = |v: u64| v as f64 / 1000.0;
    out.push(format!(
        "| freshness at {:.0} events/s ({} events), insert → read model | p50 {:.1} / p99 {:.1} / p99.9 {:.1} / p99.99 {:.1} / max {:.1} ms | Redis round trip p50 {:.2} / p99 {:.2} ms | p99 ÷ round-trip p99 = {:.0} |",
        steady.events as f64 / steady.elapsed.as_secs_f64(),
        h.len(),
        ms(h.value_at_quantile(0.5)),
        ms(h.value_at_quantile(0.99)),
        ms(h.value_at_quantile(0.999)),
        ms(h.value_at_quantile(0.9999)),
        ms(h.max()),
        ms(ping.value_at_quantile(0.5)),
        ms(ping.value_at_quantile(0.99)),
        h.value_at_quantile(0.99) as f64 / ping.value_at_quantile(0.99).max(1) as f64
    ));
    for (part, h) in [
        (
            "insert → stream entry (MySQL commit, binlog, cdc-reader)",
            &f.to_stream,
        ),
        ("stream entry → read model (projector)", &f.in_projector),
    ] {
        out.push(format!(
            "| … {part} | p50 {:.1} / p99 {:.1} / p99.9 {:.1} / p99.99 {:.1} / max {:.1} ms | (entry ids have ms resolution) | |",
            ms(h.value_at_quantile(0.5)),
            ms(h.value_at_quantile(0.99)),
            ms(h.value_at_quantile(0.999)),
            ms(h.value_at_quantile(0.9999)),
            ms(h.max()),
        ));
    }

    pipeline.cancel();
    let _ = reader.await;
    let _ = proj.await;
    store.disconnect().await;
    Ok(out)
}

async fn redis_ping_histogram(config: &Config) -> anyhow::Result<Histogram<u64>> {
    use fred::prelude::*;
    let client =
        Builder::from_config(fred::types::config::Config::from_url(&config.redis.url)?).build()?;
    client.init().await?;
    let mut h = histogram();
    for _ in 0..5_000 {
        let t = Instant::now();
        let _: String = client.ping(None).await?;
        let _ = h.record(t.elapsed().as_micros().max(1) as u64);
    }
    let _ = client.quit().await;
    Ok(h)
}

async fn wait_for_checkpoints(config: &Config) -> anyhow::Result<()> {
    use fred::prelude::*;
    let client =
        Builder::from_config(fred::types::config::Config::from_url(&config.redis.url)?).build()?;
    client.init().await?;
    let keys = config.keys();
    let deadline = Instant::now() + Duration::from_secs(60);
    for s in &config.servers {
        loop {
            let n: u32 = client.exists(keys.cdc_checkpoint(&s.name)).await?;
            if n == 1 {
                break;
            }
            anyhow::ensure!(
                Instant::now() < deadline,
                "the reader of {} did not start",
                s.name
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
    let _ = client.quit().await;
    Ok(())
}

/// Drops the benchmark's databases and Redis keys.
async fn cleanup(config: &Config) {
    use fred::prelude::*;
    use mysql_async::prelude::Queryable;
    for server in &config.servers {
        let Some(admin) = server.admin_url.as_deref() else {
            continue;
        };
        let Ok(opts) = mysql_async::Opts::from_url(admin) else {
            continue;
        };
        if let Ok(mut conn) = mysql_async::Conn::new(opts).await {
            for &shard in &server.shards {
                let _ = conn
                    .query_drop(format!(
                        "DROP DATABASE IF EXISTS `{}`",
                        config.database(shard)
                    ))
                    .await;
            }
            let _ = conn.disconnect().await;
        }
    }
    let Ok(rc) = fred::types::config::Config::from_url(&config.redis.url) else {
        return;
    };
    let Ok(client) = Builder::from_config(rc).build() else {
        return;
    };
    if client.init().await.is_err() {
        return;
    }
    let pattern = format!("{}:*", config.redis.prefix);
    let mut cursor = "0".to_string();
    loop {
        let page: Result<(String, Vec<String>), _> = client
            .scan_page(cursor.clone(), pattern.clone(), Some(1000), None)
            .await;
        let Ok((next, keys)) = page else { break };
        if !keys.is_empty() {
            let _: Result<(), _> = client.unlink(keys).await;
        }
        if next == "0" {
            break;
        }
        cursor = next;
    }
    let _ = client.quit().await;
}
