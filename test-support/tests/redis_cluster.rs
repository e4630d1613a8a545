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
    let acked: i64 = client
        .with_cluster_node(fred::types::config::Server::new("127.0.0.1", owner))
        .wait(1, 5000)
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
