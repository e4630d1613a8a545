//! The fold of every shard's event tables, read inside consistent snapshots.
//!
//! Each shard is read on its own connection inside a consistent snapshot
//! whose binlog position is exact (`Flavor::begin_consistent_snapshot`): the
//! rows read are exactly the transactions committed before that position.
//! Replay uses the position to know which stream entries the fold already
//! contains. Shards are read in parallel; each shard in ranges of match ids
//! ([`MatchRangeReader`]), every table of the shard per range, and each
//! match's events in primary-key order, table by table (docs/operations.md
//! explains why that order is the commit order of every match, which is all
//! the fold needs: matches are independent of each other, and player
//! counters are sums).
//!
//! Because a range holds every event of its matches, a fold that only
//! writes the result ([`fold_history_spilling`], used by replay) hands each
//! range's matches to a writer and forgets them: memory follows players and
//! the range size, not the number of matches.

use crate::model::{CompactMatch, Model, PlayerKey, RejectedEvent};
use crate::progress::Progress;
use crate::HistoryError;
use futures::future::try_join_all;
use rps_core::{MatchEvent, PlayerStats, SeasonId, ShardId, Timestamp};
use rps_event_store::{EventStore, HistoryFilter, RangeRow, StoreError};
use std::collections::HashMap;
use std::sync::Arc;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

/// What to fold.
#[derive(Debug, Clone)]
pub struct FoldOptions {
    /// Only this season's events.
    pub season: Option<SeasonId>,
    /// Only events with `occurred_at < until`.
    pub until: Option<Timestamp>,
    /// Only these shards (`None`: all).
    pub shards: Option<Vec<ShardId>>,
    /// Rows per table in one range of match ids.
    pub range_rows: usize,
}

impl Default for FoldOptions {
    fn default() -> Self {
        FoldOptions {
            season: None,
            until: None,
            shards: None,
            range_rows: 4_096,
        }
    }
}

impl FoldOptions {
    /// Whether the fold covers the whole history (only then may it replace
    /// the live read models).
    pub fn is_complete(&self) -> bool {
        self.season.is_none() && self.until.is_none() && self.shards.is_none()
    }
}

/// The binlog position at which a shard's snapshot was taken.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct ShardSnapshot {
    pub shard: ShardId,
    pub server: String,
    pub file: String,
    pub pos: u64,
    /// Rows folded from this shard.
    pub rows: u64,
}

impl ShardSnapshot {
    /// Whether a binlog position is inside the snapshot (at or before it).
    /// File names share a base name and a zero-padded sequence, so they
    /// compare as strings; an empty file means "read by an initial
    /// snapshot of the reader", which precedes every binlog position.
    pub fn covers(&self, file: &str, pos: u64) -> bool {
        file.is_empty() || (file, pos) <= (self.file.as_str(), self.pos)
    }
}

/// The fold and where each shard's snapshot stands.
#[derive(Debug)]
pub struct FoldOutput {
    pub model: Model,
    pub snapshots: Vec<ShardSnapshot>,
}

type SharedPlayers = Arc<std::sync::Mutex<HashMap<PlayerKey, PlayerStats>>>;

/// The matches of one finished range: their final states.
pub type SpilledMatches = Vec<(i64, CompactMatch)>;

/// Folds the history of every shard (or the selected ones) in parallel,
/// keeping every match state in the returned model.
pub async fn fold_history(
    store: &EventStore,
    opts: &FoldOptions,
    progress: &Progress,
    cancel: &CancellationToken,
) -> Result<FoldOutput, HistoryError> {
    fold(store, opts, progress, cancel, None).await
}

/// Folds like [`fold_history`] but sends each range's final match states to
/// `spill` instead of keeping them: the returned model holds the players
/// (and rejections), no matches.
pub async fn fold_history_spilling(
    store: &EventStore,
    opts: &FoldOptions,
    progress: &Progress,
    cancel: &CancellationToken,
    spill: mpsc::Sender<SpilledMatches>,
) -> Result<FoldOutput, HistoryError> {
    fold(store, opts, progress, cancel, Some(spill)).await
}

async fn fold(
    store: &EventStore,
    opts: &FoldOptions,
    progress: &Progress,
    cancel: &CancellationToken,
    spill: Option<mpsc::Sender<SpilledMatches>>,
) -> Result<FoldOutput, HistoryError> {
    let config = store.config();
    let shards: Vec<ShardId> = match &opts.shards {
        Some(s) => s.clone(),
        None => (0..config.shard_count).collect(),
    };
    // One counter set per player scope for all shards: each shard adds its
    // range's counters after the range, so memory holds the players once,
    // not once per shard.
    let players: SharedPlayers = Arc::default();
    let tasks = shards.iter().map(|&shard| {
        let span = tracing::info_span!("fold_shard", shard);
        fold_shard(
            store,
            shard,
            opts,
            progress,
            cancel,
            spill.clone(),
            &players,
        )
        .instrument(span)
    });
    let parts = try_join_all(tasks).await?;
    // The last sender: the writer's channel ends with the fold.
    drop(spill);
    let mut model = Model::new(config.shard_count);
    // Sized once: growing the map while merging would briefly hold two copies.
    model
        .matches
        .reserve(parts.iter().map(|(m, _)| m.matches.len()).sum());
    let mut snapshots = Vec::with_capacity(parts.len());
    for (m, s) in parts {
        model.merge(m);
        snapshots.push(s);
    }
    model.players = std::mem::take(&mut *players.lock().expect("players lock"));
    Ok(FoldOutput { model, snapshots })
}

async fn fold_shard(
    store: &EventStore,
    shard: ShardId,
    opts: &FoldOptions,
    progress: &Progress,
    cancel: &CancellationToken,
    spill: Option<mpsc::Sender<SpilledMatches>>,
    players: &SharedPlayers,
) -> Result<(Model, ShardSnapshot), HistoryError> {
    let config = store.config();
    let server = config.server_of(shard).name.clone();
    let database = config.database(shard);
    let tables = store.event_tables(shard).await?;
    let mut snapshot = store.snapshot_shard(shard).await?;
    let (file, pos) = (snapshot.position.file.clone(), snapshot.position.pos);
    for table in &tables {
        progress.add_total(snapshot.max_row_id(&database, table).await? as u64);
    }
    let filter = HistoryFilter {
        season: opts.season,
        from: None,
        to: opts.until,
        max_row_id: None,
    };
    let mut model = Model::new(config.shard_count);
    let mut rows = 0u64;
    // The next range is read (on its own task) while the current one is folded.
    let (mut ranges, reader) = snapshot.read_ranges_ahead(
        vec![(database.clone(), tables.clone())],
        filter,
        opts.range_rows,
    );
    let mut scratch = Vec::new();
    while let Some((_, range)) = ranges.recv().await {
        if cancel.is_cancelled() {
            return Err(HistoryError::Cancelled);
        }
        let n = fold_range(&mut model, shard, &database, &tables, range, &mut scratch);
        {
            let mut all = players.lock().expect("players lock");
            for (k, v) in model.players.drain() {
                all.entry(k).or_default().add(&v);
            }
        }
        if let Some(spill) = &spill {
            if !model.matches.is_empty() {
                let done: SpilledMatches = model.matches.drain().collect();
                if spill.send(done).await.is_err() {
                    return Err(HistoryError::Cancelled);
                }
            }
        }
        rows += n;
        progress.inc(n);
        metrics::counter!(crate::metrics::REPLAY_EVENTS_TOTAL).increment(n);
    }
    reader.end().await?;
    tracing::info!(shard, rows, %file, pos, "shard folded");
    Ok((
        model,
        ShardSnapshot {
            shard,
            server,
            file,
            pos,
            rows,
        },
    ))
}

/// Folds one range of match ids of a shard ([`MatchRangeReader`]): each
/// match's events in commit order (table by table, by primary key); a row
/// that does not decode is recorded as a rejection and changes nothing.
/// `scratch` is reused between ranges. Returns the rows of the range.
pub fn fold_range(
    model: &mut Model,
    shard: ShardId,
    database: &str,
    tables: &[String],
    range: Vec<RangeRow>,
    scratch: &mut Vec<(usize, MatchEvent)>,
) -> u64 {
    let n = range.len() as u64;
    scratch.clear();
    for (ti, row) in range {
        match row {
            Ok(ev) => scratch.push((ti, ev)),
            Err(e) => {
                model.events += 1;
                model.rejections.record(bad_row(shard, e));
            }
        }
    }
    scratch.sort_unstable_by_key(|(ti, ev)| (ev.match_id, *ti, ev.row_id));
    for (ti, ev) in scratch.iter() {
        model.apply_reporting(shard, database, &tables[*ti], ev);
    }
    n
}

fn bad_row(shard: ShardId, e: StoreError) -> RejectedEvent {
    match e {
        StoreError::BadRow {
            database,
            table,
            row_id,
            message,
        } => RejectedEvent {
            shard,
            database,
            table,
            row_id,
            match_id: None,
            event_id: String::new(),
            code: "bad_row".into(),
            reason: message,
        },
        other => RejectedEvent {
            shard,
            database: String::new(),
            table: String::new(),
            row_id: 0,
            match_id: None,
            event_id: String::new(),
            code: "bad_row".into(),
            reason: other.to_string(),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn snapshot_covers_positions_up_to_it() {
        let s = ShardSnapshot {
            shard: 0,
            server: "a".into(),
            file: "binlog.000002".into(),
            pos: 500,
            rows: 0,
        };
        assert!(s.covers("binlog.000001", 9_999));
        assert!(s.covers("binlog.000002", 500));
        assert!(!s.covers("binlog.000002", 501));
        assert!(!s.covers("binlog.000003", 4));
        assert!(s.covers("", 0));
    }
}
