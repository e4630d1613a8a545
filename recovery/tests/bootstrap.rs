//! Bootstrap from history: `ensure_state` on its own, and the whole pipeline
//! started by `supervise` on shards whose early binlogs are purged while
//! the simulator keeps writing.

mod common;

use common::{converges, independent_fold, read_models, sim};
use fred::interfaces::{HashesInterface, KeysInterface};
use mysql_async::prelude::Queryable;
use read_model::ReadModelKeys;
use recovery::StateLoss;
use rps_core::redis_client::ClientPolicy;
use std::time::Duration;
use test_support::{eventually, ShardServerInstance, TestEnv};
use tokio_util::sync::CancellationToken;

async fn count_rows(env: &TestEnv) -> u64 {
    let mut n = 0u64;
    for shard in 0..env.config.shard_count {
        let mut c = env.admin_conn(shard).await;
        let db = env.config.database(shard);
        let v: Option<u64> = c
            .query_first(format!("SELECT COUNT(*) FROM `{db}`.`match_result_events`"))
            .await
            .unwrap();
        n += v.unwrap_or(0);
    }
    n
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn ensure_state_folds_history_and_commits_positions() {
    let env = TestEnv::with_shards("recovery_ensure", 4).await;
    let redis = ClientPolicy::default()
        .connect(&env.config.redis)
        .await
        .unwrap();
    let cancel = CancellationToken::new();
    simulator::run(env.store.clone(), sim(3000, 0, None, 7), cancel.clone())
        .await
        .unwrap();
    let rows = count_rows(&env).await;

    let r = recovery::ensure_state(&env.config, &redis, &cancel)
        .await
        .unwrap();
    assert_eq!(r.lost, Some(StateLoss::Generation));
    let b = r.bootstrap.expect("an empty Redis needs a bootstrap");
    assert_eq!(b.events, rows, "every row is folded once");
    assert!(
        b.rejected.is_empty(),
        "simulated history is valid: {:?}",
        b.rejected
    );
    assert_eq!(b.servers.len(), 2);
    assert_eq!(r.generation, 1);

    // The read models are the fold of the tables.
    let expected = independent_fold(&env.store).await;
    assert!(
        !expected.deadlines.is_empty(),
        "abandoned matches leave open deadlines"
    );
    let actual = read_models(&redis, &env.config).await.unwrap();
    assert_eq!(expected, actual, "{}", expected.diff(&actual));

    // Checkpoints are what the reader decodes, at the snapshot positions.
    let keys = env.config.keys();
    for snap in &b.servers {
        let raw: String = redis.get(keys.cdc_checkpoint(&snap.server)).await.unwrap();
        let ck = cdc_reader::Checkpoint::decode(&raw).unwrap();
        assert_eq!((ck.file.as_str(), ck.pos), (snap.file.as_str(), snap.pos));
        assert_eq!(ck.gtid.to_string(), snap.gtid);
        assert!(!snap.gtid.is_empty(), "both flavors log GTIDs");
        assert!(ck.inflight.is_none());
    }
    let progress = read_model::generation::progress_hash(&redis, &keys.generation_keys(1), 4)
        .await
        .unwrap();
    for s in 0..4u16 {
        assert_eq!(
            progress.get(&s.to_string()).map(String::as_str),
            Some("0-0")
        );
    }

    // Whole: nothing to do.
    let again = recovery::ensure_state(&env.config, &redis, &cancel)
        .await
        .unwrap();
    assert!(again.bootstrap.is_none() && again.lost.is_none());
    assert_eq!(again.generation, 1);

    // Marker lost, with a leftover of an unfinished generation 6 lying
    // around: the new generation goes above both, the rest is dropped.
    let _: () = redis.del(keys.generation()).await.unwrap();
    let _: () = redis
        .set(
            keys.generation_keys(6).match_state(0, 1),
            "x",
            None,
            None,
            false,
        )
        .await
        .unwrap();
    assert_eq!(
        recovery::check_state(&env.config, &redis).await.unwrap(),
        Err(StateLoss::Generation)
    );
    let r = recovery::ensure_state(&env.config, &redis, &cancel)
        .await
        .unwrap();
    assert_eq!(r.generation, 7);
    assert_eq!(r.bootstrap.as_ref().unwrap().dropping, vec![1, 6]);
    let actual = read_models(&redis, &env.config).await.unwrap();
    assert_eq!(expected, actual, "{}", expected.diff(&actual));
    eventually("old generations dropped", Duration::from_secs(20), || {
        let redis = redis.clone();
        let keys = keys.clone();
        async move {
            let gens = recovery::bootstrap::existing_generations(&redis, &keys)
                .await
                .ok()?;
            (gens.into_iter().collect::<Vec<_>>() == vec![7]).then_some(())
        }
    })
    .await;
    let record: String = redis.get(keys.bootstrap_record()).await.unwrap();
    assert!(record.contains("\"generation\":7"), "{record}");
    env.cleanup().await;
}

/// The first test: shards already holding history whose early
/// binlogs are purged, the simulator writing throughout; the pipeline
/// started by `supervise` converges to the fold of the tables, and every
/// abandoned match times out (once: a second `timed_out` would not fit).
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn pipeline_starts_on_purged_history_while_writes_go_on() {
    let (_servers, env) = on_private_servers("recovery_purged", (41, 42)).await;
    let history_matches: u64 = std::env::var("RPS_RECOVERY_TEST_MATCHES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(25_000);
    let none = CancellationToken::new();
    let report = simulator::run(
        env.store.clone(),
        sim(history_matches, 0, None, 11),
        none.clone(),
    )
    .await
    .unwrap();
    tracing::info!(events = report.events, "history written");
    for server in ["mysql-a", "mysql-b"] {
        purge_all_but_a_new_binlog(&env, server).await;
    }

    // Writes go on before, during and after the bootstrap.
    let live = tokio::spawn(simulator::run(
        env.store.clone(),
        sim(6000, 4, Some(600.0), 12),
        none.clone(),
    ));
    tokio::time::sleep(Duration::from_millis(500)).await;
    let stop = CancellationToken::new();
    let sup = tokio::spawn(recovery::supervise(
        env.config.clone(),
        stop.clone(),
        common::components(env.config.clone()),
    ));
    let live = live.await.unwrap().unwrap();
    assert!(live.events > 0);
    let redis = ClientPolicy::default()
        .connect(&env.config.redis)
        .await
        .unwrap();
    let models = loop {
        let m = converges(&env.store, &redis, Duration::from_secs(90)).await;
        if m.deadlines.is_empty() {
            break m;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    };
    tracing::info!(summary = %models.summary(), "converged");
    assert!(models.players.len() > 100);
    assert_eq!(
        active_generation_of(&redis, &env).await,
        Some(1),
        "one bootstrap, no rebuilds"
    );
    stop.cancel();
    sup.await.unwrap().unwrap();
    env.cleanup().await;
}

/// Two private shard servers (server ids `ids`), which a test may purge
/// or restart, and a 4-shard environment on them; keep the servers alive.
async fn on_private_servers(name: &str, ids: (u32, u32)) -> ([ShardServerInstance; 2], TestEnv) {
    let (a, b) = tokio::join!(
        ShardServerInstance::start(ids.0),
        ShardServerInstance::start(ids.1)
    );
    let servers = [a.test_server("mysql-a"), b.test_server("mysql-b")];
    let env = TestEnv::on_servers(name, 4, &servers, &test_support::shared_redis_url()).await;
    ([a, b], env)
}

/// Rotates `server`'s binlog and purges every earlier file.
async fn purge_all_but_a_new_binlog(env: &TestEnv, server: &str) {
    let mut c = env.admin_conn_to(server).await;
    test_support::purge_all_but_a_new_binlog(&mut c).await;
}

/// The pipeline was stopped, events were written meanwhile, and the binlog
/// at mysql-a's checkpoint was purged. The reader cannot resume; it asks for
/// a rebuild, the supervisor rebuilds from snapshots, and the read models
/// include the events whose binlog is gone.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_checkpoint_in_a_purged_binlog_is_answered_by_a_rebuild() {
    let (_servers, env) = on_private_servers("recovery_resnapshot", (43, 44)).await;
    let none = CancellationToken::new();
    simulator::run(env.store.clone(), sim(2000, 0, None, 31), none.clone())
        .await
        .unwrap();
    let redis = ClientPolicy::default()
        .connect(&env.config.redis)
        .await
        .unwrap();
    let run = |stop: CancellationToken| {
        tokio::spawn(recovery::supervise(
            env.config.clone(),
            stop,
            common::components(env.config.clone()),
        ))
    };
    let stop = CancellationToken::new();
    let sup = run(stop.clone());
    converges(&env.store, &redis, Duration::from_secs(60)).await;
    stop.cancel();
    sup.await.unwrap().unwrap();
    assert_eq!(active_generation_of(&redis, &env).await, Some(1));

    // While the pipeline is down: more history, then the binlog it is in
    // (and the checkpoint's position) purged.
    simulator::run(env.store.clone(), sim(2000, 4, None, 32), none.clone())
        .await
        .unwrap();
    purge_all_but_a_new_binlog(&env, "mysql-a").await;

    let stop = CancellationToken::new();
    let sup = run(stop.clone());
    converges(&env.store, &redis, Duration::from_secs(90)).await;
    assert_eq!(
        active_generation_of(&redis, &env).await,
        Some(2),
        "the request was answered by one rebuild"
    );
    let requests: std::collections::HashMap<String, String> = redis
        .hgetall(env.config.keys().cdc_resnapshot())
        .await
        .unwrap();
    assert!(
        requests.is_empty(),
        "the rebuild clears the request: {requests:?}"
    );
    stop.cancel();
    sup.await.unwrap().unwrap();
    env.cleanup().await;
}

async fn active_generation_of(redis: &fred::clients::Client, env: &TestEnv) -> Option<u64> {
    common::active_generation(redis, &env.config).await
}

/// The status line of `GET path` (plain HTTP/1.0, no client library needed).
async fn http_status(addr: std::net::SocketAddr, path: &str) -> u16 {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
    s.write_all(format!("GET {path} HTTP/1.0\r\nHost: x\r\n\r\n").as_bytes())
        .await
        .unwrap();
    let mut buf = Vec::new();
    s.read_to_end(&mut buf).await.unwrap();
    let text = String::from_utf8_lossy(&buf);
    text.split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0)
}

/// Each kind of loss is noticed within about a second; while the marker is
/// missing the API answers 503, and serves again after the rebuild.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn watch_notices_each_loss_and_the_api_waits_for_the_rebuild() {
    let env = TestEnv::with_shards("recovery_watch", 2).await;
    let redis = ClientPolicy::default()
        .connect(&env.config.redis)
        .await
        .unwrap();
    let cancel = CancellationToken::new();
    simulator::run(env.store.clone(), sim(300, 0, None, 5), cancel.clone())
        .await
        .unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let handle = metrics_exporter_prometheus::PrometheusBuilder::new()
        .build_recorder()
        .handle();
    let api = tokio::spawn(rps_api::serve(
        listener,
        env.config.clone(),
        handle,
        rps_api::ApiOptions {
            page_cache_ttl: Duration::ZERO,
            ..Default::default()
        },
        cancel.clone(),
    ));
    assert_eq!(
        http_status(addr, "/v1/leaderboard").await,
        503,
        "no state yet"
    );

    let keys = env.config.keys();
    let first = recovery::ensure_state(&env.config, &redis, &cancel)
        .await
        .unwrap();
    assert!(first.bootstrap.is_some());
    assert_eq!(http_status(addr, "/v1/leaderboard").await, 200);
    type Case = fn(&rps_core::Keys, u64, u16) -> (Vec<String>, StateLoss);
    let cases: [Case; 4] = [
        |k, _, _| {
            (
                vec![k.cdc_checkpoint("mysql-b")],
                StateLoss::Checkpoint {
                    server: "mysql-b".into(),
                },
            )
        },
        |k, _, _| (vec![k.bootstrap_record()], StateLoss::BootstrapRecord),
        |k, g, shards| {
            (
                (0..shards)
                    .map(|s| k.generation_keys(g).progress(s))
                    .collect(),
                StateLoss::Progress { generation: g },
            )
        },
        |k, _, _| (vec![k.generation()], StateLoss::Generation),
    ];
    for case in cases {
        let r = recovery::ensure_state(&env.config, &redis, &cancel)
            .await
            .unwrap();
        let (lost, expected) = case(&keys, r.generation, env.config.shard_count);
        let watching = {
            let (config, redis, token) = (env.config.clone(), redis.clone(), cancel.clone());
            tokio::spawn(async move { recovery::watch(&config, &redis, &token).await })
        };
        tokio::time::sleep(Duration::from_millis(600)).await;
        assert!(
            !watching.is_finished(),
            "a whole state (generation {}) is not a loss",
            r.generation
        );
        for key in &lost {
            let _: () = redis.del(key).await.unwrap();
        }
        let at = std::time::Instant::now();
        let loss = tokio::time::timeout(Duration::from_secs(3), watching)
            .await
            .expect("noticed within seconds")
            .unwrap();
        assert_eq!(loss, Some(expected));
        assert!(
            at.elapsed() < Duration::from_millis(1200),
            "noticed after {:?}",
            at.elapsed()
        );
        if lost == [keys.generation()] {
            assert_eq!(
                http_status(addr, "/v1/leaderboard").await,
                503,
                "no generation: 503"
            );
        }
    }
    let r = recovery::ensure_state(&env.config, &redis, &cancel)
        .await
        .unwrap();
    assert!(r.bootstrap.is_some());
    assert_eq!(http_status(addr, "/v1/leaderboard").await, 200);
    let expected = independent_fold(&env.store).await;
    let actual = read_models(&redis, &env.config).await.unwrap();
    assert_eq!(expected, actual, "{}", expected.diff(&actual));
    cancel.cancel();
    api.await.unwrap().unwrap();
    env.cleanup().await;
}

/// Match states are written while the snapshots are still being read, so a
/// bootstrap stopped half-way has written part of a generation: it must
/// leave none of it, and the next bootstrap must build the whole state.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn interrupted_bootstrap_leaves_no_partial_generation() {
    let env = TestEnv::with_shards("recovery_interrupt", 4).await;
    let redis = ClientPolicy::default()
        .connect(&env.config.redis)
        .await
        .unwrap();
    simulator::run(
        env.store.clone(),
        sim(50_000, 0, None, 11),
        CancellationToken::new(),
    )
    .await
    .unwrap();
    let g1 = env.config.keys().generation_keys(1);
    // Each shard is folded in ascending ranges of match ids: the smallest
    // match of a shard is in its first range.
    let first: i64 = {
        let mut c = env.admin_conn(0).await;
        let db = env.config.database(0);
        c.query_first(format!(
            "SELECT MIN(match_id) FROM `{db}`.`match_result_events`"
        ))
        .await
        .unwrap()
        .expect("shard 0 has matches")
    };
    let first_key = g1.match_state(0, first);

    let cancel = CancellationToken::new();
    let run = tokio::spawn({
        let (config, redis, cancel) = (env.config.clone(), redis.clone(), cancel.clone());
        async move { recovery::ensure_state(&config, &redis, &cancel).await }
    });
    // Stop it once the first range's match states are in Redis.
    eventually(
        "a match state of g1 in Redis",
        Duration::from_secs(30),
        || {
            let (redis, key) = (redis.clone(), first_key.clone());
            async move {
                let n: i64 = redis.exists(key).await.unwrap();
                (n > 0).then_some(())
            }
        },
    )
    .await;
    cancel.cancel();
    let r = run.await.unwrap();
    assert!(
        matches!(r, Err(recovery::RecoveryError::Cancelled)),
        "the bootstrap was stopped half-way: {r:?}"
    );
    let left = common::scan(&redis, &format!("{}:*", g1.base())).await;
    assert!(left.is_empty(), "{} keys of g1 left behind", left.len());
    let marker: Option<String> = redis.get(env.config.keys().generation()).await.unwrap();
    assert_eq!(marker, None);

    let r = recovery::ensure_state(&env.config, &redis, &CancellationToken::new())
        .await
        .unwrap();
    assert!(r.bootstrap.is_some());
    let expected = independent_fold(&env.store).await;
    let actual = read_models(&redis, &env.config).await.unwrap();
    assert_eq!(expected, actual, "{}", expected.diff(&actual));
    env.cleanup().await;
}
