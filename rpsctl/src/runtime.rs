//! Process plumbing shared by the subcommands: logging, metrics exporter,
//! and the shutdown signal.

use anyhow::Context;
use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle};
use std::sync::OnceLock;
use tokio_util::sync::CancellationToken;

pub fn init_tracing() {
    let _ = tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| "info,mysql_async=warn,fred=warn".into()),
        )
        .with_writer(std::io::stderr)
        .try_init();
}

/// Installs the process-wide Prometheus recorder once and returns its handle.
pub fn metrics_handle() -> anyhow::Result<PrometheusHandle> {
    static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();
    if let Some(h) = HANDLE.get() {
        return Ok(h.clone());
    }
    let handle = PrometheusBuilder::new()
        .install_recorder()
        .context("installing the metrics recorder")?;
    Ok(HANDLE.get_or_init(|| handle).clone())
}

/// Serves `/metrics` on `bind` until the token is cancelled (stand-alone
/// components; the API serves the same registry on its own port).
pub async fn serve_metrics(bind: &str, shutdown: CancellationToken) -> anyhow::Result<()> {
    let handle = metrics_handle()?;
    let app = axum::Router::new().route(
        "/metrics",
        axum::routing::get(move || {
            let handle = handle.clone();
            async move { handle.render() }
        }),
    );
    let listener = tokio::net::TcpListener::bind(bind)
        .await
        .with_context(|| format!("binding the metrics endpoint on {bind}"))?;
    tracing::info!(%bind, "serving /metrics");
    axum::serve(listener, app)
        .with_graceful_shutdown(async move { shutdown.cancelled().await })
        .await
        .context("metrics endpoint")
}

/// Runs a stand-alone component: installs the metrics recorder, serves
/// `/metrics` on `metrics_bind` if given, runs `component` until Ctrl-C or
/// SIGTERM, then stops the metrics endpoint.
pub async fn run_component<F, Fut, E>(
    metrics_bind: Option<String>,
    component: F,
) -> anyhow::Result<()>
where
    F: FnOnce(CancellationToken) -> Fut,
    Fut: std::future::Future<Output = Result<(), E>>,
    E: Into<anyhow::Error>,
{
    metrics_handle()?;
    let shutdown = shutdown_on_signal();
    let metrics = metrics_bind.map(|bind| {
        let token = shutdown.clone();
        tokio::spawn(async move { serve_metrics(&bind, token).await })
    });
    let result = component(shutdown.clone()).await.map_err(Into::into);
    shutdown.cancel();
    if let Some(task) = metrics {
        task.await.context("the metrics endpoint panicked")??;
    }
    result
}

/// A token cancelled on Ctrl-C or SIGTERM.
pub fn shutdown_on_signal() -> CancellationToken {
    let token = CancellationToken::new();
    let t = token.clone();
    tokio::spawn(async move {
        let ctrl_c = tokio::signal::ctrl_c();
        #[cfg(unix)]
        {
            let mut term =
                match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                    Ok(s) => s,
                    Err(_) => {
                        let _ = ctrl_c.await;
                        t.cancel();
                        return;
                    }
                };
            tokio::select! {
                _ = ctrl_c => {},
                _ = term.recv() => {},
            }
        }
        #[cfg(not(unix))]
        let _ = ctrl_c.await;
        tracing::info!("shutdown requested");
        t.cancel();
    });
    token
}
