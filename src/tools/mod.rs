//! The tools that run beside the processor, one module per subcommand of the command line:
//! `simulate` drives the core over a file and is the oracle the stream is judged against; `demo`
//! runs the whole pipeline on an in-process broker and memory store; `loadgen` and `replay` make
//! and send traffic for load tests; `inspect` and `directory` read and write the state and
//! directory in Redis for operators; `rebuild` makes a halted partition's state again from the
//! input topic; `check` validates a configuration and the servers it
//! names. (`run`, the processor itself, is [`crate::runtime::serve`].)
//!
//! Each owns its command: an `Args` struct (clap) handed whole to its `run` (or `load`). They
//! build on [`crate::core`] and [`crate::runtime`]; nothing in either depends on them.

pub mod check;
pub mod demo;
pub mod directory;
pub mod inspect;
pub mod loadgen;
pub mod rebuild;
pub mod replay;
pub mod simulate;
