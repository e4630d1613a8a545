//! Redis losing the pipeline's state mid-load: a FLUSHALL is detected and
//! rebuilt from the event tables; a kill -9 with AOF is not a loss at all
//! (the AOF holds a consistent prefix) and the components resume from it.
//! Both converge to the fold of the tables. Each test owns a private Redis;
//! MySQL is the shared dev environment (nothing there is killed).

mod common;

use common::{active_generation, converges, sim};
use fred::interfaces::{ClientLike, KeysInterface};
use rps_core::redis_client::ClientPolicy;
use std::time::{Duration, Instant};
use test_support::{eventually, RedisInstance, TestEnv, TestServer};
use tokio_util::sync::CancellationToken;

fn shared_servers() -> Vec<TestServer> {
    std::env::var("RPS_TEST_MYSQL_PORTS")
        .unwrap_or_else(|_| "3307 3308".to_string())
        .split_whitespace()
        .filter_map(|p| p.parse().ok())
        .enumerate()
        .map(|(i, port)| TestServer {
            name: format!("mysql-{}", (b'a' + i as u8) as char),
            port,
        })
        .collect()
}

async fn record(redis: &fred::clients::Client, env: &TestEnv) -> Option<String> {
    redis
        .get(env.config.keys().bootstrap_record())
        .await
        .ok()
        .flatten()
}

/// Starts history, the supervisor and a live load; returns the live load's
/// task and the supervisor's.
async fn start(
    env: &TestEnv,
    stop: &CancellationToken,
    seed: u64,
) -> (
    tokio::task::JoinHandle<Result<simulator::Report, simulator::SimulateError>>,
    tokio::task::JoinHandle<Result<(), recovery::RecoveryError>>,
) {
    let none = CancellationToken::new();
    simulator::run(env.store.clone(), sim(5_000, 0, None, seed), none.clone())
        .await
        .unwrap();
    let sup = tokio::spawn(recovery::supervise(
        env.config.clone(),
        stop.clone(),
        common::components(env.config.clone()),
    ));
    let live = tokio::spawn(simulator::run(
        env.store.clone(),
        sim(8_000, 4, Some(500.0), seed + 1),
        none,
    ));
    (live, sup)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn flushall_mid_load_is_detected_and_rebuilt() {
    let private = RedisInstance::start(false).await;
    let env = TestEnv::on_servers("recovery_flush", 4, &shared_servers(), &private.url()).await;
    let redis = ClientPolicy::default()
        .connect(&rps_core::config::RedisConfig::from_url(private.url()))
        .await
        .unwrap();
    let stop = CancellationToken::new();
    let (live, sup) = start(&env, &stop, 21).await;

    let first = eventually("first bootstrap", Duration::from_secs(60), || async {
        record(&redis, &env).await
    })
    .await;
    // Let the live load flow through the pipeline for a while.
    tokio::time::sleep(Duration::from_secs(4)).await;
    assert!(
        !live.is_finished(),
        "the load must still be running at the FLUSHALL"
    );
    let _: () = redis.flushall(false).await.unwrap();
    let flushed = Instant::now();
    let second = eventually(
        "rebuild after FLUSHALL",
        Duration::from_secs(60),
        || async { record(&redis, &env).await.filter(|r| *r != first) },
    )
    .await;
    let rebuilt_in = flushed.elapsed();
    tracing::info!(?rebuilt_in, record = %second, "rebuilt");
    assert!(rebuilt_in < Duration::from_secs(20), "took {rebuilt_in:?}");

    live.await.unwrap().unwrap();
    let models = loop {
        let m = converges(&env.store, &redis, Duration::from_secs(90)).await;
        if m.deadlines.is_empty() {
            break m;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    };
    tracing::info!(summary = %models.summary(), "converged after FLUSHALL");
    assert!(active_generation(&redis, &env.config).await.is_some());
    stop.cancel();
    sup.await.unwrap().unwrap();
    env.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn redis_kill9_with_aof_resumes_without_rebuild() {
    let mut private = RedisInstance::start(true).await;
    let env = TestEnv::on_servers("recovery_kill9", 4, &shared_servers(), &private.url()).await;
    let stop = CancellationToken::new();
    let (live, sup) = start(&env, &stop, 31).await;
    let redis = ClientPolicy::default()
        .connect(&rps_core::config::RedisConfig::from_url(private.url()))
        .await
        .unwrap();
    let first = eventually("first bootstrap", Duration::from_secs(60), || async {
        record(&redis, &env).await
    })
    .await;
    let generation = active_generation(&redis, &env.config).await;
    tokio::time::sleep(Duration::from_secs(4)).await;
    assert!(
        !live.is_finished(),
        "the load must still be running at the kill"
    );
    let _ = redis.quit().await;
    private.kill9();
    tokio::time::sleep(Duration::from_secs(2)).await;
    private.restart().await;
    let url = private.url();
    let redis = eventually("Redis to load its AOF", Duration::from_secs(60), || {
        let url = url.clone();
        async move {
            let c = ClientPolicy::default()
                .connect(&rps_core::config::RedisConfig::from_url(url.as_str()))
                .await
                .ok()?;
            let _: Option<String> = c.get("any").await.ok()?;
            Some(c)
        }
    })
    .await;

    live.await.unwrap().unwrap();
    let models = loop {
        let m = converges(&env.store, &redis, Duration::from_secs(90)).await;
        if m.deadlines.is_empty() {
            break m;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    };
    tracing::info!(summary = %models.summary(), "converged after kill -9");
    assert_eq!(
        record(&redis, &env).await.as_deref(),
        Some(first.as_str()),
        "the AOF kept a whole state: no rebuild"
    );
    assert_eq!(active_generation(&redis, &env.config).await, generation);
    stop.cancel();
    sup.await.unwrap().unwrap();
    env.cleanup().await;
}
