//! The generation switch step by step, and the generation SCANs, on one
//! Redis and on a Redis Cluster (a private one: every step must stay in
//! one hash slot there, and a SCAN must walk every master).

use fred::clients::Client;
use fred::interfaces::{ClientLike, HashesInterface, KeysInterface};
use read_model::commit::{BatchWrite, Committer, Fence, Outcome};
use read_model::generation::switch::{
    self, Barrier,
    Continuity::{Continues, Fresh},
    Decision, Resolution, State, SwitchError,
};
use read_model::generation::{self, GenerationError};
use read_model::ReadModelKeys;
use rps_core::config::RedisConfig;
use rps_core::redis_client::ClientPolicy;
use rps_core::stream::StreamId;
use rps_core::Keys;
use std::time::Duration;
use test_support::redis_cluster::RedisCluster;

const SHARDS: u16 = 8;

fn keys(test: &str) -> Keys {
    Keys::new(&format!("t{}_{test}", std::process::id())).with_partitions(16)
}

async fn cleanup(client: &Client, keys: &Keys) {
    test_support::unlink_matching(client, &keys.all_pattern())
        .await
        .unwrap();
}

async fn get(client: &Client, key: String) -> Option<String> {
    client.get(key).await.unwrap()
}

/// An empty batch of shard 0 on `expected`, into `generation`, as the live
/// projector commits it.
async fn commit(client: &Client, keys: &Keys, generation: u64, expected: &str) -> Outcome {
    let id = |s: &str| s.parse::<StreamId>().unwrap();
    let next = id(expected);
    let next = StreamId::parse(&format!("{}-{}", next.ms, next.seq + 1)).unwrap();
    Committer::new(client.clone(), keys.clone(), generation, 0)
        .commit(
            &BatchWrite::default(),
            &Fence {
                require_active: true,
                expected: Some(id(expected)),
                last_id: next,
                sequence: (0, 0),
                move_group: false,
            },
        )
        .await
        .unwrap()
}

async fn set_progress(client: &Client, keys: &Keys, generation: u64, shard: u16, id: &str) {
    let g = keys.generation_keys(generation);
    let _: () = client.hset(g.progress(shard), ("id", id)).await.unwrap();
}

/// Every copy of the marker holds `value`.
async fn copies_hold(client: &Client, keys: &Keys, value: &str) {
    for key in keys.marker_copies(SHARDS) {
        assert_eq!(
            get(client, key.clone()).await.as_deref(),
            Some(value),
            "{key}"
        );
    }
}

async fn shard_copies_hold(client: &Client, keys: &Keys, value: &str) {
    for s in 0..SHARDS {
        let key = keys.marker_in_shard(s);
        assert_eq!(
            get(client, key.clone()).await.as_deref(),
            Some(value),
            "{key}"
        );
    }
}

/// Begins the switch `from -> to` of a generation that continues the live
/// one's stream positions; its shards are held for `hold` at most.
async fn try_begin(
    client: &Client,
    keys: &Keys,
    generations: (u64, u64),
    hold: Duration,
) -> Result<Barrier, SwitchError> {
    switch::begin(client, keys, SHARDS, generations, Continues, hold).await
}

async fn begin(client: &Client, keys: &Keys, generations: (u64, u64), hold: Duration) -> Barrier {
    try_begin(client, keys, generations, hold).await.unwrap()
}

async fn resolve(client: &Client, keys: &Keys, b: &Barrier, give_up: bool) -> Resolution {
    switch::resolve(client, keys, SHARDS, b, give_up)
        .await
        .unwrap()
}

async fn decide(client: &Client, keys: &Keys, b: &Barrier) -> Decision {
    switch::commit(client, keys, b).await.unwrap()
}

async fn record_state(client: &Client, keys: &Keys) -> State {
    switch::record(client, keys).await.unwrap().unwrap().state
}

/// Generation `to` completed up to where `from` is, on every shard that
/// has applied something.
async fn copy_progress(client: &Client, keys: &Keys, from: u64, to: u64) {
    for s in 0..SHARDS - 1 {
        let id = get_field(client, keys.generation_keys(from).progress(s), "id").await;
        set_progress(client, keys, to, s, &id.unwrap()).await;
    }
}

async fn switch_steps(client: &Client, keys: &Keys) {
    let _: () = client
        .set(keys.generation(), "1", None, None, false)
        .await
        .unwrap();
    // Shards 0..7 have applied something (shard 7 nothing); generation 2
    // was completed up to the same entries.
    for s in 0..SHARDS - 1 {
        set_progress(client, keys, 1, s, &format!("5-{s}")).await;
    }
    assert!(matches!(
        commit(client, keys, 1, "5-0").await,
        Outcome::Committed { .. }
    ));
    for s in 0..SHARDS - 1 {
        let id = if s == 0 {
            "5-1".to_string()
        } else {
            format!("5-{s}")
        };
        set_progress(client, keys, 2, s, &id).await;
    }

    // Held: both generations' commits refuse, and say by what.
    let b = begin(client, keys, (1, 2), Duration::from_secs(30)).await;
    assert_eq!((b.from, b.to), (1, 2));
    shard_copies_hold(client, keys, &b.value()).await;
    assert_eq!(
        commit(client, keys, 1, "5-1").await,
        Outcome::Switching(b.clone())
    );
    assert_eq!(
        commit(client, keys, 2, "5-1").await,
        Outcome::Switching(b.clone())
    );
    let g1 = keys.generation_keys(1);
    assert_eq!(
        get_field(client, g1.progress(0), "id").await.as_deref(),
        Some("5-1")
    );
    match try_begin(client, keys, (1, 2), Duration::from_secs(30)).await {
        Err(SwitchError::Busy { to: 2, left_ms }) => assert!(left_ms > 0),
        other => panic!("a second switch while one is pending: {other:?}"),
    }
    match resolve(client, keys, &b, false).await {
        Resolution::Wait(left) => assert!(left > Duration::ZERO),
        other => panic!("a waiter must wait: {other:?}"),
    }

    // Decided: the marker moves with the record, the copies after it.
    assert_eq!(decide(client, keys, &b).await, Decision::Switched);
    assert_eq!(get(client, keys.generation()).await.as_deref(), Some("2"));
    assert_eq!(record_state(client, keys).await, State::Committed);
    shard_copies_hold(client, keys, &b.value()).await;
    switch::finish(client, keys, SHARDS, &b).await.unwrap();
    copies_hold(client, keys, "2").await;
    assert_eq!(record_state(client, keys).await, State::Done);
    assert_eq!(
        commit(client, keys, 1, "5-1").await,
        Outcome::GenerationMoved {
            active: Some("2".into())
        }
    );
    assert!(matches!(
        commit(client, keys, 2, "5-1").await,
        Outcome::Committed { .. }
    ));

    // Abandoned: a switch whose switcher died before deciding. Past its
    // deadline a waiter gives the shards back, and the switch can no
    // longer be decided.
    let b = begin(client, keys, (2, 3), Duration::from_millis(300)).await;
    assert!(matches!(
        resolve(client, keys, &b, false).await,
        Resolution::Wait(_)
    ));
    tokio::time::sleep(Duration::from_millis(400)).await;
    assert_eq!(resolve(client, keys, &b, false).await, Resolution::Resumed);
    copies_hold(client, keys, "2").await;
    assert_eq!(decide(client, keys, &b).await, Decision::Lapsed);
    assert_eq!(get(client, keys.generation()).await.as_deref(), Some("2"));

    // A barrier an abandoned switch left on a shard nobody committed to is
    // taken over by the next switch, and given back by its switcher.
    let stale = begin(client, keys, (2, 3), Duration::from_millis(1)).await;
    tokio::time::sleep(Duration::from_millis(5)).await;
    let b = begin(client, keys, (2, 3), Duration::from_secs(30)).await;
    assert!(b.seq > stale.seq);
    shard_copies_hold(client, keys, &b.value()).await;
    assert_eq!(
        resolve(client, keys, &stale, false).await,
        Resolution::Resumed
    );
    shard_copies_hold(client, keys, &b.value()).await;
    assert_eq!(resolve(client, keys, &b, true).await, Resolution::Resumed);
    copies_hold(client, keys, "2").await;

    // Decided and left unfinished (the switcher died after the decision):
    // whoever comes next finishes it.
    copy_progress(client, keys, 2, 3).await;
    let b = begin(client, keys, (2, 3), Duration::from_secs(30)).await;
    assert_eq!(decide(client, keys, &b).await, Decision::Switched);
    assert_eq!(
        switch::recover(client, keys, SHARDS).await.unwrap(),
        Some((b.clone(), Resolution::Switched))
    );
    copies_hold(client, keys, "3").await;
    assert_eq!(switch::recover(client, keys, SHARDS).await.unwrap(), None);

    // A shard whose two generations' progress differ is not flipped.
    let b = begin(client, keys, (3, 4), Duration::from_secs(30)).await;
    assert_eq!(decide(client, keys, &b).await, Decision::Switched);
    match switch::finish(client, keys, SHARDS, &b).await {
        Err(SwitchError::ProgressDiffers { shard, .. }) => assert!(shard < SHARDS - 1),
        other => panic!("a shard behind in the new generation was flipped: {other:?}"),
    }
    copy_progress(client, keys, 3, 4).await;
    switch::finish(client, keys, SHARDS, &b).await.unwrap();
    copies_hold(client, keys, "4").await;

    // A generation with stream positions of its own (a bootstrap's) flips
    // without the comparison.
    set_progress(client, keys, 5, 0, "1-0").await;
    let b = switch::begin(client, keys, SHARDS, (4, 5), Fresh, Duration::from_secs(30))
        .await
        .unwrap();
    assert_eq!(decide(client, keys, &b).await, Decision::Switched);
    switch::finish(client, keys, SHARDS, &b).await.unwrap();
    copies_hold(client, keys, "5").await;
}

async fn get_field(client: &Client, key: String, field: &str) -> Option<String> {
    client.hget(key, field).await.unwrap()
}

/// A generation's keys over every shard's and partition's slot: found,
/// counted and dropped whole, another generation's left alone.
async fn scan_and_drop(client: &Client, keys: &Keys) {
    let g = keys.generation_keys(7);
    let mut written = 0u64;
    for s in 0..SHARDS {
        for m in 0..40 {
            let _: () = client
                .set(g.match_state(s, m), "x", None, None, false)
                .await
                .unwrap();
            written += 1;
        }
    }
    for p in g.all_partitions() {
        let _: () = client
            .hset(g.counters(p, None), ("1:w", "1"))
            .await
            .unwrap();
        written += 1;
    }
    let other = keys.generation_keys(8).match_state(3, 1);
    let _: () = client
        .set(other.as_str(), "y", None, None, false)
        .await
        .unwrap();

    assert!(generation::generation_exists(client, &g).await.unwrap());
    // SCAN may return a key twice, never miss one present throughout.
    let dropped = generation::drop_generation(client, &g).await.unwrap();
    assert!(dropped >= written, "{dropped} < {written}");
    assert!(!generation::generation_exists(client, &g).await.unwrap());
    assert_eq!(get(client, other).await.as_deref(), Some("y"));

    // Progress in one shard's slot and no marker: state was lost, wherever
    // the slot lives.
    set_progress(client, keys, 9, 5, "1-0").await;
    match generation::ensure(client, keys).await {
        Err(GenerationError::Lost { example, .. }) => {
            assert_eq!(example, keys.generation_keys(9).progress(5))
        }
        other => panic!("lost state must be refused: {other:?}"),
    }
}

#[tokio::test]
async fn switch_steps_and_generation_scans_on_one_redis() {
    let client = test_support::redis_client(&test_support::shared_redis_url()).await;
    let keys = keys("switch");
    scan_and_drop(&client, &keys).await;
    switch_steps(&client, &keys).await;
    cleanup(&client, &keys).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn switch_steps_and_generation_scans_on_a_cluster() {
    let cluster = RedisCluster::start().await;
    let client = ClientPolicy::default()
        .builder(&RedisConfig::from_url(cluster.url()))
        .expect("clustered URL")
        .build()
        .expect("client");
    assert!(client.is_clustered());
    client.init().await.expect("connect to the cluster");
    let keys = keys("switch");
    // The shards' and the partitions' slots are spread over every master,
    // so each step and each SCAN meets all of them.
    let masters: std::collections::BTreeSet<u16> = keys
        .marker_copies(SHARDS)
        .iter()
        .filter_map(|k| cluster.master_of_slot(fred::util::redis_keyslot(k.as_bytes())))
        .collect();
    assert_eq!(masters.len(), cluster.masters().len());
    scan_and_drop(&client, &keys).await;
    switch_steps(&client, &keys).await;
    cleanup(&client, &keys).await;
    let mut left = rps_core::redis_client::KeyScan::new(&client, &keys.all_pattern())
        .await
        .unwrap();
    while let Some(page) = left.next_page(&client).await.unwrap() {
        assert!(page.is_empty(), "{page:?}");
    }
}
