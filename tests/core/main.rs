//! The domain core, command by command: every success path and every rejection or ignore code.

mod common;

mod chat;
mod envelope;
mod forms;
mod import;
mod import_parts;
mod import_timeout;
mod notify;
mod participants;
mod set_action;
