//! Metric names of the history commands (Prometheus style, see
//! docs/operations.md), with the help text `rpsctl` registers them with.
//!
//! The commands are short-lived, so these matter when `rpsctl replay` runs
//! under `rpsctl run` or with a metrics endpoint; they are also what the
//! progress reporter reads.

use rps_core::metric_catalogue::MetricCatalogue;

/// Events read from the event tables and folded (counter).
pub const REPLAY_EVENTS_TOTAL: &str = "rps_replay_events_total";
/// Events of history that do not fit their match, by `code` (counter).
pub const REPLAY_REJECTED_TOTAL: &str = "rps_replay_rejected_total";
/// Stream entries applied to the new generation while catching up (counter).
pub const REPLAY_CATCHUP_ENTRIES_TOTAL: &str = "rps_replay_catchup_entries_total";
/// Read-model keys written into the new generation (counter).
pub const REPLAY_KEYS_WRITTEN_TOTAL: &str = "rps_replay_keys_written_total";
/// Differences found by verify, by `kind` of read model (counter).
pub const VERIFY_DIFFERENCES_TOTAL: &str = "rps_verify_differences_total";
/// Rows written by export (counter).
pub const EXPORT_ROWS_TOTAL: &str = "rps_export_rows_total";

/// Every metric of the history commands, with its help text and, for a histogram, its
/// buckets.
pub const CATALOGUE: MetricCatalogue = MetricCatalogue {
    counters: &[
        (
            REPLAY_EVENTS_TOTAL,
            "Event rows read from the event tables and folded by replay or verify",
        ),
        (
            REPLAY_REJECTED_TOTAL,
            "Event rows of history that do not fit their match, per code",
        ),
        (
            REPLAY_CATCHUP_ENTRIES_TOTAL,
            "Stream entries applied to the new generation while catching up",
        ),
        (
            REPLAY_KEYS_WRITTEN_TOTAL,
            "Read-model keys written into the new generation",
        ),
        (
            VERIFY_DIFFERENCES_TOTAL,
            "Differences verify found, per kind of read model",
        ),
        (EXPORT_ROWS_TOTAL, "Event rows written by export"),
    ],
    gauges: &[],
    histograms: &[],
};
