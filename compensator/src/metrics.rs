//! The compensator's metric names, with the help text and histogram buckets
//! `rpsctl` registers them with.
//!
//! Names follow `rps_<component>_<what>_<unit>`, counters end in `_total`;
//! labels are low-cardinality (`status`, `holder`, never an error text or a
//! match id).

use metrics::Unit;
use rps_core::metric_catalogue::MetricCatalogue;

/// Gauge: deadlines in the active generation's set.
pub const DEADLINES_PENDING: &str = "rps_compensator_deadlines_pending";
/// Gauge: deadlines already due and not yet removed by the projector
/// (in flight, waiting for a retry, parked, or not yet claimed).
pub const DEADLINES_OVERDUE: &str = "rps_compensator_deadlines_overdue";
/// Counter: `timed_out` events inserted by this process.
pub const FIRED: &str = "rps_compensator_fired_total";
/// Counter: attempts whose append gave up waiting for a row lock of the
/// match (a failed attempt, also counted in `retries` or `dead_lettered`),
/// label `holder` = xa_branch (the reader names a prepared branch holding
/// the match) | unknown.
pub const LOCK_WAITS: &str = "rps_compensator_lock_waits_total";
/// Counter: claimed deadlines whose match had ended in time (nothing written),
/// label `status` = finished | timed_out | voided.
pub const DROPPED: &str = "rps_compensator_dropped_total";
/// Counter: failed attempts that will be retried.
pub const RETRIES: &str = "rps_compensator_retries_total";
/// Counter: deadlines given up and written to the dead letter.
pub const DEAD_LETTERED: &str = "rps_compensator_dead_lettered_total";
/// Counter: claims that found the match moved on under the append.
pub const RACED: &str = "rps_compensator_raced_total";
/// Histogram: commit of the `timed_out` insert minus the deadline, seconds.
pub const FIRING_DELAY: &str = "rps_compensator_firing_delay_seconds";
/// Counter: failed claim calls against Redis (each retried with backoff).
pub const CLAIM_ERRORS: &str = "rps_compensator_claim_errors_total";

/// Every metric of the compensator, with its help text and, for a histogram, its
/// buckets.
pub const CATALOGUE: MetricCatalogue = MetricCatalogue {
    counters: &[
        (FIRED, "timed_out events inserted"),
        (
            DROPPED,
            "Claimed deadlines of matches already over (nothing written), per status",
        ),
        (
            LOCK_WAITS,
            "Appends that gave up waiting for a row lock, per holder",
        ),
        (RETRIES, "Failed attempts scheduled for a retry"),
        (
            DEAD_LETTERED,
            "Deadlines given up after max_attempts and moved to the dead letter",
        ),
        (RACED, "Matches that moved on while being fired"),
        (CLAIM_ERRORS, "Failed claim calls against Redis"),
    ],
    gauges: &[
        (
            DEADLINES_PENDING,
            Unit::Count,
            "Open deadlines in the active generation",
        ),
        (
            DEADLINES_OVERDUE,
            Unit::Count,
            "Deadlines past due and not yet cleared by the projector",
        ),
    ],
    // On time, a deadline fires within a claim interval plus one SELECT and
    // one INSERT: milliseconds, with a bound at the 50 ms target of
    // docs/benchmarks.md. A compensator that was down, or retries on the
    // schedule, fires seconds to minutes late; the upper buckets show how late.
    histograms: &[(
        FIRING_DELAY,
        "Commit of the timed_out insert minus the deadline",
        &[
            0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0,
            1800.0,
        ],
    )],
};
