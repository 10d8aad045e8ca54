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
use sluice_model::{Filter, Key};
use sluice_msgbox::{Clock, MessageBox, SuspendedQuery, SystemClock};
use sluice_ops::suspended::{self as ops, Action, Edit, Event, Outcome, Selection, Summary};
use sluice_ops::{ErrorCode, parse};

use crate::inspect::{ms_to_text, number, print_context, print_parts, some_text, stop_on_error, text_of, time_of};
use crate::remote::Remote;
use serde_json::Value;

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
    /// The filters as the REST API takes them (query parameters, or a
    /// bulk action's JSON keys): times as RFC 3339, the context filter as
    /// written (the API leaves fault messages out as this does).
    pub fn params(&self) -> Vec<(&'static str, String)> {
        let mut p = Vec::new();
        let mut put = |k: &'static str, v: Option<String>| {
            if let Some(v) = v {
                p.push((k, v));
            }
        };
        put("port", self.port.clone());
        put("location", self.location.clone());
        put("stage", self.stage.clone());
        put("error", self.error.clone());
        put("since", self.since.map(ms_to_text));
        put("until", self.until.map(ms_to_text));
        put("where", self.context.as_ref().map(|f| f.to_string()));
        if self.include_faults {
            p.push(("include_faults", "true".into()));
        }
        p
    }

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
    pub set: Vec<(Key, sluice_model::Value)>,
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

/// The header of `suspended list`.
fn list_header() -> String {
    format!(
        "{:<8} {:<26}  {:<24}  {:<24} {:<20} {:>8}  {:<9}  REASON",
        "ID", "MESSAGE", "SUSPENDED", "PORT/LOCATION", "STAGE/COMPONENT", "ATTEMPTS", "RESUMABLE"
    )
}

/// A row of `suspended list`, from an entry as answers show it
/// (`SuspendedInfo` serialized, or the REST API's JSON).
fn list_row(s: &Value) -> String {
    format!(
        "#{:<7} {}  {:<24}  {:<24} {:<20} {:>8}  {:<9}  {}",
        number(s, "id"),
        text_of(s, "message_id"),
        time_of(s, "suspended_at"),
        crate::inspect::place(some_text(s, "subscriber"), some_text(s, "location")),
        format!("{}/{}", text_of(s, "stage"), text_of(s, "component")),
        number(s, "attempts"),
        if s["resumable"].as_bool() == Some(true) {
            "yes"
        } else {
            "no"
        },
        crate::inspect::printable(text_of(s, "reason"))
    )
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
            serde_json::to_value(&s).map(|v| {
                let header = if n == 0 {
                    format!("{}\n", list_header())
                } else {
                    String::new()
                };
                format!("{header}{}\n", list_row(&v))
            })
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
    list_end(n, more, json, &query);
    Ok(())
}

/// The last line of a list: the JSON array's end, or what was not shown.
fn list_end(n: u64, more: bool, json: bool, query: &SuspendedQuery) {
    if json {
        outln!("{}]", if n == 0 { "[" } else { "" });
    } else if more {
        outln!("(the first {n} shown; more match: raise --limit)");
    } else if n == 0 && ops::has_conditions(query) {
        outln!("(no suspended message matches {})", ops::describe(query));
    } else if n == 0 {
        outln!("(no suspended messages)");
    }
}

/// `suspended list` through the node's REST API, a page at a time.
pub async fn list_remote(r: &Remote, filters: &Filters, limit: Option<u64>, json: bool) -> anyhow::Result<()> {
    let mut n = 0u64;
    let mut more = false;
    let mut after: Option<i64> = None;
    'pages: loop {
        let mut query = filters.params();
        // One more than is left to show: whether more match.
        let page_size = limit.map_or(1000, |l| (l - n).saturating_add(1).min(1000));
        query.push(("limit", page_size.to_string()));
        if let Some(a) = after {
            query.push(("after", a.to_string()));
        }
        let page = r.get("/api/v1/suspended", &query, "listing suspended entries").await?;
        for s in page["items"].as_array().into_iter().flatten() {
            if limit.is_some_and(|limit| n == limit) {
                more = true;
                break 'pages;
            }
            if json {
                out!("{}{s}", if n == 0 { "[" } else { "," });
            } else {
                if n == 0 {
                    outln!("{}", list_header());
                }
                outln!("{}", list_row(s));
            }
            n += 1;
        }
        match page["next"].as_i64() {
            Some(next) => after = Some(crate::remote::advance(&after, next)?),
            None => break,
        }
    }
    list_end(n, more, json, &filters.query());
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
    print_entry(&serde_json::to_value(&shown)?);
    Ok(())
}

/// `suspended show` through the node's REST API.
pub async fn show_remote(r: &Remote, id: i64, json: bool) -> anyhow::Result<()> {
    let doing = format!("reading suspended entry {id}");
    let shown = r.get(&format!("/api/v1/suspended/{id}"), &[], &doing).await?;
    if json {
        outln!("{}", serde_json::to_string_pretty(&shown)?);
        return Ok(());
    }
    print_entry(&shown);
    Ok(())
}

/// An entry as `sluice_ops::suspended::SuspendedDetail` serializes it.
fn print_entry(s: &Value) {
    outln!("suspended   #{}", number(s, "id"));
    outln!("message     {}", text_of(s, "message_id"));
    outln!("at          {}", time_of(s, "suspended_at"));
    outln!("stage       {}", text_of(s, "stage"));
    outln!("component   {}", text_of(s, "component"));
    let port = some_text(s, "subscriber");
    if let Some(port) = port {
        outln!("send port   {port}");
    }
    if let Some(location) = some_text(s, "location") {
        outln!("location    {location}");
    }
    if let Some(transport) = some_text(s, "transport") {
        outln!("transport   {transport}");
    }
    outln!(
        "resumable   {}",
        match (s["resumable"].as_bool() == Some(true), port) {
            (true, _) => "yes",
            (false, Some(_)) => "no (its send port cannot send it as it is: resubmit with --set, or terminate)",
            (false, None) => "no (rejected on receipt: resubmit with --body, or terminate)",
        }
    );
    outln!("reason      {}", text_of(s, "reason"));
    outln!("attempts    {}", number(s, "attempts"));
    for a in s["history"].as_array().into_iter().flatten() {
        let transport = some_text(a, "transport").map(|t| format!(" [{t}]")).unwrap_or_default();
        outln!(
            "  {:>3}  {}{transport}  {}",
            number(a, "attempt"),
            time_of(a, "at"),
            text_of(a, "error")
        );
    }
    print_context(&s["context"]);
    print_parts(&s["parts"]);
}

/// How a bulk run reports: a progress bar on a terminal, else a line per
/// entry (and per stretch of entries taken by another operation before the
/// run reached them), so that the lines account for every entry. The
/// lines are the same whether the run is here or on a node (`--server`):
/// each event as `sluice_ops::suspended::Event` serializes it.
struct Report {
    bar: Option<ProgressBar>,
    stop: Arc<AtomicBool>,
    /// Named entries a dry run did not find.
    missing: u64,
}

/// How an entry's line is shown: done (on stdout, or only the bar moves),
/// set aside (skipped or taken: always a line on stdout), failed (stderr).
#[derive(PartialEq)]
enum Kind {
    Done,
    Aside,
    Failed,
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
        Report { bar, stop, missing: 0 }
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

    fn matched(&self, total: u64) {
        if let Some(bar) = &self.bar {
            bar.set_length(total);
        }
    }

    fn entry(&self, done: Option<u64>, line: &str, kind: Kind) {
        match kind {
            Kind::Failed => self.complain(line),
            Kind::Aside => self.say(line),
            Kind::Done if self.bar.is_none() => outln!("{line}"),
            Kind::Done => self.say(line),
        }
        if let (Some(bar), Some(done)) = (&self.bar, done) {
            bar.set_position(done);
        }
    }

    fn stopped(&self) -> ControlFlow<()> {
        if self.stop.load(Ordering::SeqCst) {
            ControlFlow::Break(())
        } else {
            ControlFlow::Continue(())
        }
    }

    /// A run here: the outcome as the operations library says it.
    fn event(&mut self, event: Event<'_>) -> ControlFlow<()> {
        match event {
            Event::Matched { total } => self.matched(total),
            Event::Entry { done, id, outcome, .. } => {
                let kind = match outcome {
                    Outcome::Failed(_) | Outcome::Missing => Kind::Failed,
                    Outcome::Skipped(_) | Outcome::Taken => Kind::Aside,
                    _ => Kind::Done,
                };
                // Done entries only move the bar on a terminal.
                if kind == Kind::Done && self.bar.is_some() {
                    if let Some(bar) = &self.bar {
                        bar.set_position(done);
                    }
                } else {
                    self.entry(Some(done), &format!("#{id}: {outcome}"), kind);
                }
            }
            Event::Taken { done, taken, .. } => self.entry(Some(done), &taken.to_string(), Kind::Aside),
        }
        self.stopped()
    }

    /// A line of a bulk action's answer (the REST API's NDJSON, or a dry
    /// run here): its summary when it is the last, an error when the run
    /// failed part-way.
    fn line(&mut self, v: &Value) -> anyhow::Result<Option<Value>> {
        let done = v["done"].as_u64();
        match text_of(v, "event") {
            "matched" => self.matched(number(v, "total").max(0) as u64),
            "entry" if v.get("would").is_some() => {
                let e = &v["entry"];
                self.say(&format!(
                    "#{}: would {} ({}, {}/{}: {})",
                    number(v, "id"),
                    text_of(v, "would"),
                    crate::inspect::place(some_text(e, "subscriber"), some_text(e, "location")),
                    text_of(e, "stage"),
                    text_of(e, "component"),
                    crate::inspect::printable(text_of(e, "reason"))
                ));
            }
            "entry" => {
                // A run's entry carries its outcome as an object; a dry
                // run's entry that does not exist is the outcome itself.
                let outcome = if v["outcome"].is_object() { &v["outcome"] } else { v };
                let kind = match text_of(outcome, "outcome") {
                    "failed" => Kind::Failed,
                    "skipped" | "taken" => Kind::Aside,
                    _ => Kind::Done,
                };
                if kind == Kind::Failed && done.is_none() {
                    self.missing += 1;
                }
                let line = format!("#{}: {}", number(v, "id"), outcome_text(outcome));
                if kind == Kind::Done && self.bar.is_some() {
                    if let (Some(bar), Some(done)) = (&self.bar, done) {
                        bar.set_position(done);
                    }
                } else {
                    self.entry(done, &line, kind);
                }
            }
            "taken" => {
                let t = &v["taken"];
                let line = if number(t, "of") == 1 {
                    format!("#{}: {}", number(t, "first"), ops::TAKEN)
                } else {
                    format!(
                        "#{}..#{}: {} of {} {}",
                        number(t, "first"),
                        number(t, "last"),
                        number(t, "count"),
                        number(t, "of"),
                        ops::TAKEN
                    )
                };
                self.entry(done, &line, Kind::Aside);
            }
            "summary" => return Ok(Some(v.clone())),
            "error" => {
                return Err(crate::remote::ApiError {
                    status: reqwest::StatusCode::INTERNAL_SERVER_ERROR,
                    code: text_of(v, "code").to_string(),
                    message: format!("the run stopped: {}", text_of(v, "reason")),
                }
                .into());
            }
            other => self.complain(&format!(
                "(an event this version does not know: `{}`)",
                other.escape_default()
            )),
        }
        Ok(None)
    }

    fn finish(&self) {
        if let Some(bar) = &self.bar {
            bar.finish_and_clear();
        }
    }
}

/// An outcome as `sluice_ops::suspended::Outcome` serializes it, in the
/// words of its `Display` (a named entry that does not exist: the reason
/// alone).
fn outcome_text(o: &Value) -> String {
    let routed = |r: &Value| match (r.get("queued"), r.get("suspended")) {
        (Some(q), _) => format!(
            "-> {}",
            q.as_array()
                .into_iter()
                .flatten()
                .filter_map(Value::as_str)
                .collect::<Vec<_>>()
                .join(", ")
        ),
        (None, Some(s)) => format!("no subscriber; suspended again as #{}", number(s, "suspended_id")),
        (None, None) => String::new(),
    };
    match text_of(o, "outcome") {
        "resumed" => format!("resumed {}", routed(&o["routed"])),
        "resubmitted" => format!("resubmitted as {} {}", text_of(o, "message_id"), routed(&o["routed"])),
        "terminated" => "terminated".to_string(),
        "skipped" => format!("skipped, {}", text_of(o, "reason")),
        "taken" => ops::TAKEN.to_string(),
        "failed" if text_of(o, "code") == "not_found" => text_of(o, "reason").to_string(),
        "failed" => format!("failed: {}", text_of(o, "reason")),
        other => other.to_string(),
    }
}

/// Resume, resubmit or terminate: one line per entry (or a progress bar),
/// a summary, and an error if any entry failed (a named one that does not
/// exist included; one taken by another operation is not a failure). A dry
/// run says which entries would be acted on, and changes nothing.
pub async fn act(
    config: &Config,
    target: &Target,
    action: Action,
    body: Option<PathBuf>,
    dry_run: bool,
) -> anyhow::Result<()> {
    let selection = target.selection().map_err(|e| anyhow::anyhow!(e))?;
    if dry_run {
        let b = open_read(config)?;
        return dry(&*b, &selection, action.op()).await;
    }
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

/// A dry run here: the lines the REST API's dry run answers, printed as
/// they are.
async fn dry(b: &dyn MessageBox, selection: &Selection, op: ops::Op) -> anyhow::Result<()> {
    let mut report = Report::new(Arc::new(AtomicBool::new(false)));
    report.bar = None;
    let would = op.name();
    let mut matched = 0u64;
    let entry = |info: &sluice_msgbox::SuspendedInfo| serde_json::json!({"event": "entry", "id": info.id, "would": would, "entry": info});
    match selection {
        Selection::Ids(ids) => {
            for &id in ids {
                let line = match b
                    .suspended(id)
                    .await
                    .with_context(|| format!("reading suspended entry {id}"))?
                {
                    Some(info) => {
                        matched += 1;
                        entry(&info)
                    }
                    None => serde_json::json!({"event": "entry", "id": id, "outcome": "failed",
                        "code": "not_found", "reason": format!("suspended entry {id} does not exist")}),
                };
                report.line(&line)?;
            }
        }
        Selection::Query(q) => {
            let mut pages = ops::Pages::new(b, q);
            while let Some(page) = pages.next().await? {
                for info in &page {
                    matched += 1;
                    report.line(&entry(info))?;
                }
            }
            if matched == 0 && ops::has_conditions(q) {
                return Err(sluice_ops::OpsError::NothingMatches {
                    conditions: ops::describe(q),
                }
                .into());
            }
        }
    }
    let summary = serde_json::json!({"event": "summary", "dry_run": true, "matched": matched});
    finish_dry(&report, &summary, op)
}

/// The last line of a dry run, and its exit status: named entries that do
/// not exist fail it.
fn finish_dry(report: &Report, summary: &Value, op: ops::Op) -> anyhow::Result<()> {
    let matched = number(summary, "matched");
    if matched == 0 && report.missing == 0 {
        outln!("(no suspended messages)");
    } else {
        outln!("(dry run: {matched} would be {}; nothing was changed)", op.done());
    }
    if report.missing > 0 {
        return Err(sluice_ops::OpsError::NotFound(format!(
            "{} of the named suspended entries do not exist",
            report.missing
        ))
        .into());
    }
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

/// Ctrl-C stops a bulk run after the current entry: from the moment this
/// is called, instead of killing the process. Dropped, it stops watching.
struct CtrlC(tokio::task::JoinHandle<()>);

impl CtrlC {
    fn watch(stop: Arc<AtomicBool>) -> anyhow::Result<CtrlC> {
        let mut interrupt = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::interrupt())
            .context("installing the Ctrl-C handler")?;
        Ok(CtrlC(tokio::spawn(async move {
            if interrupt.recv().await.is_some() {
                stop.store(true, Ordering::SeqCst);
            }
        })))
    }
}

impl Drop for CtrlC {
    fn drop(&mut self) {
        self.0.abort();
    }
}

async fn bulk(b: &dyn MessageBox, selection: &Selection, action: &Action) -> anyhow::Result<()> {
    let stop = Arc::new(AtomicBool::new(false));
    let _watch = CtrlC::watch(stop.clone())?;
    let mut report = Report::new(stop.clone());
    let actor = crate::users::cli_actor();
    let answers = ops::Answers(|event: ops::Event<'_>| report.event(event));
    let result = ops::run_audited(b, selection, action, &actor, &SystemClock, answers).await;
    report.finish();
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

// ---- through the REST API (`--server`) -------------------------------------

/// Resume or terminate through the node's REST API: the bulk endpoint
/// (NDJSON, one line per entry as the run goes), for ids as for filters;
/// Ctrl-C hangs up, which stops the node's run after the entry in hand.
pub async fn act_remote(r: &Remote, target: &Target, op: ops::Op, dry_run: bool) -> anyhow::Result<()> {
    let mut request = serde_json::Map::new();
    if !target.ids.is_empty() {
        request.insert("ids".into(), target.ids.clone().into());
    } else if target.all {
        request.insert("all".into(), true.into());
    }
    for (k, v) in target.filters.params() {
        let v = if k == "include_faults" {
            Value::Bool(true)
        } else {
            Value::String(v)
        };
        request.insert(k.into(), v);
    }
    if dry_run {
        request.insert("dry_run".into(), true.into());
    }
    let doing = format!("{} suspended entries", op.doing());
    let path = format!("/api/v1/suspended/{}", op.name());
    // Installed before the request: from now on Ctrl-C hangs up instead
    // of killing the process.
    let mut interrupt = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::interrupt())
        .context("installing the Ctrl-C handler")?;
    let mut lines = r.post_lines(&path, &Value::Object(request), &doing).await?;
    let mut report = Report::new(Arc::new(AtomicBool::new(false)));
    if dry_run {
        report.bar = None;
    }
    let summary = loop {
        let line = tokio::select! {
            line = lines.next() => line,
            _ = interrupt.recv() => {
                report.finish();
                return Err(Interrupted.into());
            }
        };
        let Some(line) = line? else {
            report.finish();
            return Err(anyhow::anyhow!(
                "{doing} on {}: the answer ended before the run's summary (the node may have stopped); \
                 run the same command again to continue",
                r.server()
            ));
        };
        if let Some(summary) = report.line(&line)? {
            break summary;
        }
    };
    report.finish();
    if dry_run {
        return finish_dry(&report, &summary, op);
    }
    finish_remote(&summary["summary"], op)
}

/// A run's summary as the API answered it (`Summary` serialized), said as
/// [`finish`] says it.
fn finish_remote(s: &Value, op: ops::Op) -> anyhow::Result<()> {
    let count = |k: &str| number(s, k).max(0) as u64;
    let (matched, done, failed, skipped, taken) = (
        count("matched"),
        count("done"),
        count("failed"),
        count("skipped"),
        count("taken"),
    );
    if matched == 0 {
        outln!("(no suspended messages)");
        return Ok(());
    }
    let mut line = format!(
        "{} {done} of {matched}; {failed} failed, {skipped} skipped, {taken} {}",
        op.done(),
        ops::TAKEN
    );
    let interrupted = s["interrupted"].as_bool() == Some(true);
    if interrupted {
        line.push_str(&format!(
            "; stopped after {} of {matched}",
            done + failed + skipped + taken
        ));
    }
    outln!("{line}");
    if interrupted {
        return Err(Interrupted.into());
    }
    if failed == 0 {
        return Ok(());
    }
    // Their code when they all failed alike (as far as the kept ones tell).
    let codes: std::collections::BTreeSet<&str> = s["failures"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|f| text_of(f, "code"))
        .collect();
    let code = match (codes.len(), codes.first()) {
        (1, Some(code)) => ErrorCode::ALL
            .into_iter()
            .find(|c| c.as_str() == *code)
            .unwrap_or(ErrorCode::EntriesFailed),
        _ => ErrorCode::EntriesFailed,
    };
    Err(sluice_ops::OpsError::EntriesFailed {
        op,
        failed,
        matched,
        done,
        skipped,
        taken,
        code,
    }
    .into())
}

/// Resubmit through the node's REST API, one entry at a time (the API has
/// no bulk resubmission): with the edit, and the new body streamed from
/// its file or standard input.
pub async fn resubmit_remote(r: &Remote, target: &Target, changes: &Changes) -> anyhow::Result<()> {
    if target.ids.is_empty() {
        return Err(crate::Usage(
            "through --server, resubmit takes the suspended entries' ids (the REST API resubmits one entry at a \
             time): find them with `sluice suspended list` and the same filters"
                .into(),
        )
        .into());
    }
    let set: Vec<String> = changes.set.iter().map(|(k, v)| property_text(k, v)).collect();
    let remove: Vec<String> = changes.remove.iter().map(|k| k.to_string()).collect();
    if let Some(path) = &changes.body {
        // Checked before anything ran: exactly one id.
        let id = target.ids[0];
        let reader = crate::publish::body_reader(Some(path)).await?;
        let mut query: Vec<(&str, String)> = set.iter().map(|s| ("set", s.clone())).collect();
        query.extend(remove.iter().map(|k| ("remove", k.clone())));
        let doing = format!("resubmitting suspended entry {id} with a new body");
        let acted = r
            .upload(&format!("/api/v1/suspended/{id}/resubmit"), &query, reader, &doing)
            .await?;
        outln!("#{id}: {}", outcome_text(&acted));
        return Ok(());
    }
    let edit = serde_json::json!({"set": set, "remove": remove});
    let (mut done, mut failed) = (0u64, 0u64);
    let many = target.ids.len() > 1;
    for &id in &target.ids {
        let doing = format!("resubmitting suspended entry {id}");
        match r.post(&format!("/api/v1/suspended/{id}/resubmit"), &edit, &doing).await {
            Ok(acted) => {
                done += 1;
                outln!("#{id}: {}", outcome_text(&acted));
            }
            Err(e) if many && !refused(&e) => {
                failed += 1;
                eprintln!("#{id}: failed: {e:#}");
            }
            Err(e) => return Err(e),
        }
    }
    if many {
        let matched = target.ids.len() as u64;
        outln!(
            "resubmitted {done} of {matched}; {failed} failed, 0 skipped, 0 {}",
            ops::TAKEN
        );
        if failed > 0 {
            return Err(sluice_ops::OpsError::EntriesFailed {
                op: ops::Op::Resubmit,
                failed,
                matched,
                done,
                skipped: 0,
                taken: 0,
                code: ErrorCode::EntriesFailed,
            }
            .into());
        }
    }
    Ok(())
}

/// Whether the API refused the caller (no use going on to the next entry)
/// or could not be reached.
fn refused(e: &anyhow::Error) -> bool {
    e.chain().any(|c| {
        c.is::<crate::remote::Unreachable>()
            || c.downcast_ref::<crate::remote::ApiError>()
                .is_some_and(|a| matches!(a.code.as_str(), "unauthenticated" | "forbidden" | "rate_limited"))
    })
}

/// A property as `--set` and the API write it: `KEY=TYPE:VALUE`.
fn property_text(key: &Key, value: &sluice_model::Value) -> String {
    match value {
        sluice_model::Value::Bytes(_) => format!("{key}=bytes:hex:{}", value.to_text()),
        v => format!("{key}={}:{}", v.value_type(), v.to_text()),
    }
}
