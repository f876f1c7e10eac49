//! What to generate, and the IDs of everything generated: the world's shape in numbers.

/// What to generate.
#[derive(Debug, Clone, PartialEq)]
pub struct Model {
    pub conversations: u64,
    /// Total messages; `None`: one episode per conversation.
    pub messages: Option<u64>,
    /// Messages per second of message time (`createdAt`).
    pub rate: f64,
    pub seed: u64,
    /// Conversations open at the same time.
    pub concurrency: usize,
    /// `createdAt` of the first message, in microseconds since the epoch.
    pub start_micros: i64,
    /// The share of all messages (0 to 1) that conversation 0 carries, the rest spread over the
    /// others as usual: a hot conversation. 0: none. Needs a message total.
    pub hot: f64,
}

impl Model {
    /// Organizations in the directory: one per thousand conversations, between 1 and 100.
    pub fn organizations(&self) -> u64 {
        (self.conversations / 1000).clamp(1, 100)
    }
}

pub(super) const AGENTS_PER_ORG: u64 = 5;
pub(super) const CHANNELS_PER_ORG: u64 = 3;

/// IDs are ObjectIds whose first byte says what they are, then 3 bytes of the seed, so traffic
/// of different seeds never collides, then a counter.
fn object_id(kind: u8, seed: u64, n: u64) -> String {
    format!("{kind:02x}{:06x}{n:016x}", seed & 0xff_ffff)
}

pub fn organization_id(seed: u64, n: u64) -> String {
    object_id(0xa0, seed, n)
}
pub(super) fn channel_id(seed: u64, org: u64, n: u64) -> String {
    object_id(0xc0, seed, org * CHANNELS_PER_ORG + n)
}
pub(super) fn agent_id(seed: u64, org: u64, n: u64) -> String {
    object_id(0xe0, seed, org * AGENTS_PER_ORG + n)
}
pub(super) fn bot_id(seed: u64, org: u64) -> String {
    object_id(0xb0, seed, org)
}
pub(super) fn form_id(seed: u64, org: u64) -> String {
    object_id(0xf0, seed, org)
}
pub fn conversation_id(seed: u64, n: u64) -> String {
    object_id(0xd0, seed, n)
}
pub(super) fn message_id(seed: u64, conversation: u64, n: u64) -> String {
    // 40 bits of conversation, 24 of message counter.
    object_id(0x10, seed, (conversation << 24) | (n & 0xff_ffff))
}
