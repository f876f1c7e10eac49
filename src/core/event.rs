//! The output records (SPEC section 1): CloudEvents 1.0 in structured JSON mode, and the topics
//! they go to.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::core::code::Code;
use crate::core::message::{DeadLetter, DeadReason};

/// Where an output record goes. Names are configuration; these are the roles.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub enum Topic {
    /// The input topic itself: the `/import` relay.
    Input,
    ChannelNotifications,
    ChannelDequeues,
    InboxNotifications,
    EmailNotifications,
    MessageDeliveries,
    CommandResults,
    BotCommands,
    DeadLetters,
}

impl Topic {
    pub const ALL: [Topic; 9] = [
        Topic::Input,
        Topic::ChannelNotifications,
        Topic::ChannelDequeues,
        Topic::InboxNotifications,
        Topic::EmailNotifications,
        Topic::MessageDeliveries,
        Topic::CommandResults,
        Topic::BotCommands,
        Topic::DeadLetters,
    ];

    /// The default topic name (SPEC section 1).
    pub fn default_name(self) -> &'static str {
        match self {
            Topic::Input => "conversation.messages",
            Topic::ChannelNotifications => "channel.notifications",
            Topic::ChannelDequeues => "channel.dequeues",
            Topic::InboxNotifications => "inbox.notifications",
            Topic::EmailNotifications => "email.notifications",
            Topic::MessageDeliveries => "message.deliveries",
            Topic::CommandResults => "command.results",
            Topic::BotCommands => "bot.commands",
            Topic::DeadLetters => "conversation.messages.dlq",
        }
    }
}

pub const SPEC_VERSION: &str = "1.0";
pub const SOURCE: &str = "/switchboard";
pub const CONTENT_TYPE: &str = "application/json";

/// The `$id` of the JSON Schema of event type `$t` in `schemas/events/`, which is what
/// `dataschema` names (tests/schemas.rs checks that they agree).
macro_rules! dataschema {
    ($t:literal) => {
        concat!(
            "https://switchboard.example/schemas/events/",
            $t,
            ".schema.json"
        )
    };
}

/// One CloudEvent.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct CloudEvent {
    pub specversion: &'static str,
    pub id: String,
    pub source: &'static str,
    #[serde(rename = "type")]
    pub kind: &'static str,
    /// The causing message's `createdAt`; absent only when the record had no valid one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub time: Option<String>,
    /// The conversation ID; absent when there is none (a dead letter without a key), since
    /// CloudEvents forbids an empty `subject`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub subject: Option<String>,
    pub datacontenttype: &'static str,
    /// The `$id` of the type's JSON Schema.
    pub dataschema: &'static str,
    pub data: EventData,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum NotifyReason {
    Notify,
    Message,
    Leave,
    Mention,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum DequeueReason {
    Accept,
    Block,
    Leave,
    Archive,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum InboxReason {
    Assign,
    Follow,
    Mention,
    Team,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Outcome {
    Applied,
    Ignored,
    Rejected,
}

/// The `data` of each event type.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(untagged)]
pub enum EventData {
    ChannelNotification {
        conversation: String,
        organization: String,
        channel: String,
        reason: NotifyReason,
    },
    ChannelDequeue {
        conversation: String,
        channel: String,
        reason: DequeueReason,
        #[serde(skip_serializing_if = "Option::is_none")]
        user: Option<String>,
    },
    InboxNotification {
        conversation: String,
        user: String,
        reason: InboxReason,
    },
    EmailNotification {
        conversation: String,
        to: Vec<String>,
        form: String,
        #[serde(rename = "formName")]
        form_name: String,
        fields: BTreeMap<String, String>,
    },
    MessageDelivery {
        conversation: String,
        message: String,
        touchpoint: String,
        text: String,
        #[serde(skip_serializing_if = "Option::is_none")]
        sender: Option<String>,
    },
    CommandResult {
        conversation: String,
        message: Option<String>,
        outcome: Outcome,
        #[serde(skip_serializing_if = "Option::is_none")]
        code: Option<Code>,
        #[serde(skip_serializing_if = "Option::is_none")]
        detail: Option<String>,
        version: u64,
    },
    BotCommand {
        conversation: String,
        message: String,
        text: String,
        #[serde(skip_serializing_if = "Option::is_none")]
        sender: Option<String>,
    },
    DeadLetter {
        reason: DeadReason,
        detail: String,
        #[serde(skip_serializing_if = "Option::is_none")]
        key: Option<String>,
        #[serde(skip_serializing_if = "Option::is_none")]
        payload: Option<String>,
        #[serde(rename = "payloadBase64", skip_serializing_if = "Option::is_none")]
        payload_base64: Option<String>,
    },
}

impl EventData {
    /// The CloudEvents `type` and the topic of this data.
    pub fn kind(&self) -> (&'static str, Topic) {
        let (kind, topic, _) = self.described();
        (kind, topic)
    }

    /// The `dataschema` of this data: its type's JSON Schema.
    pub fn dataschema(&self) -> &'static str {
        self.described().2
    }

    /// `type`, topic and `dataschema`, written once per type so that they cannot disagree.
    fn described(&self) -> (&'static str, Topic, &'static str) {
        macro_rules! of {
            ($t:literal, $topic:expr) => {
                ($t, $topic, dataschema!($t))
            };
        }
        match self {
            EventData::ChannelNotification { .. } => {
                of!("chat.channel.notification", Topic::ChannelNotifications)
            }
            EventData::ChannelDequeue { .. } => {
                of!("chat.channel.dequeue", Topic::ChannelDequeues)
            }
            EventData::InboxNotification { .. } => {
                of!("chat.inbox.notification", Topic::InboxNotifications)
            }
            EventData::EmailNotification { .. } => {
                of!("chat.email.notification", Topic::EmailNotifications)
            }
            EventData::MessageDelivery { .. } => {
                of!("chat.message.delivery", Topic::MessageDeliveries)
            }
            EventData::CommandResult { .. } => of!("chat.command.result", Topic::CommandResults),
            EventData::BotCommand { .. } => of!("chat.bot.command", Topic::BotCommands),
            EventData::DeadLetter { .. } => of!("chat.message.deadletter", Topic::DeadLetters),
        }
    }
}

/// `<cause>:<position>`, without the formatting machinery: this runs for every event.
fn event_id(cause: &str, position: usize) -> String {
    let mut digits = itoa::Buffer::new();
    let digits = digits.format(position);
    let mut id = String::with_capacity(cause.len() + 1 + digits.len());
    id.push_str(cause);
    id.push(':');
    id.push_str(digits);
    id
}

/// What a record's value is.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(untagged)]
pub enum Payload {
    Event(Box<CloudEvent>),
    /// A message addressed to the input topic (the `/import` relay), in the input format.
    Message(Value),
}

/// One output record.
#[derive(Debug, Clone, PartialEq)]
pub struct Output {
    pub topic: Topic,
    pub key: String,
    pub value: Payload,
}

impl Output {
    /// An event; its ID is `<cause>:<position>`, so a replay yields the same IDs and consumers can
    /// de-duplicate on them.
    pub fn event(
        cause: &str,
        position: usize,
        time: Option<&str>,
        subject: &str,
        data: EventData,
    ) -> Self {
        let (kind, topic, dataschema) = data.described();
        Output {
            topic,
            key: subject.to_string(),
            value: Payload::Event(Box::new(CloudEvent {
                specversion: SPEC_VERSION,
                id: event_id(cause, position),
                source: SOURCE,
                kind,
                time: time.map(str::to_string),
                subject: (!subject.is_empty()).then(|| subject.to_string()),
                datacontenttype: CONTENT_TYPE,
                dataschema,
                data,
            })),
        }
    }

    pub fn event_ref(&self) -> Option<&CloudEvent> {
        match &self.value {
            Payload::Event(e) => Some(e),
            Payload::Message(_) => None,
        }
    }

    /// The dead letter for an unreadable record. `locator` names the record in its source
    /// (`partition/offset`, or a line number) and makes the event ID; `time` is the record's
    /// broker timestamp where it has one.
    pub fn dead_letter(dead: &DeadLetter, locator: &str, time: Option<&str>) -> Self {
        let key = dead
            .key
            .as_ref()
            .map(|k| String::from_utf8_lossy(k).into_owned());
        let (payload, payload_base64) = match std::str::from_utf8(&dead.payload) {
            Ok(text) => (Some(text.to_string()), None),
            Err(_) => {
                use base64::Engine;
                (
                    None,
                    Some(base64::engine::general_purpose::STANDARD.encode(&dead.payload)),
                )
            }
        };
        let mut out = Output::event(
            &format!("dlq:{locator}"),
            0,
            time,
            key.as_deref().unwrap_or(""),
            EventData::DeadLetter {
                reason: dead.reason,
                detail: dead.detail.clone(),
                key: key.clone(),
                payload,
                payload_base64,
            },
        );
        out.key = key.unwrap_or_default();
        out
    }
}
