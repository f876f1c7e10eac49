//! The transition function: `(state, message, directory) -> (new state, events, result)`.
//!
//! [`apply`] is the only way state changes. It is pure: no IO, no clock (*now* is the message's
//! `createdAt`), no randomness (new IDs are derived from the causing message). Handlers for each
//! message kind and command family live in [`crate::core::chat`] and [`crate::core::command`]; a
//! command is first parsed into a typed [`Command`], then applied. Handlers work on a [`Step`] and
//! return a [`Handled`]:
//!
//! - `Err(refusal)`: nothing changed. The state and the log are as they were, no event goes
//!   out, and the result is the refusal: `rejected`, or `ignored` for a message that would change
//!   nothing. Handlers check everything before they mutate anything; `Step::finish` asserts, in
//!   debug builds, that a refusal left no log write, event, relay record or block.
//! - `Ok(verdict)`: what was done, including the two refusals that still change something: a
//!   message kept in the log although not applied ([`Verdict::Kept`]), and an `/import` ended by
//!   a refusal ([`Verdict::ImportFailed`]).

use std::sync::Arc;

use crate::core::code::{reject, Code, Refusal};
use crate::core::command::Command;
use crate::core::directory::{lineage, Block, Directory, Organization, User};
use crate::core::event::{EventData, Outcome, Output};
use crate::core::log::{Log, LogWrite};
use crate::core::message::{Invalid, Kind, Message, Role};
use crate::core::routing::authorise;
use crate::core::state::{Conversation, Status, StoredMessage};
use crate::core::Dialect;

mod effects;

/// What the core reads besides the conversation: reference data, the dialect, how large a
/// record it may address to the input topic, and how long an `/import` may stay pending.
#[derive(Clone, Copy)]
pub struct Env<'a> {
    pub directory: &'a dyn Directory,
    pub dialect: Dialect,
    /// The most bytes a relay record may take, serialised (its value): a larger `/import`
    /// transfer travels as several records. The runtime derives it from the record limits the
    /// input topic and the producer enforce, leaving room for the record's key and headers.
    pub max_relay_bytes: usize,
    /// How long, in message time, an `/import` may stay pending: a message to its target more
    /// than this after the `/import`'s `createdAt` fails it first (`imports.timeout_ms`).
    pub import_timeout_ms: u64,
}

/// Everything one message does.
#[derive(Debug, Clone, PartialEq)]
pub struct Transition {
    /// The conversation afterwards; `None` when it does not exist (and was not created).
    pub conversation: Option<Conversation>,
    /// Changes to the conversation's log, in order.
    pub log: Vec<LogWrite>,
    /// Output records in order; the result, when this message concludes one, is last. An
    /// `/import` the message found timed out comes first: its cancel, then its result.
    pub outputs: Vec<Output>,
    /// IPs to add to organizations' block lists.
    pub blocks: Vec<Block>,
    /// The outcome reported in this transition's result, if it has one.
    pub outcome: Option<Outcome>,
}

/// What a handler reports when it did not refuse the message outright.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// The message changed the conversation: stored, version + 1, result `applied`.
    Applied,
    /// The message is kept in the log (and its events go out), but it is not applied: the
    /// result is the refusal (`ignored` or `rejected`) and the version is unchanged. A bot
    /// command (`ignored`), and an agent message with no touchpoint to go out on (`rejected`).
    Kept(Refusal),
    /// The result will come from a later relay step (`/import`, step 1).
    Deferred,
    /// A relay record was handled; relay records get no result of their own.
    Relayed { applied: bool },
    /// A relay record ended a pending `/import` with a refusal (`/import`, step 3): the import
    /// is no longer pending, and the `/import` gets the refusal as its result.
    ImportFailed(Refusal),
}

/// `Err` means nothing changed (see the module docs).
pub type Handled = Result<Verdict, Refusal>;

/// What an adapter must have loaded from the log before calling [`apply`] for `message`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LogNeeds {
    /// One message, by ID (`/action`).
    pub message: Option<String>,
    /// The whole log (`/import`'s relay steps).
    pub all: bool,
}

/// Which parts of the log [`apply`] will read for this message.
pub fn needs(message: &Message) -> LogNeeds {
    match message.kind {
        Kind::ImportRequest | Kind::ImportTransfer | Kind::ImportCancel => LogNeeds {
            message: None,
            all: true,
        },
        // The dialect changes which commands and properties exist, never what an `/action`
        // is, so either serves; `apply` parses again, which for an `/action` borrows all it
        // holds from the message.
        Kind::Command => match Command::parse(message, Dialect::default()) {
            Ok(Command::Action(action)) => LogNeeds {
                message: Some(action.message().to_string()),
                all: false,
            },
            _ => LogNeeds::default(),
        },
        _ => LogNeeds::default(),
    }
}

/// Applies one message to one conversation.
///
/// The message is taken by value so that, when it is stored, its fields move into the log
/// rather than being copied.
pub fn apply(
    conversation: Option<Conversation>,
    log: &dyn Log,
    message: Message,
    env: &Env<'_>,
) -> Transition {
    let existed = conversation.is_some();
    let mut conv = match conversation {
        Some(c) => c,
        None => match message.kind {
            Kind::ImportRequest => return crate::core::command::import::missing_origin(&message),
            Kind::ImportCancel => return crate::core::command::import::nothing_to_cancel(),
            _ => match create(&message, env) {
                Ok(c) => c,
                Err(refusal) => return refused_unknown(&message, refusal),
            },
        },
    };
    // An import that timed out ends before the message is applied, whatever the message.
    let timed_out = crate::core::command::import::time_out(&mut conv, &message, env);
    // Debug builds check that a refusal left the conversation as it was (`finish` checks the rest).
    #[cfg(debug_assertions)]
    let before = conv.clone();
    let mut step = Step::new(conv, log, &message, env);
    let handled = step.run();
    #[cfg(debug_assertions)]
    if let Err(refusal) = &handled {
        debug_assert!(
            step.conv == before,
            "a refusal must change nothing: {refusal:?}"
        );
    }
    let (mut transition, own_slot) = step.finish(handled, existed);
    transition.outputs.splice(0..0, timed_out);
    // The handlers' borrows of the message have ended: move it into the slot it reserved.
    if let Some(LogWrite::Append(slot)) = own_slot.and_then(|at| transition.log.get_mut(at)) {
        slot.fill_from(message);
    }
    transition
}

/// The result for a record that decoded but broke a rule of SPEC section 2.
pub fn invalid(current: Option<&Conversation>, record: &Invalid, locator: &str) -> Output {
    let key = record.conversation.as_str();
    let message = record.message.as_deref();
    Output::event(
        message.unwrap_or(locator),
        0,
        record.time.as_deref(),
        key,
        EventData::CommandResult {
            conversation: key.to_string(),
            message: message.map(str::to_string),
            outcome: Outcome::Rejected,
            code: Some(record.code),
            detail: Some(record.detail.clone()),
            version: current.map_or(0, |c| c.version),
        },
    )
}

fn create(message: &Message, env: &Env<'_>) -> Result<Conversation, Refusal> {
    let Some(org) = &message.organization else {
        return Err(reject(
            Code::UnknownConversation,
            format!(
                "conversation {} does not exist and the message carries no organization to create it",
                message.conversation
            ),
        ));
    };
    if env.directory.organization(org).is_none() {
        return Err(reject(
            Code::UnknownOrganization,
            format!("organization {org} is not in the directory"),
        ));
    }
    let kind = message.conversation_type.as_deref().unwrap_or("contact");
    Ok(Conversation::new(
        &message.conversation,
        org,
        kind,
        &message.created_at,
    ))
}

/// The transition for a message refused before any conversation exists to apply it to.
pub(crate) fn refused_unknown(message: &Message, refusal: Refusal) -> Transition {
    let record = Invalid {
        conversation: message.conversation.clone(),
        message: Some(message.id.clone()),
        code: refusal.code,
        detail: refusal.detail,
        time: Some(message.created_at.clone()),
    };
    let result = invalid(None, &record, &message.id);
    Transition {
        conversation: None,
        log: Vec::new(),
        outputs: vec![result],
        blocks: Vec::new(),
        outcome: Some(Outcome::Rejected),
    }
}

/// The working context of one transition.
pub struct Step<'a> {
    pub msg: &'a Message,
    pub env: &'a Env<'a>,
    pub log: &'a dyn Log,
    pub conv: Conversation,
    /// The conversation's organization, then its ancestors; looked up on first use, since most
    /// chat messages never need it.
    lineage: std::cell::OnceCell<Vec<Arc<Organization>>>,
    pub writes: Vec<LogWrite>,
    events: Vec<EventData>,
    /// Records keyed by another conversation (the relay), emitted after the events.
    pub extra: Vec<Output>,
    pub blocks: Vec<Block>,
    /// The message the result is about, when not the one being applied (`/import`, step 3).
    pub result_for: Option<String>,
    /// The ID the outputs' IDs derive from, when not the applied message's: the last part of a
    /// transfer names the `/import`'s result after the whole transfer, so that the result is
    /// the same whichever part completed it, and as it is for a transfer of one record.
    pub cause: Option<String>,
    /// The applied message is already in the log (or must not be stored).
    pub stored: bool,
    /// Where in `writes` the message's own append waits to be filled (see [`apply`]).
    own_slot: Option<usize>,
}

impl<'a> Step<'a> {
    pub fn new(conv: Conversation, log: &'a dyn Log, msg: &'a Message, env: &'a Env<'a>) -> Self {
        Step {
            msg,
            env,
            log,
            conv,
            lineage: std::cell::OnceCell::new(),
            writes: Vec::new(),
            events: Vec::new(),
            extra: Vec::new(),
            blocks: Vec::new(),
            result_for: None,
            cause: None,
            stored: false,
            own_slot: None,
        }
    }

    fn run(&mut self) -> Handled {
        // Relay records make their own checks: they must answer, never just fail.
        match self.msg.kind {
            Kind::ImportRequest => return crate::core::command::import::origin(self),
            Kind::ImportTransfer => return crate::core::command::import::transfer(self),
            Kind::ImportCancel => return crate::core::command::import::cancel(self),
            _ => {}
        }
        if self.conv.status == Status::Archived {
            return Err(reject(
                Code::Archived,
                "the conversation is archived and accepts no change",
            ));
        }
        if self.msg.role != Role::Contact {
            let sender = self.msg.sender.as_deref().unwrap_or_default();
            self.authorise(sender)?;
        }
        match self.msg.kind {
            Kind::Chat => crate::core::chat::apply(self),
            // Parsed here, after the archived and sender checks, so that a malformed command
            // from an outsider is `forbidden` and one to an archived conversation `archived`.
            Kind::Command => {
                let msg: &'a Message = self.msg;
                Command::parse(msg, self.env.dialect)?.apply(self)
            }
            Kind::Form => crate::core::command::forms::form(self),
            Kind::Field => crate::core::command::forms::field(self),
            Kind::Mention => crate::core::command::notify::mention(self),
            Kind::ImportRequest | Kind::ImportTransfer | Kind::ImportCancel => {
                unreachable!("handled above")
            }
            Kind::Other => Ok(Verdict::Applied),
        }
    }

    fn finish(mut self, handled: Handled, existed: bool) -> (Transition, Option<usize>) {
        let exists = existed || handled.is_ok();
        let result = match handled {
            Ok(verdict) => self.conclude(verdict),
            Err(refusal) => {
                debug_assert!(
                    self.writes.is_empty()
                        && self.events.is_empty()
                        && self.extra.is_empty()
                        && self.blocks.is_empty(),
                    "a refusal must change nothing: {refusal:?}"
                );
                Some(Reported::Refused(refusal))
            }
        };
        let outcome = result.as_ref().map(Reported::outcome);
        let outputs = self.outputs(result, exists);
        let transition = Transition {
            conversation: exists.then_some(self.conv),
            log: self.writes,
            outputs,
            blocks: self.blocks,
            outcome,
        };
        (transition, self.own_slot)
    }

    /// Completes what a handler did: stores the message where it stays, counts the version.
    /// Returns the result to report, if the message gets one now.
    fn conclude(&mut self, verdict: Verdict) -> Option<Reported> {
        let touched = |step: &mut Self| step.conv.updated_at.clone_from(&step.msg.created_at);
        match verdict {
            Verdict::Applied => {
                if !self.stored {
                    self.store();
                }
                self.conv.version += 1;
                touched(self);
                Some(Reported::Applied)
            }
            Verdict::Kept(refusal) => {
                if !self.stored {
                    self.store();
                }
                touched(self);
                Some(Reported::Refused(refusal))
            }
            Verdict::Deferred => None,
            Verdict::Relayed { applied } => {
                if applied {
                    self.conv.version += 1;
                    touched(self);
                }
                None
            }
            Verdict::ImportFailed(refusal) => Some(Reported::Refused(refusal)),
        }
    }

    /// The events in order, then the records for other conversations, then the result.
    fn outputs(&mut self, result: Option<Reported>, exists: bool) -> Vec<Output> {
        // Borrowed from the message, not the step, so they outlive the moves below.
        let msg: &'a Message = self.msg;
        let now = msg.created_at.as_str();
        let conv_id = msg.conversation.as_str();
        let cause = self.cause.take();
        let cause = cause.as_deref().unwrap_or(&msg.id);
        let mut outputs: Vec<Output> = Vec::with_capacity(self.events.len() + self.extra.len() + 1);
        for (position, data) in std::mem::take(&mut self.events).into_iter().enumerate() {
            outputs.push(Output::event(cause, position, Some(now), conv_id, data));
        }
        outputs.append(&mut self.extra);
        if let Some(result) = result {
            let outcome = result.outcome();
            let (code, detail) = match result {
                Reported::Applied => (None, None),
                Reported::Refused(r) => (Some(r.code), Some(r.detail)),
            };
            let data = EventData::CommandResult {
                conversation: conv_id.to_string(),
                message: Some(self.result_for.take().unwrap_or_else(|| msg.id.clone())),
                outcome,
                code,
                detail,
                version: if exists { self.conv.version } else { 0 },
            };
            outputs.push(Output::event(
                cause,
                outputs.len(),
                Some(now),
                conv_id,
                data,
            ));
        }
        outputs
    }

    /// *now*: the message's `createdAt`.
    pub fn now(&self) -> &str {
        &self.msg.created_at
    }

    pub fn sender(&self) -> &str {
        self.msg.sender.as_deref().unwrap_or_default()
    }

    pub fn emit(&mut self, data: EventData) {
        self.events.push(data);
    }

    /// The conversation's organization, then its ancestors, nearest first.
    pub fn lineage(&self) -> &[Arc<Organization>] {
        self.lineage
            .get_or_init(|| lineage(self.env.directory, &self.conv.organization))
    }

    /// The organization the conversation belongs to.
    pub fn organization(&self) -> Option<&Arc<Organization>> {
        self.lineage().first()
    }

    /// Appends the message being applied to the log. Its slot is filled when the transition
    /// is complete, by moving the message in.
    pub fn store(&mut self) {
        self.own_slot = Some(self.writes.len());
        self.store_message(StoredMessage::placeholder());
        self.stored = true;
    }

    /// Appends another message (one the core makes, such as `/send`'s results) to the log.
    pub fn store_message(&mut self, mut message: StoredMessage) {
        message.index = self.conv.message_count;
        self.conv.message_count += 1;
        self.writes.push(LogWrite::Append(message));
    }

    pub fn authorise(&self, user: &str) -> Result<Arc<User>, Refusal> {
        authorise(self.env.directory, self.lineage(), user)
    }

    /// The user a participant command is about: `user`, else the sender; authorised.
    pub fn target_user(&self) -> Result<String, Refusal> {
        let user = self.msg.user.as_deref().unwrap_or_else(|| self.sender());
        self.authorise(user)?;
        Ok(user.to_string())
    }
}

/// The result a message gets.
enum Reported {
    Applied,
    Refused(Refusal),
}

impl Reported {
    fn outcome(&self) -> Outcome {
        match self {
            Reported::Applied => Outcome::Applied,
            Reported::Refused(r) if r.ignored => Outcome::Ignored,
            Reported::Refused(_) => Outcome::Rejected,
        }
    }
}
