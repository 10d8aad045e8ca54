//! `sluice`: run a node, look into its message box, measure it.

mod bench;
mod dev;
mod inspect;
mod publish;
mod suspended;

use std::path::PathBuf;

use anyhow::Context as _;
use clap::{Parser, Subcommand};
use sluice_host::{CancellationToken, Config};

#[derive(Parser)]
#[command(name = "sluice", version, about = "Sluice integration server")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run a node: receive locations and send ports on the embedded message box.
    Serve {
        #[arg(long, short)]
        config: PathBuf,
    },
    /// Counts: messages in the box, queued per subscriber, suspended, content bytes.
    Status {
        #[arg(long, short)]
        config: PathBuf,
        /// One JSON object instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// List and show messages in the box.
    Messages {
        #[command(subcommand)]
        command: MessagesCommand,
    },
    /// Suspended messages: list, resume (route again), terminate (drop).
    Suspended {
        #[command(subcommand)]
        command: SuspendedCommand,
    },
    /// Publish one message into the box, as a receive location would (durable on exit 0).
    Publish {
        #[arg(long, short)]
        config: PathBuf,
        /// The body: a file, or `-` for stdin. Without it the body is empty.
        #[arg(long, value_name = "FILE")]
        body: Option<PathBuf>,
        /// A promoted property, e.g. `order.id=string:A1`, `n=int:-5`,
        /// `t=timestamp:2026-11-22T10:00:00Z`, `b=bytes:hex:00ff`
        /// (types: string, int, float, bool, timestamp, bytes with hex: or base64:).
        #[arg(long = "prop", value_name = "KEY=TYPE:VALUE")]
        props: Vec<String>,
        /// One JSON object: `{"message_id", "routed"}`.
        #[arg(long)]
        json: bool,
    },
    /// Benchmarks.
    Bench {
        #[command(subcommand)]
        command: BenchCommand,
    },
    /// Tools for trying Sluice out and testing against it.
    Dev {
        #[command(subcommand)]
        command: DevCommand,
    },
}

#[derive(Subcommand)]
enum DevCommand {
    /// An HTTP server that answers every request with the request's body, streamed.
    EchoServer(dev::EchoServerArgs),
}

#[derive(Subcommand)]
enum MessagesCommand {
    /// Messages in the box, oldest first.
    List {
        #[arg(long, short)]
        config: PathBuf,
        #[arg(long, default_value_t = 100)]
        limit: usize,
        /// Start after this message id.
        #[arg(long)]
        after: Option<String>,
        #[arg(long)]
        json: bool,
    },
    /// One message: its full context, parts, queue entries and suspensions.
    Show {
        id: String,
        #[arg(long, short)]
        config: PathBuf,
        #[arg(long)]
        json: bool,
    },
}

#[derive(Subcommand)]
enum SuspendedCommand {
    /// Every suspended entry: id, message, when, subscriber, attempts, reason.
    List {
        #[arg(long, short)]
        config: PathBuf,
        #[arg(long)]
        json: bool,
    },
    /// Queue suspended entries again: to their send port, or, for "no
    /// subscriber", to every subscription that matches now.
    Resume {
        /// Suspended entry ids (the `#` numbers of `suspended list`).
        ids: Vec<i64>,
        /// Resume every suspended entry.
        #[arg(long, conflicts_with = "ids")]
        all: bool,
        #[arg(long, short)]
        config: PathBuf,
    },
    /// Drop suspended entries (a message goes when nothing else references it).
    Terminate {
        ids: Vec<i64>,
        #[arg(long, conflicts_with = "ids")]
        all: bool,
        #[arg(long, short)]
        config: PathBuf,
    },
}

#[derive(Subcommand)]
enum BenchCommand {
    /// Durable publish -> route -> lease -> ack on an embedded box in a fresh temporary directory.
    Messaging(bench::MessagingArgs),
}

fn init_logging() {
    let filter = tracing_subscriber::EnvFilter::try_from_env("SLUICE_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    use std::io::IsTerminal;
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::stderr().is_terminal())
        .with_writer(std::io::stderr)
        .init();
}

fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    init_logging();
    let runtime = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(r) => r,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return std::process::ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(cli)) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

async fn run(cli: Cli) -> anyhow::Result<()> {
    match cli.command {
        Command::Serve { config } => serve(config).await,
        Command::Status { config, json } => inspect::status(&load(&config)?, json).await,
        Command::Messages {
            command:
                MessagesCommand::List {
                    config,
                    limit,
                    after,
                    json,
                },
        } => inspect::list(&load(&config)?, limit, after.as_deref(), json).await,
        Command::Messages {
            command: MessagesCommand::Show { id, config, json },
        } => inspect::show(&load(&config)?, &id, json).await,
        Command::Suspended { command } => match command {
            SuspendedCommand::List { config, json } => suspended::list(&load(&config)?, json).await,
            SuspendedCommand::Resume { ids, all, config } => {
                suspended::act(&load(&config)?, which(ids, all)?, false).await
            }
            SuspendedCommand::Terminate { ids, all, config } => {
                suspended::act(&load(&config)?, which(ids, all)?, true).await
            }
        },
        Command::Publish {
            config,
            body,
            props,
            json,
        } => publish::publish(&load(&config)?, body, &props, json).await,
        Command::Bench {
            command: BenchCommand::Messaging(args),
        } => bench::messaging(args).await,
        Command::Dev {
            command: DevCommand::EchoServer(args),
        } => dev::echo_server(args, on_signal()).await,
    }
}

/// A token cancelled on SIGTERM or SIGINT.
fn on_signal() -> CancellationToken {
    let token = CancellationToken::new();
    let t = token.clone();
    tokio::spawn(async move {
        wait_for_signal().await;
        tracing::info!("signal received");
        t.cancel();
    });
    token
}

fn which(ids: Vec<i64>, all: bool) -> anyhow::Result<suspended::Which> {
    match (all, ids.is_empty()) {
        (true, _) => Ok(suspended::Which::All),
        (false, false) => Ok(suspended::Which::Ids(ids)),
        (false, true) => anyhow::bail!("name the suspended entries (their # numbers) or pass --all"),
    }
}

fn load(path: &std::path::Path) -> anyhow::Result<Config> {
    Ok(Config::load(path)?)
}

async fn serve(config_path: PathBuf) -> anyhow::Result<()> {
    let config = load(&config_path)?;
    sluice_host::serve(config, on_signal())
        .await
        .with_context(|| format!("running the node of {}", config_path.display()))
}

async fn wait_for_signal() {
    use tokio::signal::unix::{SignalKind, signal};
    match (signal(SignalKind::terminate()), signal(SignalKind::interrupt())) {
        (Ok(mut term), Ok(mut int)) => {
            tokio::select! {
                _ = term.recv() => {}
                _ = int.recv() => {}
            }
        }
        _ => {
            let _ = tokio::signal::ctrl_c().await;
        }
    }
}
