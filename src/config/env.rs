//! The environment layer: which `SWITCHBOARD_*` variables are settings, and what each sets.
//!
//! - `SWITCHBOARD_DIALECT` and `SWITCHBOARD_<SECTION>__<KEY>` set `dialect` and
//!   `<section>.<key>` (names are case-insensitive);
//! - `SWITCHBOARD_KAFKA__<MAP>__<PROPERTY>` sets one librdkafka property of `kafka.properties`,
//!   `kafka.producer_properties` or `kafka.consumer_properties`, its `_` read as `.`
//!   (`…__PROPERTIES__SASL_PASSWORD` is `sasl.password`; no librdkafka property a string can
//!   set has an underscore in its name);
//! - any of these with `_FILE` appended reads the value from that file instead, one trailing
//!   newline dropped (for secrets mounted as files);
//! - values stay strings where the setting is a string: a password `12345` is a password.
//!
//! Any other `SWITCHBOARD_*` variable (a Kubernetes Service named `switchboard` injects
//! `SWITCHBOARD_SERVICE_HOST`, `SWITCHBOARD_PORT`, …) names no section and is ignored, and
//! reported as such; a variable under a known section that names no setting is an error like an
//! unknown key in the file.

use std::collections::BTreeMap;

use figment::value::{Dict, Value};

use super::{Problem, CONFIG_VARIABLE};

const PREFIX: &str = "SWITCHBOARD_";
const FILE_SUFFIX: &str = "_FILE";

/// One setting from the environment: its path, its value and the variable it came from.
pub(super) struct Setting {
    pub path: Vec<String>,
    pub value: Value,
    pub variable: String,
}

/// What the environment sets, what it holds that is no setting, and what is wrong with it.
#[derive(Default)]
pub(super) struct EnvLayer {
    pub settings: Vec<Setting>,
    pub ignored: Vec<String>,
    pub problems: Vec<Problem>,
}

/// Reads the `SWITCHBOARD_*` variables of `env` against `schema` (the defaults, which hold every
/// setting).
pub(super) fn read(env: &BTreeMap<String, String>, schema: &Dict) -> EnvLayer {
    let mut layer = EnvLayer::default();
    let mut seen: BTreeMap<Vec<String>, String> = BTreeMap::new();
    for (name, raw) in env {
        let Some(rest) = name.strip_prefix(PREFIX) else {
            continue;
        };
        if name == CONFIG_VARIABLE {
            continue;
        }
        // A setting whose own name ends in `_file` (`redis.tls_ca_file`) is that setting; any
        // other name with `_FILE` appended reads its value from a file.
        let (rest, from_file) = match rest.strip_suffix(FILE_SUFFIX) {
            Some(stem) if !is_known(rest, schema) && path_of(stem, schema).is_some() => {
                (stem, true)
            }
            _ => (rest, false),
        };
        let Some((path, kind)) = path_of(rest, schema) else {
            if is_section(rest, schema) {
                layer.problems.push(Problem {
                    setting: name.clone(),
                    reason: "names no setting: use SWITCHBOARD_<SECTION>__<KEY>, or \
                             SWITCHBOARD_KAFKA__PROPERTIES__<NAME> for a librdkafka property"
                        .into(),
                    origin: None,
                });
            } else {
                layer.ignored.push(name.clone());
            }
            continue;
        };
        if let Some(earlier) = seen.insert(path.clone(), name.clone()) {
            layer.problems.push(Problem {
                setting: path.join("."),
                reason: format!("set by both {earlier} and {name}; keep one"),
                origin: None,
            });
            continue;
        }
        let text = if from_file {
            match read_secret_file(raw) {
                Ok(text) => text,
                Err(e) => {
                    layer.problems.push(Problem {
                        setting: path.join("."),
                        reason: format!("cannot read the file {raw}: {e}"),
                        origin: Some(name.clone()),
                    });
                    continue;
                }
            }
        } else {
            raw.clone()
        };
        let value = match kind {
            Kind::Text => Value::from(text),
            Kind::Typed => text
                .parse()
                .unwrap_or_else(|e: std::convert::Infallible| match e {}),
        };
        layer.settings.push(Setting {
            path,
            value,
            variable: name.clone(),
        });
    }
    layer
}

/// How a variable's value is read.
enum Kind {
    /// As it is: the setting is a string (or a librdkafka property).
    Text,
    /// As TOML would read it (a number, a boolean), for the setting's type to check.
    Typed,
}

/// The setting a variable name (less the prefix) stands for, if its first part is a section.
fn path_of(rest: &str, schema: &Dict) -> Option<(Vec<String>, Kind)> {
    let parts: Vec<String> = rest.split("__").map(str::to_ascii_lowercase).collect();
    let section = schema.get(&parts[0])?;
    let kind_of = |default: Option<&Value>| match default {
        Some(Value::String(..)) | None => Kind::Text,
        Some(_) => Kind::Typed,
    };
    match (section, parts.as_slice()) {
        (Value::Dict(..), _) if parts.len() < 2 || parts.iter().any(String::is_empty) => None,
        // A top-level setting (`dialect`).
        (_, [_]) => Some((parts.clone(), kind_of(Some(section)))),
        (Value::Dict(_, keys), [_, key]) => match keys.get(key) {
            Some(Value::Dict(..)) => None,
            // Unknown keys go through, to be refused by name like unknown keys in the file.
            default => Some((parts.clone(), kind_of(default))),
        },
        (Value::Dict(_, keys), [s, map, property]) => match keys.get(map) {
            Some(Value::Dict(..)) => {
                let property = property.replace('_', ".");
                Some((vec![s.clone(), map.clone(), property], Kind::Text))
            }
            _ => None,
        },
        _ => None,
    }
}

/// Whether a variable name (less the prefix) names a setting of the defaults by itself.
fn is_known(rest: &str, schema: &Dict) -> bool {
    let parts: Vec<String> = rest.split("__").map(str::to_ascii_lowercase).collect();
    match (schema.get(&parts[0]), parts.as_slice()) {
        (Some(Value::Dict(_, keys)), [_, key]) => keys.contains_key(key),
        _ => false,
    }
}

fn is_section(rest: &str, schema: &Dict) -> bool {
    let first = rest.split("__").next().unwrap_or_default();
    rest.contains("__") && schema.contains_key(&first.to_ascii_lowercase())
}

/// A secret file's contents, less one trailing line break (`echo` and editors add one).
fn read_secret_file(path: &str) -> std::io::Result<String> {
    let text = std::fs::read_to_string(path)?;
    let text = text.strip_suffix('\n').unwrap_or(&text);
    Ok(text.strip_suffix('\r').unwrap_or(text).to_string())
}
