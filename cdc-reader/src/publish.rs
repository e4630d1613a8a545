//! Apply: the atomic publish step.
//!
//! One Lua script (EVALSHA) per batch XADDs every entry to its shard stream
//! and every dead letter to `rps:deadletter`, and sets the server's
//! checkpoint, but only if the checkpoint still holds the value this reader
//! last wrote. A zombie reader (an old process, a second instance) fails
//! with `FENCED` instead of interleaving; a reply lost on the wire is
//! resolved the same way: the retried session re-reads the checkpoint.

use crate::checkpoint::Checkpoint;
use crate::error::{Definite, SessionError, Transient};
use fred::prelude::*;
use fred::types::Value;
use rps_core::deadletter::DeadLetter;
use rps_core::{Config, ShardId, StreamEvent};
use std::time::Duration;

/// KEYS: 1 checkpoint, 2 dead-letter stream, 3.. shard streams.
/// ARGV: 1 expected checkpoint ('' = none), 2 new checkpoint, then per
/// entry: key index, field count, fields and values.
pub const PUBLISH_LUA: &str = r#"
local cur = redis.call('GET', KEYS[1])
if cur == false then cur = '' end
if cur ~= ARGV[1] then
  return redis.error_reply('FENCED checkpoint changed by another writer')
end
local i = 3
local n = #ARGV
while i <= n do
  local k = KEYS[tonumber(ARGV[i])]
  local c = tonumber(ARGV[i + 1])
  redis.call('XADD', k, '*', unpack(ARGV, i + 2, i + 1 + c))
  i = i + 2 + c
end
redis.call('SET', KEYS[1], ARGV[2])
return 1
"#;

/// Entries and dead letters waiting for the next atomic step.
pub struct Batch {
    args: Vec<Value>,
    /// Approximate size of the arguments, to bound memory per step.
    pub bytes: usize,
    pub entries: u64,
    /// Dead letters by kind, for metrics after the step succeeded.
    pub dead: Vec<String>,
}

impl Default for Batch {
    fn default() -> Self {
        let mut b = Batch {
            args: Vec::new(),
            bytes: 0,
            entries: 0,
            dead: Vec::new(),
        };
        b.clear();
        b
    }
}

impl Batch {
    pub fn is_empty(&self) -> bool {
        self.entries == 0 && self.dead.is_empty()
    }

    pub fn items(&self) -> u64 {
        self.entries + self.dead.len() as u64
    }

    pub fn clear(&mut self) {
        self.args.clear();
        self.bytes = 0;
        // Slots for the expected and the new checkpoint.
        self.args.push(Value::Null);
        self.args.push(Value::Null);
        self.entries = 0;
        self.dead.clear();
    }

    fn push_pairs(&mut self, key_index: usize, pairs: Vec<(&'static str, String)>) {
        self.args.reserve(2 + pairs.len() * 2);
        self.args.push(Value::Integer(key_index as i64));
        self.args.push(Value::Integer(pairs.len() as i64 * 2));
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

pub(crate) fn redis_err(server: &str) -> impl Fn(fred::error::Error) -> Transient + '_ {
    move |source| Transient::Redis {
        server: server.to_string(),
        source,
    }
}

/// A fred client with bounded command time, so a dead Redis surfaces as an
/// error (and a reconnect with backoff) instead of a hang.
pub async fn connect_redis(url: &str, server: &str) -> Result<Client, Transient> {
    // A publish is never silently replayed on another connection: the
    // checkpoint's compare-and-set decides after a reconnect.
    let policy = rps_core::redis_client::ClientPolicy {
        connect_timeout: Duration::from_secs(5),
        command_timeout: Duration::from_secs(15),
        ..Default::default()
    };
    policy.connect(url).await.map_err(redis_err(server))
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
        let client = connect_redis(&config.redis.url, &name).await?;
        let keys = config.keys();
        let ck_key = keys.cdc_checkpoint(&name);
        let mut key_list: Vec<fred::types::Key> =
            vec![ck_key.clone().into(), keys.deadletter().into()];
        let mut key_of_shard = vec![0usize; usize::from(config.shard_count)];
        // Every shard's stream is a key of the script, so a shard database
        // found on an unexpected server still lands in its own stream.
        for s in 0..config.shard_count {
            let k = keys.events(s);
            let r: Result<Value, _> = client
                .xgroup_create(&k, rps_core::keys::PROJECTOR_GROUP, "0", true)
                .await;
            if let Err(e) = r {
                if !e.details().contains("BUSYGROUP") {
                    return Err(redis_err(&name)(e).into());
                }
            }
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
    }

    pub fn push_dead(&self, batch: &mut Batch, dl: &DeadLetter) {
        batch.push_pairs(2, dl.to_pairs());
        batch.dead.push(dl.kind.clone());
    }

    fn key_index(&self, shard: ShardId) -> usize {
        self.key_of_shard
            .get(usize::from(shard))
            .copied()
            .unwrap_or(0)
    }

    /// Writes the batch and the checkpoint in one atomic step; the batch is
    /// emptied either way.
    pub async fn publish(
        &mut self,
        batch: &mut Batch,
        checkpoint: &Checkpoint,
    ) -> Result<(), Transient> {
        self.seq += 1;
        let new = checkpoint.encode(&self.writer, self.seq);
        let mut args = std::mem::take(&mut batch.args);
        if args.len() < 2 {
            args.resize(2, Value::Null);
        }
        args[0] = Value::String(self.expected.clone().into());
        args[1] = Value::String(new.clone().into());
        batch.clear();
        let r: Result<i64, _> = self
            .client
            .evalsha(self.sha.clone(), self.keys.clone(), args)
            .await;
        match r {
            Ok(_) => {
                self.expected = new;
                Ok(())
            }
            Err(e) if e.details().starts_with("FENCED") => Err(Transient::Fenced {
                server: self.server.clone(),
            }),
            // NOSCRIPT (Redis restarted and lost its script cache) included:
            // the next session loads the script again.
            Err(e) => Err(redis_err(&self.server)(e)),
        }
    }

    pub async fn quit(self) {
        let _ = self.client.quit().await;
    }
}
