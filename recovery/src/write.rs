//! Writing a fold into a fresh generation, in bounded chunks.
//!
//! The same keys and values as `history::redis_io::write_model` (built from
//! history's own hash and key helpers), but the commands are materialised a
//! chunk at a time: memory stays bounded for a large history, and the future
//! stays `Send` so the supervisor can run on a spawned task.

use crate::RecoveryError;
use fred::clients::Client;
use history::model::{match_hash, player_hash, player_key, Model};
use history::redis_io::{run_units, Cmd};
use rps_core::keys::GenerationKeys;

/// Units (one key's commands) materialised at once.
const CHUNK_UNITS: usize = 20_000;

fn scores(v: &[(String, i64)]) -> Vec<(f64, String)> {
    v.iter().map(|(m, s)| (*s as f64, m.clone())).collect()
}

/// Writes every key of `model` into generation `g` (assumed empty; its
/// `progress` is left to the commit). Returns the number of commands run.
pub async fn write_generation(
    redis: &Client,
    g: &GenerationKeys,
    model: &Model,
) -> Result<u64, RecoveryError> {
    let mut written = 0u64;
    let mut chunk: Vec<Vec<Cmd>> = Vec::with_capacity(CHUNK_UNITS);
    let match_ids: Vec<i64> = model.matches.keys().copied().collect();
    for id in match_ids {
        if let Some(m) = model.match_state(id) {
            chunk.push(vec![Cmd::Hset(g.match_state(id), match_hash(&m))]);
        }
        if chunk.len() >= CHUNK_UNITS {
            written += run_units(redis, std::mem::take(&mut chunk)).await?;
        }
    }
    let players: Vec<_> = model.counted_players().map(|(k, s)| (*k, *s)).collect();
    for (k, s) in players {
        chunk.push(vec![Cmd::Hset(player_key(g, &k), player_hash(&s))]);
        if chunk.len() >= CHUNK_UNITS {
            written += run_units(redis, std::mem::take(&mut chunk)).await?;
        }
    }
    for (season, members) in model.boards() {
        chunk.push(vec![Cmd::Zadd(g.board(season), scores(&members))]);
    }
    let seasons: Vec<String> = model.seasons().iter().map(|s| s.to_string()).collect();
    if !seasons.is_empty() {
        chunk.push(vec![Cmd::Sadd(g.seasons(), seasons)]);
    }
    let deadlines = model.deadlines();
    if !deadlines.is_empty() {
        chunk.push(vec![Cmd::Zadd(g.deadlines(), scores(&deadlines))]);
    }
    written += run_units(redis, chunk).await?;
    Ok(written)
}
