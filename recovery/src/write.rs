//! Writing a fold into a fresh generation, fast and in bounded memory.
//!
//! The same keys and values as `history::redis_io::write_model` (built from
//! history's own hash and key helpers), sent differently: commands go out in
//! pipelines of [`PIPELINE_COMMANDS`] (one round trip each), several
//! pipelines in flight, and are materialised a pipeline at a time. Nothing
//! reads the generation before the bootstrap's commit, so no ordering
//! between keys is needed. The future stays `Send` (history's writer is not),
//! so the supervisor can run on a spawned task.

use crate::RecoveryError;
use fred::clients::Client;
use fred::interfaces::{HashesInterface, KeysInterface, SetsInterface, SortedSetsInterface};
use fred::types::Value;
use futures::future::BoxFuture;
use futures::stream::{FuturesUnordered, StreamExt};
use history::model::{player_hash, player_key, Model};
use history::SpilledMatches;
use rps_core::keys::GenerationKeys;
use tokio::sync::mpsc;

/// Commands per pipeline (one round trip).
pub const PIPELINE_COMMANDS: usize = 1000;
/// Pipelines in flight at once.
const PIPELINES_IN_FLIGHT: usize = 4;
/// Members per ZADD / SADD, so no single command gets huge.
const MEMBERS_PER_COMMAND: usize = 1000;

/// One write of the generation.
enum Write {
    Set(String, String),
    Hash(String, Vec<(String, String)>),
    ZAdd(String, Vec<(f64, String)>),
    SAdd(String, Vec<String>),
}

async fn send(redis: &Client, batch: Vec<Write>) -> Result<u64, RecoveryError> {
    let n = batch.len() as u64;
    let pipe = redis.pipeline();
    for w in batch {
        match w {
            Write::Set(k, v) => pipe.set::<(), _, _>(k, v, None, None, false).await?,
            Write::Hash(k, v) => pipe.hset::<(), _, _>(k, v).await?,
            Write::ZAdd(k, v) => {
                pipe.zadd::<(), _, _>(k, None, None, false, false, v)
                    .await?
            }
            Write::SAdd(k, v) => pipe.sadd::<(), _, _>(k, v).await?,
        }
    }
    let _: Value = pipe.all().await?;
    Ok(n)
}

/// Keeps up to [`PIPELINES_IN_FLIGHT`] pipelines going.
struct Sender<'a> {
    redis: &'a Client,
    in_flight: FuturesUnordered<BoxFuture<'a, Result<u64, RecoveryError>>>,
    written: u64,
}

impl<'a> Sender<'a> {
    fn new(redis: &'a Client) -> Self {
        Sender {
            redis,
            in_flight: FuturesUnordered::new(),
            written: 0,
        }
    }

    async fn submit(&mut self, batch: Vec<Write>) -> Result<(), RecoveryError> {
        if batch.is_empty() {
            return Ok(());
        }
        while self.in_flight.len() >= PIPELINES_IN_FLIGHT {
            if let Some(r) = self.in_flight.next().await {
                self.written += r?;
            }
        }
        self.in_flight.push(Box::pin(send(self.redis, batch)));
        Ok(())
    }

    async fn finish(mut self) -> Result<u64, RecoveryError> {
        while let Some(r) = self.in_flight.next().await {
            self.written += r?;
        }
        Ok(self.written)
    }
}

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
    let mut out = Sender::new(redis);
    let match_ids: Vec<i64> = model.matches.keys().copied().collect();
    for ids in match_ids.chunks(PIPELINE_COMMANDS) {
        let mut batch = Vec::with_capacity(ids.len());
        for id in ids {
            if let Some(m) = model.match_state(*id) {
                batch.push(Write::Set(g.match_state(*id), m.to_value()));
            }
        }
        out.submit(batch).await?;
    }
    let players: Vec<_> = model.counted_players().map(|(k, s)| (*k, *s)).collect();
    for chunk in players.chunks(PIPELINE_COMMANDS) {
        let mut batch = Vec::with_capacity(chunk.len());
        for (k, s) in chunk {
            batch.push(Write::Hash(player_key(g, k), player_hash(s)));
        }
        out.submit(batch).await?;
    }
    let mut rest = Vec::new();
    for (season, members) in model.boards() {
        for part in members.chunks(MEMBERS_PER_COMMAND) {
            rest.push(Write::ZAdd(g.board(season), scores(part)));
        }
    }
    let seasons: Vec<String> = model.seasons().iter().map(|s| s.to_string()).collect();
    for part in seasons.chunks(MEMBERS_PER_COMMAND) {
        rest.push(Write::SAdd(g.seasons(), part.to_vec()));
    }
    for part in model.deadlines().chunks(MEMBERS_PER_COMMAND) {
        rest.push(Write::ZAdd(g.deadlines(), scores(part)));
    }
    out.submit(rest).await?;
    out.finish().await
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
    let mut out = Sender::new(redis);
    let mut tally = SpillTally::default();
    while let Some(range) = ranges.recv().await {
        let mut batch = Vec::with_capacity(range.len() + 1);
        let mut deadlines = Vec::new();
        for (id, m) in &range {
            batch.push(Write::Set(g.match_state(*id), m.state(*id).to_value()));
            if let Some((member, ms)) = m.deadline_entry(*id, shard_count) {
                deadlines.push((ms as f64, member));
            }
        }
        tally.matches += range.len() as u64;
        tally.open_matches += deadlines.len() as u64;
        if !deadlines.is_empty() {
            batch.push(Write::ZAdd(g.deadlines(), deadlines));
        }
        out.submit(batch).await?;
    }
    tally.commands = out.finish().await?;
    Ok(tally)
}

fn scores(part: &[(String, i64)]) -> Vec<(f64, String)> {
    let mut v = Vec::with_capacity(part.len());
    for (m, s) in part {
        v.push((*s as f64, m.clone()));
    }
    v
}
