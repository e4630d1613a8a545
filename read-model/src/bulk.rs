//! The bulk writer that replay, `verify --repair` and the recovery
//! bootstrap share: whole generations (or many keys of one) written at
//! Redis' own pace.
//!
//! Writes come in units (one key's DEL and rewrite stay in order); a unit is
//! never split across pipelines. Pipelines of about [`PIPELINE_COMMANDS`]
//! commands go out [`PIPELINES_IN_FLIGHT`] at a time on one connection, and
//! a pipeline's writes are built only when it is submitted, so memory holds
//! just the ones in flight. The future is `Send`, so it runs on spawned tasks.

use crate::keys::{board_member, counter_fields, parse_board_member, GenerationKeys, Partition};
use crate::lifecycle::MatchCounts;
use fred::clients::Client;
use fred::interfaces::{HashesInterface, KeysInterface, SetsInterface, SortedSetsInterface};
use fred::types::Value;
use futures::future::BoxFuture;
use futures::stream::{FuturesUnordered, StreamExt};
use rps_core::{PlayerStats, SeasonId, ShardId};
use std::collections::{BTreeMap, BTreeSet};

/// Commands per pipeline (one round trip).
pub const PIPELINE_COMMANDS: usize = 1000;
/// Pipelines in flight at once.
pub const PIPELINES_IN_FLIGHT: usize = 8;
/// Members per ZADD / SADD / ZREM, so no single command gets huge.
pub const MEMBERS_PER_COMMAND: usize = 1000;

/// One Redis write.
#[derive(Debug, Clone)]
pub enum Write {
    Del(String),
    Set(String, String),
    Hset(String, Vec<(String, String)>),
    Hdel(String, Vec<String>),
    Zadd(String, Vec<(f64, String)>),
    Zrem(String, Vec<String>),
    Sadd(String, Vec<String>),
}

impl Write {
    /// The sorted-set write of integer scores.
    pub fn zadd_scores(key: String, members: &[(String, i64)]) -> Write {
        Write::Zadd(
            key,
            members
                .iter()
                .map(|(m, s)| (*s as f64, m.clone()))
                .collect(),
        )
    }
}

/// A player's non-zero counters as counters-hash fields (absent = 0).
pub fn player_fields(player: i64, s: &PlayerStats) -> Vec<(String, String)> {
    counter_fields(player)
        .into_iter()
        .zip(s.stored_values())
        .filter(|(_, v)| *v != 0)
        .map(|(f, v)| (f, v.to_string()))
        .collect()
}

/// The counters hashes of a whole scope (players with a counted match),
/// one write per partition.
pub fn scope_counters<'a, I>(g: &GenerationKeys, season: Option<SeasonId>, players: I) -> Vec<Write>
where
    I: IntoIterator<Item = (i64, &'a PlayerStats)>,
{
    let mut by_partition: BTreeMap<Partition, Vec<(String, String)>> = BTreeMap::new();
    for (p, s) in players {
        by_partition
            .entry(g.partition_of(p))
            .or_default()
            .extend(player_fields(p, s));
    }
    by_partition
        .into_iter()
        .map(|(part, fields)| Write::Hset(g.counters(part, season), fields))
        .collect()
}

/// A whole scope's board, `(board member, score)`, one write per partition.
pub fn scope_board(
    g: &GenerationKeys,
    season: Option<SeasonId>,
    members: &[(String, i64)],
) -> Vec<Write> {
    let mut by_partition: BTreeMap<Partition, Vec<(f64, String)>> = BTreeMap::new();
    for (m, score) in members {
        if let Some(id) = parse_board_member(m) {
            by_partition
                .entry(g.partition_of(id))
                .or_default()
                .push((*score as f64, m.clone()));
        }
    }
    by_partition
        .into_iter()
        .map(|(part, members)| Write::Zadd(g.board(part, season), members))
        .collect()
}

/// The seasons sets: a partition lists every season one of its players
/// ever scored in. One write per partition.
pub fn season_sets<I>(g: &GenerationKeys, scored: I) -> Vec<Write>
where
    I: IntoIterator<Item = (i64, SeasonId)>,
{
    let mut by_partition: BTreeMap<Partition, BTreeSet<SeasonId>> = BTreeMap::new();
    for (player, season) in scored {
        by_partition
            .entry(g.partition_of(player))
            .or_default()
            .insert(season);
    }
    by_partition
        .into_iter()
        .map(|(part, seasons)| {
            Write::Sadd(
                g.seasons(part),
                seasons.iter().map(SeasonId::to_string).collect(),
            )
        })
        .collect()
}

/// The generation's partition count, recorded in every partition as the
/// projector's partition step expects it ([`crate::score`]).
pub fn partition_count(g: &GenerationKeys) -> Vec<Write> {
    g.all_partitions()
        .map(|p| Write::Hset(g.fences(p), vec![("n".into(), g.partitions().to_string())]))
        .collect()
}

/// What a player scope must hold, rewritten in place: its counters and
/// board entry, or neither when it has no counted match.
pub fn player_scope(
    g: &GenerationKeys,
    player: i64,
    season: Option<SeasonId>,
    stats: &PlayerStats,
) -> Vec<Write> {
    let part = g.partition_of(player);
    let counters = g.counters(part, season);
    let board = g.board(part, season);
    let mut unit = vec![Write::Hdel(
        counters.clone(),
        counter_fields(player).to_vec(),
    )];
    if stats.matches > 0 {
        unit.push(Write::Hset(counters, player_fields(player, stats)));
        unit.push(Write::Zadd(
            board,
            vec![(stats.board_score() as f64, board_member(player))],
        ));
    } else {
        unit.push(Write::Zrem(board, vec![board_member(player)]));
    }
    unit
}

/// The matches-per-state hash rewritten whole from a fold's counts (a
/// unit: the DEL and the HSET stay in order).
pub fn lifecycle_counts(g: &GenerationKeys, shard: ShardId, counts: &MatchCounts) -> Vec<Write> {
    let fields: Vec<(String, String)> = counts
        .nonzero()
        .map(|(f, v)| (f.to_string(), v.to_string()))
        .collect();
    let mut unit = vec![Write::Del(g.lifecycle(shard))];
    if !fields.is_empty() {
        unit.push(Write::Hset(g.lifecycle(shard), fields));
    }
    unit
}

/// Every shard's deadline set from `(shard, members)`: one write each.
pub fn deadline_sets<I>(g: &GenerationKeys, by_shard: I) -> Vec<Write>
where
    I: IntoIterator<Item = (ShardId, Vec<(String, i64)>)>,
{
    by_shard
        .into_iter()
        .filter(|(_, d)| !d.is_empty())
        .map(|(shard, d)| Write::zadd_scores(g.deadlines(shard), &d))
        .collect()
}

/// Queues `f` once per [`MEMBERS_PER_COMMAND`] items; returns the commands.
async fn per_chunk<T, F, Fut>(items: &[T], mut f: F) -> Result<u64, fred::error::Error>
where
    T: Clone,
    F: FnMut(Vec<T>) -> Fut,
    Fut: std::future::Future<Output = Result<(), fred::error::Error>>,
{
    let mut n = 0;
    for chunk in items.chunks(MEMBERS_PER_COMMAND) {
        f(chunk.to_vec()).await?;
        n += 1;
    }
    Ok(n)
}

async fn queue(p: &fred::clients::Pipeline<Client>, w: Write) -> Result<u64, fred::error::Error> {
    match w {
        Write::Del(k) => p.del::<(), _>(k).await.map(|_| 1),
        Write::Set(k, v) => p.set::<(), _, _>(k, v, None, None, false).await.map(|_| 1),
        Write::Hset(k, v) => per_chunk(&v, |c| p.hset::<(), _, _>(k.as_str(), c)).await,
        Write::Hdel(k, v) => per_chunk(&v, |c| p.hdel::<(), _, _>(k.as_str(), c)).await,
        Write::Zadd(k, v) => {
            per_chunk(&v, |c| {
                p.zadd::<(), _, _>(k.as_str(), None, None, false, false, c)
            })
            .await
        }
        Write::Zrem(k, v) => per_chunk(&v, |c| p.zrem::<(), _, _>(k.as_str(), c)).await,
        Write::Sadd(k, v) => per_chunk(&v, |c| p.sadd::<(), _, _>(k.as_str(), c)).await,
    }
}

async fn send(client: &Client, writes: Vec<Write>) -> Result<u64, fred::error::Error> {
    let p = client.pipeline();
    let mut n = 0;
    for w in writes {
        n += queue(&p, w).await?;
    }
    // Every reply is checked: one failed command fails the pipeline.
    let replies: Vec<Result<Value, fred::error::Error>> = p.try_all().await;
    for r in replies {
        r?;
    }
    Ok(n)
}

/// Keeps up to [`PIPELINES_IN_FLIGHT`] pipelines going; see the module doc.
pub struct BulkWriter<'a> {
    client: &'a Client,
    pending: Vec<Write>,
    in_flight: FuturesUnordered<BoxFuture<'a, Result<u64, fred::error::Error>>>,
    written: u64,
}

impl<'a> BulkWriter<'a> {
    pub fn new(client: &'a Client) -> Self {
        BulkWriter {
            client,
            pending: Vec::with_capacity(PIPELINE_COMMANDS),
            in_flight: FuturesUnordered::new(),
            written: 0,
        }
    }

    /// Adds one unit; its writes run in order, in one pipeline.
    pub async fn unit(&mut self, writes: Vec<Write>) -> Result<(), fred::error::Error> {
        if self.pending.len() + writes.len() > PIPELINE_COMMANDS && !self.pending.is_empty() {
            self.flush().await?;
        }
        self.pending.extend(writes);
        Ok(())
    }

    /// Adds units one after another.
    pub async fn units<I>(&mut self, units: I) -> Result<(), fred::error::Error>
    where
        I: IntoIterator<Item = Vec<Write>>,
    {
        for u in units {
            self.unit(u).await?;
        }
        Ok(())
    }

    async fn flush(&mut self) -> Result<(), fred::error::Error> {
        let batch = std::mem::replace(&mut self.pending, Vec::with_capacity(PIPELINE_COMMANDS));
        while self.in_flight.len() >= PIPELINES_IN_FLIGHT {
            if let Some(r) = self.in_flight.next().await {
                self.written += r?;
            }
        }
        self.in_flight.push(Box::pin(send(self.client, batch)));
        Ok(())
    }

    /// Sends what is left, waits for every reply; returns commands run.
    pub async fn finish(mut self) -> Result<u64, fred::error::Error> {
        if !self.pending.is_empty() {
            self.flush().await?;
        }
        while let Some(r) = self.in_flight.next().await {
            self.written += r?;
        }
        Ok(self.written)
    }
}

/// Writes `units` and returns the commands run.
pub async fn write_units<I>(client: &Client, units: I) -> Result<u64, fred::error::Error>
where
    I: IntoIterator<Item = Vec<Write>>,
{
    let mut w = BulkWriter::new(client);
    w.units(units).await?;
    w.finish().await
}
