//! What `switchboard rebuild` needs of the store beyond the processor's reads and writes.

use redis::Value;

use super::RedisStore;
use crate::runtime::store::StoreError;

impl RedisStore {
    /// Deletes these conversations altogether (`switchboard rebuild`).
    pub async fn forget(&self, conversations: &[String]) -> Result<(), StoreError> {
        for chunk in conversations.chunks(500) {
            let commands = chunk
                .iter()
                .map(|id| {
                    let keys: Vec<String> = ["h", "m", "i", "r", "rid"]
                        .iter()
                        .map(|part| self.key(id, part))
                        .collect();
                    let mut cmd = redis::cmd("DEL");
                    cmd.arg(&keys);
                    (keys[0].clone(), cmd)
                })
                .collect();
            let _: Vec<Value> = self.conn.query_each(commands).await?;
        }
        Ok(())
    }

    /// The partition each of these conversations is stored with (`None`: absent, or stored
    /// before partitions were), read without parsing anything else: a conversation whose
    /// document is damaged still answers.
    pub async fn stored_partitions(
        &self,
        conversations: &[String],
    ) -> Result<Vec<Option<i32>>, StoreError> {
        let commands = conversations
            .iter()
            .map(|id| {
                let key = self.key(id, "h");
                let mut cmd = redis::cmd("HGET");
                cmd.arg(&key).arg("partition");
                (key, cmd)
            })
            .collect();
        Ok(self.conn.query_each(commands).await?)
    }

    /// Deletes a partition's watermark (`switchboard rebuild`, before applying it again).
    pub async fn forget_watermark(&self, topic: &str, partition: i32) -> Result<(), StoreError> {
        let commands = self
            .marks_keys(topic)
            .into_iter()
            .map(|key| {
                let mut cmd = redis::cmd("HDEL");
                cmd.arg(&key)
                    .arg(partition)
                    .arg(format!("{partition}:committed"));
                (key, cmd)
            })
            .collect();
        let _: Vec<Value> = self.conn.query_each(commands).await?;
        Ok(())
    }
}
