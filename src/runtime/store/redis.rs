//! The Redis store: on one node, a Redis Cluster, or the primary Sentinels name (see
//! [`conn`]). Every key of a conversation carries the hash tag `{<conversation id>}`, so its keys
//! share a slot and one script changes it atomically; a batch's write is one script per node
//! ([`batch`]).

use futures_util::future::try_join_all;
use redis::{ErrorKind, Script, ServerErrorKind, Value};

use super::{Mark, Pending, Record, StateStore, StoreError, Watermark, Write, WriteOutcome};
use crate::core::directory::Block;
use crate::core::state::{Conversation, FormResult, StoredMessage};

mod admin;
mod batch;
pub(crate) mod conn;
mod marks;
mod scripts;

use conn::Connection;
pub use conn::{Target, TlsFiles};
use scripts::{BATCH, BY_ID};

#[derive(Clone)]
pub struct RedisStore {
    conn: Connection,
    prefix: String,
    batch: Script,
    by_id: Script,
    /// Replicas that must acknowledge a write, and for how long to wait for them (Redis WAIT).
    wait: Option<(u32, u64)>,
}

impl RedisStore {
    /// Connects (the connection manager reconnects by itself) and loads the scripts.
    /// `prefix` namespaces every key, e.g. `sb`.
    pub async fn connect(target: impl Into<Target>, prefix: &str) -> Result<Self, StoreError> {
        Self::connect_with(&target.into(), prefix, super::DEFAULT_RESPONSE_TIMEOUT).await
    }

    pub async fn connect_with(
        target: &Target,
        prefix: &str,
        response_timeout: std::time::Duration,
    ) -> Result<Self, StoreError> {
        let conn = conn::connect(target, response_timeout).await?;
        let store = RedisStore {
            conn,
            prefix: prefix.to_string(),
            batch: Script::new(BATCH),
            by_id: Script::new(BY_ID),
            wait: None,
        };
        store.load_scripts().await?;
        Ok(store)
    }

    /// Every write then waits until `replicas` replicas hold it, at most `timeout_ms`, and fails
    /// if fewer did (`redis.wait_replicas`); 0 replicas: no waiting.
    pub fn waiting_for(mut self, replicas: u32, timeout_ms: u64) -> Self {
        self.wait = (replicas > 0).then_some((replicas, timeout_ms));
        self
    }

    async fn load_scripts(&self) -> Result<(), StoreError> {
        let mut conn = self.conn.clone();
        // On a Cluster, SCRIPT LOAD goes to every node.
        self.batch.prepare_invoke().load_async(&mut conn).await?;
        self.by_id.prepare_invoke().load_async(&mut conn).await?;
        Ok(())
    }

    fn key(&self, conversation: &str, part: &str) -> String {
        format!("{}:{{{conversation}}}:{part}", self.prefix)
    }

    fn block_key(&self, organization: &str) -> String {
        format!("{}:blocks:{organization}", self.prefix)
    }
}

/// An outbox as stored: a format byte, then postcard, LZ4-compressed. Binary, because the
/// outputs are JSON already and JSON inside JSON escapes every quote (once the largest cost in a
/// profile of the processor); compressed, because it is most of what a batch writes, and every
/// byte of it goes through Redis and its append-only file although it is read back only on a
/// replay. The outputs of one record repeat its headers, which the compression takes back.
fn encode_outbox(conversation: &str, outbox: &[Pending]) -> Result<Vec<u8>, StoreError> {
    let corrupt = |detail: String| StoreError::CorruptOutbox {
        conversation: conversation.to_string(),
        detail,
    };
    // Sized once from the records: a buffer grown as postcard writes, and the compressed block
    // shifted to make room for the format byte, were a profile's largest copies.
    let estimate: usize = outbox
        .iter()
        .flat_map(|p| &p.outputs)
        .map(|o| o.key.len() + o.value.len() + OUTBOX_RECORD_OVERHEAD)
        .sum();
    let plain = postcard::to_extend(outbox, Vec::with_capacity(estimate + 16 * outbox.len()))
        .map_err(|e| corrupt(e.to_string()))?;
    // The format byte, then what `decompress_size_prepended` reads: the plain size (u32,
    // little-endian) and the block.
    let mut stored = vec![0u8; 5 + lz4_flex::block::get_maximum_output_size(plain.len())];
    stored[0] = OUTBOX_FORMAT;
    stored[1..5].copy_from_slice(&(plain.len() as u32).to_le_bytes());
    let n = lz4_flex::block::compress_into(&plain, &mut stored[5..])
        .map_err(|e| corrupt(e.to_string()))?;
    stored.truncate(5 + n);
    Ok(stored)
}

/// What an output record adds to its key and value in the outbox, about: its headers (the
/// CloudEvents attributes, a `traceparent`) and the lengths postcard writes.
const OUTBOX_RECORD_OVERHEAD: usize = 256;

/// The outbox's format: 2 since output records carry headers. An outbox of another format (left
/// by another version of Switchboard) is reported, not misread.
const OUTBOX_FORMAT: u8 = 2;

fn decode_outbox(conversation: &str, stored: &[u8]) -> Result<Vec<Pending>, StoreError> {
    let corrupt = |detail: String| StoreError::CorruptOutbox {
        conversation: conversation.to_string(),
        detail,
    };
    let compressed = match stored.split_first() {
        Some((&OUTBOX_FORMAT, rest)) => rest,
        Some((other, _)) => {
            return Err(corrupt(format!(
                "format {other}, not {OUTBOX_FORMAT}: written by another version"
            )))
        }
        None => return Err(corrupt("empty".into())),
    };
    let plain =
        lz4_flex::decompress_size_prepended(compressed).map_err(|e| corrupt(e.to_string()))?;
    postcard::from_bytes(&plain).map_err(|e| corrupt(e.to_string()))
}

/// One conversation's `doc`, `offset` and `partition`, as HMGET returns them.
type HeaderRow = (Option<String>, Option<i64>, Option<i32>);

fn is_noscript(e: &redis::RedisError) -> bool {
    e.kind() == ErrorKind::Server(ServerErrorKind::NoScript)
}

fn parse<T: serde::de::DeserializeOwned>(conversation: &str, text: &str) -> Result<T, StoreError> {
    serde_json::from_str(text).map_err(|source| StoreError::Corrupt {
        conversation: conversation.to_string(),
        source,
    })
}

impl StateStore for RedisStore {
    async fn load(&self, conversations: &[String]) -> Result<Vec<Option<Record>>, StoreError> {
        let commands = conversations
            .iter()
            .map(|id| {
                let key = self.key(id, "h");
                let mut cmd = redis::cmd("HMGET");
                cmd.arg(&key).arg("doc").arg("offset").arg("partition");
                (key, cmd)
            })
            .collect();
        let rows: Vec<HeaderRow> = self.conn.query_each(commands).await?;
        conversations
            .iter()
            .zip(rows)
            .map(|(id, (doc, offset, partition))| {
                let Some(doc) = doc else { return Ok(None) };
                Ok(Some(Record {
                    conversation: parse::<Conversation>(id, &doc)?,
                    offset: offset.unwrap_or(-1),
                    partition,
                }))
            })
            .collect()
    }

    async fn messages(
        &self,
        wanted: &[(String, Vec<String>)],
    ) -> Result<Vec<Vec<StoredMessage>>, StoreError> {
        let commands = || {
            wanted
                .iter()
                .map(|(conversation, ids)| {
                    let key = self.key(conversation, "i");
                    let mut cmd = redis::cmd("EVALSHA");
                    cmd.arg(self.by_id.get_hash())
                        .arg(2)
                        .arg(&key)
                        .arg(self.key(conversation, "m"))
                        .arg(ids);
                    (key, cmd)
                })
                .collect::<Vec<_>>()
        };
        let found: Vec<Vec<String>> = match self.conn.query_each(commands()).await {
            Ok(r) => r,
            Err(e) if is_noscript(&e) => {
                self.load_scripts().await?;
                self.conn.query_each(commands()).await?
            }
            Err(e) => return Err(e.into()),
        };
        wanted
            .iter()
            .zip(found)
            .map(|((conversation, _), messages)| {
                messages.iter().map(|m| parse(conversation, m)).collect()
            })
            .collect()
    }

    async fn outboxes(&self, conversations: &[String]) -> Result<Vec<Vec<Pending>>, StoreError> {
        let commands = conversations
            .iter()
            .map(|id| {
                let key = self.key(id, "h");
                let mut cmd = redis::cmd("HMGET");
                cmd.arg(&key).arg("outbox_prior").arg("outbox");
                (key, cmd)
            })
            .collect();
        // The prior outbox and the last one, each absent where there is none.
        type Stored = Option<Vec<u8>>;
        let rows: Vec<(Stored, Stored)> = self.conn.query_each(commands).await?;
        conversations
            .iter()
            .zip(rows)
            .map(|(id, (prior, last))| {
                let mut outbox = Vec::new();
                // Empty: the script keeps no prior outbox where the write before had none.
                for stored in [prior, last].into_iter().flatten() {
                    if !stored.is_empty() {
                        outbox.extend(decode_outbox(id, &stored)?);
                    }
                }
                Ok(outbox)
            })
            .collect()
    }

    async fn log(&self, conversation: &str) -> Result<Vec<StoredMessage>, StoreError> {
        let mut conn = self.conn.clone();
        let all: Vec<String> = redis::cmd("HVALS")
            .arg(self.key(conversation, "m"))
            .query_async(&mut conn)
            .await?;
        let mut messages: Vec<StoredMessage> = all
            .iter()
            .map(|m| parse(conversation, m))
            .collect::<Result<_, _>>()?;
        messages.sort_by_key(|m| m.index);
        Ok(messages)
    }

    async fn results(&self, conversation: &str) -> Result<Vec<FormResult>, StoreError> {
        let mut conn = self.conn.clone();
        let all: Vec<String> = redis::cmd("LRANGE")
            .arg(self.key(conversation, "r"))
            .arg(0)
            .arg(-1)
            .query_async(&mut conn)
            .await?;
        all.iter().map(|r| parse(conversation, r)).collect()
    }

    async fn write(
        &self,
        mut writes: Vec<Write>,
        marks: &[Mark],
    ) -> Result<Vec<WriteOutcome>, StoreError> {
        if writes.is_empty() && marks.is_empty() {
            return Ok(Vec::new());
        }
        // The header is stored without its results, which go to a list of their own: taken
        // out rather than the header copied without them.
        let results: Vec<Vec<FormResult>> = writes
            .iter_mut()
            .map(|w| std::mem::take(&mut w.conversation.results))
            .collect();
        let shares = self.node_writes(&writes, &results, marks)?;
        let replies = match try_join_all(shares.iter().map(|s| self.send(s))).await {
            Ok(r) => r,
            // A restarted Redis has forgotten the script: no share ran it, so loading it and
            // sending them again is safe. (A share that did run changed its conversations, and
            // those now answer stale: the batch is prepared again.)
            Err(StoreError::Redis(e)) if is_noscript(&e) => {
                self.load_scripts().await?;
                try_join_all(shares.iter().map(|s| self.send(s))).await?
            }
            Err(e) => {
                self.conn.refresh().await;
                return Err(e);
            }
        };
        let mut outcomes = vec![WriteOutcome::Stale; writes.len()];
        for (share, values) in shares.iter().zip(replies) {
            for (&i, value) in share.writes.iter().zip(&values) {
                outcomes[i] = batch::outcome(value, &writes[i].conversation.id)?;
            }
        }
        Ok(outcomes)
    }

    async fn watermarks(
        &self,
        topic: &str,
        partitions: &[i32],
    ) -> Result<Vec<Option<Watermark>>, StoreError> {
        if partitions.is_empty() {
            return Ok(Vec::new());
        }
        let fields: Vec<String> = partitions
            .iter()
            .flat_map(|p| [p.to_string(), format!("{p}:committed")])
            .collect();
        let commands = self
            .marks_keys(topic)
            .into_iter()
            .map(|key| {
                let mut cmd = redis::cmd("HMGET");
                cmd.arg(&key).arg(&fields);
                (key, cmd)
            })
            .collect();
        let copies: Vec<Vec<Option<i64>>> = self.conn.query_each(commands).await?;
        Ok(marks::least(partitions.len(), &copies))
    }

    async fn block(&self, blocks: &[Block]) -> Result<(), StoreError> {
        // LT: an IP blocked again keeps its earlier time (Redis 6.2+).
        let commands = blocks
            .iter()
            .map(|b| {
                let key = self.block_key(&b.organization);
                let mut cmd = redis::cmd("ZADD");
                cmd.arg(&key).arg("LT").arg(score(b.since)).arg(&b.ip);
                (key, cmd)
            })
            .collect();
        let _: Vec<Value> = self.conn.query_each(commands).await?;
        Ok(())
    }

    async fn blocked_since(
        &self,
        candidates: &[(String, String)],
    ) -> Result<Vec<Option<i64>>, StoreError> {
        let commands = candidates
            .iter()
            .map(|(organization, ip)| {
                let key = self.block_key(organization);
                let mut cmd = redis::cmd("ZSCORE");
                cmd.arg(&key).arg(ip);
                (key, cmd)
            })
            .collect();
        let scores: Vec<Option<f64>> = self.conn.query_each(commands).await?;
        Ok(scores
            .into_iter()
            .map(|s| s.map(|s| if s.is_finite() { s as i64 } else { i64::MIN }))
            .collect())
    }
}

impl RedisStore {
    /// One node's share of a batch, and the replicas' acknowledgement of it when asked for: the
    /// script's outcomes.
    async fn send(&self, share: &batch::NodeWrite) -> Result<Vec<Value>, StoreError> {
        let mut conn = self.conn.clone();
        let mut replies: Vec<Value> = share.pipe.query_async(&mut conn).await?;
        if let Some((wanted, _)) = self.wait {
            let acked = match replies.pop() {
                Some(Value::Int(n)) => n.max(0) as u32,
                _ => 0,
            };
            if acked < wanted {
                return Err(StoreError::Replicas { acked, wanted });
            }
        }
        match replies.pop() {
            Some(Value::Array(outcomes)) => Ok(outcomes),
            other => Err(StoreError::Refused {
                conversation: String::new(),
                detail: format!("unexpected answer to the batch script: {other:?}"),
            }),
        }
    }
}

/// A block time as a sorted-set score: microseconds are exact in an f64 until the year 2255;
/// "blocked forever" (the directory file's blocks) is minus infinity.
fn score(since: i64) -> String {
    if since == i64::MIN {
        "-inf".into()
    } else {
        since.to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::event::Topic;
    use crate::runtime::store::OutRecord;

    /// Outboxes written by earlier versions (format byte, then `compress_prepend_size`) and by
    /// this one are the same bytes, and read back to what was written.
    #[test]
    fn an_outbox_is_stored_as_before_and_reads_back() {
        let record = |i: usize| OutRecord {
            topic: Topic::CommandResults,
            key: format!("conversation-{i}"),
            value: "{\"type\":\"result\",\"text\":\"é\\\"\"}"
                .repeat(i + 1)
                .into(),
            headers: crate::runtime::pipeline::Headers::default(),
        };
        let outbox: Vec<Pending> = (0..5)
            .map(|i| Pending {
                offset: i as i64,
                outputs: (0..i).map(record).collect(),
            })
            .collect();
        let stored = encode_outbox("c", &outbox).unwrap();
        let mut before = vec![OUTBOX_FORMAT];
        before.extend(lz4_flex::compress_prepend_size(
            &postcard::to_allocvec(&outbox).unwrap(),
        ));
        assert_eq!(stored, before);
        assert_eq!(decode_outbox("c", &stored).unwrap(), outbox);
        assert_eq!(
            decode_outbox("c", &encode_outbox("c", &[]).unwrap()).unwrap(),
            Vec::<Pending>::new()
        );
    }
}
