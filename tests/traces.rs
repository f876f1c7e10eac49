//! The stream's OpenTelemetry spans, read with the SDK's in-memory exporter. A test binary of
//! its own: tracing caches each callsite's interest process-wide, and other tests running the
//! pipeline at the same moment without the trace layer raced this one for it (a span was
//! sometimes missing when this test lived in tests/pipeline.rs).

use switchboard::core::directory::MemoryDirectory;
use switchboard::core::Dialect;
use switchboard::runtime::pipeline::{process_batch, Header, Headers, InputRecord, Limits};
use switchboard::runtime::store::MemoryStore;

/// The default limits (`config/default.toml`), which `Simulator::new` applies too.
const MAX: Limits = Limits {
    max_record_bytes: 1 << 20,
    max_output_bytes: 1_000_000,
    import_timeout_ms: 86_400_000,
};

fn directory() -> MemoryDirectory {
    switchboard::directory_file::load(std::path::Path::new(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/examples/directory.yaml"
    )))
    .unwrap()
}

/// The example trace's first lines as records of partition 0, line N at offset N - 1, each with
/// a trace context of its own: trace and parent span both `offset + 1`.
fn trace_records(n: usize) -> Vec<InputRecord> {
    let trace =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/examples/trace.jsonl"))
            .unwrap();
    trace
        .lines()
        .take(n)
        .enumerate()
        .map(|(i, line)| {
            let key = serde_json::from_str::<serde_json::Value>(line)
                .ok()
                .and_then(|v| v["conversation"].as_str().map(|c| c.as_bytes().to_vec()));
            InputRecord {
                offset: i as i64,
                key,
                payload: line.as_bytes().to_vec(),
                headers: Headers::new(vec![Header::new(
                    "traceparent",
                    format!("00-{:032x}-{:016x}-01", i + 1, i + 1),
                )]),
                ..InputRecord::default()
            }
        })
        .collect()
}

/// With the trace layer installed (here over the SDK's in-memory exporter), a batch gives a
/// `batch` and a `write` span, and each message a `message` span whose parent is the trace
/// context its record carried, or the batch's when it carried none.
#[tokio::test]
async fn message_spans_are_parented_on_their_records_trace_context() {
    use opentelemetry::trace::{SpanId, TraceId};
    use opentelemetry::Value as Attribute;
    use opentelemetry_sdk::trace::{InMemorySpanExporterBuilder, SdkTracerProvider};
    use tracing_subscriber::layer::SubscriberExt;

    let exporter = InMemorySpanExporterBuilder::new().build();
    let provider = SdkTracerProvider::builder()
        .with_simple_exporter(exporter.clone())
        .build();
    let subscriber = tracing_subscriber::registry()
        .with(switchboard::runtime::pipeline::trace::layer(&provider));
    let _default = tracing::subscriber::set_default(subscriber);
    let mut records = trace_records(10);
    records[3].headers = Headers::default();
    process_batch(
        &MemoryStore::new(),
        &directory(),
        Dialect::Web1on1,
        MAX,
        records,
    )
    .await
    .unwrap();
    provider.force_flush().unwrap();

    let spans = exporter.get_finished_spans().unwrap();
    let batch = spans
        .iter()
        .find(|s| s.name == "batch")
        .expect("a batch span");
    assert!(spans.iter().any(|s| s.name == "write"), "a write span");
    let messages: Vec<_> = spans.iter().filter(|s| s.name == "message").collect();
    assert_eq!(messages.len(), 10);
    for s in messages {
        let offset = s
            .attributes
            .iter()
            .find(|a| a.key.as_str() == "messaging.kafka.offset")
            .map(|a| a.value.clone());
        let Some(Attribute::I64(offset)) = offset else {
            panic!("no offset on {s:?}")
        };
        let (trace, parent, remote) = if offset == 3 {
            let batch = batch.span_context.clone();
            (batch.trace_id(), batch.span_id(), false)
        } else {
            let n = offset + 1;
            (
                TraceId::from_hex(&format!("{n:032x}")).unwrap(),
                SpanId::from_hex(&format!("{n:016x}")).unwrap(),
                true,
            )
        };
        assert_eq!(s.span_context.trace_id(), trace, "offset {offset}");
        assert_eq!(s.parent_span_id, parent, "offset {offset}");
        assert_eq!(s.parent_span_is_remote, remote, "offset {offset}");
    }
}
