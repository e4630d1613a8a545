//! Metric names of the reader (Prometheus style, `rps_cdc_*`), with the
//! help text and histogram buckets `rpsctl` registers them with (naming
//! rules: docs/operations.md, "Metrics").
//!
//! Labels: `server` (topology name), for dead letters `kind` (one of
//! [`crate::decode::kind::ALL`]), for XA decisions `decision`. Never an
//! error string.

use metrics::Unit;
use rps_core::metric_catalogue::MetricCatalogue;

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
/// Gauge: Unix time of the last heartbeat or publish of a server's stream,
/// so a reader that hangs while still "up" shows as not moving.
pub const HEARTBEAT_TIMESTAMP: &str = "rps_cdc_heartbeat_timestamp_seconds";
/// Counter: atomic publish steps (Lua calls), per server.
pub const BATCHES: &str = "rps_cdc_publish_batches_total";
/// Histogram: wall time of one atomic publish step (entries + checkpoint).
pub const PUBLISH_SECONDS: &str = "rps_cdc_publish_seconds";
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

/// Every metric of the reader, with its help text and, for a histogram, its
/// buckets.
pub const CATALOGUE: MetricCatalogue = MetricCatalogue {
    counters: &[
        (EVENTS_PUBLISHED, "Stream entries published, per server"),
        (
            DEAD_LETTERS,
            "Binlog rows written to the dead letter instead of a stream, per server and kind",
        ),
        (RECONNECTS, "Reconnects after a transient error, per server"),
        (
            BATCHES,
            "Atomic publish steps (entries and checkpoint in one Redis call), per server",
        ),
        (
            TRIMMED,
            "Stream entries trimmed after every consumer group applied them",
        ),
        (
            XA_DECISIONS,
            "XA decisions read from the binlog, per server and decision",
        ),
        (ROLLED_BACK_GROUPS, "Binlog groups that ended with ROLLBACK"),
    ],
    gauges: &[
        (
            LAG_SECONDS,
            Unit::Seconds,
            "Now minus the commit time of the last published transaction (0 at the head)",
        ),
        (
            LAG_BYTES,
            Unit::Bytes,
            "Binlog bytes between the checkpoint and the server's head",
        ),
        (UP, Unit::Count, "1 while the server's reader is streaming"),
        (
            HEARTBEAT_TIMESTAMP,
            Unit::Seconds,
            "Unix time of the last heartbeat or publish of the server's stream",
        ),
        (
            XA_PREPARED,
            Unit::Count,
            "XA branches prepared and not yet decided, per server",
        ),
        (
            XA_OLDEST_SECONDS,
            Unit::Seconds,
            "Age of the oldest prepared, undecided XA branch (0 when none)",
        ),
    ],
    // A publish is one Redis round trip plus the script (well under a
    // millisecond when Redis is idle); the upper buckets catch the stalls of
    // an AOF rewrite.
    histograms: &[(
        PUBLISH_SECONDS,
        "Wall time of one atomic publish step (entries and checkpoint)",
        &[
            0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0,
        ],
    )],
};
