//! `switchboard inspect`: one conversation's state as stored in Redis, printed as the document
//! of SPEC section 3 (the one `simulate --state` writes). It only reads.

use std::path::PathBuf;

use anyhow::Context;

use crate::config::Config;
use crate::runtime::store::RedisStore;
use crate::tools::simulate::inspect_document;

/// The arguments of `switchboard inspect` (its help text is the subcommand's doc, in the
/// binary's command line).
#[derive(Debug, Clone, clap::Args)]
pub struct Args {
    /// The conversation ID.
    pub conversation: String,
    /// Include the message log.
    #[arg(long)]
    pub messages: bool,
    /// Configuration file (TOML), for the Redis settings; SWITCHBOARD_* variables win.
    #[arg(long, env = "SWITCHBOARD_CONFIG")]
    pub config: Option<PathBuf>,
}

/// Prints the document, pretty, to standard output.
pub fn run(args: Args) -> anyhow::Result<()> {
    let conversation = &args.conversation;
    if !crate::core::id::is_object_id(conversation) {
        anyhow::bail!(
            "{conversation:?} is not a conversation ID (24 lowercase hexadecimal characters)"
        );
    }
    let config = Config::load(args.config.as_deref())?;
    let io = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    io.block_on(async {
        let store = RedisStore::connect(config.redis_target(), &config.redis.key_prefix)
            .await
            .with_context(|| format!("Redis at {} (redis.url)", config.redis.address()))?;
        let Some((header, log)) =
            crate::runtime::store::document(&store, conversation, args.messages).await?
        else {
            anyhow::bail!("conversation {conversation} does not exist");
        };
        let doc = inspect_document(&header, log.as_deref());
        println!("{}", serde_json::to_string_pretty(&doc)?);
        Ok(())
    })
}
