//! Metric names of recovery (Prometheus style, `rps_recovery_*`).

/// State losses detected, by `what` vanished: `generation`, `checkpoint`,
/// `progress` or `bootstrap_record` (counter).
pub const STATE_LOST_TOTAL: &str = "rps_recovery_state_lost_total";
/// 1 while a bootstrap runs, else 0 (gauge).
pub const BOOTSTRAPPING: &str = "rps_recovery_bootstrapping";
/// Duration of a successful bootstrap, snapshot to commit (histogram).
pub const BOOTSTRAP_SECONDS: &str = "rps_recovery_bootstrap_seconds";
/// Bootstraps by `outcome`: `committed`, `failed` (counter).
pub const BOOTSTRAPS_TOTAL: &str = "rps_recovery_bootstraps_total";
/// Rows read by snapshots (counter).
pub const SNAPSHOT_ROWS_TOTAL: &str = "rps_recovery_snapshot_rows_total";
/// Rows of history that do not fit their match, found by snapshots (counter).
pub const SNAPSHOT_REJECTED_TOTAL: &str = "rps_recovery_snapshot_rejected_total";

/// Registers descriptions (once per process is enough; repeats are harmless).
pub fn describe() {
    metrics::describe_counter!(
        STATE_LOST_TOTAL,
        "Pipeline state found lost in Redis, by what vanished"
    );
    metrics::describe_gauge!(
        BOOTSTRAPPING,
        "1 while a bootstrap from the event tables runs"
    );
    metrics::describe_histogram!(
        BOOTSTRAP_SECONDS,
        metrics::Unit::Seconds,
        "Duration of a committed bootstrap"
    );
    metrics::describe_counter!(BOOTSTRAPS_TOTAL, "Bootstraps by outcome");
    metrics::describe_counter!(
        SNAPSHOT_ROWS_TOTAL,
        "Event rows read by bootstrap snapshots"
    );
    metrics::describe_counter!(
        SNAPSHOT_REJECTED_TOTAL,
        "Event rows of history that do not fit their match"
    );
}
