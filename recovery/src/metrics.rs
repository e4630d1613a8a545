//! Metric names of recovery (Prometheus style, `rps_recovery_*`), with the
//! help text and histogram buckets `rpsctl` registers them with.

use metrics::Unit;
use rps_core::metric_catalogue::MetricCatalogue;

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

/// Every metric of recovery, with its help text and, for a histogram, its
/// buckets.
pub const CATALOGUE: MetricCatalogue = MetricCatalogue {
    counters: &[
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
    ],
    gauges: &[(
        BOOTSTRAPPING,
        Unit::Count,
        "1 while a bootstrap from the event tables runs",
    )],
    // A bootstrap reads every shard's history: seconds on a small deployment,
    // up to hours on a large one.
    histograms: &[(
        BOOTSTRAP_SECONDS,
        "Duration of a committed bootstrap, snapshot to commit",
        &[
            1.0, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0, 600.0, 1200.0, 1800.0, 3600.0, 7200.0,
            14400.0,
        ],
    )],
};
