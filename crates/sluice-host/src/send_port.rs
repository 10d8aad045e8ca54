//! A send port: lease what its subscription queued, transmit, then ack,
//! nack with a retry time, or suspend.

use std::sync::Arc;
use std::time::Duration;

use sluice_adapters::{Body, Delivered, Outbound, Transmitter};
use sluice_content::read_part;
use sluice_msgbox::{BoxError, Leased, MessageBox, SystemClock};
use sluice_pipeline::SendPipeline;
use tokio::sync::{Notify, Semaphore};
use tokio_util::sync::CancellationToken;

use crate::config::{RetryConfig, SendPortConfig};
use crate::metrics::{Metrics, Suspension};
use crate::throttle::{Permit, Throttle, Work};

/// How often a send port looks at its queue when nothing woke it.
const POLL: Duration = Duration::from_millis(500);

pub(crate) struct SendPortRunner {
    name: String,
    mbox: Arc<dyn MessageBox>,
    transmitter: Arc<dyn Transmitter>,
    pipeline: Arc<dyn SendPipeline>,
    retry: RetryConfig,
    concurrency: usize,
    lease_ms: i64,
    wake: Arc<Notify>,
    throttle: Arc<Throttle>,
    metrics: Arc<Metrics>,
}

impl SendPortRunner {
    pub(crate) fn new(
        name: &str,
        cfg: &SendPortConfig,
        mbox: Arc<dyn MessageBox>,
        wake: Arc<Notify>,
        throttle: Arc<Throttle>,
        metrics: Arc<Metrics>,
    ) -> Result<Self, String> {
        Ok(SendPortRunner {
            name: name.to_string(),
            mbox,
            transmitter: cfg.adapter.build().map_err(|e| e.to_string())?,
            pipeline: Arc::from(cfg.pipeline.build()),
            retry: cfg.retry.clone(),
            concurrency: cfg.concurrency,
            lease_ms: cfg.lease.as_millis() as i64,
            wake,
            throttle,
            metrics,
        })
    }

    pub(crate) async fn run(self, stop: CancellationToken) {
        let me = Arc::new(self);
        let slots = Arc::new(Semaphore::new(me.concurrency));
        tracing::info!(send_port = %me.name, "send port started");
        loop {
            if stop.is_cancelled() {
                break;
            }
            // Wait for at least one free slot, then lease as many as are free.
            let first = tokio::select! {
                p = slots.clone().acquire_owned() => match p { Ok(p) => p, Err(_) => break },
                _ = stop.cancelled() => break,
            };
            // A host over its memory mark leases nothing new (but one
            // delivery at a time while nothing is in flight).
            tokio::select! {
                _ = me.throttle.wait_open() => {}
                _ = stop.cancelled() => break,
            }
            let free = slots.available_permits() + 1;
            let leased = match me.mbox.lease(&me.name, free, me.lease_ms).await {
                Ok(l) => l,
                Err(BoxError::Closed) => break,
                Err(e) => {
                    tracing::error!(send_port = %me.name, error = %e, "cannot lease messages; trying again shortly");
                    drop(first);
                    tokio::select! { _ = tokio::time::sleep(POLL) => {}, _ = stop.cancelled() => break }
                    continue;
                }
            };
            if leased.is_empty() {
                drop(first);
                tokio::select! {
                    _ = me.wake.notified() => {}
                    _ = tokio::time::sleep(POLL) => {}
                    _ = stop.cancelled() => break,
                }
                continue;
            }
            let mut first = Some(first);
            for l in leased {
                let permit = match first.take() {
                    Some(p) => p,
                    None => match slots.clone().acquire_owned().await {
                        Ok(p) => p,
                        Err(_) => break,
                    },
                };
                let me2 = me.clone();
                tokio::spawn(async move {
                    me2.deliver(l).await;
                    drop(permit);
                });
            }
        }
        // Finish what is in flight.
        let _ = slots.acquire_many(me.concurrency as u32).await;
        tracing::info!(send_port = %me.name, "send port stopped");
    }

    async fn deliver(&self, l: Leased) {
        let outbound = Outbound {
            id: l.message_id,
            port: self.name.clone(),
            context: l.context.clone(),
            attempt: l.attempt,
        };
        // Admission to the host's budget is part of the work: the lease is
        // renewed while it waits.
        let work = async {
            let parts = match self.mbox.parts(l.message_id).await {
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
            let result = match self.body(&l, &parts) {
                Ok(body) => self.transmitter.transmit(&outbound, body).await,
                Err(e) => Err(sluice_adapters::TransmitError::retry(e)),
            };
            (Some(permit), result)
        };
        let (permit, result): (Option<Permit>, _) = self.renewing(&l, work).await;
        let outcome = match result {
            Ok(delivered) => {
                match &delivered {
                    Delivered::To(to) => {
                        tracing::debug!(send_port = %self.name, message_id = %l.message_id, to = %to, "delivered")
                    }
                    Delivered::AlreadyThere(to) => tracing::info!(send_port = %self.name, message_id = %l.message_id,
                        to = %to, "an identical copy was already delivered (redelivery after a restart)"),
                }
                let acked = self.mbox.ack(l.token).await;
                if acked.is_ok() {
                    self.metrics.delivered(&self.name);
                }
                acked
            }
            Err(e) if e.retryable && l.attempt <= self.retry.count => {
                let retry_at = now_ms() + self.retry.interval.as_millis() as i64;
                tracing::warn!(send_port = %self.name, message_id = %l.message_id, attempt = l.attempt,
                    retries_left = self.retry.count + 1 - l.attempt, error = %e.message, "delivery failed; will retry");
                self.mbox.nack(l.token, retry_at, &e.message).await
            }
            Err(e) => {
                let reason = format!(
                    "send port `{}`: {} (after {} attempt(s))",
                    self.name, e.message, l.attempt
                );
                tracing::error!(send_port = %self.name, message_id = %l.message_id, error = %e.message,
                    "delivery failed for good; the message is suspended (resumable)");
                let suspended = self.mbox.suspend(l.token, &reason).await;
                if suspended.is_ok() {
                    self.metrics.suspended(&self.name, Suspension::DeliveryFailed);
                }
                suspended.map(|_| ())
            }
        };
        drop(permit);
        if let Err(e) = outcome {
            // A lost lease means another delivery attempt owns the entry now.
            tracing::warn!(send_port = %self.name, message_id = %l.message_id, error = %e, "could not record the outcome");
        }
    }

    /// Run `work`, renewing the lease every third of its length, so a long
    /// delivery is not handed out a second time while it is still going.
    async fn renewing<T>(&self, l: &Leased, work: impl std::future::Future<Output = T>) -> T {
        tokio::pin!(work);
        let every = Duration::from_millis((self.lease_ms / 3).max(100) as u64);
        let mut tick = tokio::time::interval_at(tokio::time::Instant::now() + every, every);
        let mut renewing = true;
        loop {
            tokio::select! {
                out = &mut work => return out,
                _ = tick.tick(), if renewing => {
                    if let Err(e) = self.mbox.renew(l.token, self.lease_ms).await {
                        tracing::warn!(send_port = %self.name, message_id = %l.message_id, error = %e,
                            "could not renew the lease of a delivery in progress");
                        // A lost lease stays lost; do not warn on every tick.
                        renewing = !matches!(e, BoxError::LeaseLost { .. });
                    }
                }
            }
        }
    }

    fn body(&self, l: &Leased, parts: &[sluice_content::Part]) -> Result<Body, String> {
        let body: Body = match parts.first() {
            Some(p) => Box::new(read_part(self.mbox.content(), p)),
            None => Box::new(tokio::io::empty()),
        };
        self.pipeline.wrap(&l.context, body).map_err(|e| e.to_string())
    }
}

fn now_ms() -> i64 {
    use sluice_msgbox::Clock;
    SystemClock.now_ms()
}
