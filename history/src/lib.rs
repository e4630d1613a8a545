//! Everything computed from the event store's history.
//!
//! The live pipeline folds stream entries as they arrive; this crate folds
//! the event tables themselves, for the operator and data-engineer commands
//! of `rpsctl`:
//! - [`fold`]: a deterministic in-memory fold of every shard's history
//!   (read inside a consistent snapshot) into the read models;
//! - [`replay`]: writes that fold into a new generation beside the live one,
//!   catches it up from the shard streams and switches atomically;
//! - [`verify`]: compares the fold with the live generation, and repairs;
//! - [`export`]: the merged event history as NDJSON, CSV or Parquet;
//! - [`status`]: positions, lag and backlog of every server and shard.
//!
//! It does not consume the streams' consumer group, and it never writes dead
//! letters: rejections found in history are reported to the operator only
//! (the live pipeline already dead-lettered them once).

pub mod export;
pub mod fold;
pub mod metrics;
pub mod model;
pub mod progress;
pub mod redis_io;
pub mod replay;
pub mod status;
pub mod verify;

pub use fold::{
    fold_history, fold_history_spilling, FoldOptions, FoldOutput, ShardSnapshot, SpilledMatches,
};
pub use model::{Model, RejectedEvent};

use rps_event_store::StoreError;

/// The client libraries, re-exported so callers and tests name the same versions.
pub use fred;
pub use mysql_async;

/// What can stop a history command.
#[derive(Debug, thiserror::Error)]
pub enum HistoryError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("server `{server}`: {source}")]
    Mysql {
        server: String,
        #[source]
        source: mysql_async::Error,
    },
    #[error("redis: {0}")]
    Redis(#[from] fred::error::Error),
    #[error("writing the export: {0}")]
    Io(#[from] std::io::Error),
    #[error("writing the export: {0}")]
    Format(String),
    /// A definite condition that needs an operator (the message says what to do).
    #[error("{0}")]
    Definite(String),
    #[error("cancelled")]
    Cancelled,
}

impl HistoryError {
    pub(crate) fn mysql(server: &str) -> impl FnOnce(mysql_async::Error) -> HistoryError + '_ {
        move |source| HistoryError::Mysql {
            server: server.to_string(),
            source,
        }
    }
}

/// A connected Redis client for the deployment.
pub async fn connect_redis(
    config: &rps_core::Config,
) -> Result<fred::clients::Client, HistoryError> {
    let policy = rps_core::redis_client::ClientPolicy::patient();
    Ok(policy.connect(&config.redis).await?)
}
