//! `sluice`: run a node, look into its message box, measure it.

#[macro_use]
mod out;

mod bench;
mod bench_api;
mod bench_http;
mod body;
mod check;
mod dev;
mod errors;
mod inspect;
mod logging;
mod publish;
mod reload;
mod remote;
mod store;
mod suspended;
mod users;

use std::path::PathBuf;
use std::sync::Arc;

use anyhow::Context as _;
use clap::{CommandFactory, Parser, Subcommand};
use sluice_host::{CancellationToken, Config};
use sluice_ops::body::BodyOf;
use sluice_ops::suspended::{Action, Op};
use tokio::sync::Notify;

/// jemalloc instead of glibc's malloc: glibc's was ~10% of the node's CPU
/// under HTTP load (BENCHMARKS.md, issue 14); jemalloc measured faster there
/// at about the same peak RSS (mimalloc was as fast, but ~50% more RSS).
#[global_allocator]
static GLOBAL: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

#[derive(Parser)]
#[command(name = "sluice", version, about = "Sluice integration server")]
struct Cli {
    #[command(flatten)]
    remote: remote::RemoteArgs,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run a node: receive locations and send ports on the embedded message box.
    Serve {
        #[arg(long, short, env = "SLUICE_CONFIG")]
        config: Option<PathBuf>,
    },
    /// Check a configuration without starting anything: every error it has,
    /// or a summary of what it configures (exit status 0 when valid).
    Check {
        #[arg(long, short, env = "SLUICE_CONFIG")]
        config: Option<PathBuf>,
    },
    /// Ask the running node to load a configuration file again: locations
    /// and ports added, removed or changed, the others untouched. An invalid
    /// file is refused whole and the running configuration kept. SIGHUP to
    /// the node does the same with the file it runs.
    Reload {
        #[arg(long, short, env = "SLUICE_CONFIG")]
        config: Option<PathBuf>,
        /// One JSON object: `{"applied", "changes", "errors"}`.
        #[arg(long)]
        json: bool,
    },
    /// Counts: messages in the box, queued per subscriber, suspended, content bytes.
    Status {
        #[arg(long, short, env = "SLUICE_CONFIG")]
        config: Option<PathBuf>,
        /// One JSON object instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// List and show messages in the box, and what happened to them (tracking).
    Messages {
        #[command(subcommand)]
        command: MessagesCommand,
    },
    /// Suspended messages: list, show, resume (route again), resubmit (publish again, edited), terminate (drop).
    Suspended {
        #[command(subcommand)]
        command: Box<SuspendedCommand>,
    },
    /// Publish one message into the box, as a receive location would (durable on exit 0).
    Publish {
        #[arg(long, short, env = "SLUICE_CONFIG")]
        config: Option<PathBuf>,
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
    /// Users of the REST API and portal: add (password from stdin), remove, list.
    Users {
        #[command(subcommand)]
        command: users::UsersCommand,
    },
    /// API tokens: create (printed once), list, revoke.
    Tokens {
        #[command(subcommand)]
        command: users::TokensCommand,
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
    /// Run one isolated host's receive locations and send ports, reaching
    /// the node's box through its socket: what a node starts for a host
    /// with `isolation = "process"`, not a command to run by hand.
    #[command(hide = true)]
    HostInstance {
        #[arg(long)]
        host: String,
        #[arg(long)]
        socket: PathBuf,
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
        #[arg(long, short, env = "SLUICE_CONFIG")]
        config: Option<PathBuf>,
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
        #[arg(long, short, env = "SLUICE_CONFIG")]
        config: Option<PathBuf>,
        #[arg(long)]
        json: bool,
    },
    /// One part of a message (the body unless --part), streamed to standard output or a file.
    Body {
        id: String,
        #[arg(long, short, env = "SLUICE_CONFIG")]
        config: Option<PathBuf>,
        #[command(flatten)]
        args: body::BodyArgs,
    },
    /// What happened to messages: received, suspended, resumed, delivered,
    /// terminated, resubmitted, completed; where, and from which source.
    Tracking {
        #[arg(long, short, env = "SLUICE_CONFIG")]
        config: Option<PathBuf>,
        /// Only this message's events.
        #[arg(long, value_name = "ID")]
        message: Option<String>,
        /// A JSON array; `completed` events carry the message's context.
        #[arg(long)]
        json: bool,
    },
}

#[derive(Subcommand)]
enum SuspendedCommand {
    /// Suspended entries (all, or those the filter flags select): id, message,
    /// when, port or location, stage/component, attempts, resumable, reason.
    List {
        #[arg(long, short, env = "SLUICE_CONFIG")]
        config: Option<PathBuf>,
        #[command(flatten)]
        filters: suspended::Filters,
        /// At most N entries (the oldest first); without it, every one.
        #[arg(long, value_name = "N", value_parser = clap::value_parser!(u64).range(1..))]
        limit: Option<u64>,
        #[arg(long)]
        json: bool,
    },
    /// One entry: where it failed, every attempt, the message's context and parts.
    Show {
        #[arg(value_parser = suspended::id_arg)]
        id: i64,
        #[arg(long, short, env = "SLUICE_CONFIG")]
        config: Option<PathBuf>,
        #[arg(long)]
        json: bool,
    },
    /// One part of the entry's message (the body unless --part), streamed to standard output or a file.
    Body {
        #[arg(value_parser = suspended::id_arg)]
        id: i64,
        #[arg(long, short, env = "SLUICE_CONFIG")]
        config: Option<PathBuf>,
        #[command(flatten)]
        args: body::BodyArgs,
    },
    /// Queue suspended entries again: to their send port, or, for "no
    /// subscriber", to every subscription that matches now. Entries selected
    /// by --all or filters that cannot be resumed are skipped.
    Resume {
        #[command(flatten)]
        target: suspended::Target,
        /// Say which entries would be resumed; change nothing.
        #[arg(long)]
        dry_run: bool,
        #[arg(long, short, env = "SLUICE_CONFIG")]
        config: Option<PathBuf>,
    },
    /// Publish suspended entries' messages again as new messages, routed as
    /// any publish is, with an edited context or (one entry) a new body.
    Resubmit {
        #[command(flatten)]
        target: suspended::Target,
        #[command(flatten)]
        changes: suspended::Changes,
        #[arg(long, short, env = "SLUICE_CONFIG")]
        config: Option<PathBuf>,
    },
    /// Drop suspended entries (a message goes when nothing else references it).
    Terminate {
        #[command(flatten)]
        target: suspended::Target,
        /// Say which entries would be terminated; change nothing.
        #[arg(long)]
        dry_run: bool,
        #[arg(long, short, env = "SLUICE_CONFIG")]
        config: Option<PathBuf>,
    },
}

#[derive(Subcommand)]
enum BenchCommand {
    /// Durable publish -> route -> lease -> ack on an embedded box in a fresh temporary directory.
    Messaging(bench::MessagingArgs),
    /// A normal open-loop load of POSTs to an HTTP receive location beside
    /// slow clients (slowloris), with the node's RSS and open files sampled.
    Hostile(bench::HostileArgs),
    /// POSTs at a fixed rate to a one-way HTTP receive location, and a server
    /// in the same process for the HTTP send port: the time from each 202 to
    /// the delivery of the same message.
    Http(bench_http::HttpArgs),
    /// The REST API and portal over a big box: a real node, timed over
    /// HTTP (suspended list, message search, dashboard, a big download and
    /// the node's RSS for it) and in headless Chromium.
    Api(bench_api::ApiArgs),
}

fn main() -> std::process::ExitCode {
    let cli = Cli::try_parse().unwrap_or_else(|e| usage_exit(e));
    if let Err(e) = check(&cli) {
        usage_exit(e);
    }
    if let Err(e) = logging::init() {
        // Like a bad flag: nothing has started (exit status 2).
        eprintln!("error[{}]: {e}", errors::USAGE);
        return std::process::ExitCode::from(2);
    }
    let runtime = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(r) => r,
        Err(e) => {
            eprintln!("error[{}]: cannot start the async runtime: {e}", errors::INTERNAL);
            return std::process::ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(cli)) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        // The reader of standard output went away (`| head -1`): quietly.
        Err(e) if out::is_broken_pipe(&e) => std::process::ExitCode::SUCCESS,
        Err(e) if e.is::<suspended::Interrupted>() => {
            eprintln!("{e}");
            std::process::ExitCode::from(130)
        }
        // Like a bad flag (exit status 2).
        Err(e) if e.is::<Usage>() => {
            eprintln!("error[{}]: {e}", errors::USAGE);
            std::process::ExitCode::from(2)
        }
        Err(e) => {
            eprintln!("error[{}]: {e:#}", errors::code(&e));
            std::process::ExitCode::FAILURE
        }
    }
}

/// Flags that do not go together, or a command that cannot run as asked
/// (exit status 2, `error[invalid_argument]`).
#[derive(Debug)]
pub struct Usage(pub String);

impl std::fmt::Display for Usage {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for Usage {}

/// The configuration file a command on this machine needs.
fn need(config: Option<PathBuf>) -> anyhow::Result<PathBuf> {
    config.ok_or_else(|| {
        Usage(
            "no configuration: give --config FILE (or set SLUICE_CONFIG) to use the box on this machine, \
             or --server URL (or SLUICE_SERVER) to use a node's REST API"
                .into(),
        )
        .into()
    })
}

async fn run(cli: Cli) -> anyhow::Result<()> {
    if cli.remote.server.is_some() {
        return run_remote(&cli.remote, cli.command).await;
    }
    match cli.command {
        Command::Serve { config } => serve(need(config)?).await,
        Command::HostInstance { host, socket } => sluice_host::instance::run(&socket, &host, on_signal(None))
            .await
            .with_context(|| format!("running the instance of host `{host}`")),
        Command::Check { config } => check::check(&need(config)?),
        Command::Reload { config, json } => {
            let config = need(config)?;
            reload::reload(&load(&config)?, &config, json).await
        }
        Command::Status { config, json } => inspect::status(&reading(config)?, json).await,
        Command::Messages {
            command:
                MessagesCommand::List {
                    config,
                    limit,
                    after,
                    json,
                },
        } => inspect::list(&reading(config)?, limit, after.as_deref(), json).await,
        Command::Messages {
            command: MessagesCommand::Show { id, config, json },
        } => inspect::show(&reading(config)?, &id, json).await,
        Command::Messages {
            command: MessagesCommand::Body { id, config, args },
        } => {
            let of = BodyOf::Message(sluice_ops::parse::parse_message_id(&id)?);
            body::write(&reading(config)?, of, &args).await
        }
        Command::Messages {
            command: MessagesCommand::Tracking { config, message, json },
        } => inspect::tracking(&reading(config)?, message.as_deref(), json).await,
        Command::Suspended { command } => match *command {
            SuspendedCommand::List {
                config,
                filters,
                limit,
                json,
            } => suspended::list(&reading(config)?, &filters, limit, json).await,
            SuspendedCommand::Body { id, config, args } => {
                body::write(&reading(config)?, BodyOf::Suspended(id), &args).await
            }
            SuspendedCommand::Show { id, config, json } => suspended::show(&reading(config)?, id, json).await,
            SuspendedCommand::Resume {
                target,
                dry_run,
                config,
            } => suspended::act(&load(&need(config)?)?, &target, Action::Resume, None, dry_run).await,
            SuspendedCommand::Resubmit {
                target,
                changes,
                config,
            } => {
                // Checked by `check` before anything ran.
                let edit = changes.edit(&target).map_err(|e| anyhow::anyhow!(e))?;
                let config = load(&need(config)?)?;
                suspended::act(&config, &target, Action::Resubmit(edit), changes.body, false).await
            }
            SuspendedCommand::Terminate {
                target,
                dry_run,
                config,
            } => suspended::act(&load(&need(config)?)?, &target, Action::Terminate, None, dry_run).await,
        },
        Command::Publish {
            config,
            body,
            props,
            json,
        } => publish::publish(&load(&need(config)?)?, body, &props, json).await,
        Command::Users { command } => users::users(command).await,
        Command::Tokens { command } => users::tokens(command).await,
        Command::Bench {
            command: BenchCommand::Messaging(args),
        } => bench::messaging(args).await,
        Command::Bench {
            command: BenchCommand::Hostile(args),
        } => bench::hostile(args).await,
        Command::Bench {
            command: BenchCommand::Http(args),
        } => bench_http::http(args).await,
        Command::Bench {
            command: BenchCommand::Api(args),
        } => bench_api::api(args).await,
        Command::Dev {
            command: DevCommand::EchoServer(args),
        } => dev::echo_server(args, on_signal(None)).await,
    }
}

/// A command through a node's REST API (`--server`): the operator
/// commands the API serves; the others say they run on the node's machine.
async fn run_remote(args: &remote::RemoteArgs, command: Command) -> anyhow::Result<()> {
    let here = |what: &str| -> anyhow::Result<()> {
        Err(Usage(format!(
            "`sluice {what}` works on this machine's node and box, not through the REST API: \
             run it without --server (and SLUICE_SERVER unset) on the node's machine"
        ))
        .into())
    };
    let r = match &command {
        Command::Serve { .. } => return here("serve"),
        Command::Check { .. } => return here("check"),
        Command::Reload { .. } => return here("reload"),
        Command::Publish { .. } => return here("publish"),
        Command::Bench { .. } => return here("bench"),
        Command::Dev { .. } => return here("dev"),
        Command::HostInstance { .. } => return here("host-instance"),
        Command::Tokens {
            command: users::TokensCommand::List { .. },
        } => {
            return Err(Usage(
                "the REST API does not list tokens: run `sluice tokens list` on the node's machine".into(),
            )
            .into());
        }
        _ => remote::Remote::new(args)?,
    };
    match command {
        Command::Status { json, .. } => inspect::status_remote(&r, json).await,
        Command::Messages { command } => match command {
            MessagesCommand::List { limit, after, json, .. } => {
                inspect::list_remote(&r, limit, after.as_deref(), json).await
            }
            MessagesCommand::Show { id, json, .. } => inspect::show_remote(&r, &id, json).await,
            MessagesCommand::Body { id, args, .. } => {
                let of = BodyOf::Message(sluice_ops::parse::parse_message_id(&id)?);
                body::write_remote(&r, of, &args).await
            }
            MessagesCommand::Tracking { message, json, .. } => {
                inspect::tracking_remote(&r, message.as_deref(), json).await
            }
        },
        Command::Suspended { command } => match *command {
            SuspendedCommand::List {
                filters, limit, json, ..
            } => suspended::list_remote(&r, &filters, limit, json).await,
            SuspendedCommand::Show { id, json, .. } => suspended::show_remote(&r, id, json).await,
            SuspendedCommand::Body { id, args, .. } => body::write_remote(&r, BodyOf::Suspended(id), &args).await,
            SuspendedCommand::Resume { target, dry_run, .. } => {
                suspended::act_remote(&r, &target, Op::Resume, dry_run).await
            }
            SuspendedCommand::Terminate { target, dry_run, .. } => {
                suspended::act_remote(&r, &target, Op::Terminate, dry_run).await
            }
            SuspendedCommand::Resubmit { target, changes, .. } => {
                suspended::resubmit_remote(&r, &target, &changes).await
            }
        },
        Command::Users { command } => users::users_remote(&r, command).await,
        Command::Tokens { command } => users::tokens_remote(&r, command).await,
        Command::Serve { .. }
        | Command::Check { .. }
        | Command::Reload { .. }
        | Command::Publish { .. }
        | Command::Bench { .. }
        | Command::Dev { .. }
        | Command::HostInstance { .. } => here("this command"),
    }
}

/// A token cancelled on SIGTERM or SIGINT. SIGHUP (a service manager's
/// reload) notifies `reload`, or without one is logged and ignored: the
/// signal's default would kill the process.
fn on_signal(reload: Option<Arc<Notify>>) -> CancellationToken {
    let token = CancellationToken::new();
    let t = token.clone();
    // Registered now, before anything runs: from here on SIGHUP cannot kill us.
    let signals = Signals::register();
    tokio::spawn(async move {
        signals.wait(reload).await;
        tracing::info!("signal received");
        t.cancel();
    });
    token
}

/// A usage error (exit status 2), printed as every error is:
/// `error[invalid_argument]: ...`; help and version as clap prints them.
fn usage_exit(e: clap::Error) -> ! {
    if !e.use_stderr() {
        e.exit();
    }
    let text = e.render().to_string();
    let text = text.strip_prefix("error: ").unwrap_or(&text);
    eprint!("error[{}]: {text}", errors::USAGE);
    std::process::exit(e.exit_code());
}

/// What clap cannot check: a selection is given, and a resubmission's edit
/// holds together. A usage error (exit status 2) before anything is opened.
fn check(cli: &Cli) -> Result<(), clap::Error> {
    let Command::Suspended { command } = &cli.command else {
        return Ok(());
    };
    let name = match &**command {
        SuspendedCommand::Resume { .. } => "resume",
        SuspendedCommand::Resubmit { .. } => "resubmit",
        _ => "terminate",
    };
    let usage = |message: String| {
        let mut cli = Cli::command();
        let sub = cli
            .find_subcommand_mut("suspended")
            .and_then(|s| s.find_subcommand_mut(name).cloned());
        match sub {
            Some(sub) => sub
                .bin_name(format!("sluice suspended {name}"))
                .error(clap::error::ErrorKind::ArgumentConflict, message),
            None => cli.error(clap::error::ErrorKind::ArgumentConflict, message),
        }
    };
    match &**command {
        SuspendedCommand::Resume { target, .. } | SuspendedCommand::Terminate { target, .. } => {
            target.selection().map(|_| ()).map_err(usage)
        }
        SuspendedCommand::Resubmit { target, changes, .. } => {
            target.selection().map_err(usage)?;
            changes.edit(target).map(|_| ()).map_err(usage)
        }
        _ => Ok(()),
    }
}

/// The configuration, valid, for a command that runs a node or changes the box.
fn load(path: &std::path::Path) -> anyhow::Result<Config> {
    Ok(Config::load(path)?)
}

/// [`load_for_reading`] of the configuration a command needs.
fn reading(config: Option<PathBuf>) -> anyhow::Result<Config> {
    load_for_reading(&need(config)?)
}

/// The configuration for a command that only reads the box: one that is
/// invalid elsewhere still serves, with a warning naming its first
/// problems, as long as the data directory and the store can be found (a
/// configuration broken during an incident must not block looking).
fn load_for_reading(path: &std::path::Path) -> anyhow::Result<Config> {
    let read = Config::load_for_reading(path)?;
    if let Some(e) = &read.problems {
        check::warn_invalid(path, e, &read.config);
    }
    Ok(read.config)
}

async fn serve(config_path: PathBuf) -> anyhow::Result<()> {
    let config = load(&config_path)?;
    config.log_warnings();
    let reload = Arc::new(Notify::new());
    let control = sluice_host::Control {
        shutdown: on_signal(Some(reload.clone())),
        reload,
    };
    sluice_host::serve(config, config_path.clone(), control)
        .await
        .with_context(|| format!("running the node of {}", config_path.display()))
}

/// The signals a running command answers.
struct Signals {
    term: Option<tokio::signal::unix::Signal>,
    int: Option<tokio::signal::unix::Signal>,
    hup: Option<tokio::signal::unix::Signal>,
}

impl Signals {
    fn register() -> Signals {
        use tokio::signal::unix::{SignalKind, signal};
        Signals {
            term: signal(SignalKind::terminate()).ok(),
            int: signal(SignalKind::interrupt()).ok(),
            hup: signal(SignalKind::hangup()).ok(),
        }
    }

    /// Until SIGTERM or SIGINT; each SIGHUP notifies `reload` (or is
    /// logged and ignored without one).
    async fn wait(mut self, reload: Option<Arc<Notify>>) {
        async fn next(s: &mut Option<tokio::signal::unix::Signal>) {
            match s {
                Some(s) => {
                    if s.recv().await.is_none() {
                        std::future::pending::<()>().await;
                    }
                }
                None => std::future::pending::<()>().await,
            }
        }
        if self.term.is_none() || self.int.is_none() {
            let _ = tokio::signal::ctrl_c().await;
            return;
        }
        loop {
            tokio::select! {
                _ = next(&mut self.term) => return,
                _ = next(&mut self.int) => return,
                _ = next(&mut self.hup) => match &reload {
                    Some(reload) => {
                        tracing::info!("SIGHUP received: reloading the configuration");
                        reload.notify_one();
                    }
                    None => tracing::info!("SIGHUP received and ignored"),
                },
            }
        }
    }
}
