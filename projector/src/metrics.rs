//! Metric names of the projector (Prometheus style, see docs/projector.md),
//! with the help text and histogram buckets `rpsctl` registers them with.
//!
//! Labels are low-cardinality: `shard` (a small number), `type` (an
//! [`rps_core::EventType`] label), `code` (a [`rps_core::Rejection::code`]
//! or `undecodable`), `kind` (`progress`, `generation` or `switching`).

use metrics::Unit;
use rps_core::metric_catalogue::MetricCatalogue;

/// Counter, labels `shard`, `type`: events folded into the read models.
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
/// Counter, label `kind`: fence conflicts (progress moved, generation
/// switched, a switch met holding the shard: once per switch and worker).
pub const CONFLICTS: &str = "rps_projector_conflicts_total";
/// Counter, label `shard`: shard leases acquired (start-up or takeover).
pub const LEASES_ACQUIRED: &str = "rps_projector_leases_acquired_total";
/// Counter: transient errors that were retried.
pub const RETRIES: &str = "rps_projector_retries_total";

/// The freshness budget (the p99 target of docs/benchmarks.md); a bucket
/// bound of its own, so "p99 over budget" is exact rather than interpolated.
pub const FRESHNESS_BUDGET_SECONDS: f64 = 0.025;

/// Every metric of the projector, with its help text and, for a histogram, its
/// buckets.
pub const CATALOGUE: MetricCatalogue = MetricCatalogue {
    counters: &[
        (
            EVENTS_APPLIED,
            "Events folded into the read models, per shard and event type",
        ),
        (
            REJECTIONS,
            "Stream entries sent to the dead letter, per shard and rejection code",
        ),
        (
            REDELIVERED,
            "Entries delivered again and recognised as already applied, per shard",
        ),
        (
            CONFLICTS,
            "Fence conflicts (progress moved, generation switched, a switch holding the shard), per kind",
        ),
        (
            LEASES_ACQUIRED,
            "Shard leases acquired (start-up or takeover), per shard",
        ),
        (RETRIES, "Transient errors that were retried"),
    ],
    gauges: &[
        (
            LAG_ENTRIES,
            Unit::Count,
            "Stream entries not yet applied to the live generation, per shard",
        ),
        (
            LAG_SECONDS,
            Unit::Seconds,
            "Event time of the stream's last entry minus that of the last applied one, per shard",
        ),
    ],
    // A batch is a fold in memory plus one Redis script: a millisecond or
    // two when Redis keeps up, hundreds of milliseconds when it stalls.
    // Freshness is what users see, from the game server's `occurred_at` over
    // MySQL, the binlog and the reader to the read model: fine buckets around
    // the 25 ms budget, then coarse ones up to a minute for a projector that
    // is catching up.
    histograms: &[
        (
            BATCH_SECONDS,
            "Wall time of one batch: fold and atomic commit",
            &[
                0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0,
            ],
        ),
        (
            FRESHNESS_SECONDS,
            "Commit of the read-model update minus the event's occurred_at",
            &[
                0.001,
                0.0025,
                0.005,
                0.01,
                0.015,
                FRESHNESS_BUDGET_SECONDS,
                0.05,
                0.1,
                0.25,
                0.5,
                1.0,
                2.5,
                5.0,
                10.0,
                30.0,
                60.0,
            ],
        ),
    ],
};
