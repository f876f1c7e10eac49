//! What the types cannot check: ranges, names, addresses, and the librdkafka properties (each
//! set on a librdkafka configuration of its own, offline, so that a mistyped name or a refused
//! value is found before any client exists; the value is never repeated in the message, since
//! it may be a password). Every check runs; each failure is one [`Problem`].

use std::net::SocketAddr;

use secrecy::ExposeSecret;

use super::{Config, Kafka, Problem, Properties, Redis, PARTITIONERS};
use crate::core::event::Topic;

/// Properties Switchboard sets itself, with the setting to use instead (or why none).
const OWN_PROPERTIES: [(&str, &str); 17] = [
    ("bootstrap.servers", "use kafka.brokers"),
    ("metadata.broker.list", "use kafka.brokers"),
    ("group.id", "use kafka.group_id"),
    ("transactional.id", "use kafka.transactional_id"),
    ("client.id", "use kafka.client_id"),
    ("session.timeout.ms", "use kafka.session_timeout_ms"),
    ("transaction.timeout.ms", "use kafka.transaction_timeout_ms"),
    ("linger.ms", "use kafka.linger_ms"),
    ("queue.buffering.max.ms", "use kafka.linger_ms"),
    ("partitioner", "use kafka.partitioner"),
    ("message.max.bytes", "use kafka.max_output_bytes"),
    (
        "enable.auto.commit",
        "offsets are committed in each batch's transaction",
    ),
    (
        "enable.auto.offset.store",
        "offsets are committed in each batch's transaction",
    ),
    ("isolation.level", "relay records must be read committed"),
    ("enable.idempotence", "transactions need it on"),
    (
        "auto.offset.reset",
        "a new group must start at the beginning",
    ),
    (
        "statistics.interval.ms",
        "the metrics read statistics every 5 s",
    ),
];

pub(super) fn check(config: &Config) -> Vec<Problem> {
    let mut problems = Vec::new();
    let mut fail = |setting: &str, reason: String| {
        problems.push(Problem {
            setting: setting.to_string(),
            reason,
            origin: None,
        })
    };
    kafka(&config.kafka, &mut fail);
    topics(config, &mut fail);
    redis(&config.redis, &mut fail);
    let d = &config.directory;
    for (setting, value) in [
        ("directory.cache_capacity", d.cache_capacity),
        ("directory.cache_ttl_ms", d.cache_ttl_ms),
        (
            "redis.response_timeout_ms",
            config.redis.response_timeout_ms,
        ),
        ("redis.wait_timeout_ms", config.redis.wait_timeout_ms),
    ] {
        if value == 0 {
            fail(setting, "must be at least 1".into());
        }
    }
    // Shorter than a relay's round trip, every import would fail; the time is message time, so
    // the round trip is how far apart the platform's own clocks and queues put messages.
    if config.imports.timeout_ms < 1000 {
        fail("imports.timeout_ms", "must be at least 1000".into());
    }
    if config.http.listen.parse::<SocketAddr>().is_err() {
        fail(
            "http.listen",
            format!(
                "{:?} is not an IP address and port such as 127.0.0.1:9464 or 0.0.0.0:9464 \
                 (host names are not resolved)",
                config.http.listen
            ),
        );
    }
    if let Err(e) = tracing_subscriber::EnvFilter::try_new(&config.log.level) {
        fail(
            "log.level",
            format!("{:?} is not a valid filter: {e}", config.log.level),
        );
    }
    if let Some(reason) = otlp_endpoint_problem(&config.log.otlp_endpoint) {
        fail("log.otlp_endpoint", reason.into());
    }
    problems
}

/// `log.otlp_endpoint`: empty (no traces) or a plain `http://` URL. The exporter would take an
/// `https://`, scheme-less or other URL at start-up and then fail every export, unseen: this
/// build's exporter has no TLS. The value is not repeated: a URL may hold credentials.
fn otlp_endpoint_problem(endpoint: &str) -> Option<&'static str> {
    if endpoint.is_empty() {
        return None;
    }
    let Some(rest) = endpoint.strip_prefix("http://") else {
        return Some(if endpoint.starts_with("https://") {
            "https:// is not supported (this build's OTLP exporter has no TLS): use a plain \
             http:// URL, e.g. to a collector beside the processor, or leave it empty"
        } else {
            "must be a plain http:// URL such as http://127.0.0.1:4318/v1/traces, or empty \
             for no traces"
        });
    };
    let host = rest.split(['/', '?', '#']).next().unwrap_or_default();
    if host.is_empty() || endpoint.contains(|c: char| c.is_whitespace() || c.is_control()) {
        return Some(
            "is not a URL: must be http://HOST[:PORT]/PATH such as \
             http://127.0.0.1:4318/v1/traces, or empty for no traces",
        );
    }
    None
}

fn kafka(k: &Kafka, fail: &mut impl FnMut(&str, String)) {
    for broker in k.brokers.split(',') {
        if let Some(reason) = broker_problem(broker.trim()) {
            fail("kafka.brokers", reason);
        }
    }
    if k.group_id.trim().is_empty() {
        fail("kafka.group_id", "must not be empty".into());
    }
    if k.batch_max_messages == 0 {
        fail("kafka.batch_max_messages", "must be at least 1".into());
    }
    if k.max_record_bytes < 1024 {
        fail("kafka.max_record_bytes", "must be at least 1024".into());
    }
    // The floor leaves room for a dead letter standing in for an oversize output; the ceiling
    // is librdkafka's for message.max.bytes.
    if !(16_384..=1_000_000_000).contains(&k.max_output_bytes) {
        fail(
            "kafka.max_output_bytes",
            "must be from 16384 to 1000000000".into(),
        );
    }
    if k.transaction_timeout_ms < 1000 {
        fail(
            "kafka.transaction_timeout_ms",
            "must be at least 1000".into(),
        );
    }
    if k.session_timeout_ms < 1000 {
        fail("kafka.session_timeout_ms", "must be at least 1000".into());
    }
    if !PARTITIONERS.contains(&k.partitioner.as_str()) {
        let reason = format!("must be one of {}", PARTITIONERS.join(", "));
        fail("kafka.partitioner", reason);
    }
    for (setting, map) in [
        ("kafka.properties", &k.properties),
        ("kafka.producer_properties", &k.producer_properties),
        ("kafka.consumer_properties", &k.consumer_properties),
    ] {
        properties(setting, map, fail);
    }
}

/// One `host:port` of `kafka.brokers` (a `PROTOCOL://` prefix allowed, the port optional).
fn broker_problem(broker: &str) -> Option<String> {
    let address = broker.rsplit("://").next().unwrap_or(broker);
    if address.is_empty() {
        return Some("must list host:port addresses, comma-separated, none empty".into());
    }
    if address.contains(char::is_whitespace) {
        return Some(format!("{broker:?} is not a host:port address"));
    }
    match address.rsplit_once(':') {
        Some((host, port)) if !host.ends_with(':') && !host.is_empty() => {
            match port.parse::<u16>() {
                Ok(p) if p > 0 => None,
                _ => Some(format!(
                    "{broker:?}: the port must be a number from 1 to 65535"
                )),
            }
        }
        _ => None,
    }
}

fn properties(setting: &str, map: &Properties, fail: &mut impl FnMut(&str, String)) {
    for (key, value) in map {
        let name = format!("{setting}.{key:?}");
        if let Some((_, instead)) = OWN_PROPERTIES.iter().find(|(own, _)| own == key) {
            fail(&name, format!("is set by Switchboard itself: {instead}"));
            continue;
        }
        let mut one = rdkafka::ClientConfig::new();
        one.set(key, value.expose_secret());
        if let Err(e) = one.create_native_config() {
            fail(&name, crate::runtime::kafka::redacted(&e));
        }
    }
}

fn topics(config: &Config, fail: &mut impl FnMut(&str, String)) {
    let names: Vec<&str> = Topic::ALL.iter().map(|t| config.topics.name(*t)).collect();
    if names.iter().any(|n| n.trim().is_empty()) {
        fail("topics", "no topic name may be empty".into());
    }
    let mut distinct = names.clone();
    distinct.sort_unstable();
    distinct.dedup();
    if distinct.len() != names.len() {
        fail("topics", "every topic needs its own name".into());
    }
}

fn redis(r: &Redis, fail: &mut impl FnMut(&str, String)) {
    let scheme_ok = ["redis://", "rediss://", "unix://", "redis+unix://"]
        .iter()
        .any(|s| r.url.starts_with(s));
    if !scheme_ok {
        let reason = "must start with redis://, rediss:// (TLS) or unix://";
        fail("redis.url", reason.into());
    } else if let Some(url) = redis::parse_redis_url(&r.url) {
        let in_url = !url.username().is_empty() || url.password().is_some();
        let in_settings = !r.username.is_empty() || !r.password.expose_secret().is_empty();
        if in_url && in_settings {
            let reason = "holds credentials, and so do redis.username or redis.password: \
                          keep one (the settings are percent-encoded for you)";
            fail("redis.url", reason.into());
        }
        // The redis crate refuses some URLs only when it connects: a database that is not a
        // number, or TLS in a build without it. Say so now.
        use redis::IntoConnectionInfo;
        if let Err(e) = r.connection_url().expose_secret().into_connection_info() {
            fail("redis.url", format!("{} is refused: {e}", r.address()));
        }
    } else {
        fail("redis.url", format!("{} is not a URL", r.address()));
    }
    for (setting, reason) in r.target_problems() {
        fail(setting, reason);
    }
    if r.key_prefix.is_empty() || r.key_prefix.contains(['{', '}']) {
        let reason = "must be non-empty and free of { and } (they mark hash tags)";
        fail("redis.key_prefix", reason.into());
    }
}

#[cfg(test)]
mod tests {
    use super::otlp_endpoint_problem as problem;

    #[test]
    fn the_otlp_endpoint_is_empty_or_a_plain_http_url() {
        for ok in [
            "",
            "http://127.0.0.1:4318/v1/traces",
            "http://collector:4318/v1/traces",
            "http://[::1]:4318",
        ] {
            assert_eq!(problem(ok), None, "{ok}");
        }
        assert!(problem("https://collector:4318/v1/traces")
            .unwrap()
            .contains("no TLS"));
        for bad in [
            "not a url",
            "collector:4318",
            "ftp://collector/v1/traces",
            "http://",
            "http:///v1/traces",
            "http://collector:4318/v1/ traces",
        ] {
            assert!(problem(bad).is_some(), "{bad}");
        }
    }
}
