//! The `switchboard` command line.

use std::io::{BufWriter, Read, Write};
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use clap::{Parser, Subcommand};

use switchboard::directory::MemoryDirectory;
use switchboard::simulate::{output_line, Simulator};
use switchboard::Dialect;

// Switchboard allocates many small, short-lived strings per message; mimalloc handles that
// pattern markedly better than the system allocator (see BENCHMARKS.md).
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[derive(Parser)]
#[command(
    name = "switchboard",
    version,
    about = "Conversation-command stream processor"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Print one conversation's state from Redis (the document of SPEC section 3).
    Inspect {
        /// The conversation ID.
        conversation: String,
        /// Include the message log.
        #[arg(long)]
        messages: bool,
        /// Configuration file (TOML), for the Redis settings; SWITCHBOARD_* variables win.
        #[arg(long)]
        config: Option<PathBuf>,
    },
    /// The stream processor: consumes the input topic, keeps state in Redis, produces the
    /// output topics, exactly once. Stops cleanly on SIGTERM or SIGINT.
    ///
    /// The directory is read from Redis: write it there first with `switchboard directory load`.
    Run {
        /// Configuration file (TOML), over config/default.toml; SWITCHBOARD_* variables win.
        #[arg(long)]
        config: Option<PathBuf>,
    },
    /// The directory (organizations, channels, users, forms, blocked IPs) in Redis.
    Directory {
        #[command(subcommand)]
        command: DirectoryCommand,
    },
    /// The whole pipeline on embedded defaults: an in-process Kafka cluster and an in-memory
    /// store, fed with the example traffic; prints every output record and the final state.
    Demo {
        /// Input messages, one JSON object per line.
        #[arg(long, default_value = "examples/trace.jsonl")]
        trace: PathBuf,
        /// Directory file (YAML or JSON).
        #[arg(long, default_value = "examples/directory.yaml")]
        directory: PathBuf,
        #[arg(long, default_value = "web1on1")]
        dialect: Dialect,
    },
    /// Apply a JSON-lines trace with the domain core alone (no Kafka, no Redis) and print every
    /// output record as one JSON line {"topic", "key", "value"}.
    Simulate {
        /// Directory file (YAML or JSON): organizations, channels, users, forms.
        #[arg(long)]
        directory: PathBuf,
        /// Input messages, one JSON object per line; `-` reads standard input.
        #[arg(long)]
        input: PathBuf,
        /// Write the final state of every conversation (messages included) to this file.
        #[arg(long)]
        state: Option<PathBuf>,
        /// Command language: web1on1 (default) or chatshipper.
        #[arg(long, default_value = "web1on1")]
        dialect: Dialect,
    },
}

#[derive(Subcommand)]
enum DirectoryCommand {
    /// Validate a directory file (YAML or JSON) and write it to Redis, replacing the previous
    /// load atomically. Running processors pick it up within `directory.version_check_ms`.
    Load {
        /// The directory file.
        file: PathBuf,
        /// Configuration file (TOML), for the Redis settings; SWITCHBOARD_* variables win.
        #[arg(long)]
        config: Option<PathBuf>,
    },
}

fn directory_load(file: &std::path::Path, config: Option<&std::path::Path>) -> anyhow::Result<()> {
    let config = switchboard::config::Config::load(config)?;
    let contents = switchboard::directory::DirectoryFile::read(file)?;
    let io = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    io.block_on(async {
        let url = config.redis_url();
        let prefix = &config.redis.key_prefix;
        let store = switchboard::store::RedisStore::connect(&url, prefix)
            .await
            .context("connecting to Redis")?;
        let directory =
            switchboard::store::RedisDirectory::connect(&url, prefix, config.directory.settings())
                .await
                .context("connecting to Redis")?;
        let s = directory.load_file(&contents, &store).await?;
        println!(
            "directory {} loaded (version {}): {} organizations, {} channels, {} users, {} forms, {} blocked IPs; {} entries of the previous load removed",
            file.display(),
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

fn processor(config: Option<&std::path::Path>) -> anyhow::Result<()> {
    use std::sync::atomic::AtomicBool;
    use std::sync::Arc;

    let config = switchboard::config::Config::load(config)?;
    init_logging(&config.log)?;
    let io = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let metrics = switchboard::metrics::Metrics::new();
    let listen: std::net::SocketAddr = config.http.listen.parse()?;
    let bound = switchboard::metrics::serve(listen, Arc::clone(&metrics))
        .with_context(|| format!("serving /metrics on {listen} (http.listen)"))?;
    let store = io
        .block_on(switchboard::store::RedisStore::connect(
            &config.redis_url(),
            &config.redis.key_prefix,
        ))
        .context("connecting to Redis")?;
    let directory = io
        .block_on(switchboard::store::RedisDirectory::connect(
            &config.redis_url(),
            &config.redis.key_prefix,
            config.directory.settings(),
        ))
        .context("connecting to Redis (directory)")?;
    // Against an empty directory every message would be refused, and those refusals committed:
    // better not to start.
    if io.block_on(directory.loaded_version())?.is_none() {
        anyhow::bail!(
            "no directory in Redis under prefix {:?}: load one first with `switchboard directory load FILE`",
            config.redis.key_prefix
        );
    }
    let store = switchboard::metrics::TimedStore {
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
    let mut runtime = switchboard::runtime::Runtime::new(config, store, directory, io, metrics)?;
    let stats = runtime.run(&stop, None)?;
    tracing::info!(
        batches = stats.batches,
        records = stats.records,
        outputs = stats.outputs,
        "stopped"
    );
    Ok(())
}

fn inspect(
    conversation: &str,
    messages: bool,
    config: Option<&std::path::Path>,
) -> anyhow::Result<()> {
    use switchboard::store::StateStore;

    if !switchboard::id::is_object_id(conversation) {
        anyhow::bail!(
            "{conversation:?} is not a conversation ID (24 lowercase hexadecimal characters)"
        );
    }
    let config = switchboard::config::Config::load(config)?;
    let io = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    io.block_on(async {
        let store =
            switchboard::store::RedisStore::connect(&config.redis_url(), &config.redis.key_prefix)
                .await
                .context("connecting to Redis")?;
        let Some(record) = store.load(&[conversation.to_string()]).await?.remove(0) else {
            anyhow::bail!("conversation {conversation} does not exist");
        };
        let log = if messages {
            Some(store.log(conversation).await?)
        } else {
            None
        };
        let doc = switchboard::simulate::inspect_document(&record.conversation, log.as_deref());
        println!("{}", serde_json::to_string_pretty(&doc)?);
        Ok(())
    })
}

fn init_logging(log: &switchboard::config::Log) -> anyhow::Result<()> {
    let filter = tracing_subscriber::EnvFilter::try_new(&log.level).with_context(|| {
        format!(
            "configuration: log.level: {:?} is not a valid filter",
            log.level
        )
    })?;
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    match log.format {
        switchboard::config::LogFormat::Json => builder.json().init(),
        switchboard::config::LogFormat::Text => builder.init(),
    }
    Ok(())
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match run(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("switchboard: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn run(cli: Cli) -> anyhow::Result<()> {
    match cli.command {
        Command::Run { config } => processor(config.as_deref()),
        Command::Directory {
            command: DirectoryCommand::Load { file, config },
        } => directory_load(&file, config.as_deref()),
        Command::Inspect {
            conversation,
            messages,
            config,
        } => inspect(&conversation, messages, config.as_deref()),
        Command::Demo {
            trace,
            directory,
            dialect,
        } => {
            let stdout = std::io::stdout();
            let mut out = BufWriter::new(stdout.lock());
            switchboard::demo::run(&trace, &directory, dialect, &mut out)?;
            out.flush()?;
            Ok(())
        }
        Command::Simulate {
            directory,
            input,
            state,
            dialect,
        } => {
            let directory = MemoryDirectory::load(&directory)?;
            let trace = if input.as_os_str() == "-" {
                let mut s = String::new();
                std::io::stdin()
                    .read_to_string(&mut s)
                    .context("reading standard input")?;
                s
            } else {
                std::fs::read_to_string(&input)
                    .with_context(|| format!("reading input {}", input.display()))?
            };
            let mut simulator = Simulator::new(directory, dialect);
            let outputs = simulator.run_trace(&trace);
            let stdout = std::io::stdout();
            let mut out = BufWriter::new(stdout.lock());
            for output in &outputs {
                writeln!(out, "{}", output_line(output))?;
            }
            out.flush()?;
            if let Some(path) = state {
                let doc = serde_json::to_string_pretty(&simulator.state_document())?;
                std::fs::write(&path, doc + "\n")
                    .with_context(|| format!("writing state {}", path.display()))?;
            }
            Ok(())
        }
    }
}
