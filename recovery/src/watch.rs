//! Noticing that Redis lost the pipeline's state.
//!
//! The state is whole when the generation marker, the active generation's
//! progress hash, every server's cdc checkpoint and the bootstrap record all
//! exist, and no reader has asked for a rebuild (its checkpoint's binlog
//! was purged). [`watch`] polls that every [`POLL`] and returns the first time it
//! is not, so the supervisor can stop the components and bootstrap again.
//! While Redis does not answer nothing is concluded: after a restart with
//! its AOF, Redis comes back with a consistent prefix of the state and the
//! components resume from it by themselves.

use crate::metrics as m;
use crate::RecoveryError;
use fred::clients::Client;
use fred::interfaces::{HashesInterface, KeysInterface};
use read_model::ReadModelKeys;
use rps_core::Config;
use std::fmt;
use std::time::Duration;
use tokio_util::sync::CancellationToken;

/// How often the state is checked.
pub const POLL: Duration = Duration::from_millis(250);
/// How long one check may take before it counts as "Redis not answering".
const CHECK_TIMEOUT: Duration = Duration::from_secs(2);

/// What was found missing.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
#[serde(tag = "missing", rename_all = "snake_case")]
pub enum StateLoss {
    /// No generation marker.
    Generation,
    /// No bootstrap record: the state was not built by a bootstrap, or Redis
    /// lost it and something recreated parts of it since.
    BootstrapRecord,
    /// A server has no cdc checkpoint.
    Checkpoint { server: String },
    /// The active generation has no progress hash.
    Progress { generation: u64 },
    /// A reader cannot resume: the binlog at its checkpoint was purged, and
    /// it asked for a rebuild from snapshots (`cdc.resnapshot_when_purged`).
    BinlogPurged { server: String },
}

impl StateLoss {
    /// Low-cardinality label for metrics.
    pub fn label(&self) -> &'static str {
        match self {
            StateLoss::Generation => "generation",
            StateLoss::BootstrapRecord => "bootstrap_record",
            StateLoss::Checkpoint { .. } => "checkpoint",
            StateLoss::Progress { .. } => "progress",
            StateLoss::BinlogPurged { .. } => "binlog_purged",
        }
    }
}

impl fmt::Display for StateLoss {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            StateLoss::Generation => f.write_str("the generation marker is missing"),
            StateLoss::BootstrapRecord => f.write_str("the bootstrap record is missing"),
            StateLoss::Checkpoint { server } => {
                write!(f, "the cdc checkpoint of server `{server}` is missing")
            }
            StateLoss::Progress { generation } => {
                write!(
                    f,
                    "the progress hash of the active generation {generation} is missing"
                )
            }
            StateLoss::BinlogPurged { server } => write!(
                f,
                "the binlog at the checkpoint of `{server}` was purged; its reader asked for a rebuild"
            ),
        }
    }
}

/// One check: `Ok(Ok(active generation))` when the state is whole,
/// `Ok(Err(what))` when something is missing.
pub async fn check_state(
    config: &Config,
    redis: &Client,
) -> Result<Result<u64, StateLoss>, RecoveryError> {
    let keys = config.keys();
    let marker: Option<String> = redis.get(keys.generation()).await?;
    let Some(marker) = marker else {
        return Ok(Err(StateLoss::Generation));
    };
    let generation = crate::bootstrap::parse_generation_marker(&keys, &marker)?;
    if !redis.exists::<bool, _>(keys.bootstrap_record()).await? {
        return Ok(Err(StateLoss::BootstrapRecord));
    }
    for s in &config.servers {
        if !redis
            .exists::<bool, _>(keys.cdc_checkpoint(&s.name))
            .await?
        {
            return Ok(Err(StateLoss::Checkpoint {
                server: s.name.clone(),
            }));
        }
    }
    let purged: Vec<String> = redis.hkeys(keys.cdc_resnapshot()).await?;
    if let Some(server) = purged.into_iter().next() {
        return Ok(Err(StateLoss::BinlogPurged { server }));
    }
    if !read_model::generation::has_progress(
        redis,
        &keys.generation_keys(generation),
        config.shard_count,
    )
    .await?
    {
        // A replay may have switched to the next generation and dropped this
        // one between the two reads: only a marker that still names the
        // generation without progress is a loss.
        let now: Option<String> = redis.get(keys.generation()).await?;
        if now.as_deref() == Some(marker.as_str()) {
            return Ok(Err(StateLoss::Progress { generation }));
        }
        return Box::pin(check_state(config, redis)).await;
    }
    Ok(Ok(generation))
}

/// Returns when the state is lost (within about [`POLL`] of it happening),
/// logging an error and counting [`m::STATE_LOST_TOTAL`]; `None` when
/// `cancel` fires first.
pub async fn watch(
    config: &Config,
    redis: &Client,
    cancel: &CancellationToken,
) -> Option<StateLoss> {
    let mut unreachable = false;
    loop {
        let check = tokio::time::timeout(CHECK_TIMEOUT, check_state(config, redis));
        let outcome = tokio::select! {
            _ = cancel.cancelled() => return None,
            r = check => r,
        };
        match outcome {
            Ok(Ok(Ok(_))) => {
                if unreachable {
                    tracing::info!("Redis answers again and the pipeline state is whole");
                    unreachable = false;
                }
            }
            Ok(Ok(Err(loss))) => {
                tracing::error!(what = %loss, "pipeline state in Redis was lost; stopping the components to rebuild it from the event tables");
                metrics::counter!(m::STATE_LOST_TOTAL, "what" => loss.label()).increment(1);
                return Some(loss);
            }
            Ok(Err(e)) => {
                if !unreachable {
                    tracing::warn!(error = %e, "cannot check the pipeline state in Redis; still watching");
                    unreachable = true;
                }
            }
            Err(_) => {
                if !unreachable {
                    tracing::warn!("Redis does not answer; still watching");
                    unreachable = true;
                }
            }
        }
        tokio::select! {
            _ = cancel.cancelled() => return None,
            _ = tokio::time::sleep(POLL) => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn losses_have_closed_labels_and_plain_messages() {
        let l = StateLoss::Checkpoint {
            server: "mysql-a".into(),
        };
        assert_eq!(l.label(), "checkpoint");
        assert_eq!(
            l.to_string(),
            "the cdc checkpoint of server `mysql-a` is missing"
        );
        assert_eq!(StateLoss::Progress { generation: 3 }.label(), "progress");
        assert_eq!(
            serde_json::to_string(&StateLoss::Generation).unwrap(),
            r#"{"missing":"generation"}"#
        );
    }
}
