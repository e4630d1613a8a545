//! Reading the read models back: player counters, leaderboard pages, ranks,
//! match state, matches per lifecycle state and per-shard progress with lag.
//!
//! The API, `rpsctl verify` and the projector read through here, so the
//! layout is interpreted in one place. Everything takes the generation
//! explicitly; [`crate::generation::active`] says which one is live.

use crate::keys::{
    board_member, counter_fields, parse_board_member, parse_counter_field, GenerationKeys,
    ReadModelKeys,
};
use crate::lifecycle::MatchCounts;
use crate::redis_util::{hash_pairs, value_text};
use fred::clients::Client;
use fred::interfaces::{HashesInterface, SortedSetsInterface, StreamsInterface};
use fred::prelude::*;
use fred::types::{CustomCommand, Value};
use rps_core::keys::PROJECTOR_GROUP;
use rps_core::stream::StreamId;
use rps_core::{Keys, MatchState, PlayerStats, SeasonId, ShardId, Timestamp};
use std::collections::HashMap;

/// One row of a leaderboard.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BoardEntry {
    /// 1-based.
    pub rank: u64,
    pub player_id: i64,
    pub stats: PlayerStats,
}

/// A player's counters in one scope (all-time or a season).
pub async fn player_stats(
    client: &Client,
    gk: &GenerationKeys,
    player_id: i64,
    season: Option<SeasonId>,
) -> Result<Option<PlayerStats>, fred::error::Error> {
    let v: Vec<Option<i64>> = client
        .hmget(gk.counters(season), counter_fields(player_id).to_vec())
        .await?;
    Ok(stats_from(&v))
}

/// No counted match: `None`.
fn stats_from(v: &[Option<i64>]) -> Option<PlayerStats> {
    let stats = PlayerStats::from_stored(v);
    (stats.matches > 0).then_some(stats)
}

/// Every player's counters in one scope (one HGETALL: for tests, checks and
/// small deployments, not for serving).
pub async fn scope_counters(
    client: &Client,
    gk: &GenerationKeys,
    season: Option<SeasonId>,
) -> Result<HashMap<i64, PlayerStats>, fred::error::Error> {
    let all: HashMap<String, i64> = client.hgetall(gk.counters(season)).await?;
    let mut raw: HashMap<i64, [Option<i64>; 4]> = HashMap::new();
    for (field, v) in all {
        if let Some((player, c)) = parse_counter_field(&field) {
            raw.entry(player).or_default()[c] = Some(v);
        }
    }
    Ok(raw
        .into_iter()
        .filter_map(|(p, v)| Some((p, stats_from(&v)?)))
        .collect())
}

/// A player's 1-based rank on a board, `None` if not on it.
pub async fn rank(
    client: &Client,
    gk: &GenerationKeys,
    player_id: i64,
    season: Option<SeasonId>,
) -> Result<Option<u64>, fred::error::Error> {
    let r: Option<u64> = client
        .zrank(gk.board(season), board_member(player_id), false)
        .await?;
    Ok(r.map(|r| r + 1))
}

/// `limit` board entries from 0-based position `offset`, best first.
pub async fn leaderboard(
    client: &Client,
    gk: &GenerationKeys,
    season: Option<SeasonId>,
    offset: u64,
    limit: u64,
) -> Result<Vec<BoardEntry>, fred::error::Error> {
    if limit == 0 {
        return Ok(Vec::new());
    }
    let members: Vec<String> = client
        .zrange(
            gk.board(season),
            offset as i64,
            (offset + limit - 1) as i64,
            None,
            false,
            None,
            false,
        )
        .await?;
    let ids: Vec<i64> = members
        .iter()
        .filter_map(|m| parse_board_member(m))
        .collect();
    if ids.is_empty() {
        return Ok(Vec::new());
    }
    let fields: Vec<String> = ids.iter().flat_map(|id| counter_fields(*id)).collect();
    let values: Vec<Option<i64>> = client.hmget(gk.counters(season), fields).await?;
    Ok(ids
        .into_iter()
        .zip(values.chunks(4))
        .enumerate()
        .filter_map(|(i, (player_id, row))| {
            Some(BoardEntry {
                rank: offset + i as u64 + 1,
                player_id,
                stats: stats_from(row)?,
            })
        })
        .collect())
}

/// The entries within `radius` places of a player, or `None` if the player
/// is not on the board.
pub async fn around(
    client: &Client,
    gk: &GenerationKeys,
    player_id: i64,
    season: Option<SeasonId>,
    radius: u64,
) -> Result<Option<Vec<BoardEntry>>, fred::error::Error> {
    let Some(r) = rank(client, gk, player_id, season).await? else {
        return Ok(None);
    };
    let start = (r - 1).saturating_sub(radius);
    let stop = (r - 1) + radius;
    leaderboard(client, gk, season, start, stop - start + 1)
        .await
        .map(Some)
}

/// A match's folded state, if it has a valid event.
pub async fn match_state(
    client: &Client,
    gk: &GenerationKeys,
    match_id: i64,
) -> Result<Option<MatchState>, fred::error::Error> {
    let v: Option<String> = client.get(gk.match_state(match_id)).await?;
    Ok(v.as_deref().and_then(MatchState::from_value))
}

/// The committed states of `match_ids`, in order (one MGET).
pub async fn match_states(
    client: &Client,
    gk: &GenerationKeys,
    match_ids: &[i64],
) -> Result<Vec<Option<MatchState>>, fred::error::Error> {
    if match_ids.is_empty() {
        return Ok(Vec::new());
    }
    let keys: Vec<String> = match_ids.iter().map(|m| gk.match_state(*m)).collect();
    let values: Vec<Option<String>> = client.mget(keys).await?;
    Ok(values
        .iter()
        .map(|v| v.as_deref().and_then(MatchState::from_value))
        .collect())
}

/// The last stream id applied to `shard` in a generation, as stored.
pub async fn shard_progress(
    client: &Client,
    gk: &GenerationKeys,
    shard: ShardId,
) -> Result<Option<String>, fred::error::Error> {
    let v: Value = client.hget(gk.progress(), shard.to_string()).await?;
    Ok(value_text(&v).filter(|s| !s.is_empty()))
}

/// Matches per lifecycle state (one HMGET of four fields).
pub async fn match_counts(
    client: &Client,
    gk: &GenerationKeys,
) -> Result<MatchCounts, fred::error::Error> {
    let fields = crate::lifecycle::STATES.map(|s| s.as_str());
    let v: Vec<Option<i64>> = client.hmget(gk.lifecycle(), fields.to_vec()).await?;
    Ok(MatchCounts::from_fields(
        fields.into_iter().zip(v).map(|(f, v)| (f, v.unwrap_or(0))),
    ))
}

/// Seasons that have a board.
pub async fn seasons(
    client: &Client,
    gk: &GenerationKeys,
) -> Result<Vec<SeasonId>, fred::error::Error> {
    use fred::interfaces::SetsInterface;
    let v: Vec<String> = client.smembers(gk.seasons()).await?;
    let mut out: Vec<SeasonId> = v.iter().filter_map(|s| s.parse().ok()).collect();
    out.sort();
    Ok(out)
}

/// Where one shard stands in one generation.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct ShardProgress {
    pub shard: ShardId,
    /// Last stream id applied.
    pub last_id: Option<String>,
    /// `occurred_at` of the last event in an applied batch.
    pub event_at: Option<Timestamp>,
    /// When that batch was committed (Redis clock).
    pub applied_at: Option<Timestamp>,
    /// Last entry of the stream.
    pub stream_last_id: Option<String>,
    /// Entries in the stream after `last_id` (from the projector group's
    /// counters); `None` if Redis cannot tell.
    pub lag_entries: Option<u64>,
    /// Event time of the stream's last entry minus `event_at`, seconds.
    pub lag_seconds: Option<f64>,
}

/// Progress of every shard of a generation (one hash read).
pub async fn progress(
    client: &Client,
    keys: &Keys,
    generation: u64,
    shard_count: u16,
) -> Result<Vec<ShardProgress>, fred::error::Error> {
    let gk = keys.generation_keys(generation);
    let v: Value = client.hgetall(gk.progress()).await?;
    let pairs = hash_pairs(v).unwrap_or_default();
    let get = |k: String| pairs.iter().find(|(f, _)| *f == k).map(|(_, v)| v.clone());
    Ok((0..shard_count)
        .map(|shard| ShardProgress {
            shard,
            last_id: get(shard.to_string()),
            event_at: get(format!("{shard}:at"))
                .and_then(|s| s.parse().ok())
                .map(Timestamp),
            applied_at: get(format!("{shard}:applied_at"))
                .and_then(|s| s.parse().ok())
                .map(Timestamp),
            ..Default::default()
        })
        .collect())
}

/// [`progress`] plus the lag of each shard behind its stream.
pub async fn progress_with_lag(
    client: &Client,
    keys: &Keys,
    generation: u64,
    shard_count: u16,
) -> Result<Vec<ShardProgress>, fred::error::Error> {
    let mut out = progress(client, keys, generation, shard_count).await?;
    let pipe = client.pipeline();
    for p in &out {
        let key = keys.events(p.shard);
        let _: () = pipe.xrevrange(key.clone(), "+", "-", Some(1)).await?;
        let _: () = pipe
            .custom(
                CustomCommand::new_static("XINFO", None::<u16>, false),
                vec!["GROUPS".to_string(), key],
            )
            .await?;
    }
    let results = pipe.try_all::<Value>().await;
    let mut it = results.into_iter();
    for p in out.iter_mut() {
        let last = it.next().and_then(Result::ok);
        let groups = it.next().and_then(Result::ok);
        let (last_id, last_at) = last
            .map(|v| {
                let entry = v.into_array().into_iter().next();
                match entry {
                    Some(e) => {
                        let mut parts = e.into_array().into_iter();
                        let id = parts.next().and_then(|v| value_text(&v));
                        let at = parts
                            .next()
                            .and_then(hash_pairs)
                            .and_then(|f| f.into_iter().find(|(k, _)| k == "at"))
                            .and_then(|(_, v)| v.parse().ok())
                            .map(Timestamp);
                        (id, at)
                    }
                    None => (None, None),
                }
            })
            .unwrap_or((None, None));
        p.stream_last_id = last_id.clone();
        let caught_up = match (&p.last_id, &last_id) {
            (_, None) => true,
            (Some(a), Some(b)) => {
                matches!((a.parse::<StreamId>(), b.parse::<StreamId>()), (Ok(a), Ok(b)) if a >= b)
            }
            (None, Some(_)) => false,
        };
        p.lag_entries = if caught_up {
            Some(0)
        } else {
            groups.and_then(group_lag)
        };
        p.lag_seconds = if caught_up {
            Some(0.0)
        } else {
            match (last_at, p.event_at) {
                (Some(l), Some(a)) => Some(((l.as_micros() - a.as_micros()) as f64 / 1e6).max(0.0)),
                _ => None,
            }
        };
    }
    Ok(out)
}

/// Undelivered (`lag`) plus delivered-but-unapplied (`pending`) entries of
/// the projector group; applied entries are acknowledged in the same
/// atomic step, so this is what remains to apply.
fn group_lag(groups: Value) -> Option<u64> {
    for g in groups.into_array() {
        let fields = hash_pairs(g)?;
        let get = |k: &str| fields.iter().find(|(f, _)| f == k).map(|(_, v)| v.clone());
        if get("name").as_deref() == Some(PROJECTOR_GROUP) {
            let lag: u64 = get("lag")?.parse().ok()?;
            let pending: u64 = get("pending")?.parse().ok()?;
            return Some(lag + pending);
        }
    }
    None
}
