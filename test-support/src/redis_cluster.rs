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
        // `--cluster create` returns once the slots are assigned, but on a
        // busy machine its `CLUSTER REPLICATE` to a node can fail, leaving a
        // master without slots; a test that counts or kills masters must not
        // see it as one. Such a node is made the replica of a master that
        // has none.
        eventually(
            "every replica of the new cluster to follow its master",
            Duration::from_secs(60),
            || async {
                cluster.attach_stray_masters();
                (cluster.masters().len() == MASTERS).then_some(())
            },
        )
        .await;
        cluster
    }

    /// Makes every master without slots the replica of a master with
    /// slots and no replica.
    fn attach_stray_masters(&self) {
        let masters = self.masters();
        let (serving, stray): (Vec<u16>, Vec<u16>) =
            masters.into_iter().partition(|p| served_slots(*p) > 0);
        if stray.is_empty() {
            return;
        }
        let Some(nodes) = redis_cli(
            serving.first().copied().unwrap_or(stray[0]),
            &["cluster", "nodes"],
        ) else {
            return;
        };
        let followed: Vec<&str> = nodes
            .lines()
            .filter_map(|l| {
                let f: Vec<&str> = l.split_whitespace().collect();
                (f.len() > 3 && f[2].contains("slave")).then(|| f[3])
            })
            .collect();
        let mut lonely = serving
            .iter()
            .map(|p| node_id(*p))
            .filter(|id| !followed.contains(&id.as_str()));
        for port in stray {
            if let Some(master) = lonely.next() {
                let _ = redis_cli(port, &["cluster", "replicate", &master]);
            }
        }
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
        // A replica still in its first full sync may not take over: a
        // failover needs one that has the master's data.
        wait_replica_online(port).await;
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

    /// Moves every slot of the master on `from` to the master on `to` with
    /// `redis-cli --cluster reshard` (keys migrated while clients go on:
    /// they meet `ASK` for a slot being moved and `MOVED` after), and
    /// waits until the cluster is ok. Returns how many slots moved.
    pub async fn move_all_slots(&self, from: u16, to: u16) -> u32 {
        let slots = served_slots(from);
        let (from_id, to_id) = (node_id(from), node_id(to));
        let out = Command::new("redis-cli")
            .args(["--cluster", "reshard", &format!("127.0.0.1:{from}")])
            .args(["--cluster-from", &from_id, "--cluster-to", &to_id])
            .args(["--cluster-slots", &slots.to_string(), "--cluster-yes"])
            .stdout(Stdio::null())
            .output()
            .expect("redis-cli --cluster reshard");
        assert!(
            out.status.success(),
            "redis-cli --cluster reshard failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        self.wait_until_ok().await;
        slots
    }

    /// Leaves `slot` half moved from its master to the master on `to`, as
    /// `redis-cli --cluster reshard` does before it migrates the keys: the
    /// target `IMPORTING`, the source `MIGRATING`. Commands on keys the
    /// source does not hold are answered with `ASK` until
    /// [`RedisCluster::finish_slot_move`].
    pub fn begin_slot_move(&self, slot: u16, to: u16) -> u16 {
        let from = self.master_of_slot(slot).expect("a master for the slot");
        let slot_arg = slot.to_string();
        redis_cli(
            to,
            &["cluster", "setslot", &slot_arg, "importing", &node_id(from)],
        )
        .expect("CLUSTER SETSLOT IMPORTING");
        redis_cli(
            from,
            &["cluster", "setslot", &slot_arg, "migrating", &node_id(to)],
        )
        .expect("CLUSTER SETSLOT MIGRATING");
        from
    }

    /// Gives `slot` to the master on `to` on every master (the last step of
    /// a slot move; the source must hold no key of the slot any more).
    pub fn finish_slot_move(&self, slot: u16, to: u16) {
        let to_id = node_id(to);
        let slot_arg = slot.to_string();
        for m in self.masters() {
            redis_cli(m, &["cluster", "setslot", &slot_arg, "node", &to_id])
                .expect("CLUSTER SETSLOT NODE");
        }
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

/// Waits until the master on `port` has its replica online (past its
/// first full sync): before that, `WAIT` cannot be acknowledged and the
/// replica cannot take over.
pub async fn wait_replica_online(port: u16) {
    eventually(
        &format!("the replica of {port} to be online"),
        Duration::from_secs(60),
        || async move {
            let info = redis_cli(port, &["info", "replication"])?;
            info.lines()
                .any(|l| l.starts_with("slave0:") && l.contains("state=online"))
                .then_some(())
        },
    )
    .await;
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

/// The node's id in the cluster (`CLUSTER MYID`).
fn node_id(port: u16) -> String {
    redis_cli(port, &["cluster", "myid"])
        .expect("CLUSTER MYID")
        .trim()
        .to_string()
}

/// How many slots the master on `port` serves, from its own `CLUSTER NODES` line.
fn served_slots(port: u16) -> u32 {
    let nodes = redis_cli(port, &["cluster", "nodes"]).expect("CLUSTER NODES");
    let me = nodes
        .lines()
        .find(|l| l.contains("myself"))
        .expect("the node's own line");
    me.split_whitespace()
        .skip(8)
        .filter(|r| !r.starts_with('['))
        .map(|r| match r.split_once('-') {
            Some((a, b)) => b.parse::<u32>().unwrap_or(0) - a.parse::<u32>().unwrap_or(0) + 1,
            None => 1,
        })
        .sum()
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
