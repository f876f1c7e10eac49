//! The input topic's consumer: its hooks into librdkafka (rebalances, statistics), collecting a
//! batch, and rewinding to the last commit.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
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

/// The consumer's context: notes rebalances, so that a batch collected across one is dropped
/// rather than processed, holds a rebalance until the commit in flight is done, and feeds the
/// group's metrics.
pub(super) struct ConsumerHooks {
    rebalanced: AtomicBool,
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
        let assigned = consumer.assignment().map(|a| a.count()).unwrap_or(0);
        self.metrics.assigned_partitions.set(assigned as i64);
        match rebalance {
            Rebalance::Assign(tpl) => {
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
        if !self.committing.wait_idle(LONGEST_COMMIT) {
            warn!(
                "the commit in flight outlasted the longest a commit can take; rebalancing anyway"
            );
        }
        self.rebalanced.store(true, Ordering::SeqCst);
        self.metrics.rebalances.inc();
        match rebalance {
            Rebalance::Assign(tpl) => info!(partitions = tpl.count(), "partitions assigned"),
            Rebalance::Revoke(tpl) => info!(partitions = tpl.count(), "partitions revoked"),
            Rebalance::Error(e) => warn!(error = %e, "rebalance error"),
        }
    }
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
    /// Records arrived, but across a rebalance: they may belong to partitions given up, so they
    /// were dropped, to be replayed from the last commit.
    Rebalanced,
    /// A stop was asked.
    Stopping,
}

/// The consumer group member on the input topic.
pub(super) struct Input {
    consumer: BaseConsumer<ConsumerHooks>,
    topic: String,
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
        let consumer = consumer_config(config)
            .create_with_context(ConsumerHooks {
                rebalanced: AtomicBool::new(false),
                metrics,
                input: config.topics.input.clone(),
                committing,
            })
            .map_err(super::kafka::redact)?;
        Ok(Input {
            consumer,
            topic: config.topics.input.clone(),
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
    /// The batch may be written only once the previous one has committed, so a batch closed
    /// before then would leave out what arrives meanwhile and wait all the same: at moderate
    /// rates that doubled the latency. A full batch does not wait; it is applied while the
    /// previous one commits.
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
                Some(Err(e)) => warn!(error = %e, "consumer error"),
                None if committing => {}
                None => {
                    if first.is_none_or(|t| t.elapsed() >= self.linger) {
                        break;
                    }
                }
            }
        }
        let rebalanced = self
            .consumer
            .context()
            .rebalanced
            .swap(false, Ordering::SeqCst);
        // After a rebalance, even with nothing collected: the rewind that follows learns what
        // the group committed on the partitions just assigned.
        if rebalanced {
            Polled::Rebalanced
        } else if batch.is_empty() {
            Polled::Empty
        } else {
            Polled::Batch(batch)
        }
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

    /// Moves every assigned partition back to its last committed offset, or to its beginning
    /// where the group has committed nothing (`auto.offset.reset=earliest`), and says what was
    /// committed. A failed fetch or seek is an error, retried by the recovery policy: a
    /// partition left where it was would resume past a batch that did not commit.
    pub(super) fn rewind(&self) -> Result<GroupOffsets, RuntimeError> {
        let committed = self.consumer.committed(TIMEOUT)?;
        let mut offsets = GroupOffsets::default();
        for e in committed.elements() {
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
