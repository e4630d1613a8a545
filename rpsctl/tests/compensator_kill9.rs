//! Two `rpsctl compensator` processes firing the same deadlines; one is
//! killed -9 while it holds claims. Every match still gets exactly one
//! `timed_out`: the dead one's leases expire and the survivor takes them,
//! and the deterministic event id and `uk_match_version` stop any double.

use compensator::fred::interfaces::SortedSetsInterface;
use read_model::ReadModelKeys;
use rps_core::keys::deadline_member;
use rps_core::{EventType, MatchEvent, SeasonId, Timestamp};
use rps_event_store::{BatchAppend, HistoryFilter};
use std::collections::HashMap;
use std::process::{Child, Command, Stdio};
use std::time::Duration;
use test_support::{eventually, redis_client, TestEnv};

const TABLE: &str = "match_result_events";

/// A scratch directory removed on drop.
struct ScratchDir(std::path::PathBuf);

impl ScratchDir {
    fn new(name: &str) -> Self {
        let p = std::env::temp_dir().join(format!("rpsctl-{name}"));
        std::fs::create_dir_all(&p).unwrap();
        ScratchDir(p)
    }
    fn path(&self) -> &std::path::Path {
        &self.0
    }
}

impl Drop for ScratchDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn spawn(config: &std::path::Path, log: &std::path::Path) -> Child {
    Command::new(env!("CARGO_BIN_EXE_rpsctl"))
        .arg("--config")
        .arg(config)
        .arg("compensator")
        .env("RUST_LOG", "info")
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(log).unwrap())
        .spawn()
        .expect("rpsctl compensator")
}

/// match id → number of `timed_out` rows, over every shard.
async fn timed_out_counts(env: &TestEnv) -> HashMap<i64, usize> {
    let mut out = HashMap::new();
    for shard in 0..env.config.shard_count {
        let mut r = env
            .store
            .table_reader(shard, TABLE, &HistoryFilter::default(), 5000);
        while let Some(page) = r.next_page().await.unwrap() {
            for ev in page.into_iter().flatten() {
                if ev.event_type == EventType::TimedOut {
                    *out.entry(ev.match_id).or_insert(0) += 1;
                }
            }
        }
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_of_two_compensators_killed_mid_claim_still_exactly_one_each() {
    let env = TestEnv::new("comp_kill9").await;
    let dir = ScratchDir::new(&env.name);
    let cfg_path = dir.path().join("rps.toml");
    std::fs::write(&cfg_path, {
        let mut c = env.config.as_ref().clone();
        c.compensator.lease_ms = 1500;
        c.compensator.claim_batch = 40;
        c.compensator.retry_initial_ms = 200;
        c.compensator.retry_max_ms = 1000;
        c.compensator.max_attempts = 20;
        c.to_toml()
    })
    .unwrap();

    // 200 open matches per shard, deadlines spread over 2..5 s from now.
    let per_shard = 200;
    let shards = env.config.shard_count;
    let total = per_shard * usize::from(shards);
    let first = Timestamp::now().0 + 2_000_000;
    let redis = redis_client(&env.config.redis.url).await;
    let g = env.config.keys().generation_keys(0);
    for shard in 0..shards {
        let mut deadlines = Vec::with_capacity(per_shard);
        let mut evs = Vec::with_capacity(per_shard);
        for k in 0..per_shard {
            let i = k * usize::from(shards) + usize::from(shard);
            let deadline = Timestamp(first + (i as i64) * 3_000_000 / total as i64);
            let player_a = i64::from(shard) + 8 * (k as i64 + 1);
            let match_id = 5_000_000 + i as i64;
            evs.push(MatchEvent::started(
                // Inferred as the model's UUID type from its text form.
                format!("00000000-0000-4000-8000-{match_id:012x}")
                    .parse()
                    .unwrap(),
                match_id,
                SeasonId::of(deadline),
                (player_a, player_a + 1_000_000),
                Timestamp(deadline.0 - 30_000_000),
                deadline,
            ));
            deadlines.push((
                deadline.as_millis() as f64,
                deadline_member(shard, match_id),
            ));
        }
        assert_eq!(
            env.store.append_all(shard, TABLE, &evs).await.unwrap(),
            BatchAppend::Inserted
        );
        let _: () = redis
            .zadd(g.deadlines(shard), None, None, false, false, deadlines)
            .await
            .unwrap();
    }

    let mut victim = spawn(&cfg_path, &dir.path().join("a.log"));
    let mut survivor = spawn(&cfg_path, &dir.path().join("b.log"));

    let fired_at_kill = eventually("both firing", Duration::from_secs(20), || async {
        let n = timed_out_counts(&env).await.len();
        (n >= total / 4).then_some(n)
    })
    .await;
    let mut leased: u64 = 0;
    for shard in 0..shards {
        let n: u64 = redis
            .zcard(env.config.keys().deadline_leases(shard))
            .await
            .unwrap();
        leased += n;
    }
    victim.kill().unwrap();
    victim.wait().unwrap();
    assert!(
        fired_at_kill < total,
        "killed before the end: {fired_at_kill}/{total}"
    );
    assert!(leased > 0);

    eventually("every match timed out", Duration::from_secs(40), || async {
        (timed_out_counts(&env).await.len() == total).then_some(())
    })
    .await;
    // Past every lease: re-claims must find the matches over.
    tokio::time::sleep(Duration::from_millis(2_500)).await;
    let counts = timed_out_counts(&env).await;
    survivor.kill().unwrap();
    survivor.wait().unwrap();
    assert_eq!(counts.len(), total);
    let doubles: Vec<_> = counts.iter().filter(|(_, n)| **n != 1).collect();
    assert!(
        doubles.is_empty(),
        "matches with more than one timed_out: {doubles:?}"
    );
    let log = std::fs::read_to_string(dir.path().join("b.log")).unwrap();
    assert!(log.contains("compensator started"), "{log}");
    env.cleanup().await;
}
