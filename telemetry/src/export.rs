//! The tracer provider: where spans go, how many matches are traced, and
//! the flush at shutdown.
//!
//! Settings come from `[tracing]` of `rps.toml`, overridden by the standard
//! OpenTelemetry variables an operator sets per environment:
//! `OTEL_EXPORTER_OTLP_TRACES_ENDPOINT` (the full URL),
//! `OTEL_EXPORTER_OTLP_ENDPOINT` (base URL, `/v1/traces` appended),
//! `OTEL_TRACES_SAMPLER` (`always_on`, `always_off`, `traceidratio`,
//! `parentbased_*` of those), `OTEL_TRACES_SAMPLER_ARG`, `OTEL_SERVICE_NAME`
//! and `OTEL_SDK_DISABLED`; the exporter itself reads
//! `OTEL_EXPORTER_OTLP_HEADERS` and `_TIMEOUT`, the batch processor
//! `OTEL_BSP_*`. With no endpoint anywhere, tracing is off.
//!
//! Spans are sent as OTLP protobuf over plain HTTP (no TLS is compiled in:
//! the collector is expected beside the process, as an agent or sidecar),
//! batched by a task on the caller's tokio runtime so that no component
//! ever waits for the collector; a full queue drops spans, never blocks.

use opentelemetry::trace::TracerProvider;
use opentelemetry_otlp::{Protocol, WithExportConfig};
use opentelemetry_sdk::trace::span_processor_with_async_runtime::BatchSpanProcessor;
use opentelemetry_sdk::trace::{BatchConfigBuilder, Sampler, SdkTracerProvider};
use opentelemetry_sdk::Resource;
use rps_core::config::TracingConfig;
use std::time::Duration;

/// Longest a shutdown waits for the last export.
const SHUTDOWN_TIMEOUT: Duration = Duration::from_secs(10);

/// Spans held for export at most (a span is a few hundred bytes, so about
/// 10 MB), unless `OTEL_BSP_MAX_QUEUE_SIZE` says otherwise.
pub const DEFAULT_QUEUE_SIZE: usize = 32_768;
/// Exports in flight at once, unless `OTEL_BSP_MAX_CONCURRENT_EXPORTS`.
pub const DEFAULT_CONCURRENT_EXPORTS: usize = 2;

/// The service name when neither the config nor `OTEL_SERVICE_NAME` has one.
pub const DEFAULT_SERVICE_NAME: &str = "rps";

#[derive(Debug, thiserror::Error)]
pub enum InitError {
    #[error("tracing settings: {0}")]
    Invalid(String),
    #[error("building the OTLP exporter for {url}: {message}")]
    Exporter { url: String, message: String },
}

/// Tracing as resolved from the config and the environment.
#[derive(Debug, Clone, PartialEq)]
pub struct Settings {
    /// Where spans are POSTed (`…/v1/traces`).
    pub traces_url: String,
    pub sample_ratio: f64,
    pub service_name: String,
}

fn traces_url(base: &str) -> String {
    format!("{}/v1/traces", base.trim_end_matches('/'))
}

impl Settings {
    /// The settings in force, or `None` when tracing is off.
    pub fn resolve(
        config: &TracingConfig,
        env: &dyn Fn(&str) -> Option<String>,
    ) -> Result<Option<Settings>, InitError> {
        let var = |k: &str| {
            env(k)
                .map(|v| v.trim().to_string())
                .filter(|v| !v.is_empty())
        };
        if var("OTEL_SDK_DISABLED").is_some_and(|v| v.eq_ignore_ascii_case("true")) {
            return Ok(None);
        }
        let url = match (
            var("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT"),
            var("OTEL_EXPORTER_OTLP_ENDPOINT"),
            config.otlp_endpoint.as_deref().map(str::trim),
        ) {
            (Some(full), _, _) => full,
            (None, Some(base), _) => traces_url(&base),
            (None, None, Some(base)) if !base.is_empty() => traces_url(base),
            _ => return Ok(None),
        };
        if !url.starts_with("http://") {
            return Err(InitError::Invalid(format!(
                "the OTLP endpoint {url} must be plain `http://` (no TLS is built in; \
                 send to a collector beside the process)"
            )));
        }
        let mut ratio = config.sample_ratio;
        let sampler = var("OTEL_TRACES_SAMPLER").map(|s| s.to_ascii_lowercase());
        match sampler.as_deref() {
            None | Some("traceidratio") | Some("parentbased_traceidratio") => {
                if let Some(arg) = var("OTEL_TRACES_SAMPLER_ARG") {
                    ratio = arg.parse().map_err(|_| {
                        InitError::Invalid(format!(
                            "OTEL_TRACES_SAMPLER_ARG {arg:?} is not a number"
                        ))
                    })?;
                }
            }
            Some("always_on") | Some("parentbased_always_on") => ratio = 1.0,
            Some("always_off") | Some("parentbased_always_off") => ratio = 0.0,
            Some(other) => {
                return Err(InitError::Invalid(format!(
                    "OTEL_TRACES_SAMPLER {other:?} is not supported: matches are sampled \
                     by the ratio of their trace id (traceidratio, always_on, always_off)"
                )))
            }
        }
        if !(0.0..=1.0).contains(&ratio) {
            return Err(InitError::Invalid(format!(
                "the sample ratio must be between 0 and 1, not {ratio}"
            )));
        }
        let service_name = var("OTEL_SERVICE_NAME")
            .or_else(|| config.service_name.clone())
            .unwrap_or_else(|| DEFAULT_SERVICE_NAME.to_string());
        Ok(Some(Settings {
            traces_url: url,
            sample_ratio: ratio,
            service_name,
        }))
    }
}

/// The process's tracing; call [`Telemetry::shutdown`] before exiting so
/// the last batch is sent.
#[must_use = "shut it down to flush the last spans"]
pub struct Telemetry {
    provider: Option<SdkTracerProvider>,
    settings: Option<Settings>,
}

/// [`init_with_env`] with the process environment.
pub fn init(config: &TracingConfig) -> Result<Telemetry, InitError> {
    init_with_env(config, &|k| std::env::var(k).ok())
}

/// Starts exporting if the config or the environment names an endpoint;
/// otherwise a handle that does nothing. Must run inside a tokio runtime
/// (the batch exporter is a task on it). A second start in one process
/// (components started side by side) keeps the first.
pub fn init_with_env(
    config: &TracingConfig,
    env: &dyn Fn(&str) -> Option<String>,
) -> Result<Telemetry, InitError> {
    let Some(settings) = Settings::resolve(config, env)? else {
        return Ok(Telemetry::off());
    };
    if crate::enabled() {
        return Ok(Telemetry::off());
    }
    let exporter = opentelemetry_otlp::SpanExporter::builder()
        .with_http()
        .with_protocol(Protocol::HttpBinary)
        .with_endpoint(settings.traces_url.clone())
        .build()
        .map_err(|e| InitError::Exporter {
            url: settings.traces_url.clone(),
            message: e.to_string(),
        })?;
    // The SDK's queue of 2,048 spans overflows within a drain even at 10 %
    // sampling (docs/benchmarks.md, "Traces"); a larger queue and two
    // exports in flight keep the spans of a burst, unless the operator
    // sets the standard variables.
    let mut batch = BatchConfigBuilder::default();
    if env("OTEL_BSP_MAX_QUEUE_SIZE").is_none() {
        batch = batch.with_max_queue_size(DEFAULT_QUEUE_SIZE);
    }
    if env("OTEL_BSP_MAX_CONCURRENT_EXPORTS").is_none() {
        batch = batch.with_max_concurrent_exports(DEFAULT_CONCURRENT_EXPORTS);
    }
    let processor = BatchSpanProcessor::builder(exporter, opentelemetry_sdk::runtime::Tokio)
        .with_batch_config(batch.build())
        .build();
    let ratio = settings.sample_ratio;
    let provider = SdkTracerProvider::builder()
        .with_span_processor(processor)
        // Decides as `ids::is_sampled` does, so spans the helpers start are
        // never dropped by the SDK and none it would keep are skipped.
        .with_sampler(Sampler::ParentBased(Box::new(Sampler::TraceIdRatioBased(
            ratio,
        ))))
        .with_resource(
            Resource::builder()
                .with_service_name(settings.service_name.clone())
                .build(),
        )
        .build();
    crate::install(
        crate::Tracers {
            cdc_reader: provider.tracer(crate::Component::CdcReader.scope()),
            projector: provider.tracer(crate::Component::Projector.scope()),
            compensator: provider.tracer(crate::Component::Compensator.scope()),
        },
        ratio,
    );
    tracing::info!(
        endpoint = %settings.traces_url,
        sample_ratio = ratio,
        service = %settings.service_name,
        "exporting one trace per match"
    );
    Ok(Telemetry {
        provider: Some(provider),
        settings: Some(settings),
    })
}

impl Telemetry {
    /// A handle that exports nothing.
    pub fn off() -> Telemetry {
        Telemetry {
            provider: None,
            settings: None,
        }
    }

    /// The settings in force, if this handle exports.
    pub fn settings(&self) -> Option<&Settings> {
        self.settings.as_ref()
    }

    /// Stops recording and sends what is queued (bounded by
    /// [`SHUTDOWN_TIMEOUT`]).
    pub async fn shutdown(mut self) {
        let Some(provider) = self.provider.take() else {
            return;
        };
        crate::uninstall();
        // The SDK's shutdown blocks until the export task on this runtime
        // answers, so it must not hold a runtime thread.
        let flush = tokio::task::spawn_blocking(move || provider.shutdown());
        match tokio::time::timeout(SHUTDOWN_TIMEOUT, flush).await {
            Ok(Ok(Ok(()))) => {}
            Ok(Ok(Err(e))) => tracing::warn!(error = %e, "flushing the last spans failed"),
            Ok(Err(e)) => tracing::warn!(error = %e, "flushing the last spans panicked"),
            Err(_) => tracing::warn!(
                timeout_s = SHUTDOWN_TIMEOUT.as_secs(),
                "the last spans were not sent in time"
            ),
        }
    }
}

impl Drop for Telemetry {
    fn drop(&mut self) {
        // Not shut down (an early return): stop recording, and flush off
        // the runtime's threads if there is one, without waiting.
        if let Some(provider) = self.provider.take() {
            crate::uninstall();
            match tokio::runtime::Handle::try_current() {
                Ok(h) => {
                    h.spawn_blocking(move || provider.shutdown());
                }
                Err(_) => {
                    let _ = provider.shutdown();
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn resolve(c: &TracingConfig, vars: &[(&str, &str)]) -> Result<Option<Settings>, InitError> {
        let vars: HashMap<String, String> = vars
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        Settings::resolve(c, &|k| vars.get(k).cloned())
    }

    #[test]
    fn off_unless_an_endpoint_is_named() {
        assert_eq!(resolve(&TracingConfig::default(), &[]).unwrap(), None);
        let c = TracingConfig {
            otlp_endpoint: Some("http://127.0.0.1:4318/".into()),
            ..Default::default()
        };
        let s = resolve(&c, &[]).unwrap().unwrap();
        assert_eq!(s.traces_url, "http://127.0.0.1:4318/v1/traces");
        assert_eq!(s.sample_ratio, 1.0);
        assert_eq!(s.service_name, "rps");
        assert_eq!(resolve(&c, &[("OTEL_SDK_DISABLED", "true")]).unwrap(), None);
    }

    #[test]
    fn environment_overrides_the_file() {
        let c = TracingConfig {
            otlp_endpoint: Some("http://file:4318".into()),
            sample_ratio: 0.5,
            service_name: Some("from-file".into()),
        };
        let s = resolve(
            &c,
            &[
                ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://collector:4318"),
                ("OTEL_TRACES_SAMPLER_ARG", "0.1"),
                ("OTEL_SERVICE_NAME", "rps-eu"),
            ],
        )
        .unwrap()
        .unwrap();
        assert_eq!(s.traces_url, "http://collector:4318/v1/traces");
        assert_eq!(s.sample_ratio, 0.1);
        assert_eq!(s.service_name, "rps-eu");
        let s = resolve(
            &TracingConfig::default(),
            &[
                ("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", "http://c:4318/custom"),
                ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://ignored:4318"),
                ("OTEL_TRACES_SAMPLER", "always_off"),
            ],
        )
        .unwrap()
        .unwrap();
        assert_eq!(s.traces_url, "http://c:4318/custom");
        assert_eq!(s.sample_ratio, 0.0);
    }

    #[test]
    fn bad_settings_are_named() {
        let c = TracingConfig {
            otlp_endpoint: Some("http://c:4318".into()),
            sample_ratio: 1.5,
            ..Default::default()
        };
        let e = resolve(&c, &[]).unwrap_err().to_string();
        assert!(e.contains("between 0 and 1"), "{e}");
        let c = TracingConfig {
            sample_ratio: 1.0,
            ..c
        };
        let e = resolve(&c, &[("OTEL_TRACES_SAMPLER_ARG", "ten")])
            .unwrap_err()
            .to_string();
        assert!(e.contains("OTEL_TRACES_SAMPLER_ARG"), "{e}");
        let e = resolve(&c, &[("OTEL_TRACES_SAMPLER", "xray")])
            .unwrap_err()
            .to_string();
        assert!(e.contains("xray"), "{e}");
        let e = resolve(&c, &[("OTEL_EXPORTER_OTLP_ENDPOINT", "https://c:4318")])
            .unwrap_err()
            .to_string();
        assert!(e.contains("plain `http://`"), "{e}");
    }
}
