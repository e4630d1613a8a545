//! `/v1/dashboard` over read models the projector's applier built on the
//! real Redis: the lifecycle counts, deadlines, leaderboard and topology
//! as the fixture says; dead letters tallied by reason as they arrive; the
//! figures that only metrics have, from the registry handed to the API;
//! a replay building the next generation; and the 503 of a rebuild.

mod common;

use common::{entry, get};
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder};
use projector::fred::prelude::*;
use read_model::ReadModelKeys;
use rps_api::ApiOptions;
use serde_json::{json, Value as Json};
use std::time::Duration;
use test_support::{eventually, TestEnv};

async fn dashboard(addr: std::net::SocketAddr) -> Json {
    let (s, b) = get(addr, "/v1/dashboard").await;
    assert_eq!(s, 200, "{b}");
    b
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_snapshot_follows_the_read_models() {
    let env = TestEnv::with_shards("api_dashboard", 1).await;
    let client = env.redis().await;
    let keys = env.config.keys();
    common::load_fixture(&env).await;

    // A registry of this test's own, with a compensator's figures in it.
    let recorder = PrometheusBuilder::new()
        .set_buckets_for_metric(
            Matcher::Full("rps_compensator_firing_delay_seconds".into()),
            &[0.01, 0.1, 1.0],
        )
        .unwrap()
        .build_recorder();
    let handle = recorder.handle();
    metrics::with_local_recorder(&recorder, || {
        metrics::counter!("rps_compensator_fired_total").increment(3);
        for s in [0.005, 0.05, 0.05, 0.5] {
            metrics::histogram!("rps_compensator_firing_delay_seconds").record(s);
        }
    });
    let options = ApiOptions {
        dashboard_interval: Duration::from_millis(200),
        ..Default::default()
    };
    let server = common::Server::start(env.config.clone(), handle, options).await;
    let addr = server.addr;

    let b = dashboard(addr).await;
    assert_eq!(b["generation"], 1);
    assert_eq!(
        b["rebuild"],
        json!({"in_progress": false, "generation": null})
    );
    assert_eq!(b["in_process_metrics"], true);
    assert_eq!(
        b["matches"]["now"],
        json!({"in_progress": 1, "finished": 3, "timed_out": 1, "voided": 1, "total": 6})
    );
    // m6's deadline (2026-11-20) is long past.
    assert_eq!(b["deadlines"]["pending"], 1);
    assert_eq!(b["deadlines"]["overdue"], 1);
    assert!(b["deadlines"]["oldest_overdue_seconds"].as_f64().unwrap() > 0.0);
    let delay = &b["deadlines"]["firing_delay_seconds"];
    assert_eq!(delay["count"], 4, "{delay}");
    let p50 = delay["p50"].as_f64().unwrap();
    assert!((0.01..=0.1).contains(&p50), "{delay}");
    assert_eq!(b["compensations"]["fired"], 3);
    assert_eq!(b["compensations"]["timed_out_matches"], 1);
    assert_eq!(b["compensations"]["retries"], 0);
    assert_eq!(b["compensations"]["retrying"], 0);
    assert_eq!(b["compensations"]["parked"], 0);
    // The projector and the reader are not in this registry.
    assert!(b["freshness_seconds"].is_null());
    assert!(b["servers"][0]["lag_bytes"].is_null());
    assert_eq!(b["servers"][0]["server"], env.config.servers[0].name);
    assert!(b["servers"][0]["checkpoint_file"].is_null());
    assert_eq!(b["shards"].as_array().unwrap().len(), 1);
    assert_eq!(b["shards"][0]["shard"], 0);
    assert_eq!(b["shards"][0]["last_applied_id"], "13-0");
    assert!(b["shards"][0]["freshness_seconds"].as_f64().unwrap() > 0.0);
    // The newest season with a board.
    assert_eq!(
        b["leaderboard"],
        json!({"season": "2026Q4", "entries": [
            entry(1, 10, 4, 1, 1, 0, 0, 2),
            entry(2, 30, 4, 1, 1, 0, 0, 2),
            entry(3, 20, 0, 0, 0, 2, 1, 2),
        ]})
    );
    assert_eq!(b["dead_letters"]["total"], 0);
    let (_, status) = get(addr, "/v1/status").await;
    assert_eq!(status["generation"], b["generation"]);
    assert_eq!(
        status["shards"][0]["last_applied_id"],
        b["shards"][0]["last_applied_id"]
    );

    // Dead letters are tallied as they come, by origin and kind.
    for (origin, kind) in [
        ("projector", "version_gap"),
        ("projector", "version_gap"),
        ("compensator", "deadline_failed"),
    ] {
        let _: String = client
            .xadd(
                keys.deadletter(),
                false,
                None,
                "*",
                vec![("origin", origin), ("kind", kind), ("reason", "test")],
            )
            .await
            .unwrap();
    }
    let b = eventually("dead letters tallied", Duration::from_secs(10), || async {
        let b = dashboard(addr).await;
        (b["dead_letters"]["total"] == 3).then_some(b)
    })
    .await;
    assert_eq!(
        b["dead_letters"]["by_reason"],
        json!([
            {"origin": "compensator", "kind": "deadline_failed", "count": 1},
            {"origin": "projector", "kind": "version_gap", "count": 2},
        ])
    );
    assert_eq!(b["dead_letters"]["complete"], true);
    assert_eq!(b["compensations"]["dead_letters"], 1);
    // An entry removed (dlq retry / drop) restarts the tally.
    let ids: Vec<(String, std::collections::HashMap<String, String>)> = client
        .xrange_values(keys.deadletter(), "-", "+", Some(1))
        .await
        .unwrap();
    let _: i64 = client.xdel(keys.deadletter(), &ids[0].0).await.unwrap();
    let b = eventually(
        "tally after a deletion",
        Duration::from_secs(10),
        || async {
            let b = dashboard(addr).await;
            (b["dead_letters"]["total"] == 2).then_some(b)
        },
    )
    .await;
    assert_eq!(
        b["dead_letters"]["by_reason"],
        json!([
            {"origin": "compensator", "kind": "deadline_failed", "count": 1},
            {"origin": "projector", "kind": "version_gap", "count": 1},
        ])
    );

    // The compensators' bookkeeping, read from the shard's own keys: one
    // deadline being retried, one parked.
    for m in ["0:61", "0:62"] {
        let _: () = client
            .hset(keys.deadline_attempts(0), (m, "{}"))
            .await
            .unwrap();
    }
    let _: () = client
        .zadd(
            keys.deadline_leases(0),
            None,
            None,
            false,
            false,
            vec![(1.0, "0:61"), (rps_api::dashboard::PARKED_LEASE, "0:62")],
        )
        .await
        .unwrap();
    eventually("retrying and parked", Duration::from_secs(10), || async {
        let b = dashboard(addr).await;
        let c = &b["compensations"];
        (c["retrying"] == 1 && c["parked"] == 1).then_some(())
    })
    .await;

    // History: one column entry per sample, the lifecycle in it.
    let b = eventually("a few samples", Duration::from_secs(10), || async {
        let b = dashboard(addr).await;
        (b["history"]["t"].as_array().unwrap().len() >= 5).then_some(b)
    })
    .await;
    let h = &b["history"];
    let n = h["t"].as_array().unwrap().len();
    for col in [
        "generation",
        "published_per_second",
        "lag_entries",
        "in_progress",
        "finished",
        "timed_out",
        "voided",
        "deadlines_overdue",
    ] {
        assert_eq!(h[col].as_array().unwrap().len(), n, "{col}");
    }
    assert_eq!(h["finished"][n - 1], 3);
    assert_eq!(b["matches"]["last_minute"]["total"], 0);
    assert_eq!(b["events_per_second"]["published"], 0.0);

    // A replay building generation 2 beside the live one.
    let next = keys.generation_keys(2).progress(0);
    let _: () = client.hset(&next, ("id", "1-0")).await.unwrap();
    let b = eventually("rebuild shown", Duration::from_secs(10), || async {
        let b = dashboard(addr).await;
        (b["rebuild"]["in_progress"] == true).then_some(b)
    })
    .await;
    assert_eq!(b["rebuild"]["generation"], 2);
    assert_eq!(b["generation"], 1);
    let _: i64 = client.del(&next).await.unwrap();

    // No generation marker (a bootstrap rebuilding): 503, like every read.
    let _: i64 = client.del(keys.generation()).await.unwrap();
    let (s, b) = eventually("503 while rebuilding", Duration::from_secs(10), || async {
        let (s, b) = get(addr, "/v1/dashboard").await;
        (s == 503).then_some((s, b))
    })
    .await;
    assert_eq!(s, 503);
    assert!(b["error"].as_str().unwrap().contains("generation"), "{b}");
    assert_eq!(b.as_object().unwrap().len(), 1);
    let _: () = client
        .set(keys.generation(), "1", None, None, false)
        .await
        .unwrap();
    eventually(
        "back after the rebuild",
        Duration::from_secs(10),
        || async {
            let (s, b) = get(addr, "/v1/dashboard").await;
            // The rebuild shows in the history as a gap.
            (s == 200 && b["history"]["generation"].as_array()?.contains(&Json::Null)).then_some(())
        },
    )
    .await;

    // The page and its files.
    let (s, _, page) = common::request(addr, "GET", "/dashboard").await;
    assert_eq!(s, 200);
    assert!(page.as_str().unwrap().contains("dashboard/dashboard.js"));
    for asset in [
        "dashboard.js",
        "uPlot.iife.min.js",
        "uPlot.min.css",
        "dashboard.css",
    ] {
        let (s, headers, _) = common::request(addr, "GET", &format!("/dashboard/{asset}")).await;
        assert_eq!(s, 200, "{asset}");
        let ctype = &headers.iter().find(|(k, _)| k == "content-type").unwrap().1;
        assert!(ctype.starts_with("text/"), "{asset}: {ctype}");
    }

    server.stop().await;
    env.cleanup().await;
}
