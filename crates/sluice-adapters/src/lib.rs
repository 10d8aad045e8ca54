//! Adapters: how messages come in (sources) and go out (transmitters).
//!
//! Every adapter follows one pattern, like Vector's sources and sinks:
//!
//! 1. a **config struct** (serde, `deny_unknown_fields`) implementing
//!    [`ReceiveAdapter`] or [`SendAdapter`], registered by one line in the
//!    `adapters!` invocation below, which makes it a variant of
//!    [`ReceiveAdapterConfig`] or [`SendAdapterConfig`] chosen by `type`;
//! 2. **`build()`**, which validates the config and returns a [`Source`] or a
//!    [`Transmitter`];
//! 3. a **running task**: the host calls [`Source::run`] with a
//!    [`ReceiveContext`], or [`Transmitter::transmit`] once per message.
//!
//! Shared helpers (TLS, secrets, file names, decoding) are in [`support`];
//! the compliance kit every adapter's tests run is `kit` (feature `kit`).
//! The contract is `docs/adapters.md`.
//!
//! Adapters know nothing of the message box. A source hands each inbound body
//! to its [`Publisher`], acknowledges its peer only when that returns `Ok`,
//! and then tells the publisher it has [settled](Publisher::settled).
//!
//! Architecture Invariant: a source takes new work only once
//! [`Admission::admit`] let it in (the host's throttle), and holds the
//! admission until the work is published or given back.
//!
//! Architecture Invariant: only the message box commits. A source deletes,
//! acknowledges or answers its peer only after [`Publisher::submit`] returned
//! `Ok` (the message is durable); on any error it leaves the source in place,
//! or restores it, so it is retried.

#[cfg(feature = "chaos")]
pub mod chaos;
#[cfg(feature = "file")]
pub mod file;
#[cfg(feature = "ftp")]
pub mod ftp;
#[cfg(feature = "http")]
pub mod http;
#[cfg(feature = "imap")]
pub mod imap;
#[cfg(any(test, feature = "kit"))]
pub mod kit;
pub mod macros;
#[cfg(feature = "pop3")]
pub mod pop3;
mod registry;
#[cfg(feature = "sftp")]
pub mod sftp;
#[cfg(feature = "smtp")]
pub mod smtp;
pub mod support;

use std::sync::Arc;

use async_trait::async_trait;
pub use registry::{Claim, Exchange, Need, ReceiveAdapter, Resource, SendAdapter};
use sluice_model::{Context, MessageId};
pub use sluice_pipeline::Body;
pub use tokio_util::sync::CancellationToken;

/// Why a submission was not published.
#[derive(Debug, thiserror::Error)]
#[error("{message}")]
pub struct SubmitError {
    pub message: String,
    /// The content was refused by a pipeline stage (corrupt, truncated, over
    /// a limit): trying again will not help. The source should be stored as
    /// it is, suspended, with this error ([`Publisher::suspend`]).
    pub rejected: bool,
    /// The pipeline stage that refused it (`decode`, `disassemble`...).
    pub stage: Option<String>,
    /// The component of that stage (`gzip`, `xml`...).
    pub component: Option<String>,
}

impl SubmitError {
    pub fn new(message: impl Into<String>) -> Self {
        SubmitError {
            message: message.into(),
            rejected: false,
            stage: None,
            component: None,
        }
    }
    pub fn rejected(message: impl Into<String>) -> Self {
        SubmitError {
            message: message.into(),
            rejected: true,
            stage: None,
            component: None,
        }
    }
    /// Rejected by `component` of pipeline stage `stage`.
    pub fn rejected_in(stage: &str, component: &str, message: impl Into<String>) -> Self {
        SubmitError {
            stage: Some(stage.to_string()),
            component: Some(component.to_string()),
            ..SubmitError::rejected(message)
        }
    }
}

/// What a source's publisher did with a submission.
#[derive(Debug, Clone)]
pub struct Receipt {
    /// Ids of the messages published (or suspended) from this submission.
    pub messages: Vec<MessageId>,
    /// Some message found no subscriber and is suspended ("no subscriber"):
    /// a request-response location answers at once instead of waiting.
    pub unrouted: bool,
}

/// Runs the location's receive pipeline and publishes durably.
#[async_trait]
pub trait Publisher: Send + Sync {
    /// Publish `body` with `context` under the id `id`. `Ok` means durable:
    /// the source may now be deleted or acknowledged.
    async fn submit(&self, id: MessageId, context: Context, body: Body) -> Result<Receipt, SubmitError>;
    /// Store `body` as it is, unrouted, suspended with the error
    /// [`submit`](Self::submit) gave (the content was rejected), saying
    /// which stage and component refused it. `Ok` means durable; the source
    /// may then be deleted and settled.
    async fn suspend(
        &self,
        id: MessageId,
        context: Context,
        body: Body,
        error: &SubmitError,
    ) -> Result<Receipt, SubmitError>;
    /// [`submit`](Self::submit) for a source that keeps no copy of its own
    /// to settle (an HTTP request: answered once the publish is durable,
    /// never looked up again): its messages are published without a hold,
    /// so there is nothing to [`settle`](Self::settled) afterwards (one
    /// commit for the box instead of two). The default submits, then
    /// settles.
    async fn submit_unheld(&self, id: MessageId, context: Context, body: Body) -> Result<Receipt, SubmitError> {
        let receipt = self.submit(id, context, body).await?;
        if let Err(e) = self.settled(&receipt).await {
            // Published and durable all the same: the hold outlives it.
            tracing::warn!(message_id = %id, error = %e, "releasing the source's hold on a published message");
        }
        Ok(receipt)
    }
    /// The source's own copy of a submission is gone (file deleted, peer
    /// acknowledged): stop holding its messages. Until then the box keeps
    /// them, so [`is_published`](Self::is_published) stays reliable.
    async fn settled(&self, receipt: &Receipt) -> Result<(), SubmitError>;
    /// Whether message `id` is in the box (used to recover sources claimed
    /// before a crash: a published message is still held by its source;
    /// one submitted [unheld](Self::submit_unheld) may be delivered and
    /// gone, so this says nothing about it).
    async fn is_published(&self, id: MessageId) -> Result<bool, SubmitError>;
    /// Publish one message of several parts that come one after another
    /// from one stream (a mail: its text and its attachments): `parts`
    /// yields each in order, and each part's body is read to its end
    /// before the next is asked for. The part marked
    /// [`is_body`](IncomingPart::is_body) (the first such; an empty body
    /// when none is) runs through the location's pipeline and becomes the
    /// message's first part; the others are stored as they are, after it,
    /// in the order they came. An error from `parts` (a broken structure,
    /// the stream cut off) publishes nothing. Held as
    /// [`submit`](Self::submit)'s messages are. A pipeline that debatches
    /// takes a body alone: with other parts, the submission is refused.
    async fn submit_parts(
        &self,
        id: MessageId,
        context: Context,
        parts: &mut dyn PartSource,
    ) -> Result<Receipt, SubmitError>;
    /// The messages this location published and still holds (not yet
    /// [`settled`](Self::settled)), with their contexts, at most `max`: for
    /// a source that keeps its claims in the box instead of at its peer (a
    /// POP3 mailbox cannot rename a mail): in [`Source::recover`] it finds
    /// what a crash left published but not deleted by a property it
    /// promoted (the mail's UIDL).
    async fn held(&self, max: usize) -> Result<Vec<(MessageId, Context)>, SubmitError>;
    /// Where message `id` is now, in words: queued for whom, attempts,
    /// suspended where, or gone (delivered). Said when a request-response
    /// location gives up waiting (504). `detailed` (for the log, not for a
    /// client: a peer's error text can name internal hosts and paths) adds
    /// each last error and suspension reason.
    async fn whereabouts(&self, _id: MessageId, _detailed: bool) -> String {
        "not known".into()
    }
}

/// One part of a message that comes in parts ([`Publisher::submit_parts`]).
pub struct IncomingPart {
    /// The part's name in the message (a mail attachment's file name).
    pub name: String,
    pub body: Body,
    /// This part is the message's body: the one its pipeline reads.
    pub is_body: bool,
}

/// The parts of one message, one after another ([`Publisher::submit_parts`]).
#[async_trait]
pub trait PartSource: Send {
    /// The next part; `None` after the last, once the whole message was
    /// read and found sound. The previous part's body must have been read
    /// to its end.
    async fn next_part(&mut self) -> std::io::Result<Option<IncomingPart>>;
}

/// Admission to the host's in-flight budget (throttling). A source asks
/// before it takes each piece of work (claims a file, accepts a request) and
/// holds the [`Admitted`] until that work is published or given back.
#[async_trait]
pub trait Admission: Send + Sync {
    /// Wait until the host admits one message of about `bytes` (0 if not
    /// known in advance).
    async fn admit(&self, bytes: u64) -> Admitted;
}

/// The host's side of an admission: released when dropped; may count more
/// bytes in flight as they arrive.
pub trait Held: Send + Sync {
    /// Count `bytes` more in flight for this message (never waits).
    fn charge(&self, _bytes: u64) {}
}

impl Held for () {}

/// Holds one admitted message in flight; dropping it releases it.
pub struct Admitted {
    permit: Box<dyn Held>,
}

impl Admitted {
    /// Wrap the host's permit (whatever releases the admission when dropped).
    pub fn new(permit: impl Held + 'static) -> Self {
        Admitted {
            permit: Box::new(permit),
        }
    }

    /// Count `bytes` more in flight for the admitted message: a source that
    /// was admitted before it knew a body's size charges what arrives.
    pub fn charge(&self, bytes: u64) {
        self.permit.charge(bytes);
    }
}

impl std::fmt::Debug for Admitted {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Admitted")
    }
}

/// What a running source gets from the host.
#[derive(Clone)]
pub struct ReceiveContext {
    /// The node this location runs for (its `node_id`): what a source puts
    /// in the claims it makes on a folder other nodes may share, to tell
    /// its own from theirs.
    pub node: String,
    pub port: String,
    pub location: String,
    pub publisher: Arc<dyn Publisher>,
    /// The host's throttle: wait here before taking new work.
    pub admission: Arc<dyn Admission>,
    /// Cancelled when the node stops: take no new work, finish what is in flight.
    pub shutdown: CancellationToken,
}

impl ReceiveContext {
    /// The properties every receive location promotes: `receive.port`,
    /// `receive.location` and `received_at` (UTC timestamp).
    /// Every location's own properties, promoted: [`BASE_PROMOTES`].
    pub fn base_context(&self) -> Context {
        let mut ctx = Context::new();
        ctx.promote("receive", "port", self.port.as_str());
        ctx.promote("receive", "location", self.location.as_str());
        ctx.promote("", "received_at", time::OffsetDateTime::now_utc());
        ctx
    }
}

/// The properties every receive location promotes on every message
/// ([`ReceiveContext::base_context`]).
pub const BASE_PROMOTES: &[(&str, &str)] = &[("receive", "port"), ("receive", "location"), ("", "received_at")];

#[derive(Debug, thiserror::Error)]
pub enum AdapterError {
    #[error("invalid configuration: {0}")]
    Config(String),
    #[error("{doing}: {error}")]
    Io { doing: String, error: std::io::Error },
}

/// A running receive adapter.
#[async_trait]
pub trait Source: Send + Sync {
    /// Resolve what a previous run left half-done (claimed files...). The
    /// host calls this for every location before anything starts.
    async fn recover(&self, _cx: &ReceiveContext) {}
    /// Take what the location needs before the node runs (listen on its
    /// address...): an error here stops the node's start, naming the location.
    async fn bind(&mut self) -> Result<(), AdapterError> {
        Ok(())
    }
    /// A request-response location: the transmitter that hands each
    /// response routed back to it (`reply.to` = [`reply_subscriber`]) to the
    /// request waiting for it. The host runs it like a send port.
    fn replies(&self, _location: &str) -> Option<Arc<dyn Transmitter>> {
        None
    }
    /// Receive until `cx.shutdown` is cancelled, then finish in-flight work and return.
    async fn run(self: Box<Self>, cx: ReceiveContext) -> Result<(), AdapterError>;
}

/// A message on its way out.
#[derive(Debug, Clone)]
pub struct Outbound {
    pub id: MessageId,
    pub port: String,
    pub context: Context,
    pub attempt: u32,
    /// What an earlier attempt of a delivery in parts recorded
    /// ([`TransmitError::progress`]), kept by the box on this message's
    /// entry for this port, across retries, suspension and resume: the
    /// attempt does only what is left. `None` on a first attempt (and for
    /// a batch).
    pub progress: Option<String>,
}

/// Why a transmission failed, and whether trying again may help.
#[derive(Debug, thiserror::Error)]
#[error("{message}")]
pub struct TransmitError {
    pub retryable: bool,
    /// The message as it is can never be sent this way (it lacks a
    /// property the port needs): not retried, and its suspended entry is
    /// not resumable; resubmitting it with its context edited is the way.
    pub needs_edit: bool,
    pub message: String,
    /// A delivery in parts (a mail to several recipients) that did some of
    /// its parts before it failed says which, in its own words: the next
    /// attempt gets it as [`Outbound::progress`]. `None` keeps what the
    /// entry had.
    pub progress: Option<String>,
}

impl TransmitError {
    pub fn retry(message: impl Into<String>) -> Self {
        TransmitError {
            retryable: true,
            needs_edit: false,
            message: message.into(),
            progress: None,
        }
    }
    pub fn fatal(message: impl Into<String>) -> Self {
        TransmitError {
            retryable: false,
            needs_edit: false,
            message: message.into(),
            progress: None,
        }
    }
    /// Fatal, and caused by the message itself (see [`needs_edit`](Self::needs_edit)).
    pub fn needs_edit(message: impl Into<String>) -> Self {
        TransmitError {
            retryable: false,
            needs_edit: true,
            message: message.into(),
            progress: None,
        }
    }
    /// See [`progress`](Self::progress).
    pub fn with_progress(mut self, progress: Option<String>) -> Self {
        self.progress = progress;
        self
    }
}

/// What a transmitter did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Delivered {
    /// Delivered to this place (a path, a URL...).
    To(String),
    /// An identical copy was already there (most often written by an
    /// earlier attempt whose outcome was lost: a crash, an expired lease).
    AlreadyThere(String),
}

/// A peer's answer to a solicit-response transmission: it becomes a new
/// message, correlated to the request (`correlation.id`).
pub struct Response {
    /// Properties describing the answer (`http.status`...); the host adds the
    /// correlation properties.
    pub context: Context,
    /// The answer's body, streamed (never held whole).
    pub body: Body,
}

/// A part of a message after its first (the body), for a send adapter that
/// sends them all ([`Transmitter::sends_all_parts`]): read only when the
/// adapter reads it, streamed like the body.
pub struct OtherPart {
    /// The part's name (an attachment's file name, as its receive location
    /// named it).
    pub name: String,
    pub size: u64,
    pub body: Body,
}

/// A send adapter, called once per message.
#[async_trait]
pub trait Transmitter: Send + Sync {
    async fn transmit(&self, msg: &Outbound, body: Body) -> Result<Delivered, TransmitError>;
    /// Whether it sends every part of a message (SMTP: the others as
    /// attachments): the host then calls [`transmit_all`](Self::transmit_all)
    /// for a message of several parts. Otherwise only the first part is
    /// sent.
    fn sends_all_parts(&self) -> bool {
        false
    }
    /// [`transmit`](Self::transmit) with the message's other parts, in
    /// order, none of them read yet.
    async fn transmit_all(
        &self,
        msg: &Outbound,
        body: Body,
        others: Vec<OtherPart>,
    ) -> Result<Delivered, TransmitError> {
        drop(others);
        self.transmit(msg, body).await
    }
    /// Whether this transmitter is solicit-response: the host then calls
    /// [`solicit`](Self::solicit) and publishes the answer.
    fn solicits_response(&self) -> bool {
        false
    }
    /// Send and return the peer's answer, its body still streaming.
    async fn solicit(&self, _msg: &Outbound, _body: Body) -> Result<(Delivered, Response), TransmitError> {
        Err(TransmitError::fatal("this send adapter is one-way"))
    }
}

/// The property a request-response location stamps on each request
/// (`reply.to`), copied by a solicit-response send port onto the response;
/// and the property that ties a response to its request (`correlation.id`,
/// the request's id). See [`sluice_model::reply`].
pub use sluice_model::reply::{CORRELATION_ID, REPLY_TO};

/// The subscriber that takes the responses routed back to a request-response
/// receive location: `reply:<location>`.
pub fn reply_subscriber(location: &str) -> String {
    format!("reply:{location}")
}

// The adapters: one line each. A new adapter adds its module above (behind
// its feature) and its line here; see docs/adapters.md.
registry::adapters! {
    receive {
        #[cfg(feature = "file")] file => file::FileReceiveConfig,
        #[cfg(feature = "http")] http => http::HttpReceiveConfig,
        #[cfg(feature = "ftp")] ftp => ftp::FtpReceiveConfig,
        #[cfg(feature = "sftp")] sftp => sftp::SftpReceiveConfig,
        #[cfg(feature = "pop3")] pop3 => pop3::Pop3ReceiveConfig,
        #[cfg(feature = "imap")] imap => imap::ImapReceiveConfig,
    }
    send {
        #[cfg(feature = "file")] file => file::FileSendConfig,
        #[cfg(feature = "http")] http => http::HttpSendConfig,
        #[cfg(feature = "chaos")] chaos => chaos::ChaosSendConfig,
        #[cfg(feature = "ftp")] ftp => ftp::FtpSendConfig,
        #[cfg(feature = "sftp")] sftp => sftp::SftpSendConfig,
        #[cfg(feature = "smtp")] smtp => smtp::SmtpSendConfig,
    }
}
