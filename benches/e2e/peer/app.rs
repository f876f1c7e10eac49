//! The Kafka Streams peer (`benches/peer/`, built by `scripts/bench`) as a child process on one
//! run's topics: it reads the run's input, writes its results to the run's `command.results`
//! topic and its notifications to `channel.notifications` (the topics Switchboard would write),
//! under an application ID of its own. Its state directory and changelog topics are removed when
//! it is dropped.

use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::{Offset, TopicPartitionList};
use switchboard::core::event::Topic;

use crate::latency::Processor;
use crate::process::{self, bootstrap, Proc};
use crate::run::Run;
use crate::saturation::{drain, Drained};
use crate::PARTITIONS;

const JAR: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/benches/peer/target/switchboard-peer.jar"
);

/// The peer's persistent stores (`ConversationProcessor.java`): each has a changelog topic.
const STORES: [&str; 2] = ["conversations", "messages"];

/// One running peer.
pub struct PeerApp {
    /// Taken when it is stopped.
    child: Option<Proc>,
    app_id: String,
    input: String,
    results: String,
    state_dir: PathBuf,
    /// The application's last state as it printed it (`RUNNING`, `REBALANCING`…).
    state: Arc<Mutex<String>>,
    /// Reads the application's committed input offsets (its consumer group is its ID).
    offsets: BaseConsumer,
}

impl PeerApp {
    /// Starts the peer on `run`'s topics with `commit.interval.ms` = `commit_ms`. Extra JVM
    /// options (e.g. `-Xmx512m`) come from `PEER_JAVA_OPTS`; none by default, as a team
    /// trying Kafka Streams out would run it.
    pub fn start(run: &Run, commit_ms: u32) -> PeerApp {
        assert!(
            std::path::Path::new(JAR).exists(),
            "{JAR} is missing: mvn -q -f benches/peer/pom.xml package (scripts/bench does it)"
        );
        let app_id = format!("{}-peer", run.name);
        let state_dir = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
            .join("target/bench/peer-state")
            .join(&app_id);
        let (input, results) = (run.topic(Topic::Input), run.topic(Topic::CommandResults));
        let (stdout, writer) = std::io::pipe().expect("a pipe for the peer's stdout");
        let options = std::env::var("PEER_JAVA_OPTS").unwrap_or_default();
        let child = Proc::spawn(
            Command::new("java")
                .args(options.split_whitespace())
                .arg("-jar")
                .arg(JAR)
                .args([&bootstrap(), &app_id, &input, &results])
                .arg(run.topic(Topic::ChannelNotifications))
                .arg(&state_dir)
                .arg(commit_ms.to_string())
                .stdout(writer)
                .stderr(Stdio::inherit()),
        );
        PeerApp {
            child: Some(child),
            offsets: process::consumer(&app_id),
            app_id,
            input,
            results,
            state_dir,
            state: follow_state(stdout),
        }
    }

    /// Samples the peer until it has committed the offsets of all `n` input messages.
    pub fn drain(&mut self, n: u64) -> Drained {
        let (offsets, input) = (&self.offsets, &self.input);
        let what = format!("peer {}", self.app_id);
        drain(
            &what,
            std::slice::from_mut(self.child.as_mut().expect("running")),
            || consumed(offsets, input),
            n,
        )
    }
}

/// The input messages the group has committed, summed over partitions: with exactly-once,
/// those processed, their outputs and state committed with them. (The input is produced
/// without transactions, so its offsets count messages.)
fn consumed(offsets: &BaseConsumer, input: &str) -> f64 {
    let mut tpl = TopicPartitionList::new();
    for p in 0..PARTITIONS {
        tpl.add_partition(input, p);
    }
    offsets
        .committed_offsets(tpl, Duration::from_secs(10))
        .map(|c| {
            c.elements()
                .iter()
                .filter_map(|e| match e.offset() {
                    Offset::Offset(o) => Some(o as f64),
                    _ => None,
                })
                .sum()
        })
        .unwrap_or(0.0)
}

/// On a thread of its own, the peer's `peer: state X` lines: the last X.
fn follow_state(stdout: std::io::PipeReader) -> Arc<Mutex<String>> {
    let state = Arc::new(Mutex::new(String::new()));
    let last = Arc::clone(&state);
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if let Some(s) = line.strip_prefix("peer: state ") {
                *last.lock().unwrap() = s.to_string();
            }
        }
    });
    state
}

impl Processor for PeerApp {
    fn pid(&self) -> u32 {
        self.child.as_ref().expect("running").id()
    }

    fn ready(&self) -> bool {
        *self.state.lock().unwrap() == "RUNNING"
    }

    fn results(&self) -> String {
        self.results.clone()
    }

    fn describe(&self) -> String {
        format!("Kafka Streams peer {}", self.app_id)
    }

    fn stop(self: Box<Self>) {
        drop(self);
    }
}

/// SIGTERM (the peer closes, committing what it has processed), then its changelog topics
/// and state directory removed: they run to gigabytes over a full run.
impl Drop for PeerApp {
    fn drop(&mut self) {
        if let Some(child) = self.child.take() {
            // The peer closes within 30 s of SIGTERM (`Peer.java`).
            let _ = child.terminate();
        }
        process::delete_topics(
            STORES
                .iter()
                .map(|s| format!("{}-{s}-changelog", self.app_id))
                .collect(),
        );
        let _ = std::fs::remove_dir_all(&self.state_dir);
    }
}
