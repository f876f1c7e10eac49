//! Reference data (SPEC section 4): organizations, channels, users and forms, maintained by the
//! platform and read by Switchboard, plus each organization's block list of contact IPs.

use std::collections::HashSet;

use foldhash::HashMap;
use std::sync::Arc;

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use crate::core::id::is_object_id;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Organization {
    pub id: String,
    #[serde(default)]
    pub name: String,
    #[serde(default)]
    pub parent: Option<String>,
    #[serde(default)]
    pub categories: Vec<Category>,
    #[serde(default)]
    pub workflows: Vec<Workflow>,
    #[serde(default)]
    pub emails: Vec<String>,
}

impl Organization {
    pub fn category(&self, index: u8) -> Option<&Category> {
        self.categories.iter().find(|c| c.index == index)
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Category {
    pub index: u8,
    pub name: String,
    #[serde(default)]
    pub forms: Vec<String>,
}

/// A routing rule: when every given condition holds, notify `channels`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Workflow {
    #[serde(default)]
    pub name: Option<String>,
    #[serde(default)]
    pub when: When,
    #[serde(default)]
    pub channels: Vec<String>,
    #[serde(default)]
    pub stop: bool,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct When {
    #[serde(default)]
    pub category_index: Option<u8>,
    #[serde(default)]
    pub touchpoint: Option<String>,
    #[serde(default)]
    pub language: Option<String>,
    #[serde(default)]
    pub meta: Map<String, Value>,
    #[serde(default)]
    pub keywords: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Channel {
    pub id: String,
    pub organization: String,
    #[serde(default)]
    pub name: String,
    #[serde(default)]
    pub kind: String,
    #[serde(default = "yes")]
    pub online: bool,
}

fn yes() -> bool {
    true
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct User {
    pub id: String,
    pub organization: String,
    #[serde(default)]
    pub name: String,
    #[serde(default)]
    pub email: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Form {
    pub id: String,
    pub organization: String,
    pub name: String,
    #[serde(default)]
    pub fields: Vec<FormField>,
    #[serde(default)]
    pub emails: Vec<String>,
}

impl Form {
    pub fn field(&self, name: &str) -> Option<&FormField> {
        self.fields.iter().find(|f| f.name == name)
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FormField {
    pub name: String,
    #[serde(default)]
    pub required: bool,
}

/// A contact IP an organization has blocked, and from when.
///
/// A block holds for contact messages created at or after the `/block` that made it, not for
/// whatever happens to be processed after it. The two differ on a stream: a record replayed after
/// a crash, or a conversation on a partition that lags, may be applied after a block made later
/// in time. Keying blocks by time makes the outcome the same however the work was scheduled.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Block {
    pub organization: String,
    pub ip: String,
    /// When the block took effect, in microseconds since the epoch (exact as a Redis sorted-set
    /// score). Blocks listed in the directory file hold from the beginning of time.
    #[serde(skip, default = "always")]
    pub since: i64,
}

fn always() -> i64 {
    i64::MIN
}

/// A message time, as a block's `since` compares it.
pub fn block_time(created_at_nanos: i64) -> i64 {
    created_at_nanos.div_euclid(1000)
}

/// Block lists by organization, then IP: the earliest time each IP was blocked.
#[derive(Debug, Clone, Default)]
pub struct BlockList(HashMap<String, HashMap<String, i64>>);

impl BlockList {
    /// Keeps the earliest time, so that blocks can arrive in any order.
    pub fn insert(&mut self, block: &Block) {
        let since = self
            .0
            .entry(block.organization.clone())
            .or_default()
            .entry(block.ip.clone())
            .or_insert(block.since);
        *since = (*since).min(block.since);
    }

    pub fn since(&self, organization: &str, ip: &str) -> Option<i64> {
        self.0.get(organization)?.get(ip).copied()
    }
}

/// What the core reads of the reference data. Lookups are by ID and return shared handles so
/// that an adapter can serve them from a cache.
pub trait Directory {
    fn organization(&self, id: &str) -> Option<Arc<Organization>>;
    fn channel(&self, id: &str) -> Option<Arc<Channel>>;
    fn user(&self, id: &str) -> Option<Arc<User>>;
    fn form(&self, id: &str) -> Option<Arc<Form>>;
    /// Every channel of one organization, in directory order (the routing catch-all).
    fn channels_of(&self, organization: &str) -> Vec<Arc<Channel>>;
    /// When `ip` was blocked in `organization` (microseconds, see [`Block`]), if it was.
    fn blocked_since(&self, organization: &str, ip: &str) -> Option<i64>;
}

/// The file `switchboard directory load` reads (YAML, or JSON).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DirectoryFile {
    #[serde(default)]
    pub organizations: Vec<Organization>,
    #[serde(default)]
    pub channels: Vec<Channel>,
    #[serde(default)]
    pub users: Vec<User>,
    #[serde(default)]
    pub forms: Vec<Form>,
    #[serde(default)]
    pub blocked: Vec<Block>,
}

#[derive(Debug, thiserror::Error)]
pub enum DirectoryError {
    #[error("directory file {path} is not valid YAML for the directory model: {source}")]
    Parse {
        path: String,
        source: serde_yaml_ng::Error,
    },
    #[error("directory: {0}")]
    Invalid(String),
}

/// The whole directory held in memory.
#[derive(Debug, Clone, Default)]
pub struct MemoryDirectory {
    organizations: HashMap<String, Arc<Organization>>,
    channels: HashMap<String, Arc<Channel>>,
    channels_by_org: HashMap<String, Vec<Arc<Channel>>>,
    users: HashMap<String, Arc<User>>,
    forms: HashMap<String, Arc<Form>>,
    blocked: BlockList,
}

impl DirectoryFile {
    /// Parses a directory file's text (YAML, or JSON, which is YAML too); `origin` names it in
    /// errors. Not validated: see [`MemoryDirectory::from_file`].
    pub fn parse(text: &str, origin: &str) -> Result<Self, DirectoryError> {
        serde_yaml_ng::from_str(text).map_err(|source| DirectoryError::Parse {
            path: origin.to_string(),
            source,
        })
    }
}

impl MemoryDirectory {
    pub fn from_yaml(text: &str) -> Result<Self, DirectoryError> {
        Self::from_file(DirectoryFile::parse(text, "<text>")?)
    }

    /// Builds the directory, checking that every ID is an ObjectId, is unique, and that every
    /// reference points at something that exists, so that a bad file fails at start-up naming
    /// the entry rather than misrouting later.
    pub fn from_file(file: DirectoryFile) -> Result<Self, DirectoryError> {
        let bad = |s: String| Err(DirectoryError::Invalid(s));
        let mut dir = MemoryDirectory::default();
        for o in file.organizations {
            check_id("organization", &o.id)?;
            if o.categories.len() > 10 {
                return bad(format!(
                    "organization {} has more than 10 category slots",
                    o.id
                ));
            }
            let mut seen = HashSet::new();
            for c in &o.categories {
                if c.index > 9 || !seen.insert(c.index) {
                    return bad(format!(
                        "organization {}: category index {} is out of 0-9 or repeated",
                        o.id, c.index
                    ));
                }
            }
            if dir
                .organizations
                .insert(o.id.clone(), Arc::new(o.clone()))
                .is_some()
            {
                return bad(format!("organization {} is listed twice", o.id));
            }
        }
        for c in file.channels {
            check_id("channel", &c.id)?;
            let c = Arc::new(c);
            dir.channels_by_org
                .entry(c.organization.clone())
                .or_default()
                .push(c.clone());
            if dir.channels.insert(c.id.clone(), c.clone()).is_some() {
                return bad(format!("channel {} is listed twice", c.id));
            }
        }
        for u in file.users {
            check_id("user", &u.id)?;
            if dir
                .users
                .insert(u.id.clone(), Arc::new(u.clone()))
                .is_some()
            {
                return bad(format!("user {} is listed twice", u.id));
            }
        }
        for f in file.forms {
            check_id("form", &f.id)?;
            if dir
                .forms
                .insert(f.id.clone(), Arc::new(f.clone()))
                .is_some()
            {
                return bad(format!("form {} is listed twice", f.id));
            }
        }
        for b in &file.blocked {
            dir.blocked.insert(b);
        }
        dir.check_references()?;
        Ok(dir)
    }

    fn check_references(&self) -> Result<(), DirectoryError> {
        let missing = |what: &str, id: &str, owner: String| {
            Err(DirectoryError::Invalid(format!(
                "{owner} refers to unknown {what} {id}"
            )))
        };
        for o in self.organizations.values() {
            if let Some(p) = &o.parent {
                if !self.organizations.contains_key(p) {
                    return missing("organization", p, format!("organization {}", o.id));
                }
            }
            for c in &o.categories {
                for f in &c.forms {
                    if !self.forms.contains_key(f) {
                        return missing(
                            "form",
                            f,
                            format!("organization {} category {}", o.id, c.index),
                        );
                    }
                }
            }
            for (i, w) in o.workflows.iter().enumerate() {
                for ch in &w.channels {
                    if !self.channels.contains_key(ch) {
                        return missing(
                            "channel",
                            ch,
                            format!("organization {} workflow {i}", o.id),
                        );
                    }
                }
            }
            // A parent cycle would make "ancestors" infinite.
            let mut seen = HashSet::new();
            let mut cur = Some(o.id.clone());
            while let Some(id) = cur {
                if !seen.insert(id.clone()) {
                    return Err(DirectoryError::Invalid(format!(
                        "organization {} has a cycle in its parents",
                        o.id
                    )));
                }
                cur = self.organizations.get(&id).and_then(|x| x.parent.clone());
            }
        }
        for (what, org, owner) in self
            .channels
            .values()
            .map(|c| ("channel", &c.organization, &c.id))
            .chain(
                self.users
                    .values()
                    .map(|u| ("user", &u.organization, &u.id)),
            )
            .chain(
                self.forms
                    .values()
                    .map(|f| ("form", &f.organization, &f.id)),
            )
        {
            if !self.organizations.contains_key(org) {
                return missing("organization", org, format!("{what} {owner}"));
            }
        }
        Ok(())
    }

    /// Adds a blocked IP (what `/block` asks the store to do).
    pub fn block(&mut self, block: &Block) {
        self.blocked.insert(block);
    }
}

fn check_id(what: &str, id: &str) -> Result<(), DirectoryError> {
    if is_object_id(id) {
        Ok(())
    } else {
        Err(DirectoryError::Invalid(format!(
            "{what} id {id:?} is not an ObjectId"
        )))
    }
}

impl Directory for MemoryDirectory {
    fn organization(&self, id: &str) -> Option<Arc<Organization>> {
        self.organizations.get(id).cloned()
    }
    fn channel(&self, id: &str) -> Option<Arc<Channel>> {
        self.channels.get(id).cloned()
    }
    fn user(&self, id: &str) -> Option<Arc<User>> {
        self.users.get(id).cloned()
    }
    fn form(&self, id: &str) -> Option<Arc<Form>> {
        self.forms.get(id).cloned()
    }
    fn channels_of(&self, organization: &str) -> Vec<Arc<Channel>> {
        self.channels_by_org
            .get(organization)
            .cloned()
            .unwrap_or_default()
    }
    fn blocked_since(&self, organization: &str, ip: &str) -> Option<i64> {
        self.blocked.since(organization, ip)
    }
}

/// An organization followed by its ancestors, nearest first. Stops at a cycle or a dangling
/// parent rather than looping: the directory is another system's data.
pub fn lineage(directory: &dyn Directory, organization: &str) -> Vec<Arc<Organization>> {
    let mut out: Vec<Arc<Organization>> = Vec::with_capacity(4);
    let mut next = directory.organization(organization);
    while let Some(org) = next {
        if out.iter().any(|o| o.id == org.id) {
            break;
        }
        next = org
            .parent
            .as_deref()
            .and_then(|p| directory.organization(p));
        out.push(org);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rejects_dangling_references_naming_them() {
        let yaml = "
organizations:
  - id: 000000000000000000000001
    parent: 000000000000000000000009
";
        let err = MemoryDirectory::from_yaml(yaml).unwrap_err().to_string();
        assert!(err.contains("000000000000000000000009"), "{err}");
    }

    #[test]
    fn rejects_parent_cycles_and_bad_ids() {
        let yaml = "
organizations:
  - {id: '000000000000000000000001', parent: '000000000000000000000002'}
  - {id: '000000000000000000000002', parent: '000000000000000000000001'}
";
        let err = MemoryDirectory::from_yaml(yaml).unwrap_err().to_string();
        assert!(err.contains("cycle"), "{err}");
        let err = MemoryDirectory::from_yaml("organizations: [{id: x}]")
            .unwrap_err()
            .to_string();
        assert!(err.contains("not an ObjectId"), "{err}");
        let err = MemoryDirectory::from_yaml("organisations: []")
            .unwrap_err()
            .to_string();
        assert!(err.contains("organisations"), "{err}");
    }

    #[test]
    fn lineage_is_nearest_first() {
        let yaml = "
organizations:
  - {id: '000000000000000000000001'}
  - {id: '000000000000000000000002', parent: '000000000000000000000001'}
  - {id: '000000000000000000000003', parent: '000000000000000000000002'}
";
        let dir = MemoryDirectory::from_yaml(yaml).unwrap();
        let ids: Vec<_> = lineage(&dir, "000000000000000000000003")
            .iter()
            .map(|o| o.id.clone())
            .collect();
        assert_eq!(
            ids,
            [
                "000000000000000000000003",
                "000000000000000000000002",
                "000000000000000000000001"
            ]
        );
        assert!(lineage(&dir, "000000000000000000000009").is_empty());
    }
}
