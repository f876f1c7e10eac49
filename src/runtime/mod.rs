//! The stream runtime: the adapters that run the core on Kafka and Redis. A consumer group on
//! the input topic feeds batches to the [`pipeline`] (load, apply, write), and one producer
//! transaction per batch carries the batch's outputs and its consumer offsets (see
//! `docs/architecture.md`). It owns every side effect; the rules of the command language stay
//! in [`crate::core`].

pub mod metrics;
pub mod pipeline;
pub mod serve;
pub mod store;

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use rdkafka::config::ClientConfig;
use rdkafka::consumer::{
    BaseConsumer, Consumer, ConsumerContext, ConsumerGroupMetadata, Rebalance,
};
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::Message as _;
use rdkafka::producer::{BaseProducer, BaseRecord, Producer, PurgeConfig};
use rdkafka::statistics::Statistics;
use rdkafka::{ClientContext, Offset, TopicPartitionList};
use tracing::{info, warn};

use crate::config::{Config, Topics};
use crate::runtime::metrics::Metrics;
use crate::runtime::pipeline::{prepare_batch, BatchOutput, InputRecord, PipelineError};
use crate::runtime::store::DirectorySource;
use crate::runtime::store::OutRecord;
use crate::runtime::store::StateStore;

const TIMEOUT: Duration = Duration::from_secs(30);
/// How many times a commit that timed out is resumed before the batch is given up.
const COMMIT_ATTEMPTS: u32 = 3;
/// More fencings than this within [`FENCE_WINDOW`] mean another live instance shares the
/// transactional ID: exit rather than fight it.
const MAX_FENCES: usize = 3;
const FENCE_WINDOW: Duration = Duration::from_secs(600);
/// With `idle_exit`, how long to wait for the first records (group join, assignment).
const STARTUP_ALLOWANCE: Duration = Duration::from_secs(30);

/// Notes rebalances, so that a batch collected across one is dropped rather than processed, and
/// feeds the group's metrics.
pub struct RebalanceFlag {
    rebalanced: AtomicBool,
    metrics: Arc<Metrics>,
    input: String,
    committing: Arc<Gate>,
}

/// Whether a transaction is being committed on the commit thread. Partitions are given up only
/// once it is done: their next owner then starts from offsets that are settled, committed or
/// aborted.
#[derive(Default)]
struct Gate {
    busy: Mutex<bool>,
    idle: Condvar,
}

impl Gate {
    fn set(&self, busy: bool) {
        *self.busy.lock().expect("gate lock") = busy;
        if !busy {
            self.idle.notify_all();
        }
    }

    fn wait_idle(&self, timeout: Duration) {
        let busy = self.busy.lock().expect("gate lock");
        let _ = self
            .idle
            .wait_timeout_while(busy, timeout, |busy| *busy)
            .expect("gate lock");
    }
}

impl ClientContext for RebalanceFlag {
    fn stats(&self, statistics: Statistics) {
        if let Some(topic) = statistics.topics.get(&self.input) {
            for (partition, p) in &topic.partitions {
                // librdkafka reports -1 for partitions it is not consuming.
                if *partition >= 0 && p.consumer_lag >= 0 {
                    self.metrics
                        .consumer_lag
                        .with_label_values(&[&partition.to_string()])
                        .set(p.consumer_lag);
                }
            }
        }
    }
}

impl ConsumerContext for RebalanceFlag {
    fn post_rebalance(&self, consumer: &BaseConsumer<Self>, _: &Rebalance<'_>) {
        let assigned = consumer.assignment().map(|a| a.count()).unwrap_or(0);
        self.metrics.assigned_partitions.set(assigned as i64);
    }

    fn pre_rebalance(&self, _: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        self.committing.wait_idle(TIMEOUT);
        self.rebalanced.store(true, Ordering::SeqCst);
        self.metrics.rebalances.inc();
        match rebalance {
            Rebalance::Assign(tpl) => info!(partitions = tpl.count(), "partitions assigned"),
            Rebalance::Revoke(tpl) => info!(partitions = tpl.count(), "partitions revoked"),
            Rebalance::Error(e) => warn!(error = %e, "rebalance error"),
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum RuntimeError {
    #[error("kafka: {0}")]
    Kafka(#[from] KafkaError),
    #[error(transparent)]
    Pipeline(#[from] PipelineError),
    #[error("this instance was fenced by a newer one with the same transactional id, or lost its group membership: {0}")]
    Fenced(KafkaError),
    #[error("cannot start the commit thread: {0}")]
    Thread(std::io::Error),
    #[error("the commit thread panicked")]
    CommitPanicked,
}

/// Totals since start.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Stats {
    pub batches: u64,
    pub records: u64,
    pub outputs: u64,
    pub aborted: u64,
}

pub struct Runtime<S, D> {
    config: Config,
    consumer: BaseConsumer<RebalanceFlag>,
    producer: Arc<BaseProducer>,
    store: S,
    directory: D,
    io: tokio::runtime::Runtime,
    /// A transaction is open (begun, not yet committed or aborted).
    in_transaction: bool,
    /// The batch whose transaction the commit thread is committing.
    in_flight: Option<InFlight>,
    committing: Arc<Gate>,
    metrics: Arc<Metrics>,
    pub stats: Stats,
}

/// A batch written to the store, its transaction committing on a thread of its own while the
/// next batch is prepared.
struct InFlight {
    thread: JoinHandle<Result<Duration, Failed>>,
    records: u64,
    outputs: u64,
    dead_letters: u64,
    kinds: HashMap<(String, &'static str), u64>,
}

/// A transaction that did not commit, and whether it is still open (to be aborted).
struct Failed {
    error: RuntimeError,
    open: bool,
}

/// What one batch's transaction carries.
struct Commit {
    producer: Arc<BaseProducer>,
    topics: Topics,
    outputs: Vec<OutRecord>,
    offsets: TopicPartitionList,
    group: ConsumerGroupMetadata,
}

impl Commit {
    /// Produces the outputs and commits them with the offsets, in one transaction; returns how
    /// long that took.
    fn run(self) -> Result<Duration, Failed> {
        let started = Instant::now();
        let p = &self.producer;
        p.begin_transaction().map_err(|e| Failed {
            error: fatal_or(e),
            open: false,
        })?;
        let open = |e: KafkaError| Failed {
            error: fatal_or(e),
            open: true,
        };
        for record in &self.outputs {
            let pending = BaseRecord::to(self.topics.name(record.topic))
                .key(record.key.as_str())
                .payload(record.value.as_str());
            send(p, pending).map_err(open)?;
        }
        p.send_offsets_to_transaction(&self.offsets, &self.group, TIMEOUT)
            .map_err(open)?;
        await_deliveries(p, TIMEOUT);
        // A commit that timed out (a broker restarting) is still under way: librdkafka asks for
        // the call to be repeated to learn its outcome. Giving up instead left the abort that
        // followed failing as "conflicting", and the producer replaced, every time.
        let mut attempts = 1;
        loop {
            match p.commit_transaction(TIMEOUT) {
                Ok(()) => return Ok(started.elapsed()),
                Err(KafkaError::Transaction(e))
                    if e.is_retriable() && attempts < COMMIT_ATTEMPTS =>
                {
                    warn!(error = %e, attempts, "commit not finished yet; asking again");
                    attempts += 1;
                }
                Err(e) => return Err(open(e)),
            }
        }
    }
}

fn new_producer(config: &Config) -> Result<BaseProducer, KafkaError> {
    client_config(config)
        .set("transactional.id", config.transactional_id())
        .set("enable.idempotence", "true")
        .set(
            "transaction.timeout.ms",
            config.kafka.transaction_timeout_ms.to_string(),
        )
        // Everything a transaction holds is flushed at its commit anyway; lingering only
        // delays that flush (5 ms here cost a third of the latency at moderate rates).
        .set("linger.ms", config.kafka.linger_ms.to_string())
        .set("partitioner", &config.kafka.partitioner)
        .create()
}

/// The client settings every Switchboard Kafka client shares: brokers and the pass-through
/// `kafka.properties` (security, tuning).
pub fn client_config(config: &Config) -> ClientConfig {
    let mut c = ClientConfig::new();
    c.set("bootstrap.servers", &config.kafka.brokers);
    for (k, v) in &config.kafka.properties {
        c.set(k, v);
    }
    c
}

impl<S: StateStore, D: DirectorySource> Runtime<S, D> {
    /// `io` is the runtime the store's connections were made on: it drives the store's IO.
    pub fn new(
        config: Config,
        store: S,
        directory: D,
        io: tokio::runtime::Runtime,
        metrics: Arc<Metrics>,
    ) -> Result<Self, RuntimeError> {
        let committing = Arc::new(Gate::default());
        let consumer: BaseConsumer<RebalanceFlag> = client_config(&config)
            .set("group.id", &config.kafka.group_id)
            .set("enable.auto.commit", "false")
            .set("enable.auto.offset.store", "false")
            .set("auto.offset.reset", "earliest")
            // Relay records are written transactionally by Switchboard itself.
            .set("isolation.level", "read_committed")
            .set(
                "session.timeout.ms",
                config.kafka.session_timeout_ms.to_string(),
            )
            .set("statistics.interval.ms", "5000")
            .create_with_context(RebalanceFlag {
                rebalanced: AtomicBool::new(false),
                metrics: Arc::clone(&metrics),
                input: config.topics.input.clone(),
                committing: Arc::clone(&committing),
            })?;
        let producer = Arc::new(new_producer(&config)?);
        Ok(Runtime {
            config,
            consumer,
            producer,
            store,
            directory,
            io,
            in_transaction: false,
            in_flight: None,
            committing,
            metrics,
            stats: Stats::default(),
        })
    }

    /// Consumes until `stop` is set (between batches: the batch in flight is finished and
    /// committed first), or, with `idle_exit`, until nothing arrived for that long.
    ///
    /// Batches overlap: while batch n's transaction commits on a thread of its own, batch n+1 is
    /// collected and applied (reading the store only); n+1 is written to the store once n has
    /// committed, and then its transaction starts (see [`crate::runtime::pipeline::Prepared`]).
    pub fn run(
        &mut self,
        stop: &Arc<AtomicBool>,
        idle_exit: Option<Duration>,
    ) -> Result<Stats, RuntimeError> {
        self.producer.init_transactions(TIMEOUT)?;
        self.consumer.subscribe(&[&self.config.topics.input])?;
        let started = Instant::now();
        let mut failures: u32 = 0;
        // Idle time counts from the last batch; before the first one, joining the group and
        // getting partitions may take a while, so allow for that separately.
        let mut last_activity: Option<Instant> = None;
        let mut fences: Vec<Instant> = Vec::new();
        while !stop.load(Ordering::SeqCst) {
            let batch = self.collect()?;
            self.metrics.polled();
            if self
                .consumer
                .context()
                .rebalanced
                .swap(false, Ordering::SeqCst)
                && !batch.is_empty()
            {
                // Records collected across a rebalance may belong to partitions we lost.
                if let Err(e) = self.settle() {
                    self.failed(e, stop, &mut fences, &mut failures)?;
                    continue;
                }
                if let Err(e) = self.recover(stop) {
                    self.after_fencing(e, &mut fences)?;
                }
                continue;
            }
            if batch.is_empty() {
                if let Err(e) = self.settle() {
                    self.failed(e, stop, &mut fences, &mut failures)?;
                }
                let idle = match last_activity {
                    Some(t) => idle_exit.is_some_and(|d| t.elapsed() >= d),
                    None => idle_exit.is_some_and(|d| started.elapsed() >= d + STARTUP_ALLOWANCE),
                };
                if idle {
                    break;
                }
                continue;
            }
            last_activity = Some(Instant::now());
            match self.step(batch) {
                Ok(()) => failures = 0,
                Err(e) => self.failed(e, stop, &mut fences, &mut failures)?,
            }
        }
        if let Err(e) = self.settle() {
            warn!(error = %e, "the last batch did not commit; it will be replayed");
            self.stats.aborted += 1;
            self.metrics.aborted.inc();
            let _ = self.end_transaction();
        }
        info!(?self.stats, "stopping");
        Ok(self.stats)
    }

    /// Applies a batch while the previous one commits, then writes it and starts its commit.
    fn step(&mut self, batch: Vec<InputRecord>) -> Result<(), RuntimeError> {
        let count = batch.len() as u64;
        let applying = Instant::now();
        let prepared = self.io.block_on(prepare_batch(
            &self.store,
            &self.directory,
            self.config.dialect,
            self.config.kafka.max_record_bytes,
            batch,
        ));
        let mut applied = applying.elapsed();
        // The previous batch must be committed before this one is written: its outcome first.
        self.settle()?;
        let writing = Instant::now();
        let out = self.io.block_on(prepared?.write(&self.store))?;
        applied += writing.elapsed();
        self.metrics.apply_seconds.observe(applied.as_secs_f64());
        self.start_commit(out, count)
    }

    /// Hands a written batch's outputs and offsets to the commit thread.
    fn start_commit(&mut self, out: BatchOutput, records: u64) -> Result<(), RuntimeError> {
        let mut offsets = TopicPartitionList::new();
        for (partition, next) in &out.next_offsets {
            offsets.add_partition_offset(
                &self.config.topics.input,
                *partition,
                Offset::Offset(*next),
            )?;
        }
        let group = self
            .consumer
            .group_metadata()
            .expect("a group consumer has group metadata");
        let commit = Commit {
            producer: Arc::clone(&self.producer),
            topics: self.config.topics.clone(),
            offsets,
            group,
            outputs: out.outputs,
        };
        let outputs = commit.outputs.len() as u64;
        let dead_letters = commit
            .outputs
            .iter()
            .filter(|o| o.topic == crate::core::event::Topic::DeadLetters)
            .count() as u64;
        self.committing.set(true);
        let gate = Arc::clone(&self.committing);
        let thread = std::thread::Builder::new()
            .name("commit".into())
            .spawn(move || {
                let result = commit.run();
                gate.set(false);
                result
            })
            .map_err(|e| {
                self.committing.set(false);
                RuntimeError::Thread(e)
            })?;
        self.in_flight = Some(InFlight {
            thread,
            records,
            outputs,
            dead_letters,
            kinds: out.kinds,
        });
        Ok(())
    }

    /// Waits for the batch in flight, if any, and books its outcome.
    fn settle(&mut self) -> Result<(), RuntimeError> {
        let Some(f) = self.in_flight.take() else {
            return Ok(());
        };
        let result = f.thread.join().unwrap_or_else(|_| {
            Err(Failed {
                error: RuntimeError::CommitPanicked,
                open: true,
            })
        });
        let took = match result {
            Ok(took) => took,
            Err(Failed { error, open }) => {
                self.in_transaction = open;
                return Err(error);
            }
        };
        self.in_transaction = false;
        self.metrics.produce_seconds.observe(took.as_secs_f64());
        self.metrics.batch_outcome(true);
        self.metrics.batches.inc();
        self.metrics.batch_size.observe(f.records as f64);
        self.metrics.outputs.inc_by(f.outputs);
        self.metrics.dead_letters.inc_by(f.dead_letters);
        for ((kind, outcome), n) in &f.kinds {
            self.metrics
                .messages
                .with_label_values(&[kind.as_str(), outcome])
                .inc_by(*n);
        }
        self.stats.batches += 1;
        self.stats.records += f.records;
        self.stats.outputs += f.outputs;
        Ok(())
    }

    /// A batch failed (to apply, to write or to commit): abort, rewind to the last commit and
    /// back off; a fenced producer is replaced instead.
    fn failed(
        &mut self,
        error: RuntimeError,
        stop: &Arc<AtomicBool>,
        fences: &mut Vec<Instant>,
        failures: &mut u32,
    ) -> Result<(), RuntimeError> {
        // A failure while preparing may leave the previous batch committing: settle it first.
        if let Err(e) = self.settle() {
            warn!(error = %e, "the batch before the failed one did not commit either");
        }
        self.stats.aborted += 1;
        self.metrics.aborted.inc();
        self.metrics.batch_outcome(false);
        if let RuntimeError::Fenced(_) = error {
            return self.after_fencing(error, fences);
        }
        warn!(error = %error, "batch failed; aborting and replaying from the last commit");
        if let Err(e) = self.recover(stop) {
            self.after_fencing(e, fences)?;
        }
        *failures += 1;
        std::thread::sleep(Duration::from_millis(100 * u64::from((*failures).min(30))));
        Ok(())
    }

    /// Up to `batch_max_messages` records, waiting at most `batch_linger_ms` after the first,
    /// and for as long as the previous batch is still committing.
    ///
    /// The batch may be written only once the previous one has committed, so a batch closed
    /// before then would leave out what arrives meanwhile and wait all the same: at moderate
    /// rates that doubled the latency. A full batch does not wait; it is applied while the
    /// previous one commits.
    fn collect(&mut self) -> Result<Vec<InputRecord>, RuntimeError> {
        let max = self.config.kafka.batch_max_messages;
        let linger = Duration::from_millis(self.config.kafka.batch_linger_ms);
        let mut batch = Vec::new();
        let mut first: Option<Instant> = None;
        loop {
            let committing = self
                .in_flight
                .as_ref()
                .is_some_and(|f| !f.thread.is_finished());
            let wait = match (first, committing) {
                (_, true) => Duration::from_millis(1),
                (None, false) => Duration::from_millis(100),
                (Some(t), false) => linger.saturating_sub(t.elapsed()),
            };
            match self.consumer.poll(wait) {
                Some(Ok(m)) => {
                    first.get_or_insert_with(Instant::now);
                    batch.push(InputRecord {
                        partition: m.partition(),
                        offset: m.offset(),
                        key: m.key().map(<[u8]>::to_vec),
                        payload: m.payload().unwrap_or_default().to_vec(),
                        timestamp: m.timestamp().to_millis().and_then(|ms| {
                            chrono::DateTime::from_timestamp_millis(ms)
                                .map(|t| t.to_rfc3339_opts(chrono::SecondsFormat::Millis, true))
                        }),
                    });
                    if batch.len() >= max {
                        return Ok(batch);
                    }
                }
                Some(Err(e)) => warn!(error = %e, "consumer error"),
                None if committing => {}
                None => {
                    if first.is_none_or(|t| t.elapsed() >= linger) {
                        return Ok(batch);
                    }
                }
            }
        }
    }

    /// The producer was fenced. Usually this instance was the zombie: frozen (a long GC-like
    /// pause, a stopped VM) past its session and transaction timeouts, its transaction aborted by
    /// the coordinator and its partitions given to others. Then the way on is a fresh producer
    /// (same transactional ID, new epoch) and a rewind to what was committed; the state writes
    /// it may still attempt are fenced by offset in Redis. But if another running instance shares
    /// the transactional ID (a misconfiguration), the two would fence each other for ever: more
    /// than [`MAX_FENCES`] fencings within [`FENCE_WINDOW`] end this instance instead.
    fn after_fencing(
        &mut self,
        error: RuntimeError,
        fences: &mut Vec<Instant>,
    ) -> Result<(), RuntimeError> {
        let RuntimeError::Fenced(e) = error else {
            return Err(error);
        };
        fences.retain(|t| t.elapsed() < FENCE_WINDOW);
        fences.push(Instant::now());
        if fences.len() > MAX_FENCES {
            return Err(RuntimeError::Fenced(e));
        }
        warn!(error = %e, "fenced: starting a new transactional producer and replaying from the last commit");
        self.replace_producer()?;
        self.rewind()
    }

    /// After a failed batch: aborts the transaction and rewinds to the last commit, retrying
    /// with backoff while the broker or Redis is unavailable (a restart, a network blip).
    /// Only fencing, or a stop request, ends it.
    fn recover(&mut self, stop: &Arc<AtomicBool>) -> Result<(), RuntimeError> {
        let mut backoff = Duration::from_millis(200);
        loop {
            match self.end_transaction().and_then(|()| self.rewind()) {
                Ok(()) => return Ok(()),
                Err(RuntimeError::Fenced(e)) => return Err(RuntimeError::Fenced(e)),
                Err(e) if stop.load(Ordering::SeqCst) => return Err(e),
                Err(e) => {
                    warn!(error = %e, retry_in = ?backoff, "recovery failed; retrying");
                    std::thread::sleep(backoff);
                    backoff = (backoff * 2).min(Duration::from_secs(5));
                }
            }
        }
    }

    /// Ends an open transaction without committing it. When the abort itself fails — after a
    /// broker restart the producer can be left waiting on requests that will never be answered —
    /// the producer is replaced: a new one with the same transactional ID fences it, and the
    /// coordinator finishes whatever it had begun. The rewind that follows goes to whatever was
    /// committed, so either outcome is consistent.
    fn end_transaction(&mut self) -> Result<(), RuntimeError> {
        if !self.in_transaction {
            return Ok(());
        }
        if let Err(e) = abort_serving_deliveries(&self.producer) {
            if let RuntimeError::Fenced(e) = fatal_or(e.clone()) {
                return Err(RuntimeError::Fenced(e));
            }
            warn!(error = %e, "abort failed; replacing the transactional producer");
            self.replace_producer()?;
        }
        self.in_transaction = false;
        Ok(())
    }

    /// A new transactional producer with the same ID: it fences the old one, and the coordinator
    /// finishes or aborts whatever that one had begun.
    fn replace_producer(&mut self) -> Result<(), RuntimeError> {
        self.producer
            .purge(PurgeConfig::default().queue().inflight());
        self.producer = Arc::new(new_producer(&self.config)?);
        self.producer.init_transactions(TIMEOUT).map_err(fatal_or)?;
        self.in_transaction = false;
        Ok(())
    }

    /// Moves every assigned partition back to its last committed offset.
    fn rewind(&mut self) -> Result<(), RuntimeError> {
        let committed = self.consumer.committed(TIMEOUT)?;
        for e in committed.elements() {
            let offset = match e.offset() {
                Offset::Offset(o) => Offset::Offset(o),
                _ => Offset::Beginning,
            };
            if let Err(err) = self
                .consumer
                .seek(e.topic(), e.partition(), offset, TIMEOUT)
            {
                warn!(partition = e.partition(), error = %err, "seek failed");
            }
        }
        Ok(())
    }

    pub fn store(&self) -> &S {
        &self.store
    }

    /// Runs a future on the runtime that drives the store.
    pub fn block_on<F: std::future::Future>(&self, f: F) -> F::Output {
        self.io.block_on(f)
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
fn abort_serving_deliveries(producer: &BaseProducer) -> Result<(), KafkaError> {
    let aborted = AtomicBool::new(false);
    std::thread::scope(|scope| {
        scope.spawn(|| {
            while !aborted.load(Ordering::SeqCst) {
                producer.poll(Duration::ZERO);
                std::thread::sleep(Duration::from_millis(1));
            }
        });
        let result = producer.abort_transaction(TIMEOUT);
        aborted.store(true, Ordering::SeqCst);
        result
    })
}

/// Fencing errors end the instance; others are retried by aborting and replaying.
fn fatal_or(e: KafkaError) -> RuntimeError {
    match e.rdkafka_error_code() {
        Some(
            RDKafkaErrorCode::Fenced
            | RDKafkaErrorCode::ProducerFenced
            | RDKafkaErrorCode::InvalidProducerEpoch
            | RDKafkaErrorCode::Fatal,
        ) => RuntimeError::Fenced(e),
        _ => RuntimeError::Kafka(e),
    }
}
