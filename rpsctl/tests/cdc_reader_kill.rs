//! `rpsctl cdc-reader` killed with SIGKILL at random moments during a
//! 200k-row load, three times, then restarted: every row is in its shard
//! stream exactly once (per-shard count, distinct ids, id checksum).

#[path = "../../cdc-reader/tests/common/streams.rs"]
mod streams;

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};
use test_support::shard_load::{load_every_shard, started_events_of_fixed_ids};
use test_support::TestEnv;

const PER_SHARD: usize = 25_000;

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

    let load = load_every_shard(&env.store, config.shard_count, 500, |shard| {
        started_events_of_fixed_ids(
            shard,
            config.shard_count,
            1_000_000_000 * i64::from(shard + 1),
            PER_SHARD,
        )
    });

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
    let want = load.appended().await;
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
    let got = streams::published_once(&redis, &config, &want).await;
    for shard in want.keys() {
        assert_eq!(got[shard].undecodable, 0);
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
