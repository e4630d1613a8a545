//! `rpsctl dlq list|show|retry|drop` against the shared Redis, with dead
//! letters of every origin written the way the components write them.

use compensator::deadlines::{AttemptHistory, PARKED};
use compensator::fred::interfaces::{HashesInterface, SortedSetsInterface, StreamsInterface};
use rps_core::deadletter::{DeadLetter, Origin};
use rps_core::keys::deadline_member;
use rps_core::stream::SourcePosition;
use rps_core::{EventType, Gesture, MatchEvent, StreamEvent, Timestamp};
use std::process::{Command, Output};
use test_support::{redis_client, TestEnv};

struct Cli {
    config: std::path::PathBuf,
}

impl Cli {
    fn run(&self, args: &[&str]) -> Output {
        Command::new(env!("CARGO_BIN_EXE_rpsctl"))
            .arg("--config")
            .arg(&self.config)
            .arg("dlq")
            .args(args)
            .env("RUST_LOG", "info")
            .output()
            .expect("rpsctl dlq")
    }

    /// Runs and expects success; returns stdout.
    fn ok(&self, args: &[&str]) -> String {
        let o = self.run(args);
        assert!(
            o.status.success(),
            "rpsctl dlq {args:?} failed: {}",
            String::from_utf8_lossy(&o.stderr)
        );
        String::from_utf8(o.stdout).unwrap()
    }
}

fn rejected_event() -> StreamEvent {
    StreamEvent {
        shard: 3,
        event: MatchEvent {
            row_id: 17,
            event_id: "5a1c7d0e-1111-4222-8333-444455556666".parse().unwrap(),
            match_id: 991,
            version: 3,
            event_type: EventType::Moved,
            season_id: "2026Q4".parse().unwrap(),
            player_a_id: 11,
            player_b_id: 12,
            gesture_a: Some(Gesture::Rock),
            gesture_b: None,
            winner_player_id: None,
            loser_player_id: None,
            outcome: None,
            deadline_at: None,
            occurred_at: Timestamp(1_795_000_000_000_000),
        },
        source: SourcePosition {
            server: "mysql-b".into(),
            database: "x_shard_3".into(),
            table: "match_result_events".into(),
            file: "binlog.000004".into(),
            pos: 1234,
            gtid: "0-2-77".into(),
            commit_ts: Timestamp(1_795_000_000_000_000),
        },
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn list_show_retry_drop_every_origin() {
    let env = TestEnv::new("dlq_cmds").await;
    let dir = std::env::temp_dir().join(format!("rpsctl-{}", env.name));
    std::fs::create_dir_all(&dir).unwrap();
    let cfg = dir.join("rps.toml");
    std::fs::write(&cfg, env.config.to_toml()).unwrap();
    let cli = Cli { config: cfg };
    let keys = env.config.keys();
    let redis = redis_client(&env.config.redis.url).await;
    let add = |dl: DeadLetter| {
        let redis = redis.clone();
        let key = keys.deadletter();
        async move {
            let pairs: Vec<(String, String)> = dl
                .to_pairs()
                .into_iter()
                .map(|(k, v)| (k.to_string(), v))
                .collect();
            let id: String = redis.xadd(key, false, None, "*", pairs).await.unwrap();
            id
        }
    };

    assert!(cli.ok(&["list"]).contains("0 shown, 0 dead letters"));

    // A projector rejection with the entry's fields as its payload.
    let ev = rejected_event();
    let payload = serde_json::to_string(
        &ev.to_named_pairs()
            .into_iter()
            .collect::<std::collections::BTreeMap<_, _>>(),
    )
    .unwrap();
    let proj = add(DeadLetter {
        origin: Some(Origin::Projector),
        kind: "version_gap".into(),
        reason: "version 3 after 1".into(),
        shard: Some(3),
        match_id: Some(991),
        stream_id: "1-1".into(),
        payload,
        at: Timestamp::now(),
        ..Default::default()
    })
    .await;
    // A cdc-reader rejection whose payload is not an event.
    let cdc = add(DeadLetter {
        origin: Some(Origin::CdcReader),
        kind: "update_on_event_table".into(),
        reason: "UPDATE of row 5 on an append-only table".into(),
        server: "mysql-a".into(),
        database: "x_shard_2".into(),
        table: "match_result_events".into(),
        file: "binlog.000009".into(),
        pos: 4711,
        shard: Some(2),
        payload: r#"{"before":{"id":5},"after":{"id":5}}"#.into(),
        at: Timestamp::now(),
        ..Default::default()
    })
    .await;
    // A failed deadline, parked as the compensator parks it.
    let member = deadline_member(2, 42);
    let hist = AttemptHistory {
        deadline_ms: 1,
        attempts: vec![],
        parked: true,
    };
    let _: () = redis
        .hset(
            keys.deadline_attempts(2),
            (member.clone(), serde_json::to_string(&hist).unwrap()),
        )
        .await
        .unwrap();
    let _: () = redis
        .zadd(
            keys.deadline_leases(2),
            None,
            None,
            false,
            false,
            (PARKED as f64, member.clone()),
        )
        .await
        .unwrap();
    let comp = add(DeadLetter {
        origin: Some(Origin::Compensator),
        kind: "deadline_failed".into(),
        reason: "deadline of match 42 (shard 2) not fired after 4 attempts".into(),
        shard: Some(2),
        match_id: Some(42),
        payload: serde_json::to_string(&hist).unwrap(),
        at: Timestamp::now(),
        ..Default::default()
    })
    .await;

    // list: all three, one line each, oldest first; and by origin.
    let out = cli.ok(&["list"]);
    assert!(out.contains("3 shown, 3 dead letters"), "{out}");
    let lines: Vec<&str> = out
        .lines()
        .filter(|l| l.contains('-') && !l.starts_with("ID"))
        .collect();
    assert!(
        lines[0].starts_with(&proj)
            && lines[0].contains("projector")
            && lines[0].contains("version_gap")
    );
    assert!(
        lines[1].starts_with(&cdc)
            && lines[1].contains("cdc-reader")
            && lines[1].contains("UPDATE of row 5")
    );
    assert!(
        lines[2].starts_with(&comp) && lines[2].contains("compensator") && lines[2].contains("42")
    );
    let out = cli.ok(&["list", "--origin", "compensator"]);
    assert!(
        out.contains("1 shown, 3 dead letters") && out.contains(&comp),
        "{out}"
    );
    let out = cli.ok(&["list", "--limit", "2"]);
    assert!(out.contains("2 shown") && !out.contains(&comp), "{out}");
    let v: serde_json::Value = serde_json::from_str(&cli.ok(&["list", "--json"])).unwrap();
    assert_eq!(
        (v["total"].as_u64(), v["shown"].as_u64()),
        (Some(3), Some(3)),
        "{v}"
    );
    let e = &v["entries"];
    assert_eq!(
        (e[0]["id"].as_str(), e[0]["kind"].as_str()),
        (Some(proj.as_str()), Some("version_gap"))
    );
    assert_eq!(
        (e[1]["origin"].as_str(), e[1]["shard"].as_u64()),
        (Some("cdc-reader"), Some(2))
    );
    assert_eq!(
        (e[2]["id"].as_str(), e[2]["match_id"].as_i64()),
        (Some(comp.as_str()), Some(42))
    );

    // show: every field.
    let out = cli.ok(&["show", &cdc]);
    for want in [
        "origin: cdc-reader",
        "kind: update_on_event_table",
        "server: mysql-a",
        "db: x_shard_2",
        "file: binlog.000009",
        "pos: 4711",
        "payload: {\"before\"",
        "at: ",
    ] {
        assert!(out.contains(want), "missing {want:?} in\n{out}");
    }
    let v: serde_json::Value = serde_json::from_str(&cli.ok(&["show", &cdc, "--json"])).unwrap();
    assert_eq!(v["id"], cdc.as_str());
    assert_eq!(
        (v["fields"]["db"].as_str(), v["fields"]["pos"].as_str()),
        (Some("x_shard_2"), Some("4711")),
        "{v}"
    );
    let o = cli.run(&["show", "1-1"]);
    assert_eq!(o.status.code(), Some(3), "not there: could not run");
    assert!(String::from_utf8_lossy(&o.stderr).contains("no dead letter with id 1-1"));

    // retry a projector rejection: back on its shard stream, entry removed.
    let out = cli.ok(&["retry", &proj]);
    assert!(out.contains("re-added to"), "{out}");
    let entries: Vec<(String, std::collections::HashMap<String, String>)> = redis
        .xrange_values(keys.events(3), "-", "+", None)
        .await
        .unwrap();
    assert_eq!(entries.len(), 1);
    let back = StreamEvent::decode(
        entries[0]
            .1
            .iter()
            .map(|(k, v)| (k.as_bytes(), v.as_bytes())),
    )
    .unwrap();
    assert_eq!(back, ev);

    // retry a cdc-reader entry that is not an event: refused, kept.
    let o = cli.run(&["retry", &cdc]);
    assert!(!o.status.success());
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        err.contains("cannot be retried") && err.contains("does not decode"),
        "{err}"
    );
    assert!(err.contains("binlog.000009:4711"), "{err}");

    // retry a failed deadline: un-parked.
    let v: serde_json::Value = serde_json::from_str(&cli.ok(&["retry", &comp, "--json"])).unwrap();
    assert_eq!(
        (v["action"].as_str(), v["id"].as_str(), v["member"].as_str()),
        (
            Some("deadline_unparked"),
            Some(comp.as_str()),
            Some(member.as_str())
        ),
        "{v}"
    );
    let lease: Option<f64> = redis
        .zscore(keys.deadline_leases(2), &member)
        .await
        .unwrap();
    assert_eq!(lease, None);
    let h: Option<String> = redis
        .hget(keys.deadline_attempts(2), &member)
        .await
        .unwrap();
    assert_eq!(h, None);

    // drop: removed, who and when logged.
    let o = cli.run(&["drop", &cdc, "--by", "alice"]);
    assert!(o.status.success());
    assert!(String::from_utf8_lossy(&o.stdout).contains("dropped by alice"));
    let log = String::from_utf8_lossy(&o.stderr);
    assert!(
        log.contains("dead letter dropped") && log.contains("alice"),
        "{log}"
    );
    assert!(cli.ok(&["list"]).contains("0 shown, 0 dead letters"));

    let _ = std::fs::remove_dir_all(&dir);
    env.cleanup().await;
}
