//! The Redis store, on a single Redis node. Every key of a conversation carries the hash tag
//! `{<conversation id>}`, so one script changes a conversation atomically; that is the key
//! layout Redis Cluster needs too, but a batch's writes go in one MULTI across many slots, which
//! Cluster refuses, and there is no Cluster client here yet.

use redis::aio::ConnectionManager;
use redis::{ErrorKind, Script, ServerErrorKind, Value};

use super::{
    flatten, Mark, Pending, Record, StateStore, StoreError, Watermark, Write, WriteOutcome,
};
use crate::core::directory::Block;
use crate::core::state::{Conversation, FormResult, StoredMessage};

mod admin;
mod scripts;

use scripts::{BY_ID, MARK, WRITE};

#[derive(Clone)]
pub struct RedisStore {
    conn: ConnectionManager,
    prefix: String,
    write: Script,
    by_id: Script,
    mark: Script,
    /// Replicas that must acknowledge a write, and for how long to wait for them (Redis WAIT).
    wait: Option<(u32, u64)>,
}

impl RedisStore {
    /// Connects (the connection manager reconnects by itself) and loads the scripts.
    /// `prefix` namespaces every key, e.g. `sb`.
    pub async fn connect(url: &str, prefix: &str) -> Result<Self, StoreError> {
        Self::connect_with(url, prefix, super::DEFAULT_RESPONSE_TIMEOUT).await
    }

    pub async fn connect_with(
        url: &str,
        prefix: &str,
        response_timeout: std::time::Duration,
    ) -> Result<Self, StoreError> {
        let conn = super::connection(url, response_timeout).await?;
        let store = RedisStore {
            conn,
            prefix: prefix.to_string(),
            write: Script::new(WRITE),
            by_id: Script::new(BY_ID),
            mark: Script::new(MARK),
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
        self.write.prepare_invoke().load_async(&mut conn).await?;
        self.by_id.prepare_invoke().load_async(&mut conn).await?;
        self.mark.prepare_invoke().load_async(&mut conn).await?;
        Ok(())
    }

    fn key(&self, conversation: &str, part: &str) -> String {
        format!("{}:{{{conversation}}}:{part}", self.prefix)
    }

    /// A topic's watermarks, one field per partition.
    fn marks_key(&self, topic: &str) -> String {
        format!("{}:marks:{topic}", self.prefix)
    }

    fn block_key(&self, organization: &str) -> String {
        format!("{}:blocks:{organization}", self.prefix)
    }

    fn write_pipeline(
        &self,
        writes: &[Write],
        marks: &[Mark],
    ) -> Result<redis::Pipeline, StoreError> {
        // One transaction, so Redis runs the batch's scripts in one go, after reading all of
        // them. A plain pipeline is executed as it arrives, a socket read (16 KB) at a time, and
        // with `appendfsync always` every one of those event-loop turns ends in an fsync: a
        // megabyte-sized batch cost some ninety of them.
        let mut pipe = redis::pipe();
        pipe.atomic();
        for w in writes {
            let id = &w.conversation.id;
            let corrupt = |source| StoreError::Corrupt {
                conversation: id.clone(),
                source,
            };
            let (replace, changed) = flatten(&w.log);
            // The header goes without its results: they are appended to a list of their own.
            let header = Conversation {
                results: Vec::new(),
                ..w.conversation.clone()
            };
            let cmd = pipe
                .cmd("EVALSHA")
                .arg(self.write.get_hash())
                .arg(5 + w.blocks.len())
                .arg(self.key(id, "h"))
                .arg(self.key(id, "m"))
                .arg(self.key(id, "i"))
                .arg(self.key(id, "r"))
                .arg(self.key(id, "rid"));
            for b in &w.blocks {
                cmd.arg(self.block_key(&b.organization));
            }
            cmd.arg(w.base.map(|b| b.to_string()).unwrap_or_default())
                .arg(w.offset)
                .arg(serde_json::to_string(&header).map_err(corrupt)?)
                .arg(encode_outbox(id, &w.outbox)?)
                .arg(if replace { "1" } else { "0" })
                .arg(w.conversation.results.len())
                .arg(changed.len())
                .arg(w.partition)
                .arg(w.blocks.len());
            for b in &w.blocks {
                cmd.arg(score(b.since)).arg(&b.ip);
            }
            for r in &w.conversation.results {
                cmd.arg(&r.message)
                    .arg(serde_json::to_string(r).map_err(corrupt)?);
            }
            for m in &changed {
                cmd.arg(m.index)
                    .arg(serde_json::to_string(m).map_err(corrupt)?);
            }
            for m in &changed {
                cmd.arg(&m.id).arg(m.index);
            }
        }
        for m in marks {
            pipe.cmd("EVALSHA")
                .arg(self.mark.get_hash())
                .arg(1)
                .arg(self.marks_key(&m.topic))
                .arg(m.partition)
                .arg(m.next)
                .arg(m.committed)
                .ignore();
        }
        Ok(pipe)
    }
}

/// An outbox as stored: a format byte, then postcard, LZ4-compressed. Binary, because the
/// outputs are JSON already and JSON inside JSON escapes every quote (once the largest cost in a
/// profile of the processor); compressed, because it is most of what a batch writes, and every
/// byte of it goes through Redis and its append-only file although it is read back only on a
/// replay. The outputs of one record repeat its headers, which the compression takes back.
fn encode_outbox(conversation: &str, outbox: &[Pending]) -> Result<Vec<u8>, StoreError> {
    let plain = postcard::to_allocvec(outbox).map_err(|source| StoreError::CorruptOutbox {
        conversation: conversation.to_string(),
        detail: source.to_string(),
    })?;
    let mut stored = lz4_flex::compress_prepend_size(&plain);
    stored.insert(0, OUTBOX_FORMAT);
    Ok(stored)
}

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

/// A batch's write that failed because one conversation's script met data it cannot work with
/// (a key of the wrong type, a field that is not a number) is that conversation's, not the
/// batch's: Redis ran the other commands of the transaction. Any other failure (a command the
/// ACL refuses, out of memory, a read-only replica, a connection lost) is the batch's: it would
/// fail every conversation alike.
fn failed_script(e: redis::RedisError, writes: &[Write]) -> StoreError {
    let script_error = e.clone().into_server_errors().and_then(|errors| {
        errors.iter().find_map(|(index, error)| {
            let text = error.to_string();
            let own = ["WRONGTYPE", "attempt to", "bad argument"]
                .iter()
                .any(|data| text.contains(data));
            own.then(|| {
                writes
                    .get(*index)
                    .map(|w| (w.conversation.id.clone(), text))
            })
            .flatten()
        })
    });
    match script_error {
        Some((conversation, detail)) => StoreError::Script {
            conversation,
            detail,
        },
        None => e.into(),
    }
}

fn parse<T: serde::de::DeserializeOwned>(conversation: &str, text: &str) -> Result<T, StoreError> {
    serde_json::from_str(text).map_err(|source| StoreError::Corrupt {
        conversation: conversation.to_string(),
        source,
    })
}

impl StateStore for RedisStore {
    async fn load(&self, conversations: &[String]) -> Result<Vec<Option<Record>>, StoreError> {
        // A batch of dead letters only names no conversation; Redis refuses an empty pipeline.
        if conversations.is_empty() {
            return Ok(Vec::new());
        }
        let mut pipe = redis::pipe();
        for id in conversations {
            pipe.cmd("HMGET")
                .arg(self.key(id, "h"))
                .arg("doc")
                .arg("offset")
                .arg("partition");
        }
        let mut conn = self.conn.clone();
        let rows: Vec<HeaderRow> = pipe.query_async(&mut conn).await?;
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
        if wanted.is_empty() {
            return Ok(Vec::new());
        }
        let mut pipe = redis::pipe();
        for (conversation, ids) in wanted {
            pipe.cmd("EVALSHA")
                .arg(self.by_id.get_hash())
                .arg(2)
                .arg(self.key(conversation, "i"))
                .arg(self.key(conversation, "m"))
                .arg(ids);
        }
        let mut conn = self.conn.clone();
        let found: Vec<Vec<String>> = match pipe.query_async(&mut conn).await {
            Ok(r) => r,
            Err(e) if is_noscript(&e) => {
                self.load_scripts().await?;
                pipe.query_async(&mut conn).await?
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
        if conversations.is_empty() {
            return Ok(Vec::new());
        }
        let mut pipe = redis::pipe();
        for id in conversations {
            pipe.cmd("HGET").arg(self.key(id, "h")).arg("outbox");
        }
        let mut conn = self.conn.clone();
        let rows: Vec<Option<Vec<u8>>> = pipe.query_async(&mut conn).await?;
        conversations
            .iter()
            .zip(rows)
            .map(|(id, outbox)| match outbox {
                Some(o) => decode_outbox(id, &o),
                None => Ok(Vec::new()),
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
        writes: Vec<Write>,
        marks: &[Mark],
    ) -> Result<Vec<WriteOutcome>, StoreError> {
        if writes.is_empty() && marks.is_empty() {
            return Ok(Vec::new());
        }
        let pipe = self.write_pipeline(&writes, marks)?;
        let mut conn = self.conn.clone();
        let results: Vec<i64> = match pipe.query_async(&mut conn).await {
            Ok(r) => r,
            // A restarted Redis has forgotten the script: no EVALSHA of the pipeline ran, so
            // loading it and sending the pipeline again is safe.
            Err(e) if is_noscript(&e) => {
                self.load_scripts().await?;
                pipe.query_async(&mut conn).await?
            }
            Err(e) => return Err(failed_script(e, &writes)),
        };
        if let Some((wanted, timeout_ms)) = self.wait {
            // WAIT covers every write sent before it on this connection: the batch's included.
            let acked: u32 = redis::cmd("WAIT")
                .arg(wanted)
                .arg(timeout_ms)
                .query_async(&mut conn)
                .await?;
            if acked < wanted {
                return Err(StoreError::Replicas { acked, wanted });
            }
        }
        Ok(results
            .into_iter()
            .map(|r| {
                if r == 1 {
                    WriteOutcome::Written
                } else {
                    WriteOutcome::Stale
                }
            })
            .collect())
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
        let mut conn = self.conn.clone();
        let found: Vec<Option<i64>> = redis::cmd("HMGET")
            .arg(self.marks_key(topic))
            .arg(fields)
            .query_async(&mut conn)
            .await?;
        Ok(found
            .chunks(2)
            .map(|pair| {
                pair[0].map(|next| Watermark {
                    next,
                    committed: pair[1].unwrap_or(-1),
                })
            })
            .collect())
    }

    async fn block(&self, blocks: &[Block]) -> Result<(), StoreError> {
        if blocks.is_empty() {
            return Ok(());
        }
        let mut pipe = redis::pipe();
        for b in blocks {
            // LT: an IP blocked again keeps its earlier time (Redis 6.2+).
            pipe.cmd("ZADD")
                .arg(self.block_key(&b.organization))
                .arg("LT")
                .arg(score(b.since))
                .arg(&b.ip)
                .ignore();
        }
        let mut conn = self.conn.clone();
        let _: Value = pipe.query_async(&mut conn).await?;
        Ok(())
    }

    async fn blocked_since(
        &self,
        candidates: &[(String, String)],
    ) -> Result<Vec<Option<i64>>, StoreError> {
        if candidates.is_empty() {
            return Ok(Vec::new());
        }
        let mut pipe = redis::pipe();
        for (organization, ip) in candidates {
            pipe.cmd("ZSCORE").arg(self.block_key(organization)).arg(ip);
        }
        let mut conn = self.conn.clone();
        let scores: Vec<Option<f64>> = pipe.query_async(&mut conn).await?;
        Ok(scores
            .into_iter()
            .map(|s| s.map(|s| if s.is_finite() { s as i64 } else { i64::MIN }))
            .collect())
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
