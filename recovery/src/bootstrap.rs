//! Whether the pipeline's state in Redis is whole, and building it from the
//! event tables when it is not.
//!
//! A bootstrap is all or nothing: the snapshots are folded and written into a
//! generation nobody reads yet, and only the final script ([`COMMIT_LUA`])
//! makes it live, setting in one atomic step every server's cdc checkpoint to
//! its snapshot position, every shard's progress in the new generation to its
//! stream's last entry, the bootstrap record and the generation marker. A
//! crash before that script leaves the marker unset (the next attempt builds
//! again under a higher number and drops the leftovers); a crash after it
//! leaves a whole state.

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
use rps_core::{Config, Keys};
use rps_event_store::EventStore;
use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Instant;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

/// The atomic commit of a bootstrap.
///
/// KEYS: 1 generation marker, 2 new generation's progress hash, 3 bootstrap
/// record, 4 the readers' rebuild requests (cleared: this bootstrap answers
/// them), 5..5+S-1 shard streams 0..S-1, then one checkpoint key per server.
/// ARGV: 1 marker value the bootstrap started from (`''` = none), 2 new
/// generation, 3 shard count S, 4 bootstrap record, then one checkpoint value
/// per server (same order as the keys).
///
/// Stream ends are read here, inside the step that moves the checkpoints: an
/// entry already in a stream was published from a position at or before the
/// reader's checkpoint, and a reader that is still running is fenced by the
/// checkpoint change and republishes whatever followed the snapshot.
pub const COMMIT_LUA: &str = r#"
local cur = redis.call('GET', KEYS[1]) or ''
if cur ~= ARGV[1] then
  return {'MOVED', cur}
end
local s_count = tonumber(ARGV[3])
redis.call('DEL', KEYS[2], KEYS[4])
for s = 0, s_count - 1 do
  local last = '0-0'
  local top = redis.call('XREVRANGE', KEYS[5 + s], '+', '-', 'COUNT', 1)
  if #top > 0 then
    last = top[1][1]
  end
  redis.call('HSET', KEYS[2], tostring(s), last)
end
for i = 5 + s_count, #KEYS do
  redis.call('SET', KEYS[i], ARGV[i - s_count])
end
redis.call('SET', KEYS[3], ARGV[4])
redis.call('SET', KEYS[1], ARGV[2])
return {'OK', ARGV[2]}
"#;

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
    let lost = match check_state(config, redis).await? {
        Ok(generation) => {
            return Ok(StateReport {
                generation,
                lost: None,
                bootstrap: None,
            })
        }
        Err(loss) => loss,
    };
    tracing::warn!(what = %lost, "pipeline state in Redis is not whole: bootstrapping from the event tables");
    metrics::gauge!(m::BOOTSTRAPPING).set(1.0);
    let r = bootstrap(config, redis, &keys, cancel)
        .instrument(tracing::info_span!("bootstrap"))
        .await;
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
        marker
            .trim()
            .parse()
            .map_err(|_| RecoveryError::BadGenerationMarker {
                key: keys.generation(),
                value: marker.clone(),
            })?
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
            drop_uncommitted(redis, &gk).await;
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
            drop_uncommitted(redis, &gk).await;
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
            drop_uncommitted(redis, &gk).await;
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
async fn drop_uncommitted(redis: &Client, gk: &GenerationKeys) {
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
    let gk = keys.generation_keys(report.generation);
    let mut k = vec![
        keys.generation(),
        gk.progress(),
        keys.bootstrap_record(),
        keys.cdc_resnapshot(),
    ];
    k.extend((0..config.shard_count).map(|s| keys.events(s)));
    let writer = format!("recovery-{}", uuid::Uuid::new_v4().simple());
    let mut argv = vec![
        marker.to_string(),
        report.generation.to_string(),
        config.shard_count.to_string(),
        serde_json::json!({
            "generation": report.generation,
            "committed_at": rps_core::Timestamp::now().as_micros(),
            "events": report.events,
            "servers": report.servers,
        })
        .to_string(),
    ];
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
        k.push(keys.cdc_checkpoint(&snap.server));
        argv.push(ck.encode(&writer, 0));
    }
    let r: Vec<String> = redis.eval(COMMIT_LUA, k, argv).await?;
    match r.first().map(String::as_str) {
        Some("OK") => Ok(()),
        Some("MOVED") => Err(RecoveryError::Raced {
            expected: marker.to_string(),
            found: r.get(1).cloned().unwrap_or_default(),
        }),
        _ => Err(RecoveryError::CommitReply { reply: r }),
    }
}

/// Generation numbers that have any key in Redis (`{prefix}:g<n>:…`).
pub async fn existing_generations(
    redis: &Client,
    keys: &Keys,
) -> Result<BTreeSet<u64>, RecoveryError> {
    let base = keys.generations_base();
    let pattern = format!("{base}*");
    let mut found = BTreeSet::new();
    let mut cursor = "0".to_string();
    loop {
        let (next, page): (String, Vec<String>) = redis
            .scan_page(cursor, pattern.clone(), Some(1000), None)
            .await?;
        found.extend(page.iter().filter_map(|k| generation_of_key(&base, k)));
        if next == "0" {
            return Ok(found);
        }
        cursor = next;
    }
}

/// The generation a key belongs to: `{prefix}:g<n>:…` → `n`. Other keys
/// matching `{prefix}:g*` (the marker `{prefix}:generation`) are not.
fn generation_of_key(base: &str, key: &str) -> Option<u64> {
    let (num, _) = key.strip_prefix(base)?.split_once(':')?;
    num.parse().ok()
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
