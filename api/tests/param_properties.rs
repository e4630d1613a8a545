//! Arbitrary bytes in path segments and query strings, through the whole
//! router over real read models: never a panic, never a 5xx, never a plain
//! text rejection; a bad value is a 400 naming it, a good one is answered.

mod common;

use axum::body::Body;
use axum::http::{Request, StatusCode, Uri};
use axum::Router;
use proptest::prelude::*;
use proptest::test_runner::{Config as RunnerConfig, TestCaseError, TestRunner};
use rps_api::ApiOptions;
use serde_json::Value as Json;
use std::time::Duration;
use test_support::TestEnv;
use tower::ServiceExt;

/// Bytes a path segment may hold unencoded (RFC 3986 `pchar` minus `%`).
const PATH_RAW: &[u8] = b"-._~!$&'()*+,;=:@";
/// The same for a query value, minus what separates or re-codes (`&=+#`).
const QUERY_RAW: &[u8] = b"-._~!$'()*,;:@/?";

/// Each byte either as `%XX` or, where allowed, as itself; decoding gives
/// back exactly `bytes`.
fn encode(bytes: &[(u8, bool)], raw: &[u8]) -> String {
    bytes
        .iter()
        .map(|&(b, plain)| {
            if plain && (b.is_ascii_alphanumeric() || raw.contains(&b)) {
                (b as char).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect()
}

/// Arbitrary bytes, and bytes that are nearly a number or a season.
fn bytes() -> impl Strategy<Value = Vec<(u8, bool)>> {
    let near = "[-+0-9Q ]{0,21}".prop_map(|s| s.into_bytes());
    let number = any::<i128>().prop_map(|v| v.to_string().into_bytes());
    let season = "[0-9]{4}Q[0-5]".prop_map(|s| s.into_bytes());
    let any_bytes = proptest::collection::vec(any::<u8>(), 0..24);
    (
        prop_oneof![any_bytes, near, number, season],
        proptest::collection::vec(any::<bool>(), 24),
    )
        .prop_map(|(b, plain)| b.into_iter().zip(plain).collect())
}

fn decoded(bytes: &[(u8, bool)]) -> Vec<u8> {
    bytes.iter().map(|&(b, _)| b).collect()
}

fn digits_in(b: &[u8], min: u128, max: u128) -> bool {
    !b.is_empty()
        && b.iter().all(u8::is_ascii_digit)
        && std::str::from_utf8(b)
            .unwrap()
            .parse::<u128>()
            .is_ok_and(|v| (min..=max).contains(&v))
}

fn valid(name: &str, value: &[u8]) -> bool {
    // Query values are decoded as UTF-8 with replacement characters.
    let value = String::from_utf8_lossy(value);
    let b = value.as_bytes();
    match name {
        "season" => {
            b.is_empty()
                || (b.len() == 6
                    && b[..4].iter().all(u8::is_ascii_digit)
                    && b[4] == b'Q'
                    && (b'1'..=b'4').contains(&b[5]))
        }
        "offset" => digits_in(b, 0, (i64::MAX - 999) as u128),
        "limit" => digits_in(b, 1, 1000),
        "radius" => digits_in(b, 0, 100),
        _ => true,
    }
}

async fn call(app: &Router, uri: Uri) -> (StatusCode, Option<String>, Json) {
    let req = Request::builder().uri(uri).body(Body::empty()).unwrap();
    let resp = app.clone().oneshot(req).await.unwrap();
    let status = resp.status();
    let content_type = resp
        .headers()
        .get("content-type")
        .map(|v| v.to_str().unwrap().to_string());
    let body = axum::body::to_bytes(resp.into_body(), usize::MAX)
        .await
        .unwrap();
    let json = serde_json::from_slice(&body)
        .unwrap_or_else(|_| Json::String(format!("NOT JSON: {}", String::from_utf8_lossy(&body))));
    (status, content_type, json)
}

fn check(
    uri: &str,
    (status, content_type, body): &(StatusCode, Option<String>, Json),
    invalid: &[&str],
) -> Result<(), TestCaseError> {
    prop_assert_eq!(content_type.as_deref(), Some("application/json"), "{}", uri);
    prop_assert!(body.is_object(), "{}: {}", uri, body);
    if invalid.is_empty() {
        prop_assert!(
            *status == StatusCode::OK || *status == StatusCode::NOT_FOUND,
            "{}: {} {}",
            uri,
            status,
            body
        );
    } else {
        prop_assert_eq!(*status, StatusCode::BAD_REQUEST, "{}: {}", uri, body);
        let parameter = body["parameter"].as_str().unwrap_or_default();
        prop_assert!(
            invalid.contains(&parameter),
            "{}: names {:?}, expected one of {:?}",
            uri,
            parameter,
            invalid
        );
        prop_assert!(body["error"].as_str().is_some_and(|e| !e.is_empty()));
    }
    if *status != StatusCode::OK {
        prop_assert!(body["error"].is_string(), "{}: {}", uri, body);
    }
    Ok(())
}

#[test]
fn arbitrary_paths_and_queries_never_break_the_api() {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let (env, app) = rt.block_on(async {
        let env = TestEnv::with_shards("api_param_props", 1).await;
        common::load_fixture(&env).await;
        let metrics = metrics_exporter_prometheus::PrometheusBuilder::new()
            .build_recorder()
            .handle();
        let options = ApiOptions {
            page_cache_ttl: Duration::ZERO,
            ..Default::default()
        };
        let app = rps_api::router(&env.config, metrics, &options)
            .await
            .unwrap();
        (env, app)
    });
    let config = RunnerConfig {
        cases: 512,
        failure_persistence: None,
        ..RunnerConfig::default()
    };

    // Path segments, with a query that is always valid.
    let mut runner = TestRunner::new(config.clone());
    let routes = prop_oneof![
        Just(("/v1/players/", "")),
        Just(("/v1/players/", "/around")),
        Just(("/v1/matches/", "")),
    ];
    runner
        .run(&(routes, bytes()), |((prefix, suffix), seg)| {
            let uri = format!("{prefix}{}{suffix}", encode(&seg, PATH_RAW));
            let r = rt.block_on(call(&app, uri.parse().unwrap()));
            let id = decoded(&seg);
            if id.is_empty() && suffix.is_empty() {
                // A trailing slash: another path, which no route serves. (An
                // empty segment inside a path is an empty, invalid id.)
                prop_assert_eq!(r.0, StatusCode::NOT_FOUND, "{}", uri);
                return check(&uri, &r, &[]);
            }
            let ok = digits_in(&id, 1, i64::MAX as u128);
            check(&uri, &r, if ok { &[] } else { &["id"] })
        })
        .unwrap();

    // Query strings of known and unknown names, repeated at will.
    let mut runner = TestRunner::new(config.clone());
    let paths = prop_oneof![
        Just("/v1/leaderboard"),
        Just("/v1/players/30"),
        Just("/v1/players/10/around"),
        Just("/v1/matches/101"),
        Just("/v1/status"),
    ];
    let names = prop_oneof![
        Just("season"),
        Just("offset"),
        Just("limit"),
        Just("radius"),
        Just("id"),
        Just(""),
        Just("x y"),
    ];
    let pairs = proptest::collection::vec((names, bytes()), 0..5);
    runner
        .run(&(paths, pairs), |(path, pairs)| {
            let query: Vec<String> = pairs
                .iter()
                .map(|(k, v)| format!("{}={}", k.replace(' ', "+"), encode(v, QUERY_RAW)))
                .collect();
            let uri = format!("{path}?{}", query.join("&"));
            let r = rt.block_on(call(&app, uri.parse().unwrap()));
            let used: &[&str] = match path {
                "/v1/leaderboard" => &["season", "offset", "limit"],
                "/v1/players/30" => &["season"],
                "/v1/players/10/around" => &["season", "radius"],
                _ => &[],
            };
            let invalid: Vec<&str> = used
                .iter()
                .copied()
                .filter(|name| {
                    pairs
                        .iter()
                        .rev()
                        .find(|(k, _)| k == name)
                        .is_some_and(|(_, v)| !valid(name, &decoded(v)))
                })
                .collect();
            check(&uri, &r, &invalid)
        })
        .unwrap();

    // Whatever text makes a valid URI, as the query string itself.
    let mut runner = TestRunner::new(config);
    runner
        .run(&"[a-zA-Z0-9=&%+;._~!$'()*,:@/?-]{0,40}", |q| {
            let uri = format!("/v1/leaderboard?{q}");
            let Ok(parsed) = uri.parse::<Uri>() else {
                return Ok(());
            };
            let r = rt.block_on(call(&app, parsed));
            prop_assert!(
                r.0 == StatusCode::OK || r.0 == StatusCode::BAD_REQUEST,
                "{}: {} {}",
                uri,
                r.0,
                r.2
            );
            check(
                &uri,
                &r,
                if r.0 == StatusCode::OK {
                    &[]
                } else {
                    &["season", "offset", "limit", "query"]
                },
            )
        })
        .unwrap();

    rt.block_on(env.cleanup());
}
