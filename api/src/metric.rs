//! Metric names of the API (Prometheus style, `rps_api_*`), with the help
//! text and histogram buckets `rpsctl` registers them with.
//!
//! Labels: `route` (the route's name in the route table, never a raw
//! path, so ids do not become series) and `status` (the HTTP code).

use rps_core::metric_catalogue::MetricCatalogue;

/// Counter, labels `route`, `status`: requests answered.
pub const REQUESTS: &str = "rps_api_requests_total";
/// Histogram, label `route`: time to answer, seconds.
pub const REQUEST_SECONDS: &str = "rps_api_request_seconds";

/// Every metric of the API, with its help text and, for a histogram, its
/// buckets.
pub const CATALOGUE: MetricCatalogue = MetricCatalogue {
    counters: &[(REQUESTS, "Requests answered, per route and status")],
    gauges: &[],
    // A read is one or two Redis round trips, well under a millisecond from
    // the page cache, with a bound at the 5 ms p99 target of
    // docs/benchmarks.md.
    histograms: &[(
        REQUEST_SECONDS,
        "Time to answer a request, per route",
        &[
            0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0,
            2.5,
        ],
    )],
};
