//! Switchboard: the conversation-command stream processor.
//!
//! The crate is split into a pure domain core and thin adapters. The core — [`message`],
//! [`command`], [`state`], [`directory`], [`routing`], [`event`] and the single
//! [`transition::apply`] function — does no IO, reads no clock and draws no random numbers:
//! the same input always yields byte-identical state and events. [`simulate`] drives the core
//! over a file; the stream runtime wraps the very same function.

pub mod chat;
pub mod code;
pub mod command;
pub mod config;
pub mod demo;
pub mod directory;
pub mod event;
pub mod id;
pub mod loadgen;
pub mod log;
pub mod message;
pub mod metrics;
pub mod names;
pub mod pipeline;
pub mod replay;
pub mod routing;
pub mod runtime;
pub mod simulate;
pub mod state;
pub mod store;
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
