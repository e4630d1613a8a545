//! Reading and writing read-model generations in Redis, in history's terms:
//! a [`Model`] becomes the writes [`read_model::bulk`] sends.

use crate::model::{Model, PlayerKey};
use crate::HistoryError;
use fred::clients::Client;
use read_model::bulk::{self, Write};
use read_model::GenerationKeys;
use rps_core::{Keys, PlayerStats, SeasonId};
use std::collections::{BTreeMap, BTreeSet};

pub use read_model::generation::{drop_generation, generation_exists, try_switch, Switch};

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
    let matches = model
        .matches
        .iter()
        .map(|(id, c)| vec![Write::Set(g.match_state(*id), c.state(*id).to_value())]);
    let mut scopes: BTreeMap<Option<SeasonId>, Vec<(i64, &PlayerStats)>> = BTreeMap::new();
    for ((id, season), st) in model.counted_players() {
        scopes.entry(*season).or_default().push((*id, st));
    }
    let players = scopes
        .into_iter()
        .map(|(season, players)| vec![bulk::scope_counters(g, season, players)]);
    let boards: Vec<Vec<Write>> = model
        .boards()
        .into_iter()
        .map(|(season, members)| vec![Write::zadd_scores(g.board(season), &members)])
        .collect();
    let seasons: Vec<String> = model.seasons().iter().map(|s| s.to_string()).collect();
    let mut rest = boards;
    if !seasons.is_empty() {
        rest.push(vec![Write::Sadd(g.seasons(), seasons)]);
    }
    let deadlines = model.deadlines();
    if !deadlines.is_empty() {
        rest.push(vec![Write::zadd_scores(g.deadlines(), &deadlines)]);
    }
    rest.push(bulk::lifecycle_counts(g, &model.lifecycle));
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
    let mut seasons = BTreeSet::new();
    let mut any_match = false;
    for id in matches {
        any_match = true;
        let Some(m) = model.match_state(id) else {
            continue;
        };
        let mut unit = vec![Write::Set(g.match_state(id), m.to_value())];
        let member =
            rps_core::keys::deadline_member(rps_core::shard_of(m.player_a, model.shard_count), id);
        match model.deadline_of(&m) {
            Some((member, ms)) => unit.push(Write::Zadd(g.deadlines(), vec![(ms as f64, member)])),
            None => unit.push(Write::Zrem(g.deadlines(), vec![member])),
        }
        units.push(unit);
    }
    for key in players {
        let stats = model.players.get(&key).copied().unwrap_or_default();
        if let Some(s) = key.1 {
            seasons.insert(s);
        }
        units.push(bulk::player_scope(g, key.0, key.1, &stats));
    }
    if !seasons.is_empty() {
        units.push(vec![Write::Sadd(
            g.seasons(),
            seasons.iter().map(SeasonId::to_string).collect(),
        )]);
    }
    if any_match {
        units.push(bulk::lifecycle_counts(g, &model.lifecycle));
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
) -> Result<std::collections::HashMap<String, String>, HistoryError> {
    Ok(read_model::generation::progress_hash(client, g).await?)
}
