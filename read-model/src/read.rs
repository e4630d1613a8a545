//! Reading the read models back: player counters, leaderboard pages, ranks,
//! match state, matches per lifecycle state and per-shard progress with lag.
//!
//! The API, `rpsctl verify` and the projector read through here, so the
//! layout is interpreted in one place. Everything takes the generation
//! explicitly; [`crate::generation::active`] says which one is live.

use crate::keys::{
    board_member, counter_fields, parse_board_member, parse_counter_field, GenerationKeys,
    Partition, ReadModelKeys,
};
use crate::lifecycle::MatchCounts;
use crate::redis_util::{hash_pairs, value_text};
use fred::clients::Client;
use fred::interfaces::{HashesInterface, SortedSetsInterface, StreamsInterface};
use fred::prelude::*;
use fred::types::scripts::Script;
use fred::types::{CustomCommand, Value};
use futures::future::join_all;
use rps_core::keys::PROJECTOR_GROUP;
use rps_core::stream::StreamId;
use rps_core::{Keys, MatchState, PlayerStats, SeasonId, ShardId, Timestamp};
use std::collections::HashMap;
use std::sync::LazyLock;

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
        .hmget(
            gk.counters(gk.partition_of(player_id), season),
            counter_fields(player_id).to_vec(),
        )
        .await?;
    Ok(stats_from(&v))
}

/// No counted match: `None`.
fn stats_from(v: &[Option<i64>]) -> Option<PlayerStats> {
    let stats = PlayerStats::from_stored(v);
    (stats.matches > 0).then_some(stats)
}

/// Every player's counters in one scope (one HGETALL per partition: for
/// tests, checks and small deployments, not for serving).
pub async fn scope_counters(
    client: &Client,
    gk: &GenerationKeys,
    season: Option<SeasonId>,
) -> Result<HashMap<i64, PlayerStats>, fred::error::Error> {
    let calls = gk
        .all_partitions()
        .map(|p| client.hgetall::<HashMap<String, i64>, _>(gk.counters(p, season)));
    let mut raw: HashMap<i64, [Option<i64>; 4]> = HashMap::new();
    for all in join_all(calls).await {
        for (field, v) in all? {
            if let Some((player, c)) = parse_counter_field(&field) {
                raw.entry(player).or_default()[c] = Some(v);
            }
        }
    }
    Ok(raw
        .into_iter()
        .filter_map(|(p, v)| Some((p, stats_from(&v)?)))
        .collect())
}

/// How many members of one partition's board order before `(score,
/// member)`: those with a lower score, and those with the same score and a
/// lower member, found by bisecting the tie's index range (each probe is
/// one O(log n) ZRANGE by index), so a crowded score costs no scan.
const COUNT_BEFORE: &str = r#"#!lua flags=no-writes
local s, m = ARGV[1], ARGV[2]
local lo = redis.call('ZCOUNT', KEYS[1], '-inf', '(' .. s)
local hi = lo + redis.call('ZCOUNT', KEYS[1], s, s)
while lo < hi do
  local mid = math.floor((lo + hi) / 2)
  if redis.call('ZRANGE', KEYS[1], mid, mid)[1] < m then lo = mid + 1 else hi = mid end
end
return lo
"#;

static COUNT_BEFORE_SCRIPT: LazyLock<Script> = LazyLock::new(|| Script::from_lua(COUNT_BEFORE));

/// A player's place on a board: its score and, per partition, how many
/// members order before it. Its rank is one more than their sum.
struct Place {
    score: i64,
    before: Vec<u64>,
}

impl Place {
    fn rank(&self) -> u64 {
        self.before.iter().sum::<u64>() + 1
    }
}

async fn place(
    client: &Client,
    gk: &GenerationKeys,
    player_id: i64,
    season: Option<SeasonId>,
) -> Result<Option<Place>, fred::error::Error> {
    let member = board_member(player_id);
    let score: Option<f64> = client
        .zscore(gk.board(gk.partition_of(player_id), season), member.clone())
        .await?;
    let Some(score) = score else {
        return Ok(None);
    };
    let score = score as i64;
    let calls = gk.all_partitions().map(|p| {
        COUNT_BEFORE_SCRIPT.evalsha_with_reload::<u64, _, _>(
            client,
            vec![gk.board(p, season)],
            vec![score.to_string(), member.clone()],
        )
    });
    let before: Vec<u64> = join_all(calls)
        .await
        .into_iter()
        .collect::<Result<_, _>>()?;
    Ok(Some(Place { score, before }))
}

/// A player's 1-based rank on a board, `None` if not on it: one plus the
/// members ordering before it in every partition.
pub async fn rank(
    client: &Client,
    gk: &GenerationKeys,
    player_id: i64,
    season: Option<SeasonId>,
) -> Result<Option<u64>, fred::error::Error> {
    if gk.partitions() == 1 {
        // One partition is one sorted set: Redis ranks it itself.
        let r: Option<u64> = client
            .zrank(gk.board(0, season), board_member(player_id), false)
            .await?;
        return Ok(r.map(|r| r + 1));
    }
    Ok(place(client, gk, player_id, season)
        .await?
        .map(|p| p.rank()))
}

/// The partition count a generation recorded (`None`: nothing written
/// yet), to compare with `redis.partitions` before reading.
pub async fn recorded_partitions(
    client: &Client,
    gk: &GenerationKeys,
) -> Result<Option<u16>, fred::error::Error> {
    let v: Option<String> = client.hget(gk.fences(0), "n").await?;
    Ok(v.and_then(|s| s.parse().ok()))
}

/// How many players a board has (every partition's).
pub async fn board_size(
    client: &Client,
    gk: &GenerationKeys,
    season: Option<SeasonId>,
) -> Result<u64, fred::error::Error> {
    let calls = gk
        .all_partitions()
        .map(|p| client.zcard::<u64, _>(gk.board(p, season)));
    let mut n = 0;
    for r in join_all(calls).await {
        n += r?;
    }
    Ok(n)
}

/// `(score, member)` of board entries, in board order.
type Ranked = Vec<(i64, String)>;

/// Each partition's board entries at 0-based positions `start..=stop`.
async fn partition_ranges(
    client: &Client,
    gk: &GenerationKeys,
    season: Option<SeasonId>,
    windows: &[(i64, i64)],
) -> Result<Ranked, fred::error::Error> {
    let calls = gk.all_partitions().zip(windows).map(|(p, (start, stop))| {
        client.zrange::<Vec<(String, f64)>, _, _, _>(
            gk.board(p, season),
            *start,
            *stop,
            None,
            false,
            None,
            true,
        )
    });
    let mut merged: Ranked = Vec::new();
    for r in join_all(calls).await {
        merged.extend(r?.into_iter().map(|(m, s)| (s as i64, m)));
    }
    // Board order: ascending score, then member (Redis' own order within a
    // partition, and the same across them).
    merged.sort();
    Ok(merged)
}

/// The counters of ranked members, as board rows numbered from `first_rank`
/// (one HMGET per partition they are in).
async fn entries(
    client: &Client,
    gk: &GenerationKeys,
    season: Option<SeasonId>,
    ranked: &[(i64, String)],
    first_rank: u64,
) -> Result<Vec<BoardEntry>, fred::error::Error> {
    let ids: Vec<i64> = ranked
        .iter()
        .filter_map(|(_, m)| parse_board_member(m))
        .collect();
    let mut by_partition: std::collections::BTreeMap<Partition, Vec<usize>> = Default::default();
    for (i, id) in ids.iter().enumerate() {
        by_partition
            .entry(gk.partition_of(*id))
            .or_default()
            .push(i);
    }
    let calls = by_partition.iter().map(|(p, at)| {
        let fields: Vec<String> = at.iter().flat_map(|i| counter_fields(ids[*i])).collect();
        client.hmget::<Vec<Option<i64>>, _, _>(gk.counters(*p, season), fields)
    });
    let mut rows: Vec<Option<PlayerStats>> = vec![None; ids.len()];
    for ((_, at), values) in by_partition.iter().zip(join_all(calls).await) {
        for (i, row) in at.iter().zip(values?.chunks(4)) {
            rows[*i] = stats_from(row);
        }
    }
    Ok(ids
        .into_iter()
        .zip(rows)
        .enumerate()
        .filter_map(|(i, (player_id, stats))| {
            Some(BoardEntry {
                rank: first_rank + i as u64,
                player_id,
                stats: stats?,
            })
        })
        .collect())
}

/// `limit` board entries from 0-based position `offset`, best first: the
/// merge of every partition's first `offset + limit`.
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
    let stop = (offset + limit - 1) as i64;
    if gk.partitions() == 1 {
        let page = partition_ranges(client, gk, season, &[(offset as i64, stop)]).await?;
        return entries(client, gk, season, &page, offset + 1).await;
    }
    let windows = vec![(0, stop); gk.partitions() as usize];
    let merged = partition_ranges(client, gk, season, &windows).await?;
    let page: Ranked = merged
        .into_iter()
        .skip(offset as usize)
        .take(limit as usize)
        .collect();
    entries(client, gk, season, &page, offset + 1).await
}

/// The entries within `radius` places of a player, or `None` if the player
/// is not on the board. Every entry within `radius` of the player overall
/// is within `radius` of the player's place in its own partition, so each
/// partition gives at most `2 * radius + 1` candidates.
pub async fn around(
    client: &Client,
    gk: &GenerationKeys,
    player_id: i64,
    season: Option<SeasonId>,
    radius: u64,
) -> Result<Option<Vec<BoardEntry>>, fred::error::Error> {
    if gk.partitions() == 1 {
        let Some(r) = rank(client, gk, player_id, season).await? else {
            return Ok(None);
        };
        let start = (r - 1).saturating_sub(radius);
        let stop = (r - 1) + radius;
        return leaderboard(client, gk, season, start, stop - start + 1)
            .await
            .map(Some);
    }
    let Some(place) = place(client, gk, player_id, season).await? else {
        return Ok(None);
    };
    let r = radius as i64;
    let windows: Vec<(i64, i64)> = place
        .before
        .iter()
        .map(|b| ((*b as i64 - r).max(0), *b as i64 + r))
        .collect();
    let merged = partition_ranges(client, gk, season, &windows).await?;
    let me = (place.score, board_member(player_id));
    let Some(at) = merged.iter().position(|e| *e == me) else {
        // Moved between the two reads: it is somewhere else now.
        return Ok(Some(Vec::new()));
    };
    let from = at.saturating_sub(radius as usize);
    let to = (at + radius as usize + 1).min(merged.len());
    let first_rank = place.rank() - (at - from) as u64;
    entries(client, gk, season, &merged[from..to], first_rank)
        .await
        .map(Some)
}

/// A match's folded state, if it has a valid event.
pub async fn match_state(
    client: &Client,
    gk: &GenerationKeys,
    shard: ShardId,
    match_id: i64,
) -> Result<Option<MatchState>, fred::error::Error> {
    let v: Option<String> = client.get(gk.match_state(shard, match_id)).await?;
    Ok(v.as_deref().and_then(MatchState::from_value))
}

/// A match's folded state when its shard is not known (a match id alone
/// does not tell): one GET per shard, at most one of which finds it.
pub async fn find_match(
    client: &Client,
    gk: &GenerationKeys,
    shard_count: u16,
    match_id: i64,
) -> Result<Option<MatchState>, fred::error::Error> {
    let calls = (0..shard_count).map(|s| match_state(client, gk, s, match_id));
    let mut found = None;
    for r in join_all(calls).await {
        found = found.or(r?);
    }
    Ok(found)
}

/// The committed states of a shard's `match_ids`, in order (one MGET: the
/// keys share the shard's slot).
pub async fn match_states(
    client: &Client,
    gk: &GenerationKeys,
    shard: ShardId,
    match_ids: &[i64],
) -> Result<Vec<Option<MatchState>>, fred::error::Error> {
    if match_ids.is_empty() {
        return Ok(Vec::new());
    }
    let keys: Vec<String> = match_ids
        .iter()
        .map(|m| gk.match_state(shard, *m))
        .collect();
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
    Ok(shard_position(client, gk, shard).await?.0)
}

/// The last stream id applied to `shard` in a generation, as stored, and
/// the shard's sequence ([`crate::score`]) with it (0: none yet).
pub async fn shard_position(
    client: &Client,
    gk: &GenerationKeys,
    shard: ShardId,
) -> Result<(Option<String>, u64), fred::error::Error> {
    let v: Vec<Option<String>> = client.hmget(gk.progress(shard), vec!["id", "q"]).await?;
    let id = v.first().cloned().flatten().filter(|s| !s.is_empty());
    let seq = v
        .get(1)
        .cloned()
        .flatten()
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    Ok((id, seq))
}

/// Matches per lifecycle state, every shard's (one HMGET each).
pub async fn match_counts(
    client: &Client,
    gk: &GenerationKeys,
    shard_count: u16,
) -> Result<MatchCounts, fred::error::Error> {
    let fields = crate::lifecycle::STATES.map(|s| s.as_str());
    let calls = (0..shard_count)
        .map(|s| client.hmget::<Vec<Option<i64>>, _, _>(gk.lifecycle(s), fields.to_vec()));
    let mut total = MatchCounts::default();
    for v in join_all(calls).await {
        total.add(&MatchCounts::from_fields(
            fields.into_iter().zip(v?).map(|(f, v)| (f, v.unwrap_or(0))),
        ));
    }
    Ok(total)
}

/// Open matches' deadlines over every shard: how many, how many are past
/// `now_ms`, and the earliest.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct DeadlineCounts {
    pub pending: u64,
    pub overdue: u64,
    /// The earliest deadline (Unix ms), if any.
    pub earliest_ms: Option<i64>,
}

pub async fn deadline_counts(
    client: &Client,
    gk: &GenerationKeys,
    shard_count: u16,
    now_ms: i64,
) -> Result<DeadlineCounts, fred::error::Error> {
    let per_shard = (0..shard_count).map(|s| async move {
        let key = gk.deadlines(s);
        let pending: u64 = client.zcard(&key).await?;
        let overdue: u64 = client
            .zcount(&key, f64::NEG_INFINITY, now_ms as f64)
            .await?;
        let first: Vec<(String, f64)> = client.zrange(&key, 0, 0, None, false, None, true).await?;
        Ok::<_, fred::error::Error>((pending, overdue, first.first().map(|(_, ms)| *ms as i64)))
    });
    let mut out = DeadlineCounts::default();
    for r in join_all(per_shard).await {
        let (pending, overdue, first) = r?;
        out.pending += pending;
        out.overdue += overdue;
        out.earliest_ms = match (out.earliest_ms, first) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        };
    }
    Ok(out)
}

/// Seasons that have a board (in any partition).
pub async fn seasons(
    client: &Client,
    gk: &GenerationKeys,
) -> Result<Vec<SeasonId>, fred::error::Error> {
    use fred::interfaces::SetsInterface;
    let calls = gk
        .all_partitions()
        .map(|p| client.smembers::<Vec<String>, _>(gk.seasons(p)));
    let mut out = std::collections::BTreeSet::new();
    for r in join_all(calls).await {
        out.extend(r?.iter().filter_map(|s| s.parse::<SeasonId>().ok()));
    }
    Ok(out.into_iter().collect())
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

/// Progress of every shard of a generation (one hash read per shard).
pub async fn progress(
    client: &Client,
    keys: &Keys,
    generation: u64,
    shard_count: u16,
) -> Result<Vec<ShardProgress>, fred::error::Error> {
    let gk = keys.generation_keys(generation);
    let calls = (0..shard_count).map(|s| client.hgetall::<Value, _>(gk.progress(s)));
    let mut out = Vec::with_capacity(shard_count as usize);
    for (shard, v) in (0..shard_count).zip(join_all(calls).await) {
        let pairs = hash_pairs(v?).unwrap_or_default();
        let get = |k: &str| pairs.iter().find(|(f, _)| f == k).map(|(_, v)| v.clone());
        let time = |k: &str| get(k).and_then(|s| s.parse().ok()).map(Timestamp);
        out.push(ShardProgress {
            shard,
            last_id: get("id"),
            event_at: time("at"),
            applied_at: time("applied_at"),
            ..Default::default()
        });
    }
    Ok(out)
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
                CustomCommand::new_static("XINFO", rps_core::redis_client::slot_of(&key), false),
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
