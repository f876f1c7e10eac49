//! `/set`: conversation properties (`@name`, `@context`, `@category`, `@touchpoint`,
//! `@language`) and metadata (a `key value` pair and/or a `meta` object to merge).

use serde_json::{Map, Value};

use crate::core::code::{ignore, reject, Code, Refusal};
use crate::core::message::Role;
use crate::core::state::Conversation;
use crate::core::transition::{Handled, Step, Verdict};
use crate::core::Dialect;

use super::split_word;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Property<'m> {
    Name(&'m str),
    Context(&'m str),
    Category(&'m str),
    Touchpoint(&'m str),
    Language(&'m str),
}

impl<'m> Property<'m> {
    /// `<name> <value>`, after the `@`.
    fn parse(rest: &'m str, dialect: Dialect) -> Result<Self, Refusal> {
        let (name, value) = split_word(rest);
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
        if property.value().is_empty() {
            return Err(reject(
                Code::MissingArgument,
                format!("/set @{name} needs a value"),
            ));
        }
        if let Property::Language(code) = property {
            if !is_language_code(code) {
                return Err(reject(
                    Code::InvalidLanguage,
                    format!("{code:?} is not a language code such as de or zh-CN"),
                ));
            }
        }
        Ok(property)
    }

    fn value(&self) -> &'m str {
        match self {
            Property::Name(v)
            | Property::Context(v)
            | Property::Category(v)
            | Property::Touchpoint(v)
            | Property::Language(v) => v,
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct Set<'m> {
    pub property: Option<Property<'m>>,
    /// `meta[key] = value`.
    pub pair: Option<(&'m str, &'m str)>,
    /// Shallow merge into `meta`; `null` deletes.
    pub merge: &'m Map<String, Value>,
}

impl<'m> Set<'m> {
    pub fn parse(
        args: &'m str,
        meta: &'m Map<String, Value>,
        dialect: Dialect,
        role: Role,
    ) -> Result<Self, Refusal> {
        let mut set = Set {
            property: None,
            pair: None,
            merge: meta,
        };
        if let Some(rest) = args.strip_prefix('@') {
            set.property = Some(Property::parse(rest, dialect)?);
        } else if !args.is_empty() {
            let (key, value) = split_word(args);
            if value.is_empty() {
                return Err(reject(
                    Code::MissingArgument,
                    format!("/set {key} needs a value"),
                ));
            }
            set.pair = Some((key, value));
        }
        if set.property.is_none() && set.pair.is_none() && set.merge.is_empty() {
            return Err(reject(
                Code::MissingArgument,
                "/set needs a property, a key and value, or meta",
            ));
        }
        if role != Role::Bot {
            set.check_reserved()?;
        }
        Ok(set)
    }

    /// Keys beginning with `_` are for bots only.
    fn check_reserved(&self) -> Result<(), Refusal> {
        let keys = self
            .pair
            .iter()
            .map(|(k, _)| *k)
            .chain(self.merge.keys().map(String::as_str));
        for key in keys {
            if key.starts_with('_') {
                return Err(reject(
                    Code::ReservedKey,
                    format!("meta.{key} is a system key: only bots may set it"),
                ));
            }
        }
        Ok(())
    }

    pub fn apply(self, step: &mut Step<'_>) -> Handled {
        // Validate, and work out whether anything changes, before touching the state.
        let category = match self.property {
            Some(Property::Category(value)) => Some(resolve_category(step, value)?),
            _ => None,
        };
        if let Some(Property::Touchpoint(t)) = self.property {
            if !step.conv.touchpoints.contains_key(t) {
                return Err(reject(
                    Code::InvalidTouchpoint,
                    format!("touchpoint {t:?} is not available"),
                ));
            }
        }
        if !self.changes(&step.conv, category.as_ref()) {
            return Err(ignore(Code::NoChange, "every value is already set"));
        }
        self.write(&mut step.conv, category);
        Ok(Verdict::Applied)
    }

    /// Whether setting changes anything; `category` is the resolved `@category`.
    fn changes(&self, conv: &Conversation, category: Option<&(u8, String)>) -> bool {
        let property_changes = match self.property {
            None => false,
            Some(Property::Name(v)) => conv.name != v,
            Some(Property::Context(v)) => conv.context.as_deref() != Some(v),
            Some(Property::Category(_)) => category.is_some_and(|(index, name)| {
                conv.category_index != Some(*index) || conv.category.as_deref() != Some(name)
            }),
            Some(Property::Touchpoint(v)) => conv.touchpoint.as_deref() != Some(v),
            Some(Property::Language(v)) => conv.language.as_deref() != Some(v),
        };
        let pair_changes = self
            .pair
            .is_some_and(|(k, v)| conv.meta.get(k).and_then(Value::as_str) != Some(v));
        let merge_changes = self.merge.iter().any(|(k, v)| match v {
            Value::Null => conv.meta.contains_key(k),
            v => conv.meta.get(k) != Some(v),
        });
        property_changes || pair_changes || merge_changes
    }

    fn write(self, conv: &mut Conversation, category: Option<(u8, String)>) {
        match self.property {
            None => {}
            Some(Property::Name(v)) => conv.name = v.to_string(),
            Some(Property::Context(v)) => conv.context = Some(v.to_string()),
            Some(Property::Category(_)) => {
                if let Some((index, name)) = category {
                    conv.category_index = Some(index);
                    conv.category = Some(name);
                }
            }
            Some(Property::Touchpoint(v)) => {
                for (name, t) in conv.touchpoints.iter_mut() {
                    t.selected = *name == v;
                }
                conv.touchpoint = Some(v.to_string());
            }
            Some(Property::Language(v)) => conv.language = Some(v.to_string()),
        }
        if let Some((k, v)) = self.pair {
            conv.meta
                .insert(k.to_string(), Value::String(v.to_string()));
        }
        for (k, v) in self.merge {
            if v.is_null() {
                conv.meta.remove(k);
            } else {
                conv.meta.insert(k.clone(), v.clone());
            }
        }
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
