//! The player partitions on a real Redis: boards read back exactly across
//! partitions (ties broken by id), and the scorer adds each delta once
//! whatever it is handed again, and says so when the outbox lost what a
//! partition needs.

use fred::interfaces::{HashesInterface, KeysInterface, StreamsInterface};
use read_model::bulk::{self, Write};
use read_model::read;
use read_model::score::{ScoreError, ScoredDelta, ScoredLetter, Scorer, Target};
use read_model::ReadModelKeys;
use rps_core::deadletter::DeadLetter;
use rps_core::{Keys, PlayerStats, SeasonId, StatsDelta};

fn stats(wins: i64, draws: i64, losses: i64) -> PlayerStats {
    PlayerStats {
        matches: wins + draws + losses,
        wins,
        draws,
        losses,
        forfeits: 0,
    }
}

/// Keys of a test of its own, with the players over 16 partitions.
fn keys(test: &str) -> Keys {
    Keys::new(&format!("t{}_{test}", std::process::id())).with_partitions(16)
}

async fn cleanup(client: &fred::clients::Client, keys: &Keys) {
    test_support::unlink_matching(client, &keys.all_pattern())
        .await
        .unwrap();
}

#[tokio::test]
async fn boards_merge_partitions_exactly_with_ties_broken_by_id() {
    let client = test_support::redis_client(&test_support::shared_redis_url()).await;
    let keys = keys("boards");
    let g = keys.generation_keys(1);
    // 500 players over few distinct scores: every score is shared by
    // players of many partitions.
    let players: Vec<(i64, PlayerStats)> = (1..=500)
        .map(|id: i64| (id * 7 + 3, stats(id % 4, id % 3, id % 5)))
        .filter(|(_, s)| s.matches > 0)
        .collect();
    let units: Vec<Vec<Write>> = players
        .iter()
        .map(|(id, s)| bulk::player_scope(&g, *id, None, s))
        .collect();
    bulk::write_units(&client, units).await.unwrap();
    let mut want = players.clone();
    want.sort_by_key(|(id, s)| (-s.points(), s.matches, *id));

    assert_eq!(
        read::board_size(&client, &g, None).await.unwrap(),
        want.len() as u64
    );
    let all = read::leaderboard(&client, &g, None, 0, 1000).await.unwrap();
    let got: Vec<(u64, i64, PlayerStats)> =
        all.iter().map(|e| (e.rank, e.player_id, e.stats)).collect();
    let expected: Vec<(u64, i64, PlayerStats)> = want
        .iter()
        .enumerate()
        .map(|(i, (id, s))| (i as u64 + 1, *id, *s))
        .collect();
    assert_eq!(got, expected);
    let page = read::leaderboard(&client, &g, None, 37, 20).await.unwrap();
    assert_eq!(page, all[37..57].to_vec());
    for (i, (id, _)) in want.iter().enumerate().step_by(13) {
        let rank = read::rank(&client, &g, *id, None).await.unwrap();
        assert_eq!(rank, Some(i as u64 + 1), "rank of {id}");
        let around = read::around(&client, &g, *id, None, 3)
            .await
            .unwrap()
            .unwrap();
        let from = i.saturating_sub(3);
        let to = (i + 4).min(all.len());
        assert_eq!(around, all[from..to].to_vec(), "around {id}");
    }
    assert_eq!(read::rank(&client, &g, 2, None).await.unwrap(), None);
    cleanup(&client, &keys).await;
}

fn delta(seq: u64, player_id: i64, s: PlayerStats) -> ScoredDelta {
    let season: SeasonId = "2026Q4".parse().unwrap();
    ScoredDelta {
        seq,
        delta: StatsDelta {
            player_id,
            season,
            delta: s,
        },
    }
}

/// An outbox entry as the shard's commit writes it.
async fn outbox_entry(
    client: &fred::clients::Client,
    g: &read_model::GenerationKeys,
    (q0, q1): (u64, u64),
    d: &[ScoredDelta],
    dl: &[ScoredLetter],
) {
    let _: String = client
        .xadd(
            g.outbox(0),
            false,
            None,
            "*",
            vec![
                ("q0", q0.to_string()),
                ("q1", q1.to_string()),
                ("d", read_model::score::encode_deltas(d)),
                ("dl", read_model::score::encode_letters(dl)),
            ],
        )
        .await
        .unwrap();
}

#[tokio::test]
async fn the_scorer_adds_each_delta_once_and_detects_a_lost_outbox() {
    let client = test_support::redis_client(&test_support::shared_redis_url()).await;
    let keys = keys("scorer");
    let g = keys.generation_keys(1);
    let season: SeasonId = "2026Q4".parse().unwrap();
    let first = vec![delta(1, 17, stats(1, 0, 0)), delta(1, 18, stats(0, 0, 1))];
    let second = vec![delta(3, 17, stats(0, 1, 0)), delta(3, 34, stats(0, 1, 0))];
    let rejected = vec![ScoredLetter {
        seq: 2,
        letter: DeadLetter {
            kind: "version_repeat".into(),
            match_id: Some(5),
            ..Default::default()
        },
    }];
    outbox_entry(&client, &g, (0, 2), &first, &rejected).await;
    outbox_entry(&client, &g, (2, 3), &second, &[]).await;

    let mut scorer = Scorer::new(client.clone(), keys.clone(), 1, 0, false);
    scorer.settle(0, 2, &first, &rejected).await.unwrap();
    assert!(scorer.settled_through(2));
    // A scorer that crashed after the first batch, started again: it reads
    // the fences and the outbox, and adds only what is missing.
    let mut again = Scorer::new(client.clone(), keys.clone(), 1, 0, false);
    again.settle(3, 3, &[], &[]).await.unwrap();
    // Handed the same batch once more (a worker that lost the reply).
    again.invalidate();
    again.settle(2, 3, &second, &[]).await.unwrap();
    let counters = read::scope_counters(&client, &g, None).await.unwrap();
    assert_eq!(counters[&17], stats(1, 1, 0));
    assert_eq!(counters[&18], stats(0, 0, 1));
    assert_eq!(counters[&34], stats(0, 1, 0));
    assert_eq!(
        read::scope_counters(&client, &g, Some(season))
            .await
            .unwrap(),
        counters
    );
    assert_eq!(read::seasons(&client, &g).await.unwrap(), vec![season]);
    assert_eq!(read::rank(&client, &g, 17, None).await.unwrap(), Some(1));
    // The rejection reached the dead-letter stream once.
    let letters: Vec<(String, std::collections::HashMap<String, String>)> = client
        .xrange_values(keys.deadletter(), "-", "+", None)
        .await
        .unwrap();
    assert_eq!(letters.len(), 1, "{letters:?}");
    assert_eq!(letters[0].1["kind"], "version_repeat");

    // A writer configured with another partition count is refused.
    let mut other = Scorer::new(client.clone(), keys.clone().with_partitions(4), 1, 0, false);
    match other.settle(3, 4, &[], &[]).await {
        Err(ScoreError::Layout {
            recorded,
            configured,
            ..
        }) => assert_eq!((recorded.as_str(), configured), ("16", 4)),
        other => panic!("expected a layout refusal, got {other:?}"),
    }
    // A partition rolled back behind what the outbox still holds (its
    // fence removed, as a failover that lost its writes would leave it):
    // the scorer refuses rather than count from a hole.
    client.del::<(), _>(g.outbox(0)).await.unwrap();
    outbox_entry(&client, &g, (3, 4), &[], &[]).await;
    let p = g.partition_of(17);
    client.hdel::<(), _, _>(g.fences(p), "0").await.unwrap();
    let mut after = Scorer::new(client.clone(), keys.clone(), 1, 0, false);
    match after.settle(4, 4, &[], &[]).await {
        Err(ScoreError::Lost { target, fence, .. }) => {
            assert_eq!((target, fence), (Target::Partition(p), 0));
        }
        other => panic!("expected a loss, got {other:?}"),
    }
    cleanup(&client, &keys).await;
}

#[tokio::test]
async fn a_crowded_score_ranks_by_id_across_partitions() {
    let client = test_support::redis_client(&test_support::shared_redis_url()).await;
    let keys = keys("crowded");
    let g = keys.generation_keys(1);
    // 1,600 players of one score: about 100 per partition, more than are
    // read and counted, so the ranks come from the bisecting script.
    let same = stats(1, 1, 1);
    let ids: Vec<i64> = (0..1600).map(|i| 1_000 + i * 13).collect();
    let units: Vec<Vec<Write>> = ids
        .iter()
        .map(|id| bulk::player_scope(&g, *id, None, &same))
        .collect();
    bulk::write_units(&client, units).await.unwrap();
    for (i, id) in ids.iter().enumerate().step_by(97) {
        let rank = read::rank(&client, &g, *id, None).await.unwrap();
        assert_eq!(rank, Some(i as u64 + 1), "rank of {id}");
    }
    // Equal scores: the first page is the lowest ids.
    let top = read::leaderboard(&client, &g, None, 0, 5).await.unwrap();
    let got: Vec<i64> = top.iter().map(|e| e.player_id).collect();
    assert_eq!(got, ids[..5].to_vec());
    cleanup(&client, &keys).await;
}

#[tokio::test]
async fn one_partition_reads_the_same_as_sixteen() {
    let client = test_support::redis_client(&test_support::shared_redis_url()).await;
    let mut boards = Vec::new();
    for partitions in [1u16, 16] {
        let keys = Keys::new(&format!("t{}_one{partitions}", std::process::id()))
            .with_partitions(partitions);
        let g = keys.generation_keys(1);
        let units: Vec<Vec<Write>> = (1..=300i64)
            .map(|id| bulk::player_scope(&g, id, None, &stats(id % 3, id % 2, id % 4)))
            .collect();
        bulk::write_units(&client, units).await.unwrap();
        let mut got = Vec::new();
        for id in [1i64, 77, 150, 299] {
            got.push(read::rank(&client, &g, id, None).await.unwrap());
            got.push(
                read::around(&client, &g, id, None, 2)
                    .await
                    .unwrap()
                    .map(|e| e.len() as u64),
            );
        }
        let page = read::leaderboard(&client, &g, None, 10, 30).await.unwrap();
        boards.push((got, page));
        cleanup(&client, &keys).await;
    }
    assert_eq!(boards[0], boards[1]);
}
