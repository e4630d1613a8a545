//! A Redis Cluster changing under a tournament: a master killed with kill
//! -9 (its replica is promoted; asynchronous replication may lose the
//! master's last writes), and every slot of a master moved to another with
//! `redis-cli --cluster reshard` (clients meet ASK and MOVED). `rpsctl run`
//! goes on through both, and at the quiet moment the read models equal the
//! fold of the event tables, every abandoned match has exactly one
//! `timed_out`, and nothing was dead-lettered.

use std::time::Duration;
use test_support::redis_cluster::RedisCluster;
use test_support::{eventually, TestEnv};

#[path = "common/quiet.rs"]
mod quiet;
#[path = "common/tournament.rs"]
mod tournament;

/// What the cluster goes through while the tournament is played.
enum Disruption {
    /// kill -9 of the master serving shard 0's slot.
    KillMaster,
    /// Every slot of the master serving shard 0's slot moved to another master.
    MoveSlots,
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_master_killed_under_load_is_replaced_and_the_read_models_end_equal_to_the_fold() {
    tournament_through(Disruption::KillMaster).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slots_moved_under_load_leave_read_models_equal_to_the_fold() {
    tournament_through(Disruption::MoveSlots).await;
}

async fn tournament_through(disruption: Disruption) {
    let mut cluster = RedisCluster::start().await;
    let t = tournament::start(TestEnv::with_redis("cluster_change", 4, &cluster.url()).await).await;
    let env = &t.env;
    let sim = tournament::play(
        env,
        simulator::SimulateOptions {
            // Six to seven seconds of writes, so the disruption falls in
            // the middle of them.
            rate: Some(600.0),
            ..tournament::matches(300, 4_000, 200)
        },
    );

    // Mid-load: the master of shard 0's slot (its stream, checkpoint,
    // match states and outbox) dies, or gives all its slots away.
    let redis = env.redis().await;
    let keys = env.config.keys();
    let stream = keys.events(0);
    eventually("shard 0 to have entries", Duration::from_secs(60), || {
        let (redis, stream) = (redis.clone(), stream.clone());
        async move {
            use fred::interfaces::StreamsInterface;
            let n: u64 = redis.xlen(stream).await.ok()?;
            (n > 300).then_some(())
        }
    })
    .await;
    let slot = fred::util::redis_keyslot(stream.as_bytes());
    assert!(!sim.is_finished(), "the load ended before the disruption");
    let before = cluster.master_of_slot(slot).expect("a master");
    match disruption {
        Disruption::KillMaster => {
            let killed = cluster.kill_master_of_slot(slot).await;
            assert_eq!(killed, before);
        }
        Disruption::MoveSlots => {
            let to = cluster
                .masters()
                .into_iter()
                .find(|m| *m != before)
                .expect("another master");
            let moved = cluster.move_all_slots(before, to).await;
            assert!(moved > 5000, "moved {moved} slots");
        }
    }
    let after = cluster.master_of_slot(slot).expect("a master");
    assert_ne!(before, after, "shard 0's slot has a new master");

    let report = sim.await.expect("simulator task");
    assert!(report.abandoned > 0, "{report:?}");
    quiet::every_abandoned_match_timed_out_once(env, report.abandoned).await;
    quiet::read_models_equal_the_fold(env).await;
    use fred::interfaces::StreamsInterface;
    let redis = env.redis().await;
    let dead: u64 = redis.xlen(keys.deadletter()).await.expect("xlen");
    assert_eq!(dead, 0, "dead letters after the cluster changed");
}
