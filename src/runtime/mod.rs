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
pub mod store;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::producer::Producer;
use tracing::{info, warn};

use crate::config::Config;
use crate::runtime::metrics::Metrics;
use crate::runtime::pipeline::{
    note_commits, prepare_batch_at, BatchOutput, GroupOffsets, InputRecord, Limits, PipelineError,
};
use crate::runtime::store::DirectorySource;
use crate::runtime::store::StateStore;
pub use commit::STUCK_EXIT;
use commit::{Commit, Failed, Gate, InFlight, Txn};
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
    store: S,
    directory: D,
    io: tokio::runtime::Runtime,
    txn: Txn,
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
        let input = Input::new(&config, Arc::clone(&metrics), Arc::clone(&committing))?;
        let producer = Arc::new(new_producer(&config)?);
        Ok(Runtime {
            config,
            input,
            producer,
            store,
            directory,
            io,
            txn: Txn::Idle,
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
            let polled = self.input.collect(stop, &self.txn);
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

    /// Applies a batch while the previous one commits, then writes it and starts its commit.
    fn step(&mut self, batch: Vec<InputRecord>) -> Result<(), RuntimeError> {
        if let Some(flag) = &self.started {
            flag.store(true, Ordering::SeqCst);
        }
        let count = batch.len() as u64;
        let applying = Instant::now();
        let prepared = self.io.block_on(prepare_batch_at(
            &self.store,
            &self.directory,
            self.config.dialect,
            Limits::of(&self.config),
            batch,
            &self.committed,
        ));
        // Written while the previous batch still commits: the stored outboxes keep both batches'
        // outputs until the earlier is known committed, so a failed commit of either replays.
        let notes = note_commits(&self.config.topics.input, &self.committed, &self.noted);
        let prepared = prepared?.after_commits(&self.committed).noting(notes);
        let out = self.io.block_on(prepared.write(&self.store))?;
        self.noted = self.committed.clone();
        self.metrics
            .apply_seconds
            .observe(applying.elapsed().as_secs_f64());
        // One transaction at a time: this batch's begins once the previous one's has committed.
        self.settle()?;
        self.start_commit(out, count)
    }

    /// Hands a written batch's outputs and offsets to the commit thread.
    fn start_commit(&mut self, out: BatchOutput, records: u64) -> Result<(), RuntimeError> {
        self.metrics.consumer_lag.committing(&out.next_offsets);
        let commit = Commit {
            producer: Arc::clone(&self.producer),
            topics: self.config.topics.clone(),
            offsets: self.input.offsets(&out.next_offsets)?,
            group: self.input.group_metadata(),
            outputs: out.outputs,
            timeout: Duration::from_millis(self.config.kafka.transaction_timeout_ms.into()),
        };
        let outputs = commit.outputs.len() as u64;
        let dead_letters = commit
            .outputs
            .iter()
            .filter(|o| o.topic == crate::core::event::Topic::DeadLetters)
            .count() as u64;
        let thread = commit.spawn(&self.committing)?;
        self.txn = Txn::Committing(InFlight {
            thread,
            records,
            outputs,
            dead_letters,
            kinds: out.kinds,
            next_offsets: out.next_offsets,
            began: Instant::now(),
        });
        Ok(())
    }

    /// Waits for the batch in flight, if any, and books its outcome.
    fn settle(&mut self) -> Result<(), RuntimeError> {
        let Some(f) = self.txn.take_in_flight() else {
            return Ok(());
        };
        let stuck = commit::stuck_after(Duration::from_millis(
            self.config.kafka.transaction_timeout_ms.into(),
        ));
        if !self.committing.wait_idle(stuck) {
            commit::exit_stuck(&f, stuck);
        }
        let result = f
            .thread
            .join()
            .unwrap_or_else(|_| Err(Failed::Open(RuntimeError::CommitPanicked)));
        let took = match result {
            Ok(took) => took,
            Err(Failed::NotBegun(error)) => return Err(error),
            Err(Failed::Open(error)) => {
                self.txn = Txn::Open(f.began);
                return Err(error);
            }
        };
        self.committed.0.extend(&f.next_offsets);
        self.metrics.produce_seconds.observe(took.as_secs_f64());
        self.metrics.consumer_lag.committed();
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

    /// Tells the store of commits it has not heard of with a batch (the last ones before the
    /// stream went idle or stops). Best effort: until it does, the store only knows less.
    fn note_commits(&mut self) {
        let notes = note_commits(&self.config.topics.input, &self.committed, &self.noted);
        if notes.is_empty() {
            return;
        }
        match self.io.block_on(self.store.write(Vec::new(), &notes)) {
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
