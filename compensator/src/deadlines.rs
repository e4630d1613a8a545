//! The compensator's Redis side: claiming due deadlines under a lease, and
//! the bookkeeping of failed attempts (retry schedule, parking, dead letter).
//!
//! The deadline set belongs to the projector (it adds an entry on `started`
//! and removes it in the step that records the match's end); the compensator
//! never writes to it. Its own state is two keys shared by every compensator:
//! - `leases` (sorted set): member `<shard>:<match>` → until when (Unix ms)
//!   nobody else may take it. A claim sets it to now + `lease_ms`; a failed
//!   attempt sets it to the next retry time; a parked deadline has
//!   [`PARKED`]. An expired lease whose deadline is gone is garbage and is
//!   removed by the next claim.
//! - `attempts` (hash): member → [`AttemptHistory`] as JSON, while the
//!   deadline is being retried or is parked.

use crate::blocker::XaHolder;
use fred::clients::Client;
use fred::interfaces::{HashesInterface, SortedSetsInterface, StreamsInterface};
use fred::types::scripts::Script;
use fred::types::Value;
use read_model::GenerationKeys;
use rps_core::deadletter::{DeadLetter, Origin};
use rps_core::keys::{deadline_member, Keys};
use rps_core::{ShardId, Timestamp};
use serde::{Deserialize, Serialize};

/// Lease score of a parked deadline: far beyond any real time (year 2255),
/// and an exact integer in a double.
pub const PARKED: i64 = 9_000_000_000_000;

/// Claims up to `batch` due deadlines that nobody holds, atomically.
///
/// KEYS: deadlines, leases, attempts. ARGV: now ms, lease ms, batch, max entries to
/// scan, parked score. Returns `{next_ms, pending, overdue, m1, s1, …}`:
/// `next_ms` is when to look again (`now` when more may be due at once, -1
/// when nothing is scheduled); `pending`/`overdue` feed the gauges.
///
/// Due entries are scanned in deadline order, skipping those whose lease is
/// live (in flight elsewhere, waiting for a retry, parked); the scan is
/// bounded so one call never blocks Redis for long.
///
/// An expired lease whose deadline is gone (the projector recorded the end)
/// is dropped with its attempt history: a deadline that was being retried
/// when its match ended by other means (an XA branch holding the match
/// committed a `finished`) would otherwise leave the history behind for
/// good. Parked leases never expire, so parked histories stay.
const CLAIM_LUA: &str = r#"
local now = tonumber(ARGV[1])
local lease_until = now + tonumber(ARGV[2])
local batch = tonumber(ARGV[3])
local max_scan = tonumber(ARGV[4])
local parked = ARGV[5]
local expired = redis.call('ZRANGEBYSCORE', KEYS[2], '-inf', now, 'LIMIT', 0, batch)
for _, m in ipairs(expired) do
  if not redis.call('ZSCORE', KEYS[1], m) then
    redis.call('ZREM', KEYS[2], m)
    redis.call('HDEL', KEYS[3], m)
  end
end
local pending = redis.call('ZCARD', KEYS[1])
local overdue = redis.call('ZCOUNT', KEYS[1], '-inf', now)
local out = {}
local claimed = 0
local scanned = 0
local chunk = batch
local capped = false
while claimed < batch do
  if scanned >= max_scan then capped = true break end
  local due = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', now, 'WITHSCORES', 'LIMIT', scanned, chunk)
  local n = #due / 2
  for i = 1, #due, 2 do
    local m = due[i]
    local l = redis.call('ZSCORE', KEYS[2], m)
    if (not l) or tonumber(l) <= now then
      redis.call('ZADD', KEYS[2], lease_until, m)
      out[#out + 1] = m
      out[#out + 1] = due[i + 1]
      claimed = claimed + 1
      if claimed >= batch then break end
    end
  end
  scanned = scanned + n
  if n < chunk then break end
end
local nxt = -1
if claimed >= batch then
  nxt = now
elseif capped then
  nxt = now + 1000
else
  local f = redis.call('ZRANGEBYSCORE', KEYS[1], '(' .. now, '+inf', 'WITHSCORES', 'LIMIT', 0, 1)
  if #f > 0 then nxt = tonumber(f[2]) end
  local l = redis.call('ZRANGEBYSCORE', KEYS[2], '(' .. now, '(' .. parked, 'WITHSCORES', 'LIMIT', 0, 1)
  if #l > 0 and (nxt < 0 or tonumber(l[2]) < nxt) then nxt = tonumber(l[2]) end
end
local res = {nxt, pending, overdue}
for i = 1, #out do res[#res + 1] = out[i] end
return res
"#;

/// One claimed deadline.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Claimed {
    pub shard: ShardId,
    pub match_id: i64,
    /// The deadline as the read model has it (Unix ms).
    pub deadline_ms: i64,
}

impl Claimed {
    pub fn member(&self) -> String {
        deadline_member(self.shard, self.match_id)
    }
}

/// The answer of one claim.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ClaimResult {
    pub claimed: Vec<Claimed>,
    /// When to look again (Unix ms); `None` when nothing is scheduled.
    pub next_ms: Option<i64>,
    pub pending: i64,
    pub overdue: i64,
    /// Members that do not name a shard and a match (never claimed again
    /// until their lease expires; logged).
    pub malformed: Vec<String>,
}

/// One failed attempt.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Attempt {
    /// Unix microseconds.
    pub at: i64,
    pub error: String,
    /// After a lock wait timeout: the prepared XA branches the reader says
    /// hold rows of the match (also named in `error`), for tools that offer
    /// the decision. Absent from histories written before, and for other
    /// failures.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub held_by: Vec<XaHolder>,
}

/// The attempt history of a deadline being retried or parked.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct AttemptHistory {
    pub deadline_ms: i64,
    pub attempts: Vec<Attempt>,
    pub parked: bool,
}

/// Redis handles and key names for one deployment.
#[derive(Clone)]
pub struct DeadlineStore {
    client: Client,
    keys: Keys,
    claim: Script,
}

impl DeadlineStore {
    pub fn new(client: Client, keys: Keys) -> Self {
        DeadlineStore {
            client,
            keys,
            claim: Script::from_lua(CLAIM_LUA),
        }
    }

    pub fn client(&self) -> &Client {
        &self.client
    }

    pub fn keys(&self) -> &Keys {
        &self.keys
    }

    /// The active read-model generation (0 until one is recorded).
    pub async fn generation(&self) -> Result<u64, fred::error::Error> {
        use fred::interfaces::KeysInterface;
        let g: Option<u64> = self.client.get(self.keys.generation()).await?;
        Ok(g.unwrap_or(0))
    }

    /// Claims due deadlines of generation `g` (see [`CLAIM_LUA`]).
    pub async fn claim(
        &self,
        g: &GenerationKeys,
        now_ms: i64,
        lease_ms: u64,
        batch: usize,
    ) -> Result<ClaimResult, fred::error::Error> {
        let batch = batch.max(1);
        let max_scan = (batch * 64).max(10_000);
        let res: Vec<Value> = self
            .claim
            .evalsha_with_reload(
                &self.client,
                vec![
                    g.deadlines(),
                    self.keys.deadline_leases(),
                    self.keys.deadline_attempts(),
                ],
                vec![
                    now_ms.to_string(),
                    lease_ms.to_string(),
                    batch.to_string(),
                    max_scan.to_string(),
                    PARKED.to_string(),
                ],
            )
            .await?;
        let int = |v: Option<&Value>| v.and_then(|v| v.as_i64()).unwrap_or(0);
        let next = int(res.first());
        let mut out = ClaimResult {
            next_ms: (next >= 0).then_some(next),
            pending: int(res.get(1)),
            overdue: int(res.get(2)),
            ..Default::default()
        };
        for pair in res.get(3..).unwrap_or_default().chunks(2) {
            let member = pair[0].as_string().unwrap_or_default();
            let score = pair
                .get(1)
                .and_then(|s| s.as_string())
                .and_then(|s| s.parse::<f64>().ok());
            match (rps_core::keys::parse_deadline_member(&member), score) {
                (Some((shard, match_id)), Some(s)) => out.claimed.push(Claimed {
                    shard,
                    match_id,
                    deadline_ms: s as i64,
                }),
                _ => out.malformed.push(member),
            }
        }
        Ok(out)
    }

    /// Holds `members` until `until_ms` (a retry time, a later re-check).
    pub async fn lease_until(
        &self,
        members: &[String],
        until_ms: i64,
    ) -> Result<(), fred::error::Error> {
        if members.is_empty() {
            return Ok(());
        }
        let values: Vec<(f64, String)> = members
            .iter()
            .map(|m| (until_ms as f64, m.clone()))
            .collect();
        self.client
            .zadd::<(), _, _>(
                self.keys.deadline_leases(),
                None,
                None,
                false,
                false,
                values,
            )
            .await
    }

    /// Forgets the attempt history of deadlines that have been settled.
    pub async fn clear_attempts(&self, members: &[String]) -> Result<(), fred::error::Error> {
        if members.is_empty() {
            return Ok(());
        }
        self.client
            .hdel::<(), _, _>(self.keys.deadline_attempts(), members.to_vec())
            .await
    }

    pub async fn attempts(
        &self,
        member: &str,
    ) -> Result<Option<AttemptHistory>, fred::error::Error> {
        let raw: Option<String> = self
            .client
            .hget(self.keys.deadline_attempts(), member)
            .await?;
        Ok(raw.and_then(|r| serde_json::from_str(&r).ok()))
    }

    /// Records a failed attempt (`held_by`: see [`Attempt::held_by`]).
    /// Returns the history as stored.
    pub async fn record_failure(
        &self,
        c: &Claimed,
        error: &str,
        held_by: Vec<XaHolder>,
        now: Timestamp,
    ) -> Result<AttemptHistory, fred::error::Error> {
        let member = c.member();
        let mut h = self.attempts(&member).await?.unwrap_or_default();
        h.deadline_ms = c.deadline_ms;
        h.attempts.push(Attempt {
            at: now.as_micros(),
            error: error.to_string(),
            held_by,
        });
        self.store_history(&member, &h).await?;
        Ok(h)
    }

    async fn store_history(
        &self,
        member: &str,
        h: &AttemptHistory,
    ) -> Result<(), fred::error::Error> {
        let json = serde_json::to_string(h).unwrap_or_default();
        self.client
            .hset::<(), _, _>(self.keys.deadline_attempts(), (member.to_string(), json))
            .await
    }

    /// Gives up on a deadline: parks it (never claimed again until an
    /// operator retries it) and writes the dead letter with its history.
    pub async fn dead_letter(
        &self,
        c: &Claimed,
        mut h: AttemptHistory,
        database: &str,
        server: &str,
    ) -> Result<String, fred::error::Error> {
        let member = c.member();
        h.parked = true;
        self.store_history(&member, &h).await?;
        self.lease_until(std::slice::from_ref(&member), PARKED)
            .await?;
        let last = h
            .attempts
            .last()
            .map(|a| a.error.as_str())
            .unwrap_or_default();
        let dl = DeadLetter {
            origin: Some(Origin::Compensator),
            kind: DEADLINE_FAILED.to_string(),
            reason: format!(
                "deadline of match {} (shard {}) not fired after {} attempts; last error: {last}",
                c.match_id,
                c.shard,
                h.attempts.len()
            ),
            server: server.to_string(),
            database: database.to_string(),
            shard: Some(c.shard),
            match_id: Some(c.match_id),
            payload: serde_json::to_string(&h).unwrap_or_default(),
            at: Timestamp::now(),
            ..Default::default()
        };
        self.client
            .xadd(
                self.keys.deadletter(),
                false,
                None,
                "*",
                dl.to_pairs()
                    .into_iter()
                    .map(|(k, v)| (k.to_string(), v))
                    .collect::<Vec<_>>(),
            )
            .await
    }

    /// Un-parks a deadline so the next claim takes it (operator retry).
    pub async fn unpark(&self, member: &str) -> Result<(), fred::error::Error> {
        self.client
            .hdel::<(), _, _>(self.keys.deadline_attempts(), member)
            .await?;
        self.client
            .zrem::<(), _, _>(self.keys.deadline_leases(), member)
            .await
    }
}

/// Dead-letter `kind` of a deadline that could not be fired.
pub const DEADLINE_FAILED: &str = "deadline_failed";
