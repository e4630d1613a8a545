//! A consistent snapshot of some shard databases of one server: a
//! connection inside a transaction that sees exactly what was committed at
//! one binlog position, and that position (file, offset, GTID). Replay,
//! verify, export's folds and the recovery bootstrap all read history
//! through it, so the opening (which differs per flavor, see
//! [`Flavor::begin_consistent_snapshot`]) is written once.

use crate::history::{PlannedRanges, RangeReadTask};
use crate::BinlogPosition;
use crate::{EventStore, Flavor, HistoryFilter, RangePlan, StoreError, TableListQuery};
use mysql_async::prelude::*;
use mysql_async::Conn;

pub struct ConsistentSnapshot {
    /// The connection inside the snapshot; reads on it see the snapshot.
    conn: Conn,
    /// Where the snapshot stands in the binlog: a reader started here
    /// publishes exactly what the snapshot does not hold.
    pub position: BinlogPosition,
    pub flavor: Flavor,
    pub server: String,
}

impl EventStore {
    /// Opens a consistent snapshot of `databases` on the server at `index`
    /// of the topology.
    pub async fn snapshot(
        &self,
        index: usize,
        databases: Vec<String>,
    ) -> Result<ConsistentSnapshot, StoreError> {
        let (pool, server) = self.pool_for_server(index);
        let server = server.to_string();
        let mysql = StoreError::mysql(&server);
        let mut conn = pool.get_conn().await.map_err(StoreError::mysql(&server))?;
        // A second session holds the MySQL flavor's brief table lock.
        let mut locker = pool.get_conn().await.map_err(StoreError::mysql(&server))?;
        let flavor = Flavor::detect(&mut conn).await.map_err(mysql)?;
        let list = TableListQuery { databases };
        let position = flavor
            .begin_consistent_snapshot(&mut conn, &mut locker, &list)
            .await
            .map_err(|source| StoreError::Snapshot {
                server: server.clone(),
                flavor: flavor.to_string(),
                source,
            })?;
        drop(locker);
        Ok(ConsistentSnapshot {
            conn,
            position,
            flavor,
            server,
        })
    }

    /// A snapshot of one shard's database.
    pub async fn snapshot_shard(
        &self,
        shard: rps_core::ShardId,
    ) -> Result<ConsistentSnapshot, StoreError> {
        let index = self
            .config()
            .servers
            .iter()
            .position(|s| s.shards.contains(&shard))
            .expect("validated topology hosts every shard");
        self.snapshot(index, vec![self.config().database(shard)])
            .await
    }
}

impl ConsistentSnapshot {
    /// The event tables of `database` as the snapshot sees them.
    pub async fn event_tables(&mut self, database: &str) -> Result<Vec<String>, StoreError> {
        let names: Vec<String> = self
            .conn
            .exec(
                "SELECT table_name FROM information_schema.tables WHERE table_schema = ? ORDER BY table_name",
                (database,),
            )
            .await
            .map_err(StoreError::mysql(&self.server))?;
        Ok(names
            .into_iter()
            .filter(|t| rps_core::config::is_event_table(t))
            .collect())
    }

    /// The highest row id of a table in the snapshot (0 when empty): a
    /// progress total.
    pub async fn max_row_id(&mut self, database: &str, table: &str) -> Result<i64, StoreError> {
        let max_id: Option<Option<i64>> = self
            .conn
            .query_first(format!("SELECT MAX(id) FROM `{database}`.`{table}`"))
            .await
            .map_err(StoreError::mysql(&self.server))?;
        Ok(max_id.flatten().unwrap_or(0).max(0))
    }
}

impl ConsistentSnapshot {
    /// Reads `plan` in ranges of match ids on the snapshot's connection, on a
    /// task of its own, one range ahead of the consumer
    /// ([`crate::read_ranges_ahead`]): what is folded is what the snapshot
    /// saw. [`SnapshotRangeReader::end`] ends the snapshot once the ranges
    /// are read.
    pub fn read_ranges_ahead(
        self,
        plan: RangePlan,
        filter: HistoryFilter,
        range_rows: usize,
    ) -> (PlannedRanges, SnapshotRangeReader) {
        let (ranges, task) = crate::read_ranges_ahead(self.conn, plan, filter, range_rows);
        let reader = SnapshotRangeReader {
            task,
            server: self.server,
        };
        (ranges, reader)
    }
}

/// The task reading a snapshot's ranges ([`ConsistentSnapshot::read_ranges_ahead`]).
pub struct SnapshotRangeReader {
    task: RangeReadTask,
    server: String,
}

impl SnapshotRangeReader {
    /// Waits for the reading task and ends the snapshot's transaction. A
    /// read error of the task is this call's error.
    pub async fn end(self) -> Result<(), StoreError> {
        let mut conn = self
            .task
            .await
            .map_err(|e| {
                StoreError::Invalid(format!(
                    "server `{}`: the snapshot's range reader stopped: {e}",
                    self.server
                ))
            })?
            .map_err(StoreError::mysql(&self.server))?;
        conn.query_drop("COMMIT")
            .await
            .map_err(StoreError::mysql(&self.server))
    }
}
