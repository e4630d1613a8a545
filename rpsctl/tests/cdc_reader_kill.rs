//! `rpsctl cdc-reader` killed with SIGKILL at random moments during a
//! 200k-row load, three times, then restarted: every row is in its shard
//! stream exactly once (per-shard count, distinct ids, id checksum).

use rps_core::event::MatchEvent;
use rps_core::{ShardId, Timestamp};
use std::collections::HashMap;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};
use test_support::TestEnv;

const PER_SHARD: usize = 25_000;

fn events(shard: ShardId, shards: u16, first: i64, n: usize) -> Vec<MatchEvent> {
    let now = Timestamp::now();
    (0..n as i64)
        .map(|k| {
            let a = i64::from(shard) + i64::from(shards) * (k + 1);
            let match_id = first + k;
            MatchEvent::started(
                // Deterministic and unique per match: a v5 UUID.
                MatchEvent::timed_out_event_id(match_id, 1),
                match_id,
                "2026Q4".parse().unwrap(),
                (a, a + 1),
                Timestamp(now.0 + k),
                Timestamp(now.0 + 30_000_000),
            )
        })
        .collect()
}

fn spawn(path: &std::path::Path, metrics_port: u16) -> Child {
    Command::new(env!("CARGO_BIN_EXE_rpsctl"))
        .arg("--config")
        .arg(path)
        .arg("cdc-reader")
        .arg("--metrics-bind")
        .arg(format!("127.0.0.1:{metrics_port}"))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("rpsctl cdc-reader")
}

/// GET /metrics with a plain HTTP/1.0 request.
fn metrics_text(port: u16) -> String {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).expect("metrics endpoint");
    s.write_all(b"GET /metrics HTTP/1.0\r\nHost: localhost\r\n\r\n")
        .unwrap();
    let mut out = String::new();
    s.read_to_string(&mut out).unwrap();
    out
}

/// A small deterministic-per-run generator for the kill moments.
fn next_rand(state: &mut u64) -> u64 {
    *state ^= *state << 13;
    *state ^= *state >> 7;
    *state ^= *state << 17;
    *state
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill9_three_times_during_a_200k_row_load_then_exactly_once() {
    let env = TestEnv::new("cdc_kill9").await;
    let config = env.config.clone();
    let path = std::env::temp_dir().join(format!("{}.toml", env.name));
    std::fs::write(&path, {
        let mut c = config.as_ref().clone();
        c.cdc.batch_rows = 700;
        c.to_toml()
    })
    .unwrap();
    let redis = cdc_reader::inspect::connect(&config).await.unwrap();

    let mut port = test_support::free_port();
    let mut child = spawn(&path, port);
    for s in &config.servers {
        let name = s.name.clone();
        test_support::eventually("initial checkpoint", Duration::from_secs(30), || {
            let (redis, config, name) = (redis.clone(), config.clone(), name.clone());
            async move {
                cdc_reader::inspect::checkpoint(&redis, &config, &name)
                    .await
                    .ok()
                    .flatten()
            }
        })
        .await
        .expect("the stored checkpoint parses");
    }

    let mut want: HashMap<ShardId, (u64, u128)> = HashMap::new();
    let mut loads = Vec::new();
    for shard in 0..config.shard_count {
        let evs = events(
            shard,
            config.shard_count,
            1_000_000_000 * i64::from(shard + 1),
            PER_SHARD,
        );
        want.insert(shard, test_support::count_and_checksum(&evs));
        loads.push(test_support::spawn_append(&env.store, shard, evs, 500));
    }

    let mut seed = Instant::now().elapsed().as_nanos() as u64 | 1;
    seed ^= std::process::id() as u64;
    for _ in 0..3 {
        let wait = 300 + next_rand(&mut seed) % 1500;
        tokio::time::sleep(Duration::from_millis(wait)).await;
        child.kill().unwrap(); // SIGKILL
        child.wait().unwrap();
        port = test_support::free_port();
        child = spawn(&path, port);
    }
    for l in loads {
        l.await.unwrap();
    }
    let total = PER_SHARD as u64 * u64::from(config.shard_count);
    test_support::eventually("200k entries", Duration::from_secs(180), || {
        let (redis, config) = (redis.clone(), config.clone());
        async move {
            let n = cdc_reader::inspect::total_entries(&redis, &config)
                .await
                .ok()?;
            (n >= total).then_some(())
        }
    })
    .await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    let got = cdc_reader::inspect::all_streams(&redis, &config)
        .await
        .unwrap();
    for (shard, (n, sum)) in &want {
        let s = &got[shard];
        assert_eq!(s.entries, *n, "shard {shard}: entries");
        assert_eq!(s.distinct_events, *n, "shard {shard}: duplicates");
        assert_eq!(s.id_checksum, *sum, "shard {shard}: id checksum");
        assert_eq!(s.undecodable, 0);
    }

    // The surviving process serves its metrics over HTTP.
    let text = metrics_text(port);
    for name in [
        "rps_cdc_events_published_total{server=\"mysql-a\"}",
        "rps_cdc_reader_up{server=\"mysql-b\"} 1",
        "rps_cdc_lag_seconds{server=\"mysql-a\"}",
    ] {
        assert!(text.contains(name), "/metrics lacks {name}:\n{text}");
    }
    child.kill().unwrap();
    child.wait().unwrap();
    let _ = std::fs::remove_file(&path);
    env.cleanup().await;
}
