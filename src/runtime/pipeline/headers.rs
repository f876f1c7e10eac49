//! Kafka record headers: the input's, carried to the outputs they cause, and the ones the
//! CloudEvents Kafka binding and the dead-letter topic add.
//!
//! - An event (any output topic but the input) carries `content-type:`
//!   [`STRUCTURED_JSON`] first, which is how a binding-compliant receiver knows it is a
//!   structured-mode CloudEvent, then the input record's headers (`traceparent`, `tracestate`
//!   and the rest) except its own `content-type` and its binary-mode `ce_*` attributes, which
//!   describe the input, not the event.
//! - A relay record (`import.request`, `import.transfer`, `import.cancel`, written back to the input topic) is an
//!   input message, not an event: it carries the causing record's headers as they were.
//! - A dead letter carries the content type, then the original's headers, then the error's
//!   context (as Kafka Connect's dead-letter queue does): [`ERROR_REASON`], [`ERROR_DETAIL`],
//!   [`ORIGINAL_TOPIC`], [`ORIGINAL_PARTITION`], [`ORIGINAL_OFFSET`] and, when it had one, the
//!   original key as it was ([`ORIGINAL_KEY`]). An original header whose name is the dead
//!   letter's own (`content-type`, `switchboard.error.*`, `switchboard.original.*`) is kept under
//!   [`ORIGINAL_HEADER`]`<name>`, so that [`original_headers`] gives every original header back
//!   byte for byte, in its order.
//!
//! Every output of one input record shares one header set (an `Arc`), so an output costs a
//! reference count here; the bytes are copied once more per output only where librdkafka takes
//! them ([`Headers::to_kafka`]).

use std::sync::{Arc, LazyLock};

use rdkafka::message::OwnedHeaders;
use serde::{Deserialize, Serialize};

use crate::core::message::{DeadLetter, DeadReason};

use super::InputRecord;

/// The header that tells a CloudEvents receiver the record's mode (binding §3).
pub const CONTENT_TYPE: &str = "content-type";
/// Structured mode, JSON event format.
pub const STRUCTURED_JSON: &str = "application/cloudevents+json; charset=utf-8";
/// Binary-mode CloudEvents attributes start with this (binding §3.2.3).
const BINARY_PREFIX: &str = "ce_";

/// A dead letter's reason (`not_json`, `too_large`, … as in its `data.reason`).
pub const ERROR_REASON: &str = "switchboard.error.reason";
/// A dead letter's detail, as in its `data.detail`.
pub const ERROR_DETAIL: &str = "switchboard.error.detail";
/// Where the original record was: topic, partition and offset (decimal).
pub const ORIGINAL_TOPIC: &str = "switchboard.original.topic";
pub const ORIGINAL_PARTITION: &str = "switchboard.original.partition";
pub const ORIGINAL_OFFSET: &str = "switchboard.original.offset";
/// The original record's key, byte for byte; absent when it had none.
pub const ORIGINAL_KEY: &str = "switchboard.original.key";
/// The prefix an original header's name gets when it is one of the dead letter's own.
pub const ORIGINAL_HEADER: &str = "switchboard.original.header.";

const ERROR_PREFIX: &str = "switchboard.error.";
const ORIGINAL_PREFIX: &str = "switchboard.original.";

/// One Kafka record header. Kafka allows a header without a value.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct Header {
    pub name: String,
    pub value: Option<Vec<u8>>,
}

impl Header {
    pub fn new(name: &str, value: impl AsRef<[u8]>) -> Header {
        Header {
            name: name.to_string(),
            value: Some(value.as_ref().to_vec()),
        }
    }
}

/// A record's headers, in order. Cloning shares them; a record without headers allocates
/// nothing.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Headers(Option<Arc<[Header]>>);

impl Headers {
    pub fn new(headers: Vec<Header>) -> Headers {
        if headers.is_empty() {
            Headers(None)
        } else {
            Headers(Some(headers.into()))
        }
    }

    pub fn iter(&self) -> std::slice::Iter<'_, Header> {
        self.0.as_deref().unwrap_or_default().iter()
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_none()
    }

    /// The value of the first header named `name`; `None` also for a header without a value.
    pub fn get(&self, name: &str) -> Option<&[u8]> {
        self.iter()
            .find(|h| h.name == name)
            .and_then(|h| h.value.as_deref())
    }

    /// The headers of a consumed record.
    pub fn from_kafka<H: rdkafka::message::Headers>(headers: Option<&H>) -> Headers {
        let Some(headers) = headers else {
            return Headers::default();
        };
        Headers::new(
            headers
                .iter()
                .map(|h| Header {
                    name: h.key.to_string(),
                    value: h.value.map(<[u8]>::to_vec),
                })
                .collect(),
        )
    }

    /// The headers to produce; librdkafka copies the bytes into the record it sends.
    pub fn to_kafka(&self) -> Option<OwnedHeaders> {
        let headers = self.0.as_deref()?;
        let mut owned = OwnedHeaders::new_with_capacity(headers.len());
        for h in headers {
            owned = owned.insert(rdkafka::message::Header {
                key: &h.name,
                value: h.value.as_deref(),
            });
        }
        Some(owned)
    }
}

impl Serialize for Headers {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        self.0.as_deref().unwrap_or_default().serialize(s)
    }
}

impl<'de> Deserialize<'de> for Headers {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Headers, D::Error> {
        Vec::<Header>::deserialize(d).map(Headers::new)
    }
}

/// The headers of the events `input` causes (see the module's doc).
pub(super) fn for_events(input: &Headers) -> Headers {
    // Most inputs carry no headers: their events share one set, allocated once.
    static BARE: LazyLock<Headers> =
        LazyLock::new(|| Headers::new(vec![Header::new(CONTENT_TYPE, STRUCTURED_JSON)]));
    if input.is_empty() {
        return BARE.clone();
    }
    let carried = input.iter().filter(|h| {
        !h.name.eq_ignore_ascii_case(CONTENT_TYPE)
            && !starts_with_ignore_case(&h.name, BINARY_PREFIX)
    });
    Headers::new(
        std::iter::once(Header::new(CONTENT_TYPE, STRUCTURED_JSON))
            .chain(carried.cloned())
            .collect(),
    )
}

/// The headers of the dead letter of `record` (see the module's doc).
pub(super) fn for_dead_letter(record: &InputRecord, dead: &DeadLetter) -> Headers {
    let mut headers = Vec::with_capacity(record.headers.iter().len() + 7);
    headers.push(Header::new(CONTENT_TYPE, STRUCTURED_JSON));
    headers.extend(record.headers.iter().map(|h| {
        if is_own(&h.name) {
            Header {
                name: format!("{ORIGINAL_HEADER}{}", h.name),
                value: h.value.clone(),
            }
        } else {
            h.clone()
        }
    }));
    headers.push(Header::new(ERROR_REASON, reason_name(dead.reason)));
    headers.push(Header::new(ERROR_DETAIL, &dead.detail));
    headers.push(Header::new(ORIGINAL_TOPIC, &*record.topic));
    headers.push(Header::new(
        ORIGINAL_PARTITION,
        record.partition.to_string(),
    ));
    headers.push(Header::new(ORIGINAL_OFFSET, record.offset.to_string()));
    if let Some(key) = &record.key {
        headers.push(Header::new(ORIGINAL_KEY, key));
    }
    Headers::new(headers)
}

/// The original record's headers, from its dead letter's: every header the dead letter added is
/// dropped and every renamed one gets its name back.
pub fn original_headers(dead_letter: &Headers) -> Headers {
    Headers::new(
        dead_letter
            .iter()
            .filter_map(|h| {
                if let Some(name) = h.name.strip_prefix(ORIGINAL_HEADER) {
                    return Some(Header {
                        name: name.to_string(),
                        value: h.value.clone(),
                    });
                }
                (!is_own(&h.name)).then(|| h.clone())
            })
            .collect(),
    )
}

/// A name the dead letter itself uses.
fn is_own(name: &str) -> bool {
    name.eq_ignore_ascii_case(CONTENT_TYPE)
        || name.starts_with(ERROR_PREFIX)
        || name.starts_with(ORIGINAL_PREFIX)
}

fn starts_with_ignore_case(name: &str, prefix: &str) -> bool {
    name.get(..prefix.len())
        .is_some_and(|p| p.eq_ignore_ascii_case(prefix))
}

/// The reason as the dead letter's `data.reason` spells it.
fn reason_name(reason: DeadReason) -> &'static str {
    match reason {
        DeadReason::NotUtf8 => "not_utf8",
        DeadReason::NotJson => "not_json",
        DeadReason::NotObject => "not_object",
        DeadReason::NoKey => "no_key",
        DeadReason::KeyMismatch => "key_mismatch",
        DeadReason::TooLarge => "too_large",
        DeadReason::Misrouted => "misrouted",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(headers: Vec<Header>) -> InputRecord {
        InputRecord {
            partition: 2,
            offset: 41,
            key: Some(vec![0xff, b'k']),
            payload: b"{".to_vec(),
            headers: Headers::new(headers),
            topic: "conversation.messages".into(),
            ..InputRecord::default()
        }
    }

    fn dead(reason: DeadReason) -> DeadLetter {
        DeadLetter {
            reason,
            detail: "why".into(),
            key: None,
            payload: Vec::new(),
        }
    }

    #[test]
    fn reasons_are_named_as_the_dead_letter_names_them() {
        use DeadReason::*;
        for r in [
            NotUtf8,
            NotJson,
            NotObject,
            NoKey,
            KeyMismatch,
            TooLarge,
            Misrouted,
        ] {
            assert_eq!(serde_json::to_value(r).unwrap(), reason_name(r));
        }
    }

    #[test]
    fn events_carry_the_content_type_and_the_input_headers_but_its_own_binding() {
        let input = Headers::new(vec![
            Header::new("Content-Type", "application/json"),
            Header::new(
                "traceparent",
                "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01",
            ),
            Header::new("CE_id", "x"),
            Header {
                name: "empty".into(),
                value: None,
            },
        ]);
        let names: Vec<String> = for_events(&input).iter().map(|h| h.name.clone()).collect();
        assert_eq!(names, ["content-type", "traceparent", "empty"]);
        assert_eq!(
            for_events(&Headers::default()).get(CONTENT_TYPE),
            Some(STRUCTURED_JSON.as_bytes())
        );
    }

    #[test]
    fn a_dead_letter_gives_back_every_original_header_in_order() {
        let original = vec![
            Header::new(
                "traceparent",
                "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01",
            ),
            Header::new("Content-Type", "text/plain"),
            Header::new("switchboard.error.reason", "theirs"),
            Header::new("switchboard.original.header.x", [0u8, 0xfe]),
            Header {
                name: "nothing".into(),
                value: None,
            },
        ];
        let r = record(original.clone());
        let dlq = for_dead_letter(&r, &dead(DeadReason::NotJson));
        assert_eq!(dlq.get(CONTENT_TYPE), Some(STRUCTURED_JSON.as_bytes()));
        assert_eq!(dlq.get(ERROR_REASON), Some(&b"not_json"[..]));
        assert_eq!(dlq.get(ERROR_DETAIL), Some(&b"why"[..]));
        assert_eq!(dlq.get(ORIGINAL_TOPIC), Some(&b"conversation.messages"[..]));
        assert_eq!(dlq.get(ORIGINAL_PARTITION), Some(&b"2"[..]));
        assert_eq!(dlq.get(ORIGINAL_OFFSET), Some(&b"41"[..]));
        assert_eq!(dlq.get(ORIGINAL_KEY), Some(&[0xff, b'k'][..]));
        assert_eq!(original_headers(&dlq), Headers::new(original));
        assert_eq!(
            original_headers(&for_dead_letter(&record(vec![]), &dead(DeadReason::NoKey))),
            Headers::default()
        );
    }
}
