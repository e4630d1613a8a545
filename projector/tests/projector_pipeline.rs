//! The projector against the real dev servers: a tournament written to
//! MySQL, read back with SQL and published to the streams is folded into
//! read models equal to an independent fold; every invalid case becomes a
//! dead letter and changes nothing; redelivered and racing batches change
//! nothing; a generation switch fences the writer.

mod common;

use common::*;
use projector::fred::prelude::*;
use projector::fred::types::Value;
use projector::{Applier, ApplierOptions, ApplyError};
use read_model::GenerationKeys;
use read_model::ReadModelKeys;
use rps_core::{EventType, MatchEvent, ShardId, StreamEvent};
use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;
use test_support::TestEnv;
use tokio_util::sync::CancellationToken;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tournament_equals_independent_fold_and_invalid_cases_dead_letter() {
    let env = TestEnv::new("proj_tourn").await;
    let client = env.redis().await;
    let keys = env.config.keys();
    let n = env.config.shard_count;

    // Valid tournament first, then the invalid cases (each in its own match).
    let mut events = tournament(7, 1_000_000, 3000, 300, n);
    let cases = invalid_cases(5_000_000, n);
    let mut expected_codes: Vec<(MatchEvent, &'static str)> = Vec::new();
    for c in &cases {
        events.entry(c.shard).or_default().push(c.event.clone());
        if let Some(code) = c.expect {
            expected_codes.push((c.event.clone(), code));
        }
    }
    // A challenger that routes to shard 1, written to shard 0.
    let mut wrong = cases[0].event.clone();
    wrong.match_id = 5_900_000;
    wrong.player_a_id = 900_001;
    wrong.event_id = MatchEvent::timed_out_event_id(5_900_000, 1);
    events.entry(0).or_default().push(wrong.clone());
    expected_codes.push((wrong, "wrong_shard"));

    let rows = write_and_read_back(&env, &events).await;
    let mut published: BTreeMap<ShardId, Vec<(String, StreamEvent)>> = BTreeMap::new();
    for (shard, evs) in &rows {
        published.insert(*shard, publish(&env, &client, *shard, evs).await);
    }
    // Stream-only cases: a repeated version (another copy of a started
    // event) and an entry that does not decode.
    let original = published[&0]
        .iter()
        .find(|(_, s)| s.event.event_type == EventType::Started && s.event.player_a_id < 900_000)
        .map(|(_, s)| s.event.clone())
        .expect("a started event in shard 0");
    let mut repeat = original.clone();
    repeat.event_id = MatchEvent::timed_out_event_id(repeat.match_id, 8_888_888);
    let extra = publish(&env, &client, 0, std::slice::from_ref(&repeat)).await;
    published.get_mut(&0).unwrap().extend(extra);
    // A wire entry whose event type no shard could have written.
    let wire = stream_event(&env, 0, &original).to_wire();
    assert!(wire.contains("|started|"), "{wire}");
    let bad = vec![(
        rps_core::stream::ENTRY_FIELD.to_string(),
        wire.replacen("|started|", "|lizard|", 1),
    )];
    let bad_id = xadd_raw(&client, &keys.events(0), &[bad]).await.remove(0);

    let mut expected = fold_all(&published, n);
    expected
        .rejected
        .push((bad_id.clone(), "undecodable".into()));
    expected.last_ids.insert(0, bad_id.clone());
    assert!(expected.rejected.len() >= expected_codes.len() + 2);
    // The tournament exercises every kind of match, so the comparison below means something.
    assert!(
        expected.stats.len() > 500,
        "{} counters",
        expected.stats.len()
    );
    assert!(!expected.deadlines.is_empty());
    for status in ["finished", "timed_out", "voided", "in_progress"] {
        assert!(
            expected
                .matches
                .values()
                .any(|m| m.status.as_str() == status),
            "no {status} match"
        );
    }

    let mut config = (*env.config).clone();
    config.projector.batch_size = 300;
    let shutdown = CancellationToken::new();
    let task = tokio::spawn(projector::run(Arc::new(config), shutdown.clone()));
    let gk = keys.generation_keys(1);
    wait_caught_up(&client, &gk, &expected.last_ids, Duration::from_secs(60)).await;

    assert_matches_fold(&client, &gk, &expected).await;

    // Every rejected entry, and nothing else, is in the dead letter.
    let letters = dead_letters(&client, &keys.deadletter()).await;
    let got: HashSet<(String, String)> = letters
        .iter()
        .map(|l| (l["stream_id"].clone(), l["kind"].clone()))
        .collect();
    let want: HashSet<(String, String)> = expected.rejected.iter().cloned().collect();
    assert_eq!(got, want);
    assert_eq!(
        letters.len(),
        want.len(),
        "each rejected entry exactly once"
    );
    for (ev, code) in &expected_codes {
        let l = letters
            .iter()
            .find(|l| l["eid"] == ev.event_id.hyphenated().to_string() && l["kind"] == *code)
            .unwrap_or_else(|| panic!("no `{code}` dead letter for {ev:?}"));
        assert_eq!(l["origin"], "projector");
        assert!(l["db"].starts_with(&env.config.database_prefix), "{l:?}");
        assert_eq!(l["tbl"], "match_result_events");
        assert_eq!(l["mid"], ev.match_id.to_string());
        assert!(l["reason"].len() > 10, "{l:?}");
        assert_ne!(l["pos"], "0", "source coordinates kept: {l:?}");
    }
    let undecodable = letters.iter().find(|l| l["stream_id"] == bad_id).unwrap();
    assert!(undecodable["reason"].contains("lizard"), "{undecodable:?}");
    // Read by name out of the wire form, so the operator sees where it came from.
    assert_eq!(undecodable["mid"], original.match_id.to_string());
    assert_eq!(undecodable["tbl"], "match_result_events");

    // Players whose only match was voided, or only in rejected events, have nothing.
    for player in [
        900_000 + 4 * i64::from(n),
        900_000 + 5 * i64::from(n),
        900_000 + 3 * i64::from(n),
    ] {
        let fields: Vec<Option<String>> = client
            .hmget(
                gk.counters(gk.partition_of(player), None),
                read_model::keys::counter_fields(player).to_vec(),
            )
            .await
            .unwrap();
        assert!(
            fields.iter().all(Option::is_none),
            "player {player} has no counters: {fields:?}"
        );
        let rank: Option<i64> = client
            .zrank(
                gk.board(gk.partition_of(player), None),
                read_model::board_member(player),
                false,
            )
            .await
            .unwrap();
        assert_eq!(rank, None);
    }
    // Every shard applied to its stream's end, and the group moved with it
    // (the stream trimmer reads what was applied from the group).
    let progress = read_model::read::progress_with_lag(&client, &keys, 1, n)
        .await
        .unwrap();
    for p in progress {
        assert_eq!(p.last_id, p.stream_last_id, "shard {}", p.shard);
        assert_eq!(p.lag_entries, Some(0), "shard {}", p.shard);
        let stream = keys.events(p.shard);
        let groups: Value = client
            .custom(
                projector::fred::types::CustomCommand::new_static(
                    "XINFO",
                    rps_core::redis_client::slot_of(&stream),
                    false,
                ),
                vec!["GROUPS".to_string(), stream],
            )
            .await
            .unwrap();
        let fields = read_model::redis_util::hash_pairs(groups.into_array().remove(0)).unwrap();
        let last_delivered = fields
            .iter()
            .find(|(k, _)| k == "last-delivered-id")
            .map(|(_, v)| v.clone());
        assert_eq!(last_delivered, p.last_id, "group of shard {}", p.shard);
    }

    shutdown.cancel();
    task.await.unwrap().unwrap();
    env.cleanup().await;
}

/// Every key of a generation with its content, for before/after comparisons.
async fn snapshot(
    client: &projector::fred::clients::Client,
    gk: &GenerationKeys,
) -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    for k in test_support::scan_keys(client, &format!("{}:*", gk.base())).await {
        let t: String = client.r#type(k.as_str()).await.unwrap();
        let v = match t.as_str() {
            "hash" => {
                let mut m: Vec<(String, String)> = client
                    .hgetall::<HashMap<String, String>, _>(k.as_str())
                    .await
                    .unwrap()
                    .into_iter()
                    .filter(|(f, _)| !f.ends_with(":applied_at"))
                    .collect();
                m.sort();
                format!("{m:?}")
            }
            "zset" => {
                let z: Vec<(String, f64)> = client
                    .zrange(k.as_str(), 0, -1, None, false, None, true)
                    .await
                    .unwrap();
                format!("{z:?}")
            }
            "set" => {
                let mut s: Vec<String> = client.smembers(k.as_str()).await.unwrap();
                s.sort();
                format!("{s:?}")
            }
            "string" => client.get(k.as_str()).await.unwrap(),
            other => other.to_string(),
        };
        out.insert(k, v);
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redelivered_and_racing_batches_change_nothing_and_generation_fences() {
    let env = TestEnv::with_shards("proj_redeliver", 1).await;
    let client = env.redis().await;
    let keys = env.config.keys();
    let _: () = client
        .set(keys.generation(), "1", None, None, false)
        .await
        .unwrap();
    projector::create_group(&client, &keys.events(0))
        .await
        .unwrap();

    let events = tournament(11, 2_000_000, 400, 40, 1);
    let rows = write_and_read_back(&env, &events).await;
    let entries = publish(&env, &client, 0, &rows[&0]).await;
    let (b1, rest) = entries.split_at(entries.len() / 2);
    let (b2, b3) = rest.split_at(rest.len() / 2);
    let gk = keys.generation_keys(1);
    let new = |gen: u64, opts: ApplierOptions| {
        Applier::new(client.clone(), keys.clone(), gen, 0, 1, opts)
    };

    let mut a = new(1, ApplierOptions::default());
    let r = a.apply_events(b1, |_, _| false).await.unwrap();
    assert_eq!(r.applied + r.rejected.len(), b1.len());
    assert!(r.applied > 0);
    let after_b1 = snapshot(&client, &gk).await;

    // The same batch again, by a fresh applier (as after a crash): no effect.
    let mut again = new(1, ApplierOptions::default());
    let r = again.apply_events(b1, |_, _| false).await.unwrap();
    assert_eq!((r.applied, r.redelivered), (0, b1.len()));
    assert_eq!(snapshot(&client, &gk).await, after_b1);

    // A writer with stale progress: its batch overlaps one another writer
    // committed meanwhile; the fence makes it recompute and apply only the rest.
    let mut stale = new(1, ApplierOptions::default());
    stale.progress().await.unwrap();
    let half = b2.len() / 2;
    a.apply_events(&b2[..half], |_, _| false).await.unwrap();
    let r = stale.apply_events(b2, |_, _| false).await.unwrap();
    assert_eq!(r.conflicts, 1);
    assert_eq!(r.redelivered, half);
    assert_eq!(r.applied + r.rejected.len(), b2.len() - half);

    let mut upto_b2 = BTreeMap::new();
    upto_b2.insert(0, entries[..b1.len() + b2.len()].to_vec());
    assert_matches_fold(&client, &gk, &fold_all(&upto_b2, 1)).await;

    // Generation switched (as a switch does it: every slot's copy of the
    // marker, then the marker): the live writer is fenced out, nothing
    // changes.
    for key in keys.marker_copies(1).into_iter().chain([keys.generation()]) {
        let _: () = client.set(key, "2", None, None, false).await.unwrap();
    }
    let before = snapshot(&client, &gk).await;
    match a.apply_events(b3, |_, _| false).await {
        Err(ApplyError::GenerationChanged {
            expected: 1,
            active,
        }) => {
            assert_eq!(active.as_deref(), Some("2"))
        }
        other => panic!("expected a generation conflict, got {other:?}"),
    }
    assert_eq!(snapshot(&client, &gk).await, before);

    // A rebuild (no active check, no ack) of generation 2 skipping what it
    // already has: skipped entries advance progress but are not folded.
    let mut rebuild = new(
        2,
        ApplierOptions {
            require_active: false,
            move_group: false,
            ..Default::default()
        },
    );
    let skip_ids: HashSet<String> = b1.iter().map(|(id, _)| id.clone()).collect();
    let r = rebuild
        .apply_events(&entries, |id, _| skip_ids.contains(id))
        .await
        .unwrap();
    assert_eq!(r.skipped, b1.len());
    let gk2 = keys.generation_keys(2);
    let p = progress_of(&client, &gk2, 1).await;
    assert_eq!(p.get("0"), entries.last().map(|(id, _)| id));
    // Without b1's starts, b2/b3 events of those matches are rejected in g2.
    let mut only_rest = BTreeMap::new();
    only_rest.insert(0 as ShardId, entries[b1.len()..].to_vec());
    let x = fold_all(&only_rest, 1);
    assert_matches_fold(&client, &gk2, &x).await;

    env.cleanup().await;
}
