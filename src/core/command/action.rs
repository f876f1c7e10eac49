//! `/action like` and `/action comment <text>`: editing one message of the log.

use crate::core::code::{ignore, reject, Code, Refusal};
use crate::core::log::LogWrite;
use crate::core::message::Message;
use crate::core::state::Comment;
use crate::core::transition::{Handled, Step, Verdict};

use super::{meta_str, split_word};

/// Most likes a message can hold.
pub const MAX_LIKES: usize = 100;
/// Most comments a message can hold.
pub const MAX_COMMENTS: usize = 10;

/// `/action like` or `/action comment <text>`, on the message `meta.message`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action<'m> {
    Like { message: &'m str },
    Comment { message: &'m str, text: &'m str },
}

impl<'m> Action<'m> {
    pub fn parse(msg: &'m Message, args: &'m str) -> Result<Self, Refusal> {
        let (sub, rest) = split_word(args);
        if sub.is_empty() {
            return Err(reject(
                Code::MissingArgument,
                "/action needs like or comment",
            ));
        }
        if sub != "like" && sub != "comment" {
            return Err(reject(
                Code::UnknownAction,
                format!("/action {sub} is not an action"),
            ));
        }
        let Some(message) = meta_str(&msg.meta, "message")? else {
            return Err(reject(Code::MissingArgument, "/action needs meta.message"));
        };
        if sub == "like" {
            return Ok(Action::Like { message });
        }
        if rest.is_empty() {
            return Err(reject(
                Code::MissingArgument,
                "/action comment needs a text",
            ));
        }
        Ok(Action::Comment {
            message,
            text: rest,
        })
    }

    /// The ID of the message acted on.
    pub fn message(&self) -> &'m str {
        match self {
            Action::Like { message } | Action::Comment { message, .. } => message,
        }
    }

    pub fn apply(self, step: &mut Step<'_>) -> Handled {
        let id = self.message();
        let Some(target) = step.log.get(id) else {
            return Err(reject(
                Code::UnknownMessage,
                format!("message {id} is not in this conversation"),
            ));
        };
        let sender = step.sender().to_string();
        let mut edited = target.clone();
        match self {
            Action::Like { .. } => {
                if edited.likes.contains(&sender) {
                    return Err(ignore(
                        Code::AlreadyLiked,
                        format!("user {sender} already likes message {id}"),
                    ));
                }
                if edited.likes.len() >= MAX_LIKES {
                    return Err(reject(
                        Code::LimitReached,
                        format!("a message holds at most {MAX_LIKES} likes"),
                    ));
                }
                edited.likes.push(sender);
            }
            Action::Comment { text, .. } => {
                if edited.comments.len() >= MAX_COMMENTS {
                    return Err(reject(
                        Code::LimitReached,
                        format!("a message holds at most {MAX_COMMENTS} comments"),
                    ));
                }
                edited.comments.push(Comment {
                    user: sender,
                    message: step.msg.id.clone(),
                    text: text.to_string(),
                });
            }
        }
        edited.version += 1;
        step.writes.push(LogWrite::Update(edited));
        Ok(Verdict::Applied)
    }
}
