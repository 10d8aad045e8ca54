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
//! The reply subscription also takes the fault messages of the requests
//! (and responses) whose client waits here (`fault.reply_to`, see the
//! message box's fault rules): a request suspended downstream, on any node,
//! is answered at once ([`Failed`], a 502) instead of at the end of
//! `response_timeout`. Whichever comes first wins: a response, or the
//! suspension of the request at any of the send ports that took it. A
//! fault that finds nobody waiting (answered already, client gone) is
//! acknowledged: the suspended entry it reports is the record.
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

use sluice_model::reply::FAULT_CORRELATION_ID;

use crate::{Body, CORRELATION_ID, Delivered, Outbound, TransmitError, Transmitter};

/// What a waiting request gets: its response, or word that none will come.
pub(crate) enum Answer {
    Response(Reply),
    Failed(Failed),
}

/// A response on its way to the request waiting for it.
pub(crate) struct Reply {
    pub(crate) context: Context,
    pub(crate) body: Body,
    /// Told how the answer ended: `Ok` once every byte was handed to the
    /// connection, `Err` if the client went away first.
    pub(crate) done: oneshot::Sender<Result<u64, String>>,
}

/// A request, or its response, suspended downstream: what its fault
/// message says, for the waiting client's 502 and the log.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Failed {
    /// The suspended message: the request itself, or its response.
    pub(crate) message: String,
    pub(crate) suspended_id: Option<i64>,
    /// The subscriber it was going to (a send port, or `reply:<location>`).
    pub(crate) port: Option<String>,
    pub(crate) stage: String,
    pub(crate) component: String,
    pub(crate) attempts: Option<i64>,
    /// The error, for the log only: it may name internal addresses and
    /// paths, so the client is never sent it.
    pub(crate) error: String,
}

impl Failed {
    /// The request a fault message reports on (its `fault.correlation_id`)
    /// and what it says; `None` for any other message.
    fn of(context: &Context) -> Option<(String, Failed)> {
        let (ns, name) = FAULT_CORRELATION_ID;
        let request = context.promoted(ns, name)?.to_text();
        let text = |name: &str| context.get("fault", name).map(|p| p.value.to_text());
        let int = |name: &str| context.get("fault", name).and_then(|p| p.value.as_int());
        Some((
            request,
            Failed {
                message: text("message_id").unwrap_or_default(),
                suspended_id: int("suspended_id"),
                port: text("port"),
                stage: text("stage").unwrap_or_default(),
                component: text("component").unwrap_or_default(),
                attempts: int("attempts"),
                error: text("error").unwrap_or_default(),
            },
        ))
    }
}

/// The requests of one location waiting for their response.
#[derive(Default)]
pub(crate) struct Waiting {
    by_request: Mutex<HashMap<MessageId, oneshot::Sender<Answer>>>,
}

impl Waiting {
    /// Wait for the response to request `id` (registered before it is published).
    pub(crate) fn register(&self, id: MessageId) -> oneshot::Receiver<Answer> {
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

    fn take(&self, id: MessageId) -> Option<oneshot::Sender<Answer>> {
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
        if let Some((request, failed)) = Failed::of(&msg.context) {
            // Its body (the failed message's) is not read.
            return Ok(self.tell_failed(&request, failed));
        }
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
        if waiter.send(Answer::Response(reply)).is_err() {
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

impl ReplyTransmitter {
    /// Hand a suspension to the request waiting on it, if one still is.
    /// Delivered either way: nobody waiting (answered already, timed out,
    /// gone) leaves nothing to do, and the suspended entry is the record.
    fn tell_failed(&self, request: &str, failed: Failed) -> Delivered {
        let told = match request.parse::<MessageId>().ok().and_then(|id| self.waiting.take(id)) {
            Some(waiter) => waiter.send(Answer::Failed(failed)).is_ok(),
            None => false,
        };
        match told {
            true => Delivered::To(format!("the client of request {request}: its suspension (502)")),
            false => Delivered::To(format!(
                "no one: request {request} is not waiting at receive location `{}` any more",
                self.location
            )),
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

#[cfg(test)]
mod tests {
    use super::*;

    fn transmitter() -> ReplyTransmitter {
        ReplyTransmitter {
            location: "web".into(),
            waiting: Arc::new(Waiting::default()),
        }
    }

    fn outbound(context: Context) -> Outbound {
        Outbound {
            id: MessageId::new(),
            port: "reply:web".into(),
            context,
            attempt: 1,
            progress: None,
        }
    }

    /// A fault message's context as the box makes it for a response that
    /// failed on its way back to request `request`.
    fn fault_of_response(request: MessageId, response: MessageId) -> Context {
        let mut ctx = Context::new();
        ctx.promote("fault", "port", "reply:web");
        ctx.promote("fault", "stage", "transmit");
        ctx.promote("fault", "component", "reply");
        ctx.promote("fault", "error", "reading the response from the box: disk I/O error");
        ctx.promote("fault", "attempts", 1i64);
        ctx.promote("fault", "message_id", response.to_string());
        ctx.promote("fault", "suspended_id", 9i64);
        ctx.promote("fault", "reply_to", "reply:web");
        ctx.promote("fault", "correlation_id", request.to_string());
        ctx
    }

    #[tokio::test]
    async fn a_suspended_response_is_told_to_its_waiting_request_and_delivered_either_way() {
        let t = transmitter();
        let (request, response) = (MessageId::new(), MessageId::new());
        let rx = t.waiting.register(request);
        let msg = outbound(fault_of_response(request, response));
        let delivered = t.transmit(&msg, Box::new(tokio::io::empty())).await;
        assert!(
            matches!(delivered, Ok(Delivered::To(ref to)) if to.contains("502")),
            "{delivered:?}"
        );
        let Ok(Answer::Failed(f)) = rx.await else {
            panic!("the waiting request is told of the suspension");
        };
        assert_eq!(
            f,
            Failed {
                message: response.to_string(),
                suspended_id: Some(9),
                port: Some("reply:web".into()),
                stage: "transmit".into(),
                component: "reply".into(),
                attempts: Some(1),
                error: "reading the response from the box: disk I/O error".into(),
            }
        );
        assert_eq!(t.waiting.len(), 0);
        // Nobody waits any more: nothing to answer, and no new suspension.
        let again = t.transmit(&msg, Box::new(tokio::io::empty())).await;
        assert!(
            matches!(again, Ok(Delivered::To(ref to)) if to.starts_with("no one")),
            "{again:?}"
        );
    }

    #[tokio::test]
    async fn a_response_nobody_waits_for_still_fails() {
        let t = transmitter();
        let mut ctx = Context::new();
        ctx.promote("correlation", "id", MessageId::new().to_string());
        let e = t
            .transmit(&outbound(ctx), Box::new(tokio::io::empty()))
            .await
            .unwrap_err();
        assert!(!e.retryable && e.message.contains("is waiting"), "{e}");
    }
}
