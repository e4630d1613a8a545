//! Where a server's binary log stands: its head and its files, and how far
//! a position is behind the head. The reader's lag gauge, `rpsctl status`
//! and `rpsctl top` all measure lag this way.

use crate::{BinlogPosition, EventStore, Flavor, StoreError};
use mysql_async::Conn;

/// A server's binlog head and `SHOW BINARY LOGS`, read together.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BinlogState {
    pub head: BinlogPosition,
    /// (file, size), oldest first.
    pub logs: Vec<(String, u64)>,
}

impl BinlogState {
    /// Reads the state on `conn` (any account with binlog monitoring).
    pub async fn read(conn: &mut Conn, flavor: Flavor) -> Result<BinlogState, mysql_async::Error> {
        let head = flavor.current_position(conn).await?;
        let logs = flavor.binary_logs(conn).await?;
        Ok(BinlogState { head, logs })
    }

    /// Whether the server writes a binary log at all.
    pub fn is_logging(&self) -> bool {
        !self.head.file.is_empty()
    }

    /// Bytes of binlog from `(file, pos)` to the head, across files; `None`
    /// when `file` is not among the server's logs (purged, or another
    /// server's).
    pub fn bytes_behind(&self, file: &str, pos: u64) -> Option<u64> {
        let head = (self.head.file.as_str(), self.head.pos);
        if file == head.0 {
            return Some(head.1.saturating_sub(pos));
        }
        let i = self.logs.iter().position(|(f, _)| f == file)?;
        let j = self.logs.iter().position(|(f, _)| f == head.0)?;
        if j < i {
            return Some(0);
        }
        let between: u64 = self.logs[i + 1..j].iter().map(|(_, size)| size).sum();
        Some(self.logs[i].1.saturating_sub(pos) + between + head.1)
    }

    /// Every byte the server still has: the lag of a position whose file
    /// is gone.
    pub fn total_bytes(&self) -> u64 {
        self.logs.iter().map(|(_, size)| size).sum()
    }
}

impl EventStore {
    /// The binlog state of the server at `index` of the topology, on the
    /// store's pooled connection to it (a view refreshing every few seconds
    /// reuses it).
    pub async fn binlog_state(&self, index: usize) -> Result<BinlogState, StoreError> {
        let (pool, server) = self.pool_for_server(index);
        let mysql = StoreError::mysql(server);
        let mut conn = pool.get_conn().await.map_err(StoreError::mysql(server))?;
        let flavor = Flavor::detect(&mut conn)
            .await
            .map_err(StoreError::mysql(server))?;
        BinlogState::read(&mut conn, flavor).await.map_err(mysql)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn state(head: (&str, u64)) -> BinlogState {
        BinlogState {
            head: BinlogPosition {
                gtid: Default::default(),
                file: head.0.to_string(),
                pos: head.1,
            },
            logs: vec![
                ("b.1".to_string(), 1000),
                ("b.2".to_string(), 500),
                ("b.3".to_string(), 300),
            ],
        }
    }

    #[test]
    fn bytes_behind_span_files_up_to_the_head() {
        let s = state(("b.3", 300));
        assert_eq!(s.bytes_behind("b.3", 100), Some(200));
        let s = state(("b.3", 50));
        assert_eq!(s.bytes_behind("b.1", 900), Some(100 + 500 + 50));
        assert_eq!(s.bytes_behind("b.0", 900), None);
        assert_eq!(s.total_bytes(), 1800);
    }

    #[test]
    fn a_position_past_the_head_file_is_not_behind() {
        assert_eq!(state(("b.1", 10)).bytes_behind("b.2", 4), Some(0));
    }
}
