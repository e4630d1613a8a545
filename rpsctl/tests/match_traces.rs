//! One trace per match, as an operator sees it in a trace backend: `rpsctl
//! run` exports to an OTLP/HTTP endpoint (a sink in this test), a simulated
//! tournament's matches are all abandoned, and the trace of each timed-out
//! match holds every step of its saga, in order, in one tree: the reader's
//! publish of `started` (and `moved`), the projector's apply of each, the
//! compensator's claim, decision and append, then the publish and apply of
//! the `timed_out` — all under the trace id derived from the match id, with
//! no trace context stored anywhere in between.

use axum::body::Bytes;
use mysql_async::prelude::Queryable;
use opentelemetry_proto::tonic::collector::trace::v1::{
    ExportTraceServiceRequest, ExportTraceServiceResponse,
};
use opentelemetry_proto::tonic::common::v1::{any_value, KeyValue};
use opentelemetry_proto::tonic::trace::v1::{status::StatusCode, Span};
use prost::Message;
use rps_core::ShardId;
use rps_telemetry::{attr, ids};
use std::collections::BTreeMap;
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use test_support::{eventually, free_port, TestEnv};
use tokio_util::sync::CancellationToken;

use test_support::KillOnDrop as Pipeline;

/// A received span with where it came from.
#[derive(Clone, Debug)]
struct Received {
    service: String,
    scope: String,
    span: Span,
}

impl Received {
    fn attr(&self, key: &str) -> Option<&any_value::Value> {
        value_of(&self.span.attributes, key)
    }

    fn int(&self, key: &str) -> Option<i64> {
        match self.attr(key)? {
            any_value::Value::IntValue(i) => Some(*i),
            _ => None,
        }
    }

    fn text(&self, key: &str) -> Option<&str> {
        match self.attr(key)? {
            any_value::Value::StringValue(s) => Some(s),
            _ => None,
        }
    }

    fn failed(&self) -> bool {
        self.span
            .status
            .as_ref()
            .is_some_and(|s| s.code == StatusCode::Error as i32)
    }
}

fn value_of<'a>(attrs: &'a [KeyValue], key: &str) -> Option<&'a any_value::Value> {
    attrs
        .iter()
        .find(|kv| kv.key == key)
        .and_then(|kv| kv.value.as_ref()?.value.as_ref())
}

type Spans = Arc<Mutex<Vec<Received>>>;

/// An OTLP/HTTP receiver (protobuf) on a free port.
async fn otlp_sink() -> (u16, Spans) {
    let spans: Spans = Arc::default();
    let store = spans.clone();
    let app = axum::Router::new().route(
        "/v1/traces",
        axum::routing::post(move |body: Bytes| {
            let store = store.clone();
            async move {
                let Ok(req) = ExportTraceServiceRequest::decode(body) else {
                    return (axum::http::StatusCode::BAD_REQUEST, Vec::new());
                };
                let mut out = store.lock().unwrap();
                for rs in req.resource_spans {
                    let service = rs
                        .resource
                        .as_ref()
                        .and_then(|r| value_of(&r.attributes, "service.name"))
                        .map(|v| match v {
                            any_value::Value::StringValue(s) => s.clone(),
                            _ => String::new(),
                        })
                        .unwrap_or_default();
                    for ss in rs.scope_spans {
                        let scope = ss.scope.map(|s| s.name).unwrap_or_default();
                        for span in ss.spans {
                            out.push(Received {
                                service: service.clone(),
                                scope: scope.clone(),
                                span,
                            });
                        }
                    }
                }
                (
                    axum::http::StatusCode::OK,
                    ExportTraceServiceResponse::default().encode_to_vec(),
                )
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind the sink");
    let port = listener.local_addr().unwrap().port();
    tokio::spawn(async move { axum::serve(listener, app).await });
    (port, spans)
}

/// Timed-out matches and how many moves each had, from the event store.
async fn timed_out_matches(env: &TestEnv) -> BTreeMap<i64, u64> {
    let mut out = BTreeMap::new();
    for shard in 0..env.config.shard_count as ShardId {
        let mut conn = env.admin_conn(shard).await;
        let rows: Vec<(i64, u64)> = conn
            .query(format!(
                "SELECT match_id, CAST(SUM(event_type = 'moved') AS UNSIGNED) \
                 FROM `{}`.match_result_events GROUP BY match_id \
                 HAVING SUM(event_type = 'timed_out') > 0",
                env.config.database(shard)
            ))
            .await
            .expect("timed-out matches");
        out.extend(rows);
    }
    out
}

fn trace_of(spans: &Spans, match_id: i64) -> Vec<Received> {
    let want = ids::trace_id(match_id).to_bytes();
    let mut t: Vec<Received> = spans
        .lock()
        .unwrap()
        .iter()
        .filter(|r| r.span.trace_id == want)
        .cloned()
        .collect();
    t.sort_by_key(|r| (r.span.start_time_unix_nano, r.span.end_time_unix_nano));
    t
}

/// The steps every timed-out match's trace must show, in start order.
const SAGA: [&str; 7] = [
    "publish started",
    "apply started",
    "claim deadline",
    "decide",
    "append timed_out",
    "publish timed_out",
    "apply timed_out",
];

fn has_saga(trace: &[Received]) -> bool {
    let mut want = SAGA.iter().peekable();
    for r in trace {
        if want.peek() == Some(&&r.span.name.as_str()) {
            want.next();
        }
    }
    want.peek().is_none()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_timed_out_match_is_one_trace_from_insert_to_timed_out() {
    let (sink_port, spans) = otlp_sink().await;
    let mut config = TestEnv::new("traces").await.config.as_ref().clone();
    config.api.bind = format!("127.0.0.1:{}", free_port());
    config.tracing.otlp_endpoint = Some(format!("http://127.0.0.1:{sink_port}"));
    config.tracing.sample_ratio = 1.0;
    let env = TestEnv::from_config(config.redis.prefix.clone(), config).await;
    let (_dir, path) = env.write_config_file();

    let mut cmd = Command::new(env!("CARGO_BIN_EXE_rpsctl"));
    cmd.args(["--config", path.to_str().expect("utf-8 path"), "run"])
        .env("RUST_LOG", "warn")
        // Exported within a fifth of a second, not the default five.
        .env("OTEL_BSP_SCHEDULE_DELAY", "200")
        .stdout(Stdio::null())
        .stderr(Stdio::inherit());
    for var in [
        "OTEL_SDK_DISABLED",
        "OTEL_EXPORTER_OTLP_ENDPOINT",
        "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT",
        "OTEL_TRACES_SAMPLER",
        "OTEL_TRACES_SAMPLER_ARG",
        "OTEL_SERVICE_NAME",
    ] {
        cmd.env_remove(var);
    }
    let mut pipeline = Pipeline(cmd.spawn().expect("start rpsctl run"));

    test_support::pipeline::wait_until_streaming(&env.config).await;

    let report = simulator::run(
        env.store.clone(),
        simulator::SimulateOptions {
            players: 40,
            matches: 24,
            abandoned: 1.0,
            voided: 0.0,
            deadline: Duration::from_secs(2),
            concurrency: 24,
            seed: Some(11),
            ..Default::default()
        },
        CancellationToken::new(),
    )
    .await
    .expect("simulate");
    assert_eq!(report.abandoned, 24, "{report:?}");

    let matches = eventually(
        "every abandoned match to time out",
        Duration::from_secs(60),
        || async {
            let m = timed_out_matches(&env).await;
            (m.len() as u64 >= report.abandoned).then_some(m)
        },
    )
    .await;
    // Every timed-out match's trace completes, each on its own id.
    for &m in matches.keys() {
        eventually(
            &format!("the whole saga of match {m} exported"),
            Duration::from_secs(30),
            || {
                let spans = spans.clone();
                async move { has_saga(&trace_of(&spans, m)).then_some(()) }
            },
        )
        .await;
    }

    // A match abandoned after a move, looked at step by step.
    let (&m, &moves) = matches
        .iter()
        .max_by_key(|(id, moves)| (**moves, std::cmp::Reverse(**id)))
        .expect("a match");
    assert!(
        moves > 0,
        "the seed plays no match with a move: {matches:?}"
    );
    let trace = trace_of(&spans, m);
    let names: Vec<&str> = trace.iter().map(|r| r.span.name.as_str()).collect();
    let root = ids::root_span_id(m).to_bytes().to_vec();
    for r in &trace {
        assert_eq!(r.int(attr::MATCH_ID), Some(m), "{}", r.span.name);
        assert_eq!(r.service, "rps");
        assert!(
            !r.failed(),
            "{} failed in a clean run: {:?}",
            r.span.name,
            r.span.status
        );
        if r.span.name == "match" {
            assert_eq!(r.span.span_id, root, "the root has the derived span id");
            assert!(r.span.parent_span_id.is_empty());
        } else {
            assert_eq!(
                r.span.parent_span_id, root,
                "{} is a child of the match's root",
                r.span.name
            );
        }
        let scope = match r.span.name.split(' ').next().unwrap() {
            "publish" | "match" => "cdc-reader",
            "apply" => "projector",
            _ => "compensator",
        };
        assert_eq!(r.scope, scope, "{}", r.span.name);
    }
    assert_eq!(
        names.iter().filter(|n| **n == "match").count(),
        1,
        "one root: {names:?}"
    );

    // Each version published once and applied once, publish first.
    let last = 2 + moves as i64;
    for v in 1..=last {
        let of = |name: &str| -> Vec<&Received> {
            trace
                .iter()
                .filter(|r| r.span.name.starts_with(name) && r.int(attr::VERSION) == Some(v))
                .collect()
        };
        let (p, a) = (of("publish "), of("apply "));
        assert_eq!((p.len(), a.len()), (1, 1), "version {v}: {names:?}");
        let (p, a) = (p[0], a[0]);
        let expected = match v {
            1 => "started",
            v if v == last => "timed_out",
            _ => "moved",
        };
        assert_eq!(p.text(attr::EVENT_TYPE), Some(expected));
        assert!(p.span.start_time_unix_nano <= a.span.start_time_unix_nano);
        assert_eq!(a.text(attr::OUTCOME), Some("applied"));
        assert_eq!(p.int(attr::SHARD), a.int(attr::SHARD));
        assert!(p.text(attr::SERVER).is_some() && p.text(attr::BINLOG_FILE).is_some());
        assert!(p.int(attr::BINLOG_POSITION).is_some_and(|pos| pos > 0));
        assert!(a.text(attr::BATCH_ID).is_some() && a.int(attr::BATCH_ENTRIES).is_some());
    }
    // The moves come before the deadline's claim, the claim before the rest.
    let at = |name: &str| names.iter().position(|n| *n == name).unwrap();
    let last_moved = names.iter().rposition(|n| *n == "apply moved").unwrap();
    assert!(at("publish started") < at("apply started"), "{names:?}");
    assert!(last_moved < at("claim deadline"), "{names:?}");
    assert!(has_saga(&trace), "{names:?}");
    let fire = trace
        .iter()
        .find(|r| r.span.name == "decide" && r.text(attr::DECISION) == Some("fire"))
        .expect("a decision to fire");
    assert_eq!(fire.int(attr::VERSION), Some(last));
    let append = trace
        .iter()
        .find(|r| r.span.name == "append timed_out")
        .unwrap();
    assert_eq!(append.text(attr::OUTCOME), Some("inserted"));
    assert!(
        !names.contains(&"retry") && !names.contains(&"dead letter"),
        "{names:?}"
    );

    // A graceful stop flushes and exits cleanly.
    let pid = pipeline.0.id().to_string();
    let killed = Command::new("kill").args(["-TERM", &pid]).status();
    assert!(killed.is_ok_and(|s| s.success()));
    let status = eventually("rpsctl run to stop", Duration::from_secs(30), || {
        let s = pipeline.0.try_wait().ok().flatten();
        async move { s }
    })
    .await;
    assert!(status.success(), "rpsctl run exited with {status}");
    env.cleanup().await;
}
