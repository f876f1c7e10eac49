//! Operations: Prometheus metrics and the `/metrics`, `/healthz`, `/readyz` endpoints.
//! `docs/metrics.md` lists every metric. The consumer lag, which the runtime computes itself,
//! is in [`lag`].

mod halts;
mod lag;

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use prometheus::{
    Encoder, Histogram, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGauge,
    IntGaugeVec, Opts, Registry, TextEncoder,
};

use crate::core::directory::Block;
use crate::core::state::StoredMessage;
use crate::runtime::store::{Mark, Record, StateStore, StoreError, Watermark, Write, WriteOutcome};

pub use halts::Halts;
pub use lag::{Committed, ConsumerLag};

/// Every metric the processor exports.
pub struct Metrics {
    registry: Registry,
    pub messages: IntCounterVec,
    pub batches: IntCounter,
    pub batch_size: Histogram,
    pub apply_seconds: Histogram,
    pub produce_seconds: Histogram,
    pub redis_seconds: HistogramVec,
    pub aborted: IntCounter,
    pub dead_letters: IntCounter,
    pub outputs: IntCounter,
    pub rebalances: IntCounter,
    pub fencings: IntCounter,
    pub assigned_partitions: IntGauge,
    /// `switchboard_halted_partitions`, and why each is.
    pub halts: Halts,
    pub consumer_lag: ConsumerLag,
    last_poll_ms: AtomicU64,
    last_batch_ok: AtomicBool,
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// Bucket bounds (seconds) of the latency histograms.
const LATENCY: [f64; 13] = [
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0,
];

/// A metric, registered with `registry`.
fn registered<C>(registry: &Registry, metric: prometheus::Result<C>) -> C
where
    C: prometheus::core::Collector + Clone + 'static,
{
    let metric = metric.expect("valid metric");
    registry
        .register(Box::new(metric.clone()))
        .expect("metrics register once");
    metric
}

fn counter(registry: &Registry, name: &str, help: &str) -> IntCounter {
    registered(registry, IntCounter::new(name, help))
}

fn counters(registry: &Registry, name: &str, help: &str, labels: &[&str]) -> IntCounterVec {
    registered(registry, IntCounterVec::new(Opts::new(name, help), labels))
}

fn gauge(registry: &Registry, name: &str, help: &str) -> IntGauge {
    registered(registry, IntGauge::new(name, help))
}

fn gauges(registry: &Registry, name: &str, help: &str, labels: &[&str]) -> IntGaugeVec {
    registered(registry, IntGaugeVec::new(Opts::new(name, help), labels))
}

fn histogram(registry: &Registry, name: &str, help: &str, buckets: &[f64]) -> Histogram {
    let opts = HistogramOpts::new(name, help).buckets(buckets.to_vec());
    registered(registry, Histogram::with_opts(opts))
}

fn histograms(registry: &Registry, name: &str, help: &str, labels: &[&str]) -> HistogramVec {
    let opts = HistogramOpts::new(name, help).buckets(LATENCY.to_vec());
    registered(registry, HistogramVec::new(opts, labels))
}

/// `switchboard_build_info`'s `revision`: the commit the binary was built from, when the build
/// said (`SWITCHBOARD_REVISION=$(git rev-parse HEAD) cargo build`; the image's `REVISION`
/// argument does). A build script reading `.git` would fail in a source tarball or a Docker
/// context without `.git`; an environment variable costs nothing where it is absent.
const REVISION: &str = match option_env!("SWITCHBOARD_REVISION") {
    Some(r) => r,
    None => "unknown",
};

/// `switchboard_build_info{version, revision, librdkafka}`, always 1: joined on to other series
/// to tell which build each instance runs. And on Linux the `process_*` series
/// (`process_cpu_seconds_total`, `process_resident_memory_bytes`, `process_open_fds`…), which
/// the process collector reads from `/proc`.
fn process_and_build(registry: &Registry) {
    #[cfg(target_os = "linux")]
    registry
        .register(Box::new(
            prometheus::process_collector::ProcessCollector::for_self(),
        ))
        .expect("metrics register once");
    let info = gauges(
        registry,
        "switchboard_build_info",
        "The build: crate version, source revision, librdkafka version (always 1)",
        &["version", "revision", "librdkafka"],
    );
    let (_, librdkafka) = rdkafka::util::get_rdkafka_version();
    info.with_label_values(&[env!("CARGO_PKG_VERSION"), REVISION, &librdkafka])
        .set(1);
}

fn consumer_lag(registry: &Registry) -> ConsumerLag {
    ConsumerLag::new(gauges(
        registry,
        "switchboard_consumer_lag",
        "Records of each assigned input partition not yet committed by the group: last stable offset minus committed offset",
        &["topic", "partition"],
    ))
}

impl Metrics {
    pub fn new() -> Arc<Metrics> {
        let registry = Registry::new();
        let r = &registry;
        process_and_build(r);
        let m = Metrics {
            // Batches and their messages.
            messages: counters(
                r,
                "switchboard_messages_total",
                "Input records by message type and outcome",
                &["type", "outcome"],
            ),
            batches: counter(r, "switchboard_batches_total", "Batches committed"),
            batch_size: histogram(
                r,
                "switchboard_batch_records",
                "Records per committed batch",
                &[1.0, 5.0, 10.0, 50.0, 100.0, 500.0, 1000.0, 5000.0],
            ),
            apply_seconds: histogram(
                r,
                "switchboard_apply_seconds",
                "Decoding, loading, applying and writing a batch",
                &LATENCY,
            ),
            produce_seconds: histogram(
                r,
                "switchboard_produce_seconds",
                "Producing a batch's outputs and committing its transaction",
                &LATENCY,
            ),
            aborted: counter(
                r,
                "switchboard_batches_aborted_total",
                "Batches aborted and replayed",
            ),
            dead_letters: counter(
                r,
                "switchboard_dead_letters_total",
                "Records committed to the dead-letter topic",
            ),
            outputs: counter(
                r,
                "switchboard_output_records_total",
                "Records committed to the output topics (and relay records to the input topic)",
            ),
            // The store.
            redis_seconds: histograms(
                r,
                "switchboard_redis_seconds",
                "Redis round trips by operation",
                &["op"],
            ),
            // The consumer group.
            rebalances: counter(
                r,
                "switchboard_rebalances_total",
                "Rebalance callbacks: partitions assigned or revoked (an eager rebalance is one of each)",
            ),
            fencings: counter(
                r,
                "switchboard_fencings_total",
                "Times the transactional producer was found fenced (a newer producer with the same transactional id, or a transaction timed out by the coordinator)",
            ),
            assigned_partitions: gauge(
                r,
                "switchboard_assigned_partitions",
                "Input partitions assigned",
            ),
            halts: Halts::registered(r),
            consumer_lag: consumer_lag(r),
            registry,
            last_poll_ms: AtomicU64::new(now_ms()),
            last_batch_ok: AtomicBool::new(true),
        };
        Arc::new(m)
    }

    /// The processing loop is alive: it polled just now.
    pub fn polled(&self) {
        self.last_poll_ms.store(now_ms(), Ordering::Relaxed);
    }

    pub fn batch_outcome(&self, ok: bool) {
        self.last_batch_ok.store(ok, Ordering::Relaxed);
    }

    /// Live: the loop polled within the last minute.
    pub fn healthy(&self) -> bool {
        now_ms().saturating_sub(self.last_poll_ms.load(Ordering::Relaxed)) < 60_000
    }

    /// Ready: live, holding partitions not all halted, and the last batch went through.
    pub fn ready(&self) -> bool {
        let assigned = self.assigned_partitions.get();
        self.healthy()
            && assigned > 0
            && (self.halts.list().len() as i64) < assigned
            && self.last_batch_ok.load(Ordering::Relaxed)
    }

    /// `/readyz`'s answer: ready or not, then a line per halted partition with its reason.
    pub fn readiness(&self) -> (bool, String) {
        let ready = self.ready();
        let mut body = String::from(if ready { "ready" } else { "not ready" });
        for (partition, reason) in self.halts.list() {
            body.push_str(&format!("\nhalted partition {partition}: {reason}"));
        }
        (ready, body)
    }

    pub fn render(&self) -> String {
        let mut out = Vec::new();
        TextEncoder::new()
            .encode(&self.registry.gather(), &mut out)
            .expect("text encoding");
        String::from_utf8(out).expect("metrics are UTF-8")
    }
}

/// Serves `/metrics`, `/healthz` and `/readyz` on `addr` from a thread of its own. The address
/// is bound before this returns, so a taken port is reported at start-up.
pub fn serve(addr: SocketAddr, metrics: Arc<Metrics>) -> std::io::Result<SocketAddr> {
    use axum::http::StatusCode;
    use axum::routing::get;

    let listener = std::net::TcpListener::bind(addr)?;
    listener.set_nonblocking(true)?;
    let bound = listener.local_addr()?;
    std::thread::Builder::new()
        .name("http".into())
        .spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("a tokio runtime");
            rt.block_on(async move {
                let listener =
                    tokio::net::TcpListener::from_std(listener).expect("a bound listener");
                let (m1, m2, m3) = (metrics.clone(), metrics.clone(), metrics);
                let app = axum::Router::new()
                    .route("/metrics", get(move || async move { m1.render() }))
                    .route(
                        "/healthz",
                        get(move || async move {
                            if m2.healthy() {
                                (StatusCode::OK, "ok")
                            } else {
                                (StatusCode::SERVICE_UNAVAILABLE, "stalled")
                            }
                        }),
                    )
                    .route(
                        "/readyz",
                        get(move || async move {
                            match m3.readiness() {
                                (true, body) => (StatusCode::OK, body),
                                (false, body) => (StatusCode::SERVICE_UNAVAILABLE, body),
                            }
                        }),
                    );
                if let Err(e) = axum::serve(listener, app).await {
                    tracing::error!(error = %e, "HTTP server stopped");
                }
            });
        })?;
    Ok(bound)
}

/// A store that records the latency of every call in `switchboard_redis_seconds`.
pub struct TimedStore<S> {
    pub inner: S,
    pub metrics: Arc<Metrics>,
}

impl<S> TimedStore<S> {
    fn observe(&self, op: &str, started: Instant) {
        self.metrics
            .redis_seconds
            .with_label_values(&[op])
            .observe(started.elapsed().as_secs_f64());
    }
}

impl<S: StateStore> StateStore for TimedStore<S> {
    async fn load(&self, conversations: &[String]) -> Result<Vec<Option<Record>>, StoreError> {
        let t = Instant::now();
        let r = self.inner.load(conversations).await;
        self.observe("load", t);
        r
    }
    async fn messages(
        &self,
        wanted: &[(String, Vec<String>)],
    ) -> Result<Vec<Vec<StoredMessage>>, StoreError> {
        let t = Instant::now();
        let r = self.inner.messages(wanted).await;
        self.observe("messages", t);
        r
    }
    async fn outboxes(
        &self,
        conversations: &[String],
    ) -> Result<Vec<Vec<crate::runtime::store::Pending>>, StoreError> {
        let t = Instant::now();
        let r = self.inner.outboxes(conversations).await;
        self.observe("outboxes", t);
        r
    }
    async fn log(&self, conversation: &str) -> Result<Vec<StoredMessage>, StoreError> {
        let t = Instant::now();
        let r = self.inner.log(conversation).await;
        self.observe("log", t);
        r
    }
    async fn write(
        &self,
        writes: Vec<Write>,
        marks: &[Mark],
    ) -> Result<Vec<WriteOutcome>, StoreError> {
        let t = Instant::now();
        let r = self.inner.write(writes, marks).await;
        self.observe("write", t);
        r
    }
    async fn watermarks(
        &self,
        topic: &str,
        partitions: &[i32],
    ) -> Result<Vec<Option<Watermark>>, StoreError> {
        let t = Instant::now();
        let r = self.inner.watermarks(topic, partitions).await;
        self.observe("watermarks", t);
        r
    }
    async fn block(&self, blocks: &[Block]) -> Result<(), StoreError> {
        let t = Instant::now();
        let r = self.inner.block(blocks).await;
        self.observe("block", t);
        r
    }
    async fn results(
        &self,
        conversation: &str,
    ) -> Result<Vec<crate::core::state::FormResult>, StoreError> {
        let t = Instant::now();
        let r = self.inner.results(conversation).await;
        self.observe("results", t);
        r
    }
    async fn blocked_since(
        &self,
        candidates: &[(String, String)],
    ) -> Result<Vec<Option<i64>>, StoreError> {
        let t = Instant::now();
        let r = self.inner.blocked_since(candidates).await;
        self.observe("blocked_since", t);
        r
    }
}
