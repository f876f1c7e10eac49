//! Participant commands: `/assign`, `/follow`, `/unfollow`, `/join`, `/accept`, `/leave`
//! (alias `/close`).

use crate::core::code::{ignore, reject, Code, Refusal};
use crate::core::event::{DequeueReason, InboxReason, NotifyReason};
use crate::core::message::Message;
use crate::core::state::Status;
use crate::core::transition::{Handled, Step, Verdict};
use crate::core::Dialect;

use super::id_list;

/// `/assign [userId …]` or `meta.users`: each user gets the inbox flag and a notification.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Assign {
    /// Not empty.
    pub users: Vec<String>,
}

impl Assign {
    pub fn parse(msg: &Message, args: &str) -> Result<Self, Refusal> {
        let users = id_list(&msg.meta, "users", args)?;
        if users.is_empty() {
            return Err(reject(
                Code::MissingArgument,
                "/assign needs meta.users or user IDs",
            ));
        }
        Ok(Assign { users })
    }

    pub fn apply(self, step: &mut Step<'_>) -> Handled {
        for user in &self.users {
            step.authorise(user)?;
        }
        for user in &self.users {
            step.inbox(user, InboxReason::Assign);
        }
        Ok(Verdict::Applied)
    }
}

/// `/follow` (web1on1): inbox notifications on every new contact message.
pub fn follow(step: &mut Step<'_>) -> Handled {
    let user = step.target_user()?;
    if step.conv.participant(&user).is_some_and(|p| p.follow) {
        return Err(ignore(
            Code::NoChange,
            format!("user {user} already follows"),
        ));
    }
    step.participant_mut(&user).follow = true;
    Ok(Verdict::Applied)
}

/// `/unfollow` (web1on1).
pub fn unfollow(step: &mut Step<'_>) -> Handled {
    let user = step.target_user()?;
    let Some(p) = step.conv.participant(&user) else {
        return Err(reject(
            Code::NotAParticipant,
            format!("user {user} is not a participant"),
        ));
    };
    if !p.follow {
        return Err(ignore(
            Code::NoChange,
            format!("user {user} does not follow"),
        ));
    }
    step.participant_mut(&user).follow = false;
    step.prune(&user);
    Ok(Verdict::Applied)
}

/// `/join`: a passive participant; the status is unchanged.
pub fn join(step: &mut Step<'_>) -> Handled {
    let user = step.target_user()?;
    if step.conv.participant(&user).is_some_and(|p| p.active) {
        return Err(ignore(
            Code::NoChange,
            format!("user {user} is already active"),
        ));
    }
    step.participant_mut(&user).active = true;
    Ok(Verdict::Applied)
}

/// `/accept`: responsibility for the conversation, which becomes active.
pub fn accept(step: &mut Step<'_>) -> Handled {
    let user = step.target_user()?;
    let already = step
        .conv
        .participant(&user)
        .is_some_and(|p| p.active && p.accepted && !p.inbox);
    if already && step.conv.status == Status::Active {
        return Err(ignore(
            Code::NoChange,
            format!("user {user} has already accepted"),
        ));
    }
    step.accept(&user);
    Ok(Verdict::Applied)
}

/// `/leave`: the user steps out; the conversation closes, re-queues, or stays with the other
/// accepting agents.
pub fn leave(step: &mut Step<'_>) -> Handled {
    let user = step.target_user()?;
    let Some(p) = step.conv.participant(&user) else {
        return Err(reject(
            Code::NotAParticipant,
            format!("user {user} is not a participant"),
        ));
    };
    let had_flags = p.active || p.accepted || p.inbox;
    let others_accepted = step
        .conv
        .participants
        .iter()
        .any(|o| o.user != user && o.accepted);
    let closes = step.conv.replied()
        && (step.env.dialect == Dialect::Chatshipper || step.conv.accepted_since_queued);
    let status = step.conv.status;
    let keeps_active = status == Status::Active && others_accepted;
    if !had_flags && (keeps_active || (closes && status == Status::Closed)) {
        return Err(ignore(
            Code::NoChange,
            format!("user {user} has nothing to leave"),
        ));
    }

    let p = step.participant_mut(&user);
    p.active = false;
    p.accepted = false;
    p.inbox = false;
    step.prune(&user);
    if keeps_active {
        return Ok(Verdict::Applied);
    }
    if closes {
        step.set_status(Status::Closed, DequeueReason::Leave, Some(&user));
    } else {
        step.queue_and_route(None, NotifyReason::Leave);
    }
    Ok(Verdict::Applied)
}
