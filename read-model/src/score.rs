//! The second stage of a batch: a shard's player deltas, from its outbox,
//! into the player partitions.
//!
//! The shard's commit ([`crate::commit`]) stays in the shard's hash slot: it
//! appends the batch's player deltas to the shard's outbox, each tagged with
//! its event's sequence number, a count of the shard's stream entries
//! committed in the generation. Sequence numbers follow from the stream's
//! contents alone, so when a failover rolls the shard's slot back and the
//! same entries are applied again, they get the same numbers.
//!
//! [`Scorer::settle`] then applies the deltas to every partition with one
//! script per partition (`score.lua`, in the partition's slot): it checks
//! the partition's fence for the shard (the last sequence number it has),
//! adds the deltas numbered above it and moves the fence. Whatever crashes
//! or fails over, a delta is added once: a partition that has it is past
//! it. Every partition's fence moves with every batch, deltas or not, so a
//! fence says exactly what the partition has, and the applier settles a
//! batch everywhere before it commits the next.

use crate::keys::{board_member, counter_fields, GenerationKeys, Partition, ReadModelKeys};
use crate::redis_util::{hash_pairs, script_reply};
use fred::clients::Client;
use fred::interfaces::{HashesInterface, StreamsInterface};
use fred::types::scripts::Script;
use fred::types::Value;
use futures::future::join_all;
use rps_core::deadletter::DeadLetter;
use rps_core::fold::StatsDelta;
use rps_core::{Keys, PlayerStats, SeasonId, ShardId};
use std::collections::{BTreeSet, HashMap};
use std::sync::LazyLock;

static SCRIPT: LazyLock<Script> = LazyLock::new(|| {
    Script::from_lua(concat!(
        include_str!("prelude.lua"),
        include_str!("score.lua")
    ))
});

/// Forwards a shard's dead letters numbered above the fence.
/// KEYS: 1 the generation's forwarding fences, 2 the dead-letter stream
/// (one slot, `{dl}`). ARGV: 1 shard, 2 expected fence ('' = none yet),
/// 3 new fence, 4 letters; then per letter its field count and fields.
const FORWARD_LUA: &str = r#"
local cur = redis.call('HGET', KEYS[1], ARGV[1])
if (cur or '') ~= ARGV[2] then
  return {'FENCE', cur or ''}
end
local i = 5
for _ = 1, tonumber(ARGV[4]) do
  local n = tonumber(ARGV[i])
  redis.call('XADD', KEYS[2], '*', unpack(ARGV, i + 1, i + n))
  i = i + n + 1
end
redis.call('HSET', KEYS[1], ARGV[1], ARGV[3])
return {'OK', ''}
"#;

static FORWARD: LazyLock<Script> = LazyLock::new(|| Script::from_lua(FORWARD_LUA));

/// One player's change from one event, numbered by the event's place in
/// its shard's sequence.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ScoredDelta {
    pub seq: u64,
    pub delta: StatsDelta,
}

/// The outbox entry's `d` field: `seq:player:season:w:d:l:f`, comma
/// separated (the stored counters; `matches` is their sum).
pub fn encode_deltas(scored: &[ScoredDelta]) -> String {
    use std::fmt::Write;
    let mut out = String::with_capacity(scored.len() * 32);
    for (i, s) in scored.iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        let d = &s.delta;
        let [w, dr, l, f] = d.delta.stored_values();
        let _ = write!(
            out,
            "{}:{}:{}:{w}:{dr}:{l}:{f}",
            s.seq, d.player_id, d.season
        );
    }
    out
}

pub fn decode_deltas(text: &str) -> Result<Vec<ScoredDelta>, String> {
    text.split(',')
        .filter(|s| !s.is_empty())
        .map(|item| {
            let bad = || format!("outbox delta {item:?}");
            let mut p = item.split(':');
            let mut next = || p.next().ok_or_else(bad);
            let seq = next()?.parse().map_err(|_| bad())?;
            let player_id = next()?.parse().map_err(|_| bad())?;
            let season = next()?.parse().map_err(|_| bad())?;
            let mut v = [None; 4];
            for slot in v.iter_mut() {
                *slot = Some(next()?.parse::<i64>().map_err(|_| bad())?);
            }
            Ok(ScoredDelta {
                seq,
                delta: StatsDelta {
                    player_id,
                    season,
                    delta: PlayerStats::from_stored(&v),
                },
            })
        })
        .collect()
}

/// One rejection of a batch, numbered by its entry, on its way to the
/// dead-letter stream.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ScoredLetter {
    pub seq: u64,
    pub letter: DeadLetter,
}

/// A dead letter as the outbox keeps it: its number and its stream fields.
type LetterFields = (u64, Vec<(String, String)>);

/// The outbox entry's `dl` field: JSON `[[seq, [[field, value], …]], …]`,
/// empty for none.
pub fn encode_letters(letters: &[ScoredLetter]) -> String {
    if letters.is_empty() {
        return String::new();
    }
    let all: Vec<LetterFields> = letters.iter().map(ScoredLetter::fields).collect();
    serde_json::to_string(&all).unwrap_or_default()
}

impl ScoredLetter {
    /// Its number and its stream fields, as the outbox keeps them.
    fn fields(&self) -> LetterFields {
        let pairs = self.letter.to_pairs();
        (
            self.seq,
            pairs.into_iter().map(|(k, v)| (k.to_string(), v)).collect(),
        )
    }
}

fn decode_letters(text: &str) -> Result<Vec<LetterFields>, String> {
    if text.is_empty() {
        return Ok(Vec::new());
    }
    serde_json::from_str(text).map_err(|e| format!("outbox dead letters: {e}"))
}

/// Where a shard's batch goes after its commit: a player partition, or the
/// dead-letter stream.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Target {
    Partition(Partition),
    DeadLetters,
}

impl std::fmt::Display for Target {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Target::Partition(p) => write!(f, "partition {p}"),
            Target::DeadLetters => f.write_str("the dead-letter stream"),
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ScoreError {
    #[error("redis: {0}")]
    Redis(#[from] fred::error::Error),
    #[error("unexpected reply from the score script or the outbox: {0}")]
    Protocol(String),
    /// A target needs entries the outbox no longer has: its slot lost
    /// writes (a failover older than the outbox's retention, a restore).
    #[error(
        "{target} of generation {generation} has shard {shard} up to sequence {fence}, but \
         the shard's outbox starts after {outbox_from:?}: Redis lost player counts or dead \
         letters. Run `rpsctl replay` to rebuild the read models"
    )]
    Lost {
        generation: u64,
        shard: ShardId,
        target: Target,
        fence: u64,
        outbox_from: Option<u64>,
    },
    /// The generation was written with another partition count.
    #[error(
        "generation {generation} spreads the players over {recorded} partitions, but \
         `redis.partitions` is {configured}: set it to {recorded}, or run `rpsctl replay` \
         to rebuild the read models with {configured}"
    )]
    Layout {
        generation: u64,
        recorded: String,
        configured: u16,
    },
    /// The generation is not the active one any more.
    #[error("generation {expected} is no longer active (active: {active:?})")]
    GenerationMoved {
        expected: u64,
        active: Option<String>,
    },
    #[error("{target}'s fence for shard {shard} kept moving; another writer is active")]
    Contended { shard: ShardId, target: Target },
}

/// Applies one shard's outbox to the partitions of one generation.
pub struct Scorer {
    client: Client,
    keys: Keys,
    gk: GenerationKeys,
    shard: ShardId,
    require_active: bool,
    /// Each partition's fence for the shard; `None` until loaded.
    fences: Option<Vec<u64>>,
}

impl Scorer {
    pub fn new(
        client: Client,
        keys: Keys,
        generation: u64,
        shard: ShardId,
        require_active: bool,
    ) -> Self {
        Scorer {
            gk: keys.generation_keys(generation),
            keys,
            client,
            shard,
            require_active,
            fences: None,
        }
    }

    /// Forgets the fences: the next settle reads them again.
    pub fn invalidate(&mut self) {
        self.fences = None;
    }

    /// Whether every partition and the dead-letter stream are known to have
    /// the shard through `seq`.
    pub fn settled_through(&self, seq: u64) -> bool {
        self.fences
            .as_ref()
            .is_some_and(|f| f.iter().all(|x| *x >= seq))
    }

    /// Every target: the partitions in order, then the dead-letter stream
    /// (its fence is the last of [`Scorer::load_fences`]).
    fn targets(&self) -> impl Iterator<Item = Target> {
        self.gk
            .all_partitions()
            .map(Target::Partition)
            .chain([Target::DeadLetters])
    }

    /// Brings every partition and the dead-letter stream to the shard's
    /// sequence `through`. `batch` and `letters` hold what is numbered in
    /// `(from, through]` (the batch just committed, or nothing with `from
    /// == through`); older entries a target lacks are read from the outbox.
    pub async fn settle(
        &mut self,
        from: u64,
        through: u64,
        batch: &[ScoredDelta],
        letters: &[ScoredLetter],
    ) -> Result<(), ScoreError> {
        let mut conflicts = 0;
        loop {
            let fences = match self.fences.take() {
                Some(f) => f,
                None => self.load_fences().await?,
            };
            let lowest = fences.iter().copied().min().unwrap_or(through);
            if lowest >= through {
                self.fences = Some(fences);
                return Ok(());
            }
            let mut deltas: Vec<ScoredDelta> = Vec::new();
            let mut dead: Vec<LetterFields> = Vec::new();
            if lowest < from {
                let at = fences.iter().position(|f| *f == lowest).unwrap_or(0);
                let target = self.targets().nth(at).unwrap_or(Target::DeadLetters);
                (deltas, dead) = self.read_outbox(lowest, target).await?;
                deltas.retain(|d| d.seq <= from);
                dead.retain(|(seq, _)| *seq <= from);
            }
            deltas.extend_from_slice(batch);
            dead.extend(letters.iter().map(ScoredLetter::fields));
            let behind: Vec<(usize, Target)> = self
                .targets()
                .enumerate()
                .filter(|(i, _)| fences[*i] < through)
                .collect();
            let calls = behind.iter().map(|(i, target)| {
                let fence = fences[*i];
                let (script, keys, args) = match target {
                    Target::Partition(p) => {
                        let mine = deltas.iter().filter(|d| {
                            d.seq > fence && self.gk.partition_of(d.delta.player_id) == *p
                        });
                        let (keys, args) = self.script_args(*p, fence, through, mine);
                        (&*SCRIPT, keys, args)
                    }
                    Target::DeadLetters => {
                        let mine = dead.iter().filter(|(seq, _)| *seq > fence);
                        let (keys, args) = self.forward_args(fence, through, mine);
                        (&*FORWARD, keys, args)
                    }
                };
                script.evalsha_with_reload::<Value, _, _>(&self.client, keys, args)
            });
            let replies = join_all(calls).await;
            let mut fences = fences;
            let mut moved = false;
            let mut failed = None;
            for ((i, _), reply) in behind.iter().zip(replies) {
                let reply = match reply {
                    Ok(r) => r,
                    Err(e) => {
                        failed = Some(e);
                        continue;
                    }
                };
                let (status, detail) = script_reply(reply);
                match status.as_str() {
                    "OK" => fences[*i] = through,
                    "FENCE" => {
                        fences[*i] = detail.parse().unwrap_or(0);
                        moved = true;
                    }
                    "LAYOUT" => {
                        return Err(ScoreError::Layout {
                            generation: self.gk.generation,
                            recorded: detail,
                            configured: self.gk.partitions(),
                        })
                    }
                    "GENERATION" => {
                        return Err(ScoreError::GenerationMoved {
                            expected: self.gk.generation,
                            active: (!detail.is_empty()).then_some(detail),
                        })
                    }
                    other => return Err(ScoreError::Protocol(other.to_string())),
                }
            }
            if let Some(e) = failed {
                // What the failed calls did is unknown: read the fences again.
                return Err(e.into());
            }
            self.fences = Some(fences);
            if !moved {
                return Ok(());
            }
            conflicts += 1;
            if conflicts >= 5 {
                self.fences = None;
                return Err(ScoreError::Contended {
                    shard: self.shard,
                    target: behind[0].1,
                });
            }
        }
    }

    fn forward_args<'a, I>(
        &self,
        fence: u64,
        through: u64,
        letters: I,
    ) -> (Vec<String>, Vec<String>)
    where
        I: Iterator<Item = &'a LetterFields>,
    {
        let keys = vec![self.gk.deadletter_fences(), self.keys.deadletter()];
        let mut a = vec![
            self.shard.to_string(),
            fence_arg(fence),
            through.to_string(),
            String::new(),
        ];
        let mut n = 0;
        for (_, fields) in letters {
            n += 1;
            a.push((fields.len() * 2).to_string());
            for (k, v) in fields {
                a.push(k.clone());
                a.push(v.clone());
            }
        }
        a[3] = n.to_string();
        (keys, a)
    }

    async fn load_fences(&self) -> Result<Vec<u64>, ScoreError> {
        let field = self.shard.to_string();
        let calls = self.gk.all_partitions().map(|p| {
            self.client
                .hget::<Option<u64>, _, _>(self.gk.fences(p), field.clone())
        });
        let mut out = Vec::with_capacity(self.gk.partitions() as usize + 1);
        for r in join_all(calls).await {
            out.push(r?.unwrap_or(0));
        }
        let forwarded: Option<u64> = self.client.hget(self.gk.deadletter_fences(), field).await?;
        out.push(forwarded.unwrap_or(0));
        Ok(out)
    }

    /// The deltas and dead letters numbered above `lowest` (the fence of
    /// `target`, the furthest behind) that the outbox holds; `Lost` when it no longer has
    /// all of them.
    async fn read_outbox(
        &self,
        lowest: u64,
        target: Target,
    ) -> Result<(Vec<ScoredDelta>, Vec<LetterFields>), ScoreError> {
        let entries: Vec<Value> = self
            .client
            .xrange::<Value, _, _, _>(self.gk.outbox(self.shard), "-", "+", None)
            .await?
            .into_array();
        let mut out = Vec::new();
        let mut letters = Vec::new();
        // The entries chain (each starts where the one before ended); the
        // first one that reaches above a fence must start at or below it.
        let mut first_from = None;
        for e in entries {
            let mut parts = e.into_array().into_iter();
            let _id = parts.next();
            let fields = parts
                .next()
                .and_then(hash_pairs)
                .ok_or_else(|| ScoreError::Protocol("outbox entry without fields".into()))?;
            let get = |k: &str| fields.iter().find(|(f, _)| f == k).map(|(_, v)| v.as_str());
            let q0: u64 = get("q0").and_then(|v| v.parse().ok()).unwrap_or(0);
            let q1: u64 = get("q1")
                .and_then(|v| v.parse().ok())
                .ok_or_else(|| ScoreError::Protocol("outbox entry without q1".into()))?;
            if q1 <= lowest {
                continue;
            }
            first_from.get_or_insert(q0);
            let d = decode_deltas(get("d").unwrap_or_default()).map_err(ScoreError::Protocol)?;
            out.extend(d.into_iter().filter(|d| d.seq > lowest));
            let dl = decode_letters(get("dl").unwrap_or_default()).map_err(ScoreError::Protocol)?;
            letters.extend(dl.into_iter().filter(|(seq, _)| *seq > lowest));
        }
        if first_from.is_none_or(|q0| q0 > lowest) {
            return Err(ScoreError::Lost {
                generation: self.gk.generation,
                shard: self.shard,
                target,
                fence: lowest,
                outbox_from: first_from,
            });
        }
        Ok((out, letters))
    }

    fn script_args<'a, I>(
        &self,
        partition: Partition,
        fence: u64,
        through: u64,
        deltas: I,
    ) -> (Vec<String>, Vec<String>)
    where
        I: Iterator<Item = &'a ScoredDelta>,
    {
        let mut scopes: HashMap<Option<SeasonId>, HashMap<i64, PlayerStats>> = HashMap::new();
        let mut seasons = BTreeSet::new();
        for d in deltas {
            let d = &d.delta;
            for scope in [None, Some(d.season)] {
                scopes
                    .entry(scope)
                    .or_default()
                    .entry(d.player_id)
                    .or_default()
                    .add(&d.delta);
            }
            seasons.insert(d.season);
        }
        let mut keys = vec![
            self.keys.marker_in_partition(partition),
            self.gk.fences(partition),
            self.gk.seasons(partition),
        ];
        let mut a = vec![
            self.gk.generation.to_string(),
            if self.require_active { "1" } else { "0" }.to_string(),
            self.shard.to_string(),
            fence_arg(fence),
            through.to_string(),
            scopes.len().to_string(),
            seasons.len().to_string(),
            self.gk.partitions().to_string(),
        ];
        a.extend(seasons.iter().map(SeasonId::to_string));
        for (season, players) in &scopes {
            let players: Vec<(&i64, &PlayerStats)> =
                players.iter().filter(|(_, d)| !d.is_zero()).collect();
            let fields: Vec<(String, i64)> = players
                .iter()
                .flat_map(|(p, d)| counter_fields(**p).into_iter().zip(d.stored_values()))
                .filter(|(_, v)| *v != 0)
                .collect();
            keys.push(self.gk.board(partition, *season));
            keys.push(self.gk.counters(partition, *season));
            a.push(players.len().to_string());
            a.push(fields.len().to_string());
            a.extend(players.iter().map(|(p, _)| board_member(**p)));
            a.extend(players.iter().map(|(_, d)| d.board_score().to_string()));
            a.extend(fields.iter().map(|(f, _)| f.clone()));
            a.extend(fields.iter().map(|(_, v)| v.to_string()));
        }
        (keys, a)
    }
}

/// A fence as the scripts take it: empty for 0, a partition that has
/// nothing of the shard yet.
fn fence_arg(fence: u64) -> String {
    if fence == 0 {
        String::new()
    } else {
        fence.to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn deltas_round_trip() {
        let d = |seq, player_id, w, l| ScoredDelta {
            seq,
            delta: StatsDelta {
                player_id,
                season: "2026Q4".parse().unwrap(),
                delta: PlayerStats {
                    matches: w + l,
                    wins: w,
                    losses: l,
                    ..Default::default()
                },
            },
        };
        let all = vec![d(3, 17, 1, 0), d(3, 18, 0, 1), d(9, -4, -1, 0)];
        assert_eq!(decode_deltas(&encode_deltas(&all)).unwrap(), all);
        assert_eq!(decode_deltas("").unwrap(), vec![]);
        assert!(decode_deltas("3:x").is_err());
    }
}
