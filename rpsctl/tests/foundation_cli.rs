//! Foundation tests through the real `rpsctl` binary against the local
//! MariaDB servers: `init` is idempotent, and `simulate` writes the expected
//! rows into the right shards, which both servers' binlogs carry as ROW
//! events. Each test works in its own database prefix.

use rps_core::fold::{apply, MatchStatus};
use rps_core::{Config, EventType, Gesture, MatchEvent, SeasonId, ShardId};
use std::collections::{BTreeMap, HashMap, HashSet};
use std::process::Command;
use test_support::{test_config, TestEnv, TestServer};

/// A config file that removes itself when dropped.
struct ConfigFile(std::path::PathBuf);

impl ConfigFile {
    fn path(&self) -> &std::path::Path {
        &self.0
    }
}

impl Drop for ConfigFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

fn write_config(config: &Config) -> ConfigFile {
    let path = std::env::temp_dir().join(format!("{}.rps.toml", config.database_prefix));
    std::fs::write(&path, config.to_toml()).expect("write config");
    ConfigFile(path)
}

/// Runs `rpsctl --config <file> <args>`; panics with its output unless it succeeds.
fn rpsctl(config: &ConfigFile, args: &[&str]) -> String {
    let out = Command::new(env!("CARGO_BIN_EXE_rpsctl"))
        .arg("--config")
        .arg(config.path())
        .args(args)
        .env("RUST_LOG", "warn")
        .output()
        .expect("run rpsctl");
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "rpsctl {args:?} failed: {}\nstdout:\n{stdout}\nstderr:\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    stdout
}

fn port_of(url: &str) -> u16 {
    url.rsplit(':')
        .next()
        .and_then(|p| p.trim_end_matches('/').parse().ok())
        .expect("port in url")
}

fn unique(prefix: &str) -> String {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or(0);
    format!(
        "{prefix}{}_{}",
        std::process::id() % 100_000,
        nanos % 100_000
    )
}

fn shared_servers() -> Vec<TestServer> {
    std::env::var("RPS_TEST_MYSQL_PORTS")
        .unwrap_or_else(|_| "3307 3308".into())
        .split_whitespace()
        .enumerate()
        .map(|(i, p)| TestServer {
            name: format!("mysql-{}", (b'a' + i as u8) as char),
            port: p.parse().expect("port"),
        })
        .collect()
}

#[tokio::test]
async fn init_twice_creates_everything_then_nothing() {
    let name = unique("finit");
    let config = test_config(
        &name,
        8,
        &shared_servers(),
        &test_support::shared_redis_url(),
    );
    let file = write_config(&config);

    let first = rpsctl(&file, &["init"]);
    for shard in 0..config.shard_count {
        let db = config.database(shard);
        assert!(
            first.contains(&format!("created database {db}\n")),
            "{db} in:\n{first}"
        );
        assert!(first.contains(&format!("created table {db}.match_result_events\n")));
    }
    assert!(!first.contains("WARNING"), "server settings:\n{first}");

    let second = rpsctl(&file, &["init"]);
    assert!(
        !second.contains("created"),
        "second init changed something:\n{second}"
    );
    assert_eq!(
        second.matches("nothing to create").count(),
        config.servers.len(),
        "{second}"
    );

    // The library says the same, and the pipeline account can see every shard.
    let report = rps_event_store::init(&config).await.expect("init");
    assert!(!report.changed_anything(), "{report:?}");
    assert!(report
        .servers
        .iter()
        .all(|s| s.setting_mismatches.is_empty()));
    let env = TestEnv::from_config(name, config).await;
    for shard in 0..env.config.shard_count {
        assert_eq!(
            env.store.event_tables(shard).await.expect("tables"),
            vec!["match_result_events".to_string()]
        );
    }
    env.cleanup().await;
}

/// `(file, position)` of the server's current binlog.
async fn binlog_position(port: u16) -> (String, u64) {
    let url = format!("mysql://root@127.0.0.1:{port}");
    let mut conn = mysql_async::Conn::new(mysql_async::Opts::from_url(&url).expect("url"))
        .await
        .expect("root connection");
    test_support::binlog_head(&mut conn).await
}

/// Row inserts per database in the binlog from `(file, pos)` on, decoded by
/// the flavor's own binlog tool, plus whether any of them came as something other than
/// an INSERT (it must not).
fn binlog_inserts(port: u16, from: &(String, u64), prefix: &str) -> (HashMap<String, u64>, u64) {
    let out = test_support::TestFlavor::current()
        .binlog_dump_command()
        .args([
            "--read-from-remote-server",
            "-h127.0.0.1",
            "-uroot",
            "--base64-output=DECODE-ROWS",
            "-v",
            "--to-last-log",
        ])
        .arg(format!("-P{port}"))
        .arg(format!("--start-position={}", from.1))
        .arg(&from.0)
        .output()
        .expect("run the binlog tool");
    assert!(
        out.status.success(),
        "binlog tool: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8_lossy(&out.stdout);
    let mut inserts = HashMap::new();
    let mut other = 0;
    let needle = format!("`{prefix}");
    for line in text.lines().filter(|l| l.contains(&needle)) {
        let Some(rest) = line.strip_prefix("### ") else {
            continue;
        };
        if let Some(target) = rest.strip_prefix("INSERT INTO `") {
            let db = target.split('`').next().unwrap_or_default().to_string();
            *inserts.entry(db).or_insert(0) += 1;
        } else if rest.starts_with("UPDATE") || rest.starts_with("DELETE") {
            other += 1;
        }
    }
    // Row events, not statements: the decoded rows come from Write_rows events.
    assert!(
        text.contains("Write_rows"),
        "no Write_rows events in the binlog of port {port}"
    );
    (inserts, other)
}

#[tokio::test]
async fn simulate_writes_valid_matches_into_the_right_shards_and_binlogs() {
    let env = TestEnv::new("fsimulate").await;
    let file = write_config(&env.config);
    let ports: Vec<u16> = env
        .config
        .servers
        .iter()
        .map(|s| port_of(s.admin_url.as_deref().expect("admin url")))
        .collect();
    let mut before: Vec<(String, u64)> = Vec::new();
    for p in &ports {
        before.push(binlog_position(*p).await);
    }

    let (players, matches) = (200i64, 3000usize);
    let out = rpsctl(
        &file,
        &[
            "simulate",
            "--players",
            "200",
            "--matches",
            "3000",
            "--abandoned",
            "0.2",
            "--voided",
            "0.1",
            "--deadline",
            "30s",
            "--seed",
            "42",
            "--concurrency",
            "400",
        ],
    );

    // What the command printed.
    let printed_events: u64 = out
        .lines()
        .find_map(|l| l.strip_prefix("events written: "))
        .and_then(|l| l.split_whitespace().next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no event count in:\n{out}"));
    assert!(out.contains("events/s"), "{out}");
    let printed_per_shard: BTreeMap<ShardId, u64> = (0..env.config.shard_count)
        .map(|s| {
            let db = env.config.database(s);
            let n = out
                .lines()
                .find(|l| l.split_whitespace().next() == Some(db.as_str()))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|n| n.parse().ok())
                .unwrap_or_else(|| panic!("no row count for {db} in:\n{out}"));
            (s, n)
        })
        .collect();

    let rows = env.stored_events().await;
    let total: usize = rows.values().map(Vec::len).sum();
    assert_eq!(total as u64, printed_events);
    let mut by_match: HashMap<i64, (ShardId, Vec<MatchEvent>)> = HashMap::new();
    let mut event_ids = HashSet::new();
    for (&shard, shard_rows) in &rows {
        assert_eq!(shard_rows.len() as u64, printed_per_shard[&shard]);
        assert!(!shard_rows.is_empty(), "shard {shard} got no rows");
        for ev in shard_rows {
            assert_eq!(
                rps_core::shard_of(ev.player_a_id, env.config.shard_count),
                shard,
                "{ev:?} is not in its challenger's shard"
            );
            assert_ne!(ev.player_a_id, ev.player_b_id);
            assert!((1..=players).contains(&ev.player_a_id));
            assert!((1..=players).contains(&ev.player_b_id));
            assert_eq!(ev.event_id.get_version_num(), 4);
            assert!(event_ids.insert(ev.event_id), "event id repeated");
            let entry = by_match
                .entry(ev.match_id)
                .or_insert_with(|| (shard, Vec::new()));
            assert_eq!(entry.0, shard, "match {} spans shards", ev.match_id);
            entry.1.push(ev.clone());
        }
    }
    assert_eq!(by_match.len(), matches);

    let (mut abandoned, mut voided, mut finished, mut draws) = (0, 0, 0, 0);
    let mut abandoned_after = [0; 3];
    let mut sub_second_micros = 0;
    for (match_id, (_, events)) in &by_match {
        // Commit (primary-key) order is version order, versions 1..=n.
        let versions: Vec<i32> = events.iter().map(|e| e.version).collect();
        let expected: Vec<i32> = (1..=events.len() as i32).collect();
        assert_eq!(versions, expected, "match {match_id}");
        let start = &events[0];
        assert_eq!(start.event_type, EventType::Started);
        assert_eq!(
            start
                .deadline_at
                .map(|d| d.as_micros() - start.occurred_at.as_micros()),
            Some(30_000_000)
        );
        assert_eq!(start.season_id, SeasonId::of(start.occurred_at));
        let mut state = None;
        for (i, ev) in events.iter().enumerate() {
            if i > 0 {
                assert!(ev.occurred_at >= events[i - 1].occurred_at);
            }
            sub_second_micros += usize::from(ev.occurred_at.as_micros() % 1_000_000 != 0);
            let t = apply(state.as_ref(), ev)
                .unwrap_or_else(|r| panic!("match {match_id} v{}: {r}", ev.version));
            state = Some(t.state);
            if ev.event_type == EventType::Finished {
                let (a, b) = (ev.gesture_a.unwrap(), ev.gesture_b.unwrap());
                let expected = if a == b {
                    (None, None)
                } else if a.beats(b) {
                    (Some(ev.player_a_id), Some(ev.player_b_id))
                } else {
                    (Some(ev.player_b_id), Some(ev.player_a_id))
                };
                assert_eq!((ev.winner_player_id, ev.loser_player_id), expected);
                assert_eq!(ev.outcome, Some(Gesture::duel(a, b)));
                draws += usize::from(a == b);
            }
        }
        match state.expect("folded").status {
            MatchStatus::InProgress => {
                abandoned += 1;
                abandoned_after[events.len() - 1] += 1;
            }
            MatchStatus::Voided => voided += 1,
            MatchStatus::Finished => finished += 1,
            other => panic!("match {match_id} ended {other:?}"),
        }
    }
    let share = |n: usize| n as f64 / matches as f64;
    assert!(
        (share(abandoned) - 0.2).abs() < 0.04,
        "abandoned {abandoned}"
    );
    assert!((share(voided) - 0.1).abs() < 0.03, "voided {voided}");
    assert!(
        abandoned_after.iter().all(|n| *n > 0),
        "{abandoned_after:?}"
    );
    assert!(draws > 0 && finished > 0);
    assert!(
        sub_second_micros > total / 2,
        "occurred_at keeps microseconds"
    );
    assert!(
        out.contains(&format!("{abandoned} abandoned"))
            && out.contains(&format!("{voided} voided")),
        "{out}"
    );

    // Both servers' binlogs carry exactly these rows as row inserts.
    for (i, server) in env.config.servers.iter().enumerate() {
        let (inserts, other) = binlog_inserts(ports[i], &before[i], &env.config.database_prefix);
        assert_eq!(
            other, 0,
            "{}: updates or deletes in the binlog",
            server.name
        );
        for &shard in &server.shards {
            let db = env.config.database(shard);
            assert_eq!(
                inserts.get(&db).copied().unwrap_or(0),
                rows[&shard].len() as u64,
                "{}: binlog row inserts of {db}",
                server.name
            );
        }
    }
    env.cleanup().await;
}
