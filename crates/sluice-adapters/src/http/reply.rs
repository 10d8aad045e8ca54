//! Request-response: the requests a location is waiting on, and the
//! transmitter that hands each response routed back to it to its request.
//!
//! A request-response location registers each request (by its message id)
//! before publishing it, then waits. The host runs [`ReplyTransmitter`] like
//! a send port on the location's reply subscription (`reply.to ==
//! "reply:<location>"`): for each response it finds the waiting request by
//! `correlation.id` and streams the body into the HTTP answer. The response
//! is acknowledged only once the answer's last byte was handed to the
//! connection; a response nobody waits for any more (the request timed out,
//! the client went away, the node restarted) is suspended with that reason.
//!
//! Architecture Invariant: a waiting request holds no body in memory: only a
//! channel end. A response streams from the box to the client a chunk at a
//! time, and its lease is renewed while it does.

use std::collections::HashMap;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context as TaskContext, Poll};

use async_trait::async_trait;
use bytes::Bytes;
use futures::Stream;
use sluice_model::{Context, MessageId};
use tokio::sync::oneshot;
use tokio_util::io::ReaderStream;

use crate::{Body, CORRELATION_ID, Delivered, Outbound, TransmitError, Transmitter};

/// A response on its way to the request waiting for it.
pub(crate) struct Reply {
    pub(crate) context: Context,
    pub(crate) body: Body,
    /// Told how the answer ended: `Ok` once every byte was handed to the
    /// connection, `Err` if the client went away first.
    pub(crate) done: oneshot::Sender<Result<u64, String>>,
}

/// The requests of one location waiting for their response.
#[derive(Default)]
pub(crate) struct Waiting {
    by_request: Mutex<HashMap<MessageId, oneshot::Sender<Reply>>>,
}

impl Waiting {
    /// Wait for the response to request `id` (registered before it is published).
    pub(crate) fn register(&self, id: MessageId) -> oneshot::Receiver<Reply> {
        let (tx, rx) = oneshot::channel();
        if let Ok(mut m) = self.by_request.lock() {
            m.insert(id, tx);
        }
        rx
    }

    /// Stop waiting for request `id` (answered otherwise, or gave up).
    pub(crate) fn forget(&self, id: MessageId) {
        if let Ok(mut m) = self.by_request.lock() {
            m.remove(&id);
        }
    }

    fn take(&self, id: MessageId) -> Option<oneshot::Sender<Reply>> {
        self.by_request.lock().ok().and_then(|mut m| m.remove(&id))
    }

    pub(crate) fn len(&self) -> usize {
        self.by_request.lock().map(|m| m.len()).unwrap_or(0)
    }
}

/// Hands responses to the requests waiting for them (see the module doc).
pub(crate) struct ReplyTransmitter {
    pub(crate) location: String,
    pub(crate) waiting: Arc<Waiting>,
}

#[async_trait]
impl Transmitter for ReplyTransmitter {
    async fn transmit(&self, msg: &Outbound, body: Body) -> Result<Delivered, TransmitError> {
        let (ns, name) = CORRELATION_ID;
        let request =
            msg.context.get(ns, name).map(|p| p.value.to_text()).ok_or_else(|| {
                TransmitError::fatal(format!("a response without {ns}.{name}: it answers no request"))
            })?;
        let request: MessageId = request.parse().map_err(|_| {
            TransmitError::fatal(format!(
                "{ns}.{name} `{request}` is not a message id: it answers no request"
            ))
        })?;
        let no_one = || {
            TransmitError::fatal(format!(
                "no request {request} is waiting at receive location `{}` (it timed out, its client went away, \
                 or the node restarted since)",
                self.location
            ))
        };
        let waiter = self.waiting.take(request).ok_or_else(no_one)?;
        let (done, ended) = oneshot::channel();
        let reply = Reply {
            context: msg.context.clone(),
            body,
            done,
        };
        if waiter.send(reply).is_err() {
            return Err(no_one());
        }
        match ended.await {
            Ok(Ok(bytes)) => Ok(Delivered::To(format!(
                "the client of request {request} ({bytes} bytes)"
            ))),
            Ok(Err(e)) => Err(TransmitError::fatal(format!("answering request {request}: {e}"))),
            Err(_) => Err(TransmitError::fatal(format!(
                "answering request {request}: the client went away before the answer started"
            ))),
        }
    }
}

/// A response body on its way to the client: says how it ended on `done`.
pub(crate) struct ReplyStream {
    inner: ReaderStream<Body>,
    sent: u64,
    done: Option<oneshot::Sender<Result<u64, String>>>,
}

impl ReplyStream {
    pub(crate) fn new(body: Body, done: oneshot::Sender<Result<u64, String>>) -> Self {
        ReplyStream {
            inner: ReaderStream::with_capacity(body, 64 * 1024),
            sent: 0,
            done: Some(done),
        }
    }

    fn end(&mut self, outcome: Result<u64, String>) {
        if let Some(d) = self.done.take() {
            let _ = d.send(outcome);
        }
    }
}

impl Stream for ReplyStream {
    type Item = std::io::Result<Bytes>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut TaskContext<'_>) -> Poll<Option<Self::Item>> {
        match Pin::new(&mut self.inner).poll_next(cx) {
            Poll::Ready(Some(Ok(chunk))) => {
                self.sent += chunk.len() as u64;
                Poll::Ready(Some(Ok(chunk)))
            }
            Poll::Ready(Some(Err(e))) => {
                let sent = self.sent;
                self.end(Err(format!(
                    "reading the response from the box after {sent} bytes: {e}"
                )));
                Poll::Ready(Some(Err(e)))
            }
            Poll::Ready(None) => {
                let sent = self.sent;
                self.end(Ok(sent));
                Poll::Ready(None)
            }
            Poll::Pending => Poll::Pending,
        }
    }
}

impl Drop for ReplyStream {
    fn drop(&mut self) {
        let sent = self.sent;
        self.end(Err(format!("the client went away after {sent} bytes of the answer")));
    }
}
