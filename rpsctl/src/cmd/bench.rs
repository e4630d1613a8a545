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
//!
//! Each phase ends only when the pipeline has applied every event written
//! so far: a phase that started behind would measure the one before it.
//! For each phase the bench also reports what it cost the Redis of the
//! config (CPU and AOF bytes per event, AOF rewrites), which the bench has
//! to itself while it runs.

use anyhow::Context;
use hdrhistogram::Histogram;
use rps_core::redis_client::ClientPolicy;
use rps_core::{Config, Timestamp};
use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio_util::sync::CancellationToken;

#[derive(Debug, clap::Args)]
pub struct Args {
    /// Events in the drain backlog.
    #[arg(long, default_value_t = 1_000_000)]
    backlog: u64,
    /// How long the full-speed load runs with the pipeline running (`30s`, `2m`).
    #[arg(long, default_value = "30s", value_parser = crate::cli::parse_duration)]
    sustained: Duration,
    /// Events per second of the freshness phase.
    #[arg(long, default_value_t = 10_000)]
    fresh_rate: u64,
    /// How long the freshness phase runs (`5m` or more to see it across AOF
    /// rewrites).
    #[arg(long, default_value = "30s", value_parser = crate::cli::parse_duration)]
    fresh: Duration,
    /// Distinct players.
    #[arg(long, default_value_t = 100_000)]
    players: u64,
    /// Print the report as JSON (one object per row of the table).
    #[arg(long)]
    json: bool,
}

/// One row of the report: the markdown table docs/benchmarks.md quotes.
#[derive(Debug, Clone, serde::Serialize)]
struct Row {
    measure: String,
    value: String,
    baseline: String,
    ratio: String,
}

impl Row {
    fn new(
        measure: impl Into<String>,
        value: impl Into<String>,
        baseline: impl Into<String>,
        ratio: impl Into<String>,
    ) -> Self {
        Row {
            measure: measure.into(),
            value: value.into(),
            baseline: baseline.into(),
            ratio: ratio.into(),
        }
    }

    fn markdown(&self) -> String {
        let mut line = String::from("|");
        for cell in [&self.measure, &self.value, &self.baseline, &self.ratio] {
            if !cell.is_empty() {
                line.push(' ');
                line.push_str(cell);
            }
            line.push_str(" |");
        }
        line
    }
}

#[derive(Debug, serde::Serialize)]
struct Report {
    rows: Vec<Row>,
}

/// Events per match of the simulator's default mix, measured (started,
/// two moves, finished, a few voids and abandons): converts an event rate
/// into the simulator's match rate.
const EVENTS_PER_MATCH: f64 = 4.0;

/// How often the Redis sampler reads INFO: places the start and end of an
/// AOF rewrite within this, and bounds the AOF growth a completing rewrite
/// hides from the count (see `AofLedger::fold`).
const SAMPLE_EVERY: Duration = Duration::from_millis(100);

#[derive(Default)]
struct Observed {
    /// Events applied or dead-lettered: each event written ends as one.
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
    /// Per batch: commit time (Redis' clock, µs) and number of events; with
    /// `totals` (each event's whole way, in batch order) it splits the
    /// samples by AOF rewrite once the phase is over, when the sampler has
    /// seen where each rewrite ended.
    commits: Vec<(i64, u32)>,
    totals: Vec<u32>,
}

impl Freshness {
    fn new() -> Self {
        Freshness {
            total: histogram(),
            to_stream: histogram(),
            in_projector: histogram(),
            commits: Vec::new(),
            totals: Vec::new(),
        }
    }

    /// The whole-way samples of batches committed while an AOF rewrite ran
    /// (per the sampler), and of the others.
    fn split_by_rewrites(&self, cost: &RedisCost) -> (Histogram<u64>, Histogram<u64>) {
        let (mut during, mut outside) = (histogram(), histogram());
        let mut totals = self.totals.iter();
        for &(at, n) in &self.commits {
            let h = if cost.during_rewrite(at) {
                &mut during
            } else {
                &mut outside
            };
            for &v in totals.by_ref().take(n as usize) {
                let _ = h.record(u64::from(v));
            }
        }
        (during, outside)
    }
}

fn histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, 600_000_000, 3).expect("valid histogram bounds")
}

fn percentiles(h: &Histogram<u64>) -> String {
    let ms = |v: u64| v as f64 / 1000.0;
    format!(
        "p50 {:.1} / p99 {:.1} / p99.9 {:.1} / p99.99 {:.1} / max {:.1} ms",
        ms(h.value_at_quantile(0.5)),
        ms(h.value_at_quantile(0.99)),
        ms(h.value_at_quantile(0.999)),
        ms(h.value_at_quantile(0.9999)),
        ms(h.max()),
    )
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
    // `[tracing]` on: the same run measures the pipeline traced.
    let telemetry = rps_telemetry::init(&config.tracing).context("tracing")?;
    let result = phases(config.clone(), &args).await;
    telemetry.shutdown().await;
    cleanup(&config).await;
    let rows = result?;
    if args.json {
        return crate::cli::print_json(&Report { rows });
    }
    println!("| measure | value | baseline (same run) | ratio |\n|---|---|---|---|");
    for r in &rows {
        println!("{}", r.markdown());
    }
    Ok(())
}

/// Waits until the pipeline has applied (or dead-lettered) `written`
/// events, every event written so far, and returns how long that took.
/// Fails when `timeout` passes first or when `stopped` says a component of
/// the pipeline has exited.
async fn catch_up(
    observed: &Observed,
    written: u64,
    timeout: Duration,
    phase: &str,
    stopped: impl Fn() -> bool,
) -> anyhow::Result<Duration> {
    let t = Instant::now();
    loop {
        let applied = observed.applied.load(Ordering::Relaxed);
        if applied >= written {
            let took = t.elapsed();
            tracing::info!(phase, written, secs = took.as_secs_f64(), "caught up");
            return Ok(took);
        }
        anyhow::ensure!(
            !stopped(),
            "{phase}: the pipeline stopped with {} of the {written} events written so far not applied",
            written - applied
        );
        anyhow::ensure!(
            t.elapsed() < timeout,
            "{phase}: the pipeline did not catch up within {} s: {} of the {written} events written so far not applied",
            timeout.as_secs(),
            written - applied
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Generous: the pipeline applies at half the servers' write rate or
/// better, so catching up takes at most about as long as the phase wrote
/// at full speed.
fn catch_up_timeout(phase: Duration) -> Duration {
    Duration::from_secs(600).max(phase * 20)
}

async fn phases(config: Arc<Config>, args: &Args) -> anyhow::Result<Vec<Row>> {
    let store = rps_event_store::EventStore::new(config.clone())?;
    let sim = |matches: u64, rate: Option<f64>| bench_simulation(args, matches, rate);
    let mut out = Vec::new();

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
    let sampler = RedisSampler::start(&config).await?;

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
    let written = backlog.events;
    let observed = Arc::new(Observed::default());
    let tx = observe_applies(observed.clone());
    let pipeline = CancellationToken::new();
    // Stops the pipeline also when a phase fails.
    let _stop_pipeline = pipeline.clone().drop_guard();
    let meter = RedisMeter::start(&sampler).await?;
    let started = Instant::now();
    let reader = tokio::spawn(cdc_reader::run(config.clone(), pipeline.clone()));
    let proj = tokio::spawn(projector::run_observed(
        config.clone(),
        pipeline.clone(),
        Some(tx),
    ));
    let stopped = || reader.is_finished() || proj.is_finished();
    catch_up(
        &observed,
        written,
        Duration::from_secs(1800),
        "drain",
        stopped,
    )
    .await?;
    let drain_secs = started.elapsed().as_secs_f64();
    let drain_cost = meter.finish(backlog.events).await?;
    let drain_rate = backlog.events as f64 / drain_secs;
    out.push(Row::new(
        format!(
            "drain of a {}-event backlog, binlog → read models",
            backlog.events
        ),
        format!("{drain_rate:.0} events/s ({drain_secs:.1} s)"),
        format!("simulator alone: {write_rate:.0} events/s"),
        format!("{:.2}", drain_rate / write_rate),
    ));

    let mut run = Run {
        args,
        store: store.clone(),
        observed: observed.clone(),
        write_rate,
        written,
    };
    let (row, sustained_cost) = sustained(&mut run, &sampler, &stopped).await?;
    out.push(row);
    let (rows, fresh_cost) = freshness(&mut run, &sampler, &ping, &stopped).await?;
    out.extend(rows);

    for (phase, cost) in [
        ("drain", &drain_cost),
        ("sustained", &sustained_cost),
        ("freshness", &fresh_cost),
    ] {
        out.push(cost.row(phase));
    }

    pipeline.cancel();
    let _ = reader.await;
    let _ = proj.await;
    sampler.stop().await;
    store.disconnect().await;
    Ok(out)
}

/// Counts what the projector applies and, while `recording` is set, the
/// freshness of every applied event; the projector reports to the sender.
fn observe_applies(
    observed: Arc<Observed>,
) -> tokio::sync::mpsc::UnboundedSender<(u16, projector::ApplyReport)> {
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<(u16, projector::ApplyReport)>();
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
                            let total = sample(at, *t);
                            let _ = h.total.record(total);
                            let _ = h.to_stream.record(sample(*p, *t));
                            let _ = h.in_projector.record(sample(at, *p));
                            h.totals.push(total.min(u64::from(u32::MAX)) as u32);
                        }
                        let n = r.occurred.len().min(r.published.len()) as u32;
                        h.commits.push((at.as_micros(), n));
                    }
                }
            }
        }
    });
    tx
}

/// What the phases after the drain share.
struct Run<'a> {
    args: &'a Args,
    store: rps_event_store::EventStore,
    observed: Arc<Observed>,
    /// The simulator alone, events/s: the baseline.
    write_rate: f64,
    /// Events written since the reader stored its start position: the
    /// ones the pipeline must apply.
    written: u64,
}

impl Run<'_> {
    fn sim(&self, matches: u64, rate: Option<f64>) -> simulator::SimulateOptions {
        bench_simulation(self.args, matches, rate)
    }
}

/// The tournament every phase writes: no abandoned matches, so no
/// compensator work mixes into the numbers.
fn bench_simulation(args: &Args, matches: u64, rate: Option<f64>) -> simulator::SimulateOptions {
    simulator::SimulateOptions {
        players: args.players,
        matches,
        rate,
        abandoned: 0.0,
        voided: 0.02,
        ..Default::default()
    }
}

/// Full-speed writes while the pipeline runs: the lag every second, and
/// how long the pipeline takes to catch up once the writers stop.
async fn sustained(
    run: &mut Run<'_>,
    sampler: &RedisSampler,
    stopped: &impl Fn() -> bool,
) -> anyhow::Result<(Row, RedisCost)> {
    let meter = RedisMeter::start(sampler).await?;
    let applied_before = run.observed.applied.load(Ordering::Relaxed);
    let load_stop = CancellationToken::new();
    let load = tokio::spawn(simulator::run(
        run.store.clone(),
        run.sim(u64::MAX / 8, None),
        load_stop.clone(),
    ));
    let t0 = Instant::now();
    let mut lags = Vec::new();
    while t0.elapsed() < run.args.sustained {
        tokio::time::sleep(Duration::from_secs(1)).await;
        let newest = run.observed.newest_occurred.load(Ordering::Relaxed);
        lags.push((Timestamp::now().as_micros() - newest) as f64 / 1000.0);
    }
    load_stop.cancel();
    let sustained = load.await.context("load task")??;
    run.written += sustained.events;
    let sustained_catch_up = catch_up(
        &run.observed,
        run.written,
        catch_up_timeout(t0.elapsed()),
        "sustained",
        stopped,
    )
    .await?;
    let sustained_cost = meter
        .finish(run.observed.applied.load(Ordering::Relaxed) - applied_before)
        .await?;
    let sustained_write = sustained.events as f64 / sustained.elapsed.as_secs_f64();
    let q = |p: f64| {
        lags.get(((lags.len() as f64 - 1.0) * p) as usize)
            .copied()
            .unwrap_or(0.0)
    };
    let row = Row::new(
        format!(
            "sustained at both servers' full write rate ({} s)",
            run.args.sustained.as_secs_f64()
        ),
        format!(
            "{:.0} events/s written, lag {:.0} / {:.0} / {:.0} / {:.0} ms at 25/50/75/100% of the run, max {:.0} ms; caught up {:.1} s after the writers stopped",
            sustained_write,
            q(0.25), q(0.5), q(0.75), q(1.0),
            lags.iter().cloned().fold(0.0, f64::max),
            sustained_catch_up.as_secs_f64(),
        ),
        format!("simulator alone: {:.0} events/s", run.write_rate),
        format!("{:.2}", sustained_write / run.write_rate),
    );
    Ok((row, sustained_cost))
}

/// Writes at a steady rate while every applied event's freshness is
/// recorded: insert → read model, and its two parts.
async fn freshness(
    run: &mut Run<'_>,
    sampler: &RedisSampler,
    ping: &Histogram<u64>,
    stopped: &impl Fn() -> bool,
) -> anyhow::Result<(Vec<Row>, RedisCost)> {
    if let Ok(mut h) = run.observed.fresh.lock() {
        *h = Some(Freshness::new());
    }
    let meter = RedisMeter::start(sampler).await?;
    let applied_before = run.observed.applied.load(Ordering::Relaxed);
    run.observed.recording.store(true, Ordering::Relaxed);
    let matches = run.args.fresh_rate as f64 * run.args.fresh.as_secs_f64() / EVENTS_PER_MATCH;
    let steady = simulator::run(
        run.store.clone(),
        run.sim(
            matches as u64,
            Some(run.args.fresh_rate as f64 / EVENTS_PER_MATCH),
        ),
        CancellationToken::new(),
    )
    .await?;
    run.written += steady.events;
    let fresh_catch_up = catch_up(
        &run.observed,
        run.written,
        catch_up_timeout(steady.elapsed),
        "freshness",
        stopped,
    )
    .await?;
    run.observed.recording.store(false, Ordering::Relaxed);
    let fresh_cost = meter
        .finish(run.observed.applied.load(Ordering::Relaxed) - applied_before)
        .await?;
    let f = run
        .observed
        .fresh
        .lock()
        .ok()
        .and_then(|mut h| h.take())
        .unwrap_or_else(Freshness::new);
    let h = &f.total;
    let ms = |v: u64| v as f64 / 1000.0;
    let mut rows = vec![Row::new(
        format!(
            "freshness at {:.0} events/s ({} events, caught up {:.1} s after the last write), insert → read model",
            steady.events as f64 / steady.elapsed.as_secs_f64(),
            h.len(),
            fresh_catch_up.as_secs_f64(),
        ),
        percentiles(h),
        format!(
            "Redis round trip p50 {:.2} / p99 {:.2} ms",
            ms(ping.value_at_quantile(0.5)),
            ms(ping.value_at_quantile(0.99)),
        ),
        format!(
            "p99 ÷ round-trip p99 = {:.0}",
            h.value_at_quantile(0.99) as f64 / ping.value_at_quantile(0.99).max(1) as f64
        ),
    )];
    for (part, h) in [
        (
            "insert → stream entry (MySQL commit, binlog, cdc-reader)",
            &f.to_stream,
        ),
        ("stream entry → read model (projector)", &f.in_projector),
    ] {
        rows.push(Row::new(
            format!("… {part}"),
            percentiles(h),
            "(entry ids have ms resolution)",
            "",
        ));
    }
    if fresh_cost.rewrite_spans.is_empty() {
        rows.push(Row::new(
            "… AOF rewrites during the freshness phase",
            "none",
            "",
            "",
        ));
    } else {
        let (during, outside) = f.split_by_rewrites(&fresh_cost);
        rows.push(Row::new(
            format!(
                "… committed while an AOF rewrite ran ({} events; rewrites {})",
                during.len(),
                fresh_cost.spans_text(),
            ),
            percentiles(&during),
            "",
            "",
        ));
        rows.push(Row::new(
            format!("… committed outside rewrites ({} events)", outside.len()),
            percentiles(&outside),
            "",
            "",
        ));
    }
    Ok((rows, fresh_cost))
}

/// The INFO fields the meter reads, from one call.
#[derive(Debug, Clone, Copy, Default)]
struct RedisInfo {
    /// `server_time_usec`: Redis' clock, the one commit times are read from.
    time_us: i64,
    /// `used_cpu_sys + used_cpu_user`: the server process (main thread and
    /// background threads), seconds.
    cpu: f64,
    /// The same for the main thread alone (Redis ≥ 7.0; else the process).
    cpu_main_thread: f64,
    /// `used_cpu_*_children`: child processes (AOF rewrites), counted when
    /// a child has exited.
    cpu_children: f64,
    aof_enabled: bool,
    /// The base file plus every incremental file.
    aof_current_size: i64,
    /// `aof_current_size` at startup or when the latest rewrite completed.
    aof_base_size: i64,
    /// Rewrites started (forked) since startup.
    aof_rewrites: u64,
    aof_rewrite_in_progress: bool,
    total_forks: u64,
    latest_fork_usec: u64,
}

impl RedisInfo {
    fn parse(text: &str) -> Self {
        let fields: HashMap<&str, &str> = text
            .lines()
            .filter_map(|l| l.trim_end().split_once(':'))
            .collect();
        let float = |k: &str| fields.get(k).and_then(|v| v.parse::<f64>().ok());
        let f = |k: &str| float(k).unwrap_or(0.0);
        let i = |k: &str| {
            fields
                .get(k)
                .and_then(|v| v.parse::<i64>().ok())
                .unwrap_or(0)
        };
        let cpu = f("used_cpu_sys") + f("used_cpu_user");
        RedisInfo {
            time_us: i("server_time_usec"),
            cpu,
            cpu_main_thread: match (
                float("used_cpu_sys_main_thread"),
                float("used_cpu_user_main_thread"),
            ) {
                (Some(s), Some(u)) => s + u,
                _ => cpu,
            },
            cpu_children: f("used_cpu_sys_children") + f("used_cpu_user_children"),
            aof_enabled: i("aof_enabled") == 1,
            aof_current_size: i("aof_current_size"),
            aof_base_size: i("aof_base_size"),
            aof_rewrites: i("aof_rewrites").max(0) as u64,
            aof_rewrite_in_progress: i("aof_rewrite_in_progress") == 1,
            total_forks: i("total_forks").max(0) as u64,
            latest_fork_usec: i("latest_fork_usec").max(0) as u64,
        }
    }
}

/// What the sampler has seen of the AOF since it started.
#[derive(Debug, Clone, Default)]
struct AofLedger {
    last: Option<RedisInfo>,
    /// Bytes appended to the AOF.
    appended: u64,
    rewrites: u64,
    /// Fork time of the rewrites (`latest_fork_usec` after each fork).
    fork_usec: u64,
    /// Rewrites seen running, in Redis' clock (µs): from the last sample
    /// before the start to the first sample after the end (`None` while
    /// running), so a span covers the rewrite whatever the sampling lag.
    spans: Vec<(i64, Option<i64>)>,
}

impl AofLedger {
    fn fold(&mut self, s: RedisInfo) {
        let Some(p) = self.last.replace(s) else {
            if s.aof_rewrite_in_progress {
                self.spans.push((s.time_us, None));
            }
            return;
        };
        // Every append grows `aof_current_size`. A completing rewrite (Redis
        // 7 multi-part AOF) sets it to the new base file plus the
        // incremental file opened when the rewrite started, and
        // `aof_base_size` to that same value: the drop is not negative
        // growth, and of the interval only what came after the completion
        // can be told (at most one interval's appends go uncounted per
        // rewrite).
        let grown = if s.aof_base_size == p.aof_base_size {
            s.aof_current_size - p.aof_current_size
        } else {
            s.aof_current_size - s.aof_base_size
        };
        self.appended += grown.max(0) as u64;
        let started = s.aof_rewrites.saturating_sub(p.aof_rewrites);
        self.rewrites += started;
        if s.total_forks > p.total_forks {
            self.fork_usec += s.latest_fork_usec;
        }
        match (p.aof_rewrite_in_progress, s.aof_rewrite_in_progress) {
            (false, true) => self.spans.push((p.time_us, None)),
            (true, false) => {
                if let Some(span) = self.spans.last_mut() {
                    span.1 = Some(s.time_us);
                }
            }
            // Started and done between two samples.
            (false, false) if started > 0 => self.spans.push((p.time_us, Some(s.time_us))),
            _ => {}
        }
    }
}

struct SamplerState {
    client: fred::clients::Client,
    ledger: AofLedger,
}

impl SamplerState {
    async fn sample(&mut self) -> anyhow::Result<RedisInfo> {
        use fred::prelude::*;
        use fred::types::CustomCommand;
        let text: String = self
            .client
            .custom(
                CustomCommand::new_static("INFO", None::<u16>, false),
                vec!["server", "persistence", "stats", "cpu"],
            )
            .await?;
        let info = RedisInfo::parse(&text);
        self.ledger.fold(info);
        Ok(info)
    }
}

/// Reads INFO of the bench's Redis every `SAMPLE_EVERY` for the whole run:
/// AOF sizes reset on rewrite and a rewrite's state is only visible while it
/// runs, so phase-end readings alone would miss both.
struct RedisSampler {
    /// Locked across each INFO call, so samples fold in the order taken.
    state: Arc<tokio::sync::Mutex<SamplerState>>,
    stop: CancellationToken,
    task: tokio::task::JoinHandle<()>,
}

impl RedisSampler {
    async fn start(config: &Config) -> anyhow::Result<Self> {
        let client = ClientPolicy::default().connect(&config.redis).await?;
        let mut state = SamplerState {
            client,
            ledger: AofLedger::default(),
        };
        state
            .sample()
            .await
            .context("reading INFO of the bench's Redis")?;
        let state = Arc::new(tokio::sync::Mutex::new(state));
        let stop = CancellationToken::new();
        let task = tokio::spawn({
            let (state, stop) = (state.clone(), stop.clone());
            async move {
                let mut warned = false;
                loop {
                    tokio::select! {
                        _ = stop.cancelled() => break,
                        _ = tokio::time::sleep(SAMPLE_EVERY) => {}
                    }
                    if let Err(e) = state.lock().await.sample().await {
                        if !warned {
                            tracing::warn!(error = %e, "Redis INFO sample failed");
                            warned = true;
                        }
                    }
                }
            }
        });
        Ok(RedisSampler { state, stop, task })
    }

    /// A sample taken now, and the ledger that includes it.
    async fn now(&self) -> anyhow::Result<(RedisInfo, AofLedger)> {
        let mut state = self.state.lock().await;
        let info = state.sample().await?;
        Ok((info, state.ledger.clone()))
    }

    async fn stop(mut self) {
        use fred::prelude::*;
        self.stop.cancel();
        let _ = (&mut self.task).await;
        let _ = self.state.lock().await.client.quit().await;
    }
}

impl Drop for RedisSampler {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

/// Redis' cost of one phase, from `start` to `finish`.
struct RedisMeter<'a> {
    sampler: &'a RedisSampler,
    info: RedisInfo,
    ledger: AofLedger,
    wall: Instant,
}

impl<'a> RedisMeter<'a> {
    async fn start(sampler: &'a RedisSampler) -> anyhow::Result<Self> {
        let (info, ledger) = sampler.now().await?;
        Ok(RedisMeter {
            sampler,
            info,
            ledger,
            wall: Instant::now(),
        })
    }

    /// `events`: applied in the phase.
    async fn finish(self, events: u64) -> anyhow::Result<RedisCost> {
        let (end, ledger) = self.sampler.now().await?;
        let (from, to) = (self.info.time_us, end.time_us);
        let rewrite_spans = ledger
            .spans
            .iter()
            .filter_map(|&(s, e)| {
                let e = e.unwrap_or(to);
                (e >= from && s <= to).then_some((s, e))
            })
            .collect();
        Ok(RedisCost {
            events,
            wall_secs: self.wall.elapsed().as_secs_f64(),
            cpu_secs: end.cpu - self.info.cpu,
            main_thread_secs: end.cpu_main_thread - self.info.cpu_main_thread,
            children_secs: end.cpu_children - self.info.cpu_children,
            aof_enabled: end.aof_enabled,
            aof_bytes: ledger.appended - self.ledger.appended,
            rewrites: ledger.rewrites - self.ledger.rewrites,
            fork_usec: ledger.fork_usec - self.ledger.fork_usec,
            rewrite_spans,
            start_us: from,
            rewrite_running_at_end: end.aof_rewrite_in_progress,
        })
    }
}

struct RedisCost {
    events: u64,
    wall_secs: f64,
    cpu_secs: f64,
    main_thread_secs: f64,
    children_secs: f64,
    aof_enabled: bool,
    aof_bytes: u64,
    /// Started in the phase.
    rewrites: u64,
    fork_usec: u64,
    /// Rewrites running at some time in the phase (Redis' clock, µs; one
    /// still running ends at the phase's end).
    rewrite_spans: Vec<(i64, i64)>,
    start_us: i64,
    rewrite_running_at_end: bool,
}

impl RedisCost {
    fn during_rewrite(&self, t_us: i64) -> bool {
        self.rewrite_spans
            .iter()
            .any(|&(s, e)| s <= t_us && t_us <= e)
    }

    /// "+12.3 s for 4.1 s, …", relative to the phase's start.
    fn spans_text(&self) -> String {
        let secs = |us: i64| us as f64 / 1e6;
        let mut parts: Vec<String> = self
            .rewrite_spans
            .iter()
            .map(|&(s, e)| format!("{:+.1} s for {:.1} s", secs(s - self.start_us), secs(e - s)))
            .collect();
        if self.rewrite_running_at_end {
            if let Some(last) = parts.last_mut() {
                last.push_str(" (running at the end)");
            }
        }
        parts.join(", ")
    }

    fn row(&self, phase: &str) -> Row {
        let events = self.events.max(1) as f64;
        let aof = if self.aof_enabled {
            let mut s = format!(
                "AOF {:.0} B per event ({:.1} MB), {} rewrite(s) started",
                self.aof_bytes as f64 / events,
                self.aof_bytes as f64 / 1e6,
                self.rewrites
            );
            if self.rewrites > 0 {
                s.push_str(&format!(
                    ", fork {:.1} ms in all",
                    self.fork_usec as f64 / 1e3
                ));
            }
            if !self.rewrite_spans.is_empty() {
                s.push_str(&format!("; running {}", self.spans_text()));
            }
            s
        } else {
            "AOF off".to_string()
        };
        Row::new(
            format!(
                "Redis in the {phase} phase ({} events, {:.1} s)",
                self.events, self.wall_secs
            ),
            format!(
                "{:.1} µs CPU per event, main thread {:.0} % of a core; {aof}",
                self.cpu_secs * 1e6 / events,
                self.main_thread_secs / self.wall_secs.max(1e-9) * 100.0,
            ),
            format!(
                "rewrite children: {:.1} s CPU (counted as each exits)",
                self.children_secs
            ),
            "",
        )
    }
}

async fn redis_ping_histogram(config: &Config) -> anyhow::Result<Histogram<u64>> {
    use fred::prelude::*;
    let client = ClientPolicy::default().connect(&config.redis).await?;
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
    let client = ClientPolicy::default().connect(&config.redis).await?;
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
    if let Err(e) = rps_event_store::drop_shard_databases(config).await {
        tracing::warn!(error = %e, "the benchmark's databases were not all dropped");
    }
    let Ok(client) = ClientPolicy::default().connect(&config.redis).await else {
        return;
    };
    let pattern = config.keys().all_pattern();
    if let Ok(mut scan) = rps_core::redis_client::KeyScan::new(&client, &pattern).await {
        while let Ok(Some(keys)) = scan.next_page(&client).await {
            let _ = rps_core::redis_client::unlink_keys(&client, keys).await;
        }
    }
    let _ = client.quit().await;
}

#[cfg(test)]
mod tests {
    use super::*;

    fn info(t: i64, current: i64, base: i64, rewrites: u64, running: bool) -> RedisInfo {
        RedisInfo {
            time_us: t,
            aof_enabled: true,
            aof_current_size: current,
            aof_base_size: base,
            aof_rewrites: rewrites,
            aof_rewrite_in_progress: running,
            total_forks: rewrites,
            latest_fork_usec: 1_000,
            ..Default::default()
        }
    }

    #[test]
    fn parses_the_fields_of_several_sections() {
        let text = "# Server\r\nserver_time_usec:1796191936931517\r\n\r\n# Persistence\r\n\
            aof_enabled:1\r\naof_rewrite_in_progress:1\r\naof_rewrites:3\r\n\
            aof_current_size:106856396\r\naof_base_size:69951822\r\n\r\n# Stats\r\n\
            total_forks:4\r\nlatest_fork_usec:2113\r\n\r\n# CPU\r\nused_cpu_sys:1.500000\r\n\
            used_cpu_user:2.250000\r\nused_cpu_sys_children:0.100000\r\n\
            used_cpu_user_children:0.200000\r\nused_cpu_sys_main_thread:1.000000\r\n\
            used_cpu_user_main_thread:2.000000\r\n";
        let i = RedisInfo::parse(text);
        assert_eq!(i.time_us, 1_796_191_936_931_517);
        assert!(i.aof_enabled && i.aof_rewrite_in_progress);
        assert_eq!(
            (i.aof_rewrites, i.aof_current_size, i.aof_base_size),
            (3, 106_856_396, 69_951_822)
        );
        assert_eq!((i.total_forks, i.latest_fork_usec), (4, 2113));
        assert!((i.cpu - 3.75).abs() < 1e-9);
        assert!((i.cpu_main_thread - 3.0).abs() < 1e-9);
        assert!((i.cpu_children - 0.3).abs() < 1e-9);
    }

    #[test]
    fn main_thread_falls_back_to_the_process_before_redis_7() {
        let i = RedisInfo::parse("used_cpu_sys:1.0\r\nused_cpu_user:2.0\r\n");
        assert!((i.cpu_main_thread - 3.0).abs() < 1e-9);
    }

    #[test]
    fn a_completed_rewrite_is_not_negative_growth() {
        let mut l = AofLedger::default();
        // +50; +30, then the rewrite forks; +20; done: a 40-byte base plus
        // the 20 bytes appended since the fork, then +5; +20.
        l.fold(info(0, 100, 100, 0, false));
        l.fold(info(1, 150, 100, 0, false));
        l.fold(info(2, 180, 100, 1, true));
        l.fold(info(3, 200, 100, 1, true));
        l.fold(info(4, 65, 60, 1, false));
        l.fold(info(5, 85, 60, 1, false));
        assert_eq!(l.appended, 125);
        assert_eq!((l.rewrites, l.fork_usec), (1, 1_000));
        assert_eq!(l.spans, vec![(1, Some(4))]);
    }

    #[test]
    fn a_rewrite_between_two_samples_still_counts_as_a_span() {
        let mut l = AofLedger::default();
        l.fold(info(0, 100, 100, 2, false));
        l.fold(info(1, 60, 60, 3, false));
        assert_eq!(l.appended, 0);
        assert_eq!(l.rewrites, 1);
        assert_eq!(l.spans, vec![(0, Some(1))]);
    }

    #[test]
    fn freshness_splits_by_the_commit_time_of_each_batch() {
        let cost = RedisCost {
            events: 0,
            wall_secs: 1.0,
            cpu_secs: 0.0,
            main_thread_secs: 0.0,
            children_secs: 0.0,
            aof_enabled: true,
            aof_bytes: 0,
            rewrites: 1,
            fork_usec: 0,
            rewrite_spans: vec![(100, 200)],
            start_us: 0,
            rewrite_running_at_end: false,
        };
        let mut f = Freshness::new();
        f.commits = vec![(50, 2), (150, 1), (250, 3)];
        f.totals = vec![1, 2, 1000, 3, 4, 5];
        let (during, outside) = f.split_by_rewrites(&cost);
        assert_eq!((during.len(), outside.len()), (1, 5));
        assert_eq!(during.max(), 1000);
        assert_eq!(cost.spans_text(), "+0.0 s for 0.0 s");
    }
}
