//! A writer's own session on the server of one shard: the simulator's shard
//! writers connect once before they start matches and keep the session
//! across batches, reconnecting only after it broke.
//!
//! The session hands out no connection and takes no SQL, only the store's
//! operations, so holding one keeps a writer's SQL inside this crate.

use crate::{batch_answer, batch_insert_sql, BatchAppend, EventStore, StoreError};
use mysql_async::prelude::Queryable;
use mysql_async::Conn;
use rps_core::{MatchEvent, ShardId};

/// One pooled connection to the server hosting a shard, held by its owner
/// until dropped (it then goes back to the store's pool).
pub struct ShardSession {
    conn: Conn,
    shard: ShardId,
    server: String,
    database: String,
}

impl EventStore {
    /// Opens a session on the server hosting `shard`.
    pub async fn session(&self, shard: ShardId) -> Result<ShardSession, StoreError> {
        let conn = self.conn_for_shard(shard).await?;
        Ok(ShardSession {
            conn,
            shard,
            server: self.pool_for_shard(shard).1.to_string(),
            database: self.config().database(shard),
        })
    }
}

impl ShardSession {
    pub fn shard(&self) -> ShardId {
        self.shard
    }

    /// The name of the server the session is on.
    pub fn server(&self) -> &str {
        &self.server
    }

    /// Appends many events of the session's shard in one multi-row INSERT
    /// (one transaction), like [`EventStore::append_all`].
    pub async fn append_all(
        &mut self,
        table: &str,
        events: &[MatchEvent],
    ) -> Result<BatchAppend, StoreError> {
        if events.is_empty() {
            return Ok(BatchAppend::Inserted);
        }
        let sql = batch_insert_sql(&self.database, table, events);
        batch_answer(self.conn.query_drop(sql).await).map_err(StoreError::mysql(&self.server))
    }
}
