//! The active read-model generation: which `{prefix}:g<n>:…` keys the
//! projector writes and the API reads.
//!
//! `keys.generation()` holds the number; replay switches it atomically after
//! building the next generation. The one decision taken here is what a
//! missing marker means: a pipeline that never ran starts generation 1; a
//! pipeline that has run and lost the marker must not silently start over.

use crate::keys::GenerationKeys;
use crate::redis_util::value_text;
use fred::clients::Client;
use fred::interfaces::{HashesInterface, KeysInterface, LuaInterface};
use fred::types::{Expiration, SetOptions, Value};
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
    let mut cursor = "0".to_string();
    loop {
        let (next, found): (String, Vec<String>) = client
            .scan_page(cursor, pattern.to_string(), Some(1000), None)
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

/// The `progress` hash of a generation: shard → last stream id applied.
pub async fn progress_hash(
    client: &Client,
    g: &GenerationKeys,
) -> Result<HashMap<String, String>, fred::error::Error> {
    client.hgetall(g.progress()).await
}

/// Switches the active generation from `old` to `new` only if both have
/// applied exactly the same stream entries (equal shard fields of their
/// `progress` hashes).
/// Returns 1 when switched, 0 when progress differs, -1 when the active
/// generation is no longer `old`.
const SWITCH_SCRIPT: &str = r#"
local cur = redis.call('GET', KEYS[1]) or '0'
if cur ~= ARGV[1] then return -1 end
-- Only the shard fields (a bare number) say what was applied; the
-- projector keeps bookkeeping beside them (`<shard>:at`, ...).
local function shards(h)
  local m, n = {}, 0
  for i = 1, #h, 2 do
    if string.find(h[i], '^%d+$') then
      m[h[i]] = h[i + 1]
      n = n + 1
    end
  end
  return m, n
end
local a, na = shards(redis.call('HGETALL', KEYS[2]))
local b, nb = shards(redis.call('HGETALL', KEYS[3]))
if na ~= nb then return 0 end
for k, v in pairs(b) do
  if a[k] ~= v then return 0 end
end
redis.call('SET', KEYS[1], ARGV[2])
return 1
"#;

/// Outcome of a switch attempt.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Switch {
    Done,
    ProgressDiffers,
    GenerationMoved,
}

pub async fn try_switch(
    client: &Client,
    keys: &Keys,
    old: &GenerationKeys,
    new: &GenerationKeys,
) -> Result<Switch, fred::error::Error> {
    let r: i64 = client
        .eval(
            SWITCH_SCRIPT,
            vec![keys.generation(), old.progress(), new.progress()],
            vec![old.generation.to_string(), new.generation.to_string()],
        )
        .await?;
    Ok(match r {
        1 => Switch::Done,
        0 => Switch::ProgressDiffers,
        _ => Switch::GenerationMoved,
    })
}

/// Deletes every key of a generation (SCAN + UNLINK: Redis frees the memory
/// in the background). Returns the number of keys unlinked.
pub async fn drop_generation(
    client: &Client,
    g: &GenerationKeys,
) -> Result<u64, fred::error::Error> {
    let pattern = g.pattern();
    let mut cursor = "0".to_string();
    let mut n = 0u64;
    loop {
        let (next, keys): (String, Vec<String>) = client
            .scan_page(cursor, pattern.clone(), Some(1000), None)
            .await?;
        if !keys.is_empty() {
            n += keys.len() as u64;
            client.unlink::<(), _>(keys).await?;
        }
        if next == "0" {
            break;
        }
        cursor = next;
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
