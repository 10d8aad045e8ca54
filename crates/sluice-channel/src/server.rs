//! The node's side: one connection per host instance, each call answered
//! by the node's box, and a ledger of what the instance holds so that its
//! death gives everything back at once.
//!
//! Architecture Invariant: an instance that dies leaves nothing held but
//! what its sources resolve when they start again. Its leases are made
//! ready at once (not at their expiry), the interchanges it had not
//! committed are aborted and the content it wrote but never published is
//! dropped, after every call it made has been answered; holds of published
//! messages stay, for its receive locations' recovery to settle (a FILE
//! claim is deleted or put back as after a node's crash).

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use futures::{SinkExt, StreamExt};
use sluice_content::ContentId;
use sluice_msgbox::{Ack, BoxError, EntryId, LeaseToken, MessageBox, NewMessage, Routed};
use tokio::io::AsyncWriteExt;
use tokio::net::UnixStream;
use tokio::net::unix::OwnedReadHalf;
use tokio::sync::{Semaphore, mpsc};
use tokio::task::JoinSet;
use tokio_util::codec::{FramedRead, FramedWrite};

use crate::ChannelError;
use crate::wire::{self, Call, Hello, Id, Reply, Start, Stats, ToInstance, ToNode, WireError, WireLeased};

/// Frames waiting to be written to one instance, at most.
const OUTGOING: usize = 16;

/// Bytes of calls one instance may have in the node at once (16 MiB),
/// counted by their frames (at least 1 KiB each): a burst of chunk writes
/// waits in the instance, not in the node.
const IN_FLIGHT_BYTES: usize = 16 << 20;
const UNIT: usize = 1024;

/// What one instance may hold at once, at most: leases, content written
/// and not yet published, interchanges staged and not committed. Far
/// above what its ports' `concurrency` and its locations lease and write;
/// a call past it is refused rather than letting the ledger grow.
pub const MAX_LEASES: usize = 1 << 16;
/// Entries one lease call takes, at most, and the inline bodies it hands
/// out (a port asks for its concurrency plus what it leases ahead).
pub const MAX_LEASE_AT_ONCE: u32 = 4096;
pub const MAX_LEASE_BODIES: u64 = 16 << 20;
/// Ids one `held_by` call answers, at most.
pub const MAX_HELD_AT_ONCE: u32 = 10_000;
pub const MAX_CONTENTS: usize = 1 << 16;
pub const MAX_INTERCHANGES: usize = 4096;

/// What the node does with what its instances tell it.
pub trait NodeSide: Send + Sync + 'static {
    /// Messages were queued for these subscribers (wake them).
    fn queued(&self, subscribers: &mut dyn Iterator<Item = &str>);
    /// The instance's counters.
    fn stats(&self, stats: Stats);
}

/// What an instance held when its connection ended, given back.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct GivenBack {
    /// Leases made ready again.
    pub leases: u64,
    /// Interchanges aborted.
    pub interchanges: u64,
    /// Pieces of content dropped.
    pub contents: u64,
}

#[derive(Default)]
struct Ledger {
    /// Each lease and until when it holds.
    leases: HashMap<EntryId, (LeaseToken, sluice_msgbox::Millis)>,
    contents: HashSet<ContentId>,
    interchanges: HashSet<Id>,
}

impl Ledger {
    fn published(&mut self, msg: &NewMessage) {
        for part in &msg.parts {
            if let Some(c) = part.stored_content() {
                self.contents.remove(&c);
            }
        }
    }
}

/// A way to tell a connected instance things, usable from anywhere.
#[derive(Clone)]
pub struct InstanceHandle {
    out: mpsc::Sender<Bytes>,
}

impl InstanceHandle {
    /// A message was queued for `port` (a hint: dropped if the instance is
    /// behind, its ports poll).
    pub fn wake(&self, port: &str) {
        if let Ok(frame) = wire::encode(&ToInstance::Wake(port.to_string())) {
            let _ = self.out.try_send(frame);
        }
    }

    /// Ask the instance to stop taking work, finish what it holds and exit.
    pub async fn drain(&self) -> bool {
        match wire::encode(&ToInstance::Drain) {
            Ok(frame) => self.out.send(frame).await.is_ok(),
            Err(_) => false,
        }
    }
}

/// An instance's connection, its hello read, not served yet.
pub struct Connection {
    pub hello: Hello,
    reader: FramedRead<OwnedReadHalf, tokio_util::codec::LengthDelimitedCodec>,
    out: mpsc::Sender<Bytes>,
    /// Ends the writer (and so the connection) when serving ends, whoever
    /// still holds a handle.
    writer_stop: tokio_util::sync::CancellationToken,
}

impl Connection {
    /// Read the instance's hello (within `within`) and check its protocol.
    pub async fn accept(stream: UnixStream, within: Duration) -> Result<Connection, ChannelError> {
        let (read, write) = stream.into_split();
        let mut reader = FramedRead::new(read, wire::codec());
        let first = tokio::time::timeout(within, reader.next())
            .await
            .map_err(|_| ChannelError::Protocol(format!("no hello within {within:?}")))?;
        let frame = match first {
            Some(Ok(frame)) => frame,
            Some(Err(e)) => {
                return Err(ChannelError::Io {
                    doing: "reading the instance's hello".into(),
                    error: e,
                });
            }
            None => return Err(ChannelError::Protocol("the instance hung up before its hello".into())),
        };
        let hello = match wire::decode::<ToNode>(&frame) {
            Ok(ToNode::Hello(hello)) => hello,
            Ok(_) => return Err(ChannelError::Protocol("the first frame was not a hello".into())),
            Err(e) => return Err(ChannelError::Protocol(format!("the hello cannot be read: {e}"))),
        };
        if hello.protocol != wire::PROTOCOL {
            return Err(ChannelError::Protocol(format!(
                "the instance speaks `{}`, this node `{}`",
                hello.protocol,
                wire::PROTOCOL
            )));
        }
        let (out, mut outgoing) = mpsc::channel::<Bytes>(OUTGOING);
        let mut writer = FramedWrite::new(write, wire::codec());
        let writer_stop = tokio_util::sync::CancellationToken::new();
        let stop = writer_stop.clone();
        tokio::spawn(async move {
            'write: loop {
                let frame = tokio::select! {
                    frame = outgoing.recv() => frame,
                    _ = stop.cancelled() => None,
                };
                let Some(mut frame) = frame else { break };
                // What is queued together goes out in one write (the codec
                // writes its buffer out past 8 KiB).
                loop {
                    if let Err(e) = writer.feed(frame).await {
                        tracing::debug!(error = %e, "the channel to a host instance broke while writing");
                        break 'write;
                    }
                    match outgoing.try_recv() {
                        Ok(next) => frame = next,
                        Err(_) => break,
                    }
                }
                if let Err(e) = SinkExt::<Bytes>::flush(&mut writer).await {
                    tracing::debug!(error = %e, "the channel to a host instance broke while writing");
                    break;
                }
            }
            // The write half closes here: the instance reads the end.
            let _ = writer.get_mut().shutdown().await;
        });
        Ok(Connection {
            hello,
            reader,
            out,
            writer_stop,
        })
    }

    /// Tell the instance what to run (its first frame).
    pub async fn start(&self, start: Start) -> Result<(), ChannelError> {
        let frame = wire::encode(&ToInstance::Start(start)).map_err(ChannelError::Encode)?;
        if frame.len() > wire::MAX_FRAME {
            return Err(ChannelError::Protocol(format!(
                "the configuration is {} bytes, over the channel's limit of {}",
                frame.len(),
                wire::MAX_FRAME
            )));
        }
        self.out
            .send(frame)
            .await
            .map_err(|_| ChannelError::Protocol("the instance hung up before it was told what to run".into()))
    }

    pub fn handle(&self) -> InstanceHandle {
        InstanceHandle { out: self.out.clone() }
    }

    /// Answer the instance's calls against `mbox` until its connection
    /// ends; then, once every call it made has been answered, give back
    /// what it still held.
    pub async fn serve(self, mbox: Arc<dyn MessageBox>, node: Arc<dyn NodeSide>) -> GivenBack {
        let Connection {
            hello,
            mut reader,
            out,
            writer_stop,
        } = self;
        let ledger = Arc::new(Mutex::new(Ledger::default()));
        let budget = Arc::new(Semaphore::new(IN_FLIGHT_BYTES / UNIT));
        let mut calls = JoinSet::new();
        loop {
            let frame = tokio::select! {
                frame = reader.next() => frame,
                Some(_) = calls.join_next(), if !calls.is_empty() => continue,
            };
            let frame = match frame {
                Some(Ok(frame)) => frame,
                Some(Err(e)) => {
                    tracing::warn!(host = %hello.host, pid = hello.pid, error = %e,
                        "the channel to a host instance broke while reading");
                    break;
                }
                None => break,
            };
            let units = (frame.len().clamp(UNIT, IN_FLIGHT_BYTES) / UNIT) as u32;
            match wire::decode::<ToNode>(&frame) {
                Ok(ToNode::Call { id, call }) => {
                    drop(frame);
                    let Ok(permit) = budget.clone().acquire_many_owned(units).await else {
                        break;
                    };
                    let (mbox, ledger, node, out) = (mbox.clone(), ledger.clone(), node.clone(), out.clone());
                    calls.spawn(async move {
                        let reply = answer(&*mbox, &ledger, &*node, call).await;
                        let frame = match wire::encode(&ToInstance::Reply { id, reply }) {
                            Ok(frame) if frame.len() <= wire::MAX_FRAME => frame,
                            Ok(too_big) => {
                                let detail = format!(
                                    "the answer is {} bytes, over the channel's limit of {}",
                                    too_big.len(),
                                    wire::MAX_FRAME
                                );
                                give_back_leased(&*mbox, &ledger, &too_big).await;
                                refusal(id, detail)
                            }
                            Err(e) => refusal(id, e.to_string()),
                        };
                        let _ = out.send(frame).await;
                        drop(permit);
                    });
                }
                Ok(ToNode::Stats(stats)) => node.stats(stats),
                Ok(ToNode::Hello(_)) => {
                    tracing::error!(host = %hello.host, pid = hello.pid,
                        "a host instance said hello twice; closing its channel");
                    break;
                }
                Err(e) => {
                    tracing::error!(host = %hello.host, pid = hello.pid, error = %e,
                        "a host instance sent a frame the node cannot read; closing its channel");
                    break;
                }
            }
        }
        // Calls already made run to their end (a publish the instance will
        // never hear about is still a publish), then the rest goes back.
        while calls.join_next().await.is_some() {}
        writer_stop.cancel();
        let held = std::mem::take(&mut *ledger.lock().unwrap_or_else(|p| p.into_inner()));
        give_back(&*mbox, held, &hello).await
    }
}

fn refusal(id: u64, detail: String) -> Bytes {
    let reply: Result<Reply, WireError> = Err(WireError::Storage {
        doing: "answering a host instance".into(),
        detail,
    });
    // A short error always encodes.
    wire::encode(&ToInstance::Reply { id, reply }).unwrap_or_default()
}

/// A lease whose answer could not be sent: its entries go back now.
async fn give_back_leased(mbox: &dyn MessageBox, ledger: &Mutex<Ledger>, frame: &[u8]) {
    let Ok(ToInstance::Reply {
        reply: Ok(Reply::Leased(leased)),
        ..
    }) = wire::decode::<ToInstance>(frame)
    else {
        return;
    };
    for l in leased {
        ledger
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .leases
            .remove(&l.token.entry);
        let _ = mbox.renew(l.token.into(), 0).await;
    }
}

async fn give_back(mbox: &dyn MessageBox, held: Ledger, hello: &Hello) -> GivenBack {
    let mut back = GivenBack::default();
    for (token, _) in held.leases.into_values() {
        // A lease renewed for no time is ready again now; one acked or
        // lost meanwhile is not ours to give.
        match mbox.renew(token, 0).await {
            Ok(_) => back.leases += 1,
            Err(BoxError::LeaseLost { .. }) => {}
            Err(e) => tracing::warn!(host = %hello.host, entry = token.entry, error = %e,
                "could not give back a lease of a host instance that ended; it is ready again when it expires"),
        }
    }
    for interchange in held.interchanges {
        match mbox.abort_interchange(interchange.into()).await {
            Ok(_) => back.interchanges += 1,
            Err(e) => {
                tracing::warn!(host = %hello.host, interchange = %sluice_model::MessageId::from(interchange), error = %e,
                "could not abort an interchange of a host instance that ended; the node's next start discards it")
            }
        }
    }
    let content = mbox.content();
    for id in held.contents {
        match content.abort(id).await {
            Ok(()) => back.contents += 1,
            Err(e) => tracing::warn!(host = %hello.host, content = id, error = %e,
                "could not drop content a host instance wrote and never published; the node's next start does"),
        }
    }
    back
}

fn now_ms() -> sluice_msgbox::Millis {
    use sluice_msgbox::Clock;
    sluice_msgbox::SystemClock.now_ms()
}

fn too_many(what: &str, max: usize) -> WireError {
    WireError::Storage {
        doing: format!("taking more {what} for a host instance"),
        detail: format!("it already holds {max}, the most one instance may"),
    }
}

fn queued(node: &dyn NodeSide, routed: &Routed) {
    if let Routed::Queued(subscribers) = routed {
        node.queued(&mut subscribers.iter().map(String::as_str));
    }
}

/// One call, against the box, keeping the ledger.
async fn answer(
    mbox: &dyn MessageBox,
    ledger: &Mutex<Ledger>,
    node: &dyn NodeSide,
    call: Call,
) -> Result<Reply, WireError> {
    let book = || ledger.lock().unwrap_or_else(|p| p.into_inner());
    let e = |e: BoxError| WireError::from(&e);
    let ce = |e: sluice_content::ContentError| WireError::from(&e);
    Ok(match call {
        Call::Publish(m) => {
            let m = m.into_message().map_err(e)?;
            let routed = mbox.publish(m.clone()).await.map_err(e)?;
            book().published(&m);
            queued(node, &routed);
            Reply::Routed(routed.into())
        }
        Call::PublishHolding(m, holder) => {
            let m = m.into_message().map_err(e)?;
            let routed = mbox.publish_holding(m.clone(), &holder).await.map_err(e)?;
            book().published(&m);
            queued(node, &routed);
            Reply::Routed(routed.into())
        }
        Call::PublishSuspended(m, holder, failure) => {
            let m = m.into_message().map_err(e)?;
            let id = mbox
                .publish_suspended(m.clone(), &holder, &failure.into())
                .await
                .map_err(e)?;
            book().published(&m);
            Reply::Number(id)
        }
        Call::Stage(interchange, batch) => {
            let batch = batch
                .into_iter()
                .map(|s| s.into_staged())
                .collect::<Result<Vec<_>, _>>()
                .map_err(e)?;
            {
                let mut book = book();
                if !book.interchanges.contains(&interchange) && book.interchanges.len() >= MAX_INTERCHANGES {
                    return Err(too_many("interchanges", MAX_INTERCHANGES));
                }
                // Booked before it is written: if the instance dies now, its
                // abort finds it.
                book.interchanges.insert(interchange);
            }
            let contents: Vec<ContentId> = batch
                .iter()
                .flat_map(|s| s.message.parts.iter().filter_map(|p| p.stored_content()))
                .collect();
            mbox.stage(interchange.into(), batch).await.map_err(e)?;
            // Staged content is the interchange's now: an abort drops it.
            let mut book = book();
            for c in contents {
                book.contents.remove(&c);
            }
            Reply::Done
        }
        Call::CommitInterchange(interchange) => {
            let routed = mbox.commit_interchange(interchange.into()).await.map_err(e)?;
            book().interchanges.remove(&interchange);
            node.queued(&mut routed.queued.keys().map(String::as_str));
            Reply::Interchange(routed.into())
        }
        Call::AbortInterchange(interchange) => {
            let n = mbox.abort_interchange(interchange.into()).await.map_err(e)?;
            book().interchanges.remove(&interchange);
            Reply::Count(n)
        }
        Call::Lease {
            subscriber,
            max,
            lease_for_ms,
            bodies_up_to,
        } => {
            let max = max.min(MAX_LEASE_AT_ONCE);
            {
                let mut book = book();
                if book.leases.len() + max as usize > MAX_LEASES {
                    // Leases its caller never heard of (a call given up)
                    // or lost meanwhile expire: forget those first.
                    let now = now_ms();
                    book.leases.retain(|_, (_, until)| *until > now);
                }
                if book.leases.len() + max as usize > MAX_LEASES {
                    return Err(too_many("leases", MAX_LEASES));
                }
            }
            let leased = mbox
                .lease_with_bodies(
                    &subscriber,
                    max as usize,
                    lease_for_ms,
                    bodies_up_to.min(MAX_LEASE_BODIES),
                )
                .await
                .map_err(e)?;
            let mut book = book();
            for l in &leased {
                book.leases.insert(l.token.entry, (l.token, l.lease_until));
            }
            Reply::Leased(leased.into_iter().map(WireLeased::from).collect())
        }
        Call::Renew(token, ms) => {
            let outcome = mbox.renew(token.into(), ms).await;
            let mut book = book();
            match &outcome {
                Ok(until) => {
                    if let Some(held) = book.leases.get_mut(&token.entry) {
                        held.1 = *until;
                    }
                }
                Err(BoxError::LeaseLost { .. }) => {
                    book.leases.remove(&token.entry);
                }
                Err(_) => {}
            }
            Reply::Number(outcome.map_err(e)?)
        }
        Call::AckMany(acks) => {
            let acks: Vec<Ack> = acks
                .into_iter()
                .map(|(t, delivered_to)| Ack {
                    token: t.into(),
                    delivered_to,
                })
                .collect();
            let outcomes = mbox.ack_many(&acks).await.map_err(e)?;
            let mut book = book();
            for (a, outcome) in acks.iter().zip(&outcomes) {
                if matches!(outcome, Ok(()) | Err(BoxError::LeaseLost { .. })) {
                    book.leases.remove(&a.token.entry);
                }
            }
            Reply::Acks(
                outcomes
                    .into_iter()
                    .map(|o| o.map_err(|x| WireError::from(&x)))
                    .collect(),
            )
        }
        Call::Nack(token, retry_at, failure) => {
            let outcome = mbox.nack(token.into(), retry_at, &failure.into()).await;
            settled(ledger, token.entry, &outcome);
            outcome.map_err(e)?;
            Reply::Done
        }
        Call::NackToAttempt(token, retry_at, failure, next) => {
            let outcome = mbox
                .nack_to_attempt(token.into(), retry_at, &failure.into(), next)
                .await;
            settled(ledger, token.entry, &outcome);
            outcome.map_err(e)?;
            Reply::Done
        }
        Call::Suspend(token, failure) => {
            let outcome = mbox.suspend(token.into(), &failure.into()).await;
            settled(ledger, token.entry, &outcome);
            Reply::Number(outcome.map_err(e)?)
        }
        Call::Hold(id, holder) => {
            mbox.hold(id.into(), &holder).await.map_err(e)?;
            Reply::Done
        }
        Call::Release(id, holder) => {
            mbox.release(id.into(), &holder).await.map_err(e)?;
            Reply::Done
        }
        Call::HeldBy(holder, after, limit) => {
            let ids = mbox
                .held_by(&holder, after.map(Into::into), limit.min(MAX_HELD_AT_ONCE) as usize)
                .await
                .map_err(e)?;
            Reply::Ids(ids.into_iter().map(Into::into).collect())
        }
        Call::Suspended(id) => Reply::Suspended(mbox.suspended(id).await.map_err(e)?.map(Into::into)),
        Call::Parts(id) => Reply::Parts(mbox.parts(id.into()).await.map_err(e)?),
        Call::Message(id) => Reply::Message(mbox.message(id.into()).await.map_err(e)?.map(Into::into)),
        Call::Begin => {
            if book().contents.len() >= MAX_CONTENTS {
                return Err(too_many("content", MAX_CONTENTS));
            }
            let id = mbox.content().begin().await.map_err(ce)?;
            book().contents.insert(id);
            Reply::Number(id)
        }
        Call::PutChunk(id, seq, chunk) => {
            mbox.content().put_chunk(id, seq, chunk.0).await.map_err(ce)?;
            Reply::Done
        }
        Call::Finish {
            content,
            size,
            crc32,
            chunks,
        } => {
            mbox.content().finish(content, size, crc32, chunks).await.map_err(ce)?;
            Reply::Done
        }
        Call::Abort(id) => {
            mbox.content().abort(id).await.map_err(ce)?;
            book().contents.remove(&id);
            Reply::Done
        }
        Call::GetChunk(id, seq) => Reply::Chunk(wire::Chunk(mbox.content().get_chunk(id, seq).await.map_err(ce)?)),
    })
}

/// A lease ended by a nack or a suspension (or lost meanwhile) is no
/// longer the instance's.
fn settled<T>(ledger: &Mutex<Ledger>, entry: EntryId, outcome: &Result<T, BoxError>) {
    if matches!(outcome, Ok(_) | Err(BoxError::LeaseLost { .. })) {
        ledger.lock().unwrap_or_else(|p| p.into_inner()).leases.remove(&entry);
    }
}
