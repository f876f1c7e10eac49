//! Switchboard: the conversation-command stream processor.
//!
//! # Layout
//!
//! - [`core`]: the pure domain. [`core::transition::apply`] is the one function from
//!   `(state, message, directory)` to `(new state, events, result)`; no IO, no clock, no
//!   randomness.
//! - [`runtime`]: the adapters that run the core on a stream: the Kafka consumer and
//!   transactional producer, the batch pipeline, the state stores (Redis, memory) and metrics.
//! - [`tools`]: what operators and load testers run beside it: `simulate` (the core over a
//!   file, the oracle), `demo`, `loadgen`, `replay`, `inspect`, `directory` (load).
//! - [`config`] and [`directory_file`]: the typed, validated settings and the directory file
//!   every entry point reads at start-up.

pub mod config;
pub mod core;
pub mod directory_file;
pub mod runtime;
pub mod tools;
