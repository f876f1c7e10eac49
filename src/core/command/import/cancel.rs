//! An `/import` that waits too long for its transfer (SPEC section 6 asks for one result and an
//! all-or-nothing merge, and an origin may never answer: its partition halted, a record lost).
//!
//! The core has no clock, so *too long* is in message time: the first message the target gets
//! more than [`Env::import_timeout_ms`] after the `/import`'s `createdAt` fails the import before
//! it is itself applied. The `/import` gets its one result (`import_timed_out`), and an
//! `import.cancel` goes to the origin, keyed by it, after the `import.request` the target sent
//! earlier under the same key: the origin sees the request first. If the request archived the
//! origin, the cancel undoes that from what the origin kept ([`Transferred`]); the transfer it
//! sent is refused by the target, which no longer expects it. A transfer the target applied in
//! time ends the pending import, so no cancel can follow a merge.

use serde::Deserialize;
use serde_json::{json, Value};

use crate::core::code::Code;
use crate::core::event::{EventData, NotifyReason, Outcome, Output, Payload, Topic};
use crate::core::id::derive;
use crate::core::log::LogWrite;
use crate::core::message::{Message, IMPORT_CANCEL};
use crate::core::state::Conversation;
use crate::core::transition::{Env, Handled, Step, Verdict};

use super::relay_meta;

/// The `meta` of an `import.cancel`.
#[derive(Debug, Clone, Deserialize)]
struct Cancel {
    target: String,
    /// The `/import` command's ID.
    command: String,
}

/// A time's nanoseconds since the epoch, if it is one.
fn instant(time: &str) -> Option<i128> {
    let t = chrono::DateTime::parse_from_rfc3339(time).ok()?;
    Some(i128::from(t.timestamp()) * 1_000_000_000 + i128::from(t.timestamp_subsec_nanos()))
}

/// Fails `conv`'s pending import if `msg` comes more than the timeout after it began (strictly:
/// a message exactly at the limit does not). Returns the records that says: the cancel to the
/// origin and the `/import`'s result, to go out before `msg`'s own.
pub(crate) fn time_out(conv: &mut Conversation, msg: &Message, env: &Env<'_>) -> Vec<Output> {
    let Some(pending) = &conv.pending_import else {
        return Vec::new();
    };
    let (Some(started), Some(sender)) = (&pending.started, &pending.sender) else {
        return Vec::new();
    };
    let limit = i128::from(env.import_timeout_ms) * 1_000_000;
    match (instant(started), instant(&msg.created_at)) {
        (Some(from), Some(now)) if now - from > limit => {}
        _ => return Vec::new(),
    }
    let cancel = json!({
        "id": derive(&[&pending.command, IMPORT_CANCEL]),
        "conversation": pending.origin,
        "type": IMPORT_CANCEL,
        "role": "bot",
        "sender": sender,
        "text": "",
        "createdAt": msg.created_at,
        "meta": { "target": conv.id, "command": pending.command },
    });
    let result = EventData::CommandResult {
        conversation: conv.id.clone(),
        message: Some(pending.command.clone()),
        outcome: Outcome::Rejected,
        code: Some(Code::ImportTimedOut),
        detail: Some(format!(
            "the import of {} began at {started} and had not arrived by {}, more than {} ms \
             later (imports.timeout_ms)",
            pending.origin, msg.created_at, env.import_timeout_ms
        )),
        // As for any refusal: the version does not move, nor does `updatedAt`.
        version: conv.version,
    };
    // Named after the import, not the message that happened to end it: a replay of the same
    // records names it the same, and the message's own outputs keep their positions.
    let cause = derive(&[&pending.command, "import.timeout"]);
    let outputs = vec![
        Output {
            topic: Topic::Input,
            key: pending.origin.clone(),
            value: Payload::Message(cancel),
        },
        Output::event(&cause, 0, Some(&msg.created_at), &conv.id, result),
    ];
    conv.pending_import = None;
    outputs
}

/// On the origin: `import.cancel`. Undoes the archiving the named `/import` caused, if it did;
/// anything else (the origin refused the request, or archived for another import) is left as
/// it is. Never a result of its own.
pub fn cancel(step: &mut Step<'_>) -> Handled {
    let c: Cancel = relay_meta(step.msg)?;
    let ours = step
        .conv
        .transferred
        .as_ref()
        .is_some_and(|t| t.command == c.command && t.target == c.target);
    if !ours {
        return Ok(Verdict::Relayed { applied: false });
    }
    let t = step.conv.transferred.take().expect("checked above");
    // Only the tags this import added: each names the copy derived from its message.
    for m in step.log.all() {
        let tag = derive(&[&t.command, &m.id]);
        if m.meta.get("_target").and_then(Value::as_str) == Some(tag.as_str()) {
            let mut untagged = m.clone();
            untagged.meta.remove("_target");
            untagged.version += 1;
            step.writes.push(LogWrite::Update(untagged));
        }
    }
    step.conv.name = t.name;
    // Set directly, not through `set_status`: the queued period the archiving interrupted
    // resumes (its `acceptedSinceQueued` as it was), and its channels hear of it again.
    step.conv.status = t.status;
    step.add_channels(t.channels, t.channels_offline, NotifyReason::Notify);
    Ok(Verdict::Relayed { applied: true })
}

/// An `import.cancel` for an origin that does not exist: its request was refused, so there is
/// nothing to undo, and a relay record gets no result.
pub(crate) fn nothing_to_cancel() -> crate::core::transition::Transition {
    crate::core::transition::Transition {
        conversation: None,
        log: Vec::new(),
        outputs: Vec::new(),
        blocks: Vec::new(),
        outcome: None,
    }
}

#[cfg(test)]
mod tests {
    use super::instant;

    #[test]
    fn instants_compare_across_offsets_and_fractions() {
        let a = instant("2024-05-01T10:00:00Z").unwrap();
        assert_eq!(instant("2024-05-01T12:00:00+02:00"), Some(a));
        assert_eq!(instant("2024-05-01T10:00:00.000000001Z"), Some(a + 1));
        assert_eq!(instant("not a time"), None);
    }
}
