//! The `switchboard` command line: parses it, sets up logging, hands each subcommand whole to
//! the tool that runs it, and maps the outcome to the exit status.
//!
//! Exit statuses: 0 done (also for a stop signal: `run` finishes its batch, or, still starting,
//! exits at once); 1 any other failure; 2 a bad command line (clap's); 69 (EX_UNAVAILABLE) a
//! server unreachable, a topic missing or no directory loaded; 78 (EX_CONFIG) a bad
//! configuration or directory file, or failed TLS or SASL authentication with Kafka. A failure is
//! printed once, as `switchboard: <error>: <its cause>…`, each cause once; under
//! `log.format = json`, as one JSON log line instead.

mod cli;

use std::io::IsTerminal;
use std::process::ExitCode;

use anyhow::Context;
use clap::Parser;
use opentelemetry_sdk::trace::SdkTracerProvider;
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::Layer;

use cli::{Cli, Command, DirectoryCommand};
use switchboard::config::{Config, ConfigError, Log, LogFormat};
use switchboard::core::directory::DirectoryError;
use switchboard::directory_file::DirectoryFileError;
use switchboard::runtime::pipeline::trace;
use switchboard::runtime::serve::{serve, ServeError};
use switchboard::runtime::RuntimeError;
use switchboard::tools;
use switchboard::tools::check::error_text;

// Switchboard allocates many small, short-lived strings per message; mimalloc handles that
// pattern markedly better than the system allocator (see BENCHMARKS.md).
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// EX_UNAVAILABLE and EX_CONFIG of sysexits.h.
const UNAVAILABLE: u8 = 69;
const CONFIG: u8 = 78;

fn main() -> ExitCode {
    let cli = Cli::parse();
    let config_path = cli.command.config_path().map(|p| p.to_path_buf());
    let mut logging = None;
    match run(cli.command, &mut logging) {
        Ok(code) => ExitCode::from(code),
        Err(e) => {
            let code = exit_code(&e);
            let format = logging.unwrap_or_else(|| Config::log_format_hint(config_path.as_deref()));
            report(format, &error_text(&e), code);
            ExitCode::from(code)
        }
    }
}

/// Runs the command; `logging` is set once logging is.
fn run(command: Command, logging: &mut Option<LogFormat>) -> anyhow::Result<u8> {
    match command {
        Command::Run(args) => {
            let loaded = Config::load_reporting(args.config.as_deref())?;
            let traces = init_logging(&loaded.config.log)?;
            *logging = Some(loaded.config.log.format);
            if !loaded.ignored.is_empty() {
                tracing::warn!(
                    variables = %loaded.ignored.join(","),
                    "ignoring SWITCHBOARD_* variables that name no setting"
                );
            }
            let served = serve(loaded.config);
            // Sends the spans still batched, whatever `serve` came to.
            if let Some(provider) = traces {
                if let Err(e) = provider.shutdown() {
                    tracing::warn!(error = %e, "traces not all exported");
                }
            }
            served?;
        }
        Command::Check(args) => return Ok(tools::check::run(args).exit_code()),
        Command::Inspect(args) => tools::inspect::run(args)?,
        Command::Loadgen(args) => tools::loadgen::run(args)?,
        Command::Replay(args) => tools::replay::run(args)?,
        Command::Rebuild(args) => tools::rebuild::run(args)?,
        Command::Directory {
            command: DirectoryCommand::Load(args),
        } => tools::directory::load(args)?,
        Command::Demo(args) => tools::demo::run(args)?,
        Command::Simulate(args) => tools::simulate::run(args)?,
    }
    Ok(0)
}

/// Logs go to standard error, as the configuration's `log` section says, in colour only on a
/// terminal (and not under `NO_COLOR`). Only the processor logs; the other commands print what
/// they did.
fn init_logging(log: &Log) -> anyhow::Result<Option<SdkTracerProvider>> {
    let filter = tracing_subscriber::EnvFilter::try_new(&log.level)
        .with_context(|| format!("log.level: {:?} is not a valid filter", log.level))?;
    let colour = std::io::stderr().is_terminal()
        && std::env::var_os("NO_COLOR").is_none_or(|v| v.is_empty());
    let fmt = tracing_subscriber::fmt::layer()
        .with_writer(std::io::stderr)
        .with_ansi(colour);
    // The log filter applies to the log lines only: the trace layer listens to its own target.
    let fmt = match log.format {
        LogFormat::Json => fmt.json().with_filter(filter).boxed(),
        LogFormat::Text => fmt.with_filter(filter).boxed(),
    };
    let (traces, provider) = if log.otlp_endpoint.is_empty() {
        (None, None)
    } else {
        let (layer, provider) = trace::otlp_layer(&log.otlp_endpoint)
            .with_context(|| format!("log.otlp_endpoint: {:?}", log.otlp_endpoint))?;
        (Some(layer), Some(provider))
    };
    tracing_subscriber::registry().with(traces).with(fmt).init();
    Ok(provider)
}

/// Prints the failure: a line on standard error, or a JSON log line like the processor's own.
fn report(format: LogFormat, text: &str, code: u8) {
    match format {
        LogFormat::Text => eprintln!("switchboard: {text}"),
        LogFormat::Json => {
            // The processor's subscriber if `run` set one up; else one for this line.
            let _ = tracing_subscriber::fmt()
                .json()
                .with_writer(std::io::stderr)
                .try_init();
            tracing::error!(exit_code = code, "{text}");
        }
    }
}

/// The exit status for a failure: the first cause in the chain that says what kind it is.
fn exit_code(e: &anyhow::Error) -> u8 {
    for cause in e.chain() {
        if cause.is::<ConfigError>() || cause.is::<DirectoryFileError>() {
            return CONFIG;
        }
        if cause.is::<DirectoryError>() {
            return CONFIG;
        }
        if let Some(load) = cause.downcast_ref::<tools::directory::LoadError>() {
            return if load.is_invalid() {
                CONFIG
            } else {
                UNAVAILABLE
            };
        }
        if let Some(ServeError::Redis { .. } | ServeError::NoDirectory { .. }) =
            cause.downcast_ref()
        {
            return UNAVAILABLE;
        }
        // ServeError holds the runtime's error boxed.
        let runtime = cause
            .downcast_ref::<Box<RuntimeError>>()
            .map(|b| &**b)
            .or_else(|| cause.downcast_ref::<RuntimeError>());
        if let Some(RuntimeError::Unauthenticated { .. }) = runtime {
            return CONFIG;
        }
        if let Some(kafka) = cause.downcast_ref::<KafkaError>() {
            if let Some(code) = kafka_exit_code(kafka) {
                return code;
            }
        }
        if let Some(r) = cause.downcast_ref::<redis::RedisError>() {
            if r.is_io_error() || r.is_connection_refusal() || r.is_timeout() {
                return UNAVAILABLE;
            }
        }
    }
    1
}

fn kafka_exit_code(e: &KafkaError) -> Option<u8> {
    use RDKafkaErrorCode as C;
    if matches!(
        e,
        KafkaError::ClientConfig(..) | KafkaError::ClientCreation(_)
    ) {
        return Some(CONFIG);
    }
    let unavailable = [
        C::OperationTimedOut,
        C::AllBrokersDown,
        C::BrokerTransportFailure,
        C::Resolve,
        C::MessageTimedOut,
        C::TimedOutQueue,
        C::RequestTimedOut,
        C::NetworkException,
        C::BrokerNotAvailable,
        C::CoordinatorNotAvailable,
        C::CoordinatorLoadInProgress,
        C::NotCoordinator,
        C::LeaderNotAvailable,
        C::UnknownTopicOrPartition,
    ];
    unavailable
        .contains(&e.rdkafka_error_code()?)
        .then_some(UNAVAILABLE)
}
