//! What tracing costs, in the same run: `rpsctl bench` on a private pair of
//! shard servers (of `RPS_TEST_FLAVOR`) and a private Redis, alternating
//! tracing off, tracing 10 % of the matches and tracing all of them, each
//! traced run exporting over OTLP/HTTP to a sink in this process that
//! decodes nothing and answers at once (the collector beside the process
//! that docs/tracing.md assumes). Prints every run's report and what the
//! sink received; docs/benchmarks.md quotes them.
//!
//! ```sh
//! cargo build --release -p rpsctl --bin rpsctl --example trace_bench
//! RPS_TEST_FLAVOR=mariadb target/release/examples/trace_bench --rounds 2 -- --backlog 200000
//! ```
//! Arguments after `--` go to every `rpsctl bench`.

mod common;

use axum::body::Bytes;
use common::BenchHarness;
use std::process::Command;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use test_support::{test_config, write_config_file, RedisInstance, ShardServerInstance};

/// Requests and bytes the sink received.
#[derive(Default)]
struct Received {
    requests: AtomicU64,
    bytes: AtomicU64,
}

async fn sink() -> (u16, Arc<Received>) {
    let received = Arc::new(Received::default());
    let counts = received.clone();
    let app = axum::Router::new().route(
        "/v1/traces",
        axum::routing::post(move |body: Bytes| {
            let counts = counts.clone();
            async move {
                counts.requests.fetch_add(1, Ordering::Relaxed);
                counts.bytes.fetch_add(body.len() as u64, Ordering::Relaxed);
                // An empty ExportTraceServiceResponse: all accepted.
                (
                    [("content-type", "application/x-protobuf")],
                    Vec::<u8>::new(),
                )
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind the sink");
    let port = listener.local_addr().expect("sink address").port();
    tokio::spawn(async move { axum::serve(listener, app).await });
    (port, received)
}

#[tokio::main]
async fn main() {
    let BenchHarness {
        rounds,
        bench_args,
        rpsctl,
    } = BenchHarness::from_args("trace_bench");

    let servers = [
        ShardServerInstance::start(7411).await,
        ShardServerInstance::start(7412).await,
    ];
    let redis = RedisInstance::start_with(
        false,
        // As the local environment runs it: AOF, fsync once a second.
        |_| {
            ["--appendonly", "yes", "--appendfsync", "everysec"]
                .map(String::from)
                .to_vec()
        },
        false,
    )
    .await;
    let (sink_port, received) = sink().await;

    let off = test_config(
        "tracebench",
        8,
        &[
            servers[0].test_server("bench-a"),
            servers[1].test_server("bench-b"),
        ],
        &redis.url(),
    );
    let traced = |ratio: f64| {
        let mut c = off.clone();
        c.tracing.otlp_endpoint = Some(format!("http://127.0.0.1:{sink_port}"));
        c.tracing.sample_ratio = ratio;
        c
    };
    let variants = [
        ("off", off.clone()),
        ("10 %", traced(0.1)),
        ("100 %", traced(1.0)),
    ];

    for round in 1..=rounds {
        for (name, config) in &variants {
            let (_dir, path) = write_config_file(config);
            let before = (
                received.requests.load(Ordering::Relaxed),
                received.bytes.load(Ordering::Relaxed),
            );
            println!("\n## round {round}: tracing {name}\n");
            let mut cmd = Command::new(&rpsctl);
            cmd.arg("--config")
                .arg(&path)
                .arg("bench")
                .args(&bench_args)
                .env("RUST_LOG", "warn");
            for var in [
                "OTEL_SDK_DISABLED",
                "OTEL_EXPORTER_OTLP_ENDPOINT",
                "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT",
                "OTEL_TRACES_SAMPLER",
                "OTEL_TRACES_SAMPLER_ARG",
            ] {
                cmd.env_remove(var);
            }
            let status = cmd.status().expect("run rpsctl bench");
            assert!(status.success(), "rpsctl bench ({name}) failed: {status}");
            println!(
                "\nsink: {} export requests, {:.1} MB",
                received.requests.load(Ordering::Relaxed) - before.0,
                (received.bytes.load(Ordering::Relaxed) - before.1) as f64 / 1e6
            );
        }
    }
}
