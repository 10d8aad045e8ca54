//! A receive location's publisher: pipeline → content store → publish.

use std::sync::Arc;

use async_trait::async_trait;
use sluice_adapters::{Body, Publisher, Receipt, SubmitError};
use sluice_content::{PartBody, WriteOptions, write_part};
use sluice_model::{Context, MessageId};
use sluice_msgbox::{MessageBox, NewMessage, Routed};
use sluice_pipeline::{Emit, EmitError, PipelineError, ReceivePipeline};

use crate::Wakers;
use crate::metrics::{Metrics, Suspension};

pub(crate) struct LocationPublisher {
    location: String,
    /// The reference this location keeps on what it published until the
    /// source has settled (file deleted).
    holder: String,
    pipeline: Box<dyn ReceivePipeline>,
    mbox: Arc<dyn MessageBox>,
    wakers: Arc<Wakers>,
    metrics: Arc<Metrics>,
}

impl LocationPublisher {
    pub(crate) fn new(
        location: &str,
        pipeline: Box<dyn ReceivePipeline>,
        mbox: Arc<dyn MessageBox>,
        wakers: Arc<Wakers>,
        metrics: Arc<Metrics>,
    ) -> Self {
        LocationPublisher {
            location: location.to_string(),
            holder: format!("receive:{location}"),
            pipeline,
            mbox,
            wakers,
            metrics,
        }
    }

    /// Release what this location still holds from an earlier run: after
    /// [`Source::recover`](sluice_adapters::Source::recover), nothing of
    /// that run is in flight any more.
    pub(crate) async fn release_leftovers(&self) -> Result<u64, sluice_msgbox::BoxError> {
        let mut released = 0;
        loop {
            let held = self.mbox.held_by(&self.holder, None, 1000).await?;
            if held.is_empty() {
                return Ok(released);
            }
            for id in held {
                match self.mbox.release(id, &self.holder).await {
                    Ok(()) | Err(sluice_msgbox::BoxError::NotHeld { .. }) => released += 1,
                    Err(e) => return Err(e),
                }
            }
        }
    }
}

/// Writes each message the pipeline emits into the content store.
struct Collector<'a> {
    mbox: &'a dyn MessageBox,
    first_id: Option<MessageId>,
    messages: Vec<NewMessage>,
}

#[async_trait]
impl Emit for Collector<'_> {
    async fn emit(&mut self, context: Context, mut body: Body) -> Result<(), EmitError> {
        let part = write_part(&*self.mbox.content(), "body", &mut body, WriteOptions::default())
            .await
            .map_err(|e| {
                // A stage that fails while the body streams into the store shows
                // up as the body's read error: keep it recognisable.
                let stage = match &e {
                    sluice_content::ContentError::Source { error, .. } => error
                        .get_ref()
                        .and_then(|inner| inner.downcast_ref::<PipelineError>())
                        .cloned(),
                    _ => None,
                };
                match stage {
                    Some(p) => EmitError::Stage(p),
                    None => EmitError::Store(e.to_string()),
                }
            })?;
        let id = self.first_id.take().unwrap_or_default();
        self.messages.push(NewMessage {
            id,
            context,
            parts: vec![part],
        });
        Ok(())
    }
}

impl Collector<'_> {
    /// Drop content written for messages that will not be published.
    async fn discard(&self, from: usize) {
        for m in &self.messages[from..] {
            for p in &m.parts {
                if let PartBody::Stored { content, .. } = p.body {
                    let _ = self.mbox.content().abort(content).await;
                }
            }
        }
    }
}

#[async_trait]
impl Publisher for LocationPublisher {
    async fn submit(&self, id: MessageId, context: Context, body: Body) -> Result<Receipt, SubmitError> {
        let mut out = Collector {
            mbox: &*self.mbox,
            first_id: Some(id),
            messages: Vec::new(),
        };
        if let Err(e) = self.pipeline.run(context, body, &mut out).await {
            out.discard(0).await;
            return Err(match e.stage_failure() {
                Some(p) => SubmitError::rejected(p.to_string()),
                None => SubmitError::new(format!("receive location `{}`: {e}", self.location)),
            });
        }
        let mut ids = Vec::with_capacity(out.messages.len());
        for (i, m) in out.messages.iter().enumerate() {
            match self.mbox.publish_holding(m.clone(), &self.holder).await {
                Ok(Routed::Queued(subs)) => {
                    self.metrics.published(&self.location);
                    for s in &subs {
                        self.wakers.wake(s);
                    }
                }
                Ok(Routed::Suspended { suspended_id }) => {
                    self.metrics.published(&self.location);
                    self.metrics.suspended(&self.location, Suspension::NoSubscriber);
                    tracing::warn!(receive_location = %self.location, message_id = %m.id, suspended_id,
                        "no subscription matches the message; it is suspended (resumable)");
                }
                Err(e) => {
                    out.discard(i).await;
                    return Err(SubmitError::new(format!("publishing message {}: {e}", m.id)));
                }
            }
            ids.push(m.id);
        }
        Ok(Receipt { messages: ids })
    }

    async fn settled(&self, receipt: &Receipt) -> Result<(), SubmitError> {
        for id in &receipt.messages {
            match self.mbox.release(*id, &self.holder).await {
                Ok(()) | Err(sluice_msgbox::BoxError::NotHeld { .. }) => {}
                Err(e) => return Err(SubmitError::new(format!("releasing message {id}: {e}"))),
            }
        }
        Ok(())
    }

    async fn is_published(&self, id: MessageId) -> Result<bool, SubmitError> {
        self.mbox
            .message(id)
            .await
            .map(|m| m.is_some())
            .map_err(|e| SubmitError::new(e.to_string()))
    }

    async fn suspend(
        &self,
        id: MessageId,
        context: Context,
        mut body: Body,
        reason: &str,
    ) -> Result<Receipt, SubmitError> {
        let part = write_part(&*self.mbox.content(), "body", &mut body, WriteOptions::default())
            .await
            .map_err(|e| SubmitError::new(format!("storing the rejected message: {e}")))?;
        let stored = match &part.body {
            PartBody::Stored { content, .. } => Some(*content),
            PartBody::Inline(_) => None,
        };
        let reason = format!("receive location `{}`: {reason}", self.location);
        match self
            .mbox
            .publish_suspended(
                NewMessage {
                    id,
                    context,
                    parts: vec![part],
                },
                &self.holder,
                &reason,
            )
            .await
        {
            Ok(suspended_id) => {
                self.metrics.published(&self.location);
                self.metrics.suspended(&self.location, Suspension::Rejected);
                tracing::warn!(receive_location = %self.location, message_id = %id, suspended_id, reason = %reason,
                    "the receive pipeline rejected the message; it is suspended as received");
                Ok(Receipt { messages: vec![id] })
            }
            Err(e) => {
                if let Some(content) = stored {
                    let _ = self.mbox.content().abort(content).await;
                }
                Err(SubmitError::new(format!("suspending message {id}: {e}")))
            }
        }
    }
}
