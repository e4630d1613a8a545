//! The whole pipeline end to end, as a user runs it: `rpsctl run` (cdc-reader,
//! projector, compensator and API in one process) against real MariaDB and
//! Redis while the simulator plays a tournament with abandoned and voided
//! matches. At the quiet moment the read models must equal the fold of the
//! event tables, every abandoned match must have exactly one `timed_out`,
//! and the API must answer from those read models.

use rps_core::fold::PlayerStats;
use std::process::{Command, Stdio};
use std::time::Duration;
use test_support::{eventually, free_port, TestEnv};
use tokio_util::sync::CancellationToken;

use test_support::KillOnDrop as Pipeline;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tournament_from_insert_to_api() {
    let mut config = TestEnv::new("e2e").await.config.as_ref().clone();
    let port = free_port();
    config.api.bind = format!("127.0.0.1:{port}");
    config.compensator.retry_initial_ms = 200;
    config.compensator.retry_max_ms = 1_000;
    let env = TestEnv::from_config(config.redis.prefix.clone(), config).await;
    let (_dir, path) = env.write_config_file();

    let _pipeline = Pipeline(
        Command::new(env!("CARGO_BIN_EXE_rpsctl"))
            .args(["--config", path.to_str().expect("utf-8 path"), "run"])
            .env("RUST_LOG", "warn")
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("start rpsctl run"),
    );

    // The readers store their starting checkpoint before streaming: once
    // both exist, every row inserted from now on is theirs to publish.
    let redis = env.redis().await;
    let keys = env.config.keys();
    test_support::pipeline::wait_until_streaming(&env.config).await;

    let report = simulator::run(
        env.store.clone(),
        simulator::SimulateOptions {
            players: 200,
            matches: 3_000,
            abandoned: 0.1,
            voided: 0.05,
            deadline: Duration::from_secs(2),
            concurrency: 500,
            ..Default::default()
        },
        CancellationToken::new(),
    )
    .await
    .expect("simulate");
    assert!(report.abandoned > 0 && report.voided > 0, "{report:?}");

    // Every abandoned match times out exactly once, through the event store.
    let timed_out = eventually(
        "every abandoned match to time out",
        Duration::from_secs(60),
        || {
            let env = &env;
            let want = report.abandoned;
            async move {
                let n = env.count_events("timed_out").await;
                (n >= want).then_some(n)
            }
        },
    )
    .await;
    assert_eq!(
        timed_out, report.abandoned,
        "a deadline fired more than once"
    );

    // Quiet moment: the live read models equal the fold of every table.
    let verify = eventually(
        "read models to equal the fold of history",
        Duration::from_secs(60),
        || {
            let config = env.config.clone();
            async move {
                let r = history::verify::run(config, Default::default(), CancellationToken::new())
                    .await
                    .ok()?;
                (r.total_differences == 0).then_some(r)
            }
        },
    )
    .await;
    assert!(verify.keys_checked > 0);

    // Nothing was rejected: the simulator only writes valid histories.
    use fred::interfaces::StreamsInterface;
    let dead: u64 = redis.xlen(keys.deadletter()).await.expect("xlen");
    assert_eq!(dead, 0, "dead letters in a clean tournament");

    // The API serves that state: the board's leader is the fold's leader.
    let out = history::fold_history(
        &env.store,
        &history::FoldOptions::default(),
        &history::progress::Progress::hidden(),
        &CancellationToken::new(),
    )
    .await
    .expect("fold");

    // Tiny ranges of match ids (hundreds per shard, matches of several
    // versions at every boundary) fold the same; so does the spilling fold
    // replay uses, which hands out every match exactly once.
    let tiny = history::FoldOptions {
        range_rows: 7,
        ..Default::default()
    };
    let hidden = history::progress::Progress::hidden;
    let small = history::fold_history(&env.store, &tiny, &hidden(), &CancellationToken::new())
        .await
        .expect("fold in tiny ranges");
    assert_eq!(small.model.events, out.model.events);
    assert!(
        small.model.matches == out.model.matches,
        "match states differ"
    );
    assert!(
        small.model.players == out.model.players,
        "player counters differ"
    );
    let (tx, mut rx) = tokio::sync::mpsc::channel::<history::SpilledMatches>(4);
    let collected = tokio::spawn(async move {
        let mut all = std::collections::HashMap::new();
        while let Some(batch) = rx.recv().await {
            for (id, m) in batch {
                assert!(all.insert(id, m).is_none(), "match {id} handed out twice");
            }
        }
        all
    });
    let spilled =
        history::fold_history_spilling(&env.store, &tiny, &hidden(), &CancellationToken::new(), tx)
            .await
            .expect("spilling fold");
    assert!(spilled.model.matches.is_empty());
    assert!(
        spilled.model.players == out.model.players,
        "player counters differ"
    );
    assert!(
        collected.await.expect("collector") == out.model.matches,
        "spilled match states differ"
    );

    let board = out.model.boards();
    let all_time = board.get(&None).expect("all-time board");
    // Ascending score, ties to the lower (zero-padded) member.
    let (leader_member, _) = all_time
        .iter()
        .min_by(|a, b| (a.1, &a.0).cmp(&(b.1, &b.0)))
        .expect("a leader");
    let leader: i64 = leader_member.parse().expect("member");
    let http = reqwest::Client::new();
    let base = format!("http://{}", env.config.api.bind);
    let page: serde_json::Value = http
        .get(format!("{base}/v1/leaderboard?limit=10"))
        .send()
        .await
        .expect("leaderboard")
        .json()
        .await
        .expect("json");
    assert_eq!(page["entries"][0]["player_id"], leader, "{page}");
    assert_eq!(page["entries"][0]["rank"], 1);
    let player: serde_json::Value = http
        .get(format!("{base}/v1/players/{leader}"))
        .send()
        .await
        .expect("player")
        .json()
        .await
        .expect("json");
    let stats: PlayerStats = out
        .model
        .counted_players()
        .find(|(k, _)| **k == (leader, None))
        .map(|(_, s)| *s)
        .expect("leader stats");
    assert_eq!(player["points"], stats.points(), "{player}");
    assert_eq!(player["matches"], stats.matches, "{player}");
    assert_eq!(player["forfeits"], stats.forfeits, "{player}");

    env.cleanup().await;
}
