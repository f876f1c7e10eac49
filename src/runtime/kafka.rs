//! The Kafka helpers the runtime shares with the tools (`replay`, the benches): the clients'
//! common settings, the transactional producer, and sending, draining and aborting without the
//! stalls rust-rdkafka's defaults cost.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use rdkafka::client::ClientContext;
use rdkafka::config::ClientConfig;
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::producer::{BaseProducer, BaseRecord, DeliveryResult, Producer, ProducerContext};

use secrecy::ExposeSecret;

use crate::config::{Config, Properties};

/// How long any one call to the broker may take.
pub(crate) const TIMEOUT: Duration = Duration::from_secs(30);

/// The client settings every Switchboard Kafka client shares: brokers, `client.id` and the
/// pass-through `kafka.properties` (security, tuning).
pub fn client_config(config: &Config) -> ClientConfig {
    let mut c = ClientConfig::new();
    c.set("bootstrap.servers", &config.kafka.brokers);
    c.set("client.id", config.client_id());
    set_all(&mut c, &config.kafka.properties);
    c
}

fn set_all(c: &mut ClientConfig, properties: &Properties) {
    for (k, v) in properties {
        c.set(k, v.expose_secret());
    }
}

/// The runtime's transactional producer.
pub(crate) type TxnProducer = BaseProducer<AuthFailures>;

/// The transactional producer's (and `check`'s) context: librdkafka's errors logged as by
/// default, and the last failed TLS handshake or SASL authentication kept. librdkafka only logs
/// those and keeps retrying, so a start that then times out would otherwise say nothing of why.
///
/// It also notes a record that failed delivery after it may have reached the broker (see
/// [`AuthFailures::sent_then_failed`]): the producer's epoch must then be bumped.
#[derive(Default)]
pub struct AuthFailures {
    last: Mutex<Option<String>>,
    sent_then_failed: AtomicBool,
}

impl AuthFailures {
    /// librdkafka's words for the last TLS or SASL failure, if any.
    pub fn last(&self) -> Option<String> {
        self.last.lock().ok()?.clone()
    }

    /// A record of this producer failed delivery (purged from its queue by an abortable error or
    /// an abort, most often) after a request carrying it had been sent: the broker may hold it,
    /// under its sequence number, in the transaction that was aborted.
    ///
    /// librdkafka hands a purged record's sequence number to the next record of its partition
    /// (`rd_kafka_toppar_purge_queues` advances the epoch's base msgid past every queued record
    /// it purges, including ones put back in the queue after a send whose answer was lost), with
    /// the same producer ID and epoch. A broker that kept such a record would take a replayed
    /// batch with the same sequence range for a retry of the aborted one: it would answer with the
    /// aborted record's offset and write nothing, losing that output from the replay. Read in
    /// librdkafka's source, not observed here. Only a new epoch (a new producer) starts the
    /// sequences afresh.
    pub fn sent_then_failed(&self) -> bool {
        self.sent_then_failed.load(Ordering::SeqCst)
    }
}

impl ClientContext for AuthFailures {
    fn error(&self, error: KafkaError, reason: &str) {
        tracing::error!(target: "rdkafka::client", "librdkafka: {error}: {reason}");
        let refused = [RDKafkaErrorCode::Authentication, RDKafkaErrorCode::SSL];
        if refused.contains(
            &error
                .rdkafka_error_code()
                .unwrap_or(RDKafkaErrorCode::NoError),
        ) {
            if let Ok(mut last) = self.last.lock() {
                *last = Some(reason.to_string());
            }
        }
    }
}

/// For `check`'s metadata client.
impl rdkafka::consumer::ConsumerContext for AuthFailures {}

impl ProducerContext for AuthFailures {
    type DeliveryOpaque = ();

    /// Delivery failures surface where the runtime waits for them: at the transaction's commit.
    /// One that may have reached the broker is noted (see [`AuthFailures::sent_then_failed`]).
    fn delivery(&self, result: &DeliveryResult<'_>, _: ()) {
        if let Err((_, message)) = result {
            // SAFETY: the message is librdkafka's, valid for the duration of this callback.
            let status = unsafe { rdkafka::bindings::rd_kafka_message_status(message.ptr()) };
            if status != rdkafka::bindings::rd_kafka_msg_status_t::RD_KAFKA_MSG_STATUS_NOT_PERSISTED
            {
                self.sent_then_failed.store(true, Ordering::SeqCst);
            }
        }
    }
}

/// The transactional producer's `retry.backoff.ms` (see [`new_producer`]); the benchmark's
/// passthrough uses it too.
pub const RETRY_BACKOFF_MS: &str = "5";

/// The runtime's transactional producer (its transactions not yet initialised).
pub(crate) fn new_producer(config: &Config) -> Result<TxnProducer, KafkaError> {
    let mut c = client_config(config);
    // A transaction begun right after the previous commit is refused with
    // CONCURRENT_TRANSACTIONS until the coordinator has written that commit's markers (a few
    // ms); librdkafka retries after `retry.backoff.ms`, 100 ms by default, which put 100–250 ms
    // commits in the p99 at moderate rates (the Java client waits 20 ms for this case). It backs
    // off exponentially from here up to `retry.backoff.max.ms`, so an outage is not hammered.
    // Before the properties, which may set it otherwise.
    c.set("retry.backoff.ms", RETRY_BACKOFF_MS);
    set_all(&mut c, &config.kafka.producer_properties);
    c.set("transactional.id", config.transactional_id())
        .set("enable.idempotence", "true")
        .set(
            "transaction.timeout.ms",
            config.kafka.transaction_timeout_ms.to_string(),
        )
        // Everything a transaction holds is flushed at its commit anyway; lingering only
        // delays that flush (5 ms here cost a third of the latency at moderate rates).
        .set("linger.ms", config.kafka.linger_ms.to_string())
        .set("partitioner", &config.kafka.partitioner)
        // The pipeline dead-letters any output over this, so the producer never refuses one.
        .set(
            "message.max.bytes",
            config.kafka.max_output_bytes.to_string(),
        )
        .create_with_context(AuthFailures::default())
        .map_err(redact)
}

/// The group consumer's settings: the shared ones, `kafka.consumer_properties`, then what the
/// runtime needs (offsets are committed in the batch's transaction, never by the consumer).
///
/// Three defaults the properties may replace. The cooperative-sticky assignor moves only the
/// partitions that change owner, so that the others go on flowing through a rebalance. Static
/// membership (`group.instance.id`, the transactional id: unique per instance and stable across
/// its restarts) gives a restarted instance its partitions back without a rebalance, if it is
/// back within `session.timeout.ms`; a rolling restart then moves nothing.
pub(crate) fn consumer_config(config: &Config) -> ClientConfig {
    let mut c = client_config(config);
    set_all(&mut c, &config.kafka.consumer_properties);
    if c.get("partition.assignment.strategy").is_none() {
        c.set("partition.assignment.strategy", "cooperative-sticky");
    }
    if c.get("group.instance.id").is_none() {
        c.set("group.instance.id", config.transactional_id());
    }
    // Members learn of a rebalance from their next heartbeat, and a cooperative one takes two
    // rounds: at librdkafka's 3 s, partitions that moved waited 3-4 s for a new owner; at 1 s,
    // 1-2 s (`tests/scale.rs`, docs/scaling.md).
    if c.get("heartbeat.interval.ms").is_none() {
        c.set("heartbeat.interval.ms", "1000");
    }
    c.set("group.id", &config.kafka.group_id)
        .set("enable.auto.commit", "false")
        .set("enable.auto.offset.store", "false")
        .set("auto.offset.reset", "earliest")
        // Relay records are written transactionally by Switchboard itself.
        .set("isolation.level", "read_committed")
        .set(
            "session.timeout.ms",
            config.kafka.session_timeout_ms.to_string(),
        )
        .set("statistics.interval.ms", "5000");
    c
}

/// A client-configuration error without the value it was about, which may be a secret
/// (librdkafka repeats a refused value, and rust-rdkafka prints it again); others unchanged.
pub fn redact(e: KafkaError) -> KafkaError {
    match e {
        KafkaError::ClientConfig(code, description, key, value) => {
            KafkaError::ClientConfig(code, hide(&description, &value), key, REDACTED.to_string())
        }
        other => other,
    }
}

/// [`redact`]'s text: the description and the property's name, never its value.
pub fn redacted(e: &KafkaError) -> String {
    match e {
        KafkaError::ClientConfig(_, description, _, value) => hide(description, value),
        other => other.to_string(),
    }
}

const REDACTED: &str = "[redacted]";

fn hide(text: &str, secret: &str) -> String {
    if secret.is_empty() {
        text.to_string()
    } else {
        text.replace(secret, REDACTED)
    }
}

/// Enqueues a record, waiting for room while the producer's queue is full.
pub fn send<C, K, P>(
    producer: &BaseProducer<C>,
    mut record: BaseRecord<'_, K, P, C::DeliveryOpaque>,
) -> Result<(), KafkaError>
where
    C: rdkafka::producer::ProducerContext,
    K: rdkafka::message::ToBytes + ?Sized,
    P: rdkafka::message::ToBytes + ?Sized,
{
    loop {
        match producer.send(record) {
            Ok(()) => return Ok(()),
            Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), back)) => {
                producer.poll(Duration::from_millis(10));
                record = back;
            }
            Err((e, _)) => return Err(e),
        }
    }
}

/// Serves delivery reports until nothing is in flight (or `timeout` passes).
///
/// rust-rdkafka's `flush`, which `commit_transaction` calls first, polls in slices of 100 ms and
/// each slice runs to its end even once everything is delivered: every transaction would take at
/// least 100 ms, capping a processor at ten batches a second. Draining first leaves `flush`
/// nothing to wait for. Short `poll` timeouts spin (a sub-millisecond remainder polls with a zero
/// timeout, again and again), which took a third of the processor's CPU in a profile; so this
/// serves what is there without waiting and sleeps briefly in between.
pub fn await_deliveries<C: rdkafka::producer::ProducerContext>(
    producer: &BaseProducer<C>,
    timeout: Duration,
) {
    let start = Instant::now();
    loop {
        producer.poll(Duration::ZERO);
        if producer.in_flight_count() == 0 || start.elapsed() >= timeout {
            return;
        }
        std::thread::sleep(Duration::from_micros(200));
    }
}

/// Aborts the open transaction while another thread serves delivery reports.
///
/// librdkafka's abort first waits until every message of the transaction has been reported, and
/// reports only arrive through `poll`; unserved, the abort waited out its whole timeout (30 s,
/// seen after every broker restart) before the producer was replaced anyway.
pub(crate) fn abort_serving_deliveries(producer: &TxnProducer) -> Result<(), KafkaError> {
    serving_events(producer, || producer.abort_transaction(TIMEOUT))
}

/// Initialises the producer's transactions while another thread serves its events: errors
/// (a failed TLS handshake or SASL authentication) reach [`AuthFailures`] only through `poll`, and would
/// otherwise wait until the call had timed out.
pub(crate) fn init_serving_events(producer: &TxnProducer) -> Result<(), KafkaError> {
    serving_events(producer, || producer.init_transactions(TIMEOUT))
}

fn serving_events<T>(producer: &TxnProducer, call: impl FnOnce() -> T) -> T {
    let done = AtomicBool::new(false);
    std::thread::scope(|scope| {
        scope.spawn(|| {
            while !done.load(Ordering::SeqCst) {
                producer.poll(Duration::ZERO);
                std::thread::sleep(Duration::from_millis(1));
            }
        });
        let result = call();
        done.store(true, Ordering::SeqCst);
        result
    })
}
