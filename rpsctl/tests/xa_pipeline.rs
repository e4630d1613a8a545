//! XA branches through the whole pipeline under live load: `rpsctl run`
//! (reader, projector, compensator, API) while the simulator plays and
//! game-server-like sessions write whole matches inside XA branches that
//! commit (two-phase and one-phase), roll back, or hang. The pipeline is
//! killed with SIGKILL while branches are prepared and they are decided
//! while it is down. At every quiet moment the read models equal the fold
//! of the committed tables: a prepared branch counts for nothing.

use read_model::ReadModelKeys;
use rps_core::ShardId;
use std::time::Duration;
use test_support::xa::{decide_branch, full_match, rollback_leftovers, write_branch, BranchEnd};
use test_support::{eventually, TestEnv};
use tokio_util::sync::CancellationToken;

#[path = "common/tournament.rs"]
mod tournament;

async fn read_models_equal_the_fold(env: &TestEnv, what: &str) {
    let deadline = std::time::Instant::now() + Duration::from_secs(90);
    loop {
        let r = history::verify::run(
            env.config.clone(),
            Default::default(),
            CancellationToken::new(),
        )
        .await
        .expect("verify");
        if r.total_differences == 0 {
            assert!(r.keys_checked > 0);
            return;
        }
        if std::time::Instant::now() > deadline {
            panic!(
                "{what}: {} differences, e.g. {:#?}",
                r.total_differences, r.differences
            );
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

async fn match_in_read_models(env: &TestEnv, match_id: i64) -> bool {
    use fred::interfaces::KeysInterface;
    let redis = env.redis().await;
    let keys = env.config.keys();
    let g: Option<u64> = redis.get(keys.generation()).await.expect("generation");
    let gk = keys.generation_keys(g.unwrap_or(0));
    read_model::read::find_match(&redis, &gk, env.config.shard_count, match_id)
        .await
        .expect("match state")
        .is_some()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn xa_branches_under_live_load_and_a_pipeline_kill9() {
    let env = tournament::tournament_env(TestEnv::new("xa_live").await).await;
    let (_dir, path) = env.write_config_file();
    let sc = env.config.shard_count;
    let tag = env.name.clone();
    let xid = |i: usize| format!("'{tag}-{i}'");
    let mut pipeline = tournament::rpsctl_run(&path);
    test_support::pipeline::wait_until_streaming(&env.config).await;

    let load = tokio::spawn(simulator::run(
        env.store.clone(),
        simulator::SimulateOptions {
            players: 100,
            matches: 1_500,
            abandoned: 0.05,
            voided: 0.05,
            deadline: Duration::from_secs(2),
            concurrency: 50,
            ..Default::default()
        },
        CancellationToken::new(),
    ));

    // 32 branches over every shard: i % 4 says how each one ends.
    let shard_of = |i: usize| (i % usize::from(sc)) as ShardId;
    let match_of = |i: usize| 7_000_000 + i as i64;
    let mut decide_later = Vec::new();
    for i in 0..32 {
        let events = full_match(shard_of(i), sc, match_of(i));
        let end = if i % 4 == 2 {
            BranchEnd::OnePhase
        } else {
            BranchEnd::Prepare
        };
        write_branch(&env, shard_of(i), &xid(i), &events, 2, end).await;
        if end == BranchEnd::Prepare {
            decide_later.push(i);
        }
        if i == 15 {
            // Branches 0..16 prepared and partly decided: kill the pipeline,
            // decide some while it is down, start it again.
            for &j in decide_later.iter().filter(|&&j| j < 8) {
                decide_branch(&env, shard_of(j), &xid(j), j % 4 != 1).await;
            }
            // SIGKILL: no shutdown path runs.
            drop(pipeline);
            for &j in decide_later.iter().filter(|&&j| (8..16).contains(&j)) {
                decide_branch(&env, shard_of(j), &xid(j), j % 4 != 1).await;
            }
            pipeline = tournament::rpsctl_run(&path);
        }
    }
    // The rest is decided under load, except one branch that hangs.
    let hanging = 31; // prepared (31 % 4 == 3), left undecided
    for &j in decide_later.iter().filter(|&&j| j >= 16 && j != hanging) {
        decide_branch(&env, shard_of(j), &xid(j), j % 4 != 1).await;
    }
    let report = load.await.expect("simulator task").expect("simulate");
    assert!(report.matches_started > 0);

    if test_support::TestFlavor::current() == test_support::TestFlavor::MySql {
        // A MySQL snapshot cannot start beside a prepared branch that holds
        // the event tables' metadata locks: verify says so and names it.
        let err = history::verify::run(
            env.config.clone(),
            Default::default(),
            CancellationToken::new(),
        )
        .await
        .expect_err("a snapshot beside a hanging branch on MySQL");
        let text = err.to_string();
        assert!(text.contains("prepared XA branches"), "{text}");
        let hanging_xid = rps_core::Xid::parse_sql(&xid(hanging)).unwrap().to_string();
        assert!(text.contains(&hanging_xid), "{text}");
    } else {
        read_models_equal_the_fold(
            &env,
            "read models = fold of committed tables, one branch hanging",
        )
        .await;
    }
    for i in 0..32 {
        let committed = i != hanging && i % 4 != 1;
        assert_eq!(
            match_in_read_models(&env, match_of(i)).await,
            committed,
            "branch {i}: in the read models exactly when committed"
        );
    }

    // The hanging branch is rolled back: nothing changes; a new one commits.
    decide_branch(&env, shard_of(hanging), &xid(hanging), false).await;
    write_branch(
        &env,
        3,
        &xid(99),
        &full_match(3, sc, match_of(99)),
        4,
        BranchEnd::Prepare,
    )
    .await;
    decide_branch(&env, 3, &xid(99), true).await;
    eventually(
        "the last branch to be applied",
        Duration::from_secs(30),
        || {
            let env = &env;
            async move { match_in_read_models(env, match_of(99)).await.then_some(()) }
        },
    )
    .await;
    read_models_equal_the_fold(&env, "read models = fold after the last decisions").await;
    drop(pipeline);
    rollback_leftovers(&env, &tag).await;
    env.cleanup().await;
}
