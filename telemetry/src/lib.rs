//! OpenTelemetry traces of the pipeline: one trace per match.
//!
//! A match's trace id and the span id of its root are derived from the
//! match id ([`ids`]), so the cdc-reader, the projector and the compensator
//! (one process or three) put their spans of a match into one tree without
//! passing any context along: every span is a child of the synthetic root
//! `(trace_id(m), root_span_id(m))`, and the reader writes that root itself
//! when it publishes the match's `started`. Sampling is decided from the
//! derived trace id, so every component traces the same matches.
//!
//! - [`export`]: the tracer provider from `[tracing]` of `rps.toml` and the
//!   `OTEL_*` environment (OTLP over HTTP, batched on tokio, flushed by
//!   [`Telemetry::shutdown`]);
//! - this module: the per-match span helpers the components call.
//!
//! Off unless configured. Then every helper returns after one relaxed
//! atomic load, before it allocates or reads a clock; the components check
//! [`sampled`] before they build attributes.
//!
//! Not for logs or metrics: those stay with `tracing` and `metrics`.

pub mod export;
pub mod ids;

pub use export::{init, init_with_env, InitError, Settings, Telemetry};
pub use opentelemetry::trace::SpanKind;
pub use opentelemetry::KeyValue;

use opentelemetry::trace::{SpanContext, Status, TraceContextExt, TraceFlags, TraceState, Tracer};
use opentelemetry::Context;
use opentelemetry_sdk::trace::SdkTracer;
use rps_core::EventType;
use std::borrow::Cow;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::RwLock;
use std::time::SystemTime;

/// Attribute keys of the span catalogue (`docs/tracing.md`).
pub mod attr {
    pub const MATCH_ID: &str = "rps.match_id";
    pub const SHARD: &str = "rps.shard";
    pub const EVENT_TYPE: &str = "rps.event_type";
    pub const VERSION: &str = "rps.version";
    pub const SERVER: &str = "rps.server";
    pub const DATABASE: &str = "rps.database";
    pub const TABLE: &str = "rps.table";
    pub const BINLOG_FILE: &str = "rps.binlog.file";
    pub const BINLOG_POSITION: &str = "rps.binlog.position";
    pub const GTID: &str = "rps.binlog.gtid";
    pub const BATCH_ENTRIES: &str = "rps.batch.entries";
    pub const BATCH_ID: &str = "rps.batch.id";
    pub const STREAM_ID: &str = "rps.stream_id";
    pub const OUTCOME: &str = "rps.outcome";
    pub const REASON: &str = "rps.reason";
    pub const SEASON: &str = "rps.season";
    pub const PLAYER_A: &str = "rps.player_a";
    pub const PLAYER_B: &str = "rps.player_b";
    pub const DEADLINE_MS: &str = "rps.deadline_ms";
    pub const OVERDUE_MS: &str = "rps.overdue_ms";
    pub const LEASE_MS: &str = "rps.lease_ms";
    pub const DECISION: &str = "rps.decision";
    pub const WINNER: &str = "rps.winner";
    pub const EVENTS_READ: &str = "rps.events_read";
    pub const APPEND_MODE: &str = "rps.append.mode";
    pub const ATTEMPT: &str = "rps.attempt";
    pub const RETRY_IN_MS: &str = "rps.retry_in_ms";
    pub const DEAD_LETTER_ID: &str = "rps.dead_letter_id";
    pub const ERROR: &str = "rps.error";
}

/// Which part of the pipeline a span comes from: its instrumentation scope.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Component {
    CdcReader,
    Projector,
    Compensator,
}

impl Component {
    pub fn scope(self) -> &'static str {
        match self {
            Component::CdcReader => "cdc-reader",
            Component::Projector => "projector",
            Component::Compensator => "compensator",
        }
    }
}

/// The installed tracers, one per component scope.
struct Tracers {
    cdc_reader: SdkTracer,
    projector: SdkTracer,
    compensator: SdkTracer,
}

impl Tracers {
    fn get(&self, c: Component) -> &SdkTracer {
        match c {
            Component::CdcReader => &self.cdc_reader,
            Component::Projector => &self.projector,
            Component::Compensator => &self.compensator,
        }
    }
}

/// The one flag the hot paths read.
static ENABLED: AtomicBool = AtomicBool::new(false);
static THRESHOLD: AtomicU64 = AtomicU64::new(0);
static TRACERS: RwLock<Option<Tracers>> = RwLock::new(None);

/// Whether traces are exported at all (one relaxed load).
#[inline]
pub fn enabled() -> bool {
    ENABLED.load(Ordering::Relaxed)
}

/// Whether the spans of `match_id` are recorded: tracing is on and the
/// match's derived trace id is sampled. Free when tracing is off.
#[inline]
pub fn sampled(match_id: i64) -> bool {
    enabled() && ids::is_sampled(match_id, THRESHOLD.load(Ordering::Relaxed))
}

/// The current time when tracing is on, for a span's start taken before
/// the work it measures (and before its match is known).
#[inline]
pub fn now_if_enabled() -> Option<SystemTime> {
    enabled().then(SystemTime::now)
}

/// A pipeline timestamp as span time.
pub fn system_time(t: rps_core::Timestamp) -> SystemTime {
    let micros = t.as_micros();
    if micros >= 0 {
        SystemTime::UNIX_EPOCH + std::time::Duration::from_micros(micros as u64)
    } else {
        SystemTime::UNIX_EPOCH
    }
}

/// The reader's span name for an event of type `t`.
pub fn publish_name(t: EventType) -> &'static str {
    match t {
        EventType::Started => "publish started",
        EventType::Moved => "publish moved",
        EventType::Finished => "publish finished",
        EventType::TimedOut => "publish timed_out",
        EventType::Voided => "publish voided",
    }
}

/// The projector's span name for an event of type `t`.
pub fn apply_name(t: EventType) -> &'static str {
    match t {
        EventType::Started => "apply started",
        EventType::Moved => "apply moved",
        EventType::Finished => "apply finished",
        EventType::TimedOut => "apply timed_out",
        EventType::Voided => "apply voided",
    }
}

fn install(tracers: Tracers, ratio: f64) {
    let mut slot = TRACERS.write().unwrap_or_else(|p| p.into_inner());
    *slot = Some(tracers);
    THRESHOLD.store(ids::threshold(ratio), Ordering::Relaxed);
    ENABLED.store(true, Ordering::Relaxed);
}

fn uninstall() {
    ENABLED.store(false, Ordering::Relaxed);
    let mut slot = TRACERS.write().unwrap_or_else(|p| p.into_inner());
    *slot = None;
}

/// The synthetic remote parent of every span of a match.
fn match_parent(match_id: i64) -> Context {
    Context::new().with_remote_span_context(SpanContext::new(
        ids::trace_id(match_id),
        ids::root_span_id(match_id),
        TraceFlags::SAMPLED,
        true,
        TraceState::NONE,
    ))
}

/// A recording span of one match; ends when [`MatchSpan::end`] (or
/// [`MatchSpan::end_at`]) is called or it is dropped.
pub struct MatchSpan(opentelemetry_sdk::trace::Span);

impl MatchSpan {
    pub fn set(&mut self, kv: KeyValue) {
        use opentelemetry::trace::Span;
        self.0.set_attribute(kv);
    }

    /// A point in the span's time (a rejection, a retry's error).
    pub fn event(&mut self, name: &'static str, attributes: Vec<KeyValue>) {
        use opentelemetry::trace::Span;
        self.0.add_event(name, attributes);
    }

    /// Marks the span failed, with the reason.
    pub fn error(&mut self, message: impl Into<Cow<'static, str>>) {
        use opentelemetry::trace::Span;
        self.0.set_status(Status::error(message));
    }

    pub fn end(self) {
        use opentelemetry::trace::Span;
        let mut s = self.0;
        s.end();
    }

    pub fn end_at(self, at: SystemTime) {
        use opentelemetry::trace::Span;
        let mut s = self.0;
        s.end_with_timestamp(at);
    }
}

/// What a span of a match is, apart from its match.
pub struct SpanStart {
    pub name: &'static str,
    pub kind: SpanKind,
    /// When the work began; `None`: now.
    pub at: Option<SystemTime>,
    pub attributes: Vec<KeyValue>,
}

impl SpanStart {
    pub fn new(name: &'static str) -> Self {
        SpanStart {
            name,
            kind: SpanKind::Internal,
            at: None,
            attributes: Vec::new(),
        }
    }

    pub fn kind(mut self, kind: SpanKind) -> Self {
        self.kind = kind;
        self
    }

    pub fn at(mut self, at: Option<SystemTime>) -> Self {
        self.at = at;
        self
    }

    pub fn attrs(mut self, attributes: Vec<KeyValue>) -> Self {
        self.attributes = attributes;
        self
    }
}

/// Starts a span of `match_id`'s trace, a child of the match's root; `None`
/// when the match is not sampled (or tracing is off). Callers that build
/// attributes check [`sampled`] first, so an unsampled event allocates
/// nothing.
pub fn start(component: Component, match_id: i64, span: SpanStart) -> Option<MatchSpan> {
    if !sampled(match_id) {
        return None;
    }
    let tracers = TRACERS.read().unwrap_or_else(|p| p.into_inner());
    let tracer = tracers.as_ref()?.get(component);
    let mut attributes = span.attributes;
    attributes.push(KeyValue::new(attr::MATCH_ID, match_id));
    let builder = tracer
        .span_builder(span.name)
        .with_kind(span.kind)
        .with_start_time(span.at.unwrap_or_else(SystemTime::now))
        .with_attributes(attributes);
    Some(MatchSpan(
        tracer.build_with_context(builder, &match_parent(match_id)),
    ))
}

/// Writes the root span of a match (`match`), with the derived span id,
/// from `start` to `end`: the reader calls it when it publishes the
/// match's first version.
pub fn root(
    component: Component,
    match_id: i64,
    start: SystemTime,
    end: SystemTime,
    mut attributes: Vec<KeyValue>,
) {
    if !sampled(match_id) {
        return;
    }
    let tracers = TRACERS.read().unwrap_or_else(|p| p.into_inner());
    let Some(tracers) = tracers.as_ref() else {
        return;
    };
    let tracer = tracers.get(component);
    attributes.push(KeyValue::new(attr::MATCH_ID, match_id));
    let mut builder = tracer
        .span_builder("match")
        .with_kind(SpanKind::Internal)
        .with_start_time(start)
        .with_attributes(attributes);
    builder.trace_id = Some(ids::trace_id(match_id));
    builder.span_id = Some(ids::root_span_id(match_id));
    let mut span = tracer.build_with_context(builder, &Context::new());
    opentelemetry::trace::Span::end_with_timestamp(&mut span, end.max(start));
}

#[cfg(test)]
mod tests {
    use super::*;
    use opentelemetry::trace::TracerProvider;
    use opentelemetry_sdk::trace::{InMemorySpanExporter, Sampler, SdkTracerProvider};

    /// One test touches the process-wide state, so nothing races it.
    #[test]
    fn spans_of_a_match_form_one_tree_and_off_costs_nothing() {
        assert!(!enabled());
        assert!(!sampled(42));
        assert!(start(Component::Projector, 42, SpanStart::new("apply")).is_none());

        let exporter = InMemorySpanExporter::default();
        let ratio = 0.5;
        let provider = SdkTracerProvider::builder()
            .with_sampler(Sampler::ParentBased(Box::new(Sampler::TraceIdRatioBased(
                ratio,
            ))))
            .with_simple_exporter(exporter.clone())
            .build();
        install(
            Tracers {
                cdc_reader: provider.tracer("cdc-reader"),
                projector: provider.tracer("projector"),
                compensator: provider.tracer("compensator"),
            },
            ratio,
        );
        let (traced, untraced) = {
            let mut ids = (1_000..).filter(|m| sampled(*m));
            let t = ids.next().unwrap();
            let u = (1_000..).find(|m| !sampled(*m)).unwrap();
            (t, u)
        };
        let t0 = SystemTime::now();
        root(
            Component::CdcReader,
            traced,
            t0,
            t0,
            vec![KeyValue::new(attr::SHARD, 3)],
        );
        for (c, name) in [
            (Component::CdcReader, "publish started"),
            (Component::Projector, "apply started"),
            (Component::Compensator, "claim deadline"),
        ] {
            let mut s = start(c, traced, SpanStart::new(name)).unwrap();
            s.set(KeyValue::new(attr::SHARD, 3));
            s.end();
        }
        let mut rejected =
            start(Component::Projector, traced, SpanStart::new("apply moved")).expect("sampled");
        rejected.event("rejected", vec![KeyValue::new(attr::REASON, "version_gap")]);
        rejected.error("version_gap");
        rejected.end();
        assert!(start(Component::Projector, untraced, SpanStart::new("apply")).is_none());
        root(Component::CdcReader, untraced, t0, t0, Vec::new());

        let spans = exporter.get_finished_spans().unwrap();
        assert_eq!(spans.len(), 5, "the untraced match left nothing");
        let root_span = spans.iter().find(|s| s.name == "match").unwrap();
        assert_eq!(root_span.span_context.span_id(), ids::root_span_id(traced));
        assert_eq!(
            root_span.parent_span_id,
            opentelemetry::trace::SpanId::INVALID
        );
        for s in &spans {
            assert_eq!(
                s.span_context.trace_id(),
                ids::trace_id(traced),
                "{}",
                s.name
            );
            assert!(s
                .attributes
                .iter()
                .any(|kv| kv.key.as_str() == attr::MATCH_ID
                    && kv.value == opentelemetry::Value::I64(traced)));
            if s.name != "match" {
                assert_eq!(s.parent_span_id, ids::root_span_id(traced), "{}", s.name);
            }
        }
        let scopes: Vec<&str> = spans
            .iter()
            .map(|s| s.instrumentation_scope.name())
            .collect();
        assert!(scopes.contains(&"compensator") && scopes.contains(&"projector"));
        let r = spans.iter().find(|s| s.name == "apply moved").unwrap();
        assert!(matches!(r.status, Status::Error { .. }));
        assert_eq!(r.events.events[0].name, "rejected");

        uninstall();
        assert!(!sampled(traced));
        assert!(start(Component::Projector, traced, SpanStart::new("apply")).is_none());
        let _ = provider.shutdown();
    }
}
