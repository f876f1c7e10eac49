//! `switchboard directory load`: a directory file, validated, written to Redis as one atomic
//! replacement of the previous load. Running processors notice the new version on their own;
//! this tool does not talk to them.

use std::path::PathBuf;

use anyhow::Context;

use crate::config::Config;
use crate::runtime::store::{RedisDirectory, RedisStore};

/// The arguments of `switchboard directory load` (its help text is the subcommand's doc, in the
/// binary's command line).
#[derive(Debug, Clone, clap::Args)]
pub struct LoadArgs {
    /// The directory file.
    pub file: PathBuf,
    /// Configuration file (TOML), for the Redis settings; SWITCHBOARD_* variables win.
    #[arg(long)]
    pub config: Option<PathBuf>,
}

/// Loads the file and prints what was loaded.
pub fn load(args: LoadArgs) -> anyhow::Result<()> {
    let config = Config::load(args.config.as_deref())?;
    let contents = crate::directory_file::read(&args.file)?;
    let io = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    io.block_on(async {
        let url = config.redis_url();
        let prefix = &config.redis.key_prefix;
        let store = RedisStore::connect(&url, prefix)
            .await
            .context("connecting to Redis")?;
        let directory = RedisDirectory::connect(&url, prefix, config.directory.settings())
            .await
            .context("connecting to Redis")?;
        let s = directory.load_file(&contents, &store).await?;
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
