//! Machine-readable codes for messages that were not applied, and the refusal that carries one.

use serde::{Deserialize, Serialize};

/// Why a message was rejected or ignored. Serialised in snake_case in `command.results`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Code {
    // The envelope (SPEC section 2).
    MissingField,
    InvalidField,
    InvalidId,
    InvalidTime,
    InvalidRole,
    MissingSender,
    UnknownConversation,
    UnknownOrganization,
    // Conversation-wide rules.
    Archived,
    Blocked,
    Forbidden,
    NoContact,
    // The command language.
    UnknownCommand,
    NotACommand,
    UnknownProperty,
    MissingArgument,
    InvalidArgument,
    AlreadyActive,
    UnknownChannel,
    NotAParticipant,
    InvalidCategory,
    InvalidTouchpoint,
    InvalidLanguage,
    ReservedKey,
    UnknownAction,
    UnknownMessage,
    LimitReached,
    NothingToSend,
    UnknownForm,
    FormIncomplete,
    FormNotActive,
    FormNotInCategory,
    UnknownField,
    NoTouchpoint,
    SameConversation,
    OrganizationMismatch,
    ImportInProgress,
    ImportTimedOut,
    UnexpectedRelay,
    // Ignored: nothing to do.
    NoChange,
    AlreadyLiked,
    BotCommand,
}

impl Code {
    pub fn as_str(self) -> &'static str {
        match self {
            Code::MissingField => "missing_field",
            Code::InvalidField => "invalid_field",
            Code::InvalidId => "invalid_id",
            Code::InvalidTime => "invalid_time",
            Code::InvalidRole => "invalid_role",
            Code::MissingSender => "missing_sender",
            Code::UnknownConversation => "unknown_conversation",
            Code::UnknownOrganization => "unknown_organization",
            Code::Archived => "archived",
            Code::Blocked => "blocked",
            Code::Forbidden => "forbidden",
            Code::NoContact => "no_contact",
            Code::UnknownCommand => "unknown_command",
            Code::NotACommand => "not_a_command",
            Code::UnknownProperty => "unknown_property",
            Code::MissingArgument => "missing_argument",
            Code::InvalidArgument => "invalid_argument",
            Code::AlreadyActive => "already_active",
            Code::UnknownChannel => "unknown_channel",
            Code::NotAParticipant => "not_a_participant",
            Code::InvalidCategory => "invalid_category",
            Code::InvalidTouchpoint => "invalid_touchpoint",
            Code::InvalidLanguage => "invalid_language",
            Code::ReservedKey => "reserved_key",
            Code::UnknownAction => "unknown_action",
            Code::UnknownMessage => "unknown_message",
            Code::LimitReached => "limit_reached",
            Code::NothingToSend => "nothing_to_send",
            Code::UnknownForm => "unknown_form",
            Code::FormIncomplete => "form_incomplete",
            Code::FormNotActive => "form_not_active",
            Code::FormNotInCategory => "form_not_in_category",
            Code::UnknownField => "unknown_field",
            Code::NoTouchpoint => "no_touchpoint",
            Code::SameConversation => "same_conversation",
            Code::OrganizationMismatch => "organization_mismatch",
            Code::ImportInProgress => "import_in_progress",
            Code::ImportTimedOut => "import_timed_out",
            Code::UnexpectedRelay => "unexpected_relay",
            Code::NoChange => "no_change",
            Code::AlreadyLiked => "already_liked",
            Code::BotCommand => "bot_command",
        }
    }
}

impl std::fmt::Display for Code {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A message that will not be applied: rejected (it broke a rule) or ignored (it changes nothing).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{code}: {detail}")]
pub struct Refusal {
    pub ignored: bool,
    pub code: Code,
    pub detail: String,
}

impl Refusal {
    pub fn reject(code: Code, detail: impl Into<String>) -> Self {
        Refusal {
            ignored: false,
            code,
            detail: detail.into(),
        }
    }

    pub fn ignore(code: Code, detail: impl Into<String>) -> Self {
        Refusal {
            ignored: true,
            code,
            detail: detail.into(),
        }
    }
}

/// Shorthand for handlers: `Err(reject(Code::X, "why"))?`.
pub fn reject(code: Code, detail: impl Into<String>) -> Refusal {
    Refusal::reject(code, detail)
}

/// Shorthand for handlers that find nothing to do.
pub fn ignore(code: Code, detail: impl Into<String>) -> Refusal {
    Refusal::ignore(code, detail)
}
