//! `deploy/` checked against what the binary really is: the Helm chart (`helm lint`, what
//! `helm template` renders, and the settings it renders loaded by the binary's own
//! configuration code), its alerts (`promtool check rules` and `promtool test rules`), the
//! Grafana dashboard (every metric it queries is one the binary exports), the image's build
//! context and Dockerfile, and the compose file.
//!
//! helm and promtool come from `scripts/deploy-tools`. A test that needs a missing one fails
//! when `CI` is set, and otherwise is skipped with a note.

use std::collections::{BTreeMap, BTreeSet};
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::process::Command;

use serde::Deserialize;
use serde_json::Value as Json;
use serde_yaml_ng::Value as Yaml;

use switchboard::config::Config;
use switchboard::runtime::metrics::Committed;

const BIN: &str = env!("CARGO_BIN_EXE_switchboard");
const RELEASE: &str = "switchboard";
const NAMESPACE: &str = "chat";
/// helm built with `go install` assumes Kubernetes 1.20 unless told; the chart needs 1.25+.
const KUBE_VERSION: &str = "1.31.0";
/// The longest a commit can take: send_offsets 30 s, deliveries 30 s, three 30 s commit tries.
const WORST_COMMIT_SECS: i64 = 150;
/// `/healthz` turns 503 once the loop has not polled for this long.
const HEALTHZ_STALL_SECS: i64 = 60;
/// Metrics the alerts name that the binary does not export yet (see deploy/README.md). When one
/// appears, this test says so, and it comes off the list.
const PENDING_METRICS: [&str; 0] = [];
/// Series Prometheus makes itself for every target.
const PROMETHEUS_SERIES: [&str; 1] = ["up"];

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn read(path: &str) -> String {
    std::fs::read_to_string(root().join(path)).unwrap_or_else(|e| panic!("reading {path}: {e}"))
}

// ---------------------------------------------------------------------------------------------
// Tools and processes

fn tool(name: &str) -> Option<PathBuf> {
    let mut dirs: Vec<PathBuf> = std::env::var_os("PATH")
        .map(|p| std::env::split_paths(&p).collect())
        .unwrap_or_default();
    if let Some(gopath) = std::env::var_os("GOPATH") {
        dirs.push(PathBuf::from(gopath).join("bin"));
    }
    if let Some(home) = std::env::var_os("HOME") {
        dirs.push(PathBuf::from(home).join("go/bin"));
    }
    dirs.into_iter().map(|d| d.join(name)).find(|p| p.is_file())
}

/// The tool, or `None` (skip) outside CI; in CI a missing tool is a failure.
fn require(name: &str) -> Option<PathBuf> {
    if let Some(path) = tool(name) {
        return Some(path);
    }
    let ci = std::env::var("CI").is_ok_and(|v| !v.is_empty() && v != "false" && v != "0");
    assert!(
        !ci,
        "{name} is not on PATH nor in ~/go/bin; scripts/deploy-tools installs it"
    );
    // Straight to stderr: the test harness would swallow eprintln! of a passing test.
    let _ = writeln!(
        std::io::stderr(),
        "note: a deploy test skipped: {name} is not installed (scripts/deploy-tools installs it)"
    );
    None
}

/// Runs a command from the repository root and returns its standard output; fails the test
/// with both outputs when it fails.
fn run(cmd: &mut Command) -> String {
    // Explicit, because figment::Jail moves the process's working directory while it runs.
    cmd.current_dir(root());
    let out = cmd
        .output()
        .unwrap_or_else(|e| panic!("running {cmd:?}: {e}"));
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "{cmd:?} failed ({}):\n{stdout}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    stdout
}

/// A fresh scratch directory for one test.
fn scratch(name: &str) -> PathBuf {
    let dir =
        std::env::temp_dir().join(format!("switchboard-deploy-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("a scratch directory");
    dir
}

// ---------------------------------------------------------------------------------------------
// The chart

fn chart() -> PathBuf {
    root().join("deploy/helm/switchboard")
}

/// Everything optional switched on: monitoring, the directory load, secrets, a config file.
fn everything_on() -> Vec<String> {
    let directory = root().join("examples/directory.yaml");
    [
        "--set",
        "metrics.serviceMonitor.enabled=true,metrics.prometheusRule.enabled=true",
        "--set",
        "secretEnv.redis.password.name=switchboard-redis,secretEnv.redis.password.key=password",
        "--set",
        "configFileSecret.name=switchboard-config",
        // A whole number as values.yaml gives it (a float to Helm).
        "--set-json",
        "config.kafka.max_record_bytes=1048576",
        "--set-file",
    ]
    .iter()
    .map(|s| s.to_string())
    .chain([format!("directory.content={}", directory.display())])
    .collect()
}

fn template(helm: &Path, args: &[String]) -> Vec<Yaml> {
    let out = run(Command::new(helm)
        .args(["template", RELEASE])
        .arg(chart())
        .args(["--namespace", NAMESPACE, "--kube-version", KUBE_VERSION])
        .args(args));
    serde_yaml_ng::Deserializer::from_str(&out)
        .map(|doc| Yaml::deserialize(doc).expect("helm renders YAML"))
        .filter(|doc| !doc.is_null())
        .collect()
}

fn kind<'a>(docs: &'a [Yaml], kind: &str) -> Vec<&'a Yaml> {
    docs.iter()
        .filter(|d| d["kind"].as_str() == Some(kind))
        .collect()
}

fn one<'a>(docs: &'a [Yaml], k: &str) -> &'a Yaml {
    let found = kind(docs, k);
    assert_eq!(found.len(), 1, "one {k} expected, found {}", found.len());
    found[0]
}

fn int(v: &Yaml, what: &str) -> i64 {
    v.as_i64()
        .unwrap_or_else(|| panic!("{what}: not a number: {v:?}"))
}

#[test]
fn helm_lint_passes_with_defaults_and_with_everything_on() {
    let Some(helm) = require("helm") else { return };
    for args in [vec![], everything_on()] {
        run(Command::new(&helm)
            .args(["lint", "--strict", "--kube-version", KUBE_VERSION])
            .arg(chart())
            .args(&args));
    }
}

#[test]
fn the_statefulset_is_fit_for_exactly_once() {
    let Some(helm) = require("helm") else { return };
    let docs = template(&helm, &[]);
    for absent in ["ServiceMonitor", "PrometheusRule", "Job", "ConfigMap"] {
        assert!(kind(&docs, absent).is_empty(), "{absent} is off by default");
    }
    let sts = one(&docs, "StatefulSet");
    let pod = &sts["spec"]["template"]["spec"];
    let selector = &sts["spec"]["selector"]["matchLabels"];
    let container = &pod["containers"][0];

    assert_eq!(pod["enableServiceLinks"].as_bool(), Some(false));
    let grace = int(&pod["terminationGracePeriodSeconds"], "grace period");
    assert!(grace > WORST_COMMIT_SECS, "grace period {grace}s");

    let env = &container["env"];
    let var = |name: &str| {
        env.as_sequence()
            .expect("env")
            .iter()
            .find(|e| e["name"].as_str() == Some(name))
            .unwrap_or_else(|| panic!("{name} is not set"))
    };
    assert_eq!(
        var("POD_NAME")["valueFrom"]["fieldRef"]["fieldPath"].as_str(),
        Some("metadata.name")
    );
    let txn = var("SWITCHBOARD_KAFKA__TRANSACTIONAL_ID")["value"].as_str();
    assert!(txn.is_some_and(|v| v.ends_with("$(POD_NAME)")), "{txn:?}");

    let live = &container["livenessProbe"];
    assert_eq!(live["httpGet"]["path"].as_str(), Some("/healthz"));
    assert_eq!(
        container["readinessProbe"]["httpGet"]["path"].as_str(),
        Some("/readyz")
    );
    // The loop does not poll while it waits for a commit: liveness must outlast the longest.
    let tolerated = HEALTHZ_STALL_SECS
        + int(&live["periodSeconds"], "period") * int(&live["failureThreshold"], "threshold");
    assert!(
        tolerated > WORST_COMMIT_SECS,
        "liveness gives up after {tolerated}s"
    );
    let port = live["httpGet"]["port"].as_str().expect("a named port");
    assert!(container["ports"]
        .as_sequence()
        .expect("ports")
        .iter()
        .any(|p| p["name"].as_str() == Some(port)));

    assert_eq!(pod["securityContext"]["runAsNonRoot"].as_bool(), Some(true));
    let sc = &container["securityContext"];
    assert_eq!(sc["readOnlyRootFilesystem"].as_bool(), Some(true));
    assert_eq!(sc["allowPrivilegeEscalation"].as_bool(), Some(false));

    let pdb = one(&docs, "PodDisruptionBudget");
    assert_eq!(int(&pdb["spec"]["maxUnavailable"], "maxUnavailable"), 1);
    assert_eq!(&pdb["spec"]["selector"]["matchLabels"], selector);

    let services = kind(&docs, "Service");
    assert_eq!(
        services.len(),
        2,
        "a headless Service and a metrics Service"
    );
    let headless = services
        .iter()
        .find(|s| s["spec"]["clusterIP"].as_str() == Some("None"))
        .expect("a headless Service");
    assert_eq!(headless["metadata"]["name"], sts["spec"]["serviceName"]);
    for s in services {
        assert_eq!(&s["spec"]["selector"], selector);
    }
}

#[test]
fn the_optional_parts_render_when_switched_on() {
    let Some(helm) = require("helm") else { return };
    let docs = template(&helm, &everything_on());
    let monitor = one(&docs, "ServiceMonitor");
    let metrics = kind(&docs, "Service")
        .into_iter()
        .find(|s| s["spec"]["clusterIP"].as_str() != Some("None"))
        .expect("the metrics Service");
    for (label, value) in monitor["spec"]["selector"]["matchLabels"]
        .as_mapping()
        .expect("labels")
    {
        assert_eq!(&metrics["metadata"]["labels"][label], value, "{label:?}");
    }
    one(&docs, "PrometheusRule");

    // The directory load: a hook Job reading the example directory from a hook ConfigMap made
    // before it.
    let job = one(&docs, "Job");
    let config_map = one(&docs, "ConfigMap");
    let hook_weight = |d: &Yaml| -> i64 {
        let a = &d["metadata"]["annotations"];
        assert_eq!(a["helm.sh/hook"].as_str(), Some("pre-install,pre-upgrade"));
        a["helm.sh/hook-weight"]
            .as_str()
            .expect("a weight")
            .parse()
            .expect("a number")
    };
    assert!(hook_weight(config_map) < hook_weight(job));
    let pod = &job["spec"]["template"]["spec"];
    let args: Vec<&str> = pod["containers"][0]["args"]
        .as_sequence()
        .expect("args")
        .iter()
        .filter_map(Yaml::as_str)
        .collect();
    assert_eq!(&args[..2], ["directory", "load"]);
    let file = Path::new(args[2]);
    let mount = pod["containers"][0]["volumeMounts"]
        .as_sequence()
        .expect("mounts")
        .iter()
        .find(|m| file.starts_with(m["mountPath"].as_str().unwrap_or("-")))
        .expect("the directory file is mounted");
    let volume = pod["volumes"]
        .as_sequence()
        .expect("volumes")
        .iter()
        .find(|v| v["name"] == mount["name"])
        .expect("its volume");
    assert_eq!(volume["configMap"]["name"], config_map["metadata"]["name"]);
    let key = file
        .file_name()
        .and_then(|f| f.to_str())
        .expect("a file name");
    assert_eq!(
        config_map["data"][key].as_str().map(str::trim_end),
        Some(read("examples/directory.yaml").trim_end())
    );
    // The hook runs before the release's other resources exist: it must not need them.
    assert!(pod["serviceAccountName"].is_null());
    assert!(kind(&docs, "Job")
        .iter()
        .all(
            |j| j["spec"]["template"]["metadata"]["labels"]["app.kubernetes.io/component"].as_str()
                == Some("directory")
        ));
}

/// The environment variables a workload's container gets, as the kubelet would resolve them:
/// pod names and secrets replaced by stand-ins.
fn resolved_env(workload: &Yaml, pod_name: &str) -> BTreeMap<String, String> {
    let mut env = BTreeMap::new();
    for e in workload["spec"]["template"]["spec"]["containers"][0]["env"]
        .as_sequence()
        .expect("env")
    {
        let name = e["name"].as_str().expect("a name").to_string();
        let value = if let Some(v) = e["value"].as_str() {
            v.replace("$(POD_NAME)", pod_name)
        } else if e["valueFrom"]["fieldRef"]["fieldPath"].as_str() == Some("metadata.name") {
            pod_name.to_string()
        } else if !e["valueFrom"]["secretKeyRef"].is_null() {
            "s3cret".to_string()
        } else {
            panic!("{name}: an unexpected kind of value: {e:?}")
        };
        assert!(
            env.insert(name.clone(), value).is_none(),
            "{name} is set twice"
        );
    }
    env
}

/// Loads the binary's configuration with exactly these SWITCHBOARD_* variables set.
// figment::Jail's closure must return figment's own (large) error type.
#[allow(clippy::result_large_err)]
fn load_config(env: &BTreeMap<String, String>) -> Result<Config, String> {
    let mut result = Err("not run".to_string());
    figment::Jail::expect_with(|jail| {
        for (name, value) in env.iter().filter(|(n, _)| n.starts_with("SWITCHBOARD_")) {
            jail.set_env(name, value);
        }
        result = Config::load(None).map_err(|e| e.to_string());
        Ok(())
    });
    result
}

#[test]
fn the_settings_the_chart_renders_load_in_the_binary() {
    let Some(helm) = require("helm") else { return };
    // A bad value is refused: this is a real check, not a formality.
    let bad = BTreeMap::from([(
        "SWITCHBOARD_HTTP__LISTEN".to_string(),
        "everywhere".to_string(),
    )]);
    assert!(load_config(&bad).is_err());

    for args in [vec![], everything_on()] {
        let docs = template(&helm, &args);
        for workload in kind(&docs, "StatefulSet")
            .into_iter()
            .chain(kind(&docs, "Job"))
        {
            let pod_name = format!("{RELEASE}-0");
            let env = resolved_env(workload, &pod_name);
            let config = load_config(&env).unwrap_or_else(|e| {
                panic!(
                    "{} {}: {e}\n{env:#?}",
                    workload["kind"].as_str().unwrap_or("?"),
                    workload["metadata"]["name"].as_str().unwrap_or("?")
                )
            });
            assert_eq!(config.kafka.brokers, "kafka:9092");
            if workload["kind"].as_str() == Some("StatefulSet") {
                assert_eq!(config.transactional_id(), pod_name);
                assert_eq!(config.http.listen, "0.0.0.0:9464");
            }
        }
    }
}

// ---------------------------------------------------------------------------------------------
// What the binary exports, and the names PromQL expressions use

/// Every series name the binary's registry exports, histograms with their suffixes.
/// The binary's metrics, each labelled family with a child, so that all of them are exported.
fn exporting_every_family() -> std::sync::Arc<switchboard::runtime::metrics::Metrics> {
    let m = switchboard::runtime::metrics::Metrics::new();
    m.messages
        .with_label_values(&["chat", "committed"])
        .inc_by(0);
    m.redis_seconds.with_label_values(&["load"]);
    m.consumer_lag
        .assigned("conversation.messages", [(0, Committed::At(0))]);
    m.consumer_lag.ends([(0, 0, 0)]);
    m
}

fn exported_metrics() -> BTreeSet<String> {
    let m = exporting_every_family();
    let mut names = BTreeSet::new();
    for line in m.render().lines() {
        let Some(rest) = line.strip_prefix("# TYPE ") else {
            continue;
        };
        let (name, kind) = rest.split_once(' ').expect("# TYPE name kind");
        match kind {
            "histogram" => {
                names.extend(["_bucket", "_sum", "_count"].map(|s| format!("{name}{s}")))
            }
            "summary" => {
                names.insert(name.to_string());
                names.extend(["_sum", "_count"].map(|s| format!("{name}{s}")));
            }
            _ => {
                names.insert(name.to_string());
            }
        }
    }
    assert!(
        names.contains("switchboard_redis_seconds_bucket"),
        "{names:?}"
    );
    names
}

/// The label names of every series name the binary exports (histogram buckets with `le`).
fn exported_labels() -> BTreeMap<String, BTreeSet<String>> {
    let m = exporting_every_family();
    let mut out: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for line in m.render().lines().filter(|l| !l.starts_with('#')) {
        let series = line.rsplit_once(' ').map_or(line, |(s, _)| s);
        let (name, labels) = series.split_once('{').unwrap_or((series, ""));
        let entry = out.entry(name.to_string()).or_default();
        for pair in labels
            .trim_end_matches('}')
            .split(',')
            .filter(|p| !p.is_empty())
        {
            entry.insert(pair.split_once('=').expect("label=value").0.to_string());
        }
    }
    out
}

/// The label names an expression groups by (`by (…)`), outside quoted text.
fn grouping_labels(expr: &str) -> BTreeSet<String> {
    // Quoted text (label values, strings) blanked out first.
    let mut unquoted = String::with_capacity(expr.len());
    let mut quote: Option<char> = None;
    let mut escaped = false;
    for c in expr.chars() {
        match quote {
            Some(q) => {
                if !escaped && c == q {
                    quote = None;
                }
                escaped = !escaped && c == '\\';
            }
            None if matches!(c, '"' | '\'' | '`') => quote = Some(c),
            None => unquoted.push(c),
        }
    }
    let mut out = BTreeSet::new();
    let mut rest = unquoted.as_str();
    while let Some(at) = rest.find("by") {
        let before = rest[..at].chars().next_back();
        let after = rest[at + 2..].trim_start();
        let word = before.is_none_or(|c| !c.is_alphanumeric() && c != '_');
        if let (true, Some(list)) = (word, after.strip_prefix('(')) {
            let list = list.split(')').next().unwrap_or_default();
            out.extend(
                list.split(',')
                    .map(|l| l.trim().to_string())
                    .filter(|l| !l.is_empty()),
            );
        }
        rest = &rest[at + 2..];
    }
    out
}

/// Labels Prometheus (and the Prometheus Operator) put on every scraped series.
const TARGET_LABELS: [&str; 5] = ["job", "instance", "namespace", "pod", "service"];

/// Every `by (…)` label in `expr` is one its metrics carry (or the target's).
fn assert_groups_by_existing_labels(at: &str, expr: &str) {
    let exported = exported_labels();
    let mut have: BTreeSet<String> = TARGET_LABELS.iter().map(|s| s.to_string()).collect();
    for name in promql_metrics(expr) {
        have.extend(exported.get(&name).into_iter().flatten().cloned());
    }
    let missing: Vec<_> = grouping_labels(expr)
        .into_iter()
        .filter(|l| !have.contains(l))
        .collect();
    assert!(
        missing.is_empty(),
        "{at}: groups by {missing:?}, which no series in {expr} has"
    );
}

/// Aggregations, operators and modifiers: words in PromQL that are not metric names.
const PROMQL_WORDS: [&str; 21] = [
    "and",
    "or",
    "unless",
    "bool",
    "offset",
    "sum",
    "min",
    "max",
    "avg",
    "group",
    "stddev",
    "stdvar",
    "count",
    "count_values",
    "bottomk",
    "topk",
    "quantile",
    "limitk",
    "limit_ratio",
    "inf",
    "nan",
];
/// Followed by a parenthesised list of label names.
const PROMQL_GROUPING: [&str; 6] = [
    "by",
    "without",
    "on",
    "ignoring",
    "group_left",
    "group_right",
];

/// The index just past the `close` that ends what starts at `i`, skipping quoted text.
fn skip_to(chars: &[char], mut i: usize, close: char) -> usize {
    while i < chars.len() {
        match chars[i] {
            c if c == close => return i + 1,
            q @ ('"' | '\'' | '`') => i = skip_quoted(chars, i, q),
            _ => i += 1,
        }
    }
    i
}

fn skip_quoted(chars: &[char], mut i: usize, quote: char) -> usize {
    i += 1;
    while i < chars.len() && chars[i] != quote {
        i += if chars[i] == '\\' && quote != '`' {
            2
        } else {
            1
        };
    }
    i + 1
}

/// The metric names a PromQL expression selects: identifiers outside label matchers, ranges,
/// strings and grouping lists that are neither functions nor keywords. Grafana variables
/// (`$pod`, `${x}`, `$__rate_interval`) are skipped.
fn promql_metrics(expr: &str) -> BTreeSet<String> {
    let chars: Vec<char> = expr.chars().collect();
    let next_non_space = |mut i: usize| {
        while i < chars.len() && chars[i].is_whitespace() {
            i += 1;
        }
        (i, chars.get(i).copied())
    };
    let ident = |c: char| c.is_ascii_alphanumeric() || c == '_' || c == ':';
    let mut names = BTreeSet::new();
    let mut i = 0;
    while i < chars.len() {
        let c = chars[i];
        if c == '"' || c == '\'' || c == '`' {
            i = skip_quoted(&chars, i, c);
        } else if c == '{' {
            i = skip_to(&chars, i + 1, '}');
        } else if c == '[' {
            i = skip_to(&chars, i + 1, ']');
        } else if c == '$' {
            i += 1;
            if chars.get(i) == Some(&'{') {
                i = skip_to(&chars, i + 1, '}');
            }
            while i < chars.len() && ident(chars[i]) {
                i += 1;
            }
        } else if c.is_ascii_digit() || c == '.' {
            // Numbers and durations: 0.99, 1e3, 0x1f, 5m.
            while i < chars.len() && (ident(chars[i]) || chars[i] == '.') {
                i += 1;
            }
        } else if c.is_ascii_alphabetic() || c == '_' || c == ':' {
            let start = i;
            while i < chars.len() && ident(chars[i]) {
                i += 1;
            }
            let word: String = chars[start..i].iter().collect();
            let (after, next) = next_non_space(i);
            if PROMQL_GROUPING.contains(&word.as_str()) {
                if next == Some('(') {
                    i = skip_to(&chars, after + 1, ')');
                }
            } else if next != Some('(') && !PROMQL_WORDS.contains(&word.as_str()) {
                names.insert(word);
            }
        } else {
            i += 1;
        }
    }
    names
}

/// The metric names of a Grafana variable query: `label_values(EXPR, label)` selects from EXPR
/// only; `label_values(label)` from none.
fn grafana_query_metrics(query: &str) -> BTreeSet<String> {
    let q = query.trim();
    if let Some(args) = q
        .strip_prefix("label_values(")
        .and_then(|a| a.strip_suffix(')'))
    {
        return match args.rsplit_once(',') {
            Some((expr, _label)) => promql_metrics(expr),
            None => BTreeSet::new(),
        };
    }
    promql_metrics(q)
}

#[test]
fn promql_metric_names_are_found_and_nothing_else() {
    let names = promql_metrics(
        r#"histogram_quantile(0.99, sum by (le, op) (rate(a_bucket{ns="$ns", x=~"b|c"}[$__rate_interval])))
           / on(pod) group_left sum without (le) (b_total offset 5m) > bool 1e3 unless c:rate5m{d="}"} or vector(0)"#,
    );
    assert_eq!(
        names,
        BTreeSet::from(["a_bucket".into(), "b_total".into(), "c:rate5m".into()])
    );
    assert_eq!(
        grafana_query_metrics(r#"label_values(m{namespace="$namespace"}, pod)"#),
        BTreeSet::from(["m".to_string()])
    );
    assert!(grafana_query_metrics("label_values(namespace)").is_empty());
    assert_eq!(
        grouping_labels(
            r#"max by(topic, partition) (x{a="by (q)"}) / sum by (le, op) (rate(m_bytes[5m])) / sum without (w) (y)"#
        ),
        BTreeSet::from(["le", "op", "partition", "topic"].map(String::from))
    );
}

// ---------------------------------------------------------------------------------------------
// Alerts

#[test]
fn the_alerts_pass_promtool_and_name_exported_metrics() {
    let (Some(helm), Some(promtool)) = (require("helm"), require("promtool")) else {
        return;
    };
    let docs = template(&helm, &everything_on());
    let rule = one(&docs, "PrometheusRule");
    let dir = scratch("rules");
    let rules = dir.join("rules.yaml");
    std::fs::write(
        &rules,
        serde_yaml_ng::to_string(&rule["spec"]).expect("YAML"),
    )
    .expect("writing rules.yaml");
    let tests = dir.join("alerts.test.yaml");
    std::fs::copy(root().join("deploy/prometheus/alerts.test.yaml"), &tests)
        .expect("copying the rule tests");
    run(Command::new(&promtool).args(["check", "rules"]).arg(&rules));
    run(Command::new(&promtool).args(["test", "rules"]).arg(&tests));

    let exported = exported_metrics();
    let mut unknown = BTreeSet::new();
    let mut alerts = 0;
    for group in rule["spec"]["groups"].as_sequence().expect("groups") {
        for r in group["rules"].as_sequence().expect("rules") {
            alerts += 1;
            let expr = r["expr"].as_str().expect("an expression");
            assert_groups_by_existing_labels(r["alert"].as_str().unwrap_or("?"), expr);
            unknown.extend(
                promql_metrics(r["expr"].as_str().expect("an expression"))
                    .into_iter()
                    .filter(|n| !exported.contains(n) && !PROMETHEUS_SERIES.contains(&n.as_str())),
            );
        }
    }
    assert!(alerts >= 5, "{alerts} alerts");
    for name in PENDING_METRICS {
        assert!(
            !exported.contains(name),
            "{name} is exported now: take it off PENDING_METRICS and deploy/README.md"
        );
    }
    let pending = BTreeSet::from(PENDING_METRICS.map(String::from));
    let missing: Vec<_> = unknown.difference(&pending).collect();
    assert!(
        missing.is_empty(),
        "alerts name metrics the binary does not export: {missing:?}"
    );
    let _ = std::fs::remove_dir_all(dir);
}

// ---------------------------------------------------------------------------------------------
// The dashboard

fn dashboard() -> Json {
    serde_json::from_str(&read("deploy/grafana/switchboard.json")).expect("the dashboard is JSON")
}

/// Every panel, rows' collapsed panels included.
fn panels(d: &Json) -> Vec<&Json> {
    let mut out = Vec::new();
    for p in d["panels"].as_array().expect("panels") {
        out.push(p);
        out.extend(p["panels"].as_array().into_iter().flatten());
    }
    out
}

/// The dashboard's PromQL: (where, expression), variable queries included.
fn dashboard_queries(d: &Json) -> Vec<(String, String)> {
    let mut out = Vec::new();
    for p in panels(d).into_iter().filter(|p| p["type"] != "row") {
        let title = p["title"].as_str().unwrap_or("?");
        let targets = p["targets"]
            .as_array()
            .map(Vec::as_slice)
            .unwrap_or_default();
        assert!(!targets.is_empty(), "panel {title:?} has no query");
        for t in targets {
            let expr = t["expr"]
                .as_str()
                .unwrap_or_else(|| panic!("{title:?}: no expr"));
            assert_eq!(t["datasource"]["uid"], "${datasource}", "{title:?}");
            out.push((title.to_string(), expr.to_string()));
        }
    }
    for v in d["templating"]["list"].as_array().expect("variables") {
        if v["type"] == "query" {
            let q = v["query"]["query"]
                .as_str()
                .or(v["query"].as_str())
                .expect("a query");
            out.push((format!("variable {}", v["name"]), q.to_string()));
        }
    }
    out
}

#[test]
fn the_dashboard_queries_only_metrics_the_binary_exports() {
    let d = dashboard();
    let exported = exported_metrics();
    let queries = dashboard_queries(&d);
    assert!(queries.len() >= 10, "{} queries", queries.len());
    let mut used = BTreeSet::new();
    for (at, q) in &queries {
        let names = if at.starts_with("variable ") {
            grafana_query_metrics(q)
        } else {
            promql_metrics(q)
        };
        assert!(!names.is_empty(), "{at}: no metric in {q}");
        if !at.starts_with("variable ") {
            assert_groups_by_existing_labels(at, q);
        }
        for n in names {
            assert!(
                exported.contains(&n) || PROMETHEUS_SERIES.contains(&n.as_str()),
                "{at}: {n} is not a metric the binary exports ({exported:?})"
            );
            used.insert(n);
        }
    }
    // The families the dashboard is for.
    for family in [
        "switchboard_messages_total",
        "switchboard_consumer_lag",
        "switchboard_apply_seconds_bucket",
        "switchboard_produce_seconds_bucket",
        "switchboard_redis_seconds_bucket",
        "switchboard_batches_aborted_total",
        "switchboard_rebalances_total",
        "switchboard_dead_letters_total",
        "switchboard_batch_records_bucket",
        "switchboard_fencings_total",
        "switchboard_build_info",
        "process_cpu_seconds_total",
        "process_resident_memory_bytes",
    ] {
        assert!(used.contains(family), "no panel shows {family}");
    }
}

#[test]
fn the_dashboard_queries_parse_as_promql() {
    let Some(promtool) = require("promtool") else {
        return;
    };
    let d = dashboard();
    // Each panel query as a recording rule, with Grafana's variables given values.
    let mut rules = Vec::new();
    for (n, (_, q)) in dashboard_queries(&d)
        .into_iter()
        .filter(|(at, _)| !at.starts_with("variable "))
        .enumerate()
    {
        let mut expr = q;
        for v in ["$__rate_interval", "$__interval", "$__range"] {
            expr = expr.replace(v, "5m");
        }
        expr = expr.replace("$namespace", "chat").replace("$pod", ".*");
        assert!(!expr.contains('$'), "an unknown variable in {expr}");
        rules.push(serde_json::json!({"record": format!("dashboard:query{n}"), "expr": expr}));
    }
    let dir = scratch("dashboard");
    let file = dir.join("dashboard.rules.yaml");
    let doc = serde_json::json!({"groups": [{"name": "dashboard", "rules": rules}]});
    std::fs::write(&file, serde_yaml_ng::to_string(&doc).expect("YAML")).expect("writing");
    run(Command::new(&promtool).args(["check", "rules"]).arg(&file));
    let _ = std::fs::remove_dir_all(dir);
}

// ---------------------------------------------------------------------------------------------
// The image

/// `*` and `?` within a path segment, `**` across segments (as Docker's .dockerignore).
fn glob(pattern: &[u8], path: &[u8]) -> bool {
    match pattern.split_first() {
        None => path.is_empty(),
        Some((b'*', rest)) if rest.first() == Some(&b'*') => {
            let rest = rest[1..].strip_prefix(b"/").unwrap_or(&rest[1..]);
            (0..=path.len()).any(|i| glob(rest, &path[i..]))
        }
        Some((b'*', rest)) => (0..=path.len())
            .take_while(|&i| i == 0 || path[i - 1] != b'/')
            .any(|i| glob(rest, &path[i..])),
        Some((b'?', rest)) => path.first().is_some_and(|&c| c != b'/') && glob(rest, &path[1..]),
        Some((c, rest)) => path.first() == Some(c) && glob(rest, &path[1..]),
    }
}

/// Whether .dockerignore keeps `path` out of the build context: the last pattern that matches
/// the path or one of its parents decides.
fn ignored(dockerignore: &str, path: &str) -> bool {
    let parents: Vec<&str> = path
        .match_indices('/')
        .map(|(i, _)| &path[..i])
        .chain([path])
        .collect();
    let mut out = false;
    for line in dockerignore.lines().map(str::trim) {
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let (keep, pattern) = match line.strip_prefix('!') {
            Some(p) => (true, p),
            None => (false, line),
        };
        let pattern = pattern.trim_start_matches('/').trim_end_matches('/');
        if parents
            .iter()
            .any(|p| glob(pattern.as_bytes(), p.as_bytes()))
        {
            out = !keep;
        }
    }
    out
}

/// The Dockerfile's instructions, continuation lines joined.
fn dockerfile() -> Vec<(String, String)> {
    let text = read("deploy/Dockerfile");
    let mut out = Vec::new();
    let mut current = String::new();
    for line in text.lines() {
        let t = line.trim();
        if current.is_empty() && (t.is_empty() || t.starts_with('#')) {
            continue;
        }
        match t.strip_suffix('\\') {
            Some(part) => current.push_str(part),
            None => {
                current.push_str(t);
                let (op, args) = current.split_once(' ').unwrap_or((&current, ""));
                out.push((op.to_uppercase(), args.trim().to_string()));
                current.clear();
            }
        }
    }
    out
}

/// The final stage's `COPY src… dest` from the build context (not `--from`), and its WORKDIR.
fn runtime_stage() -> (Vec<(Vec<String>, String)>, Option<String>) {
    let all = dockerfile();
    let last = all
        .iter()
        .rposition(|(op, _)| op == "FROM")
        .expect("a FROM");
    let mut copies = Vec::new();
    let mut workdir = None;
    for (op, args) in &all[last..] {
        match op.as_str() {
            "COPY" if !args.starts_with("--from") => {
                let mut words: Vec<String> = args.split_whitespace().map(String::from).collect();
                let dest = words.pop().expect("a destination");
                copies.push((words, dest));
            }
            "WORKDIR" => workdir = Some(args.clone()),
            _ => {}
        }
    }
    (copies, workdir)
}

#[test]
fn the_build_context_leaves_out_build_output_and_keeps_the_sources() {
    let ignore = read(".dockerignore");
    for out in [
        "target",
        "target/release/switchboard",
        ".cache/local/kafka",
        ".git/HEAD",
        "x.log",
    ] {
        assert!(ignored(&ignore, out), "{out} is sent to the Docker daemon");
    }
    let mut sources = BTreeSet::new();
    for (op, args) in dockerfile() {
        if op == "COPY" && !args.starts_with("--from") {
            let words: Vec<&str> = args.split_whitespace().collect();
            sources.extend(words[..words.len() - 1].iter().map(|s| s.to_string()));
        }
    }
    assert!(
        sources.contains("src") && sources.contains("Cargo.lock"),
        "{sources:?}"
    );
    for s in &sources {
        assert!(root().join(s).exists(), "COPY {s}: no such file");
        assert!(
            !ignored(&ignore, s),
            "COPY {s}: .dockerignore leaves it out"
        );
    }
    assert!(!ignored(&ignore, "src/main.rs"));
}

/// The revision given to the image build reaches `switchboard_build_info{revision}`: the build
/// stage declares the argument and hands it to cargo as `SWITCHBOARD_REVISION`, which the
/// binary reads at compile time.
#[test]
fn the_image_build_compiles_its_revision_in() {
    let all = dockerfile();
    let build_stage: Vec<&(String, String)> = all
        .iter()
        .skip_while(|(op, _)| op != "FROM")
        .take_while(|(op, args)| op != "FROM" || args.contains(" AS build"))
        .collect();
    assert!(
        build_stage
            .iter()
            .any(|(op, args)| op == "ARG" && args.starts_with("REVISION")),
        "the build stage does not declare ARG REVISION"
    );
    let cargo = build_stage
        .iter()
        .find(|(op, args)| op == "RUN" && args.contains("cargo build"))
        .expect("the build stage runs cargo build");
    assert!(
        cargo
            .1
            .contains("SWITCHBOARD_REVISION=\"${REVISION}\" cargo build"),
        "cargo build does not get the revision: {}",
        cargo.1
    );
    assert!(
        read("src/runtime/metrics/mod.rs").contains("option_env!(\"SWITCHBOARD_REVISION\")"),
        "the binary no longer reads SWITCHBOARD_REVISION"
    );
}

#[test]
fn the_image_runs_demo_from_its_working_directory() {
    let (copies, workdir) = runtime_stage();
    let workdir = PathBuf::from(workdir.expect("the runtime stage sets WORKDIR"));
    let help = run(Command::new(BIN).args(["demo", "--help"]));
    let defaults: Vec<&str> = help
        .split("[default: ")
        .skip(1)
        .filter_map(|s| s.split(']').next())
        .filter(|d| d.contains('/'))
        .collect();
    assert!(defaults.len() >= 2, "demo's default files: {help}");
    for file in defaults {
        let in_image = workdir.join(file);
        let found = copies.iter().any(|(srcs, dest)| {
            in_image
                .strip_prefix(dest)
                .is_ok_and(|rest| srcs.iter().any(|s| root().join(s).join(rest).is_file()))
        });
        assert!(
            found,
            "demo reads {} in the image; nothing is copied there",
            in_image.display()
        );
    }
}

// ---------------------------------------------------------------------------------------------
// Compose

fn compose() -> Yaml {
    serde_yaml_ng::from_str(&read("deploy/compose.yaml")).expect("compose.yaml is YAML")
}

/// `${VAR}`, `${VAR:?message}`, `${VAR:-default}` replaced as Compose would with VAR set to
/// `value`.
fn interpolate(s: &str, value: &str) -> String {
    let mut out = String::new();
    let mut rest = s;
    while let Some(start) = rest.find("${") {
        out.push_str(&rest[..start]);
        let end = rest[start..].find('}').expect("a closing brace") + start;
        out.push_str(value);
        rest = &rest[end + 1..];
    }
    out.push_str(rest);
    out
}

fn seconds(duration: &str) -> i64 {
    let (n, unit) = duration.split_at(duration.len() - 1);
    let n: i64 = n.parse().expect("a number");
    match unit {
        "s" => n,
        "m" => n * 60,
        _ => panic!("duration {duration}"),
    }
}

#[test]
fn the_compose_file_is_local_only_persistent_and_scalable() {
    let c = compose();
    let services = c["services"].as_mapping().expect("services");
    let kafka_version = read("deploy/local/pom.xml")
        .split("<kafka.version>")
        .nth(1)
        .and_then(|s| s.split('<').next())
        .expect("deploy/local/pom.xml names a Kafka version")
        .to_string();
    let mut kafka_images = 0;
    for (name, s) in services {
        let name = name.as_str().expect("a name");
        for port in s["ports"].as_sequence().into_iter().flatten() {
            let bound = port
                .as_str()
                .map_or(port["host_ip"].as_str() == Some("127.0.0.1"), |p| {
                    p.starts_with("127.0.0.1:")
                });
            assert!(bound, "{name} publishes {port:?} beyond localhost");
        }
        let image = s["image"].as_str().unwrap_or_default();
        if image.starts_with("apache/kafka") {
            kafka_images += 1;
            assert_eq!(image, format!("apache/kafka:{kafka_version}"), "{name}");
        }
        let env = &s["environment"];
        assert!(
            env["SWITCHBOARD_KAFKA__TRANSACTIONAL_ID"].is_null(),
            "{name}: a fixed transactional id cannot be scaled"
        );
        let vars: BTreeMap<String, String> = env
            .as_mapping()
            .into_iter()
            .flatten()
            .map(|(k, v)| {
                let v = v
                    .as_str()
                    .map(String::from)
                    .unwrap_or_else(|| format!("{v:?}"));
                (
                    k.as_str().expect("a name").to_string(),
                    interpolate(&v, "hex0123abcd"),
                )
            })
            .collect();
        if vars.keys().any(|k| k.starts_with("SWITCHBOARD_")) {
            load_config(&vars).unwrap_or_else(|e| panic!("{name}: {e}"));
        }
    }
    assert_eq!(kafka_images, 2, "the broker and the topic job");

    let kafka = &c["services"]["kafka"];
    let log_dirs = kafka["environment"]["KAFKA_LOG_DIRS"]
        .as_str()
        .expect("KAFKA_LOG_DIRS");
    let mounts: Vec<&str> = kafka["volumes"]
        .as_sequence()
        .expect("volumes")
        .iter()
        .filter_map(|v| v.as_str()?.split(':').nth(1))
        .collect();
    assert!(
        mounts.contains(&log_dirs),
        "Kafka writes {log_dirs}, the volume is at {mounts:?}"
    );

    let redis = &c["services"]["redis"]["command"];
    let args: Vec<&str> = redis
        .as_sequence()
        .expect("a command list")
        .iter()
        .filter_map(Yaml::as_str)
        .collect();
    let pass = args
        .iter()
        .position(|a| *a == "--requirepass")
        .expect("Redis requires a password");
    assert!(
        args[pass + 1].starts_with("${"),
        "the password comes from the environment"
    );

    let grace = c["services"]["switchboard"]["stop_grace_period"]
        .as_str()
        .expect("a grace period");
    assert!(
        seconds(grace) > WORST_COMMIT_SECS,
        "stop_grace_period {grace}"
    );
}
