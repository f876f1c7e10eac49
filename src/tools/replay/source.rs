//! Where a replay reads from besides a file: a topic, read to its current end, as text lines
//! ([`read_topic`]) or as whole records ([`read_records`], for re-driving dead letters).

use std::collections::{BTreeMap, HashSet, VecDeque};
use std::time::Duration;

use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::{BorrowedMessage, Message as _};
use rdkafka::{Offset, TopicPartitionList};
use serde_json::Value;

use super::{micros, ReplayError};
use crate::runtime::pipeline::Headers;

/// Per partition, its records in offset order with their `createdAt` (µs; `i64::MIN` if none).
type Queues = BTreeMap<i32, VecDeque<(i64, String)>>;

/// Every record of a topic, from the beginning to its end when called, interleaved across
/// partitions by `createdAt` (each partition in offset order).
pub fn read_topic(client: &ClientConfig, topic: &str) -> Result<Vec<String>, ReplayError> {
    let mut queues = Queues::new();
    drain(client, topic, |m| {
        let text = String::from_utf8_lossy(m.payload().unwrap_or_default()).into_owned();
        let created = serde_json::from_str::<Value>(&text)
            .ok()
            .and_then(|v| v["createdAt"].as_str().and_then(micros))
            .unwrap_or(i64::MIN);
        queues
            .entry(m.partition())
            .or_default()
            .push_back((created, text));
    })?;
    Ok(interleave(queues))
}

/// A record as it is on its topic.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RawRecord {
    pub partition: i32,
    pub offset: i64,
    pub key: Option<Vec<u8>>,
    pub payload: Vec<u8>,
    pub headers: Headers,
}

/// Every record of a topic, whole, from the beginning to its end when called: partition by
/// partition, each in offset order.
pub fn read_records(client: &ClientConfig, topic: &str) -> Result<Vec<RawRecord>, ReplayError> {
    let mut by_partition: BTreeMap<i32, Vec<RawRecord>> = BTreeMap::new();
    drain(client, topic, |m| {
        by_partition
            .entry(m.partition())
            .or_default()
            .push(RawRecord {
                partition: m.partition(),
                offset: m.offset(),
                key: m.key().map(<[u8]>::to_vec),
                payload: m.payload().unwrap_or_default().to_vec(),
                headers: Headers::from_kafka(m.headers()),
            });
    })?;
    Ok(by_partition.into_values().flatten().collect())
}

/// Hands every committed record of the topic to `each`, reading every partition to its end as
/// it was when called.
fn drain(
    client: &ClientConfig,
    topic: &str,
    mut each: impl FnMut(&BorrowedMessage<'_>),
) -> Result<(), ReplayError> {
    let consumer: BaseConsumer = client
        .clone()
        .set("group.id", "switchboard-replay")
        .set("enable.auto.commit", "false")
        .set("enable.partition.eof", "true")
        .set("isolation.level", "read_committed")
        .create()?;
    let mut open = assign(&consumer, topic)?;
    while !open.is_empty() {
        match consumer.poll(Duration::from_secs(10)) {
            Some(Ok(m)) => each(&m),
            Some(Err(KafkaError::PartitionEOF(p))) => {
                open.remove(&p);
            }
            Some(Err(e)) => return Err(e.into()),
            None => {
                return Err(ReplayError::Kafka(KafkaError::MessageConsumption(
                    RDKafkaErrorCode::OperationTimedOut,
                )))
            }
        }
    }
    Ok(())
}

/// Assigns every partition that holds records, from its beginning; returns those partitions,
/// all still to be read to their end.
fn assign(consumer: &BaseConsumer, topic: &str) -> Result<HashSet<i32>, ReplayError> {
    let metadata = consumer.fetch_metadata(Some(topic), Duration::from_secs(30))?;
    let partitions: Vec<i32> = metadata
        .topics()
        .iter()
        .flat_map(|t| t.partitions().iter().map(|p| p.id()))
        .collect();
    let mut tpl = TopicPartitionList::new();
    let mut open = HashSet::new();
    for p in &partitions {
        let (low, high) = consumer.fetch_watermarks(topic, *p, Duration::from_secs(30))?;
        if high > low {
            tpl.add_partition_offset(topic, *p, Offset::Beginning)?;
            open.insert(*p);
        }
    }
    consumer.assign(&tpl)?;
    Ok(open)
}

/// The earliest head of any partition, again and again (ties: the lower partition).
fn interleave(mut queues: Queues) -> Vec<String> {
    let total = queues.values().map(|q| q.len()).sum();
    let mut out = Vec::with_capacity(total);
    while let Some((_, p)) = queues
        .iter()
        .filter_map(|(p, q)| q.front().map(|(t, _)| (*t, *p)))
        .min()
    {
        let (_, text) = queues
            .get_mut(&p)
            .and_then(|q| q.pop_front())
            .expect("non-empty");
        out.push(text);
    }
    out
}
