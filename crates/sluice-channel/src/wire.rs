//! What crosses the channel: frames, the box's calls and their replies,
//! and the box's types in a form that does not depend on how the API
//! serializes them (postcard is positional: no skipped fields).
//!
//! Every frame is one postcard value, length-prefixed
//! ([`tokio_util::codec::LengthDelimitedCodec`]), at most [`MAX_FRAME`]
//! bytes: the largest call is a staged batch of an interchange (the
//! publisher caps one at a few MiB of inline bodies), the largest reply a
//! lease with its inline bodies or one chunk of content.

use bytes::Bytes;
use serde::{Deserialize, Serialize};
use sluice_content::{ContentError, ContentId, Part};
use sluice_model::{Context, MessageId};
use sluice_msgbox::{
    AttemptInfo, BoxError, EntryId, Failure, InterchangeRouted, LeaseToken, Leased, MessageInfo, Millis, NewMessage,
    QueueEntryInfo, Routed, StagedMessage, SuspendedInfo,
};

/// The largest frame either side sends or accepts (16 MiB); a longer
/// length prefix ends the connection.
pub const MAX_FRAME: usize = 16 << 20;

/// What the channel's protocol is called in the first frame; a peer of
/// another version is refused (the node and its instances are the same
/// binary, so they never differ but by a mistake).
pub const PROTOCOL: &str = concat!("sluice-channel/2 ", env!("CARGO_PKG_VERSION"));

/// A frame from an instance to its node.
#[derive(Debug, Serialize, Deserialize)]
pub enum ToNode {
    /// The first frame: who is calling.
    Hello(Hello),
    /// A call on the box; answered by a [`ToInstance::Reply`] with its id.
    Call { id: u64, call: Call },
    /// What the instance has done so far (sent every second).
    Stats(Stats),
}

/// A frame from the node to an instance.
#[derive(Debug, Serialize, Deserialize)]
pub enum ToInstance {
    /// The first frame, once: what to run.
    Start(Start),
    Reply {
        id: u64,
        reply: Result<Reply, WireError>,
    },
    /// A message was queued for this send port (a hint; ports also poll).
    Wake(String),
    /// Stop taking work, finish what is held, and exit.
    Drain,
}

/// What the node tells an instance right after its hello: what to run.
/// Its `Debug` leaves the configuration out (it may hold secrets).
#[derive(Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct Start {
    /// The node's configuration as it runs it (TOML): the instance runs
    /// what it says of its host, never a file changed since.
    pub config: String,
    /// The configuration file's path (for errors) and folder (relative
    /// paths start there).
    pub config_path: String,
    pub base_dir: String,
    /// Units operators stopped: (`send_port` or `receive_location`, name).
    pub stopped: Vec<(String, String)>,
}

impl std::fmt::Debug for Start {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Start")
            .field("config", &"***")
            .field("config_path", &self.config_path)
            .field("base_dir", &self.base_dir)
            .field("stopped", &self.stopped)
            .finish()
    }
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct Hello {
    pub protocol: String,
    /// The host the instance runs.
    pub host: String,
    pub pid: u32,
}

/// An instance's counters since it started, and its host's state.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct Stats {
    /// Messages each of its receive locations published (location, count).
    pub received: Vec<(String, u64)>,
    /// Messages each of its send ports delivered (port, count).
    pub delivered: Vec<(String, u64)>,
    /// Its host's throttle as it is now, as the node's status report
    /// writes a host (JSON), so the node can report it.
    pub host_status: String,
}

impl Stats {
    /// Messages it received and delivered, all together.
    pub fn handled(&self) -> u64 {
        self.received.iter().chain(&self.delivered).map(|(_, n)| n).sum()
    }
}

/// One call of the [`MessageBox`](sluice_msgbox::MessageBox) (or its chunk
/// store) that a host's units make.
#[derive(Debug, Serialize, Deserialize)]
pub enum Call {
    Publish(WireMessage),
    PublishHolding(WireMessage, String),
    PublishSuspended(WireMessage, String, WireFailure),
    Stage(Id, Vec<WireStaged>),
    CommitInterchange(Id),
    AbortInterchange(Id),
    Lease {
        subscriber: String,
        max: u32,
        lease_for_ms: Millis,
        bodies_up_to: u64,
    },
    Renew(WireToken, Millis),
    /// Each token, and where its message went ([`sluice_msgbox::Ack`]).
    AckMany(Vec<(WireToken, Option<String>)>),
    Nack(WireToken, Millis, WireFailure),
    NackToAttempt(WireToken, Millis, WireFailure, u32),
    Suspend(WireToken, WireFailure),
    Hold(Id, String),
    Release(Id, String),
    HeldBy(String, Option<Id>, u32),
    Suspended(i64),
    Parts(Id),
    Message(Id),
    Begin,
    PutChunk(ContentId, u32, Chunk),
    Finish {
        content: ContentId,
        size: u64,
        crc32: u32,
        chunks: u32,
    },
    Abort(ContentId),
    GetChunk(ContentId, u32),
}

impl Call {
    /// The call's name, for errors and logs.
    pub fn name(&self) -> &'static str {
        match self {
            Call::Publish(_) => "publish",
            Call::PublishHolding(..) => "publish_holding",
            Call::PublishSuspended(..) => "publish_suspended",
            Call::Stage(..) => "stage",
            Call::CommitInterchange(_) => "commit_interchange",
            Call::AbortInterchange(_) => "abort_interchange",
            Call::Lease { .. } => "lease",
            Call::Renew(..) => "renew",
            Call::AckMany(_) => "ack",
            Call::Nack(..) => "nack",
            Call::NackToAttempt(..) => "nack_to_attempt",
            Call::Suspend(..) => "suspend",
            Call::Hold(..) => "hold",
            Call::Release(..) => "release",
            Call::HeldBy(..) => "held_by",
            Call::Suspended(_) => "suspended",
            Call::Parts(_) => "parts",
            Call::Message(_) => "message",
            Call::Begin => "begin content",
            Call::PutChunk(..) => "put chunk",
            Call::Finish { .. } => "finish content",
            Call::Abort(_) => "abort content",
            Call::GetChunk(..) => "get chunk",
        }
    }
}

/// A call's answer; each call has one kind of reply.
#[derive(Debug, Serialize, Deserialize)]
pub enum Reply {
    Done,
    Routed(WireRouted),
    Number(i64),
    Count(u64),
    Interchange(WireInterchangeRouted),
    Leased(Vec<WireLeased>),
    Acks(Vec<Result<(), WireError>>),
    Ids(Vec<Id>),
    Parts(Vec<Part>),
    Message(Option<WireMessageInfo>),
    Suspended(Option<WireSuspended>),
    Chunk(Chunk),
}

/// A message id (its 16 bytes).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Id(pub [u8; 16]);

impl From<MessageId> for Id {
    fn from(id: MessageId) -> Id {
        Id(id.to_bytes())
    }
}

impl From<Id> for MessageId {
    fn from(id: Id) -> MessageId {
        MessageId::from_bytes(id.0)
    }
}

/// A chunk of content, as bytes (not a sequence of numbers).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Chunk(pub Bytes);

impl Serialize for Chunk {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_bytes(&self.0)
    }
}

impl<'de> Deserialize<'de> for Chunk {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Chunk, D::Error> {
        struct Visit;
        impl<'de> serde::de::Visitor<'de> for Visit {
            type Value = Chunk;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("bytes")
            }
            fn visit_bytes<E: serde::de::Error>(self, v: &[u8]) -> Result<Chunk, E> {
                Ok(Chunk(Bytes::copy_from_slice(v)))
            }
            fn visit_byte_buf<E: serde::de::Error>(self, v: Vec<u8>) -> Result<Chunk, E> {
                Ok(Chunk(Bytes::from(v)))
            }
        }
        d.deserialize_bytes(Visit)
    }
}

/// A context in its stored form ([`Context::to_json`]), which is
/// self-describing and reads back exactly.
fn context_from(json: &str) -> Result<Context, BoxError> {
    Context::from_json(json).map_err(|e| BoxError::Storage {
        doing: "reading a context sent over the host channel".into(),
        detail: e.to_string(),
    })
}

#[derive(Debug, Serialize, Deserialize)]
pub struct WireMessage {
    pub id: Id,
    pub context: String,
    pub parts: Vec<Part>,
}

impl From<&NewMessage> for WireMessage {
    fn from(m: &NewMessage) -> WireMessage {
        WireMessage {
            id: m.id.into(),
            context: m.context.to_json(),
            parts: m.parts.clone(),
        }
    }
}

impl WireMessage {
    pub fn into_message(self) -> Result<NewMessage, BoxError> {
        Ok(NewMessage {
            id: self.id.into(),
            context: context_from(&self.context)?,
            parts: self.parts,
        })
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct WireFailure {
    pub error: String,
    pub stage: String,
    pub component: String,
    pub location: Option<String>,
    pub transport: Option<String>,
    pub needs_edit: bool,
    pub progress: Option<String>,
}

impl From<&Failure> for WireFailure {
    fn from(f: &Failure) -> WireFailure {
        WireFailure {
            error: f.error.clone(),
            stage: f.stage.clone(),
            component: f.component.clone(),
            location: f.location.clone(),
            transport: f.transport.clone(),
            needs_edit: f.needs_edit,
            progress: f.progress.clone(),
        }
    }
}

impl From<WireFailure> for Failure {
    fn from(f: WireFailure) -> Failure {
        Failure {
            error: f.error,
            stage: f.stage,
            component: f.component,
            location: f.location,
            transport: f.transport,
            needs_edit: f.needs_edit,
            progress: f.progress,
        }
    }
}

#[derive(Debug, Clone, Copy, Serialize, Deserialize)]
pub struct WireToken {
    pub entry: EntryId,
    pub generation: u32,
}

impl From<LeaseToken> for WireToken {
    fn from(t: LeaseToken) -> WireToken {
        WireToken {
            entry: t.entry,
            generation: t.generation,
        }
    }
}

impl From<WireToken> for LeaseToken {
    fn from(t: WireToken) -> LeaseToken {
        LeaseToken {
            entry: t.entry,
            generation: t.generation,
        }
    }
}

#[derive(Debug, Serialize, Deserialize)]
pub enum WireRouted {
    Queued(Vec<String>),
    Suspended(i64),
}

impl From<Routed> for WireRouted {
    fn from(r: Routed) -> WireRouted {
        match r {
            Routed::Queued(s) => WireRouted::Queued(s),
            Routed::Suspended { suspended_id } => WireRouted::Suspended(suspended_id),
        }
    }
}

impl From<WireRouted> for Routed {
    fn from(r: WireRouted) -> Routed {
        match r {
            WireRouted::Queued(s) => Routed::Queued(s),
            WireRouted::Suspended(suspended_id) => Routed::Suspended { suspended_id },
        }
    }
}

#[derive(Debug, Serialize, Deserialize)]
pub struct WireStaged {
    pub message: WireMessage,
    pub holder: Option<String>,
    pub suspend: Option<WireFailure>,
}

impl From<&StagedMessage> for WireStaged {
    fn from(s: &StagedMessage) -> WireStaged {
        WireStaged {
            message: (&s.message).into(),
            holder: s.holder.clone(),
            suspend: s.suspend.as_ref().map(Into::into),
        }
    }
}

impl WireStaged {
    pub fn into_staged(self) -> Result<StagedMessage, BoxError> {
        Ok(StagedMessage {
            message: self.message.into_message()?,
            holder: self.holder,
            suspend: self.suspend.map(Into::into),
        })
    }
}

#[derive(Debug, Serialize, Deserialize)]
pub struct WireInterchangeRouted {
    pub messages: u64,
    pub queued: Vec<(String, u64)>,
    pub suspended: u64,
    pub no_subscriber: u64,
}

impl From<InterchangeRouted> for WireInterchangeRouted {
    fn from(r: InterchangeRouted) -> WireInterchangeRouted {
        WireInterchangeRouted {
            messages: r.messages,
            queued: r.queued.into_iter().collect(),
            suspended: r.suspended,
            no_subscriber: r.no_subscriber,
        }
    }
}

impl From<WireInterchangeRouted> for InterchangeRouted {
    fn from(r: WireInterchangeRouted) -> InterchangeRouted {
        InterchangeRouted {
            messages: r.messages,
            queued: r.queued.into_iter().collect(),
            suspended: r.suspended,
            no_subscriber: r.no_subscriber,
        }
    }
}

#[derive(Debug, Serialize, Deserialize)]
pub struct WireLeased {
    pub token: WireToken,
    pub progress: Option<String>,
    pub subscriber: String,
    pub message_id: Id,
    pub context: String,
    pub attempt: u32,
    pub lease_until: Millis,
    pub parts: Option<Vec<Part>>,
}

impl From<Leased> for WireLeased {
    fn from(l: Leased) -> WireLeased {
        WireLeased {
            token: l.token.into(),
            progress: l.progress,
            subscriber: l.subscriber,
            message_id: l.message_id.into(),
            context: l.context.to_json(),
            attempt: l.attempt,
            lease_until: l.lease_until,
            parts: l.parts,
        }
    }
}

impl WireLeased {
    pub fn into_leased(self) -> Result<Leased, BoxError> {
        Ok(Leased {
            token: self.token.into(),
            progress: self.progress,
            subscriber: self.subscriber,
            message_id: self.message_id.into(),
            context: context_from(&self.context)?,
            attempt: self.attempt,
            lease_until: self.lease_until,
            parts: self.parts,
        })
    }
}

#[derive(Debug, Serialize, Deserialize)]
pub struct WireAttempt {
    pub attempt: u32,
    pub at: Millis,
    pub transport: Option<String>,
    pub error: String,
}

impl From<AttemptInfo> for WireAttempt {
    fn from(a: AttemptInfo) -> WireAttempt {
        let AttemptInfo {
            attempt,
            at,
            transport,
            error,
        } = a;
        WireAttempt {
            attempt,
            at,
            transport,
            error,
        }
    }
}

impl From<WireAttempt> for AttemptInfo {
    fn from(a: WireAttempt) -> AttemptInfo {
        let WireAttempt {
            attempt,
            at,
            transport,
            error,
        } = a;
        AttemptInfo {
            attempt,
            at,
            transport,
            error,
        }
    }
}

#[derive(Debug, Serialize, Deserialize)]
pub struct WireSuspended {
    pub id: i64,
    pub message_id: Id,
    pub subscriber: Option<String>,
    pub reason: String,
    pub stage: String,
    pub component: String,
    pub location: Option<String>,
    pub transport: Option<String>,
    pub attempts: u32,
    pub suspended_at: Millis,
    pub resumable: bool,
    pub history: Vec<WireAttempt>,
}

impl From<SuspendedInfo> for WireSuspended {
    fn from(s: SuspendedInfo) -> WireSuspended {
        WireSuspended {
            id: s.id,
            message_id: s.message_id.into(),
            subscriber: s.subscriber,
            reason: s.reason,
            stage: s.stage,
            component: s.component,
            location: s.location,
            transport: s.transport,
            attempts: s.attempts,
            suspended_at: s.suspended_at,
            resumable: s.resumable,
            history: s.history.into_iter().map(Into::into).collect(),
        }
    }
}

impl From<WireSuspended> for SuspendedInfo {
    fn from(s: WireSuspended) -> SuspendedInfo {
        SuspendedInfo {
            id: s.id,
            message_id: s.message_id.into(),
            subscriber: s.subscriber,
            reason: s.reason,
            stage: s.stage,
            component: s.component,
            location: s.location,
            transport: s.transport,
            attempts: s.attempts,
            suspended_at: s.suspended_at,
            resumable: s.resumable,
            history: s.history.into_iter().map(Into::into).collect(),
        }
    }
}

#[derive(Debug, Serialize, Deserialize)]
pub struct WireQueueEntry {
    pub entry: EntryId,
    pub subscriber: String,
    pub visible_at: Millis,
    pub leased: bool,
    pub attempts: u32,
    pub last_error: Option<String>,
}

#[derive(Debug, Serialize, Deserialize)]
pub struct WireMessageInfo {
    pub id: Id,
    pub created_at: Millis,
    pub context: String,
    pub parts: Vec<Part>,
    pub refs: u32,
    pub queue: Vec<WireQueueEntry>,
    pub suspended: Vec<WireSuspended>,
    pub holders: Vec<String>,
}

impl From<MessageInfo> for WireMessageInfo {
    fn from(m: MessageInfo) -> WireMessageInfo {
        WireMessageInfo {
            id: m.id.into(),
            created_at: m.created_at,
            context: m.context.to_json(),
            parts: m.parts,
            refs: m.refs,
            queue: m
                .queue
                .into_iter()
                .map(|q| WireQueueEntry {
                    entry: q.entry,
                    subscriber: q.subscriber,
                    visible_at: q.visible_at,
                    leased: q.leased,
                    attempts: q.attempts,
                    last_error: q.last_error,
                })
                .collect(),
            suspended: m.suspended.into_iter().map(Into::into).collect(),
            holders: m.holders,
        }
    }
}

impl WireMessageInfo {
    pub fn into_info(self) -> Result<MessageInfo, BoxError> {
        Ok(MessageInfo {
            id: self.id.into(),
            created_at: self.created_at,
            context: context_from(&self.context)?,
            parts: self.parts,
            refs: self.refs,
            queue: self
                .queue
                .into_iter()
                .map(|q| QueueEntryInfo {
                    entry: q.entry,
                    subscriber: q.subscriber,
                    visible_at: q.visible_at,
                    leased: q.leased,
                    attempts: q.attempts,
                    last_error: q.last_error,
                })
                .collect(),
            suspended: self.suspended.into_iter().map(Into::into).collect(),
            holders: self.holders,
        })
    }
}

/// A [`BoxError`] (or [`ContentError`]) across the channel: the kinds the
/// host's units tell apart keep their kind; the rest keep their words.
#[derive(Debug, Serialize, Deserialize)]
pub enum WireError {
    LeaseLost(EntryId),
    NoSuchMessage(Id),
    Duplicate(Id),
    NoSuchSuspended(i64),
    NotResumable { id: i64, reason: String },
    NeedsNewBody { id: i64, reason: String },
    NoSuchSubscriber(String),
    StillNoSubscriber(Id),
    NotHeld { message: Id, holder: String },
    UnfinishedContent { message: Id, part: String, content: i64 },
    ContentSource { offset: u64, error: String },
    ContentTooLarge { limit: u64 },
    ContentStore { id: ContentId, what: String },
    ContentBackend(String),
    ContentCorrupt { id: ContentId, message: String },
    Storage { doing: String, detail: String },
    Closed,
}

impl From<&BoxError> for WireError {
    fn from(e: &BoxError) -> WireError {
        match e {
            BoxError::LeaseLost { entry } => WireError::LeaseLost(*entry),
            BoxError::NoSuchMessage(id) => WireError::NoSuchMessage((*id).into()),
            BoxError::Duplicate(id) => WireError::Duplicate((*id).into()),
            BoxError::NoSuchSuspended(id) => WireError::NoSuchSuspended(*id),
            BoxError::NotResumable { id, reason } => WireError::NotResumable {
                id: *id,
                reason: reason.clone(),
            },
            BoxError::NeedsNewBody { id, reason } => WireError::NeedsNewBody {
                id: *id,
                reason: reason.clone(),
            },
            BoxError::NoSuchSubscriber(s) => WireError::NoSuchSubscriber(s.clone()),
            BoxError::StillNoSubscriber { message } => WireError::StillNoSubscriber((*message).into()),
            BoxError::NotHeld { message, holder } => WireError::NotHeld {
                message: (*message).into(),
                holder: holder.clone(),
            },
            BoxError::UnfinishedContent { message, part, content } => WireError::UnfinishedContent {
                message: (*message).into(),
                part: part.clone(),
                content: *content,
            },
            BoxError::Content(c) => c.into(),
            BoxError::Storage { doing, detail } => WireError::Storage {
                doing: doing.clone(),
                detail: detail.clone(),
            },
            BoxError::Closed => WireError::Closed,
            other => WireError::Storage {
                doing: "calling the message box for a host instance".into(),
                detail: other.to_string(),
            },
        }
    }
}

impl From<&ContentError> for WireError {
    fn from(c: &ContentError) -> WireError {
        match c {
            ContentError::Source { offset, error } => WireError::ContentSource {
                offset: *offset,
                error: error.to_string(),
            },
            ContentError::TooLarge { limit } => WireError::ContentTooLarge { limit: *limit },
            ContentError::Store { id, what } => WireError::ContentStore {
                id: *id,
                what: what.clone(),
            },
            ContentError::Backend(s) => WireError::ContentBackend(s.clone()),
            ContentError::Corrupt { id, .. } => WireError::ContentCorrupt {
                id: *id,
                message: c.to_string(),
            },
        }
    }
}

impl From<WireError> for ContentError {
    fn from(e: WireError) -> ContentError {
        match e {
            WireError::ContentSource { offset, error } => ContentError::Source {
                offset,
                error: std::io::Error::other(error),
            },
            WireError::ContentTooLarge { limit } => ContentError::TooLarge { limit },
            WireError::ContentStore { id, what } => ContentError::Store { id, what },
            WireError::ContentBackend(s) => ContentError::Backend(s),
            // Its sizes and checksums are in the words; the kind is what
            // a reader acts on.
            WireError::ContentCorrupt { id, message } => ContentError::Store { id, what: message },
            other => ContentError::Backend(BoxError::from(other).to_string()),
        }
    }
}

impl From<WireError> for BoxError {
    fn from(e: WireError) -> BoxError {
        match e {
            WireError::LeaseLost(entry) => BoxError::LeaseLost { entry },
            WireError::NoSuchMessage(id) => BoxError::NoSuchMessage(id.into()),
            WireError::Duplicate(id) => BoxError::Duplicate(id.into()),
            WireError::NoSuchSuspended(id) => BoxError::NoSuchSuspended(id),
            WireError::NotResumable { id, reason } => BoxError::NotResumable { id, reason },
            WireError::NeedsNewBody { id, reason } => BoxError::NeedsNewBody { id, reason },
            WireError::NoSuchSubscriber(s) => BoxError::NoSuchSubscriber(s),
            WireError::StillNoSubscriber(id) => BoxError::StillNoSubscriber { message: id.into() },
            WireError::NotHeld { message, holder } => BoxError::NotHeld {
                message: message.into(),
                holder,
            },
            WireError::UnfinishedContent { message, part, content } => BoxError::UnfinishedContent {
                message: message.into(),
                part,
                content,
            },
            c @ (WireError::ContentSource { .. }
            | WireError::ContentTooLarge { .. }
            | WireError::ContentStore { .. }
            | WireError::ContentBackend(_)
            | WireError::ContentCorrupt { .. }) => BoxError::Content(c.into()),
            WireError::Storage { doing, detail } => BoxError::Storage { doing, detail },
            WireError::Closed => BoxError::Closed,
        }
    }
}

/// Encode a frame.
pub fn encode<T: Serialize>(frame: &T) -> Result<Bytes, postcard::Error> {
    postcard::to_stdvec(frame).map(Bytes::from)
}

/// Decode a frame.
pub fn decode<'a, T: Deserialize<'a>>(bytes: &'a [u8]) -> Result<T, postcard::Error> {
    postcard::from_bytes(bytes)
}

/// The codec both sides frame with.
pub fn codec() -> tokio_util::codec::LengthDelimitedCodec {
    tokio_util::codec::LengthDelimitedCodec::builder()
        .max_frame_length(MAX_FRAME)
        .new_codec()
}

#[cfg(test)]
mod tests {
    use super::*;
    use sluice_model::Value;

    #[test]
    fn a_message_crosses_exactly() {
        let mut context = Context::new();
        context.set("order", "id", Value::String("O-1".into()), true);
        context.set("n", "f", Value::Float(-0.0), false);
        let m = NewMessage {
            id: MessageId::new(),
            context,
            parts: vec![Part::inline("body", &b"hello"[..])],
        };
        let frame = ToNode::Call {
            id: 7,
            call: Call::PublishHolding((&m).into(), "in".into()),
        };
        let bytes = encode(&frame).unwrap();
        let ToNode::Call {
            id: 7,
            call: Call::PublishHolding(wire, holder),
        } = decode(&bytes).unwrap()
        else {
            panic!("another frame came back")
        };
        assert_eq!(holder, "in");
        let back = wire.into_message().unwrap();
        assert_eq!(back.id, m.id);
        assert_eq!(back.context, m.context);
        assert_eq!(back.parts, m.parts);
    }

    #[test]
    fn a_chunk_crosses_as_bytes() {
        let data = Bytes::from(vec![7u8; 300_000]);
        let bytes = encode(&Call::PutChunk(3, 1, Chunk(data.clone()))).unwrap();
        // One length prefix and a few bytes of header: no byte became a number.
        assert!(bytes.len() < 300_000 + 16, "{} bytes", bytes.len());
        let Call::PutChunk(3, 1, Chunk(back)) = decode(&bytes).unwrap() else {
            panic!("another call came back")
        };
        assert_eq!(back, data);
    }

    #[test]
    fn errors_keep_the_kinds_units_tell_apart() {
        let id = MessageId::new();
        for e in [
            BoxError::LeaseLost { entry: 4 },
            BoxError::NoSuchMessage(id),
            BoxError::Duplicate(id),
            BoxError::NotHeld {
                message: id,
                holder: "in".into(),
            },
            BoxError::Closed,
            BoxError::Storage {
                doing: "acknowledging".into(),
                detail: "disk full".into(),
            },
        ] {
            let wire: WireError = decode(&encode(&WireError::from(&e)).unwrap()).unwrap();
            let back = BoxError::from(wire);
            assert_eq!(back.to_string(), e.to_string());
            assert_eq!(std::mem::discriminant(&back), std::mem::discriminant(&e));
        }
    }
}
