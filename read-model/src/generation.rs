//! The active read-model generation: which `{prefix}:g<n>:…` keys the
//! projector writes and the API reads.
//!
//! `keys.generation()` holds the number; replay switches it after building
//! the next generation, in steps of one hash slot each ([`switch`]). The one
//! decision taken here is what a missing marker means: a pipeline that
//! never ran starts generation 1; a pipeline that has run and lost the
//! marker must not silently start over.

pub mod switch;

use crate::keys::GenerationKeys;
use crate::redis_util::value_text;
use fred::clients::Client;
use fred::interfaces::{HashesInterface, KeysInterface};
use fred::types::{Expiration, SetOptions, Value};
use rps_core::redis_client::{unlink_keys, KeyScan};
use rps_core::Keys;
use std::collections::HashMap;

#[derive(Debug, thiserror::Error)]
pub enum GenerationError {
    #[error("redis: {0}")]
    Redis(#[from] fred::error::Error),
    #[error("`{key}` holds {value:?}, not a generation number; fix or delete it, then run `rpsctl replay`")]
    Malformed { key: String, value: String },
    #[error("`{key}` is missing but read models exist ({example}); Redis lost state. Run `rpsctl replay` to rebuild and switch")]
    Lost { key: String, example: String },
}

impl GenerationError {
    pub fn is_transient(&self) -> bool {
        matches!(self, GenerationError::Redis(_))
    }
}

/// The active generation, if the marker is set.
pub async fn active(client: &Client, keys: &Keys) -> Result<Option<u64>, GenerationError> {
    let v: Value = client.get(keys.generation()).await?;
    match value_text(&v) {
        None => Ok(None),
        Some(s) => s.parse().map(Some).map_err(|_| GenerationError::Malformed {
            key: keys.generation(),
            value: s,
        }),
    }
}

/// The active generation; initialises it to 1 when the pipeline has never
/// run (no generation's progress exists), refuses when state was lost.
pub async fn ensure(client: &Client, keys: &Keys) -> Result<u64, GenerationError> {
    if let Some(g) = active(client, keys).await? {
        return Ok(g);
    }
    if let Some(example) = any_progress_key(client, keys).await? {
        return Err(GenerationError::Lost {
            key: keys.generation(),
            example,
        });
    }
    let _: Value = client
        .set(
            keys.generation(),
            "1",
            None::<Expiration>,
            Some(SetOptions::NX),
            false,
        )
        .await?;
    // Another process may have won the SET NX (or replay set something else).
    match active(client, keys).await? {
        Some(g) => Ok(g),
        None => Ok(1),
    }
}

async fn any_progress_key(client: &Client, keys: &Keys) -> Result<Option<String>, GenerationError> {
    Ok(first_key(client, &keys.all_progress_pattern()).await?)
}

/// Some key matching `pattern`, if any (SCAN until the first hit).
async fn first_key(client: &Client, pattern: &str) -> Result<Option<String>, fred::error::Error> {
    let mut scan = KeyScan::new(client, pattern).await?;
    while let Some(page) = scan.next_page(client).await? {
        if let Some(k) = page.into_iter().next() {
            return Ok(Some(k));
        }
    }
    Ok(None)
}

/// What a generation has applied, every shard's progress in one map:
/// `<shard>` → last stream id applied, with the bookkeeping beside it as
/// `<shard>:q`, `<shard>:at`, `<shard>:applied_at`. Shards with nothing
/// applied are absent.
pub async fn progress_hash(
    client: &Client,
    g: &GenerationKeys,
    shard_count: u16,
) -> Result<HashMap<String, String>, fred::error::Error> {
    let calls =
        (0..shard_count).map(|s| client.hgetall::<HashMap<String, String>, _>(g.progress(s)));
    let mut out = HashMap::new();
    for (shard, fields) in (0..shard_count).zip(futures::future::join_all(calls).await) {
        for (field, value) in fields? {
            let name = if field == "id" {
                shard.to_string()
            } else {
                format!("{shard}:{field}")
            };
            out.insert(name, value);
        }
    }
    Ok(out)
}

/// Whether any shard has progress in the generation: a generation that
/// applied something, or that a bootstrap committed, has.
pub async fn has_progress(
    client: &Client,
    g: &GenerationKeys,
    shard_count: u16,
) -> Result<bool, fred::error::Error> {
    let calls = (0..shard_count).map(|s| client.exists::<bool, _>(g.progress(s)));
    let mut any = false;
    for r in futures::future::join_all(calls).await {
        any |= r?;
    }
    Ok(any)
}

/// Deletes every key of a generation (SCAN + UNLINK: Redis frees the memory
/// in the background). Returns the number of keys unlinked.
pub async fn drop_generation(
    client: &Client,
    g: &GenerationKeys,
) -> Result<u64, fred::error::Error> {
    let mut scan = KeyScan::new(client, &g.pattern()).await?;
    let mut n = 0u64;
    while let Some(keys) = scan.next_page(client).await? {
        n += keys.len() as u64;
        unlink_keys(client, keys).await?;
    }
    Ok(n)
}

/// Whether any key of a generation exists (so a new one never lands on leftovers).
pub async fn generation_exists(
    client: &Client,
    g: &GenerationKeys,
) -> Result<bool, fred::error::Error> {
    Ok(first_key(client, &g.pattern()).await?.is_some())
}
