//! Bad input never stops the stream and is never dropped: UPDATE, DELETE
//! and DDL on event tables and rows that do not fit the model go to the
//! dead letter with coordinates; schema changes that keep the model
//! (reordered columns, reordered ENUM labels, new season tables) decode on.

mod common;

use common::*;
use mysql_async::prelude::*;
use std::collections::HashMap;
use std::time::Duration;
use test_support::TestEnv;

// SQL text for one row; the arguments are the columns a case varies.
#[allow(clippy::too_many_arguments)]
fn row(
    db: &str,
    table: &str,
    eid: &str,
    mid: i64,
    ty: &str,
    season: &str,
    a: i64,
    extra_cols: &str,
    extra_vals: &str,
) -> String {
    format!(
        "INSERT INTO `{db}`.`{table}` (event_id, match_id, version, event_type, season_id, player_a_id, player_b_id, occurred_at{extra_cols}) \
         VALUES ({eid}, {mid}, 1, '{ty}', {season}, {a}, {}, '2026-11-27 08:00:00.123456'{extra_vals})",
        a + 1
    )
}

/// A session on `shard`'s server, after `ALTER TABLE` of the shard's event
/// table with `change`.
async fn altered(env: &TestEnv, shard: u16, change: &str) -> mysql_async::Conn {
    let mut conn = env.admin_conn(shard).await;
    let db = env.config.database(shard);
    conn.query_drop(format!("ALTER TABLE `{db}`.`match_result_events` {change}"))
        .await
        .unwrap();
    conn
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_input_goes_to_the_dead_letter_and_the_stream_goes_on() {
    let env = TestEnv::new("cdc_bad").await;
    let redis = env.redis().await;
    let c = env.config.clone();
    let (stop, task) = spawn_reader(c.clone());
    for s in &c.servers {
        let name = s.name.clone();
        test_support::eventually("initial checkpoint", Duration::from_secs(20), || {
            let (redis, c, name) = (redis.clone(), c.clone(), name.clone());
            async move { checkpoint(&redis, &c, &name).await }
        })
        .await;
    }
    let db = |s: u16| c.database(s);
    let t = "match_result_events";
    let q = "'2026Q4'";
    let uuid = "UUID()";

    // Shard 0: three good rows, then an UPDATE and a DELETE.
    let mut a = env.admin_conn(0).await;
    for m in 1..=3 {
        a.query_drop(row(&db(0), t, uuid, m, "started", q, 8 * m, "", ""))
            .await
            .unwrap();
    }
    a.query_drop(format!(
        "UPDATE `{}`.`{t}` SET player_b_id = 999 WHERE match_id = 1",
        db(0)
    ))
    .await
    .unwrap();
    a.query_drop(format!("DELETE FROM `{}`.`{t}` WHERE match_id = 2", db(0)))
        .await
        .unwrap();

    // Shard 1: a new column in front moves every position; names still map.
    let mut b = altered(&env, 1, "ADD COLUMN note VARCHAR(20) NULL FIRST").await;
    b.query_drop(row(
        &db(1),
        t,
        uuid,
        10,
        "started",
        q,
        9,
        ", note",
        ", 'hello'",
    ))
    .await
    .unwrap();

    // Shard 2: an unknown enum label.
    a = altered(
        &env,
        2,
        "MODIFY gesture_a ENUM('rock','paper','scissors','lizard') NULL",
    )
    .await;
    a.query_drop(row(
        &db(2),
        t,
        uuid,
        20,
        "moved",
        q,
        10,
        ", gesture_a",
        ", 'lizard'",
    ))
    .await
    .unwrap();
    a.query_drop(row(
        &db(2),
        t,
        uuid,
        21,
        "moved",
        q,
        18,
        ", gesture_a",
        ", 'paper'",
    ))
    .await
    .unwrap();

    // Shard 4: ENUM labels reordered: indexes change, labels decide.
    a = altered(
        &env,
        4,
        "MODIFY event_type ENUM('voided','timed_out','finished','moved','started') NOT NULL",
    )
    .await;
    a.query_drop(row(&db(4), t, uuid, 40, "started", q, 12, "", ""))
        .await
        .unwrap();

    // Shard 3: NULL in a required column, and a season that is no quarter.
    b = altered(&env, 3, "MODIFY season_id CHAR(6) NULL").await;
    b.query_drop(row(&db(3), t, uuid, 30, "started", "NULL", 11, "", ""))
        .await
        .unwrap();
    b.query_drop(row(&db(3), t, uuid, 31, "started", "'2026Q9'", 19, "", ""))
        .await
        .unwrap();

    // Shard 5: a malformed UUID.
    b = env.admin_conn(5).await;
    b.query_drop(row(&db(5), t, "'not-a-uuid'", 50, "started", q, 13, "", ""))
        .await
        .unwrap();

    // Shard 6: a model column dropped.
    a = altered(&env, 6, "DROP COLUMN outcome").await;
    a.query_drop(row(&db(6), t, uuid, 60, "started", q, 14, "", ""))
        .await
        .unwrap();

    // Shard 7: a season table created while running, a foreign table, a TRUNCATE.
    b = env.admin_conn(7).await;
    let season = "match_result_events_2027Q1";
    b.query_drop(format!(
        "CREATE TABLE `{}`.`{season}` LIKE `{}`.`{t}`",
        db(7),
        db(7)
    ))
    .await
    .unwrap();
    b.query_drop(format!(
        "CREATE TABLE `{}`.`other` (id INT PRIMARY KEY)",
        db(7)
    ))
    .await
    .unwrap();
    b.query_drop(format!("INSERT INTO `{}`.`other` VALUES (1), (2)", db(7)))
        .await
        .unwrap();
    for (m, pa) in [(70, 15), (71, 23)] {
        let r = row(&db(7), season, uuid, m, "started", "'2027Q1'", pa, "", "");
        b.query_drop(r).await.unwrap();
    }
    b.query_drop(format!("TRUNCATE TABLE `{}`.`{season}`", db(7)))
        .await
        .unwrap();
    // A good row after all of it: the stream went on.
    b.query_drop(row(&db(7), t, uuid, 72, "started", q, 31, "", ""))
        .await
        .unwrap();

    let dl_key = c.keys().deadletter();
    let dls = test_support::eventually("13 dead letters", Duration::from_secs(30), || {
        let (redis, k) = (redis.clone(), dl_key.clone());
        async move {
            let d = dead_letters(&redis, &k).await;
            (d.len() >= 13).then_some(d)
        }
    })
    .await;
    wait_total(&redis, &c, 9, Duration::from_secs(30)).await;

    let mut kinds: HashMap<String, usize> = HashMap::new();
    for d in &dls {
        *kinds.entry(d["kind"].clone()).or_default() += 1;
        assert_eq!(d["origin"], "cdc-reader");
        assert!(
            !d["gtid"].is_empty() && !d["file"].is_empty() && d["pos"] != "0",
            "{d:?}"
        );
        assert!(!d["reason"].is_empty());
    }
    assert_eq!(kinds.get("update_on_event_table"), Some(&1), "{kinds:?}");
    assert_eq!(kinds.get("delete_on_event_table"), Some(&1), "{kinds:?}");
    assert_eq!(kinds.get("ddl_on_event_table"), Some(&6), "{kinds:?}");
    assert_eq!(kinds.get("bad_row"), Some(&5), "{kinds:?}");
    assert_eq!(dls.len(), 13);

    let upd = dls
        .iter()
        .find(|d| d["kind"] == "update_on_event_table")
        .unwrap();
    assert_eq!(upd["db"], db(0));
    assert_eq!(upd["server"], c.server_of(0).name);
    let p: serde_json::Value = serde_json::from_str(&upd["payload"]).unwrap();
    assert_eq!(p["before"]["player_b_id"], 9);
    assert_eq!(p["after"]["player_b_id"], 999);
    let reasons: Vec<&str> = dls
        .iter()
        .filter(|d| d["kind"] == "bad_row")
        .map(|d| d["reason"].as_str())
        .collect();
    for needle in [
        "(enum index 4)",
        "NULL in required column `season_id`",
        "YYYYQn",
        "malformed UUID",
        "no column `outcome`",
    ] {
        assert!(
            reasons.iter().any(|r| r.contains(needle)),
            "no bad_row mentions {needle:?}: {reasons:?}"
        );
    }

    let count = |s: u16| {
        let (redis, k) = (redis.clone(), c.keys().events(s));
        async move { read_stream(&redis, &k).await }
    };
    assert_eq!(count(0).await.len(), 3);
    let s1 = count(1).await;
    assert_eq!(s1.len(), 1);
    assert_eq!(s1[0].1.event.match_id, 10);
    let s2 = count(2).await;
    assert_eq!(s2.len(), 1);
    assert_eq!(s2[0].1.event.gesture_a, Some(rps_core::Gesture::Paper));
    let s4 = count(4).await;
    assert_eq!(s4[0].1.event.event_type, rps_core::EventType::Started);
    assert_eq!(
        s4[0].1.event.occurred_at.to_string(),
        "2026-11-27 08:00:00.123456"
    );
    let s7 = count(7).await;
    assert_eq!(s7.len(), 3);
    assert_eq!(s7[0].1.source.table, season);
    assert_eq!(s7[2].1.source.table, t);
    for s in [3, 5, 6] {
        assert!(count(s).await.is_empty(), "shard {s}");
    }
    stop.cancel();
    task.await.unwrap().unwrap();
    env.cleanup().await;
}
