//! The Sluice message box: the one trait every storage backend implements.
//!
//! The box holds messages (context + parts), subscriptions, one queue entry per
//! (message, matching subscriber), suspended messages, and reference counts.
//! Backends: `sluice-msgbox-sqlite` (embedded, the default). Every backend runs
//! the same [`conformance`] suite (feature `conformance`). Callers open a
//! box through the factory (`sluice-store`, by URL) and use it only through
//! [`MessageBox`], never a backend type.
//!
//! Architecture Invariant: only the message box commits. A caller may tell its
//! source "done" (delete a file, answer 202, ack a broker) only after
//! [`MessageBox::publish`] returned `Ok`; a backend returns `Ok` only after the
//! publish is durable (synced to disk). At-least-once end to end.
//!
//! Architecture Invariant: a message lives exactly as long as something
//! references it. Every queue entry, every suspended entry and every named
//! holder ([`MessageBox::hold`]) is one reference. The operation that drops
//! the last reference deletes the message, its parts and their content in the
//! same transaction; no background job is needed for correctness (seed 001).
//!
//! Architecture Invariant: an interchange (the records a disassembler split
//! from one document) becomes visible all at once. Its messages are
//! [staged](MessageBox::stage) in batches, invisible and not yet durable, and
//! [committed](MessageBox::commit_interchange) in one transaction; a crash
//! before the commit leaves nothing of it. Memory does not grow with the
//! number of records: the caller never holds more than one batch.
//!
//! Architecture Invariant: no message is dropped. A publish that matches no
//! subscription suspends the message ("no subscriber"); it can be resumed
//! once a matching subscription exists.
//!
//! Architecture Invariant: every suspension says where and why
//! ([`Failure`]: stage, component, error, and for a send port each attempt
//! with its time), and publishes a **fault message** in the same
//! transaction: the failed message's whole context, demoted (so it does not
//! route where the original went), plus promoted `fault.*` properties, and
//! the failed message's parts *shared* (the same content, no bytes copied).
//! Content lives while any part refers to it. A fault message that matches
//! no subscription is not stored (the suspended original is the record),
//! and the failure of a fault message makes no further fault message (no
//! loop while a fault handler is down). The rules of its context live in
//! [`fault`], for every backend.
//!
//! Architecture Invariant: work in progress belongs to a node. A handle is
//! opened for one node (its id); the leases it takes, the holds it takes and
//! the interchanges it stages carry that id, and [`MessageBox::recover`],
//! [`MessageBox::release_leases`] and [`MessageBox::held_by`] see only that
//! node's, so a node recovering from a crash never takes back the work of
//! another node sharing the box.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};

use async_trait::async_trait;
use serde::Serialize;
pub use sluice_content::{ChunkStore, ContentError, Part, PartBody};
pub use sluice_model::{Context, Filter, Key, MessageId};

#[cfg(feature = "conformance")]
pub mod conformance;
pub mod fault;
mod operators;
mod origin;
pub mod search;

pub use operators::{
    AuditEntry, NewAuditEntry, NewSession, NewToken, Role, SessionRecord, TokenRecord, UnitKind, UserRecord,
};
pub use origin::Origin;
pub use search::{MessageQuery, Page, SCAN_BUDGET, TrackingQuery};

/// Milliseconds since the Unix epoch.
pub type Millis = i64;

/// Where the box gets the time from (a manual clock in tests).
pub trait Clock: Send + Sync {
    fn now_ms(&self) -> Millis;
}

#[derive(Debug, Default, Clone, Copy)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now_ms(&self) -> Millis {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_millis() as Millis)
            .unwrap_or(0)
    }
}

/// A clock that moves only when told to.
#[derive(Debug)]
pub struct ManualClock(AtomicI64);

impl ManualClock {
    pub fn new(start: Millis) -> Arc<Self> {
        Arc::new(ManualClock(AtomicI64::new(start)))
    }
    pub fn advance(&self, ms: Millis) {
        self.0.fetch_add(ms, Ordering::SeqCst);
    }
}

impl Clock for ManualClock {
    fn now_ms(&self) -> Millis {
        self.0.load(Ordering::SeqCst)
    }
}

/// A message to publish. Its parts are already in the content store
/// (see [`sluice_content::write_part`]).
#[derive(Debug, Clone)]
pub struct NewMessage {
    pub id: MessageId,
    pub context: Context,
    pub parts: Vec<Part>,
}

/// Where a published (or resumed) message went.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub enum Routed {
    /// One queue entry per subscriber, in subscriber-name order.
    Queued(Vec<String>),
    /// No subscription matched; the message is suspended with reason "no subscriber".
    Suspended { suspended_id: i64 },
}

pub const NO_SUBSCRIBER: &str = "no subscriber";
pub const SUBSCRIBER_REMOVED: &str = "subscriber removed";

/// The namespace of the properties a fault message carries.
pub const FAULT_NS: &str = "fault";

/// Stage names the box itself uses.
pub mod stage {
    /// Routing at publish: no subscription matched.
    pub const ROUTE: &str = "route";
    /// A subscription was removed while entries were queued for it.
    pub const UNSUBSCRIBE: &str = "unsubscribe";
    /// A send port's transport (its adapter) failed.
    pub const TRANSMIT: &str = "transmit";
    /// A receive location's adapter or pipeline failed.
    pub const RECEIVE: &str = "receive";
}

/// Where and why a message failed: what a suspended entry records and its
/// fault message carries as `fault.*`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Failure {
    /// The error, as an operator should read it.
    pub error: String,
    /// Where in the processing it failed, lowercase: `transmit`, `route`,
    /// `unsubscribe`, `lease`, `receive`, or the receive pipeline's stage
    /// (`decode`, `disassemble`, `validate`). See [`stage`].
    pub stage: String,
    /// What failed, lowercase, as stored and as filters compare it
    /// (`fault.component == "file"`): for `transmit` the send adapter's
    /// `type` (`file`, `http`) or `reply` (a request-response location's
    /// responses); for a pipeline stage its component (`gzip`, `zstd`;
    /// `xml`, `json`, `csv`, `lines`; `rule`); `message box` for `route`,
    /// `unsubscribe` and `lease`; `receive location` for `receive`. The
    /// README lists them per stage ("Suspended messages and fault
    /// messages").
    pub component: String,
    /// The receive location, for a failure on the receive side.
    pub location: Option<String>,
    /// The transport that made the attempt, for a send port with a backup
    /// (`primary` or `backup`).
    pub transport: Option<String>,
    /// The message as it is cannot get past the component (a send port's
    /// macro needs a property it lacks): its suspended entry is not
    /// resumable, and a resubmission with an edited context is the way.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub needs_edit: bool,
    /// How far a delivery in parts had got when it failed (a mail to
    /// several recipients: those the server already took), in the send
    /// adapter's own words. Kept on the entry, by a nack or with the
    /// suspended entry, and handed back with its next lease
    /// ([`Leased::progress`]), after a resume too, so the next attempt does
    /// only what is left. `None` keeps what the entry had.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub progress: Option<String>,
}

impl Failure {
    pub fn new(stage: &str, component: &str, error: impl Into<String>) -> Self {
        Failure {
            error: error.into(),
            stage: stage.to_string(),
            component: component.to_string(),
            location: None,
            transport: None,
            needs_edit: false,
            progress: None,
        }
    }
    /// See [`progress`](Self::progress).
    pub fn with_progress(mut self, progress: Option<String>) -> Self {
        self.progress = progress;
        self
    }
    pub fn at_location(mut self, location: &str) -> Self {
        self.location = Some(location.to_string());
        self
    }
    pub fn by_transport(mut self, transport: &str) -> Self {
        self.transport = Some(transport.to_string());
        self
    }
    /// See [`needs_edit`](Self::needs_edit).
    pub fn needing_edit(mut self) -> Self {
        self.needs_edit = true;
        self
    }
}

/// One failed delivery attempt of a queue entry (kept while the message is
/// in the box, shown with its suspended entry).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct AttemptInfo {
    /// 1 for the first attempt; counting restarts after a resume.
    pub attempt: u32,
    /// When it failed.
    pub at: Millis,
    pub transport: Option<String>,
    pub error: String,
}

/// Which suspended entries to list: every given field must match.
#[derive(Debug, Clone, Default)]
pub struct SuspendedQuery {
    /// The subscriber (send port) it was going to.
    pub port: Option<String>,
    /// The receive location it came in by (its `receive.location`, or the
    /// location that rejected it).
    pub location: Option<String>,
    pub stage: Option<String>,
    /// Text the error contains (case-insensitive).
    pub error_contains: Option<String>,
    /// Suspended at or after (ms).
    pub since: Option<Millis>,
    /// Suspended before (ms).
    pub until: Option<Millis>,
    /// A filter on the message's context, as subscriptions write it; unlike
    /// a subscription it sees every property, promoted or not.
    pub context: Option<Filter>,
    pub resumable: Option<bool>,
}

/// What to change when resubmitting (see [`MessageBox::resubmit`]).
#[derive(Debug, Clone, Default)]
pub struct Resubmission {
    /// The context to publish with; `None` keeps the original exactly.
    pub context: Option<Context>,
    /// New parts (already in the content store, finished); `None` shares the
    /// original's parts (no bytes copied).
    pub parts: Option<Vec<Part>>,
}

/// What a resubmission did.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Resubmitted {
    /// The new message.
    #[cfg_attr(feature = "openapi", schema(value_type = String))]
    pub message_id: MessageId,
    pub routed: Routed,
}

/// A tracking event: what happened to a message that has been in the box.
///
/// Architecture Invariant: a tracking event is written in the transaction
/// that makes the change it records (no event without the change, no
/// change without its event, while tracking is on).
#[derive(Debug, Clone, PartialEq, Serialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct TrackingEvent {
    pub id: i64,
    #[cfg_attr(feature = "openapi", schema(value_type = String))]
    pub message_id: MessageId,
    pub at: Millis,
    /// One of [`tracked`]: `received` (published: it became visible in the
    /// box; `detail` says what it was at its source, see [`Origin`]),
    /// `suspended` (`detail`: the error), `resumed` (queued again;
    /// `detail`: the subscribers, comma-separated), `delivered` (a
    /// subscriber acknowledged it; `detail`: where it went, as the send
    /// adapter said, see [`Ack`]), `terminated` (an operator removed a
    /// suspended entry; `detail`: its reason), `resubmitted` (published
    /// again as `detail`), `completed` (it left the box: its last reference
    /// went; with a subscriber when that subscriber's delivery was the last
    /// reference, which then has no `delivered` event of its own, and
    /// carries its `detail`).
    pub event: String,
    /// The send port (subscriber) where it happened, if any: the one that
    /// delivered it, or that it was suspended at, resumed to or
    /// terminated at; for a solicit-response answer's `received`, the send
    /// port that received it.
    pub subscriber: Option<String>,
    /// The receive location where it happened, if any: the one it came in
    /// by (`received`), or that refused it (`suspended`).
    pub location: Option<String>,
    pub detail: Option<String>,
    /// The message's context, on `completed` events.
    #[serde(skip)]
    pub context: Option<Context>,
}

/// Tracking kinds (see [`TrackingEvent::event`]).
pub mod tracked {
    pub const RECEIVED: &str = "received";
    pub const SUSPENDED: &str = "suspended";
    pub const RESUMED: &str = "resumed";
    pub const DELIVERED: &str = "delivered";
    pub const TERMINATED: &str = "terminated";
    pub const RESUBMITTED: &str = "resubmitted";
    pub const COMPLETED: &str = "completed";
}

/// One message of an interchange, written before the interchange is committed.
#[derive(Debug, Clone)]
pub struct StagedMessage {
    pub message: NewMessage,
    /// Take a reference named so as the message is written (like
    /// [`MessageBox::publish_holding`]).
    pub holder: Option<String>,
    /// Suspend it, not resumable, with this failure instead of routing it
    /// (a bad record of a recoverable interchange).
    pub suspend: Option<Failure>,
}

/// What committing an interchange did.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct InterchangeRouted {
    /// Messages made visible (routed or suspended).
    pub messages: u64,
    /// Queue entries made, per subscriber.
    pub queued: BTreeMap<String, u64>,
    /// Messages suspended: bad records, and records no subscription matched.
    pub suspended: u64,
    /// Of those, suspended because no subscription matched (resumable).
    pub no_subscriber: u64,
}

/// A subscriber (send port, orchestration) and the filter it takes messages by.
#[derive(Debug, Clone, PartialEq)]
pub struct Subscription {
    pub subscriber: String,
    pub filter: Filter,
}

pub type EntryId = i64;

/// Proof of a lease on a queue entry. A token stops working when the entry is
/// acknowledged, nacked or suspended with it, or leased again by someone else
/// after the lease expired.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
pub struct LeaseToken {
    pub entry: EntryId,
    pub generation: u32,
}

/// One acknowledgement of [`MessageBox::ack_many`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Ack {
    pub token: LeaseToken,
    /// Where the message went, as the send adapter said it (a path, a URL,
    /// a mail's Message-ID and the server's answer): the detail of its
    /// tracking event.
    pub delivered_to: Option<String>,
}

impl From<LeaseToken> for Ack {
    fn from(token: LeaseToken) -> Ack {
        Ack {
            token,
            delivered_to: None,
        }
    }
}

/// A leased queue entry, with the message context.
#[derive(Debug, Clone)]
pub struct Leased {
    pub token: LeaseToken,
    /// What an earlier attempt recorded of a delivery in parts
    /// ([`Failure::progress`]); `None` on a first attempt.
    pub progress: Option<String>,
    pub subscriber: String,
    pub message_id: MessageId,
    pub context: Context,
    /// The attempt's position: 1 on the first delivery, 2 on the first
    /// redelivery, and so on, except that a fail-over
    /// ([`MessageBox::nack_to_attempt`]) skips positions forward. Attempts
    /// made are what the history and the suspended entry count.
    pub attempt: u32,
    pub lease_until: Millis,
    /// The message's parts, read with the lease
    /// ([`MessageBox::lease_with_bodies`]): only when every body is inline
    /// (small) and within the call's byte budget. `None`: read them with
    /// [`MessageBox::parts`].
    pub parts: Option<Vec<Part>>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Counts {
    /// Messages in the box.
    pub spool: u64,
    /// Queue entries per subscriber (waiting, leased or waiting for a retry).
    pub queued: BTreeMap<String, u64>,
    /// Suspended entries.
    pub suspended: u64,
    /// Bytes the messages in the box take: stored content once, however
    /// many parts share it (fault messages, resubmissions), plus inline bodies.
    pub content_bytes: u64,
    /// Stored (non-inline) content chunks, finished or not.
    pub content_chunks: u64,
}

#[derive(Debug, Clone, Serialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct QueueEntryInfo {
    pub entry: EntryId,
    pub subscriber: String,
    pub visible_at: Millis,
    pub leased: bool,
    pub attempts: u32,
    pub last_error: Option<String>,
}

/// Characters of an error that group suspended entries (see
/// [`MessageBox::suspended_groups`]): errors that differ only after them
/// (a file name, an id at the end) fall in one group.
pub const GROUP_ERROR_CHARS: usize = 120;

/// Suspended entries that stopped at one place with one error.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct SuspendedGroup {
    /// The send port, for a send-side failure.
    pub port: Option<String>,
    /// The receive location, for a receive-side one.
    pub location: Option<String>,
    /// The error's first [`GROUP_ERROR_CHARS`] characters.
    pub error: String,
    pub count: u64,
    /// When the oldest and the newest of them were suspended (ms).
    pub first: Millis,
    pub last: Millis,
}

#[derive(Debug, Clone, Serialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct SuspendedInfo {
    pub id: i64,
    #[cfg_attr(feature = "openapi", schema(value_type = String))]
    pub message_id: MessageId,
    /// The subscriber it was going to, or none for "no subscriber".
    pub subscriber: Option<String>,
    /// The error (the last one, for a send port).
    pub reason: String,
    pub stage: String,
    pub component: String,
    /// The receive location, for a receive-side failure.
    pub location: Option<String>,
    /// The transport of the last attempt (send ports with a backup).
    pub transport: Option<String>,
    pub attempts: u32,
    pub suspended_at: Millis,
    /// False for messages a receive pipeline rejected (they can be
    /// inspected, resubmitted with a new body, and terminated, not resumed)
    /// and for those a send port cannot send as they are
    /// ([`Failure::needs_edit`]: resubmitted with an edited context).
    pub resumable: bool,
    /// Each failed attempt, oldest first (send ports).
    pub history: Vec<AttemptInfo>,
}

#[derive(Debug, Clone)]
pub struct MessageInfo {
    pub id: MessageId,
    pub created_at: Millis,
    pub context: Context,
    pub parts: Vec<Part>,
    pub refs: u32,
    pub queue: Vec<QueueEntryInfo>,
    pub suspended: Vec<SuspendedInfo>,
    pub holders: Vec<String>,
}

#[derive(Debug, Clone, Serialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct MessageSummary {
    #[cfg_attr(feature = "openapi", schema(value_type = String))]
    pub id: MessageId,
    pub created_at: Millis,
    pub refs: u32,
    pub parts: u32,
    pub size: u64,
}

#[derive(Debug, thiserror::Error)]
pub enum BoxError {
    #[error(
        "the lease on queue entry {entry} is no longer held (it was acknowledged, nacked or suspended, or it expired and was leased again)"
    )]
    LeaseLost { entry: EntryId },
    #[error("message {0} is not in the box")]
    NoSuchMessage(MessageId),
    #[error("message {0} is already in the box")]
    Duplicate(MessageId),
    #[error("suspended entry {0} does not exist (it was resumed or terminated, or never existed)")]
    NoSuchSuspended(i64),
    #[error("suspended entry {id} is not resumable: {reason}")]
    NotResumable { id: i64, reason: String },
    #[error("suspended entry {id} was rejected on receipt ({reason}); it can be resubmitted only with a new body")]
    NeedsNewBody { id: i64, reason: String },
    #[error("no subscription named `{0}`")]
    NoSuchSubscriber(String),
    #[error("message {message} still matches no subscription; it stays suspended")]
    StillNoSubscriber { message: MessageId },
    #[error("message {message} is not held by `{holder}`")]
    NotHeld { message: MessageId, holder: String },
    #[error("part `{part}` of message {message} refers to content {content} that is not finished")]
    UnfinishedContent {
        message: MessageId,
        part: String,
        content: i64,
    },
    #[error("user `{0}` already exists")]
    UserExists(String),
    #[error("no user named `{0}`")]
    NoSuchUser(String),
    #[error("token `{0}` already exists")]
    TokenExists(String),
    #[error("user `{0}` is the last admin; add another admin before removing them")]
    LastAdmin(String),
    #[error(transparent)]
    Content(#[from] ContentError),
    #[error("message box storage failed while {doing}: {detail}")]
    Storage { doing: String, detail: String },
    #[error("the message box is closed")]
    Closed,
}

pub type Result<T, E = BoxError> = std::result::Result<T, E>;

/// What [`MessageBox::recover`] took back of the node's previous run.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct Recovered {
    /// Queue entries the node had leased, ready again now.
    pub leases: u64,
    /// Staged messages of interchanges the node never committed, discarded.
    pub staged: u64,
    /// Content the node wrote but never published, discarded.
    pub contents: u64,
}

/// How many commits the box made for how many changes (group commit), for
/// benchmarks; backends that do not count say `None`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct CommitStats {
    /// Changes (jobs) committed.
    pub jobs: u64,
    /// Transactions committed.
    pub commits: u64,
    /// Of those, synced to disk.
    pub synced_commits: u64,
}

/// The message box. See the crate docs for the invariants every backend keeps.
#[async_trait]
pub trait MessageBox: Send + Sync {
    /// The chunk store that part bodies are written to before publishing.
    fn content(&self) -> Arc<dyn ChunkStore>;

    /// Store the message and one queue entry per matching subscription, in one
    /// transaction, durable before this returns. No match: suspended.
    async fn publish(&self, msg: NewMessage) -> Result<Routed>;
    /// [`publish`](Self::publish), and in the same transaction take a
    /// reference named `holder` (as [`hold`](Self::hold) would). A source
    /// holds what it published until its own copy is gone, so the message
    /// cannot vanish before then, whatever the send ports do.
    async fn publish_holding(&self, msg: NewMessage, holder: &str) -> Result<Routed>;
    /// Store a message that must not be routed (a receive pipeline rejected
    /// it): suspended at once with `reason`, held by `holder` like
    /// [`publish_holding`](Self::publish_holding), and **not resumable**
    /// (its bytes are not what the subscribers expect). Returns the suspended id.
    async fn publish_suspended(&self, msg: NewMessage, holder: &str, failure: &Failure) -> Result<i64>;

    /// Write messages of the interchange `interchange` without making them
    /// visible: nothing is queued or suspended, no subscriber can see them,
    /// and `message`, `hold`, `held_by` and `release` do not see them either,
    /// until [`commit_interchange`](Self::commit_interchange) (they count in
    /// `counts().spool`, which is storage). The whole batch is checked first
    /// (duplicate ids, unfinished content): a refused batch writes nothing. Routing is
    /// decided here, against the subscriptions of the moment. Not durable on
    /// its own: a node that restarts discards every interchange it left
    /// uncommitted (see [`recover`](Self::recover)).
    /// Call it with batches, in record order.
    async fn stage(&self, interchange: MessageId, messages: Vec<StagedMessage>) -> Result<()>;
    /// Make every staged message of `interchange` visible in one durable
    /// transaction: queued to its subscribers, or suspended (a bad record;
    /// "no subscriber"), in the order staged. Committing an interchange that
    /// has nothing staged does nothing.
    async fn commit_interchange(&self, interchange: MessageId) -> Result<InterchangeRouted>;
    /// Drop every staged message of `interchange` and its content. Returns how many.
    async fn abort_interchange(&self, interchange: MessageId) -> Result<u64>;

    /// Add or replace a subscription. Existing queue entries are unchanged.
    async fn subscribe(&self, sub: Subscription) -> Result<()>;
    /// Remove a subscription; its queue entries become suspended entries
    /// ("subscriber removed") so nothing is lost, each with its fault
    /// message (routed without the removed subscription). Returns how many.
    async fn unsubscribe(&self, subscriber: &str) -> Result<u64>;
    async fn subscriptions(&self) -> Result<Vec<Subscription>>;

    /// Lease up to `max` ready entries (visible at or before now) of a
    /// subscriber, oldest-visible first, until now + `lease_for_ms`.
    async fn lease(&self, subscriber: &str, max: usize, lease_for_ms: Millis) -> Result<Vec<Leased>>;
    /// [`lease`](Self::lease), and with the entries, in order, the parts of
    /// their messages ([`Leased::parts`]): of each message whose bodies are
    /// all inline, until the first whose inline bytes would take the total
    /// handed out past `bodies_up_to` (none after it). A sender of small
    /// messages reads nothing more (no round trip per message), and what it
    /// holds ahead of its deliveries stays bounded. A backend that cannot
    /// (the default) leases only.
    async fn lease_with_bodies(
        &self,
        subscriber: &str,
        max: usize,
        lease_for_ms: Millis,
        bodies_up_to: u64,
    ) -> Result<Vec<Leased>> {
        let _ = bodies_up_to;
        self.lease(subscriber, max, lease_for_ms).await
    }
    /// Keep a lease: the entry stays invisible until now + `lease_for_ms`.
    /// A worker renews while it is still working on a long delivery, so the
    /// entry is not handed out a second time meanwhile.
    async fn renew(&self, token: LeaseToken, lease_for_ms: Millis) -> Result<Millis>;
    /// Done with the entry: delete it and release its reference.
    async fn ack(&self, token: LeaseToken) -> Result<()> {
        let mut all = self.ack_many(&[Ack::from(token)]).await?;
        all.pop().unwrap_or(Err(BoxError::Closed))
    }
    /// [`ack`](Self::ack) each entry, together (one commit, one round trip
    /// to the backend), tracking each one's [`Ack::delivered_to`] as the
    /// detail of its `delivered` (or `completed`) event: the outcome of
    /// each, in order. `Err`: none was acknowledged (the backend failed); a
    /// token whose lease is lost gets [`BoxError::LeaseLost`] and the
    /// others are acknowledged all the same.
    async fn ack_many(&self, acks: &[Ack]) -> Result<Vec<Result<()>>>;
    /// Give the entry back, ready again at `retry_at`; the failed attempt
    /// is recorded (its number, time, transport and error).
    async fn nack(&self, token: LeaseToken, retry_at: Millis, failure: &Failure) -> Result<()>;
    /// [`nack`](Self::nack), and count its next lease as attempt
    /// `next_attempt` (a send port giving up on its primary transport skips
    /// to its backup's first attempt). An attempt number not after the
    /// token's is ignored: attempts only move forward.
    async fn nack_to_attempt(
        &self,
        token: LeaseToken,
        retry_at: Millis,
        failure: &Failure,
        next_attempt: u32,
    ) -> Result<()>;
    /// Move a leased entry to the suspended list (the reference moves with
    /// it), recording the failed attempt, and publish its fault message.
    /// Resumable unless the failure [needs an edit](Failure::needs_edit);
    /// either way it can be [resubmitted](Self::resubmit) with its parts.
    async fn suspend(&self, token: LeaseToken, failure: &Failure) -> Result<i64>;
    /// Make every entry leased by this handle's node ready now (its tokens
    /// stop working). Entries leased by other nodes sharing the box keep
    /// their leases.
    async fn release_leases(&self) -> Result<u64>;
    /// Take back what this node's previous run left, before the node starts
    /// work: its leases made ready now ([`release_leases`](Self::release_leases)),
    /// its uncommitted interchanges and the content it wrote but never
    /// published discarded (a backend may already have discarded those when
    /// it opened for the node; they are then counted here). Other nodes'
    /// work is left alone. Holds are released by their holders, which find
    /// this node's with [`held_by`](Self::held_by).
    async fn recover(&self) -> Result<Recovered>;

    /// Take a named reference on a message (e.g. an orchestration instance).
    /// Holding twice under one name is one reference. A staged message (of
    /// an interchange not yet committed) cannot be held: `NoSuchMessage`.
    async fn hold(&self, message: MessageId, holder: &str) -> Result<()>;
    /// Drop a named reference; the last reference deletes the message.
    async fn release(&self, message: MessageId, holder: &str) -> Result<()>;
    /// Messages held by `holder` through this node (holds its handles took),
    /// in id order, after `after`.
    /// Another node's holds under the same name are not listed.
    async fn held_by(&self, holder: &str, after: Option<MessageId>, limit: usize) -> Result<Vec<MessageId>>;

    /// Queue a suspended entry again: to its subscriber, or, for "no
    /// subscriber", to every subscription that matches now.
    async fn resume(&self, suspended: i64) -> Result<Routed>;
    /// Drop a suspended entry (and the message, if that was its last reference).
    async fn terminate(&self, suspended: i64) -> Result<()>;
    /// Publish the suspended entry's message again as a new message, with
    /// its original context (or an edited one) and its parts (shared, or new
    /// ones), routed against the subscriptions of now as any publish is; in
    /// the same transaction drop the suspended entry. An entry rejected on
    /// receipt (not resumable, no subscriber) needs new parts; a send
    /// port's entry that is not resumable (its failure needed an edit) does
    /// not.
    async fn resubmit(&self, suspended: i64, with: Resubmission) -> Result<Resubmitted>;
    /// One suspended entry, with its attempt history.
    async fn suspended(&self, id: i64) -> Result<Option<SuspendedInfo>>;

    async fn parts(&self, message: MessageId) -> Result<Vec<Part>>;
    async fn message(&self, id: MessageId) -> Result<Option<MessageInfo>>;
    /// Messages matching `query` in id (time) order, after `after`: at most
    /// `limit`, examining at most [`SCAN_BUDGET`] rows (see [`search`]).
    async fn list_messages(
        &self,
        query: &MessageQuery,
        after: Option<MessageId>,
        limit: usize,
    ) -> Result<Page<MessageSummary, MessageId>>;
    /// Suspended entries matching `query`, in id order, after `after`.
    async fn list_suspended(
        &self,
        query: &SuspendedQuery,
        after: Option<i64>,
        limit: usize,
    ) -> Result<Vec<SuspendedInfo>>;
    /// Suspended entries counted by where they stopped (send port, or
    /// receive location) and error (its first [`GROUP_ERROR_CHARS`]
    /// characters), the largest groups first, at most `limit` groups.
    async fn suspended_groups(&self, limit: usize) -> Result<Vec<SuspendedGroup>>;
    async fn counts(&self) -> Result<Counts>;

    /// Tracking events matching `query` in id order after `after`: at most
    /// `limit`, examining at most [`SCAN_BUDGET`] rows (see [`search`]).
    async fn tracking(
        &self,
        query: &TrackingQuery,
        after: Option<i64>,
        limit: usize,
    ) -> Result<Page<TrackingEvent, i64>>;
    /// Delete up to `limit` tracking events older than `before`; how many.
    async fn purge_tracking(&self, before: Millis, limit: usize) -> Result<u64>;

    // ---- operators: users, API tokens, the audit log ----------------------

    /// Add a user (`UserExists` if the name is taken). Durable.
    async fn add_user(&self, user: UserRecord) -> Result<()>;
    /// Remove a user and every token and session of theirs, in one transaction
    /// (`NoSuchUser` if absent; `LastAdmin` if they are the only admin, so
    /// that someone can always manage users); how many tokens went with
    /// them. Durable.
    async fn remove_user(&self, name: &str) -> Result<u64>;
    async fn user(&self, name: &str) -> Result<Option<UserRecord>>;
    /// Users in name order after `after`.
    async fn users(&self, after: Option<&str>, limit: usize) -> Result<Vec<UserRecord>>;
    /// Store a token's hash for a user (`NoSuchUser`, `TokenExists`). Durable.
    async fn add_token(&self, token: NewToken) -> Result<()>;
    /// The token with this SHA-256, with its user's role now; `None` if
    /// there is none (never made, revoked, or its user removed).
    async fn token(&self, hash: [u8; 32]) -> Result<Option<TokenRecord>>;
    /// Tokens (of one user or all) in id order.
    async fn tokens(&self, user: Option<&str>) -> Result<Vec<TokenRecord>>;
    /// Revoke a token by its id; whether there was one. Durable.
    async fn revoke_token(&self, id: &str) -> Result<bool>;
    /// Record an operator action; its id. Durable: an action is answered
    /// only once its record is on disk.
    async fn record_audit(&self, entry: NewAuditEntry) -> Result<i64>;
    /// Recorded actions, newest first, older than `before` (an id).
    async fn audit(&self, before: Option<i64>, limit: usize) -> Result<Vec<AuditEntry>>;
    /// Delete up to `limit` audit entries older than `before`; how many.
    async fn purge_audit(&self, before: Millis, limit: usize) -> Result<u64>;
    /// Mark a send port stopped or a receive location disabled by an
    /// operator (`stopped`), or clear the mark; whether it changed. Kept
    /// across restarts, whatever the configuration file says. Durable.
    async fn set_unit_stopped(&self, kind: UnitKind, name: &str, stopped: bool) -> Result<bool>;
    /// The units operators stopped, in kind and name order.
    async fn stopped_units(&self) -> Result<Vec<(UnitKind, String)>>;
    /// Start a browser session for a user (`NoSuchUser`). Durable.
    async fn add_session(&self, session: NewSession) -> Result<()>;
    /// The session whose id has this SHA-256, with its user's role now;
    /// `None` if there is none (never made, ended, its user removed). It
    /// is the caller's to judge its times.
    async fn session(&self, hash: [u8; 32]) -> Result<Option<SessionRecord>>;
    /// Note that a session was used at `at` (not synced: losing the last
    /// few in a crash only makes a session look idle a little earlier).
    async fn touch_session(&self, hash: [u8; 32], at: Millis) -> Result<()>;
    /// End a session; whether there was one. Durable.
    async fn remove_session(&self, hash: [u8; 32]) -> Result<bool>;
    /// Delete up to `limit` sessions that expired before `now`, or have not
    /// been used since `idle_before`; how many.
    async fn purge_sessions(&self, now: Millis, idle_before: Millis, limit: usize) -> Result<u64>;

    /// Commits made so far by this handle, where the backend counts them.
    fn commit_stats(&self) -> Option<CommitStats> {
        None
    }

    /// Finish pending work and release the storage. Further calls fail with `Closed`.
    async fn close(&self) -> Result<()>;
}
