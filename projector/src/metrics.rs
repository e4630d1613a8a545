//! Metric names of the projector (Prometheus style, see docs/projector.md).
//!
//! Labels are low-cardinality: `shard` (a small number), `code` (a
//! [`rps_core::Rejection::code`] or `undecodable`), `kind` (`progress` or
//! `generation`).

/// Counter, label `shard`: events folded into the read models.
pub const EVENTS_APPLIED: &str = "rps_projector_events_applied_total";
/// Counter, labels `shard`, `code`: entries sent to the dead letter.
pub const REJECTIONS: &str = "rps_projector_rejections_total";
/// Counter, label `shard`: redelivered entries acknowledged without effect.
pub const REDELIVERED: &str = "rps_projector_redelivered_total";
/// Histogram: wall time of one batch (fold + script), seconds.
pub const BATCH_SECONDS: &str = "rps_projector_batch_apply_seconds";
/// Histogram: commit time minus the event's `occurred_at`, seconds.
pub const FRESHNESS_SECONDS: &str = "rps_projector_freshness_seconds";
/// Gauge, label `shard`: entries in the stream not yet applied.
pub const LAG_ENTRIES: &str = "rps_projector_lag_entries";
/// Gauge, label `shard`: event time of the stream's last entry minus that of
/// the last applied one, seconds.
pub const LAG_SECONDS: &str = "rps_projector_lag_seconds";
/// Counter, label `kind`: fence conflicts (progress moved, generation switched).
pub const CONFLICTS: &str = "rps_projector_conflicts_total";
/// Counter, label `shard`: shard leases acquired (start-up or takeover).
pub const LEASES_ACQUIRED: &str = "rps_projector_leases_acquired_total";
/// Counter: transient errors that were retried.
pub const RETRIES: &str = "rps_projector_retries_total";
