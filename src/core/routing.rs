//! Routing ("running the workflows for the queued state") and authorisation (SPEC section 4).

use std::sync::Arc;

use crate::core::code::{reject, Code, Refusal};
use crate::core::directory::{lineage, Directory, Organization, User, When};
use crate::core::state::Conversation;

/// The channels one routing run found, de-duplicated in first-seen order.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Routed {
    pub online: Vec<String>,
    pub offline: Vec<String>,
}

/// Evaluates the workflows of `scope` (or of the conversation's organization and its
/// ancestors) against the conversation.
pub fn route(conv: &Conversation, scope: Option<&[String]>, directory: &dyn Directory) -> Routed {
    let organizations: Vec<Arc<Organization>> = match scope {
        Some(ids) => ids
            .iter()
            .filter_map(|id| directory.organization(id))
            .collect(),
        None => lineage(directory, &conv.organization),
    };
    let mut routed = Routed::default();
    let mut matched_any = false;
    'orgs: for org in &organizations {
        for workflow in &org.workflows {
            if !matches(&workflow.when, conv) {
                continue;
            }
            matched_any = true;
            let mut notified_online = false;
            for channel in workflow
                .channels
                .iter()
                .filter_map(|id| directory.channel(id))
            {
                notified_online |= channel.online;
                routed.add(&channel.id, channel.online);
            }
            if workflow.stop && notified_online {
                break 'orgs;
            }
        }
    }
    if !matched_any {
        for channel in directory.channels_of(&conv.organization) {
            routed.add(&channel.id, channel.online);
        }
    }
    routed
}

impl Routed {
    fn add(&mut self, id: &str, online: bool) {
        let list = if online {
            &mut self.online
        } else {
            &mut self.offline
        };
        if !list.iter().any(|c| c == id) {
            list.push(id.to_string());
        }
    }
}

/// All conditions given must hold; `keywords` holds when any keyword occurs, case-insensitively,
/// in the contact's last message.
pub fn matches(when: &When, conv: &Conversation) -> bool {
    if when.category_index.is_some() && when.category_index != conv.category_index {
        return false;
    }
    if when.touchpoint.is_some() && when.touchpoint != conv.touchpoint {
        return false;
    }
    if when.language.is_some() && when.language != conv.language {
        return false;
    }
    if when.meta.iter().any(|(k, v)| conv.meta.get(k) != Some(v)) {
        return false;
    }
    if !when.keywords.is_empty() {
        let Some(last) = &conv.last_contact else {
            return false;
        };
        let text = last.text.to_lowercase();
        if !when
            .keywords
            .iter()
            .any(|k| text.contains(&k.to_lowercase()))
        {
            return false;
        }
    }
    true
}

/// A user may act on (or be named in) a conversation when it belongs to the conversation's
/// organization or one of its ancestors. `lineage` is that organization's lineage.
pub fn authorise(
    directory: &dyn Directory,
    lineage: &[Arc<Organization>],
    user: &str,
) -> Result<Arc<User>, Refusal> {
    let Some(found) = directory.user(user) else {
        return Err(reject(
            Code::Forbidden,
            format!("user {user} is not in the directory"),
        ));
    };
    if lineage.iter().any(|o| o.id == found.organization) {
        Ok(found)
    } else {
        Err(reject(
            Code::Forbidden,
            format!(
                "user {user} does not belong to this conversation's organization or its ancestors"
            ),
        ))
    }
}
