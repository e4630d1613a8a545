//! Metric names of the reader (Prometheus style, `rps_cdc_*`).
//!
//! Labels: `server` (topology name) and, for dead letters, `kind` (one of
//! [`crate::decode::kind::ALL`]). Never an error string.

/// Counter: stream entries published, per server (rows/s = its rate).
pub const EVENTS_PUBLISHED: &str = "rps_cdc_events_published_total";
/// Counter: dead letters written, per server and kind.
pub const DEAD_LETTERS: &str = "rps_cdc_dead_letters_total";
/// Counter: reconnects after a transient error, per server.
pub const RECONNECTS: &str = "rps_cdc_reconnects_total";
/// Gauge: now − commit time of the last published transaction; 0 when a
/// heartbeat shows the reader is at the server's head.
pub const LAG_SECONDS: &str = "rps_cdc_lag_seconds";
/// Gauge: bytes of binlog between the checkpoint and the server's head.
pub const LAG_BYTES: &str = "rps_cdc_lag_bytes";
/// Gauge: 1 while a server's reader is streaming, 0 when it stopped on a
/// definite error (or is reconnecting).
pub const UP: &str = "rps_cdc_reader_up";
/// Counter: atomic publish steps (Lua calls), per server.
pub const BATCHES: &str = "rps_cdc_publish_batches_total";
/// Counter: stream entries removed by trimming.
pub const TRIMMED: &str = "rps_cdc_trimmed_entries_total";
/// Gauge: XA branches the reader saw prepared and not yet decided, per server.
pub const XA_PREPARED: &str = "rps_cdc_xa_prepared_branches";
/// Gauge: age of the oldest prepared, undecided branch (0 when none).
pub const XA_OLDEST_SECONDS: &str = "rps_cdc_xa_oldest_prepared_seconds";
/// Counter: XA decisions read, per server and `decision` (commit, rollback,
/// one_phase).
pub const XA_DECISIONS: &str = "rps_cdc_xa_decisions_total";
/// Counter: groups that ended with ROLLBACK, per server.
pub const ROLLED_BACK_GROUPS: &str = "rps_cdc_rolled_back_groups_total";
