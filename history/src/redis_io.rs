//! Reading and writing read-model generations in Redis.
//!
//! Writes are units of commands (one key's DEL and rewrite stay in order);
//! many units are in flight at once and fred pipelines them on its
//! connection, so a whole generation goes out at Redis' own pace without one
//! round trip per key.

use crate::model::{player_hash, player_key, Model, PlayerKey};
use crate::HistoryError;
use fred::clients::Client;
use fred::interfaces::{
    HashesInterface, KeysInterface, LuaInterface, SetsInterface, SortedSetsInterface,
};
use futures::{stream, StreamExt, TryStreamExt};
use rps_core::keys::{board_member, GenerationKeys};
use rps_core::{Keys, SeasonId};
use std::collections::{BTreeSet, HashMap};

/// How many units of writes or reads are in flight at once.
pub const IN_FLIGHT: usize = 256;
/// Members per ZADD / SADD / ZREM, so no single command gets huge.
const MEMBERS_PER_COMMAND: usize = 1000;

/// One Redis write.
#[derive(Debug, Clone)]
pub enum Cmd {
    Del(String),
    Set(String, String),
    Hset(String, Vec<(String, String)>),
    Zadd(String, Vec<(f64, String)>),
    Zrem(String, Vec<String>),
    Sadd(String, Vec<String>),
}

/// Units per pipeline: one round trip carries this many keys' writes.
const UNITS_PER_PIPELINE: usize = 512;
/// Pipelines in flight at once.
const PIPELINES_IN_FLIGHT: usize = 8;

/// Queues one unit's commands, in order, on a pipeline.
async fn queue_unit(
    p: &fred::clients::Pipeline<Client>,
    unit: Vec<Cmd>,
) -> Result<usize, HistoryError> {
    let mut n = 0;
    for cmd in unit {
        n += 1;
        match cmd {
            Cmd::Del(k) => p.del::<(), _>(k).await?,
            Cmd::Set(k, v) => p.set::<(), _, _>(k, v, None, None, false).await?,
            Cmd::Hset(k, v) => {
                if !v.is_empty() {
                    p.hset::<(), _, _>(k, v).await?
                }
            }
            Cmd::Zadd(k, v) => {
                for chunk in v.chunks(MEMBERS_PER_COMMAND) {
                    p.zadd::<(), _, _>(k.as_str(), None, None, false, false, chunk.to_vec())
                        .await?
                }
            }
            Cmd::Zrem(k, v) => {
                for chunk in v.chunks(MEMBERS_PER_COMMAND) {
                    p.zrem::<(), _, _>(k.as_str(), chunk.to_vec()).await?
                }
            }
            Cmd::Sadd(k, v) => {
                for chunk in v.chunks(MEMBERS_PER_COMMAND) {
                    p.sadd::<(), _, _>(k.as_str(), chunk.to_vec()).await?
                }
            }
        }
    }
    Ok(n)
}

/// Sends a batch of units as one pipeline; commands of a unit stay in order.
async fn run_batch(client: &Client, units: Vec<Vec<Cmd>>) -> Result<usize, HistoryError> {
    let p = client.pipeline();
    let mut n = 0;
    for unit in units {
        n += queue_unit(&p, unit).await?;
    }
    // Every reply is checked: one failed command fails the batch.
    let replies: Vec<Result<fred::types::Value, fred::error::Error>> = p.try_all().await;
    for r in replies {
        r?;
    }
    Ok(n)
}

/// Runs units as pipelines of [`UNITS_PER_PIPELINE`], several in flight;
/// returns commands run.
pub async fn run_units<I>(client: &Client, units: I) -> Result<u64, HistoryError>
where
    I: IntoIterator<Item = Vec<Cmd>>,
{
    let mut it = units.into_iter().peekable();
    let batches = std::iter::from_fn(move || {
        it.peek()?;
        Some(it.by_ref().take(UNITS_PER_PIPELINE).collect::<Vec<_>>())
    });
    stream::iter(batches)
        .map(|b| run_batch(client, b))
        .buffer_unordered(PIPELINES_IN_FLIGHT)
        .try_fold(0u64, |acc, n| async move { Ok(acc + n as u64) })
        .await
}

fn zadd_scores(v: &[(String, i64)]) -> Vec<(f64, String)> {
    v.iter().map(|(m, s)| (*s as f64, m.clone())).collect()
}

/// Writes a whole model into generation `g` (assumed empty): every key once.
pub async fn write_model(
    client: &Client,
    g: &GenerationKeys,
    model: &Model,
) -> Result<u64, HistoryError> {
    let matches = model
        .matches
        .iter()
        .map(|(id, c)| vec![Cmd::Set(g.match_state(*id), c.state(*id).to_value())]);
    let players = model
        .counted_players()
        .map(|(k, s)| vec![Cmd::Hset(player_key(g, k), player_hash(s))]);
    let boards: Vec<Vec<Cmd>> = model
        .boards()
        .into_iter()
        .map(|(season, members)| vec![Cmd::Zadd(g.board(season), zadd_scores(&members))])
        .collect();
    let seasons: Vec<String> = model.seasons().iter().map(|s| s.to_string()).collect();
    let mut rest = boards;
    if !seasons.is_empty() {
        rest.push(vec![Cmd::Sadd(g.seasons(), seasons)]);
    }
    let deadlines = model.deadlines();
    if !deadlines.is_empty() {
        rest.push(vec![Cmd::Zadd(g.deadlines(), zadd_scores(&deadlines))]);
    }
    let n = run_units(client, matches.chain(players).chain(rest)).await?;
    metrics::counter!(crate::metrics::REPLAY_KEYS_WRITTEN_TOTAL).increment(n);
    Ok(n)
}

/// Rewrites what `dirty` keys of the model must now hold (catch-up writes):
/// match hashes and deadlines, player hashes and board entries.
pub fn dirty_units(
    g: &GenerationKeys,
    model: &Model,
    matches: impl IntoIterator<Item = i64>,
    players: impl IntoIterator<Item = PlayerKey>,
) -> Vec<Vec<Cmd>> {
    let mut units = Vec::new();
    let mut seasons = BTreeSet::new();
    for id in matches {
        let Some(m) = model.match_state(id) else {
            continue;
        };
        let mut unit = vec![Cmd::Set(g.match_state(id), m.to_value())];
        let member =
            rps_core::keys::deadline_member(rps_core::shard_of(m.player_a, model.shard_count), id);
        match model.deadline_of(&m) {
            Some((member, ms)) => unit.push(Cmd::Zadd(g.deadlines(), vec![(ms as f64, member)])),
            None => unit.push(Cmd::Zrem(g.deadlines(), vec![member])),
        }
        units.push(unit);
    }
    for key in players {
        let stats = model.players.get(&key).copied().unwrap_or_default();
        let pk = player_key(g, &key);
        let board = g.board(key.1);
        if let Some(s) = key.1 {
            seasons.insert(s);
        }
        if stats.matches > 0 {
            units.push(vec![
                Cmd::Hset(pk, player_hash(&stats)),
                Cmd::Zadd(
                    board,
                    vec![(stats.board_score() as f64, board_member(key.0))],
                ),
            ]);
        } else {
            units.push(vec![
                Cmd::Del(pk),
                Cmd::Zrem(board, vec![board_member(key.0)]),
            ]);
        }
    }
    if !seasons.is_empty() {
        units.push(vec![Cmd::Sadd(
            g.seasons(),
            seasons.iter().map(SeasonId::to_string).collect(),
        )]);
    }
    units
}

/// The active generation (`0` if none was ever set).
pub async fn active_generation(client: &Client, keys: &Keys) -> Result<u64, HistoryError> {
    let v: Option<String> = client.get(keys.generation()).await?;
    match v {
        None => Ok(0),
        Some(s) => s.trim().parse().map_err(|_| {
            HistoryError::Definite(format!(
                "`{}` holds {s:?}, not a generation number; fix it by hand before running this",
                keys.generation()
            ))
        }),
    }
}

/// The `progress` hash of a generation: shard → last stream id applied.
pub async fn progress(
    client: &Client,
    g: &GenerationKeys,
) -> Result<HashMap<String, String>, HistoryError> {
    Ok(client.hgetall(g.progress()).await?)
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
) -> Result<Switch, HistoryError> {
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
pub async fn drop_generation(client: &Client, g: &GenerationKeys) -> Result<u64, HistoryError> {
    let pattern = format!("{}:*", g.base());
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
pub async fn generation_exists(client: &Client, g: &GenerationKeys) -> Result<bool, HistoryError> {
    let pattern = format!("{}:*", g.base());
    let mut cursor = "0".to_string();
    loop {
        let (next, keys): (String, Vec<String>) = client
            .scan_page(cursor, pattern.clone(), Some(1000), None)
            .await?;
        if !keys.is_empty() {
            return Ok(true);
        }
        if next == "0" {
            return Ok(false);
        }
        cursor = next;
    }
}
