//! Process plumbing shared by the subcommands: logging, metrics exporter,
//! health endpoints and the shutdown signal.

use crate::metrics_catalog::prometheus_builder;
use anyhow::Context;
use axum::http::StatusCode;
use axum::response::IntoResponse;
use metrics_exporter_prometheus::PrometheusHandle;
use rps_core::health::Readiness;
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

/// Installs the process-wide Prometheus recorder once, with every metric's
/// help text, and returns its handle.
pub fn metrics_handle() -> anyhow::Result<PrometheusHandle> {
    static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();
    if let Some(h) = HANDLE.get() {
        return Ok(h.clone());
    }
    let handle = prometheus_builder()
        .context("configuring the histogram buckets")?
        .install_recorder()
        .context("installing the metrics recorder")?;
    crate::metrics_catalog::describe_all();
    Ok(HANDLE.get_or_init(|| handle).clone())
}

/// `/readyz`: 200 and `{"status":"ready"}`, or 503 with the failing checks.
fn readiness_response(ready: &Readiness) -> axum::response::Response {
    match ready.status() {
        Ok(()) => (
            StatusCode::OK,
            axum::Json(serde_json::json!({ "status": "ready" })),
        )
            .into_response(),
        Err(reasons) => (
            StatusCode::SERVICE_UNAVAILABLE,
            axum::Json(serde_json::json!({ "status": "not_ready", "reasons": reasons })),
        )
            .into_response(),
    }
}

/// The stand-alone components' endpoint: `/metrics`, `/healthz` (the
/// process answers: 200) and `/readyz` (from `ready`, which the component
/// library keeps current).
pub fn metrics_router(handle: PrometheusHandle, ready: Readiness) -> axum::Router {
    axum::Router::new()
        .route(
            "/metrics",
            axum::routing::get(move || {
                let handle = handle.clone();
                async move { handle.render() }
            }),
        )
        .route(
            "/healthz",
            axum::routing::get(|| async { axum::Json(serde_json::json!({ "status": "alive" })) }),
        )
        .route(
            "/readyz",
            axum::routing::get(move || {
                let ready = ready.clone();
                async move { readiness_response(&ready) }
            }),
        )
}

/// Serves [`metrics_router`] on `bind` until the token is cancelled
/// (stand-alone components; the API serves the same registry on its own
/// port).
pub async fn serve_metrics(
    bind: &str,
    ready: Readiness,
    shutdown: CancellationToken,
) -> anyhow::Result<()> {
    let app = metrics_router(metrics_handle()?, ready);
    let listener = tokio::net::TcpListener::bind(bind)
        .await
        .with_context(|| format!("binding the metrics endpoint on {bind}"))?;
    tracing::info!(%bind, "serving /metrics, /healthz and /readyz");
    axum::serve(listener, app)
        .with_graceful_shutdown(async move { shutdown.cancelled().await })
        .await
        .context("metrics endpoint")
}

/// Runs a stand-alone component: installs the metrics recorder, serves
/// `/metrics`, `/healthz` and `/readyz` on `metrics_bind` if given, runs
/// `component` (with the readiness handle it keeps) until Ctrl-C or
/// SIGTERM, then stops the endpoint.
pub async fn run_component<F, Fut, E>(
    metrics_bind: Option<String>,
    component: F,
) -> anyhow::Result<()>
where
    F: FnOnce(CancellationToken, Readiness) -> Fut,
    Fut: std::future::Future<Output = Result<(), E>>,
    E: Into<anyhow::Error>,
{
    metrics_handle()?;
    let shutdown = shutdown_on_signal();
    let ready = Readiness::new();
    let metrics = metrics_bind.map(|bind| {
        let (token, ready) = (shutdown.clone(), ready.clone());
        tokio::spawn(async move { serve_metrics(&bind, ready, token).await })
    });
    let result = component(shutdown.clone(), ready).await.map_err(Into::into);
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
