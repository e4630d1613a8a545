//! The compensator's event-store side: read the claimed matches' events from
//! their shard, decide, and append the `timed_out` events, all through
//! [`EventStore`] operations (the SQL is the event store's).
//!
//! One shard's claimed matches are handled together: one read per event
//! table ([`EventStore::read_matches`]) and one multi-row append per table, which is
//! what lets a burst of expiring deadlines be fired in milliseconds. A
//! duplicate key fails a multi-row INSERT whole; then each event is appended
//! on its own so every match gets its own answer (`uk_event`: already fired
//! by an earlier attempt; `uk_match_version`: the match moved on, so it is
//! read again and decided afresh).
//!
//! A row lock fails it whole too (error 1205 after the session's short
//! `innodb_lock_wait_timeout`, see `CompensatorConfig::lock_wait_secs`): a
//! prepared XA branch holding a row of one match must not stall the others,
//! so each event is then appended on its own as well, and only the matches
//! still blocked answer [`Settled::LockWait`].
//!
//! A sampled match gets a `decide` span per round (the read of its events
//! and the decision) and an `append timed_out` span per INSERT it took part
//! in, in its trace (`rps_telemetry`).

use crate::deadlines::Claimed;
use crate::decide::{decide, Decision};
use futures::StreamExt;
use rps_core::fold::MatchStatus;
use rps_core::{MatchEvent, ShardId, Timestamp};
use rps_event_store::{AppendOutcome, BatchAppend, EventStore, StoreError, ER_LOCK_WAIT_TIMEOUT};
use rps_telemetry::{attr, Component, KeyValue, SpanKind, SpanStart};
use std::collections::HashMap;
use std::sync::Arc;
use std::time::SystemTime;
use tokio::sync::Mutex;

/// How many times a match that moved on under us is read again at once
/// before it is left to the lease for a later look.
const RACE_ROUNDS: usize = 3;

/// Single-event appends in flight at once when a batch INSERT failed: the
/// matches blocked by a lock then wait side by side (one lock wait for the
/// lot, not one each), without taking the whole pool.
const SINGLE_APPENDS_IN_FLIGHT: usize = 8;

/// What became of one claimed deadline.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Settled {
    /// This attempt inserted the `timed_out`; `committed` is when the INSERT
    /// returned (autocommit: the commit time).
    Fired {
        event: MatchEvent,
        committed: Timestamp,
    },
    /// An earlier attempt (of this or another compensator) already inserted it.
    AlreadyFired,
    /// The match has a result: nothing written.
    Over(MatchStatus),
    /// The stored deadline is still ahead: look again then.
    NotDue(Timestamp),
    /// The match kept moving on under us; look again after the lease.
    Raced,
    /// The append waited for a row lock of the match until the session's
    /// lock wait timeout (another transaction, typically a prepared XA
    /// branch, holds a row of it). Counts towards the retry schedule like
    /// [`Settled::Failed`]; the text names what was appended where.
    LockWait(String),
    /// This attempt failed; counts towards the retry schedule.
    Failed(String),
}

/// Whether a MySQL error is InnoDB giving up on a row lock.
pub fn is_lock_wait_timeout(e: &mysql_async::Error) -> bool {
    matches!(e, mysql_async::Error::Server(s) if s.code == ER_LOCK_WAIT_TIMEOUT)
}

/// Event tables per shard, looked up once and refreshed when a match is
/// not found (a season table created since).
#[derive(Clone, Default)]
pub struct TableCache {
    inner: Arc<Mutex<HashMap<ShardId, Vec<String>>>>,
}

impl TableCache {
    async fn get(
        &self,
        store: &EventStore,
        shard: ShardId,
        refresh: bool,
    ) -> Result<Vec<String>, StoreError> {
        let mut m = self.inner.lock().await;
        if !refresh {
            if let Some(t) = m.get(&shard) {
                return Ok(t.clone());
            }
        }
        let t = store.event_tables(shard).await?;
        m.insert(shard, t.clone());
        Ok(t)
    }
}

/// A match's stored rows and the table they live in.
struct Stored {
    table: String,
    events: Vec<MatchEvent>,
}

async fn read_matches(
    store: &EventStore,
    tables: &[String],
    shard: ShardId,
    ids: &[i64],
) -> Result<HashMap<i64, Stored>, StoreError> {
    let mut out: HashMap<i64, Stored> = HashMap::new();
    for (ti, row) in store.read_matches(shard, tables, ids).await? {
        // A row that does not fit the model is skipped here as the
        // projector skips it (it is in the dead letter already).
        let Ok(ev) = row else { continue };
        let table = &tables[ti];
        let e = out.entry(ev.match_id).or_insert_with(|| Stored {
            table: table.clone(),
            events: Vec::new(),
        });
        if ev.version == 1 {
            e.table = table.clone();
        }
        e.events.push(ev);
    }
    Ok(out)
}

/// Decides and fires the claimed deadlines of one shard.
pub async fn fire_shard(
    store: &EventStore,
    tables: &TableCache,
    shard: ShardId,
    items: &[Claimed],
) -> Vec<(Claimed, Settled)> {
    let mut done: Vec<(Claimed, Settled)> = Vec::with_capacity(items.len());
    let mut todo: Vec<Claimed> = items.to_vec();
    for round in 0..=RACE_ROUNDS {
        if todo.is_empty() {
            break;
        }
        if round == RACE_ROUNDS {
            done.extend(todo.drain(..).map(|c| (c, Settled::Raced)));
            break;
        }
        match fire_round(store, tables, shard, &todo).await {
            Ok(results) => {
                todo.clear();
                for (c, r) in results {
                    match r {
                        None => todo.push(c),
                        Some(s) => done.push((c, s)),
                    }
                }
            }
            Err(e) => {
                let msg = e.to_string();
                done.extend(todo.drain(..).map(|c| (c, Settled::Failed(msg.clone()))));
            }
        }
    }
    done
}

/// One read-decide-append round. `None` for a match whose version was
/// taken under us (read it again).
async fn fire_round(
    store: &EventStore,
    tables: &TableCache,
    shard: ShardId,
    items: &[Claimed],
) -> Result<Vec<(Claimed, Option<Settled>)>, StoreError> {
    let read_at = rps_telemetry::now_if_enabled();
    let ids: Vec<i64> = items.iter().map(|c| c.match_id).collect();
    let mut t = tables.get(store, shard, false).await?;
    let mut stored = read_matches(store, &t, shard, &ids).await?;
    let missing: Vec<i64> = ids
        .iter()
        .copied()
        .filter(|id| !stored.contains_key(id))
        .collect();
    if !missing.is_empty() {
        let fresh = tables.get(store, shard, true).await?;
        let new: Vec<String> = fresh.iter().filter(|x| !t.contains(x)).cloned().collect();
        if !new.is_empty() {
            stored.extend(read_matches(store, &new, shard, &missing).await?);
        }
        t = fresh;
    }
    let _ = t;

    let now = Timestamp::now();
    let mut out = Vec::with_capacity(items.len());
    // table → events to append, with the claim each closes.
    let mut to_fire: HashMap<String, Vec<(Claimed, MatchEvent)>> = HashMap::new();
    for c in items {
        if read_at.is_some() {
            trace_decision(c, read_at, stored.get(&c.match_id), now);
        }
        let Some(s) = stored.get(&c.match_id) else {
            out.push((
                *c,
                Some(Settled::Failed(format!(
                    "match {} has no events in database `{}`",
                    c.match_id,
                    store.config().database(shard)
                ))),
            ));
            continue;
        };
        match decide(&s.events, now) {
            Decision::Over(st) => out.push((*c, Some(Settled::Over(st.status)))),
            Decision::NotDue(t) => out.push((*c, Some(Settled::NotDue(t)))),
            Decision::Unknown => out.push((
                *c,
                Some(Settled::Failed(format!(
                    "match {} has no valid `started` event in `{}`.`{}`",
                    c.match_id,
                    store.config().database(shard),
                    s.table
                ))),
            )),
            Decision::Fire(ev) => to_fire.entry(s.table.clone()).or_default().push((*c, ev)),
        }
    }
    for (table, group) in to_fire {
        out.extend(append_group(store, shard, &table, group).await?);
    }
    Ok(out)
}

async fn append_group(
    store: &EventStore,
    shard: ShardId,
    table: &str,
    group: Vec<(Claimed, MatchEvent)>,
) -> Result<Vec<(Claimed, Option<Settled>)>, StoreError> {
    let server = store.config().server_of(shard).name.clone();
    let db = store.config().database(shard);
    let lock_wait = |ev: &MatchEvent, e: &dyn std::fmt::Display| {
        Settled::LockWait(format!(
            "server `{server}`: appending `timed_out` version {} of match {} to `{db}`.`{table}`: {e}",
            ev.version, ev.match_id
        ))
    };
    let events: Vec<MatchEvent> = group.iter().map(|(_, e)| e.clone()).collect();
    let batch_at = rps_telemetry::now_if_enabled();
    let appended = store.append_all(shard, table, &events).await;
    if batch_at.is_some() {
        let outcome = match &appended {
            Ok(BatchAppend::Inserted) => Ok("inserted"),
            Ok(BatchAppend::DuplicateKey) => Ok("duplicate_in_batch"),
            Err(StoreError::Mysql { source, .. }) => Err(source.to_string()),
            Err(e) => Err(e.to_string()),
        };
        for (_, ev) in &group {
            trace_append(ev, table, "batch", batch_at, outcome.clone());
        }
    }
    match appended {
        Ok(BatchAppend::Inserted) => {
            let committed = Timestamp::now();
            return Ok(group
                .into_iter()
                .map(|(c, event)| (c, Some(Settled::Fired { event, committed })))
                .collect());
        }
        Ok(BatchAppend::DuplicateKey) => {}
        Err(StoreError::Mysql { source, .. }) if is_lock_wait_timeout(&source) => {
            // Alone in its batch, the blocked match is known: appending it
            // again on its own would only wait a second time.
            if let [(c, ev)] = group.as_slice() {
                return Ok(vec![(*c, Some(lock_wait(ev, &source)))]);
            }
        }
        Err(e) => return Err(e),
    }
    let (db, lock_wait) = (&db, &lock_wait);
    // One at a time, each with its own answer; an error now concerns that
    // match alone (the others may well have been appended).
    let out = futures::stream::iter(group)
        .map(|(c, event)| async move {
            let single_at = rps_telemetry::now_if_enabled();
            let appended = store.append(shard, table, &event).await;
            if single_at.is_some() {
                let outcome = match &appended {
                    Ok(AppendOutcome::Inserted) => Ok("inserted"),
                    Ok(AppendOutcome::AlreadyStored) => Ok("already_stored"),
                    Ok(AppendOutcome::VersionTaken) => Ok("version_taken"),
                    Err(e) => Err(e.to_string()),
                };
                trace_append(&event, table, "single", single_at, outcome);
            }
            let r = match appended {
                Ok(AppendOutcome::Inserted) => Some(Settled::Fired {
                    event,
                    committed: Timestamp::now(),
                }),
                Ok(AppendOutcome::AlreadyStored) => Some(Settled::AlreadyFired),
                Ok(AppendOutcome::VersionTaken) => None,
                Err(StoreError::Mysql { source, .. }) if is_lock_wait_timeout(&source) => {
                    Some(lock_wait(&event, &source))
                }
                Err(e) => Some(Settled::Failed(format!(
                    "appending `timed_out` version {} of match {} to `{db}`.`{table}`: {e}",
                    event.version, event.match_id
                ))),
            };
            (c, r)
        })
        .buffer_unordered(SINGLE_APPENDS_IN_FLIGHT)
        .collect()
        .await;
    Ok(out)
}

/// The `decide` span of one claimed match: from the read of its events to
/// the decision.
fn trace_decision(
    c: &Claimed,
    read_at: Option<SystemTime>,
    stored: Option<&Stored>,
    now: Timestamp,
) {
    if !rps_telemetry::sampled(c.match_id) {
        return;
    }
    let mut attrs = vec![
        KeyValue::new(attr::SHARD, i64::from(c.shard)),
        KeyValue::new(attr::DEADLINE_MS, c.deadline_ms),
        KeyValue::new(
            attr::EVENTS_READ,
            stored.map_or(0, |s| s.events.len() as i64),
        ),
    ];
    let decision = match stored.map(|s| decide(&s.events, now)) {
        None => "missing",
        Some(Decision::Unknown) => "unknown",
        Some(Decision::Over(st)) => {
            attrs.push(KeyValue::new(attr::OUTCOME, st.status.as_str()));
            "over"
        }
        Some(Decision::NotDue(t)) => {
            attrs.push(KeyValue::new(attr::DEADLINE_MS, t.as_millis()));
            "not_due"
        }
        Some(Decision::Fire(ev)) => {
            attrs.push(KeyValue::new(attr::VERSION, i64::from(ev.version)));
            attrs.push(KeyValue::new(
                attr::WINNER,
                ev.winner_player_id
                    .map_or_else(|| "none".to_string(), |w| w.to_string()),
            ));
            "fire"
        }
    };
    attrs.push(KeyValue::new(attr::DECISION, decision));
    let span = SpanStart::new("decide").at(read_at).attrs(attrs);
    if let Some(span) = rps_telemetry::start(Component::Compensator, c.match_id, span) {
        span.end();
    }
}

/// The `append timed_out` span of one event's INSERT (`mode`: the batch's
/// multi-row INSERT or its own), ending now.
fn trace_append(
    ev: &MatchEvent,
    table: &str,
    mode: &'static str,
    at: Option<SystemTime>,
    outcome: Result<&'static str, String>,
) {
    if !rps_telemetry::sampled(ev.match_id) {
        return;
    }
    let span = SpanStart::new("append timed_out")
        .kind(SpanKind::Client)
        .at(at)
        .attrs(vec![
            KeyValue::new(attr::TABLE, table.to_string()),
            KeyValue::new(attr::VERSION, i64::from(ev.version)),
            KeyValue::new(attr::APPEND_MODE, mode),
        ]);
    let Some(mut span) = rps_telemetry::start(Component::Compensator, ev.match_id, span) else {
        return;
    };
    match outcome {
        Ok(o) => span.set(KeyValue::new(attr::OUTCOME, o)),
        Err(e) => {
            span.set(KeyValue::new(attr::OUTCOME, "failed"));
            span.error(e);
        }
    }
    span.end();
}
