//! A batch's write as Redis receives it: one [`BATCH`](super::scripts::BATCH) script per node,
//! each with the conversations, watermarks and block lists that live there, sent side by side
//! and each followed by `WAIT` when replicas must acknowledge it. On one node that is one script
//! and one round trip, as a MULTI of per-conversation scripts was before; on a Redis Cluster it
//! is one per primary.

use redis::{Cmd, Pipeline, Value};

use super::{score, RedisStore};
use crate::core::state::FormResult;
use crate::runtime::store::{flatten, Mark, StoreError, Write, WriteOutcome};

/// One node's share of a batch.
pub(super) struct NodeWrite {
    /// The batch's writes it carries, by index, in the order of its outcomes.
    pub writes: Vec<usize>,
    /// The script, then `WAIT` when replicas must acknowledge it: built once, sent again as it
    /// is after a `NOSCRIPT` (a batch's arguments run to megabytes).
    pub pipe: Pipeline,
}

/// What goes to one node, by index into the batch's writes, marks and blocks.
#[derive(Default)]
struct Share {
    node: usize,
    writes: Vec<usize>,
    /// (mark, the watermark key on this node it goes to).
    marks: Vec<(usize, String)>,
    /// (write, block) of blocks whose list lives on this node but whose conversation does not.
    blocks: Vec<(usize, usize)>,
}

impl RedisStore {
    /// The batch split by node. A block goes with its conversation when its list lives on the
    /// same node, and so lands only if that write lands (review F6); on a Redis Cluster a list on
    /// another node gets the block unconditionally, in that node's script.
    pub(super) fn node_writes(
        &self,
        writes: &[Write],
        results: &[Vec<FormResult>],
        marks: &[Mark],
    ) -> Result<Vec<NodeWrite>, StoreError> {
        let mut shares: Vec<Share> = Vec::new();
        let mut share = |node: usize| -> usize {
            match shares.iter().position(|s| s.node == node) {
                Some(i) => i,
                None => {
                    shares.push(Share {
                        node,
                        ..Share::default()
                    });
                    shares.len() - 1
                }
            }
        };
        let mut local: Vec<Vec<usize>> = Vec::with_capacity(writes.len());
        let mut foreign: Vec<(usize, (usize, usize))> = Vec::new();
        let mut at: Vec<usize> = Vec::with_capacity(writes.len());
        for (i, w) in writes.iter().enumerate() {
            let node = self.conn.node_of(&self.key(&w.conversation.id, "h"));
            at.push(share(node));
            let mut own = Vec::new();
            for (b, block) in w.blocks.iter().enumerate() {
                let list = self.conn.node_of(&self.block_key(&block.organization));
                if list == node {
                    own.push(b);
                } else {
                    foreign.push((share(list), (i, b)));
                }
            }
            local.push(own);
        }
        // Every watermark key gets every mark: on a Cluster they are spread over the primaries,
        // so each primary's own copy moves only with its own conversations (see `marks_keys`).
        let mut mark_at: Vec<(usize, usize, String)> = Vec::new();
        for (i, m) in marks.iter().enumerate() {
            for key in self.marks_keys(&m.topic) {
                mark_at.push((share(self.conn.node_of(&key)), i, key));
            }
        }
        for (i, s) in at.iter().enumerate() {
            shares[*s].writes.push(i);
        }
        for (s, i, key) in mark_at {
            shares[s].marks.push((i, key));
        }
        for (s, wb) in foreign {
            shares[s].blocks.push(wb);
        }
        shares
            .iter()
            .map(|s| self.node_write(s, writes, results, &local, marks))
            .collect()
    }

    fn node_write(
        &self,
        share: &Share,
        writes: &[Write],
        results: &[Vec<FormResult>],
        local: &[Vec<usize>],
        marks: &[Mark],
    ) -> Result<NodeWrite, StoreError> {
        // The declared key only routes the script to this node.
        let route = match (
            share.writes.first(),
            share.marks.first(),
            share.blocks.first(),
        ) {
            (Some(&w), _, _) => self.key(&writes[w].conversation.id, "h"),
            (None, Some((_, key)), _) => key.clone(),
            (None, None, Some(&(w, b))) => self.block_key(&writes[w].blocks[b].organization),
            (None, None, None) => unreachable!("a share holds something"),
        };
        let mut cmd = redis::cmd("EVALSHA");
        cmd.arg(self.batch.get_hash())
            .arg(1)
            .arg(route)
            .arg(share.writes.len());
        for &i in &share.writes {
            self.write_args(&mut cmd, &writes[i], &results[i], &local[i])?;
        }
        cmd.arg(share.marks.len());
        for (i, key) in &share.marks {
            let m = &marks[*i];
            cmd.arg(key).arg(m.partition).arg(m.next).arg(m.committed);
        }
        cmd.arg(share.blocks.len());
        for &(w, b) in &share.blocks {
            let block = &writes[w].blocks[b];
            cmd.arg(self.block_key(&block.organization))
                .arg(score(block.since))
                .arg(&block.ip);
        }
        let mut pipe = redis::pipe();
        pipe.add_command(cmd);
        if let Some((wanted, timeout_ms)) = self.wait {
            // WAIT covers every write sent before it on this connection: the share's included.
            pipe.cmd("WAIT").arg(wanted).arg(timeout_ms);
        }
        Ok(NodeWrite {
            writes: share.writes.clone(),
            pipe,
        })
    }

    /// One conversation's keys and arguments, as the script reads them; `results` are the
    /// conversation's, taken out of its header.
    fn write_args(
        &self,
        cmd: &mut Cmd,
        w: &Write,
        results: &[FormResult],
        blocks: &[usize],
    ) -> Result<(), StoreError> {
        let id = &w.conversation.id;
        let corrupt = |source| StoreError::Corrupt {
            conversation: id.clone(),
            source,
        };
        let (replace, changed) = flatten(&w.log);
        let header = &w.conversation;
        let keys = 5 + blocks.len();
        let args = 10 + 2 * blocks.len() + 2 * results.len() + 4 * changed.len();
        cmd.arg(keys).arg(args);
        for part in ["h", "m", "i", "r", "rid"] {
            cmd.arg(self.key(id, part));
        }
        for &b in blocks {
            cmd.arg(self.block_key(&w.blocks[b].organization));
        }
        cmd.arg(w.base.map(|b| b.to_string()).unwrap_or_default())
            .arg(w.offset);
        json_arg(cmd, header).map_err(corrupt)?;
        cmd.arg(super::encode_outbox(id, &w.outbox)?)
            .arg(if replace { "1" } else { "0" })
            .arg(results.len())
            .arg(changed.len())
            .arg(w.partition)
            .arg(blocks.len())
            .arg(w.committed);
        for &b in blocks {
            let block = &w.blocks[b];
            cmd.arg(score(block.since)).arg(&block.ip);
        }
        for r in results {
            cmd.arg(&r.message);
            json_arg(cmd, r).map_err(corrupt)?;
        }
        for m in &changed {
            cmd.arg(m.index);
            json_arg(cmd, m).map_err(corrupt)?;
        }
        for m in &changed {
            cmd.arg(&m.id).arg(m.index);
        }
        Ok(())
    }
}

/// `value`'s JSON as the command's next argument, written in place: serialising to a string
/// first copied every header and message once more.
fn json_arg(cmd: &mut Cmd, value: &impl serde::Serialize) -> serde_json::Result<()> {
    use redis::RedisWrite;
    serde_json::to_writer(cmd.writer_for_next_arg(), value)
}

/// The script's answer for one write. A failure on data the write cannot work with (a key of
/// the wrong type, a field that is not a number) is that conversation's: it is poison, and its
/// partitions halt. Any other (a command the ACL refuses, a key a Cluster node no longer
/// serves, out of memory) is the batch's: it would fail every conversation alike, and the batch
/// is retried.
pub(super) fn outcome(value: &Value, conversation: &str) -> Result<WriteOutcome, StoreError> {
    let text = match value {
        Value::Int(1) => return Ok(WriteOutcome::Written),
        Value::Int(_) => return Ok(WriteOutcome::Stale),
        Value::BulkString(b) => String::from_utf8_lossy(b).into_owned(),
        Value::SimpleString(s) => s.clone(),
        other => format!("{other:?}"),
    };
    let data = ["WRONGTYPE", "attempt to", "bad argument"]
        .iter()
        .any(|d| text.contains(d));
    if data {
        Err(StoreError::Script {
            conversation: conversation.to_string(),
            detail: text,
        })
    } else {
        Err(StoreError::Refused {
            conversation: conversation.to_string(),
            detail: text,
        })
    }
}
