//! Apply: the atomic publish steps.
//!
//! A batch is written as one Lua script (EVALSHA) per *target* it touches —
//! a shard's stream, or the dead letters — each in the target's own hash
//! slot (Redis Cluster runs a script on the keys of one slot only): it XADDs
//! the target's items and sets the target's checkpoint, but only if that
//! checkpoint still holds the value this reader last wrote. Once every
//! target step of the batch succeeded, a last step sets the server's
//! checkpoint, where a restart resumes, recording the step number of each
//! target's last step.
//!
//! A crash between a batch's steps leaves some targets ahead of the server
//! checkpoint: the next run resumes from it and skips, per target, what the
//! target's own checkpoint says it has ([`Resume::ahead`]). A slot rolled
//! back by a failover (asynchronous replication loses a master's last
//! writes) shows as a target checkpoint older than the step the server
//! checkpoint recorded for it, and the next run resumes from that target's
//! checkpoint instead. A zombie reader (an old process, a second instance)
//! fails with `FENCED` instead of interleaving; a reply lost on the wire is
//! resolved the same way: the retried session re-reads the checkpoints.
//!
//! Beside plain XADDs a batch carries the steps of XA branches
//! ([`crate::xa`]): items XADDed to a branch's hold stream of their target,
//! the branch's registry entry and match set, and the release (hold → the
//! target's stream) or drop of a decided branch, all in the target's step,
//! with the checkpoint that covers them.
//!
//! Each entry of a sampled match gets a `publish <type>` span of its trace
//! (from the moment the row joined the batch to the step's answer), and a
//! `started` of version 1 the match's root span (`rps_telemetry`). Items of
//! XA branches are not traced: they reach the batch as bare field pairs.

use crate::error::{Definite, SessionError, Transient};
use fred::prelude::*;
use fred::types::scripts::Script;
use fred::types::Value;
use rps_core::checkpoint::{Checkpoint, Stamp};
use rps_core::deadletter::DeadLetter;
use rps_core::keys::PublishTarget;
use rps_core::redis_client::{is_certificate_rejection, ClientPolicy};
use rps_core::retry::ErrorClass;
use rps_core::{Config, StreamEvent};
use rps_telemetry::{attr, Component, KeyValue, SpanKind, SpanStart};
use std::collections::{BTreeMap, HashMap};
use std::time::SystemTime;

/// One target's step. KEYS: 1 the target's checkpoint, 2 its stream (a
/// shard's, or the dead letters), then the batch's own keys of the target
/// (XA holds, match sets, registry). The server's step is the same script
/// with its checkpoint alone.
/// ARGV: 1 expected checkpoint ('' = none), 2 new checkpoint, then ops:
/// - `k>0, c, c fields and values`: XADD to KEYS[k];
/// - `-1, k, field, value`: HSET;
/// - `-2, k, member`: SADD;
/// - `-3, hold, matches, registry, field, max`: move up to `max` held items
///   to the stream and delete them from the hold; `max` 0 moves all and
///   forgets the branch (`matches` 0: the target keeps no match set);
/// - `-4, hold, matches, registry, field`: forget the branch and its items;
/// - `-5, hold, c, c fields and values`: XADD an item to a hold;
/// - `-6, hold, c, …`: the same item, committed in this very step: XADD
///   to the stream;
/// - `-7, n, n values`: nothing (an op undone in place).
///
/// Returns how many items the last bounded release left in its hold.
pub const PUBLISH_LUA: &str = r#"
local cur = redis.call('GET', KEYS[1])
if cur == false then cur = '' end
if cur ~= ARGV[1] then
  return redis.error_reply('FENCED checkpoint changed by another writer')
end
local left = 0
local i = 3
local n = #ARGV
local function forget(hold, matches, registry, field)
  redis.call('UNLINK', KEYS[hold])
  if matches > 0 then redis.call('UNLINK', KEYS[matches]) end
  redis.call('HDEL', KEYS[registry], field)
end
while i <= n do
  local op = tonumber(ARGV[i])
  if op > 0 then
    local c = tonumber(ARGV[i + 1])
    redis.call('XADD', KEYS[op], '*', unpack(ARGV, i + 2, i + 1 + c))
    i = i + 2 + c
  elseif op == -1 then
    redis.call('HSET', KEYS[tonumber(ARGV[i + 1])], ARGV[i + 2], ARGV[i + 3])
    i = i + 4
  elseif op == -2 then
    redis.call('SADD', KEYS[tonumber(ARGV[i + 1])], ARGV[i + 2])
    i = i + 3
  elseif op == -3 then
    local hold = KEYS[tonumber(ARGV[i + 1])]
    local max = tonumber(ARGV[i + 5])
    local items
    if max > 0 then
      items = redis.call('XRANGE', hold, '-', '+', 'COUNT', max)
    else
      items = redis.call('XRANGE', hold, '-', '+')
    end
    for _, e in ipairs(items) do
      redis.call('XADD', KEYS[2], '*', unpack(e[2]))
    end
    if max > 0 then
      if #items > 0 then
        local ms, seq = string.match(items[#items][1], '(%d+)-(%d+)')
        redis.call('XTRIM', hold, 'MINID', '=', ms .. '-' .. string.format('%d', tonumber(seq) + 1))
      end
      left = redis.call('XLEN', hold)
    else
      forget(tonumber(ARGV[i + 1]), tonumber(ARGV[i + 2]), tonumber(ARGV[i + 3]), ARGV[i + 4])
    end
    i = i + 6
  elseif op == -4 then
    forget(tonumber(ARGV[i + 1]), tonumber(ARGV[i + 2]), tonumber(ARGV[i + 3]), ARGV[i + 4])
    i = i + 5
  elseif op == -5 or op == -6 then
    local c = tonumber(ARGV[i + 2])
    local to = KEYS[2]
    if op == -5 then to = KEYS[tonumber(ARGV[i + 1])] end
    redis.call('XADD', to, '*', unpack(ARGV, i + 3, i + 2 + c))
    i = i + 3 + c
  else
    i = i + 2 + tonumber(ARGV[i + 1])
  end
end
redis.call('SET', KEYS[1], ARGV[2])
return left
"#;

/// KEYS index of the target's stream in its step.
const STREAM_KEY: i64 = 2;
/// KEYS index of a batch's first own key in a target's step.
const FIRST_OWN_KEY: usize = 3;

/// Op codes of [`PUBLISH_LUA`] beside XADD.
const OP_HSET: i64 = -1;
const OP_SADD: i64 = -2;
const OP_RELEASE: i64 = -3;
const OP_DROP: i64 = -4;
const OP_HOLD: i64 = -5;
const OP_HOLD_COMMITTED: i64 = -6;
const OP_SKIP: i64 = -7;

/// The keys of one XA branch in one target's slot.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BranchKeys {
    pub target: PublishTarget,
    pub hold: String,
    /// The branch's match set; the dead letters keep none.
    pub matches: Option<String>,
    pub registry: String,
    /// The branch's field in the registry ([`rps_core::Xid::key`]).
    pub field: String,
}

/// A point in a batch to roll back to (see [`Batch::truncate`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BatchMark {
    args: usize,
    ops: usize,
    bytes: usize,
    entries: u64,
    dead: usize,
    traced: usize,
    /// Which filling of the batch the mark belongs to: a flush starts a new one.
    epoch: u64,
}

/// A target's own keys in the batch being filled, in KEYS order from
/// [`FIRST_OWN_KEY`].
#[derive(Default)]
struct OwnKeys {
    list: Vec<String>,
    index: HashMap<String, usize>,
}

/// Entries and dead letters waiting for the next publish steps.
#[derive(Default)]
pub struct Batch {
    /// Every op in binlog order, each with its keys indexed in its target's
    /// step ([`PUBLISH_LUA`]).
    args: Vec<Value>,
    /// Where each op starts in `args`, and its target's index.
    ops: Vec<(usize, usize)>,
    /// Approximate size of the arguments, to bound memory per step.
    pub bytes: usize,
    pub entries: u64,
    /// Dead letters by kind, for metrics after the step succeeded.
    pub dead: Vec<String>,
    /// XA steps (holds, registry, releases) in the batch.
    pub xa_ops: u64,
    /// Rows of committed branches the batch releases, for metrics.
    pub released: u64,
    /// By target index.
    own_keys: Vec<OwnKeys>,
    /// The dead letters' target index, once an op of theirs is in.
    dead_letters: Option<usize>,
    epoch: u64,
    /// Entries of sampled matches and when each joined the batch; empty
    /// (and never allocated) while tracing is off.
    traced: Vec<(StreamEvent, SystemTime)>,
}

/// A batch cut into its targets' steps.
struct Steps {
    /// By target index: the step's ops (empty: the target is not touched).
    args: Vec<Vec<Value>>,
    own_keys: Vec<OwnKeys>,
}

impl Batch {
    pub fn is_empty(&self) -> bool {
        self.entries == 0 && self.dead.is_empty() && self.xa_ops == 0
    }

    /// Items that count towards the batch's row bound.
    pub fn items(&self) -> u64 {
        self.entries + self.dead.len() as u64 + self.xa_ops
    }

    pub fn clear(&mut self) {
        self.args.clear();
        self.ops.clear();
        self.bytes = 0;
        self.entries = 0;
        self.dead.clear();
        self.xa_ops = 0;
        self.released = 0;
        for k in &mut self.own_keys {
            k.list.clear();
            k.index.clear();
        }
        self.traced.clear();
        self.epoch += 1;
    }

    pub fn mark(&self) -> BatchMark {
        BatchMark {
            args: self.args.len(),
            ops: self.ops.len(),
            bytes: self.bytes,
            entries: self.entries,
            dead: self.dead.len(),
            traced: self.traced.len(),
            epoch: self.epoch,
        }
    }

    /// Which filling of the batch this is: a flush starts a new one, after
    /// which indices of earlier ops mean nothing.
    pub fn epoch(&self) -> u64 {
        self.epoch
    }

    /// Starts an op of target `target`; returns its index in `args`.
    fn begin_op(&mut self, target: usize) -> usize {
        let at = self.args.len();
        self.ops.push((at, target));
        at
    }

    /// The KEYS index of a key of a target's own.
    fn own_key(&mut self, target: usize, key: &str) -> i64 {
        if self.own_keys.len() <= target {
            self.own_keys.resize_with(target + 1, OwnKeys::default);
        }
        let own = &mut self.own_keys[target];
        let at = match own.index.get(key) {
            Some(i) => *i,
            None => {
                own.list.push(key.to_string());
                let i = own.list.len() - 1;
                own.index.insert(key.to_string(), i);
                i
            }
        };
        (FIRST_OWN_KEY + at) as i64
    }

    /// A branch whose every step is still in this batch is decided in this
    /// batch: its held items go straight to their streams (`commit`) or
    /// nowhere, and its match-set and registry steps are undone, so a
    /// short branch costs what a plain transaction costs. `ops` are the
    /// indices the push methods returned in this epoch.
    pub fn decide_in_place(&mut self, ops: &[usize], commit: bool) {
        for &i in ops {
            match self.args.get(i) {
                Some(Value::Integer(OP_HOLD)) => {
                    if commit {
                        self.args[i] = Value::Integer(OP_HOLD_COMMITTED);
                        if self.is_shard_op(i) {
                            self.entries += 1;
                        }
                    } else {
                        let c = match &self.args[i + 2] {
                            Value::Integer(c) => *c,
                            _ => 0,
                        };
                        self.skip(i, 1 + c);
                    }
                }
                Some(Value::Integer(OP_HSET)) => self.skip(i, 2),
                Some(Value::Integer(OP_SADD)) => self.skip(i, 1),
                _ => {}
            }
        }
    }

    fn skip(&mut self, i: usize, len: i64) {
        self.args[i] = Value::Integer(OP_SKIP);
        self.args[i + 1] = Value::Integer(len);
    }

    /// Whether the op at `args[i]` goes to a shard (not the dead letters).
    fn is_shard_op(&self, i: usize) -> bool {
        let k = self.ops.partition_point(|(start, _)| *start < i);
        self.ops
            .get(k)
            .is_none_or(|(_, t)| Some(*t) != self.dead_letters)
    }

    /// Drops what was added since `mark`; false if the batch was flushed
    /// since (what came before the flush is out already).
    pub fn truncate(&mut self, mark: BatchMark) -> bool {
        if mark.epoch != self.epoch {
            return false;
        }
        self.args.truncate(mark.args);
        self.ops.truncate(mark.ops);
        self.bytes = mark.bytes;
        self.entries = mark.entries;
        self.dead.truncate(mark.dead);
        self.traced.truncate(mark.traced);
        true
    }

    fn push_pairs(&mut self, target: usize, key_index: i64, pairs: Vec<(&'static str, String)>) {
        self.begin_op(target);
        self.args.reserve(2 + pairs.len() * 2);
        self.args.push(Value::Integer(key_index));
        self.args.push(Value::Integer(pairs.len() as i64 * 2));
        self.push_fields(pairs);
    }

    fn push_fields(&mut self, pairs: Vec<(&'static str, String)>) {
        for (f, v) in pairs {
            // Value, field name and the argument's own bookkeeping.
            self.bytes += v.len() + f.len() + 2 * std::mem::size_of::<Value>();
            self.args.push(Value::String(f.into()));
            self.args.push(Value::String(v.into()));
        }
    }

    /// Cuts the batch into one step per target (ops undone in place
    /// dropped) and empties it.
    fn take_steps(&mut self, targets: usize) -> Steps {
        let mut args: Vec<Vec<Value>> = (0..targets).map(|_| Vec::new()).collect();
        let total = self.args.len();
        let mut values = std::mem::take(&mut self.args).into_iter();
        let ops = std::mem::take(&mut self.ops);
        for (k, &(start, t)) in ops.iter().enumerate() {
            let end = ops.get(k + 1).map_or(total, |o| o.0);
            let Some(first) = values.next() else { break };
            if matches!(first, Value::Integer(OP_SKIP)) || t >= targets {
                values.by_ref().take(end - start - 1).for_each(drop);
                continue;
            }
            let step = &mut args[t];
            step.push(first);
            step.extend(values.by_ref().take(end - start - 1));
        }
        let mut own_keys = std::mem::take(&mut self.own_keys);
        own_keys.resize_with(targets, OwnKeys::default);
        self.clear();
        Steps { args, own_keys }
    }
}

/// The connection to Redis of one server's reader, and its fences.
pub struct Publisher {
    client: Client,
    server: String,
    script: Script,
    writer: String,
    /// The step number of the last batch (across reader runs: it starts
    /// above every stored checkpoint's).
    seq: u64,
    shard_count: u16,
    /// By [`PublishTarget::index`].
    targets: Vec<TargetState>,
    server_key: String,
    /// What the server checkpoint key holds now, as far as this reader knows.
    server_expected: String,
    /// Target name → step number of its last step, for the server checkpoint.
    steps: BTreeMap<String, u64>,
}

struct TargetState {
    target: PublishTarget,
    checkpoint_key: String,
    stream: String,
    /// What the target's checkpoint key holds now, as far as this reader knows.
    expected: String,
}

/// Where a reader resumes, read from the checkpoints.
#[derive(Debug, Default)]
pub struct Resume {
    /// Where to stream from; None when the server has no checkpoint yet.
    pub start: Option<Checkpoint>,
    /// The target checkpoints at or past the start, by target index: each
    /// says what its target already has of the groups read again.
    pub ahead: Vec<(usize, Checkpoint)>,
}

/// Items moved per step when a large branch commits, so one step never
/// blocks Redis for long.
pub const RELEASE_CHUNK: u64 = 4096;

pub(crate) fn redis_err(server: &str) -> impl Fn(fred::error::Error) -> Transient + '_ {
    move |source| Transient::Redis {
        server: server.to_string(),
        source,
    }
}

/// A client with the [`ClientPolicy::publisher`] preset (bounded command
/// time, so a dead Redis surfaces as an error and a reconnect with backoff
/// instead of a hang), its connect error sorted by
/// [`rps_core::retry::classify_redis`].
pub async fn connect_redis(
    redis: &rps_core::config::RedisConfig,
    server: &str,
) -> Result<Client, SessionError> {
    // A publish is never silently replayed on another connection: the
    // checkpoint's compare-and-set decides after a reconnect.
    ClientPolicy::publisher().connect(redis).await.map_err(|e| {
        let (server, redis_url, message) = (server.to_string(), redis.display_url(), e.to_string());
        match rps_core::retry::classify_redis(&e) {
            ErrorClass::Transient => redis_err(&server)(e).into(),
            ErrorClass::Definite if is_certificate_rejection(&e) => Definite::RedisTls {
                server,
                redis: redis_url,
                message,
            }
            .into(),
            ErrorClass::Definite => Definite::RedisConfig {
                server,
                redis: redis_url,
                message,
            }
            .into(),
        }
    })
}

/// A stored checkpoint, decoded, with the raw value its compare-and-set expects.
struct Stored {
    raw: String,
    checkpoint: Checkpoint,
    stamp: Stamp,
}

async fn read_checkpoint(
    client: &Client,
    server: &str,
    key: &str,
) -> Result<Option<Stored>, SessionError> {
    let raw: Option<String> = client.get(key).await.map_err(redis_err(server))?;
    let Some(raw) = raw else { return Ok(None) };
    if rps_core::checkpoint::is_bootstrap_fence(&raw) {
        return Err(Transient::Bootstrapping {
            server: server.to_string(),
            key: key.to_string(),
            value: raw,
        }
        .into());
    }
    let (checkpoint, stamp) =
        Checkpoint::decode_stamped(&raw).map_err(|e| Definite::BadCheckpoint {
            server: server.to_string(),
            key: key.to_string(),
            message: e.0,
        })?;
    Ok(Some(Stored {
        raw,
        checkpoint,
        stamp,
    }))
}

impl Publisher {
    /// Connects, loads the script, creates the projector group on every
    /// shard stream, and reads the checkpoints: where to resume, and what
    /// each target already has past that point.
    pub async fn connect(
        config: &Config,
        server_index: usize,
    ) -> Result<(Publisher, Resume), SessionError> {
        let name = config.servers[server_index].name.clone();
        let client = connect_redis(&config.redis, &name).await?;
        let keys = config.keys();
        // Every shard's stream is a target, so a shard database found on an
        // unexpected server still lands in its own stream.
        let mut targets = Vec::new();
        for target in PublishTarget::all(config.shard_count) {
            let stream = match target {
                PublishTarget::Shard(s) => {
                    let k = keys.events(s);
                    rps_core::redis_client::create_projector_group(&client, &k)
                        .await
                        .map_err(redis_err(&name))?;
                    k
                }
                PublishTarget::DeadLetters => keys.deadletter(),
            };
            targets.push(TargetState {
                target,
                checkpoint_key: keys.cdc_target_checkpoint(&name, target),
                stream,
                expected: String::new(),
            });
        }
        // Loaded on every master: EVALSHA goes to the target's node.
        let script = Script::from_lua(PUBLISH_LUA);
        script.load(&client).await.map_err(redis_err(&name))?;
        let server_key = keys.cdc_checkpoint(&name);
        let server_ck = read_checkpoint(&client, &name, &server_key).await?;
        let reads = targets
            .iter()
            .map(|t| read_checkpoint(&client, &name, &t.checkpoint_key));
        let target_cks = futures::future::join_all(reads).await;
        let mut stored = Vec::with_capacity(targets.len());
        for (t, r) in targets.iter_mut().zip(target_cks) {
            let r = r?;
            t.expected = r.as_ref().map(|s| s.raw.clone()).unwrap_or_default();
            stored.push(r);
        }
        let seq = stored
            .iter()
            .flatten()
            .chain(server_ck.iter())
            .map(|s| s.stamp.seq)
            .max()
            .unwrap_or(0);
        let mut publisher = Publisher {
            client,
            server: name,
            script,
            writer: uuid::Uuid::new_v4().simple().to_string(),
            seq,
            shard_count: config.shard_count,
            targets,
            server_key,
            server_expected: String::new(),
            steps: BTreeMap::new(),
        };
        let Some(server_ck) = server_ck else {
            return Ok((publisher, Resume::default()));
        };
        publisher.server_expected = server_ck.raw.clone();
        publisher.steps = server_ck.stamp.targets.clone();
        let resume = publisher.resume(server_ck, stored)?;
        Ok((publisher, resume))
    }

    /// Where to resume: the server checkpoint, or the oldest target
    /// checkpoint that lost steps the server checkpoint recorded.
    fn resume(
        &mut self,
        server_ck: Stored,
        stored: Vec<Option<Stored>>,
    ) -> Result<Resume, SessionError> {
        let mut start = (server_ck.checkpoint, server_ck.stamp.seq);
        for (t, ck) in self.targets.iter().zip(&stored) {
            let name = t.target.name();
            let Some(&recorded) = self.steps.get(&name) else {
                continue;
            };
            let Some(ck) = ck else {
                return Err(Definite::TargetCheckpointLost {
                    server: self.server.clone(),
                    key: t.checkpoint_key.clone(),
                    server_key: self.server_key.clone(),
                }
                .into());
            };
            if ck.stamp.seq < recorded {
                tracing::warn!(
                    target_key = %t.checkpoint_key, has = ck.stamp.seq, recorded,
                    gtid = %ck.checkpoint.gtid,
                    "a target lost its last publish steps (a Redis failover rolled its slot back): \
                     resuming from its checkpoint, the other targets skip what they have"
                );
                if ck.stamp.seq < start.1 {
                    start = (ck.checkpoint.clone(), ck.stamp.seq);
                }
                // Taken as it is: what came after it is published again.
                self.steps.insert(name, ck.stamp.seq);
            }
        }
        let ahead = stored
            .into_iter()
            .enumerate()
            .filter_map(|(i, s)| {
                s.filter(|s| s.stamp.seq >= start.1)
                    .map(|s| (i, s.checkpoint))
            })
            .collect();
        Ok(Resume {
            start: Some(start.0),
            ahead,
        })
    }

    pub fn client(&self) -> &Client {
        &self.client
    }

    pub fn server(&self) -> &str {
        &self.server
    }

    pub fn shard_count(&self) -> u16 {
        self.shard_count
    }

    /// How many targets a batch can touch ([`PublishTarget::index`]).
    pub fn target_count(&self) -> usize {
        self.targets.len()
    }

    fn index(&self, target: PublishTarget) -> usize {
        target.index(self.shard_count)
    }

    /// Adds an entry for its shard's stream.
    pub fn push_entry(&self, batch: &mut Batch, ev: &StreamEvent) {
        let t = self.index(PublishTarget::Shard(ev.shard));
        batch.push_pairs(t, STREAM_KEY, ev.to_pairs());
        batch.entries += 1;
        if rps_telemetry::sampled(ev.event.match_id) {
            batch.traced.push((ev.clone(), SystemTime::now()));
        }
    }

    pub fn push_dead(&self, batch: &mut Batch, dl: &DeadLetter) {
        let t = self.index(PublishTarget::DeadLetters);
        batch.dead_letters = Some(t);
        batch.push_pairs(t, STREAM_KEY, dl.to_pairs());
        batch.dead.push(dl.kind.clone());
    }

    /// Adds an item to a prepared branch's hold instead of its stream;
    /// returns the op's index (see [`Batch::decide_in_place`]).
    pub fn push_held(
        &self,
        batch: &mut Batch,
        keys: &BranchKeys,
        pairs: Vec<(&'static str, String)>,
    ) -> usize {
        let t = self.index(keys.target);
        if keys.target == PublishTarget::DeadLetters {
            batch.dead_letters = Some(t);
        }
        let k = batch.own_key(t, &keys.hold);
        let at = batch.begin_op(t);
        batch.args.reserve(3 + pairs.len() * 2);
        batch.args.extend([
            Value::Integer(OP_HOLD),
            Value::Integer(k),
            Value::Integer(pairs.len() as i64 * 2),
        ]);
        batch.push_fields(pairs);
        batch.xa_ops += 1;
        at
    }

    pub fn push_hset(
        &self,
        batch: &mut Batch,
        target: PublishTarget,
        key: &str,
        field: &str,
        value: String,
    ) -> usize {
        let t = self.index(target);
        let k = batch.own_key(t, key);
        let at = batch.begin_op(t);
        batch.args.extend([
            Value::Integer(OP_HSET),
            Value::Integer(k),
            Value::String(field.into()),
            Value::String(value.into()),
        ]);
        batch.xa_ops += 1;
        at
    }

    pub fn push_sadd(
        &self,
        batch: &mut Batch,
        target: PublishTarget,
        key: &str,
        member: String,
    ) -> usize {
        let t = self.index(target);
        let k = batch.own_key(t, key);
        batch.bytes += member.len() + 3 * std::mem::size_of::<Value>();
        let at = batch.begin_op(t);
        batch.args.extend([
            Value::Integer(OP_SADD),
            Value::Integer(k),
            Value::String(member.into()),
        ]);
        batch.xa_ops += 1;
        at
    }

    /// The KEYS of a branch's hold, match set and registry in its target's step.
    fn branch_key_args(&self, batch: &mut Batch, b: &BranchKeys) -> (usize, [Value; 4]) {
        let t = self.index(b.target);
        let matches = match &b.matches {
            Some(m) => batch.own_key(t, m),
            None => 0,
        };
        let keys = [
            Value::Integer(batch.own_key(t, &b.hold)),
            Value::Integer(matches),
            Value::Integer(batch.own_key(t, &b.registry)),
            Value::String(b.field.clone().into()),
        ];
        (t, keys)
    }

    /// Moves a committed branch's held items of one target to its stream:
    /// all of them, forgetting the branch there (`max` None), or at most `max`.
    pub fn push_release(&self, batch: &mut Batch, b: &BranchKeys, max: Option<u64>) {
        let (t, keys) = self.branch_key_args(batch, b);
        batch.begin_op(t);
        batch.args.push(Value::Integer(OP_RELEASE));
        batch.args.extend(keys);
        batch.args.push(Value::Integer(max.unwrap_or(0) as i64));
        batch.xa_ops += 1;
    }

    /// Forgets a rolled-back branch and everything it held for one target.
    pub fn push_drop(&self, batch: &mut Batch, b: &BranchKeys) {
        let (t, keys) = self.branch_key_args(batch, b);
        batch.begin_op(t);
        batch.args.push(Value::Integer(OP_DROP));
        batch.args.extend(keys);
        batch.xa_ops += 1;
    }

    /// Writes the batch: one step per target it touches, each with the
    /// target's checkpoint (`checkpoint` with the open group's item count
    /// of that target, `in_flight[t]`), then the server checkpoint. The
    /// batch is emptied either way. Returns the most any bounded release
    /// left in its hold.
    pub async fn publish(
        &mut self,
        batch: &mut Batch,
        checkpoint: &Checkpoint,
        in_flight: &[u64],
    ) -> Result<u64, Transient> {
        self.seq += 1;
        let traced = std::mem::take(&mut batch.traced);
        let entries = batch.entries;
        let steps = batch.take_steps(self.targets.len());
        let r = self.write_steps(steps, checkpoint, in_flight).await;
        let r = match r {
            Ok(left) => self.write_server(checkpoint).await.map(|()| left),
            Err(e) => Err(e),
        };
        if !traced.is_empty() {
            trace_published(&traced, entries, r.as_ref().err());
        }
        r
    }

    async fn write_steps(
        &mut self,
        steps: Steps,
        checkpoint: &Checkpoint,
        in_flight: &[u64],
    ) -> Result<u64, Transient> {
        let group = checkpoint.inflight.as_ref().map(|(g, _)| g);
        let stamp = Stamp {
            writer: self.writer.clone(),
            seq: self.seq,
            targets: BTreeMap::new(),
        };
        let mut calls = Vec::new();
        let mut written = Vec::new();
        for ((i, args), own) in steps.args.into_iter().enumerate().zip(steps.own_keys) {
            if args.is_empty() {
                continue;
            }
            let t = &self.targets[i];
            let ck = Checkpoint {
                inflight: match (group, in_flight.get(i).copied().unwrap_or(0)) {
                    (Some(g), n) if n > 0 => Some((g.clone(), n)),
                    _ => None,
                },
                ..checkpoint.clone()
            };
            let new = ck.encode_stamped(&stamp);
            let mut keys: Vec<fred::types::Key> = Vec::with_capacity(2 + own.list.len());
            keys.push(t.checkpoint_key.as_str().into());
            keys.push(t.stream.as_str().into());
            keys.extend(own.list.into_iter().map(fred::types::Key::from));
            let mut argv = Vec::with_capacity(2 + args.len());
            argv.push(Value::String(t.expected.clone().into()));
            argv.push(Value::String(new.clone().into()));
            argv.extend(args);
            written.push((i, new));
            calls.push(
                self.script
                    .evalsha_with_reload::<i64, _, _>(&self.client, keys, argv),
            );
        }
        let results = futures::future::join_all(calls).await;
        let mut left = 0u64;
        let mut first_error = None;
        for ((i, new), r) in written.into_iter().zip(results) {
            match r {
                Ok(l) => {
                    let t = &mut self.targets[i];
                    t.expected = new;
                    self.steps.insert(t.target.name(), self.seq);
                    left = left.max(l.max(0) as u64);
                }
                Err(e) => {
                    first_error.get_or_insert(e);
                }
            }
        }
        match first_error {
            None => Ok(left),
            Some(e) => Err(self.step_error(e)),
        }
    }

    async fn write_server(&mut self, checkpoint: &Checkpoint) -> Result<(), Transient> {
        let new = checkpoint.encode_stamped(&Stamp {
            writer: self.writer.clone(),
            seq: self.seq,
            targets: self.steps.clone(),
        });
        let r: Result<i64, _> = self
            .script
            .evalsha_with_reload(
                &self.client,
                vec![self.server_key.clone()],
                vec![self.server_expected.clone(), new.clone()],
            )
            .await;
        match r {
            Ok(_) => {
                self.server_expected = new;
                Ok(())
            }
            Err(e) => Err(self.step_error(e)),
        }
    }

    fn step_error(&self, e: fred::error::Error) -> Transient {
        if e.details().starts_with("FENCED") {
            Transient::Fenced {
                server: self.server.clone(),
            }
        } else {
            redis_err(&self.server)(e)
        }
    }

    pub async fn quit(self) {
        let _ = self.client.quit().await;
    }
}

/// The spans of one step's sampled entries. A failed step marks them
/// failed: the next session publishes the same rows again, under new spans.
fn trace_published(traced: &[(StreamEvent, SystemTime)], entries: u64, error: Option<&Transient>) {
    let end = SystemTime::now();
    for (ev, joined) in traced {
        let (e, src) = (&ev.event, &ev.source);
        let mut attrs = vec![
            KeyValue::new(attr::SHARD, i64::from(ev.shard)),
            KeyValue::new(attr::EVENT_TYPE, e.event_type.as_str()),
            KeyValue::new(attr::VERSION, i64::from(e.version)),
            KeyValue::new(attr::SERVER, src.server.clone()),
            KeyValue::new(attr::DATABASE, src.database.clone()),
            KeyValue::new(attr::TABLE, src.table.clone()),
            KeyValue::new(attr::BATCH_ENTRIES, entries as i64),
        ];
        if !src.file.is_empty() {
            attrs.push(KeyValue::new(attr::BINLOG_FILE, src.file.clone()));
            attrs.push(KeyValue::new(attr::BINLOG_POSITION, src.pos as i64));
        }
        if !src.gtid.is_empty() {
            attrs.push(KeyValue::new(attr::GTID, src.gtid.clone()));
        }
        let span = SpanStart::new(rps_telemetry::publish_name(e.event_type))
            .kind(SpanKind::Producer)
            .at(Some(*joined))
            .attrs(attrs);
        let Some(mut span) = rps_telemetry::start(Component::CdcReader, e.match_id, span) else {
            continue;
        };
        match error {
            Some(err) => span.error(err.to_string()),
            None if e.version == 1 && e.event_type == rps_core::EventType::Started => {
                let mut attrs = vec![
                    KeyValue::new(attr::SHARD, i64::from(ev.shard)),
                    KeyValue::new(attr::SEASON, e.season_id.to_string()),
                    KeyValue::new(attr::PLAYER_A, e.player_a_id),
                    KeyValue::new(attr::PLAYER_B, e.player_b_id),
                ];
                if let Some(d) = e.deadline_at {
                    attrs.push(KeyValue::new(attr::DEADLINE_MS, d.as_millis()));
                }
                let started = rps_telemetry::system_time(e.occurred_at);
                rps_telemetry::root(Component::CdcReader, e.match_id, started, end, attrs);
            }
            None => {}
        }
        span.end_at(end);
    }
}
