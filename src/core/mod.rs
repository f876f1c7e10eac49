//! The pure domain core: decoding a message, the conversation state, the directory and
//! routing, the commands, and the one transition function [`transition::apply`].
//!
//! It owns the command language and its rules (SPEC sections 3-9). It may not touch IO, a
//! clock, randomness or an async runtime: the same input always yields byte-identical state
//! and events, which is what lets `simulate` serve as the oracle for every adapter.
//! `tests/purity.rs` fails the build's tests if a file here reaches for any of them.

pub mod chat;
pub mod code;
pub mod command;
pub mod directory;
pub mod event;
pub mod id;
pub mod log;
pub mod message;
pub mod names;
pub(crate) mod routing;
pub mod state;
pub mod transition;

/// Which generation of the command language to speak (SPEC section 9).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Dialect {
    /// Web1on1, the later platform: has `/follow`, `/unfollow`, `@context`.
    #[default]
    Web1on1,
    /// ChatShipper, the original platform.
    Chatshipper,
}

impl std::str::FromStr for Dialect {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "web1on1" => Ok(Dialect::Web1on1),
            "chatshipper" => Ok(Dialect::Chatshipper),
            other => Err(format!(
                "unknown dialect {other:?}: expected \"web1on1\" or \"chatshipper\""
            )),
        }
    }
}
