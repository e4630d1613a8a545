//! Helpers shared by the reader's integration tests: event generation,
//! inserts through the event store, and reading the shard streams back.
#![allow(dead_code)]

pub mod streams;

use fred::prelude::*;
use fred::types::Value;
use rps_core::event::MatchEvent;
use rps_core::{Config, ShardId, StreamEvent};
use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;
use test_support::TestEnv;
use tokio_util::sync::CancellationToken;

#[allow(unused_imports)]
pub use test_support::started_events;

/// Inserts events in multi-row INSERTs of `chunk` rows (one transaction each).
pub async fn insert(
    env: &TestEnv,
    shard: ShardId,
    table: &str,
    events: &[MatchEvent],
    chunk: usize,
) {
    for c in events.chunks(chunk) {
        let appended = env.store.append_all(shard, table, c).await.expect("insert");
        assert_eq!(appended, rps_event_store::BatchAppend::Inserted, "insert");
    }
}

/// Starts the whole reader in this process.
pub fn spawn_reader(
    config: Arc<Config>,
) -> (
    CancellationToken,
    tokio::task::JoinHandle<Result<(), cdc_reader::CdcError>>,
) {
    let token = CancellationToken::new();
    let t = token.clone();
    (
        token,
        tokio::spawn(async move { cdc_reader::run(config, t).await }),
    )
}

/// Every entry of a stream, decoded, in stream order.
pub async fn read_stream(redis: &Client, key: &str) -> Vec<(String, StreamEvent)> {
    let mut out = Vec::new();
    let mut start = "-".to_string();
    loop {
        let page: Vec<(String, HashMap<String, String>)> = redis
            .xrange(key, start.as_str(), "+", Some(10_000))
            .await
            .expect("xrange");
        let n = page.len();
        for (id, fields) in page {
            let ev = StreamEvent::decode(fields.iter().map(|(k, v)| (k.as_bytes(), v.as_bytes())))
                .expect("stream entry decodes");
            start = format!("({id}");
            out.push((id, ev));
        }
        if n < 10_000 {
            break;
        }
    }
    out
}

pub async fn stream_len(redis: &Client, key: &str) -> u64 {
    redis.xlen(key).await.unwrap_or(0)
}

/// Dead letters, as field maps.
pub async fn dead_letters(redis: &Client, key: &str) -> Vec<HashMap<String, String>> {
    let page: Vec<(String, HashMap<String, String>)> =
        redis.xrange(key, "-", "+", None).await.unwrap_or_default();
    page.into_iter().map(|(_, f)| f).collect()
}

/// Waits until the shard streams hold `expected` entries in total.
pub async fn wait_total(redis: &Client, config: &Config, expected: u64, timeout: Duration) {
    let keys = config.keys();
    test_support::eventually(
        &format!("{expected} entries in the shard streams"),
        timeout,
        || async {
            let mut total = 0;
            for s in 0..config.shard_count {
                total += stream_len(redis, &keys.events(s)).await;
            }
            (total >= expected).then_some(())
        },
    )
    .await;
}

/// Per-shard count and event-id checksum of what was inserted.
pub fn summary_of(events: &HashMap<ShardId, Vec<MatchEvent>>) -> HashMap<ShardId, (u64, u128)> {
    events
        .iter()
        .map(|(s, evs)| (*s, test_support::count_and_checksum(evs)))
        .collect()
}

/// Per-shard count, id checksum, and the number of distinct event ids in the
/// streams (equal to the count when nothing is duplicated).
pub async fn summary_of_streams(
    redis: &Client,
    config: &Config,
) -> HashMap<ShardId, (u64, u128, usize)> {
    let keys = config.keys();
    let mut out = HashMap::new();
    for s in 0..config.shard_count {
        let entries = read_stream(redis, &keys.events(s)).await;
        let mut ids = std::collections::HashSet::new();
        let mut sum = 0u128;
        for (_, e) in &entries {
            assert_eq!(e.shard, s, "entry in the wrong shard stream");
            sum = sum.wrapping_add(e.event.event_id.as_u128());
            ids.insert(e.event.event_id);
        }
        if !entries.is_empty() {
            out.insert(s, (entries.len() as u64, sum, ids.len()));
        }
    }
    out
}

/// Asserts the streams hold exactly the inserted events, once each.
pub async fn assert_exactly_once(
    redis: &Client,
    config: &Config,
    inserted: &HashMap<ShardId, Vec<MatchEvent>>,
) {
    let want = summary_of(inserted);
    let got = summary_of_streams(redis, config).await;
    for (s, (n, sum)) in &want {
        let (gn, gsum, distinct) = got.get(s).copied().unwrap_or((0, 0, 0));
        assert_eq!(gn, *n, "shard {s}: entry count");
        assert_eq!(distinct as u64, *n, "shard {s}: duplicated event ids");
        assert_eq!(gsum, *sum, "shard {s}: event-id checksum");
    }
    assert_eq!(
        got.len(),
        want.len(),
        "entries in shards nothing was inserted into"
    );
}

/// The raw checkpoint JSON of a server.
pub async fn checkpoint(redis: &Client, config: &Config, server: &str) -> Option<String> {
    let v: Option<String> = redis.get(config.keys().cdc_checkpoint(server)).await.ok()?;
    v
}

pub fn _unused(_: Value) {}

/// Inserts with retries across a server restart; a duplicate key on retry
/// means the chunk was committed before the connection broke.
pub async fn insert_retrying(
    env: &TestEnv,
    shard: ShardId,
    table: &str,
    events: &[MatchEvent],
    chunk: usize,
) {
    for c in events.chunks(chunk) {
        let mut attempt = 0;
        loop {
            attempt += 1;
            let r = env
                .store
                .append_all(shard, table, c)
                .await
                .map_err(|e| e.to_string());
            match r {
                // A duplicate key: an earlier attempt committed after all.
                Ok(_) => break,
                Err(e) if e.contains("Duplicate entry") => break,
                Err(e) if attempt < 60 => {
                    tracing::info!(error = %e, "insert failed; retrying");
                    tokio::time::sleep(Duration::from_millis(500)).await;
                }
                Err(e) => panic!("insert kept failing: {e}"),
            }
        }
    }
}

/// A copy of the test's config with a different batch size.
pub fn with_batch_rows(config: &Config, rows: usize) -> Arc<Config> {
    let mut c = config.clone();
    c.cdc.batch_rows = rows;
    Arc::new(c)
}

/// Waits until every server has stored a checkpoint.
pub async fn wait_checkpoints(redis: &Client, config: &Arc<Config>) {
    for s in &config.servers {
        let name = s.name.clone();
        test_support::eventually("initial checkpoint", Duration::from_secs(30), || {
            let (redis, c, name) = (redis.clone(), config.clone(), name.clone());
            async move { checkpoint(&redis, &c, &name).await }
        })
        .await;
    }
}
