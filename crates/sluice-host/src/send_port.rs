//! A send port: lease what its subscription queued, transmit, then ack,
//! nack with a retry time, or suspend.
//!
//! What one port holds, with `c` its `concurrency`: at most `c` deliveries
//! running (a slot each); at most `c + min(c, LEASE_AHEAD)` entries leased
//! and not yet delivered, those running included, with at most
//! `LEASE_BODIES` of inline bodies a lease; and at most `min(4c,
//! MAX_SETTLING)` delivered ones whose outcome is still being recorded
//! (their lease and their throttle permit are kept until it commits). The
//! host's throttle bounds what all ports and locations admit together.

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::Duration;

use sluice_adapters::{Body, CORRELATION_ID, Delivered, Outbound, REPLY_TO, Response, TransmitError, Transmitter};
use sluice_content::{WriteOptions, read_part, write_part};
use sluice_model::MessageId;
use sluice_msgbox::{BoxError, Failure, Leased, MessageBox, NewMessage, Routed, SystemClock};
use sluice_pipeline::{AssembleConfig, SendPipeline};
use tokio::sync::{Notify, OwnedSemaphorePermit, Semaphore};
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

use crate::Wakers;
use crate::acks::Acks;
use crate::config::{RetryConfig, SendPortConfig};
use crate::message_log::message_event;
use crate::metrics::{Metrics, Suspension};
use crate::throttle::{Permit, Throttle, Work};

/// Entries of a batch acknowledged (or nacked, or suspended) at once.
const SETTLE_AT_ONCE: usize = 512;

enum Leasing {
    Got(Vec<Leased>),
    /// Nothing leased; try again (the slot taken for it is given back).
    Again,
    Stop,
}

/// Responses a request-response location streams to its clients at once.
const REPLIES_AT_ONCE: usize = 256;

/// Entries a send port leases beyond its free slots (at most its
/// concurrency), so that leasing is not one commit per delivery.
const LEASE_AHEAD: usize = 256;

/// Inline bodies one lease hands out with its entries, at most: small
/// messages are delivered without reading the box again, and a port holds
/// at most this much of them ahead of its deliveries (bigger ones, and
/// stored content, are read when their delivery starts, within the host's
/// budget).
const LEASE_BODIES: u64 = 256 * 1024;

/// Deliveries of one port whose outcome is being recorded at once, at most
/// (they no longer hold a delivery slot).
const MAX_SETTLING: usize = 1024;

/// How often a send port looks at its queue when nothing woke it.
const POLL: Duration = Duration::from_millis(500);

/// One way a send port delivers: its adapter and its retry policy.
struct Transport {
    /// `primary` or `backup`.
    name: &'static str,
    /// The adapter kind (`file`, `http`), for failures.
    kind: &'static str,
    transmitter: Arc<dyn Transmitter>,
    retry: RetryConfig,
}

/// What to do after a failed attempt.
#[derive(Clone, Copy)]
enum Next {
    /// Try the same transport again after this wait.
    Retry(Duration),
    /// Go on to the next transport at once, its first attempt being this
    /// attempt number of the entry.
    FailOver {
        next_attempt: u32,
        to: &'static str,
    },
    Suspend,
}

pub(crate) struct SendPortRunner {
    name: String,
    mbox: Arc<dyn MessageBox>,
    /// The primary transport, then the backup (if any): attempts 1 to
    /// primary.retry.count + 1 use the primary, the next ones the backup.
    transports: Vec<Transport>,
    pipeline: Arc<dyn SendPipeline>,
    concurrency: usize,
    lease_ms: i64,
    wake: Arc<Notify>,
    /// Solicit-response: wakes the subscribers of the responses it publishes.
    wakers: Arc<Wakers>,
    throttle: Arc<Throttle>,
    metrics: Arc<Metrics>,
    /// Acks of deliveries that end together go to the box in one call.
    acks: Acks,
}

impl SendPortRunner {
    pub(crate) fn new(
        name: &str,
        cfg: &SendPortConfig,
        mbox: Arc<dyn MessageBox>,
        wakers: Arc<Wakers>,
        throttle: Arc<Throttle>,
        metrics: Arc<Metrics>,
    ) -> Result<Self, String> {
        let mut transports = vec![Transport {
            name: "primary",
            kind: cfg.adapter.kind(),
            transmitter: cfg.adapter.build().map_err(|e| e.to_string())?,
            retry: cfg.retry.clone(),
        }];
        if let Some(b) = &cfg.backup {
            transports.push(Transport {
                name: "backup",
                kind: b.adapter.kind(),
                transmitter: b.adapter.build().map_err(|e| format!("backup: {e}"))?,
                retry: b.retry.clone(),
            });
        }
        Ok(SendPortRunner {
            name: name.to_string(),
            acks: Acks::new(mbox.clone()),
            mbox,
            transports,
            pipeline: Arc::from(cfg.pipeline.build()),
            concurrency: cfg.concurrency(),
            lease_ms: cfg.lease.as_millis() as i64,
            wake: wakers.of(name),
            wakers,
            throttle,
            metrics,
        })
    }

    /// The runner of a request-response location's reply subscription
    /// (`reply:<location>`): it hands each response to the request waiting
    /// for it. No retries: a response nobody waits for is suspended at once.
    pub(crate) fn replies(
        subscriber: &str,
        transmitter: Arc<dyn Transmitter>,
        mbox: Arc<dyn MessageBox>,
        wakers: Arc<Wakers>,
        throttle: Arc<Throttle>,
        metrics: Arc<Metrics>,
    ) -> Self {
        SendPortRunner {
            name: subscriber.to_string(),
            acks: Acks::new(mbox.clone()),
            mbox,
            transports: vec![Transport {
                name: "primary",
                kind: "reply",
                transmitter,
                retry: RetryConfig::fixed(0, Duration::from_secs(1)),
            }],
            pipeline: Arc::from(sluice_pipeline::SendPipelineConfig::default().build()),
            concurrency: REPLIES_AT_ONCE,
            lease_ms: 60_000,
            wake: wakers.of(subscriber),
            wakers,
            throttle,
            metrics,
        }
    }

    pub(crate) async fn run(self, stop: CancellationToken) {
        let me = Arc::new(self);
        if let Some(a) = me.pipeline.assembler().cloned() {
            return me.run_batches(a, stop).await;
        }
        let slots = Arc::new(Semaphore::new(me.concurrency));
        // Leased ahead of the free slots: one lease (one commit) serves many
        // deliveries, instead of one lease per slot freed. Bounded (contexts,
        // and small bodies up to `LEASE_BODIES` a lease); what is leased
        // ahead is in flight: delivered even when the port stops.
        let ahead = me.concurrency.min(LEASE_AHEAD);
        // A delivery gives its slot up once the transport is done, before
        // its ack commits: the next one starts while the box syncs. The
        // deliveries waiting for their ack are bounded too.
        let settle_bound = me.concurrency.saturating_mul(4).clamp(1, MAX_SETTLING);
        let settling = Arc::new(Semaphore::new(settle_bound));
        let mut ready: VecDeque<Leased> = VecDeque::with_capacity(me.concurrency + ahead);
        let start = |l: Leased, slot: OwnedSemaphorePermit| {
            let (me, settling) = (me.clone(), settling.clone());
            // In the span of whoever runs the port (a host instance's).
            tokio::spawn(async move { me.deliver(l, slot, settling).await }.in_current_span());
        };
        tracing::info!(send_port = %me.name, "send port started");
        // The next lease is asked for while the deliveries of the last one
        // still run (once at most half of what is leased ahead is left), so
        // a slot freed does not wait for a round trip to the box. What is
        // leased and not yet delivering stays within `concurrency + ahead`
        // as before: a lease asks only for the room left.
        let (leased_tx, mut leased_rx) = tokio::sync::mpsc::channel::<Leasing>(1);
        let mut leasing = false;
        loop {
            if stop.is_cancelled() {
                break;
            }
            let room = (slots.available_permits() + ahead).saturating_sub(ready.len());
            if !leasing && ready.len() <= ahead / 2 && room > 0 {
                leasing = true;
                let (me, stop, tx) = (me.clone(), stop.clone(), leased_tx.clone());
                tokio::spawn(
                    async move {
                        // A host over its memory mark leases nothing new
                        // (but one delivery at a time while nothing is in
                        // flight).
                        let got = tokio::select! {
                            _ = me.throttle.wait_open() => me.lease_or_wait(room, &stop).await,
                            _ = stop.cancelled() => Leasing::Stop,
                        };
                        let _ = tx.send(got).await;
                    }
                    .in_current_span(),
                );
            }
            tokio::select! {
                permit = slots.clone().acquire_owned(), if !ready.is_empty() => {
                    let Ok(permit) = permit else { break };
                    if let Some(l) = ready.pop_front() {
                        start(l, permit);
                    }
                }
                got = leased_rx.recv(), if leasing => {
                    leasing = false;
                    match got {
                        Some(Leasing::Got(l)) => ready.extend(l),
                        Some(Leasing::Again) => {}
                        Some(Leasing::Stop) | None => break,
                    }
                }
                _ = stop.cancelled() => break,
            }
        }
        // A lease under way is awaited (it ends soon once stopped): what it
        // took is this port's too.
        if leasing && let Some(Leasing::Got(l)) = leased_rx.recv().await {
            ready.extend(l);
        }
        // What was leased ahead is this port's: deliver it before stopping.
        while let Some(l) = ready.pop_front() {
            let Ok(permit) = slots.clone().acquire_owned().await else {
                break;
            };
            start(l, permit);
        }
        // Finish what is in flight: deliveries, then their settling.
        let _ = slots.acquire_many(me.concurrency as u32).await;
        let _ = settling.acquire_many(settle_bound as u32).await;
        tracing::info!(send_port = %me.name, "send port stopped");
    }

    /// Lease up to `max` entries, with their small bodies (up to
    /// [`LEASE_BODIES`]).
    async fn lease(&self, max: usize) -> Result<Vec<Leased>, BoxError> {
        self.mbox
            .lease_with_bodies(&self.name, max, self.lease_ms, LEASE_BODIES)
            .await
    }

    /// Lease up to `max` entries. With none to be had (or the box failing),
    /// wait until woken, polled or stopped, and say so.
    async fn lease_or_wait(&self, max: usize, stop: &CancellationToken) -> Leasing {
        let idle = match self.lease(max).await {
            Ok(l) if !l.is_empty() => return Leasing::Got(l),
            Ok(_) => true,
            Err(BoxError::Closed) => return Leasing::Stop,
            Err(e) => {
                tracing::error!(send_port = %self.name, error = %e, "cannot lease messages; trying again shortly");
                false
            }
        };
        tokio::select! {
            _ = self.wake.notified(), if idle => Leasing::Again,
            _ = tokio::time::sleep(POLL) => Leasing::Again,
            _ = stop.cancelled() => Leasing::Stop,
        }
    }

    /// A port with an assembler: lease up to `batch` messages, wait at most
    /// `wait` for the batch to fill, and send them as one document. Up to
    /// `concurrency` batches are in flight.
    async fn run_batches(self: Arc<Self>, a: AssembleConfig, stop: CancellationToken) {
        let slots = Arc::new(Semaphore::new(self.concurrency));
        let size = a.batch() as usize;
        tracing::info!(send_port = %self.name, batch = size, wait = ?a.wait(), "send port started (batching)");
        loop {
            if stop.is_cancelled() {
                break;
            }
            let permit = tokio::select! {
                p = slots.clone().acquire_owned() => match p { Ok(p) => p, Err(_) => break },
                _ = stop.cancelled() => break,
            };
            tokio::select! {
                _ = self.throttle.wait_open() => {}
                _ = stop.cancelled() => break,
            }
            let mut batch = match self.lease_or_wait(size, &stop).await {
                Leasing::Got(l) => l,
                Leasing::Again => continue,
                Leasing::Stop => break,
            };
            // Fill the batch until it is full or its first message has
            // waited `wait` (config keeps `wait` well under the lease).
            let deadline = tokio::time::Instant::now() + a.wait();
            while batch.len() < size && !stop.is_cancelled() {
                let now = tokio::time::Instant::now();
                if now >= deadline {
                    break;
                }
                tokio::select! {
                    _ = self.wake.notified() => {}
                    _ = tokio::time::sleep((deadline - now).min(POLL)) => {}
                    _ = stop.cancelled() => {}
                }
                match self.lease(size - batch.len()).await {
                    Ok(more) => batch.extend(more),
                    Err(e) => {
                        tracing::warn!(send_port = %self.name, error = %e, "cannot lease more for a batch; sending what it has");
                        break;
                    }
                }
            }
            let me = self.clone();
            let a = a.clone();
            tokio::spawn(
                async move {
                    me.deliver_batch(&a, batch).await;
                    drop(permit);
                }
                .in_current_span(),
            );
        }
        let _ = slots.acquire_many(self.concurrency as u32).await;
        tracing::info!(send_port = %self.name, "send port stopped");
    }

    /// Send a batch as one document; ack, retry or suspend every message of it together.
    async fn deliver_batch(&self, a: &AssembleConfig, batch: Vec<Leased>) {
        let Some(first) = batch.first() else { return };
        let id = MessageId::new();
        let mut context = first.context.clone();
        context.promote("batch", "id", id.to_string());
        context.promote("batch", "count", batch.len() as i64);
        let outbound = Outbound {
            id,
            port: self.name.clone(),
            context,
            attempt: batch.iter().map(|l| l.attempt).max().unwrap_or(1),
            progress: None,
        };
        let work = async {
            let mut bodies: Vec<Body> = Vec::with_capacity(batch.len());
            let mut bytes = 0;
            for l in &batch {
                let read = match &l.parts {
                    Some(parts) => Ok(parts.clone()),
                    None => self.mbox.parts(l.message_id).await,
                };
                match read {
                    Ok(parts) => {
                        bytes += parts.iter().map(|p| p.size).sum::<u64>();
                        bodies.push(self.first_part(&parts));
                    }
                    Err(e) => {
                        let e = format!("reading parts of message {}: {e}", l.message_id);
                        return (None, Err(sluice_adapters::TransmitError::retry(e)));
                    }
                }
            }
            let permit = self.throttle.admit(bytes, Work::Deliver).await;
            // Config refuses a backup on a batching port: always the primary.
            let transmitter = &self.transports[0].transmitter;
            let result = match self.pipeline.wrap(&outbound.context, a.assemble(bodies)) {
                Ok(body) => transmitter.transmit(&outbound, body).await,
                Err(e) => Err(sluice_adapters::TransmitError::retry(e.to_string())),
            };
            (Some(permit), result)
        };
        let (permit, result): (Option<Permit>, _) = self.renewing(&batch, work).await;
        let what = format!("batch {id} of {} message(s)", batch.len());
        self.settle(&batch, result, &what).await;
        drop(permit);
    }

    async fn deliver(&self, mut l: Leased, slot: OwnedSemaphorePermit, settling: Arc<Semaphore>) {
        // Leased ahead, it may have waited for a slot: a lease past half its
        // time is renewed first; one already lost (expired and leased
        // again) is not ours to deliver.
        if l.lease_until - now_ms() < self.lease_ms / 2 {
            match self.mbox.renew(l.token, self.lease_ms).await {
                Ok(until) => l.lease_until = until,
                Err(BoxError::LeaseLost { .. }) => {
                    // Worth a line: its slots were busy for longer than the
                    // lease (a slow peer, or a lease too short for it).
                    tracing::info!(send_port = %self.name, message_id = %l.message_id,
                        "a lease taken ahead expired before its delivery started and was taken again; its new holder delivers it");
                    return;
                }
                Err(e) => tracing::warn!(send_port = %self.name, message_id = %l.message_id, error = %e,
                    "could not renew a lease taken ahead; delivering it anyway"),
            }
        }
        let outbound = Outbound {
            id: l.message_id,
            port: self.name.clone(),
            context: l.context.clone(),
            attempt: l.attempt,
            progress: l.progress.clone(),
        };
        // Admission to the host's budget is part of the work: the lease is
        // renewed while it waits.
        let leased_parts = l.parts.take();
        let work = async {
            let read = match leased_parts {
                Some(parts) => Ok(parts),
                None => self.mbox.parts(l.message_id).await,
            };
            let parts = match read {
                Ok(p) => p,
                Err(e) => {
                    return (
                        None,
                        Err(sluice_adapters::TransmitError::retry(format!("reading parts: {e}"))),
                    );
                }
            };
            let permit = self
                .throttle
                .admit(parts.iter().map(|p| p.size).sum(), Work::Deliver)
                .await;
            let transport = &self.transports[self.transport_of(l.attempt).0];
            if l.attempt > 1 {
                tracing::debug!(send_port = %self.name, message_id = %l.message_id, attempt = l.attempt,
                    transport = transport.name, "delivery attempt");
            }
            let transmitter = &transport.transmitter;
            let result = match self.body(&l, &parts) {
                Ok(body) if transmitter.solicits_response() => match transmitter.solicit(&outbound, body).await {
                    Ok((delivered, response)) => self.publish_response(&l, response).await.map(|_| delivered),
                    Err(e) => Err(e),
                },
                Ok(body) if transmitter.sends_all_parts() && parts.len() > 1 => {
                    transmitter
                        .transmit_all(&outbound, body, self.other_parts(&parts))
                        .await
                }
                Ok(body) => transmitter.transmit(&outbound, body).await,
                Err(e) => Err(sluice_adapters::TransmitError::retry(e)),
            };
            (Some(permit), result)
        };
        let (permit, result): (Option<Permit>, _) = self.renewing(std::slice::from_ref(&l), work).await;
        // The transport is done with it: its slot goes to the next delivery
        // while this outcome commits (its throttle permit stays until then).
        let settle_slot = settling.acquire_owned().await;
        drop(slot);
        self.settle(std::slice::from_ref(&l), result, &format!("message {}", l.message_id))
            .await;
        drop(settle_slot);
        drop(permit);
    }

    /// Solicit-response: store the peer's answer as a new message, correlated
    /// to the request, and publish it (before the request is acknowledged: a
    /// crash in between sends the request again, at least once).
    async fn publish_response(&self, request: &Leased, response: Response) -> Result<MessageId, TransmitError> {
        let Response { mut context, mut body } = response;
        let id = MessageId::new();
        let (ns, name) = CORRELATION_ID;
        context.promote(ns, name, request.message_id.to_string());
        let (ns, name) = REPLY_TO;
        if let Some(p) = request.context.get(ns, name) {
            context.promote(ns, name, p.value.clone());
        }
        context.promote("send", "port", self.name.as_str());
        context.promote("", "received_at", time::OffsetDateTime::now_utc());
        let part = write_part(&*self.mbox.content(), "body", &mut body, WriteOptions::default())
            .await
            .map_err(|e| TransmitError::retry(format!("receiving the response: {e}")))?;
        let stored = part.stored_content();
        let message = NewMessage {
            id,
            context,
            parts: vec![part],
        };
        match self.mbox.publish(message).await {
            Ok(Routed::Queued(subs)) => {
                self.metrics.published(&self.name);
                for s in &subs {
                    self.wakers.wake(s);
                }
                tracing::debug!(send_port = %self.name, request = %request.message_id, response = %id, to = ?subs,
                    "response published");
                Ok(id)
            }
            Ok(Routed::Suspended { suspended_id }) => {
                self.metrics.published(&self.name);
                self.metrics.suspended(&self.name, Suspension::NoSubscriber);
                tracing::warn!(send_port = %self.name, request = %request.message_id, response = %id, suspended_id,
                    "no subscription matches the response; it is suspended (resumable)");
                Ok(id)
            }
            Err(e) => {
                if let Some(c) = stored {
                    let _ = self.mbox.content().abort(c).await;
                }
                Err(TransmitError::retry(format!("publishing the response: {e}")))
            }
        }
    }

    /// Record how a delivery of `entries` (one message, or a batch sent as
    /// one document) ended: ack each, retry each, or suspend each.
    async fn settle(&self, entries: &[Leased], result: Result<Delivered, sluice_adapters::TransmitError>, what: &str) {
        // Settled concurrently, a slice at a time: the box commits them
        // together (group commit) instead of one fsync each.
        let mut taken: Vec<Option<Next>> = Vec::with_capacity(entries.len());
        for chunk in entries.chunks(SETTLE_AT_ONCE) {
            taken.extend(
                futures::future::join_all(chunk.iter().map(|l| self.settle_one(l, &result, entries.len(), what))).await,
            );
        }
        match &result {
            Ok(Delivered::To(to)) => {
                for l in entries {
                    message_event!(send_port = %self.name, message_id = %l.message_id, what, to = %to, "delivered");
                }
            }
            Ok(Delivered::AlreadyThere(to)) => {
                // Say what is known: whether an earlier attempt of this
                // delivery may have written it (the attempt count), not why
                // that attempt's outcome was lost (a restart, an expired
                // lease or a failure after the write look the same here).
                let attempt = entries.iter().map(|l| l.attempt).max().unwrap_or(1);
                if attempt > 1 {
                    tracing::info!(send_port = %self.name, what, to = %to, attempt,
                        "an identical copy was already there, written by an earlier attempt; counted as delivered");
                } else {
                    tracing::info!(send_port = %self.name, what, to = %to, attempt,
                        "an identical copy was already there before the first attempt; counted as delivered");
                }
            }
            Err(e) => {
                let attempt = entries.iter().map(|l| l.attempt).max().unwrap_or(1);
                let (ti, on) = self.transport_of(attempt);
                let t = &self.transports[ti];
                // Named only on a port that has a backup.
                let transport = (self.transports.len() > 1).then_some(t.name);
                let (mut retried, mut failed_over, mut suspended) = (0, 0, 0);
                let mut retry_in = None;
                for next in taken.into_iter().flatten() {
                    match next {
                        Next::Retry(wait) => {
                            retried += 1;
                            retry_in.get_or_insert(wait);
                        }
                        Next::FailOver { .. } => failed_over += 1,
                        Next::Suspend => suspended += 1,
                    }
                }
                if retried > 0 {
                    tracing::warn!(send_port = %self.name, what, attempt, transport, messages = retried,
                        retries_left = (t.retry.count + 1).saturating_sub(on),
                        retry_in = ?retry_in.unwrap_or_default(), error = %e.message,
                        "delivery failed; will retry");
                }
                if failed_over > 0 {
                    tracing::warn!(send_port = %self.name, what, attempt, transport = t.name, messages = failed_over,
                        error = %e.message, "delivery failed on the primary transport; going on to the backup");
                }
                if suspended > 0 && e.needs_edit {
                    tracing::error!(send_port = %self.name, what, attempt, transport, messages = suspended,
                        error = %e.message,
                        "the message cannot be sent as it is; suspended, not resumable (resubmit it edited)");
                } else if suspended > 0 {
                    tracing::error!(send_port = %self.name, what, attempt, transport, messages = suspended,
                        error = %e.message, "delivery failed for good; suspended (resumable)");
                }
            }
        }
    }

    /// Ack, retry, fail over or suspend one entry; which of the last three
    /// it chose after a failure.
    async fn settle_one(
        &self,
        l: &Leased,
        result: &Result<Delivered, sluice_adapters::TransmitError>,
        batch: usize,
        what: &str,
    ) -> Option<Next> {
        let mut taken = None;
        let outcome = match result {
            Ok(delivered) => {
                // Delivered: the ack must not be lost to a passing storage
                // failure (a full disk), or the message stays leased and is
                // sent again when the lease runs out.
                let to = match delivered {
                    Delivered::To(to) => to.clone(),
                    Delivered::AlreadyThere(to) => format!("{to} (already there)"),
                };
                let acked = storage_retried(|| self.acks.ack(l.token, Some(to.clone()))).await;
                if acked.is_ok() {
                    self.metrics.delivered(&self.name);
                }
                acked
            }
            // Each message by its own attempt count.
            Err(e) => {
                let t = &self.transports[self.transport_of(l.attempt).0];
                let mut failure = Failure::new(sluice_msgbox::stage::TRANSMIT, t.kind, e.message.clone());
                if self.transports.len() > 1 {
                    failure = failure.by_transport(t.name);
                }
                if e.needs_edit {
                    failure = failure.needing_edit();
                }
                failure = failure.with_progress(e.progress.clone());
                let next = self.next(l.attempt, e);
                taken = Some(next);
                match next {
                    Next::Retry(wait) => {
                        let retry_at = now_ms() + wait.as_millis() as i64;
                        self.mbox.nack(l.token, retry_at, &failure).await
                    }
                    Next::FailOver { next_attempt, to } => {
                        tracing::debug!(send_port = %self.name, message_id = %l.message_id, to, next_attempt,
                            "failing over");
                        self.mbox
                            .nack_to_attempt(l.token, now_ms(), &failure, next_attempt)
                            .await
                    }
                    Next::Suspend => {
                        // The error as the adapter gave it (the entry says
                        // where, how many attempts, on which transport).
                        if batch > 1 {
                            failure.error = format!("{} ({what})", e.message);
                        }
                        let suspended = self.mbox.suspend(l.token, &failure).await;
                        if suspended.is_ok() {
                            self.metrics.suspended(&self.name, Suspension::DeliveryFailed);
                            // Its fault goes to the reply subscriber of a
                            // waiting client (`fault.reply_to`): tell it now
                            // rather than at its next poll.
                            let (ns, name) = REPLY_TO;
                            if let Some(to) = l.context.promoted(ns, name).and_then(|v| v.as_str()) {
                                self.wakers.wake(to);
                            }
                        }
                        suspended.map(|_| ())
                    }
                }
            }
        };
        if let Err(e) = outcome {
            // A lost lease means another delivery attempt owns the entry now.
            tracing::warn!(send_port = %self.name, message_id = %l.message_id, error = %e, "could not record the outcome");
        }
        taken
    }

    /// The transport of attempt `attempt` and the attempt number on it.
    fn transport_of(&self, attempt: u32) -> (usize, u32) {
        let mut on = attempt.max(1);
        let last = self.transports.len() - 1;
        for (i, t) in self.transports.iter().enumerate() {
            let span = t.retry.count.saturating_add(1);
            if on <= span || i == last {
                return (i, on);
            }
            on -= span;
        }
        (last, on)
    }

    /// After attempt `attempt` failed with `e`: retry on the same transport
    /// while it has retries and retrying can help, else go on to the next
    /// transport, else suspend.
    fn next(&self, attempt: u32, e: &TransmitError) -> Next {
        let (ti, on) = self.transport_of(attempt);
        let t = &self.transports[ti];
        if e.retryable && on <= t.retry.count {
            return Next::Retry(t.retry.delay(on));
        }
        match self.transports.get(ti + 1) {
            Some(next) => {
                let used: u32 = self.transports[..=ti]
                    .iter()
                    .map(|t| t.retry.count.saturating_add(1))
                    .fold(0u32, u32::saturating_add);
                Next::FailOver {
                    next_attempt: used.saturating_add(1),
                    to: next.name,
                }
            }
            None => Next::Suspend,
        }
    }

    /// Run `work`, renewing the lease every third of its length, so a long
    /// delivery is not handed out a second time while it is still going.
    async fn renewing<T>(&self, entries: &[Leased], work: impl std::future::Future<Output = T>) -> T {
        tokio::pin!(work);
        let every = Duration::from_millis((self.lease_ms / 3).max(100) as u64);
        let mut tick = tokio::time::interval_at(tokio::time::Instant::now() + every, every);
        // A lost lease stays lost: stop renewing it (and warning about it).
        let mut renewing = vec![true; entries.len()];
        loop {
            tokio::select! {
                out = &mut work => return out,
                _ = tick.tick(), if renewing.iter().any(|r| *r) => {
                    for (l, renew) in entries.iter().zip(renewing.iter_mut()) {
                        if !*renew {
                            continue;
                        }
                        if let Err(e) = self.mbox.renew(l.token, self.lease_ms).await {
                            tracing::warn!(send_port = %self.name, message_id = %l.message_id, error = %e,
                                "could not renew the lease of a delivery in progress");
                            *renew = !matches!(e, BoxError::LeaseLost { .. });
                        }
                    }
                }
            }
        }
    }

    /// The body a send port sends: the message's first part, streamed.
    fn first_part(&self, parts: &[sluice_content::Part]) -> Body {
        match parts.first() {
            Some(p) => Box::new(read_part(self.mbox.content(), p)),
            None => Box::new(tokio::io::empty()),
        }
    }

    /// The parts after the first, as they are stored (the port's pipeline
    /// encodes the body only), each read only when its transmitter reads it.
    fn other_parts(&self, parts: &[sluice_content::Part]) -> Vec<sluice_adapters::OtherPart> {
        parts
            .iter()
            .skip(1)
            .map(|p| sluice_adapters::OtherPart {
                name: p.name.clone(),
                size: p.size,
                body: Box::new(read_part(self.mbox.content(), p)),
            })
            .collect()
    }

    fn body(&self, l: &Leased, parts: &[sluice_content::Part]) -> Result<Body, String> {
        self.pipeline
            .wrap(&l.context, self.first_part(parts))
            .map_err(|e| e.to_string())
    }
}

/// Run `op` again while it fails in storage, for up to about a minute.
async fn storage_retried<F, Fut>(mut op: F) -> Result<(), BoxError>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<(), BoxError>>,
{
    let mut wait = Duration::from_millis(100);
    for _ in 0..10 {
        match op().await {
            Err(BoxError::Storage { doing, detail }) => {
                tracing::warn!(doing, detail, retry_in = ?wait, "the message box failed; trying again");
                tokio::time::sleep(wait).await;
                wait = (wait * 2).min(Duration::from_secs(10));
            }
            other => return other,
        }
    }
    op().await
}

fn now_ms() -> i64 {
    use sluice_msgbox::Clock;
    SystemClock.now_ms()
}
