//! The generation switch in steps of one hash slot each.
//!
//! A Redis Cluster runs a script only over keys of one slot, and a switch
//! concerns every shard's slot (its progress and its copy of the marker),
//! every partition's (its copy) and the marker's own. So the switch is a
//! short protocol around one decision, taken in one slot:
//!
//! 1. [`begin`]: the switch record (the marker's slot,
//!    [`ReadModelKeys::switch_record`]) becomes `pending`, with a deadline
//!    by that slot's clock; then each shard's copy of the marker becomes a
//!    [`Barrier`] (`switching:<from>:<to>:<seq>`), one script per shard
//!    slot. A commit into either generation refuses while the barrier is
//!    there (`generation_moved()` in `prelude.lua` sees a value other than
//!    its generation), and the live projector waits on it ([`resolve`]):
//!    from here `from`'s progress is frozen.
//! 2. The caller completes `to` up to that frozen progress.
//! 3. [`commit`]: one script in the marker's slot turns the record
//!    `committed` and sets the marker to `to`, if the record is still this
//!    barrier's and its deadline has not passed. This is the switch:
//!    readers read `to` from here on (it is whole: frozen, and completed),
//!    and nobody may abandon the switch any more.
//! 4. [`finish`]: every partition's copy becomes `to`, then every shard's
//!    (each checking, in its slot, that both generations' progress of the
//!    shard are equal, when `to` continues `from`: [`Continuity`]), then
//!    the record `done`. Partitions go first because
//!    once a shard's copy says `to`, its projector scores into `to`'s
//!    partitions, which must accept it. The partition copies need no
//!    barrier: nothing writes `to`'s partitions by script before the
//!    switch, and `from`'s partition steps only settle batches committed
//!    before the barrier.
//!
//! Every step is idempotent, and what is left to do after a crash follows
//! from the record alone: before the decision the switch is abandoned
//! (once its deadline has passed, by whoever finds a barrier: the live
//! projector, or the next replay), after it the switch is finished by
//! whoever finds a barrier. The deadline is checked only in the record's
//! slot, by the commit and by the abandoning step, so one clock decides
//! and the two cannot both succeed. A live projector therefore never waits
//! longer than the deadline for a replay that died, and never resumes the
//! old generation once the new one has been decided, however slow the
//! replay is.

use crate::keys::ReadModelKeys;
use crate::redis_util::{hash_pairs, value_text};
use fred::clients::Client;
use fred::interfaces::HashesInterface;
use fred::types::scripts::Script;
use fred::types::Value;
use futures::future::join_all;
use rps_core::{Keys, ShardId};
use std::collections::HashMap;
use std::sync::LazyLock;
use std::time::Duration;

/// How a barrier's value starts: no generation number does.
const BARRIER_PREFIX: &str = "switching:";

/// What a switch sets in every shard's copy of the marker while it holds
/// the shards: refused by the commits of both generations.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Barrier {
    pub from: u64,
    pub to: u64,
    /// The switch's number in the record (it counts every switch begun),
    /// so a barrier left by an abandoned switch is told from a live one.
    pub seq: u64,
}

impl Barrier {
    /// The copy's value.
    pub fn value(&self) -> String {
        format!("{BARRIER_PREFIX}{}:{}:{}", self.from, self.to, self.seq)
    }

    /// A copy's value as a barrier, if it is one.
    pub fn parse(value: &str) -> Option<Barrier> {
        let mut parts = value.strip_prefix(BARRIER_PREFIX)?.split(':');
        let mut next = || parts.next().and_then(|p| p.parse::<u64>().ok());
        let barrier = Barrier {
            from: next()?,
            to: next()?,
            seq: next()?,
        };
        parts.next().is_none().then_some(barrier)
    }
}

/// Where a switch stands, as its record says.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum State {
    /// Begun, not decided: abandoned once its deadline passes.
    Pending,
    /// Decided: the marker names `to`; the copies follow ([`finish`]).
    Committed,
    /// Every copy names `to`.
    Done,
    /// Abandoned before the decision: `from` stays active.
    Aborted,
}

/// The last switch begun.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Record {
    pub state: State,
    pub barrier: Barrier,
    /// Until when (Unix ms, the record slot's clock) a pending switch may
    /// be decided.
    pub deadline_ms: u64,
    pub continuity: Continuity,
}

/// How the new generation's progress relates to the old one's, which
/// decides what a shard's flip checks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Continuity {
    /// The new generation goes on from the old one's stream positions
    /// (replay): a shard flips only if both generations' progress of it
    /// are equal, which is what proves nothing was lost or applied twice.
    Continues,
    /// The new generation has stream positions of its own (a bootstrap
    /// from snapshots, with the readers' checkpoints set to match): shards
    /// flip without comparing.
    Fresh,
}

#[derive(Debug, thiserror::Error)]
pub enum SwitchError {
    #[error("redis: {0}")]
    Redis(#[from] fred::error::Error),
    #[error("another switch (to generation {to}) holds the shards for {left_ms} ms more; is another `rpsctl replay` running?")]
    Busy { to: u64, left_ms: u64 },
    #[error("the active generation is {found:?}, not {expected}")]
    Moved { expected: u64, found: String },
    #[error("`{key}` holds {value:?}, which no switch from generation {from} wrote; fix or delete it, then run `rpsctl replay`")]
    Copy {
        key: String,
        from: u64,
        value: String,
    },
    #[error(
        "the switch to generation {to} was decided, but shard {shard}'s progress differs between \
         generation {from} ({old:?}) and {to} ({new:?}): generation {from} moved after the \
         barrier (a failover that lost it?). Run `rpsctl replay` to rebuild the read models"
    )]
    ProgressDiffers {
        shard: ShardId,
        from: u64,
        to: u64,
        old: String,
        new: String,
    },
    #[error("unexpected reply from a switch script: {0}")]
    Protocol(String),
}

impl SwitchError {
    pub fn is_transient(&self) -> bool {
        matches!(self, SwitchError::Redis(_))
    }
}

/// The Unix time in ms by the script's Redis; shared by the record scripts.
const NOW_LUA: &str = r#"
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
"#;

/// Begins a switch unless one is pending (and not past its deadline) or
/// decided and unfinished. KEYS: 1 record, 2 marker. ARGV: 1 from, 2 to,
/// 3 hold (ms), 4 fresh ('1': see [`Continuity`]).
const BEGIN_LUA: &str = r#"
local st = redis.call('HGET', KEYS[1], 'state')
if st == 'pending' then
  local left = tonumber(redis.call('HGET', KEYS[1], 'deadline')) - now
  if left >= 0 then return {'BUSY', redis.call('HGET', KEYS[1], 'to'), tostring(left)} end
elseif st == 'committed' then
  return {'UNFINISHED', redis.call('HGET', KEYS[1], 'to')}
end
local cur = redis.call('GET', KEYS[2]) or '0'
if cur ~= ARGV[1] then return {'MOVED', cur} end
local seq = redis.call('HINCRBY', KEYS[1], 'seq', 1)
redis.call('HSET', KEYS[1], 'state', 'pending', 'from', ARGV[1], 'to', ARGV[2],
  'deadline', tostring(now + tonumber(ARGV[3])), 'began_at', tostring(now), 'fresh', ARGV[4])
redis.call('HDEL', KEYS[1], 'decided_at')
return {'OK', tostring(seq)}
"#;

/// The decision: the record committed and the marker moved, together.
/// KEYS: 1 record, 2 marker. ARGV: 1 from, 2 to, 3 seq.
const COMMIT_LUA: &str = r#"
if redis.call('HGET', KEYS[1], 'seq') ~= ARGV[3] then return {'LAPSED', 'superseded'} end
local st = redis.call('HGET', KEYS[1], 'state')
-- A reply lost on the way and the call repeated.
if st == 'committed' or st == 'done' then return {'OK', ''} end
if st ~= 'pending' then return {'LAPSED', st or ''} end
if now > tonumber(redis.call('HGET', KEYS[1], 'deadline')) then
  redis.call('HSET', KEYS[1], 'state', 'aborted', 'decided_at', tostring(now))
  return {'LAPSED', 'expired'}
end
local cur = redis.call('GET', KEYS[2]) or '0'
if cur ~= ARGV[1] then
  redis.call('HSET', KEYS[1], 'state', 'aborted', 'decided_at', tostring(now))
  return {'MOVED', cur}
end
redis.call('HSET', KEYS[1], 'state', 'committed', 'decided_at', tostring(now))
redis.call('SET', KEYS[2], ARGV[2])
return {'OK', ''}
"#;

/// Where a barrier's switch stands; a pending one past its deadline (or
/// given up, ARGV[2] = '1') is abandoned here. KEYS: 1 record. ARGV: 1 seq,
/// 2 give up.
const DECIDE_LUA: &str = r#"
if redis.call('HGET', KEYS[1], 'seq') ~= ARGV[1] then return {'GONE', ''} end
local st = redis.call('HGET', KEYS[1], 'state')
if st == 'pending' then
  local left = tonumber(redis.call('HGET', KEYS[1], 'deadline')) - now
  if ARGV[2] ~= '1' and left >= 0 then return {'PENDING', tostring(left)} end
  redis.call('HSET', KEYS[1], 'state', 'aborted', 'decided_at', tostring(now))
  return {'ABORTED', ''}
end
return {string.upper(st or 'gone'), ''}
"#;

/// KEYS: 1 record. ARGV: 1 seq.
const DONE_LUA: &str = r#"
if redis.call('HGET', KEYS[1], 'seq') == ARGV[1]
  and redis.call('HGET', KEYS[1], 'state') == 'committed' then
  redis.call('HSET', KEYS[1], 'state', 'done')
end
return {'OK', ''}
"#;

/// A shard's barrier. A missing copy is the marker's generation (see
/// `generation_moved()`); a barrier of another switch is left over from
/// an abandoned one, since this one holds the record. KEYS: 1 the shard's
/// copy. ARGV: 1 from, 2 barrier, 3 barrier prefix.
const HOLD_LUA: &str = r#"
local cur = redis.call('GET', KEYS[1])
if cur == ARGV[2] then return {'OK', ''} end
if (not cur) or cur == ARGV[1] or string.sub(cur, 1, #ARGV[3]) == ARGV[3] then
  redis.call('SET', KEYS[1], ARGV[2])
  return {'OK', ''}
end
return {'STATE', cur}
"#;

/// Takes an abandoned barrier away, only that one. KEYS: 1 the shard's
/// copy. ARGV: 1 barrier, 2 from ('0': there was no marker).
const RELEASE_LUA: &str = r#"
if redis.call('GET', KEYS[1]) ~= ARGV[1] then return {'OK', ''} end
if ARGV[2] == '0' then
  redis.call('DEL', KEYS[1])
else
  redis.call('SET', KEYS[1], ARGV[2])
end
return {'OK', ''}
"#;

/// A shard's copy to the new generation. The barrier is expected; a copy
/// still naming `from` (the barrier lost with a failover) flips too when
/// the progress check holds, which is what makes it safe. KEYS: 1 the
/// shard's copy, 2 `from`'s progress, 3 `to`'s progress. ARGV: 1 from,
/// 2 to, 3 barrier, 4 compare the progress ('1').
const FLIP_SHARD_LUA: &str = r#"
local cur = redis.call('GET', KEYS[1])
if cur == ARGV[2] then return {'OK', ''} end
if cur and cur ~= ARGV[3] and cur ~= ARGV[1] then return {'STATE', cur} end
if ARGV[4] == '1' then
  local a = redis.call('HGET', KEYS[2], 'id') or ''
  local b = redis.call('HGET', KEYS[3], 'id') or ''
  if a ~= b then return {'PROGRESS', a, b} end
end
redis.call('SET', KEYS[1], ARGV[2])
return {'OK', ''}
"#;

/// A partition's copy to the new generation. KEYS: 1 the partition's copy.
/// ARGV: 1 from, 2 to.
const FLIP_PARTITION_LUA: &str = r#"
local cur = redis.call('GET', KEYS[1])
if cur == ARGV[2] then return {'OK', ''} end
if cur and cur ~= ARGV[1] then return {'STATE', cur} end
redis.call('SET', KEYS[1], ARGV[2])
return {'OK', ''}
"#;

fn with_now(body: &str) -> Script {
    Script::from_lua(format!("{NOW_LUA}{body}"))
}

static BEGIN: LazyLock<Script> = LazyLock::new(|| with_now(BEGIN_LUA));
static COMMIT: LazyLock<Script> = LazyLock::new(|| with_now(COMMIT_LUA));
static DECIDE: LazyLock<Script> = LazyLock::new(|| with_now(DECIDE_LUA));
static DONE: LazyLock<Script> = LazyLock::new(|| Script::from_lua(DONE_LUA));
static HOLD: LazyLock<Script> = LazyLock::new(|| Script::from_lua(HOLD_LUA));
static RELEASE: LazyLock<Script> = LazyLock::new(|| Script::from_lua(RELEASE_LUA));
static FLIP_SHARD: LazyLock<Script> = LazyLock::new(|| Script::from_lua(FLIP_SHARD_LUA));
static FLIP_PARTITION: LazyLock<Script> = LazyLock::new(|| Script::from_lua(FLIP_PARTITION_LUA));

/// Runs a script and splits its `{status, detail, …}` reply.
async fn run(
    client: &Client,
    script: &Script,
    keys: Vec<String>,
    args: Vec<String>,
) -> Result<Vec<String>, fred::error::Error> {
    let reply: Value = script.evalsha_with_reload(client, keys, args).await?;
    let mut out: Vec<String> = reply
        .into_array()
        .into_iter()
        .map(|v| value_text(&v).unwrap_or_default())
        .collect();
    if out.is_empty() {
        out.push(String::new());
    }
    Ok(out)
}

/// Begins a switch from `from` to `to` and holds every shard: from the
/// return on, `from`'s progress does not move until the switch is decided
/// or abandoned. A deadline `hold` from now bounds how long the shards stay
/// held if the caller dies before [`commit`]. `from` 0 is no marker yet.
pub async fn begin(
    client: &Client,
    keys: &Keys,
    shard_count: u16,
    (from, to): (u64, u64),
    continuity: Continuity,
    hold: Duration,
) -> Result<Barrier, SwitchError> {
    let barrier = loop {
        let r = run(
            client,
            &BEGIN,
            vec![keys.switch_record(), keys.generation()],
            vec![
                from.to_string(),
                to.to_string(),
                hold.as_millis().to_string(),
                if continuity == Continuity::Fresh {
                    "1"
                } else {
                    "0"
                }
                .to_string(),
            ],
        )
        .await?;
        let detail = |i: usize| r.get(i).cloned().unwrap_or_default();
        match r[0].as_str() {
            "OK" => {
                break Barrier {
                    from,
                    to,
                    seq: detail(1)
                        .parse()
                        .map_err(|_| SwitchError::Protocol(r.join(" ")))?,
                }
            }
            "BUSY" => {
                return Err(SwitchError::Busy {
                    to: detail(1).parse().unwrap_or(0),
                    left_ms: detail(2).parse().unwrap_or(0),
                })
            }
            // A decided switch nobody finished: finished first (it leaves
            // the record done, or fails here).
            "UNFINISHED" => {
                recover(client, keys, shard_count).await?;
            }
            "MOVED" => {
                return Err(SwitchError::Moved {
                    expected: from,
                    found: detail(1),
                })
            }
            _ => return Err(SwitchError::Protocol(r.join(" "))),
        }
    };
    let value = barrier.value();
    let calls = (0..shard_count).map(|s| {
        run(
            client,
            &HOLD,
            vec![keys.marker_in_shard(s)],
            vec![from.to_string(), value.clone(), BARRIER_PREFIX.to_string()],
        )
    });
    let mut failed = None;
    for (s, reply) in (0..shard_count).zip(join_all(calls).await) {
        match reply {
            Ok(r) if r[0] == "OK" => {}
            Ok(r) if r[0] == "STATE" => {
                failed.get_or_insert(SwitchError::Copy {
                    key: keys.marker_in_shard(s),
                    from,
                    value: r.get(1).cloned().unwrap_or_default(),
                });
            }
            Ok(r) => {
                failed.get_or_insert(SwitchError::Protocol(r.join(" ")));
            }
            Err(e) => {
                failed.get_or_insert(e.into());
            }
        }
    }
    if let Some(e) = failed {
        // Nothing was decided: give the shards back now rather than at the
        // deadline.
        let _ = resolve(client, keys, shard_count, &barrier, true).await;
        return Err(e);
    }
    Ok(barrier)
}

/// What [`commit`] decided.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decision {
    /// The marker names `to`; [`finish`] brings the copies along.
    Switched,
    /// The switch was abandoned first (its deadline passed, or another
    /// switch replaced it): `from` stays active. [`resolve`] gives the
    /// shards back; the caller may begin again.
    Lapsed,
}

/// Decides the switch: the marker becomes `to`, atomically with the
/// record, if the switch is still this barrier's and within its deadline.
pub async fn commit(
    client: &Client,
    keys: &Keys,
    barrier: &Barrier,
) -> Result<Decision, SwitchError> {
    let r = run(
        client,
        &COMMIT,
        vec![keys.switch_record(), keys.generation()],
        vec![
            barrier.from.to_string(),
            barrier.to.to_string(),
            barrier.seq.to_string(),
        ],
    )
    .await?;
    match r[0].as_str() {
        "OK" => Ok(Decision::Switched),
        "LAPSED" => Ok(Decision::Lapsed),
        "MOVED" => Err(SwitchError::Moved {
            expected: barrier.from,
            found: r.get(1).cloned().unwrap_or_default(),
        }),
        _ => Err(SwitchError::Protocol(r.join(" "))),
    }
}

/// Brings every copy of the marker to a decided switch's `to`: partitions
/// first, then shards, then marks the record done. Idempotent; anyone who
/// finds a decided switch unfinished may run it.
pub async fn finish(
    client: &Client,
    keys: &Keys,
    shard_count: u16,
    barrier: &Barrier,
) -> Result<(), SwitchError> {
    let (from, to) = (barrier.from.to_string(), barrier.to.to_string());
    let partitions = 0..keys.partitions_of_keys();
    let calls = partitions.clone().map(|p| {
        run(
            client,
            &FLIP_PARTITION,
            vec![keys.marker_in_partition(p)],
            vec![from.clone(), to.clone()],
        )
    });
    for (p, reply) in partitions.zip(join_all(calls).await) {
        let r = reply?;
        match r[0].as_str() {
            "OK" => {}
            "STATE" => {
                return Err(SwitchError::Copy {
                    key: keys.marker_in_partition(p),
                    from: barrier.from,
                    value: r.get(1).cloned().unwrap_or_default(),
                })
            }
            _ => return Err(SwitchError::Protocol(r.join(" "))),
        }
    }
    let (old, new) = (
        keys.generation_keys(barrier.from),
        keys.generation_keys(barrier.to),
    );
    // Only the record knows; a record of another switch means this one's
    // is gone, and the check is the safe side.
    let fresh = record(client, keys)
        .await?
        .is_some_and(|r| r.barrier == *barrier && r.continuity == Continuity::Fresh);
    let check = if fresh { "0" } else { "1" }.to_string();
    let value = barrier.value();
    let calls = (0..shard_count).map(|s| {
        run(
            client,
            &FLIP_SHARD,
            vec![keys.marker_in_shard(s), old.progress(s), new.progress(s)],
            vec![from.clone(), to.clone(), value.clone(), check.clone()],
        )
    });
    let mut failed = None;
    for (s, reply) in (0..shard_count).zip(join_all(calls).await) {
        let e = match reply {
            Ok(r) => match r[0].as_str() {
                "OK" => continue,
                "STATE" => SwitchError::Copy {
                    key: keys.marker_in_shard(s),
                    from: barrier.from,
                    value: r.get(1).cloned().unwrap_or_default(),
                },
                "PROGRESS" => SwitchError::ProgressDiffers {
                    shard: s,
                    from: barrier.from,
                    to: barrier.to,
                    old: r.get(1).cloned().unwrap_or_default(),
                    new: r.get(2).cloned().unwrap_or_default(),
                },
                _ => SwitchError::Protocol(r.join(" ")),
            },
            Err(e) => e.into(),
        };
        failed.get_or_insert(e);
    }
    if let Some(e) = failed {
        return Err(e);
    }
    run(
        client,
        &DONE,
        vec![keys.switch_record()],
        vec![barrier.seq.to_string()],
    )
    .await?;
    Ok(())
}

/// What became of the switch a barrier belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Resolution {
    /// Not decided yet, and its deadline this far away: wait and look again.
    Wait(Duration),
    /// Abandoned: the barrier is gone, `from` is active.
    Resumed,
    /// Decided: every copy names `to` now.
    Switched,
}

/// For whoever meets a barrier: says whether to wait, and otherwise ends
/// the switch the way its record says, so the caller can go on with
/// `from` ([`Resolution::Resumed`]) or `to` ([`Resolution::Switched`]).
/// A pending switch past its deadline is abandoned here; `give_up`
/// abandons it at once (its own caller failing before [`commit`]).
pub async fn resolve(
    client: &Client,
    keys: &Keys,
    shard_count: u16,
    barrier: &Barrier,
    give_up: bool,
) -> Result<Resolution, SwitchError> {
    let r = run(
        client,
        &DECIDE,
        vec![keys.switch_record()],
        vec![
            barrier.seq.to_string(),
            if give_up { "1" } else { "0" }.to_string(),
        ],
    )
    .await?;
    match r[0].as_str() {
        "PENDING" => Ok(Resolution::Wait(Duration::from_millis(
            r.get(1).and_then(|l| l.parse().ok()).unwrap_or(0),
        ))),
        "COMMITTED" | "DONE" => {
            finish(client, keys, shard_count, barrier).await?;
            Ok(Resolution::Switched)
        }
        // Abandoned, or replaced by a later switch (which only begins once
        // this one is abandoned or done, and a done switch left no barrier).
        "ABORTED" | "GONE" => {
            release(client, keys, shard_count, barrier).await?;
            Ok(Resolution::Resumed)
        }
        _ => Err(SwitchError::Protocol(r.join(" "))),
    }
}

/// Takes an abandoned switch's barrier out of every shard that still has it.
async fn release(
    client: &Client,
    keys: &Keys,
    shard_count: u16,
    barrier: &Barrier,
) -> Result<(), SwitchError> {
    let value = barrier.value();
    let calls = (0..shard_count).map(|s| {
        run(
            client,
            &RELEASE,
            vec![keys.marker_in_shard(s)],
            vec![value.clone(), barrier.from.to_string()],
        )
    });
    for r in join_all(calls).await {
        r?;
    }
    Ok(())
}

/// The record of the last switch begun, if any.
pub async fn record(client: &Client, keys: &Keys) -> Result<Option<Record>, SwitchError> {
    let v: Value = client.hgetall(keys.switch_record()).await?;
    let Some(pairs) = hash_pairs(v) else {
        return Ok(None);
    };
    let f: HashMap<String, String> = pairs.into_iter().collect();
    let num = |k: &str| f.get(k).and_then(|v| v.parse::<u64>().ok());
    let bad = || SwitchError::Protocol(format!("switch record {f:?}"));
    let state = match f.get("state").map(String::as_str) {
        Some("pending") => State::Pending,
        Some("committed") => State::Committed,
        Some("done") => State::Done,
        Some("aborted") => State::Aborted,
        _ => return Err(bad()),
    };
    Ok(Some(Record {
        state,
        barrier: Barrier {
            from: num("from").ok_or_else(bad)?,
            to: num("to").ok_or_else(bad)?,
            seq: num("seq").ok_or_else(bad)?,
        },
        deadline_ms: num("deadline").unwrap_or(0),
        continuity: if f.get("fresh").map(String::as_str) == Some("1") {
            Continuity::Fresh
        } else {
            Continuity::Continues
        },
    }))
}

/// Ends what a switcher that died left behind, before anything reads the
/// active generation to start another: finishes a decided switch, gives
/// the shards of an abandoned one back. `Busy` while a switch is pending
/// within its deadline. Returns the switch it ended and how.
pub async fn recover(
    client: &Client,
    keys: &Keys,
    shard_count: u16,
) -> Result<Option<(Barrier, Resolution)>, SwitchError> {
    let Some(rec) = record(client, keys).await? else {
        return Ok(None);
    };
    if rec.state == State::Done {
        return Ok(None);
    }
    match resolve(client, keys, shard_count, &rec.barrier, false).await? {
        Resolution::Wait(left) => Err(SwitchError::Busy {
            to: rec.barrier.to,
            left_ms: left.as_millis() as u64,
        }),
        r => Ok(Some((rec.barrier, r))),
    }
}

/// A script's refusal detail (`generation_moved()`'s answer) read as a
/// barrier, when it is one.
pub fn barrier_in(active: Option<&str>) -> Option<Barrier> {
    active.and_then(Barrier::parse)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn barriers_round_trip_and_are_no_generation() {
        let b = Barrier {
            from: 3,
            to: 4,
            seq: 17,
        };
        assert_eq!(b.value(), "switching:3:4:17");
        assert_eq!(Barrier::parse(&b.value()), Some(b.clone()));
        assert_eq!(barrier_in(Some("switching:3:4:17")), Some(b));
        assert_eq!(Barrier::parse("4"), None);
        assert_eq!(Barrier::parse("switching:3:4"), None);
        assert_eq!(Barrier::parse("switching:3:4:5:6"), None);
        assert_eq!(barrier_in(None), None);
    }
}
