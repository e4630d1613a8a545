//! The saga dashboard: a page at `/dashboard` (static files built into the
//! binary) that polls `GET /v1/dashboard`, one JSON snapshot of the
//! pipeline: matches per lifecycle state, deadlines and compensations,
//! lag and freshness per server and shard, events/s, dead letters by
//! reason, the active generation and any rebuild, and the newest season's
//! top 10, plus a few minutes of history so charts have a past as soon as
//! the page loads.
//!
//! A sampler task reads Redis every [`ApiOptions::dashboard_interval`] and
//! keeps the samples in a ring ([`ApiOptions::dashboard_history`] long);
//! the handler serves the latest snapshot, so any number of open pages cost
//! Redis the same few commands per interval. Figures that only exist as
//! metrics of the other components (binlog lag in bytes, freshness and
//! firing-delay percentiles, compensations fired and retried) are read from
//! the process's own registry, which holds them under `rpsctl run`; with
//! the API alone they are `null` and the page says "n/a". docs/api.md lists
//! where each figure comes from.
//!
//! [`ApiOptions::dashboard_interval`]: crate::ApiOptions::dashboard_interval
//! [`ApiOptions::dashboard_history`]: crate::ApiOptions::dashboard_history

pub(crate) mod prom;

use crate::{entry_json, finish, generation, json_response, observe, AppState, Failure, Shared};
use axum::extract::rejection::PathRejection;
use axum::extract::{Path, State};
use axum::http::header;
use axum::response::{IntoResponse, Response};
use fred::clients::Client;
use fred::interfaces::{HashesInterface, KeysInterface, SortedSetsInterface, StreamsInterface};
use fred::prelude::*;
use fred::types::{CustomCommand, Value};
use prom::{Buckets, Metrics};
use read_model::lifecycle::{MatchCounts, STATES};
use read_model::read::{self, ShardProgress};
use read_model::redis_util::hash_pairs;
use read_model::ReadModelKeys;
use rps_core::checkpoint::Checkpoint;
use rps_core::{SeasonId, Timestamp};
use serde_json::{json, Value as Json};
use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::{Arc, Mutex, Weak};
use std::time::{Duration, Instant};

/// The lease score of a parked deadline (`compensator::deadlines::PARKED`;
/// the API does not depend on the compensator, a test holds the two equal).
pub const PARKED_LEASE: f64 = 9_000_000_000_000.0;
/// Dead-letter `kind` of a deadline the compensator gave up on
/// (`compensator::deadlines::DEADLINE_FAILED`).
pub const DEADLINE_FAILED: &str = "deadline_failed";

/// Metric names of the other components the dashboard reads when they
/// share the registry (the components' own constants; a test holds them
/// equal).
pub mod metric_names {
    pub const CDC_LAG_BYTES: &str = "rps_cdc_lag_bytes";
    pub const CDC_LAG_SECONDS: &str = "rps_cdc_lag_seconds";
    pub const CDC_UP: &str = "rps_cdc_reader_up";
    pub const PROJECTOR_APPLIED: &str = "rps_projector_events_applied_total";
    pub const PROJECTOR_REJECTIONS: &str = "rps_projector_rejections_total";
    pub const PROJECTOR_LAG_ENTRIES: &str = "rps_projector_lag_entries";
    pub const PROJECTOR_FRESHNESS: &str = "rps_projector_freshness_seconds";
    pub const COMPENSATOR_FIRED: &str = "rps_compensator_fired_total";
    pub const COMPENSATOR_RETRIES: &str = "rps_compensator_retries_total";
    pub const COMPENSATOR_DEAD_LETTERED: &str = "rps_compensator_dead_lettered_total";
    pub const COMPENSATOR_FIRING_DELAY: &str = "rps_compensator_firing_delay_seconds";
}
use metric_names as m;

/// Headline rates (events/s) are taken over this window, smoother than
/// one interval.
const RATE_WINDOW: Duration = Duration::from_secs(10);
/// "In the last minute": lifecycle moves and percentiles.
const MINUTE: Duration = Duration::from_secs(60);
/// Dead-letter entries read per sample at most, so a huge dead-letter
/// stream is tallied over a few samples instead of stalling one.
const DEAD_LETTER_READ_PER_SAMPLE: u64 = 10_000;
const DEAD_LETTER_PAGE: u64 = 1_000;
/// How long a failed sample answers for itself before a request samples
/// again.
const DOWN_KEPT: Duration = Duration::from_millis(250);

/// What one sample remembers for the history and the windowed figures.
#[derive(Debug, Clone, Default)]
struct Sample {
    at: Timestamp,
    generation: Option<u64>,
    matches: Option<MatchCounts>,
    /// Entries ever added to the shard streams, per shard (`XINFO STREAM`).
    published: Vec<Option<u64>>,
    /// Entries not yet applied, summed over shards; `None` if a shard
    /// cannot tell.
    lag_entries: Option<u64>,
    /// The largest lag of a shard, seconds of event time.
    lag_seconds: Option<f64>,
    deadlines_pending: Option<u64>,
    deadlines_overdue: Option<u64>,
    /// Entries the projector consumed (applied + rejected), per its metrics.
    consumed_metric: Option<f64>,
    fired_metric: Option<f64>,
    freshness: Option<Buckets>,
    firing_delay: Option<Buckets>,
}

impl Sample {
    fn published_total(&self) -> Option<u64> {
        self.published.iter().copied().sum()
    }

    /// Stream entries applied (or dead-lettered) by the projector, when
    /// Redis can tell: published minus what is left.
    fn applied_total(&self) -> Option<u64> {
        Some(self.published_total()?.saturating_sub(self.lag_entries?))
    }
}

/// Rate of a counter between two samples; `None` when it is unknown in
/// either or went down (the counter restarted: a stream was recreated).
fn rate(later: Option<f64>, earlier: Option<f64>, seconds: f64) -> Option<f64> {
    let (l, e) = (later?, earlier?);
    (seconds > 0.0 && l >= e).then(|| (l - e) / seconds)
}

fn seconds_between(later: &Sample, earlier: &Sample) -> f64 {
    (later.at.as_micros() - earlier.at.as_micros()) as f64 / 1e6
}

/// The running tally of the dead-letter stream by origin and kind: read
/// once, then only the entries after the last one seen. A deletion
/// (`rpsctl dlq retry`/`drop` remove entries) changes the stream's
/// `max-deleted-entry-id`, and the tally starts over.
#[derive(Debug, Default)]
struct DeadLetterTally {
    last_id: Option<String>,
    max_deleted: Option<String>,
    counts: BTreeMap<(String, String), u64>,
    read: u64,
}

impl DeadLetterTally {
    async fn update(
        &mut self,
        client: &Client,
        key: &str,
    ) -> Result<(u64, bool), fred::error::Error> {
        let info = xinfo_stream(client, key).await?;
        let length = info
            .as_ref()
            .and_then(|i| i.get("length"))
            .and_then(|v| v.parse().ok())
            .unwrap_or(0u64);
        let max_deleted = info
            .as_ref()
            .and_then(|i| i.get("max-deleted-entry-id").cloned());
        if max_deleted != self.max_deleted || length < self.read {
            *self = DeadLetterTally {
                max_deleted,
                ..Default::default()
            };
        }
        let mut budget = DEAD_LETTER_READ_PER_SAMPLE;
        while budget > 0 && self.read < length {
            let start = self
                .last_id
                .as_ref()
                .map_or("-".to_string(), |l| format!("({l}"));
            let page: Vec<(String, HashMap<String, String>)> = client
                .xrange_values(key, start.as_str(), "+", Some(DEAD_LETTER_PAGE.min(budget)))
                .await?;
            let Some((last, _)) = page.last() else { break };
            self.last_id = Some(last.clone());
            budget = budget.saturating_sub(page.len() as u64);
            self.read += page.len() as u64;
            for (_, fields) in &page {
                let field = |k: &str| fields.get(k).cloned().unwrap_or_default();
                *self
                    .counts
                    .entry((field("origin"), field("kind")))
                    .or_default() += 1;
            }
        }
        Ok((length, self.read >= length))
    }

    fn count(&self, origin: &str, kind: &str) -> u64 {
        self.counts
            .get(&(origin.to_string(), kind.to_string()))
            .copied()
            .unwrap_or(0)
    }
}

/// The latest answer of `/v1/dashboard`.
#[derive(Clone)]
enum Snapshot {
    Ready(Arc<Vec<u8>>),
    /// No generation marker (a rebuild), or Redis failed.
    Down(String),
}

/// The dashboard's state in the API process.
pub(crate) struct Dashboard {
    interval: Duration,
    capacity: usize,
    ring: Mutex<VecDeque<Sample>>,
    latest: Mutex<Option<(Instant, Snapshot)>>,
    /// Serialises sampling (the sampler task and a handler that finds the
    /// snapshot stale) and owns what sampling carries over.
    sampling: tokio::sync::Mutex<DeadLetterTally>,
}

impl Dashboard {
    pub(crate) fn new(interval: Duration, history: Duration) -> Dashboard {
        let interval = interval.max(Duration::from_millis(100));
        let capacity = (history.as_secs_f64() / interval.as_secs_f64()).ceil() as usize + 1;
        Dashboard {
            interval,
            capacity: capacity.max(2),
            ring: Mutex::new(VecDeque::new()),
            latest: Mutex::new(None),
            sampling: tokio::sync::Mutex::new(DeadLetterTally::default()),
        }
    }

    /// The latest snapshot if it may still be served. A failure is kept
    /// only briefly, so the end of a rebuild shows at the next poll rather
    /// than at the next sample.
    fn fresh_snapshot(&self) -> Option<Snapshot> {
        let latest = self.latest.lock().expect("dashboard lock");
        latest
            .as_ref()
            .filter(|(taken, s)| {
                let keep = match s {
                    Snapshot::Ready(_) => self.interval * 2,
                    Snapshot::Down(_) => DOWN_KEPT,
                };
                taken.elapsed() < keep
            })
            .map(|(_, s)| s.clone())
    }
}

/// Samples every interval while the router lives (the task holds only a
/// weak reference, so dropping the router ends it).
pub(crate) fn spawn_sampler(state: &Shared) {
    let weak: Weak<AppState> = Arc::downgrade(state);
    let interval = state.dashboard.interval;
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(interval);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            let Some(st) = weak.upgrade() else { return };
            take_sample(&st).await;
        }
    });
}

/// Takes one sample, stores it and the snapshot built from it.
async fn take_sample(st: &AppState) -> Snapshot {
    let mut tally = st.dashboard.sampling.lock().await;
    let snapshot = match collect(st, &mut tally).await {
        Ok(body) => Snapshot::Ready(Arc::new(body)),
        Err(Failure::Unavailable(why)) => Snapshot::Down(why),
        Err(Failure::Redis(e)) => {
            tracing::warn!(error = %e, "dashboard sample failed");
            Snapshot::Down("read models temporarily unavailable".into())
        }
        Err(_) => Snapshot::Down("read models temporarily unavailable".into()),
    };
    *st.dashboard.latest.lock().expect("dashboard lock") = Some((Instant::now(), snapshot.clone()));
    snapshot
}

/// `XINFO STREAM key` as text fields; `None` when the stream does not exist.
async fn xinfo_stream(
    client: &Client,
    key: &str,
) -> Result<Option<HashMap<String, String>>, fred::error::Error> {
    let r: Result<Value, _> = client
        .custom(
            CustomCommand::new_static("XINFO", rps_core::redis_client::slot_of(key), false),
            vec!["STREAM".to_string(), key.to_string()],
        )
        .await;
    match r {
        Ok(v) => Ok(hash_pairs(v).map(|p| p.into_iter().collect())),
        Err(e) if e.details().contains("no such key") => Ok(None),
        Err(e) => Err(e),
    }
}

/// Entries ever added to each shard stream (Redis 7's `entries-added`).
async fn published(
    client: &Client,
    keys: &rps_core::Keys,
    shard_count: u16,
) -> Result<Vec<Option<u64>>, fred::error::Error> {
    let pipe = client.pipeline();
    for shard in 0..shard_count {
        let key = keys.events(shard);
        let _: () = pipe
            .custom(
                CustomCommand::new_static("XINFO", rps_core::redis_client::slot_of(&key), false),
                vec!["STREAM".to_string(), key],
            )
            .await?;
    }
    let replies = pipe.try_all::<Value>().await;
    Ok(replies
        .into_iter()
        .map(|r| match r {
            Ok(v) => hash_pairs(v)?
                .into_iter()
                .find(|(k, _)| k == "entries-added")
                .and_then(|(_, v)| v.parse().ok()),
            // No stream yet: nothing was ever published to it.
            Err(e) if e.details().contains("no such key") => Some(0),
            Err(_) => None,
        })
        .collect())
}

/// The compensators' bookkeeping summed over the shards (it is kept per
/// shard, in each shard's slot): deadlines with an attempt history, and
/// how many of them are parked.
async fn compensations(
    client: &Client,
    keys: &rps_core::Keys,
    shard_count: u16,
) -> Result<(u64, u64), fred::error::Error> {
    let pipe = client.pipeline();
    for shard in 0..shard_count {
        let _: () = pipe.hlen(keys.deadline_attempts(shard)).await?;
        let _: () = pipe
            .zcount(keys.deadline_leases(shard), PARKED_LEASE, f64::INFINITY)
            .await?;
    }
    let counts: Vec<u64> = pipe.all().await?;
    Ok(counts.chunks(2).fold((0, 0), |(a, p), c| {
        (a + c[0], p + c.get(1).copied().unwrap_or(0))
    }))
}

fn ts_json(t: Option<Timestamp>) -> Json {
    t.map_or(Json::Null, |t| Json::String(t.to_rfc3339()))
}

fn quantiles_json(window: Option<Buckets>, seconds: f64) -> Json {
    let Some(b) = window else {
        return Json::Null;
    };
    let q = |x| prom::quantile(&b, x);
    json!({
        "p50": q(0.5),
        "p90": q(0.9),
        "p99": q(0.99),
        "count": b.last().map_or(0.0, |(_, c)| *c) as u64,
        "window_seconds": seconds,
    })
}

fn counts_json(c: &MatchCounts) -> Json {
    let mut m = serde_json::Map::new();
    for (f, v) in c.fields() {
        m.insert(f.into(), v.into());
    }
    m.insert("total".into(), c.total().into());
    Json::Object(m)
}

/// The start of a window ending at the last sample: the latest complete
/// sample at least `ago` before it, else the oldest complete one. Samples
/// taken while no generation was live (they only keep the history's gap)
/// cannot start a window: they lack the figures.
fn window_start(ring: &VecDeque<Sample>, ago: Duration) -> Option<&Sample> {
    let last = ring.back()?;
    let cutoff = last.at.as_micros() - ago.as_micros() as i64;
    let complete = ring
        .iter()
        .take(ring.len() - 1)
        .filter(|s| s.generation.is_some());
    let oldest = complete.clone().next();
    complete
        .rev()
        .find(|s| s.at.as_micros() <= cutoff)
        .or(oldest)
}

/// Reads everything, pushes the sample, builds the JSON.
async fn collect(st: &AppState, tally: &mut DeadLetterTally) -> Result<Vec<u8>, Failure> {
    let client = st.pool.next();
    let now = Timestamp::now();
    let metrics = Metrics::parse(&st.metrics.render());
    let with_cdc = metrics.has_prefix("rps_cdc_");
    let with_projector = metrics.has_prefix("rps_projector_");
    let with_compensator = metrics.has_prefix("rps_compensator_");
    let in_process = |present: bool, name: &str| {
        // A component in the registry whose counter has no series yet has
        // counted nothing.
        present.then(|| metrics.sum(name).unwrap_or(0.0))
    };

    let published = published(client, &st.keys, st.shard_count).await?;
    let gen = match generation(st).await {
        Ok(g) => g,
        Err(e) => {
            push(
                st,
                Sample {
                    at: now,
                    published,
                    ..Default::default()
                },
            );
            return Err(e);
        }
    };
    let gk = st.keys.generation_keys(gen);
    let mut shards = read::progress_with_lag(client, &st.keys, gen, st.shard_count).await?;
    let lag_gauge = metrics.by_label(m::PROJECTOR_LAG_ENTRIES, "shard");
    for p in shards.iter_mut() {
        if p.lag_entries.is_none() {
            // Redis cannot count entries after a group moved with XGROUP
            // SETID; the projector's own gauge can, when it is in-process.
            p.lag_entries = lag_gauge.get(&p.shard.to_string()).map(|v| *v as u64);
        }
    }
    let matches = read::match_counts(client, &gk, st.shard_count).await?;
    let deadlines = read::deadline_counts(client, &gk, st.shard_count, now.as_millis()).await?;
    let (pending, overdue) = (deadlines.pending, deadlines.overdue);
    let oldest_overdue = deadlines
        .earliest_ms
        .map(|ms| (now.as_millis() - ms) as f64 / 1000.0)
        .filter(|s| *s > 0.0);
    let (attempts, parked) = compensations(client, &st.keys, st.shard_count).await?;
    let (dead_total, dead_complete) = tally.update(client, &st.keys.deadletter()).await?;
    let mut checkpoints = Vec::with_capacity(st.servers.len());
    for (name, _) in &st.servers {
        let raw: Option<String> = client.get(st.keys.cdc_checkpoint(name)).await?;
        checkpoints.push(raw.as_deref().and_then(|r| Checkpoint::decode(r).ok()));
    }
    let seasons = read::seasons(client, &gk).await?;
    let season: Option<SeasonId> = seasons.last().copied();
    let top = match season {
        Some(s) => read::leaderboard(client, &gk, Some(s), 0, 10).await?,
        None => Vec::new(),
    };
    let next = st.keys.generation_keys(gen + 1);
    let pipe = client.pipeline();
    for key in [
        next.progress(0),
        next.lifecycle(0),
        next.deadlines(0),
        next.seasons(0),
        next.board(0, None),
    ] {
        let _: () = pipe.exists(key).await?;
    }
    let building: Vec<i64> = pipe.all().await?;
    let rebuilding = building.iter().any(|n| *n > 0);

    let consumed = match (
        metrics.sum(m::PROJECTOR_APPLIED),
        metrics.sum(m::PROJECTOR_REJECTIONS),
    ) {
        (None, None) => None,
        (a, r) => Some(a.unwrap_or(0.0) + r.unwrap_or(0.0)),
    };
    let sample = Sample {
        at: now,
        generation: Some(gen),
        matches: Some(matches),
        published,
        lag_entries: shards.iter().map(|p| p.lag_entries).sum(),
        lag_seconds: shards
            .iter()
            .map(|p| p.lag_seconds)
            .collect::<Option<Vec<f64>>>()
            .map(|v| v.into_iter().fold(0.0, f64::max)),
        deadlines_pending: Some(pending),
        deadlines_overdue: Some(overdue),
        consumed_metric: consumed,
        fired_metric: in_process(with_compensator, m::COMPENSATOR_FIRED),
        freshness: metrics.buckets(m::PROJECTOR_FRESHNESS),
        firing_delay: metrics.buckets(m::COMPENSATOR_FIRING_DELAY),
    };
    push(st, sample);

    let ring = st.dashboard.ring.lock().expect("dashboard lock").clone();
    let last = ring.back().expect("a sample was just pushed");
    let rate_from = window_start(&ring, RATE_WINDOW);
    let minute_from = window_start(&ring, MINUTE);
    let minute_seconds = minute_from.map_or(0.0, |s| seconds_between(last, s));
    let rate_seconds = rate_from.map_or(0.0, |s| seconds_between(last, s));

    let published_rate = rate_from.and_then(|s| {
        rate(
            last.published_total().map(|v| v as f64),
            s.published_total().map(|v| v as f64),
            rate_seconds,
        )
    });
    let applied_rate = rate_from.and_then(|s| {
        rate(last.consumed_metric, s.consumed_metric, rate_seconds).or_else(|| {
            rate(
                last.applied_total().map(|v| v as f64),
                s.applied_total().map(|v| v as f64),
                rate_seconds,
            )
        })
    });
    let moved = minute_from.and_then(|s| {
        let mut d = s.matches?;
        let mut out = last.matches?;
        for state in STATES {
            d.set(state, -d.get(state));
        }
        out.add(&d);
        Some(out)
    });
    // Quantiles over the last minute; while the ring is younger than a
    // minute, over the registry's whole life (it started with the process),
    // never over the few milliseconds between the first two samples.
    let quantile_from = minute_from.filter(|s| seconds_between(last, s) >= MINUTE.as_secs_f64());
    let quantile_seconds = quantile_from.map_or_else(
        || {
            ring.front()
                .map_or(0.0, |first| seconds_between(last, first))
        },
        |s| seconds_between(last, s),
    );
    let window = |f: fn(&Sample) -> Option<&Buckets>| {
        let later = f(last)?;
        Some(prom::delta(later, quantile_from.and_then(f)))
    };

    let servers: Vec<Json> = st
        .servers
        .iter()
        .zip(&checkpoints)
        .map(|((name, shard_list), ck)| {
            json!({
                "server": name,
                "shards": shard_list,
                "checkpoint_file": ck.as_ref().map(|c| c.file.clone()),
                "checkpoint_pos": ck.as_ref().map(|c| c.pos),
                "last_commit_at": ts_json(ck.as_ref().filter(|c| c.commit_ts > 0).map(|c| Timestamp(c.commit_ts))),
                "lag_bytes": with_cdc.then(|| metrics.by_label(m::CDC_LAG_BYTES, "server").get(name).map(|v| *v as u64)).flatten(),
                "lag_seconds": with_cdc.then(|| metrics.by_label(m::CDC_LAG_SECONDS, "server").get(name).copied()).flatten(),
                "reader_up": with_cdc.then(|| metrics.by_label(m::CDC_UP, "server").get(name).map(|v| *v >= 1.0)).flatten(),
            })
        })
        .collect();
    let shard_json = |p: &ShardProgress| {
        let i = usize::from(p.shard);
        let per_second = rate_from.and_then(|s| {
            rate(
                last.published.get(i).copied().flatten().map(|v| v as f64),
                s.published.get(i).copied().flatten().map(|v| v as f64),
                rate_seconds,
            )
        });
        json!({
            "shard": p.shard,
            "server": st.shard_server.get(i),
            "last_applied_id": p.last_id,
            "stream_last_id": p.stream_last_id,
            "lag_entries": p.lag_entries,
            "lag_seconds": p.lag_seconds,
            "last_event_at": ts_json(p.event_at),
            "applied_at": ts_json(p.applied_at),
            "freshness_seconds": match (p.applied_at, p.event_at) {
                (Some(a), Some(e)) => Json::from(((a.as_micros() - e.as_micros()) as f64 / 1e6).max(0.0)),
                _ => Json::Null,
            },
            "published_per_second": per_second,
        })
    };
    let by_reason: Vec<Json> = tally
        .counts
        .iter()
        .map(|((origin, kind), n)| json!({"origin": origin, "kind": kind, "count": n}))
        .collect();

    let history = history_json(&ring);
    let body = json!({
        "at": now.to_rfc3339(),
        "interval_seconds": st.dashboard.interval.as_secs_f64(),
        "generation": gen,
        "rebuild": {
            "in_progress": rebuilding,
            "generation": rebuilding.then_some(gen + 1),
        },
        "in_process_metrics": with_cdc || with_projector || with_compensator,
        "matches": {
            "now": counts_json(&matches),
            "last_minute": moved.as_ref().map_or(Json::Null, counts_json),
            "window_seconds": minute_seconds,
        },
        "deadlines": {
            "pending": pending,
            "overdue": overdue,
            "oldest_overdue_seconds": oldest_overdue,
            "firing_delay_seconds": quantiles_json(window(|s| s.firing_delay.as_ref()), quantile_seconds),
        },
        "compensations": {
            "timed_out_matches": matches.get(rps_core::fold::MatchStatus::TimedOut),
            "retrying": attempts.saturating_sub(parked),
            "parked": parked,
            "dead_letters": tally.count("compensator", DEADLINE_FAILED),
            "fired": last.fired_metric.map(|v| v as u64),
            "fired_last_minute": minute_from
                .and_then(|s| Some((last.fired_metric? - s.fired_metric?).max(0.0) as u64)),
            "retries": in_process(with_compensator, m::COMPENSATOR_RETRIES).map(|v| v as u64),
            "dead_lettered": in_process(with_compensator, m::COMPENSATOR_DEAD_LETTERED).map(|v| v as u64),
        },
        "events_per_second": {
            "published": published_rate,
            "applied": applied_rate,
            "window_seconds": rate_seconds,
        },
        "freshness_seconds": quantiles_json(window(|s| s.freshness.as_ref()), quantile_seconds),
        "servers": servers,
        "shards": shards.iter().map(shard_json).collect::<Vec<_>>(),
        "dead_letters": {
            "total": dead_total,
            "complete": dead_complete,
            "by_reason": by_reason,
        },
        "leaderboard": {
            "season": season.map(|s| s.to_string()),
            "entries": top.iter().map(entry_json).collect::<Vec<_>>(),
        },
        "history": history,
    });
    Ok(serde_json::to_vec(&body).unwrap_or_default())
}

fn push(st: &AppState, sample: Sample) {
    let mut ring = st.dashboard.ring.lock().expect("dashboard lock");
    ring.push_back(sample);
    while ring.len() > st.dashboard.capacity {
        ring.pop_front();
    }
}

/// The ring as columns (what the page's charts take): one entry per
/// sample, `null` where a figure was unknown; rates are between a sample
/// and the one before it.
fn history_json(ring: &VecDeque<Sample>) -> Json {
    let mut t = Vec::with_capacity(ring.len());
    let mut published = Vec::with_capacity(ring.len());
    let mut applied = Vec::with_capacity(ring.len());
    let mut lag_entries = Vec::with_capacity(ring.len());
    let mut lag_seconds = Vec::with_capacity(ring.len());
    let mut overdue = Vec::with_capacity(ring.len());
    let mut pending = Vec::with_capacity(ring.len());
    let mut generation = Vec::with_capacity(ring.len());
    let mut states: Vec<Vec<Option<i64>>> = vec![Vec::with_capacity(ring.len()); STATES.len()];
    let mut prev: Option<&Sample> = None;
    for s in ring {
        t.push(s.at.as_micros() as f64 / 1e6);
        let secs = prev.map_or(0.0, |p| seconds_between(s, p));
        published.push(prev.and_then(|p| {
            rate(
                s.published_total().map(|v| v as f64),
                p.published_total().map(|v| v as f64),
                secs,
            )
        }));
        applied.push(prev.and_then(|p| {
            rate(s.consumed_metric, p.consumed_metric, secs).or_else(|| {
                rate(
                    s.applied_total().map(|v| v as f64),
                    p.applied_total().map(|v| v as f64),
                    secs,
                )
            })
        }));
        lag_entries.push(s.lag_entries);
        lag_seconds.push(s.lag_seconds);
        overdue.push(s.deadlines_overdue);
        pending.push(s.deadlines_pending);
        generation.push(s.generation);
        for (i, state) in STATES.iter().enumerate() {
            states[i].push(s.matches.map(|m| m.get(*state)));
        }
        prev = Some(s);
    }
    let mut out = json!({
        "t": t,
        "generation": generation,
        "published_per_second": published,
        "applied_per_second": applied,
        "lag_entries": lag_entries,
        "lag_seconds": lag_seconds,
        "deadlines_pending": pending,
        "deadlines_overdue": overdue,
    });
    for (i, state) in STATES.iter().enumerate() {
        out[state.as_str()] = json!(states[i]);
    }
    out
}

/// `GET /v1/dashboard`.
pub(crate) async fn snapshot(State(st): State<Shared>) -> Response {
    let started = Instant::now();
    let snap = match st.dashboard.fresh_snapshot() {
        Some(s) => s,
        None => take_sample(&st).await,
    };
    let r = match snap {
        Snapshot::Ready(body) => Ok(json_response(body.to_vec())),
        Snapshot::Down(why) => Err(Failure::Unavailable(why)),
    };
    finish("dashboard", started, r).await
}

const PAGE: &str = include_str!("../../assets/dashboard.html");
const SCRIPT: &str = include_str!("../../assets/dashboard.js");
const STYLE: &str = include_str!("../../assets/dashboard.css");
const UPLOT_JS: &str = include_str!("../../assets/uplot/uPlot.iife.min.js");
const UPLOT_CSS: &str = include_str!("../../assets/uplot/uPlot.min.css");

/// The page's files: name, content type, body.
const ASSETS: [(&str, &str, &str); 4] = [
    ("dashboard.js", "text/javascript; charset=utf-8", SCRIPT),
    ("dashboard.css", "text/css; charset=utf-8", STYLE),
    (
        "uPlot.iife.min.js",
        "text/javascript; charset=utf-8",
        UPLOT_JS,
    ),
    ("uPlot.min.css", "text/css; charset=utf-8", UPLOT_CSS),
];

/// The names `/dashboard/{asset}` serves, for the document's enum.
#[cfg(test)]
pub(crate) fn asset_names() -> Vec<&'static str> {
    ASSETS.iter().map(|(n, _, _)| *n).collect()
}

/// `GET /dashboard`.
pub(crate) async fn page() -> Response {
    let started = Instant::now();
    let resp = (
        [
            (header::CONTENT_TYPE, "text/html; charset=utf-8"),
            (header::CACHE_CONTROL, "no-cache"),
        ],
        PAGE,
    )
        .into_response();
    observe("dashboard_page", started, resp.status());
    resp
}

/// `GET /dashboard/{asset}`. A segment that does not decode (not UTF-8)
/// names no file either: the same JSON 404, not a plain-text rejection.
pub(crate) async fn asset(name: Result<Path<String>, PathRejection>) -> Response {
    let started = Instant::now();
    let name = name.map(|Path(n)| n).unwrap_or_default();
    let resp = match ASSETS.iter().find(|(n, _, _)| *n == name) {
        Some((_, ctype, body)) => (
            [
                (header::CONTENT_TYPE, *ctype),
                (header::CACHE_CONTROL, "no-cache"),
            ],
            *body,
        )
            .into_response(),
        None => {
            let shown: String = name.chars().take(100).collect();
            Failure::NotFound(format!("no dashboard file {shown:?}")).into_response()
        }
    };
    observe("dashboard_asset", started, resp.status());
    resp
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample(secs: i64, published: u64, lag: u64, open: i64) -> Sample {
        let mut m = MatchCounts::default();
        m.set(rps_core::fold::MatchStatus::InProgress, open);
        Sample {
            at: Timestamp(secs * 1_000_000),
            generation: Some(1),
            matches: Some(m),
            published: vec![Some(published), Some(0)],
            lag_entries: Some(lag),
            ..Default::default()
        }
    }

    #[test]
    fn windows_and_rates_come_from_the_ring() {
        let ring: VecDeque<Sample> = (0..40)
            .map(|i| sample(i * 2, (i * 100) as u64, 5, i))
            .collect();
        let last = ring.back().unwrap();
        let start = window_start(&ring, Duration::from_secs(10)).unwrap();
        assert_eq!(seconds_between(last, start), 10.0);
        assert_eq!(
            rate(
                last.published_total().map(|v| v as f64),
                start.published_total().map(|v| v as f64),
                10.0
            ),
            Some(50.0)
        );
        assert_eq!(last.applied_total(), Some(3895));
        // Shorter history than the window: from the oldest sample.
        let short: VecDeque<Sample> = ring.iter().take(3).cloned().collect();
        assert_eq!(window_start(&short, MINUTE).unwrap().at, Timestamp(0));
        let one: VecDeque<Sample> = ring.iter().take(1).cloned().collect();
        assert!(window_start(&one, MINUTE).is_none());
        // A sample without a generation (a rebuild) starts no window.
        let mut gap = short.clone();
        gap[0].generation = None;
        assert_eq!(window_start(&gap, MINUTE).unwrap().at, Timestamp(2_000_000));
        // A counter that went down restarted: no rate.
        assert_eq!(rate(Some(1.0), Some(5.0), 2.0), None);
        let h = history_json(&ring);
        assert_eq!(h["t"].as_array().unwrap().len(), 40);
        assert!(h["published_per_second"][0].is_null());
        assert_eq!(h["published_per_second"][1], 50.0);
        assert_eq!(h["in_progress"][39], 39);
        assert!(h["voided"][0].is_number());
    }
}
