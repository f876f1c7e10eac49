//! How large records may be: the input records read (`kafka.max_record_bytes`), the records
//! produced (`kafka.max_output_bytes`, the producer's `message.max.bytes`), and, from both, the
//! relay records the core writes back to the input topic. Beside them, the one limit the core
//! applies in message time: how long an `/import` may stay pending (`imports.timeout_ms`).
//!
//! No output may jam a partition: librdkafka refuses to produce a record over
//! `message.max.bytes`, which would fail the batch, and its replay, for ever. So every output
//! is measured as librdkafka measures it before it is produced, and one over the limit is
//! replaced by a dead letter saying what it was (reason `too_large`, which `replay
//! --unwrap-dlq` does not re-drive: the dead letter keeps only a prefix of the value).

use std::sync::LazyLock;

use serde::Deserialize;

use crate::config::Config;
use crate::core::event::{Output, Topic};
use crate::core::message::{DeadLetter, DeadReason};
use crate::runtime::store::OutRecord;

use super::headers::{Header, Headers, CONTENT_TYPE, ERROR_DETAIL, ERROR_REASON, STRUCTURED_JSON};

/// The limits a batch is applied under.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Input records with a larger value are dead letters, unread.
    pub max_record_bytes: usize,
    /// The largest record the producer sends, as librdkafka counts it ([`wire_size`]).
    pub max_output_bytes: usize,
    /// `Env::import_timeout_ms`: how long, in message time, an `/import` may stay pending.
    pub import_timeout_ms: u64,
}

/// What librdkafka adds to a record's key and value when it checks `message.max.bytes`
/// (`RD_KAFKAP_MESSAGE_V2_MAX_OVERHEAD`: the attributes byte, one 64-bit and five 32-bit
/// varints at their widest).
const RECORD_OVERHEAD: usize = 1 + 10 + 5 * 5;
/// The two varint lengths of a header, at their widest.
const HEADER_OVERHEAD: usize = 2 * 10;
/// The most a relay record's budget leaves for its key, headers and [`RECORD_OVERHEAD`]. The
/// headers are the causing record's, carried: a trace context takes about a hundred bytes.
const RELAY_HEADROOM: usize = 16 * 1024;
/// How much of an oversize output its dead letter keeps, as for an oversize input record:
/// enough to tell what it was.
const PREFIX_BYTES: usize = 4 * 1024;

impl Limits {
    pub fn of(config: &Config) -> Limits {
        Limits {
            max_record_bytes: config.kafka.max_record_bytes,
            max_output_bytes: config.kafka.max_output_bytes,
            import_timeout_ms: config.imports.timeout_ms,
        }
    }

    /// The limits of `config/default.toml`, which `simulate` applies too.
    pub fn defaults() -> Limits {
        static DEFAULTS: LazyLock<Limits> = LazyLock::new(|| Limits::of(&Config::defaults()));
        *DEFAULTS
    }

    /// The most bytes the core may put in a relay record's value (`Env::max_relay_bytes`): the
    /// target must read it (`max_record_bytes`) and the producer send it with its key and
    /// headers (`max_output_bytes`), so a quarter of the smaller limit, at most
    /// [`RELAY_HEADROOM`], is left for those.
    pub fn relay_bytes(&self) -> usize {
        let limit = self.max_record_bytes.min(self.max_output_bytes);
        limit - (limit / 4).min(RELAY_HEADROOM)
    }
}

/// A record's size as librdkafka checks it against `message.max.bytes` (at most what it
/// counts: its varints are taken at their widest).
pub fn wire_size(record: &OutRecord) -> usize {
    let headers: usize = record
        .headers
        .iter()
        .map(|h| HEADER_OVERHEAD + h.name.len() + h.value.as_ref().map_or(0, Vec::len))
        .sum();
    RECORD_OVERHEAD + record.key.len() + record.value.len() + headers
}

/// Replaces every output over `max_output_bytes` by its dead letter.
pub(super) fn fit(outputs: &mut [OutRecord], max_output_bytes: usize) {
    for output in outputs.iter_mut() {
        let size = wire_size(output);
        if size > max_output_bytes {
            let dead = oversize(output, size, max_output_bytes);
            tracing::warn!(
                topic = ?output.topic,
                key = %output.key,
                size,
                limit = max_output_bytes,
                "output over kafka.max_output_bytes replaced by a dead letter"
            );
            *output = dead;
        }
    }
}

/// The parts of an output's value that name it.
#[derive(Deserialize)]
struct Named {
    id: Option<String>,
    time: Option<String>,
    #[serde(rename = "createdAt")]
    created_at: Option<String>,
}

/// The dead letter standing in for `output`, which takes `size` bytes: keyed as it was, named
/// after it (`dlq:<its ID>:0`), with a prefix of its value and the headers it carried. If even
/// that would not fit, the prefix and the carried headers are left out.
fn oversize(output: &OutRecord, size: usize, limit: usize) -> OutRecord {
    let named: Option<Named> = serde_json::from_str(&output.value).ok();
    let (id, time) = named.map_or((None, None), |n| (n.id, n.time.or(n.created_at)));
    let detail = format!(
        "the output to the {} topic (role {:?}) takes {size} bytes, over the limit of {limit} \
         (kafka.max_output_bytes)",
        output.topic.default_name(),
        output.topic
    );
    let locator = id.unwrap_or_else(|| format!("{}:{}", output.key, output.value.len()));
    let build = |prefix: usize, carried: bool| {
        let dead = DeadLetter {
            reason: DeadReason::TooLarge,
            detail: detail.clone(),
            key: Some(output.key.clone().into_bytes()),
            payload: prefix_of(&output.value, prefix).as_bytes().to_vec(),
        };
        let event = Output::dead_letter(&dead, &locator, time.as_deref());
        OutRecord {
            topic: Topic::DeadLetters,
            key: event.key,
            value: serde_json::to_string(&event.value)
                .expect("outputs serialise")
                .into(),
            headers: headers(&output.headers, &detail, carried),
        }
    };
    let full = build(PREFIX_BYTES.min(limit / 4), true);
    if wire_size(&full) <= limit {
        return full;
    }
    // `kafka.max_output_bytes` is at least 16 KiB, which a bare dead letter always fits.
    build(0, false)
}

/// At most `max` bytes of `text`, cut at a character boundary.
fn prefix_of(text: &str, max: usize) -> &str {
    let mut end = max.min(text.len());
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    &text[..end]
}

/// A dead letter's headers: the content type, the output's other headers when `carried`, and
/// the error's.
fn headers(output: &Headers, detail: &str, carried: bool) -> Headers {
    let mut headers = vec![Header::new(CONTENT_TYPE, STRUCTURED_JSON)];
    if carried {
        headers.extend(
            output
                .iter()
                .filter(|h| !h.name.eq_ignore_ascii_case(CONTENT_TYPE))
                .filter(|h| !h.name.starts_with("switchboard."))
                .cloned(),
        );
    }
    headers.push(Header::new(ERROR_REASON, "too_large"));
    headers.push(Header::new(ERROR_DETAIL, detail));
    Headers::new(headers)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(value: &str, headers: Vec<Header>) -> OutRecord {
        OutRecord {
            topic: Topic::CommandResults,
            key: "0000000000000000000000c1".into(),
            value: std::sync::Arc::new(value.to_string()),
            headers: Headers::new(headers),
        }
    }

    #[test]
    fn the_size_counts_key_value_headers_and_the_record_overhead() {
        let bare = record("{}", Vec::new());
        assert_eq!(wire_size(&bare), RECORD_OVERHEAD + 24 + 2);
        let with = record("{}", vec![Header::new("traceparent", "00-ab")]);
        assert_eq!(
            wire_size(&with),
            wire_size(&bare) + HEADER_OVERHEAD + "traceparent".len() + 5
        );
    }

    #[test]
    fn the_relay_budget_leaves_room_below_both_limits() {
        let l = Limits {
            max_record_bytes: 1_048_576,
            max_output_bytes: 1_000_000,
            import_timeout_ms: 86_400_000,
        };
        assert_eq!(l.relay_bytes(), 1_000_000 - RELAY_HEADROOM);
        let small = Limits {
            max_record_bytes: 4000,
            max_output_bytes: 1_000_000,
            ..l
        };
        assert_eq!(small.relay_bytes(), 3000);
    }

    #[test]
    fn an_output_over_the_limit_becomes_a_dead_letter_that_fits() {
        let big = format!(
            r#"{{"id":"abc:0","time":"2024-05-01T10:00:00Z","x":"{}"}}"#,
            "é".repeat(3000)
        );
        let small = r#"{"id":"abc:1"}"#;
        let mut outputs = vec![
            record(&big, vec![Header::new("traceparent", "00-ab")]),
            record(small, Vec::new()),
        ];
        let size = wire_size(&outputs[0]);
        fit(&mut outputs, 4000);
        assert_eq!(
            outputs[1],
            record(small, Vec::new()),
            "a record that fits is kept"
        );
        let dead = &outputs[0];
        assert_eq!(dead.topic, Topic::DeadLetters);
        assert!(wire_size(dead) <= 4000);
        assert_eq!(dead.key, "0000000000000000000000c1");
        assert_eq!(dead.headers.get(ERROR_REASON), Some(&b"too_large"[..]));
        assert_eq!(dead.headers.get("traceparent"), Some(&b"00-ab"[..]));
        let v: serde_json::Value = serde_json::from_str(&dead.value).unwrap();
        assert_eq!(v["id"], "dlq:abc:0:0");
        assert_eq!(v["time"], "2024-05-01T10:00:00Z");
        let detail = v["data"]["detail"].as_str().unwrap();
        for part in [
            "command.results",
            "CommandResults",
            &size.to_string(),
            "4000",
        ] {
            assert!(detail.contains(part), "{detail} names {part}");
        }
        assert!(big.starts_with(v["data"]["payload"].as_str().unwrap()));
    }

    #[test]
    fn a_dead_letter_too_large_with_its_prefix_and_headers_goes_without_them() {
        let huge_header = Header::new("x-big", "h".repeat(3000));
        let mut outputs = vec![record(&"v".repeat(5000), vec![huge_header])];
        fit(&mut outputs, 2500);
        let dead = &outputs[0];
        assert!(wire_size(dead) <= 2500, "{}", wire_size(dead));
        assert_eq!(dead.headers.get("x-big"), None);
        let v: serde_json::Value = serde_json::from_str(&dead.value).unwrap();
        assert_eq!(v["data"]["payload"], "");
    }
}
