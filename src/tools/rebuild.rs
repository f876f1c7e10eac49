//! `switchboard rebuild`: the way out of a partition halted because Redis lost writes that Kafka
//! had committed (see `docs/operations.md`). The partition's state is made again from the input
//! topic: every conversation its records name is deleted, then the records from the partition's
//! start up to the group's committed offset are applied again through the pipeline, outputs
//! dropped (they were produced the first time). The core is deterministic, so the state is what
//! it was, provided the topic still holds the partition from offset 0 and the directory has not
//! changed meanwhile. Nothing is written to Kafka.
//!
//! Run it while no instance processes the partition (it is halted, or the group is stopped).

use std::collections::BTreeSet;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{bail, Context};
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::error::KafkaError;
use rdkafka::message::Message as _;
use rdkafka::{Offset, TopicPartitionList};

use crate::config::Config;
use crate::runtime::kafka::client_config;
use crate::runtime::pipeline::{process_batch, Headers, InputRecord, Limits};
use crate::runtime::store::{Mark, RedisDirectory, RedisStore, StateStore, Watermark};

/// The arguments of `switchboard rebuild`.
#[derive(Debug, Clone, clap::Args)]
pub struct Args {
    /// The input partition to rebuild (repeat for several).
    #[arg(long = "partition", required = true)]
    pub partitions: Vec<i32>,
    /// Print each partition's watermark, committed offset and extent, and change nothing.
    #[arg(long, conflicts_with = "accept_store")]
    pub show: bool,
    /// Do not rebuild: record the group's committed offset as the partition's watermark,
    /// accepting Redis as it is (a store written by a Switchboard that kept no watermarks).
    #[arg(long)]
    pub accept_store: bool,
    /// Configuration file (TOML): Kafka, the topics, the group and Redis; SWITCHBOARD_* win.
    #[arg(long, env = "SWITCHBOARD_CONFIG")]
    pub config: Option<PathBuf>,
}

/// What is known of a partition before rebuilding it.
#[derive(Debug)]
struct Extent {
    partition: i32,
    /// The first offset the topic still holds, and the next one to be written.
    low: i64,
    high: i64,
    /// The group's committed offset (`None`: nothing committed).
    committed: Option<i64>,
    watermark: Option<Watermark>,
}

const POLL: Duration = Duration::from_secs(10);

pub fn run(args: Args) -> anyhow::Result<()> {
    let config = Config::load(args.config.as_deref())?;
    let io = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let prefix = &config.redis.key_prefix;
    let store = io
        .block_on(RedisStore::connect(config.redis_target(), prefix))
        .with_context(|| format!("Redis at {} (redis.url)", config.redis.address()))?;
    let consumer: BaseConsumer = client_config(&config)
        .set("group.id", &config.kafka.group_id)
        .set("enable.auto.commit", "false")
        .set("isolation.level", "read_committed")
        .set("enable.partition.eof", "true")
        .create()?;
    let topic = &config.topics.input;
    for &partition in &args.partitions {
        let extent = extent(&consumer, &store, &io, topic, partition)?;
        println!(
            "partition {partition}: topic holds offsets {}..{}, group `{}` committed {}, store watermark {}",
            extent.low,
            extent.high,
            config.kafka.group_id,
            show(extent.committed),
            show(extent.watermark.map(|w| w.next)),
        );
        if args.show {
            continue;
        }
        let Some(committed) = extent.committed else {
            bail!("the group has committed nothing on partition {partition}: there is nothing to rebuild, and nothing to accept");
        };
        let mark = Mark {
            topic: topic.clone(),
            partition,
            next: committed,
            committed,
        };
        if !args.accept_store {
            rebuild(&config, &consumer, &store, &io, &extent, committed)?;
        }
        io.block_on(store.write(Vec::new(), &[mark]))?;
        println!("partition {partition}: watermark now at least {committed}");
    }
    Ok(())
}

fn show(offset: Option<i64>) -> String {
    offset.map_or_else(|| "nothing".to_string(), |o| o.to_string())
}

fn extent(
    consumer: &BaseConsumer,
    store: &RedisStore,
    io: &tokio::runtime::Runtime,
    topic: &str,
    partition: i32,
) -> anyhow::Result<Extent> {
    let (low, high) = consumer
        .fetch_watermarks(topic, partition, POLL)
        .with_context(|| format!("the extent of `{topic}` partition {partition}"))?;
    let mut wanted = TopicPartitionList::new();
    wanted.add_partition(topic, partition);
    let committed = consumer.committed_offsets(wanted, POLL)?;
    let committed = match committed.elements().first().map(|e| e.offset()) {
        Some(Offset::Offset(o)) => Some(o),
        _ => None,
    };
    let watermark = io.block_on(store.watermarks(topic, &[partition]))?[0];
    Ok(Extent {
        partition,
        low,
        high,
        committed,
        watermark,
    })
}

/// Deletes the conversations of the partition's records up to `committed`, then applies those
/// records again.
fn rebuild(
    config: &Config,
    consumer: &BaseConsumer,
    store: &RedisStore,
    io: &tokio::runtime::Runtime,
    extent: &Extent,
    committed: i64,
) -> anyhow::Result<()> {
    let partition = extent.partition;
    if extent.low > 0 {
        bail!(
            "`{}` partition {partition} starts at offset {} now (retention deleted the rest): a rebuild from it would not be exact. Restore Redis from a backup taken after that offset instead",
            config.topics.input,
            extent.low
        );
    }
    let directory = io.block_on(RedisDirectory::connect(
        config.redis_target(),
        &config.redis.key_prefix,
        config.directory.settings(),
    ))?;
    let mut conversations = BTreeSet::new();
    read(consumer, config, partition, committed, |batch| {
        conversations.extend(batch.iter().filter_map(|r| conversation_of(&r.payload)));
        Ok(())
    })?;
    let names: Vec<String> = conversations.into_iter().collect();
    // A conversation of another partition (a misrouted record named it) is left alone.
    let stored = io.block_on(store.stored_partitions(&names))?;
    let names: Vec<String> = names
        .into_iter()
        .zip(stored)
        .filter(|(_, p)| p.is_none_or(|p| p == partition))
        .map(|(name, _)| name)
        .collect();
    io.block_on(store.forget(&names))?;
    // Applied again from offset 0: the old watermark would take that for offsets moved back.
    io.block_on(store.forget_watermark(&config.topics.input, partition))?;
    println!(
        "partition {partition}: deleted {} conversations; applying offsets 0..{committed} again",
        names.len()
    );
    let mut applied = 0;
    read(consumer, config, partition, committed, |batch| {
        applied += batch.len();
        io.block_on(process_batch(
            store,
            &directory,
            config.dialect,
            Limits::of(config),
            batch,
        ))?;
        Ok(())
    })?;
    println!("partition {partition}: {applied} records applied");
    Ok(())
}

/// The conversation a record names, as the pipeline decodes it (unreadable ones name none).
fn conversation_of(payload: &[u8]) -> Option<String> {
    let value: serde_json::Value = serde_json::from_slice(payload).ok()?;
    value.get("conversation")?.as_str().map(str::to_string)
}

/// Feeds the partition's committed records, from its start up to `end`, to `each` in batches.
fn read(
    consumer: &BaseConsumer,
    config: &Config,
    partition: i32,
    end: i64,
    mut each: impl FnMut(Vec<InputRecord>) -> anyhow::Result<()>,
) -> anyhow::Result<()> {
    let topic: Arc<str> = Arc::from(config.topics.input.as_str());
    let mut tpl = TopicPartitionList::new();
    tpl.add_partition_offset(&topic, partition, Offset::Beginning)?;
    consumer.assign(&tpl)?;
    let mut batch = Vec::new();
    loop {
        match consumer.poll(POLL) {
            Some(Ok(m)) if m.offset() < end => {
                batch.push(InputRecord {
                    partition,
                    offset: m.offset(),
                    key: m.key().map(<[u8]>::to_vec),
                    payload: m.payload().unwrap_or_default().to_vec(),
                    timestamp: None,
                    headers: Headers::from_kafka(m.headers()),
                    topic: Arc::clone(&topic),
                });
                if batch.len() >= config.kafka.batch_max_messages {
                    each(std::mem::take(&mut batch))?;
                }
            }
            // Past the committed offset, or at the end of what is committed: done.
            Some(Ok(_)) | Some(Err(KafkaError::PartitionEOF(_))) => break,
            Some(Err(e)) => return Err(e).context("reading the input topic"),
            None => bail!("no record of partition {partition} arrived within {POLL:?}"),
        }
    }
    if !batch.is_empty() {
        each(batch)?;
    }
    consumer.unassign()?;
    Ok(())
}
