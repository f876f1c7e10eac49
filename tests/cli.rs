//! `switchboard simulate` as a user runs it.

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

fn lines(stdout: &str) -> Vec<Value> {
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
    let out = lines(&stdout);
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
    let (code, _, stderr) = simulate(&["--directory", "/nonexistent/dir.yaml", "--input", TRACE]);
    assert_eq!(code, 1);
    assert!(stderr.contains("/nonexistent/dir.yaml"), "{stderr}");
    let bad = std::env::temp_dir().join(format!("switchboard-bad-{}.yaml", std::process::id()));
    std::fs::write(
        &bad,
        "channels: [{id: 0000000000000000000000c1, organization: 0000000000000000000000a9}]",
    )
    .unwrap();
    let (code, _, stderr) = simulate(&["--directory", bad.to_str().unwrap(), "--input", TRACE]);
    assert_eq!(code, 1);
    assert!(stderr.contains("0000000000000000000000a9"), "{stderr}");
    let _ = std::fs::remove_file(bad);
}
