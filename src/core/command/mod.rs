//! The command language (SPEC section 6). Each family keeps its parsing and its effect in one
//! file: [`notify`], [`participants`], [`block`], [`set`], [`action`], [`forms`], [`import`].

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
use crate::core::message::Role;
use crate::core::transition::{Handled, Step};
use crate::core::Dialect;

/// Applies a message of type `command`.
pub fn apply(step: &mut Step<'_>) -> Handled {
    if step.msg.role == Role::Contact {
        return Err(reject(
            Code::Forbidden,
            "commands are for agents and automations, not the contact",
        ));
    }
    let text = step.msg.text.trim();
    if text.starts_with('>') {
        return bot(step, text);
    }
    let Some(body) = text.strip_prefix('/') else {
        return Err(reject(
            Code::NotACommand,
            "a command starts with / (system) or > (bot)",
        ));
    };
    let (word, args) = split_word(body);
    let web1on1 = step.env.dialect == Dialect::Web1on1;
    match word {
        "notify" => notify::notify(step, args),
        "assign" => participants::assign(step, args),
        "follow" if web1on1 => participants::follow(step),
        "unfollow" if web1on1 => participants::unfollow(step),
        "join" => participants::join(step),
        "accept" => participants::accept(step),
        "leave" | "close" => participants::leave(step),
        "block" => block::block(step),
        "set" => set::set(step, args),
        "action" => action::action(step, args),
        "send" => forms::send(step),
        "import" => import::request(step, args),
        _ => Err(reject(
            Code::UnknownCommand,
            format!("/{word} is not a command"),
        )),
    }
}

/// `>anything`: kept in the log, forwarded to automations, otherwise ignored.
fn bot(step: &mut Step<'_>, text: &str) -> Handled {
    step.store();
    step.emit(EventData::BotCommand {
        conversation: step.conv.id.clone(),
        message: step.msg.id.clone(),
        text: text.to_string(),
        sender: step.msg.sender.clone(),
    });
    Err(ignore(
        Code::BotCommand,
        "bot command forwarded to bot.commands",
    ))
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
