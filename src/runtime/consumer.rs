//! The input topic's consumer: its hooks into librdkafka (rebalances, statistics), collecting a
//! batch, and rewinding to the last commit.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use rdkafka::consumer::{
    BaseConsumer, Consumer, ConsumerContext, ConsumerGroupMetadata, Rebalance,
};
use rdkafka::error::KafkaError;
use rdkafka::statistics::Statistics;
use rdkafka::{ClientContext, Offset, TopicPartitionList};
use tracing::{info, warn};

use super::commit::{Gate, Txn, LONGEST_COMMIT};
use super::kafka::{consumer_config, TIMEOUT};
use super::RuntimeError;
use crate::config::Config;
use crate::runtime::metrics::{Committed, Metrics};
use crate::runtime::pipeline::{GroupOffsets, Headers, InputRecord};

/// How long a rebalance waits for the group's committed offsets (for the lag only).
const COMMITTED_TIMEOUT: Duration = Duration::from_secs(5);

/// The consumer's context: notes which partitions a rebalance touched, so that their records
/// collected across it are dropped rather than processed, holds a revocation until the commit in
/// flight is done, and feeds the group's metrics.
pub(super) struct ConsumerHooks {
    touched: Mutex<Touched>,
    /// The partitions assigned, as the rebalances said: asking the consumer from its own
    /// callback hung the consumer's close once (a revocation during close waited for ever on
    /// `assignment()`).
    held: Mutex<BTreeSet<i32>>,
    metrics: Arc<Metrics>,
    input: String,
    committing: Arc<Gate>,
}

impl ClientContext for ConsumerHooks {
    /// Every `statistics.interval.ms`: the input partitions' ends, for the lag.
    fn stats(&self, statistics: Statistics) {
        if let Some(topic) = statistics.topics.get(&self.input) {
            self.metrics.consumer_lag.ends(
                topic
                    .partitions
                    .values()
                    // -1 is librdkafka's internal "unassigned" partition.
                    .filter(|p| p.partition >= 0)
                    .map(|p| (p.partition, p.lo_offset, p.ls_offset)),
            );
        }
    }
}

impl ConsumerContext for ConsumerHooks {
    fn post_rebalance(&self, consumer: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        {
            let mut held = self.held.lock().expect("rebalance lock");
            let partitions = |tpl: &TopicPartitionList| {
                let topic = &self.input;
                tpl.elements()
                    .iter()
                    .filter(|e| e.topic() == topic)
                    .map(|e| e.partition())
                    .collect::<Vec<_>>()
            };
            match rebalance {
                Rebalance::Assign(tpl) => held.extend(partitions(tpl)),
                Rebalance::Revoke(tpl) => {
                    for p in partitions(tpl) {
                        held.remove(&p);
                    }
                }
                Rebalance::Error(_) => {}
            }
            self.metrics.assigned_partitions.set(held.len() as i64);
        }
        match rebalance {
            Rebalance::Assign(tpl) => {
                // librdkafka keeps a partition's pause through its revoke and a new assignment,
                // so a partition halted here, revoked (which releases the halt) and assigned back
                // would stay paused: consumed by no one, its halt reported by nothing (seen in
                // `scripts/faults`). It starts afresh instead, and its replay halts it again if
                // the cause is still there.
                if tpl.count() > 0 {
                    if let Err(e) = consumer.resume(tpl) {
                        warn!(error = %e, "cannot resume the partitions assigned");
                    }
                }
                let committed = self.committed(consumer, tpl);
                self.metrics.consumer_lag.assigned(&self.input, committed);
            }
            Rebalance::Revoke(tpl) => {
                let partitions = || tpl.elements().into_iter().map(|e| e.partition());
                self.metrics.consumer_lag.revoked(partitions());
                self.metrics.halts.release(partitions());
            }
            Rebalance::Error(_) => {}
        }
    }

    fn pre_rebalance(&self, _: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        // Partitions are given up only once the transaction that may carry their offsets has
        // committed or failed. An assignment gives nothing up: under the cooperative protocol
        // the partitions kept go on flowing meanwhile, so it does not wait.
        let gives_up = match rebalance {
            Rebalance::Assign(_) => false,
            Rebalance::Revoke(tpl) => tpl.count() > 0,
            Rebalance::Error(_) => true,
        };
        if gives_up && !self.committing.wait_idle(LONGEST_COMMIT) {
            warn!(
                "the commit in flight outlasted the longest a commit can take; rebalancing anyway"
            );
        }
        let mut touched = self.touched.lock().expect("rebalance lock");
        match rebalance {
            Rebalance::Assign(tpl) | Rebalance::Revoke(tpl) => {
                touched.add(tpl, &self.input);
            }
            Rebalance::Error(_) => touched.all = true,
        }
        self.metrics.rebalances.inc();
        let numbers = |tpl: &TopicPartitionList| {
            let mut touched = Touched::default();
            touched.add(tpl, &self.input);
            touched.partitions
        };
        match rebalance {
            Rebalance::Assign(tpl) => {
                info!(count = tpl.count(), partitions = ?numbers(tpl), "partitions assigned")
            }
            Rebalance::Revoke(tpl) => {
                info!(count = tpl.count(), partitions = ?numbers(tpl), "partitions revoked")
            }
            Rebalance::Error(e) => warn!(error = %e, "rebalance error"),
        }
    }
}

/// The partitions assigned or revoked since the last batch was collected.
#[derive(Debug, Default)]
struct Touched {
    partitions: BTreeSet<i32>,
    /// A rebalance failed: what was assigned is not known partition by partition.
    all: bool,
}

impl Touched {
    fn add(&mut self, tpl: &TopicPartitionList, topic: &str) {
        self.partitions.extend(
            tpl.elements()
                .iter()
                .filter(|e| e.topic() == topic)
                .map(|e| e.partition()),
        );
    }
}

/// What a rebalance changed for the runtime, once it is over.
#[derive(Debug, Default, PartialEq, Eq)]
pub(super) struct Reassigned {
    /// Assigned now, and touched: to be rewound to the group's committed offsets.
    pub(super) assigned: Vec<i32>,
    /// Touched and no longer assigned: what is known of them is to be forgotten.
    pub(super) revoked: Vec<i32>,
    /// A rebalance failed: every partition is to be rewound.
    pub(super) all: bool,
}

impl ConsumerHooks {
    /// What the group has committed for newly assigned partitions, for the lag: the consumer
    /// never learns of the offsets the producer's transactions commit, so it asks. librdkafka
    /// sends the same request before it fetches a newly assigned partition, so both wait on the
    /// same answer and the first records are hardly delayed. When the request fails, the lag of
    /// these partitions is unknown until a batch commits on them.
    fn committed(
        &self,
        consumer: &BaseConsumer<Self>,
        assigned: &TopicPartitionList,
    ) -> Vec<(i32, Committed)> {
        let fetched = consumer.committed_offsets(assigned.clone(), COMMITTED_TIMEOUT);
        if let Err(error) = &fetched {
            warn!(%error, "cannot fetch the group's committed offsets; the lag of the partitions just assigned is unknown until a batch commits on them");
        }
        let tpl = fetched.as_ref().unwrap_or(assigned);
        tpl.elements()
            .iter()
            .filter(|e| e.topic() == self.input)
            .map(|e| {
                let committed = match (&fetched, e.offset(), e.error()) {
                    (Ok(_), Offset::Offset(o), Ok(())) => Committed::At(o),
                    (Ok(_), Offset::Invalid, Ok(())) => Committed::Nothing,
                    _ => Committed::Unknown,
                };
                (e.partition(), committed)
            })
            .collect()
    }
}

/// What [`Input::collect`] came back with.
pub(super) enum Polled {
    Batch(Vec<InputRecord>),
    /// Nothing arrived.
    Empty,
    /// The assignment changed while the batch was collected. The records of the partitions it
    /// touched were dropped: those revoked may have a new owner already, and those assigned
    /// are rewound to the group's committed offsets first. The others' records are kept: under
    /// the cooperative protocol their partitions were never given up.
    Reassigned(Reassigned, Vec<InputRecord>),
    /// A stop was asked.
    Stopping,
    /// The consumer failed beyond repair (librdkafka's fatal error).
    Fatal(RuntimeError),
}

/// The consumer group member on the input topic.
pub(super) struct Input {
    consumer: BaseConsumer<ConsumerHooks>,
    topic: String,
    /// `group.instance.id`, for the error when another member took it.
    instance: Option<String>,
    max: usize,
    linger: Duration,
}

impl Input {
    /// A consumer whose rebalances wait while `committing` is busy.
    pub(super) fn new(
        config: &Config,
        metrics: Arc<Metrics>,
        committing: Arc<Gate>,
    ) -> Result<Self, KafkaError> {
        let settings = consumer_config(config);
        let instance = settings.get("group.instance.id").map(str::to_string);
        let consumer = settings
            .create_with_context(ConsumerHooks {
                touched: Mutex::default(),
                held: Mutex::default(),
                metrics,
                input: config.topics.input.clone(),
                committing,
            })
            .map_err(super::kafka::redact)?;
        Ok(Input {
            consumer,
            topic: config.topics.input.clone(),
            instance,
            max: config.kafka.batch_max_messages,
            linger: Duration::from_millis(config.kafka.batch_linger_ms),
        })
    }

    pub(super) fn subscribe(&self) -> Result<(), KafkaError> {
        self.consumer.subscribe(&[&self.topic])
    }

    /// Up to `batch_max_messages` records, waiting at most `batch_linger_ms` after the first,
    /// and for as long as the previous batch is still committing (`txn`).
    ///
    /// The batch's transaction may begin only once the previous one has committed, so a batch
    /// closed before then would leave out what arrives meanwhile and wait all the same: at
    /// moderate rates that doubled the latency. A full batch does not wait; it is applied and
    /// written while the previous one commits.
    pub(super) fn collect(&self, stop: &AtomicBool, txn: &Txn) -> Polled {
        if stop.load(Ordering::SeqCst) {
            return Polled::Stopping;
        }
        let mut batch = Vec::new();
        let mut first: Option<Instant> = None;
        // Every record of the batch names the same topic: one allocation, shared.
        let topic: Arc<str> = Arc::from(self.topic.as_str());
        loop {
            let committing = txn.committing();
            let wait = match (first, committing) {
                (_, true) => Duration::from_millis(1),
                (None, false) => Duration::from_millis(100),
                (Some(t), false) => self.linger.saturating_sub(t.elapsed()),
            };
            match self.consumer.poll(wait) {
                Some(Ok(m)) => {
                    first.get_or_insert_with(Instant::now);
                    batch.push(record(&m, &topic));
                    if batch.len() >= self.max {
                        break;
                    }
                }
                Some(Err(e)) => {
                    if let Some(fatal) = self.fatal() {
                        return Polled::Fatal(fatal);
                    }
                    warn!(error = %e, "consumer error")
                }
                None if committing => {}
                None => {
                    if first.is_none_or(|t| t.elapsed() >= self.linger) {
                        break;
                    }
                }
            }
        }
        let touched = std::mem::take(&mut *self.consumer.context().touched.lock().expect("lock"));
        // After a rebalance, even with nothing collected: the rewind that follows learns what
        // the group committed on the partitions just assigned.
        if touched.all || !touched.partitions.is_empty() {
            batch.retain(|r| !touched.all && !touched.partitions.contains(&r.partition));
            Polled::Reassigned(self.reassigned(touched), batch)
        } else if batch.is_empty() {
            Polled::Empty
        } else {
            Polled::Batch(batch)
        }
    }

    /// What the partitions a rebalance touched have become, by the assignment it left.
    fn reassigned(&self, touched: Touched) -> Reassigned {
        let held = self.consumer.context().held.lock().expect("lock");
        let (assigned, revoked) = touched.partitions.iter().partition(|p| held.contains(p));
        Reassigned {
            assigned,
            revoked,
            all: touched.all,
        }
    }

    /// The consumer's fatal error, if it has one: it can consume no more. Another member that
    /// joined with this one's `group.instance.id` is the usual cause, and says so.
    pub(super) fn fatal(&self) -> Option<RuntimeError> {
        let (code, reason) = self.consumer.client().fatal_error()?;
        Some(RuntimeError::ConsumerFatal {
            code,
            reason,
            instance: self.instance.clone().unwrap_or_default(),
        })
    }

    /// The batch's next offsets, as the transaction commits them.
    pub(super) fn offsets(
        &self,
        next: &BTreeMap<i32, i64>,
    ) -> Result<TopicPartitionList, KafkaError> {
        let mut offsets = TopicPartitionList::new();
        for (partition, next) in next {
            offsets.add_partition_offset(&self.topic, *partition, Offset::Offset(*next))?;
        }
        Ok(offsets)
    }

    pub(super) fn group_metadata(&self) -> ConsumerGroupMetadata {
        self.consumer
            .group_metadata()
            .expect("a group consumer has group metadata")
    }

    /// Moves the assigned partitions (`only` these, or all of them) back to their last committed
    /// offset, or to their beginning where the group has committed nothing
    /// (`auto.offset.reset=earliest`), and says what was committed. A failed fetch or seek is an
    /// error, retried by the recovery policy: a partition left where it was would resume past a
    /// batch that did not commit.
    pub(super) fn rewind(&self, only: Option<&[i32]>) -> Result<GroupOffsets, RuntimeError> {
        if let Some(fatal) = self.fatal() {
            return Err(fatal);
        }
        let committed = match only {
            None => self.consumer.committed(TIMEOUT)?,
            Some(partitions) => {
                let mut tpl = TopicPartitionList::new();
                for p in partitions {
                    tpl.add_partition(&self.topic, *p);
                }
                self.consumer.committed_offsets(tpl, TIMEOUT)?
            }
        };
        let mut offsets = GroupOffsets::default();
        for e in committed.elements() {
            // A partition whose offset could not be fetched is not one with nothing committed.
            e.error()?;
            let offset = match e.offset() {
                Offset::Offset(o) => {
                    offsets.0.insert(e.partition(), o);
                    Offset::Offset(o)
                }
                _ => Offset::Beginning,
            };
            self.consumer
                .seek(e.topic(), e.partition(), offset, TIMEOUT)?;
        }
        Ok(offsets)
    }

    /// Moves every assigned partition back to the offset `committed` holds for it, or to its
    /// beginning where it holds none: to where the group stands, when that is known without
    /// asking.
    pub(super) fn seek(&self, committed: &GroupOffsets) -> Result<(), RuntimeError> {
        let held = self.consumer.context().held.lock().expect("lock").clone();
        for p in held {
            let offset = committed.of(p).map_or(Offset::Beginning, Offset::Offset);
            self.consumer.seek(&self.topic, p, offset, TIMEOUT)?;
        }
        Ok(())
    }

    /// Stops fetching these partitions (halted ones) until they are assigned again.
    pub(super) fn pause(&self, partitions: &[i32]) -> Result<(), KafkaError> {
        let mut tpl = TopicPartitionList::new();
        for p in partitions {
            tpl.add_partition(&self.topic, *p);
        }
        self.consumer.pause(&tpl)
    }
}

/// The pipeline's view of a consumed record.
fn record<M: rdkafka::message::Message>(m: &M, topic: &Arc<str>) -> InputRecord {
    InputRecord {
        topic: Arc::clone(topic),
        headers: Headers::from_kafka(m.headers()),
        partition: m.partition(),
        offset: m.offset(),
        key: m.key().map(<[u8]>::to_vec),
        payload: m.payload().unwrap_or_default().to_vec(),
        timestamp: m.timestamp().to_millis().and_then(|ms| {
            chrono::DateTime::from_timestamp_millis(ms)
                .map(|t| t.to_rfc3339_opts(chrono::SecondsFormat::Millis, true))
        }),
    }
}
