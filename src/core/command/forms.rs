//! Forms: `form` messages (`+<name>` activates, `-<name>` removes), `field` messages
//! (`.<key> <value>`), and `/send`, which turns completed forms into results and emails.

use std::collections::BTreeMap;
use std::sync::Arc;

use serde_json::{json, Map, Value};

use crate::core::code::{ignore, reject, Code, Refusal};
use crate::core::directory::{Directory, Form};
use crate::core::event::EventData;
use crate::core::id::derive;
use crate::core::message::{Message, Role};
use crate::core::state::{ActiveForm, FormResult, StoredMessage};
use crate::core::transition::{Handled, Step, Verdict};

use super::{meta_str, set::resolve_category, split_word};

/// A form is completed when every required field has a non-empty value.
pub fn is_completed(form: &ActiveForm, directory: &dyn Directory) -> bool {
    directory.form(&form.form).is_some_and(|def| {
        def.fields
            .iter()
            .filter(|f| f.required)
            .all(|f| form.fields.get(&f.name).is_some_and(|v| !v.is_empty()))
    })
}

/// The category slot named by `meta.categoryIndex` or `meta.category`, if either is given.
fn explicit_category(step: &Step<'_>) -> Result<Option<u8>, Refusal> {
    let meta = &step.msg.meta;
    let given = match (meta.get("categoryIndex"), meta.get("category")) {
        (Some(Value::Number(n)), _) => Some(n.to_string()),
        (Some(Value::String(s)), _) => Some(s.clone()),
        (Some(Value::Null) | None, Some(Value::String(s))) => Some(s.clone()),
        (Some(Value::Null) | None, Some(Value::Number(n))) => Some(n.to_string()),
        (Some(Value::Null) | None, Some(Value::Null) | None) => None,
        _ => {
            return Err(reject(
                Code::InvalidArgument,
                "meta.categoryIndex / meta.category must be a number or a name",
            ))
        }
    };
    given
        .map(|v| resolve_category(step, &v).map(|(i, _)| i))
        .transpose()
}

fn form_def(step: &Step<'_>, id: &str) -> Result<Arc<Form>, Refusal> {
    step.env.directory.form(id).ok_or_else(|| {
        reject(
            Code::UnknownForm,
            format!("form {id} is not in the directory"),
        )
    })
}

/// Where an active form instance of `form` is: in `category` if given, else preferably in the
/// active category, else in any.
fn find_active(step: &Step<'_>, form: &str, category: Option<u8>) -> Option<usize> {
    let forms = &step.conv.forms;
    let at = |cat: Option<u8>| {
        forms
            .iter()
            .position(|f| f.form == form && cat.is_none_or(|c| f.category_index == c))
    };
    match category {
        Some(c) => at(Some(c)),
        None => step
            .conv
            .category_index
            .and_then(|c| at(Some(c)))
            .or_else(|| at(None)),
    }
}

/// A `form` message.
pub fn form(step: &mut Step<'_>) -> Handled {
    if step.msg.role == Role::Contact {
        return Err(reject(
            Code::Forbidden,
            "forms are set by agents and automations",
        ));
    }
    let msg = step.msg;
    let (adding, name) = form_text(msg.text.trim())?;
    let explicit = explicit_category(step)?;
    let category = explicit.or(step.conv.category_index);
    let form_id = form_id(step, name, category)?;
    let def = form_def(step, &form_id)?;
    if adding {
        activate(step, form_id, &def, category)
    } else {
        let Some(at) = find_active(step, &form_id, explicit) else {
            return Err(reject(
                Code::FormNotActive,
                format!("form {form_id} is not active"),
            ));
        };
        step.conv.forms.remove(at);
        Ok(Verdict::Applied)
    }
}

/// `+<name>` (activate) or `-<name>` (remove): whether it adds, and the name.
fn form_text(text: &str) -> Result<(bool, &str), Refusal> {
    if let Some(n) = text.strip_prefix('+') {
        Ok((true, n.trim()))
    } else if let Some(n) = text.strip_prefix('-') {
        Ok((false, n.trim()))
    } else {
        Err(reject(
            Code::InvalidArgument,
            "a form message's text is +<name> or -<name>",
        ))
    }
}

/// `meta.form`, else the form named `name` among the category's forms.
fn form_id(step: &Step<'_>, name: &str, category: Option<u8>) -> Result<String, Refusal> {
    if let Some(id) = meta_str(&step.msg.meta, "form")? {
        return Ok(id.to_string());
    }
    let slot = category.and_then(|c| step.organization().and_then(|o| o.category(c).cloned()));
    slot.and_then(|s| {
        s.forms
            .iter()
            .find(|id| step.env.directory.form(id).is_some_and(|f| f.name == name))
            .cloned()
    })
    .ok_or_else(|| {
        reject(
            Code::UnknownForm,
            format!("no form named {name:?} in the category"),
        )
    })
}

/// `+<name>`: the form becomes active in `category`, to which it must be assigned.
fn activate(step: &mut Step<'_>, form_id: String, def: &Form, category: Option<u8>) -> Handled {
    let Some(category) = category else {
        return Err(reject(
            Code::FormNotInCategory,
            "no category given and none is active",
        ));
    };
    let in_slot = step
        .organization()
        .and_then(|o| o.category(category))
        .is_some_and(|slot| slot.forms.contains(&form_id));
    if !in_slot {
        return Err(reject(
            Code::FormNotInCategory,
            format!("form {form_id} is not assigned to category slot {category}"),
        ));
    }
    if find_active(step, &form_id, Some(category)).is_some() {
        return Err(ignore(
            Code::NoChange,
            format!("form {form_id} is already active"),
        ));
    }
    step.conv.forms.push(ActiveForm {
        form: form_id,
        name: def.name.clone(),
        category_index: category,
        fields: BTreeMap::new(),
    });
    Ok(Verdict::Applied)
}

/// A `field` message: `.<key> <value>` with `meta.form`.
pub fn field(step: &mut Step<'_>) -> Handled {
    if step.msg.role == Role::Contact {
        return Err(reject(
            Code::Forbidden,
            "form fields are set by agents and automations",
        ));
    }
    let Some(rest) = step.msg.text.trim().strip_prefix('.') else {
        return Err(reject(
            Code::InvalidArgument,
            "a field message's text is .<key> <value>",
        ));
    };
    // The key follows the dot directly: ". value" names no field.
    if rest.is_empty() || rest.starts_with(char::is_whitespace) {
        return Err(reject(
            Code::MissingArgument,
            "a field message needs a key right after the dot",
        ));
    }
    let (key, value) = split_word(rest);
    let Some(form_id) = meta_str(&step.msg.meta, "form")? else {
        return Err(reject(
            Code::MissingArgument,
            "a field message needs meta.form",
        ));
    };
    let explicit = explicit_category(step)?;
    let Some(at) = find_active(step, form_id, explicit) else {
        return Err(reject(
            Code::FormNotActive,
            format!("form {form_id} is not active"),
        ));
    };
    let def = form_def(step, form_id)?;
    if def.field(key).is_none() {
        return Err(reject(
            Code::UnknownField,
            format!("form {form_id} has no field {key:?}"),
        ));
    }
    let active = &mut step.conv.forms[at];
    if active.fields.get(key).map(String::as_str) == Some(value) {
        return Err(ignore(
            Code::NoChange,
            format!("field {key} already holds that value"),
        ));
    }
    active.fields.insert(key.to_string(), value.to_string());
    Ok(Verdict::Applied)
}

/// `/send`, with an optional `meta.form`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SendForms<'m> {
    /// Only this form; without it, every completed form.
    pub form: Option<&'m str>,
}

impl<'m> SendForms<'m> {
    pub fn parse(msg: &'m Message) -> Result<Self, Refusal> {
        Ok(SendForms {
            form: meta_str(&msg.meta, "form")?,
        })
    }

    pub fn apply(self, step: &mut Step<'_>) -> Handled {
        let chosen = match self.form {
            Some(id) => vec![sendable(step, id)?],
            None => completed(step)?,
        };
        step.store();
        let org_emails = step
            .organization()
            .map(|o| o.emails.clone())
            .unwrap_or_default();
        let mut sent = Vec::with_capacity(chosen.len());
        for &i in chosen.iter().rev() {
            sent.push(step.conv.forms.remove(i));
        }
        sent.reverse();
        for form in sent {
            send(step, form, &org_emails);
        }
        Ok(Verdict::Applied)
    }
}

/// Where the form `id` is, if it can be sent: active in the active category, and completed.
fn sendable(step: &Step<'_>, id: &str) -> Result<usize, Refusal> {
    if !step.conv.forms.iter().any(|f| f.form == id) {
        return Err(reject(
            Code::FormNotActive,
            format!("form {id} is not active"),
        ));
    }
    let active_category = step.conv.category_index;
    let Some(at) = step
        .conv
        .forms
        .iter()
        .position(|f| f.form == id && Some(f.category_index) == active_category)
    else {
        return Err(reject(
            Code::FormNotInCategory,
            format!("form {id} is not active in the conversation's active category"),
        ));
    };
    if !is_completed(&step.conv.forms[at], step.env.directory) {
        return Err(reject(
            Code::FormIncomplete,
            format!("form {id} has required fields without a value"),
        ));
    }
    Ok(at)
}

/// Where every completed form is; at least one.
fn completed(step: &Step<'_>) -> Result<Vec<usize>, Refusal> {
    let done: Vec<usize> = (0..step.conv.forms.len())
        .filter(|&i| is_completed(&step.conv.forms[i], step.env.directory))
        .collect();
    if done.is_empty() {
        return Err(reject(Code::NothingToSend, "no form is completed"));
    }
    Ok(done)
}

/// Sends one form taken out of `forms`: a `results` message in the log, an email to the form's
/// recipients (else the organization's), and an entry in `results`.
fn send(step: &mut Step<'_>, form: ActiveForm, org_emails: &[String]) {
    let category = form.category_index.to_string();
    let id = derive(&[&step.msg.id, "results", &form.form, &category]);
    let message = results_message(step, &id, &form);
    step.store_message(message);
    let recipients = step
        .env
        .directory
        .form(&form.form)
        .map(|d| d.emails.clone())
        .filter(|e| !e.is_empty())
        .unwrap_or_else(|| org_emails.to_vec());
    if !recipients.is_empty() {
        step.emit(EventData::EmailNotification {
            conversation: step.conv.id.clone(),
            to: recipients,
            form: form.form.clone(),
            form_name: form.name.clone(),
            fields: form.fields.clone(),
        });
    }
    let sent_at = step.now().to_string();
    step.conv.results.push(FormResult {
        form: form.form,
        name: form.name,
        category_index: form.category_index,
        fields: form.fields,
        message: id,
        sent_at,
    });
}

/// The `results` message `/send` adds to the log for `form`.
fn results_message(step: &Step<'_>, id: &str, form: &ActiveForm) -> StoredMessage {
    let mut meta = Map::new();
    meta.insert("form".into(), json!(form.form));
    meta.insert("categoryIndex".into(), json!(form.category_index));
    meta.insert("fields".into(), json!(form.fields));
    StoredMessage {
        id: id.to_string(),
        index: 0,
        kind: "results".into(),
        role: Role::Bot,
        sender: step.msg.sender.clone(),
        text: form.name.clone(),
        user: None,
        is_backchannel: false,
        touchpoint: None,
        meta,
        created_at: step.now().to_string(),
        likes: Vec::new(),
        comments: Vec::new(),
        version: 0,
    }
}
