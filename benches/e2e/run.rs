//! One measurement's isolated world on the real servers: its topics, group, transactional ID
//! and key prefix, the directory loaded, the input preloaded, the processor started; all of it
//! removed again when dropped.

use std::process::{Command, Stdio};

use rdkafka::admin::{NewTopic, TopicReplication};
use rdkafka::config::ClientConfig;
use switchboard::core::event::Topic;
use switchboard::tools::loadgen::{directory, Generator, Model};
use switchboard::tools::replay::{Options, Pace, Target};

use crate::process::{self, bootstrap, Proc};
use crate::PARTITIONS;

/// Topics, group, transactional ID and key prefix of one measurement.
pub struct Run {
    pub name: String,
    /// The Redis Cluster's seed nodes (`host:port,…`), when the state lives on one.
    pub cluster: Option<String>,
    /// Another build's `switchboard` (see [`Run::with_binary`]); this build's when `None`.
    pub binary: Option<String>,
}

impl Run {
    pub fn new(what: &str) -> Run {
        Run {
            name: format!("bench-{what}-{}", std::process::id()),
            cluster: None,
            binary: None,
        }
    }

    /// A run whose state lives on the Redis Cluster of `nodes`.
    pub fn on_cluster(what: &str, nodes: &str) -> Run {
        Run {
            name: format!("bench-{what}-{}", std::process::id()),
            cluster: Some(nodes.to_string()),
            binary: None,
        }
    }

    /// Switchboard's topics, and the sinks of the passthrough and the naive consumer.
    fn topic_names(&self) -> Vec<String> {
        Topic::ALL
            .iter()
            .map(|t| self.topic(*t))
            .chain([
                format!("passthrough.{}", self.name),
                format!("naive.{}", self.name),
            ])
            .collect()
    }

    pub fn topic(&self, t: Topic) -> String {
        process::topic_name(t, &self.name)
    }

    pub fn create_topics(&self, io: &tokio::runtime::Runtime) {
        deletions_settled();
        let names = self.topic_names();
        let topics: Vec<NewTopic> = names
            .iter()
            .map(|n| NewTopic::new(n, PARTITIONS, TopicReplication::Fixed(1)))
            .collect();
        io.block_on(process::create_topics(&topics))
            .unwrap_or_else(|e| panic!("Kafka at {}: {e}; run scripts/bench", bootstrap()));
    }

    /// `switchboard <args>` on this measurement's topics and keys, with the shipped defaults
    /// otherwise (batching, timeouts: what is measured).
    /// The same run, processed by the `switchboard` binary at `binary` instead of this build's.
    pub fn with_binary(mut self, binary: Option<&str>) -> Run {
        self.binary = binary.map(str::to_string);
        self
    }

    pub fn command(&self, args: &[&str]) -> Command {
        let bin = self.binary.as_deref().unwrap_or(process::BIN);
        let mut cmd = process::switchboard_at(bin, args, &self.name);
        cmd.env("SWITCHBOARD_KAFKA__GROUP_ID", &self.name)
            .env("SWITCHBOARD_KAFKA__TRANSACTIONAL_ID", &self.name)
            .env("SWITCHBOARD_REDIS__KEY_PREFIX", &self.name);
        if let Some(nodes) = &self.cluster {
            cmd.env("SWITCHBOARD_REDIS__CLUSTER_NODES", nodes);
        }
        cmd
    }

    pub fn load_directory(&self, model: &Model) {
        let path = std::env::temp_dir().join(format!("{}.yaml", self.name));
        std::fs::write(&path, serde_yaml_ng::to_string(&directory(model)).unwrap()).unwrap();
        let out = self
            .command(&["directory", "load", path.to_str().unwrap()])
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }

    /// Produces a model's traffic as fast as the broker takes it; returns the record count.
    pub fn preload(&self, model: &Model) -> u64 {
        let summary = self
            .produce(model.clone(), Pace::Fastest)
            .expect("preloading the input topic");
        summary.produced
    }

    /// A model's traffic to the input topic at `pace`, keyed as the platform keys it.
    pub fn produce(
        &self,
        model: Model,
        pace: Pace,
    ) -> Result<switchboard::tools::replay::Summary, switchboard::tools::replay::ReplayError> {
        let mut client = ClientConfig::new();
        client
            .set("bootstrap.servers", bootstrap())
            .set("partitioner", "murmur2_random");
        switchboard::tools::replay::replay(
            Generator::new(model).map(|m| Ok(m.to_string())),
            &Target {
                topic: self.topic(Topic::Input),
                client,
            },
            &Options {
                pace,
                remap: None,
                retime: false,
            },
            &indicatif::ProgressBar::hidden(),
        )
    }

    /// `switchboard run`, serving /metrics on `port`.
    pub fn spawn(&self, port: u16) -> Proc {
        self.spawn_nth(port, 0)
    }

    /// Instance `n` of the run's group (instance 0 is [`Run::spawn`]'s), serving /metrics on
    /// `port`.
    pub fn spawn_nth(&self, port: u16, n: usize) -> Proc {
        let id = if n == 0 {
            self.name.clone()
        } else {
            format!("{}-{n}", self.name)
        };
        Proc::spawn(
            self.command(&["run"])
                .env("SWITCHBOARD_KAFKA__TRANSACTIONAL_ID", id)
                .env("SWITCHBOARD_HTTP__LISTEN", format!("127.0.0.1:{port}"))
                .stdout(Stdio::null())
                .stderr(Stdio::inherit()),
        )
    }
}

/// A measurement leaves the servers as it found them: its topics and keys run to gigabytes, and a
/// Redis that keeps growing (rewriting its append-only file) slows the runs after it.
impl Drop for Run {
    fn drop(&mut self) {
        process::delete_topics(self.topic_names());
        match &self.cluster {
            Some(nodes) => process::forget_cluster_keys(nodes, &self.name),
            None => process::forget_keys(&self.name),
        }
    }
}

/// Waits (up to two minutes) until the local broker has removed the files of the topics earlier
/// runs deleted. A deleted topic's directory is renamed `…-delete` and its files removed later
/// (`file.delete.delay.ms`); removing a run's gigabytes took the broker 0.5–0.8 cores of kernel
/// time for about ten seconds, and a run it landed in drained at half its rate (BENCHMARKS.md).
/// The broker's data directory is `KAFKA_DATA_DIR`, or `deploy/local/kafka`'s; with a broker
/// elsewhere there is nothing to see, and nothing is waited for.
fn deletions_settled() {
    let dir = std::env::var_os("KAFKA_DATA_DIR")
        .map(std::path::PathBuf::from)
        .or_else(|| {
            std::env::var_os("SWITCHBOARD_LOCAL_DIR")
                .map(|d| std::path::PathBuf::from(d).join("kafka/data"))
        })
        .unwrap_or_else(|| {
            std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join(".cache/local/kafka/data")
        });
    let pending = || {
        std::fs::read_dir(&dir)
            .map(|entries| {
                entries
                    .filter_map(Result::ok)
                    .filter(|e| e.file_name().to_string_lossy().ends_with("-delete"))
                    .count()
            })
            .unwrap_or(0)
    };
    let begun = std::time::Instant::now();
    while pending() > 0 && begun.elapsed() < std::time::Duration::from_secs(120) {
        std::thread::sleep(std::time::Duration::from_millis(200));
    }
    if begun.elapsed().as_secs_f64() > 1.0 {
        eprintln!(
            "  waited {:.1} s for the broker to remove deleted topics' files ({} left)",
            begun.elapsed().as_secs_f64(),
            pending()
        );
    }
}
