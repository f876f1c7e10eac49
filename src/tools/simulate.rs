//! `switchboard simulate`: the domain core alone over a JSON-lines trace (SPEC section 8).
//!
//! Each line is one input record, keyed by its `conversation`. Records the core addresses to the
//! input topic (the `/import` relay) are appended to the end of the input and applied in turn,
//! as the stream would deliver them.
//!
//! It owns the command (`Args`, [`run`]), the [`Simulator`] the other tests and tools judge the
//! stream against, and the documents both print ([`inspect_document`], [`output_line`]). It
//! reads files and writes standard output in [`run`] only; the simulator itself does no IO.

use std::collections::VecDeque;
use std::io::{BufWriter, Read, Write};
use std::path::PathBuf;

use anyhow::Context;

use foldhash::HashMap;

use serde_json::Value;

use crate::core::directory::MemoryDirectory;
use crate::core::event::{Output, Topic};
use crate::core::log::MemoryLog;
use crate::core::message::{decode, Decoded, KeySource};
use crate::core::state::{Conversation, StoredMessage};
use crate::core::transition::{apply, invalid, Env};
use crate::core::Dialect;
use crate::runtime::pipeline::Limits;

#[derive(Debug, Default)]
struct Slot {
    conversation: Option<Conversation>,
    log: MemoryLog,
}

/// Conversations and the directory held in memory, fed one record at a time.
pub struct Simulator {
    directory: MemoryDirectory,
    dialect: Dialect,
    /// How large a relay record may be: by default what the runtime derives from the default
    /// record limits, so that `simulate` splits an `/import` transfer as the stream does.
    max_relay_bytes: usize,
    /// How long an `/import` may stay pending: by default the runtime's default.
    import_timeout_ms: u64,
    conversations: HashMap<String, Slot>,
}

impl Simulator {
    pub fn new(directory: MemoryDirectory, dialect: Dialect) -> Self {
        Simulator {
            directory,
            dialect,
            max_relay_bytes: Limits::defaults().relay_bytes(),
            import_timeout_ms: Limits::defaults().import_timeout_ms,
            conversations: HashMap::default(),
        }
    }

    /// The same simulator failing an `/import` pending for more than `ms` of message time.
    pub fn with_import_timeout_ms(mut self, ms: u64) -> Self {
        self.import_timeout_ms = ms;
        self
    }

    /// The same simulator with relay records of at most `bytes` (see `Env::max_relay_bytes`).
    pub fn with_max_relay_bytes(mut self, bytes: usize) -> Self {
        self.max_relay_bytes = bytes;
        self
    }

    /// Applies one record; `locator` names it in its source (for dead-letter IDs).
    pub fn process(&mut self, payload: &[u8], locator: &str) -> Vec<Output> {
        match decode(KeySource::FromConversation, payload) {
            Decoded::Dead(dead) => vec![Output::dead_letter(&dead, locator, None)],
            Decoded::Invalid(i) => {
                let current = self
                    .conversations
                    .get(&i.conversation)
                    .and_then(|s| s.conversation.as_ref());
                vec![invalid(current, &i, locator)]
            }
            Decoded::Message(message) => {
                // Look up before inserting: the common case needs no key allocation.
                if !self.conversations.contains_key(&message.conversation) {
                    self.conversations
                        .insert(message.conversation.clone(), Slot::default());
                }
                let slot = self
                    .conversations
                    .get_mut(&message.conversation)
                    .expect("inserted above");
                let env = Env {
                    directory: &self.directory,
                    dialect: self.dialect,
                    max_relay_bytes: self.max_relay_bytes,
                    import_timeout_ms: self.import_timeout_ms,
                };
                // Only a conversation that did not exist can be left absent (a refused first message).
                let new_key = slot
                    .conversation
                    .is_none()
                    .then(|| message.conversation.clone());
                let transition = apply(slot.conversation.take(), &slot.log, message, &env);
                slot.log.apply(transition.log);
                slot.conversation = transition.conversation;
                if let Some(key) = new_key.filter(|_| slot.conversation.is_none()) {
                    self.conversations.remove(&key);
                }
                for block in transition.blocks {
                    self.directory.block(&block);
                }
                transition.outputs
            }
        }
    }

    /// Applies every line of a trace, then the relay records it causes; returns every output.
    pub fn run_trace(&mut self, input: &str) -> Vec<Output> {
        self.run_bytes(input.as_bytes())
    }

    /// [`Simulator::run_trace`] over raw bytes. A line is a record's bytes, as the stream would
    /// carry them: one that is not valid UTF-8 (or not JSON) is dead-lettered like any
    /// unreadable record, and the rest of the trace is applied.
    pub fn run_bytes(&mut self, input: &[u8]) -> Vec<Output> {
        let mut queue: VecDeque<(Vec<u8>, String)> = trace_lines(input)
            .map(|(i, line)| (line.to_vec(), format!("line-{}", i + 1)))
            .collect();
        let mut outputs = Vec::new();
        let mut relayed = 0usize;
        while let Some((payload, locator)) = queue.pop_front() {
            for output in self.process(&payload, &locator) {
                if output.topic == Topic::Input {
                    relayed += 1;
                    let bytes = serde_json::to_vec(&output.value).expect("relay records serialise");
                    queue.push_back((bytes, format!("relay-{relayed}")));
                }
                outputs.push(output);
            }
        }
        outputs
    }

    pub fn conversation(&self, id: &str) -> Option<(&Conversation, &[StoredMessage])> {
        self.conversations
            .get(id)
            .and_then(|s| s.conversation.as_ref().map(|c| (c, s.log.messages())))
    }

    /// Every conversation's `inspect` document, messages included, keyed by ID (in ID order:
    /// serde_json's map is ordered, so the document is byte-stable).
    pub fn state_document(&self) -> Value {
        let map = self
            .conversations
            .iter()
            .filter_map(|(id, s)| {
                s.conversation
                    .as_ref()
                    .map(|c| (id.clone(), inspect_document(c, Some(s.log.messages()))))
            })
            .collect();
        Value::Object(map)
    }
}

/// What `inspect` prints: the conversation, with its messages when asked.
pub fn inspect_document(conversation: &Conversation, messages: Option<&[StoredMessage]>) -> Value {
    let mut doc = serde_json::to_value(conversation).expect("conversation serialises");
    if let (Some(messages), Value::Object(map)) = (messages, &mut doc) {
        map.insert(
            "messages".into(),
            serde_json::to_value(messages).expect("messages serialise"),
        );
    }
    doc
}

/// One output record as `simulate` prints it: `{"topic": …, "key": …, "value": …}`.
pub fn output_line(output: &Output) -> String {
    #[derive(serde::Serialize)]
    struct Line<'a> {
        topic: &'a str,
        key: &'a str,
        value: &'a crate::core::event::Payload,
    }
    serde_json::to_string(&Line {
        topic: output.topic.default_name(),
        key: &output.key,
        value: &output.value,
    })
    .expect("outputs serialise")
}

/// The arguments of `switchboard simulate` (its help text is the subcommand's doc, in the
/// binary's command line).
#[derive(Debug, Clone, clap::Args)]
pub struct Args {
    /// Directory file (YAML or JSON): organizations, channels, users, forms.
    #[arg(long)]
    pub directory: PathBuf,
    /// Input messages, one JSON object per line; `-` reads standard input.
    #[arg(long)]
    pub input: PathBuf,
    /// Write the final state of every conversation (messages included) to this file.
    #[arg(long)]
    pub state: Option<PathBuf>,
    /// Command language: web1on1 (default) or chatshipper.
    #[arg(long, default_value = "web1on1")]
    pub dialect: Dialect,
}

/// The numbered lines of a trace that hold something: split at `\n` (a `\r` before it is
/// dropped), blank lines skipped.
fn trace_lines(input: &[u8]) -> impl Iterator<Item = (usize, &[u8])> {
    input
        .split(|b| *b == b'\n')
        .enumerate()
        .map(|(i, line)| (i, line.strip_suffix(b"\r").unwrap_or(line)))
        .filter(|(_, line)| match std::str::from_utf8(line) {
            Ok(text) => !text.trim().is_empty(),
            Err(_) => true,
        })
}

/// `switchboard simulate`: every output record to standard output, the state to `--state`.
pub fn run(args: Args) -> anyhow::Result<()> {
    let directory = crate::directory_file::load(&args.directory)?;
    let trace = if args.input.as_os_str() == "-" {
        let mut bytes = Vec::new();
        std::io::stdin()
            .read_to_end(&mut bytes)
            .context("reading standard input")?;
        bytes
    } else {
        std::fs::read(&args.input)
            .with_context(|| format!("reading input {}", args.input.display()))?
    };
    let mut simulator = Simulator::new(directory, args.dialect);
    let outputs = simulator.run_bytes(&trace);
    let mut out = BufWriter::new(std::io::stdout().lock());
    for output in &outputs {
        writeln!(out, "{}", output_line(output))?;
    }
    out.flush()?;
    if let Some(path) = args.state {
        let doc = serde_json::to_string_pretty(&simulator.state_document())?;
        std::fs::write(&path, doc + "\n")
            .with_context(|| format!("writing state {}", path.display()))?;
    }
    Ok(())
}
