//! The directory as the stream runtime reads it: kept in Redis (written by
//! `switchboard directory load`), served to the core from a bounded, expiring in-memory cache.
//!
//! The core reads the directory synchronously and must not wait on IO. So the pipeline runs a
//! batch against the cache; every lookup the cache cannot answer is noted as a miss and answered
//! "absent", and if a batch had misses its result is thrown away (nothing was written yet), the
//! missing entries are fetched in one round trip, and the batch runs again. A warm cache costs
//! no round trip at all; lookups of IDs that do not exist are cached too, so a batch converges.
//!
//! Keys (all in the one hash slot `{dir}`, so that a load is one atomic MULTI, on Redis Cluster
//! too once there is a Cluster client): `<prefix>:{dir}:org:<id>`, `…:org:<id>:channels` (the organization's channel IDs in
//! directory order), `…:channel:<id>`, `…:user:<id>`, `…:form:<id>`, each JSON; `…:keys`, the set
//! of keys the last load wrote; `…:version`, bumped by every load.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use super::redis::conn::{self, Connection};
use super::Target;
use foldhash::HashMap;
use moka::sync::Cache;

use super::StoreError;
use crate::core::directory::{
    Channel, Directory, DirectoryFile, Form, MemoryDirectory, Organization, User,
};

/// What a directory lookup asks for.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Key {
    Organization(String),
    ChannelsOf(String),
    Channel(String),
    User(String),
    Form(String),
}

impl Key {
    /// Which of [`Local`]'s maps holds it.
    fn kind(&self) -> usize {
        match self {
            Key::Organization(_) => 0,
            Key::ChannelsOf(_) => 1,
            Key::Channel(_) => 2,
            Key::User(_) => 3,
            Key::Form(_) => 4,
        }
    }

    fn id(&self) -> &str {
        match self {
            Key::Organization(id)
            | Key::ChannelsOf(id)
            | Key::Channel(id)
            | Key::User(id)
            | Key::Form(id) => id,
        }
    }
}

#[derive(Debug, Clone)]
enum Entry {
    Organization(Arc<Organization>),
    ChannelsOf(Arc<Vec<String>>),
    Channel(Arc<Channel>),
    User(Arc<User>),
    Form(Arc<Form>),
    Absent,
}

/// A directory the pipeline can complete between attempts at a batch. The in-memory directory
/// is always complete; [`RedisDirectory`] fills its cache on demand.
pub trait DirectorySource: Directory + Sync {
    /// Lookups answered "absent" only because they were not cached, since the last call.
    fn take_misses(&self) -> Vec<Key> {
        Vec::new()
    }

    /// Fetches these entries into the cache.
    fn resolve(
        &self,
        _keys: Vec<Key>,
    ) -> impl std::future::Future<Output = Result<(), StoreError>> + Send {
        async { Ok(()) }
    }

    /// Called before each batch: drops the cache if the directory was reloaded.
    fn refresh(&self) -> impl std::future::Future<Output = Result<(), StoreError>> + Send {
        async { Ok(()) }
    }
}

impl DirectorySource for MemoryDirectory {}

/// Settings of the cache.
#[derive(Debug, Clone, Copy)]
pub struct CacheSettings {
    /// Entries kept at most (organizations, channel lists, channels, users, forms together).
    pub capacity: u64,
    /// How long an entry is served before it is fetched again.
    pub ttl: Duration,
    /// How often, at most, the directory's version is checked (a reload drops the cache).
    pub version_check: Duration,
}

/// Lookups within one batch hit this before the shared cache: most messages of a batch ask for
/// the same few organizations, channels and users. One map per kind of key, by ID, so that a
/// lookup the batch already made allocates nothing.
#[derive(Default)]
struct Local {
    entries: [HashMap<String, Entry>; 5],
    misses: Vec<Key>,
}

impl Local {
    fn remember(&mut self, key: &Key, entry: Entry) {
        self.entries[key.kind()].insert(key.id().to_string(), entry);
    }
}

pub struct RedisDirectory {
    conn: Connection,
    prefix: String,
    cache: Cache<Key, Entry>,
    local: Mutex<Local>,
    settings: CacheSettings,
    /// The version the cache holds, and when it was last checked.
    version: Mutex<(Option<i64>, Option<Instant>)>,
}

impl RedisDirectory {
    pub async fn connect(
        target: impl Into<Target>,
        prefix: &str,
        settings: CacheSettings,
    ) -> Result<Self, StoreError> {
        let conn = conn::connect(&target.into(), super::DEFAULT_RESPONSE_TIMEOUT).await?;
        Ok(RedisDirectory {
            conn,
            prefix: prefix.to_string(),
            cache: Cache::builder()
                .max_capacity(settings.capacity)
                .time_to_live(settings.ttl)
                .build(),
            local: Mutex::new(Local::default()),
            settings,
            version: Mutex::new((None, None)),
        })
    }

    /// Redis's answer to PING (`switchboard check`).
    pub async fn ping(&self) -> Result<String, StoreError> {
        Ok(::redis::cmd("PING")
            .query_async(&mut self.conn.clone())
            .await?)
    }

    /// The version of the directory in Redis; `None` if it was never loaded.
    pub async fn loaded_version(&self) -> Result<Option<i64>, StoreError> {
        let mut conn = self.conn.clone();
        Ok(::redis::cmd("GET")
            .arg(self.meta_key("version"))
            .query_async(&mut conn)
            .await?)
    }

    /// How many entries the last load wrote (0 if none ever ran): what `directory load`
    /// compares a new file with before replacing it.
    pub async fn loaded_entries(&self) -> Result<usize, StoreError> {
        let mut conn = self.conn.clone();
        Ok(::redis::cmd("SCARD")
            .arg(self.meta_key("keys"))
            .query_async(&mut conn)
            .await?)
    }

    fn redis_key(&self, key: &Key) -> String {
        let p = &self.prefix;
        match key {
            Key::Organization(id) => format!("{p}:{{dir}}:org:{id}"),
            Key::ChannelsOf(id) => format!("{p}:{{dir}}:org:{id}:channels"),
            Key::Channel(id) => format!("{p}:{{dir}}:channel:{id}"),
            Key::User(id) => format!("{p}:{{dir}}:user:{id}"),
            Key::Form(id) => format!("{p}:{{dir}}:form:{id}"),
        }
    }

    fn meta_key(&self, what: &str) -> String {
        format!("{}:{{dir}}:{what}", self.prefix)
    }

    /// Answers from the batch's entries, then the shared cache; notes a miss otherwise.
    fn lookup(&self, make: fn(String) -> Key, id: &str) -> Entry {
        // An empty String does not allocate: this only names the kind.
        let kind = make(String::new()).kind();
        let mut local = self.local.lock().expect("directory lock");
        if let Some(e) = local.entries[kind].get(id) {
            return e.clone();
        }
        let key = make(id.to_string());
        match self.cache.get(&key) {
            Some(e) => {
                local.remember(&key, e.clone());
                e
            }
            None => {
                local.misses.push(key);
                Entry::Absent
            }
        }
    }

    /// Writes a directory file to Redis, replacing what an earlier load wrote, in one atomic
    /// transaction, and adds its blocked IPs to the block lists. The file is validated first
    /// (IDs, uniqueness, references): nothing is written if it is invalid.
    pub async fn load_file(
        &self,
        file: &DirectoryFile,
        store: &super::RedisStore,
    ) -> Result<LoadSummary, LoadError> {
        MemoryDirectory::from_file(file.clone()).map_err(LoadError::Invalid)?;
        let mut entries: Vec<(String, String)> = Vec::new();
        for o in &file.organizations {
            entries.push((self.redis_key(&Key::Organization(o.id.clone())), json(o)));
            let channels: Vec<&str> = file
                .channels
                .iter()
                .filter(|c| c.organization == o.id)
                .map(|c| c.id.as_str())
                .collect();
            entries.push((
                self.redis_key(&Key::ChannelsOf(o.id.clone())),
                serde_json::to_string(&channels).expect("strings serialise"),
            ));
        }
        for c in &file.channels {
            entries.push((self.redis_key(&Key::Channel(c.id.clone())), json(c)));
        }
        for u in &file.users {
            entries.push((self.redis_key(&Key::User(u.id.clone())), json(u)));
        }
        for f in &file.forms {
            entries.push((self.redis_key(&Key::Form(f.id.clone())), json(f)));
        }

        let mut conn = self.conn.clone();
        let keys = self.meta_key("keys");
        let old: Vec<String> = ::redis::cmd("SMEMBERS")
            .arg(&keys)
            .query_async(&mut conn)
            .await
            .map_err(StoreError::from)?;
        let new: std::collections::HashSet<&str> =
            entries.iter().map(|(k, _)| k.as_str()).collect();
        let stale: Vec<&String> = old.iter().filter(|k| !new.contains(k.as_str())).collect();

        let mut pipe = ::redis::pipe();
        pipe.atomic();
        for (k, v) in &entries {
            pipe.cmd("SET").arg(k).arg(v).ignore();
        }
        if !stale.is_empty() {
            pipe.cmd("DEL").arg(&stale).ignore();
        }
        pipe.cmd("DEL").arg(&keys).ignore();
        if !entries.is_empty() {
            pipe.cmd("SADD")
                .arg(&keys)
                .arg(entries.iter().map(|(k, _)| k).collect::<Vec<_>>())
                .ignore();
        }
        pipe.cmd("INCR").arg(self.meta_key("version"));
        let (version,): (i64,) = pipe
            .query_async(&mut conn)
            .await
            .map_err(StoreError::from)?;
        super::StateStore::block(store, &file.blocked).await?;
        Ok(LoadSummary {
            organizations: file.organizations.len(),
            channels: file.channels.len(),
            users: file.users.len(),
            forms: file.forms.len(),
            blocked: file.blocked.len(),
            removed: stale.len(),
            version,
        })
    }
}

/// How many entries loading `file` writes, as [`RedisDirectory::loaded_entries`] counts them:
/// each organization and its channel list, each channel, user and form.
pub fn entry_count(file: &DirectoryFile) -> usize {
    2 * file.organizations.len() + file.channels.len() + file.users.len() + file.forms.len()
}

/// What `directory load` wrote.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LoadSummary {
    pub organizations: usize,
    pub channels: usize,
    pub users: usize,
    pub forms: usize,
    pub blocked: usize,
    /// Entries of the previous load that the file no longer has.
    pub removed: usize,
    pub version: i64,
}

#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    #[error(transparent)]
    Invalid(#[from] crate::core::directory::DirectoryError),
    #[error(transparent)]
    Store(#[from] StoreError),
}

fn json<T: serde::Serialize>(v: &T) -> String {
    serde_json::to_string(v).expect("directory entries serialise")
}

fn parse<T: serde::de::DeserializeOwned>(key: &Key, text: &str) -> Result<T, StoreError> {
    serde_json::from_str(text).map_err(|source| StoreError::Corrupt {
        conversation: format!("directory entry {key:?}"),
        source,
    })
}

impl Directory for RedisDirectory {
    fn organization(&self, id: &str) -> Option<Arc<Organization>> {
        match self.lookup(Key::Organization, id) {
            Entry::Organization(o) => Some(o),
            _ => None,
        }
    }
    fn channel(&self, id: &str) -> Option<Arc<Channel>> {
        match self.lookup(Key::Channel, id) {
            Entry::Channel(c) => Some(c),
            _ => None,
        }
    }
    fn user(&self, id: &str) -> Option<Arc<User>> {
        match self.lookup(Key::User, id) {
            Entry::User(u) => Some(u),
            _ => None,
        }
    }
    fn form(&self, id: &str) -> Option<Arc<Form>> {
        match self.lookup(Key::Form, id) {
            Entry::Form(f) => Some(f),
            _ => None,
        }
    }
    fn channels_of(&self, organization: &str) -> Vec<Arc<Channel>> {
        match self.lookup(Key::ChannelsOf, organization) {
            Entry::ChannelsOf(ids) => ids.iter().filter_map(|id| self.channel(id)).collect(),
            _ => Vec::new(),
        }
    }
    /// Block lists live in the state store, which the pipeline reads per batch.
    fn blocked_since(&self, _organization: &str, _ip: &str) -> Option<i64> {
        None
    }
}

impl DirectorySource for RedisDirectory {
    fn take_misses(&self) -> Vec<Key> {
        let mut local = self.local.lock().expect("directory lock");
        let mut misses = std::mem::take(&mut local.misses);
        // Entries taken from the shared cache stay valid for the batch's next attempt; misses
        // will be answered by `resolve`.
        misses.sort();
        misses.dedup();
        misses
    }

    async fn resolve(&self, keys: Vec<Key>) -> Result<(), StoreError> {
        if keys.is_empty() {
            return Ok(());
        }
        let mut pipe = ::redis::pipe();
        for k in &keys {
            pipe.cmd("GET").arg(self.redis_key(k));
        }
        let mut conn = self.conn.clone();
        let found: Vec<Option<String>> = pipe.query_async(&mut conn).await?;
        let mut local = self.local.lock().expect("directory lock");
        for (key, text) in keys.into_iter().zip(found) {
            let entry = match text {
                None => Entry::Absent,
                Some(t) => match &key {
                    Key::Organization(_) => Entry::Organization(Arc::new(parse(&key, &t)?)),
                    Key::ChannelsOf(_) => Entry::ChannelsOf(Arc::new(parse(&key, &t)?)),
                    Key::Channel(_) => Entry::Channel(Arc::new(parse(&key, &t)?)),
                    Key::User(_) => Entry::User(Arc::new(parse(&key, &t)?)),
                    Key::Form(_) => Entry::Form(Arc::new(parse(&key, &t)?)),
                },
            };
            // Also held for the rest of the batch, whatever the shared cache evicts meanwhile:
            // a batch needing more entries than the cache holds still converges.
            local.remember(&key, entry.clone());
            self.cache.insert(key, entry);
        }
        Ok(())
    }

    async fn refresh(&self) -> Result<(), StoreError> {
        // A new batch starts from the shared cache alone.
        self.local
            .lock()
            .expect("directory lock")
            .entries
            .iter_mut()
            .for_each(HashMap::clear);
        let due = {
            let v = self.version.lock().expect("directory lock");
            v.1.is_none_or(|t| t.elapsed() >= self.settings.version_check)
        };
        if !due {
            return Ok(());
        }
        let current = self.loaded_version().await?;
        let mut v = self.version.lock().expect("directory lock");
        if v.0 != current {
            self.cache.invalidate_all();
            v.0 = current;
        }
        v.1 = Some(Instant::now());
        Ok(())
    }
}
