//! How the store reaches Redis: one node, a Redis Cluster, or whichever primary a set of
//! Sentinels names. Everything above this file sends commands through [`Connection`] and asks it
//! which node a key lives on; only the batch write and the multi-key reads need to know more
//! than that a command goes to its key's node.

use std::sync::{Arc, RwLock};
use std::time::Duration;

use futures_util::future::try_join_all;
use redis::aio::{ConnectionLike, ConnectionManager, MultiplexedConnection};
use redis::cluster_async::ClusterConnection;
use redis::cluster_routing::{Route, SingleNodeRoutingInfo, SlotAddr};
use redis::sentinel::{SentinelClient, SentinelNodeConnectionInfo, SentinelServerType};
use redis::{
    ClientTlsConfig, Cmd, FromRedisValue, IntoConnectionInfo, Pipeline, RedisError, RedisFuture,
    TlsCertificates, Value,
};

use crate::runtime::store::StoreError;

/// Where Redis is, and the TLS files to reach it with.
#[derive(Clone)]
pub struct Target {
    address: Address,
    tls: Option<TlsFiles>,
}

/// Where Redis is. URLs carry the scheme (`rediss://` for TLS) and any credentials.
#[derive(Clone)]
enum Address {
    Node(String),
    Cluster(Vec<String>),
    Sentinel {
        sentinels: Vec<String>,
        service: String,
        node: String,
    },
}

/// TLS beyond `rediss://` alone: a CA to trust instead of the system's store, and a client
/// certificate and key for servers that ask for one (`tls-auth-clients`). PEM files.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct TlsFiles {
    pub ca: Option<std::path::PathBuf>,
    /// (certificate, key).
    pub client: Option<(std::path::PathBuf, std::path::PathBuf)>,
}

impl Target {
    /// One node (`redis.url`).
    pub fn node(url: impl Into<String>) -> Target {
        Target::of(Address::Node(url.into()))
    }

    /// A Redis Cluster: its seed nodes' URLs (`redis.cluster_nodes`).
    pub fn cluster(seeds: Vec<String>) -> Target {
        Target::of(Address::Cluster(seeds))
    }

    /// The primary of `service`, as the Sentinels say (`redis.sentinel_nodes`); `node` is
    /// `redis.url`, read for the scheme, credentials and database to reach the primary with.
    pub fn sentinel(sentinels: Vec<String>, service: &str, node: &str) -> Target {
        Target::of(Address::Sentinel {
            sentinels,
            service: service.to_string(),
            node: node.to_string(),
        })
    }

    /// The same target, reached with these TLS files.
    pub fn with_tls(self, tls: TlsFiles) -> Target {
        let tls = (tls != TlsFiles::default()).then_some(tls);
        Target { tls, ..self }
    }

    fn of(address: Address) -> Target {
        Target { address, tls: None }
    }

    /// The TLS files read, if any were given.
    fn certificates(&self) -> Result<Option<TlsCertificates>, StoreError> {
        let Some(tls) = &self.tls else {
            return Ok(None);
        };
        let read = |path: &std::path::Path| {
            std::fs::read(path).map_err(|source| StoreError::TlsFile {
                path: path.display().to_string(),
                source,
            })
        };
        Ok(Some(TlsCertificates {
            root_cert: tls.ca.as_deref().map(read).transpose()?,
            client_tls: match &tls.client {
                Some((cert, key)) => Some(ClientTlsConfig {
                    client_cert: read(cert)?,
                    client_key: read(key)?,
                }),
                None => None,
            },
        }))
    }
}

impl From<&str> for Target {
    fn from(url: &str) -> Self {
        Target::node(url)
    }
}

impl From<&String> for Target {
    fn from(url: &String) -> Self {
        Target::node(url.as_str())
    }
}

impl From<String> for Target {
    fn from(url: String) -> Self {
        Target::node(url)
    }
}

impl std::fmt::Debug for Target {
    /// Without the URLs: they may hold a password.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.address {
            Address::Node(_) => f.write_str("Target::Node"),
            Address::Cluster(nodes) => write!(f, "Target::Cluster({} seeds)", nodes.len()),
            Address::Sentinel { service, .. } => write!(f, "Target::Sentinel({service})"),
        }
    }
}

/// A self-reconnecting connection to the target.
#[derive(Clone)]
pub(crate) enum Connection {
    Node(ConnectionManager),
    Cluster {
        conn: ClusterConnection,
        slots: Arc<RwLock<SlotMap>>,
    },
    Sentinel(Arc<Sentinel>),
}

pub(crate) async fn connect(target: &Target, timeout: Duration) -> Result<Connection, StoreError> {
    let certificates = target.certificates()?;
    match &target.address {
        Address::Node(url) => {
            let client = match certificates {
                Some(certs) => redis::Client::build_with_tls(url.as_str(), certs)?,
                None => redis::Client::open(url.as_str())?,
            };
            let config = redis::aio::ConnectionManagerConfig::new()
                .set_response_timeout(Some(timeout))
                .set_connection_timeout(Some(timeout));
            let conn = ConnectionManager::new_with_config(client, config).await?;
            Ok(Connection::Node(conn))
        }
        Address::Cluster(seeds) => {
            let mut builder = redis::cluster::ClusterClientBuilder::new(seeds.clone())
                .response_timeout(timeout)
                .connection_timeout(timeout);
            if let Some(certs) = certificates {
                builder = builder.certs(certs);
            }
            let mut conn = builder.build()?.get_async_connection().await?;
            let slots = SlotMap::fetch(&mut conn).await?;
            Ok(Connection::Cluster {
                conn,
                slots: Arc::new(RwLock::new(slots)),
            })
        }
        Address::Sentinel {
            sentinels,
            service,
            node,
        } => {
            if certificates.is_some() {
                return Err(StoreError::TlsFile {
                    path: "redis.tls_*_file".into(),
                    source: std::io::Error::other(
                        "a CA or client certificate file is not supported with Sentinel yet: \
                         use the system's trust store (SSL_CERT_FILE)",
                    ),
                });
            }
            let node = node.as_str().into_connection_info()?;
            let mut info = SentinelNodeConnectionInfo::default()
                .set_redis_connection_info(node.redis_settings().clone());
            if let redis::ConnectionAddr::TcpTls { .. } = node.addr() {
                info = info.set_tls_mode(redis::TlsMode::Secure);
            }
            let client = SentinelClient::build(
                sentinels.clone(),
                service.clone(),
                Some(info),
                SentinelServerType::Master,
            )?;
            let sentinel = Sentinel {
                client: tokio::sync::Mutex::new(client),
                primary: tokio::sync::Mutex::new(None),
                timeout,
            };
            sentinel.primary().await?;
            Ok(Connection::Sentinel(Arc::new(sentinel)))
        }
    }
}

impl Connection {
    /// Which node serves `key`: equal for keys on one node (always so off a Cluster).
    pub(crate) fn node_of(&self, key: &str) -> usize {
        match self {
            Connection::Cluster { slots, .. } => slots
                .read()
                .unwrap_or_else(|p| p.into_inner())
                .node_of(slot(key)),
            _ => 0,
        }
    }

    /// After a failure on a Cluster: the slots may have moved, so ask again where they are.
    pub(crate) async fn refresh(&self) {
        if let Connection::Cluster { conn, slots } = self {
            if let Ok(fresh) = SlotMap::fetch(&mut conn.clone()).await {
                *slots.write().unwrap_or_else(|p| p.into_inner()) = fresh;
            }
        }
    }

    /// Each command's reply, in order, where each command names one key (the first of the
    /// pair). One pipeline per node, sent side by side: a Cluster refuses a pipeline across
    /// slots, and a round trip per command would cost what the pipeline saves.
    pub(crate) async fn query_each<T: FromRedisValue>(
        &self,
        commands: Vec<(String, Cmd)>,
    ) -> Result<Vec<T>, RedisError> {
        if commands.is_empty() {
            return Ok(Vec::new());
        }
        let Connection::Cluster { conn, .. } = self else {
            let mut pipe = redis::pipe();
            for (_, cmd) in commands {
                pipe.add_command(cmd);
            }
            return pipe.query_async(&mut self.clone()).await;
        };
        let groups = self.by_node(commands.iter().map(|(key, _)| key.as_str()));
        let routes: Vec<SingleNodeRoutingInfo> =
            groups.iter().map(|g| route(&commands[g[0]].0)).collect();
        let mut commands: Vec<Option<Cmd>> = commands.into_iter().map(|(_, c)| Some(c)).collect();
        let pipes: Vec<Pipeline> = groups
            .iter()
            .map(|indices| {
                let mut pipe = redis::pipe();
                for &i in indices {
                    pipe.add_command(commands[i].take().expect("each command in one group"));
                }
                pipe
            })
            .collect();
        let sent = groups
            .iter()
            .zip(pipes)
            .zip(routes)
            .map(|((indices, pipe), route)| {
                let mut conn = conn.clone();
                async move { conn.route_pipeline(pipe, 0, indices.len(), route).await }
            });
        let replies = match try_join_all(sent).await {
            Ok(r) => r,
            Err(e) => {
                self.refresh().await;
                return Err(e);
            }
        };
        let mut ordered: Vec<Option<Value>> = vec![None; commands.len()];
        for (indices, values) in groups.iter().zip(replies) {
            for (&i, value) in indices.iter().zip(values) {
                ordered[i] = Some(value);
            }
        }
        ordered
            .into_iter()
            .map(|v| T::from_redis_value(v.unwrap_or(Value::Nil)).map_err(RedisError::from))
            .collect()
    }

    /// Indices of `keys` grouped by node, each group in order.
    pub(crate) fn by_node<'a>(&self, keys: impl Iterator<Item = &'a str>) -> Vec<Vec<usize>> {
        let mut groups: Vec<(usize, Vec<usize>)> = Vec::new();
        for (i, key) in keys.enumerate() {
            let node = self.node_of(key);
            match groups.iter_mut().find(|(n, _)| *n == node) {
                Some((_, group)) => group.push(i),
                None => groups.push((node, vec![i])),
            }
        }
        groups.into_iter().map(|(_, g)| g).collect()
    }
}

/// The route of a pipeline whose commands are all on `key`'s node: its slot's primary.
pub(crate) fn route(key: &str) -> SingleNodeRoutingInfo {
    SingleNodeRoutingInfo::SpecificNode(Route::new(slot(key), SlotAddr::Master))
}

/// A key's Redis Cluster hash slot: CRC16 of its hash tag (the first non-empty `{…}`), or of the
/// whole key without one.
pub(crate) fn slot(key: &str) -> u16 {
    let bytes = key.as_bytes();
    let tagged = bytes.iter().position(|&b| b == b'{').and_then(|open| {
        let close = bytes[open + 1..].iter().position(|&b| b == b'}')?;
        (close > 0).then(|| &bytes[open + 1..open + 1 + close])
    });
    crc16::State::<crc16::XMODEM>::calculate(tagged.unwrap_or(bytes)) % 16384
}

/// Which primary serves which slots, as `CLUSTER SLOTS` last said.
#[derive(Debug, Default)]
pub(crate) struct SlotMap {
    /// (first slot, last slot, the primary's index in `nodes`), sorted.
    ranges: Vec<(u16, u16, usize)>,
    nodes: Vec<String>,
}

impl SlotMap {
    async fn fetch(conn: &mut ClusterConnection) -> Result<SlotMap, RedisError> {
        let reply: Value = redis::cmd("CLUSTER").arg("SLOTS").query_async(conn).await?;
        Ok(SlotMap::parse(reply))
    }

    fn parse(reply: Value) -> SlotMap {
        let mut map = SlotMap::default();
        let Value::Array(entries) = reply else {
            return map;
        };
        for entry in entries {
            let Value::Array(fields) = entry else {
                continue;
            };
            let (Some(Value::Int(first)), Some(Value::Int(last)), Some(Value::Array(primary))) =
                (fields.first(), fields.get(1), fields.get(2))
            else {
                continue;
            };
            let address = match (primary.first(), primary.get(1)) {
                (Some(Value::BulkString(host)), Some(Value::Int(port))) => {
                    format!("{}:{port}", String::from_utf8_lossy(host))
                }
                _ => continue,
            };
            let node = match map.nodes.iter().position(|n| *n == address) {
                Some(n) => n,
                None => {
                    map.nodes.push(address);
                    map.nodes.len() - 1
                }
            };
            map.ranges.push((*first as u16, *last as u16, node));
        }
        map.ranges.sort_unstable();
        map
    }

    /// The node of a slot; one past the known nodes for a slot no node serves (the write to
    /// it then fails, and the map is fetched again).
    fn node_of(&self, slot: u16) -> usize {
        let i = self.ranges.partition_point(|(_, last, _)| *last < slot);
        match self.ranges.get(i) {
            Some((first, _, node)) if *first <= slot => *node,
            _ => self.nodes.len(),
        }
    }
}

/// The primary the Sentinels name, connected to on first use and again after a failure: a
/// failover shows as a dropped connection or as a `READONLY` refusal from the demoted node.
pub(crate) struct Sentinel {
    client: tokio::sync::Mutex<SentinelClient>,
    primary: tokio::sync::Mutex<Option<MultiplexedConnection>>,
    timeout: Duration,
}

impl Sentinel {
    async fn primary(&self) -> Result<MultiplexedConnection, RedisError> {
        let mut primary = self.primary.lock().await;
        if let Some(conn) = primary.as_ref() {
            return Ok(conn.clone());
        }
        let config = redis::AsyncConnectionConfig::new()
            .set_response_timeout(Some(self.timeout))
            .set_connection_timeout(Some(self.timeout));
        let client = self.client.lock().await.async_get_client().await?;
        let conn = client
            .get_multiplexed_async_connection_with_config(&config)
            .await?;
        *primary = Some(conn.clone());
        Ok(conn)
    }

    async fn forget_on(&self, e: &RedisError) {
        let failover = e.is_io_error()
            || e.is_connection_dropped()
            || e.is_timeout()
            || e.to_string().contains("READONLY");
        if failover {
            *self.primary.lock().await = None;
        }
    }
}

impl ConnectionLike for Connection {
    fn req_packed_command<'a>(&'a mut self, cmd: &'a Cmd) -> RedisFuture<'a, Value> {
        match self {
            Connection::Node(c) => c.req_packed_command(cmd),
            Connection::Cluster { conn, .. } => conn.req_packed_command(cmd),
            Connection::Sentinel(s) => Box::pin(async move {
                let result = s.primary().await?.req_packed_command(cmd).await;
                if let Err(e) = &result {
                    s.forget_on(e).await;
                }
                result
            }),
        }
    }

    fn req_packed_commands<'a>(
        &'a mut self,
        pipeline: &'a Pipeline,
        offset: usize,
        count: usize,
    ) -> RedisFuture<'a, Vec<Value>> {
        match self {
            Connection::Node(c) => c.req_packed_commands(pipeline, offset, count),
            Connection::Cluster { conn, .. } => conn.req_packed_commands(pipeline, offset, count),
            Connection::Sentinel(s) => Box::pin(async move {
                let mut conn = s.primary().await?;
                let result = conn.req_packed_commands(pipeline, offset, count).await;
                if let Err(e) = &result {
                    s.forget_on(e).await;
                }
                result
            }),
        }
    }

    fn get_db(&self) -> i64 {
        match self {
            Connection::Node(c) => c.get_db(),
            Connection::Cluster { .. } => 0,
            Connection::Sentinel(_) => 0,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slots_follow_hash_tags() {
        // Values from CLUSTER KEYSLOT on Redis 7.0.
        assert_eq!(slot("{a}x"), 15495);
        assert_eq!(slot("{b}x"), 3300);
        assert_eq!(slot("{d}q"), 11298);
        assert_eq!(slot("sb:{a}:h"), slot("{a}"));
        // An empty tag is no tag: the whole key counts.
        assert_eq!(
            slot("{}x"),
            crc16::State::<crc16::XMODEM>::calculate(b"{}x") % 16384
        );
    }

    #[test]
    fn a_slot_maps_to_the_primary_serving_it() {
        let node =
            |host: &str, port| Value::Array(vec![Value::BulkString(host.into()), Value::Int(port)]);
        let reply = Value::Array(vec![
            Value::Array(vec![Value::Int(5461), Value::Int(10922), node("b", 2)]),
            Value::Array(vec![Value::Int(0), Value::Int(5460), node("a", 1)]),
        ]);
        let map = SlotMap::parse(reply);
        assert_eq!(map.node_of(0), map.node_of(5460));
        assert_ne!(map.node_of(5460), map.node_of(5461));
        assert_eq!(map.nodes[map.node_of(6000)], "b:2");
        // Slot 16000 is served by no one here.
        assert_eq!(map.node_of(16000), 2);
    }
}
