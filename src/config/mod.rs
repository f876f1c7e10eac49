//! Configuration: typed, layered and validated at start-up.
//!
//! Layers, later ones winning: `config/default.toml` (compiled in, and the only place a default
//! is written down), the file given with `--config` (or `SWITCHBOARD_CONFIG`), then
//! `SWITCHBOARD_*` environment variables (`env`). Loading never stops at the first problem:
//! every unknown key, wrongly typed value and failed check is collected (`layers`, `checks`)
//! and reported together, each naming the setting and where its value came from. Secrets are
//! [`SecretString`]s, so no `Debug` output shows them. This module reads files and the
//! environment; it connects to nothing.

mod checks;
mod env;
mod layers;
mod redis_target;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use secrecy::{ExposeSecret, SecretString};
use serde::Deserialize;

use crate::core::event::Topic;
use crate::core::Dialect;

/// The defaults, as shipped in `config/default.toml`.
pub const DEFAULTS: &str = include_str!("../../config/default.toml");

/// The environment variable naming the configuration file when `--config` is not given.
pub const CONFIG_VARIABLE: &str = "SWITCHBOARD_CONFIG";

/// librdkafka properties, by name: values may be secrets (`sasl.password`).
pub type Properties = BTreeMap<String, SecretString>;

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    pub dialect: Dialect,
    pub kafka: Kafka,
    pub topics: Topics,
    pub redis: Redis,
    pub directory: DirectoryCache,
    pub imports: Imports,
    pub http: Http,
    pub log: Log,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Kafka {
    pub brokers: String,
    pub group_id: String,
    /// Filled in at load when empty: `switchboard-<instance>` (see [`instance_name`]).
    pub transactional_id: String,
    /// Every client's `client.id`; filled in at load when empty, as the transactional ID is.
    pub client_id: String,
    pub session_timeout_ms: u32,
    pub transaction_timeout_ms: u32,
    pub batch_max_messages: usize,
    pub batch_linger_ms: u64,
    pub max_record_bytes: usize,
    /// The largest record produced (the producer's `message.max.bytes`); a larger output is
    /// dead-lettered instead.
    pub max_output_bytes: usize,
    /// The producer's `linger.ms`.
    pub linger_ms: u32,
    /// How keys map to partitions for the records Switchboard writes to the input topic (the
    /// `/import` relay). It must be the platform producers' own, or a conversation's records
    /// would be split across partitions.
    pub partitioner: String,
    /// Passed to every Kafka client (security, tuning).
    pub properties: Properties,
    /// Passed to the processor's transactional producer only, over `properties`.
    pub producer_properties: Properties,
    /// Passed to the processor's group consumer only, over `properties`.
    pub consumer_properties: Properties,
}

/// librdkafka's partitioners; `murmur2_random` is the Java client's default.
pub const PARTITIONERS: [&str; 7] = [
    "murmur2_random",
    "murmur2",
    "consistent_random",
    "consistent",
    "fnv1a_random",
    "fnv1a",
    "random",
];

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Topics {
    pub input: String,
    pub channel_notifications: String,
    pub channel_dequeues: String,
    pub inbox_notifications: String,
    pub email_notifications: String,
    pub message_deliveries: String,
    pub command_results: String,
    pub bot_commands: String,
    pub dead_letters: String,
}

impl Topics {
    /// The configured name of a topic role.
    pub fn name(&self, topic: Topic) -> &str {
        match topic {
            Topic::Input => &self.input,
            Topic::ChannelNotifications => &self.channel_notifications,
            Topic::ChannelDequeues => &self.channel_dequeues,
            Topic::InboxNotifications => &self.inbox_notifications,
            Topic::EmailNotifications => &self.email_notifications,
            Topic::MessageDeliveries => &self.message_deliveries,
            Topic::CommandResults => &self.command_results,
            Topic::BotCommands => &self.bot_commands,
            Topic::DeadLetters => &self.dead_letters,
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Redis {
    pub url: String,
    pub username: String,
    pub password: SecretString,
    pub key_prefix: String,
    /// How long one reply (a batch's pipelined write is one) may take before the batch fails.
    pub response_timeout_ms: u64,
    /// Replicas that must acknowledge a batch's write before it commits (Redis `WAIT`); 0: none.
    pub wait_replicas: u32,
    pub wait_timeout_ms: u64,
    /// Redis Cluster's seed nodes, `host:port` (a list, or one comma-separated string from the
    /// environment); set: Cluster mode, `url` giving only the scheme and credentials.
    #[serde(deserialize_with = "redis_target::list")]
    pub cluster_nodes: Vec<String>,
    /// Sentinels, `host:port`, watching `sentinel_service`; set: the primary they name is
    /// used, `url` giving the scheme, credentials and database.
    #[serde(deserialize_with = "redis_target::list")]
    pub sentinel_nodes: Vec<String>,
    pub sentinel_service: String,
    /// PEM files for TLS (`rediss://`): a CA to trust instead of the system's store, and a client
    /// certificate and key for a server that asks for one. Empty: none.
    pub tls_ca_file: String,
    pub tls_cert_file: String,
    pub tls_key_file: String,
}

impl Redis {
    pub fn response_timeout(&self) -> std::time::Duration {
        std::time::Duration::from_millis(self.response_timeout_ms)
    }

    /// The URL to connect with: `url` with `username` and `password` percent-encoded into it
    /// (a password holding `@`, `/` or `:` survives), or, for a Unix socket, as its `user` and
    /// `pass` parameters. A secret, since it holds the password.
    pub fn connection_url(&self) -> SecretString {
        let password = self.password.expose_secret();
        if self.username.is_empty() && password.is_empty() {
            return SecretString::from(self.url.as_str());
        }
        let Some(mut url) = redis::parse_redis_url(&self.url) else {
            // Refused by the checks already; connecting will say so again.
            return SecretString::from(self.url.as_str());
        };
        if url.scheme().contains("unix") {
            let mut query = url.query_pairs_mut();
            if !self.username.is_empty() {
                query.append_pair("user", &self.username);
            }
            if !password.is_empty() {
                query.append_pair("pass", password);
            }
        } else {
            // Only URLs without a host refuse credentials; the checks refuse those.
            let _ = url.set_username(&self.username);
            if !password.is_empty() {
                let _ = url.set_password(Some(password));
            }
        }
        SecretString::from(String::from(url))
    }

    /// Where Redis is, as messages show it: `url` with any password replaced by `***`, or the
    /// Cluster's seeds, or the Sentinels' service.
    pub fn address(&self) -> String {
        if !self.cluster_nodes.is_empty() {
            return format!("the Redis Cluster {}", self.cluster_nodes.join(","));
        }
        if !self.sentinel_nodes.is_empty() {
            return format!(
                "the primary of {:?} by the Sentinels {}",
                self.sentinel_service,
                self.sentinel_nodes.join(",")
            );
        }
        match redis::parse_redis_url(&self.url) {
            Some(mut url) if url.password().is_some() => {
                let _ = url.set_password(Some("***"));
                url.into()
            }
            Some(url) => {
                let mut shown: String = url.into();
                if shown.contains("pass=") {
                    shown = shown.split('?').next().unwrap_or_default().to_string();
                }
                shown
            }
            None => self.url.clone(),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DirectoryCache {
    pub cache_capacity: u64,
    pub cache_ttl_ms: u64,
    /// How often, at most, the processor checks whether `directory load` ran since.
    pub version_check_ms: u64,
}

impl DirectoryCache {
    pub fn settings(&self) -> crate::runtime::store::directory::CacheSettings {
        crate::runtime::store::directory::CacheSettings {
            capacity: self.cache_capacity,
            ttl: std::time::Duration::from_millis(self.cache_ttl_ms),
            version_check: std::time::Duration::from_millis(self.version_check_ms),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Imports {
    /// How long, in message time, an `/import` may stay pending before the next message to its
    /// target fails it (`import_timed_out`).
    pub timeout_ms: u64,
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Http {
    pub listen: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    Text,
    Json,
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Log {
    pub format: LogFormat,
    pub level: String,
    /// Where to send traces over OTLP/HTTP (`runtime::pipeline::trace`); empty: nowhere.
    pub otlp_endpoint: String,
}

/// One thing wrong with the configuration.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    /// The setting, as a dotted path (`kafka.brokers`), or the variable or file at fault.
    pub setting: String,
    pub reason: String,
    /// Where the value came from (`/etc/switchboard.toml`, `SWITCHBOARD_KAFKA__BROKERS`), when
    /// it is not the defaults.
    pub origin: Option<String>,
}

impl std::fmt::Display for Problem {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.setting, self.reason)?;
        match &self.origin {
            Some(origin) => write!(f, " (set in {origin})"),
            None => Ok(()),
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("configuration file {0} does not exist")]
    MissingFile(String),
    /// The file is not TOML; figment's message names the file, the line and the column.
    #[error("configuration: {0}")]
    Syntax(String),
    #[error("{}", render(.0))]
    Invalid(Vec<Problem>),
}

impl ConfigError {
    /// Every problem found (one for a missing or unreadable file).
    pub fn problems(&self) -> Vec<Problem> {
        match self {
            ConfigError::Invalid(problems) => problems.clone(),
            other => vec![Problem {
                setting: "configuration file".into(),
                reason: other.to_string(),
                origin: None,
            }],
        }
    }
}

fn render(problems: &[Problem]) -> String {
    match problems {
        [one] => format!("configuration: {one}"),
        many => {
            let mut text = format!("configuration: {} problems:", many.len());
            for p in many {
                text.push_str("\n  ");
                text.push_str(&p.to_string());
            }
            text
        }
    }
}

/// A loaded configuration and what loading noticed without refusing it.
#[derive(Debug)]
pub struct Loaded {
    pub config: Config,
    /// `SWITCHBOARD_*` variables that name no setting (a Kubernetes Service named
    /// `switchboard` injects `SWITCHBOARD_PORT`, …): ignored, to be logged as a warning.
    pub ignored: Vec<String>,
    /// The file read, if any.
    pub file: Option<PathBuf>,
}

impl Config {
    /// The settings of `config/default.toml` alone, unvalidated and not filled in (an empty
    /// `transactional_id` stays empty): for what the tools share with the runtime's defaults.
    pub fn defaults() -> Config {
        use figment::providers::{Format, Toml};
        figment::Figment::from(Toml::string(DEFAULTS))
            .extract()
            .expect("config/default.toml is a configuration")
    }

    /// Loads the layers from this process's environment and validates the result.
    pub fn load(file: Option<&Path>) -> Result<Config, ConfigError> {
        Ok(Self::load_from(file, &environment())?.config)
    }

    /// As [`Config::load`], keeping what was ignored (for a warning).
    pub fn load_reporting(file: Option<&Path>) -> Result<Loaded, ConfigError> {
        Self::load_from(file, &environment())
    }

    /// Loads with `env` as the whole environment: the `SWITCHBOARD_*` settings, the
    /// `SWITCHBOARD_CONFIG` file when `file` is `None`, and the instance name (`POD_NAME`,
    /// `HOSTNAME`). Every problem is reported at once.
    pub fn load_from(
        file: Option<&Path>,
        env: &BTreeMap<String, String>,
    ) -> Result<Loaded, ConfigError> {
        let file = config_file(file, env);
        let layered = layers::load(file.as_deref(), env)?;
        let (mut config, ignored, mut problems) =
            (layered.config, layered.ignored, layered.problems);
        problems.extend(checks::check(&config).into_iter().map(|mut p| {
            // `kafka.properties."x"` was set where `kafka.properties` was.
            let setting = p.setting.split(".\"").next().unwrap_or_default();
            p.origin = layered.origins.get(setting).cloned();
            p
        }));
        if !problems.is_empty() {
            return Err(ConfigError::Invalid(problems));
        }
        let instance = instance_name(env);
        for id in [
            &mut config.kafka.transactional_id,
            &mut config.kafka.client_id,
        ] {
            if id.is_empty() {
                *id = format!("switchboard-{instance}");
            }
        }
        Ok(Loaded {
            config,
            ignored,
            file,
        })
    }

    /// The log format a failure to load should be reported in: the configured one as far as
    /// it can be read, else text.
    pub fn log_format_hint(file: Option<&Path>) -> LogFormat {
        let env = environment();
        layers::log_format(config_file(file, &env).as_deref(), &env)
    }

    /// The transactional ID: the configured one, else `switchboard-<instance>`.
    pub fn transactional_id(&self) -> String {
        self.kafka.transactional_id.clone()
    }

    /// The Kafka `client.id`: the configured one, else `switchboard-<instance>`.
    pub fn client_id(&self) -> &str {
        &self.kafka.client_id
    }

    /// The Redis URL to connect with, credentials included (see [`Redis::connection_url`]).
    pub fn redis_url(&self) -> SecretString {
        self.redis.connection_url()
    }

    /// Where Redis is: one node, a Cluster or Sentinels (see [`Redis::target`]).
    pub fn redis_target(&self) -> crate::runtime::store::Target {
        self.redis.target()
    }
}

/// This process's environment, as far as it is Unicode (other variables cannot be settings).
pub fn environment() -> BTreeMap<String, String> {
    std::env::vars_os()
        .filter_map(|(k, v)| Some((k.into_string().ok()?, v.into_string().ok()?)))
        .collect()
}

fn config_file(file: Option<&Path>, env: &BTreeMap<String, String>) -> Option<PathBuf> {
    file.map(Path::to_path_buf).or_else(|| {
        env.get(CONFIG_VARIABLE)
            .filter(|p| !p.is_empty())
            .map(PathBuf::from)
    })
}

/// A name for this instance that survives its restarts where the platform gives one: the
/// `POD_NAME` variable (a StatefulSet's pods are `<name>-0`, `<name>-1`, … whatever node they
/// land on), else `HOSTNAME`, else the host name, else `local`.
pub fn instance_name(env: &BTreeMap<String, String>) -> String {
    ["POD_NAME", "HOSTNAME"]
        .iter()
        .filter_map(|k| env.get(*k))
        .map(|v| v.trim().to_string())
        .find(|v| !v.is_empty())
        .or_else(|| {
            gethostname::gethostname()
                .into_string()
                .ok()
                .filter(|h| !h.trim().is_empty())
        })
        .unwrap_or_else(|| "local".into())
}
