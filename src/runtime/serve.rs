//! `switchboard run`: the processor wired for production — the Redis store and directory, the
//! metrics and health endpoints, SIGTERM and SIGINT — around [`Runtime`].
//!
//! Only the wiring lives here; the batch loop is [`Runtime::run`]'s. Logging is set up by the
//! caller, before this runs.
//!
//! A stop signal is honoured at once during start-up: until the first batch is begun nothing
//! has been read or written, so the process exits 0 there and then (connecting to Redis and
//! `init_transactions` can each take tens of seconds against a server that does not answer).
//! From the first batch on, the runtime finishes the batch in flight, commits it and returns.

use std::net::{AddrParseError, SocketAddr};
use std::sync::atomic::{AtomicBool, Ordering};
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
    /// Connecting to Redis, or reading the directory's version.
    #[error("Redis at {address} (redis.url)")]
    Redis {
        address: String,
        #[source]
        source: StoreError,
    },
    #[error("no directory in Redis under prefix {prefix:?}: load one first with `switchboard directory load FILE`")]
    NoDirectory { prefix: String },
    #[error("the processor failed (kafka.brokers {brokers}, redis.url {redis})")]
    Runtime {
        brokers: String,
        redis: String,
        #[source]
        source: Box<RuntimeError>,
    },
}

const SIGNALS: [i32; 2] = [signal_hook::consts::SIGTERM, signal_hook::consts::SIGINT];

/// Runs the processor until SIGTERM or SIGINT (then finishes and commits the batch in flight).
pub fn serve(config: Config) -> Result<(), ServeError> {
    let stop = Arc::new(AtomicBool::new(false));
    for signal in SIGNALS {
        signal_hook::flag::register(signal, Arc::clone(&stop))?;
    }
    let started = Arc::new(AtomicBool::new(false));
    exit_if_stopped_before(&stop, Arc::clone(&started))?;

    let io = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let metrics = Metrics::new();
    let listen: SocketAddr = config.http.listen.parse()?;
    let bound = crate::runtime::metrics::serve(listen, Arc::clone(&metrics))
        .map_err(|source| ServeError::Metrics { listen, source })?;
    let redis = |source| ServeError::Redis {
        address: config.redis.address(),
        source,
    };
    let target = config.redis_target();
    let prefix = &config.redis.key_prefix;
    let timeout = config.redis.response_timeout();
    let store = io
        .block_on(RedisStore::connect_with(&target, prefix, timeout))
        .map_err(redis)?
        .waiting_for(config.redis.wait_replicas, config.redis.wait_timeout_ms);
    let directory = io
        .block_on(RedisDirectory::connect(
            target.clone(),
            prefix,
            config.directory.settings(),
        ))
        .map_err(redis)?;
    // Against an empty directory every message would be refused, and those refusals committed:
    // better not to start.
    if io
        .block_on(directory.loaded_version())
        .map_err(redis)?
        .is_none()
    {
        return Err(ServeError::NoDirectory {
            prefix: prefix.clone(),
        });
    }
    let store = TimedStore {
        inner: store,
        metrics: Arc::clone(&metrics),
    };
    tracing::info!(
        brokers = %config.kafka.brokers,
        input = %config.topics.input,
        group = %config.kafka.group_id,
        transactional_id = %config.transactional_id(),
        client_id = %config.client_id(),
        http = %bound,
        "starting"
    );
    let failed = |source| ServeError::Runtime {
        brokers: config.kafka.brokers.clone(),
        redis: config.redis.address(),
        source: Box::new(source),
    };
    let mut runtime = Runtime::new(config.clone(), store, directory, io, metrics)
        .map_err(failed)?
        .started(started);
    let stats = runtime.run(&stop, None).map_err(failed)?;
    tracing::info!(
        batches = stats.batches,
        records = stats.records,
        outputs = stats.outputs,
        "stopped"
    );
    Ok(())
}

/// Exits the process with status 0 on SIGTERM or SIGINT (or if `stop` is set already) until
/// `started` is set; after that, the signal is the runtime's (through `stop`).
fn exit_if_stopped_before(stop: &AtomicBool, started: Arc<AtomicBool>) -> std::io::Result<()> {
    let mut signals = signal_hook::iterator::Signals::new(SIGNALS)?;
    // A signal that came before `signals` existed set `stop` only.
    if stop.load(Ordering::SeqCst) {
        exit_during_start_up();
    }
    std::thread::Builder::new()
        .name("startup-signals".into())
        .spawn(move || {
            for _ in signals.forever() {
                if !started.load(Ordering::SeqCst) {
                    exit_during_start_up();
                }
            }
        })?;
    Ok(())
}

fn exit_during_start_up() -> ! {
    tracing::info!("stop signal during start-up: exiting, nothing was processed");
    // `_exit`: the main thread may be inside librdkafka, whose threads must not race the C
    // library's exit handlers.
    signal_hook::low_level::exit(0)
}
