//! The command language (SPEC section 6): a command message is parsed once into a typed
//! [`Command`], then applied to a [`Step`].
//!
//! [`Command::parse`] reads only the message (its text, `meta` and role) and the dialect; it
//! refuses a malformed command before anything is looked up. [`Command::apply`] then checks the
//! conversation and the directory and makes the change. Each family keeps both halves in one
//! file — its typed arguments with their `parse`, and its effect: [`notify`], [`participants`],
//! [`block`], [`set`], [`action`], [`forms`] (`/send`), [`import`]. A refusal is an `Err` and
//! changes nothing; a message kept although refused (a bot command) is a
//! [`Verdict::Kept`].

pub mod action;
pub mod block;
pub mod forms;
pub mod import;
pub mod notify;
pub mod participants;
pub mod set;

use serde_json::{Map, Value};

use crate::core::code::{ignore, reject, Code, Refusal};
use crate::core::event::EventData;
use crate::core::message::{Message, Role};
use crate::core::transition::{Handled, Step, Verdict};
use crate::core::Dialect;

use self::action::Action;
use self::forms::SendForms;
use self::import::Import;
use self::notify::Notify;
use self::participants::Assign;
use self::set::Set;

/// A message of type `command`, parsed: the command word and its typed arguments (text borrowed
/// from the message).
#[derive(Debug, Clone, PartialEq)]
pub enum Command<'m> {
    Notify(Notify),
    Assign(Assign),
    /// web1on1 only.
    Follow,
    /// web1on1 only.
    Unfollow,
    Join,
    Accept,
    /// `/leave` and its alias `/close`.
    Leave,
    Block,
    Set(Set<'m>),
    Action(Action<'m>),
    Send(SendForms<'m>),
    Import(Import<'m>),
    /// `>anything`, for automations.
    Bot {
        text: &'m str,
    },
}

impl<'m> Command<'m> {
    /// Parses a command message. Every refusal here is about the message alone, so
    /// [`transition`](crate::core::transition) reports it where the command is applied: after the
    /// archived and sender checks, which come first whatever the command says.
    pub fn parse(msg: &'m Message, dialect: Dialect) -> Result<Self, Refusal> {
        if msg.role == Role::Contact {
            return Err(reject(
                Code::Forbidden,
                "commands are for agents and automations, not the contact",
            ));
        }
        let text = msg.text.trim();
        if text.starts_with('>') {
            return Ok(Command::Bot { text });
        }
        let Some(body) = text.strip_prefix('/') else {
            return Err(reject(
                Code::NotACommand,
                "a command starts with / (system) or > (bot)",
            ));
        };
        let (word, args) = split_word(body);
        let web1on1 = dialect == Dialect::Web1on1;
        Ok(match word {
            "notify" => Command::Notify(Notify::parse(msg, args)?),
            "assign" => Command::Assign(Assign::parse(msg, args)?),
            "follow" if web1on1 => Command::Follow,
            "unfollow" if web1on1 => Command::Unfollow,
            "join" => Command::Join,
            "accept" => Command::Accept,
            "leave" | "close" => Command::Leave,
            "block" => Command::Block,
            "set" => Command::Set(Set::parse(args, &msg.meta, dialect, msg.role)?),
            "action" => Command::Action(Action::parse(msg, args)?),
            "send" => Command::Send(SendForms::parse(msg)?),
            "import" => Command::Import(Import::parse(args)?),
            _ => {
                return Err(reject(
                    Code::UnknownCommand,
                    format!("/{word} is not a command"),
                ))
            }
        })
    }

    /// Applies the command: checks it against the conversation and the directory, then makes
    /// the change.
    pub fn apply(self, step: &mut Step<'_>) -> Handled {
        match self {
            Command::Notify(cmd) => cmd.apply(step),
            Command::Assign(cmd) => cmd.apply(step),
            Command::Follow => participants::follow(step),
            Command::Unfollow => participants::unfollow(step),
            Command::Join => participants::join(step),
            Command::Accept => participants::accept(step),
            Command::Leave => participants::leave(step),
            Command::Block => block::block(step),
            Command::Set(cmd) => cmd.apply(step),
            Command::Action(cmd) => cmd.apply(step),
            Command::Send(cmd) => cmd.apply(step),
            Command::Import(cmd) => cmd.apply(step),
            Command::Bot { text } => bot(step, text),
        }
    }
}

/// `>anything`: kept in the log and forwarded to automations, but not applied.
fn bot(step: &mut Step<'_>, text: &str) -> Handled {
    step.emit(EventData::BotCommand {
        conversation: step.conv.id.clone(),
        message: step.msg.id.clone(),
        text: text.to_string(),
        sender: step.msg.sender.clone(),
    });
    Ok(Verdict::Kept(ignore(
        Code::BotCommand,
        "bot command forwarded to bot.commands",
    )))
}

/// Splits off the first whitespace-separated word; the rest is trimmed.
pub fn split_word(s: &str) -> (&str, &str) {
    let s = s.trim_start();
    match s.find(char::is_whitespace) {
        Some(i) => (&s[..i], s[i..].trim()),
        None => (s, ""),
    }
}

/// Object IDs from `meta[key]` (an array of strings) followed by those after the command word,
/// de-duplicated in first-seen order.
pub fn id_list(meta: &Map<String, Value>, key: &str, args: &str) -> Result<Vec<String>, Refusal> {
    let mut ids: Vec<String> = Vec::new();
    let from_meta: Vec<&str> = match meta.get(key) {
        None | Some(Value::Null) => Vec::new(),
        Some(Value::Array(items)) => items
            .iter()
            .map(|v| {
                v.as_str().ok_or_else(|| {
                    reject(
                        Code::InvalidArgument,
                        format!("meta.{key} must be an array of IDs"),
                    )
                })
            })
            .collect::<Result<_, _>>()?,
        Some(_) => {
            return Err(reject(
                Code::InvalidArgument,
                format!("meta.{key} must be an array of IDs"),
            ))
        }
    };
    for id in from_meta.into_iter().chain(args.split_whitespace()) {
        if !crate::core::id::is_object_id(id) {
            return Err(reject(
                Code::InvalidId,
                format!("{id:?} is not an ObjectId"),
            ));
        }
        if !ids.iter().any(|x| x == id) {
            ids.push(id.to_string());
        }
    }
    Ok(ids)
}

/// A string from `meta[key]`, if given.
pub fn meta_str<'m>(meta: &'m Map<String, Value>, key: &str) -> Result<Option<&'m str>, Refusal> {
    match meta.get(key) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) => Ok(Some(s)),
        Some(_) => Err(reject(
            Code::InvalidArgument,
            format!("meta.{key} must be a string"),
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn split_word_trims() {
        assert_eq!(split_word("set  @name  A B "), ("set", "@name  A B"));
        assert_eq!(split_word("notify"), ("notify", ""));
        assert_eq!(split_word(""), ("", ""));
    }

    #[test]
    fn id_list_merges_meta_and_args() {
        let mut meta = Map::new();
        meta.insert(
            "users".into(),
            serde_json::json!(["aaaaaaaaaaaaaaaaaaaaaaaa"]),
        );
        let ids = id_list(
            &meta,
            "users",
            "bbbbbbbbbbbbbbbbbbbbbbbb aaaaaaaaaaaaaaaaaaaaaaaa",
        )
        .unwrap();
        assert_eq!(
            ids,
            ["aaaaaaaaaaaaaaaaaaaaaaaa", "bbbbbbbbbbbbbbbbbbbbbbbb"]
        );
        assert_eq!(
            id_list(&meta, "users", "nope").unwrap_err().code,
            Code::InvalidId
        );
        meta.insert("users".into(), serde_json::json!("x"));
        assert_eq!(
            id_list(&meta, "users", "").unwrap_err().code,
            Code::InvalidArgument
        );
    }
}
