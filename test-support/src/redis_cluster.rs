//! A private Redis Cluster for the tests that break one: three masters and
//! three replicas on free ports, made with `redis-cli --cluster create`
//! exactly as `scripts/dev-env.sh up cluster` makes the shared one, and
//! killed on drop. A test can kill -9 a master and wait for its replica's
//! promotion, or move slots under load.

use crate::{eventually, free_port};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

/// Masters and replicas of a [`RedisCluster`].
pub const MASTERS: usize = 3;
pub const NODES: usize = 6;

/// One node of the cluster.
pub struct ClusterNode {
    pub port: u16,
    child: Option<Child>,
    dir: std::path::PathBuf,
}

impl ClusterNode {
    fn launch(&mut self) {
        let child = Command::new("redis-server")
            .args(["--port", &self.port.to_string(), "--bind", "127.0.0.1"])
            .args(["--dir", &self.dir.display().to_string()])
            .args(["--cluster-enabled", "yes"])
            .args(["--cluster-config-file", "nodes.conf"])
            // A killed master's replica is promoted within a few seconds.
            .args(["--cluster-node-timeout", "2000"])
            .args(["--appendonly", "yes", "--appendfsync", "always"])
            .args(["--save", ""])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("redis-server (is Redis installed? scripts/dev-env.sh up installs it)");
        self.child = Some(child);
    }

    pub fn kill9(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Starts again on the same port, data and cluster identity.
    pub async fn restart(&mut self) {
        self.kill9();
        self.launch();
        wait_for_ping(self.port).await;
    }

    pub fn is_running(&self) -> bool {
        self.child.is_some()
    }
}

/// A private 3-master, 3-replica cluster. Killed on drop.
pub struct RedisCluster {
    _dir: tempfile::TempDir,
    pub nodes: Vec<ClusterNode>,
}

impl RedisCluster {
    /// Starts six nodes, joins them and waits until every node says
    /// `cluster_state:ok`.
    pub async fn start() -> RedisCluster {
        let dir = tempfile::Builder::new()
            .prefix("rps-cluster-")
            .tempdir()
            .expect("tempdir");
        let mut nodes = Vec::with_capacity(NODES);
        for _ in 0..NODES {
            let port = free_port();
            let node_dir = dir.path().join(port.to_string());
            std::fs::create_dir_all(&node_dir).expect("node dir");
            let mut node = ClusterNode {
                port,
                child: None,
                dir: node_dir,
            };
            node.launch();
            nodes.push(node);
        }
        for node in &nodes {
            wait_for_ping(node.port).await;
        }
        let addrs: Vec<String> = nodes
            .iter()
            .map(|n| format!("127.0.0.1:{}", n.port))
            .collect();
        let out = Command::new("redis-cli")
            .arg("--cluster")
            .arg("create")
            .args(&addrs)
            .args(["--cluster-replicas", "1", "--cluster-yes"])
            .output()
            .expect("redis-cli --cluster create");
        assert!(
            out.status.success(),
            "redis-cli --cluster create failed: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        let cluster = RedisCluster { _dir: dir, nodes };
        cluster.wait_until_ok().await;
        cluster
    }

    /// fred's clustered URL with every master as a seed node.
    pub fn url(&self) -> String {
        let mut seeds = self.nodes.iter().filter(|n| n.is_running()).map(|n| n.port);
        let first = seeds.next().expect("a running node");
        let rest: Vec<String> = seeds.map(|p| format!("node=127.0.0.1:{p}")).collect();
        if rest.is_empty() {
            format!("redis-cluster://127.0.0.1:{first}")
        } else {
            format!("redis-cluster://127.0.0.1:{first}?{}", rest.join("&"))
        }
    }

    /// Waits until every running node reports the cluster healthy (all
    /// slots served).
    pub async fn wait_until_ok(&self) {
        let ports: Vec<u16> = self
            .nodes
            .iter()
            .filter(|n| n.is_running())
            .map(|n| n.port)
            .collect();
        eventually(
            "every cluster node to report cluster_state:ok",
            Duration::from_secs(60),
            || {
                let ports = ports.clone();
                async move {
                    ports
                        .iter()
                        .all(|p| cluster_info(*p, "cluster_state").as_deref() == Some("ok"))
                        .then_some(())
                }
            },
        )
        .await;
    }

    /// Ports of the nodes that are masters now.
    pub fn masters(&self) -> Vec<u16> {
        self.nodes
            .iter()
            .filter(|n| n.is_running())
            .filter(|n| role(n.port).as_deref() == Some("master"))
            .map(|n| n.port)
            .collect()
    }

    /// The node on `port`.
    pub fn node_mut(&mut self, port: u16) -> &mut ClusterNode {
        self.nodes
            .iter_mut()
            .find(|n| n.port == port)
            .expect("a node of this cluster")
    }

    /// kill -9 of the master that serves `slot`; returns its port once a
    /// replica has taken the slot over and the cluster is ok again.
    pub async fn kill_master_of_slot(&mut self, slot: u16) -> u16 {
        let port = self.master_of_slot(slot).expect("a master for the slot");
        self.node_mut(port).kill9();
        let survivor = self
            .nodes
            .iter()
            .find(|n| n.is_running())
            .expect("a running node")
            .port;
        eventually(
            &format!("a replica to take over slot {slot} from {port}"),
            Duration::from_secs(60),
            || async move {
                let owner = slot_owner(survivor, slot)?;
                (owner != port && role(owner).as_deref() == Some("master")).then_some(())
            },
        )
        .await;
        self.wait_until_ok().await;
        port
    }

    /// The port of the master serving `slot`, as a running node sees it.
    pub fn master_of_slot(&self, slot: u16) -> Option<u16> {
        let asker = self.nodes.iter().find(|n| n.is_running())?.port;
        slot_owner(asker, slot)
    }
}

impl Drop for RedisCluster {
    fn drop(&mut self) {
        for n in &mut self.nodes {
            n.kill9();
        }
    }
}

async fn wait_for_ping(port: u16) {
    eventually(
        "cluster node to answer",
        Duration::from_secs(20),
        || async move {
            std::net::TcpStream::connect(("127.0.0.1", port))
                .ok()
                .map(|_| ())
        },
    )
    .await;
}

fn redis_cli(port: u16, args: &[&str]) -> Option<String> {
    let out = Command::new("redis-cli")
        .args(["-p", &port.to_string()])
        .args(args)
        .output()
        .ok()?;
    out.status
        .success()
        .then(|| String::from_utf8_lossy(&out.stdout).replace('\r', ""))
}

/// One field of `CLUSTER INFO` on a node.
pub fn cluster_info(port: u16, field: &str) -> Option<String> {
    redis_cli(port, &["cluster", "info"])?
        .lines()
        .find_map(|l| l.strip_prefix(field)?.strip_prefix(':').map(str::to_string))
}

/// `master` or `slave`, as the node says of itself.
fn role(port: u16) -> Option<String> {
    redis_cli(port, &["role"])?
        .lines()
        .next()
        .map(str::to_string)
}

/// The master port serving `slot`, from `CLUSTER NODES` (its format is
/// stable across Redis versions, unlike `CLUSTER SHARDS`).
fn slot_owner(port: u16, slot: u16) -> Option<u16> {
    let nodes = redis_cli(port, &["cluster", "nodes"])?;
    for line in nodes.lines() {
        let f: Vec<&str> = line.split_whitespace().collect();
        if f.len() < 9 || !f[2].contains("master") || f[2].contains("fail") {
            continue;
        }
        let serves = f[8..].iter().any(|range| match range.split_once('-') {
            Some((a, b)) => matches!(
                (a.parse::<u16>(), b.parse::<u16>()),
                (Ok(a), Ok(b)) if (a..=b).contains(&slot)
            ),
            None => range.parse::<u16>() == Ok(slot),
        });
        if serves {
            let addr = f[1].split('@').next()?;
            return addr.rsplit(':').next()?.parse().ok();
        }
    }
    None
}
