//! Re-driving a dead-letter topic (`replay --from-topic <dlq> --unwrap-dlq`): each dead letter
//! back to the record it was made from, with the original's key, payload and headers byte for
//! byte, to be produced again once whatever refused it is fixed.
//!
//! The key and the headers come from the dead letter's headers (`switchboard.original.key`, and
//! the original's own, given back by [`original_headers`]), the payload from its `data`
//! (`payload`, or `payloadBase64` when it was not UTF-8). A `too_large` dead letter keeps only a
//! prefix of the original, so it cannot be re-driven.

use std::time::{Duration, Instant};

use base64::Engine as _;
use rdkafka::producer::{BaseRecord, Producer as _};
use serde::Deserialize;

use super::source::RawRecord;
use super::{delivered, producer, ReplayError, Summary, Target};
use crate::runtime::kafka::send;
use crate::runtime::pipeline::headers::{original_headers, ERROR_REASON, ORIGINAL_KEY};
use crate::runtime::pipeline::Headers;

/// A record as it was before it was dead-lettered.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Original {
    pub key: Option<Vec<u8>>,
    pub payload: Vec<u8>,
    pub headers: Headers,
}

/// Why a record of the dead-letter topic cannot be re-driven.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NotRedrivable {
    #[error("not a Switchboard dead letter (no {ERROR_REASON} header)")]
    NotADeadLetter,
    #[error("the dead letter keeps only a prefix of the original (too_large)")]
    Truncated,
    #[error("the dead letter's value is not a dead-letter event: {0}")]
    Malformed(String),
}

/// The part of a dead-letter event the original's payload is in.
#[derive(Deserialize)]
struct Event {
    data: Data,
}

#[derive(Deserialize)]
struct Data {
    reason: String,
    payload: Option<String>,
    #[serde(rename = "payloadBase64")]
    payload_base64: Option<String>,
}

/// The original of one dead letter (its value and headers).
pub fn original(value: &[u8], headers: &Headers) -> Result<Original, NotRedrivable> {
    if headers.get(ERROR_REASON).is_none() {
        return Err(NotRedrivable::NotADeadLetter);
    }
    let event: Event =
        serde_json::from_slice(value).map_err(|e| NotRedrivable::Malformed(e.to_string()))?;
    let data = event.data;
    if data.reason == "too_large" {
        return Err(NotRedrivable::Truncated);
    }
    let payload = match (data.payload, data.payload_base64) {
        (Some(text), _) => text.into_bytes(),
        (None, Some(encoded)) => base64::engine::general_purpose::STANDARD
            .decode(encoded)
            .map_err(|e| NotRedrivable::Malformed(format!("payloadBase64: {e}")))?,
        (None, None) => return Err(NotRedrivable::Malformed("no payload".into())),
    };
    Ok(Original {
        key: headers.get(ORIGINAL_KEY).map(<[u8]>::to_vec),
        payload,
        headers: original_headers(headers),
    })
}

/// Produces the original of every dead letter in `records`, in their order. Dead letters that
/// cannot be re-driven are reported on standard error and left out; if there were any, the
/// result says how many once the rest is delivered.
pub fn redrive(
    records: Vec<RawRecord>,
    target: &Target,
    progress: &indicatif::ProgressBar,
) -> Result<Summary, ReplayError> {
    let producer = producer(target)?;
    let started = Instant::now();
    let mut summary = Summary::default();
    let mut keys = std::collections::HashSet::new();
    let mut refused: Vec<String> = Vec::new();
    for r in records {
        progress.inc(1);
        let o = match original(&r.payload, &r.headers) {
            Ok(o) => o,
            Err(e) => {
                let why = format!("{}/{}: {e}", r.partition, r.offset);
                progress.suspend(|| eprintln!("replay: dead letter {why}; left out"));
                refused.push(why);
                continue;
            }
        };
        let mut record = BaseRecord::<[u8], [u8]>::to(&target.topic).payload(&o.payload);
        match &o.key {
            Some(k) => {
                keys.insert(k.clone());
                record = record.key(k);
            }
            None => summary.unkeyed += 1,
        }
        if let Some(h) = o.headers.to_kafka() {
            record = record.headers(h);
        }
        send(&producer, record)?;
        producer.poll(Duration::ZERO);
        summary.produced += 1;
    }
    producer.flush(Duration::from_secs(60))?;
    summary.elapsed = started.elapsed();
    summary.conversations = keys.len() as u64;
    let summary = delivered(producer.context(), summary)?;
    match refused.first() {
        None => Ok(summary),
        Some(first) => Err(ReplayError::NotRedrivable {
            refused: refused.len() as u64,
            produced: summary.produced,
            first: first.clone(),
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::runtime::pipeline::Header;

    fn dead_letter_headers() -> Headers {
        Headers::new(vec![
            Header::new(
                "content-type",
                "application/cloudevents+json; charset=utf-8",
            ),
            Header::new(
                "traceparent",
                "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01",
            ),
            Header::new(ERROR_REASON, "not_json"),
            Header::new(ORIGINAL_KEY, [0xff, b'k']),
        ])
    }

    #[test]
    fn a_dead_letter_gives_back_its_original() {
        let o = original(
            br#"{"data":{"reason":"not_json","detail":"x","payloadBase64":"/wA="}}"#,
            &dead_letter_headers(),
        )
        .unwrap();
        assert_eq!(o.key, Some(vec![0xff, b'k']));
        assert_eq!(o.payload, [0xff, 0x00]);
        assert_eq!(
            o.headers,
            Headers::new(vec![Header::new(
                "traceparent",
                "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"
            )])
        );
        let text = original(
            br#"{"data":{"reason":"no_key","detail":"x","payload":"{}"}}"#,
            &dead_letter_headers(),
        )
        .unwrap();
        assert_eq!(text.payload, b"{}");
    }

    #[test]
    fn what_cannot_be_re_driven_says_why() {
        let too_large = br#"{"data":{"reason":"too_large","detail":"x","payload":"{"}}"#;
        assert_eq!(
            original(too_large, &dead_letter_headers()),
            Err(NotRedrivable::Truncated)
        );
        assert_eq!(
            original(too_large, &Headers::default()),
            Err(NotRedrivable::NotADeadLetter)
        );
        assert!(matches!(
            original(b"{}", &dead_letter_headers()),
            Err(NotRedrivable::Malformed(_))
        ));
    }
}
