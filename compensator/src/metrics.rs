//! The compensator's metric names and their descriptions.
//!
//! Names follow `rps_<component>_<what>_<unit>`, counters end in `_total`;
//! labels are low-cardinality (`outcome`, never an error text or a match id).

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

/// Registers the descriptions with the installed recorder.
pub fn describe() {
    use metrics::{describe_counter, describe_gauge, describe_histogram, Unit};
    describe_gauge!(DEADLINES_PENDING, "deadlines in the active generation");
    describe_gauge!(DEADLINES_OVERDUE, "deadlines past due, not yet cleared");
    describe_counter!(FIRED, "timed_out events inserted");
    describe_counter!(DROPPED, "claimed deadlines of matches already over");
    describe_counter!(LOCK_WAITS, "appends that timed out waiting for a row lock");
    describe_counter!(RETRIES, "failed attempts scheduled for a retry");
    describe_counter!(DEAD_LETTERED, "deadlines moved to the dead letter");
    describe_counter!(RACED, "matches that moved on while being fired");
    describe_histogram!(
        FIRING_DELAY,
        Unit::Seconds,
        "commit of the timed_out insert minus the deadline"
    );
    describe_counter!(CLAIM_ERRORS, "failed claim calls against Redis");
}
