//! `switchboard directory load`: a directory file, validated, written to Redis as one atomic
//! replacement of the previous load. Running processors notice the new version on their own;
//! this tool does not talk to them.
//!
//! The file is read and validated before Redis is connected to, so a bad file gets its verdict
//! offline. A file with no organizations, or with fewer than half the entries of the directory it
//! would replace, is refused without `--force`: every message would then be refused as
//! `unknown_organization`, which is what `run` refusing to start without a directory prevents.

use std::path::PathBuf;

use crate::config::Config;
use crate::core::directory::{DirectoryError, DirectoryFile, MemoryDirectory};
use crate::runtime::store::directory::{entry_count, LoadError as StoreLoadError};
use crate::runtime::store::{RedisDirectory, RedisStore, StoreError};

/// The arguments of `switchboard directory load` (its help text is the subcommand's doc, in the
/// binary's command line).
#[derive(Debug, Clone, clap::Args)]
pub struct LoadArgs {
    /// The directory file.
    pub file: PathBuf,
    /// Configuration file (TOML), for the Redis settings; SWITCHBOARD_* variables win.
    #[arg(long, env = "SWITCHBOARD_CONFIG")]
    pub config: Option<PathBuf>,
    /// Load even a file with no organizations, or with fewer than half the entries of the
    /// directory in Redis.
    #[arg(long)]
    pub force: bool,
}

/// Why a load did not happen. Each names the file or the server.
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    #[error("directory file {path}")]
    Invalid {
        path: String,
        #[source]
        source: DirectoryError,
    },
    #[error("refusing to load {path}: it has no organizations, so every message would be refused (--force loads it anyway)")]
    Empty { path: String },
    #[error("refusing to load {path}: it has {new} entries where the directory in Redis has {old}, fewer than half (--force loads it anyway)")]
    Shrinks {
        path: String,
        new: usize,
        old: usize,
    },
    #[error("Redis at {address} (redis.url)")]
    Redis {
        address: String,
        #[source]
        source: StoreError,
    },
}

impl LoadError {
    /// The file is at fault (rather than the server).
    pub fn is_invalid(&self) -> bool {
        !matches!(self, LoadError::Redis { .. })
    }
}

/// Validates the file, then loads it and prints what was loaded.
pub fn load(args: LoadArgs) -> anyhow::Result<()> {
    let config = Config::load(args.config.as_deref())?;
    let path = args.file.display().to_string();
    let file = crate::directory_file::read(&args.file)?;
    validate(&file, &path)?;
    if file.organizations.is_empty() && !args.force {
        return Err(LoadError::Empty { path }.into());
    }
    let io = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    io.block_on(async {
        let redis = |source| LoadError::Redis {
            address: config.redis.address(),
            source,
        };
        let prefix = &config.redis.key_prefix;
        let store = RedisStore::connect(config.redis_target(), prefix)
            .await
            .map_err(redis)?;
        let directory = RedisDirectory::connect(config.redis_target(), prefix, config.directory.settings())
            .await
            .map_err(redis)?;
        let (old, new) = (directory.loaded_entries().await.map_err(redis)?, entry_count(&file));
        if new * 2 < old && !args.force {
            return Err(LoadError::Shrinks { path, new, old }.into());
        }
        let s = match directory.load_file(&file, &store).await {
            Ok(s) => s,
            Err(StoreLoadError::Invalid(source)) => {
                return Err(LoadError::Invalid { path, source }.into())
            }
            Err(StoreLoadError::Store(e)) => return Err(redis(e).into()),
        };
        println!(
            "directory {} loaded (version {}): {} organizations, {} channels, {} users, {} forms, {} blocked IPs; {} entries of the previous load removed",
            args.file.display(),
            s.version,
            s.organizations,
            s.channels,
            s.users,
            s.forms,
            s.blocked,
            s.removed
        );
        Ok(())
    })
}

/// The file's ObjectIds, duplicates and references, checked offline.
pub fn validate(file: &DirectoryFile, path: &str) -> Result<MemoryDirectory, LoadError> {
    MemoryDirectory::from_file(file.clone()).map_err(|source| LoadError::Invalid {
        path: path.to_string(),
        source,
    })
}
