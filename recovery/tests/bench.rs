//! Benchmark (run explicitly, see docs/benchmarks.md): time from an
//! empty Redis to a serving API over N events of history, and the
//! snapshot's events per second.
//!
//! `RPS_BENCH_MATCHES` matches of history (about 3.9 events each) are
//! written by the simulator into the shared dev MariaDB servers under a
//! unique prefix; Redis is a private, empty instance.

mod common;

use rps_core::redis_client::ClientPolicy;
use std::time::{Duration, Instant};
use test_support::{RedisInstance, TestEnv, TestServer};
use tokio_util::sync::CancellationToken;

async fn api_status(addr: std::net::SocketAddr) -> u16 {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let Ok(mut s) = tokio::net::TcpStream::connect(addr).await else {
        return 0;
    };
    let _ = s
        .write_all(b"GET /v1/leaderboard?limit=10 HTTP/1.0\r\nHost: x\r\n\r\n")
        .await;
    let mut buf = Vec::new();
    let _ = s.read_to_end(&mut buf).await;
    String::from_utf8_lossy(&buf)
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
#[ignore = "benchmark: minutes of load; run with --ignored (docs/benchmarks.md)"]
async fn empty_redis_to_serving_api() {
    let matches: u64 = std::env::var("RPS_BENCH_MATCHES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(250_000);
    let redis_instance = RedisInstance::start(false).await;
    let servers: Vec<TestServer> = [("mysql-a", 3307), ("mysql-b", 3308)]
        .into_iter()
        .map(|(name, port)| TestServer {
            name: name.into(),
            port,
        })
        .collect();
    let env = TestEnv::on_servers("recovery_bench", 8, &servers, &redis_instance.url()).await;
    let none = CancellationToken::new();
    let mut opts = common::sim(matches, 0, None, 99);
    opts.players = 100_000;
    opts.concurrency = 8000;
    let written = simulator::run(env.store.clone(), opts, none.clone())
        .await
        .unwrap();
    println!(
        "history: {} events in {:.1} s ({:.0} events/s)",
        written.events,
        written.elapsed.as_secs_f64(),
        written.events_per_second()
    );

    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let handle = metrics_exporter_prometheus::PrometheusBuilder::new()
        .build_recorder()
        .handle();
    let api = tokio::spawn(rps_api::serve(
        listener,
        env.config.clone(),
        handle,
        rps_api::ApiOptions::default(),
        none.clone(),
    ));
    assert_eq!(api_status(addr).await, 503);
    let redis = ClientPolicy::default()
        .connect(&rps_core::config::RedisConfig::from_url(
            redis_instance.url(),
        ))
        .await
        .unwrap();
    let started = Instant::now();
    let poll = tokio::spawn(async move {
        loop {
            if api_status(addr).await == 200 {
                return Instant::now();
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    });
    let r = recovery::ensure_state(&env.config, &redis, &none)
        .await
        .unwrap();
    let serving = poll.await.unwrap().duration_since(started);
    let b = r.bootstrap.unwrap();
    println!(
        "N = {} events, {} matches, {} open; snapshot {:.2} s = {:.0} events/s; write {:.2} s ({} commands); \
         bootstrap {:.2} s; empty Redis to API 200: {:.2} s",
        b.events,
        b.matches,
        b.open_matches,
        b.snapshot_seconds,
        b.events as f64 / b.snapshot_seconds,
        b.write_seconds,
        b.keys_written,
        b.total_seconds,
        serving.as_secs_f64()
    );
    assert_eq!(b.events, written.events);
    none.cancel();
    let _ = api.await;
    env.cleanup().await;
}
