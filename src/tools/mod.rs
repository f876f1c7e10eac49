//! The tools that run beside the processor: `simulate` drives the core over a file and is the
//! oracle the stream is judged against; `demo` runs the whole pipeline on an in-process broker
//! and memory store; `loadgen` and `replay` make and send traffic for load tests.
//!
//! They build on [`crate::core`] and [`crate::runtime`]; nothing in either depends on them.

pub mod demo;
pub mod loadgen;
pub mod replay;
pub mod simulate;
