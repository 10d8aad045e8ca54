//! A mail read from a stream (a POP3 `RETR`, an IMAP fetch), handed on as
//! the parts of one message ([`PartSource`], for
//! [`Publisher::submit_parts`](crate::Publisher::submit_parts)): its text
//! and its attachments, each decoded from its transfer encoding as it
//! arrives.
//!
//! A future reads the stream and feeds the [`Splitter`]; each part's bytes
//! go to its reader through a channel of a few pieces, so it runs only as
//! far ahead as the reader takes: a mail of any size costs a piece of the
//! stream and a few decoded pieces. The parts end with a verdict: a structure the
//! splitter refuses, or a stream that breaks off, is an error at the part
//! being read or at the next [`next_part`](PartSource::next_part), never a
//! quiet end.
//!
//! Architecture Invariant: a mail location (POP3, IMAP) deletes, moves or
//! flags a mail only once [`receive`] or [`suspend_raw`] said
//! [`Received::Published`]: the box holds the mail, as its parts or as it
//! was received.

use std::collections::HashMap;
use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::{Arc, OnceLock};
use std::task::{Context as TaskContext, Poll};
use std::time::Duration;

use async_trait::async_trait;
use bytes::{Bytes, BytesMut};
use futures::{Stream, StreamExt};
use sluice_model::Context;
use tokio::io::{AsyncRead, ReadBuf};
use tokio::sync::{mpsc, oneshot};

use super::mime::{Envelope, Event, Limits, PartInfo, Splitter};
use crate::{IncomingPart, PartSource};

/// A mail location's `PROMOTES`: its own properties, then those of the
/// mail's headers every mail location promotes (when the mail has the
/// header: [`promote_envelope`]).
macro_rules! mail_promotes {
    ($($own:expr),* $(,)?) => {
        &[
            $($own,)*
            ("mail", "from"),
            ("mail", "to"),
            ("mail", "cc"),
            ("mail", "subject"),
            ("mail", "message_id"),
            ("mail", "date"),
        ]
    };
}
pub(crate) use mail_promotes;

/// A mail location's `ReceiveAdapter` impl: its config's `build`,
/// `resolve_paths`, `mailbox` (what it claims: one location per mailbox or
/// folder, as two would take the same mails) and its module's `PROMOTES`.
macro_rules! mail_receive_adapter {
    ($config:ty, $promotes:expr) => {
        impl $crate::ReceiveAdapter for $config {
            fn resolve_paths(&mut self, base: &std::path::Path) {
                <$config>::resolve_paths(self, base);
            }
            fn build(&self) -> Result<Box<dyn $crate::Source>, $crate::AdapterError> {
                Ok(Box::new(<$config>::build(self)?))
            }
            fn resources(&self) -> Vec<$crate::Claim> {
                vec![$crate::Claim::exclusive(
                    "url",
                    $crate::Resource::Endpoint(self.mailbox()),
                )]
            }
            fn always_promotes(&self) -> Vec<sluice_model::Key> {
                $crate::support::keys($promotes)
            }
        }
    };
}
pub(crate) use mail_receive_adapter;

/// Held messages a mail location takes back at its start, at most (the
/// rest are released, and their mails may be received again).
pub const MAX_HELD: usize = 100_000;

/// What a mail location published before it stopped and has not finished
/// at the server yet (deleted, moved, flagged): the messages it still
/// holds, by the key `key_of` reads from each one's context (the UIDL, the
/// UID). Its `Source::recover`: nothing is asked of the server, which may
/// be unreachable; the first session finishes them.
pub async fn held_mails<K: Eq + std::hash::Hash>(
    cx: &crate::ReceiveContext,
    max: usize,
    key_of: impl Fn(&Context) -> Option<K>,
) -> HashMap<K, crate::Receipt> {
    let held = match cx.publisher.held(max).await {
        Ok(held) => held,
        Err(e) => {
            tracing::warn!(receive_location = %cx.location, error = %e,
                "could not list what this location published before it stopped; such mails may be received again");
            return HashMap::new();
        }
    };
    let mut found = HashMap::new();
    // Held, but not this location's to finish (another mailbox's, before
    // its URL changed; a second message for one mail): released, as the
    // host would have.
    let mut others = Vec::new();
    for (id, ctx) in held {
        match key_of(&ctx) {
            Some(key) => match found.entry(key) {
                std::collections::hash_map::Entry::Vacant(v) => {
                    v.insert(crate::Receipt {
                        messages: vec![id],
                        unrouted: false,
                    });
                }
                std::collections::hash_map::Entry::Occupied(_) => others.push(id),
            },
            None => others.push(id),
        }
    }
    if !others.is_empty() {
        let receipt = crate::Receipt {
            messages: others,
            unrouted: false,
        };
        if let Err(e) = cx.publisher.settled(&receipt).await {
            tracing::warn!(receive_location = %cx.location, error = %e,
                "could not release messages held from another mailbox; the next start releases them");
        }
    }
    if !found.is_empty() {
        tracing::info!(receive_location = %cx.location, mails = found.len(),
            "mails published before the last stop and not yet deleted (or moved, or flagged) are finished at the \
             first session");
    }
    found
}

/// How long a mail location waits after its `failures`-th failure in a
/// row: doubling from `poll_interval`, at most 5 minutes (or the interval,
/// if longer).
pub fn backoff(poll_interval: Duration, failures: u32) -> Duration {
    let doubled = poll_interval.saturating_mul(1 << failures.saturating_sub(1).min(5));
    doubled.min(Duration::from_secs(300).max(poll_interval))
}

/// Promote the mail's own headers into `ctx` (the `mail.*` keys of `mail_promotes!`).
pub fn promote_envelope(ctx: &mut Context, envelope: &Envelope) {
    let fields = [
        ("from", &envelope.from),
        ("to", &envelope.to),
        ("cc", &envelope.cc),
        ("subject", &envelope.subject),
        ("message_id", &envelope.message_id),
        ("date", &envelope.date),
    ];
    for (name, value) in fields {
        if let Some(v) = value {
            ctx.promote("mail", name, v.as_str());
        }
    }
}

/// What became of one mail ([`receive`], [`suspend_raw`]).
#[derive(Debug)]
pub enum Received {
    /// Published (held until the source settles), or stored suspended.
    Published(crate::Receipt),
    /// The mail's content is at fault (a broken MIME structure, a pipeline
    /// that rejected it): trying again will not help; store it as it was
    /// received, suspended ([`suspend_raw`]).
    Refused(crate::SubmitError),
    /// The mail cannot even be read as it was received (longer than the
    /// server said, cut short): leave it where it is ([`refuse`]).
    Unreadable(String),
    /// The box did not take it: try again later.
    Failed(String),
    /// The stream broke off (the connection, a timeout): the session is
    /// lost; try again on a new one.
    Broken(String),
}

/// Mails remembered as refused by one location (left where they are, not
/// tried again until the node restarts), at most.
pub const MAX_REFUSED: usize = 10_000;

/// Remember `key` as unreadable and say so, once: the mail stays where it
/// is, and later passes skip it until the node restarts.
pub fn refuse<K: Eq + std::hash::Hash>(
    refused: &mut std::collections::HashSet<K>,
    key: K,
    cx: &crate::ReceiveContext,
    mail: &str,
    why: &str,
) {
    tracing::error!(receive_location = %cx.location, mail = %mail, error = %why,
        "the mail cannot be read as it was received; it is left where it is and not tried again until the node restarts");
    if refused.len() < MAX_REFUSED {
        refused.insert(key);
    }
}

/// Admission for the next mail (charged as its bytes arrive, in
/// [`receive`]); `None` when the node stops first.
pub async fn admit(cx: &crate::ReceiveContext) -> Option<crate::Admitted> {
    tokio::select! {
        _ = cx.shutdown.cancelled() => None,
        admitted = cx.admission.admit(0) => Some(admitted),
    }
}

/// Watch `chunks`: charge each piece to `admitted`; remember the first
/// error of kind `InvalidData` (the mail itself: longer than announced,
/// cut short) in `unreadable`, any other (the stream's) in `broken`.
fn watched<'r, S>(
    chunks: S,
    admitted: &'r crate::Admitted,
    unreadable: Arc<OnceLock<String>>,
    broken: Arc<OnceLock<String>>,
) -> impl Stream<Item = io::Result<Bytes>> + Send + 'r
where
    S: Stream<Item = io::Result<Bytes>> + Send + 'r,
{
    chunks.inspect(move |chunk| match chunk {
        Ok(piece) => admitted.charge(piece.len() as u64),
        Err(e) if e.kind() == io::ErrorKind::InvalidData => {
            let _ = unreadable.set(e.to_string());
        }
        Err(e) => {
            let _ = broken.set(e.to_string());
        }
    })
}

/// The location's properties and `promote` (namespace, name, value).
fn context_with(cx: &crate::ReceiveContext, promote: &[(&str, &str, String)]) -> Context {
    let mut ctx = cx.base_context();
    for (namespace, name, value) in promote {
        ctx.promote(namespace, name, value.as_str());
    }
    ctx
}

/// What a publish or suspension that failed came to, by what was seen.
fn outcome(
    e: crate::SubmitError,
    unreadable: &OnceLock<String>,
    broken: &OnceLock<String>,
    verdict: Option<&String>,
) -> Received {
    if let Some(why) = broken.get() {
        return Received::Broken(why.clone());
    }
    if let Some(why) = unreadable.get() {
        return Received::Unreadable(why.clone());
    }
    match verdict {
        Some(why) => Received::Refused(crate::SubmitError::rejected_in("decode", "mime", why.clone())),
        None if e.rejected => Received::Refused(e),
        None => Received::Failed(e.message),
    }
}

/// Read one mail from `chunks` and publish it: its headers promoted
/// ([`promote_envelope`]) with `promote` besides those of the location,
/// its parts as `choice` says, its bytes charged to `admitted` as they
/// arrive. An error of kind `InvalidData` from `chunks` says the mail
/// cannot be read as received ([`Received::Unreadable`]); any other is
/// the stream's ([`Received::Broken`]).
pub async fn receive<'r, S>(
    chunks: S,
    choice: Choice,
    cx: &crate::ReceiveContext,
    promote: &[(&str, &str, String)],
    admitted: &crate::Admitted,
) -> Received
where
    S: Stream<Item = io::Result<Bytes>> + Send + 'r,
{
    let (unreadable, broken) = (Arc::new(OnceLock::new()), Arc::new(OnceLock::new()));
    let chunks = watched(chunks, admitted, unreadable.clone(), broken.clone());
    let (produce, mut parts) = split(chunks, choice, Limits::default());
    let verdict = parts.verdict.clone();
    let consume = async move {
        let envelope = match parts.envelope().await {
            Ok(envelope) => envelope,
            Err(e) => return Err(crate::SubmitError::new(e.to_string())),
        };
        let mut ctx = context_with(cx, promote);
        promote_envelope(&mut ctx, &envelope);
        cx.publisher
            .submit_parts(sluice_model::MessageId::new(), ctx, &mut parts)
            .await
    };
    let ((), published) = tokio::join!(produce, consume);
    match published {
        Ok(receipt) => Received::Published(receipt),
        Err(e) => outcome(e, &unreadable, &broken, verdict.get()),
    }
}

/// Store the mail `chunks` streams as it was received, one part, suspended
/// with `why` (contract rule 6: content a stage refused is not tried again
/// as is): the operator finds it among the suspended, with `promote`.
pub async fn suspend_raw<'r, S>(
    chunks: S,
    cx: &crate::ReceiveContext,
    promote: &[(&str, &str, String)],
    admitted: &crate::Admitted,
    why: &crate::SubmitError,
) -> Received
where
    S: Stream<Item = io::Result<Bytes>> + Send + 'r,
{
    let (unreadable, broken) = (Arc::new(OnceLock::new()), Arc::new(OnceLock::new()));
    let chunks = watched(chunks, admitted, unreadable.clone(), broken.clone());
    let (tx, data) = mpsc::channel(PIECES_AHEAD);
    let feed = async move {
        let mut chunks = std::pin::pin!(chunks);
        while let Some(chunk) = chunks.next().await {
            let failed = chunk.is_err();
            if tx.send(chunk).await.is_err() || failed {
                return;
            }
        }
    };
    let body: crate::Body = Box::new(PartReader {
        data,
        piece: Bytes::new(),
    });
    let store = cx
        .publisher
        .suspend(sluice_model::MessageId::new(), context_with(cx, promote), body, why);
    match tokio::join!(feed, store).1 {
        Ok(receipt) => Received::Published(receipt),
        Err(e) => outcome(e, &unreadable, &broken, None),
    }
}

/// Which part of a mail is the message's body (the part its pipeline
/// reads).
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum BodyPart {
    /// The first text part that is not an attachment (the mail's text;
    /// the plain one of a text-and-HTML mail, as senders put it first).
    Text,
    /// The first attachment (a partner that mails its files).
    Attachment,
}

/// Which of a mail's parts a message keeps (`parts = "all" | "body"`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Parts {
    /// The body, then the other parts.
    All,
    /// The body alone (for a pipeline that debatches).
    Body,
}

/// Defaults of the settings every mail location has (serde's `default = "..."`).
pub mod defaults {
    use std::time::Duration;

    use super::{BodyPart, Parts};

    pub fn body() -> BodyPart {
        BodyPart::Text
    }
    pub fn parts() -> Parts {
        Parts::All
    }
    pub fn poll_interval() -> Duration {
        Duration::from_secs(30)
    }
    pub fn max_per_poll() -> usize {
        100
    }
}

/// How a mail becomes a message's parts.
#[derive(Debug, Clone, Copy)]
pub struct Choice {
    pub body: BodyPart,
    /// The other parts are kept (after the body); `false` drops them.
    pub others: bool,
}

/// What the reading task hands on.
enum Item {
    Part {
        name: String,
        is_body: bool,
        data: mpsc::Receiver<io::Result<Bytes>>,
    },
    /// Every part was handed on and the mail was sound to its end.
    Done,
    Failed(String),
}

/// The parts of one mail, as a [`PartSource`]; the mail's headers first
/// ([`envelope`](Self::envelope)).
pub struct MailParts {
    /// Why the mail was refused (its structure), once it was.
    verdict: Arc<OnceLock<String>>,
    envelope: Option<oneshot::Receiver<Result<Envelope, String>>>,
    items: mpsc::Receiver<Item>,
    done: bool,
}

/// Split the mail that `chunks` streams: the future reads it and must run
/// beside the [`MailParts`] that take its parts (`tokio::join!`); it ends
/// when the mail has been handed on, when it fails, or when the parts are
/// dropped. It reads only as far ahead as the parts are taken.
pub fn split<'r, S>(chunks: S, choice: Choice, limits: Limits) -> (impl Future<Output = ()> + Send + 'r, MailParts)
where
    S: Stream<Item = io::Result<Bytes>> + Send + 'r,
{
    let (envelope_tx, envelope_rx) = oneshot::channel();
    let (items_tx, items) = mpsc::channel(2);
    let verdict = Arc::new(OnceLock::new());
    let producer = Producer {
        verdict: verdict.clone(),
        envelope: Some(envelope_tx),
        items: items_tx,
        current: None,
        body_sent: false,
        parts: 0,
        choice,
    };
    let parts = MailParts {
        verdict,
        envelope: Some(envelope_rx),
        items,
        done: false,
    };
    (producer.run(chunks, limits), parts)
}

impl MailParts {
    /// The mail's own headers. The error is a mail whose headers cannot be
    /// read (a broken stream, a header block over the limit). Once only.
    pub async fn envelope(&mut self) -> io::Result<Envelope> {
        let Some(rx) = self.envelope.take() else {
            return Err(io::Error::other("the mail's headers were taken already"));
        };
        match rx.await {
            Ok(Ok(envelope)) => Ok(envelope),
            Ok(Err(why)) => Err(io::Error::new(io::ErrorKind::InvalidData, why)),
            Err(_) => Err(io::Error::other("the mail's reader stopped before its headers")),
        }
    }
}

#[async_trait]
impl PartSource for MailParts {
    async fn next_part(&mut self) -> io::Result<Option<IncomingPart>> {
        if self.done {
            return Ok(None);
        }
        match self.items.recv().await {
            Some(Item::Part { name, is_body, data }) => Ok(Some(IncomingPart {
                name,
                body: Box::new(PartReader {
                    data,
                    piece: Bytes::new(),
                }),
                is_body,
            })),
            Some(Item::Done) => {
                self.done = true;
                Ok(None)
            }
            Some(Item::Failed(why)) => Err(io::Error::new(io::ErrorKind::InvalidData, why)),
            None => Err(io::Error::other("the mail's reader stopped before the mail's end")),
        }
    }
}

/// One part's bytes, as they arrive.
struct PartReader {
    data: mpsc::Receiver<io::Result<Bytes>>,
    piece: Bytes,
}

impl AsyncRead for PartReader {
    fn poll_read(mut self: Pin<&mut Self>, cx: &mut TaskContext<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        loop {
            if !self.piece.is_empty() {
                let n = self.piece.len().min(buf.remaining());
                buf.put_slice(&self.piece.split_to(n));
                return Poll::Ready(Ok(()));
            }
            match self.data.poll_recv(cx) {
                Poll::Ready(Some(Ok(piece))) => self.piece = piece,
                Poll::Ready(Some(Err(e))) => return Poll::Ready(Err(e)),
                // The part is whole (or the task stopped: then the next
                // `next_part` says so).
                Poll::Ready(None) => return Poll::Ready(Ok(())),
                Poll::Pending => return Poll::Pending,
            }
        }
    }
}

/// An [`Event`] taken out of the splitter's buffer.
enum Owned {
    Envelope(Envelope),
    Part(PartInfo),
    Data(BytesMut),
    End,
}

/// Pieces of a part's bytes waiting for its reader, at most.
const PIECES_AHEAD: usize = 4;

struct Producer {
    verdict: Arc<OnceLock<String>>,
    envelope: Option<oneshot::Sender<Result<Envelope, String>>>,
    items: mpsc::Sender<Item>,
    /// The part being handed on (`None`: between parts, or one dropped).
    current: Option<mpsc::Sender<io::Result<Bytes>>>,
    body_sent: bool,
    parts: usize,
    choice: Choice,
}

impl Producer {
    async fn run<S: Stream<Item = io::Result<Bytes>>>(mut self, chunks: S, limits: Limits) {
        let mut chunks = std::pin::pin!(chunks);
        let mut splitter = Splitter::new(limits);
        loop {
            let chunk = match chunks.next().await {
                Some(Ok(chunk)) => Some(chunk),
                Some(Err(e)) => {
                    let why = format!("reading the mail: {e}");
                    if e.kind() == io::ErrorKind::InvalidData {
                        let _ = self.verdict.set(why.clone());
                    }
                    return self.fail(why).await;
                }
                None => None,
            };
            let mut events = Vec::new();
            let mut take = |e: Event<'_>| push_event(&mut events, e);
            let split = match &chunk {
                Some(chunk) => splitter.feed(chunk, &mut take),
                None => splitter.finish(&mut take),
            };
            for event in events {
                if !self.handle(event).await {
                    return;
                }
            }
            if let Err(e) = split {
                let _ = self.verdict.set(e.0.clone());
                return self.fail(e.0).await;
            }
            if chunk.is_none() {
                return self.done().await;
            }
        }
    }

    /// Hand on one event; `false` when nobody takes the parts any more.
    async fn handle(&mut self, event: Owned) -> bool {
        match event {
            Owned::Envelope(envelope) => {
                if let Some(tx) = self.envelope.take() {
                    let _ = tx.send(Ok(envelope));
                }
                true
            }
            Owned::Part(info) => {
                self.parts += 1;
                let is_body = !self.body_sent && self.is_body(&info);
                if !is_body && !self.choice.others {
                    // Dropped: its bytes go nowhere.
                    self.current = None;
                    return true;
                }
                self.body_sent |= is_body;
                let (tx, data) = mpsc::channel(PIECES_AHEAD);
                self.current = Some(tx);
                let name = part_name(&info, is_body, self.parts);
                self.items.send(Item::Part { name, is_body, data }).await.is_ok()
            }
            Owned::Data(bytes) => {
                if let Some(tx) = &self.current
                    && tx.send(Ok(bytes.freeze())).await.is_err()
                {
                    // Its reader was dropped: the rest of the part goes nowhere.
                    self.current = None;
                }
                true
            }
            Owned::End => {
                self.current = None;
                true
            }
        }
    }

    fn is_body(&self, info: &PartInfo) -> bool {
        match self.choice.body {
            BodyPart::Text => !info.attachment && info.content_type.starts_with("text/"),
            BodyPart::Attachment => info.attachment || info.file_name.is_some(),
        }
    }

    async fn fail(mut self, why: String) {
        if let Some(tx) = self.envelope.take() {
            let _ = tx.send(Err(why.clone()));
        }
        if let Some(tx) = self.current.take() {
            let _ = tx
                .send(Err(io::Error::new(io::ErrorKind::InvalidData, why.clone())))
                .await;
        }
        let _ = self.items.send(Item::Failed(why)).await;
    }

    async fn done(mut self) {
        if !self.body_sent {
            // A mail without such a part: an empty body, the parts it has after it.
            let (_, data) = mpsc::channel(1);
            let name = "body.txt".to_string();
            if self
                .items
                .send(Item::Part {
                    name,
                    is_body: true,
                    data,
                })
                .await
                .is_err()
            {
                return;
            }
        }
        self.current = None;
        let _ = self.items.send(Item::Done).await;
    }
}

/// Keep `event`, joining a part's bytes into one piece per read.
fn push_event(events: &mut Vec<Owned>, event: Event<'_>) {
    match event {
        Event::Data(d) => match events.last_mut() {
            Some(Owned::Data(piece)) => piece.extend_from_slice(d),
            _ => events.push(Owned::Data(BytesMut::from(d))),
        },
        Event::Envelope(e) => events.push(Owned::Envelope(e)),
        Event::Part(p) => events.push(Owned::Part(p)),
        Event::End => events.push(Owned::End),
    }
}

/// Longest part name kept, in bytes (what file systems allow).
const MAX_NAME: usize = 255;

/// A part's name in the message: the file name it gives, made plain (no
/// folders, no control characters, at most [`MAX_NAME`] bytes, never one
/// of Sluice's own), else `body.<ext>` or `part-<n>.<ext>` by its type.
fn part_name(info: &PartInfo, is_body: bool, n: usize) -> String {
    if let Some(given) = &info.file_name {
        let last = given.rsplit(['/', '\\']).next().unwrap_or_default();
        let mut name: String = last.chars().filter(|c| !c.is_control()).collect();
        name = name.trim().to_string();
        while name.len() > MAX_NAME {
            name.pop();
        }
        if super::plain_file_name(&name).is_ok() {
            return name;
        }
    }
    let ext = match info.content_type.as_str() {
        "text/plain" => "txt",
        "text/html" => "html",
        "text/xml" | "application/xml" => "xml",
        "application/json" => "json",
        "text/csv" => "csv",
        "message/rfc822" => "eml",
        "application/pdf" => "pdf",
        _ => "bin",
    };
    if is_body {
        format!("body.{ext}")
    } else {
        format!("part-{n}.{ext}")
    }
}

#[cfg(test)]
mod tests {
    use tokio::io::AsyncReadExt;

    use super::*;

    const MAIL: &str = "From: Ann <ann@example.com>\r\nTo: ops@example.com\r\nSubject: =?utf-8?q?Rechnung_M=C3=A4rz?=\r\n\
Message-ID: <m1@example.com>\r\nDate: Fri, 27 Nov 2026 10:00:00 +0000\r\nMIME-Version: 1.0\r\n\
Content-Type: multipart/mixed; boundary=\"b1\"\r\n\r\n--b1\r\nContent-Type: text/plain\r\n\r\nsee attached\r\n\
--b1\r\nContent-Type: application/xml\r\nContent-Disposition: attachment; filename=\"../../etc/order.xml\"\r\n\
Content-Transfer-Encoding: base64\r\n\r\nPG9yZGVyLz4=\r\n--b1--\r\n";

    /// Split `mail` (fed 7 bytes at a time) and read every part.
    async fn read(mail: &[u8], choice: Choice) -> io::Result<(Envelope, Vec<(String, bool, Vec<u8>)>)> {
        let chunks: Vec<io::Result<Bytes>> = mail.chunks(7).map(|c| Ok(Bytes::copy_from_slice(c))).collect();
        let (produce, mut parts) = split(futures::stream::iter(chunks), choice, Limits::default());
        let consume = async move {
            let envelope = parts.envelope().await?;
            let mut out = Vec::new();
            while let Some(mut p) = parts.next_part().await? {
                let mut bytes = Vec::new();
                p.body.read_to_end(&mut bytes).await?;
                out.push((p.name, p.is_body, bytes));
            }
            Ok((envelope, out))
        };
        tokio::join!(produce, consume).1
    }

    fn choice(body: BodyPart, others: bool) -> Choice {
        Choice { body, others }
    }

    #[tokio::test]
    async fn a_mail_becomes_its_text_and_its_attachments() {
        let (envelope, got) = read(MAIL.as_bytes(), choice(BodyPart::Text, true)).await.unwrap();
        assert_eq!(envelope.subject.as_deref(), Some("Rechnung März"));
        let mut ctx = Context::new();
        promote_envelope(&mut ctx, &envelope);
        assert_eq!(
            ctx.promoted("mail", "message_id"),
            Some(&sluice_model::Value::from("m1@example.com"))
        );
        assert_eq!(
            got,
            vec![
                ("body.txt".to_string(), true, b"see attached".to_vec()),
                ("order.xml".to_string(), false, b"<order/>".to_vec()),
            ]
        );
    }

    #[tokio::test]
    async fn the_first_attachment_can_be_the_body_and_the_rest_dropped() {
        let (_, got) = read(MAIL.as_bytes(), choice(BodyPart::Attachment, false))
            .await
            .unwrap();
        assert_eq!(got, vec![("order.xml".to_string(), true, b"<order/>".to_vec())]);
    }

    #[tokio::test]
    async fn a_mail_without_text_gets_an_empty_body() {
        let mail = "Subject: x\r\nContent-Type: application/pdf\r\nContent-Disposition: attachment\r\n\r\n%PDF";
        let (_, got) = read(mail.as_bytes(), choice(BodyPart::Text, true)).await.unwrap();
        assert_eq!(
            got,
            vec![
                ("part-1.pdf".to_string(), false, b"%PDF".to_vec()),
                ("body.txt".to_string(), true, Vec::new()),
            ]
        );
    }

    #[tokio::test]
    async fn a_broken_structure_is_an_error_never_a_short_mail() {
        let cut = &MAIL[..MAIL.len() - 10];
        let err = read(cut.as_bytes(), choice(BodyPart::Text, true)).await.unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::InvalidData, "{err}");

        let mut deep = String::from("Subject: deep\r\n");
        for i in 0..10_000 {
            deep.push_str(&format!(
                "Content-Type: multipart/mixed; boundary=\"b{i}\"\r\n\r\n--b{i}\r\n"
            ));
        }
        let err = read(deep.as_bytes(), choice(BodyPart::Text, true)).await.unwrap_err();
        assert!(err.to_string().contains("deep"), "{err}");
    }

    #[tokio::test]
    async fn headers_that_never_end_are_refused_with_the_envelope() {
        let endless = format!("Subject: {}\r\n", "x".repeat(200_000));
        let err = read(endless.as_bytes(), choice(BodyPart::Text, true))
            .await
            .unwrap_err();
        assert!(err.to_string().contains("header block"), "{err}");
    }

    #[tokio::test]
    async fn a_stream_that_breaks_is_an_error_at_the_part() {
        let chunks = vec![
            Ok(Bytes::from_static(MAIL.as_bytes()[..200].as_ref())),
            Err(io::Error::other("reset")),
        ];
        let (produce, mut parts) = split(
            futures::stream::iter(chunks),
            choice(BodyPart::Text, true),
            Limits::default(),
        );
        let consume = async move {
            parts.envelope().await?;
            while let Some(mut p) = parts.next_part().await? {
                let mut bytes = Vec::new();
                p.body.read_to_end(&mut bytes).await?;
            }
            Ok::<_, io::Error>(())
        };
        let err = tokio::join!(produce, consume).1.unwrap_err();
        assert!(err.to_string().contains("reset"), "{err}");
    }

    #[test]
    fn part_names_are_plain() {
        let info = |name: Option<&str>, t: &str| PartInfo {
            content_type: t.into(),
            file_name: name.map(str::to_string),
            attachment: true,
        };
        assert_eq!(part_name(&info(Some("a/b\\c.csv"), "text/csv"), false, 2), "c.csv");
        assert_eq!(part_name(&info(Some(".."), "text/csv"), false, 2), "part-2.csv");
        assert_eq!(part_name(&info(Some(".sluice-claim.x"), "x/y"), true, 1), "body.bin");
        assert_eq!(part_name(&info(Some("a\r\nb.txt"), "text/plain"), false, 3), "ab.txt");
        assert!(part_name(&info(Some(&"é".repeat(300)), "text/plain"), false, 3).len() <= MAX_NAME);
    }
}
