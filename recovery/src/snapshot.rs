//! One server's history, read inside one consistent snapshot, with the
//! binlog position of that same instant.
//!
//! The snapshot's binlog position is exact: the rows the transaction sees
//! are exactly the transactions committed before that position
//! ([`Flavor::begin_consistent_snapshot`] says how each flavor gets it). The reader needs one position per server to resume from, so all
//! of a server's shards are read in that one transaction (per-shard
//! snapshots, as `rpsctl replay` takes them, would each have their own
//! position). This module reads and folds; the bootstrap writes what it
//! hands out.

use crate::metrics as m;
use crate::RecoveryError;
use history::fold::fold_range;
use history::model::Model;
use history::SpilledMatches;
use rps_core::{Config, ShardId, Timestamp};
use rps_event_store::{EventStore, HistoryFilter};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

/// Rows per table in one range of match ids.
pub const RANGE_ROWS: usize = 4_096;

/// Where one server's snapshot was taken, and what it read.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct ServerSnapshot {
    pub server: String,
    /// Binlog coordinates of the snapshot instant.
    pub file: String,
    pub pos: u64,
    /// The GTID position at that instant (`""` on a server that never
    /// logged a GTID).
    pub gtid: String,
    /// Rows read from the server's event tables.
    pub rows: u64,
    pub tables: u64,
    /// When the snapshot began (UTC micros), the checkpoint's commit time.
    pub taken_at_micros: i64,
}

/// Reads every event table of every shard of server `index` in one
/// consistent snapshot and folds it, shard by shard in ranges of match ids
/// (as `rpsctl replay` does; docs/operations.md says why that order is a
/// safe fold order). Each range's final match states go to `spill` and are
/// forgotten: the returned model holds the players and rejections.
pub async fn snapshot_server(
    store: &EventStore,
    index: usize,
    cancel: &CancellationToken,
    spill: mpsc::Sender<SpilledMatches>,
) -> Result<(Model, ServerSnapshot), RecoveryError> {
    let config: &Config = store.config();
    let server = config.servers[index].name.clone();
    let taken_at = Timestamp::now();
    let databases: Vec<String> = config.servers[index]
        .shards
        .iter()
        .map(|s| config.database(*s))
        .collect();
    let mut snapshot = store.snapshot(index, databases).await?;
    let flavor = snapshot.flavor;
    let head = snapshot.position.clone();
    let (file, pos, gtid) = (head.file, head.pos, head.gtid.to_string());
    tracing::info!(%file, pos, %gtid, %flavor, "snapshot taken");

    // Listed inside the transaction: what the snapshot can read.
    let mut plan: Vec<(ShardId, String, Vec<String>)> = Vec::new();
    let mut table_count = 0u64;
    for shard in config.servers[index].shards.clone() {
        let database = config.database(shard);
        let tables = snapshot.event_tables(&database).await?;
        table_count += tables.len() as u64;
        plan.push((shard, database, tables));
    }
    // The next range is read (on its own task, on the snapshot's
    // connection) while the current one is folded.
    let (mut ranges, reader) = snapshot.read_ranges_ahead(
        plan.iter()
            .map(|(_, database, tables)| (database.clone(), tables.clone()))
            .collect(),
        HistoryFilter::default(),
        RANGE_ROWS,
    );
    let mut model = Model::new(config.shard_count);
    let mut rows = 0u64;
    let mut scratch = Vec::new();
    while let Some((i, range)) = ranges.recv().await {
        if cancel.is_cancelled() {
            return Err(RecoveryError::Cancelled);
        }
        let (shard, database, tables) = &plan[i];
        let n = fold_range(&mut model, *shard, database, tables, range, &mut scratch);
        if !model.matches.is_empty() {
            let done: SpilledMatches = model.matches.drain().collect();
            if spill.send(done).await.is_err() {
                return Err(RecoveryError::Cancelled);
            }
        }
        rows += n;
        metrics::counter!(m::SNAPSHOT_ROWS_TOTAL).increment(n);
    }
    reader.end().await?;
    let rejected = model.rejections.total();
    if rejected > 0 {
        metrics::counter!(m::SNAPSHOT_REJECTED_TOTAL).increment(rejected);
        tracing::warn!(rejected, by_code = ?model.rejections.by_code,
            "rows of history do not fit their match; they change nothing (as in the live pipeline)");
    }
    tracing::info!(rows, tables = table_count, "server folded");
    Ok((
        model,
        ServerSnapshot {
            server,
            file,
            pos,
            gtid,
            rows,
            tables: table_count,
            taken_at_micros: taken_at.as_micros(),
        },
    ))
}
