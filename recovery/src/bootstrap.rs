//! Whether the pipeline's state in Redis is whole, and building it from the
//! event tables when it is not.
//!
//! A bootstrap is all or nothing: the snapshots are folded and written into a
//! generation nobody reads yet, and only the commit makes it live. The
//! commit is a sequence of steps of one slot each (Redis Cluster runs a
//! script on the keys of one slot): it deletes the bootstrap record and
//! fences every server checkpoint ([`checkpoint_fence`]), so readers wait
//! and the state counts as lost until the end; then, per shard
//! ([`SHARD_COMMIT_LUA`]), sets the new generation's progress to the
//! stream's last entry and the shard's reader checkpoints to the snapshot
//! positions; the dead letters' checkpoints; every slot's copy of the
//! marker; the server checkpoints; the bootstrap record; and the marker
//! last. A crash anywhere before the record is written leaves a state the
//! next check finds lost (the next attempt builds again under a higher
//! number and drops the leftovers); a crash after it leaves a whole state.

use crate::metrics as m;
use crate::snapshot::{snapshot_server, ServerSnapshot};
use crate::watch::{check_state, StateLoss};
use crate::RecoveryError;
use cdc_reader::Checkpoint;
use fred::clients::Client;
use fred::interfaces::{KeysInterface, LuaInterface, PubsubInterface};
use futures::future::try_join_all;
use history::model::Model;
use history::redis_io;
use history::SpilledMatches;
use read_model::GenerationKeys;
use read_model::ReadModelKeys;
use rps_core::keys::PublishTarget;
use rps_core::{Config, Keys};
use rps_event_store::EventStore;
use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Instant;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

/// A shard's part of a bootstrap's commit, in the shard's slot.
///
/// KEYS: 1 the shard's stream, 2 its progress hash in the new generation,
/// then the shard's target checkpoint of every server.
/// ARGV: the target checkpoint values, in the same order.
///
/// The stream's end is read in the step that moves the shard's checkpoints:
/// an entry already in the stream was published from a position at or
/// before the reader's checkpoint (the new generation takes it as applied),
/// and a reader still running is fenced by the checkpoint change and
/// publishes again whatever followed the snapshot.
pub const SHARD_COMMIT_LUA: &str = r#"
local last = '0-0'
local top = redis.call('XREVRANGE', KEYS[1], '+', '-', 'COUNT', 1)
if #top > 0 then
  last = top[1][1]
end
redis.call('DEL', KEYS[2])
redis.call('HSET', KEYS[2], 'id', last)
for i = 3, #KEYS do
  redis.call('SET', KEYS[i], ARGV[i - 2])
end
return last
"#;

/// The value a bootstrap sets the server checkpoints to while it commits:
/// a reader that meets it waits, and one still running is fenced by it.
pub fn checkpoint_fence(generation: u64) -> String {
    format!("{}{generation}", rps_core::checkpoint::BOOTSTRAP_FENCE)
}

/// What [`ensure_state`] found or did.
#[derive(Debug, Clone, serde::Serialize)]
pub struct StateReport {
    /// The active generation afterwards.
    pub generation: u64,
    /// Why a bootstrap was needed (`None`: the state was whole).
    pub lost: Option<StateLoss>,
    pub bootstrap: Option<BootstrapReport>,
}

/// What one bootstrap did.
#[derive(Debug, Clone, serde::Serialize)]
pub struct BootstrapReport {
    pub generation: u64,
    pub servers: Vec<ServerSnapshot>,
    /// Rows folded over all servers.
    pub events: u64,
    pub matches: u64,
    pub open_matches: u64,
    /// Rows of history that do not fit their match, by rejection code.
    pub rejected: std::collections::BTreeMap<String, u64>,
    pub keys_written: u64,
    /// Reading and folding the snapshots, match states written meanwhile.
    pub snapshot_seconds: f64,
    /// Writing the players, boards and seasons after the fold.
    pub write_seconds: f64,
    pub total_seconds: f64,
    /// Older generations unlinked in the background after the commit.
    pub dropping: Vec<u64>,
}

/// Makes the pipeline's state in Redis whole: returns at once if it is
/// (generation marker, its progress, every server's checkpoint and the
/// bootstrap record exist), else bootstraps from the event tables.
///
/// Run it while no cdc-reader or projector of this deployment runs (what
/// [`crate::supervise`] does); a component still running elsewhere is fenced
/// by the commit, never mixed into it.
pub async fn ensure_state(
    config: &Arc<Config>,
    redis: &Client,
    cancel: &CancellationToken,
) -> Result<StateReport, RecoveryError> {
    let keys = config.keys();
    let whole = |generation| StateReport {
        generation,
        lost: None,
        bootstrap: None,
    };
    // Several supervisors may find the state lost at once (one reader
    // process per server): one bootstraps under the lock, the others wait
    // for it and find the state whole.
    let lock = loop {
        if let Ok(generation) = check_state(config, redis).await? {
            return Ok(whole(generation));
        }
        if let Some(lock) = BootstrapLock::acquire(redis, &keys).await? {
            break lock;
        }
        tokio::select! {
            _ = cancel.cancelled() => return Err(RecoveryError::Cancelled),
            _ = tokio::time::sleep(std::time::Duration::from_millis(500)) => {}
        }
    };
    let lost = match check_state(config, redis).await? {
        Ok(generation) => {
            lock.release(redis).await;
            return Ok(whole(generation));
        }
        Err(loss) => loss,
    };
    tracing::warn!(what = %lost, "pipeline state in Redis is not whole: bootstrapping from the event tables");
    metrics::gauge!(m::BOOTSTRAPPING).set(1.0);
    let renew = lock.keep_alive(redis.clone());
    let r = bootstrap(config, redis, &keys, cancel)
        .instrument(tracing::info_span!("bootstrap"))
        .await;
    renew.abort();
    lock.release(redis).await;
    metrics::gauge!(m::BOOTSTRAPPING).set(0.0);
    match r {
        Ok(b) => {
            metrics::counter!(m::BOOTSTRAPS_TOTAL, "outcome" => "committed").increment(1);
            metrics::histogram!(m::BOOTSTRAP_SECONDS).record(b.total_seconds);
            Ok(StateReport {
                generation: b.generation,
                lost: Some(lost),
                bootstrap: Some(b),
            })
        }
        Err(e) => {
            metrics::counter!(m::BOOTSTRAPS_TOTAL, "outcome" => "failed").increment(1);
            Err(e)
        }
    }
}

/// The bootstrap lock: one supervisor bootstraps at a time. A TTL, renewed
/// while the bootstrap runs, so a supervisor that dies lets the next one in.
struct BootstrapLock {
    key: String,
    owner: String,
}

const LOCK_TTL_MS: u64 = 15_000;

/// KEYS[1] deleted if it holds ARGV[1]; with ARGV[2], its TTL renewed instead.
const LOCK_LUA: &str = r#"
if redis.call('GET', KEYS[1]) ~= ARGV[1] then return 0 end
if ARGV[2] then return redis.call('PEXPIRE', KEYS[1], ARGV[2]) end
return redis.call('DEL', KEYS[1])
"#;

impl BootstrapLock {
    async fn acquire(redis: &Client, keys: &Keys) -> Result<Option<BootstrapLock>, RecoveryError> {
        let lock = BootstrapLock {
            key: keys.bootstrap_lock(),
            owner: uuid::Uuid::new_v4().simple().to_string(),
        };
        let set: Option<String> = redis
            .set(
                &lock.key,
                lock.owner.as_str(),
                Some(fred::types::Expiration::PX(LOCK_TTL_MS as i64)),
                Some(fred::types::SetOptions::NX),
                false,
            )
            .await?;
        Ok(set.is_some().then_some(lock))
    }

    fn keep_alive(&self, redis: Client) -> tokio::task::JoinHandle<()> {
        let (key, owner) = (self.key.clone(), self.owner.clone());
        tokio::spawn(async move {
            loop {
                tokio::time::sleep(std::time::Duration::from_millis(LOCK_TTL_MS / 3)).await;
                let _: Result<i64, _> = redis
                    .eval(
                        LOCK_LUA,
                        vec![key.clone()],
                        vec![owner.clone(), LOCK_TTL_MS.to_string()],
                    )
                    .await;
            }
        })
    }

    async fn release(&self, redis: &Client) {
        let _: Result<i64, _> = redis
            .eval(LOCK_LUA, vec![self.key.clone()], vec![self.owner.clone()])
            .await;
    }
}

/// Snapshot every server, write a new generation, commit atomically.
pub async fn bootstrap(
    config: &Arc<Config>,
    redis: &Client,
    keys: &Keys,
    cancel: &CancellationToken,
) -> Result<BootstrapReport, RecoveryError> {
    let started = Instant::now();
    let marker: Option<String> = redis.get(keys.generation()).await?;
    let marker = marker.unwrap_or_default();
    let marker_gen: u64 = if marker.is_empty() {
        0
    } else {
        parse_generation_marker(keys, &marker)?
    };
    let existing = existing_generations(redis, keys).await?;

    let generation = existing
        .iter()
        .copied()
        .chain([marker_gen])
        .max()
        .unwrap_or(0)
        + 1;
    let gk = keys.generation_keys(generation);

    // Match states are written range by range while the snapshots read on;
    // the fold keeps only the players.
    let store = EventStore::with_pool_size(config.clone(), 2)?;
    let (spill, spilled) = mpsc::channel::<SpilledMatches>(4);
    let mut snaps = Vec::with_capacity(config.servers.len());
    for (i, s) in config.servers.iter().enumerate() {
        let span = tracing::info_span!("snapshot", server = %s.name);
        snaps.push(snapshot_server(&store, i, cancel, spill.clone()).instrument(span));
    }
    drop(spill);
    let writer = crate::write::write_spilled(redis, &gk, config.shard_count, spilled);
    let (parts, tally) = tokio::join!(try_join_all(snaps), writer);
    store.disconnect().await;
    let folded = match (parts, tally) {
        // A failed writer ends the snapshots with `Cancelled`: report its cause.
        (_, Err(e)) | (Err(e), _) => Err(e),
        (Ok(parts), Ok(tally)) if !cancel.is_cancelled() => Ok((parts, tally)),
        _ => Err(RecoveryError::Cancelled),
    };
    let (parts, tally) = match folded {
        Ok(f) => f,
        Err(e) => {
            drop_uncommitted(redis, &gk, keys).await;
            return Err(e);
        }
    };
    let mut model = Model::new(config.shard_count);
    let mut servers = Vec::with_capacity(parts.len());
    for (part, snap) in parts {
        model.merge(part);
        servers.push(snap);
    }
    let snapshot_seconds = started.elapsed().as_secs_f64();

    let write_started = Instant::now();
    let keys_written = match crate::write::write_generation(redis, &gk, &model).await {
        Ok(n) => n + tally.commands,
        Err(e) => {
            drop_uncommitted(redis, &gk, keys).await;
            return Err(e);
        }
    };
    let write_seconds = write_started.elapsed().as_secs_f64();

    let mut report = BootstrapReport {
        generation,
        events: model.events,
        matches: tally.matches,
        open_matches: tally.open_matches,
        rejected: model.rejections.by_code.clone(),
        servers,
        keys_written,
        snapshot_seconds,
        write_seconds,
        total_seconds: 0.0,
        dropping: Vec::new(),
    };
    drop(model);
    match commit(config, redis, keys, &marker, &report).await {
        Ok(()) => {}
        Err(e) => {
            drop_uncommitted(redis, &gk, keys).await;
            return Err(e);
        }
    }
    report.total_seconds = started.elapsed().as_secs_f64();
    report.dropping = existing
        .iter()
        .copied()
        .chain((marker_gen > 0).then_some(marker_gen))
        .filter(|g| *g != generation)
        .collect::<BTreeSet<_>>()
        .into_iter()
        .collect();
    tracing::info!(
        generation,
        events = report.events,
        matches = report.matches,
        open_matches = report.open_matches,
        keys = keys_written,
        snapshot_s = format!("{snapshot_seconds:.2}"),
        write_s = format!("{write_seconds:.2}"),
        total_s = format!("{:.2}", report.total_seconds),
        "bootstrap committed"
    );
    // Overdue deadlines of the new generation fire now rather than at the
    // compensator's next safety re-check.
    let _: Result<i64, _> = redis.publish(keys.compensator_wakeup(), "bootstrap").await;
    if !report.dropping.is_empty() {
        let client = redis.clone();
        let old: Vec<_> = report
            .dropping
            .iter()
            .map(|g| keys.generation_keys(*g))
            .collect();
        tokio::spawn(
            async move {
                for gk in old {
                    match redis_io::drop_generation(&client, &gk).await {
                        Ok(n) => tracing::info!(
                            generation = gk.generation,
                            keys = n,
                            "old generation dropped"
                        ),
                        Err(e) => tracing::warn!(generation = gk.generation, error = %e,
                            "dropping an old generation failed; the next bootstrap drops it"),
                    }
                }
            }
            .instrument(tracing::info_span!("drop_generations")),
        );
    }
    Ok(report)
}

/// Nothing points at a generation before its commit: after a failure it is
/// a leftover, dropped now (or by the next bootstrap if that fails too).
async fn drop_uncommitted(redis: &Client, gk: &GenerationKeys, keys: &Keys) {
    // Unless it is live after all: another process committed a bootstrap
    // of the same number (its lock expired under a stalled renewal).
    let marker: Result<Option<String>, _> = redis.get(keys.generation()).await;
    if let Ok(Some(m)) = marker {
        if m == gk.generation.to_string() {
            tracing::warn!(
                generation = gk.generation,
                "not dropping generation: it is the active one"
            );
            return;
        }
    }
    if let Err(e) = redis_io::drop_generation(redis, gk).await {
        tracing::warn!(error = %e, generation = gk.generation,
            "dropping the uncommitted generation failed; the next bootstrap drops it");
    }
}

async fn commit(
    config: &Config,
    redis: &Client,
    keys: &Keys,
    marker: &str,
    report: &BootstrapReport,
) -> Result<(), RecoveryError> {
    let raced = |found: Option<String>| RecoveryError::Raced {
        expected: marker.to_string(),
        found: found.unwrap_or_default(),
    };
    let found: Option<String> = redis.get(keys.generation()).await?;
    if found.as_deref().unwrap_or("") != marker {
        return Err(raced(found));
    }
    let gk = keys.generation_keys(report.generation);
    let writer = format!("recovery-{}", uuid::Uuid::new_v4().simple());
    let mut checkpoints = Vec::with_capacity(report.servers.len());
    for snap in &report.servers {
        let gtid = snap
            .gtid
            .parse()
            .map_err(
                |e: rps_core::gtid::GtidParseError| RecoveryError::BadSnapshotGtid {
                    server: snap.server.clone(),
                    gtid: snap.gtid.clone(),
                    message: e.to_string(),
                },
            )?;
        let ck = Checkpoint {
            gtid,
            file: snap.file.clone(),
            pos: snap.pos,
            commit_ts: snap.taken_at_micros,
            inflight: None,
        };
        checkpoints.push((snap.server.as_str(), ck.encode(&writer, 0)));
    }

    let _: () = redis.del(keys.bootstrap_record()).await?;
    for (server, _) in &checkpoints {
        let _: () = redis
            .set(
                keys.cdc_checkpoint(server),
                checkpoint_fence(report.generation),
                None,
                None,
                false,
            )
            .await?;
    }
    let shard_steps = (0..config.shard_count).map(|s| {
        let mut k = vec![keys.events(s), gk.progress(s)];
        let mut argv = Vec::with_capacity(checkpoints.len());
        for (server, ck) in &checkpoints {
            k.push(keys.cdc_target_checkpoint(server, PublishTarget::Shard(s)));
            argv.push(ck.clone());
        }
        redis.eval::<String, _, _, _>(SHARD_COMMIT_LUA, k, argv)
    });
    try_join_all(shard_steps).await?;
    for (server, ck) in &checkpoints {
        let k = keys.cdc_target_checkpoint(server, PublishTarget::DeadLetters);
        let _: () = redis.set(k, ck.as_str(), None, None, false).await?;
    }
    for copy in keys.marker_copies(config.shard_count) {
        let _: () = redis
            .set(copy, report.generation.to_string(), None, None, false)
            .await?;
    }
    for (server, ck) in &checkpoints {
        let _: () = redis
            .set(keys.cdc_checkpoint(server), ck.as_str(), None, None, false)
            .await?;
    }
    let _: () = redis.del(keys.cdc_resnapshot()).await?;
    let record = serde_json::json!({
        "generation": report.generation,
        "committed_at": rps_core::Timestamp::now().as_micros(),
        "events": report.events,
        "servers": report.servers,
    })
    .to_string();
    let _: () = redis
        .set(keys.bootstrap_record(), record, None, None, false)
        .await?;
    // The marker last, and only over the value this bootstrap started
    // from: readers of the read models switch here.
    let r: i64 = redis
        .eval(
            SET_IF_LUA,
            vec![keys.generation()],
            vec![marker.to_string(), report.generation.to_string()],
        )
        .await?;
    if r == 1 {
        Ok(())
    } else {
        let found: Option<String> = redis.get(keys.generation()).await?;
        Err(raced(found))
    }
}

/// KEYS[1] := ARGV[2] if it holds ARGV[1] ('' = absent); 1 if set.
const SET_IF_LUA: &str = r#"
local cur = redis.call('GET', KEYS[1]) or ''
if cur ~= ARGV[1] then return 0 end
redis.call('SET', KEYS[1], ARGV[2])
return 1
"#;

/// Generation numbers that have any key in Redis (`{prefix}:g<n>:…`).
pub async fn existing_generations(
    redis: &Client,
    keys: &Keys,
) -> Result<BTreeSet<u64>, RecoveryError> {
    let base = keys.generations_base();
    let pattern = format!("{base}*");
    let mut found = BTreeSet::new();
    let mut scan = rps_core::redis_client::KeyScan::new(redis, &pattern).await?;
    while let Some(page) = scan.next_page(redis).await? {
        found.extend(page.iter().filter_map(|k| generation_of_key(&base, k)));
    }
    Ok(found)
}

/// The generation a key belongs to: `{prefix}:g<n>:…` → `n`. Other keys
/// matching `{prefix}:g*` (the marker `{prefix}:generation`) are not.
fn generation_of_key(base: &str, key: &str) -> Option<u64> {
    let (num, _) = key.strip_prefix(base)?.split_once(':')?;
    num.parse().ok()
}

/// The generation marker's value as a number; anything else is an operator's
/// problem, not something a retry fixes.
pub(crate) fn parse_generation_marker(keys: &Keys, marker: &str) -> Result<u64, RecoveryError> {
    marker
        .trim()
        .parse()
        .map_err(|_| RecoveryError::BadGenerationMarker {
            key: keys.generation(),
            value: marker.to_string(),
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generation_keys_are_told_from_the_marker() {
        let base = "rps:g";
        assert_eq!(generation_of_key(base, "rps:g12:player:5"), Some(12));
        assert_eq!(generation_of_key(base, "rps:g3:progress"), Some(3));
        assert_eq!(generation_of_key(base, "rps:generation"), None);
        assert_eq!(generation_of_key(base, "rps:g:x"), None);
        assert_eq!(generation_of_key(base, "other:g1:x"), None);
    }
}
