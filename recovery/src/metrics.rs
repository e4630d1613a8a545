//! Metric names of recovery (Prometheus style, `rps_recovery_*`), with the
//! help text and histogram buckets `rpsctl` registers them with.

use metrics::Unit;

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

/// Every counter with its help text.
pub const COUNTERS: &[(&str, &str)] = &[
    (
        STATE_LOST_TOTAL,
        "Pipeline state found lost in Redis, by what vanished",
    ),
    (BOOTSTRAPS_TOTAL, "Bootstraps by outcome"),
    (
        SNAPSHOT_ROWS_TOTAL,
        "Event rows read by bootstrap snapshots",
    ),
    (
        SNAPSHOT_REJECTED_TOTAL,
        "Event rows of history that do not fit their match",
    ),
];

/// Every gauge with its unit and help text.
pub const GAUGES: &[(&str, Unit, &str)] = &[(
    BOOTSTRAPPING,
    Unit::Count,
    "1 while a bootstrap from the event tables runs",
)];

/// Every histogram with its help text and bucket bounds (seconds). A
/// bootstrap reads every shard's history: seconds on a small deployment,
/// up to hours on a large one.
pub const HISTOGRAMS: &[(&str, &str, &[f64])] = &[(
    BOOTSTRAP_SECONDS,
    "Duration of a committed bootstrap, snapshot to commit",
    &[
        1.0, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0, 600.0, 1200.0, 1800.0, 3600.0, 7200.0, 14400.0,
    ],
)];

/// Registers the help text (once per process is enough; repeats are harmless).
pub fn describe() {
    for (name, help) in COUNTERS {
        metrics::describe_counter!(*name, Unit::Count, *help);
    }
    for (name, unit, help) in GAUGES {
        metrics::describe_gauge!(*name, *unit, *help);
    }
    for (name, help, _) in HISTOGRAMS {
        metrics::describe_histogram!(*name, Unit::Seconds, *help);
    }
}
