//! Replay, verify and status against the real pipeline: cdc-reader and
//! projector run in-process on a test slice of the shared servers, the
//! simulator writes matches, and the history commands must agree with what
//! the live pipeline built.

use history::fred::interfaces::{HashesInterface, KeysInterface, SortedSetsInterface};
use history::replay::{CrashPoint, ReplayOptions};
use history::verify::{VerifyOptions, VerifyReport};
use read_model::board_member;
use read_model::generation::switch::{self, State};
use read_model::ReadModelKeys;
use rps_core::Config;
use std::path::PathBuf;
use std::process::Command;
use std::sync::Arc;
use std::time::Duration;
use test_support::pipeline::InProcessPipeline;
use test_support::TestEnv;
use tokio_util::sync::CancellationToken;

#[path = "common/tournament.rs"]
mod tournament;

/// cdc-reader and projector, in this process, until stopped.
async fn start_pipeline(config: &Arc<Config>) -> InProcessPipeline {
    let mut p = InProcessPipeline::new();
    p.spawn("cdc-reader", config, cdc_reader::run);
    p.spawn("projector", config, projector::run);
    p.ready(config).await;
    p
}

fn sim(matches: u64, rate: Option<f64>, first_node: u8, seed: u64) -> simulator::SimulateOptions {
    simulator::SimulateOptions {
        players: 300,
        matches,
        rate,
        concurrency: 400,
        seed: Some(seed),
        nodes: 4,
        first_node,
        batch_rows: 200,
        ..Default::default()
    }
}

/// A load played to its end.
async fn play(env: &TestEnv, options: simulator::SimulateOptions, what: &str) -> simulator::Report {
    simulator::run(env.store.clone(), options, CancellationToken::new())
        .await
        .expect(what)
}

/// A replay that switches to the generation it builds.
async fn replay(config: &Arc<Config>) -> history::replay::ReplayReport {
    history::replay::run(
        config.clone(),
        ReplayOptions {
            switch_timeout: Duration::from_secs(60),
            ..Default::default()
        },
        CancellationToken::new(),
    )
    .await
    .expect("replay")
}

/// `replay --dry-run`: builds a generation, compares, drops it.
async fn dry_run(config: &Arc<Config>) -> history::replay::ReplayReport {
    history::replay::run(
        config.clone(),
        ReplayOptions {
            dry_run: true,
            ..Default::default()
        },
        CancellationToken::new(),
    )
    .await
    .expect("dry run")
}

async fn verify(config: &Arc<Config>, repair: bool) -> VerifyReport {
    history::verify::run(
        config.clone(),
        VerifyOptions {
            repair,
            show_progress: false,
        },
        CancellationToken::new(),
    )
    .await
    .expect("verify")
}

/// Waits until the live generation equals the fold of the event store.
async fn converged(config: &Arc<Config>) -> VerifyReport {
    let mut last = None;
    for _ in 0..120 {
        let r = verify(config, false).await;
        if r.total_differences == 0 && !r.pipeline_moved {
            return r;
        }
        last = Some((
            r.total_differences,
            r.differences.into_iter().take(5).collect::<Vec<_>>(),
        ));
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    panic!("live read models never converged to the fold of history: {last:?}");
}

fn write_config(env: &TestEnv) -> PathBuf {
    let mut c = env.config.as_ref().clone();
    c.cdc.heartbeat_ms = 500;
    let toml = c.to_toml();
    let path = std::env::temp_dir().join(format!("{}.toml", env.name));
    std::fs::write(&path, toml).expect("write config");
    path
}

fn rpsctl(config: &PathBuf, args: &[&str]) -> (i32, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_rpsctl"))
        .arg("--config")
        .arg(config)
        .args(args)
        .env("RUST_LOG", "warn")
        .output()
        .expect("run rpsctl");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn replay_during_live_load_switches_without_losing_an_event() {
    let env = TestEnv::new("hist_replay").await;
    let config = env.config.clone();
    let pipeline = start_pipeline(&config).await;
    let first = play(&env, sim(1500, None, 0, 11), "initial load").await;
    assert!(first.events > 3000);
    converged(&config).await;

    // A live load that keeps writing while the replay snapshots, writes
    // generation 2, catches up and switches.
    let live = tournament::play(&env, sim(2500, Some(600.0), 8, 12));
    tokio::time::sleep(Duration::from_millis(700)).await;
    let report = replay(&config).await;
    assert!(report.switched);
    assert_eq!(report.old_generation, 1);
    assert_eq!(report.new_generation, Some(2));
    assert!(report.events >= first.events, "{report:?}");
    assert!(
        report.rejections.is_empty(),
        "{:?} {:?}",
        report.rejections,
        report.rejection_samples
    );
    let live = live.await.expect("live load task");
    assert!(!live.rows_per_shard.is_empty());
    assert!(
        report.catchup_entries > 0,
        "the live load must have crossed the snapshot: {report:?}"
    );

    // After the load: the live generation is 2 and equals the fold of every
    // event, so no live event was lost or applied twice across the switch.
    let r = converged(&config).await;
    assert_eq!(r.generation, 2);
    assert!(r.keys_checked > 2500);
    let client = env.redis().await;
    let keys = config.keys();
    let old_left =
        test_support::scan_keys(&client, &format!("{}:*", keys.generation_keys(1).base())).await;
    assert!(
        old_left.is_empty(),
        "generation 1 was not dropped: {:?}",
        &old_left[..old_left.len().min(5)]
    );
    pipeline.stop().await;
    env.cleanup().await;
}

/// A replay stopped as a crash would stop it at `at`, during a live load.
async fn replay_crashing(config: &Arc<Config>, at: CrashPoint, hold: Duration) {
    let err = history::replay::run(
        config.clone(),
        ReplayOptions {
            switch_timeout: Duration::from_secs(60),
            switch_hold: hold,
            crash_at: Some(at),
            ..Default::default()
        },
        CancellationToken::new(),
    )
    .await
    .expect_err("the replay stops at its crash point");
    assert!(matches!(err, history::HistoryError::Crashed(_)), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn replay_dying_during_the_switch_leaves_a_pipeline_that_recovers() {
    let env = TestEnv::new("hist_crash").await;
    let config = env.config.clone();
    let pipeline = start_pipeline(&config).await;
    play(&env, sim(600, None, 0, 31), "initial load").await;
    converged(&config).await;
    let client = env.redis().await;
    let keys = config.keys();
    let live_load =
        |first_node, seed| tournament::play(&env, sim(900, Some(400.0), first_node, seed));
    let after_crash = |first_node, seed| {
        play(
            &env,
            sim(300, None, first_node, seed),
            "load after the crash",
        )
    };

    // Dies holding every shard, generation 2 completed but not decided:
    // the live projector waits out the hold, then resumes generation 1,
    // which ends equal to the fold.
    let live = live_load(8, 32);
    tokio::time::sleep(Duration::from_millis(500)).await;
    replay_crashing(&config, CrashPoint::Held, Duration::from_secs(2)).await;
    let held = switch::record(&client, &keys)
        .await
        .expect("record")
        .expect("a switch was begun");
    assert_eq!((held.state, held.barrier.to), (State::Pending, 2));
    let marker: String = client.get(keys.generation()).await.expect("marker");
    assert_eq!(marker, "1");
    // Writes that meet the hold on every shard, whatever the live load
    // still sends.
    after_crash(16, 34).await;
    live.await.expect("live load task");
    let r = converged(&config).await;
    assert_eq!(r.generation, 1);
    assert_eq!(
        switch::record(&client, &keys)
            .await
            .expect("record")
            .map(|r| r.state),
        Some(State::Aborted),
        "the live projector gave the shards back"
    );
    for s in 0..config.shard_count {
        let copy: Option<String> = client.get(keys.marker_in_shard(s)).await.expect("copy");
        assert_ne!(
            copy.as_deref(),
            Some(held.barrier.value().as_str()),
            "shard {s}"
        );
    }

    // Dies right after deciding (the marker names generation 2), before a
    // single copy moved: the live projector finishes the switch and goes on
    // in generation 2, which ends equal to the fold.
    let live = live_load(24, 33);
    tokio::time::sleep(Duration::from_millis(500)).await;
    replay_crashing(&config, CrashPoint::Decided, Duration::from_secs(15)).await;
    let marker: String = client.get(keys.generation()).await.expect("marker");
    assert_eq!(marker, "2");
    after_crash(32, 35).await;
    live.await.expect("live load task");
    let r = converged(&config).await;
    assert_eq!(r.generation, 2);

    // The next replay ends what is left of that switch, drops generation 1
    // (which nobody else would), and switches on.
    let report = replay(&config).await;
    assert!(report.switched);
    assert_eq!((report.old_generation, report.new_generation), (2, Some(3)));
    let r = converged(&config).await;
    assert_eq!(r.generation, 3);
    for g in [1, 2] {
        assert!(
            !read_model::generation::generation_exists(&client, &keys.generation_keys(g))
                .await
                .expect("scan"),
            "generation {g} was left behind"
        );
    }
    pipeline.stop().await;
    env.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn verify_finds_damage_and_repair_mends_it_and_status_shows_lag() {
    let env = TestEnv::new("hist_verify").await;
    let config = env.config.clone();
    let path = write_config(&env);
    let pipeline = start_pipeline(&config).await;
    play(&env, sim(600, None, 0, 21), "load").await;
    converged(&config).await;
    let (code, _, err) = rpsctl(&path, &["verify"]);
    assert_eq!(code, 0, "{err}");

    // A dry run builds generation 2, finds it equal to the live one, and
    // leaves nothing behind; a limited replay only inspects.
    let dry = dry_run(&config).await;
    assert!(!dry.switched);
    let cmp = dry.comparison.expect("comparison");
    assert_eq!(
        (cmp.generation, cmp.total_differences),
        (1, 0),
        "{:?}",
        cmp.differences
    );
    let limited = history::replay::run(
        config.clone(),
        ReplayOptions {
            fold: history::FoldOptions {
                shards: Some(vec![0]),
                ..Default::default()
            },
            ..Default::default()
        },
        CancellationToken::new(),
    )
    .await
    .expect("limited replay");
    assert_eq!(limited.new_generation, None);
    assert!(limited.events > 0 && limited.events < dry.events);
    let client = env.redis().await;
    let keys = config.keys();
    let g2 =
        test_support::scan_keys(&client, &format!("{}:*", keys.generation_keys(2).base())).await;
    assert!(g2.is_empty(), "the dry run left keys: {:?}", g2);
    let active: String = client.get(keys.generation()).await.expect("generation");
    assert_eq!(active, "1");

    // Damage three kinds of read model.
    let g = keys.generation_keys(1);
    let top = read_model::read::leaderboard(&client, &g, None, 0, 1)
        .await
        .expect("board")[0]
        .player_id;
    let top_counters = g.counters(g.partition_of(top), None);
    client
        .hset::<(), _, _>(top_counters.as_str(), (format!("{top}:w"), "999"))
        .await
        .expect("damage counters");
    client
        .zadd::<(), _, _>(
            g.board(g.partition_of(424_242), None),
            None,
            None,
            false,
            false,
            (5.0, board_member(424_242)),
        )
        .await
        .expect("damage board");
    let matches = test_support::scan_keys(&client, &g.all_matches_pattern()).await;
    assert!(!matches.is_empty(), "no match keys in generation 1");
    client
        .del::<(), _>(matches[0].as_str())
        .await
        .expect("damage match");
    // A match no event ever started: only the scan after the fold finds it.
    let stray = g.match_state(0, 987_654_321);
    client
        .set::<(), _, _>(stray.as_str(), "x", None, None, false)
        .await
        .expect("stray match");

    // The dry run compares match states range by range as it folds.
    let dry = dry_run(&config).await;
    let cmp = dry.comparison.expect("comparison");
    let differing: Vec<&str> = cmp.differences.iter().map(|d| d.key.as_str()).collect();
    assert!(
        differing.contains(&matches[0].as_str()) && differing.contains(&stray.as_str()),
        "{differing:?}"
    );

    // Through the CLI, the same dry run exits 1 ("differences") with its
    // report on stdout.
    let (code, out, err) = rpsctl(&path, &["replay", "--dry-run", "--json"]);
    assert_eq!(code, 1, "{out}{err}");
    let r: serde_json::Value = serde_json::from_str(&out).expect("replay --json");
    assert!(
        r["comparison"]["total_differences"].as_u64().unwrap() >= 2,
        "{r}"
    );

    let (code, out, err) = rpsctl(&path, &["verify"]);
    assert_eq!(code, 1, "verify exits 1 on damage: {out}{err}");
    assert!(out.contains(&top_counters) && out.contains("999"), "{out}");
    assert!(out.contains(&board_member(424_242)), "{out}");
    assert!(out.contains(&matches[0]), "{out}");
    assert!(out.contains(&stray), "{out}");
    let (code, out, err) = rpsctl(&path, &["verify", "--repair"]);
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.contains("repaired 4 keys"), "{out}");
    let restored: Option<String> = client.get(matches[0].as_str()).await.expect("get");
    assert!(restored.is_some(), "repair restores the deleted match");
    let (code, out, err) = rpsctl(&path, &["verify", "--json"]);
    assert_eq!(code, 0, "{out}{err}");
    let v: serde_json::Value = serde_json::from_str(&out).expect("verify json");
    assert_eq!(v["total_differences"], 0);

    // Status: caught up first, then lag grows while the reader is stopped.
    let status = |path: &PathBuf| {
        let (code, out, err) = rpsctl(path, &["status", "--json"]);
        assert_eq!(code, 0, "{err}");
        serde_json::from_str::<serde_json::Value>(&out).expect("status json")
    };
    let s = status(&path);
    assert_eq!(s["generation"], 1);
    assert_eq!(s["shards"].as_array().expect("shards").len(), 8);
    let stream_total: u64 = s["shards"]
        .as_array()
        .unwrap()
        .iter()
        .map(|x| x["stream_length"].as_u64().unwrap())
        .sum();
    assert!(stream_total > 1000, "{s}");
    assert!(
        s["shards"]
            .as_array()
            .unwrap()
            .iter()
            .all(|x| x["lag_entries"] == 0),
        "{s}"
    );
    pipeline.stop().await;
    let lag = |s: &serde_json::Value| -> u64 {
        s["servers"]
            .as_array()
            .unwrap()
            .iter()
            .map(|x| x["lag_bytes"].as_u64().unwrap_or(0))
            .sum()
    };
    let before = lag(&status(&path));
    play(&env, sim(200, None, 0, 22), "load while stopped").await;
    let after = status(&path);
    assert!(
        lag(&after) > before,
        "lag must grow while the reader is stopped: {before} -> {after}"
    );
    assert!(
        after["servers"]
            .as_array()
            .unwrap()
            .iter()
            .all(|x| x["checkpoint_file"].is_string()),
        "{after}"
    );
    let (code, table, _) = rpsctl(&path, &["status"]);
    assert_eq!(code, 0);
    assert!(table.contains("dead letters"), "{table}");
    let _ = std::fs::remove_file(&path);
    env.cleanup().await;
}
