//! Every endpoint of the leaderboard API against read models built by the
//! projector's applier on the real Redis, with exact expected answers, and
//! every bad parameter answered 400 naming it.
// Fixture helpers take one argument per column they fill, which reads best here.
#![allow(clippy::too_many_arguments)]

use projector::fred::prelude::*;
use projector::{Applier, ApplierOptions};
use rps_api::ApiOptions;
use rps_core::{
    EventType, Gesture, Keys, MatchEvent, Outcome, SeasonId, SourcePosition, StreamEvent, Timestamp,
};
use serde_json::{json, Value as Json};
use std::time::Duration;
use test_support::TestEnv;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio_util::sync::CancellationToken;

struct Builder {
    events: Vec<MatchEvent>,
    t: i64,
}

impl Builder {
    fn ev(
        &mut self,
        mid: i64,
        v: i32,
        t: EventType,
        season: &str,
        a: i64,
        b: i64,
    ) -> &mut MatchEvent {
        self.t += 1_000_000;
        self.events.push(MatchEvent {
            row_id: self.events.len() as i64 + 1,
            event_id: MatchEvent::timed_out_event_id(mid, v + 5_000_000),
            match_id: mid,
            version: v,
            event_type: t,
            season_id: season.parse::<SeasonId>().unwrap(),
            player_a_id: a,
            player_b_id: b,
            gesture_a: None,
            gesture_b: None,
            winner_player_id: None,
            loser_player_id: None,
            outcome: None,
            deadline_at: (t == EventType::Started).then_some(Timestamp(self.t + 30_000_000)),
            occurred_at: Timestamp(self.t),
        });
        self.events.last_mut().unwrap()
    }

    fn finished(
        &mut self,
        mid: i64,
        v: i32,
        season: &str,
        a: i64,
        b: i64,
        ga: Gesture,
        gb: Gesture,
    ) {
        let r = rps_core::fold::MatchResult::by_gestures(ga, gb, a, b);
        let e = self.ev(mid, v, EventType::Finished, season, a, b);
        e.gesture_a = Some(ga);
        e.gesture_b = Some(gb);
        e.outcome = r.outcome;
        e.winner_player_id = r.winner;
        e.loser_player_id = r.loser;
    }
}

/// The fixture: see the expected numbers in the test.
fn fixture() -> Vec<MatchEvent> {
    use EventType::*;
    use Gesture::*;
    let q4 = "2026Q4";
    let mut b = Builder {
        events: Vec::new(),
        t: Timestamp::parse("2026-11-20 10:00:00").unwrap().as_micros(),
    };
    // m1: 10 beats 20.
    b.ev(101, 1, Started, q4, 10, 20);
    b.finished(101, 2, q4, 10, 20, Rock, Scissors);
    // m2: 10 draws 30.
    b.ev(102, 1, Started, q4, 10, 30);
    b.finished(102, 2, q4, 10, 30, Paper, Paper);
    // m3: 20 vs 30, only 30 moved: 30 wins, 20 forfeits.
    b.ev(103, 1, Started, q4, 20, 30);
    b.ev(103, 2, Moved, q4, 20, 30).gesture_b = Some(Rock);
    let e = b.ev(103, 3, TimedOut, q4, 20, 30);
    e.outcome = Some(Outcome::Lose);
    e.winner_player_id = Some(30);
    e.loser_player_id = Some(20);
    // m4: 40 beats 50, then voided: neither has a counted match.
    b.ev(104, 1, Started, q4, 40, 50);
    b.finished(104, 2, q4, 40, 50, Scissors, Paper);
    b.ev(104, 3, Voided, q4, 40, 50);
    // m5 (2026Q3): 30 beats 10.
    b.ev(105, 1, Started, "2026Q3", 30, 10);
    b.finished(105, 2, "2026Q3", 30, 10, Paper, Rock);
    // m6: in progress.
    b.ev(106, 1, Started, q4, 20, 10);
    b.events
}

async fn get(addr: std::net::SocketAddr, path: &str) -> (u16, Json) {
    let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
    s.write_all(format!("GET {path} HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n").as_bytes())
        .await
        .unwrap();
    let mut buf = Vec::new();
    s.read_to_end(&mut buf).await.unwrap();
    let text = String::from_utf8_lossy(&buf).into_owned();
    let (head, body) = text.split_once("\r\n\r\n").expect("http response");
    let status: u16 = head.split(' ').nth(1).unwrap().parse().unwrap();
    let body = serde_json::from_str(body).unwrap_or(Json::String(body.to_string()));
    (status, body)
}

fn entry(
    rank: u64,
    id: i64,
    points: i64,
    wins: i64,
    draws: i64,
    losses: i64,
    forfeits: i64,
    matches: i64,
) -> Json {
    json!({"rank": rank, "player_id": id, "points": points, "wins": wins, "draws": draws,
           "losses": losses, "forfeits": forfeits, "matches": matches})
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_endpoint_and_every_bad_parameter() {
    let env = TestEnv::with_shards("api_endpoints", 1).await;
    let client = env.redis().await;
    let keys = Keys::new(&env.config.redis.prefix);
    let _: () = client
        .set(keys.generation(), "1", None, None, false)
        .await
        .unwrap();
    let events = fixture();
    let entries: Vec<(String, StreamEvent)> = events
        .iter()
        .enumerate()
        .map(|(i, e)| {
            (
                format!("{}-0", i + 1),
                StreamEvent {
                    shard: 0,
                    event: e.clone(),
                    source: SourcePosition::default(),
                },
            )
        })
        .collect();
    let mut applier = Applier::new(
        client.clone(),
        keys.clone(),
        1,
        0,
        1,
        ApplierOptions::default(),
    );
    let r = applier.apply_events(&entries, |_, _| false).await.unwrap();
    assert_eq!((r.applied, r.rejected.len()), (events.len(), 0));

    // The process-wide recorder, as rpsctl installs it (one test per binary).
    let handle = metrics_exporter_prometheus::PrometheusBuilder::new()
        .install_recorder()
        .unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let shutdown = CancellationToken::new();
    let options = ApiOptions {
        page_cache_ttl: Duration::ZERO,
        ..Default::default()
    };
    let server = tokio::spawn(rps_api::serve(
        listener,
        env.config.clone(),
        handle,
        options,
        shutdown.clone(),
    ));
    test_support::eventually("api up", Duration::from_secs(10), || async {
        tokio::net::TcpStream::connect(addr).await.ok().map(|_| ())
    })
    .await;

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

    shutdown.cancel();
    server.await.unwrap().unwrap();
    env.cleanup().await;
}
