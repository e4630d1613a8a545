//! Reading and writing read-model generations in Redis, in history's terms:
//! a [`Model`] becomes the writes [`read_model::bulk`] sends.

use crate::model::{Model, PlayerKey};
use crate::HistoryError;
use fred::clients::Client;
use read_model::bulk::{self, Write};
use read_model::GenerationKeys;
use rps_core::{Keys, PlayerStats, SeasonId};
use std::collections::BTreeMap;

pub use read_model::generation::{drop_generation, generation_exists};

/// How many units of reads are in flight at once.
pub const IN_FLIGHT: usize = 256;

/// Runs units through the bulk writer; returns commands run.
pub async fn run_units<I>(client: &Client, units: I) -> Result<u64, HistoryError>
where
    I: IntoIterator<Item = Vec<Write>>,
{
    Ok(bulk::write_units(client, units).await?)
}

/// Writes a whole model into generation `g` (assumed empty): every key once.
pub async fn write_model(
    client: &Client,
    g: &GenerationKeys,
    model: &Model,
) -> Result<u64, HistoryError> {
    let matches = model.matches.iter().map(|(id, c)| {
        let shard = rps_core::shard_of(c.player_a, model.shard_count);
        vec![Write::Set(
            g.match_state(shard, *id),
            c.state(*id).to_value(),
        )]
    });
    let mut scopes: BTreeMap<Option<SeasonId>, Vec<(i64, &PlayerStats)>> = BTreeMap::new();
    for ((id, season), st) in model.counted_players() {
        scopes.entry(*season).or_default().push((*id, st));
    }
    let players = scopes
        .into_iter()
        .flat_map(|(season, players)| bulk::scope_counters(g, season, players))
        .map(|w| vec![w]);
    let mut rest: Vec<Vec<Write>> = model
        .boards()
        .into_iter()
        .flat_map(|(season, members)| bulk::scope_board(g, season, &members))
        .map(|w| vec![w])
        .collect();
    rest.extend(
        bulk::season_sets(g, model.scored_seasons())
            .into_iter()
            .map(|w| vec![w]),
    );
    rest.extend(bulk::partition_count(g).into_iter().map(|w| vec![w]));
    rest.extend(
        bulk::deadline_sets(g, model.deadlines_by_shard())
            .into_iter()
            .map(|w| vec![w]),
    );
    for shard in 0..model.shard_count {
        let counts = model.lifecycle.get(&shard).cloned().unwrap_or_default();
        rest.push(bulk::lifecycle_counts(g, shard, &counts));
    }
    let n = run_units(client, matches.chain(players).chain(rest)).await?;
    metrics::counter!(crate::metrics::REPLAY_KEYS_WRITTEN_TOTAL).increment(n);
    Ok(n)
}

/// Rewrites what `dirty` keys of the model must now hold (catch-up writes):
/// match states and deadlines, player counters and board entries, and the
/// matches per lifecycle state when a match changed.
pub fn dirty_units(
    g: &GenerationKeys,
    model: &Model,
    matches: impl IntoIterator<Item = i64>,
    players: impl IntoIterator<Item = PlayerKey>,
) -> Vec<Vec<Write>> {
    let mut units = Vec::new();
    let mut seasons = Vec::new();
    let mut any_match = false;
    let mut touched_shards = std::collections::BTreeSet::new();
    for id in matches {
        any_match = true;
        let Some(m) = model.match_state(id) else {
            continue;
        };
        let shard = rps_core::shard_of(m.player_a, model.shard_count);
        touched_shards.insert(shard);
        let mut unit = vec![Write::Set(g.match_state(shard, id), m.to_value())];
        let member = rps_core::keys::deadline_member(shard, id);
        match model.deadline_of(&m) {
            Some((member, ms)) => {
                unit.push(Write::Zadd(g.deadlines(shard), vec![(ms as f64, member)]))
            }
            None => unit.push(Write::Zrem(g.deadlines(shard), vec![member])),
        }
        units.push(unit);
    }
    for key in players {
        let stats = model.players.get(&key).copied().unwrap_or_default();
        if let Some(s) = key.1 {
            seasons.push((key.0, s));
        }
        units.push(bulk::player_scope(g, key.0, key.1, &stats));
    }
    units.extend(bulk::season_sets(g, seasons).into_iter().map(|w| vec![w]));
    if any_match {
        for shard in &touched_shards {
            let counts = model.lifecycle.get(shard).cloned().unwrap_or_default();
            units.push(bulk::lifecycle_counts(g, *shard, &counts));
        }
    }
    units
}

/// The active generation (`0` if none was ever set).
pub async fn active_generation(client: &Client, keys: &Keys) -> Result<u64, HistoryError> {
    match read_model::generation::active(client, keys).await {
        Ok(g) => Ok(g.unwrap_or(0)),
        Err(read_model::generation::GenerationError::Redis(e)) => Err(e.into()),
        Err(e) => Err(HistoryError::Generation(e)),
    }
}

/// The `progress` hash of a generation: shard → last stream id applied.
pub async fn progress(
    client: &Client,
    g: &GenerationKeys,
    shard_count: u16,
) -> Result<std::collections::HashMap<String, String>, HistoryError> {
    Ok(read_model::generation::progress_hash(client, g, shard_count).await?)
}
