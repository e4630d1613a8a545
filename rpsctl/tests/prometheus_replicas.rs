//! The metrics aggregate in a real Prometheus (Debian's `prometheus`
//! package; `scripts/dev-env.sh up` installs it). A reader, two projector
//! replicas and two compensator replicas run as `rpsctl` processes with
//! their metrics endpoints; a private Prometheus scrapes all five every
//! second and evaluates deploy/prometheus/alerts.yml. Matches started with
//! near deadlines, none finished, make every part work: the reader
//! publishes, the projectors apply and set deadlines, the compensators
//! fire `timed_out`, which the projectors apply again.
//!
//! Then Prometheus' sums over the replicas equal the sums of the raw
//! `/metrics` of the replicas, bucket by bucket and counter by counter;
//! `histogram_quantile(q, sum by (le) (h_bucket))` over both
//! replicas equals, within bucket resolution, the quantile computed from
//! the raw bucket counts; every dashboard expression evaluates; every rule
//! evaluates without error.

use rps_core::{MatchEvent, ShardId, Timestamp};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};
use test_support::{eventually, TestEnv};

use test_support::KillOnDrop as Proc;

#[path = "common/component.rs"]
mod component;
use component::spawn_component;

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

fn prometheus_binary() -> &'static str {
    match Command::new("prometheus").arg("--version").output() {
        Ok(o) if o.status.success() => "prometheus",
        other => panic!(
            "the `prometheus` binary is needed for this test and could not be run ({other:?}); \
             `scripts/dev-env.sh up` installs Debian's prometheus package (apt-get install prometheus)"
        ),
    }
}

async fn http(url: &str) -> Option<(u16, String)> {
    let r = reqwest::Client::new()
        .get(url)
        .timeout(Duration::from_secs(10))
        .send()
        .await
        .ok()?;
    let status = r.status().as_u16();
    Some((status, r.text().await.ok()?))
}

async fn raw_metrics(port: u16) -> String {
    let (status, text) = http(&format!("http://127.0.0.1:{port}/metrics"))
        .await
        .expect("metrics endpoint");
    assert_eq!(status, 200);
    text
}

/// One sample line of the text format: name, labels, value.
fn samples(text: &str) -> Vec<(String, BTreeMap<String, String>, f64)> {
    let mut out = Vec::new();
    for line in text.lines() {
        if line.starts_with('#') || line.trim().is_empty() {
            continue;
        }
        let Some((series, value)) = line.rsplit_once(' ') else {
            continue;
        };
        let value: f64 = match value {
            "+Inf" => f64::INFINITY,
            v => v.parse().unwrap_or(f64::NAN),
        };
        let (name, labels) = match series.split_once('{') {
            Some((n, rest)) => (n, rest.trim_end_matches('}')),
            None => (series, ""),
        };
        let mut map = BTreeMap::new();
        for pair in labels.split("\",").filter(|p| !p.is_empty()) {
            if let Some((k, v)) = pair.split_once("=\"") {
                map.insert(k.to_string(), v.trim_end_matches('"').to_string());
            }
        }
        out.push((name.to_string(), map, value));
    }
    out
}

fn raw_sum(texts: &[String], name: &str) -> f64 {
    texts
        .iter()
        .flat_map(|t| samples(t))
        .filter(|(n, _, _)| n == name)
        .map(|(_, _, v)| v)
        .sum()
}

/// Cumulative bucket counts summed over the replicas, by upper bound.
fn raw_buckets(texts: &[String], histogram: &str) -> Vec<(f64, f64)> {
    let mut by_le: BTreeMap<String, (f64, f64)> = BTreeMap::new();
    let bucket = format!("{histogram}_bucket");
    for (name, labels, v) in texts.iter().flat_map(|t| samples(t)) {
        if name != bucket {
            continue;
        }
        let le = labels["le"].clone();
        let bound = if le == "+Inf" {
            f64::INFINITY
        } else {
            le.parse().unwrap()
        };
        by_le.entry(le).or_insert((bound, 0.0)).1 += v;
    }
    let mut out: Vec<(f64, f64)> = by_le.into_values().collect();
    out.sort_by(|a, b| a.0.total_cmp(&b.0));
    out
}

/// Prometheus' `histogram_quantile` over cumulative buckets (promql
/// `bucketQuantile`): linear interpolation inside the bucket that holds
/// the rank, the lower bound of the first bucket being 0.
fn quantile(q: f64, buckets: &[(f64, f64)]) -> f64 {
    assert!(buckets.len() >= 2 && buckets.last().unwrap().0.is_infinite());
    let total = buckets.last().unwrap().1;
    if total == 0.0 {
        return f64::NAN;
    }
    let mut rank = q * total;
    let b = buckets.iter().position(|(_, c)| *c >= rank).unwrap();
    if b == buckets.len() - 1 {
        return buckets[b - 1].0;
    }
    let (mut start, end, mut count) = (0.0, buckets[b].0, buckets[b].1);
    if b > 0 {
        start = buckets[b - 1].0;
        count -= buckets[b - 1].1;
        rank -= buckets[b - 1].1;
    }
    start + (end - start) * (rank / count)
}

/// The bucket `(lower, upper]` a value falls in.
fn bucket_of(v: f64, buckets: &[(f64, f64)]) -> (f64, f64) {
    let mut lower = 0.0;
    for (upper, _) in buckets {
        if v <= *upper {
            return (lower, *upper);
        }
        lower = *upper;
    }
    (lower, f64::INFINITY)
}

struct Prometheus {
    port: u16,
    _proc: Proc,
    _dir: tempfile::TempDir,
}

impl Prometheus {
    async fn start(jobs: &[(&str, Vec<u16>)]) -> Prometheus {
        let binary = prometheus_binary();
        let dir = tempfile::Builder::new()
            .prefix("rps-prometheus-")
            .tempdir()
            .unwrap();
        let rules = repo().join("deploy/prometheus/alerts.yml");
        let mut config = format!(
            "global:\n  scrape_interval: 1s\n  scrape_timeout: 900ms\n  evaluation_interval: 1s\n\
             rule_files:\n  - {}\nscrape_configs:\n",
            rules.canonicalize().unwrap().display()
        );
        for (job, ports) in jobs {
            let targets: Vec<String> = ports.iter().map(|p| format!("\"127.0.0.1:{p}\"")).collect();
            config.push_str(&format!(
                "  - job_name: {job}\n    static_configs:\n      - targets: [{}]\n",
                targets.join(", ")
            ));
        }
        let config_path = dir.path().join("prometheus.yml");
        std::fs::write(&config_path, &config).unwrap();
        let port = test_support::free_port();
        let log = std::fs::File::create(dir.path().join("prometheus.log")).unwrap();
        let child = Command::new(binary)
            .arg(format!("--config.file={}", config_path.display()))
            .arg(format!(
                "--storage.tsdb.path={}",
                dir.path().join("data").display()
            ))
            .arg(format!("--web.listen-address=127.0.0.1:{port}"))
            .arg("--storage.tsdb.retention.time=1h")
            .stdout(Stdio::null())
            .stderr(Stdio::from(log))
            .spawn()
            .expect("spawn prometheus");
        let me = Prometheus {
            port,
            _proc: Proc(child),
            _dir: dir,
        };
        eventually("Prometheus ready", Duration::from_secs(60), || async {
            http(&format!("http://127.0.0.1:{port}/-/ready"))
                .await
                .filter(|(s, _)| *s == 200)
                .map(|_| ())
        })
        .await;
        me
    }

    /// An instant query at `at` (Unix seconds): the result vector's
    /// (labels, value), or the error text.
    async fn query(&self, expr: &str, at: f64) -> Result<Vec<(serde_json::Value, f64)>, String> {
        let r = reqwest::Client::new()
            .get(format!("http://127.0.0.1:{}/api/v1/query", self.port))
            .query(&[("query", expr), ("time", &format!("{at:.3}"))])
            .timeout(Duration::from_secs(10))
            .send()
            .await
            .map_err(|e| e.to_string())?;
        let body: serde_json::Value = r.json().await.map_err(|e| e.to_string())?;
        if body["status"] != "success" {
            return Err(body.to_string());
        }
        let data = &body["data"];
        let parse = |v: &serde_json::Value| -> f64 {
            match v.as_str().unwrap_or("NaN") {
                "+Inf" => f64::INFINITY,
                "-Inf" => f64::NEG_INFINITY,
                s => s.parse().unwrap_or(f64::NAN),
            }
        };
        Ok(match data["resultType"].as_str() {
            Some("vector") => data["result"]
                .as_array()
                .unwrap()
                .iter()
                .map(|s| (s["metric"].clone(), parse(&s["value"][1])))
                .collect(),
            Some("scalar") => vec![(serde_json::Value::Null, parse(&data["result"][1]))],
            _ => Vec::new(),
        })
    }

    async fn scalar(&self, expr: &str, at: f64) -> f64 {
        let r = self
            .query(expr, at)
            .await
            .unwrap_or_else(|e| panic!("{expr}: {e}"));
        assert_eq!(r.len(), 1, "{expr}: one series expected, got {r:?}");
        r[0].1
    }
}

fn now_secs() -> f64 {
    Timestamp::now().as_micros() as f64 / 1e6
}

/// `n` matches per shard, started now, none ever finished: each gets a
/// `timed_out` from a compensator at its deadline, 4 to 7 s from now.
fn open_matches(shard_count: u16, n: usize) -> BTreeMap<ShardId, Vec<MatchEvent>> {
    let now = Timestamp::now();
    let mut out = BTreeMap::new();
    for shard in 0..shard_count {
        let events = (0..n as i64)
            .map(|k| {
                let a = i64::from(shard) + i64::from(shard_count) * (k + 1);
                let match_id = 7_000_000 + i64::from(shard) * 10_000 + k;
                let spread = (k * 3_000_000) / n as i64;
                MatchEvent::started(
                    // Unique and distinct from the timed_out's (version 2).
                    MatchEvent::timed_out_event_id(match_id, 1),
                    match_id,
                    "2026Q4".parse().unwrap(),
                    (a, a + 1),
                    now,
                    Timestamp(now.0 + 4_000_000 + spread),
                )
            })
            .collect();
        out.insert(shard, events);
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_replicas_aggregate_in_a_real_prometheus() {
    prometheus_binary();
    let env = TestEnv::new("prom_replicas").await;
    let (_config_dir, config) = env.write_config_file();
    let logs = tempfile::Builder::new()
        .prefix("rps-logs-")
        .tempdir()
        .unwrap();
    let log = |name: &str| logs.path().join(format!("{name}.log"));

    // The reader first: its first start bootstraps the state the others use.
    let reader_port = test_support::free_port();
    let _reader = spawn_component(&config, "cdc-reader", reader_port, &log("cdc-reader"));
    let ready = |port: u16| async move {
        eventually(
            &format!("/readyz of :{port}"),
            Duration::from_secs(90),
            || async move {
                http(&format!("http://127.0.0.1:{port}/readyz"))
                    .await
                    .filter(|(s, _)| *s == 200)
                    .map(|_| ())
            },
        )
        .await
    };
    ready(reader_port).await;
    let projector_ports = [test_support::free_port(), test_support::free_port()];
    let compensator_ports = [test_support::free_port(), test_support::free_port()];
    let mut procs = Vec::new();
    for (i, p) in projector_ports.iter().enumerate() {
        procs.push(spawn_component(
            &config,
            "projector",
            *p,
            &log(&format!("projector-{i}")),
        ));
    }
    for (i, p) in compensator_ports.iter().enumerate() {
        procs.push(spawn_component(
            &config,
            "compensator",
            *p,
            &log(&format!("compensator-{i}")),
        ));
    }
    for p in projector_ports.iter().chain(&compensator_ports) {
        ready(*p).await;
    }

    let prom = Prometheus::start(&[
        ("rps-cdc-reader", vec![reader_port]),
        ("rps-projector", projector_ports.to_vec()),
        ("rps-compensator", compensator_ports.to_vec()),
    ])
    .await;
    eventually(
        "every target scraped and up",
        Duration::from_secs(30),
        || async {
            let up = prom.query("sum(up)", now_secs()).await.ok()?;
            (up.first()?.1 == 5.0).then_some(())
        },
    )
    .await;
    // A few scrapes with every series at zero before the load: a rate over
    // a window then counts the whole load.
    tokio::time::sleep(Duration::from_secs(3)).await;

    let per_shard = 60;
    let matches = open_matches(env.config.shard_count, per_shard);
    let n = (per_shard * usize::from(env.config.shard_count)) as f64;
    let load_started = Instant::now();
    let mut writers = Vec::new();
    for (shard, events) in matches {
        writers.push(test_support::spawn_append(&env.store, shard, events, 20));
    }
    for w in writers {
        w.await.unwrap();
    }

    // The first projector to start holds every shard's lease. Pausing it
    // past its leases hands the shards to the other replica, so the
    // `started` events are applied by one replica and the `timed_out`
    // events by the other, and both histograms and counters have data.
    let applied_by =
        |text: &str| raw_sum(&[text.to_string()], "rps_projector_events_applied_total");
    let texts = eventually("every started applied", Duration::from_secs(60), || async {
        let mut texts = Vec::new();
        for p in projector_ports {
            texts.push(raw_metrics(p).await);
        }
        (texts.iter().map(|t| applied_by(t)).sum::<f64>() == n).then_some(texts)
    })
    .await;
    if let Some(busy) = texts.iter().position(|t| applied_by(t) == n) {
        let pid = procs[busy].0.id().to_string();
        let signal = |sig: &str| {
            let ok = Command::new("kill").args([sig, &pid]).status().unwrap();
            assert!(ok.success(), "kill {sig} {pid}");
        };
        signal("-STOP");
        let other = projector_ports[1 - busy];
        let shards = f64::from(env.config.shard_count);
        eventually(
            "the other projector took the shards over",
            Duration::from_secs(30),
            || async move {
                let t = raw_metrics(other).await;
                (raw_sum(&[t], "rps_projector_leases_acquired_total") >= shards).then_some(())
            },
        )
        .await;
        signal("-CONT");
    }

    let endpoints = |ports: Vec<u16>| async move {
        let mut texts = Vec::new();
        for p in ports {
            texts.push(raw_metrics(p).await);
        }
        texts
    };
    eventually(
        "every deadline fired and every event applied",
        Duration::from_secs(90),
        || async {
            let c = endpoints(compensator_ports.to_vec()).await;
            let p = endpoints(projector_ports.to_vec()).await;
            (raw_sum(&c, "rps_compensator_fired_total") == n
                && raw_sum(&p, "rps_projector_events_applied_total") == 2.0 * n)
                .then_some(())
        },
    )
    .await;
    eprintln!(
        "{n} matches started and timed out in {:.1} s",
        load_started.elapsed().as_secs_f64()
    );
    // Quiet now; Prometheus scrapes the final values.
    tokio::time::sleep(Duration::from_secs(4)).await;
    let at = now_secs();
    let compensators = endpoints(compensator_ports.to_vec()).await;
    let projectors = endpoints(projector_ports.to_vec()).await;
    let readers = endpoints(vec![reader_port]).await;

    // Counters: Prometheus' sum over the replicas is the sum of the endpoints.
    for (expr, texts, name, expected) in [
        (
            "sum(rps_compensator_fired_total)",
            &compensators,
            "rps_compensator_fired_total",
            n,
        ),
        (
            "sum(rps_projector_events_applied_total)",
            &projectors,
            "rps_projector_events_applied_total",
            2.0 * n,
        ),
        (
            "sum(rps_cdc_events_published_total)",
            &readers,
            "rps_cdc_events_published_total",
            2.0 * n,
        ),
    ] {
        let raw = raw_sum(texts, name);
        let summed = prom.scalar(expr, at).await;
        let each: Vec<f64> = texts
            .iter()
            .map(|t| raw_sum(std::slice::from_ref(t), name))
            .collect();
        eprintln!("{expr} = {summed}; endpoints {each:?}");
        assert_eq!(summed, raw, "{expr}");
        assert_eq!(raw, expected, "{expr}");
    }
    let by_type = prom
        .query("sum by (type) (rps_projector_events_applied_total)", at)
        .await
        .unwrap();
    let of = |t: &str| {
        by_type
            .iter()
            .find(|(m, _)| m["type"] == t)
            .map(|(_, v)| *v)
            .unwrap_or(0.0)
    };
    assert_eq!(
        (of("started"), of("timed_out"), of("finished")),
        (n, n, 0.0)
    );

    // Histograms: bucket sums equal; quantiles equal within a bucket.
    for (histogram, texts) in [
        ("rps_compensator_firing_delay_seconds", &compensators),
        ("rps_projector_freshness_seconds", &projectors),
        ("rps_projector_batch_apply_seconds", &projectors),
    ] {
        let raw = raw_buckets(texts, histogram);
        assert!(raw.len() > 5, "{histogram} is a histogram: {raw:?}");
        let summed = prom
            .query(&format!("sum by (le) ({histogram}_bucket)"), at)
            .await
            .unwrap();
        assert_eq!(summed.len(), raw.len(), "{histogram}: {summed:?}");
        for (labels, v) in &summed {
            let le = labels["le"].as_str().unwrap();
            let bound = if le == "+Inf" {
                f64::INFINITY
            } else {
                le.parse().unwrap()
            };
            let raw_count = raw.iter().find(|(b, _)| *b == bound).map(|b| b.1);
            assert_eq!(Some(*v), raw_count, "{histogram} le={le}");
        }
        let each: Vec<f64> = texts
            .iter()
            .map(|t| raw_sum(std::slice::from_ref(t), &format!("{histogram}_count")))
            .collect();
        for q in [0.5, 0.99] {
            // Over the totals, not over `rate(…[5m])`: a rate leaves out
            // what a series counted before its first scrape, so its
            // quantile may fall in the next bucket whenever the median sits
            // at a bucket's edge, and the comparison with the raw buckets
            // would be a coin toss.
            let expr = format!("histogram_quantile({q}, sum by (le) ({histogram}_bucket))");
            let from_prometheus = prom.scalar(&expr, at).await;
            let from_raw = quantile(q, &raw);
            let (lower, upper) = bucket_of(from_raw, &raw);
            eprintln!(
                "{histogram} p{}: Prometheus {:.6} s, raw buckets {:.6} s (bucket {lower}..{upper}; \
                 observations per replica {each:?})",
                q * 100.0,
                from_prometheus,
                from_raw
            );
            assert!(
                from_prometheus > lower - 1e-9 && from_prometheus <= upper + 1e-9,
                "{expr} = {from_prometheus}, raw {from_raw} in ({lower}, {upper}]"
            );
            assert!(
                (from_prometheus - from_raw).abs() <= (upper - lower).max(1e-9),
                "{expr} = {from_prometheus}, raw {from_raw}"
            );
        }
    }

    // Every expression of the dashboard evaluates on the real series.
    let dashboard: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(repo().join("deploy/grafana/rps.json")).unwrap(),
    )
    .unwrap();
    let mut exprs = Vec::new();
    fn collect(v: &serde_json::Value, out: &mut Vec<String>) {
        match v {
            serde_json::Value::Object(m) => {
                if let Some(e) = m.get("expr").and_then(|e| e.as_str()) {
                    out.push(e.to_string());
                }
                m.values().for_each(|v| collect(v, out));
            }
            serde_json::Value::Array(a) => a.iter().for_each(|v| collect(v, out)),
            _ => {}
        }
    }
    collect(&dashboard, &mut exprs);
    let mut with_data = 0;
    for e in &exprs {
        let expr = e.replace("$__rate_interval", "1m");
        let r = prom
            .query(&expr, at)
            .await
            .unwrap_or_else(|err| panic!("dashboard expression {expr}: {err}"));
        with_data += usize::from(!r.is_empty());
    }
    eprintln!(
        "{} dashboard expressions evaluate, {with_data} with data",
        exprs.len()
    );
    assert!(with_data * 2 > exprs.len(), "most panels show data");

    // Every rule has been evaluated without an error.
    let (_, rules) = http(&format!("http://127.0.0.1:{}/api/v1/rules", prom.port))
        .await
        .unwrap();
    let rules: serde_json::Value = serde_json::from_str(&rules).unwrap();
    let mut evaluated = 0;
    for group in rules["data"]["groups"].as_array().unwrap() {
        for rule in group["rules"].as_array().unwrap() {
            assert_eq!(rule["health"], "ok", "{rule}");
            evaluated += 1;
        }
    }
    assert!(evaluated >= 10, "{rules}");
    let recorded = prom.query("rps:dead_letters:sum", at).await.unwrap();
    assert!(
        recorded.iter().all(|(_, v)| *v == 0.0),
        "no dead letters in this run: {recorded:?}"
    );

    drop(procs);
    drop(_reader);
    env.cleanup().await;
}
