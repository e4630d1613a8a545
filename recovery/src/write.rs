//! Writing a fold into a fresh generation, fast and in bounded memory,
//! through the bulk writer replay uses ([`read_model::bulk`]). Nothing reads
//! the generation before the bootstrap's commit, so no ordering between
//! keys is needed.

use crate::RecoveryError;
use fred::clients::Client;
use history::model::Model;
use history::SpilledMatches;
use read_model::bulk::{self, BulkWriter, Write, MEMBERS_PER_COMMAND, PIPELINE_COMMANDS};
use read_model::GenerationKeys;
use rps_core::{PlayerStats, SeasonId};
use std::collections::BTreeMap;
use tokio::sync::mpsc;

/// Writes every key of `model` into generation `g` (assumed empty; its
/// `progress` is left to the commit). Returns the number of commands run.
///
/// Batches are built as pipelines free up, so memory holds only the ones
/// in flight.
pub async fn write_generation(
    redis: &Client,
    g: &GenerationKeys,
    model: &Model,
) -> Result<u64, RecoveryError> {
    let mut out = BulkWriter::new(redis);
    let match_ids: Vec<i64> = model.matches.keys().copied().collect();
    for ids in match_ids.chunks(PIPELINE_COMMANDS) {
        let mut batch = Vec::with_capacity(ids.len());
        for id in ids {
            if let Some(m) = model.match_state(*id) {
                let shard = rps_core::shard_of(m.player_a, model.shard_count);
                batch.push(Write::Set(g.match_state(shard, *id), m.to_value()));
            }
        }
        out.unit(batch).await?;
    }
    let mut scopes: BTreeMap<Option<SeasonId>, Vec<(i64, PlayerStats)>> = BTreeMap::new();
    for ((id, season), st) in model.counted_players() {
        scopes.entry(*season).or_default().push((*id, *st));
    }
    for (season, players) in &scopes {
        for chunk in players.chunks(PIPELINE_COMMANDS) {
            let writes = bulk::scope_counters(g, *season, chunk.iter().map(|(p, s)| (*p, s)));
            out.units(writes.into_iter().map(|w| vec![w])).await?;
        }
    }
    let mut rest = Vec::new();
    for (season, members) in model.boards() {
        for part in members.chunks(MEMBERS_PER_COMMAND) {
            rest.extend(bulk::scope_board(g, season, part));
        }
    }
    rest.extend(bulk::season_sets(g, model.scored_seasons()));
    rest.extend(bulk::partition_count(g));
    for (shard, d) in model.deadlines_by_shard() {
        for part in d.chunks(MEMBERS_PER_COMMAND) {
            rest.push(Write::zadd_scores(g.deadlines(shard), part));
        }
    }
    out.units(rest.into_iter().map(|w| vec![w])).await?;
    for shard in 0..model.shard_count {
        let counts = model.lifecycle.get(&shard).cloned().unwrap_or_default();
        out.unit(bulk::lifecycle_counts(g, shard, &counts)).await?;
    }
    Ok(out.finish().await?)
}

/// What [`write_spilled`] wrote.
#[derive(Debug, Default, Clone, Copy)]
pub struct SpillTally {
    pub commands: u64,
    pub matches: u64,
    pub open_matches: u64,
}

/// Writes each range's match states (and the deadlines of the open ones)
/// into generation `g` as the snapshot fold hands them out, a pipeline per
/// range, several in flight.
pub async fn write_spilled(
    redis: &Client,
    g: &GenerationKeys,
    shard_count: u16,
    mut ranges: mpsc::Receiver<SpilledMatches>,
) -> Result<SpillTally, RecoveryError> {
    let mut out = BulkWriter::new(redis);
    let mut tally = SpillTally::default();
    while let Some(range) = ranges.recv().await {
        let mut batch = Vec::with_capacity(range.len() + 1);
        let mut deadlines: BTreeMap<rps_core::ShardId, Vec<(f64, String)>> = BTreeMap::new();
        for (id, m) in &range {
            let shard = rps_core::shard_of(m.player_a, shard_count);
            batch.push(Write::Set(
                g.match_state(shard, *id),
                m.state(*id).to_value(),
            ));
            if let Some((member, ms)) = m.deadline_entry(*id, shard_count) {
                deadlines
                    .entry(shard)
                    .or_default()
                    .push((ms as f64, member));
                tally.open_matches += 1;
            }
        }
        tally.matches += range.len() as u64;
        for (shard, d) in deadlines {
            batch.push(Write::Zadd(g.deadlines(shard), d));
        }
        out.unit(batch).await?;
    }
    tally.commands = out.finish().await?;
    Ok(tally)
}
