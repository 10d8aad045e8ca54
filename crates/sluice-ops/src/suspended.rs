//! Operations on suspended messages: list, show, select, resume, resubmit
//! (with an edited context or a new body), terminate, one entry at a time or
//! in bulk. The CLI (`sluice suspended`) calls this, and so will the REST API
//! and the portal, so that every front end behaves the same way.
//!
//! Bulk work goes entry by entry, each entry one transaction of the box, and
//! never holds more than one page ([`PAGE`]) of entries in memory (and, over
//! a query, where each page of the count began and ended). A bulk run
//! can be stopped after any entry (its progress callback returns
//! [`ControlFlow::Break`]) and run again with the same selection: the rerun
//! finds only what is left. An entry that another operation (another bulk
//! run, an operator) resumed, resubmitted or terminated first counts as
//! *taken by another operation*, not as a failure of the run: every entry a
//! run matched ends in exactly one of done, failed, skipped or taken, whether
//! this run reached it before it went or not.
//!
//! Edits are checked before anything changes: an edit that does not parse,
//! or does not apply to an entry's message, leaves that entry as it was.

use std::fmt;
use std::ops::ControlFlow;

use serde::Serialize;
use sluice_content::{WriteOptions, write_part};
use sluice_model::{Context, Filter, Key, Predicate, Value};
use sluice_msgbox::{
    BoxError, FAULT_NS, MessageBox, Part, Resubmission, Resubmitted, Routed, SuspendedInfo, SuspendedQuery,
};
use tokio::io::AsyncRead;

use crate::error::read_error;
use crate::{ErrorCode, OpsError, ms_to_text};

/// Entries read from the box at a time.
pub const PAGE: usize = 1000;

/// Failures and skips a [`Summary`] keeps by id (the counts are exact).
pub const KEPT: usize = 100;

/// Why an entry is gone.
pub(crate) const GONE: &str = "does not exist (it was resumed, resubmitted or terminated, or never existed)";

/// What became of an entry another operation resumed, resubmitted or
/// terminated before this one could.
pub const TAKEN: &str = "taken by another operation";

/// Which suspended entries an operation is for.
#[derive(Debug, Clone)]
pub enum Selection {
    /// These entries (the `#` numbers of `sluice suspended list`).
    Ids(Vec<i64>),
    /// Every entry that matches (no conditions: every entry).
    Query(SuspendedQuery),
}

impl Selection {
    /// Every suspended entry.
    pub fn all() -> Selection {
        Selection::Query(SuspendedQuery::default())
    }
}

/// What is done to an entry.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub enum Op {
    Resume,
    Resubmit,
    Terminate,
}

impl Op {
    /// `resuming`, `resubmitting`, `terminating`.
    pub fn doing(self) -> &'static str {
        match self {
            Op::Resume => "resuming",
            Op::Resubmit => "resubmitting",
            Op::Terminate => "terminating",
        }
    }
    /// `resume`, `resubmit`, `terminate`.
    pub fn name(self) -> &'static str {
        match self {
            Op::Resume => "resume",
            Op::Resubmit => "resubmit",
            Op::Terminate => "terminate",
        }
    }
    /// `resumed`, `resubmitted`, `terminated`.
    pub fn done(self) -> &'static str {
        match self {
            Op::Resume => "resumed",
            Op::Resubmit => "resubmitted",
            Op::Terminate => "terminated",
        }
    }
}

fn entry_error(op: Op, id: i64) -> impl FnOnce(BoxError) -> OpsError {
    move |error| match error {
        BoxError::NoSuchSuspended(_) => OpsError::Gone { op, id },
        error => OpsError::Entry { op, id, error },
    }
}

// ---------------------------------------------------------------------------
// Conditions in words, times, properties
// ---------------------------------------------------------------------------

/// Whether the query has any condition (none: every entry).
pub fn has_conditions(q: &SuspendedQuery) -> bool {
    q.port.is_some()
        || q.location.is_some()
        || q.stage.is_some()
        || q.error_contains.is_some()
        || q.since.is_some()
        || q.until.is_some()
        || q.context.is_some()
        || q.resumable.is_some()
}

/// `filter` with fault messages left out (every fault message has
/// `fault.message_id`). A context filter sees every property, and a fault
/// message carries its failed message's properties (demoted): a filter
/// meant for the originals (`order.customer == "TEST"`) matches their
/// fault messages too, unless they are left out this way.
pub fn without_faults(filter: Filter) -> Filter {
    let fault = Filter::Pred(Predicate::Exists(Key {
        namespace: FAULT_NS.to_string(),
        name: "message_id".to_string(),
    }));
    Filter::And(vec![filter, Filter::Not(Box::new(fault))])
}

/// The query's conditions in words: `port `out` and error containing "disk"`.
pub fn describe(q: &SuspendedQuery) -> String {
    let mut parts = Vec::new();
    if let Some(p) = &q.port {
        parts.push(format!("port `{p}`"));
    }
    if let Some(l) = &q.location {
        parts.push(format!("location `{l}`"));
    }
    if let Some(s) = &q.stage {
        parts.push(format!("stage `{s}`"));
    }
    if let Some(e) = &q.error_contains {
        parts.push(format!("error containing {e:?}"));
    }
    if let Some(t) = q.since {
        parts.push(format!("suspended at or after {}", ms_to_text(t)));
    }
    if let Some(t) = q.until {
        parts.push(format!("suspended before {}", ms_to_text(t)));
    }
    if let Some(f) = &q.context {
        parts.push(format!("context `{f}`"));
    }
    match q.resumable {
        Some(true) => parts.push("resumable".to_string()),
        Some(false) => parts.push("not resumable".to_string()),
        None => {}
    }
    if parts.is_empty() {
        "(no conditions: every entry)".to_string()
    } else {
        parts.join(" and ")
    }
}

// ---------------------------------------------------------------------------
// Edits
// ---------------------------------------------------------------------------

/// Changes to a message's context for [`resubmit`].
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Edit {
    set: Vec<(Key, Value)>,
    remove: Vec<Key>,
}

impl Edit {
    /// Set (add or replace) `set`, remove `remove`. A key may be named once.
    pub fn new(set: Vec<(Key, Value)>, remove: Vec<Key>) -> Result<Edit, OpsError> {
        let mut seen: Vec<&Key> = Vec::new();
        for key in set.iter().map(|(k, _)| k).chain(&remove) {
            if seen.contains(&key) {
                return Err(OpsError::BadEdit(format!(
                    "property `{key}` is named twice (set or remove each property once)"
                )));
            }
            seen.push(key);
        }
        Ok(Edit { set, remove })
    }

    pub fn is_empty(&self) -> bool {
        self.set.is_empty() && self.remove.is_empty()
    }

    /// The edited context. A property that is set keeps its place and its
    /// promotion if the message has it, and is added promoted otherwise;
    /// removing a property the message does not have is an error (a typo
    /// must not resubmit the message unchanged).
    pub fn apply(&self, context: &Context) -> Result<Context, String> {
        let mut edited = context.clone();
        for key in &self.remove {
            if edited.remove(&key.namespace, &key.name).is_none() {
                return Err(format!("the message has no property `{key}` to remove"));
            }
        }
        for (key, value) in &self.set {
            let promoted = context.get(&key.namespace, &key.name).is_none_or(|p| p.promoted);
            edited.set(&key.namespace, &key.name, value.clone(), promoted);
        }
        Ok(edited)
    }
}

impl fmt::Display for Edit {
    /// As the CLI's flags write it: `set a.b=int:5, remove c.d` (`unchanged`
    /// when empty), for the audit log.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.is_empty() {
            return f.write_str("unchanged");
        }
        let set = self
            .set
            .iter()
            .map(|(k, v)| format!("{k}={}:{}", v.value_type(), v.to_text()));
        let remove = self.remove.iter().map(|k| k.to_string());
        let parts: Vec<String> = set
            .map(|s| format!("set {s}"))
            .chain(remove.map(|r| format!("remove {r}")))
            .collect();
        f.write_str(&parts.join(", "))
    }
}

// ---------------------------------------------------------------------------
// Selecting
// ---------------------------------------------------------------------------

/// One page (at most [`PAGE`]) of the entries matching `query`, after `after`,
/// in id order.
pub async fn page(
    b: &dyn MessageBox,
    query: &SuspendedQuery,
    after: Option<i64>,
    limit: usize,
) -> Result<Vec<SuspendedInfo>, OpsError> {
    b.list_suspended(query, after, limit.clamp(1, PAGE))
        .await
        .map_err(read_error("listing suspended messages"))
}

/// The entries counted by where they stopped and their error, the largest
/// groups first (at most `limit`, up to [`PAGE`]).
pub async fn groups(b: &dyn MessageBox, limit: usize) -> Result<Vec<sluice_msgbox::SuspendedGroup>, OpsError> {
    b.suspended_groups(limit.clamp(1, PAGE))
        .await
        .map_err(read_error("counting suspended messages by port and error"))
}

/// The entries matching a query, a page ([`PAGE`]) at a time, in id order.
pub struct Pages<'a> {
    b: &'a dyn MessageBox,
    query: &'a SuspendedQuery,
    after: Option<i64>,
    ended: bool,
}

impl<'a> Pages<'a> {
    pub fn new(b: &'a dyn MessageBox, query: &'a SuspendedQuery) -> Pages<'a> {
        Pages {
            b,
            query,
            after: None,
            ended: false,
        }
    }

    /// The next page, or `None` after the last.
    pub async fn next(&mut self) -> Result<Option<Vec<SuspendedInfo>>, OpsError> {
        if self.ended {
            return Ok(None);
        }
        let entries = page(self.b, self.query, self.after, PAGE).await?;
        self.ended = entries.len() < PAGE;
        self.after = entries.last().map(|last| last.id);
        Ok(self.after.is_some().then_some(entries))
    }
}

/// Call `each` with every selected entry, in id order for a query, in the
/// given order for ids (those that do not exist are left out), a page at a
/// time, until it returns `Break`. Returns how many it was called with.
pub async fn select(
    b: &dyn MessageBox,
    selection: &Selection,
    mut each: impl FnMut(SuspendedInfo) -> ControlFlow<()>,
) -> Result<u64, OpsError> {
    let mut n = 0;
    match selection {
        Selection::Ids(ids) => {
            for &id in ids {
                let info = b
                    .suspended(id)
                    .await
                    .map_err(read_error(format!("reading suspended entry {id}")))?;
                if let Some(info) = info {
                    n += 1;
                    if each(info).is_break() {
                        break;
                    }
                }
            }
        }
        Selection::Query(query) => {
            let mut pages = Pages::new(b, query);
            'pages: while let Some(entries) = pages.next().await? {
                for info in entries {
                    n += 1;
                    if each(info).is_break() {
                        break 'pages;
                    }
                }
            }
        }
    }
    Ok(n)
}

/// One suspended entry in full: where and why it failed, every attempt,
/// and its message's context and parts.
#[derive(Debug, Clone, Serialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct SuspendedDetail {
    #[serde(flatten)]
    pub entry: SuspendedInfo,
    #[cfg_attr(feature = "openapi", schema(value_type = Vec<crate::ContextProperty>))]
    #[serde(serialize_with = "crate::context_json")]
    pub context: Context,
    #[cfg_attr(feature = "openapi", schema(value_type = Vec<crate::PartView>))]
    #[serde(serialize_with = "crate::parts_json")]
    pub parts: Vec<Part>,
}

/// One entry and its message; `not_found` if either is gone.
pub async fn show(b: &dyn MessageBox, id: i64) -> Result<SuspendedDetail, OpsError> {
    let entry = b
        .suspended(id)
        .await
        .map_err(read_error(format!("reading suspended entry {id}")))?
        .ok_or_else(|| OpsError::NotFound(format!("suspended entry {id} {GONE}")))?;
    let message = b
        .message(entry.message_id)
        .await
        .map_err(read_error(format!(
            "reading message {} of suspended entry {id}",
            entry.message_id
        )))?
        .ok_or_else(|| {
            OpsError::NotFound(format!(
                "message {} of suspended entry {id} is gone (the entry went meanwhile)",
                entry.message_id
            ))
        })?;
    Ok(SuspendedDetail {
        entry,
        context: message.context,
        parts: message.parts,
    })
}

// ---------------------------------------------------------------------------
// One entry
// ---------------------------------------------------------------------------

/// Queue the entry again: to its send port, or, for "no subscriber", to
/// every subscription that matches now.
pub async fn resume(b: &dyn MessageBox, id: i64) -> Result<Routed, OpsError> {
    let routed = b.resume(id).await.map_err(entry_error(Op::Resume, id))?;
    tracing::debug!(suspended = id, ?routed, "resumed");
    Ok(routed)
}

/// Drop the entry (its message goes when nothing else references it).
pub async fn terminate(b: &dyn MessageBox, id: i64) -> Result<(), OpsError> {
    b.terminate(id).await.map_err(entry_error(Op::Terminate, id))?;
    tracing::debug!(suspended = id, "terminated");
    Ok(())
}

/// Publish the entry's message again as a new message, with `edit` applied
/// to its context and, if given, `body` as its only part (streamed into the
/// content store), and drop the entry, in one transaction. The edit is
/// applied before anything is written; if anything fails, the entry stays
/// and the new body is discarded.
pub async fn resubmit(
    b: &dyn MessageBox,
    id: i64,
    edit: &Edit,
    body: Option<&mut (dyn AsyncRead + Send + Unpin)>,
) -> Result<Resubmitted, OpsError> {
    let mut with = Resubmission::default();
    let mut part_name = "body".to_string();
    if !edit.is_empty() || body.is_some() {
        let gone = || OpsError::Gone { op: Op::Resubmit, id };
        let info = b
            .suspended(id)
            .await
            .map_err(read_error(format!("reading suspended entry {id}")))?
            .ok_or_else(gone)?;
        let message = b
            .message(info.message_id)
            .await
            .map_err(read_error(format!(
                "reading message {} of suspended entry {id}",
                info.message_id
            )))?
            .ok_or_else(gone)?;
        if !edit.is_empty() {
            let context = edit
                .apply(&message.context)
                .map_err(|reason| OpsError::Edit { id, reason })?;
            with.context = Some(context);
        }
        if body.is_some() {
            if message.parts.len() > 1 {
                return Err(OpsError::Edit {
                    id,
                    reason: format!(
                        "message {} has {} parts; a new body would replace them all",
                        info.message_id,
                        message.parts.len()
                    ),
                });
            }
            if let Some(first) = message.parts.first() {
                part_name = first.name.clone();
            }
        }
    }
    if let Some(reader) = body {
        let part = write_part(&*b.content(), &part_name, reader, WriteOptions::default())
            .await
            .map_err(|error| OpsError::Body { id, error })?;
        with.parts = Some(vec![part]);
    }
    let stored: Vec<_> = with.parts.iter().flatten().filter_map(|p| p.stored_content()).collect();
    match b.resubmit(id, with).await {
        Ok(done) => {
            tracing::debug!(suspended = id, message_id = %done.message_id, routed = ?done.routed, "resubmitted");
            Ok(done)
        }
        Err(e) => {
            for content in stored {
                if let Err(abort) = b.content().abort(content).await {
                    tracing::warn!(suspended = id, content, error = %abort, "discarding the new body failed");
                }
            }
            Err(entry_error(Op::Resubmit, id)(e))
        }
    }
}

// ---------------------------------------------------------------------------
// Bulk
// ---------------------------------------------------------------------------

/// What a bulk run does to each entry.
#[derive(Debug, Clone)]
pub enum Action {
    Resume,
    /// Resubmit with this edit (and the message's own parts).
    Resubmit(Edit),
    Terminate,
}

impl Action {
    pub fn op(&self) -> Op {
        match self {
            Action::Resume => Op::Resume,
            Action::Resubmit(_) => Op::Resubmit,
            Action::Terminate => Op::Terminate,
        }
    }
}

/// What happened to one entry of a bulk run.
#[derive(Debug)]
pub enum Outcome {
    Resumed(Routed),
    Resubmitted(Resubmitted),
    Terminated,
    /// Left as it is, and why (e.g. not resumable, in a run over a query).
    Skipped(String),
    /// It matched when the run started, and was gone when the run reached
    /// it: another operation resumed, resubmitted or terminated it first.
    Taken,
    /// A named entry that did not exist when the run started (resumed,
    /// resubmitted or terminated already, or never existed): a failure.
    Missing,
    Failed(OpsError),
}

fn routed_text(routed: &Routed) -> String {
    match routed {
        Routed::Queued(subs) => format!("-> {}", subs.join(", ")),
        Routed::Suspended { suspended_id } => format!("no subscriber; suspended again as #{suspended_id}"),
    }
}

impl Serialize for Outcome {
    /// `{"outcome": "resumed", "routed": ...}`, `{"outcome": "resubmitted",
    /// "message_id": ..., "routed": ...}`, `{"outcome": "terminated"}`,
    /// `{"outcome": "skipped", "reason": ...}`, `{"outcome": "taken"}`, or
    /// `{"outcome": "failed", "code": ..., "reason": ...}` (a named entry
    /// that did not exist: `not_found`).
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeMap;
        let mut map = s.serialize_map(None)?;
        match self {
            Outcome::Resumed(routed) => {
                map.serialize_entry("outcome", "resumed")?;
                map.serialize_entry("routed", routed)?;
            }
            Outcome::Resubmitted(r) => {
                map.serialize_entry("outcome", "resubmitted")?;
                map.serialize_entry("message_id", &r.message_id)?;
                map.serialize_entry("routed", &r.routed)?;
            }
            Outcome::Terminated => map.serialize_entry("outcome", "terminated")?,
            Outcome::Skipped(why) => {
                map.serialize_entry("outcome", "skipped")?;
                map.serialize_entry("reason", why)?;
            }
            Outcome::Taken => map.serialize_entry("outcome", "taken")?,
            Outcome::Missing => {
                map.serialize_entry("outcome", "failed")?;
                map.serialize_entry("code", &ErrorCode::NotFound)?;
                map.serialize_entry("reason", GONE)?;
            }
            Outcome::Failed(e) => {
                map.serialize_entry("outcome", "failed")?;
                map.serialize_entry("code", &e.error_code())?;
                map.serialize_entry("reason", &outcome_reason(e))?;
            }
        }
        map.end()
    }
}

impl fmt::Display for Outcome {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Outcome::Resumed(routed) => write!(f, "resumed {}", routed_text(routed)),
            Outcome::Resubmitted(r) => write!(f, "resubmitted as {} {}", r.message_id, routed_text(&r.routed)),
            Outcome::Terminated => f.write_str("terminated"),
            Outcome::Skipped(why) => write!(f, "skipped, {why}"),
            Outcome::Taken => f.write_str(TAKEN),
            Outcome::Missing => f.write_str(GONE),
            Outcome::Failed(e) => write!(f, "failed: {}", outcome_reason(e)),
        }
    }
}

/// Entries that matched when a run started and were gone before it reached
/// them (another operation took them): which they were is not known, only
/// how many, and between which ids.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Taken {
    /// How many were taken.
    pub count: u64,
    /// The first id of the stretch (one page of the count at the start).
    pub first: i64,
    /// Its last id.
    pub last: i64,
    /// How many entries of the stretch matched at the start (`count` of
    /// them were taken; the run met the others).
    pub of: u64,
}

impl fmt::Display for Taken {
    /// `#1001..#2000: 600 of 1000 taken by another operation`, or
    /// `#7: taken by another operation` for a single entry.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.of == 1 {
            write!(f, "#{}: {TAKEN}", self.first)
        } else {
            write!(
                f,
                "#{}..#{}: {} of {} {TAKEN}",
                self.first, self.last, self.count, self.of
            )
        }
    }
}

/// What a bulk run tells its caller as it goes. In JSON, tagged by
/// `event`: `matched`, `entry`, `taken`.
#[derive(Debug, Serialize)]
#[serde(tag = "event", rename_all = "snake_case")]
pub enum Event<'a> {
    /// The selection was counted; nothing was done yet. `Break` here stops
    /// before anything changes.
    Matched { total: u64 },
    /// One entry was dealt with. `done` counts entries accounted for so far
    /// (whatever their outcome, [`Event::Taken`] included), `total` is what
    /// matched at the start: `done` reaches `total` unless stopped.
    Entry {
        done: u64,
        total: u64,
        id: i64,
        outcome: &'a Outcome,
    },
    /// Entries the run did not reach because another operation took them
    /// first (a run over a query only); `done` and `total` as for
    /// [`Event::Entry`].
    Taken { done: u64, total: u64, taken: Taken },
}

/// Told about a bulk run's [`Event`]s as it goes. The run waits for each
/// answer, so a front end may take its time (write the event to a slow
/// client, record it in the audit log) and the run goes at its pace; `Break`
/// stops the run after the entry in hand. [`run`] takes a closure
/// instead, answering at once.
pub trait Progress: Send {
    fn event(&mut self, event: Event<'_>) -> impl std::future::Future<Output = ControlFlow<()>> + Send;
}

/// A closure as a [`Progress`] (what [`run`] does with its closure).
pub struct Answers<F>(pub F);

impl<F> Progress for Answers<F>
where
    F: FnMut(Event<'_>) -> ControlFlow<()> + Send,
{
    fn event(&mut self, event: Event<'_>) -> impl std::future::Future<Output = ControlFlow<()>> + Send {
        std::future::ready((self.0)(event))
    }
}

/// What a bulk run did. Every entry it matched has one outcome:
/// `done + failed + skipped + taken == matched`, unless `interrupted`.
#[derive(Debug, Clone, Serialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Summary {
    pub op: Op,
    /// Entries selected at the start.
    pub matched: u64,
    /// Entries resumed, resubmitted or terminated.
    pub done: u64,
    /// Entries that failed; with named ids, also those that did not exist.
    pub failed: u64,
    pub skipped: u64,
    /// Entries that matched at the start but that another operation
    /// resumed, resubmitted or terminated first: not a failure.
    pub taken: u64,
    /// The first [`KEPT`] failures: entry id, code and why.
    pub failures: Vec<EntryFailure>,
    /// The first [`KEPT`] skipped entries and why.
    #[cfg_attr(feature = "openapi", schema(value_type = Vec<Vec<serde_json::Value>>))]
    pub skips: Vec<(i64, String)>,
    /// Stopped before the end (the rest is as it was).
    pub interrupted: bool,
    /// The code of every failure so far, if they all have the same one.
    #[serde(skip)]
    failed_code: Option<ErrorCode>,
}

/// An entry of a bulk run that failed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct EntryFailure {
    pub id: i64,
    pub code: ErrorCode,
    /// Why, and what to do about it when there is something to say.
    pub reason: String,
}

impl Summary {
    fn new(op: Op, matched: u64) -> Summary {
        Summary {
            op,
            matched,
            done: 0,
            failed: 0,
            skipped: 0,
            taken: 0,
            failures: Vec::new(),
            skips: Vec::new(),
            interrupted: false,
            failed_code: None,
        }
    }

    fn record(&mut self, id: i64, outcome: &Outcome) {
        fn keep<T>(list: &mut Vec<T>, item: T) {
            if list.len() < KEPT {
                list.push(item);
            }
        }
        match outcome {
            Outcome::Resumed(_) | Outcome::Resubmitted(_) | Outcome::Terminated => self.done += 1,
            Outcome::Skipped(why) => {
                self.skipped += 1;
                keep(&mut self.skips, (id, why.clone()));
            }
            Outcome::Taken => self.taken += 1,
            Outcome::Missing => self.fail(id, ErrorCode::NotFound, GONE.to_string()),
            Outcome::Failed(e) => self.fail(id, e.error_code(), outcome_reason(e)),
        }
    }

    fn fail(&mut self, id: i64, code: ErrorCode, reason: String) {
        self.failed_code = match (self.failed, self.failed_code) {
            (0, _) => Some(code),
            (_, Some(same)) if same == code => Some(same),
            _ => Some(ErrorCode::EntriesFailed),
        };
        self.failed += 1;
        if self.failures.len() < KEPT {
            self.failures.push(EntryFailure { id, code, reason });
        }
    }

    /// The error of a run in which entries failed ([`OpsError::EntriesFailed`]:
    /// with their code when they all failed alike, else `entries_failed`),
    /// or `None`. Entries skipped or taken by another operation are not
    /// failures.
    pub fn error(&self) -> Option<OpsError> {
        (self.failed > 0).then(|| OpsError::EntriesFailed {
            op: self.op,
            failed: self.failed,
            matched: self.matched,
            done: self.done,
            skipped: self.skipped,
            taken: self.taken,
            code: self.failed_code.unwrap_or(ErrorCode::EntriesFailed),
        })
    }

    /// Entries accounted for (whatever the outcome).
    pub fn processed(&self) -> u64 {
        self.done + self.failed + self.skipped + self.taken
    }
}

/// Why, and what to do about it when there is something to say.
fn outcome_reason(e: &OpsError) -> String {
    match e.hint() {
        Some(hint) => format!("{} ({hint})", e.reason()),
        None => e.reason(),
    }
}

impl fmt::Display for Summary {
    /// `resumed 5 of 8; 1 failed, 1 skipped, 1 taken by another operation`
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} {} of {}; {} failed, {} skipped, {} {TAKEN}",
            self.op.done(),
            self.done,
            self.matched,
            self.failed,
            self.skipped,
            self.taken
        )?;
        if self.interrupted {
            write!(f, "; stopped after {} of {}", self.processed(), self.matched)?;
        }
        Ok(())
    }
}

/// Do `action` to one entry. `not_resumable` (only in a run over a query)
/// is the reason of an entry that is not resumable, and `needs_body` says
/// whether a receive pipeline rejected it (else a send port could not send
/// it as it is, and an edited resubmission is the way): it is skipped where
/// it cannot be resumed or resubmitted as it is (a named one fails, saying
/// why).
async fn act(b: &dyn MessageBox, id: i64, not_resumable: Option<&str>, needs_body: bool, action: &Action) -> Outcome {
    match (action, not_resumable) {
        (Action::Resume, Some(reason)) => return Outcome::Skipped(format!("not resumable ({reason})")),
        (Action::Resubmit(_), Some(reason)) if needs_body => {
            return Outcome::Skipped(format!("rejected on receipt, needs a new body ({reason})"));
        }
        _ => {}
    }
    let result = match action {
        Action::Resume => resume(b, id).await.map(Outcome::Resumed),
        Action::Resubmit(edit) => resubmit(b, id, edit, None).await.map(Outcome::Resubmitted),
        Action::Terminate => terminate(b, id).await.map(|()| Outcome::Terminated),
    };
    match result {
        Ok(outcome) => outcome,
        Err(e) if e.is_gone() => Outcome::Taken,
        Err(e) => Outcome::Failed(e),
    }
}

/// A stretch of the entries a query matched when a run started: one page
/// of the count, its first and last id and how many.
#[derive(Debug, Clone, Copy)]
struct Span {
    first: i64,
    last: i64,
    count: u64,
}

/// What a run over a query matched, as [`Span`]s (one per [`PAGE`]
/// entries: 24 bytes per thousand entries, not the ids), and how far the
/// run got through them. The run goes through the entries still there in id
/// order; once it is past a span, the span's entries it did not meet were
/// taken by another operation. This holds because a suspended entry never
/// changes (it is only ever removed) and ids are never reused (a new entry
/// has a greater id than any before it, so none can turn up inside a span).
struct Spans {
    spans: Vec<Span>,
    /// The span the run is in.
    at: usize,
    /// Entries of that span the run met.
    met: u64,
}

impl Spans {
    /// The run meets entry `id`, in id order: the spans before it are
    /// closed. `Break` if `progress` said so while closing (the entry is
    /// then not acted on).
    async fn meet(&mut self, id: i64, summary: &mut Summary, progress: &mut impl Progress) -> ControlFlow<()> {
        let mut flow = ControlFlow::Continue(());
        while self.spans.get(self.at).is_some_and(|span| span.last < id) {
            if self.close(summary, progress).await.is_break() {
                flow = ControlFlow::Break(());
            }
        }
        if flow.is_continue() {
            self.met += 1;
        }
        flow
    }

    /// The run is past every entry: close what is left. Nothing changes in
    /// the box here, so a `Break` does not stop the counting.
    async fn close_all(&mut self, summary: &mut Summary, progress: &mut impl Progress) {
        while self.at < self.spans.len() {
            let _ = self.close(summary, progress).await;
        }
    }

    /// Close the current span: the entries of it the run did not meet were
    /// taken by another operation.
    async fn close(&mut self, summary: &mut Summary, progress: &mut impl Progress) -> ControlFlow<()> {
        let span = self.spans[self.at];
        let met = std::mem::take(&mut self.met);
        self.at += 1;
        if met > span.count {
            // Cannot happen with a box that keeps the rule above.
            tracing::warn!(
                first = span.first,
                last = span.last,
                matched = span.count,
                met,
                "a bulk run met entries it had not counted"
            );
        }
        let count = span.count.saturating_sub(met);
        if count == 0 {
            return ControlFlow::Continue(());
        }
        summary.taken += count;
        progress
            .event(Event::Taken {
                done: summary.processed(),
                total: summary.matched,
                taken: Taken {
                    count,
                    first: span.first,
                    last: span.last,
                    of: span.count,
                },
            })
            .await
    }
}

/// Do `action` to every selected entry, one at a time, each in its own
/// transaction, telling `progress` after each (and once before the first,
/// with the count). Stops when `progress` returns `Break`; what is left is
/// as it was, and running again with the same selection finishes it.
///
/// For ids, every id is tried (each once, in the given order); one that
/// does not exist when the run starts fails ([`Outcome::Missing`]), one
/// that exists then but is gone when the run reaches it was taken by
/// another operation. For a query, the entries that match when the run
/// starts are counted first and then dealt with in id order, a page at a
/// time; entries suspended after the start (also by this run, e.g. a
/// resubmitted message that matches nothing) are left for the next run, and
/// entries that cannot be resumed, or resubmitted without a new body, are
/// skipped. Entries another operation (another bulk run beside this one)
/// takes first are counted as taken, whether this run still saw them
/// ([`Outcome::Taken`]) or they were gone before it got there
/// ([`Event::Taken`]), so that every entry counted at the start has exactly
/// one outcome. A query with conditions that matches nothing is
/// [`OpsError::NothingMatches`], and nothing changes.
pub async fn run(
    b: &dyn MessageBox,
    selection: &Selection,
    action: &Action,
    progress: impl FnMut(Event<'_>) -> ControlFlow<()> + Send,
) -> Result<Summary, OpsError> {
    run_with(b, selection, action, Answers(progress)).await
}

/// [`run`], telling a [`Progress`] that may take its time.
pub async fn run_with(
    b: &dyn MessageBox,
    selection: &Selection,
    action: &Action,
    mut progress: impl Progress,
) -> Result<Summary, OpsError> {
    let op = action.op();
    match selection {
        Selection::Ids(ids) => {
            let mut unique: Vec<i64> = Vec::with_capacity(ids.len());
            for id in ids {
                if !unique.contains(id) {
                    unique.push(*id);
                }
            }
            // Which exist now: one that does not is a failure, one that
            // does and is gone when reached was taken by another operation.
            let mut exists = Vec::with_capacity(unique.len());
            for &id in &unique {
                let info = b
                    .suspended(id)
                    .await
                    .map_err(read_error(format!("reading suspended entry {id}")))?;
                exists.push(info.is_some());
            }
            let total = unique.len() as u64;
            let mut summary = Summary::new(op, total);
            if progress.event(Event::Matched { total }).await.is_break() {
                summary.interrupted = true;
                return Ok(summary);
            }
            for (id, exists) in unique.into_iter().zip(exists) {
                let outcome = if exists {
                    act(b, id, None, false, action).await
                } else {
                    Outcome::Missing
                };
                summary.record(id, &outcome);
                let event = Event::Entry {
                    done: summary.processed(),
                    total,
                    id,
                    outcome: &outcome,
                };
                if progress.event(event).await.is_break() && summary.processed() < total {
                    summary.interrupted = true;
                    break;
                }
            }
            Ok(summary)
        }
        Selection::Query(query) => {
            // Count first (for progress, to bound the run: entries
            // suspended from now on are left for the next run, and to
            // account for the entries another operation takes before this
            // run reaches them).
            let mut spans = Vec::new();
            let mut pages = Pages::new(b, query);
            while let Some(entries) = pages.next().await? {
                if let (Some(first), Some(last)) = (entries.first(), entries.last()) {
                    spans.push(Span {
                        first: first.id,
                        last: last.id,
                        count: entries.len() as u64,
                    });
                }
            }
            let total = spans.iter().map(|s| s.count).sum();
            let mut summary = Summary::new(op, total);
            let Some(last) = spans.last().map(|s| s.last) else {
                if has_conditions(query) {
                    return Err(OpsError::NothingMatches {
                        conditions: describe(query),
                    });
                }
                return Ok(summary);
            };
            if progress.event(Event::Matched { total }).await.is_break() {
                summary.interrupted = true;
                return Ok(summary);
            }
            let mut spans = Spans { spans, at: 0, met: 0 };
            let mut pages = Pages::new(b, query);
            let mut stopped = false;
            'pages: while let Some(entries) = pages.next().await? {
                for info in entries {
                    if info.id > last {
                        break 'pages;
                    }
                    if spans.meet(info.id, &mut summary, &mut progress).await.is_break() {
                        stopped = true;
                        break 'pages;
                    }
                    let not_resumable = (!info.resumable).then_some(info.reason.as_str());
                    // Rejected on receipt: it never reached a subscriber.
                    let needs_body = info.subscriber.is_none();
                    let outcome = act(b, info.id, not_resumable, needs_body, action).await;
                    summary.record(info.id, &outcome);
                    let event = Event::Entry {
                        done: summary.processed(),
                        total,
                        id: info.id,
                        outcome: &outcome,
                    };
                    if progress.event(event).await.is_break() {
                        // Stopped at the last entry: nothing is left.
                        stopped = info.id != last;
                        break 'pages;
                    }
                }
            }
            if stopped {
                summary.interrupted = true;
            } else {
                spans.close_all(&mut summary, &mut progress).await;
            }
            Ok(summary)
        }
    }
}

/// [`run_with`], recording the run in the audit log as done by `actor`:
/// each entry acted on (resumed, resubmitted, terminated, or failed) before
/// the run goes on to the next, and the run as a whole once it ends
/// (`suspended.resume_all`... with its counts). An entry that cannot be
/// recorded stops the run there (an operator must be able to see what
/// was done): the answer is that error.
pub async fn run_audited(
    b: &dyn MessageBox,
    selection: &Selection,
    action: &Action,
    actor: &crate::audit::Actor,
    clock: &dyn sluice_msgbox::Clock,
    progress: impl Progress,
) -> Result<Summary, OpsError> {
    let name = format!("suspended.{}", action.op().name());
    let mut audited = Audited {
        b,
        actor,
        clock,
        action: &name,
        failed: None,
        inner: progress,
    };
    let result = run_with(b, selection, action, &mut audited).await;
    let result = match audited.failed.take() {
        Some(e) => Err(e),
        None => result,
    };
    let target = match selection {
        Selection::Ids(ids) => format!("suspended {ids:?}"),
        Selection::Query(q) => describe(q),
    };
    let (code, detail) = match &result {
        Ok(s) => (
            if s.failed > 0 {
                ErrorCode::EntriesFailed.as_str()
            } else {
                "ok"
            },
            format!(
                "{} matched, {} {}, {} failed, {} skipped, {} {TAKEN}{}",
                s.matched,
                s.done,
                s.op.done(),
                s.failed,
                s.skipped,
                s.taken,
                if s.interrupted { "; interrupted" } else { "" }
            ),
        ),
        Err(e) => (e.code(), e.to_string()),
    };
    let all = format!("{name}_all");
    crate::audit::record_result(b, actor, &all, &target, code, Some(detail), clock.now_ms()).await?;
    result
}

/// Records each entry acted on, then tells the inner progress.
struct Audited<'a, P> {
    b: &'a dyn MessageBox,
    actor: &'a crate::audit::Actor,
    clock: &'a dyn sluice_msgbox::Clock,
    action: &'a str,
    failed: Option<OpsError>,
    inner: P,
}

impl<P: Progress> Progress for &mut Audited<'_, P> {
    async fn event(&mut self, event: Event<'_>) -> ControlFlow<()> {
        if let Event::Entry { id, outcome, .. } = &event {
            let result = match outcome {
                Outcome::Resumed(_) | Outcome::Resubmitted(_) | Outcome::Terminated => Some("ok"),
                Outcome::Failed(e) => Some(e.code()),
                Outcome::Missing => Some(ErrorCode::NotFound.as_str()),
                Outcome::Skipped(_) | Outcome::Taken => None,
            };
            if let Some(result) = result {
                let target = format!("suspended {id}");
                let detail = Some(format!("bulk: {outcome}"));
                let now = self.clock.now_ms();
                if let Err(e) =
                    crate::audit::record_result(self.b, self.actor, self.action, &target, result, detail, now).await
                {
                    tracing::warn!(suspended = id, error = %e, "recording an entry of a bulk run in the audit log failed; the run stops here");
                    self.failed = Some(e);
                    // The entry was acted on: the caller is told so, then
                    // the run stops.
                    let _ = self.inner.event(event).await;
                    return ControlFlow::Break(());
                }
            }
        }
        self.inner.event(event).await
    }
}

/// [`run`] with [`Action::Resume`].
pub async fn resume_all(
    b: &dyn MessageBox,
    selection: &Selection,
    progress: impl FnMut(Event<'_>) -> ControlFlow<()> + Send,
) -> Result<Summary, OpsError> {
    run(b, selection, &Action::Resume, progress).await
}

/// [`run`] with [`Action::Resubmit`].
pub async fn resubmit_all(
    b: &dyn MessageBox,
    selection: &Selection,
    edit: &Edit,
    progress: impl FnMut(Event<'_>) -> ControlFlow<()> + Send,
) -> Result<Summary, OpsError> {
    run(b, selection, &Action::Resubmit(edit.clone()), progress).await
}

/// [`run`] with [`Action::Terminate`].
pub async fn terminate_all(
    b: &dyn MessageBox,
    selection: &Selection,
    progress: impl FnMut(Event<'_>) -> ControlFlow<()> + Send,
) -> Result<Summary, OpsError> {
    run(b, selection, &Action::Terminate, progress).await
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use sluice_model::{Filter, MessageId};
    use sluice_msgbox::{Failure, NewMessage, Part, Subscription, SystemClock, stage};
    use sluice_msgbox_sqlite::{Options, SqliteBox};

    use super::*;
    use crate::parse::{parse_key, parse_property};

    async fn open() -> (tempfile::TempDir, SqliteBox) {
        let dir = tempfile::tempdir().unwrap();
        let b = SqliteBox::open(dir.path(), Arc::new(SystemClock), Options::default()).unwrap();
        (dir, b)
    }

    fn message(props: &[(&str, Value)]) -> NewMessage {
        let mut context = Context::new();
        for (key, value) in props {
            let key = Key::parse(key).unwrap();
            context.promote(&key.namespace, &key.name, value.clone());
        }
        context.write("note", "kept", "unpromoted");
        NewMessage {
            id: MessageId::new(),
            context,
            parts: vec![Part::inline("body", "original")],
        }
    }

    /// Publish a message no subscription matches: its suspended id.
    async fn orphan(b: &SqliteBox, props: &[(&str, Value)]) -> i64 {
        match b.publish(message(props)).await.unwrap() {
            Routed::Suspended { suspended_id } => suspended_id,
            other => panic!("routed {other:?}"),
        }
    }

    /// A message send port `port` took and failed with `error`.
    async fn failed_delivery(b: &SqliteBox, port: &str, error: &str) -> i64 {
        b.subscribe(Subscription {
            subscriber: port.into(),
            filter: Filter::parse(&format!("dest == \"{port}\"")).unwrap(),
        })
        .await
        .unwrap();
        b.publish(message(&[("dest", Value::from(port))])).await.unwrap();
        let leased = b.lease(port, 1, 60_000).await.unwrap();
        let failure = Failure::new(stage::TRANSMIT, "file", error);
        b.suspend(leased[0].token, &failure).await.unwrap()
    }

    async fn ids(b: &SqliteBox, query: SuspendedQuery) -> Vec<i64> {
        let mut out = Vec::new();
        select(b, &Selection::Query(query), |info| {
            out.push(info.id);
            ControlFlow::Continue(())
        })
        .await
        .unwrap();
        out
    }

    async fn suspended_count(b: &SqliteBox) -> u64 {
        b.counts().await.unwrap().suspended
    }

    fn keep_going(_: Event<'_>) -> ControlFlow<()> {
        ControlFlow::Continue(())
    }

    #[tokio::test]
    async fn select_filters_and_describes() {
        let (_dir, b) = open().await;
        let a1 = orphan(&b, &[("order.id", Value::from("A1"))]).await;
        let b2 = orphan(&b, &[("order.id", Value::from("B2"))]).await;
        let disk = failed_delivery(&b, "out", "Disk FULL on /data").await;
        let q = |f: fn(&mut SuspendedQuery)| {
            let mut q = SuspendedQuery::default();
            f(&mut q);
            q
        };
        assert_eq!(ids(&b, SuspendedQuery::default()).await, vec![a1, b2, disk]);
        assert_eq!(ids(&b, q(|q| q.port = Some("out".into()))).await, vec![disk]);
        assert_eq!(ids(&b, q(|q| q.stage = Some("route".into()))).await, vec![a1, b2]);
        assert_eq!(
            ids(&b, q(|q| q.error_contains = Some("disk full".into()))).await,
            vec![disk]
        );
        // The context filter sees unpromoted properties too.
        let by_order = q(|q| q.context = Some(Filter::parse("order.id == \"B2\" and note.kept exists").unwrap()));
        assert_eq!(ids(&b, by_order.clone()).await, vec![b2]);
        assert_eq!(ids(&b, q(|q| q.until = Some(0))).await, Vec::<i64>::new());
        // Ids: the ones that exist, in the given order.
        let mut got = Vec::new();
        select(&b, &Selection::Ids(vec![disk, 999, a1]), |i| {
            got.push(i.id);
            ControlFlow::Continue(())
        })
        .await
        .unwrap();
        assert_eq!(got, vec![disk, a1]);

        let mut words = by_order.clone();
        words.port = Some("out".into());
        words.error_contains = Some("disk".into());
        words.since = Some(0);
        assert_eq!(
            describe(&words),
            "port `out` and error containing \"disk\" and suspended at or after 1970-01-01T00:00:00.000Z and context `order.id == \"B2\" and note.kept exists`"
        );
        assert_eq!(describe(&SuspendedQuery::default()), "(no conditions: every entry)");
    }

    #[tokio::test]
    async fn resume_and_terminate_one_say_gone_and_why() {
        let (_dir, b) = open().await;
        let disk = failed_delivery(&b, "out", "disk full").await;
        let lonely = orphan(&b, &[("x", Value::from(1i64))]).await;
        assert_eq!(resume(&b, disk).await.unwrap(), Routed::Queued(vec!["out".into()]));
        let e = resume(&b, disk).await.unwrap_err();
        assert!(e.is_gone(), "{e}");
        assert_eq!(
            e.to_string(),
            format!(
                "resuming suspended entry {disk}: it does not exist (it was resumed, resubmitted or terminated, or never existed)"
            )
        );
        let e = resume(&b, lonely).await.unwrap_err();
        assert!(e.to_string().contains("still matches no subscription"), "{e}");
        assert_eq!(e.hint(), Some("add or fix a send port whose filter matches it"));
        terminate(&b, lonely).await.unwrap();
        let e = terminate(&b, lonely).await.unwrap_err();
        assert!(
            e.to_string()
                .starts_with(&format!("terminating suspended entry {lonely}: it does not exist"))
        );
        assert_eq!(suspended_count(&b).await, 0);
    }

    #[tokio::test]
    async fn resubmit_applies_the_edit_and_a_new_body() {
        let (_dir, b) = open().await;
        let id = orphan(&b, &[("order.id", Value::from("A1")), ("order.bad", Value::from(true))]).await;
        let original = b
            .message(b.suspended(id).await.unwrap().unwrap().message_id)
            .await
            .unwrap()
            .unwrap();
        b.subscribe(Subscription {
            subscriber: "fixed".into(),
            filter: Filter::parse("order.fixed == 2 and not (order.bad exists) and note.kept exists").unwrap(),
        })
        .await
        .unwrap();
        let edit = Edit::new(
            vec![
                parse_property("order.fixed=int:2").unwrap(),
                parse_property("note.kept=string:changed").unwrap(),
            ],
            vec![parse_key("order.bad").unwrap()],
        )
        .unwrap();
        // note.kept stays unpromoted, so `fixed` does not match yet.
        let r = resubmit(&b, id, &edit, None).await.unwrap();
        let Routed::Suspended { suspended_id } = r.routed else {
            panic!("{r:?}")
        };
        let m = b.message(r.message_id).await.unwrap().unwrap();
        let mut expected = original.context.clone();
        expected.remove("order", "bad");
        expected.write("note", "kept", "changed");
        expected.promote("order", "fixed", 2i64);
        assert_eq!(m.context, expected);
        assert_eq!(m.parts, original.parts, "parts are shared");
        assert!(b.suspended(id).await.unwrap().is_none());

        // A new body, larger than the inline limit: stored, and read back.
        let body: Vec<u8> = (0..20_000u32).map(|i| (i % 251) as u8).collect();
        let edit = Edit::new(vec![(parse_key("note.kept").unwrap(), Value::from("x"))], vec![]).unwrap();
        let drop_note = Edit::new(vec![], vec![parse_key("note.kept").unwrap()]).unwrap();
        let m2 = resubmit(&b, suspended_id, &drop_note, None).await.unwrap();
        let Routed::Suspended { suspended_id } = m2.routed else {
            panic!()
        };
        let r = resubmit(&b, suspended_id, &edit, Some(&mut &body[..])).await.unwrap();
        assert_eq!(r.routed, Routed::Queued(vec!["fixed".into()]));
        let m = b.message(r.message_id).await.unwrap().unwrap();
        assert_eq!(m.parts.len(), 1);
        assert_eq!(m.parts[0].name, "body");
        let mut read = Vec::new();
        tokio::io::AsyncReadExt::read_to_end(&mut sluice_content::read_part(b.content(), &m.parts[0]), &mut read)
            .await
            .unwrap();
        assert_eq!(read, body);
    }

    #[tokio::test]
    async fn an_edit_that_does_not_apply_changes_nothing() {
        let (_dir, b) = open().await;
        let id = orphan(&b, &[("order.id", Value::from("A1"))]).await;
        let before = b.counts().await.unwrap();
        let edit = Edit::new(vec![], vec![parse_key("order.typo").unwrap()]).unwrap();
        let body = vec![7u8; 300_000];
        let e = resubmit(&b, id, &edit, Some(&mut &body[..])).await.unwrap_err();
        assert_eq!(
            e.to_string(),
            format!(
                "resubmitting suspended entry {id}: the message has no property `order.typo` to remove; nothing was changed"
            )
        );
        assert_eq!(
            b.counts().await.unwrap(),
            before,
            "no content written, nothing resubmitted"
        );
        assert!(b.suspended(id).await.unwrap().is_some());

        let k = parse_key("a.b").unwrap();
        let e = Edit::new(vec![(k.clone(), Value::from(1i64))], vec![k]).unwrap_err();
        assert!(e.to_string().contains("`a.b` is named twice"), "{e}");
    }

    #[tokio::test]
    async fn a_rejected_entry_is_skipped_in_bulk_and_resubmitted_with_a_new_body() {
        let (_dir, b) = open().await;
        let failure = Failure::new("decode", "gzip", "truncated").at_location("in-folder");
        let rejected = b.publish_suspended(message(&[]), "holder", &failure).await.unwrap();
        b.release(b.suspended(rejected).await.unwrap().unwrap().message_id, "holder")
            .await
            .unwrap();
        let summary = resume_all(&b, &Selection::all(), keep_going).await.unwrap();
        assert_eq!((summary.done, summary.skipped, summary.failed), (0, 1, 0));
        assert_eq!(summary.skips, vec![(rejected, "not resumable (truncated)".to_string())]);
        let summary = resubmit_all(&b, &Selection::all(), &Edit::default(), keep_going)
            .await
            .unwrap();
        assert_eq!((summary.done, summary.skipped), (0, 1));
        // Named: it fails and says why.
        let summary = resume_all(&b, &Selection::Ids(vec![rejected]), keep_going)
            .await
            .unwrap();
        assert_eq!(summary.failed, 1);
        assert!(
            summary.failures[0].reason.contains("is not resumable"),
            "{:?}",
            summary.failures
        );
        let e = resubmit(&b, rejected, &Edit::default(), None).await.unwrap_err();
        assert!(e.to_string().contains("only with a new body"), "{e}");
        let r = resubmit(&b, rejected, &Edit::default(), Some(&mut &b"fixed"[..]))
            .await
            .unwrap();
        assert!(
            matches!(r.routed, Routed::Suspended { .. }),
            "no subscriber: suspended, resumable"
        );
    }

    #[tokio::test]
    async fn an_entry_a_port_cannot_send_as_it_is_is_skipped_by_resume_and_resubmitted_edited() {
        let (_dir, b) = open().await;
        b.subscribe(Subscription {
            subscriber: "by-order".into(),
            filter: Filter::parse("dest == \"by-order\"").unwrap(),
        })
        .await
        .unwrap();
        b.publish(message(&[("dest", Value::from("by-order"))])).await.unwrap();
        let leased = b.lease("by-order", 1, 60_000).await.unwrap();
        let failure = Failure::new(stage::TRANSMIT, "file", "uses property order.id").needing_edit();
        let id = b.suspend(leased[0].token, &failure).await.unwrap();
        let summary = resume_all(&b, &Selection::all(), keep_going).await.unwrap();
        assert_eq!((summary.done, summary.skipped), (0, 1));
        let set = vec![(parse_key("order.id").unwrap(), Value::from("A1"))];
        let summary = resubmit_all(&b, &Selection::all(), &Edit::new(set, vec![]).unwrap(), keep_going)
            .await
            .unwrap();
        assert_eq!(
            (summary.done, summary.skipped, summary.failed),
            (1, 0, 0),
            "{summary:?}"
        );
        assert!(b.suspended(id).await.unwrap().is_none());
    }

    /// A bulk run stopped after N entries leaves the rest suspended; running
    /// it again finishes them. More than one page, so paging is crossed too.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_stopped_bulk_run_leaves_the_rest_and_a_rerun_finishes() {
        let (_dir, b) = open().await;
        let n = PAGE as u64 + 205;
        let mut tasks = Vec::new();
        for i in 0..n {
            let b = b.clone();
            tasks.push(tokio::spawn(async move { orphan(&b, &[("i", Value::from(i))]).await }));
        }
        for t in tasks {
            t.await.unwrap();
        }
        let mut matched = None;
        let mut seen = 0;
        let summary = terminate_all(&b, &Selection::all(), |event| match event {
            Event::Matched { total } => {
                matched = Some(total);
                ControlFlow::Continue(())
            }
            Event::Entry {
                done, total, outcome, ..
            } => {
                seen += 1;
                assert_eq!((done, total), (seen, n));
                assert!(matches!(outcome, Outcome::Terminated), "{outcome}");
                if done == 1100 {
                    ControlFlow::Break(())
                } else {
                    ControlFlow::Continue(())
                }
            }
            Event::Taken { taken, .. } => panic!("{taken}"),
        })
        .await
        .unwrap();
        assert_eq!(matched, Some(n));
        assert!(summary.interrupted);
        assert_eq!((summary.done, summary.matched), (1100, n));
        assert_eq!(suspended_count(&b).await, n - 1100);
        assert!(
            summary.to_string().ends_with("; stopped after 1100 of 1205"),
            "{summary}"
        );

        let summary = terminate_all(&b, &Selection::all(), keep_going).await.unwrap();
        assert_eq!(
            (summary.done, summary.matched, summary.interrupted),
            (n - 1100, n - 1100, false)
        );
        assert_eq!(
            summary.to_string(),
            "terminated 105 of 105; 0 failed, 0 skipped, 0 taken by another operation"
        );
        assert_eq!(b.counts().await.unwrap().spool, 0);
        // Stopped before anything: nothing changes.
        let id = orphan(&b, &[]).await;
        let summary = terminate_all(&b, &Selection::all(), |_| ControlFlow::Break(()))
            .await
            .unwrap();
        assert!(summary.interrupted && summary.done == 0);
        assert!(b.suspended(id).await.unwrap().is_some());
    }

    #[tokio::test]
    async fn bulk_over_nothing_missing_ids_and_its_own_suspensions() {
        let (_dir, b) = open().await;
        let nothing = SuspendedQuery {
            port: Some("nope".into()),
            ..SuspendedQuery::default()
        };
        let e = resume_all(&b, &Selection::Query(nothing), keep_going)
            .await
            .unwrap_err();
        assert_eq!(e.to_string(), "no suspended message matches port `nope`");
        let summary = terminate_all(&b, &Selection::all(), keep_going).await.unwrap();
        assert_eq!(summary.matched, 0);

        let a = orphan(&b, &[]).await;
        let summary = terminate_all(&b, &Selection::Ids(vec![a, a, 999]), keep_going)
            .await
            .unwrap();
        // A named id that does not exist is a failure, not "taken".
        assert_eq!(
            (summary.matched, summary.done, summary.failed, summary.taken),
            (2, 1, 1, 0)
        );
        assert_eq!(
            summary.failures,
            vec![EntryFailure {
                id: 999,
                code: ErrorCode::NotFound,
                reason: GONE.to_string()
            }]
        );
        let e = summary.error().unwrap();
        assert_eq!((e.code(), e.http_status()), ("not_found", 404));
        let event = Event::Entry {
            done: 2,
            total: 2,
            id: 999,
            outcome: &Outcome::Missing,
        };
        assert_eq!(
            serde_json::to_value(&event).unwrap(),
            serde_json::json!({"event": "entry", "done": 2, "total": 2, "id": 999,
                "outcome": {"outcome": "failed", "code": "not_found", "reason": GONE}})
        );
        assert_eq!(
            e.to_string(),
            "1 of 2 suspended message(s) failed (1 terminated, 0 skipped, 0 taken by another operation)"
        );

        // Resubmitting what matches nothing suspends new entries: they are
        // not taken again by the same run (it ends), and a rerun finds them.
        for _ in 0..3 {
            orphan(&b, &[]).await;
        }
        let summary = resubmit_all(&b, &Selection::all(), &Edit::default(), keep_going)
            .await
            .unwrap();
        assert_eq!((summary.done, summary.matched), (3, 3));
        assert_eq!(suspended_count(&b).await, 3);
    }

    /// `n` entries with no subscriber, with property `key` = 0, 1, 2...;
    /// then a subscription `key` that takes them, so that they can be
    /// resumed as well as terminated.
    async fn resumable_orphans(b: &SqliteBox, key: &'static str, n: u64) {
        let mut tasks = Vec::new();
        for i in 0..n {
            let b = b.clone();
            tasks.push(tokio::spawn(async move {
                orphan(&b, &[(key, Value::from(i as i64))]).await
            }));
        }
        for t in tasks {
            t.await.unwrap();
        }
        b.subscribe(Subscription {
            subscriber: key.into(),
            filter: Filter::parse(&format!("{key} exists")).unwrap(),
        })
        .await
        .unwrap();
    }

    /// What a bulk run reported as it went: every entry accounted for by
    /// an event, once.
    #[derive(Debug, Default)]
    struct Reported {
        matched: Option<u64>,
        /// Entry events by outcome: done, failed, skipped, taken.
        entries: [u64; 4],
        /// Entries in Taken events (not reached).
        not_reached: u64,
        ranges: Vec<String>,
        last_done: u64,
    }

    impl Reported {
        fn event(&mut self, event: Event<'_>) -> ControlFlow<()> {
            match event {
                Event::Matched { total } => self.matched = Some(total),
                Event::Entry { done, outcome, .. } => {
                    let bucket = match outcome {
                        Outcome::Resumed(_) | Outcome::Resubmitted(_) | Outcome::Terminated => 0,
                        Outcome::Failed(_) | Outcome::Missing => 1,
                        Outcome::Skipped(_) => 2,
                        Outcome::Taken => 3,
                    };
                    self.entries[bucket] += 1;
                    self.last_done = done;
                }
                Event::Taken { done, taken, .. } => {
                    self.not_reached += taken.count;
                    self.ranges.push(taken.to_string());
                    self.last_done = done;
                }
            }
            ControlFlow::Continue(())
        }

        /// The summary adds up, and so do the events.
        fn check(&self, s: &Summary) {
            assert!(!s.interrupted, "{s}");
            assert_eq!(s.done + s.failed + s.skipped + s.taken, s.matched, "{s}");
            assert_eq!(self.matched, Some(s.matched), "{s}");
            assert_eq!(
                self.entries,
                [s.done, s.failed, s.skipped, s.taken - self.not_reached],
                "{s}"
            );
            assert_eq!(self.last_done, s.matched, "{s}");
        }
    }

    /// Two bulk runs at once over the same entries: each entry is done by
    /// one of them, and each run accounts for every entry it matched,
    /// those the other took included (before this fix, entries the other
    /// run took before this one read their page were in no count).
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn overlapping_bulk_runs_account_for_every_entry() {
        let (_dir, b) = open().await;
        let n = 3000;
        let all = Selection::all();

        // The same selection, resume beside terminate.
        resumable_orphans(&b, "i", n).await;
        let (mut r, mut t) = (Reported::default(), Reported::default());
        let (resumed, terminated) = tokio::join!(
            resume_all(&b, &all, |e| r.event(e)),
            terminate_all(&b, &all, |e| t.event(e))
        );
        let (resumed, terminated) = (resumed.unwrap(), terminated.unwrap());
        r.check(&resumed);
        t.check(&terminated);
        assert_eq!(resumed.done + terminated.done, n, "{resumed}\n{terminated}");
        assert_eq!((resumed.failed, terminated.failed), (0, 0));
        assert_eq!(suspended_count(&b).await, 0);

        // Every entry, beside half of them: the second run goes through its
        // half while the first is still on its first pages, so the first
        // finds later pages thinned out.
        resumable_orphans(&b, "j", n).await;
        let half = Selection::Query(SuspendedQuery {
            context: Some(Filter::parse("j >= 1500").unwrap()),
            ..SuspendedQuery::default()
        });
        let (mut r, mut t) = (Reported::default(), Reported::default());
        let (resumed, terminated) = tokio::join!(
            resume_all(&b, &all, |e| r.event(e)),
            terminate_all(&b, &half, |e| t.event(e))
        );
        let (resumed, terminated) = (resumed.unwrap(), terminated.unwrap());
        r.check(&resumed);
        t.check(&terminated);
        assert_eq!(resumed.matched, n);
        assert!(resumed.taken > 0, "{resumed}");
        assert_eq!(resumed.done + terminated.done, n, "{resumed}\n{terminated}");
        assert_eq!(suspended_count(&b).await, 0);
        assert!(
            resumed.to_string().ends_with(&format!(
                "; 0 failed, 0 skipped, {} taken by another operation",
                resumed.taken
            )),
            "{resumed}"
        );
    }

    /// Run `f` to its end from inside a progress callback (the run that
    /// called it waits).
    fn meanwhile<T>(f: impl std::future::Future<Output = T>) -> T {
        tokio::task::block_in_place(|| tokio::runtime::Handle::current().block_on(f))
    }

    /// Exactly which entries are taken, and when: some after the run read
    /// their page (each reported as taken), the rest of the run's later
    /// spans before it got there (reported as how many, between which ids).
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn entries_taken_before_the_run_reaches_them_are_counted() {
        let (_dir, b) = open().await;
        resumable_orphans(&b, "i", 2500).await;
        let ids = ids(&b, SuspendedQuery::default()).await;
        assert_eq!(ids.len(), 2500);
        // In the first page (read when the other run comes), half the
        // second, all of the third.
        let taken: Vec<i64> = ids[10..20]
            .iter()
            .chain(&ids[1200..1700])
            .chain(&ids[2000..])
            .copied()
            .collect();
        let mut reported = Reported::default();
        let mut other = None;
        let summary = resume_all(&b, &Selection::all(), |event| {
            if other.is_none() && matches!(event, Event::Entry { .. }) {
                other = Some(meanwhile(terminate_all(&b, &Selection::Ids(taken.clone()), keep_going)).unwrap());
            }
            reported.event(event)
        })
        .await
        .unwrap();
        reported.check(&summary);
        let other = other.unwrap();
        assert_eq!((other.matched, other.done), (1010, 1010));
        assert_eq!(
            (summary.matched, summary.done, summary.taken),
            (2500, 2500 - 1010, 1010)
        );
        assert_eq!(reported.entries[3], 10, "seen, then gone when acted on");
        assert_eq!(
            reported.ranges,
            [
                format!("#{}..#{}: 500 of 1000 taken by another operation", ids[1000], ids[1999]),
                format!("#{}..#{}: 500 of 500 taken by another operation", ids[2000], ids[2499]),
            ]
        );
        assert_eq!(
            summary.to_string(),
            "resumed 1490 of 2500; 0 failed, 0 skipped, 1010 taken by another operation"
        );
        assert_eq!(suspended_count(&b).await, 0);

        // Named ids: one that exists at the start and is gone when reached
        // was taken; it is not a failure.
        resumable_orphans(&b, "k", 2).await;
        let two = ids_of(&b).await;
        let mut other = None;
        let summary = terminate_all(&b, &Selection::Ids(two.clone()), |_| {
            if other.is_none() {
                other = Some(meanwhile(terminate(&b, two[1])));
            }
            ControlFlow::Continue(())
        })
        .await
        .unwrap();
        other.unwrap().unwrap();
        assert_eq!(
            summary.to_string(),
            "terminated 1 of 2; 0 failed, 0 skipped, 1 taken by another operation"
        );

        // Stopped at the last entry: the entries taken before the run got
        // there are counted, and the run is not "stopped".
        resumable_orphans(&b, "l", 3).await;
        let three = ids_of(&b).await;
        let summary = terminate_all(&b, &Selection::all(), |event| match event {
            Event::Matched { .. } => {
                meanwhile(terminate(&b, three[1])).unwrap();
                ControlFlow::Continue(())
            }
            Event::Entry { id, .. } if id == three[2] => ControlFlow::Break(()),
            _ => ControlFlow::Continue(()),
        })
        .await
        .unwrap();
        assert!(!summary.interrupted);
        assert_eq!(
            summary.to_string(),
            "terminated 2 of 3; 0 failed, 0 skipped, 1 taken by another operation"
        );
    }

    async fn ids_of(b: &SqliteBox) -> Vec<i64> {
        ids(b, SuspendedQuery::default()).await
    }
}
