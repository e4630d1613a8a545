//! Reading figures back out of the process's own Prometheus text
//! (`PrometheusHandle::render`): under `rpsctl run` the reader, projector
//! and compensator record into the same registry as the API, and some of
//! what the dashboard shows (binlog lag in bytes, freshness and firing-delay
//! percentiles, compensations fired) exists nowhere else. A figure whose
//! series is absent (the API runs alone) is `None`.

use std::collections::BTreeMap;

/// One sample line: name, labels, value.
#[derive(Debug, Clone, PartialEq)]
struct Line {
    name: String,
    labels: Vec<(String, String)>,
    value: f64,
}

/// The parsed exposition text.
#[derive(Debug, Default, Clone)]
pub struct Metrics {
    lines: Vec<Line>,
}

/// Cumulative histogram buckets: `(le, count)` in increasing `le`, the last
/// one `+Inf`, summed over every label set of the histogram.
pub type Buckets = Vec<(f64, f64)>;

impl Metrics {
    pub fn parse(text: &str) -> Metrics {
        Metrics {
            lines: text.lines().filter_map(parse_line).collect(),
        }
    }

    /// Whether any series of a component (`rps_projector_`, …) exists.
    pub fn has_prefix(&self, prefix: &str) -> bool {
        self.lines.iter().any(|l| l.name.starts_with(prefix))
    }

    /// The sum over every label set of a counter or gauge.
    pub fn sum(&self, name: &str) -> Option<f64> {
        let mut found = false;
        let mut total = 0.0;
        for l in self.lines.iter().filter(|l| l.name == name) {
            found = true;
            total += l.value;
        }
        found.then_some(total)
    }

    /// A gauge or counter per value of one label (summed over the others).
    pub fn by_label(&self, name: &str, label: &str) -> BTreeMap<String, f64> {
        let mut out = BTreeMap::new();
        for l in self.lines.iter().filter(|l| l.name == name) {
            if let Some((_, v)) = l.labels.iter().find(|(k, _)| k == label) {
                *out.entry(v.clone()).or_insert(0.0) += l.value;
            }
        }
        out
    }

    /// A histogram's buckets; `None` when it has none (absent, or rendered
    /// as a summary).
    pub fn buckets(&self, name: &str) -> Option<Buckets> {
        let bucket = format!("{name}_bucket");
        let mut by_le: BTreeMap<OrderedF64, f64> = BTreeMap::new();
        for l in self.lines.iter().filter(|l| l.name == bucket) {
            let Some(le) = l
                .labels
                .iter()
                .find(|(k, _)| k == "le")
                .and_then(|(_, v)| parse_value(v))
            else {
                continue;
            };
            *by_le.entry(OrderedF64(le)).or_insert(0.0) += l.value;
        }
        (!by_le.is_empty()).then(|| by_le.into_iter().map(|(k, v)| (k.0, v)).collect())
    }
}

/// `f64` ordered by `total_cmp`, for bucket bounds as map keys.
#[derive(Debug, Clone, Copy, PartialEq)]
struct OrderedF64(f64);

impl Eq for OrderedF64 {}

impl PartialOrd for OrderedF64 {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for OrderedF64 {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        self.0.total_cmp(&other.0)
    }
}

fn parse_value(s: &str) -> Option<f64> {
    match s {
        "+Inf" | "Inf" => Some(f64::INFINITY),
        "-Inf" => Some(f64::NEG_INFINITY),
        _ => s.parse().ok(),
    }
}

fn parse_line(line: &str) -> Option<Line> {
    let line = line.trim();
    if line.is_empty() || line.starts_with('#') {
        return None;
    }
    let (name, labels, rest) = match line.find('{') {
        Some(open) => {
            let close = open + line[open..].find('}')?;
            (
                &line[..open],
                parse_labels(&line[open + 1..close])?,
                &line[close + 1..],
            )
        }
        None => {
            let sp = line.find(' ')?;
            (&line[..sp], Vec::new(), &line[sp..])
        }
    };
    // A timestamp may follow the value.
    let value = parse_value(rest.split_whitespace().next()?)?;
    Some(Line {
        name: name.to_string(),
        labels,
        value,
    })
}

/// `k="v",k2="v2"` with `\"`, `\\` and `\n` escapes in values.
fn parse_labels(s: &str) -> Option<Vec<(String, String)>> {
    let mut out = Vec::new();
    let mut chars = s.chars().peekable();
    loop {
        while chars.peek().is_some_and(|c| *c == ',' || c.is_whitespace()) {
            chars.next();
        }
        if chars.peek().is_none() {
            return Some(out);
        }
        let mut key = String::new();
        for c in chars.by_ref() {
            if c == '=' {
                break;
            }
            key.push(c);
        }
        if chars.next()? != '"' {
            return None;
        }
        let mut value = String::new();
        loop {
            match chars.next()? {
                '"' => break,
                '\\' => match chars.next()? {
                    'n' => value.push('\n'),
                    c => value.push(c),
                },
                c => value.push(c),
            }
        }
        out.push((key.trim().to_string(), value));
    }
}

/// `later − earlier`, bucket by bucket (a bucket the earlier text did not
/// have counts from 0).
pub fn delta(later: &Buckets, earlier: Option<&Buckets>) -> Buckets {
    later
        .iter()
        .map(|(le, c)| {
            let before = earlier
                .and_then(|e| e.iter().find(|(l, _)| l == le))
                .map_or(0.0, |(_, c)| *c);
            (*le, (c - before).max(0.0))
        })
        .collect()
}

/// The `q` quantile of cumulative buckets, interpolated inside the bucket
/// as Prometheus' `histogram_quantile` does; a rank in the `+Inf` bucket
/// answers the highest finite bound. `None` without observations.
pub fn quantile(b: &Buckets, q: f64) -> Option<f64> {
    let total = b.last()?.1;
    if total <= 0.0 {
        return None;
    }
    let rank = q * total;
    let (mut prev_le, mut prev_c) = (0.0, 0.0);
    for &(le, c) in b {
        if c >= rank {
            if le.is_infinite() {
                return Some(prev_le);
            }
            let inside = c - prev_c;
            if inside <= 0.0 {
                return Some(le);
            }
            return Some(prev_le + (le - prev_le) * (rank - prev_c) / inside);
        }
        prev_le = if le.is_finite() { le } else { prev_le };
        prev_c = c;
    }
    Some(prev_le)
}

#[cfg(test)]
mod tests {
    use super::*;

    const TEXT: &str = r#"# HELP rps_cdc_lag_bytes Binlog bytes
# TYPE rps_cdc_lag_bytes gauge
rps_cdc_lag_bytes{server="mysql-a"} 1200
rps_cdc_lag_bytes{server="mysql-b"} 0
rps_compensator_fired_total 7
rps_projector_events_applied_total{shard="0",type="started"} 5
rps_projector_events_applied_total{shard="1",type="started"} 3 1700000000000
weird{a="x\"y,z",b="\\"} 1
h_bucket{le="0.01"} 2
h_bucket{le="0.1"} 6
h_bucket{le="+Inf"} 8
h_bucket{shard="1",le="0.01"} 2
h_bucket{shard="1",le="0.1"} 2
h_bucket{shard="1",le="+Inf"} 2
h_sum 1.5
h_count 10
"#;

    #[test]
    fn reads_sums_labels_and_buckets() {
        let m = Metrics::parse(TEXT);
        assert_eq!(m.sum("rps_compensator_fired_total"), Some(7.0));
        assert_eq!(m.sum("rps_projector_events_applied_total"), Some(8.0));
        assert_eq!(m.sum("rps_nothing"), None);
        assert!(m.has_prefix("rps_cdc_"));
        assert!(!m.has_prefix("rps_api_"));
        let lag = m.by_label("rps_cdc_lag_bytes", "server");
        assert_eq!(lag["mysql-a"], 1200.0);
        assert_eq!(lag["mysql-b"], 0.0);
        assert_eq!(m.sum("weird"), Some(1.0));
        assert_eq!(
            m.buckets("h").unwrap(),
            vec![(0.01, 4.0), (0.1, 8.0), (f64::INFINITY, 10.0)]
        );
        assert_eq!(m.buckets("rps_cdc_lag_bytes"), None);
    }

    #[test]
    fn quantiles_interpolate_within_buckets() {
        let b: Buckets = vec![(0.01, 4.0), (0.1, 8.0), (f64::INFINITY, 10.0)];
        assert_eq!(quantile(&b, 0.2), Some(0.005));
        let p50 = quantile(&b, 0.5).unwrap();
        assert!((p50 - 0.0325).abs() < 1e-9, "{p50}");
        assert_eq!(quantile(&b, 0.99), Some(0.1));
        assert_eq!(quantile(&vec![(1.0, 0.0), (f64::INFINITY, 0.0)], 0.5), None);
        let earlier: Buckets = vec![(0.01, 4.0), (0.1, 4.0), (f64::INFINITY, 4.0)];
        let d = delta(&b, Some(&earlier));
        assert_eq!(d, vec![(0.01, 0.0), (0.1, 4.0), (f64::INFINITY, 6.0)]);
        let p50 = quantile(&d, 0.5).unwrap();
        assert!((p50 - 0.0775).abs() < 1e-9, "{p50}");
        assert_eq!(delta(&b, None), b);
    }
}
