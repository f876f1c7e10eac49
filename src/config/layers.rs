//! The layers merged and typed: the defaults, the file, the environment, then one [`Config`].
//!
//! The defaults are also the schema: every setting is in `config/default.toml`, so a key found
//! nowhere there is unknown, and the three property maps are its only open tables. Each value
//! that is set is tried on its own against the defaults, so that every wrongly typed value is
//! reported, not just the first; a refused value is left at its default meanwhile, so that the
//! semantic checks still run on the rest.

use std::collections::BTreeMap;
use std::path::Path;

use figment::providers::{Format, Toml};
use figment::value::{Dict, Num, Value};
use figment::{Figment, Profile, Provider, Source};

use super::env;
use super::{Config, ConfigError, LogFormat, Problem, DEFAULTS};

/// The merged layers, and where each value came from.
struct Merged {
    values: Dict,
    figment: Figment,
    /// Settings set by the environment, by dotted path: the variable.
    from_env: BTreeMap<String, String>,
}

impl Merged {
    fn origin(&self, path: &[&str], value: &Value) -> Option<String> {
        if let Some(variable) = self.from_env.get(&path.join(".")) {
            return Some(variable.clone());
        }
        match &self.figment.get_metadata(value.tag())?.source {
            Some(Source::File(file)) => Some(file.display().to_string()),
            _ => None,
        }
    }
}

/// What the layers gave: the config (defaults where values were refused), the names of the
/// ignored variables, every problem found, and where each setting that is not a default came
/// from (by dotted path), for the problems the checks find later.
pub(super) struct Layered {
    pub config: Config,
    pub ignored: Vec<String>,
    pub problems: Vec<Problem>,
    pub origins: BTreeMap<String, String>,
}

/// Loads the layers into a [`Config`].
pub(super) fn load(
    file: Option<&Path>,
    env: &BTreeMap<String, String>,
) -> Result<Layered, ConfigError> {
    let schema = defaults();
    let mut figment = Figment::from(Toml::string(DEFAULTS));
    if let Some(path) = file {
        if !path.exists() {
            return Err(ConfigError::MissingFile(path.display().to_string()));
        }
        figment = figment.merge(Toml::file(path));
    }
    let values = profile(
        figment
            .data()
            .map_err(|e| ConfigError::Syntax(e.to_string()))?,
    );
    let layer = env::read(env, &schema);
    let mut merged = Merged {
        values,
        figment,
        from_env: BTreeMap::new(),
    };
    for setting in layer.settings {
        merged
            .from_env
            .insert(setting.path.join("."), setting.variable);
        insert(&mut merged.values, &setting.path, setting.value);
    }
    let mut problems = layer.problems;
    let resolved = resolve(&merged, &schema, &mut problems);
    let config = Value::from(resolved)
        .deserialize::<Config>()
        .map_err(|e| ConfigError::Syntax(e.to_string()))?;
    let mut origins = BTreeMap::new();
    for (section, value) in &merged.values {
        let Value::Dict(_, keys) = value else {
            if let Some(o) = merged.origin(&[section], value) {
                origins.insert(section.clone(), o);
            }
            continue;
        };
        for (key, v) in keys {
            if let Some(o) = merged.origin(&[section, key], v) {
                origins.insert(format!("{section}.{key}"), o);
            }
        }
    }
    Ok(Layered {
        config,
        ignored: layer.ignored,
        problems,
        origins,
    })
}

/// The configured `log.format` as far as it can be read; text otherwise.
pub(super) fn log_format(file: Option<&Path>, env: &BTreeMap<String, String>) -> LogFormat {
    let schema = defaults();
    let mut figment = Figment::from(Toml::string(DEFAULTS));
    if let Some(path) = file {
        figment = figment.merge(Toml::file(path));
    }
    let mut values = figment
        .data()
        .map(profile)
        .unwrap_or_else(|_| schema.clone());
    for setting in env::read(env, &schema).settings {
        insert(&mut values, &setting.path, setting.value);
    }
    match Value::from(values).find_ref("log.format") {
        Some(Value::String(_, f)) if f.eq_ignore_ascii_case("json") => LogFormat::Json,
        _ => LogFormat::Text,
    }
}

fn defaults() -> Dict {
    profile(
        Toml::string(DEFAULTS)
            .data()
            .expect("config/default.toml is valid TOML"),
    )
}

fn profile(mut data: figment::value::Map<Profile, Dict>) -> Dict {
    data.remove(&Profile::Default).unwrap_or_default()
}

fn insert(dict: &mut Dict, path: &[String], value: Value) {
    match path {
        [] => {}
        [last] => {
            dict.insert(last.clone(), value);
        }
        [first, rest @ ..] => {
            let entry = dict
                .entry(first.clone())
                .or_insert_with(|| Value::from(Dict::new()));
            if !matches!(entry, Value::Dict(..)) {
                *entry = Value::from(Dict::new());
            }
            if let Value::Dict(_, inner) = entry {
                insert(inner, rest, value);
            }
        }
    }
}

/// The defaults with every acceptable value of `merged` put in; what is refused, and why, goes
/// to `problems`.
fn resolve(merged: &Merged, schema: &Dict, problems: &mut Vec<Problem>) -> Dict {
    let mut resolved = schema.clone();
    for (key, value) in &merged.values {
        let problem = |reason: String| Problem {
            setting: key.clone(),
            reason,
            origin: merged.origin(&[key], value),
        };
        match (schema.get(key), value) {
            (None, _) => problems.push(problem(format!(
                "unknown setting; the settings are {}",
                names(schema)
            ))),
            (Some(Value::Dict(_, keys)), Value::Dict(_, given)) => {
                for (name, v) in given {
                    let path = [key.as_str(), name.as_str()];
                    if let Some(p) = resolve_one(merged, &mut resolved, keys, &path, v) {
                        problems.push(p);
                    }
                }
            }
            (Some(Value::Dict(..)), _) => problems.push(problem("must be a table".into())),
            (Some(_), v) => {
                if let Err(reason) = try_set(&mut resolved, &[key.as_str()], v.clone()) {
                    problems.push(problem(reason));
                }
            }
        }
    }
    resolved
}

/// Puts one `section.name` value into `resolved` if the schema knows it and its type fits.
fn resolve_one(
    merged: &Merged,
    resolved: &mut Dict,
    keys: &Dict,
    path: &[&str; 2],
    value: &Value,
) -> Option<Problem> {
    let problem = |reason: String| Problem {
        setting: path.join("."),
        reason,
        origin: merged.origin(path, value),
    };
    match (keys.get(path[1]), value) {
        (None, _) => Some(problem(format!(
            "unknown setting; the {} section has {}",
            path[0],
            names(keys)
        ))),
        (Some(Value::Dict(..)), Value::Dict(_, properties)) => {
            let mut map = Dict::new();
            let mut problems = Vec::new();
            for (name, v) in properties {
                match as_text(v) {
                    Some(text) => {
                        map.insert(name.clone(), Value::from(text));
                    }
                    None => problems.push(format!("{name:?} must be a string")),
                }
            }
            try_set(resolved, path, Value::from(map)).ok()?;
            (!problems.is_empty()).then(|| problem(problems.join("; ")))
        }
        (Some(Value::Dict(..)), _) => Some(problem("must be a table of properties".into())),
        (Some(_), v) => try_set(resolved, path, v.clone()).err().map(problem),
    }
}

/// Sets `path` in `resolved` if the whole then still deserialises; else leaves it and says why.
fn try_set(resolved: &mut Dict, path: &[&str], value: Value) -> Result<(), String> {
    let mut candidate = resolved.clone();
    let owned: Vec<String> = path.iter().map(|s| s.to_string()).collect();
    insert(&mut candidate, &owned, value);
    match Value::from(candidate.clone()).deserialize::<Config>() {
        Ok(_) => {
            *resolved = candidate;
            Ok(())
        }
        Err(e) => Err(reason(e.kind)),
    }
}

/// figment's message for a refused value, without its nested quoting of the alternatives.
fn reason(kind: figment::error::Kind) -> String {
    use figment::error::Kind;
    match kind {
        Kind::UnknownVariant(given, expected) => {
            format!("{given:?} is not one of {}", expected.join(", "))
        }
        other => other.to_string(),
    }
}

/// A property's value as librdkafka takes it: numbers and booleans written in TOML become text.
fn as_text(value: &Value) -> Option<String> {
    match value {
        Value::String(_, s) => Some(s.clone()),
        Value::Bool(_, b) => Some(b.to_string()),
        Value::Num(_, n) => Some(number(*n)),
        _ => None,
    }
}

fn number(n: Num) -> String {
    n.to_u128()
        .map(|u| u.to_string())
        .or_else(|| n.to_i128().map(|i| i.to_string()))
        .or_else(|| n.to_f64().map(|f| f.to_string()))
        .unwrap_or_default()
}

fn names(dict: &Dict) -> String {
    dict.keys()
        .map(String::as_str)
        .collect::<Vec<_>>()
        .join(", ")
}
