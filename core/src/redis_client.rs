//! How every component connects to Redis (feature `redis`): one policy, so
//! the rules that exactly-once depends on are written once.
//!
//! The rule that matters: a command that was in flight when its connection
//! closed is never sent again by the client library. Redis may have executed
//! it (the reply is what got lost), and several of the pipeline's commands
//! are not idempotent: an `XREADGROUP … >` sent twice moves the group past
//! entries nobody received; a claim sent twice hands out deadlines twice.
//! The caller gets the error and its own loop decides, from what Redis
//! holds, what to do next (every write of the pipeline is fenced).

use crate::config::RedisConfig;
use crate::tls;
use fred::prelude::*;
use std::time::Duration;

/// Timeouts and reconnect behaviour of one client.
#[derive(Debug, Clone)]
pub struct ClientPolicy {
    pub connect_timeout: Duration,
    /// Longest a command may wait for its reply before it fails.
    pub command_timeout: Duration,
    /// Reconnect delays grow exponentially from 100 ms up to this.
    pub max_reconnect_delay: Duration,
    /// Whether a command in flight when its connection closed may be sent
    /// again after the reconnect. Only for clients that never write.
    pub resend_in_flight: bool,
}

impl Default for ClientPolicy {
    fn default() -> Self {
        ClientPolicy {
            connect_timeout: Duration::from_secs(2),
            command_timeout: Duration::from_secs(30),
            max_reconnect_delay: Duration::from_secs(2),
            resend_in_flight: false,
        }
    }
}

impl ClientPolicy {
    /// For query paths (the API): short command timeout, reads resent
    /// after a reconnect.
    pub fn read_only() -> Self {
        ClientPolicy {
            command_timeout: Duration::from_secs(5),
            resend_in_flight: true,
            ..ClientPolicy::default()
        }
    }

    /// For the reader's publisher: a slow Redis (an AOF rewrite, a
    /// failover) gets more time before a publish counts as failed, since a
    /// failed publish costs a reconnect and a checkpoint read.
    pub fn publisher() -> Self {
        ClientPolicy {
            connect_timeout: Duration::from_secs(5),
            command_timeout: Duration::from_secs(15),
            ..ClientPolicy::default()
        }
    }

    /// For work that can wait for Redis rather than fail (the compensator,
    /// operator commands): longer connect, gentler reconnects.
    pub fn patient() -> Self {
        ClientPolicy {
            connect_timeout: Duration::from_secs(5),
            max_reconnect_delay: Duration::from_secs(5),
            ..ClientPolicy::default()
        }
    }

    /// A builder for the configured Redis with this policy: URL, password
    /// and TLS from `redis`; `build()` / `build_pool(n)` it.
    pub fn builder(&self, redis: &RedisConfig) -> Result<Builder, fred::error::Error> {
        let mut config =
            fred::types::config::Config::from_url(&redis.url).map_err(|e| without_url(e, redis))?;
        if let Some(password) = &redis.password {
            config.password = Some(password.expose().to_string());
        }
        config.tls = fred_tls(redis)?;
        let clustered = config.server.is_clustered();
        let mut builder = Builder::from_config(config);
        let (connect, command) = (self.connect_timeout, self.command_timeout);
        // fred counts a MOVED or ASK redirection as another write of the
        // command, so on a cluster one attempt would turn every redirection
        // (after a failover, during a reshard) into an error. The command
        // then surely did not run on the node that redirected it, and every
        // write step of the pipeline is fenced (a compare-and-set or a
        // sequence number), so a step resent after a dropped connection
        // is refused or skipped rather than applied twice.
        let attempts = if self.resend_in_flight || clustered {
            3
        } else {
            1
        };
        builder
            .with_connection_config(|c| {
                c.connection_timeout = connect;
                c.internal_command_timeout = connect.max(Duration::from_secs(5));
                c.max_command_attempts = attempts;
            })
            .with_performance_config(|p| p.default_command_timeout = command)
            .set_policy(ReconnectPolicy::new_exponential(
                0,
                100,
                self.max_reconnect_delay.as_millis().min(u32::MAX as u128) as u32,
                2,
            ));
        Ok(builder)
    }

    /// A connected client that reconnects by itself (forever).
    pub async fn connect(&self, redis: &RedisConfig) -> Result<Client, fred::error::Error> {
        let client = self.builder(redis)?.build()?;
        if let Err(e) = client.init().await {
            let _ = client.quit().await;
            if is_certificate_rejection(&e) {
                return Err(fred::error::Error::new(
                    fred::error::ErrorKind::Tls,
                    format!(
                        "TLS to Redis at {} failed, a certificate was refused ({}); check `redis.tls` \
                         (mode, ca_file, client certificate) against the server's certificate",
                        redis.display_url(),
                        e.details()
                    ),
                ));
            }
            return Err(e);
        }
        Ok(client)
    }
}

/// The TLS connector of `redis.tls`, if TLS is on.
fn fred_tls(
    redis: &RedisConfig,
) -> Result<Option<fred::types::config::TlsConfig>, fred::error::Error> {
    let mode = redis.tls_mode();
    if !mode.is_enabled() {
        return Ok(None);
    }
    let config = tls::client_config(&redis.tls, mode).map_err(|message| {
        fred::error::Error::new(fred::error::ErrorKind::Tls, format!("redis TLS: {message}"))
    })?;
    Ok(Some(fred::types::config::TlsConnector::from(config).into()))
}

/// Whether a connection failed on a certificate (ours refused the server's,
/// or the server refused ours) or on the TLS settings themselves: not worth
/// a retry, an operator must fix `redis.tls`.
pub fn is_certificate_rejection(e: &fred::error::Error) -> bool {
    *e.kind() == fred::error::ErrorKind::Tls
        || [
            "invalid peer certificate",
            "received fatal alert",
            "InvalidCertificate",
            "AlertReceived",
        ]
        .iter()
        .any(|m| e.details().contains(m))
}

/// A URL parse error names the masked URL, never the password.
fn without_url(e: fred::error::Error, redis: &RedisConfig) -> fred::error::Error {
    let details = e.details().replace(&redis.url, &redis.display_url());
    fred::error::Error::new(
        e.kind().clone(),
        format!("redis.url {}: {details}", redis.display_url()),
    )
}

/// How a clustered client routes a command fred does not know the keys of
/// (`CustomCommand`): by the hash slot of `key`. fred's `FirstKey` would
/// hash the first string argument, which for `XINFO GROUPS key` or
/// `XREAD … STREAMS key` is not the key.
pub fn slot_of(key: &str) -> fred::types::ClusterHash {
    fred::types::ClusterHash::Custom(fred::util::redis_keyslot(key.as_bytes()))
}

/// The prepared XA branches the reader of `server` holds, from every
/// target's registry ([`crate::Keys::cdc_xa_branches`]): xid key → the
/// registry's JSON ([`crate::xa::HeldBranch`]). A branch holding items for
/// several targets is in each of their registries, with the same entry.
pub async fn xa_registry(
    client: &Client,
    keys: &crate::Keys,
    server: &str,
    shard_count: u16,
) -> Result<std::collections::HashMap<String, String>, fred::error::Error> {
    let mut out = std::collections::HashMap::new();
    for t in crate::keys::PublishTarget::all(shard_count) {
        let part: std::collections::HashMap<String, String> =
            client.hgetall(keys.cdc_xa_branches(server, t)).await?;
        for (field, json) in part {
            out.entry(field).or_insert(json);
        }
    }
    Ok(out)
}

/// `XGROUP CREATE <stream> projector 0 MKSTREAM`: the projectors' consumer
/// group, created by whichever of the reader and the projector comes first
/// (the reader, so no entry is published before the group exists); an
/// existing group is fine.
pub async fn create_projector_group(
    client: &Client,
    stream: &str,
) -> Result<(), fred::error::Error> {
    match client
        .xgroup_create::<(), _, _, _>(stream, crate::keys::PROJECTOR_GROUP, "0", true)
        .await
    {
        Err(e) if e.details().contains("BUSYGROUP") => Ok(()),
        other => other,
    }
}

/// Keys asked of each SCAN call.
const SCAN_COUNT: u32 = 1000;

/// Every key matching a pattern, a page at a time. On one Redis that is one
/// SCAN; a SCAN on a cluster walks the keys of the node it reaches only, so
/// there it is one SCAN per master, each with its own cursor, one after
/// the other. (fred's `scan_cluster` walks every master at once through one
/// stream, each node's next page asked for when its last one is dropped;
/// explicit cursors keep one page in hand at a time, and a failed call is
/// an error of this call.) A master added or a slot moved during the scan
/// may hide keys or show them twice, as fred says of its own cluster scan.
pub struct KeyScan {
    pattern: String,
    /// The masters still to walk, the current one last; `None` is the one
    /// Redis.
    nodes: Vec<Option<fred::types::config::Server>>,
    cursor: String,
}

impl KeyScan {
    pub async fn new(client: &Client, pattern: &str) -> Result<KeyScan, fred::error::Error> {
        let nodes = if client.is_clustered() {
            if client.cached_cluster_state().is_none() {
                client.sync_cluster().await?;
            }
            let state = client.cached_cluster_state().ok_or_else(|| {
                fred::error::Error::new(
                    fred::error::ErrorKind::Cluster,
                    "the cluster's layout is not known",
                )
            })?;
            let mut masters = state.unique_primary_nodes();
            masters.reverse();
            masters.into_iter().map(Some).collect()
        } else {
            vec![None]
        };
        Ok(KeyScan {
            pattern: pattern.to_string(),
            nodes,
            cursor: "0".to_string(),
        })
    }

    /// The next page (possibly empty), or `None` when every node is done.
    pub async fn next_page(
        &mut self,
        client: &Client,
    ) -> Result<Option<Vec<String>>, fred::error::Error> {
        let Some(node) = self.nodes.last() else {
            return Ok(None);
        };
        let (cursor, pattern) = (self.cursor.clone(), self.pattern.clone());
        let (next, keys): (String, Vec<String>) = match node {
            None => {
                client
                    .scan_page(cursor, pattern, Some(SCAN_COUNT), None)
                    .await?
            }
            Some(server) => {
                client
                    .with_cluster_node(server.clone())
                    .scan_page(cursor, pattern, Some(SCAN_COUNT), None)
                    .await?
            }
        };
        if next == "0" {
            self.nodes.pop();
            self.cursor = "0".to_string();
        } else {
            self.cursor = next;
        }
        Ok(Some(keys))
    }
}

/// UNLINKs keys: one command on one Redis; on a cluster, where one command
/// may name keys of one slot only, one per slot, sent together.
pub async fn unlink_keys(client: &Client, keys: Vec<String>) -> Result<(), fred::error::Error> {
    if keys.is_empty() {
        return Ok(());
    }
    if !client.is_clustered() {
        return client.unlink::<(), _>(keys).await;
    }
    let mut by_slot: std::collections::BTreeMap<u16, Vec<String>> =
        std::collections::BTreeMap::new();
    for k in keys {
        by_slot
            .entry(fred::util::redis_keyslot(k.as_bytes()))
            .or_default()
            .push(k);
    }
    // One pipeline: fred sends each UNLINK to its slot's node.
    let pipeline = client.pipeline();
    for keys in by_slot.into_values() {
        let () = pipeline.unlink(keys).await?;
    }
    let _: Vec<Value> = pipeline.all().await?;
    Ok(())
}
