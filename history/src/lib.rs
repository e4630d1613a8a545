//! Everything computed from the event store's history.
//!
//! The live pipeline folds stream entries as they arrive; this crate folds
//! the event tables themselves, for the operator and data-engineer commands
//! of `rpsctl`:
//! - [`fold`]: a deterministic in-memory fold of every shard's history
//!   (read inside a consistent snapshot) into the read models;
//! - [`replay`]: writes that fold into a new generation beside the live one,
//!   catches it up from the shard streams and switches to it;
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

use rps_core::retry::ErrorClass;
use rps_event_store::StoreError;

/// The client libraries, re-exported so callers and tests name the same versions.
pub use fred;
pub use mysql_async;

/// What can stop a history command.
#[derive(Debug, thiserror::Error)]
pub enum HistoryError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("redis: {0}")]
    Redis(#[from] fred::error::Error),
    #[error("writing the export: {0}")]
    Io(#[from] std::io::Error),
    #[error("writing the export: {0}")]
    Format(String),
    /// The generation marker does not name a generation (or is gone while
    /// read models exist): the operator fixes or deletes it and replays.
    #[error(transparent)]
    Generation(read_model::generation::GenerationError),
    /// A step of the generation switch ([`read_model::generation::switch`]).
    #[error(transparent)]
    Switch(read_model::generation::switch::SwitchError),
    /// Applying the live generation's outbox before the switch.
    #[error(transparent)]
    Score(read_model::score::ScoreError),
    /// `ReplayOptions::crash_at`: stopped there, as a crash would, with
    /// nothing undone.
    #[error("stopped {0}, as asked (a crash test)")]
    Crashed(&'static str),
    /// Another replay switched generations first; this one changed nothing.
    #[error("the active generation is no longer {expected}: another replay switched meanwhile; nothing was changed by this one")]
    GenerationMoved { expected: u64 },
    /// The live generation never caught up with the snapshot, so the
    /// switch could not happen: the live pipeline is probably not running.
    #[error("the live generation {generation} did not pass the snapshot positions within {timeout:?} (waiting for: {waiting}): are the cdc-reader and the projector running? (`rpsctl status`)")]
    SwitchTimeout {
        generation: u64,
        timeout: std::time::Duration,
        waiting: String,
    },
    /// Entries the catch-up needs were trimmed from a shard stream.
    #[error("stream {stream} was trimmed past the snapshot position {file}:{pos} of shard {shard}: entries the new generation needs are gone. \
             Run the replay again right away (a new snapshot is newer than the trimmed entries), or trim less")]
    StreamTrimmed {
        stream: String,
        file: String,
        pos: u64,
        shard: rps_core::ShardId,
    },
    /// A definite condition without a variant of its own (the message says
    /// what happened).
    #[error("{0}")]
    Definite(String),
    #[error("cancelled")]
    Cancelled,
}

impl HistoryError {
    /// Whether the command may succeed if run again later (connection
    /// trouble, a server restarting, Redis unavailable).
    pub fn class(&self) -> ErrorClass {
        match self {
            HistoryError::Store(e) => ErrorClass::from_transient(e.is_transient()),
            HistoryError::Redis(e) => rps_core::retry::classify_redis(e),
            HistoryError::Generation(e) => ErrorClass::from_transient(e.is_transient()),
            HistoryError::Switch(e) => ErrorClass::from_transient(e.is_transient()),
            HistoryError::Score(e) => ErrorClass::from_transient(matches!(
                e,
                read_model::score::ScoreError::Redis(_)
                    | read_model::score::ScoreError::Contended { .. }
            )),
            HistoryError::Io(_)
            | HistoryError::Format(_)
            | HistoryError::GenerationMoved { .. }
            | HistoryError::SwitchTimeout { .. }
            | HistoryError::StreamTrimmed { .. }
            | HistoryError::Definite(_)
            | HistoryError::Crashed(_)
            | HistoryError::Cancelled => ErrorClass::Definite,
        }
    }
}

impl From<read_model::generation::switch::SwitchError> for HistoryError {
    fn from(e: read_model::generation::switch::SwitchError) -> Self {
        HistoryError::Switch(e)
    }
}
