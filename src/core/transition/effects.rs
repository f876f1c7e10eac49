//! What handlers do to a conversation through a [`Step`]: its participants, its status and the
//! queued period's channels, and the notifications each change emits.

use crate::core::event::{DequeueReason, EventData, InboxReason, NotifyReason};
use crate::core::routing::route;
use crate::core::state::{Participant, Status};

use super::Step;

impl Step<'_> {
    pub fn is_participant(&self, user: &str) -> bool {
        self.conv.participant(user).is_some()
    }

    /// The participant for `user`, added with no flags if absent.
    pub fn participant_mut(&mut self, user: &str) -> &mut Participant {
        let at = match self.conv.participants.iter().position(|p| p.user == user) {
            Some(i) => i,
            None => {
                self.conv.participants.push(Participant::new(user));
                self.conv.participants.len() - 1
            }
        };
        &mut self.conv.participants[at]
    }

    /// Removes `user` if it is left with no flag set.
    pub fn prune(&mut self, user: &str) {
        self.conv
            .participants
            .retain(|p| p.user != user || p.has_any_flag());
    }

    /// Changes status; leaving `queued` dequeues every channel notified for the queued period.
    pub fn set_status(&mut self, status: Status, reason: DequeueReason, user: Option<&str>) {
        let old = self.conv.status;
        if old == Status::Queued && status != Status::Queued {
            let channels = std::mem::take(&mut self.conv.channels);
            let offline = std::mem::take(&mut self.conv.channels_offline);
            for channel in channels.into_iter().chain(offline) {
                self.emit(EventData::ChannelDequeue {
                    conversation: self.conv.id.clone(),
                    channel,
                    reason,
                    user: user.map(str::to_string),
                });
            }
        }
        if status == Status::Queued && old != Status::Queued {
            self.conv.accepted_since_queued = false;
        }
        self.conv.status = status;
    }

    /// Puts the conversation in `queued` (a new queued period when it was not).
    pub fn enter_queue(&mut self) {
        if self.conv.status != Status::Queued {
            self.conv.accepted_since_queued = false;
            self.conv.status = Status::Queued;
        }
    }

    /// Queues the conversation and runs routing over `scope` (default: its organization and
    /// ancestors), notifying the online channels found.
    pub fn queue_and_route(&mut self, scope: Option<&[String]>, reason: NotifyReason) {
        self.enter_queue();
        let routed = route(&self.conv, scope, self.env.directory);
        self.add_channels(routed.online, routed.offline, reason);
    }

    /// Adds channels to the queued period, notifying the online ones.
    pub fn add_channels(
        &mut self,
        online: Vec<String>,
        offline: Vec<String>,
        reason: NotifyReason,
    ) {
        for channel in offline {
            if !self.conv.channels_offline.contains(&channel) {
                self.conv.channels_offline.push(channel);
            }
        }
        for channel in online {
            if !self.conv.channels.contains(&channel) {
                self.conv.channels.push(channel.clone());
            }
            self.notify_channel(channel, reason);
        }
    }

    /// Notifies every channel of the queued period again.
    pub fn renotify(&mut self, reason: NotifyReason) {
        for channel in self.conv.channels.clone() {
            self.notify_channel(channel, reason);
        }
    }

    fn notify_channel(&mut self, channel: String, reason: NotifyReason) {
        self.emit(EventData::ChannelNotification {
            conversation: self.conv.id.clone(),
            organization: self.conv.organization.clone(),
            channel,
            reason,
        });
    }

    /// Sets a user's inbox flag, adding the participant if needed, and notifies it.
    pub fn inbox(&mut self, user: &str, reason: InboxReason) {
        self.participant_mut(user).inbox = true;
        self.emit(EventData::InboxNotification {
            conversation: self.conv.id.clone(),
            user: user.to_string(),
            reason,
        });
    }

    /// `/accept` for `user`: active, accepted, inbox cleared; the conversation becomes active.
    pub fn accept(&mut self, user: &str) {
        let p = self.participant_mut(user);
        p.active = true;
        p.accepted = true;
        p.inbox = false;
        self.conv.accepted_since_queued = true;
        self.set_status(Status::Active, DequeueReason::Accept, Some(user));
    }
}
