//! A transfer larger than one record may be (SPEC section 6, `/import`): the origin splits its
//! copies over several `import.transfer` records, and the target gathers them in its pending
//! import until all have arrived.
//!
//! A transfer that fits one record is sent exactly as it always was: one record, ID
//! `derive(command, "import.transfer")`, no part numbers. A larger one is cut, in log order,
//! into the fewest consecutive runs of copies that each fit, greedily; part `i` of `n` (from 1)
//! gets the ID `derive(command, "import.transfer", i)` and `meta.part = i`, `meta.parts = n`,
//! and every part carries the origin and the `/import` command, so that each is checked on its
//! own. Sizes are measured on the record's value exactly as it is serialised: serde_json writes
//! an object's keys in a fixed order, so a record's length is its envelope's plus its copies'.

use serde_json::{json, Value};

use crate::core::code::{reject, Code, Refusal};
use crate::core::id::derive;
use crate::core::message::IMPORT_TRANSFER;
use crate::core::state::{PartialTransfer, PendingImport, StoredMessage, TransferPart};

/// The serialised length of a value.
pub(super) fn json_len(value: &Value) -> usize {
    serde_json::to_string(value).map_or(usize::MAX, |s| s.len())
}

/// The ID of a transfer of one record; the result of an `/import` is named after it however
/// many records the transfer took.
pub(super) fn transfer_id(command: &str) -> String {
    derive(&[command, IMPORT_TRANSFER])
}

fn part_id(command: &str, part: u32) -> String {
    derive(&[command, IMPORT_TRANSFER, &part.to_string()])
}

/// One transfer record's value and ID, given its `meta` (built by the caller's `record`).
pub(super) struct Body {
    pub id: String,
    pub meta: Value,
}

/// The bodies of the records a transfer of `copies` travels in, each at most `limit` bytes
/// once `record` has wrapped it; refused when one copy alone would not fit.
pub(super) fn split(
    command: &str,
    base_meta: &Value,
    copies: &[StoredMessage],
    limit: usize,
    record: impl Fn(&Body) -> Value,
) -> Result<Vec<Body>, Refusal> {
    let values: Vec<Value> = copies.iter().map(|c| json!(c)).collect();
    let whole = with(base_meta, &[("messages", json!(values))]);
    let single = Body {
        id: transfer_id(command),
        meta: whole,
    };
    if json_len(&record(&single)) <= limit {
        return Ok(vec![single]);
    }
    // The envelope of the largest part number there could be: no part number is wider.
    let most = values.len() as u32;
    let empty = Body {
        id: part_id(command, most),
        meta: with(
            base_meta,
            &[
                ("messages", json!([])),
                ("part", json!(most)),
                ("parts", json!(most)),
            ],
        ),
    };
    let envelope = json_len(&record(&empty));
    let runs = runs(copies, &values, envelope, limit)?;
    let parts = runs.len() as u32;
    let mut values = values.into_iter();
    Ok(runs
        .into_iter()
        .zip(1..)
        .map(|(count, part)| Body {
            id: part_id(command, part),
            meta: with(
                base_meta,
                &[
                    (
                        "messages",
                        Value::Array(values.by_ref().take(count).collect()),
                    ),
                    ("part", json!(part)),
                    ("parts", json!(parts)),
                ],
            ),
        })
        .collect())
}

/// How many consecutive copies each part takes: as many as fit beside the `envelope` bytes.
fn runs(
    copies: &[StoredMessage],
    values: &[Value],
    envelope: usize,
    limit: usize,
) -> Result<Vec<usize>, Refusal> {
    let mut runs: Vec<usize> = Vec::new();
    let (mut count, mut size) = (0usize, envelope);
    for (copy, value) in copies.iter().zip(values) {
        let len = json_len(value);
        if envelope.saturating_add(len) > limit {
            let original = copy.meta.get("_source").and_then(Value::as_str);
            return Err(reject(
                Code::LimitReached,
                format!(
                    "message {} takes {len} bytes, more than a transfer record of at most \
                     {limit} bytes can carry",
                    original.unwrap_or(&copy.id)
                ),
            ));
        }
        // A comma separates a copy from the one before it in its part.
        if count > 0 && size + 1 + len > limit {
            runs.push(count);
            (count, size) = (0, envelope);
        }
        size += len + usize::from(count > 0);
        count += 1;
    }
    if count > 0 {
        runs.push(count);
    }
    if runs.is_empty() {
        return Err(reject(
            Code::LimitReached,
            format!("the /import command is too large for a transfer record of {limit} bytes"),
        ));
    }
    Ok(runs)
}

/// `base` (an object) with `fields` set.
fn with(base: &Value, fields: &[(&str, Value)]) -> Value {
    let mut meta = base.clone();
    for (name, value) in fields {
        meta[*name] = value.clone();
    }
    meta
}

/// What one part did to the pending import.
#[derive(Debug)]
pub(super) enum Gathered {
    /// Kept (or had been kept already); parts are still missing.
    Waiting,
    /// The last missing part: every copy, in part order.
    Complete(Vec<StoredMessage>),
}

/// Keeps part `part` of `parts` in the pending import. Checks everything before changing
/// anything; a part that arrived before is kept once.
pub(super) fn gather(
    pending: &mut PendingImport,
    part: Option<u32>,
    parts: Option<u32>,
    messages: Vec<StoredMessage>,
) -> Result<Gathered, Refusal> {
    let (Some(part), Some(parts)) = (part, parts) else {
        return Err(malformed("a part needs both part and parts"));
    };
    if parts < 2 || part == 0 || part > parts {
        return Err(malformed(&format!("part {part} of {parts}")));
    }
    if let Some(t) = &pending.transfer {
        if t.parts != parts {
            return Err(malformed(&format!(
                "part {part} of {parts}, but the transfer has {} parts",
                t.parts
            )));
        }
    }
    let transfer = pending.transfer.get_or_insert_with(|| PartialTransfer {
        parts,
        received: Vec::new(),
    });
    if let Err(at) = transfer.received.binary_search_by_key(&part, |p| p.part) {
        transfer
            .received
            .insert(at, TransferPart { part, messages });
    }
    if transfer.received.len() < parts as usize {
        return Ok(Gathered::Waiting);
    }
    let received = pending.transfer.take().map(|t| t.received);
    Ok(Gathered::Complete(
        received
            .into_iter()
            .flatten()
            .flat_map(|p| p.messages)
            .collect(),
    ))
}

fn malformed(detail: &str) -> Refusal {
    reject(
        Code::UnexpectedRelay,
        format!("malformed import.transfer part: {detail}"),
    )
}
