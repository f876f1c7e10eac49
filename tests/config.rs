//! The configuration's layers, environment and checks, loaded with an explicit environment (so
//! no test touches the process's own).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use redis::IntoConnectionInfo;
use secrecy::ExposeSecret;
use switchboard::config::{Config, ConfigError, Loaded, LogFormat, Problem};
use switchboard::core::event::Topic;
use switchboard::core::Dialect;

fn env(vars: &[(&str, &str)]) -> BTreeMap<String, String> {
    vars.iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

/// A file of its own under the temporary directory.
fn file(name: &str, contents: &str) -> PathBuf {
    let path =
        std::env::temp_dir().join(format!("switchboard-config-{}-{name}", std::process::id()));
    std::fs::write(&path, contents).unwrap();
    path
}

fn load(path: Option<&Path>, vars: &[(&str, &str)]) -> Result<Loaded, ConfigError> {
    Config::load_from(path, &env(vars))
}

fn config(vars: &[(&str, &str)]) -> Config {
    load(None, vars).unwrap().config
}

fn problems(path: Option<&Path>, vars: &[(&str, &str)]) -> Vec<Problem> {
    match load(path, vars) {
        Err(ConfigError::Invalid(problems)) => problems,
        other => panic!("expected problems, got {other:?}"),
    }
}

fn with_toml(toml: &str) -> Vec<Problem> {
    let path = file(&format!("{}.toml", toml.len()), toml);
    let found = problems(Some(&path), &[]);
    let _ = std::fs::remove_file(path);
    found
}

fn settings(problems: &[Problem]) -> Vec<&str> {
    problems.iter().map(|p| p.setting.as_str()).collect()
}

#[test]
fn defaults_load_and_validate() {
    let c = config(&[]);
    assert_eq!(c.topics.name(Topic::Input), "conversation.messages");
    assert_eq!(
        c.topics.name(Topic::DeadLetters),
        "conversation.messages.dlq"
    );
    assert_eq!(c.dialect, Dialect::Web1on1);
    assert_eq!(c.log.format, LogFormat::Text);
    assert!(c.kafka.properties.is_empty());
}

#[test]
fn a_file_overrides_the_defaults_and_the_environment_overrides_the_file() {
    let path = file(
        "layers.toml",
        "dialect = \"chatshipper\"\n[kafka]\nbrokers = \"k1:9092,k2:9092\"\ngroup_id = \"file\"\n\
         [kafka.properties]\n\"security.protocol\" = \"SASL_SSL\"\n\"socket.keepalive.enable\" = true\n\
         \"fetch.wait.max.ms\" = 100\n",
    );
    let c = load(Some(&path), &[]).unwrap().config;
    assert_eq!(c.dialect, Dialect::Chatshipper);
    assert_eq!(c.kafka.brokers, "k1:9092,k2:9092");
    let property = |k: &str| c.kafka.properties[k].expose_secret().to_string();
    assert_eq!(property("security.protocol"), "SASL_SSL");
    // librdkafka takes text: TOML numbers and booleans are written as such.
    assert_eq!(property("socket.keepalive.enable"), "true");
    assert_eq!(property("fetch.wait.max.ms"), "100");
    assert_eq!(
        c.redis.key_prefix, "sb",
        "untouched keys keep their defaults"
    );

    let c = load(
        Some(&path),
        &[
            ("SWITCHBOARD_KAFKA__GROUP_ID", "from-env"),
            ("SWITCHBOARD_LOG__FORMAT", "json"),
        ],
    )
    .unwrap()
    .config;
    assert_eq!(c.kafka.group_id, "from-env");
    assert_eq!(c.kafka.brokers, "k1:9092,k2:9092");
    assert_eq!(c.log.format, LogFormat::Json);

    // SWITCHBOARD_CONFIG names the file when none is given.
    let c = config(&[("SWITCHBOARD_CONFIG", path.to_str().unwrap())]);
    assert_eq!(c.kafka.group_id, "file");
    let _ = std::fs::remove_file(path);
}

#[test]
fn errors_name_the_setting() {
    let one = |toml: &str, setting: &str| {
        let found = with_toml(toml);
        assert!(
            found.iter().any(|p| p.setting == setting),
            "{toml:?}: {found:?}"
        );
    };
    one("[kafka]\nbrokers = \"\"\n", "kafka.brokers");
    one("[kafka]\nbrokers = \"not a host\"\n", "kafka.brokers");
    one("[kafka]\nbrokers = \"k1:port\"\n", "kafka.brokers");
    one(
        "[kafka]\nbatch_max_messages = 0\n",
        "kafka.batch_max_messages",
    );
    one(
        "[kafka]\nsession_timeout_ms = 5\n",
        "kafka.session_timeout_ms",
    );
    one(
        "[kafka]\nmax_output_bytes = 1000\n",
        "kafka.max_output_bytes",
    );
    one(
        "[kafka]\nmax_output_bytes = 2000000000\n",
        "kafka.max_output_bytes",
    );
    one("[topics]\nbot_commands = \"command.results\"\n", "topics");
    one("[redis]\nurl = \"http://x\"\n", "redis.url");
    one("[redis]\nurl = \"redis://h/not-a-db\"\n", "redis.url");
    one("[redis]\nkey_prefix = \"{sb}\"\n", "redis.key_prefix");
    one("[http]\nlisten = \"everywhere\"\n", "http.listen");
    one("[log]\nlevel = \"info,,=[[\"\n", "log.level");
    one("[kafka]\nbrokerz = \"x\"\n", "kafka.brokerz");
    one(
        "[kafka]\nbatch_linger_ms = \"soon\"\n",
        "kafka.batch_linger_ms",
    );
    one("dialect = \"klingon\"\n", "dialect");
    one("[topicz]\ninput = \"x\"\n", "topicz");
    one("kafka = 3\n", "kafka");

    let unknown = with_toml("[kafka]\nbrokerz = \"x\"\n");
    assert!(
        unknown[0].reason.contains("brokers"),
        "lists the valid keys"
    );
    assert!(
        unknown[0].origin.as_deref().unwrap().ends_with(".toml"),
        "names the file: {unknown:?}"
    );

    let missing = load(Some(Path::new("/nonexistent/sb.toml")), &[]).unwrap_err();
    assert!(missing.to_string().contains("/nonexistent/sb.toml"));
    let syntax = file("syntax.toml", "[kafka\n");
    let err = load(Some(&syntax), &[]).unwrap_err().to_string();
    assert!(err.contains("line 1"), "{err}");
    let _ = std::fs::remove_file(syntax);
}

#[test]
fn every_problem_is_reported_at_once() {
    let found = with_toml(
        "dialect = \"klingon\"\n[kafka]\nbrokerz = \"x\"\nbatch_linger_ms = \"soon\"\n\
         batch_max_messages = 0\n[redis]\nurl = \"http://x\"\n[http]\nlisten = \"everywhere\"\n",
    );
    let mut names = settings(&found);
    names.sort_unstable();
    assert_eq!(
        names,
        [
            "dialect",
            "http.listen",
            "kafka.batch_linger_ms",
            "kafka.batch_max_messages",
            "kafka.brokerz",
            "redis.url"
        ]
    );
    // The semantic checks name where the value was set, too.
    let zero = found
        .iter()
        .find(|p| p.setting == "kafka.batch_max_messages")
        .unwrap();
    assert!(zero.origin.is_some(), "{zero:?}");
    let text = ConfigError::Invalid(found.clone()).to_string();
    assert!(text.starts_with("configuration: 6 problems:"), "{text}");
    assert_eq!(text.lines().count(), 7, "{text}");
}

#[test]
fn a_hostile_environment_still_loads() {
    let loaded = load(
        None,
        &[
            // What the kubelet injects for a Service named `switchboard`.
            ("SWITCHBOARD_SERVICE_HOST", "10.96.0.12"),
            ("SWITCHBOARD_SERVICE_PORT", "9464"),
            ("SWITCHBOARD_PORT", "tcp://10.96.0.12:9464"),
            ("SWITCHBOARD_PORT_9464_TCP_ADDR", "10.96.0.12"),
            // ... and for one named `switchboard-redis`.
            ("SWITCHBOARD_REDIS_SERVICE_HOST", "10.96.0.13"),
            ("SWITCHBOARD_REDIS__PASSWORD", "12345"),
            ("SWITCHBOARD_KAFKA__GROUP_ID", "2024"),
            ("SWITCHBOARD_KAFKA__TRANSACTIONAL_ID", "true"),
            ("SWITCHBOARD_TOPICS__INPUT", "1.5"),
            ("SWITCHBOARD_KAFKA__BATCH_MAX_MESSAGES", "500"),
            ("SWITCHBOARD_CONFIG", ""),
        ],
    )
    .unwrap();
    let c = &loaded.config;
    assert_eq!(c.redis.password.expose_secret(), "12345");
    assert_eq!(c.kafka.group_id, "2024");
    assert_eq!(c.transactional_id(), "true");
    assert_eq!(c.topics.input, "1.5");
    assert_eq!(c.kafka.batch_max_messages, 500, "numbers are still numbers");
    assert_eq!(
        loaded.ignored,
        [
            "SWITCHBOARD_PORT",
            "SWITCHBOARD_PORT_9464_TCP_ADDR",
            "SWITCHBOARD_REDIS_SERVICE_HOST",
            "SWITCHBOARD_SERVICE_HOST",
            "SWITCHBOARD_SERVICE_PORT"
        ]
    );

    // Under a known section, a name that is no setting is a mistake, as in the file.
    let found = problems(None, &[("SWITCHBOARD_KAFKA__BROKERZ", "x")]);
    assert_eq!(settings(&found), ["kafka.brokerz"]);
    assert_eq!(
        found[0].origin.as_deref(),
        Some("SWITCHBOARD_KAFKA__BROKERZ")
    );
    let found = problems(None, &[("SWITCHBOARD_KAFKA__BATCH_MAX_MESSAGES", "lots")]);
    assert_eq!(settings(&found), ["kafka.batch_max_messages"]);
}

#[test]
fn kafka_properties_come_from_the_environment_each_map_its_own() {
    let c = config(&[
        ("SWITCHBOARD_KAFKA__PROPERTIES__SASL_PASSWORD", "12345"),
        (
            "SWITCHBOARD_KAFKA__PROPERTIES__SECURITY_PROTOCOL",
            "SASL_SSL",
        ),
        (
            "SWITCHBOARD_KAFKA__PRODUCER_PROPERTIES__COMPRESSION_TYPE",
            "zstd",
        ),
        (
            "SWITCHBOARD_KAFKA__CONSUMER_PROPERTIES__FETCH_MAX_BYTES",
            "1048576",
        ),
    ]);
    let text = |m: &switchboard::config::Properties, k: &str| m[k].expose_secret().to_string();
    assert_eq!(text(&c.kafka.properties, "sasl.password"), "12345");
    assert_eq!(text(&c.kafka.properties, "security.protocol"), "SASL_SSL");
    assert_eq!(
        text(&c.kafka.producer_properties, "compression.type"),
        "zstd"
    );
    assert_eq!(
        text(&c.kafka.consumer_properties, "fetch.max.bytes"),
        "1048576"
    );
    assert!(!c.kafka.producer_properties.contains_key("sasl.password"));
}

#[test]
fn secrets_come_from_files() {
    let redis = file("redis-password", "p@ss/w:rd\n");
    let sasl = file("sasl-password", "s3cret");
    let c = config(&[
        ("SWITCHBOARD_REDIS__PASSWORD_FILE", redis.to_str().unwrap()),
        (
            "SWITCHBOARD_KAFKA__PROPERTIES__SASL_PASSWORD_FILE",
            sasl.to_str().unwrap(),
        ),
    ]);
    assert_eq!(
        c.redis.password.expose_secret(),
        "p@ss/w:rd",
        "one newline dropped"
    );
    assert_eq!(
        c.kafka.properties["sasl.password"].expose_secret(),
        "s3cret"
    );

    let both = problems(
        None,
        &[
            ("SWITCHBOARD_REDIS__PASSWORD", "x"),
            ("SWITCHBOARD_REDIS__PASSWORD_FILE", redis.to_str().unwrap()),
        ],
    );
    assert_eq!(settings(&both), ["redis.password"]);
    let unreadable = problems(
        None,
        &[("SWITCHBOARD_REDIS__PASSWORD_FILE", "/nonexistent/secret")],
    );
    assert!(unreadable[0].reason.contains("/nonexistent/secret"));
    assert_eq!(
        unreadable[0].origin.as_deref(),
        Some("SWITCHBOARD_REDIS__PASSWORD_FILE")
    );
    let _ = std::fs::remove_file(redis);
    let _ = std::fs::remove_file(sasl);
}

#[test]
fn redis_credentials_survive_any_character() {
    let c = config(&[
        ("SWITCHBOARD_REDIS__USERNAME", "sb:user"),
        ("SWITCHBOARD_REDIS__PASSWORD", "p@ss/w:rd%?#"),
    ]);
    let info = c
        .redis_url()
        .expose_secret()
        .into_connection_info()
        .unwrap();
    assert_eq!(info.redis_settings().username(), Some("sb:user"));
    assert_eq!(info.redis_settings().password(), Some("p@ss/w:rd%?#"));
    assert_eq!(
        c.redis.address(),
        "redis://127.0.0.1:16379/",
        "no credentials shown"
    );

    let c = config(&[
        ("SWITCHBOARD_REDIS__URL", "unix:///run/redis.sock"),
        ("SWITCHBOARD_REDIS__PASSWORD", "a&b=c"),
    ]);
    let info = c
        .redis_url()
        .expose_secret()
        .into_connection_info()
        .unwrap();
    assert_eq!(info.redis_settings().password(), Some("a&b=c"));

    // In the URL, the password is never shown either.
    let c = config(&[("SWITCHBOARD_REDIS__URL", "redis://:hunter2@cache:6379/0")]);
    assert_eq!(c.redis.address(), "redis://:***@cache:6379/0");
    let both = problems(
        None,
        &[
            ("SWITCHBOARD_REDIS__URL", "redis://:hunter2@cache:6379/0"),
            ("SWITCHBOARD_REDIS__PASSWORD", "other"),
        ],
    );
    assert_eq!(settings(&both), ["redis.url"]);
}

#[test]
fn secrets_stay_out_of_debug_output_and_messages() {
    let c = config(&[
        ("SWITCHBOARD_REDIS__PASSWORD", "hunter2-redis"),
        (
            "SWITCHBOARD_KAFKA__PROPERTIES__SASL_PASSWORD",
            "hunter2-sasl",
        ),
    ]);
    let shown = format!("{c:?}");
    assert!(!shown.contains("hunter2"), "{shown}");

    // A mistyped property: its name is reported, its value never.
    let found = problems(
        None,
        &[
            (
                "SWITCHBOARD_KAFKA__PROPERTIES__SASL_PASWORD",
                "hunter2-typo",
            ),
            (
                "SWITCHBOARD_KAFKA__PROPERTIES__SECURITY_PROTOCOL",
                "hunter2-protocol",
            ),
        ],
    );
    let text = ConfigError::Invalid(found.clone()).to_string();
    assert!(text.contains("sasl.pasword"), "{text}");
    assert!(text.contains("security.protocol"), "{text}");
    assert!(!text.contains("hunter2"), "{text}");
}

#[test]
fn properties_switchboard_sets_itself_are_refused_in_every_map() {
    for map in ["PROPERTIES", "PRODUCER_PROPERTIES", "CONSUMER_PROPERTIES"] {
        for (property, variable) in [
            ("group.id", "GROUP_ID"),
            ("linger.ms", "LINGER_MS"),
            ("enable.idempotence", "ENABLE_IDEMPOTENCE"),
            ("auto.offset.reset", "AUTO_OFFSET_RESET"),
            ("client.id", "CLIENT_ID"),
            ("message.max.bytes", "MESSAGE_MAX_BYTES"),
        ] {
            let name = format!("SWITCHBOARD_KAFKA__{map}__{variable}");
            let found = problems(None, &[(name.as_str(), "x")]);
            assert_eq!(found.len(), 1, "{name}: {found:?}");
            assert!(found[0].setting.contains(property), "{found:?}");
            assert!(found[0].reason.contains("Switchboard itself"), "{found:?}");
        }
    }
}

#[test]
fn the_instance_names_the_transactional_and_client_ids() {
    let c = config(&[("POD_NAME", "switchboard-2"), ("HOSTNAME", "node-7")]);
    assert_eq!(c.transactional_id(), "switchboard-switchboard-2");
    assert_eq!(c.client_id(), "switchboard-switchboard-2");
    let c = config(&[("HOSTNAME", "node-7")]);
    assert_eq!(c.transactional_id(), "switchboard-node-7");
    let c = config(&[]);
    let host = gethostname::gethostname().into_string().unwrap();
    assert_eq!(c.client_id(), format!("switchboard-{host}"));
    let c = config(&[
        ("POD_NAME", "switchboard-2"),
        ("SWITCHBOARD_KAFKA__CLIENT_ID", "orders-switchboard"),
        ("SWITCHBOARD_KAFKA__TRANSACTIONAL_ID", "sb-fixed"),
    ]);
    assert_eq!(c.client_id(), "orders-switchboard");
    assert_eq!(c.transactional_id(), "sb-fixed");
}

#[test]
fn the_example_configuration_loads() {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("config/switchboard.example.toml");
    let c = load(
        Some(&path),
        &[
            ("POD_NAME", "switchboard-0"),
            ("SWITCHBOARD_REDIS__PASSWORD", "from-a-secret"),
        ],
    )
    .unwrap()
    .config;
    assert_eq!(c.log.format, LogFormat::Json);
    assert_eq!(c.transactional_id(), "switchboard-switchboard-0");
    assert_eq!(
        c.kafka.producer_properties["compression.type"].expose_secret(),
        "zstd"
    );
}

#[test]
fn simulate_applies_the_limits_the_runtime_defaults_to() {
    use switchboard::runtime::pipeline::Limits;
    let loaded = config(&[]);
    assert_eq!(Limits::defaults(), Limits::of(&loaded));
    assert_eq!(Limits::defaults().import_timeout_ms, 86_400_000);
    let c = config(&[("SWITCHBOARD_KAFKA__MAX_OUTPUT_BYTES", "20000")]);
    assert_eq!(c.kafka.max_output_bytes, 20000);
    assert!(Limits::of(&c).relay_bytes() < 20000);
    assert_ne!(Limits::of(&c), Limits::defaults());
    let c = config(&[("SWITCHBOARD_IMPORTS__TIMEOUT_MS", "60000")]);
    assert_eq!(Limits::of(&c).import_timeout_ms, 60_000);
}

#[test]
fn the_import_timeout_is_at_least_a_second() {
    let problems = problems(None, &[("SWITCHBOARD_IMPORTS__TIMEOUT_MS", "999")]);
    assert!(
        problems
            .iter()
            .any(|p| p.setting == "imports.timeout_ms" && p.reason.contains("at least 1000")),
        "{problems:?}"
    );
}
