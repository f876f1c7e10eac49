//! The layout's rules, checked on the source tree: the core stays pure, and no file or
//! function grows past what a reader takes in at once (docs/architecture.md, "Layout").

use std::path::{Path, PathBuf};

const SRC: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/src");
const MAX_FILE_LINES: usize = 500;
const MAX_FN_LINES: usize = 80;

/// What the core may not name: IO, clocks, randomness, threads, the environment, async
/// runtimes and clients. Each is matched as a path prefix in code (comments excluded).
const FORBIDDEN_IN_CORE: &[&str] = &[
    "std::fs",
    "std::net",
    "std::io::Read",
    "std::io::Write",
    "std::io::stdin",
    "std::io::stdout",
    "std::process",
    "std::thread",
    "std::env",
    "std::time::SystemTime",
    "std::time::Instant",
    "SystemTime::now",
    "Instant::now",
    "Utc::now",
    "Local::now",
    "tokio",
    "rdkafka",
    "redis::",
    "fastrand",
    "rand::",
    "moka",
    "tracing",
    "futures",
    "async fn",
    ".await",
    "crate::runtime",
    "crate::tools",
    "crate::config",
    "crate::directory_file",
];

fn rust_files(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            out.extend(rust_files(&path));
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
    out.sort();
    out
}

/// The file's lines with line comments and string literals blanked, so that docs may name
/// what code may not use.
fn code_lines(text: &str) -> Vec<String> {
    text.lines()
        .map(|line| {
            let mut code = String::new();
            let mut in_str = false;
            let mut chars = line.chars().peekable();
            while let Some(c) = chars.next() {
                match c {
                    '\\' if in_str => {
                        chars.next();
                    }
                    '"' => in_str = !in_str,
                    '/' if !in_str && chars.peek() == Some(&'/') => break,
                    _ if in_str => {}
                    _ => code.push(c),
                }
            }
            code
        })
        .collect()
}

/// Lines before the file's `#[cfg(test)]` module, which the size rules do not cover.
fn non_test_part(text: &str) -> &str {
    match text.find("#[cfg(test)]") {
        Some(at) => &text[..at],
        None => text,
    }
}

/// `(name, first line, length)` of every function, found by rustfmt's layout: a line that
/// declares a `fn` and its closing brace at the same indentation.
fn functions(text: &str) -> Vec<(String, usize, usize)> {
    let lines: Vec<&str> = text.lines().collect();
    let mut found = Vec::new();
    for (i, line) in lines.iter().enumerate() {
        let trimmed = line.trim_start();
        let indent = line.len() - trimmed.len();
        let Some(at) = trimmed.find("fn ") else {
            continue;
        };
        let before = &trimmed[..at];
        let is_decl = before.split_whitespace().all(|w| {
            matches!(
                w,
                "pub" | "pub(crate)" | "pub(super)" | "async" | "const" | "unsafe" | "extern"
            )
        });
        // A declaration without a body (a trait's) ends its signature with `;`, not `{`.
        let signature_end = lines[i..]
            .iter()
            .map(|l| l.trim_end())
            .find(|l| l.ends_with('{') || l.ends_with(';'));
        if !is_decl || signature_end.is_none_or(|l| l.ends_with(';')) {
            continue;
        }
        let name: String = trimmed[at + 3..]
            .chars()
            .take_while(|c| c.is_alphanumeric() || *c == '_')
            .collect();
        let closing = " ".repeat(indent) + "}";
        if let Some(end) = lines[i..].iter().position(|l| *l == closing) {
            // A one-line signature's body, or a signature broken over lines.
            found.push((name, i + 1, end + 1));
        }
    }
    found
}

#[test]
fn the_core_names_no_io_clock_randomness_or_runtime() {
    let mut offences = Vec::new();
    for path in rust_files(&Path::new(SRC).join("core")) {
        let text = std::fs::read_to_string(&path).unwrap();
        for (n, line) in code_lines(&text).iter().enumerate() {
            for word in FORBIDDEN_IN_CORE {
                if line.contains(word) {
                    offences.push(format!("{}:{}: {word}", path.display(), n + 1));
                }
            }
        }
    }
    assert!(
        offences.is_empty(),
        "the core must stay pure:\n{}",
        offences.join("\n")
    );
}

#[test]
fn the_purity_check_catches_what_it_forbids() {
    let sample = "use tokio::runtime;\n// std::fs in a comment is fine\nlet s = \"std::fs\";\nstd::fs::read(p);\n";
    let lines = code_lines(sample);
    let hits: Vec<usize> = lines
        .iter()
        .enumerate()
        .filter(|(_, l)| FORBIDDEN_IN_CORE.iter().any(|w| l.contains(w)))
        .map(|(n, _)| n + 1)
        .collect();
    assert_eq!(hits, [1, 4]);
}

#[test]
fn no_source_file_is_over_500_lines() {
    let long: Vec<String> = rust_files(Path::new(SRC))
        .into_iter()
        .filter_map(|path| {
            let text = std::fs::read_to_string(&path).unwrap();
            let n = non_test_part(&text).lines().count();
            (n > MAX_FILE_LINES).then(|| format!("{}: {n} lines", path.display()))
        })
        .collect();
    assert!(
        long.is_empty(),
        "files over {MAX_FILE_LINES} lines:\n{}",
        long.join("\n")
    );
}

#[test]
fn no_function_outside_tests_is_over_80_lines() {
    let mut long = Vec::new();
    for path in rust_files(Path::new(SRC)) {
        let text = std::fs::read_to_string(&path).unwrap();
        for (name, line, len) in functions(non_test_part(&text)) {
            if len > MAX_FN_LINES {
                long.push(format!("{}:{line}: fn {name}: {len} lines", path.display()));
            }
        }
    }
    assert!(
        long.is_empty(),
        "functions over {MAX_FN_LINES} lines:\n{}",
        long.join("\n")
    );
}

#[test]
fn the_function_measure_counts_from_fn_to_its_brace() {
    let text = "pub fn a() {\n    x();\n}\n\nimpl B {\n    async fn b(\n        y: u8,\n    ) {\n        z();\n    }\n}\n";
    assert_eq!(
        functions(text),
        [("a".to_string(), 1, 3), ("b".to_string(), 6, 5)]
    );
}
