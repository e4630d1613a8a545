//! cdc-reader: every shard server's binlog into the shard streams, exactly once.
//!
//! One replication task per MySQL server of the topology ([`reader`]) reads
//! the binlog with its own replica `server_id`, decodes the rows of the
//! event tables ([`decode`]) and publishes them to `rps:events:{shard}`
//! together with its checkpoint in one atomic Redis step ([`publish`]), so
//! that after any crash it resumes with no row lost and none twice.
//! [`preflight`] checks server settings and grants before streaming;
//! [`trim`] trims the streams below what every consumer group acknowledged.
//! Rows of XA branches wait in Redis from their prepare to their decision
//! ([`xa`]): only committed rows reach the streams.

pub mod checkpoint;
pub mod cursor;
pub mod decode;
pub mod error;
pub mod inspect;
pub mod metrics;
pub mod preflight;
pub mod publish;
pub mod reader;
pub mod trim;
pub mod xa;

pub use checkpoint::Checkpoint;
pub use error::{CdcError, Definite, Transient};
pub use reader::{run, run_server, run_servers, run_with_readiness, start_position};
