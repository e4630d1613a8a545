//! Bootstrap and disaster recovery: the pipeline's state in Redis built from
//! the event tables, and rebuilt whenever it is lost.
//!
//! - [`snapshot`]: one consistent-snapshot transaction per MySQL server,
//!   folding every event table of its shards, with the binlog position and
//!   GTID state of that same instant;
//! - [`bootstrap`]: [`ensure_state`] decides whether the state is whole and
//!   otherwise writes a fresh generation and commits checkpoints, progress and
//!   the generation marker in one atomic step;
//! - [`write`]: the fold into a fresh generation, in bounded chunks;
//! - [`watch`]: notices within about a second that state was lost;
//! - [`supervise`]: the loop `rpsctl run` uses: ensure the state, run the
//!   components, and start over when the state is lost.
//!
//! It does not stream binlogs or stream entries itself: after a bootstrap the
//! cdc-reader resumes from the snapshot's position and the projector from the
//! streams' ends, exactly as after any restart. docs/recovery.md explains why
//! that is exactly once.

pub mod bootstrap;
pub mod metrics;
pub mod snapshot;
pub mod supervise;
pub mod watch;
pub mod write;

pub use bootstrap::{ensure_state, BootstrapReport, StateReport};
pub use snapshot::ServerSnapshot;
pub use supervise::supervise;
pub use watch::{check_state, watch, StateLoss};

use rps_core::retry::ErrorClass;

/// What can stop a bootstrap or the supervisor.
#[derive(Debug, thiserror::Error)]
pub enum RecoveryError {
    #[error(transparent)]
    Store(#[from] rps_event_store::StoreError),
    #[error("redis: {0}")]
    Redis(#[from] fred::error::Error),
    #[error(transparent)]
    History(#[from] history::HistoryError),
    /// Another process committed a bootstrap (or switched generations) while
    /// this one was building; its work was dropped and the next attempt
    /// starts from what is there now.
    #[error("the generation marker changed from {expected:?} to {found:?} during the bootstrap; retrying")]
    Raced { expected: String, found: String },
    /// The generation marker holds something else than a number.
    #[error("`{key}` holds {value:?}, not a generation number; delete it, and the pipeline rebuilds its state")]
    BadGenerationMarker { key: String, value: String },
    /// A server's snapshot reported a GTID state the checkpoint cannot hold.
    #[error("server `{server}` reported GTID state {gtid:?} at its snapshot, which does not parse: {message}")]
    BadSnapshotGtid {
        server: String,
        gtid: String,
        message: String,
    },
    /// The commit script answered what it never answers: a different
    /// script under the same name, or a Redis that is not one.
    #[error("unexpected reply from the bootstrap commit script: {reply:?}")]
    CommitReply { reply: Vec<String> },
    /// A condition an operator must fix without a variant of its own; the
    /// message says what to do.
    #[error("{0}")]
    Definite(String),
    /// The components stopped by themselves with an error.
    #[error("pipeline components stopped: {0}")]
    Components(String),
    #[error("cancelled")]
    Cancelled,
}

impl RecoveryError {
    /// Whether trying the bootstrap again later may succeed.
    pub fn class(&self) -> ErrorClass {
        match self {
            RecoveryError::Store(e) => ErrorClass::from_transient(e.is_transient()),
            RecoveryError::Redis(e) => rps_core::retry::classify_redis(e),
            RecoveryError::History(e) => e.class(),
            // The next attempt starts from what the other process left.
            RecoveryError::Raced { .. } => ErrorClass::Transient,
            RecoveryError::BadGenerationMarker { .. }
            | RecoveryError::BadSnapshotGtid { .. }
            | RecoveryError::CommitReply { .. }
            | RecoveryError::Definite(_)
            | RecoveryError::Components(_)
            | RecoveryError::Cancelled => ErrorClass::Definite,
        }
    }

    pub fn is_transient(&self) -> bool {
        self.class().is_transient()
    }
}
