//! History: one command on a conversation of 100,000 messages against one on a fresh
//! conversation, through the Redis store and the batch pipeline (no Kafka).

use std::time::Instant;

use serde_json::{json, Value};
use switchboard::core::directory::MemoryDirectory;
use switchboard::core::Dialect;
use switchboard::runtime::pipeline::{process_batch, InputRecord, Limits};
use switchboard::runtime::store::RedisStore;
use switchboard::tools::loadgen::{conversation_id, directory, organization_id, Generator};

use crate::latency::percentile;
use crate::model;
use crate::process::{forget_keys, redis_url};

#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct History {
    pub messages: u64,
    pub fresh_us: f64,
    pub long_us: f64,
}

/// The store, the directory, and the next input offset.
struct Bench<'a> {
    io: &'a tokio::runtime::Runtime,
    store: RedisStore,
    dir: MemoryDirectory,
    offset: i64,
}

fn record(offset: i64, v: &Value) -> InputRecord {
    InputRecord {
        partition: 0,
        offset,
        key: v["conversation"].as_str().map(|c| c.as_bytes().to_vec()),
        payload: v.to_string().into_bytes(),
        ..InputRecord::default()
    }
}

impl Bench<'_> {
    /// Records of `values` at the next offsets.
    fn records(&mut self, values: &[Value]) -> Vec<InputRecord> {
        values
            .iter()
            .map(|v| {
                self.offset += 1;
                record(self.offset - 1, v)
            })
            .collect()
    }

    /// One batch through the pipeline.
    fn batch(&self, records: Vec<InputRecord>) {
        self.io
            .block_on(process_batch(
                &self.store,
                &self.dir,
                Dialect::Web1on1,
                Limits::defaults(),
                records,
            ))
            .unwrap();
    }

    /// Median microseconds of a `/set` on `conversation`, over 400 batches of one.
    fn time(&mut self, conversation: &str, agent: &str) -> f64 {
        let mut took = Vec::new();
        for i in 0..400 {
            let v = json!({"id": format!("1ffffffe{:016x}", self.offset), "conversation": conversation,
                "type": "command", "role": "agent", "sender": agent,
                "text": if i % 2 == 0 { "/set engagement high" } else { "/set engagement low" },
                "createdAt": "2030-01-01T00:00:01Z"});
            let r = self.records(&[v]);
            let t = Instant::now();
            self.batch(r);
            took.push(t.elapsed().as_secs_f64() * 1e6);
        }
        took.sort_by(f64::total_cmp);
        percentile(&took, 0.5)
    }
}

/// One command applied through the Redis store to a conversation of `length` messages, and to
/// a fresh one: median microseconds per batch of one.
pub fn history(io: &tokio::runtime::Runtime, length: u64) -> History {
    let prefix = format!("bench-history-{}", std::process::id());
    let m = model(1, Some(length), 21);
    let mut bench = Bench {
        io,
        store: io
            .block_on(RedisStore::connect(&redis_url(), &prefix))
            .unwrap(),
        dir: MemoryDirectory::from_file(directory(&m)).unwrap(),
        offset: 0,
    };
    let long_id = conversation_id(21, 0);
    let mut chunk = Vec::new();
    for v in Generator::new(m.clone()) {
        chunk.push(v);
        if chunk.len() == 1000 {
            let r = bench.records(&std::mem::take(&mut chunk));
            bench.batch(r);
        }
    }
    if !chunk.is_empty() {
        let r = bench.records(&chunk);
        bench.batch(r);
    }
    let fresh_id = "d0ffffff0000000000000001".to_string();
    let opening = json!({"id": "1fffffff0000000000000000", "conversation": fresh_id, "type": "chat",
        "role": "contact", "text": "hello", "organization": organization_id(21, 0), "touchpoint": "web",
        "createdAt": "2030-01-01T00:00:00Z"});
    let r = bench.records(&[opening]);
    bench.batch(r);
    let agent = directory(&m).users[0].id.clone();
    // Alternate, so that machine noise hits both alike.
    let (mut fresh, mut long) = (Vec::new(), Vec::new());
    for _ in 0..3 {
        fresh.push(bench.time(&fresh_id, &agent));
        long.push(bench.time(&long_id, &agent));
    }
    fresh.sort_by(f64::total_cmp);
    long.sort_by(f64::total_cmp);
    forget_keys(&prefix);
    let result = History {
        messages: length,
        fresh_us: fresh[1],
        long_us: long[1],
    };
    eprintln!(
        "  history: a command takes {:.0} µs on a fresh conversation, {:.0} µs on one of {length} messages",
        result.fresh_us, result.long_us
    );
    result
}
