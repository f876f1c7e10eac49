//! Toxiproxy (`deploy/local/toxiproxy`) through its HTTP API: the proxies a processor's Kafka and
//! Redis connections go through, and the faults put on them. A few plain HTTP/1.0 requests, so
//! that the tests need no HTTP client crate.
#![allow(dead_code)]

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::Duration;

use serde_json::{json, Value};

fn port(var: &str, default: u16) -> u16 {
    std::env::var(var)
        .ok()
        .and_then(|p| p.parse().ok())
        .unwrap_or(default)
}

/// Where the proxies listen and forward to; the defaults are `deploy/local/env.sh`'s, and the
/// same variables override both.
pub fn api_port() -> u16 {
    port("TOXIPROXY_PORT", 18474)
}

/// The Kafka proxy's address: the broker's FAULTS listener advertises it, so a client that
/// bootstraps here stays on the proxy.
pub fn kafka_proxy() -> String {
    format!("127.0.0.1:{}", port("KAFKA_PROXY_PORT", 19095))
}

fn kafka_faults_listener() -> String {
    format!("127.0.0.1:{}", port("KAFKA_FAULTS_PORT", 19094))
}

fn redis_proxy() -> String {
    format!("127.0.0.1:{}", port("REDIS_PROXY_PORT", 16380))
}

pub fn redis_proxy_url() -> String {
    format!("redis://{}/", redis_proxy())
}

fn redis_upstream() -> String {
    format!("127.0.0.1:{}", port("REDIS_PORT", 16379))
}

/// One request to the API: (status, body). `None` when it does not answer.
fn request(method: &str, path: &str, body: Option<&Value>) -> Option<(u16, String)> {
    let mut s = TcpStream::connect(("127.0.0.1", api_port())).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(30))).ok()?;
    let body = body.map(Value::to_string).unwrap_or_default();
    write!(
        s,
        "{method} {path} HTTP/1.0\r\nHost: localhost\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    )
    .ok()?;
    let mut response = String::new();
    s.read_to_string(&mut response).ok()?;
    let status = response.split(' ').nth(1)?.parse().ok()?;
    let body = response
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_string())
        .unwrap_or_default();
    Some((status, body))
}

/// A request that must succeed (2xx); panics with Toxiproxy's answer otherwise.
fn call(method: &str, path: &str, body: Option<Value>) -> String {
    match request(method, path, body.as_ref()) {
        Some((status, body)) if (200..300).contains(&status) => body,
        Some((status, answer)) => {
            panic!("toxiproxy {method} {path} {body:?}: {status} {answer}")
        }
        None => panic!(
            "Toxiproxy does not answer on 127.0.0.1:{}; start it with deploy/local/toxiproxy start (scripts/faults does)",
            api_port()
        ),
    }
}

/// A proxy by name: `kafka` or `redis`.
#[derive(Clone, Copy, Debug)]
pub struct Proxy(pub &'static str);

pub const KAFKA: Proxy = Proxy("kafka");
pub const REDIS: Proxy = Proxy("redis");

/// Makes sure both proxies exist as `deploy/local/env.sh` says, enabled and without toxics
/// (whatever a failed test before left on them).
pub fn reset() {
    call(
        "POST",
        "/populate",
        Some(json!([
            {"name": KAFKA.0, "listen": kafka_proxy(), "upstream": kafka_faults_listener(), "enabled": true},
            {"name": REDIS.0, "listen": redis_proxy(), "upstream": redis_upstream(), "enabled": true},
        ])),
    );
    call("POST", "/reset", None);
}

/// Which way a toxic acts: `upstream` is what the client sends (requests), `downstream` what it
/// receives (responses).
#[derive(Clone, Copy, Debug)]
pub enum Stream {
    Upstream,
    Downstream,
}

impl Stream {
    fn name(self) -> &'static str {
        match self {
            Stream::Upstream => "upstream",
            Stream::Downstream => "downstream",
        }
    }
}

impl Proxy {
    /// Disabled, the proxy closes every connection it holds and refuses new ones: a cut whose
    /// clients notice at once (connection refused).
    pub fn set_enabled(self, enabled: bool) {
        call(
            "POST",
            &format!("/proxies/{}", self.0),
            Some(json!({"enabled": enabled})),
        );
    }

    /// Adds a toxic named `name` of `kind` (`latency`, `timeout`, …) with its attributes.
    pub fn add(self, name: &str, kind: &str, stream: Stream, attributes: Value) {
        call(
            "POST",
            &format!("/proxies/{}/toxics", self.0),
            Some(json!({
                "name": name,
                "type": kind,
                "stream": stream.name(),
                "toxicity": 1.0,
                "attributes": attributes,
            })),
        );
    }

    /// `ms` of latency on each chunk of data going `stream`'s way.
    pub fn latency(self, name: &str, stream: Stream, ms: u64) {
        self.add(name, "latency", stream, json!({"latency": ms, "jitter": 0}));
    }

    /// A stall that clients cannot tell from a network partition: connections stay open, nothing
    /// gets through (in either direction, once on both streams) until the toxic is removed,
    /// then what was held is delivered. New connections are accepted and stall the same way.
    pub fn stall(self) {
        self.add(
            "stall-up",
            "timeout",
            Stream::Upstream,
            json!({"timeout": 0}),
        );
        self.add(
            "stall-down",
            "timeout",
            Stream::Downstream,
            json!({"timeout": 0}),
        );
    }

    pub fn unstall(self) {
        self.remove("stall-up");
        self.remove("stall-down");
    }

    pub fn remove(self, name: &str) {
        call(
            "DELETE",
            &format!("/proxies/{}/toxics/{name}", self.0),
            None,
        );
    }

    /// The toxics on the proxy, as Toxiproxy lists them.
    pub fn toxics(self) -> Vec<Value> {
        serde_json::from_str(&call("GET", &format!("/proxies/{}/toxics", self.0), None)).unwrap()
    }
}

/// Panics unless a client bootstrapping through the Kafka proxy is told to stay on it: a broker
/// started without the FAULTS listener (by an older `deploy/local/kafka`) advertises its direct
/// address, and every fault put on the proxy would miss all but the first request.
pub fn check_kafka_listener() {
    use rdkafka::config::ClientConfig;
    use rdkafka::consumer::{BaseConsumer, Consumer};
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", kafka_proxy())
        .create()
        .unwrap();
    let metadata = consumer
        .fetch_metadata(None, Duration::from_secs(20))
        .unwrap_or_else(|e| {
            panic!(
                "no Kafka metadata through the proxy at {} ({e}); is the broker running with the FAULTS listener on {}?",
                kafka_proxy(),
                kafka_faults_listener()
            )
        });
    let advertised: Vec<String> = metadata
        .brokers()
        .iter()
        .map(|b| format!("{}:{}", b.host(), b.port()))
        .collect();
    assert_eq!(
        advertised,
        [kafka_proxy()],
        "the broker must advertise the proxy's address on its FAULTS listener, or clients bypass the proxy; restart it with the current deploy/local/kafka (deploy/local/kafka restart)"
    );
}
