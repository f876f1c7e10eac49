//! Processes and servers, shared by the real-broker tests (through `kafka_support`) and the
//! end-to-end benchmark (`benches/e2e`, which includes this file by path): where the broker and
//! Redis are, `switchboard` commands pointed at one isolated set of topics, the processes they
//! start, topics created and deleted, a topic's committed records, the `/metrics` endpoint, and
//! Redis keys cleaned up.
//!
//! It holds no test's expectations (those stay in `kafka_support` and the tests), and uses only
//! what a test and a bench both have: the library and its dependencies.
#![allow(dead_code)]

use std::collections::HashMap;
use std::io::{Read, Write};
use std::process::{Child, Command, ExitStatus};
use std::time::{Duration, Instant};

use rdkafka::admin::{AdminClient, AdminOptions, NewTopic};
use rdkafka::client::DefaultClientContext;
use rdkafka::config::ClientConfig;
use rdkafka::consumer::BaseConsumer;
use rdkafka::error::KafkaError;
use serde_json::Value;
use switchboard::core::event::Topic;

pub const BIN: &str = env!("CARGO_BIN_EXE_switchboard");

/// A Kafka other than the shared broker, for every client of one test binary: the replicated
/// cluster, or a broker that needs TLS and credentials.
pub struct Target {
    pub bootstrap: String,
    /// librdkafka properties every client needs there (security); passed to `switchboard` as
    /// `SWITCHBOARD_KAFKA__PROPERTIES__*`.
    pub properties: Vec<(String, String)>,
    /// Of the topics the tests create.
    pub replication: i32,
}

static TARGET: std::sync::OnceLock<Target> = std::sync::OnceLock::new();

/// Points this process's clients and `switchboard` commands at `target`, before any of them is
/// made; the first call wins (a test binary has one target).
pub fn use_target(target: impl FnOnce() -> Target) -> &'static Target {
    TARGET.get_or_init(target)
}

pub fn bootstrap() -> String {
    match TARGET.get() {
        Some(t) => t.bootstrap.clone(),
        None => std::env::var("KAFKA_BOOTSTRAP").unwrap_or_else(|_| "127.0.0.1:19092".into()),
    }
}

/// The target's extra client properties (none for the shared broker).
pub fn client_properties() -> &'static [(String, String)] {
    TARGET.get().map(|t| t.properties.as_slice()).unwrap_or(&[])
}

/// The replication factor of the topics the tests create: 1 on the shared broker.
pub fn replication() -> i32 {
    TARGET.get().map_or(1, |t| t.replication)
}

/// A client of the target: its bootstrap servers and properties.
pub fn client_config() -> ClientConfig {
    let mut c = ClientConfig::new();
    c.set("bootstrap.servers", bootstrap());
    for (k, v) in client_properties() {
        c.set(k, v);
    }
    c
}

pub fn redis_url() -> String {
    std::env::var("REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:16379/".into())
}

pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// The name of topic `t` in an isolated run: `<default name>.<suffix>`.
pub fn topic_name(t: Topic, suffix: &str) -> String {
    format!("{}.{suffix}", t.default_name())
}

/// A topic role's key in the configuration (`SWITCHBOARD_TOPICS__<KEY>`, upper-cased).
pub fn topic_key(t: Topic) -> &'static str {
    match t {
        Topic::Input => "input",
        Topic::ChannelNotifications => "channel_notifications",
        Topic::ChannelDequeues => "channel_dequeues",
        Topic::InboxNotifications => "inbox_notifications",
        Topic::EmailNotifications => "email_notifications",
        Topic::MessageDeliveries => "message_deliveries",
        Topic::CommandResults => "command_results",
        Topic::BotCommands => "bot_commands",
        Topic::DeadLetters => "dead_letters",
    }
}

/// `switchboard <args>` against this machine's broker and Redis, every topic named
/// [`topic_name`]`(_, suffix)`, logging warnings only. Callers add group, prefix and the rest.
pub fn switchboard(args: &[&str], suffix: &str) -> Command {
    switchboard_at(BIN, args, suffix)
}

/// [`switchboard`], of the binary at `bin` (the bench's `--against`: another build).
pub fn switchboard_at(bin: &str, args: &[&str], suffix: &str) -> Command {
    let mut cmd = Command::new(bin);
    cmd.args(args)
        .env("SWITCHBOARD_KAFKA__BROKERS", bootstrap())
        .env("SWITCHBOARD_REDIS__URL", redis_url())
        .env("SWITCHBOARD_LOG__LEVEL", "warn");
    for (k, v) in client_properties() {
        let name = k.replace('.', "_").to_uppercase();
        cmd.env(format!("SWITCHBOARD_KAFKA__PROPERTIES__{name}"), v);
    }
    for t in Topic::ALL {
        let key = format!("SWITCHBOARD_TOPICS__{}", topic_key(t).to_uppercase());
        cmd.env(key, topic_name(t, suffix));
    }
    cmd
}

/// A process, killed when dropped: a failing test or bench must not leave it running.
pub struct Proc(Option<Child>);

impl Proc {
    pub fn spawn(cmd: &mut Command) -> Proc {
        Proc(Some(cmd.spawn().expect("starting switchboard")))
    }

    pub fn id(&self) -> u32 {
        self.0.as_ref().expect("running").id()
    }

    /// SIGKILL, and wait for it to be gone.
    pub fn kill(&mut self) {
        if let Some(mut c) = self.0.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Its exit status, if it has ended.
    pub fn try_wait(&mut self) -> Option<ExitStatus> {
        self.0.as_mut()?.try_wait().ok().flatten()
    }

    /// Sends a signal (`-STOP`, `-TERM`…) with `kill`; whether it was delivered.
    pub fn signal(&self, sig: &str) -> bool {
        Command::new("kill")
            .args([sig, &self.id().to_string()])
            .status()
            .is_ok_and(|s| s.success())
    }

    /// SIGTERM, then waits for the exit: `None` if the signal could not be sent.
    pub fn terminate(mut self) -> Option<ExitStatus> {
        if !self.signal("-TERM") {
            return None;
        }
        self.0.take()?.wait().ok()
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        self.kill();
    }
}

pub fn admin() -> AdminClient<DefaultClientContext> {
    client_config().create().expect("admin client")
}

/// Creates topics; an error is the broker's (unreachable…). A topic that cannot be created
/// (it exists already…) panics: each run's names are its own.
pub async fn create_topics(topics: &[NewTopic<'_>]) -> Result<(), KafkaError> {
    let options = AdminOptions::new().operation_timeout(Some(Duration::from_secs(30)));
    for result in admin().create_topics(topics, &options).await? {
        result.unwrap_or_else(|(name, code)| panic!("creating topic {name}: {code}"));
    }
    Ok(())
}

/// Deletes topics, on a thread of its own, so that it may be called inside an async runtime
/// (which cannot be blocked on) as well as outside one. Best effort.
pub fn delete_topics(names: Vec<String>) {
    let _ = std::thread::spawn(move || {
        let io = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let topics: Vec<&str> = names.iter().map(String::as_str).collect();
        let _ = io.block_on(admin().delete_topics(&topics, &AdminOptions::new()));
    })
    .join();
}

/// The committed records of a topic, `(key, value)` partition by partition, as a
/// `read_committed` consumer sees them; retried while the broker is unavailable.
pub fn committed(topic: &str, partitions: i32) -> Vec<(String, Value)> {
    let start = Instant::now();
    loop {
        match switchboard::tools::demo::read_committed_with(client_config(), topic, partitions) {
            Ok(records) => return records,
            Err(e) if start.elapsed() < Duration::from_secs(90) => {
                eprintln!("reading {topic}: {e}; retrying");
                std::thread::sleep(Duration::from_secs(1));
            }
            Err(e) => panic!("reading {topic}: {e}"),
        }
    }
}

/// A `read_committed` consumer of `group`, from the earliest offset, committing nothing itself.
pub fn consumer(group: &str) -> BaseConsumer {
    client_config()
        .set("group.id", group)
        .set("enable.auto.commit", "false")
        .set("enable.auto.offset.store", "false")
        .set("auto.offset.reset", "earliest")
        .set("isolation.level", "read_committed")
        .create()
        .expect("consumer")
}

/// A plain HTTP/1.0 GET: (status, body).
pub fn try_http_get(port: u16, path: &str) -> std::io::Result<(u16, String)> {
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port))?;
    write!(s, "GET {path} HTTP/1.0\r\nHost: localhost\r\n\r\n")?;
    let mut response = String::new();
    s.read_to_string(&mut response)?;
    let status = response
        .split(' ')
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    let body = response
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_string())
        .unwrap_or_default();
    Ok((status, body))
}

/// As [`try_http_get`], for a server that must be up.
pub fn http_get(port: u16, path: &str) -> (u16, String) {
    try_http_get(port, path).unwrap()
}

/// `/metrics` of the processor on `port` as name (with labels) → value; empty while it is not
/// up.
pub fn metrics(port: u16) -> HashMap<String, f64> {
    let Ok((_, body)) = try_http_get(port, "/metrics") else {
        return HashMap::new();
    };
    body.lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(|l| {
            let (k, v) = l.rsplit_once(' ')?;
            Some((k.to_string(), v.parse().ok()?))
        })
        .collect()
}

/// Deletes every Redis key under `prefix`. Best effort.
pub fn forget_keys(prefix: &str) {
    let _ = (|| -> redis::RedisResult<()> {
        let mut conn = redis::Client::open(redis_url())?.get_connection()?;
        let mut cursor: u64 = 0;
        loop {
            let (next, keys): (u64, Vec<String>) = redis::cmd("SCAN")
                .arg(cursor)
                .arg("MATCH")
                .arg(format!("{prefix}:*"))
                .arg("COUNT")
                .arg(10_000)
                .query(&mut conn)?;
            if !keys.is_empty() {
                let _: () = redis::cmd("UNLINK").arg(&keys).query(&mut conn)?;
            }
            if next == 0 {
                return Ok(());
            }
            cursor = next;
        }
    })();
}

/// Deletes every key under `prefix` on each node of the Redis Cluster of `nodes` (replicas
/// refuse, and follow their primaries). Best effort.
pub fn forget_cluster_keys(nodes: &str, prefix: &str) {
    for node in nodes.split(',') {
        let _ = (|| -> redis::RedisResult<()> {
            let mut conn = redis::Client::open(format!("redis://{node}"))?.get_connection()?;
            let keys: Vec<String> = redis::cmd("KEYS")
                .arg(format!("{prefix}:*"))
                .query(&mut conn)?;
            // One key per UNLINK: a node refuses keys of several slots in one command.
            for chunk in keys.chunks(1_000) {
                let mut pipe = redis::pipe();
                for key in chunk {
                    pipe.cmd("UNLINK").arg(key).ignore();
                }
                let _: () = pipe.query(&mut conn)?;
            }
            Ok(())
        })();
    }
}
