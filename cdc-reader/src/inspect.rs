//! Read-only views of what the reader wrote: per-shard stream summaries and
//! the checkpoints, for `rpsctl status`, tests and benchmarks.

use crate::checkpoint::Checkpoint;
use fred::prelude::*;
use rps_core::{Config, ShardId, StreamEvent};
use std::collections::{HashMap, HashSet};

/// What one shard stream holds.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct StreamSummary {
    pub entries: u64,
    /// Distinct `event_id`s: equal to `entries` when nothing is duplicated.
    pub distinct_events: u64,
    /// Wrapping sum of the event ids as 128-bit integers (order-free checksum).
    pub id_checksum: u128,
    /// Entries that do not decode as events.
    pub undecodable: u64,
}

/// Reads a shard stream whole and summarises it.
pub async fn stream_summary(
    client: &Client,
    key: &str,
) -> Result<StreamSummary, fred::error::Error> {
    let mut s = StreamSummary::default();
    let mut ids = HashSet::new();
    let mut start = "-".to_string();
    const PAGE: u64 = 10_000;
    loop {
        let page: Vec<(String, HashMap<String, String>)> =
            client.xrange(key, start.as_str(), "+", Some(PAGE)).await?;
        let n = page.len() as u64;
        for (id, fields) in page {
            s.entries += 1;
            match StreamEvent::decode(fields.iter().map(|(k, v)| (k.as_bytes(), v.as_bytes()))) {
                Ok(e) => {
                    s.id_checksum = s.id_checksum.wrapping_add(e.event.event_id.as_u128());
                    ids.insert(e.event.event_id);
                }
                Err(_) => s.undecodable += 1,
            }
            start = format!("({id}");
        }
        if n < PAGE {
            break;
        }
    }
    s.distinct_events = ids.len() as u64;
    Ok(s)
}

/// Summaries of every shard stream of the config.
pub async fn all_streams(
    client: &Client,
    config: &Config,
) -> Result<HashMap<ShardId, StreamSummary>, fred::error::Error> {
    let keys = config.keys();
    let mut out = HashMap::new();
    for shard in 0..config.shard_count {
        out.insert(shard, stream_summary(client, &keys.events(shard)).await?);
    }
    Ok(out)
}

/// Total entries in every shard stream (XLEN).
pub async fn total_entries(client: &Client, config: &Config) -> Result<u64, fred::error::Error> {
    let keys = config.keys();
    let mut total = 0;
    for shard in 0..config.shard_count {
        let n: u64 = client.xlen(keys.events(shard)).await?;
        total += n;
    }
    Ok(total)
}

/// A server's stored checkpoint (`Err` text if it does not parse); `None`
/// before the first, and while a bootstrap's commit fences the key.
pub async fn checkpoint(
    client: &Client,
    config: &Config,
    server: &str,
) -> Result<Option<Result<Checkpoint, String>>, fred::error::Error> {
    let v: Option<String> = client.get(config.keys().cdc_checkpoint(server)).await?;
    Ok(v.filter(|s| !rps_core::checkpoint::is_bootstrap_fence(s))
        .map(|s| Checkpoint::decode(&s).map_err(|e| e.0)))
}

/// Connects a client for these views.
pub async fn connect(config: &Config) -> Result<Client, crate::error::SessionError> {
    crate::publish::connect_redis(&config.redis, "inspect").await
}
