//! The saga dashboard in a real browser. `rpsctl run` (reader, projector,
//! compensator and API in one process) against the local MariaDB and
//! Redis while the simulator plays a rate-limited tournament with
//! abandoned and voided matches and one bad row; headless Chromium opens
//! `/dashboard` and is driven over the DevTools protocol:
//!
//! - live data arrives by itself (events/s above 0, charts filling);
//! - every figure the page shows (read back from the page's text) agrees
//!   with the `/v1/dashboard` snapshot it rendered, and at the quiet moment
//!   with `/v1/status` and with the fold of history (`verify` passes, so
//!   the lifecycle counters are exact);
//! - the page logs no error and throws nothing;
//! - with the API alone the metric figures say n/a, a replay building the
//!   next generation shows as such, and a missing generation marker (the
//!   API answers 503) shows a clear "rebuilding" state.
//!
//! Screenshots go to `target/test-output/dashboard*.png`.

#[path = "common/cdp.rs"]
mod cdp;
#[path = "common/quiet.rs"]
mod quiet;
#[path = "common/tournament.rs"]
mod tournament;

use mysql_async::prelude::Queryable;
use read_model::ReadModelKeys;
use serde_json::Value as Json;
use std::process::{Command, Stdio};
use std::time::Duration;
use test_support::{eventually, TestEnv};
use tokio_util::sync::CancellationToken;

const WIDTH: u32 = 1440;
const HEIGHT: u32 = 900;

use test_support::KillOnDrop as Process;

fn rpsctl(config: &std::path::Path, args: &[&str]) -> Process {
    Process(
        Command::new(env!("CARGO_BIN_EXE_rpsctl"))
            .arg("--config")
            .arg(config)
            .args(args)
            .env("RUST_LOG", "warn")
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("start rpsctl"),
    )
}

/// What the page shows: every `[data-k]` element's text with how it is
/// formatted, the sample it rendered, its state and the charts' points.
const READ_PAGE: &str = r#"(() => {
  const figures = {};
  for (const el of document.querySelectorAll('[data-k]')) {
    figures[el.dataset.k] = {text: el.textContent, f: el.dataset.f || 'text',
      d: el.dataset.d || null, yes: el.dataset.yes || null, no: el.dataset.no || null};
  }
  const d = window.dashboard || {};
  const banner = document.getElementById('banner');
  return {
    figures,
    at: d.last ? d.last.at : null,
    state: d.state || null,
    state_text: document.getElementById('state')?.textContent ?? null,
    banner: !banner || banner.hidden ? null : banner.textContent.replace(/\s+/g, ' ').trim(),
    points: Object.fromEntries(Object.entries(d.charts || {}).map(([k, c]) => [k, c.data[0].length])),
  };
})()"#;

/// The JSON value at a `data-k` path (`a.b.0.c`).
fn at_path<'a>(v: &'a Json, path: &str) -> Option<&'a Json> {
    path.split('.')
        .try_fold(v, |v, k| match k.parse::<usize>() {
            Ok(i) if v.is_array() => v.get(i),
            _ => v.get(k),
        })
}

fn number(text: &str) -> Option<f64> {
    text.replace([',', '+'], "").trim().parse().ok()
}

/// Mismatches between what the page shows and the snapshot; also how many
/// figures were compared.
fn compare(figures: &serde_json::Map<String, Json>, snap: &Json) -> (Vec<String>, usize) {
    let mut bad = Vec::new();
    for (key, shown) in figures {
        let text = shown["text"]
            .as_str()
            .unwrap_or_default()
            .trim()
            .to_string();
        let f = shown["f"].as_str().unwrap_or("text");
        let v = at_path(snap, key).cloned().unwrap_or(Json::Null);
        let ok = match (&v, f) {
            (Json::Null, _) => text == "n/a",
            (v, "int" | "delta") => number(&text).is_some_and(|n| Some(n) == v.as_f64()),
            (v, "num") => {
                let d: i32 = shown["d"]
                    .as_str()
                    .and_then(|d| d.parse().ok())
                    .unwrap_or(2);
                let tolerance = 0.5 * 10f64.powi(-d) + 1e-9;
                match (number(&text), v.as_f64()) {
                    (Some(n), Some(x)) => (n - x).abs() <= tolerance,
                    _ => false,
                }
            }
            (Json::String(s), "time") => s.get(11..19) == Some(text.as_str()),
            (Json::Bool(b), "bool") => {
                let want = if *b { &shown["yes"] } else { &shown["no"] };
                want.as_str() == Some(text.as_str())
            }
            (Json::String(s), _) => *s == text,
            (other, _) => serde_json::to_string(other).ok().as_deref() == Some(text.as_str()),
        };
        if !ok {
            bad.push(format!("{key}: page shows {text:?}, the snapshot has {v}"));
        }
    }
    (bad, figures.len())
}

/// Reads the page until it shows a snapshot the API has served, then
/// compares every figure; returns the page and that snapshot. The API's
/// sampler and the page's poll both tick every two seconds but are not in
/// step (the page waits two seconds after each answer), so the page can
/// show the previous sample for minutes; every sample the API serves is
/// kept and the page is held to the one it shows.
async fn page_agrees(page: &cdp::Page<'_>, http: &reqwest::Client, base: &str) -> (Json, Json) {
    let mut served: std::collections::HashMap<String, Json> = std::collections::HashMap::new();
    let mut last = String::new();
    for _ in 0..80 {
        match http.get(format!("{base}/v1/dashboard")).send().await {
            Ok(r) if r.status().is_success() => {
                let snap: Json = r.json().await.expect("dashboard json");
                served.insert(snap["at"].to_string(), snap);
            }
            Ok(r) => last = format!("/v1/dashboard answered {}", r.status()),
            Err(e) => panic!("/v1/dashboard: {e}"),
        }
        let shown = page.eval(READ_PAGE).await;
        let Some(snap) = served.get(&shown["at"].to_string()) else {
            if !served.is_empty() {
                last = format!("page at {}, a sample the API never served", shown["at"]);
            }
            tokio::time::sleep(Duration::from_millis(250)).await;
            continue;
        };
        let (bad, n) = compare(shown["figures"].as_object().expect("figures"), snap);
        assert!(
            bad.is_empty(),
            "the page disagrees with /v1/dashboard at {}:\n{}",
            snap["at"],
            bad.join("\n")
        );
        // Cards, the servers' and the shards' rows at least.
        assert!(n >= 40, "only {n} figures on the page");
        return (shown, snap.clone());
    }
    panic!("the page never showed a snapshot the API served ({last})");
}

/// A browser log entry the rebuild phase expects: the page's own polls
/// answered 503, or refused while the API process was being replaced.
fn expected_while_rebuilding(entry: &Json) -> bool {
    let text = entry["text"].as_str().unwrap_or_default();
    entry["source"].as_str() == Some("network")
        && (text.contains("503") || text.contains("ERR_CONNECTION_REFUSED"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_dashboard_shows_the_live_pipeline_in_a_browser() {
    // Fail early and clearly when there is no browser.
    let _ = cdp::chromium();
    let t = tournament::start(TestEnv::new("dash").await).await;
    let env = &t.env;
    let base = format!("http://{}", env.config.api.bind);
    let http = reqwest::Client::new();
    let out = cdp::output_dir();
    let redis = env.redis().await;
    let keys = env.config.keys();

    eventually(
        "the dashboard to answer",
        Duration::from_secs(30),
        || async {
            let r = http.get(format!("{base}/v1/dashboard")).send().await.ok()?;
            r.status().is_success().then_some(())
        },
    )
    .await;

    let browser = cdp::Browser::launch(WIDTH, HEIGHT).await;
    let page = browser.new_page(WIDTH, HEIGHT).await;
    page.navigate(&format!("{base}/dashboard")).await;
    eventually(
        "the page to render a snapshot",
        Duration::from_secs(30),
        || async {
            let s = page.eval(READ_PAGE).await;
            (s["state"] == "live").then_some(())
        },
    )
    .await;

    // Load: about 20 s of matches at a steady rate, a tenth abandoned (the
    // compensator times them out), some voided.
    let load = tournament::play(
        env,
        simulator::SimulateOptions {
            rate: Some(150.0),
            ..tournament::matches(300, 3_000, 500)
        },
    );
    // One row the projector must refuse: a move in a match nobody started.
    {
        let mut conn = env.admin_conn(0).await;
        conn.query_drop(format!(
            "INSERT INTO `{}`.match_result_events \
             (event_id, match_id, version, event_type, season_id, player_a_id, player_b_id, gesture_a, occurred_at) \
             VALUES (UUID(), 987654321, 2, 'moved', '2026Q4', {sc}, {b}, 'rock', NOW(6))",
            env.config.database(0),
            sc = env.config.shard_count,
            b = env.config.shard_count + 1,
        ))
        .await
        .expect("insert a bad row");
    }

    // Live data arrives by itself, and the charts fill.
    eventually(
        "live events/s on the page",
        Duration::from_secs(60),
        || async {
            let s = page.eval(READ_PAGE).await;
            let rate = number(s["figures"]["events_per_second.published"]["text"].as_str()?)?;
            let points = s["points"]["chart-events"].as_u64()?;
            (rate > 0.0 && points >= 3).then_some(())
        },
    )
    .await;
    // Under load the page agrees with the snapshot it shows.
    let (_, snap) = page_agrees(&page, &http, &base).await;
    assert_eq!(snap["in_process_metrics"], true);
    assert!(snap["events_per_second"]["published"].as_f64().unwrap() > 0.0);
    page.screenshot(&out.join("dashboard-under-load.png")).await;

    let report = load.await.expect("simulator task");
    assert!(report.abandoned > 0 && report.voided > 0, "{report:?}");
    eventually(
        "every abandoned match timed out",
        Duration::from_secs(90),
        || {
            let env = &env;
            async move { (env.count_events("timed_out").await >= report.abandoned).then_some(()) }
        },
    )
    .await;
    // Quiet moment: the read models are the fold of history (the lifecycle
    // counters included), and the page shows them.
    quiet::read_models_equal_the_fold_unmoved(env).await;
    let (shown, snap) = eventually(
        "the page to show the quiet state",
        Duration::from_secs(60),
        || {
            let (page, http, base) = (&page, &http, &base);
            async move {
                let (shown, snap) = page_agrees(page, http, base).await;
                let caught_up = snap["shards"]
                    .as_array()?
                    .iter()
                    .all(|s| s["lag_entries"] == 0 && s["last_applied_id"] == s["stream_last_id"]);
                let quiet = caught_up
                    && snap["matches"]["now"]["in_progress"] == 0
                    && snap["deadlines"]["pending"] == 0
                    && snap["dead_letters"]["total"].as_u64()? >= 1;
                quiet.then_some((shown, snap))
            }
        },
    )
    .await;
    let now = &snap["matches"]["now"];
    assert_eq!(now["timed_out"], report.abandoned, "{now}");
    assert_eq!(now["voided"], report.voided, "{now}");
    assert_eq!(now["finished"], report.finished, "{now}");
    assert_eq!(now["total"], report.matches_started, "{now}");
    assert_eq!(snap["compensations"]["fired"], report.abandoned);
    assert_eq!(snap["compensations"]["timed_out_matches"], report.abandoned);
    assert!(snap["freshness_seconds"]["count"].as_u64().unwrap() > 0);
    assert!(snap["matches"]["last_minute"]["finished"].as_i64().unwrap() > 0);
    assert!(snap["compensations"]["fired_last_minute"].is_u64());
    assert!(snap["servers"][0]["lag_bytes"].is_u64());
    assert!(snap["dead_letters"]["by_reason"]
        .as_array()
        .unwrap()
        .iter()
        .any(|r| r["origin"] == "projector"));
    // The shards as /v1/status has them.
    let status: Json = http
        .get(format!("{base}/v1/status"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(status["generation"], snap["generation"]);
    let figures = &shown["figures"];
    assert_eq!(
        figures["generation"]["text"],
        status["generation"].to_string()
    );
    for s in status["shards"].as_array().unwrap() {
        let i = s["shard"].as_u64().unwrap();
        assert_eq!(
            figures[format!("shards.{i}.last_applied_id")]["text"],
            s["last_applied_id"],
            "shard {i}"
        );
        assert_eq!(
            figures[format!("shards.{i}.lag_entries")]["text"],
            s["lag_entries"].to_string(),
            "shard {i}"
        );
    }
    assert_eq!(
        figures["matches.now.timed_out"]["text"],
        report.abandoned.to_string()
    );
    page.screenshot(&out.join("dashboard.png")).await;
    let errors = cdp::page_errors(&page.events(), |_| false);
    assert!(
        errors.is_empty(),
        "the page reported errors:\n{}",
        errors.join("\n")
    );

    // `verify` holds the lifecycle counters to the fold like any read
    // model, and `--repair` puts a wrong one right.
    let g = snap["generation"].as_u64().unwrap();
    let lifecycle = env.config.keys().generation_keys(g).lifecycle(0);
    {
        use fred::interfaces::HashesInterface;
        let _: i64 = redis.hincrby(&lifecycle, "finished", 5).await.unwrap();
    }
    let r = history::verify::run(
        env.config.clone(),
        history::verify::VerifyOptions {
            repair: true,
            ..Default::default()
        },
        CancellationToken::new(),
    )
    .await
    .expect("verify --repair");
    assert_eq!(r.total_differences, 1, "{:?}", r.differences);
    assert_eq!(r.differences[0].kind, "lifecycle");
    assert_eq!(r.differences[0].field, "finished");
    let r = history::verify::run(
        env.config.clone(),
        Default::default(),
        CancellationToken::new(),
    )
    .await
    .expect("verify");
    assert_eq!(r.total_differences, 0, "{:?}", r.differences);

    // The API alone: the figures only metrics have say n/a.
    drop(t.pipeline);
    let _api = rpsctl(&t.path, &["api"]);
    eventually(
        "the API alone to answer",
        Duration::from_secs(30),
        || async {
            let r = http.get(format!("{base}/v1/dashboard")).send().await.ok()?;
            let b: Json = r.json().await.ok()?;
            (b["in_process_metrics"] == false).then_some(())
        },
    )
    .await;
    let (shown, snap) = eventually(
        "the page to follow the new process",
        Duration::from_secs(30),
        || {
            let (page, http, base) = (&page, &http, &base);
            async move {
                let (shown, snap) = page_agrees(page, http, base).await;
                (snap["in_process_metrics"] == false).then_some((shown, snap))
            }
        },
    )
    .await;
    for key in [
        "compensations.fired",
        "freshness_seconds.p99",
        "servers.0.lag_bytes",
    ] {
        assert_eq!(shown["figures"][key]["text"], "n/a", "{key}");
    }
    assert_eq!(snap["matches"]["now"]["timed_out"], report.abandoned);

    // A replay building the next generation.
    let g = snap["generation"].as_u64().unwrap();
    let next = env.config.keys().generation_keys(g + 1).progress(0);
    {
        use fred::interfaces::HashesInterface;
        let _: () = redis.hset(&next, ("id", "1-0")).await.unwrap();
    }
    let shown = eventually(
        "the page to show the rebuild",
        Duration::from_secs(30),
        || async {
            let s = page.eval(READ_PAGE).await;
            (s["state"] == "rebuild").then_some(s)
        },
    )
    .await;
    let banner = shown["banner"].as_str().unwrap_or_default();
    assert!(
        banner.contains(&format!("generation {} is being built", g + 1)),
        "{banner}"
    );
    page.screenshot(&out.join("dashboard-replay.png")).await;
    {
        use fred::interfaces::KeysInterface;
        let _: i64 = redis.del(&next).await.unwrap();
    }

    // No generation marker: the API answers 503 and the page says rebuilding.
    let marker: Option<String> = {
        use fred::interfaces::KeysInterface;
        let m: Option<String> = redis.get(keys.generation()).await.unwrap();
        let _: i64 = redis.del(keys.generation()).await.unwrap();
        m
    };
    let shown = eventually(
        "the page to show rebuilding",
        Duration::from_secs(30),
        || async {
            let s = page.eval(READ_PAGE).await;
            (s["state"] == "rebuilding").then_some(s)
        },
    )
    .await;
    let r = http
        .get(format!("{base}/v1/dashboard"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 503);
    assert_eq!(shown["state_text"], "rebuilding");
    let banner = shown["banner"].as_str().unwrap_or_default();
    assert!(banner.starts_with("Rebuilding"), "{banner}");
    assert!(banner.contains("503"), "{banner}");
    page.screenshot(&out.join("dashboard-rebuilding.png")).await;
    {
        use fred::interfaces::KeysInterface;
        let _: () = redis
            .set(
                keys.generation(),
                marker.expect("marker"),
                None,
                None,
                false,
            )
            .await
            .unwrap();
    }
    eventually("the page to come back", Duration::from_secs(30), || async {
        let s = page.eval(READ_PAGE).await;
        (s["state"] == "live").then_some(())
    })
    .await;
    page_agrees(&page, &http, &base).await;
    let errors = cdp::page_errors(&page.events(), expected_while_rebuilding);
    assert!(
        errors.is_empty(),
        "the page reported errors:\n{}",
        errors.join("\n")
    );
    println!(
        "screenshots: {}",
        [
            "dashboard-under-load.png",
            "dashboard.png",
            "dashboard-replay.png",
            "dashboard-rebuilding.png"
        ]
        .map(|f| out.join(f).display().to_string())
        .join(", ")
    );
    drop(browser);
    env.cleanup().await;
}

/// The dashboard reads other components' metrics and bookkeeping by name
/// (the API does not depend on them); the names are theirs.
#[test]
fn the_dashboard_reads_the_components_own_names() {
    use rps_api::dashboard::metric_names as d;
    assert_eq!(d::CDC_LAG_BYTES, cdc_reader::metrics::LAG_BYTES);
    assert_eq!(d::CDC_LAG_SECONDS, cdc_reader::metrics::LAG_SECONDS);
    assert_eq!(d::CDC_UP, cdc_reader::metrics::UP);
    assert_eq!(d::PROJECTOR_APPLIED, projector::metrics::EVENTS_APPLIED);
    assert_eq!(d::PROJECTOR_REJECTIONS, projector::metrics::REJECTIONS);
    assert_eq!(d::PROJECTOR_LAG_ENTRIES, projector::metrics::LAG_ENTRIES);
    assert_eq!(
        d::PROJECTOR_FRESHNESS,
        projector::metrics::FRESHNESS_SECONDS
    );
    assert_eq!(d::COMPENSATOR_FIRED, compensator::metrics::FIRED);
    assert_eq!(d::COMPENSATOR_RETRIES, compensator::metrics::RETRIES);
    assert_eq!(
        d::COMPENSATOR_DEAD_LETTERED,
        compensator::metrics::DEAD_LETTERED
    );
    assert_eq!(
        d::COMPENSATOR_FIRING_DELAY,
        compensator::metrics::FIRING_DELAY
    );
    assert_eq!(
        rps_api::dashboard::PARKED_LEASE,
        compensator::deadlines::PARKED as f64
    );
    assert_eq!(
        rps_api::dashboard::DEADLINE_FAILED,
        compensator::deadlines::DEADLINE_FAILED
    );
}
