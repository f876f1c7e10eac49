//! OpenTelemetry traces of the stream: a span per batch (`batch`, and `write` for its store
//! writes), one per message (`message`, around deciding and applying it) parented on the trace
//! context its record carried (`traceparent`, `tracestate`), and one per transaction (`commit`,
//! on the commit thread). [`otlp_layer`] exports them over OTLP/HTTP.
//!
//! The spans are `TRACE` spans of the target [`TARGET`], and [`layer`] listens to that target
//! only. Without that layer (and with the log filter at its usual levels) their callsites are
//! disabled: a span costs a cached interest check, and no header is read.
//!
//! Outputs keep the input's trace context as it came (see `headers.rs`), not this span's: they
//! must be the same bytes on every replay, and a span ID is new each time.

use opentelemetry::propagation::{Extractor, TextMapPropagator};
use opentelemetry::trace::{TraceContextExt, TracerProvider as _};
use opentelemetry::Context;
use opentelemetry_otlp::WithExportConfig;
use opentelemetry_sdk::propagation::TraceContextPropagator;
use opentelemetry_sdk::trace::SdkTracerProvider;
use tracing::Subscriber;
use tracing_opentelemetry::OpenTelemetrySpanExt;
use tracing_subscriber::filter::Targets;
use tracing_subscriber::registry::LookupSpan;
use tracing_subscriber::Layer;

use super::decide::Disposition;
use super::{Headers, InputRecord};

/// The target of the stream's spans.
pub const TARGET: &str = "switchboard::trace";

/// A tracing layer that sends the stream's spans to `provider`, and nothing else.
pub fn layer<S>(provider: &SdkTracerProvider) -> impl Layer<S> + Send + Sync + 'static
where
    S: Subscriber + for<'span> LookupSpan<'span> + Send + Sync,
{
    tracing_opentelemetry::layer()
        .with_tracer(provider.tracer("switchboard"))
        .with_filter(Targets::new().with_target(TARGET, tracing::Level::TRACE))
}

/// [`layer`] exporting over OTLP/HTTP (protobuf) to `endpoint` (the traces URL, e.g.
/// `http://collector:4318/v1/traces`) in batches, from a thread of the exporter's own; and the
/// provider, whose `shutdown` sends what is left.
pub fn otlp_layer<S>(
    endpoint: &str,
) -> Result<(impl Layer<S> + Send + Sync + 'static, SdkTracerProvider), TraceSetupError>
where
    S: Subscriber + for<'span> LookupSpan<'span> + Send + Sync,
{
    let exporter = opentelemetry_otlp::SpanExporter::builder()
        .with_http()
        .with_endpoint(endpoint)
        .build()?;
    let provider = SdkTracerProvider::builder()
        .with_batch_exporter(exporter)
        .with_resource(
            opentelemetry_sdk::Resource::builder()
                .with_service_name("switchboard")
                .build(),
        )
        .build();
    Ok((layer(&provider), provider))
}

#[derive(Debug, thiserror::Error)]
#[error("the OTLP trace exporter: {0}")]
pub struct TraceSetupError(#[from] opentelemetry_otlp::ExporterBuildError);

/// The span of one message, parented on its record's trace context when it has a valid one
/// (otherwise on the batch's span).
pub(super) fn message_span(record: &InputRecord) -> tracing::Span {
    let span = tracing::trace_span!(
        target: TARGET,
        "message",
        otel.kind = "consumer",
        messaging.kafka.partition = record.partition,
        messaging.kafka.offset = record.offset,
        disposition = tracing::field::Empty,
    );
    if !span.is_disabled() {
        if let Some(parent) = remote_parent(&record.headers) {
            // Fails only once the span has closed, which it has not.
            let _ = span.set_parent(parent);
        }
    }
    span
}

/// What the message came to, on its span.
pub(super) fn record_disposition(span: &tracing::Span, disposition: &Disposition) {
    if span.is_disabled() {
        return;
    }
    let name = match disposition {
        Disposition::DeadLetter => "dead_letter",
        Disposition::Replayed => "replayed",
        Disposition::Skipped => "skipped",
        Disposition::Applied { .. } => "applied",
        Disposition::Invalid => "invalid",
    };
    span.record("disposition", name);
}

/// The W3C trace context of a record's headers, if it carries a valid one.
fn remote_parent(headers: &Headers) -> Option<Context> {
    headers.get("traceparent")?;
    let cx = TraceContextPropagator::new().extract(&HeaderText(headers));
    cx.span().span_context().is_valid().then_some(cx)
}

/// A record's headers as the propagator reads them: text values only.
struct HeaderText<'a>(&'a Headers);

impl Extractor for HeaderText<'_> {
    fn get(&self, key: &str) -> Option<&str> {
        self.0
            .iter()
            .find(|h| h.name.eq_ignore_ascii_case(key))
            .and_then(|h| std::str::from_utf8(h.value.as_deref()?).ok())
    }

    fn keys(&self) -> Vec<&str> {
        self.0.iter().map(|h| h.name.as_str()).collect()
    }
}

#[cfg(test)]
mod tests {
    use tracing_subscriber::layer::SubscriberExt;
    use tracing_subscriber::EnvFilter;

    use super::*;
    use crate::runtime::pipeline::Header;

    fn traced() -> InputRecord {
        InputRecord {
            headers: Headers::new(vec![Header::new(
                "traceparent",
                "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01",
            )]),
            ..InputRecord::default()
        }
    }

    fn fmt_at_info() -> impl Layer<tracing_subscriber::Registry> {
        tracing_subscriber::fmt::layer()
            .with_writer(std::io::sink)
            .with_filter(EnvFilter::new("info"))
    }

    /// Off, the span is disabled at its callsite, so no header is parsed: logs at their usual
    /// levels do not turn it on. On, beside the logs, it is parented on the record's context.
    /// One test, on one thread: tracing caches a callsite's interest process-wide, and two
    /// tests with different subscribers at once could race for it.
    #[test]
    fn message_spans_are_off_without_the_trace_layer_and_parented_remotely_with_it() {
        let logs_only = tracing_subscriber::registry().with(fmt_at_info());
        tracing::subscriber::with_default(logs_only, || {
            assert!(message_span(&traced()).is_disabled());
        });
        let provider = SdkTracerProvider::builder().build();
        let both = tracing_subscriber::registry()
            .with(fmt_at_info())
            .with(layer(&provider));
        tracing::subscriber::with_default(both, || {
            let span = message_span(&traced());
            assert!(!span.is_disabled());
            let cx = span.context();
            let parent = cx.span().span_context().clone();
            assert_eq!(
                parent.trace_id().to_string(),
                "0af7651916cd43dd8448eb211c80319c"
            );
        });
        assert!(remote_parent(&Headers::default()).is_none());
        let broken = Headers::new(vec![Header::new("traceparent", "00-zz-01")]);
        assert!(remote_parent(&broken).is_none());
    }
}
