//! Conversation state (SPEC section 3): the small header that every message reads and writes,
//! and the stored messages of the log, which are read and written one at a time.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use crate::core::message::{ContactInfo, Role};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    Closed,
    Queued,
    Active,
    Archived,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Participant {
    pub user: String,
    pub active: bool,
    pub accepted: bool,
    pub inbox: bool,
    pub follow: bool,
}

impl Participant {
    pub fn new(user: &str) -> Self {
        Participant {
            user: user.to_string(),
            active: false,
            accepted: false,
            inbox: false,
            follow: false,
        }
    }

    /// A participant with no flag set is removed from the conversation.
    pub fn has_any_flag(&self) -> bool {
        self.active || self.accepted || self.inbox || self.follow
    }
}

/// The platform's touchpoint shape: present means available.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Touchpoint {
    pub services: Vec<String>,
    pub selected: bool,
}

/// A form activated in a category slot, with the field values set so far.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ActiveForm {
    pub form: String,
    pub name: String,
    pub category_index: u8,
    pub fields: BTreeMap<String, String>,
}

/// A form processed by `/send`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct FormResult {
    pub form: String,
    pub name: String,
    pub category_index: u8,
    pub fields: BTreeMap<String, String>,
    /// The `results` message `/send` added to the log for this form.
    pub message: String,
    pub sent_at: String,
}

/// The contact's last chat message, kept in the header so that routing keywords and the
/// "replied to" rule never need the log.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LastContact {
    pub message: String,
    pub text: String,
    pub replied: bool,
}

/// An `/import` this conversation (the target) has asked its origin for and not yet received.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PendingImport {
    pub command: String,
    pub origin: String,
    /// The `/import` command's `createdAt`, which its timeout counts from, and its sender, who
    /// signs the cancel sent when it times out. Absent in a pending import written before
    /// imports could time out: such an import never does.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub started: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sender: Option<String>,
    /// The parts of a transfer too large for one record that have arrived so far; absent until
    /// the first part arrives (and for a transfer that travels as one record).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub transfer: Option<PartialTransfer>,
}

/// A transfer arriving in several records (see `core::command::import`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PartialTransfer {
    /// How many parts the transfer has.
    pub parts: u32,
    /// The parts received, each once, in part order.
    pub received: Vec<TransferPart>,
}

/// One part of a transfer: its number (from 1) and the copies it carried.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TransferPart {
    pub part: u32,
    pub messages: Vec<StoredMessage>,
}

/// What an origin that archived itself for an `/import` needs to undo it, should the target
/// time out and cancel: the request it answered and what the archiving changed.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Transferred {
    pub target: String,
    /// The `/import` command's ID.
    pub command: String,
    pub name: String,
    pub status: Status,
    /// The queued period's channels, which the archiving dequeued.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub channels: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub channels_offline: Vec<String>,
}

/// Everything about a conversation except its message log.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Conversation {
    pub id: String,
    pub organization: String,
    pub created_at: String,
    pub updated_at: String,
    pub version: u64,
    pub name: String,
    pub status: Status,
    #[serde(rename = "type")]
    pub kind: String,
    pub category_index: Option<u8>,
    pub category: Option<String>,
    pub context: Option<String>,
    pub touchpoint: Option<String>,
    pub touchpoints: BTreeMap<String, Touchpoint>,
    pub language: Option<String>,
    pub meta: Map<String, Value>,
    pub participants: Vec<Participant>,
    pub channels: Vec<String>,
    pub channels_offline: Vec<String>,
    pub forms: Vec<ActiveForm>,
    pub results: Vec<FormResult>,
    pub contact: ContactInfo,
    pub blocked: bool,
    /// How many messages the log holds; the next stored message gets this index.
    pub message_count: u64,
    pub last_contact: Option<LastContact>,
    /// Web1on1's `/leave` closes only if the conversation was accepted since it was last queued.
    pub accepted_since_queued: bool,
    pub pending_import: Option<PendingImport>,
    /// Set when this conversation archived itself as the origin of an `/import`; absent
    /// otherwise, and then left out of the document.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub transferred: Option<Transferred>,
}

impl Conversation {
    /// A conversation as its first message creates it, before that message is applied.
    pub fn new(id: &str, organization: &str, kind: &str, created_at: &str) -> Self {
        Conversation {
            id: id.to_string(),
            organization: organization.to_string(),
            created_at: created_at.to_string(),
            updated_at: created_at.to_string(),
            version: 0,
            name: crate::core::names::fantasy_name(id),
            status: Status::Closed,
            kind: kind.to_string(),
            category_index: None,
            category: None,
            context: None,
            touchpoint: None,
            touchpoints: BTreeMap::new(),
            language: None,
            meta: Map::new(),
            participants: Vec::new(),
            channels: Vec::new(),
            channels_offline: Vec::new(),
            forms: Vec::new(),
            results: Vec::new(),
            contact: ContactInfo::default(),
            blocked: false,
            message_count: 0,
            last_contact: None,
            accepted_since_queued: false,
            pending_import: None,
            transferred: None,
        }
    }

    pub fn is_team(&self) -> bool {
        self.kind != "contact"
    }

    pub fn participant(&self, user: &str) -> Option<&Participant> {
        self.participants.iter().find(|p| p.user == user)
    }

    /// The contact's last message was replied to (a conversation with none counts as replied).
    pub fn replied(&self) -> bool {
        self.last_contact.as_ref().is_none_or(|c| c.replied)
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Comment {
    pub user: String,
    pub message: String,
    pub text: String,
}

/// One message of the log.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct StoredMessage {
    pub id: String,
    pub index: u64,
    #[serde(rename = "type")]
    pub kind: String,
    pub role: Role,
    pub sender: Option<String>,
    pub text: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user: Option<String>,
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub is_backchannel: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub touchpoint: Option<String>,
    pub meta: Map<String, Value>,
    pub created_at: String,
    pub likes: Vec<String>,
    pub comments: Vec<Comment>,
    pub version: u64,
}

impl StoredMessage {
    pub fn from_message(m: &crate::core::message::Message, index: u64) -> Self {
        StoredMessage {
            id: m.id.clone(),
            index,
            kind: m.type_name.clone(),
            role: m.role,
            sender: m.sender.clone(),
            text: m.text.clone(),
            user: m.user.clone(),
            is_backchannel: m.is_backchannel,
            touchpoint: m.touchpoint.clone(),
            meta: m.meta.clone(),
            created_at: m.created_at.clone(),
            likes: Vec::new(),
            comments: Vec::new(),
            version: 0,
        }
    }

    /// An empty message whose fields [`StoredMessage::fill_from`] will move in.
    pub fn placeholder() -> Self {
        StoredMessage {
            id: String::new(),
            index: 0,
            kind: String::new(),
            role: Role::Bot,
            sender: None,
            text: String::new(),
            user: None,
            is_backchannel: false,
            touchpoint: None,
            meta: Map::new(),
            created_at: String::new(),
            likes: Vec::new(),
            comments: Vec::new(),
            version: 0,
        }
    }

    /// Moves the message's stored fields in, keeping `index`, `likes`, `comments`, `version`.
    pub fn fill_from(&mut self, m: crate::core::message::Message) {
        self.id = m.id;
        self.kind = m.type_name;
        self.role = m.role;
        self.sender = m.sender;
        self.text = m.text;
        self.user = m.user;
        self.is_backchannel = m.is_backchannel;
        self.touchpoint = m.touchpoint;
        self.meta = m.meta;
        self.created_at = m.created_at;
    }

    /// A contact chat message: the kind the "replied to" rule is about.
    pub fn is_contact_chat(&self) -> bool {
        self.role == Role::Contact && self.kind == "chat"
    }

    /// A message that answers the contact: agent chat, not backchannel.
    pub fn is_reply(&self) -> bool {
        self.role == Role::Agent && self.kind == "chat" && !self.is_backchannel
    }
}
