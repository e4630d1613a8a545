//! The whole pipeline end to end, as a user runs it: `rpsctl run` (cdc-reader,
//! projector, compensator and API in one process) against real MariaDB and
//! Redis while the simulator plays a tournament with abandoned and voided
//! matches. At the quiet moment the read models must equal the fold of the
//! event tables, every abandoned match must have exactly one `timed_out`,
//! and the API must answer from those read models.

use rps_core::fold::PlayerStats;
use test_support::TestEnv;
use tokio_util::sync::CancellationToken;

#[path = "common/quiet.rs"]
mod quiet;
#[path = "common/tournament.rs"]
mod tournament;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tournament_from_insert_to_api() {
    let t = tournament::start(TestEnv::new("e2e").await).await;
    let env = &t.env;
    let redis = env.redis().await;
    let keys = env.config.keys();
    let report = tournament::play(env, tournament::matches(200, 3_000, 500))
        .await
        .expect("simulator task");
    assert!(report.abandoned > 0 && report.voided > 0, "{report:?}");

    // Every abandoned match times out exactly once, through the event store;
    // then, at the quiet moment, the live read models equal the fold.
    quiet::every_abandoned_match_timed_out_once(env, report.abandoned).await;
    quiet::read_models_equal_the_fold(env).await;

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
