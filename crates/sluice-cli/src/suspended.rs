//! `sluice suspended`: list, show, resume, resubmit and terminate suspended
//! messages, beside a running node or not. The work is done by
//! [`sluice_ops::suspended`]; this is the command line around it: flags,
//! output, a progress bar, Ctrl-C.

use std::io::{IsTerminal, Write};
use std::ops::ControlFlow;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use crate::store::{open_read, open_write};
use anyhow::Context as _;
use clap::Args;
use indicatif::{ProgressBar, ProgressStyle};
use sluice_host::Config;
use sluice_model::{Filter, Key, Value};
use sluice_msgbox::{Clock, MessageBox, SuspendedInfo, SuspendedQuery, SystemClock};
use sluice_ops::parse;
use sluice_ops::suspended::{self as ops, Action, Edit, Event, Outcome, Selection, Summary};

use crate::inspect::{ms_to_text, print_context, print_parts, stop_on_error};

/// Conditions that select suspended entries (every one given must match).
#[derive(Args, Debug, Clone, Default)]
#[group(id = "filters", multiple = true)]
pub struct Filters {
    /// The send port it was going to.
    #[arg(long)]
    pub port: Option<String>,
    /// The receive location it came in by.
    #[arg(long)]
    pub location: Option<String>,
    /// Where it failed: `transmit`, `route`, `unsubscribe`, `decode`, `disassemble`...
    #[arg(long)]
    pub stage: Option<String>,
    /// Text the error contains (any case).
    #[arg(long, value_name = "TEXT")]
    pub error: Option<String>,
    /// Suspended at or after: RFC 3339 (2026-11-22T10:00:00Z) or a duration ago (90m, 2h, 7d).
    #[arg(long, value_name = "TIME", value_parser = time_arg)]
    pub since: Option<i64>,
    /// Suspended before: RFC 3339 or a duration ago.
    #[arg(long, value_name = "TIME", value_parser = time_arg)]
    pub until: Option<i64>,
    /// A filter on the message's context, as subscriptions write it
    /// (`order.customer == "ACME"`); it sees every property, promoted or not.
    #[arg(long = "where", value_name = "FILTER", value_parser = filter_arg)]
    pub context: Option<Filter>,
    /// With --where: select fault messages too. Without it, --where leaves
    /// fault messages out: they carry their failed message's properties,
    /// so a filter meant for the originals would match their faults too.
    #[arg(long, requires = "context")]
    pub include_faults: bool,
}

impl Filters {
    fn query(&self) -> SuspendedQuery {
        SuspendedQuery {
            port: self.port.clone(),
            location: self.location.clone(),
            stage: self.stage.clone(),
            error_contains: self.error.clone(),
            since: self.since,
            until: self.until,
            context: match &self.context {
                Some(f) if !self.include_faults => Some(ops::without_faults(f.clone())),
                f => f.clone(),
            },
            resumable: None,
        }
    }
}

/// Which entries to act on: ids, `--all`, or filter flags.
#[derive(Args, Debug, Clone)]
pub struct Target {
    /// Suspended entry ids (the `#` numbers of `suspended list`); one that
    /// does not exist is a failure (exit status 1).
    #[arg(value_name = "ID", value_parser = id_arg, conflicts_with_all = ["all", "filters"])]
    pub ids: Vec<i64>,
    /// Every suspended entry. Entries another operation (e.g. another bulk
    /// run at the same time) resumes, resubmits or terminates first are
    /// counted as "taken by another operation", not as failures: with none
    /// failed, the exit status is 0.
    #[arg(long, conflicts_with = "filters")]
    pub all: bool,
    #[command(flatten)]
    pub filters: Filters,
}

impl Target {
    /// The selection, or why there is none (a usage error).
    pub fn selection(&self) -> Result<Selection, String> {
        let query = self.filters.query();
        if !self.ids.is_empty() {
            Ok(Selection::Ids(self.ids.clone()))
        } else if self.all || ops::has_conditions(&query) {
            Ok(Selection::Query(query))
        } else {
            Err("name the suspended entries (their # numbers), select them with filter flags, or pass --all".into())
        }
    }
}

/// What `resubmit` changes.
#[derive(Args, Debug, Clone)]
pub struct Changes {
    /// Set a property (added promoted, or replaced keeping its promotion),
    /// e.g. `order.id=string:A1`, `n=int:-5`, `t=timestamp:2026-11-22T10:00:00Z`
    /// (the syntax of `sluice publish --prop`).
    #[arg(long = "set", value_name = "KEY=TYPE:VALUE", value_parser = parse::parse_property)]
    pub set: Vec<(Key, Value)>,
    /// Remove a property (the message must have it).
    #[arg(long = "remove", value_name = "KEY", value_parser = parse::parse_key)]
    pub remove: Vec<Key>,
    /// A new body: a file, or `-` for stdin (only with exactly one id).
    #[arg(long, value_name = "FILE")]
    pub body: Option<PathBuf>,
}

impl Changes {
    /// The edit, checked against the target: a usage error if it cannot be.
    pub fn edit(&self, target: &Target) -> Result<Edit, String> {
        if self.body.is_some() && target.ids.len() != 1 {
            return Err("--body gives one message a new body: name exactly one suspended entry".into());
        }
        Edit::new(self.set.clone(), self.remove.clone()).map_err(|e| e.to_string())
    }
}

fn time_arg(text: &str) -> Result<i64, String> {
    parse::parse_time(text, SystemClock.now_ms()).map_err(|e| e.to_string())
}

fn filter_arg(text: &str) -> Result<Filter, String> {
    parse::parse_filter(text).map_err(|e| e.to_string())
}

pub fn id_arg(text: &str) -> Result<i64, String> {
    text.trim_start_matches('#')
        .parse()
        .map_err(|_| format!("`{text}` is not a suspended entry id (the # number of `sluice suspended list`)"))
}

/// Ctrl-C during a bulk run: the run stops after the current entry.
#[derive(Debug)]
pub struct Interrupted;

impl std::fmt::Display for Interrupted {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("interrupted; run the same command again to continue")
    }
}

impl std::error::Error for Interrupted {}

/// Where it failed, for a table: `port out`, `location in-folder` or `-`.
fn place(s: &SuspendedInfo) -> String {
    crate::inspect::place(s.subscriber.as_deref(), s.location.as_deref())
}

/// The entries `filters` select, the oldest first; with `limit`, at most
/// that many (and a last line saying when more match).
pub async fn list(config: &Config, filters: &Filters, limit: Option<u64>, json: bool) -> anyhow::Result<()> {
    let b = open_read(config)?;
    let query = filters.query();
    let mut out = std::io::stdout().lock();
    let mut n = 0u64;
    let mut more = false;
    let mut failed: Option<std::io::Error> = None;
    // A page at a time, printed as it comes: memory does not grow with the list.
    ops::select(&*b, &Selection::Query(query.clone()), |s| {
        if limit.is_some_and(|limit| n == limit) {
            more = true;
            return ControlFlow::Break(());
        }
        let line = if json {
            serde_json::to_string(&s).map(|j| format!("{}{j}", if n == 0 { "[" } else { "," }))
        } else {
            let header = if n == 0 {
                format!(
                    "{:<8} {:<26}  {:<24}  {:<24} {:<20} {:>8}  {:<9}  REASON\n",
                    "ID", "MESSAGE", "SUSPENDED", "PORT/LOCATION", "STAGE/COMPONENT", "ATTEMPTS", "RESUMABLE"
                )
            } else {
                String::new()
            };
            Ok(format!(
                "{header}#{:<7} {}  {:<24}  {:<24} {:<20} {:>8}  {:<9}  {}\n",
                s.id,
                s.message_id,
                ms_to_text(s.suspended_at),
                place(&s),
                format!("{}/{}", s.stage, s.component),
                s.attempts,
                if s.resumable { "yes" } else { "no" },
                crate::inspect::printable(&s.reason)
            ))
        };
        n += 1;
        let written = line
            .map_err(std::io::Error::other)
            .and_then(|l| out.write_all(l.as_bytes()));
        stop_on_error(written, &mut failed)
    })
    .await?;
    if let Some(e) = failed {
        return Err(e).context("writing the list");
    }
    if n == 0
        && let Some(unknown) = unknown_place(config, &*b, filters).await?
    {
        return Err(sluice_ops::OpsError::NotFound(unknown).into());
    }
    if json {
        writeln!(out, "{}]", if n == 0 { "[" } else { "" })?;
    } else if more {
        writeln!(out, "(the first {n} shown; more match: raise --limit)")?;
    } else if n == 0 && ops::has_conditions(&query) {
        writeln!(out, "(no suspended message matches {})", ops::describe(&query))?;
    } else if n == 0 {
        writeln!(out, "(no suspended messages)")?;
    }
    Ok(())
}

/// Why the `--port` or `--location` of a listing that found nothing names
/// nothing at all (a typo, not an empty list), if it does: no such send
/// port is configured or subscribed in the box, no such receive location
/// is configured.
async fn unknown_place(config: &Config, b: &dyn MessageBox, filters: &Filters) -> anyhow::Result<Option<String>> {
    if let Some(port) = &filters.port
        && !config.send_ports.contains_key(port)
    {
        let subscriptions = b.subscriptions().await.context("reading the subscriptions")?;
        if !subscriptions.iter().any(|s| &s.subscriber == port) {
            let known: Vec<&str> = config.send_ports.keys().map(String::as_str).collect();
            return Ok(Some(format!(
                "no send port `{port}` is configured or known in the box (send ports: {})",
                known.join(", ")
            )));
        }
    }
    if let Some(location) = &filters.location {
        let known: Vec<&str> = config
            .receive_ports
            .values()
            .flat_map(|p| p.locations.keys().map(String::as_str))
            .collect();
        if !known.contains(&location.as_str()) {
            return Ok(Some(format!(
                "no receive location `{location}` is configured (receive locations: {})",
                known.join(", ")
            )));
        }
    }
    Ok(None)
}

pub async fn show(config: &Config, id: i64, json: bool) -> anyhow::Result<()> {
    let b = open_read(config)?;
    let shown = ops::show(&*b, id).await?;
    if json {
        outln!("{}", serde_json::to_string_pretty(&shown)?);
        return Ok(());
    }
    let s = &shown.entry;
    outln!("suspended   #{}", s.id);
    outln!("message     {}", s.message_id);
    outln!("at          {}", ms_to_text(s.suspended_at));
    outln!("stage       {}", s.stage);
    outln!("component   {}", s.component);
    if let Some(port) = &s.subscriber {
        outln!("send port   {port}");
    }
    if let Some(location) = &s.location {
        outln!("location    {location}");
    }
    if let Some(transport) = &s.transport {
        outln!("transport   {transport}");
    }
    outln!(
        "resumable   {}",
        match (s.resumable, &s.subscriber) {
            (true, _) => "yes",
            (false, Some(_)) => "no (its send port cannot send it as it is: resubmit with --set, or terminate)",
            (false, None) => "no (rejected on receipt: resubmit with --body, or terminate)",
        }
    );
    outln!("reason      {}", s.reason);
    outln!("attempts    {}", s.attempts);
    for a in &s.history {
        let transport = a.transport.as_deref().map(|t| format!(" [{t}]")).unwrap_or_default();
        outln!("  {:>3}  {}{transport}  {}", a.attempt, ms_to_text(a.at), a.error);
    }
    print_context(&shown.context);
    print_parts(&shown.parts);
    Ok(())
}

/// How a bulk run reports: a progress bar on a terminal, else a line per
/// entry (and per stretch of entries taken by another operation before the
/// run reached them), so that the lines account for every entry.
struct Report {
    bar: Option<ProgressBar>,
    stop: Arc<AtomicBool>,
}

impl Report {
    fn new(stop: Arc<AtomicBool>) -> Report {
        let bar = std::io::stderr().is_terminal().then(|| {
            let bar = ProgressBar::new(0);
            if let Ok(style) = ProgressStyle::with_template("{bar:40} {pos}/{len} {msg} [{elapsed}, {eta} left]") {
                bar.set_style(style);
            }
            bar
        });
        Report { bar, stop }
    }

    /// A line on stdout, or above the bar.
    fn say(&self, line: &str) {
        match &self.bar {
            Some(bar) => bar.println(line),
            None => outln!("{line}"),
        }
    }

    fn complain(&self, line: &str) {
        match &self.bar {
            Some(bar) => bar.suspend(|| eprintln!("{line}")),
            None => eprintln!("{line}"),
        }
    }

    fn event(&mut self, event: Event<'_>) -> ControlFlow<()> {
        match event {
            Event::Matched { total } => {
                if let Some(bar) = &self.bar {
                    bar.set_length(total);
                }
            }
            Event::Entry { done, id, outcome, .. } => {
                let line = format!("#{id}: {outcome}");
                match outcome {
                    Outcome::Failed(_) | Outcome::Missing => self.complain(&line),
                    Outcome::Skipped(_) | Outcome::Taken => self.say(&line),
                    _ if self.bar.is_none() => outln!("{line}"),
                    _ => {}
                }
                if let Some(bar) = &self.bar {
                    bar.set_position(done);
                }
            }
            Event::Taken { done, taken, .. } => {
                self.say(&taken.to_string());
                if let Some(bar) = &self.bar {
                    bar.set_position(done);
                }
            }
        }
        if self.stop.load(Ordering::SeqCst) {
            ControlFlow::Break(())
        } else {
            ControlFlow::Continue(())
        }
    }

    fn finish(&self) {
        if let Some(bar) = &self.bar {
            bar.finish_and_clear();
        }
    }
}

/// Resume, resubmit or terminate: one line per entry (or a progress bar),
/// a summary, and an error if any entry failed (a named one that does not
/// exist included; one taken by another operation is not a failure).
pub async fn act(config: &Config, target: &Target, action: Action, body: Option<PathBuf>) -> anyhow::Result<()> {
    let selection = target.selection().map_err(|e| anyhow::anyhow!(e))?;
    // The body is opened before the box: a missing file changes nothing.
    let mut reader = match &body {
        Some(path) => Some(crate::publish::body_reader(Some(path)).await?),
        None => None,
    };
    let b = open_write(config)?;
    let result = match (&mut reader, &action, &selection) {
        (Some(reader), Action::Resubmit(edit), Selection::Ids(ids)) if ids.len() == 1 => {
            one_with_body(&*b, ids[0], edit, reader.as_mut()).await
        }
        _ => bulk(&*b, &selection, &action).await,
    };
    let closed = b.close().await;
    result?;
    closed.context("closing the message box")?;
    Ok(())
}

async fn one_with_body(
    b: &dyn MessageBox,
    id: i64,
    edit: &Edit,
    body: &mut (dyn tokio::io::AsyncRead + Send + Unpin),
) -> anyhow::Result<()> {
    let done = ops::resubmit(b, id, edit, Some(body)).await;
    let target = format!("suspended {id}");
    let detail = format!("{edit}; new body");
    let done = crate::users::audited(b, "suspended.resubmit", &target, Some(detail), done).await?;
    outln!("#{id}: {}", Outcome::Resubmitted(done));
    Ok(())
}

async fn bulk(b: &dyn MessageBox, selection: &Selection, action: &Action) -> anyhow::Result<()> {
    let stop = Arc::new(AtomicBool::new(false));
    // Installed before the run starts: from now on Ctrl-C stops the run
    // after the current entry instead of killing the process.
    let mut interrupt = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::interrupt())
        .context("installing the Ctrl-C handler")?;
    let flag = stop.clone();
    let watcher = tokio::spawn(async move {
        if interrupt.recv().await.is_some() {
            flag.store(true, Ordering::SeqCst);
        }
    });
    let mut report = Report::new(stop.clone());
    let actor = crate::users::cli_actor();
    let answers = ops::Answers(|event: ops::Event<'_>| report.event(event));
    let result = ops::run_audited(b, selection, action, &actor, &SystemClock, answers).await;
    report.finish();
    watcher.abort();
    let summary = result?;
    finish(&summary)
}

/// The summary line, and the exit status it means: entries taken by
/// another operation are not failures.
fn finish(summary: &Summary) -> anyhow::Result<()> {
    if summary.matched == 0 {
        outln!("(no suspended messages)");
        return Ok(());
    }
    outln!("{summary}");
    if summary.interrupted {
        return Err(Interrupted.into());
    }
    match summary.error() {
        Some(e) => Err(e.into()),
        None => Ok(()),
    }
}
