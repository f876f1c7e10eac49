//! Chat messages (SPEC section 5): what a contact's, an agent's or a bot's chat does to the
//! conversation, and outbound delivery (section 6).

use crate::core::code::{reject, Code};
use crate::core::directory::block_time;
use crate::core::event::{EventData, InboxReason, NotifyReason};
use crate::core::message::Role;
use crate::core::state::{Conversation, LastContact, Status};
use crate::core::transition::{Handled, Step, Verdict};

/// The order tried when the selected touchpoint is unavailable.
pub const FALLBACK_TOUCHPOINTS: [&str; 4] = ["web", "facebook", "email", "sms"];

pub fn apply(step: &mut Step<'_>) -> Handled {
    match step.msg.role {
        Role::Contact => contact(step),
        Role::Agent if !step.msg.is_backchannel => agent(step),
        Role::Agent | Role::Bot => {
            step.store();
            team_inbox(step);
            Ok(Verdict::Applied)
        }
    }
}

fn contact(step: &mut Step<'_>) -> Handled {
    if step.conv.is_team() {
        return Err(reject(
            Code::NoContact,
            "a team conversation has no contact to post in it",
        ));
    }
    if step.conv.blocked {
        return Err(reject(Code::Blocked, "the conversation is blocked"));
    }
    let ip = step
        .msg
        .contact
        .as_ref()
        .and_then(|c| c.ip.as_deref())
        .or(step.conv.contact.ip.as_deref());
    if let Some(ip) = ip {
        let since = step
            .env
            .directory
            .blocked_since(&step.conv.organization, ip);
        if since.is_some_and(|t| t <= block_time(step.msg.created_at_nanos)) {
            return Err(reject(
                Code::Blocked,
                format!("contact IP {ip} is blocked in this organization"),
            ));
        }
    }

    if let Some(given) = &step.msg.contact {
        let known = &mut step.conv.contact;
        for (field, value) in [
            (&mut known.ip, &given.ip),
            (&mut known.email, &given.email),
            (&mut known.phone, &given.phone),
        ] {
            if value.is_some() {
                field.clone_from(value);
            }
        }
    }
    if let Some(touchpoint) = &step.msg.touchpoint {
        let conv = &mut step.conv;
        conv.touchpoints.entry(touchpoint.clone()).or_default();
        if conv.touchpoint.is_none() {
            conv.touchpoint = Some(touchpoint.clone());
            if let Some(t) = conv.touchpoints.get_mut(touchpoint) {
                t.selected = true;
            }
        }
    }
    step.store();
    step.conv.last_contact = Some(LastContact {
        message: step.msg.id.clone(),
        text: step.msg.text.clone(),
        replied: false,
    });
    match step.conv.status {
        Status::Closed => step.queue_and_route(None, NotifyReason::Message),
        Status::Queued => step.renotify(NotifyReason::Message),
        Status::Active | Status::Archived => {}
    }
    let followers: Vec<String> = step
        .conv
        .participants
        .iter()
        .filter(|p| p.follow && !p.accepted)
        .map(|p| p.user.clone())
        .collect();
    for user in followers {
        step.inbox(&user, InboxReason::Follow);
    }
    Ok(Verdict::Applied)
}

fn agent(step: &mut Step<'_>) -> Handled {
    if !step.conv.is_team() {
        let Some(touchpoint) = delivery_touchpoint(&step.conv) else {
            // The message is kept (the agent wrote it) but could not go out.
            return Ok(Verdict::Kept(reject(
                Code::NoTouchpoint,
                "no touchpoint is available to deliver this message to the contact",
            )));
        };
        step.store();
        step.emit(EventData::MessageDelivery {
            conversation: step.conv.id.clone(),
            message: step.msg.id.clone(),
            touchpoint,
            text: step.msg.text.clone(),
            sender: step.msg.sender.clone(),
        });
        if let Some(last) = &mut step.conv.last_contact {
            last.replied = true;
        }
    } else {
        step.store();
    }
    let sender = step.sender().to_string();
    if !step.is_participant(&sender) {
        step.accept(&sender);
    }
    team_inbox(step);
    Ok(Verdict::Applied)
}

/// Team conversations: every chat message flags the inbox of every participant not active,
/// the sender excepted.
fn team_inbox(step: &mut Step<'_>) {
    if !step.conv.is_team() {
        return;
    }
    let sender = step.msg.sender.as_deref();
    let users: Vec<String> = step
        .conv
        .participants
        .iter()
        .filter(|p| !p.active && Some(p.user.as_str()) != sender)
        .map(|p| p.user.clone())
        .collect();
    for user in users {
        step.inbox(&user, InboxReason::Team);
    }
}

/// The touchpoint an agent message goes out on: the selected one if available, else the first
/// available of [`FALLBACK_TOUCHPOINTS`].
pub fn delivery_touchpoint(conv: &Conversation) -> Option<String> {
    conv.touchpoint
        .as_ref()
        .filter(|t| conv.touchpoints.contains_key(*t))
        .cloned()
        .or_else(|| {
            FALLBACK_TOUCHPOINTS
                .iter()
                .find(|t| conv.touchpoints.contains_key(**t))
                .map(|t| t.to_string())
        })
}
