//! `rpsctl projector`: folds the shard streams into the read models.
//! Ready (`/readyz`) while no shard is more than
//! [`projector::consumer::READY_MAX_LAG_SECONDS`] behind its stream.

use super::common::{run_traced_component, MetricsBind};
use rps_core::Config;
use std::sync::Arc;

pub async fn run(config: Arc<Config>, metrics: MetricsBind) -> anyhow::Result<()> {
    let bind = metrics.or_configured(&config.projector.metrics_bind);
    run_traced_component(config, bind, projector::run_with_readiness).await
}
