//! The compensator's Redis side: claiming due deadlines under a lease, and
//! the bookkeeping of failed attempts (retry schedule, parking, dead letter).
//!
//! The deadline set belongs to the projector (it adds an entry on `started`
//! and removes it in the step that records the match's end); the compensator
//! never writes to it. Its own state is two keys per shard, shared by every
//! compensator and kept in the shard's slot with its deadline set
//! ([`Keys::deadline_leases`], [`Keys::deadline_attempts`]), so that one
//! claim touches one slot on Redis Cluster:
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
use std::collections::BTreeMap;

/// Lease score of a parked deadline: far beyond any real time (year 2255),
/// and an exact integer in a double.
pub const PARKED: i64 = 9_000_000_000_000;

/// Claims up to `batch` due deadlines that nobody holds, atomically.
///
/// KEYS: the shard's deadlines, leases, attempts (one slot). ARGV: now ms,
/// lease ms, batch, max entries to scan, parked score. Returns
/// `{next_ms, pending, overdue, m1, s1, …}`:
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

/// The KEYS of [`CLAIM_LUA`] for one shard.
fn claim_keys(keys: &Keys, g: &GenerationKeys, shard: ShardId) -> Vec<String> {
    vec![
        g.deadlines(shard),
        keys.deadline_leases(shard),
        keys.deadline_attempts(shard),
    ]
}

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
    /// Members that do not name a shard and a match, or name another shard
    /// than the set they are in (never claimed again until their lease
    /// expires; logged). The shard's bookkeeping keys are the set's, so a
    /// member naming another shard could not be released or retried.
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

    /// Claims up to `batch` due deadlines of generation `g` over every
    /// shard's deadline set (one [`CLAIM_LUA`] per shard, the shard's set
    /// in its slot), counting every shard's pending and overdue.
    pub async fn claim(
        &self,
        g: &GenerationKeys,
        shard_count: u16,
        now_ms: i64,
        lease_ms: u64,
        batch: usize,
    ) -> Result<ClaimResult, fred::error::Error> {
        let mut out = ClaimResult::default();
        // Start at a different shard each time, so a busy shard does not
        // hold the others' deadlines back when the batch fills up.
        let first = (now_ms.rem_euclid(i64::from(shard_count.max(1)))) as u16;
        for k in 0..shard_count {
            let shard = (first + k) % shard_count;
            let left = batch.max(1).saturating_sub(out.claimed.len());
            let r = self
                .claim_shard(g, shard, now_ms, lease_ms, left.max(1), left == 0)
                .await?;
            out.pending += r.pending;
            out.overdue += r.overdue;
            out.next_ms = match (out.next_ms, r.next_ms) {
                (Some(a), Some(b)) => Some(a.min(b)),
                (a, b) => a.or(b),
            };
            out.claimed.extend(r.claimed);
            out.malformed.extend(r.malformed);
        }
        Ok(out)
    }

    /// One shard's claim; `count_only` claims nothing (the batch is full)
    /// but still reports the shard's pending, overdue and next due time.
    async fn claim_shard(
        &self,
        g: &GenerationKeys,
        shard: ShardId,
        now_ms: i64,
        lease_ms: u64,
        batch: usize,
        count_only: bool,
    ) -> Result<ClaimResult, fred::error::Error> {
        let batch = if count_only { 0 } else { batch.max(1) };
        let max_scan = (batch * 64).max(10_000);
        let res: Vec<Value> = self
            .claim
            .evalsha_with_reload(
                &self.client,
                claim_keys(&self.keys, g, shard),
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
                (Some((s_of, match_id)), Some(s)) if s_of == shard => out.claimed.push(Claimed {
                    shard,
                    match_id,
                    deadline_ms: s as i64,
                }),
                _ => out.malformed.push(member),
            }
        }
        Ok(out)
    }

    /// Holds a claimed deadline until `until_ms` (a retry time, a later
    /// re-check, [`PARKED`]).
    pub async fn lease_until(&self, c: &Claimed, until_ms: i64) -> Result<(), fred::error::Error> {
        self.client
            .zadd::<(), _, _>(
                self.keys.deadline_leases(c.shard),
                None,
                None,
                false,
                false,
                (until_ms as f64, c.member()),
            )
            .await
    }

    /// Forgets the attempt history of deadlines that have been settled: one
    /// HDEL per shard among them, sent together.
    pub async fn clear_attempts(&self, settled: &[Claimed]) -> Result<(), fred::error::Error> {
        let mut by_shard: BTreeMap<ShardId, Vec<String>> = BTreeMap::new();
        for c in settled {
            by_shard.entry(c.shard).or_default().push(c.member());
        }
        futures::future::try_join_all(by_shard.into_iter().map(|(shard, members)| {
            self.client
                .hdel::<(), _, _>(self.keys.deadline_attempts(shard), members)
        }))
        .await?;
        Ok(())
    }

    /// The attempt history of a deadline, if it is being retried or parked.
    pub async fn attempts(
        &self,
        shard: ShardId,
        match_id: i64,
    ) -> Result<Option<AttemptHistory>, fred::error::Error> {
        let raw: Option<String> = self
            .client
            .hget(
                self.keys.deadline_attempts(shard),
                deadline_member(shard, match_id),
            )
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
        let mut h = self
            .attempts(c.shard, c.match_id)
            .await?
            .unwrap_or_default();
        h.deadline_ms = c.deadline_ms;
        h.attempts.push(Attempt {
            at: now.as_micros(),
            error: error.to_string(),
            held_by,
        });
        self.store_history(c, &h).await?;
        Ok(h)
    }

    async fn store_history(
        &self,
        c: &Claimed,
        h: &AttemptHistory,
    ) -> Result<(), fred::error::Error> {
        let json = serde_json::to_string(h).unwrap_or_default();
        self.client
            .hset::<(), _, _>(self.keys.deadline_attempts(c.shard), (c.member(), json))
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
        h.parked = true;
        self.store_history(c, &h).await?;
        self.lease_until(c, PARKED).await?;
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
    pub async fn unpark(&self, shard: ShardId, match_id: i64) -> Result<(), fred::error::Error> {
        let member = deadline_member(shard, match_id);
        self.client
            .hdel::<(), _, _>(self.keys.deadline_attempts(shard), &member)
            .await?;
        self.client
            .zrem::<(), _, _>(self.keys.deadline_leases(shard), member)
            .await
    }
}

/// Dead-letter `kind` of a deadline that could not be fired.
pub const DEADLINE_FAILED: &str = "deadline_failed";

#[cfg(test)]
mod tests {
    use super::*;
    use read_model::ReadModelKeys;

    #[test]
    fn a_claim_touches_one_slot() {
        let keys = Keys::new("rps");
        let g = keys.generation_keys(7);
        for shard in [0, 1, 7, 255] {
            let slots: std::collections::BTreeSet<u16> = claim_keys(&keys, &g, shard)
                .iter()
                .map(|k| fred::util::redis_keyslot(k.as_bytes()))
                .collect();
            assert_eq!(slots.len(), 1, "shard {shard}: {slots:?}");
        }
        assert_ne!(
            fred::util::redis_keyslot(keys.deadline_leases(0).as_bytes()),
            fred::util::redis_keyslot(keys.deadline_leases(1).as_bytes())
        );
    }
}
