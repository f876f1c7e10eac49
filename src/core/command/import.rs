//! `/import <originId>`: merging an origin conversation into this one (the target).
//!
//! The origin may live on another partition and another instance, so the merge is relayed
//! through the input topic, which keeps each conversation's own order and lets the stream's
//! transactions make every step exactly-once:
//!
//! 1. **target**, `/import`: checks what it can alone, marks the import pending, and relays an
//!    `import.request` keyed by the origin. No result yet.
//! 2. **origin**, `import.request`: checks the origin (exists, same organization, not archived,
//!    not importing itself); archives it, renames it `TRANSFERRED`, tags each message with
//!    `meta._target`, and relays an `import.transfer` carrying the copies back to the target —
//!    or a transfer carrying the refusal.
//! 3. **target**, `import.transfer`: interleaves the copies with its own messages by
//!    `createdAt` and emits the `/import`'s one result.
//!
//! Relay records get no result of their own: the `/import` command gets exactly one. A
//! conversation with an import pending refuses to be an origin, so two conversations importing
//! each other cannot both end up archived.
//!
//! An import that waits longer than [`Env::import_timeout_ms`](crate::core::transition::Env)
//! for its transfer is failed by the target, which tells the origin to undo its part
//! ([`cancel`]).
//!
//! No relay record is larger than [`Env::max_relay_bytes`](crate::core::transition::Env): a
//! transfer that would be travels as several records, which the target keeps in its pending
//! import until the last has arrived, then applies as one ([`parts`]).

mod cancel;
mod parts;

pub use cancel::cancel;
pub(crate) use cancel::{nothing_to_cancel, time_out};

use serde::Deserialize;
use serde_json::{json, Value};

use crate::core::code::{reject, Code, Refusal};
use crate::core::event::{DequeueReason, Output, Payload, Topic};
use crate::core::id::{derive, is_object_id};
use crate::core::log::LogWrite;
use crate::core::message::{Message, IMPORT_REQUEST, IMPORT_TRANSFER};
use crate::core::state::{LastContact, PendingImport, Status, StoredMessage, Transferred};
use crate::core::transition::{Handled, Step, Transition, Verdict};

use super::split_word;

/// The `meta` of an `import.request`.
#[derive(Debug, Clone, Deserialize)]
struct Request {
    target: String,
    organization: String,
    command: StoredMessage,
}

/// The `meta` of an `import.transfer`.
#[derive(Debug, Clone, Deserialize)]
struct Transfer {
    origin: String,
    command: StoredMessage,
    #[serde(default)]
    messages: Vec<StoredMessage>,
    #[serde(default)]
    error: Option<TransferError>,
    /// Which part this is (from 1) and of how many, for a transfer of several records.
    #[serde(default)]
    part: Option<u32>,
    #[serde(default)]
    parts: Option<u32>,
}

#[derive(Debug, Clone, Deserialize)]
struct TransferError {
    code: Code,
    detail: String,
}

fn relay_meta<T: for<'de> Deserialize<'de>>(msg: &Message) -> Result<T, Refusal> {
    serde_json::from_value(Value::Object(msg.meta.clone())).map_err(|e| {
        reject(
            Code::UnexpectedRelay,
            format!("{} record with malformed meta: {e}", msg.type_name),
        )
    })
}

/// `/import <originId>`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Import<'m> {
    /// An ObjectId.
    pub origin: &'m str,
}

impl<'m> Import<'m> {
    pub fn parse(args: &'m str) -> Result<Self, Refusal> {
        let (origin, _) = split_word(args);
        if origin.is_empty() {
            return Err(reject(
                Code::MissingArgument,
                "/import needs the origin conversation ID",
            ));
        }
        if !is_object_id(origin) {
            return Err(reject(
                Code::InvalidId,
                format!("{origin:?} is not an ObjectId"),
            ));
        }
        Ok(Import { origin })
    }

    /// Step 1, on the target.
    pub fn apply(self, step: &mut Step<'_>) -> Handled {
        let origin = self.origin;
        // Compared with the conversation, so checked here; it follows the argument checks, as
        // it always did.
        if origin == step.conv.id {
            return Err(reject(
                Code::SameConversation,
                "a conversation cannot import itself",
            ));
        }
        if let Some(p) = &step.conv.pending_import {
            return Err(reject(
                Code::ImportInProgress,
                format!("the import of {} is still in progress", p.origin),
            ));
        }
        let command = StoredMessage::from_message(step.msg, 0);
        let record = json!({
            "id": derive(&[&step.msg.id, IMPORT_REQUEST]),
            "conversation": origin,
            "type": IMPORT_REQUEST,
            "role": "bot",
            "sender": step.msg.sender,
            "text": "",
            "createdAt": step.now(),
            "meta": {
                "target": step.conv.id,
                "organization": step.conv.organization,
                "command": command,
            },
        });
        // Every relay record carries the command: one too large to relay could never come back.
        let bytes = parts::json_len(&record);
        if bytes > step.env.max_relay_bytes {
            return Err(reject(
                Code::LimitReached,
                format!(
                    "the /import command is too large to relay: its request takes {bytes} \
                     bytes, more than the {} a relay record may",
                    step.env.max_relay_bytes
                ),
            ));
        }
        step.conv.pending_import = Some(PendingImport {
            command: step.msg.id.clone(),
            origin: origin.to_string(),
            started: Some(step.msg.created_at.clone()),
            sender: step.msg.sender.clone(),
            transfer: None,
        });
        step.extra.push(Output {
            topic: Topic::Input,
            key: origin.to_string(),
            value: Payload::Message(record),
        });
        Ok(Verdict::Deferred)
    }
}

/// A transfer record of step 2, back to the target: its value.
fn transfer_value(request: &Message, req: &Request, body: &parts::Body) -> Value {
    json!({
        "id": body.id,
        "conversation": req.target,
        "type": IMPORT_TRANSFER,
        "role": "bot",
        "sender": request.sender,
        "text": "",
        "createdAt": request.created_at,
        "meta": body.meta,
    })
}

fn transfer_output(request: &Message, req: &Request, body: &parts::Body) -> Output {
    Output {
        topic: Topic::Input,
        key: req.target.clone(),
        value: Payload::Message(transfer_value(request, req, body)),
    }
}

/// What every transfer record's `meta` holds.
fn base_meta(request: &Message, req: &Request) -> Value {
    json!({ "origin": request.conversation, "command": req.command })
}

/// The transfer carrying a refusal: always one record.
fn refusal_record(request: &Message, req: &Request, r: Refusal) -> Output {
    let mut meta = base_meta(request, req);
    meta["error"] = json!({ "code": r.code, "detail": r.detail });
    let body = parts::Body {
        id: parts::transfer_id(&req.command.id),
        meta,
    };
    transfer_output(request, req, &body)
}

/// Step 2 when the origin does not exist.
pub fn missing_origin(msg: &Message) -> Transition {
    let req = match relay_meta::<Request>(msg) {
        Ok(req) => req,
        Err(r) => return crate::core::transition::refused_unknown(msg, r),
    };
    let refusal = reject(
        Code::UnknownConversation,
        format!("origin conversation {} does not exist", msg.conversation),
    );
    Transition {
        conversation: None,
        log: Vec::new(),
        outputs: vec![refusal_record(msg, &req, refusal)],
        blocks: Vec::new(),
        outcome: None,
    }
}

/// Step 2, on the origin: `import.request`.
pub fn origin(step: &mut Step<'_>) -> Handled {
    let req: Request = relay_meta(step.msg)?;
    let refusal = if step.conv.status == Status::Archived {
        Some(reject(
            Code::Archived,
            format!("origin conversation {} is archived", step.conv.id),
        ))
    } else if step.conv.organization != req.organization {
        Some(reject(
            Code::OrganizationMismatch,
            format!(
                "origin conversation {} belongs to another organization",
                step.conv.id
            ),
        ))
    } else if step.conv.pending_import.is_some() {
        Some(reject(
            Code::ImportInProgress,
            format!("origin conversation {} is itself importing", step.conv.id),
        ))
    } else {
        None
    };
    if let Some(r) = refusal {
        step.extra.push(refusal_record(step.msg, &req, r));
        return Ok(Verdict::Relayed { applied: false });
    }

    let originals = step.log.all();
    let mut copies = Vec::with_capacity(originals.len());
    let mut tagged = Vec::with_capacity(originals.len());
    for m in originals {
        let copy_id = derive(&[&req.command.id, &m.id]);
        let mut copy = m.clone();
        copy.id = copy_id.clone();
        copy.meta.insert("_source".into(), json!(m.id));
        copy.version += 1;
        copies.push(copy);
        let mut original = m.clone();
        original.meta.insert("_target".into(), json!(copy_id));
        original.version += 1;
        tagged.push(original);
    }
    let request: &Message = step.msg;
    let bodies = parts::split(
        &req.command.id,
        &base_meta(request, &req),
        &copies,
        step.env.max_relay_bytes,
        |body| transfer_value(request, &req, body),
    );
    let bodies = match bodies {
        Ok(bodies) => bodies,
        Err(r) => {
            step.extra.push(refusal_record(request, &req, r));
            return Ok(Verdict::Relayed { applied: false });
        }
    };
    step.writes.push(LogWrite::Replace(tagged));
    // What a cancel would need to undo this, should the target time out (`cancel`).
    step.conv.transferred = Some(Transferred {
        target: req.target.clone(),
        command: req.command.id.clone(),
        name: std::mem::replace(&mut step.conv.name, "TRANSFERRED".into()),
        status: step.conv.status,
        channels: step.conv.channels.clone(),
        channels_offline: step.conv.channels_offline.clone(),
    });
    step.set_status(Status::Archived, DequeueReason::Archive, None);
    for body in &bodies {
        step.extra.push(transfer_output(request, &req, body));
    }
    Ok(Verdict::Relayed { applied: true })
}

fn nanos(time: &str) -> i64 {
    chrono::DateTime::parse_from_rfc3339(time)
        .ok()
        .and_then(|t| t.timestamp_nanos_opt())
        .unwrap_or(i64::MIN)
}

/// Step 3, on the target: `import.transfer`.
pub fn transfer(step: &mut Step<'_>) -> Handled {
    let t: Transfer = relay_meta(step.msg)?;
    let expected = step
        .conv
        .pending_import
        .as_ref()
        .is_some_and(|p| p.command == t.command.id && p.origin == t.origin);
    if !expected {
        return Err(reject(
            Code::UnexpectedRelay,
            "no import is pending for this transfer",
        ));
    }
    let messages = if t.part.is_none() && t.parts.is_none() {
        t.messages
    } else {
        if t.error.is_some() {
            return Err(reject(
                Code::UnexpectedRelay,
                "a refusal travels as one transfer record, not in parts",
            ));
        }
        let pending = step.conv.pending_import.as_mut().expect("checked above");
        match parts::gather(pending, t.part, t.parts, t.messages)? {
            parts::Gathered::Waiting => return Ok(Verdict::Relayed { applied: false }),
            parts::Gathered::Complete(all) => {
                step.cause = Some(parts::transfer_id(&t.command.id));
                all
            }
        }
    };
    // From here on the import is over, merged or not: it is no longer pending, and the
    // `/import` gets its one result.
    step.result_for = Some(t.command.id.clone());
    step.conv.pending_import = None;
    if let Some(e) = t.error {
        return Ok(Verdict::ImportFailed(reject(e.code, e.detail)));
    }
    if step.conv.status == Status::Archived {
        return Ok(Verdict::ImportFailed(reject(
            Code::Archived,
            "the conversation is archived and accepts no change",
        )));
    }

    // Order: createdAt, then the target's own messages before copies, then ID.
    let mut merged: Vec<(i64, u8, StoredMessage)> = step
        .log
        .all()
        .iter()
        .cloned()
        .chain(std::iter::once(t.command))
        .map(|m| (nanos(&m.created_at), 0, m))
        .chain(messages.into_iter().map(|m| (nanos(&m.created_at), 1, m)))
        .collect();
    merged.sort_by(|a, b| (a.0, a.1, &a.2.id).cmp(&(b.0, b.1, &b.2.id)));
    let merged: Vec<StoredMessage> = merged
        .into_iter()
        .enumerate()
        .map(|(i, (_, _, mut m))| {
            m.index = i as u64;
            m
        })
        .collect();

    step.conv.message_count = merged.len() as u64;
    step.conv.last_contact = merged
        .iter()
        .rposition(StoredMessage::is_contact_chat)
        .map(|at| LastContact {
            message: merged[at].id.clone(),
            text: merged[at].text.clone(),
            replied: merged[at + 1..].iter().any(StoredMessage::is_reply),
        });
    step.writes.push(LogWrite::Replace(merged));
    step.stored = true;
    Ok(Verdict::Applied)
}
