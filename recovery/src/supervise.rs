//! The supervisor loop of `rpsctl run` / `rpsctl cdc-reader`: make the state
//! whole, run the components on it, and when the state is lost stop them,
//! rebuild, and run them again.
//!
//! The components are started by the caller's closure for a child
//! cancellation token, so this crate does not depend on which components a
//! process runs. They are always stopped (and awaited) before a bootstrap
//! begins: a bootstrap snapshot must not race a reader of the same
//! deployment publishing past it.

use crate::bootstrap::ensure_state;
use crate::watch::watch;
use crate::RecoveryError;
use rps_core::redis_client::ClientPolicy;
use rps_core::retry::{classify_redis, Backoff, ErrorClass};
use rps_core::Config;
use std::fmt::Display;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

const BACKOFF_MIN: Duration = Duration::from_millis(200);
const BACKOFF_MAX: Duration = Duration::from_secs(30);

/// Runs until `shutdown` (Ok), a definite bootstrap error, or the components
/// stopping by themselves (their error).
///
/// `start_components(token)` starts the components for `token` and returns
/// a future that completes when they have all stopped.
pub async fn supervise<F, Fut, E>(
    config: Arc<Config>,
    shutdown: CancellationToken,
    mut start_components: F,
) -> Result<(), RecoveryError>
where
    F: FnMut(CancellationToken) -> Fut,
    Fut: Future<Output = Result<(), E>>,
    E: Display,
{
    crate::metrics::CATALOGUE.describe();
    let mut delays = Backoff::new(BACKOFF_MIN, BACKOFF_MAX);
    // Commands fail rather than hang while Redis is down, so the watch and
    // the bootstrap see an outage as errors.
    let redis = loop {
        match ClientPolicy::default().connect(&config.redis).await {
            Ok(c) => break c,
            Err(e) if classify_redis(&e) == ErrorClass::Definite => return Err(e.into()),
            Err(e) => {
                tracing::warn!(error = %e, "connecting to Redis; retrying");
                if !delays.wait(&shutdown).await {
                    return Ok(());
                }
            }
        }
    };
    let mut round = 0u64;
    let result = loop {
        round += 1;
        let span = tracing::info_span!("supervise", round);
        let report = loop {
            match ensure_state(&config, &redis, &shutdown)
                .instrument(span.clone())
                .await
            {
                Ok(r) => break Some(r),
                Err(RecoveryError::Cancelled) => break None,
                Err(e) if e.is_transient() => {
                    tracing::warn!(parent: &span, error = %e, "bootstrap failed; retrying");
                    if !delays.wait(&shutdown).await {
                        break None;
                    }
                }
                Err(e) => {
                    tracing::error!(parent: &span, error = %e, "bootstrap cannot proceed");
                    return Err(e);
                }
            }
        };
        let Some(report) = report else { break Ok(()) };
        if shutdown.is_cancelled() {
            break Ok(());
        }
        delays.reset();
        tracing::info!(parent: &span, generation = report.generation,
            bootstrapped = report.bootstrap.is_some(), "state whole; starting the components");
        let components = shutdown.child_token();
        let running = start_components(components.clone());
        tokio::pin!(running);
        tokio::select! {
            r = &mut running => {
                if shutdown.is_cancelled() {
                    break Ok(());
                }
                break Err(RecoveryError::Components(match r {
                    Ok(()) => "they returned without being asked to stop".to_string(),
                    Err(e) => e.to_string(),
                }));
            }
            loss = watch(&config, &redis, &shutdown) => {
                components.cancel();
                if let Err(e) = running.await {
                    tracing::warn!(parent: &span, error = %e, "a component reported an error while stopping");
                }
                match loss {
                    None => break Ok(()),
                    Some(loss) => {
                        tracing::info!(parent: &span, what = %loss, "components stopped; rebuilding the state");
                    }
                }
            }
        }
    };
    let _ = fred::interfaces::ClientLike::quit(&redis).await;
    result
}
