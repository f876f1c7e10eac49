//! The command line as a user runs it: `simulate`, `check`, `directory load`, and how `run`
//! fails, stops and reports. The Kafka and Redis tests use the local servers
//! (`deploy/local/up`), each under a Redis key prefix of its own.

use std::io::Write;
use std::process::{Command, Stdio};

use serde_json::Value;

const BIN: &str = env!("CARGO_BIN_EXE_switchboard");
const DIR: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/examples/directory.yaml");
const TRACE: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/examples/trace.jsonl");

fn simulate(args: &[&str]) -> (i32, String, String) {
    let out = Command::new(BIN)
        .arg("simulate")
        .args(args)
        .output()
        .unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8(out.stdout).unwrap(),
        String::from_utf8(out.stderr).unwrap(),
    )
}

fn lines_of(stdout: &str) -> Vec<Value> {
    stdout
        .lines()
        .map(|l| serde_json::from_str(l).expect("each line is JSON"))
        .collect()
}

#[test]
fn simulate_prints_one_json_line_per_record_and_writes_state() {
    let state = std::env::temp_dir().join(format!("switchboard-state-{}.json", std::process::id()));
    let (code, stdout, stderr) = simulate(&[
        "--directory",
        DIR,
        "--input",
        TRACE,
        "--state",
        state.to_str().unwrap(),
    ]);
    assert_eq!(code, 0, "{stderr}");
    let out = lines_of(&stdout);
    for l in &out {
        assert!(
            l["topic"].is_string() && l["key"].is_string() && l["value"].is_object(),
            "{l}"
        );
    }
    // Every input line gets exactly one answer: a result, or a dead letter.
    let inputs = std::fs::read_to_string(TRACE)
        .unwrap()
        .lines()
        .filter(|l| !l.trim().is_empty())
        .count();
    let answers = out
        .iter()
        .filter(|l| l["topic"] == "command.results" || l["topic"] == "conversation.messages.dlq")
        .count();
    assert_eq!(answers, inputs);
    let doc: Value = serde_json::from_str(&std::fs::read_to_string(&state).unwrap()).unwrap();
    let first = &doc["00000000000000000000d001"];
    assert_eq!(first["status"], "closed");
    assert!(first["messages"].as_array().unwrap().len() > 10);
    let _ = std::fs::remove_file(state);
}

#[test]
fn simulate_is_deterministic_and_reads_stdin() {
    let (_, first, _) = simulate(&["--directory", DIR, "--input", TRACE]);
    let mut child = Command::new(BIN)
        .args(["simulate", "--directory", DIR, "--input", "-"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(std::fs::read(TRACE).unwrap().as_slice())
        .unwrap();
    let second = String::from_utf8(child.wait_with_output().unwrap().stdout).unwrap();
    assert_eq!(first, second);
}

#[test]
fn simulate_dead_letters_a_line_that_is_not_utf8_and_applies_the_rest() {
    let trace = std::fs::read(TRACE).unwrap();
    let mut lines: Vec<&[u8]> = trace.split(|b| *b == b'\n').collect();
    // The stream dead-letters any unreadable record; simulate must treat a file's lines alike.
    let broken: &[u8] = b"{\"id\": \"\xff\xfe\", \"type\": \"chat\"}";
    lines.insert(1, broken);
    let path =
        std::env::temp_dir().join(format!("switchboard-latin1-{}.jsonl", std::process::id()));
    std::fs::write(&path, lines.join(&b'\n')).unwrap();
    let (code, stdout, stderr) = simulate(&["--directory", DIR, "--input", path.to_str().unwrap()]);
    let _ = std::fs::remove_file(&path);
    assert_eq!(code, 0, "{stderr}");
    let out = lines_of(&stdout);
    let dead: Vec<&Value> = out
        .iter()
        .filter(|l| l["topic"] == "conversation.messages.dlq")
        .collect();
    assert!(
        dead.iter().any(|d| d["value"]["id"]
            .as_str()
            .is_some_and(|id| id.contains("line-2"))),
        "the non-UTF-8 line is dead-lettered: {dead:?}"
    );
    // Everything else comes out as it does without the broken line.
    let (_, clean, _) = simulate(&["--directory", DIR, "--input", TRACE]);
    let rest: Vec<&Value> = out
        .iter()
        .filter(|l| {
            !(l["topic"] == "conversation.messages.dlq"
                && l["value"]["id"]
                    .as_str()
                    .is_some_and(|id| id.contains("line-2")))
        })
        .filter(|l| l["topic"] != "conversation.messages.dlq")
        .collect();
    let expected: Vec<Value> = lines_of(&clean)
        .into_iter()
        .filter(|l| l["topic"] != "conversation.messages.dlq")
        .collect();
    assert_eq!(rest.len(), expected.len());
    for (a, b) in rest.iter().zip(&expected) {
        assert_eq!(*a, b);
    }
}

#[test]
fn the_dialect_changes_the_language() {
    let (_, web1on1, _) = simulate(&["--directory", DIR, "--input", TRACE]);
    let (_, chatshipper, _) = simulate(&[
        "--directory",
        DIR,
        "--input",
        TRACE,
        "--dialect",
        "chatshipper",
    ]);
    let unknown = |s: &str| s.matches("\"unknown_command\"").count();
    assert!(
        unknown(&chatshipper) > unknown(&web1on1),
        "/follow and /unfollow are unknown to ChatShipper"
    );
    let (code, _, stderr) =
        simulate(&["--directory", DIR, "--input", TRACE, "--dialect", "klingon"]);
    assert_ne!(code, 0);
    assert!(stderr.contains("klingon"), "{stderr}");
}

#[test]
fn bad_files_fail_with_a_message_naming_them() {
    // A bad directory file is a configuration error: EX_CONFIG.
    let (code, _, stderr) = simulate(&["--directory", "/nonexistent/dir.yaml", "--input", TRACE]);
    assert_eq!(code, 78);
    assert!(stderr.contains("/nonexistent/dir.yaml"), "{stderr}");
    let bad = std::env::temp_dir().join(format!("switchboard-bad-{}.yaml", std::process::id()));
    std::fs::write(
        &bad,
        "channels: [{id: 0000000000000000000000c1, organization: 0000000000000000000000a9}]",
    )
    .unwrap();
    let (code, _, stderr) = simulate(&["--directory", bad.to_str().unwrap(), "--input", TRACE]);
    assert_eq!(code, 78);
    assert!(stderr.contains("0000000000000000000000a9"), "{stderr}");
    let _ = std::fs::remove_file(bad);
}

// ---------------------------------------------------------------------------------------------
// check, directory load, and how run fails

const EX_UNAVAILABLE: i32 = 69;
const EX_CONFIG: i32 = 78;

fn redis_url() -> String {
    std::env::var("REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:16379/".into())
}

fn bootstrap() -> String {
    std::env::var("KAFKA_BOOTSTRAP").unwrap_or_else(|_| "127.0.0.1:19092".into())
}

/// A loopback port nothing listens on.
fn closed_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// The binary with these variables and no other SWITCHBOARD_* ones, pointed at the local
/// servers under a key prefix of its own.
fn command(test: &str, args: &[&str], vars: &[(&str, &str)]) -> Command {
    let mut c = Command::new(BIN);
    c.args(args);
    for (name, _) in std::env::vars_os() {
        if name.to_string_lossy().starts_with("SWITCHBOARD_") {
            c.env_remove(name);
        }
    }
    c.env("SWITCHBOARD_KAFKA__BROKERS", bootstrap())
        .env("SWITCHBOARD_REDIS__URL", redis_url())
        .env("SWITCHBOARD_REDIS__KEY_PREFIX", prefix(test))
        .env("SWITCHBOARD_HTTP__LISTEN", "127.0.0.1:0");
    for (k, v) in vars {
        c.env(k, v);
    }
    c
}

fn prefix(test: &str) -> String {
    format!("sbcli:{}:{test}", std::process::id())
}

fn switchboard(test: &str, args: &[&str], vars: &[(&str, &str)]) -> (i32, String, String) {
    let out = command(test, args, vars).output().unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8(out.stdout).unwrap(),
        String::from_utf8(out.stderr).unwrap(),
    )
}

fn redis() -> redis::Connection {
    redis::Client::open(redis_url())
        .unwrap()
        .get_connection()
        .expect("Redis is up (deploy/local/up)")
}

/// The directory version `directory load` left under the test's prefix.
fn directory_version(test: &str) -> Option<i64> {
    redis::cmd("GET")
        .arg(format!("{}:{{dir}}:version", prefix(test)))
        .query(&mut redis())
        .unwrap()
}

fn forget(test: &str) {
    let mut conn = redis();
    let keys: Vec<String> = redis::cmd("KEYS")
        .arg(format!("{}:*", prefix(test)))
        .query(&mut conn)
        .unwrap();
    if !keys.is_empty() {
        let _: () = redis::cmd("DEL").arg(keys).query(&mut conn).unwrap();
    }
}

fn temp_file(name: &str, contents: &str) -> String {
    let path = std::env::temp_dir().join(format!("switchboard-cli-{}-{name}", std::process::id()));
    std::fs::write(&path, contents).unwrap();
    path.to_str().unwrap().to_string()
}

const DANGLING: &str =
    "channels: [{id: 0000000000000000000000c1, organization: 0000000000000000000000a9}]\n";

#[test]
fn check_reports_every_configuration_problem_at_once() {
    let config = temp_file(
        "broken.toml",
        "dialect = \"klingon\"\n[kafka]\nbrokerz = \"x\"\nbatch_max_messages = 0\n\
         [directory]\ncache_capacity = 0\n",
    );
    let (code, stdout, _) = switchboard(
        "broken",
        &["check", "--config", &config],
        &[("SWITCHBOARD_HTTP__LISTEN", "everywhere")],
    );
    assert_eq!(code, EX_CONFIG, "{stdout}");
    let errors: Vec<&str> = stdout.lines().filter(|l| l.starts_with("error")).collect();
    for setting in [
        "dialect",
        "kafka.brokerz",
        "kafka.batch_max_messages",
        "directory.cache_capacity",
        "http.listen",
    ] {
        assert!(errors.iter().any(|l| l.contains(setting)), "{stdout}");
    }
    assert_eq!(errors.len(), 5, "{stdout}");
    assert!(
        stdout.contains("skipped"),
        "nothing is connected to: {stdout}"
    );

    // `run` refuses the same configuration with the same exit status, naming every problem.
    let (code, _, stderr) = switchboard(
        "broken",
        &["run"],
        &[
            ("SWITCHBOARD_CONFIG", &config),
            ("SWITCHBOARD_HTTP__LISTEN", "everywhere"),
        ],
    );
    assert_eq!(code, EX_CONFIG, "{stderr}");
    assert!(stderr.contains("5 problems"), "{stderr}");
    let _ = std::fs::remove_file(config);
}

#[test]
fn check_refuses_a_bad_directory_file() {
    let bad = temp_file("dangling.yaml", DANGLING);
    let (code, stdout, _) = switchboard(
        "bad-directory",
        &["check", "--no-connect", "--directory", &bad],
        &[],
    );
    assert_eq!(code, EX_CONFIG, "{stdout}");
    assert!(
        stdout.contains(&bad) && stdout.contains("0000000000000000000000a9"),
        "{stdout}"
    );
    let (code, stdout, _) = switchboard(
        "good-directory",
        &["check", "--no-connect", "--directory", DIR],
        &[],
    );
    assert_eq!(code, 0, "{stdout}");
    assert!(stdout.contains("3 organizations"), "{stdout}");
    let _ = std::fs::remove_file(bad);
}

#[test]
fn check_tells_unreachable_servers_apart() {
    let broker = format!("127.0.0.1:{}", closed_port());
    let redis = format!("redis://127.0.0.1:{}/", closed_port());
    let started = std::time::Instant::now();
    let (code, stdout, _) = switchboard(
        "unreachable",
        &["check", "--timeout-ms", "1000"],
        &[
            ("SWITCHBOARD_KAFKA__BROKERS", &broker),
            ("SWITCHBOARD_REDIS__URL", &redis),
        ],
    );
    assert_eq!(code, EX_UNAVAILABLE, "{stdout}");
    let errors: Vec<&str> = stdout.lines().filter(|l| l.starts_with("error")).collect();
    assert_eq!(errors.len(), 2, "{stdout}");
    assert!(errors[0].contains(&broker), "{stdout}");
    assert!(errors[1].contains(&redis), "{stdout}");
    assert!(started.elapsed().as_secs() < 10, "{:?}", started.elapsed());
}

#[test]
fn check_passes_against_the_real_servers() {
    let (code, stdout, _) = switchboard("real", &["check", "--directory", DIR], &[]);
    assert_eq!(code, 0, "{stdout}");
    assert!(stdout.contains("all 9 topics exist"), "{stdout}");
    assert!(stdout.contains("PONG"), "{stdout}");
    assert!(!stdout.lines().any(|l| l.starts_with("error")), "{stdout}");
}

#[test]
fn a_mistyped_kafka_property_never_shows_its_value() {
    for args in [&["check"][..], &["run"], &["loadgen", "--topic", "t"]] {
        let (code, stdout, stderr) = switchboard(
            "typo",
            args,
            &[(
                "SWITCHBOARD_KAFKA__PROPERTIES__SASL_PASWORD",
                "hunter2-secret",
            )],
        );
        assert_eq!(code, EX_CONFIG, "{args:?}: {stdout}{stderr}");
        let all = format!("{stdout}{stderr}");
        assert!(all.contains("sasl.pasword"), "{args:?}: {all}");
        assert!(!all.contains("hunter2"), "{args:?}: {all}");
    }
}

/// OAUTHBEARER with OIDC needs librdkafka built with libcurl (rdkafka's `curl` feature);
/// without it, librdkafka refuses each of these properties as "not supported in this build".
#[test]
fn this_build_accepts_oauthbearer_oidc_settings() {
    let (code, stdout, stderr) = switchboard(
        "oidc",
        &["check", "--no-connect"],
        &[
            (
                "SWITCHBOARD_KAFKA__PROPERTIES__SECURITY_PROTOCOL",
                "SASL_SSL",
            ),
            (
                "SWITCHBOARD_KAFKA__PROPERTIES__SASL_MECHANISM",
                "OAUTHBEARER",
            ),
            (
                "SWITCHBOARD_KAFKA__PROPERTIES__SASL_OAUTHBEARER_METHOD",
                "oidc",
            ),
            (
                "SWITCHBOARD_KAFKA__PROPERTIES__SASL_OAUTHBEARER_CLIENT_ID",
                "switchboard",
            ),
            (
                "SWITCHBOARD_KAFKA__PROPERTIES__SASL_OAUTHBEARER_CLIENT_SECRET",
                "oidc-secret-7c1d",
            ),
            (
                "SWITCHBOARD_KAFKA__PROPERTIES__SASL_OAUTHBEARER_TOKEN_ENDPOINT_URL",
                "https://idp.example/oauth2/token",
            ),
            (
                "SWITCHBOARD_KAFKA__PROPERTIES__SASL_OAUTHBEARER_SCOPE",
                "kafka",
            ),
        ],
    );
    assert_eq!(code, 0, "{stdout}{stderr}");
    assert!(!format!("{stdout}{stderr}").contains("oidc-secret"));
}

#[test]
fn a_redis_password_with_any_character_works() {
    let user = format!("sbcli-{}", std::process::id());
    let password = "p@ss/w:rd?#%";
    let mut conn = redis();
    let _: () = redis::cmd("ACL")
        .arg(&[
            "SETUSER",
            &user,
            "on",
            &format!(">{password}"),
            "~*",
            "+@all",
        ])
        .query(&mut conn)
        .unwrap();
    let (code, stdout, stderr) = switchboard(
        "acl",
        &["check"],
        &[
            ("SWITCHBOARD_REDIS__USERNAME", &user),
            ("SWITCHBOARD_REDIS__PASSWORD", password),
        ],
    );
    let _: () = redis::cmd("ACL")
        .arg(&["DELUSER", &user])
        .query(&mut conn)
        .unwrap();
    assert_eq!(code, 0, "{stdout}{stderr}");
    assert!(stdout.contains("PONG"), "{stdout}");
    assert!(!stdout.contains(password), "{stdout}");
}

#[test]
fn directory_load_validates_offline_and_refuses_to_empty_the_directory() {
    let test = "load";
    forget(test);
    // A dangling reference is found without Redis (none listens here), naming the file.
    let dangling = temp_file("load-dangling.yaml", DANGLING);
    let nowhere = format!("redis://127.0.0.1:{}/", closed_port());
    let (code, _, stderr) = switchboard(
        test,
        &["directory", "load", &dangling],
        &[("SWITCHBOARD_REDIS__URL", &nowhere)],
    );
    assert_eq!(code, EX_CONFIG, "{stderr}");
    assert!(
        stderr.contains(&dangling) && stderr.contains("0000000000000000000000a9"),
        "{stderr}"
    );
    assert_eq!(stderr.lines().count(), 1, "printed once: {stderr}");

    let empty = temp_file("load-empty.yaml", "{}\n");
    let (code, _, stderr) = switchboard(test, &["directory", "load", &empty], &[]);
    assert_eq!(code, EX_CONFIG, "{stderr}");
    assert!(stderr.contains("--force"), "{stderr}");
    assert_eq!(directory_version(test), None, "nothing written");

    let (code, _, stderr) = switchboard(test, &["directory", "load", DIR], &[]);
    assert_eq!(code, 0, "{stderr}");
    assert_eq!(directory_version(test), Some(1));
    let small = temp_file(
        "load-small.yaml",
        "organizations: [{id: 0000000000000000000000a1, name: Only}]\n",
    );
    let (code, _, stderr) = switchboard(test, &["directory", "load", &small], &[]);
    assert_eq!(code, EX_CONFIG, "{stderr}");
    assert!(stderr.contains("fewer than half"), "{stderr}");
    assert_eq!(directory_version(test), Some(1), "nothing written");
    let (code, _, stderr) = switchboard(test, &["directory", "load", &small, "--force"], &[]);
    assert_eq!(code, 0, "{stderr}");
    assert_eq!(directory_version(test), Some(2));

    // An unreachable Redis is EX_UNAVAILABLE, and the message names it.
    let (code, _, stderr) = switchboard(
        test,
        &["directory", "load", DIR],
        &[("SWITCHBOARD_REDIS__URL", &nowhere)],
    );
    assert_eq!(code, EX_UNAVAILABLE, "{stderr}");
    assert!(stderr.contains(&nowhere), "{stderr}");
    assert_eq!(stderr.lines().count(), 1, "printed once: {stderr}");
    forget(test);
    for f in [dangling, empty, small] {
        let _ = std::fs::remove_file(f);
    }
}

#[test]
fn sigterm_during_start_up_exits_promptly() {
    let test = "sigterm";
    forget(test);
    let (code, _, stderr) = switchboard(test, &["directory", "load", DIR], &[]);
    assert_eq!(code, 0, "{stderr}");
    // A broker that accepts nothing: `init_transactions` would wait 30 s.
    let broker = format!("127.0.0.1:{}", closed_port());
    let mut child = command(test, &["run"], &[("SWITCHBOARD_KAFKA__BROKERS", &broker)])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    std::thread::sleep(std::time::Duration::from_secs(1));
    let sent = std::time::Instant::now();
    let kill = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(kill.success());
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if sent.elapsed().as_secs() >= 5 {
            let _ = child.kill();
            panic!("still running 5 s after SIGTERM");
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    };
    let mut stderr = String::new();
    std::io::Read::read_to_string(&mut child.stderr.take().unwrap(), &mut stderr).unwrap();
    assert_eq!(status.code(), Some(0), "{stderr}");
    assert!(sent.elapsed().as_secs() < 2, "{:?}", sent.elapsed());
    assert!(stderr.contains("during start-up"), "{stderr}");
    forget(test);
}

#[test]
fn in_json_mode_the_fatal_error_is_one_json_line() {
    // Refused configuration: logging is not set up yet, the format is read from what loaded.
    let (code, _, stderr) = switchboard(
        "json",
        &["run"],
        &[
            ("SWITCHBOARD_LOG__FORMAT", "json"),
            ("SWITCHBOARD_KAFKA__BATCH_MAX_MESSAGES", "0"),
        ],
    );
    assert_eq!(code, EX_CONFIG, "{stderr}");
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
    let line: Value = serde_json::from_str(&stderr).expect("JSON");
    assert_eq!(line["level"], "ERROR");
    assert!(
        line.to_string().contains("kafka.batch_max_messages"),
        "{line}"
    );

    // Failing after logging started (no directory under this prefix): the same shape.
    forget("json");
    let (code, _, stderr) = switchboard("json", &["run"], &[("SWITCHBOARD_LOG__FORMAT", "json")]);
    assert_eq!(code, EX_UNAVAILABLE, "{stderr}");
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
    let line: Value = serde_json::from_str(&stderr).expect("JSON");
    assert_eq!(line["level"], "ERROR");
    assert!(line.to_string().contains("no directory"), "{line}");
}

#[test]
fn piped_logs_carry_no_colour_codes() {
    forget("colour");
    let (code, _, stderr) = switchboard(
        "colour",
        &["run"],
        &[("SWITCHBOARD_PORT", "tcp://10.96.0.12:9464")],
    );
    assert_eq!(code, EX_UNAVAILABLE, "{stderr}");
    assert!(
        stderr.contains("WARN") && stderr.contains("SWITCHBOARD_PORT"),
        "the stray variable is named, and start-up goes on: {stderr}"
    );
    assert!(!stderr.contains('\u{1b}'), "{stderr:?}");
}

#[test]
fn other_failures_exit_1_and_usage_errors_2() {
    forget("inspect");
    let (code, _, stderr) = switchboard("inspect", &["inspect", "000000000000000000000001"], &[]);
    assert_eq!(code, 1, "{stderr}");
    assert!(stderr.contains("does not exist"), "{stderr}");
    let (code, _, stderr) = switchboard("usage", &["run", "--confg", "x.toml"], &[]);
    assert_eq!(code, 2, "{stderr}");
}

#[test]
fn an_otlp_endpoint_that_is_not_a_plain_http_url_is_refused_at_start_up() {
    for endpoint in [
        "not a url",
        "collector:4318",
        "https://collector:4318/v1/traces",
    ] {
        let (code, _, stderr) = switchboard(
            "otlp",
            &["run"],
            &[("SWITCHBOARD_LOG__OTLP_ENDPOINT", endpoint)],
        );
        assert_eq!(code, EX_CONFIG, "{endpoint}: {stderr}");
        assert!(
            stderr.contains("log.otlp_endpoint") && stderr.contains("http://"),
            "{endpoint}: {stderr}"
        );
        assert!(
            stderr.contains("SWITCHBOARD_LOG__OTLP_ENDPOINT"),
            "{endpoint}: the variable that set it is named: {stderr}"
        );
    }
}
