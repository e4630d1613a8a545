//! `rpsctl compensator`: fires expired saga deadlines as `timed_out` events.
//! Ready (`/readyz`) while its claims against Redis succeed.

use super::common::{run_traced_component, MetricsBind};
use rps_core::Config;
use std::sync::Arc;

pub async fn run(config: Arc<Config>, metrics: MetricsBind) -> anyhow::Result<()> {
    let bind = metrics.or_configured(&config.compensator.metrics_bind);
    run_traced_component(config, bind, compensator::run_with_readiness).await
}
