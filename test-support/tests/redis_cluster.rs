//! The private cluster behaves as the failover tests need: fred's clustered
//! client reaches keys of every master, a write acknowledged by a replica
//! (`WAIT`) survives the kill -9 of its master, and the promoted replica
//! serves the slot under the same client without a restart.

use fred::prelude::*;
use rps_core::config::RedisConfig;
use rps_core::redis_client::ClientPolicy;
use std::time::Duration;
use test_support::eventually;
use test_support::redis_cluster::{RedisCluster, MASTERS};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_master_is_replaced_and_keeps_what_its_replica_acknowledged() {
    let mut cluster = RedisCluster::start().await;
    assert_eq!(cluster.masters().len(), MASTERS);

    // The pipeline's own client policy: command timeouts and reconnects,
    // which a cluster losing a node needs.
    let redis = RedisConfig::from_url(cluster.url());
    let client = ClientPolicy::read_only()
        .builder(&redis)
        .expect("clustered URL")
        .build()
        .expect("client");
    assert!(client.is_clustered(), "{}", cluster.url());
    client.init().await.expect("connect to the cluster");

    // Keys whose hash tags fall on every master.
    let mut tags = Vec::new();
    let mut owners = std::collections::BTreeSet::new();
    for i in 0..64 {
        let tag = format!("t{i}");
        let slot = fred::util::redis_keyslot(tag.as_bytes());
        if owners.insert(cluster.master_of_slot(slot).expect("owner")) {
            tags.push((tag, slot));
        }
        if owners.len() == MASTERS {
            break;
        }
    }
    assert_eq!(owners.len(), MASTERS, "tags over every master");
    for (tag, _) in &tags {
        let _: () = client
            .set(format!("{{{tag}}}:k"), tag.as_str(), None, None, false)
            .await
            .expect("SET");
    }

    // Make the victim's replica acknowledge the write, then kill its master.
    let (victim_tag, slot) = tags[0].clone();
    let key = format!("{{{victim_tag}}}:k");
    let owner = cluster.master_of_slot(slot).expect("owner");
    test_support::redis_cluster::wait_replica_online(owner).await;
    // Shorter than the client's command timeout, so a slow replica shows
    // as 0 acknowledgements rather than a timed-out request.
    let acked: i64 = client
        .with_cluster_node(fred::types::config::Server::new("127.0.0.1", owner))
        .wait(1, 3000)
        .await
        .expect("WAIT");
    assert_eq!(acked, 1, "the replica acknowledged");
    let old = cluster.kill_master_of_slot(slot).await;
    assert_ne!(cluster.master_of_slot(slot), Some(old));

    let value: String = eventually(
        "the promoted replica to serve the slot",
        Duration::from_secs(30),
        || {
            let (client, key) = (client.clone(), key.clone());
            async move { client.get::<Option<String>, _>(key).await.ok().flatten() }
        },
    )
    .await;
    assert_eq!(value, victim_tag);
    for (tag, _) in &tags[1..] {
        let v: String = client.get(format!("{{{tag}}}:k")).await.expect("GET");
        assert_eq!(&v, tag);
    }

    // The old master comes back as a replica of the new one.
    cluster.node_mut(old).restart().await;
    cluster.wait_until_ok().await;
    assert_eq!(cluster.masters().len(), MASTERS);
    let _ = client.quit().await;
}

/// During a slot move, a command the source answers with `ASK` is sent
/// again to the target after `ASKING`, on the client's connection to the
/// target, while other commands are in flight on it. Each caller must get
/// its own reply: the `ASKING` reply read in place of an in-flight
/// command's shifts every later reply of that connection by one (wrong
/// values, then requests that time out forever), which is what a
/// component met in a live reshard before the client was fixed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_ask_redirection_amid_pipelined_commands_gives_every_caller_its_own_reply() {
    let cluster = RedisCluster::start().await;
    let client = ClientPolicy::default()
        .connect(&RedisConfig::from_url(cluster.url()))
        .await
        .expect("connect to the cluster");

    let moving_tag = "moving";
    let slot = fred::util::redis_keyslot(moving_tag.as_bytes());
    let from = cluster.master_of_slot(slot).expect("owner");
    let to = cluster
        .masters()
        .into_iter()
        .find(|m| *m != from)
        .expect("another master");
    // Keys the target serves on its own: their commands share the
    // client's connection to the target with the redirected ones.
    let target_tag = (0..1000)
        .map(|i| format!("t{i}"))
        .find(|t| cluster.master_of_slot(fred::util::redis_keyslot(t.as_bytes())) == Some(to))
        .expect("a tag on the target");
    cluster.begin_slot_move(slot, to);

    for round in 0..50 {
        let mut tasks = tokio::task::JoinSet::new();
        for i in 0..40 {
            let c = client.clone();
            let key = format!("{{{target_tag}}}:{round}:{i}");
            tasks.spawn(async move {
                let value = format!("v{round}.{i}");
                let _: () = c.set(&key, value.as_str(), None, None, false).await?;
                let back: Option<String> = c.get(&key).await?;
                Ok::<_, fred::error::Error>((Some(value), back))
            });
            if i % 8 == 0 {
                let c = client.clone();
                // Absent on the source: ASK, then ASKING + GET on the target.
                let key = format!("{{{moving_tag}}}:absent:{round}:{i}");
                tasks.spawn(async move {
                    let back: Option<String> = c.get(&key).await?;
                    Ok::<_, fred::error::Error>((None, back))
                });
            }
        }
        let replies = tokio::time::timeout(Duration::from_secs(20), tasks.join_all())
            .await
            .unwrap_or_else(|_| panic!("round {round}: replies still missing after 20 s"));
        for r in replies {
            let (sent, back) = r.unwrap_or_else(|e| panic!("round {round}: {e}"));
            assert_eq!(
                back, sent,
                "round {round}: a caller got another command's reply"
            );
        }
    }
    cluster.finish_slot_move(slot, to);
    let after: Option<String> = client
        .get(format!("{{{moving_tag}}}:absent:0:0"))
        .await
        .expect("GET after the move (MOVED)");
    assert_eq!(after, None);
}
