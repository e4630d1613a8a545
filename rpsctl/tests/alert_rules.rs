//! The alert rules and the Grafana dashboard: the rules pass their own
//! unit tests under promtool (Debian's `prometheus` package, installed by
//! `scripts/dev-env.sh up`), the compose Prometheus config is valid, and
//! every PromQL expression of the rules, their tests and the dashboard
//! names only metrics the crates declare.

#[path = "../src/metrics_catalog.rs"]
mod metrics_catalog;

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::Command;

fn deploy(file: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../deploy")
        .join(file)
}

fn promtool(args: &[&str]) -> String {
    let out = Command::new("promtool")
        .args(args)
        .current_dir(deploy("prometheus"))
        .output()
        .unwrap_or_else(|e| {
            panic!(
                "promtool could not be run ({e}): it comes with Debian's `prometheus` package, \
                 which `scripts/dev-env.sh up` installs (apt-get install prometheus)"
            )
        });
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        out.status.success(),
        "promtool {}: {}\n{text}",
        args.join(" "),
        out.status
    );
    text
}

#[test]
fn alert_rules_pass_their_promtool_tests() {
    let checked = promtool(&["check", "rules", "alerts.yml"]);
    assert!(checked.contains("SUCCESS"), "{checked}");
    let tested = promtool(&["test", "rules", "alerts.test.yml"]);
    assert!(tested.contains("SUCCESS"), "{tested}");
}

#[test]
fn the_compose_prometheus_config_is_valid() {
    let checked = promtool(&["check", "config", "prometheus.yml"]);
    assert!(checked.contains("is valid prometheus config"), "{checked}");
    let compose = std::fs::read_to_string(deploy("../docker/compose.yml")).unwrap();
    for mount in [
        "../deploy/prometheus/prometheus.yml:/etc/prometheus/prometheus.yml:ro",
        "../deploy/prometheus/alerts.yml:/etc/prometheus/alerts.yml:ro",
    ] {
        assert!(compose.contains(mount), "compose lacks {mount}");
    }
    // Every component the config scrapes is a compose service.
    let config = std::fs::read_to_string(deploy("prometheus/prometheus.yml")).unwrap();
    for line in config.lines() {
        if let Some(names) = line.trim().strip_prefix("- names: [") {
            let service = names.trim_end_matches(']');
            assert!(
                compose.contains(&format!("\n  {service}:\n")),
                "compose lacks service {service}"
            );
        }
    }
}

/// The PromQL of every `expr:` of a rules file, inline or as a `|` block.
fn rule_exprs(yaml: &str) -> Vec<String> {
    let lines: Vec<&str> = yaml.lines().collect();
    let mut out = Vec::new();
    let mut i = 0;
    while i < lines.len() {
        let line = lines[i];
        let indent = line.len() - line.trim_start().len();
        if let Some(rest) = line.trim_start().strip_prefix("expr:") {
            let rest = rest.trim();
            if rest.starts_with('|') || rest.starts_with('>') {
                let mut block = String::new();
                i += 1;
                while i < lines.len()
                    && (lines[i].trim().is_empty()
                        || lines[i].len() - lines[i].trim_start().len() > indent)
                {
                    block.push_str(lines[i].trim());
                    block.push('\n');
                    i += 1;
                }
                out.push(block);
                continue;
            }
            out.push(rest.trim_matches('\'').trim_matches('"').to_string());
        }
        i += 1;
    }
    out
}

/// The series selectors of a rules test file's `input_series`.
fn test_series(yaml: &str) -> Vec<String> {
    yaml.lines()
        .filter_map(|l| l.trim_start().strip_prefix("- series:"))
        .map(|s| s.trim().trim_matches('\'').to_string())
        .collect()
}

/// The identifiers of a PromQL expression outside string literals: metric
/// names, functions, label names, keywords.
fn identifiers(expr: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut chars = expr.chars().peekable();
    let mut current = String::new();
    while let Some(c) = chars.next() {
        if c == '"' || c == '\'' || c == '`' {
            if !current.is_empty() {
                out.push(std::mem::take(&mut current));
            }
            let mut escaped = false;
            for d in chars.by_ref() {
                if escaped {
                    escaped = false;
                } else if d == '\\' {
                    escaped = true;
                } else if d == c {
                    break;
                }
            }
            continue;
        }
        if c.is_ascii_alphanumeric() || c == '_' || c == ':' {
            current.push(c);
        } else if !current.is_empty() {
            out.push(std::mem::take(&mut current));
        }
    }
    if !current.is_empty() {
        out.push(current);
    }
    out
}

fn recording_rules(yaml: &str) -> BTreeSet<String> {
    yaml.lines()
        .filter_map(|l| l.trim_start().strip_prefix("- record:"))
        .map(|s| s.trim().to_string())
        .collect()
}

/// Checks every `rps_…` / `rps:…` identifier of `expr`; returns the
/// metrics it names (a histogram's series by its own name).
fn check_names(
    what: &str,
    expr: &str,
    series: &BTreeSet<String>,
    recorded: &BTreeSet<String>,
) -> BTreeSet<String> {
    let mut used = BTreeSet::new();
    for id in identifiers(expr) {
        if id.starts_with("rps:") {
            assert!(
                recorded.contains(&id),
                "{what}: {id} is no recording rule of alerts.yml\n{expr}"
            );
        } else if id.starts_with("rps_") {
            assert!(
                series.contains(&id),
                "{what}: {id} is not a metric any crate declares\n{expr}"
            );
            let base = ["_bucket", "_sum", "_count"]
                .iter()
                .find_map(|s| {
                    id.strip_suffix(s)
                        .filter(|b| metrics_catalog::histograms().any(|h| h.0 == *b))
                })
                .unwrap_or(&id);
            used.insert(base.to_string());
        }
    }
    used
}

fn dashboard_exprs() -> Vec<(String, String)> {
    let text = std::fs::read_to_string(deploy("grafana/rps.json")).unwrap();
    let dash: serde_json::Value = serde_json::from_str(&text).expect("rps.json is JSON");
    let mut out = Vec::new();
    fn walk(v: &serde_json::Value, title: &str, out: &mut Vec<(String, String)>) {
        match v {
            serde_json::Value::Object(m) => {
                let title = m
                    .get("title")
                    .and_then(|t| t.as_str())
                    .unwrap_or(title)
                    .to_string();
                if let Some(e) = m.get("expr").and_then(|e| e.as_str()) {
                    out.push((title.clone(), e.to_string()));
                }
                for v in m.values() {
                    walk(v, &title, out);
                }
            }
            serde_json::Value::Array(a) => {
                for v in a {
                    walk(v, title, out);
                }
            }
            _ => {}
        }
    }
    walk(&dash, "", &mut out);
    out
}

#[test]
fn rules_tests_and_dashboard_name_only_declared_metrics() {
    let series: BTreeSet<String> = metrics_catalog::series_names().into_iter().collect();
    let rules = std::fs::read_to_string(deploy("prometheus/alerts.yml")).unwrap();
    let tests = std::fs::read_to_string(deploy("prometheus/alerts.test.yml")).unwrap();
    let recorded = recording_rules(&rules);

    let exprs = rule_exprs(&rules);
    assert!(exprs.len() >= 10, "{exprs:?}");
    let mut in_rules = BTreeSet::new();
    for e in &exprs {
        in_rules.extend(check_names("alerts.yml", e, &series, &recorded));
    }
    let inputs = test_series(&tests);
    assert!(inputs.len() >= 20, "{inputs:?}");
    for s in &inputs {
        check_names("alerts.test.yml", s, &series, &recorded);
    }

    let panels = dashboard_exprs();
    assert!(panels.len() >= 20, "{panels:?}");
    let mut in_dashboard = BTreeSet::new();
    for (title, e) in &panels {
        in_dashboard.extend(check_names(
            &format!("rps.json panel {title:?}"),
            e,
            &series,
            &recorded,
        ));
    }
    // The dashboard shows what the alerts watch.
    for m in &in_rules {
        assert!(
            in_dashboard.contains(m),
            "{m} is alerted on but on no dashboard panel"
        );
    }
}

#[test]
fn every_alert_is_exercised_by_the_rule_tests() {
    let rules = std::fs::read_to_string(deploy("prometheus/alerts.yml")).unwrap();
    let tests = std::fs::read_to_string(deploy("prometheus/alerts.test.yml")).unwrap();
    let alerts: Vec<&str> = rules
        .lines()
        .filter_map(|l| l.trim_start().strip_prefix("- alert:"))
        .map(str::trim)
        .collect();
    for required in [
        "RpsReaderDown",
        "RpsReaderLagGrowing",
        "RpsProjectorLagGrowing",
        "RpsDeadLettersRising",
        "RpsDeadlinesOverdue",
        "RpsFreshnessOverBudget",
        "RpsRebuildStuck",
    ] {
        assert!(alerts.contains(&required), "alerts.yml lacks {required}");
    }
    // Each alert has a test case where it fires (an expected label set
    // follows its name before the next case).
    for a in &alerts {
        let fires = tests
            .split(&format!("alertname: {a}\n"))
            .skip(1)
            .any(|after| {
                let case = after.split("alertname:").next().unwrap_or("");
                case.contains("exp_labels:")
            });
        assert!(fires, "no test in alerts.test.yml where {a} fires");
    }
}

#[test]
fn the_identifier_scan_skips_strings_and_sees_names() {
    let ids = identifiers(
        r#"label_replace(sum(rate(rps_x_total{job=~"rps_y"}[5m])), "source", "rps_z", "", "") or rps:a:sum"#,
    );
    assert!(ids.contains(&"rps_x_total".to_string()));
    assert!(ids.contains(&"rps:a:sum".to_string()));
    assert!(!ids.iter().any(|i| i == "rps_y" || i == "rps_z"));
    let exprs = rule_exprs("    expr: |\n      a\n      or b\n    for: 1m\n    expr: up == 0\n");
    assert_eq!(exprs, vec!["a\nor b\n".to_string(), "up == 0".to_string()]);
}
