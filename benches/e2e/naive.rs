//! The naive consumer: per message one GET and one SET of the whole conversation, a produce
//! awaited and a synchronous offset commit — what a straightforward service would do.

use std::time::{Duration, Instant};

use rdkafka::config::ClientConfig;
use rdkafka::consumer::{CommitMode, Consumer};
use rdkafka::message::Message as _;
use rdkafka::producer::{BaseProducer, BaseRecord};
use switchboard::core::directory::MemoryDirectory;
use switchboard::core::event::Topic;
use switchboard::core::log::{LogWrite, MemoryLog};
use switchboard::core::message::{decode, Decoded, KeySource, Message};
use switchboard::core::state::{Conversation, StoredMessage};
use switchboard::core::transition::{apply, Env};
use switchboard::tools::loadgen::{directory, Model};
// The processor's own Kafka helper (`crate::runtime`), for a fair baseline.
use switchboard::runtime::kafka::await_deliveries;

use crate::process::{bootstrap, consumer, redis_url};
use crate::run::Run;

#[derive(serde::Serialize, serde::Deserialize)]
struct Blob {
    conversation: Conversation,
    messages: Vec<StoredMessage>,
}

/// What handling one message needs: Redis, the producer, the directory, the sink.
struct Naive {
    redis: redis::Connection,
    producer: BaseProducer,
    directory: MemoryDirectory,
    /// Key prefix and output topic.
    prefix: String,
    sink: String,
}

/// The naive consumer, over the first `limit` input records.
pub fn naive(run: &Run, model: &Model, limit: u64) -> f64 {
    let group = format!("{}-naive", run.name);
    let consumer = consumer(&group);
    consumer.subscribe(&[&run.topic(Topic::Input)]).unwrap();
    let mut naive = Naive {
        redis: redis::Client::open(redis_url())
            .unwrap()
            .get_connection()
            .unwrap(),
        producer: ClientConfig::new()
            .set("bootstrap.servers", bootstrap())
            .create()
            .unwrap(),
        directory: MemoryDirectory::from_file(directory(model)).unwrap(),
        prefix: format!("{}:naive", run.name),
        sink: format!("naive.{}", run.name),
    };
    let mut done = 0u64;
    let mut started: Option<Instant> = None;
    let waiting = Instant::now();
    while done < limit {
        // `poll` also returns on group events; only a long silence means no input.
        let Some(m) = consumer.poll(Duration::from_millis(500)) else {
            assert!(
                started.is_some() || waiting.elapsed() < Duration::from_secs(60),
                "naive: no input"
            );
            continue;
        };
        let m = m.unwrap();
        started.get_or_insert_with(Instant::now);
        if let Decoded::Message(msg) =
            decode(KeySource::Record(m.key()), m.payload().unwrap_or_default())
        {
            naive.handle(msg);
        }
        consumer.commit_message(&m, CommitMode::Sync).unwrap();
        done += 1;
    }
    let rate = done as f64 / started.unwrap().elapsed().as_secs_f64();
    eprintln!("  naive: {rate:.0} messages/s over {done} messages");
    rate
}

impl Naive {
    fn handle(&mut self, msg: Message) {
        let key = format!("{}:{}", self.prefix, msg.conversation);
        let blob: Option<String> = redis::cmd("GET").arg(&key).query(&mut self.redis).unwrap();
        let blob: Option<Blob> = blob.map(|b| serde_json::from_str(&b).unwrap());
        let mut log = MemoryLog::new();
        let conversation = blob.map(|b| {
            log.apply(vec![LogWrite::Replace(b.messages)]);
            b.conversation
        });
        let env = Env {
            directory: &self.directory,
            dialect: switchboard::core::Dialect::Web1on1,
            max_relay_bytes: switchboard::runtime::pipeline::Limits::defaults().relay_bytes(),
            import_timeout_ms: switchboard::runtime::pipeline::Limits::defaults().import_timeout_ms,
        };
        let t = apply(conversation, &log, msg, &env);
        log.apply(t.log);
        if let Some(c) = t.conversation {
            let blob = serde_json::to_string(&Blob {
                conversation: c,
                messages: log.messages().to_vec(),
            })
            .unwrap();
            let _: () = redis::cmd("SET")
                .arg(&key)
                .arg(blob)
                .query(&mut self.redis)
                .unwrap();
        }
        for o in t.outputs {
            let value = serde_json::to_string(&o.value).unwrap();
            self.producer
                .send(BaseRecord::to(&self.sink).key(&o.key).payload(&value))
                .map_err(|(e, _)| e)
                .unwrap();
        }
        // Awaiting each delivery, as `send().await` would; not `flush`, whose 100 ms
        // polling slices would make this baseline slower than it deserves.
        await_deliveries(&self.producer, Duration::from_secs(30));
    }
}
