//! `/set`: conversation properties (`@name`, `@context`, `@category`, `@touchpoint`,
//! `@language`) and metadata (a `key value` pair and/or a `meta` object to merge).

use serde_json::{Map, Value};

use crate::core::code::{ignore, reject, Code, Refusal};
use crate::core::message::Role;
use crate::core::transition::{Handled, Step, Verdict};
use crate::core::Dialect;

use super::split_word;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Property {
    Name(String),
    Context(String),
    Category(String),
    Touchpoint(String),
    Language(String),
}

#[derive(Debug, Clone, PartialEq)]
pub struct Set {
    pub property: Option<Property>,
    pub pair: Option<(String, String)>,
    /// Shallow merge into `meta`; `null` deletes.
    pub merge: Map<String, Value>,
}

impl Set {
    pub fn parse(
        args: &str,
        meta: &Map<String, Value>,
        dialect: Dialect,
        role: Role,
    ) -> Result<Self, Refusal> {
        let mut set = Set {
            property: None,
            pair: None,
            merge: meta.clone(),
        };
        if let Some(rest) = args.strip_prefix('@') {
            let (name, value) = split_word(rest);
            let value = value.to_string();
            let property = match name {
                "name" => Property::Name(value),
                "context" if dialect == Dialect::Web1on1 => Property::Context(value),
                "category" => Property::Category(value),
                "touchpoint" => Property::Touchpoint(value),
                "language" => Property::Language(value),
                _ => {
                    return Err(reject(
                        Code::UnknownProperty,
                        format!("@{name} is not a conversation property"),
                    ))
                }
            };
            let given = match &property {
                Property::Name(v)
                | Property::Context(v)
                | Property::Category(v)
                | Property::Touchpoint(v)
                | Property::Language(v) => !v.is_empty(),
            };
            if !given {
                return Err(reject(
                    Code::MissingArgument,
                    format!("/set @{name} needs a value"),
                ));
            }
            if let Property::Language(code) = &property {
                if !is_language_code(code) {
                    return Err(reject(
                        Code::InvalidLanguage,
                        format!("{code:?} is not a language code such as de or zh-CN"),
                    ));
                }
            }
            set.property = Some(property);
        } else if !args.is_empty() {
            let (key, value) = split_word(args);
            if value.is_empty() {
                return Err(reject(
                    Code::MissingArgument,
                    format!("/set {key} needs a value"),
                ));
            }
            set.pair = Some((key.to_string(), value.to_string()));
        }
        if set.property.is_none() && set.pair.is_none() && set.merge.is_empty() {
            return Err(reject(
                Code::MissingArgument,
                "/set needs a property, a key and value, or meta",
            ));
        }
        if role != Role::Bot {
            let keys = set
                .pair
                .iter()
                .map(|(k, _)| k.as_str())
                .chain(set.merge.keys().map(String::as_str));
            for key in keys {
                if key.starts_with('_') {
                    return Err(reject(
                        Code::ReservedKey,
                        format!("meta.{key} is a system key: only bots may set it"),
                    ));
                }
            }
        }
        Ok(set)
    }
}

/// Two or three lowercase letters, optionally `-` and a region (two capitals or three digits),
/// as Google's Translation API returns them.
pub fn is_language_code(code: &str) -> bool {
    let (lang, region) = match code.split_once('-') {
        Some((l, r)) => (l, Some(r)),
        None => (code, None),
    };
    let lang_ok = (2..=3).contains(&lang.len()) && lang.bytes().all(|b| b.is_ascii_lowercase());
    let region_ok = region.is_none_or(|r| {
        (r.len() == 2 && r.bytes().all(|b| b.is_ascii_uppercase()))
            || (r.len() == 3 && r.bytes().all(|b| b.is_ascii_digit()))
    });
    lang_ok && region_ok
}

pub fn set(step: &mut Step<'_>, args: &str) -> Handled {
    let cmd = Set::parse(args, &step.msg.meta, step.env.dialect, step.msg.role)?;
    let conv = &step.conv;

    // Validate, and work out whether anything changes, before touching the state.
    let category = match &cmd.property {
        Some(Property::Category(value)) => Some(resolve_category(step, value)?),
        _ => None,
    };
    if let Some(Property::Touchpoint(t)) = &cmd.property {
        if !conv.touchpoints.contains_key(t) {
            return Err(reject(
                Code::InvalidTouchpoint,
                format!("touchpoint {t:?} is not available"),
            ));
        }
    }
    let property_changes = match &cmd.property {
        None => false,
        Some(Property::Name(v)) => conv.name != *v,
        Some(Property::Context(v)) => conv.context.as_deref() != Some(v),
        Some(Property::Category(_)) => {
            let (index, name) = category.as_ref().expect("resolved above");
            conv.category_index != Some(*index) || conv.category.as_deref() != Some(name)
        }
        Some(Property::Touchpoint(v)) => conv.touchpoint.as_deref() != Some(v),
        Some(Property::Language(v)) => conv.language.as_deref() != Some(v),
    };
    let pair_changes = cmd
        .pair
        .as_ref()
        .is_some_and(|(k, v)| conv.meta.get(k).and_then(Value::as_str) != Some(v));
    let merge_changes = cmd.merge.iter().any(|(k, v)| match v {
        Value::Null => conv.meta.contains_key(k),
        v => conv.meta.get(k) != Some(v),
    });
    if !(property_changes || pair_changes || merge_changes) {
        return Err(ignore(Code::NoChange, "every value is already set"));
    }

    let conv = &mut step.conv;
    match cmd.property {
        None => {}
        Some(Property::Name(v)) => conv.name = v,
        Some(Property::Context(v)) => conv.context = Some(v),
        Some(Property::Category(_)) => {
            let (index, name) = category.expect("resolved above");
            conv.category_index = Some(index);
            conv.category = Some(name);
        }
        Some(Property::Touchpoint(v)) => {
            for (name, t) in conv.touchpoints.iter_mut() {
                t.selected = *name == v;
            }
            conv.touchpoint = Some(v);
        }
        Some(Property::Language(v)) => conv.language = Some(v),
    }
    if let Some((k, v)) = cmd.pair {
        conv.meta.insert(k, Value::String(v));
    }
    for (k, v) in cmd.merge {
        if v.is_null() {
            conv.meta.remove(&k);
        } else {
            conv.meta.insert(k, v);
        }
    }
    Ok(Verdict::Applied)
}

/// A category slot by zero-based index (an integer 0–9) or by name, in the conversation's
/// organization.
pub fn resolve_category(step: &Step<'_>, value: &str) -> Result<(u8, String), Refusal> {
    let org = step.organization();
    let slot = match value.parse::<u8>() {
        Ok(i) if value.bytes().all(|b| b.is_ascii_digit()) => {
            if i > 9 {
                return Err(reject(
                    Code::InvalidCategory,
                    format!("category index {i} is out of 0-9"),
                ));
            }
            org.and_then(|o| o.category(i))
        }
        _ => org.and_then(|o| o.categories.iter().find(|c| c.name == value)),
    };
    slot.map(|c| (c.index, c.name.clone())).ok_or_else(|| {
        reject(
            Code::InvalidCategory,
            format!("the organization has no category {value:?}"),
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn language_codes() {
        for ok in ["de", "en", "haw", "zh-CN", "es-419", "pt-BR"] {
            assert!(is_language_code(ok), "{ok}");
        }
        for bad in ["", "d", "DE", "german", "zh-cn", "zh-", "de-DEU", "e1"] {
            assert!(!is_language_code(bad), "{bad}");
        }
    }
}
