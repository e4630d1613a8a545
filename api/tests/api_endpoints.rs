//! Every endpoint of the leaderboard API against read models built by the
//! projector's applier on the real Redis, with exact expected answers, and
//! every bad parameter answered 400 naming it.

mod common;

use common::{entry, get};
use projector::fred::prelude::*;
use rps_api::ApiOptions;
use serde_json::{json, Value as Json};
use std::time::Duration;
use test_support::TestEnv;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_endpoint_and_every_bad_parameter() {
    let env = TestEnv::with_shards("api_endpoints", 1).await;
    let client = env.redis().await;
    let keys = env.config.keys();
    let events = common::load_fixture(&env).await;

    // The process-wide recorder, as rpsctl installs it (one test per binary).
    let handle = metrics_exporter_prometheus::PrometheusBuilder::new()
        .install_recorder()
        .unwrap();
    let options = ApiOptions {
        page_cache_ttl: Duration::ZERO,
        ..Default::default()
    };
    let server = common::Server::start(env.config.clone(), handle, options).await;
    let addr = server.addr;

    // Leaderboards: all-time, a season with a tie on points and matches
    // (lower id first), paging.
    let (s, b) = get(addr, "/v1/leaderboard").await;
    assert_eq!(s, 200);
    assert_eq!(
        b,
        json!({"season": null, "entries": [
            entry(1, 30, 7, 2, 1, 0, 0, 3),
            entry(2, 10, 4, 1, 1, 1, 0, 3),
            entry(3, 20, 0, 0, 0, 2, 1, 2),
        ]})
    );
    let (s, b) = get(addr, "/v1/leaderboard?season=2026Q4&offset=0&limit=100").await;
    assert_eq!(s, 200);
    assert_eq!(
        b,
        json!({"season": "2026Q4", "entries": [
            entry(1, 10, 4, 1, 1, 0, 0, 2),
            entry(2, 30, 4, 1, 1, 0, 0, 2),
            entry(3, 20, 0, 0, 0, 2, 1, 2),
        ]})
    );
    let (_, b) = get(addr, "/v1/leaderboard?season=2026Q4&offset=1&limit=1").await;
    assert_eq!(b["entries"], json!([entry(2, 30, 4, 1, 1, 0, 0, 2)]));
    let (s, b) = get(addr, "/v1/leaderboard?season=2026Q3&limit=1000").await;
    assert_eq!(s, 200);
    assert_eq!(
        b["entries"],
        json!([
            entry(1, 30, 3, 1, 0, 0, 0, 1),
            entry(2, 10, 0, 0, 0, 1, 0, 1)
        ])
    );
    let (_, b) = get(addr, "/v1/leaderboard?season=2025Q1").await;
    assert_eq!(b["entries"], json!([]));
    let (_, b) = get(addr, "/v1/leaderboard?offset=3").await;
    assert_eq!(b["entries"], json!([]));

    // Players.
    let (s, b) = get(addr, "/v1/players/30").await;
    assert_eq!(s, 200);
    assert_eq!(
        b,
        json!({"player_id": 30, "season": null, "rank": 1, "points": 7, "wins": 2,
        "draws": 1, "losses": 0, "forfeits": 0, "matches": 3})
    );
    let (s, b) = get(addr, "/v1/players/10?season=2026Q3").await;
    assert_eq!(
        (s, b["rank"].clone(), b["losses"].clone()),
        (200, json!(2), json!(1))
    );
    for path in [
        "/v1/players/20?season=2026Q3",
        "/v1/players/40",
        "/v1/players/50",
        "/v1/players/999",
    ] {
        let (s, b) = get(addr, path).await;
        assert_eq!(s, 404, "{path}");
        assert!(
            b["error"].as_str().unwrap().contains("no counted match"),
            "{path}: {b}"
        );
    }

    // Around.
    let (s, b) = get(addr, "/v1/players/20/around?radius=1").await;
    assert_eq!(s, 200);
    assert_eq!(
        b["entries"],
        json!([
            entry(2, 10, 4, 1, 1, 1, 0, 3),
            entry(3, 20, 0, 0, 0, 2, 1, 2)
        ])
    );
    let (_, b) = get(addr, "/v1/players/10/around?season=2026Q4").await;
    assert_eq!(b["entries"].as_array().unwrap().len(), 3);
    assert_eq!(get(addr, "/v1/players/40/around").await.0, 404);

    // Matches.
    let (s, b) = get(addr, "/v1/matches/101").await;
    assert_eq!(s, 200);
    assert_eq!(b["status"], "finished");
    assert_eq!(b["version"], 2);
    assert_eq!(b["players"], json!({"a": 10, "b": 20}));
    assert_eq!(b["gestures"], json!({"a": "rock", "b": "scissors"}));
    assert_eq!(
        b["result"],
        json!({"outcome": "win", "winner": 10, "loser": 20, "forfeit_a": false, "forfeit_b": false})
    );
    let (_, b) = get(addr, "/v1/matches/103").await;
    assert_eq!(b["status"], "timed_out");
    assert_eq!(b["result"]["forfeit_a"], true);
    let (_, b) = get(addr, "/v1/matches/104").await;
    assert_eq!(b["status"], "voided");
    let (_, b) = get(addr, "/v1/matches/106").await;
    assert_eq!(
        (b["status"].clone(), b["result"].clone()),
        (json!("in_progress"), Json::Null)
    );
    assert!(b["deadline_at"].is_string());
    assert_eq!(get(addr, "/v1/matches/777").await.0, 404);

    // Status, health, metrics.
    let (s, b) = get(addr, "/v1/status").await;
    assert_eq!(s, 200);
    assert_eq!(b["generation"], 1);
    let shard = &b["shards"][0];
    assert_eq!(shard["last_applied_id"], format!("{}-0", events.len()));
    assert_eq!(
        shard["last_event_at"],
        events.last().unwrap().occurred_at.to_rfc3339()
    );
    assert!(shard["applied_at"].is_string());
    assert_eq!(get(addr, "/healthz").await, (200, json!({"status": "ok"})));

    // Bad parameters: 400 naming the parameter.
    for (path, param) in [
        ("/v1/leaderboard?limit=1001", "limit"),
        ("/v1/leaderboard?limit=0", "limit"),
        ("/v1/leaderboard?limit=ten", "limit"),
        ("/v1/leaderboard?offset=-1", "offset"),
        ("/v1/leaderboard?offset=1e3", "offset"),
        ("/v1/leaderboard?season=2026Q5", "season"),
        ("/v1/leaderboard?season=26Q4", "season"),
        ("/v1/players/abc", "id"),
        ("/v1/players/-5", "id"),
        ("/v1/players/0", "id"),
        ("/v1/players/99999999999999999999", "id"),
        ("/v1/players/10?season=winter", "season"),
        ("/v1/players/10/around?radius=101", "radius"),
        ("/v1/players/10/around?radius=-1", "radius"),
        ("/v1/players/x/around", "id"),
        ("/v1/matches/abc", "id"),
        ("/v1/matches/1.5", "id"),
        ("/v1/leaderboard?limit=%2B5", "limit"),
        ("/v1/leaderboard?offset=9223372036854774809", "offset"),
        ("/v1/players/%2B30", "id"),
        ("/v1/players/%2F30", "id"),
        ("/v1/players/%FF", "id"),
        ("/v1/matches/%C3%28", "id"),
        ("/v1/players/%FF/around", "id"),
    ] {
        let (s, b) = get(addr, path).await;
        assert_eq!(s, 400, "{path}: {b}");
        assert_eq!(b["parameter"], param, "{path}: {b}");
        assert!(b["error"].is_string(), "{path}");
    }
    let (s, metrics) = get(addr, "/metrics").await;
    assert_eq!(s, 200);
    let text = metrics.as_str().unwrap_or_default().to_string();
    assert!(text.contains("rps_api_requests_total"), "{text}");

    // The document is served, and every path it names is routed (a path
    // the router does not know would be the fallback's "no route").
    let (s, doc) = get(addr, "/openapi.json").await;
    assert_eq!(s, 200);
    assert_eq!(doc["openapi"], "3.1.0");
    for path in doc["paths"].as_object().unwrap().keys() {
        let id = if path.starts_with("/v1/matches") {
            "101"
        } else {
            "30"
        };
        let concrete = path.replace("{id}", id).replace("{asset}", "dashboard.js");
        let (s, b) = get(addr, &concrete).await;
        assert_eq!(s, 200, "{concrete}: {b}");
    }

    // Unknown routes and methods: JSON in the error shape.
    let (s, b) = get(addr, "/v1/nothing?limit=5").await;
    assert_eq!(
        (s, b),
        (404, json!({"error": "no route for GET /v1/nothing"}))
    );
    for method in ["POST", "PUT", "DELETE", "PATCH"] {
        let (s, headers, b) = common::request(addr, method, "/v1/leaderboard").await;
        assert_eq!(s, 405, "{method}");
        assert!(
            headers.contains(&("allow".to_string(), "GET,HEAD".to_string())),
            "{method}: {headers:?}"
        );
        assert_eq!(
            b["error"],
            format!("method {method} is not allowed on /v1/leaderboard (see the Allow header)")
        );
    }
    // No CORS unless configured.
    let (_, headers, _) = common::request(addr, "GET", "/v1/leaderboard").await;
    assert!(
        !headers
            .iter()
            .any(|(k, _)| k.starts_with("access-control-")),
        "{headers:?}"
    );

    // Without the generation marker the read endpoints refuse, never an empty board.
    let _: i64 = client.del(keys.generation()).await.unwrap();
    for path in [
        "/v1/leaderboard",
        "/v1/players/10",
        "/v1/players/10/around",
        "/v1/matches/101",
        "/v1/status",
    ] {
        let (s, b) = get(addr, path).await;
        assert_eq!(s, 503, "{path}");
        assert!(
            b["error"].as_str().unwrap().contains("generation"),
            "{path}: {b}"
        );
    }

    server.stop().await;
    env.cleanup().await;
}
