//! The input message (SPEC section 2): decoding a record into a typed [`Message`], or into the
//! reason it cannot be one.
//!
//! Two kinds of failure are kept apart on purpose. A record that cannot be read at all (not
//! UTF-8, not JSON, not an object, no key, key ≠ `conversation`) is a [`DeadLetter`]: it cannot be
//! attributed to a conversation with confidence, so it goes to the DLQ. A record that can be read
//! but breaks a rule is [`Decoded::Invalid`]: it belongs to a known conversation and gets a
//! `rejected` result there.

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use crate::core::code::Code;
use crate::core::id::is_object_id;

/// Who posted a message.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// The consumer; the input may also say `consumer`.
    Contact,
    Agent,
    Bot,
}

/// What a message is, as far as the core cares.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Chat,
    Command,
    Form,
    Field,
    Mention,
    /// Relay step 1 → 2 of `/import`, addressed to the origin conversation.
    ImportRequest,
    /// Relay step 2 → 3 of `/import`, addressed back to the target conversation.
    ImportTransfer,
    /// Back to the origin when an `/import` timed out at its target, to undo the origin's part.
    ImportCancel,
    /// Any other platform type: stored, otherwise inert.
    Other,
}

impl Kind {
    fn of(type_name: &str) -> Kind {
        match type_name {
            "chat" => Kind::Chat,
            "command" => Kind::Command,
            "form" => Kind::Form,
            "field" => Kind::Field,
            "mention" => Kind::Mention,
            IMPORT_REQUEST => Kind::ImportRequest,
            IMPORT_TRANSFER => Kind::ImportTransfer,
            IMPORT_CANCEL => Kind::ImportCancel,
            _ => Kind::Other,
        }
    }
}

/// The `type`s of the `/import` relay records, whose roles [`Kind`] describes.
pub const IMPORT_REQUEST: &str = "import.request";
pub const IMPORT_TRANSFER: &str = "import.transfer";
pub const IMPORT_CANCEL: &str = "import.cancel";

/// The contact details a contact message may carry.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ContactInfo {
    #[serde(default)]
    pub ip: Option<String>,
    #[serde(default)]
    pub email: Option<String>,
    #[serde(default)]
    pub phone: Option<String>,
}

/// A validated input message.
#[derive(Debug, Clone, PartialEq)]
pub struct Message {
    pub id: String,
    pub conversation: String,
    pub kind: Kind,
    /// The `type` as given, kept so that platform types round-trip into the log.
    pub type_name: String,
    pub role: Role,
    pub sender: Option<String>,
    pub is_backchannel: bool,
    pub text: String,
    pub user: Option<String>,
    pub meta: Map<String, Value>,
    pub created_at: String,
    /// `created_at` as nanoseconds since the epoch, for ordering across time zones.
    pub created_at_nanos: i64,
    pub organization: Option<String>,
    pub conversation_type: Option<String>,
    pub touchpoint: Option<String>,
    pub contact: Option<ContactInfo>,
}

/// Why a record went to the DLQ.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum DeadReason {
    NotUtf8,
    NotJson,
    NotObject,
    NoKey,
    KeyMismatch,
    TooLarge,
    /// On another partition than its conversation's (the runtime's finding, not the decoder's).
    Misrouted,
}

/// A record that cannot be read as a message at all.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeadLetter {
    pub reason: DeadReason,
    pub detail: String,
    pub key: Option<Vec<u8>>,
    pub payload: Vec<u8>,
}

/// What decoding a record gives.
#[derive(Debug, Clone, PartialEq)]
#[allow(clippy::large_enum_variant)]
pub enum Decoded {
    Message(Message),
    Invalid(Invalid),
    Dead(DeadLetter),
}

/// A record readable and attributable to `conversation`, but breaking a rule of section 2: it
/// gets a rejected result (`transition::invalid`).
#[derive(Debug, Clone, PartialEq)]
pub struct Invalid {
    pub conversation: String,
    pub message: Option<String>,
    pub code: Code,
    pub detail: String,
    /// `createdAt`, when the record has a valid one.
    pub time: Option<String>,
}

impl Decoded {
    /// The conversation the record belongs to; `None` for a dead letter.
    pub fn conversation(&self) -> Option<&String> {
        match self {
            Decoded::Message(m) => Some(&m.conversation),
            Decoded::Invalid(i) => Some(&i.conversation),
            Decoded::Dead(_) => None,
        }
    }
}

/// Where a record's key comes from.
#[derive(Debug, Clone, Copy)]
pub enum KeySource<'a> {
    /// The Kafka record key, which must equal `conversation`.
    Record(Option<&'a [u8]>),
    /// A JSON-lines trace has no keys: the key is `conversation` itself (SPEC section 8).
    FromConversation,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Raw {
    id: Option<String>,
    conversation: Option<String>,
    #[serde(rename = "type")]
    kind: Option<String>,
    role: Option<String>,
    sender: Option<String>,
    is_backchannel: Option<bool>,
    text: Option<String>,
    user: Option<String>,
    meta: Option<Map<String, Value>>,
    created_at: Option<String>,
    organization: Option<String>,
    conversation_type: Option<String>,
    touchpoint: Option<String>,
    contact: Option<ContactInfo>,
}

/// The fields of [`Raw`] and the JSON type each must have, to name the culprit when the fast
/// typed parse fails.
const FIELD_TYPES: [(&str, &str); 14] = [
    ("id", "string"),
    ("conversation", "string"),
    ("type", "string"),
    ("role", "string"),
    ("sender", "string"),
    ("isBackchannel", "boolean"),
    ("text", "string"),
    ("user", "string"),
    ("meta", "object"),
    ("createdAt", "string"),
    ("organization", "string"),
    ("conversationType", "string"),
    ("touchpoint", "string"),
    ("contact", "object"),
];

/// The conversation types a creating message may give.
pub const CONVERSATION_TYPES: [&str; 4] = ["contact", "agent", "bot", "system"];

/// Decodes one record.
pub fn decode(key: KeySource<'_>, payload: &[u8]) -> Decoded {
    let dead = |reason, detail: String| {
        let key = match key {
            KeySource::Record(k) => k.map(<[u8]>::to_vec),
            KeySource::FromConversation => None,
        };
        Decoded::Dead(DeadLetter {
            reason,
            detail,
            key,
            payload: payload.to_vec(),
        })
    };
    // One UTF-8 pass over the whole payload (word-at-a-time for ASCII) is cheaper than
    // serde_json's slice reader checking every string on its own; `from_str` then trusts it.
    let text = match std::str::from_utf8(payload) {
        Ok(t) => t,
        Err(e) => return dead(DeadReason::NotUtf8, format!("payload is not UTF-8: {e}")),
    };
    let raw = match serde_json::from_str::<Raw>(text) {
        Ok(raw) => raw,
        Err(e) if e.is_syntax() || e.is_eof() => {
            return dead(DeadReason::NotJson, format!("payload is not JSON: {e}"));
        }
        Err(_) => return decode_mistyped(key, text, dead),
    };
    let mut raw = raw;
    let Some(conversation) = raw.conversation.take() else {
        return match key {
            KeySource::Record(Some(_)) => dead(
                DeadReason::KeyMismatch,
                "message has no `conversation` to match the record key".into(),
            ),
            _ => dead(
                DeadReason::NoKey,
                "message has no `conversation` and the record no key".into(),
            ),
        };
    };
    if let Err((reason, detail)) = check_key(key, &conversation) {
        return dead(reason, detail);
    }
    validate(raw, conversation)
}

fn check_key(key: KeySource<'_>, conversation: &str) -> Result<(), (DeadReason, String)> {
    match key {
        KeySource::FromConversation => Ok(()),
        KeySource::Record(None) => Err((DeadReason::NoKey, "record has no key".into())),
        KeySource::Record(Some(k)) if k == conversation.as_bytes() => Ok(()),
        KeySource::Record(Some(k)) => Err((
            DeadReason::KeyMismatch,
            format!(
                "record key {:?} differs from conversation {conversation:?}",
                String::from_utf8_lossy(k)
            ),
        )),
    }
}

/// The slow path, taken only when the typed parse failed on valid JSON: find out whether it is an
/// object at all and which field has the wrong type.
fn decode_mistyped(
    key: KeySource<'_>,
    text: &str,
    dead: impl Fn(DeadReason, String) -> Decoded,
) -> Decoded {
    let value: Value = match serde_json::from_str(text) {
        Ok(v) => v,
        Err(e) => return dead(DeadReason::NotJson, format!("payload is not JSON: {e}")),
    };
    let Value::Object(object) = value else {
        return dead(
            DeadReason::NotObject,
            "payload is JSON but not an object".into(),
        );
    };
    let conversation = match object.get("conversation") {
        Some(Value::String(c)) => c.clone(),
        Some(Value::Null) | None => {
            return dead(DeadReason::NoKey, "message has no `conversation`".into())
        }
        Some(_) => {
            return dead(
                DeadReason::KeyMismatch,
                "`conversation` is not a string".into(),
            )
        }
    };
    if let Err((reason, detail)) = check_key(key, &conversation) {
        return dead(reason, detail);
    }
    let message = match object.get("id") {
        Some(Value::String(id)) => Some(id.clone()),
        _ => None,
    };
    let (field, expected) = FIELD_TYPES
        .iter()
        .find(|(name, expected)| match object.get(*name) {
            None | Some(Value::Null) => false,
            Some(Value::String(_)) => *expected != "string",
            Some(Value::Bool(_)) => *expected != "boolean",
            Some(Value::Object(_)) => *expected != "object",
            Some(_) => true,
        })
        .copied()
        .unwrap_or(("contact", "object of strings"));
    let time = match object.get("createdAt") {
        Some(Value::String(t)) if is_rfc3339(t) => Some(t.clone()),
        _ => None,
    };
    Decoded::Invalid(Invalid {
        conversation,
        message,
        code: Code::InvalidField,
        detail: format!("`{field}` must be a {expected}"),
        time,
    })
}

fn is_rfc3339(t: &str) -> bool {
    chrono::DateTime::parse_from_rfc3339(t).is_ok()
}

fn validate(raw: Raw, conversation: String) -> Decoded {
    match check(&raw, &conversation) {
        Ok((role, created_at_nanos)) => {
            Decoded::Message(message(raw, conversation, role, created_at_nanos))
        }
        // Only the failure path pays for re-checking the time.
        Err((code, detail)) => Decoded::Invalid(Invalid {
            conversation,
            message: raw.id,
            code,
            detail,
            time: raw.created_at.filter(|t| is_rfc3339(t)),
        }),
    }
}

/// The rule a record breaks, with the detail to report.
type Broken = (Code, String);

/// The rules of SPEC section 2, in the order they are reported; gives the role and `createdAt`
/// in nanoseconds.
fn check(raw: &Raw, conversation: &str) -> Result<(Role, i64), Broken> {
    check_identity(raw, conversation)?;
    let role = role(raw.role.as_deref())?;
    let created_at_nanos = created_at(raw.created_at.as_deref())?;
    if role != Role::Contact && raw.sender.is_none() {
        return Err((
            Code::MissingSender,
            "`sender` is required for every message not from the contact".into(),
        ));
    }
    check_optional(raw).map(|()| (role, created_at_nanos))
}

/// `id`, `conversation` and `type`.
fn check_identity(raw: &Raw, conversation: &str) -> Result<(), Broken> {
    let Some(message_id) = raw.id.as_deref() else {
        return Err((Code::MissingField, "`id` is required".into()));
    };
    if !is_object_id(message_id) {
        return Err((
            Code::InvalidId,
            format!("`id` {message_id:?} is not an ObjectId"),
        ));
    }
    if !is_object_id(conversation) {
        return Err((
            Code::InvalidId,
            format!("`conversation` {conversation:?} is not an ObjectId"),
        ));
    }
    if raw.kind.as_deref().is_none_or(str::is_empty) {
        return Err((Code::MissingField, "`type` is required".into()));
    }
    Ok(())
}

fn role(given: Option<&str>) -> Result<Role, Broken> {
    match given {
        None => Ok(Role::Bot),
        Some("contact" | "consumer") => Ok(Role::Contact),
        Some("agent") => Ok(Role::Agent),
        Some("bot") => Ok(Role::Bot),
        Some(other) => Err((
            Code::InvalidRole,
            format!("`role` {other:?} is not one of contact, consumer, agent, bot"),
        )),
    }
}

/// `createdAt` in nanoseconds since the epoch.
fn created_at(given: Option<&str>) -> Result<i64, Broken> {
    let Some(created_at) = given else {
        return Err((Code::MissingField, "`createdAt` is required".into()));
    };
    chrono::DateTime::parse_from_rfc3339(created_at)
        .ok()
        .and_then(|t| t.timestamp_nanos_opt())
        .ok_or_else(|| {
            (
                Code::InvalidTime,
                format!("`createdAt` {created_at:?} is not an RFC 3339 time"),
            )
        })
}

/// The optional fields, when given: IDs, `conversationType`, `touchpoint`.
fn check_optional(raw: &Raw) -> Result<(), Broken> {
    for (field, value) in [
        ("sender", &raw.sender),
        ("user", &raw.user),
        ("organization", &raw.organization),
    ] {
        if let Some(v) = value {
            if !is_object_id(v) {
                return Err((
                    Code::InvalidId,
                    format!("`{field}` {v:?} is not an ObjectId"),
                ));
            }
        }
    }
    if let Some(t) = &raw.conversation_type {
        if !CONVERSATION_TYPES.contains(&t.as_str()) {
            return Err((
                Code::InvalidField,
                format!("`conversationType` {t:?} is not one of {CONVERSATION_TYPES:?}"),
            ));
        }
    }
    if raw.touchpoint.as_deref() == Some("") {
        return Err((Code::InvalidField, "`touchpoint` must not be empty".into()));
    }
    Ok(())
}

/// The message of a record that passed [`check`].
fn message(raw: Raw, conversation: String, role: Role, created_at_nanos: i64) -> Message {
    let type_name = raw.kind.unwrap_or_default();
    Message {
        id: raw.id.unwrap_or_default(),
        conversation,
        kind: Kind::of(&type_name),
        type_name,
        role,
        sender: raw.sender,
        is_backchannel: raw.is_backchannel.unwrap_or(false),
        text: raw.text.unwrap_or_default(),
        user: raw.user,
        meta: raw.meta.unwrap_or_default(),
        created_at: raw.created_at.unwrap_or_default(),
        created_at_nanos,
        organization: raw.organization,
        conversation_type: raw.conversation_type,
        touchpoint: raw.touchpoint,
        contact: raw.contact,
    }
}

impl Message {
    /// The message as it is written back to the input topic (used for relay records).
    pub fn to_json(&self) -> Value {
        let mut m = Map::new();
        m.insert("id".into(), self.id.clone().into());
        m.insert("conversation".into(), self.conversation.clone().into());
        m.insert("type".into(), self.type_name.clone().into());
        m.insert("role".into(), role_name(self.role).into());
        if let Some(s) = &self.sender {
            m.insert("sender".into(), s.clone().into());
        }
        if self.is_backchannel {
            m.insert("isBackchannel".into(), true.into());
        }
        m.insert("text".into(), self.text.clone().into());
        if let Some(u) = &self.user {
            m.insert("user".into(), u.clone().into());
        }
        m.insert("meta".into(), Value::Object(self.meta.clone()));
        m.insert("createdAt".into(), self.created_at.clone().into());
        Value::Object(m)
    }
}

pub fn role_name(role: Role) -> &'static str {
    match role {
        Role::Contact => "contact",
        Role::Agent => "agent",
        Role::Bot => "bot",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const CONV: &str = "590bd49f458b716046347f47";

    fn msg(json: &str) -> Decoded {
        decode(KeySource::Record(Some(CONV.as_bytes())), json.as_bytes())
    }

    fn invalid_code(d: Decoded) -> Code {
        match d {
            Decoded::Invalid(i) => i.code,
            other => panic!("expected invalid, got {other:?}"),
        }
    }

    fn dead_reason(d: Decoded) -> DeadReason {
        match d {
            Decoded::Dead(dl) => dl.reason,
            other => panic!("expected dead letter, got {other:?}"),
        }
    }

    const GOOD: &str = r#"{"id":"aaaaaaaaaaaaaaaaaaaaaaaa","conversation":"590bd49f458b716046347f47",
        "type":"chat","role":"consumer","text":"hi","createdAt":"2024-01-01T10:00:00+01:00"}"#;

    #[test]
    fn decodes_a_good_message_with_role_synonym() {
        let Decoded::Message(m) = msg(GOOD) else {
            panic!()
        };
        assert_eq!(m.role, Role::Contact);
        assert_eq!(m.kind, Kind::Chat);
        assert_eq!(m.created_at_nanos, 1_704_099_600_000_000_000);
    }

    #[test]
    fn default_role_is_bot_and_needs_sender() {
        let j = r#"{"id":"aaaaaaaaaaaaaaaaaaaaaaaa","conversation":"590bd49f458b716046347f47",
            "type":"command","text":"/notify","createdAt":"2024-01-01T10:00:00Z"}"#;
        assert_eq!(invalid_code(msg(j)), Code::MissingSender);
    }

    #[test]
    fn unreadable_records_are_dead_letters() {
        assert_eq!(dead_reason(msg("{not json")), DeadReason::NotJson);
        assert_eq!(dead_reason(msg("[1,2]")), DeadReason::NotObject);
        assert_eq!(dead_reason(msg("\"x\"")), DeadReason::NotObject);
        assert_eq!(
            dead_reason(decode(
                KeySource::Record(Some(CONV.as_bytes())),
                &[0xff, 0xfe]
            )),
            DeadReason::NotUtf8
        );
        assert_eq!(
            dead_reason(decode(KeySource::Record(None), GOOD.as_bytes())),
            DeadReason::NoKey
        );
        assert_eq!(
            dead_reason(decode(
                KeySource::Record(Some(b"bbbbbbbbbbbbbbbbbbbbbbbb")),
                GOOD.as_bytes()
            )),
            DeadReason::KeyMismatch
        );
        assert_eq!(
            dead_reason(decode(KeySource::FromConversation, br#"{"id":"x"}"#)),
            DeadReason::NoKey
        );
    }

    #[test]
    fn rule_breaking_records_are_invalid_with_codes() {
        let base =
            r#""conversation":"590bd49f458b716046347f47","createdAt":"2024-01-01T10:00:00Z""#;
        let case = |extra: &str| msg(&format!("{{{base},{extra}}}"));
        assert_eq!(invalid_code(case(r#""type":"chat""#)), Code::MissingField);
        assert_eq!(
            invalid_code(case(r#""id":"nope","type":"chat""#)),
            Code::InvalidId
        );
        assert_eq!(
            invalid_code(case(r#""id":"aaaaaaaaaaaaaaaaaaaaaaaa","role":"agent""#)),
            Code::MissingField
        );
        assert_eq!(
            invalid_code(case(
                r#""id":"aaaaaaaaaaaaaaaaaaaaaaaa","type":"chat","role":"boss""#
            )),
            Code::InvalidRole
        );
        assert_eq!(
            invalid_code(case(
                r#""id":"aaaaaaaaaaaaaaaaaaaaaaaa","type":"chat","role":"contact","user":"x""#
            )),
            Code::InvalidId
        );
        assert_eq!(
            invalid_code(case(r#""id":"aaaaaaaaaaaaaaaaaaaaaaaa","type":7"#)),
            Code::InvalidField
        );
        assert_eq!(
            invalid_code(case(
                r#""id":"aaaaaaaaaaaaaaaaaaaaaaaa","type":"chat","role":"contact","conversationType":"x""#
            )),
            Code::InvalidField
        );
        let no_time = r#"{"id":"aaaaaaaaaaaaaaaaaaaaaaaa","conversation":"590bd49f458b716046347f47","type":"chat","role":"contact"}"#;
        assert_eq!(invalid_code(msg(no_time)), Code::MissingField);
        let bad_time = r#"{"id":"aaaaaaaaaaaaaaaaaaaaaaaa","conversation":"590bd49f458b716046347f47","type":"chat","role":"contact","createdAt":"yesterday"}"#;
        assert_eq!(invalid_code(msg(bad_time)), Code::InvalidTime);
    }

    #[test]
    fn invalid_conversation_id_is_rejected_not_dead() {
        let j = r#"{"id":"aaaaaaaaaaaaaaaaaaaaaaaa","conversation":"c1","type":"chat","role":"contact","createdAt":"2024-01-01T10:00:00Z"}"#;
        assert_eq!(
            invalid_code(decode(KeySource::FromConversation, j.as_bytes())),
            Code::InvalidId
        );
    }
}
