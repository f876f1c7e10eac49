//! Where Redis is, from the `redis` settings: one node (`url`), a Cluster (`cluster_nodes`) or
//! the primary Sentinels name (`sentinel_nodes`), and what is wrong with those settings.

use secrecy::ExposeSecret;
use serde::{Deserialize, Deserializer};

use super::Redis;
use crate::runtime::store::{Target, TlsFiles};

impl Redis {
    /// The target to connect to. Cluster and Sentinel nodes are reached with `url`'s scheme
    /// and credentials; a Cluster has only database 0.
    pub fn target(&self) -> Target {
        let file = |f: &String| (!f.is_empty()).then(|| std::path::PathBuf::from(f));
        let tls = TlsFiles {
            ca: file(&self.tls_ca_file),
            client: file(&self.tls_cert_file).zip(file(&self.tls_key_file)),
        };
        self.located().with_tls(tls)
    }

    fn located(&self) -> Target {
        let url = self.connection_url();
        let base = url.expose_secret();
        if !self.cluster_nodes.is_empty() {
            return Target::cluster(
                self.cluster_nodes
                    .iter()
                    .map(|node| at(base, node, true))
                    .collect(),
            );
        }
        if !self.sentinel_nodes.is_empty() {
            // Sentinels are reached with the scheme alone: their credentials, if any, are not
            // the data nodes'.
            let scheme = if base.starts_with("rediss://") {
                "rediss"
            } else {
                "redis"
            };
            let sentinels = self
                .sentinel_nodes
                .iter()
                .map(|node| format!("{scheme}://{node}"))
                .collect();
            return Target::sentinel(sentinels, &self.sentinel_service, base);
        }
        Target::node(base)
    }

    /// What is wrong with the Cluster and Sentinel settings, as (setting, reason).
    pub(super) fn target_problems(&self) -> Vec<(&'static str, String)> {
        let mut problems = Vec::new();
        let cluster = !self.cluster_nodes.is_empty();
        let sentinel = !self.sentinel_nodes.is_empty();
        if cluster && sentinel {
            let reason = "and redis.sentinel_nodes are both set: Redis is a Cluster or \
                          Sentinel-managed, not both";
            problems.push(("redis.cluster_nodes", reason.to_string()));
        }
        for (setting, nodes) in [
            ("redis.cluster_nodes", &self.cluster_nodes),
            ("redis.sentinel_nodes", &self.sentinel_nodes),
        ] {
            for node in nodes {
                if !is_host_port(node) {
                    problems.push((setting, format!("{node:?} is not host:port")));
                }
            }
        }
        if (cluster || sentinel)
            && !self.url.starts_with("redis://")
            && !self.url.starts_with("rediss://")
        {
            let reason = "must be redis:// or rediss:// with cluster_nodes or sentinel_nodes \
                          (it gives their scheme and credentials)";
            problems.push(("redis.url", reason.to_string()));
        }
        if self.tls_cert_file.is_empty() != self.tls_key_file.is_empty() {
            let reason = "and redis.tls_key_file go together: a client certificate needs its key";
            problems.push(("redis.tls_cert_file", reason.to_string()));
        }
        for (setting, path) in [
            ("redis.tls_ca_file", &self.tls_ca_file),
            ("redis.tls_cert_file", &self.tls_cert_file),
            ("redis.tls_key_file", &self.tls_key_file),
        ] {
            if path.is_empty() {
                continue;
            }
            if !self.url.starts_with("rediss://") {
                problems.push((
                    setting,
                    "is set, but redis.url is not rediss://".to_string(),
                ));
            }
            if let Err(e) = std::fs::metadata(path) {
                problems.push((setting, format!("cannot read {path}: {e}")));
            }
        }
        if sentinel && self.sentinel_service.is_empty() {
            let reason = "must name the service the Sentinels watch";
            problems.push(("redis.sentinel_service", reason.to_string()));
        }
        problems
    }
}

/// `base` (a redis:// URL) pointed at `node` (`host:port`), without a database when `bare`.
fn at(base: &str, node: &str, bare: bool) -> String {
    let (Some(mut url), Some((host, port))) = (redis::parse_redis_url(base), node.rsplit_once(':'))
    else {
        return format!("redis://{node}");
    };
    let _ = url.set_host(Some(host));
    let _ = url.set_port(port.parse().ok());
    if bare {
        url.set_path("");
    }
    url.into()
}

fn is_host_port(node: &str) -> bool {
    matches!(node.rsplit_once(':'), Some((host, port)) if !host.is_empty() && port.parse::<u16>().is_ok())
}

/// A list setting: a TOML list, or (from the environment) one comma-separated string.
pub(super) fn list<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<String>, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Either {
        List(Vec<String>),
        Text(String),
    }
    Ok(match Either::deserialize(d)? {
        Either::List(list) => list,
        Either::Text(text) => text
            .split(',')
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .map(String::from)
            .collect(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cluster_nodes_take_the_urls_scheme_and_credentials() {
        assert_eq!(
            at("rediss://u:p%40ss@seed:6379/3", "10.0.0.2:7001", true),
            "rediss://u:p%40ss@10.0.0.2:7001"
        );
        assert_eq!(at("redis://127.0.0.1:6379/", "h:1", true), "redis://h:1");
    }

    #[test]
    fn nodes_are_host_and_port() {
        assert!(is_host_port("10.0.0.1:6379"));
        assert!(is_host_port("redis-0.redis:6379"));
        assert!(!is_host_port("10.0.0.1"));
        assert!(!is_host_port(":6379"));
        assert!(!is_host_port("h:port"));
    }
}
