//! `rpsctl status`: where every server and shard stands, read-only.
//!
//! Per server: the reader's checkpoint, the binlog head and the lag between
//! them (bytes, and seconds since the newest commit the streams carry).
//! Per shard: stream length, the live generation's progress and how far
//! behind the stream it is. Then the
//! live deadlines (pending, overdue) and the dead-letter count. Per server
//! also the prepared XA branches the reader holds (its registry
//! `Keys::cdc_xa_branches`, one per target) and the age of the oldest: rows of a branch
//! nobody decides never reach the streams (`rpsctl xa`).

use crate::HistoryError;
use fred::clients::Client;
use fred::interfaces::{KeysInterface, StreamsInterface};
use read_model::ReadModelKeys;
use rps_core::redis_client::ClientPolicy;
use rps_core::stream::StreamId;
use rps_core::{Config, ShardId, StreamEvent, Timestamp};
use rps_event_store::EventStore;
use std::collections::HashMap;
use std::sync::Arc;

/// Entries counted one by one when measuring a shard's lag; beyond that the
/// lag is reported as "at least".
const LAG_COUNT_LIMIT: u64 = 100_000;

#[derive(Debug, Clone, serde::Serialize)]
pub struct ServerStatus {
    pub server: String,
    /// The checkpoint string as stored (the reader's format).
    pub checkpoint_raw: Option<String>,
    pub checkpoint_file: Option<String>,
    pub checkpoint_pos: Option<u64>,
    pub binlog_file: Option<String>,
    pub binlog_pos: Option<u64>,
    /// Binlog bytes between the checkpoint and the head.
    pub lag_bytes: Option<u64>,
    /// Seconds since the newest commit published to the server's shard
    /// streams, when there are unpublished bytes; 0 when caught up.
    pub lag_seconds: Option<f64>,
    /// Why a value is missing (server unreachable, no checkpoint yet).
    pub error: Option<String>,
    /// Prepared XA branches the reader holds, undecided as far as it has
    /// read the binlog (entries of its registry).
    pub xa_held: u64,
    /// Seconds since the oldest of them was prepared (binlog time; the
    /// reader's first sight of it when that is missing).
    pub xa_oldest_age_seconds: Option<f64>,
}

#[derive(Debug, Clone, serde::Serialize)]
pub struct ShardStatus {
    pub shard: ShardId,
    pub server: String,
    pub stream_length: u64,
    /// Last stream id applied to the live generation.
    pub progress: Option<String>,
    /// Entries in the stream after `progress` (capped at 100000).
    pub lag_entries: u64,
    /// Age of the oldest entry not yet applied.
    pub lag_seconds: f64,
}

#[derive(Debug, Clone, serde::Serialize)]
pub struct Status {
    pub generation: u64,
    pub servers: Vec<ServerStatus>,
    pub shards: Vec<ShardStatus>,
    pub deadlines_pending: u64,
    pub deadlines_overdue: u64,
    pub dead_letters: u64,
    pub at: String,
}

/// The binlog file and position a stored checkpoint names; `None` if it is
/// not one the reader wrote.
pub fn parse_checkpoint(raw: &str) -> Option<(String, u64)> {
    let ck = rps_core::checkpoint::Checkpoint::decode(raw).ok()?;
    Some((ck.file, ck.pos))
}

/// Collects the status of the deployment.
pub async fn collect(config: Arc<Config>) -> Result<Status, HistoryError> {
    let client = ClientPolicy::patient().connect(&config.redis).await?;
    let store = EventStore::new(config)?;
    let status = collect_with(&store, &client).await;
    store.disconnect().await;
    status
}

/// [`collect`] on a store and a Redis client the caller keeps (a view that
/// refreshes every few seconds, like `rpsctl top`, reuses their
/// connections).
pub async fn collect_with(store: &EventStore, client: &Client) -> Result<Status, HistoryError> {
    let config = store.config();
    let keys = config.keys();
    let generation = crate::redis_io::active_generation(client, &keys).await?;
    let g = keys.generation_keys(generation);
    let progress = crate::redis_io::progress(client, &g, config.shard_count).await?;
    let now = Timestamp::now();

    let mut shards = Vec::new();
    let mut newest_commit: HashMap<String, i64> = HashMap::new();
    for shard in 0..config.shard_count {
        let server = config.server_of(shard).name.clone();
        let stream = keys.events(shard);
        let stream_length: u64 = client.xlen(stream.as_str()).await?;
        let p = progress.get(&shard.to_string()).cloned();
        let start = p.as_ref().map_or("-".to_string(), |l| format!("({l}"));
        let after: Vec<(String, HashMap<String, String>)> = if stream_length > 0 {
            client
                .xrange_values(stream.as_str(), start.as_str(), "+", Some(1))
                .await?
        } else {
            Vec::new()
        };
        let lag_seconds = after
            .first()
            .and_then(|(id, _)| StreamId::parse(id))
            .map(|id| ((now.as_millis() - id.ms as i64).max(0)) as f64 / 1000.0)
            .unwrap_or(0.0);
        let lag_entries = if after.is_empty() {
            0
        } else {
            count_after(client, &stream, &start).await?
        };
        let last: Vec<(String, HashMap<String, String>)> = if stream_length > 0 {
            client
                .xrevrange_values(stream.as_str(), "+", "-", Some(1))
                .await?
        } else {
            Vec::new()
        };
        if let Some(e) = last.first().and_then(|(_, f)| {
            StreamEvent::decode(f.iter().map(|(k, v)| (k.as_bytes(), v.as_bytes()))).ok()
        }) {
            let n = newest_commit.entry(server.clone()).or_insert(i64::MIN);
            *n = (*n).max(e.source.commit_ts.as_micros());
        }
        shards.push(ShardStatus {
            shard,
            server,
            stream_length,
            progress: p,
            lag_entries,
            lag_seconds,
        });
    }

    let mut servers = Vec::new();
    for (index, s) in config.servers.iter().enumerate() {
        let raw: Option<String> = client.get(keys.cdc_checkpoint(&s.name)).await?;
        let parsed = raw.as_deref().and_then(parse_checkpoint);
        let mut st = ServerStatus {
            server: s.name.clone(),
            checkpoint_raw: raw,
            checkpoint_file: parsed.as_ref().map(|p| p.0.clone()),
            checkpoint_pos: parsed.as_ref().map(|p| p.1),
            binlog_file: None,
            binlog_pos: None,
            lag_bytes: None,
            lag_seconds: None,
            error: None,
            xa_held: 0,
            xa_oldest_age_seconds: None,
        };
        let branches =
            rps_core::redis_client::xa_registry(client, &keys, &s.name, config.shard_count).await?;
        st.xa_held = branches.len() as u64;
        st.xa_oldest_age_seconds = oldest_branch_age(branches.values(), now);
        match store.binlog_state(index).await {
            Ok(state) if !state.is_logging() => st.error = Some("binary logging is off".into()),
            Ok(state) => {
                st.binlog_file = Some(state.head.file.clone());
                st.binlog_pos = Some(state.head.pos);
                if let Some((cf, cp)) = &parsed {
                    let bytes = state.bytes_behind(cf, *cp);
                    st.lag_bytes = bytes;
                    st.lag_seconds = bytes.map(|b| {
                        if b == 0 {
                            0.0
                        } else {
                            newest_commit
                                .get(&s.name)
                                .map(|c| ((now.as_micros() - c).max(0)) as f64 / 1e6)
                                .unwrap_or(0.0)
                        }
                    });
                } else if st.checkpoint_raw.is_none() {
                    st.error = Some(
                        "no checkpoint yet (the cdc-reader has not started on this server)".into(),
                    );
                } else {
                    st.error = Some("checkpoint not in a known format; shown raw".into());
                }
            }
            // The row's note, not a reason to stop: the rest still shows.
            Err(e) => st.error = Some(e.to_string()),
        }
        servers.push(st);
    }

    let d =
        read_model::read::deadline_counts(client, &g, config.shard_count, now.as_millis()).await?;
    let (deadlines_pending, deadlines_overdue) = (d.pending, d.overdue);
    let dead_letters: u64 = client.xlen(keys.deadletter()).await?;
    Ok(Status {
        generation,
        servers,
        shards,
        deadlines_pending,
        deadlines_overdue,
        dead_letters,
        at: now.to_string(),
    })
}

/// Age in seconds of the oldest registry entry (JSON `HeldBranch`es);
/// entries that do not parse or carry no time count in `xa_held` only.
fn oldest_branch_age<'a>(entries: impl Iterator<Item = &'a String>, now: Timestamp) -> Option<f64> {
    entries
        .filter_map(|v| rps_core::xa::HeldBranch::from_json(v).ok())
        .filter_map(|h| [h.prepared_ts, h.seen_ts].into_iter().find(|t| *t > 0))
        .min()
        .map(|since| (now.as_micros() - since).max(0) as f64 / 1e6)
}

async fn count_after(client: &Client, stream: &str, start: &str) -> Result<u64, HistoryError> {
    let mut n = 0u64;
    let mut start = start.to_string();
    while n < LAG_COUNT_LIMIT {
        let page: Vec<(String, HashMap<String, String>)> = client
            .xrange_values(stream, start.as_str(), "+", Some(10_000))
            .await?;
        let Some((last, _)) = page.last() else { break };
        n += page.len() as u64;
        start = format!("({last}");
        if page.len() < 10_000 {
            break;
        }
    }
    Ok(n)
}

impl Status {
    /// The human-readable table.
    pub fn render(&self) -> String {
        use std::fmt::Write;
        let mut s = String::new();
        let o = |v: Option<String>| v.unwrap_or_else(|| "-".into());
        let _ = writeln!(s, "generation {}   at {}", self.generation, self.at);
        let _ = writeln!(
            s,
            "\n{:<12} {:<28} {:<28} {:>12} {:>9} {:>7} {:>9}  note",
            "server", "checkpoint", "binlog head", "lag bytes", "lag s", "xa held", "xa oldest"
        );
        for v in &self.servers {
            let ck = match (&v.checkpoint_file, v.checkpoint_pos) {
                (Some(f), Some(p)) => format!("{f}:{p}"),
                _ => o(v.checkpoint_raw.clone()),
            };
            let head = match (&v.binlog_file, v.binlog_pos) {
                (Some(f), Some(p)) => format!("{f}:{p}"),
                _ => "-".into(),
            };
            let _ = writeln!(
                s,
                "{:<12} {:<28} {:<28} {:>12} {:>9} {:>7} {:>9}  {}",
                v.server,
                ck,
                head,
                o(v.lag_bytes.map(|b| b.to_string())),
                o(v.lag_seconds.map(|b| format!("{b:.1}"))),
                v.xa_held,
                o(v.xa_oldest_age_seconds.map(|a| format!("{a:.0}s"))),
                v.error.clone().unwrap_or_default()
            );
        }
        let _ = writeln!(
            s,
            "\n{:>5} {:<12} {:>10} {:<22} {:>10} {:>9}",
            "shard", "server", "stream", "progress", "lag", "lag s"
        );
        for v in &self.shards {
            let _ = writeln!(
                s,
                "{:>5} {:<12} {:>10} {:<22} {:>10} {:>9.1}",
                v.shard,
                v.server,
                v.stream_length,
                o(v.progress.clone()),
                v.lag_entries,
                v.lag_seconds
            );
        }
        let _ = writeln!(
            s,
            "\ndeadlines: {} pending, {} overdue   dead letters: {}",
            self.deadlines_pending, self.deadlines_overdue, self.dead_letters
        );
        s
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn checkpoints_are_read_as_the_reader_writes_them() {
        let ck = rps_core::checkpoint::Checkpoint {
            gtid: "0-1-5".parse().unwrap(),
            file: "binlog.000003".into(),
            pos: 1234,
            ..Default::default()
        };
        assert_eq!(
            parse_checkpoint(&ck.encode("w", 1)),
            Some(("binlog.000003".into(), 1234))
        );
        assert_eq!(parse_checkpoint(r#"{"file":"b.1","pos":77}"#), None);
        assert_eq!(parse_checkpoint("not json"), None);
    }

    #[test]
    fn oldest_branch_age_skips_unreadable_entries() {
        let now = Timestamp(100_000_000);
        let entry = |prepared_ts, seen_ts| {
            rps_core::xa::HeldBranch {
                prepared_ts,
                seen_ts,
                ..Default::default()
            }
            .to_json()
        };
        let entries = [
            entry(90_000_000, 91_000_000),
            entry(0, 40_000_000),
            "not json".to_string(),
        ];
        assert_eq!(oldest_branch_age(entries.iter(), now), Some(60.0));
        assert_eq!(oldest_branch_age(entries[2..].iter(), now), None);
    }
}
