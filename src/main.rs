//! The `switchboard` command line.

use std::io::{BufWriter, Read, Write};
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use clap::{Parser, Subcommand};

use switchboard::core::Dialect;
use switchboard::tools::simulate::{output_line, Simulator};

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
    /// Synthetic traffic from a seeded model of conversation lifecycles, to a JSON-lines file
    /// (or standard output) or to a topic, with the directory it is written against.
    Loadgen {
        #[arg(long, default_value_t = 1000)]
        conversations: u64,
        /// Total messages; default: one lifecycle per conversation (about 15 messages).
        #[arg(long)]
        messages: Option<u64>,
        /// Messages per second: the spacing of `createdAt`, and the production pace to a topic.
        #[arg(long, default_value_t = 1000.0)]
        rate: f64,
        #[arg(long, default_value_t = 1)]
        seed: u64,
        /// Conversations open at the same time.
        #[arg(long, default_value_t = 1000)]
        concurrency: usize,
        /// Write the messages here (`-`: standard output).
        #[arg(long, conflicts_with = "topic")]
        output: Option<PathBuf>,
        /// Produce to this topic instead (the `kafka` settings of the configuration apply);
        /// `createdAt` is then the moment of production.
        #[arg(long)]
        topic: Option<String>,
        /// Write the matching directory (YAML) here, for `directory load` or `simulate`.
        #[arg(long)]
        directory: Option<PathBuf>,
        /// Configuration file (TOML), for the Kafka settings; SWITCHBOARD_* variables win.
        #[arg(long)]
        config: Option<PathBuf>,
    },
    /// Re-produce a JSON-lines file or a topic to a topic, keeping each conversation's order.
    Replay {
        /// A JSON-lines file (`-`: standard input); or use --from-topic.
        #[arg(required_unless_present = "from_topic")]
        input: Option<PathBuf>,
        /// Read this topic from its beginning to its current end instead of a file.
        #[arg(long, conflicts_with = "input")]
        from_topic: Option<String>,
        /// The topic to produce to; default: the configured input topic.
        #[arg(long)]
        topic: Option<String>,
        /// Pace: the recorded `createdAt` spacing divided by this factor.
        #[arg(long, default_value_t = 1.0, conflicts_with = "fastest")]
        speed: f64,
        /// As fast as the broker takes them.
        #[arg(long)]
        fastest: bool,
        /// Give every conversation and message ID a fresh substitute derived from this salt, so
        /// a trace can be replayed many times without collisions.
        #[arg(long)]
        remap: Option<String>,
        /// Set `createdAt` to the moment each record is produced.
        #[arg(long)]
        retime: bool,
        /// Configuration file (TOML), for the Kafka settings; SWITCHBOARD_* variables win.
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
    let contents = switchboard::directory_file::read(file)?;
    let io = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    io.block_on(async {
        let url = config.redis_url();
        let prefix = &config.redis.key_prefix;
        let store = switchboard::runtime::store::RedisStore::connect(&url, prefix)
            .await
            .context("connecting to Redis")?;
        let directory =
            switchboard::runtime::store::RedisDirectory::connect(&url, prefix, config.directory.settings())
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

fn progress(total: Option<u64>) -> indicatif::ProgressBar {
    let bar = match total {
        Some(n) => indicatif::ProgressBar::new(n),
        None => indicatif::ProgressBar::no_length(),
    };
    bar.set_style(
        indicatif::ProgressStyle::with_template(
            "{spinner} {elapsed_precise} [{wide_bar}] {human_pos}/{human_len} records, {per_sec}",
        )
        .expect("a valid template"),
    );
    bar
}

/// `replay::replay` behind a progress bar.
fn produce<I>(
    lines: I,
    total: Option<u64>,
    target: &switchboard::tools::replay::Target,
    options: &switchboard::tools::replay::Options,
) -> anyhow::Result<switchboard::tools::replay::Summary>
where
    I: IntoIterator<Item = Result<String, std::io::Error>>,
{
    let bar = progress(total);
    let summary = switchboard::tools::replay::replay(lines, target, options, &bar)?;
    bar.finish_and_clear();
    Ok(summary)
}

#[allow(clippy::too_many_arguments)]
fn loadgen(
    model: switchboard::tools::loadgen::Model,
    output: Option<&std::path::Path>,
    topic: Option<&str>,
    directory: Option<&std::path::Path>,
    config: Option<&std::path::Path>,
) -> anyhow::Result<()> {
    use switchboard::tools::loadgen::{directory as directory_of, Generator};
    if !(model.rate > 0.0 && model.rate.is_finite()) {
        anyhow::bail!("--rate must be a positive number of messages per second");
    }
    if model.conversations == 0 {
        anyhow::bail!("--conversations must be at least 1");
    }
    if let Some(path) = directory {
        let yaml = serde_yaml_ng::to_string(&directory_of(&model))?;
        std::fs::write(path, yaml).with_context(|| format!("writing {}", path.display()))?;
    }
    match (output, topic) {
        (_, Some(topic)) => {
            let config = switchboard::config::Config::load(config)?;
            let mut model = model;
            model.start_micros =
                chrono::DateTime::<chrono::Utc>::from(std::time::SystemTime::now())
                    .timestamp_micros();
            let total = model.messages;
            let summary = produce(
                Generator::new(model).map(|m| Ok(m.to_string())),
                total,
                &switchboard::tools::replay::Target::new(&config, topic),
                &switchboard::tools::replay::Options {
                    pace: switchboard::tools::replay::Pace::Recorded { speed: 1.0 },
                    remap: None,
                    retime: false,
                },
            )?;
            eprintln!("loadgen: {summary}");
        }
        (output, None) => {
            let mut out: Box<dyn Write> = match output {
                None => Box::new(BufWriter::new(std::io::stdout().lock())),
                Some(p) if p.as_os_str() == "-" => {
                    Box::new(BufWriter::new(std::io::stdout().lock()))
                }
                Some(p) => Box::new(BufWriter::new(
                    std::fs::File::create(p)
                        .with_context(|| format!("creating {}", p.display()))?,
                )),
            };
            for m in Generator::new(model) {
                serde_json::to_writer(&mut out, &m)?;
                out.write_all(b"\n")?;
            }
            out.flush()?;
        }
    }
    Ok(())
}

#[allow(clippy::too_many_arguments)]
fn replay(
    input: Option<&std::path::Path>,
    from_topic: Option<&str>,
    topic: Option<&str>,
    pace: switchboard::tools::replay::Pace,
    remap: Option<String>,
    retime: bool,
    config: Option<&std::path::Path>,
) -> anyhow::Result<()> {
    use std::io::BufRead;
    if let switchboard::tools::replay::Pace::Recorded { speed } = pace {
        if !(speed > 0.0 && speed.is_finite()) {
            anyhow::bail!("--speed must be a positive factor");
        }
    }
    let config = switchboard::config::Config::load(config)?;
    let target =
        switchboard::tools::replay::Target::new(&config, topic.unwrap_or(&config.topics.input));
    let options = switchboard::tools::replay::Options {
        pace,
        remap,
        retime,
    };
    let summary = match (input, from_topic) {
        (_, Some(source)) => {
            let client = switchboard::runtime::client_config(&config);
            let lines = switchboard::tools::replay::read_topic(&client, source)?;
            let total = lines.len() as u64;
            produce(lines.into_iter().map(Ok), Some(total), &target, &options)?
        }
        (Some(path), None) if path.as_os_str() == "-" => {
            produce(std::io::stdin().lock().lines(), None, &target, &options)?
        }
        (Some(path), None) => {
            let open = || {
                std::fs::File::open(path)
                    .map(std::io::BufReader::new)
                    .with_context(|| format!("opening {}", path.display()))
            };
            let total = open()?.lines().count() as u64;
            produce(open()?.lines(), Some(total), &target, &options)?
        }
        (None, None) => anyhow::bail!("give a file to replay, or --from-topic"),
    };
    eprintln!("replay: {summary}");
    Ok(())
}

fn processor(config: Option<&std::path::Path>) -> anyhow::Result<()> {
    use std::sync::atomic::AtomicBool;
    use std::sync::Arc;

    let config = switchboard::config::Config::load(config)?;
    init_logging(&config.log)?;
    let io = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let metrics = switchboard::runtime::metrics::Metrics::new();
    let listen: std::net::SocketAddr = config.http.listen.parse()?;
    let bound = switchboard::runtime::metrics::serve(listen, Arc::clone(&metrics))
        .with_context(|| format!("serving /metrics on {listen} (http.listen)"))?;
    let store = io
        .block_on(switchboard::runtime::store::RedisStore::connect_with(
            &config.redis_url(),
            &config.redis.key_prefix,
            config.redis.response_timeout(),
        ))
        .context("connecting to Redis")?;
    let directory = io
        .block_on(switchboard::runtime::store::RedisDirectory::connect(
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
    let store = switchboard::runtime::metrics::TimedStore {
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
    if !switchboard::core::id::is_object_id(conversation) {
        anyhow::bail!(
            "{conversation:?} is not a conversation ID (24 lowercase hexadecimal characters)"
        );
    }
    let config = switchboard::config::Config::load(config)?;
    let io = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    io.block_on(async {
        let store = switchboard::runtime::store::RedisStore::connect(
            &config.redis_url(),
            &config.redis.key_prefix,
        )
        .await
        .context("connecting to Redis")?;
        let Some((header, log)) =
            switchboard::runtime::store::document(&store, conversation, messages).await?
        else {
            anyhow::bail!("conversation {conversation} does not exist");
        };
        let doc = switchboard::tools::simulate::inspect_document(&header, log.as_deref());
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
        Command::Loadgen {
            conversations,
            messages,
            rate,
            seed,
            concurrency,
            output,
            topic,
            directory,
            config,
        } => loadgen(
            switchboard::tools::loadgen::Model {
                conversations,
                messages,
                rate,
                seed,
                concurrency,
                // 2025-01-01T00:00:00Z: files are the same bytes whenever they are made.
                start_micros: 1_735_689_600_000_000,
            },
            output.as_deref(),
            topic.as_deref(),
            directory.as_deref(),
            config.as_deref(),
        ),
        Command::Replay {
            input,
            from_topic,
            topic,
            speed,
            fastest,
            remap,
            retime,
            config,
        } => replay(
            input.as_deref(),
            from_topic.as_deref(),
            topic.as_deref(),
            if fastest {
                switchboard::tools::replay::Pace::Fastest
            } else {
                switchboard::tools::replay::Pace::Recorded { speed }
            },
            remap,
            retime,
            config.as_deref(),
        ),
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
            switchboard::tools::demo::run(&trace, &directory, dialect, &mut out)?;
            out.flush()?;
            Ok(())
        }
        Command::Simulate {
            directory,
            input,
            state,
            dialect,
        } => {
            let directory = switchboard::directory_file::load(&directory)?;
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
