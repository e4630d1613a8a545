//! Apply: the atomic publish step.
//!
//! One Lua script (EVALSHA) per batch XADDs every entry to its shard stream
//! and every dead letter to `rps:deadletter`, and sets the server's
//! checkpoint, but only if the checkpoint still holds the value this reader
//! last wrote. A zombie reader (an old process, a second instance) fails
//! with `FENCED` instead of interleaving; a reply lost on the wire is
//! resolved the same way: the retried session re-reads the checkpoint.
//!
//! Beside plain XADDs a batch carries the steps of XA branches
//! ([`crate::xa`]): items XADDed to a branch's hold stream (each with its
//! destination in field `_t`), the branch's registry entry and match set,
//! and the release (hold → shard streams) or drop of a decided branch, all
//! in the same atomic step as the checkpoint that covers them.
//!
//! Each entry of a sampled match gets a `publish <type>` span of its trace
//! (from the moment the row joined the batch to the step's answer), and a
//! `started` of version 1 the match's root span (`rps_telemetry`). Items of
//! XA branches are not traced: they reach the batch as bare field pairs.

use crate::checkpoint::Checkpoint;
use crate::error::{Definite, SessionError, Transient};
use fred::prelude::*;
use fred::types::Value;
use rps_core::deadletter::DeadLetter;
use rps_core::redis_client::{is_certificate_rejection, ClientPolicy};
use rps_core::retry::ErrorClass;
use rps_core::{Config, ShardId, StreamEvent};
use rps_telemetry::{attr, Component, KeyValue, SpanKind, SpanStart};
use std::collections::HashMap;
use std::time::SystemTime;

/// KEYS: 1 checkpoint, 2 dead-letter stream, 3 + s: shard stream s, then
/// the batch's own keys (XA holds, match sets, registry).
/// ARGV: 1 expected checkpoint ('' = none), 2 new checkpoint, then ops:
/// - `k>0, c, c fields and values`: XADD to KEYS[k];
/// - `-1, k, field, value`: HSET;
/// - `-2, k, member`: SADD;
/// - `-3, hold, matches, registry, field, max`: move up to `max` held items
///   to their destination (`_t`: a shard number or `d`, the dead letters)
///   and delete them from the hold; `max` 0 moves all and forgets the branch;
/// - `-4, hold, matches, registry, field`: forget the branch and its items;
/// - `-5, hold, t, c, c fields and values`: XADD an item to a hold, with
///   its destination `_t` = `t`;
/// - `-6, hold, t, c, …`: the same item, committed in this very step: XADD
///   to its destination;
/// - `-7, n, n values`: nothing (an op undone in place).
///
/// Returns how many items the last bounded release left in its hold.
pub const PUBLISH_LUA: &str = r#"
local cur = redis.call('GET', KEYS[1])
if cur == false then cur = '' end
if cur ~= ARGV[1] then
  return redis.error_reply('FENCED checkpoint changed by another writer')
end
local function dest(t)
  if t == 'd' then return KEYS[2] end
  return KEYS[3 + tonumber(t)]
end
local left = 0
local i = 3
local n = #ARGV
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
      local f = e[2]
      redis.call('XADD', dest(f[2]), '*', unpack(f, 3))
    end
    if max > 0 then
      if #items > 0 then
        local ms, seq = string.match(items[#items][1], '(%d+)-(%d+)')
        redis.call('XTRIM', hold, 'MINID', '=', ms .. '-' .. string.format('%d', tonumber(seq) + 1))
      end
      left = redis.call('XLEN', hold)
    else
      redis.call('DEL', hold, KEYS[tonumber(ARGV[i + 2])])
      redis.call('HDEL', KEYS[tonumber(ARGV[i + 3])], ARGV[i + 4])
    end
    i = i + 6
  elseif op == -4 then
    redis.call('UNLINK', KEYS[tonumber(ARGV[i + 1])], KEYS[tonumber(ARGV[i + 2])])
    redis.call('HDEL', KEYS[tonumber(ARGV[i + 3])], ARGV[i + 4])
    i = i + 5
  elseif op == -5 then
    local c = tonumber(ARGV[i + 3])
    redis.call('XADD', KEYS[tonumber(ARGV[i + 1])], '*', '_t', ARGV[i + 2], unpack(ARGV, i + 4, i + 3 + c))
    i = i + 4 + c
  elseif op == -6 then
    local c = tonumber(ARGV[i + 3])
    redis.call('XADD', dest(ARGV[i + 2]), '*', unpack(ARGV, i + 4, i + 3 + c))
    i = i + 4 + c
  else
    i = i + 2 + tonumber(ARGV[i + 1])
  end
end
redis.call('SET', KEYS[1], ARGV[2])
return left
"#;

/// Op codes of [`PUBLISH_LUA`] beside XADD.
const OP_HSET: i64 = -1;
const OP_SADD: i64 = -2;
const OP_RELEASE: i64 = -3;
const OP_DROP: i64 = -4;
const OP_HOLD: i64 = -5;
const OP_HOLD_COMMITTED: i64 = -6;
const OP_SKIP: i64 = -7;

/// The keys of one XA branch a batch step touches.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BranchKeys {
    pub hold: String,
    pub matches: String,
    pub registry: String,
    /// The branch's field in the registry ([`rps_core::Xid::key`]).
    pub field: String,
}

/// Where a held item goes when its branch commits.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HeldTarget {
    Shard(ShardId),
    DeadLetters,
}

/// A point in a batch to roll back to (see [`Batch::truncate`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BatchMark {
    args: usize,
    bytes: usize,
    entries: u64,
    dead: usize,
    traced: usize,
    /// Which filling of the batch the mark belongs to: a flush starts a new one.
    epoch: u64,
}

/// Entries and dead letters waiting for the next atomic step.
pub struct Batch {
    args: Vec<Value>,
    /// Approximate size of the arguments, to bound memory per step.
    pub bytes: usize,
    pub entries: u64,
    /// Dead letters by kind, for metrics after the step succeeded.
    pub dead: Vec<String>,
    /// XA steps (holds, registry, releases) in the batch.
    pub xa_ops: u64,
    /// Rows of committed branches the batch releases, for metrics.
    pub released: u64,
    /// Keys beyond the publisher's fixed ones, in KEYS order.
    extra_keys: Vec<String>,
    extra_index: HashMap<String, usize>,
    /// Ops undone in place ([`Batch::decide_in_place`]), dropped before sending.
    skipped: u64,
    epoch: u64,
    /// Entries of sampled matches and when each joined the batch; empty
    /// (and never allocated) while tracing is off.
    traced: Vec<(StreamEvent, SystemTime)>,
}

impl Default for Batch {
    fn default() -> Self {
        let mut b = Batch {
            args: Vec::new(),
            bytes: 0,
            entries: 0,
            dead: Vec::new(),
            xa_ops: 0,
            released: 0,
            extra_keys: Vec::new(),
            extra_index: HashMap::new(),
            skipped: 0,
            epoch: 0,
            traced: Vec::new(),
        };
        b.clear();
        b
    }
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
        self.bytes = 0;
        // Slots for the expected and the new checkpoint.
        self.args.push(Value::Null);
        self.args.push(Value::Null);
        self.entries = 0;
        self.dead.clear();
        self.xa_ops = 0;
        self.released = 0;
        self.extra_keys.clear();
        self.extra_index.clear();
        self.skipped = 0;
        self.traced.clear();
        self.epoch += 1;
    }

    pub fn mark(&self) -> BatchMark {
        BatchMark {
            args: self.args.len(),
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

    /// A branch whose every step is still in this batch is decided in this
    /// batch: its held items go straight to their destinations (`commit`)
    /// or nowhere, and its match-set and registry steps are undone, so a
    /// short branch costs what a plain transaction costs. `ops` are the
    /// indices the push methods returned in this epoch.
    pub fn decide_in_place(&mut self, ops: &[usize], commit: bool) {
        for &i in ops {
            match self.args.get(i) {
                Some(Value::Integer(OP_HOLD)) => {
                    if commit {
                        self.args[i] = Value::Integer(OP_HOLD_COMMITTED);
                        let to_stream =
                            !matches!(&self.args[i + 2], Value::String(t) if &**t == "d");
                        if to_stream {
                            self.entries += 1;
                        }
                    } else {
                        let c = match &self.args[i + 3] {
                            Value::Integer(c) => *c,
                            _ => 0,
                        };
                        self.args[i] = Value::Integer(OP_SKIP);
                        self.args[i + 1] = Value::Integer(2 + c);
                        self.skipped += 1;
                    }
                }
                Some(Value::Integer(OP_HSET)) => {
                    self.args[i] = Value::Integer(OP_SKIP);
                    self.args[i + 1] = Value::Integer(2);
                    self.skipped += 1;
                }
                Some(Value::Integer(OP_SADD)) => {
                    self.args[i] = Value::Integer(OP_SKIP);
                    self.args[i + 1] = Value::Integer(1);
                    self.skipped += 1;
                }
                _ => {}
            }
        }
    }

    /// The arguments without the ops undone in place: what is sent.
    fn take_args(&mut self) -> Vec<Value> {
        let args = std::mem::take(&mut self.args);
        if self.skipped == 0 {
            return args;
        }
        let int = |v: &Value| match v {
            Value::Integer(n) => *n,
            _ => 0,
        };
        let mut out = Vec::with_capacity(args.len());
        out.extend(args.iter().take(2).cloned());
        let mut i = 2;
        while i < args.len() {
            let op = int(&args[i]);
            let len = match op {
                k if k > 0 => 2 + int(&args[i + 1]) as usize,
                OP_HSET => 4,
                OP_SADD => 3,
                OP_RELEASE => 6,
                OP_DROP => 5,
                OP_HOLD | OP_HOLD_COMMITTED => 4 + int(&args[i + 3]) as usize,
                _ => 2 + int(&args[i + 1]) as usize,
            };
            let end = (i + len).min(args.len());
            if op != OP_SKIP {
                out.extend(args[i..end].iter().cloned());
            }
            i = end;
        }
        out
    }

    /// Drops what was added since `mark`; false if the batch was flushed
    /// since (what came before the flush is out already).
    pub fn truncate(&mut self, mark: BatchMark) -> bool {
        if mark.epoch != self.epoch {
            return false;
        }
        self.args.truncate(mark.args);
        self.bytes = mark.bytes;
        self.entries = mark.entries;
        self.dead.truncate(mark.dead);
        self.traced.truncate(mark.traced);
        true
    }

    fn push_pairs(&mut self, key_index: usize, pairs: Vec<(&'static str, String)>) {
        self.args.reserve(2 + pairs.len() * 2);
        self.args.push(Value::Integer(key_index as i64));
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
}

/// The connection to Redis of one server's reader, and its fence.
pub struct Publisher {
    client: Client,
    server: String,
    keys: Vec<fred::types::Key>,
    /// Shard → index into `keys` (1-based for Lua), 0 = not on this server.
    key_of_shard: Vec<usize>,
    sha: String,
    writer: String,
    seq: u64,
    /// What the checkpoint key holds now, as far as this reader knows.
    expected: String,
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

impl Publisher {
    /// Connects, loads the script, creates the projector group on every
    /// shard stream of the server, and reads the checkpoint.
    pub async fn connect(
        config: &Config,
        server_index: usize,
    ) -> Result<(Publisher, Option<Checkpoint>), SessionError> {
        let server = &config.servers[server_index];
        let name = server.name.clone();
        let client = connect_redis(&config.redis, &name).await?;
        let keys = config.keys();
        let ck_key = keys.cdc_checkpoint(&name);
        let mut key_list: Vec<fred::types::Key> =
            vec![ck_key.clone().into(), keys.deadletter().into()];
        let mut key_of_shard = vec![0usize; usize::from(config.shard_count)];
        // Every shard's stream is a key of the script, so a shard database
        // found on an unexpected server still lands in its own stream.
        for s in 0..config.shard_count {
            let k = keys.events(s);
            rps_core::redis_client::create_projector_group(&client, &k)
                .await
                .map_err(redis_err(&name))?;
            key_list.push(k.into());
            key_of_shard[usize::from(s)] = key_list.len();
        }
        let sha: String = client
            .script_load(PUBLISH_LUA)
            .await
            .map_err(redis_err(&name))?;
        let current: Option<String> = client.get(&ck_key).await.map_err(redis_err(&name))?;
        let checkpoint = match &current {
            Some(s) => Some(Checkpoint::decode(s).map_err(|e| Definite::BadCheckpoint {
                server: name.clone(),
                key: ck_key.clone(),
                message: e.0,
            })?),
            None => None,
        };
        Ok((
            Publisher {
                client,
                server: name,
                keys: key_list,
                key_of_shard,
                sha,
                writer: uuid::Uuid::new_v4().simple().to_string(),
                seq: 0,
                expected: current.unwrap_or_default(),
            },
            checkpoint,
        ))
    }

    pub fn client(&self) -> &Client {
        &self.client
    }

    /// Adds an entry for its shard's stream.
    pub fn push_entry(&self, batch: &mut Batch, ev: &StreamEvent) {
        let idx = self.key_index(ev.shard);
        batch.push_pairs(idx, ev.to_pairs());
        batch.entries += 1;
        if rps_telemetry::sampled(ev.event.match_id) {
            batch.traced.push((ev.clone(), SystemTime::now()));
        }
    }

    pub fn push_dead(&self, batch: &mut Batch, dl: &DeadLetter) {
        batch.push_pairs(2, dl.to_pairs());
        batch.dead.push(dl.kind.clone());
    }

    /// The KEYS index of a key of this batch's own.
    fn extra_key(&self, batch: &mut Batch, key: &str) -> i64 {
        let at = match batch.extra_index.get(key) {
            Some(i) => *i,
            None => {
                batch.extra_keys.push(key.to_string());
                let i = batch.extra_keys.len() - 1;
                batch.extra_index.insert(key.to_string(), i);
                i
            }
        };
        (self.keys.len() + at + 1) as i64
    }

    /// Adds an item to a prepared branch's hold instead of its destination;
    /// returns the op's index (see [`Batch::decide_in_place`]).
    pub fn push_held(
        &self,
        batch: &mut Batch,
        hold: &str,
        target: HeldTarget,
        pairs: Vec<(&'static str, String)>,
    ) -> usize {
        let k = self.extra_key(batch, hold);
        let t = match target {
            HeldTarget::Shard(s) => s.to_string(),
            HeldTarget::DeadLetters => "d".to_string(),
        };
        let at = batch.args.len();
        batch.args.reserve(4 + pairs.len() * 2);
        batch.args.extend([
            Value::Integer(OP_HOLD),
            Value::Integer(k),
            Value::String(t.into()),
            Value::Integer(pairs.len() as i64 * 2),
        ]);
        batch.push_fields(pairs);
        batch.xa_ops += 1;
        at
    }

    pub fn push_hset(&self, batch: &mut Batch, key: &str, field: &str, value: String) -> usize {
        let k = self.extra_key(batch, key);
        let at = batch.args.len();
        batch.args.extend([
            Value::Integer(OP_HSET),
            Value::Integer(k),
            Value::String(field.into()),
            Value::String(value.into()),
        ]);
        batch.xa_ops += 1;
        at
    }

    pub fn push_sadd(&self, batch: &mut Batch, key: &str, member: String) -> usize {
        let k = self.extra_key(batch, key);
        batch.bytes += member.len() + 3 * std::mem::size_of::<Value>();
        let at = batch.args.len();
        batch.args.extend([
            Value::Integer(OP_SADD),
            Value::Integer(k),
            Value::String(member.into()),
        ]);
        batch.xa_ops += 1;
        at
    }

    /// Moves a committed branch's held items to their destinations: all of
    /// them, forgetting the branch (`max` None), or at most `max`.
    pub fn push_release(&self, batch: &mut Batch, b: &BranchKeys, max: Option<u64>) {
        let op = [
            Value::Integer(OP_RELEASE),
            Value::Integer(self.extra_key(batch, &b.hold)),
            Value::Integer(self.extra_key(batch, &b.matches)),
            Value::Integer(self.extra_key(batch, &b.registry)),
            Value::String(b.field.clone().into()),
            Value::Integer(max.unwrap_or(0) as i64),
        ];
        batch.args.extend(op);
        batch.xa_ops += 1;
    }

    /// Forgets a rolled-back branch and everything it held.
    pub fn push_drop(&self, batch: &mut Batch, b: &BranchKeys) {
        let op = [
            Value::Integer(OP_DROP),
            Value::Integer(self.extra_key(batch, &b.hold)),
            Value::Integer(self.extra_key(batch, &b.matches)),
            Value::Integer(self.extra_key(batch, &b.registry)),
            Value::String(b.field.clone().into()),
        ];
        batch.args.extend(op);
        batch.xa_ops += 1;
    }

    fn key_index(&self, shard: ShardId) -> usize {
        self.key_of_shard
            .get(usize::from(shard))
            .copied()
            .unwrap_or(0)
    }

    /// Writes the batch and the checkpoint in one atomic step; the batch is
    /// emptied either way. Returns what the step's bounded release left.
    pub async fn publish(
        &mut self,
        batch: &mut Batch,
        checkpoint: &Checkpoint,
    ) -> Result<u64, Transient> {
        self.seq += 1;
        let new = checkpoint.encode(&self.writer, self.seq);
        let mut args = batch.take_args();
        if args.len() < 2 {
            args.resize(2, Value::Null);
        }
        args[0] = Value::String(self.expected.clone().into());
        args[1] = Value::String(new.clone().into());
        let mut keys = self.keys.clone();
        keys.extend(batch.extra_keys.drain(..).map(fred::types::Key::from));
        let traced = std::mem::take(&mut batch.traced);
        let entries = batch.entries;
        batch.clear();
        let r: Result<i64, _> = self.client.evalsha(self.sha.clone(), keys, args).await;
        let r = match r {
            Ok(left) => {
                self.expected = new;
                Ok(left.max(0) as u64)
            }
            Err(e) if e.details().starts_with("FENCED") => Err(Transient::Fenced {
                server: self.server.clone(),
            }),
            // NOSCRIPT (Redis restarted and lost its script cache) included:
            // the next session loads the script again.
            Err(e) => Err(redis_err(&self.server)(e)),
        };
        if !traced.is_empty() {
            trace_published(&traced, entries, r.as_ref().err());
        }
        r
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
