//! `switchboard run`: the processor wired for production — the Redis store and directory, the
//! metrics and health endpoints, SIGTERM and SIGINT — around [`Runtime`].
//!
//! Only the wiring lives here; the batch loop is [`Runtime::run`]'s. Logging is set up by the
//! caller, before this runs.

use std::net::{AddrParseError, SocketAddr};
use std::sync::atomic::AtomicBool;
use std::sync::Arc;

use crate::config::Config;
use crate::runtime::metrics::{Metrics, TimedStore};
use crate::runtime::store::{RedisDirectory, RedisStore, StoreError};
use crate::runtime::{Runtime, RuntimeError};

/// Why the processor could not start, or stopped on an error. Each message names what failed
/// the way an operator looks it up (the setting, the server).
#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    #[error(transparent)]
    Io(#[from] std::io::Error),
    #[error(transparent)]
    Listen(#[from] AddrParseError),
    #[error("serving /metrics on {listen} (http.listen)")]
    Metrics {
        listen: SocketAddr,
        #[source]
        source: std::io::Error,
    },
    #[error("connecting to Redis")]
    Redis(#[source] StoreError),
    #[error("connecting to Redis (directory)")]
    Directory(#[source] StoreError),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("no directory in Redis under prefix {prefix:?}: load one first with `switchboard directory load FILE`")]
    NoDirectory { prefix: String },
    #[error(transparent)]
    Runtime(#[from] RuntimeError),
}

/// Runs the processor until SIGTERM or SIGINT (then finishes and commits the batch in flight).
pub fn serve(config: Config) -> Result<(), ServeError> {
    let io = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let metrics = Metrics::new();
    let listen: SocketAddr = config.http.listen.parse()?;
    let bound = crate::runtime::metrics::serve(listen, Arc::clone(&metrics))
        .map_err(|source| ServeError::Metrics { listen, source })?;
    let store = io
        .block_on(RedisStore::connect_with(
            &config.redis_url(),
            &config.redis.key_prefix,
            config.redis.response_timeout(),
        ))
        .map_err(ServeError::Redis)?;
    let directory = io
        .block_on(RedisDirectory::connect(
            &config.redis_url(),
            &config.redis.key_prefix,
            config.directory.settings(),
        ))
        .map_err(ServeError::Directory)?;
    // Against an empty directory every message would be refused, and those refusals committed:
    // better not to start.
    if io.block_on(directory.loaded_version())?.is_none() {
        return Err(ServeError::NoDirectory {
            prefix: config.redis.key_prefix.clone(),
        });
    }
    let store = TimedStore {
        inner: store,
        metrics: Arc::clone(&metrics),
    };
    let stop = Arc::new(AtomicBool::new(false));
    for signal in [signal_hook::consts::SIGTERM, signal_hook::consts::SIGINT] {
        signal_hook::flag::register(signal, Arc::clone(&stop))?;
    }
    tracing::info!(
        brokers = %config.kafka.brokers,
        input = %config.topics.input,
        group = %config.kafka.group_id,
        transactional_id = %config.transactional_id(),
        http = %bound,
        "starting"
    );
    let mut runtime = Runtime::new(config, store, directory, io, metrics)?;
    let stats = runtime.run(&stop, None)?;
    tracing::info!(
        batches = stats.batches,
        records = stats.records,
        outputs = stats.outputs,
        "stopped"
    );
    Ok(())
}
