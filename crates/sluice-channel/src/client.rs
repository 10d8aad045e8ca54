//! The instance's side: one connection to the node, calls multiplexed on it
//! by id, and [`RemoteBox`], the [`MessageBox`] a host instance's units run
//! against.

use std::collections::HashMap;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use bytes::Bytes;
use futures::{SinkExt, StreamExt};
use sluice_content::{ChunkStore, ContentError, ContentId, Part};
use sluice_model::MessageId;
use sluice_msgbox::{
    Ack, BoxError, Counts, Failure, InterchangeRouted, LeaseToken, Leased, MessageBox, MessageInfo, MessageQuery,
    MessageSummary, Millis, NewAuditEntry, NewMessage, NewSession, NewToken, Page, Recovered, Resubmission,
    Resubmitted, Routed, SessionRecord, StagedMessage, Subscription, SuspendedGroup, SuspendedInfo, SuspendedQuery,
    TokenRecord, TrackingEvent, TrackingQuery, UnitKind, UserRecord,
};
use tokio::net::UnixStream;
use tokio::sync::{mpsc, oneshot};
use tokio_util::codec::{FramedRead, FramedWrite};
use tokio_util::sync::CancellationToken;

use crate::ChannelError;
use crate::wire::{self, Call, Chunk, Hello, Reply, Start, Stats, ToInstance, ToNode, WireError};

/// Frames waiting to be written, at most.
const OUTGOING: usize = 32;
/// Wake-ups waiting to be handed to the ports, at most (hints: more are
/// dropped, the ports poll).
const WAKES: usize = 256;

type Pending = Arc<Mutex<HashMap<u64, oneshot::Sender<Result<Reply, WireError>>>>>;

/// What the node tells an instance besides its replies.
pub struct Incoming {
    /// Send ports a message was queued for.
    pub wakes: mpsc::Receiver<String>,
    /// Cancelled when the node asks the instance to drain and exit.
    pub drain: CancellationToken,
    /// Cancelled when the connection ended (the node stopped or died).
    pub closed: CancellationToken,
}

/// What the writer takes: a frame, or a mark answered once every frame
/// before it is written.
enum Out {
    Frame(Bytes),
    Flushed(oneshot::Sender<()>),
}

/// A connection to the node.
pub struct Channel {
    out: mpsc::Sender<Out>,
    pending: Pending,
    next: AtomicU64,
    closed: CancellationToken,
}

impl Channel {
    /// Connect to the node's socket and say who this is.
    pub async fn connect(path: &Path, host: &str) -> Result<(Arc<Channel>, Incoming, Start), ChannelError> {
        let stream = UnixStream::connect(path).await.map_err(|e| ChannelError::Io {
            doing: format!("connecting to the node's socket {}", path.display()),
            error: e,
        })?;
        Channel::over(stream, host).await
    }

    /// Say who this is on a connected stream, wait for what to run, and
    /// run the channel on it.
    pub async fn over(stream: UnixStream, host: &str) -> Result<(Arc<Channel>, Incoming, Start), ChannelError> {
        let (read, write) = stream.into_split();
        let mut writer = FramedWrite::new(write, wire::codec());
        let hello = ToNode::Hello(Hello {
            protocol: wire::PROTOCOL.to_string(),
            host: host.to_string(),
            pid: std::process::id(),
        });
        writer
            .send(wire::encode(&hello).map_err(ChannelError::Encode)?)
            .await
            .map_err(|e| ChannelError::Io {
                doing: "saying hello to the node".into(),
                error: e,
            })?;
        let mut reader = FramedRead::new(read, wire::codec());
        let start = match reader.next().await {
            Some(Ok(frame)) => match wire::decode::<ToInstance>(&frame) {
                Ok(ToInstance::Start(start)) => start,
                Ok(_) => return Err(ChannelError::Protocol("the node's first frame was not a start".into())),
                Err(e) => return Err(ChannelError::Protocol(format!("the node's start cannot be read: {e}"))),
            },
            Some(Err(e)) => {
                return Err(ChannelError::Io {
                    doing: "reading the node's start".into(),
                    error: e,
                });
            }
            None => {
                return Err(ChannelError::Protocol(
                    "the node hung up before saying what to run".into(),
                ));
            }
        };
        let (out, mut outgoing) = mpsc::channel::<Out>(OUTGOING);
        let closed = CancellationToken::new();
        let pending: Pending = Arc::default();
        // The writer: frames in the order they were queued, each sent
        // whole; what is queued together goes out in one write (the codec
        // writes its buffer out past 8 KiB, so memory stays bounded).
        let writer_closed = closed.clone();
        tokio::spawn(async move {
            'write: while let Some(mut out) = outgoing.recv().await {
                loop {
                    let sent = match out {
                        Out::Frame(frame) => writer.feed(frame).await,
                        Out::Flushed(done) => {
                            let flushed = SinkExt::<Bytes>::flush(&mut writer).await;
                            let _ = done.send(());
                            flushed
                        }
                    };
                    if let Err(e) = sent {
                        tracing::debug!(error = %e, "the channel to the node broke while writing");
                        break 'write;
                    }
                    match outgoing.try_recv() {
                        Ok(next) => out = next,
                        Err(_) => break,
                    }
                }
                if let Err(e) = SinkExt::<Bytes>::flush(&mut writer).await {
                    tracing::debug!(error = %e, "the channel to the node broke while writing");
                    break;
                }
            }
            writer_closed.cancel();
        });
        // The reader: replies to their callers, the rest to `Incoming`.
        let (wake_tx, wakes) = mpsc::channel(WAKES);
        let drain = CancellationToken::new();
        let incoming = Incoming {
            wakes,
            drain: drain.clone(),
            closed: closed.clone(),
        };
        let reader_pending = pending.clone();
        let reader_closed = closed.clone();
        tokio::spawn(async move {
            loop {
                let frame = tokio::select! {
                    frame = reader.next() => frame,
                    _ = reader_closed.cancelled() => break,
                };
                let frame = match frame {
                    Some(Ok(frame)) => frame,
                    Some(Err(e)) => {
                        tracing::warn!(error = %e, "the channel to the node broke while reading");
                        break;
                    }
                    None => break,
                };
                match wire::decode::<ToInstance>(&frame) {
                    Ok(ToInstance::Reply { id, reply }) => {
                        let waiter = reader_pending.lock().unwrap_or_else(|p| p.into_inner()).remove(&id);
                        if let Some(waiter) = waiter {
                            let _ = waiter.send(reply);
                        }
                    }
                    Ok(ToInstance::Wake(port)) => {
                        let _ = wake_tx.try_send(port);
                    }
                    Ok(ToInstance::Drain) => drain.cancel(),
                    Ok(ToInstance::Start(_)) => {
                        tracing::error!("the node said what to run twice; closing the channel");
                        break;
                    }
                    Err(e) => {
                        tracing::error!(error = %e, "the node sent a frame this instance cannot read; closing the channel");
                        break;
                    }
                }
            }
            reader_closed.cancel();
            // Every call still waiting hears that the box is gone.
            reader_pending.lock().unwrap_or_else(|p| p.into_inner()).clear();
        });
        Ok((
            Arc::new(Channel {
                out,
                pending,
                next: AtomicU64::new(1),
                closed,
            }),
            incoming,
            start,
        ))
    }

    /// Make one call and wait for its reply. A call whose future is
    /// dropped still runs on the node (as a call on the box would).
    pub async fn call(&self, call: Call) -> Result<Reply, BoxError> {
        let name = call.name();
        let id = self.next.fetch_add(1, Ordering::Relaxed);
        let frame = wire::encode(&ToNode::Call { id, call }).map_err(|e| BoxError::Storage {
            doing: format!("sending `{name}` to the node"),
            detail: e.to_string(),
        })?;
        // Refused here, this call alone: the codec would end the channel.
        if frame.len() > wire::MAX_FRAME {
            return Err(BoxError::Storage {
                doing: format!("sending `{name}` to the node"),
                detail: format!(
                    "the call is {} bytes, over the channel's limit of {}",
                    frame.len(),
                    wire::MAX_FRAME
                ),
            });
        }
        let (tx, rx) = oneshot::channel();
        if self.closed.is_cancelled() {
            return Err(BoxError::Closed);
        }
        self.pending.lock().unwrap_or_else(|p| p.into_inner()).insert(id, tx);
        // Forget the waiter if this future goes away before its reply.
        struct Forget<'a>(&'a Pending, u64);
        impl Drop for Forget<'_> {
            fn drop(&mut self) {
                self.0.lock().unwrap_or_else(|p| p.into_inner()).remove(&self.1);
            }
        }
        let _forget = Forget(&self.pending, id);
        if self.out.send(Out::Frame(frame)).await.is_err() {
            return Err(BoxError::Closed);
        }
        // A connection that ends answers every call still waiting, even
        // one that got in just as it ended.
        tokio::select! {
            biased;
            reply = rx => match reply {
                Ok(reply) => reply.map_err(BoxError::from),
                Err(_) => Err(BoxError::Closed),
            },
            _ = self.closed.cancelled() => Err(BoxError::Closed),
        }
    }

    /// Tell the node what the instance has done (no reply).
    pub async fn stats(&self, stats: Stats) {
        if let Ok(frame) = wire::encode(&ToNode::Stats(stats)) {
            let _ = self.out.send(Out::Frame(frame)).await;
        }
    }

    /// Wait until every frame queued so far is written (before the
    /// instance exits: its last counts reach the node).
    pub async fn flush(&self) {
        let (tx, rx) = oneshot::channel();
        if self.out.send(Out::Flushed(tx)).await.is_ok() {
            let _ = rx.await;
        }
    }

    /// Whether the connection ended.
    pub fn is_closed(&self) -> bool {
        self.closed.is_cancelled()
    }
}

fn unexpected(call: &str, reply: Reply) -> BoxError {
    BoxError::Storage {
        doing: format!("reading the node's reply to `{call}`"),
        detail: format!("it answered {reply:?}, which is not an answer to that call"),
    }
}

fn not_here(doing: &str) -> BoxError {
    BoxError::Storage {
        doing: doing.to_string(),
        detail: "a host instance does not do this: the node does".into(),
    }
}

/// The message box as a host instance sees it: the calls its receive
/// locations and send ports make, each answered by the node's box.
/// Operators' calls (users, audit, searches, resubmission) are the node's
/// alone and fail here.
pub struct RemoteBox {
    channel: Arc<Channel>,
    chunks: Arc<RemoteChunks>,
}

impl RemoteBox {
    pub fn new(channel: Arc<Channel>) -> RemoteBox {
        RemoteBox {
            chunks: Arc::new(RemoteChunks {
                channel: channel.clone(),
            }),
            channel,
        }
    }

    async fn routed(&self, call: Call) -> Result<Routed, BoxError> {
        let name = call.name();
        match self.channel.call(call).await? {
            Reply::Routed(r) => Ok(r.into()),
            other => Err(unexpected(name, other)),
        }
    }

    async fn done(&self, call: Call) -> Result<(), BoxError> {
        let name = call.name();
        match self.channel.call(call).await? {
            Reply::Done => Ok(()),
            other => Err(unexpected(name, other)),
        }
    }

    async fn number(&self, call: Call) -> Result<i64, BoxError> {
        let name = call.name();
        match self.channel.call(call).await? {
            Reply::Number(n) => Ok(n),
            other => Err(unexpected(name, other)),
        }
    }
}

#[async_trait]
impl MessageBox for RemoteBox {
    fn content(&self) -> Arc<dyn ChunkStore> {
        self.chunks.clone()
    }

    async fn publish(&self, msg: NewMessage) -> Result<Routed, BoxError> {
        self.routed(Call::Publish((&msg).into())).await
    }

    async fn publish_holding(&self, msg: NewMessage, holder: &str) -> Result<Routed, BoxError> {
        self.routed(Call::PublishHolding((&msg).into(), holder.to_string()))
            .await
    }

    async fn publish_suspended(&self, msg: NewMessage, holder: &str, failure: &Failure) -> Result<i64, BoxError> {
        self.number(Call::PublishSuspended(
            (&msg).into(),
            holder.to_string(),
            failure.into(),
        ))
        .await
    }

    async fn stage(&self, interchange: MessageId, messages: Vec<StagedMessage>) -> Result<(), BoxError> {
        self.done(Call::Stage(
            interchange.into(),
            messages.iter().map(Into::into).collect(),
        ))
        .await
    }

    async fn commit_interchange(&self, interchange: MessageId) -> Result<InterchangeRouted, BoxError> {
        match self.channel.call(Call::CommitInterchange(interchange.into())).await? {
            Reply::Interchange(r) => Ok(r.into()),
            other => Err(unexpected("commit_interchange", other)),
        }
    }

    async fn abort_interchange(&self, interchange: MessageId) -> Result<u64, BoxError> {
        match self.channel.call(Call::AbortInterchange(interchange.into())).await? {
            Reply::Count(n) => Ok(n),
            other => Err(unexpected("abort_interchange", other)),
        }
    }

    async fn subscribe(&self, _sub: Subscription) -> Result<(), BoxError> {
        Err(not_here("subscribing"))
    }

    async fn unsubscribe(&self, _subscriber: &str) -> Result<u64, BoxError> {
        Err(not_here("unsubscribing"))
    }

    async fn subscriptions(&self) -> Result<Vec<Subscription>, BoxError> {
        Err(not_here("listing subscriptions"))
    }

    async fn lease(&self, subscriber: &str, max: usize, lease_for_ms: Millis) -> Result<Vec<Leased>, BoxError> {
        self.lease_with_bodies(subscriber, max, lease_for_ms, 0).await
    }

    async fn lease_with_bodies(
        &self,
        subscriber: &str,
        max: usize,
        lease_for_ms: Millis,
        bodies_up_to: u64,
    ) -> Result<Vec<Leased>, BoxError> {
        let call = Call::Lease {
            subscriber: subscriber.to_string(),
            max: max.min(u32::MAX as usize) as u32,
            lease_for_ms,
            bodies_up_to,
        };
        match self.channel.call(call).await? {
            Reply::Leased(leased) => leased.into_iter().map(|l| l.into_leased()).collect(),
            other => Err(unexpected("lease", other)),
        }
    }

    async fn renew(&self, token: LeaseToken, lease_for_ms: Millis) -> Result<Millis, BoxError> {
        self.number(Call::Renew(token.into(), lease_for_ms)).await
    }

    async fn ack_many(&self, acks: &[Ack]) -> Result<Vec<Result<(), BoxError>>, BoxError> {
        match self
            .channel
            .call(Call::AckMany(
                acks.iter().map(|a| (a.token.into(), a.delivered_to.clone())).collect(),
            ))
            .await?
        {
            Reply::Acks(answers) if answers.len() == acks.len() => {
                Ok(answers.into_iter().map(|a| a.map_err(BoxError::from)).collect())
            }
            other => Err(unexpected("ack", other)),
        }
    }

    async fn nack(&self, token: LeaseToken, retry_at: Millis, failure: &Failure) -> Result<(), BoxError> {
        self.done(Call::Nack(token.into(), retry_at, failure.into())).await
    }

    async fn nack_to_attempt(
        &self,
        token: LeaseToken,
        retry_at: Millis,
        failure: &Failure,
        next_attempt: u32,
    ) -> Result<(), BoxError> {
        self.done(Call::NackToAttempt(
            token.into(),
            retry_at,
            failure.into(),
            next_attempt,
        ))
        .await
    }

    async fn suspend(&self, token: LeaseToken, failure: &Failure) -> Result<i64, BoxError> {
        self.number(Call::Suspend(token.into(), failure.into())).await
    }

    async fn release_leases(&self) -> Result<u64, BoxError> {
        Err(not_here("releasing the node's leases"))
    }

    async fn recover(&self) -> Result<Recovered, BoxError> {
        Err(not_here("recovering the node's work"))
    }

    async fn hold(&self, message: MessageId, holder: &str) -> Result<(), BoxError> {
        self.done(Call::Hold(message.into(), holder.to_string())).await
    }

    async fn release(&self, message: MessageId, holder: &str) -> Result<(), BoxError> {
        self.done(Call::Release(message.into(), holder.to_string())).await
    }

    async fn held_by(&self, holder: &str, after: Option<MessageId>, limit: usize) -> Result<Vec<MessageId>, BoxError> {
        let call = Call::HeldBy(
            holder.to_string(),
            after.map(Into::into),
            limit.min(u32::MAX as usize) as u32,
        );
        match self.channel.call(call).await? {
            Reply::Ids(ids) => Ok(ids.into_iter().map(Into::into).collect()),
            other => Err(unexpected("held_by", other)),
        }
    }

    async fn resume(&self, _suspended: i64) -> Result<Routed, BoxError> {
        Err(not_here("resuming a suspended entry"))
    }

    async fn terminate(&self, _suspended: i64) -> Result<(), BoxError> {
        Err(not_here("terminating a suspended entry"))
    }

    async fn resubmit(&self, _suspended: i64, _with: Resubmission) -> Result<Resubmitted, BoxError> {
        Err(not_here("resubmitting a suspended entry"))
    }

    async fn suspended(&self, id: i64) -> Result<Option<SuspendedInfo>, BoxError> {
        match self.channel.call(Call::Suspended(id)).await? {
            Reply::Suspended(s) => Ok(s.map(Into::into)),
            other => Err(unexpected("suspended", other)),
        }
    }

    async fn parts(&self, message: MessageId) -> Result<Vec<Part>, BoxError> {
        match self.channel.call(Call::Parts(message.into())).await? {
            Reply::Parts(parts) => Ok(parts),
            other => Err(unexpected("parts", other)),
        }
    }

    async fn message(&self, id: MessageId) -> Result<Option<MessageInfo>, BoxError> {
        match self.channel.call(Call::Message(id.into())).await? {
            Reply::Message(m) => m.map(|m| m.into_info()).transpose(),
            other => Err(unexpected("message", other)),
        }
    }

    async fn list_messages(
        &self,
        _query: &MessageQuery,
        _after: Option<MessageId>,
        _limit: usize,
    ) -> Result<Page<MessageSummary, MessageId>, BoxError> {
        Err(not_here("searching messages"))
    }

    async fn list_suspended(
        &self,
        _query: &SuspendedQuery,
        _after: Option<i64>,
        _limit: usize,
    ) -> Result<Vec<SuspendedInfo>, BoxError> {
        Err(not_here("listing suspended entries"))
    }

    async fn suspended_groups(&self, _limit: usize) -> Result<Vec<SuspendedGroup>, BoxError> {
        Err(not_here("counting suspended entries"))
    }

    async fn counts(&self) -> Result<Counts, BoxError> {
        Err(not_here("counting the box"))
    }

    async fn tracking(
        &self,
        _query: &TrackingQuery,
        _after: Option<i64>,
        _limit: usize,
    ) -> Result<Page<TrackingEvent, i64>, BoxError> {
        Err(not_here("reading tracking"))
    }

    async fn purge_tracking(&self, _before: Millis, _limit: usize) -> Result<u64, BoxError> {
        Err(not_here("purging tracking"))
    }

    async fn add_user(&self, _user: UserRecord) -> Result<(), BoxError> {
        Err(not_here("adding a user"))
    }

    async fn remove_user(&self, _name: &str) -> Result<u64, BoxError> {
        Err(not_here("removing a user"))
    }

    async fn user(&self, _name: &str) -> Result<Option<UserRecord>, BoxError> {
        Err(not_here("reading a user"))
    }

    async fn users(&self, _after: Option<&str>, _limit: usize) -> Result<Vec<UserRecord>, BoxError> {
        Err(not_here("listing users"))
    }

    async fn add_token(&self, _token: NewToken) -> Result<(), BoxError> {
        Err(not_here("adding a token"))
    }

    async fn token(&self, _hash: [u8; 32]) -> Result<Option<TokenRecord>, BoxError> {
        Err(not_here("reading a token"))
    }

    async fn tokens(&self, _user: Option<&str>) -> Result<Vec<TokenRecord>, BoxError> {
        Err(not_here("listing tokens"))
    }

    async fn revoke_token(&self, _id: &str) -> Result<bool, BoxError> {
        Err(not_here("revoking a token"))
    }

    async fn record_audit(&self, _entry: NewAuditEntry) -> Result<i64, BoxError> {
        Err(not_here("recording an audit entry"))
    }

    async fn audit(&self, _before: Option<i64>, _limit: usize) -> Result<Vec<sluice_msgbox::AuditEntry>, BoxError> {
        Err(not_here("reading the audit log"))
    }

    async fn purge_audit(&self, _before: Millis, _limit: usize) -> Result<u64, BoxError> {
        Err(not_here("purging the audit log"))
    }

    async fn set_unit_stopped(&self, _kind: UnitKind, _name: &str, _stopped: bool) -> Result<bool, BoxError> {
        Err(not_here("stopping a unit"))
    }

    async fn stopped_units(&self) -> Result<Vec<(UnitKind, String)>, BoxError> {
        Err(not_here("listing stopped units"))
    }

    async fn add_session(&self, _session: NewSession) -> Result<(), BoxError> {
        Err(not_here("starting a session"))
    }

    async fn session(&self, _hash: [u8; 32]) -> Result<Option<SessionRecord>, BoxError> {
        Err(not_here("reading a session"))
    }

    async fn touch_session(&self, _hash: [u8; 32], _at: Millis) -> Result<(), BoxError> {
        Err(not_here("touching a session"))
    }

    async fn remove_session(&self, _hash: [u8; 32]) -> Result<bool, BoxError> {
        Err(not_here("ending a session"))
    }

    async fn purge_sessions(&self, _now: Millis, _idle_before: Millis, _limit: usize) -> Result<u64, BoxError> {
        Err(not_here("purging sessions"))
    }

    /// The instance's end of the box closes with its connection; the box
    /// itself is the node's to close.
    async fn close(&self) -> Result<(), BoxError> {
        Ok(())
    }
}

/// The node's chunk store, over the channel: one chunk per call, so a body
/// of any size costs the instance one chunk in flight.
pub struct RemoteChunks {
    channel: Arc<Channel>,
}

impl RemoteChunks {
    async fn call(&self, call: Call) -> Result<Reply, ContentError> {
        self.channel.call(call).await.map_err(|e| match e {
            BoxError::Content(c) => c,
            other => ContentError::Backend(other.to_string()),
        })
    }
}

fn unexpected_content(call: &str, reply: Reply) -> ContentError {
    ContentError::Backend(unexpected(call, reply).to_string())
}

#[async_trait]
impl ChunkStore for RemoteChunks {
    async fn begin(&self) -> Result<ContentId, ContentError> {
        match self.call(Call::Begin).await? {
            Reply::Number(id) => Ok(id),
            other => Err(unexpected_content("begin content", other)),
        }
    }

    async fn put_chunk(&self, id: ContentId, seq: u32, data: Bytes) -> Result<(), ContentError> {
        match self.call(Call::PutChunk(id, seq, Chunk(data))).await? {
            Reply::Done => Ok(()),
            other => Err(unexpected_content("put chunk", other)),
        }
    }

    async fn finish(&self, id: ContentId, size: u64, crc32: u32, chunks: u32) -> Result<(), ContentError> {
        let call = Call::Finish {
            content: id,
            size,
            crc32,
            chunks,
        };
        match self.call(call).await? {
            Reply::Done => Ok(()),
            other => Err(unexpected_content("finish content", other)),
        }
    }

    async fn abort(&self, id: ContentId) -> Result<(), ContentError> {
        match self.call(Call::Abort(id)).await? {
            Reply::Done => Ok(()),
            other => Err(unexpected_content("abort content", other)),
        }
    }

    async fn get_chunk(&self, id: ContentId, seq: u32) -> Result<Bytes, ContentError> {
        match self.call(Call::GetChunk(id, seq)).await? {
            Reply::Chunk(Chunk(data)) => Ok(data),
            other => Err(unexpected_content("get chunk", other)),
        }
    }
}
