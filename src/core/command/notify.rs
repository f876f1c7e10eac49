//! `/notify` and `mention` messages: putting a conversation in front of channels.

use crate::core::code::{reject, Code, Refusal};
use crate::core::event::{InboxReason, NotifyReason};
use crate::core::message::{Message, Role};
use crate::core::state::Status;
use crate::core::transition::{Handled, Step, Verdict};

use super::{id_list, meta_str};

/// `/notify [channelId …]` with optional `meta.channels` or `meta.organizations`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Notify {
    /// Exactly these channels, bypassing workflows.
    pub channels: Vec<String>,
    /// Route over exactly these organizations, in this order.
    pub organizations: Vec<String>,
}

impl Notify {
    pub fn parse(msg: &Message, args: &str) -> Result<Self, Refusal> {
        Ok(Notify {
            channels: id_list(&msg.meta, "channels", args)?,
            organizations: id_list(&msg.meta, "organizations", "")?,
        })
    }

    pub fn apply(self, step: &mut Step<'_>) -> Handled {
        if step.conv.status == Status::Active {
            return Err(reject(
                Code::AlreadyActive,
                "an active conversation cannot be queued",
            ));
        }
        if !self.channels.is_empty() {
            let (online, offline) = channels(step, &self.channels)?;
            step.enter_queue();
            step.add_channels(online, offline, NotifyReason::Notify);
        } else if !self.organizations.is_empty() {
            check_organizations(step, &self.organizations)?;
            step.queue_and_route(Some(&self.organizations), NotifyReason::Notify);
        } else {
            step.queue_and_route(None, NotifyReason::Notify);
        }
        Ok(Verdict::Applied)
    }
}

/// The given channels, looked up and split into (online, offline).
fn channels(step: &Step<'_>, ids: &[String]) -> Result<(Vec<String>, Vec<String>), Refusal> {
    let mut online = Vec::new();
    let mut offline = Vec::new();
    for id in ids {
        let channel = step.env.directory.channel(id).ok_or_else(|| {
            reject(
                Code::UnknownChannel,
                format!("channel {id} is not in the directory"),
            )
        })?;
        if channel.online {
            online.push(channel.id.clone());
        } else {
            offline.push(channel.id.clone());
        }
    }
    Ok((online, offline))
}

fn check_organizations(step: &Step<'_>, ids: &[String]) -> Result<(), Refusal> {
    for id in ids {
        if step.env.directory.organization(id).is_none() {
            return Err(reject(
                Code::UnknownOrganization,
                format!("organization {id} is not in the directory"),
            ));
        }
    }
    Ok(())
}

/// A `mention` message: `meta.targetUser` gets an inbox flag; `meta.targetOrganization` has its
/// workflows run as a contact message would.
pub fn mention(step: &mut Step<'_>) -> Handled {
    if step.msg.role == Role::Contact {
        return Err(reject(
            Code::Forbidden,
            "mentions are for agents and automations",
        ));
    }
    let user = meta_str(&step.msg.meta, "targetUser")?.map(str::to_string);
    let organization = meta_str(&step.msg.meta, "targetOrganization")?.map(str::to_string);
    if user.is_none() && organization.is_none() {
        return Err(reject(
            Code::MissingArgument,
            "a mention needs meta.targetUser or meta.targetOrganization",
        ));
    }
    if let Some(u) = &user {
        step.authorise(u)?;
    }
    if let Some(o) = &organization {
        check_organizations(step, std::slice::from_ref(o))?;
    }
    step.store();
    if let Some(u) = user {
        step.inbox(&u, InboxReason::Mention);
    }
    if let Some(o) = organization {
        if step.conv.status != Status::Active {
            step.queue_and_route(Some(&[o]), NotifyReason::Mention);
        }
    }
    Ok(Verdict::Applied)
}
