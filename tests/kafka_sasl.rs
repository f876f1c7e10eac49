//! Switchboard against a broker that only speaks SASL/SCRAM-SHA-512 over TLS
//! (`deploy/local/kafka-sasl`, its CA made there with openssl): a run compared with `simulate`,
//! the password nowhere in what Switchboard prints (librdkafka's security and configuration
//! debugging on), a wrong password failing loudly, and a run authenticated with OAUTHBEARER
//! tokens fetched over OIDC's client-credentials grant from a token endpoint the test serves. A
//! binary of its own: every client in it talks to that broker.

mod kafka_support;

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::process::{Command, Output, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use base64::Engine;

use kafka_support::*;

const SCRIPT: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/deploy/local/kafka-sasl");

/// What `deploy/local/kafka-sasl env` says: bootstrap, CA file, user, password file.
fn broker() -> HashMap<String, String> {
    let running = Command::new(SCRIPT).arg("status").status().unwrap();
    let out = Command::new(SCRIPT).arg("env").output().unwrap();
    assert!(
        running.success() && out.status.success(),
        "the SASL_SSL broker is not running: start it with deploy/local/kafka-sasl start"
    );
    String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .filter_map(|l| l.split_once('='))
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

fn password() -> String {
    let file = &broker()["KAFKA_SASL_PASSWORD_FILE"];
    std::fs::read_to_string(file).unwrap().trim().to_string()
}

fn sasl() -> &'static Target {
    use_target(|| {
        let b = broker();
        let property = |k: &str, v: &str| (k.to_string(), v.to_string());
        Target {
            bootstrap: b["KAFKA_SASL_BOOTSTRAP"].clone(),
            properties: vec![
                property("security.protocol", "SASL_SSL"),
                property("sasl.mechanism", "SCRAM-SHA-512"),
                property("sasl.username", &b["KAFKA_SASL_USERNAME"]),
                property("sasl.password", &password()),
                property("ssl.ca.location", &b["KAFKA_SASL_CA"]),
            ],
            replication: 1,
        }
    })
}

fn text(out: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// librdkafka's debugging of authentication and of its configuration, and Switchboard's own
/// debug logs: what would show a password if anything did.
fn verbose(cmd: &mut Command) -> &mut Command {
    cmd.env("SWITCHBOARD_LOG__LEVEL", "debug").env(
        "SWITCHBOARD_KAFKA__PROPERTIES__DEBUG",
        "security,broker,conf",
    )
}

#[tokio::test(flavor = "multi_thread")]
async fn scram_over_tls_matches_simulate_and_never_prints_the_password() {
    sasl();
    let secret = password();
    let setup = Setup::create("sasl").await;
    let trace = scaled_trace("sasl", 8);
    setup.produce_trace(&trace);
    let expected = expected_results(&trace);

    let check = verbose(&mut setup.command(&["check"])).output().unwrap();
    let check_text = text(&check);
    assert!(check.status.success(), "check: {check_text}");
    assert!(check_text.contains("all 9 topics exist"), "{check_text}");

    let log = std::env::temp_dir().join(format!("sb-sasl-run-{}.log", std::process::id()));
    let file = std::fs::File::create(&log).unwrap();
    let mut cmd = setup.instance_command("1", "127.0.0.1:0");
    verbose(&mut cmd)
        .stdout(Stdio::from(file.try_clone().unwrap()))
        .stderr(Stdio::from(file));
    let child = Proc::spawn(&mut cmd);
    wait_for_results(&setup, expected, Duration::from_secs(120));
    terminate(child);
    assert_matches_oracle(&setup, &trace).await;

    let run_text = std::fs::read_to_string(&log).unwrap();
    // The debugging was on: the SCRAM exchange and the configuration were logged.
    assert!(
        run_text.contains("SCRAM-SHA-512"),
        "no SASL debugging in the run's log"
    );
    assert!(
        run_text.contains("sasl.password"),
        "no configuration dump in the run's log"
    );
    for (what, printed) in [("check", &check_text), ("run", &run_text)] {
        assert!(
            !printed.contains(&secret),
            "{what} printed the SASL password"
        );
    }
    let _ = std::fs::remove_file(log);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_wrong_password_fails_loudly_and_is_not_printed() {
    sasl();
    let wrong = "not-the-password-5f3e1c";
    let setup = Setup::create("sasl-wrong").await;

    let check = setup
        .command(&["check"])
        .env("SWITCHBOARD_KAFKA__PROPERTIES__SASL_PASSWORD", wrong)
        .output()
        .unwrap();
    let check_text = text(&check);
    assert_eq!(check.status.code(), Some(78), "check: {check_text}");
    assert!(
        check_text.contains("TLS or SASL authentication failed")
            && check_text.contains("invalid credentials"),
        "check: {check_text}"
    );

    let started = Instant::now();
    let run = verbose(&mut setup.command(&["run"]))
        .env("SWITCHBOARD_KAFKA__PROPERTIES__SASL_PASSWORD", wrong)
        .env("SWITCHBOARD_HTTP__LISTEN", "127.0.0.1:0")
        .output()
        .unwrap();
    let run_text = text(&run);
    assert_eq!(run.status.code(), Some(78), "run: {run_text}");
    let last = run_text.lines().last().unwrap_or_default();
    assert!(
        last.contains("TLS or SASL authentication with Kafka failed")
            && last.contains("invalid credentials with SASL mechanism SCRAM-SHA-512"),
        "run's last words: {last}"
    );
    eprintln!("run refused after {:?}", started.elapsed());

    // The secrets of other mechanisms, beside a configuration error that stops `check`.
    let refused = setup
        .command(&["check", "--no-connect"])
        .env("SWITCHBOARD_KAFKA__PROPERTIES__SASL_PASSWORD", wrong)
        .env(
            "SWITCHBOARD_KAFKA__PROPERTIES__SSL_KEY_PASSWORD",
            "key-secret-81d2",
        )
        .env(
            "SWITCHBOARD_KAFKA__PROPERTIES__SASL_OAUTHBEARER_CLIENT_SECRET",
            "client-secret-09ab",
        )
        .env("SWITCHBOARD_KAFKA__PROPERTIES__CLIENT_ID", "mine")
        .output()
        .unwrap();
    let refused_text = text(&refused);
    assert_eq!(refused.status.code(), Some(78), "{refused_text}");
    for (what, printed) in [
        ("check", &check_text),
        ("run", &run_text),
        ("check --no-connect", &refused_text),
    ] {
        for secret in [wrong, "key-secret-81d2", "client-secret-09ab"] {
            assert!(!printed.contains(secret), "{what} printed {secret}");
        }
    }
}

/// A token endpoint as an OIDC provider serves it, reduced to what librdkafka asks of one: each
/// POST gets an unsigned JWT for subject `switchboard`, which the broker's unsecured OAUTHBEARER
/// validator (deploy/local/kafka-sasl) accepts. Returns its URL and each request's
/// `Authorization` header.
fn token_endpoint() -> (String, Arc<Mutex<Vec<String>>>) {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}/token", listener.local_addr().unwrap());
    let seen = Arc::new(Mutex::new(Vec::new()));
    let kept = Arc::clone(&seen);
    std::thread::spawn(move || {
        for stream in listener.incoming().flatten() {
            if let Some(authorization) = answer(stream) {
                kept.lock().unwrap().push(authorization);
            }
        }
    });
    (url, seen)
}

fn answer(stream: std::net::TcpStream) -> Option<String> {
    let mut reader = BufReader::new(stream.try_clone().ok()?);
    let (mut length, mut authorization) = (0, String::new());
    loop {
        let mut line = String::new();
        reader.read_line(&mut line).ok()?;
        let line = line.trim_end();
        if line.is_empty() {
            break;
        }
        let (name, value) = line.split_once(':').unwrap_or((line, ""));
        match name.to_ascii_lowercase().as_str() {
            "content-length" => length = value.trim().parse().unwrap_or(0),
            "authorization" => authorization = value.trim().to_string(),
            _ => {}
        }
    }
    let mut body = vec![0; length];
    reader.read_exact(&mut body).ok()?;
    let b64 = |v: serde_json::Value| {
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(v.to_string())
    };
    let now = unix_now();
    let token = format!(
        "{}.{}.",
        b64(serde_json::json!({"alg": "none"})),
        b64(serde_json::json!({"sub": "switchboard", "iat": now, "exp": now + 3600}))
    );
    let json =
        serde_json::json!({"access_token": token, "token_type": "bearer", "expires_in": 3600})
            .to_string();
    let mut stream = stream;
    write!(
        stream,
        "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{json}",
        json.len()
    )
    .ok()?;
    Some(authorization)
}

fn unix_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

#[tokio::test(flavor = "multi_thread")]
async fn oauthbearer_oidc_tokens_from_a_local_endpoint_match_simulate() {
    sasl();
    let (url, requests) = token_endpoint();
    let secret = "oidc-client-secret-4b9e";
    let setup = Setup::create("sasl-oidc").await;
    let trace = scaled_trace("sasl-oidc", 3);
    setup.produce_trace(&trace);
    let expected = expected_results(&trace);

    let mut cmd = setup.instance_command("1", "127.0.0.1:0");
    let property = |name: &str| format!("SWITCHBOARD_KAFKA__PROPERTIES__{name}");
    cmd.env_remove(property("SASL_USERNAME"))
        .env_remove(property("SASL_PASSWORD"))
        .env(property("SASL_MECHANISM"), "OAUTHBEARER")
        .env(property("SASL_OAUTHBEARER_METHOD"), "oidc")
        .env(property("SASL_OAUTHBEARER_CLIENT_ID"), "switchboard-client")
        .env(property("SASL_OAUTHBEARER_CLIENT_SECRET"), secret)
        .env(property("SASL_OAUTHBEARER_TOKEN_ENDPOINT_URL"), &url)
        .stderr(Stdio::piped());
    let child = cmd.spawn().unwrap();
    let pid = child.id();
    let waited = std::thread::spawn(move || child.wait_with_output().unwrap());
    wait_for_results(&setup, expected, Duration::from_secs(120));
    assert!(Command::new("kill")
        .args(["-TERM", &pid.to_string()])
        .status()
        .unwrap()
        .success());
    let out = waited.join().unwrap();
    let printed = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{printed}");
    assert_matches_oracle(&setup, &trace).await;

    // The client credentials went to the endpoint, as HTTP Basic authentication.
    let basic =
        base64::engine::general_purpose::STANDARD.encode(format!("switchboard-client:{secret}"));
    let requests = requests.lock().unwrap();
    assert!(!requests.is_empty(), "no token was fetched");
    assert!(
        requests.iter().all(|a| *a == format!("Basic {basic}")),
        "{requests:?}"
    );
    assert!(
        !printed.contains(secret),
        "run printed the OIDC client secret"
    );
}
