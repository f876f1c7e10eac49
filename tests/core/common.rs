//! A harness over the pure core: the example directory, message builders, and accessors for
//! what a message produced.
#![allow(dead_code)]

use std::collections::VecDeque;

use serde_json::{json, Value};
use switchboard::core::directory::MemoryDirectory;
use switchboard::core::event::Topic;
use switchboard::core::state::{Conversation, StoredMessage};
use switchboard::core::Dialect;
use switchboard::tools::simulate::{output_line, Simulator};

pub const PARENT: &str = "0000000000000000000000a1";
pub const ORG: &str = "0000000000000000000000a2";
pub const OTHER_ORG: &str = "0000000000000000000000a3";
pub const C1: &str = "0000000000000000000000c1"; // a2, online
pub const C2: &str = "0000000000000000000000c2"; // a2, online
pub const C3: &str = "0000000000000000000000c3"; // a2, offline
pub const C4: &str = "0000000000000000000000c4"; // a1, online
pub const C5: &str = "0000000000000000000000c5"; // a3, online
pub const ADA: &str = "0000000000000000000000e1";
pub const BEN: &str = "0000000000000000000000e2";
pub const GINA: &str = "0000000000000000000000e3"; // of the parent organization
pub const OLAF: &str = "0000000000000000000000e9"; // of an unrelated organization
pub const BOT: &str = "0000000000000000000000b1";
pub const F1: &str = "0000000000000000000000f1"; // Trade-in: make*, model*, mileage
pub const F2: &str = "0000000000000000000000f2"; // Test drive: date*
pub const NOBODY: &str = "0000000000000000000000ee";

pub fn conv(n: u32) -> String {
    format!("{n:024x}")
}

pub fn directory_yaml() -> String {
    std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/examples/directory.yaml"
    ))
    .unwrap()
}

pub fn directory() -> MemoryDirectory {
    MemoryDirectory::from_yaml(&directory_yaml()).unwrap()
}

/// The example directory with `n` more agents of the organization.
pub fn directory_with_agents(n: usize) -> (MemoryDirectory, Vec<String>) {
    let mut file: switchboard::core::directory::DirectoryFile =
        serde_yaml_ng::from_str(&directory_yaml()).unwrap();
    let ids: Vec<String> = (0..n).map(|i| format!("{:024x}", 0xa9_0000 + i)).collect();
    for id in &ids {
        file.users.push(switchboard::core::directory::User {
            id: id.clone(),
            organization: ORG.into(),
            name: format!("agent {id}"),
            email: None,
        });
    }
    (MemoryDirectory::from_file(file).unwrap(), ids)
}

/// Everything one input message produced (relay follow-ups included).
#[derive(Debug, Clone)]
pub struct Out {
    pub id: String,
    pub records: Vec<Value>,
}

impl Out {
    /// The `data` of records on `topic`.
    pub fn on(&self, topic: Topic) -> Vec<Value> {
        self.records
            .iter()
            .filter(|r| r["topic"] == topic.default_name())
            .map(|r| r["value"]["data"].clone())
            .collect()
    }

    /// The one result this message got.
    pub fn result(&self) -> Value {
        let results: Vec<Value> = self
            .on(Topic::CommandResults)
            .into_iter()
            .filter(|d| d["message"] == self.id.as_str())
            .collect();
        assert_eq!(
            results.len(),
            1,
            "expected one result for {}, got {:#?}",
            self.id,
            self.records
        );
        results[0].clone()
    }

    pub fn outcome(&self) -> String {
        self.result()["outcome"].as_str().unwrap().to_string()
    }

    pub fn code(&self) -> Option<String> {
        self.result()["code"].as_str().map(str::to_string)
    }

    #[track_caller]
    pub fn applied(&self) -> &Self {
        assert_eq!(self.outcome(), "applied", "{:#?}", self.result());
        self
    }

    #[track_caller]
    pub fn rejected(&self, code: &str) -> &Self {
        assert_eq!(
            (self.outcome().as_str(), self.code().as_deref()),
            ("rejected", Some(code)),
            "{:#?}",
            self.result()
        );
        self
    }

    #[track_caller]
    pub fn ignored(&self, code: &str) -> &Self {
        assert_eq!(
            (self.outcome().as_str(), self.code().as_deref()),
            ("ignored", Some(code)),
            "{:#?}",
            self.result()
        );
        self
    }

    /// `(channel, reason)` of every channel notification.
    pub fn notified(&self) -> Vec<(String, String)> {
        pairs(&self.on(Topic::ChannelNotifications), "channel", "reason")
    }

    pub fn dequeued(&self) -> Vec<(String, String)> {
        pairs(&self.on(Topic::ChannelDequeues), "channel", "reason")
    }

    /// `(user, reason)` of every inbox notification.
    pub fn inboxed(&self) -> Vec<(String, String)> {
        pairs(&self.on(Topic::InboxNotifications), "user", "reason")
    }
}

fn pairs(data: &[Value], a: &str, b: &str) -> Vec<(String, String)> {
    data.iter()
        .map(|d| {
            (
                d[a].as_str().unwrap().to_string(),
                d[b].as_str().unwrap().to_string(),
            )
        })
        .collect()
}

pub fn pair(a: &str, b: &str) -> (String, String) {
    (a.to_string(), b.to_string())
}

pub struct H {
    pub sim: Simulator,
    n: u64,
}

impl Default for H {
    fn default() -> Self {
        Self::new()
    }
}

impl H {
    pub fn new() -> Self {
        Self::with_dialect(Dialect::Web1on1)
    }

    pub fn with_dialect(dialect: Dialect) -> Self {
        Self::with_directory(directory(), dialect)
    }

    pub fn with_directory(directory: MemoryDirectory, dialect: Dialect) -> Self {
        H {
            sim: Simulator::new(directory, dialect),
            n: 0,
        }
    }

    /// The example directory, with relay records of at most `bytes`.
    pub fn with_max_relay_bytes(bytes: usize) -> Self {
        H {
            sim: Simulator::new(directory(), Dialect::Web1on1).with_max_relay_bytes(bytes),
            n: 0,
        }
    }

    /// The example directory in `dialect`, failing an `/import` pending for more than `ms`.
    pub fn with_import_timeout_ms(dialect: Dialect, ms: u64) -> Self {
        H {
            sim: Simulator::new(directory(), dialect).with_import_timeout_ms(ms),
            n: 0,
        }
    }

    /// Sends one message, filling in `id` and `createdAt` (one second apart) when absent, then
    /// delivers any relay records it causes, as the stream would.
    pub fn send(&mut self, mut message: Value) -> Out {
        self.n += 1;
        let obj = message.as_object_mut().unwrap();
        obj.entry("id")
            .or_insert_with(|| json!(format!("{:024x}", 0x1000_0000 + self.n)));
        obj.entry("createdAt")
            .or_insert_with(|| json!(time(self.n)));
        let id = obj["id"].as_str().unwrap_or_default().to_string();
        let mut records = Vec::new();
        let mut queue = VecDeque::from([serde_json::to_vec(&message).unwrap()]);
        while let Some(payload) = queue.pop_front() {
            for output in self.sim.process(&payload, &format!("test-{}", self.n)) {
                if output.topic == Topic::Input {
                    queue.push_back(serde_json::to_vec(&output.value).unwrap());
                }
                records.push(serde_json::from_str(&output_line(&output)).unwrap());
            }
        }
        Out { id, records }
    }

    /// A contact chat; creates the conversation (on the web touchpoint) if needed.
    pub fn contact(&mut self, conv: &str, text: &str) -> Out {
        self.send(
            json!({"conversation": conv, "type": "chat", "role": "contact", "text": text,
            "organization": ORG, "touchpoint": "web", "contact": {"ip": "203.0.113.9"}}),
        )
    }

    pub fn agent_chat(&mut self, conv: &str, sender: &str, text: &str) -> Out {
        self.send(json!({"conversation": conv, "type": "chat", "role": "agent", "sender": sender, "text": text}))
    }

    pub fn cmd(&mut self, conv: &str, sender: &str, text: &str) -> Out {
        self.send(json!({"conversation": conv, "type": "command", "role": "agent", "sender": sender, "text": text}))
    }

    pub fn cmd_meta(&mut self, conv: &str, sender: &str, text: &str, meta: Value) -> Out {
        self.send(
            json!({"conversation": conv, "type": "command", "role": "agent", "sender": sender,
            "text": text, "meta": meta}),
        )
    }

    pub fn cmd_user(&mut self, conv: &str, sender: &str, text: &str, user: &str) -> Out {
        self.send(
            json!({"conversation": conv, "type": "command", "role": "agent", "sender": sender,
            "text": text, "user": user}),
        )
    }

    pub fn bot_cmd(&mut self, conv: &str, text: &str, meta: Value) -> Out {
        self.send(
            json!({"conversation": conv, "type": "command", "role": "bot", "sender": BOT,
            "text": text, "meta": meta}),
        )
    }

    pub fn state(&self, conv: &str) -> Conversation {
        self.sim
            .conversation(conv)
            .expect("conversation exists")
            .0
            .clone()
    }

    pub fn exists(&self, conv: &str) -> bool {
        self.sim.conversation(conv).is_some()
    }

    pub fn messages(&self, conv: &str) -> Vec<StoredMessage> {
        self.sim
            .conversation(conv)
            .expect("conversation exists")
            .1
            .to_vec()
    }

    /// A contact conversation that is open (queued) with the catch-all channels notified.
    pub fn open(&mut self, n: u32) -> String {
        let c = conv(n);
        self.contact(&c, "hello").applied();
        c
    }

    /// A conversation accepted by `agent`, whose contact's message was replied to.
    pub fn accepted(&mut self, n: u32, agent: &str) -> String {
        let c = self.open(n);
        self.cmd(&c, agent, "/accept").applied();
        self.agent_chat(&c, agent, "hi, how can I help?").applied();
        c
    }
}

pub fn time(n: u64) -> String {
    chrono::DateTime::from_timestamp(1_714_554_000 + n as i64, 0)
        .unwrap()
        .to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
}
