//! What the API's integration tests share: a fixture of matches applied by
//! the projector's applier to real Redis, and a server on a private port.
// Each test binary uses its own part of this module.
#![allow(dead_code)]
// Fixture helpers take one argument per column they fill, which reads best here.
#![allow(clippy::too_many_arguments)]

use projector::fred::prelude::*;
use projector::{Applier, ApplierOptions};
use rps_api::ApiOptions;
use rps_core::{
    Config, EventType, Gesture, MatchEvent, Outcome, SeasonId, SourcePosition, StreamEvent,
    Timestamp,
};
use serde_json::{json, Value as Json};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use test_support::TestEnv;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::task::JoinHandle;
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
            deadline_at: (t == EventType::Started).then_some(Timestamp(self.t + 30_000_000)),
            ..MatchEvent::new(
                MatchEvent::timed_out_event_id(mid, v + 5_000_000),
                mid,
                v,
                t,
                season.parse::<SeasonId>().unwrap(),
                (a, b),
                Timestamp(self.t),
            )
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
pub fn fixture() -> Vec<MatchEvent> {
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

pub async fn get(addr: SocketAddr, path: &str) -> (u16, Json) {
    let (status, _, body) = request(addr, "GET", path).await;
    (status, body)
}

pub fn entry(
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

/// Generation 1 of `env`'s prefix holds the fixture; returns its events.
pub async fn load_fixture(env: &TestEnv) -> Vec<MatchEvent> {
    let client = env.redis().await;
    let keys = env.config.keys();
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
    events
}

/// A running API on a private port.
pub struct Server {
    pub addr: SocketAddr,
    shutdown: CancellationToken,
    task: JoinHandle<Result<(), rps_api::ApiError>>,
}

impl Server {
    pub async fn start(
        config: Arc<Config>,
        metrics: metrics_exporter_prometheus::PrometheusHandle,
        options: ApiOptions,
    ) -> Server {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let shutdown = CancellationToken::new();
        let task = tokio::spawn(rps_api::serve(
            listener,
            config,
            metrics,
            options,
            shutdown.clone(),
        ));
        test_support::eventually("api up", Duration::from_secs(10), || async {
            tokio::net::TcpStream::connect(addr).await.ok().map(|_| ())
        })
        .await;
        Server {
            addr,
            shutdown,
            task,
        }
    }

    pub async fn stop(self) {
        self.shutdown.cancel();
        self.task.await.unwrap().unwrap();
    }
}

/// One request, any method; the status, the headers (lower-case names) and
/// the body as JSON (a JSON string when it is not JSON).
pub async fn request(
    addr: SocketAddr,
    method: &str,
    path: &str,
) -> (u16, Vec<(String, String)>, Json) {
    let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
    s.write_all(
        format!(
            "{method} {path} HTTP/1.1\r\nHost: t\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
        )
        .as_bytes(),
    )
    .await
    .unwrap();
    let mut buf = Vec::new();
    s.read_to_end(&mut buf).await.unwrap();
    let text = String::from_utf8_lossy(&buf).into_owned();
    let (head, body) = text.split_once("\r\n\r\n").expect("http response");
    let mut lines = head.split("\r\n");
    let status: u16 = lines
        .next()
        .unwrap()
        .split(' ')
        .nth(1)
        .unwrap()
        .parse()
        .unwrap();
    let headers = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_string()))
        .collect();
    let body = serde_json::from_str(body).unwrap_or(Json::String(body.to_string()));
    (status, headers, body)
}
