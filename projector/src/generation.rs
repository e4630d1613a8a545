//! The active read-model generation: which `{prefix}:g<n>:…` keys the
//! projector writes and the API reads.
//!
//! `keys.generation()` holds the number; replay switches it atomically after
//! building the next generation. The one decision taken here is what a
//! missing marker means: a pipeline that never ran starts generation 1; a
//! pipeline that has run and lost the marker must not silently start over.

use crate::redis_util::value_text;
use fred::clients::Client;
use fred::interfaces::KeysInterface;
use fred::types::{Expiration, SetOptions, Value};
use rps_core::Keys;

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
    use fred::interfaces::KeysInterface as _;
    let pattern = keys.all_progress_pattern();
    let mut cursor = "0".to_string();
    loop {
        let (next, found): (String, Vec<String>) = client
            .scan_page(cursor, pattern.clone(), Some(1000), None)
            .await?;
        if let Some(k) = found.into_iter().next() {
            return Ok(Some(k));
        }
        if next == "0" {
            return Ok(None);
        }
        cursor = next;
    }
}
