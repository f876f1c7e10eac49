//! The stream runtime: the adapters that run the core on Kafka and Redis. A consumer group on
//! the input topic feeds batches to the [`pipeline`] (`prepare_batch` reads and applies,
//! `Prepared::write` writes), and one producer transaction per batch carries the batch's outputs
//! and its consumer offsets (see `docs/architecture.md`). It owns every side effect; it may not
//! hold a rule of the command language: those stay in [`crate::core`], which it only calls.
//!
//! [`Runtime::run`] is one `match` over what the consumer brings (`consumer::Polled`); the
//! transaction's state is one `commit::Txn`; what is done when something fails is one policy,
//! in `recovery`. [`kafka`] holds the Kafka helpers the tools share.

mod commit;
mod consumer;
pub mod kafka;
pub mod metrics;
pub mod pipeline;
mod recovery;
pub mod serve;
mod stages;
pub mod store;

use std::sync::atomic::AtomicBool;
use std::sync::Arc;
use std::time::{Duration, Instant};

use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::producer::Producer;
use tracing::{info, warn};

use crate::config::Config;
use crate::runtime::metrics::Metrics;
use crate::runtime::pipeline::{note_commits, GroupOffsets, InputRecord, PipelineError};
use crate::runtime::store::DirectorySource;
use crate::runtime::store::StateStore;
use commit::{Flights, Gate, Txn};
use consumer::{Input, Polled};
use kafka::{init_serving_events, new_producer, TxnProducer};
use recovery::Recovery;

/// With `idle_exit`, how long to wait for the first records (group join, assignment).
const STARTUP_ALLOWANCE: Duration = Duration::from_secs(30);

/// What went wrong; `recovery` says what is done about each.
#[derive(Debug, thiserror::Error)]
pub enum RuntimeError {
    /// The consumer, or creating a client.
    #[error("kafka: {0}")]
    Kafka(#[from] KafkaError),
    /// A call on the transactional producer: begin, produce, send the offsets, commit, init.
    #[error("kafka: {0}")]
    Producer(KafkaError),
    /// Aborting the open transaction.
    #[error("kafka: {0}")]
    Abort(KafkaError),
    /// A producer call of a transaction open longer than `transaction.timeout.ms`: the
    /// coordinator aborted it.
    #[error(
        "the transaction outlived kafka.transaction_timeout_ms and the coordinator aborted it: {0}"
    )]
    TimedOut(KafkaError),
    #[error(transparent)]
    Pipeline(#[from] PipelineError),
    /// Fenced more often than `recovery` allows: what the runtime exits with.
    #[error("this instance was fenced by a newer one with the same transactional id, or lost its group membership: {0}")]
    Fenced(KafkaError),
    /// The group consumer can consume no more (librdkafka's fatal error): what the runtime exits
    /// with.
    #[error("{}", consumer_fatal(*.code, .reason, .instance))]
    ConsumerFatal {
        code: RDKafkaErrorCode,
        reason: String,
        /// The consumer's `group.instance.id`.
        instance: String,
    },
    #[error("cannot start the commit thread: {0}")]
    Thread(std::io::Error),
    #[error("the commit thread panicked")]
    CommitPanicked,
    /// A batch not committed because the batch before it, or its own write, failed first: that
    /// failure is the one reported.
    #[error("the batch was not committed: the batch before it, or its write, failed")]
    Abandoned,
    #[error("the write task ended without a result: {0}")]
    WriteTask(tokio::task::JoinError),
    /// TLS or SASL authentication with the brokers failed, and the first call timed out.
    #[error("TLS or SASL authentication with Kafka failed ({reason}); check the sasl.* and ssl.* settings of kafka.properties: {error}")]
    Unauthenticated { reason: String, error: KafkaError },
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
    input: Input,
    producer: Arc<TxnProducer>,
    store: Arc<S>,
    directory: D,
    /// Drives the store's IO, and the write in flight while the main thread applies the next
    /// batch: a multi-threaded runtime (see [`Runtime::new`]).
    io: tokio::runtime::Runtime,
    txn: Txn,
    /// Batches handed to commit threads (see `stages`).
    flights: Flights,
    /// The write in flight (see `stages`).
    writing: Option<stages::Writing>,
    /// The last commit thread's outcome, for the next one to wait for.
    turn: Option<std::sync::mpsc::Receiver<bool>>,
    /// The producer's sequence numbers may repeat those of records an aborted transaction left on
    /// the broker: it must be replaced before the next transaction (see `recovery`).
    stale_sequences: bool,
    /// `Txn::Committing` as the consumer's rebalance callback sees it.
    committing: Arc<Gate>,
    recovery: Recovery,
    /// What the group has committed on the assigned partitions: fetched at every rewind, then
    /// moved by every commit.
    committed: GroupOffsets,
    /// What the store was last told the group had committed (see `note_commits`).
    noted: GroupOffsets,
    metrics: Arc<Metrics>,
    /// Set when the first batch begins: the end of start-up (see [`Runtime::started`]).
    started: Option<Arc<AtomicBool>>,
    pub stats: Stats,
}

impl<S: StateStore + 'static, D: DirectorySource> Runtime<S, D> {
    /// `io` is the runtime the store's connections were made on: it drives the store's IO. It
    /// must be multi-threaded (one worker is enough): a batch's write goes on there while the
    /// main thread applies the next batch, and its commit thread waits for it.
    pub fn new(
        config: Config,
        store: S,
        directory: D,
        io: tokio::runtime::Runtime,
        metrics: Arc<Metrics>,
    ) -> Result<Self, RuntimeError> {
        let committing = Arc::new(Gate::default());
        let input = Input::new(&config, Arc::clone(&metrics), Arc::clone(&committing))?;
        let producer = Arc::new(new_producer(&config)?);
        Ok(Runtime {
            config,
            input,
            producer,
            store: Arc::new(store),
            directory,
            io,
            txn: Txn::Idle,
            flights: Flights::default(),
            writing: None,
            turn: None,
            stale_sequences: false,
            committing,
            recovery: Recovery::new(metrics.fencings.clone()),
            committed: GroupOffsets::default(),
            noted: GroupOffsets::default(),
            metrics,
            started: None,
            stats: Stats::default(),
        })
    }

    /// Sets `flag` when the first batch begins, before anything of it is read or written: until
    /// then, stopping loses nothing.
    pub fn started(mut self, flag: Arc<AtomicBool>) -> Self {
        self.started = Some(flag);
        self
    }

    /// Consumes until `stop` is set (between batches: the batch in flight is finished and
    /// committed first), or, with `idle_exit`, until nothing arrived for that long.
    ///
    /// Batches overlap: while batch n's transaction commits on a thread of its own, batch n+1 is
    /// collected, applied and written to the store; its transaction starts once n's has
    /// committed (see [`crate::runtime::pipeline::Prepared`]).
    pub fn run(
        &mut self,
        stop: &Arc<AtomicBool>,
        idle_exit: Option<Duration>,
    ) -> Result<Stats, RuntimeError> {
        init_serving_events(&self.producer).map_err(|source| {
            match self.producer.context().last() {
                Some(reason) => RuntimeError::Unauthenticated {
                    reason,
                    error: source,
                },
                None => RuntimeError::Kafka(source),
            }
        })?;
        self.input.subscribe()?;
        let started = Instant::now();
        // Idle time counts from the last batch; before the first one, joining the group and
        // getting partitions may take a while, so allow for that separately.
        let mut last_activity: Option<Instant> = None;
        loop {
            let polled = self.input.collect(stop, &self.flights);
            self.metrics.polled();
            match polled {
                Polled::Batch(batch) => {
                    last_activity = Some(Instant::now());
                    self.process(batch, stop)?;
                }
                Polled::Empty => {
                    match self.settle() {
                        Ok(()) => self.note_commits(),
                        Err(e) => self.failed(e, stop)?,
                    }
                    if idle(idle_exit, last_activity, started) {
                        break;
                    }
                }
                // Records of the partitions kept go on; the others' are already dropped.
                Polled::Reassigned(changes, batch) => match self.settle() {
                    Ok(()) => {
                        if self.reassign(&changes, stop)? && !batch.is_empty() {
                            last_activity = Some(Instant::now());
                            self.process(batch, stop)?;
                        }
                    }
                    Err(e) => self.failed(e, stop)?,
                },
                Polled::Stopping => break,
                // The policy replaces a consumer fenced as a static member, or exits.
                Polled::Fatal(error) => self.failed(error, stop)?,
            }
        }
        self.finish();
        info!(?self.stats, "stopping");
        Ok(self.stats)
    }

    /// Applies a batch, but for the records of halted partitions.
    fn process(
        &mut self,
        mut batch: Vec<InputRecord>,
        stop: &Arc<AtomicBool>,
    ) -> Result<(), RuntimeError> {
        // Records of a halted partition fetched before it was paused.
        let halted = self.metrics.halts.partitions();
        if !halted.is_empty() {
            batch.retain(|r| !halted.contains(&r.partition));
            if batch.is_empty() {
                return Ok(());
            }
        }
        match self.step(batch) {
            Ok(()) => {
                self.recovery.succeeded();
                Ok(())
            }
            Err(e) => self.failed(e, stop),
        }
    }

    /// At the end of the run: the batch in flight committed, or ended for the next owner to
    /// replay.
    fn finish(&mut self) {
        match self.settle() {
            Ok(()) => self.note_commits(),
            Err(e) => {
                warn!(error = %e, "the last batch did not commit; it will be replayed");
                self.stats.aborted += 1;
                self.metrics.aborted.inc();
                self.abandon();
            }
        }
    }

    /// Tells the store of commits it has not heard of with a batch (the last ones before the
    /// stream went idle or stops). Best effort: until it does, the store only knows less.
    fn note_commits(&mut self) {
        let notes = note_commits(&self.config.topics.input, &self.committed, &self.noted);
        if notes.is_empty() {
            return;
        }
        match self.io.block_on(self.store.write(&[], &notes)) {
            Ok(_) => self.noted = self.committed.clone(),
            Err(e) => {
                warn!(error = %e, "cannot note the last commits in the store; retrying when idle")
            }
        }
    }

    pub fn store(&self) -> &S {
        &self.store
    }

    /// Runs a future on the runtime that drives the store.
    pub fn block_on<F: std::future::Future>(&self, f: F) -> F::Output {
        self.io.block_on(f)
    }
}

/// [`RuntimeError::ConsumerFatal`]'s message: a member fenced by another with its
/// `group.instance.id` is told where that name comes from.
fn consumer_fatal(code: RDKafkaErrorCode, reason: &str, instance: &str) -> String {
    match code {
        RDKafkaErrorCode::FencedInstanceId => format!(
            "fenced: another consumer joined the group with this instance's group.instance.id \
             {instance:?}; two instances were started with the same name (kafka.transactional_id, \
             by default switchboard-<POD_NAME or HOSTNAME>), and each needs its own: {reason}"
        ),
        _ => format!("the group consumer failed fatally ({code:?}): {reason}"),
    }
}

/// Nothing arrived for `idle_exit` since the last batch, or before the first one, since `started`
/// plus [`STARTUP_ALLOWANCE`].
fn idle(idle_exit: Option<Duration>, last_activity: Option<Instant>, started: Instant) -> bool {
    match last_activity {
        Some(t) => idle_exit.is_some_and(|d| t.elapsed() >= d),
        None => idle_exit.is_some_and(|d| started.elapsed() >= d + STARTUP_ALLOWANCE),
    }
}
