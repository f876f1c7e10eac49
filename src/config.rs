//! Configuration: typed, layered and validated at start-up.
//!
//! Layers, later ones winning: `config/default.toml` (compiled in), the file given with
//! `--config`, then `SWITCHBOARD_<SECTION>__<KEY>` environment variables. Unknown keys are
//! errors, and every error names the setting.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::Path;

use figment::providers::{Env, Format, Toml};
use figment::Figment;
use serde::{Deserialize, Serialize};

use crate::core::event::Topic;
use crate::core::Dialect;

/// The defaults, as shipped in `config/default.toml`.
pub const DEFAULTS: &str = include_str!("../config/default.toml");

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    pub dialect: Dialect,
    pub kafka: Kafka,
    pub topics: Topics,
    pub redis: Redis,
    pub directory: DirectoryCache,
    pub http: Http,
    pub log: Log,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Kafka {
    pub brokers: String,
    pub group_id: String,
    pub transactional_id: String,
    pub session_timeout_ms: u32,
    pub transaction_timeout_ms: u32,
    pub batch_max_messages: usize,
    pub batch_linger_ms: u64,
    pub max_record_bytes: usize,
    /// The producer's `linger.ms`.
    pub linger_ms: u32,
    /// How keys map to partitions for the records Switchboard writes to the input topic (the
    /// `/import` relay). It must be the platform producers' own, or a conversation's records
    /// would be split across partitions.
    pub partitioner: String,
    #[serde(default)]
    pub properties: BTreeMap<String, String>,
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

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
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

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Redis {
    pub url: String,
    pub username: String,
    pub password: String,
    pub key_prefix: String,
    /// How long one reply (a batch's pipelined write is one) may take before the batch fails.
    pub response_timeout_ms: u64,
}

impl Redis {
    pub fn response_timeout(&self) -> std::time::Duration {
        std::time::Duration::from_millis(self.response_timeout_ms)
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
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

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Http {
    pub listen: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    Text,
    Json,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Log {
    pub format: LogFormat,
    pub level: String,
    /// Where to send traces over OTLP/HTTP (`runtime::pipeline::trace`); empty: nowhere.
    pub otlp_endpoint: String,
}

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("configuration: {0}")]
    Load(#[from] Box<figment::Error>),
    #[error("configuration file {0} does not exist")]
    MissingFile(String),
    #[error("configuration: {setting}: {reason}")]
    Invalid {
        setting: &'static str,
        reason: String,
    },
}

impl Config {
    /// Loads the layers and validates the result.
    pub fn load(file: Option<&Path>) -> Result<Config, ConfigError> {
        Self::load_with(file, Env::prefixed("SWITCHBOARD_").split("__"))
    }

    /// As [`Config::load`], with the environment layer given (tests use a fixed one).
    pub fn load_with(file: Option<&Path>, env: Env) -> Result<Config, ConfigError> {
        let mut figment = Figment::new().merge(Toml::string(DEFAULTS));
        if let Some(path) = file {
            if !path.exists() {
                return Err(ConfigError::MissingFile(path.display().to_string()));
            }
            figment = figment.merge(Toml::file(path));
        }
        let config: Config = figment.merge(env).extract().map_err(Box::new)?;
        config.validate()?;
        Ok(config)
    }

    /// Checks what the types cannot: the first setting found wrong is the error.
    pub fn validate(&self) -> Result<(), ConfigError> {
        self.kafka.validate()?;
        self.topics.validate()?;
        self.redis.validate_location()?;
        if !PARTITIONERS.contains(&self.kafka.partitioner.as_str()) {
            return invalid(
                "kafka.partitioner",
                format!("must be one of {}", PARTITIONERS.join(", ")),
            );
        }
        if self.redis.response_timeout_ms == 0 {
            return invalid("redis.response_timeout_ms", "must be at least 1");
        }
        if self.directory.cache_capacity == 0 {
            return invalid("directory.cache_capacity", "must be at least 1");
        }
        if self.directory.cache_ttl_ms == 0 {
            return invalid("directory.cache_ttl_ms", "must be at least 1");
        }
        if self.http.listen.parse::<SocketAddr>().is_err() {
            return invalid("http.listen", "must be an address such as 127.0.0.1:9464");
        }
        Ok(())
    }

    /// The Redis URL with the configured ACL credentials applied.
    pub fn redis_url(&self) -> String {
        let r = &self.redis;
        if r.username.is_empty() && r.password.is_empty() {
            return r.url.clone();
        }
        match r.url.split_once("://") {
            Some((scheme, rest)) if !rest.contains('@') => {
                format!("{scheme}://{}:{}@{rest}", r.username, r.password)
            }
            _ => r.url.clone(),
        }
    }

    /// The transactional ID: the configured one, else `switchboard-<hostname>`.
    pub fn transactional_id(&self) -> String {
        if !self.kafka.transactional_id.is_empty() {
            return self.kafka.transactional_id.clone();
        }
        let host = std::fs::read_to_string("/etc/hostname")
            .ok()
            .map(|h| h.trim().to_string())
            .filter(|h| !h.is_empty())
            .unwrap_or_else(|| "local".into());
        format!("switchboard-{host}")
    }
}

fn invalid(setting: &'static str, reason: impl Into<String>) -> Result<(), ConfigError> {
    Err(ConfigError::Invalid {
        setting,
        reason: reason.into(),
    })
}

impl Kafka {
    fn validate(&self) -> Result<(), ConfigError> {
        if self.brokers.split(',').any(|b| b.trim().is_empty()) {
            return invalid(
                "kafka.brokers",
                "must list at least one host:port, comma-separated, none empty",
            );
        }
        if self.group_id.trim().is_empty() {
            return invalid("kafka.group_id", "must not be empty");
        }
        if self.batch_max_messages == 0 {
            return invalid("kafka.batch_max_messages", "must be at least 1");
        }
        if self.max_record_bytes < 1024 {
            return invalid("kafka.max_record_bytes", "must be at least 1024");
        }
        if self.transaction_timeout_ms < 1000 || self.session_timeout_ms < 1000 {
            return invalid(
                "kafka.transaction_timeout_ms",
                "timeouts must be at least 1000 ms",
            );
        }
        const OWN: [&str; 5] = [
            "bootstrap.servers",
            "group.id",
            "transactional.id",
            "enable.auto.commit",
            "isolation.level",
        ];
        if let Some(key) = self.properties.keys().find(|k| OWN.contains(&k.as_str())) {
            return invalid(
                "kafka.properties",
                format!("{key:?} is set by Switchboard itself; use the kafka section's own keys"),
            );
        }
        Ok(())
    }
}

impl Topics {
    fn validate(&self) -> Result<(), ConfigError> {
        let names: Vec<&str> = Topic::ALL.iter().map(|t| self.name(*t)).collect();
        if names.iter().any(|n| n.trim().is_empty()) {
            return invalid("topics", "no topic name may be empty");
        }
        let mut distinct = names.clone();
        distinct.sort_unstable();
        distinct.dedup();
        if distinct.len() != names.len() {
            return invalid("topics", "every topic needs its own name");
        }
        Ok(())
    }
}

impl Redis {
    /// The URL's scheme and the key prefix.
    fn validate_location(&self) -> Result<(), ConfigError> {
        let scheme_ok = ["redis://", "rediss://", "unix://", "redis+unix://"]
            .iter()
            .any(|s| self.url.starts_with(s));
        if !scheme_ok {
            return invalid(
                "redis.url",
                "must start with redis://, rediss:// (TLS) or unix://",
            );
        }
        if self.key_prefix.is_empty() || self.key_prefix.contains(['{', '}']) {
            return invalid(
                "redis.key_prefix",
                "must be non-empty and free of { and } (they mark hash tags)",
            );
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn no_env() -> Env {
        Env::prefixed("SWITCHBOARD_TEST_UNSET_").split("__")
    }

    fn with_file(toml: &str) -> Result<Config, ConfigError> {
        let path = std::env::temp_dir().join(format!(
            "switchboard-config-{}-{}.toml",
            std::process::id(),
            toml.len()
        ));
        std::fs::write(&path, toml).unwrap();
        let r = Config::load_with(Some(&path), no_env());
        let _ = std::fs::remove_file(path);
        r
    }

    #[test]
    fn defaults_load_and_validate() {
        let c = Config::load_with(None, no_env()).unwrap();
        assert_eq!(c.topics.name(Topic::Input), "conversation.messages");
        assert_eq!(
            c.topics.name(Topic::DeadLetters),
            "conversation.messages.dlq"
        );
        assert_eq!(c.dialect, Dialect::Web1on1);
        assert_eq!(c.log.format, LogFormat::Text);
    }

    #[test]
    fn a_file_overrides_the_defaults() {
        let c = with_file("dialect = \"chatshipper\"\n[kafka]\nbrokers = \"k1:9092,k2:9092\"\n[kafka.properties]\n\"security.protocol\" = \"SASL_SSL\"\n").unwrap();
        assert_eq!(c.dialect, Dialect::Chatshipper);
        assert_eq!(c.kafka.brokers, "k1:9092,k2:9092");
        assert_eq!(c.kafka.properties["security.protocol"], "SASL_SSL");
        assert_eq!(
            c.kafka.group_id, "switchboard",
            "untouched keys keep their defaults"
        );
    }

    #[test]
    // figment::Jail's closure must return figment's own (large) error type.
    #[allow(clippy::result_large_err)]
    fn the_environment_overrides_the_file() {
        figment::Jail::expect_with(|jail| {
            jail.set_env("SWITCHBOARD_KAFKA__GROUP_ID", "from-env");
            jail.set_env("SWITCHBOARD_LOG__FORMAT", "json");
            let c = Config::load(None).map_err(|e| e.to_string())?;
            assert_eq!(c.kafka.group_id, "from-env");
            assert_eq!(c.log.format, LogFormat::Json);
            Ok(())
        });
    }

    #[test]
    fn errors_name_the_setting() {
        let err = |toml: &str| with_file(toml).unwrap_err().to_string();
        assert!(err("[kafka]\nbrokers = \"\"\n").contains("kafka.brokers"));
        assert!(err("[kafka]\nbatch_max_messages = 0\n").contains("kafka.batch_max_messages"));
        assert!(err("[topics]\nbot_commands = \"command.results\"\n").contains("topics"));
        assert!(err("[redis]\nurl = \"http://x\"\n").contains("redis.url"));
        assert!(err("[http]\nlisten = \"everywhere\"\n").contains("http.listen"));
        assert!(err("[kafka.properties]\n\"group.id\" = \"x\"\n").contains("group.id"));
        let unknown = err("[kafka]\nbrokerz = \"x\"\n");
        assert!(unknown.contains("brokerz"), "{unknown}");
        let wrong_type = err("[kafka]\nbatch_linger_ms = \"soon\"\n");
        assert!(wrong_type.contains("batch_linger_ms"), "{wrong_type}");
        let bad_dialect = err("dialect = \"klingon\"\n");
        assert!(bad_dialect.contains("klingon"), "{bad_dialect}");
        let missing =
            Config::load_with(Some(Path::new("/nonexistent/sb.toml")), no_env()).unwrap_err();
        assert!(missing.to_string().contains("/nonexistent/sb.toml"));
    }

    #[test]
    fn redis_credentials_are_applied_to_the_url() {
        let mut c = Config::load_with(None, no_env()).unwrap();
        c.redis.username = "sb".into();
        c.redis.password = "secret".into();
        assert_eq!(c.redis_url(), "redis://sb:secret@127.0.0.1:16379/");
    }
}
