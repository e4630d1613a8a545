//! Every crate's metric tables in one list: the recorder is configured from
//! it (histogram buckets, help text), and the tests check the tables, the
//! alert rules and the dashboard against it. Each crate owns its names,
//! help text and buckets (its `metrics` module); this file only gathers
//! them. The naming rules are in docs/operations.md, "Metrics".
//!
//! The integration tests include this file too (`#[path]`), each using a
//! part of it.
#![allow(dead_code)]

use metrics_exporter_prometheus::{BuildError, Matcher, PrometheusBuilder};
use rps_core::metric_catalogue::MetricCatalogue;

/// One crate's metrics.
pub struct Crate {
    pub name: &'static str,
    pub catalogue: MetricCatalogue,
}

pub const CRATES: &[Crate] = &[
    Crate {
        name: "cdc-reader",
        catalogue: cdc_reader::metrics::CATALOGUE,
    },
    Crate {
        name: "projector",
        catalogue: projector::metrics::CATALOGUE,
    },
    Crate {
        name: "compensator",
        catalogue: compensator::metrics::CATALOGUE,
    },
    Crate {
        name: "recovery",
        catalogue: recovery::metrics::CATALOGUE,
    },
    Crate {
        name: "history",
        catalogue: history::metrics::CATALOGUE,
    },
    Crate {
        name: "simulator",
        catalogue: simulator::metric::CATALOGUE,
    },
    Crate {
        name: "api",
        catalogue: rps_api::metric::CATALOGUE,
    },
];

/// Every metric name of every crate.
pub fn names() -> impl Iterator<Item = &'static str> {
    CRATES.iter().flat_map(|c| c.catalogue.names())
}

/// Every histogram with its bucket bounds.
pub fn histograms() -> impl Iterator<Item = (&'static str, &'static [f64])> {
    CRATES.iter().flat_map(|c| c.catalogue.histogram_buckets())
}

/// The names of the series a metric is exposed as: a histogram also as
/// `_bucket`, `_sum` and `_count`.
pub fn series_names() -> Vec<String> {
    let mut out: Vec<String> = names().map(str::to_string).collect();
    for (name, _) in histograms() {
        for suffix in ["_bucket", "_sum", "_count"] {
            out.push(format!("{name}{suffix}"));
        }
    }
    out
}

/// The recorder configuration: every histogram as a Prometheus histogram
/// with its own buckets, so replicas can be summed (`sum by (le)`), which
/// the exporter's default summaries cannot.
pub fn prometheus_builder() -> Result<PrometheusBuilder, BuildError> {
    let mut b = PrometheusBuilder::new();
    for (name, buckets) in histograms() {
        b = b.set_buckets_for_metric(Matcher::Full(name.to_string()), buckets)?;
    }
    Ok(b)
}

/// Registers every metric's help text with the installed recorder.
pub fn describe_all() {
    for c in CRATES {
        c.catalogue.describe();
    }
}

#[cfg(test)]
mod tests {
    use super::CRATES;
    use metrics::Unit;
    use std::collections::BTreeSet;
    use std::path::{Path, PathBuf};

    /// Every file that declares metric names, by crate: a name declared
    /// there and missing from its crate's tables would have no help text
    /// and, for a histogram, no buckets.
    const SOURCES: &[(&str, &str)] = &[
        (
            "cdc-reader",
            include_str!("../../cdc-reader/src/metrics.rs"),
        ),
        ("projector", include_str!("../../projector/src/metrics.rs")),
        (
            "compensator",
            include_str!("../../compensator/src/metrics.rs"),
        ),
        ("recovery", include_str!("../../recovery/src/metrics.rs")),
        ("history", include_str!("../../history/src/metrics.rs")),
        ("simulator", include_str!("../../simulator/src/lib.rs")),
        ("api", include_str!("../../api/src/metric.rs")),
        ("api", include_str!("../../api/src/lib.rs")),
    ];

    /// The `"rps_…"` values of `pub const NAME: &str = "…"` lines.
    fn declared_names(src: &str) -> Vec<String> {
        let mut out = Vec::new();
        for line in src.lines() {
            let Some(decl) = line.trim_start().strip_prefix("pub const ") else {
                continue;
            };
            let Some((_, value)) = decl.split_once("&str = \"") else {
                continue;
            };
            let name = value.split('"').next().unwrap_or("");
            if name.starts_with("rps_") {
                out.push(name.to_string());
            }
        }
        out
    }

    #[test]
    fn every_declared_metric_has_help_text_and_every_histogram_buckets() {
        let crates: BTreeSet<&str> = CRATES.iter().map(|c| c.name).collect();
        let sources: BTreeSet<&str> = SOURCES.iter().map(|s| s.0).collect();
        assert_eq!(crates, sources, "a crate without its tables");
        let mut declared = BTreeSet::new();
        for (krate, src) in SOURCES {
            let c = CRATES.iter().find(|c| c.name == *krate).unwrap();
            for name in declared_names(src) {
                assert!(
                    c.catalogue.names().any(|n| n == name),
                    "{name} ({krate}) is not in its crate's CATALOGUE"
                );
                declared.insert(name);
            }
        }
        // The scan works: it sees every name the tables list.
        for name in super::names() {
            assert!(declared.contains(name), "{name} not found by the scan");
        }
    }

    fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
        let Ok(entries) = std::fs::read_dir(dir) else {
            return;
        };
        for e in entries.flatten() {
            let p = e.path();
            if p.is_dir() {
                rust_files(&p, out);
            } else if p.extension().is_some_and(|x| x == "rs") {
                out.push(p);
            }
        }
    }

    /// A name written straight into a macro call would bypass the tables.
    #[test]
    fn metrics_are_recorded_through_the_named_constants() {
        let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
        let mut files = Vec::new();
        for c in CRATES {
            let dir = match c.name {
                "history" | "recovery" | "projector" | "compensator" | "simulator"
                | "cdc-reader" | "api" => root.join(c.name).join("src"),
                other => panic!("no source folder for {other}"),
            };
            rust_files(&dir, &mut files);
        }
        rust_files(&root.join("rpsctl/src"), &mut files);
        assert!(files.len() > 20, "{}", files.len());
        for f in files {
            let text = std::fs::read_to_string(&f).unwrap();
            for kind in ["counter", "gauge", "histogram"] {
                let mac = format!("{kind}!(");
                for (i, _) in text.match_indices(&mac) {
                    let arg = text[i + mac.len()..].trim_start();
                    assert!(
                        !arg.starts_with('"'),
                        "{}: a metric named by a literal; add a constant to the crate's metrics tables",
                        f.display()
                    );
                }
            }
        }
    }

    #[test]
    fn names_follow_the_rules() {
        let valid = |n: &str| {
            n.starts_with("rps_")
                && n.split('_').count() >= 3
                && n.bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_')
                && !n.contains("__")
                && !n.ends_with('_')
        };
        for c in CRATES {
            for (name, help) in c.catalogue.counters {
                assert!(valid(name), "{name}");
                assert!(
                    name.ends_with("_total"),
                    "counter {name} must end in _total"
                );
                assert!(!help.is_empty(), "{name}");
            }
            for (name, unit, help) in c.catalogue.gauges {
                assert!(valid(name), "{name}");
                assert!(
                    !name.ends_with("_total"),
                    "gauge {name} must not end in _total"
                );
                let expected = if name.ends_with("_seconds") {
                    Unit::Seconds
                } else if name.ends_with("_bytes") {
                    Unit::Bytes
                } else {
                    Unit::Count
                };
                assert_eq!(*unit, expected, "{name}: the unit follows the suffix");
                assert!(!help.is_empty(), "{name}");
            }
            for (name, help, buckets) in c.catalogue.histograms {
                assert!(valid(name), "{name}");
                assert!(
                    name.ends_with("_seconds"),
                    "histogram {name} must be in seconds"
                );
                assert!(!help.is_empty(), "{name}");
                assert!(buckets.len() >= 5, "{name}: too few buckets");
                assert!(buckets[0] > 0.0, "{name}");
                assert!(
                    buckets.windows(2).all(|w| w[0] < w[1]),
                    "{name}: buckets must increase"
                );
            }
        }
        let mut seen = BTreeSet::new();
        for name in super::names() {
            assert!(seen.insert(name), "{name} is declared twice");
        }
    }

    /// The metric table of docs/operations.md lists every metric and no
    /// other, and the bucket table every histogram.
    #[test]
    fn the_operations_metric_table_is_true() {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../docs/operations.md");
        let doc = std::fs::read_to_string(path).unwrap();
        let start = doc.find("### Metrics\n").expect("a Metrics section");
        let section = &doc[start..];
        let section = &section[..section.find("#### Health").expect("a Health part")];
        let mut named = BTreeSet::new();
        let mut rest = section;
        while let Some(i) = rest.find("rps_") {
            let token: String = rest[i..]
                .chars()
                .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                .collect();
            rest = &rest[i + 4..];
            if token.len() > 4 {
                named.insert(token);
            }
        }
        let names: BTreeSet<String> = super::names().map(str::to_string).collect();
        for n in &names {
            assert!(named.contains(n), "docs/operations.md does not list {n}");
        }
        for n in &named {
            assert!(
                names.contains(n),
                "docs/operations.md lists {n}, which no crate declares"
            );
        }
        let buckets = &section[section.find("Histogram buckets").expect("bucket table")..];
        for (h, _) in super::histograms() {
            assert!(
                buckets.contains(&format!("| `{h}` |")),
                "the bucket table lacks {h}"
            );
        }
    }

    #[test]
    fn every_histogram_renders_as_a_histogram_with_help_text() {
        let recorder = super::prometheus_builder().unwrap().build_recorder();
        let handle = recorder.handle();
        metrics::with_local_recorder(&recorder, || {
            super::describe_all();
            for (name, _) in super::histograms() {
                metrics::histogram!(name).record(0.003);
            }
        });
        let text = handle.render();
        for (name, buckets) in super::histograms() {
            assert!(
                text.contains(&format!("# TYPE {name} histogram")),
                "{name}:\n{text}"
            );
            assert!(text.contains(&format!("# HELP {name} ")), "{name}");
            assert!(text.contains(&format!("{name}_bucket{{le=\"+Inf\"}} 1")));
            assert_eq!(
                text.matches(&format!("{name}_bucket{{")).count(),
                buckets.len() + 1,
                "{name}"
            );
        }
    }
}
