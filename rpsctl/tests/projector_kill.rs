//! kill -9 of the `rpsctl projector` process three times mid-stream: after
//! each restart it takes over its dead predecessor's pending entries and the
//! final read models still equal the independent fold, with no dead letter
//! (a double application would show up as `version_repeat` rejections).

#[path = "../../projector/tests/common/mod.rs"]
mod common;

use common::*;
use read_model::ReadModelKeys;
use rps_core::{ShardId, StreamEvent};
use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Duration;
use test_support::TestEnv;

fn write_config(env: &TestEnv) -> PathBuf {
    let mut c = env.config.as_ref().clone();
    c.projector.batch_size = 200;
    c.projector.block_ms = 100;
    c.projector.claim_idle_ms = 1000;
    let toml = c.to_toml();
    let path = std::env::temp_dir().join(format!("{}.toml", env.name));
    std::fs::write(&path, toml).expect("write config");
    path
}

fn spawn(config: &PathBuf, log: &PathBuf) -> Child {
    let log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(log)
        .expect("log file");
    Command::new(env!("CARGO_BIN_EXE_rpsctl"))
        .arg("--config")
        .arg(config)
        .arg("projector")
        .env("RUST_LOG", "info")
        .stdout(Stdio::null())
        .stderr(Stdio::from(log))
        .spawn()
        .expect("spawn rpsctl projector")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn projector_survives_three_kill_9s_mid_stream() {
    let env = TestEnv::new("proj_kill9").await;
    let client = env.redis().await;
    let keys = env.config.keys();
    let gk = keys.generation_keys(1);
    let shards = env.config.shard_count;
    let config = write_config(&env);
    let log = std::env::temp_dir().join(format!("{}.log", env.name));

    let events = tournament(23, 3_000_000, 8000, 500, env.config.shard_count);
    let rows = write_and_read_back(&env, &events).await;
    let total: usize = rows.values().map(Vec::len).sum();

    // Publish in four waves; kill -9 while each of the first three is being applied.
    let mut published: BTreeMap<ShardId, Vec<(String, StreamEvent)>> = BTreeMap::new();
    let mut child = spawn(&config, &log);
    for wave in 0..4usize {
        for (shard, evs) in &rows {
            let from = evs.len() * wave / 4;
            let to = evs.len() * (wave + 1) / 4;
            let p = publish(&env, &client, *shard, &evs[from..to]).await;
            published.entry(*shard).or_default().extend(p);
        }
        if wave == 3 {
            break;
        }
        let before: HashMap<String, String> =
            progress_of(&client, &gk, env.config.shard_count).await;
        // Wait until the projector has applied part, but not all, of the wave.
        let last: HashMap<ShardId, String> = published
            .iter()
            .map(|(s, v)| (*s, v.last().unwrap().0.clone()))
            .collect();
        test_support::eventually("progress within the wave", Duration::from_secs(60), || {
            let (client, gk, before, last) = (&client, &gk, &before, &last);
            async move {
                let p = progress_of(client, gk, shards).await;
                let moved = last
                    .keys()
                    .any(|s| p.get(&s.to_string()) != before.get(&s.to_string()));
                let done = last.iter().all(|(s, id)| p.get(&s.to_string()) == Some(id));
                (moved || done).then_some(())
            }
        })
        .await;
        child.kill().expect("kill -9");
        child.wait().expect("reap");
        child = spawn(&config, &log);
    }
    let expected = fold_all(&published, env.config.shard_count);
    assert_eq!(published.values().map(Vec::len).sum::<usize>(), total);
    wait_caught_up(&client, &gk, &expected.last_ids, Duration::from_secs(90)).await;
    child.kill().ok();
    child.wait().ok();

    assert!(expected.rejected.is_empty(), "the tournament is all valid");
    assert_matches_fold(&client, &gk, &expected).await;
    let letters = dead_letters(&client, &keys.deadletter()).await;
    assert!(
        letters.is_empty(),
        "no dead letter after kills: {:?}",
        letters.first()
    );
    // Four processes worked shards (a run may be killed before taking all of them).
    let log_text = std::fs::read_to_string(&log).unwrap_or_default();
    let holders: std::collections::HashSet<&str> = log_text
        .lines()
        .filter(|l| l.contains("holding the shard lease"))
        .filter_map(|l| l.split("projector-").nth(1))
        .collect();
    assert_eq!(holders.len(), 4, "four runs held leases");
    eprintln!(
        "takeovers of a dead consumer's pending entries: {}",
        log_text.matches("took over pending entries").count()
    );

    let _ = std::fs::remove_file(&config);
    let _ = std::fs::remove_file(&log);
    env.cleanup().await;
}
