//! `simulator::run` against the local MariaDB servers: pacing and shutdown.
//! (Row-level checks of a full run live in rpsctl/tests/foundation_cli.rs.)

use mysql_async::prelude::Queryable;
use simulator::{run, SimulateOptions};
use std::time::Duration;
use test_support::TestEnv;
use tokio_util::sync::CancellationToken;

/// With `--rate`, starts follow the rate; on shutdown no new match starts
/// but those in flight are played to their planned end, so nothing is left
/// half-written that was not planned as abandoned.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn paced_run_stops_cleanly_on_shutdown() {
    let env = TestEnv::new("simpaced").await;
    let shutdown = CancellationToken::new();
    let options = SimulateOptions {
        players: 100,
        matches: 100_000,
        rate: Some(200.0),
        abandoned: 0.0,
        voided: 0.0,
        seed: Some(3),
        ..SimulateOptions::default()
    };
    let stop = shutdown.clone();
    tokio::spawn(async move {
        tokio::time::sleep(Duration::from_millis(1500)).await;
        stop.cancel();
    });
    let report = run(env.store.clone(), options, shutdown).await.unwrap();

    // 1.5 s at 200 starts/s: about 300 (one is due at once, scheduling is coarse).
    assert!((250..=340).contains(&report.matches_started), "{report:?}");
    assert_eq!(report.finished + report.voided, report.matches_started);
    assert_eq!(
        (report.abandoned, report.interrupted, report.conflicts),
        (0, 0, 0)
    );
    assert_eq!(report.events, 4 * report.finished);
    assert_eq!(report.rows_per_shard.values().sum::<u64>(), report.events);
    assert!(report.elapsed >= Duration::from_millis(1400));
    env.cleanup().await;
}

#[tokio::test]
async fn bad_options_are_refused_before_writing() {
    let env = TestEnv::with_shards("simbadopts", 2).await;
    for options in [
        SimulateOptions {
            players: 1,
            ..SimulateOptions::default()
        },
        SimulateOptions {
            abandoned: 0.7,
            voided: 0.5,
            ..SimulateOptions::default()
        },
        SimulateOptions {
            rate: Some(-1.0),
            ..SimulateOptions::default()
        },
        SimulateOptions {
            first_node: 126,
            nodes: 4,
            ..SimulateOptions::default()
        },
    ] {
        let err = run(env.store.clone(), options, CancellationToken::new())
            .await
            .unwrap_err();
        assert!(matches!(err, simulator::SimulateError::Options(_)), "{err}");
    }
    for shard in 0..2 {
        let mut conn = env.admin_conn(shard).await;
        let rows: Option<i64> = conn
            .query_first(format!(
                "SELECT COUNT(*) FROM `{}`.match_result_events",
                env.config.database(shard)
            ))
            .await
            .unwrap();
        assert_eq!(rows, Some(0));
    }
    env.cleanup().await;
}
