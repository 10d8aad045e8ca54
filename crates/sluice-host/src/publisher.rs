//! A receive location's publisher: pipeline → content store → publish.

use std::sync::Arc;

use async_trait::async_trait;
use sluice_adapters::{Body, IncomingPart, PartSource, Publisher, Receipt, SubmitError};
use sluice_content::{Part, WriteOptions, write_part};
use sluice_model::{Context, MessageId};
use sluice_msgbox::{Failure, MessageBox, NewMessage, Routed, StagedMessage};
use sluice_pipeline::{Emit, EmitError, PipelineError, ReceivePipeline};

use crate::Wakers;
use crate::message_log::{self, message_event};
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
    /// What [`Publisher::held`] handed the source (its claims kept in the
    /// box): not released by [`release_leftovers`](Self::release_leftovers),
    /// only when the source settles them.
    adopted: std::sync::Mutex<std::collections::HashSet<MessageId>>,
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
            adopted: Default::default(),
        }
    }

    /// Release what this location still holds from an earlier run: after
    /// [`Source::recover`](sluice_adapters::Source::recover), nothing of
    /// that run is in flight any more, except what the source took back
    /// with [`Publisher::held`] (its claims kept in the box): those stay
    /// held until it settles them, so a second stop before it does still
    /// finds them.
    pub(crate) async fn release_leftovers(&self) -> Result<u64, sluice_msgbox::BoxError> {
        let adopted = self
            .adopted
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone();
        let mut released = 0;
        let mut after = None;
        loop {
            let held = self.mbox.held_by(&self.holder, after, 1000).await?;
            let Some(last) = held.last().copied() else {
                return Ok(released);
            };
            after = Some(last);
            for id in held.into_iter().filter(|id| !adopted.contains(id)) {
                match self.mbox.release(id, &self.holder).await {
                    Ok(()) | Err(sluice_msgbox::BoxError::NotHeld { .. }) => released += 1,
                    Err(e) => return Err(e),
                }
            }
        }
    }
}

/// Records staged per call of [`MessageBox::stage`], and the bytes at which a
/// batch is staged early: what a location holds of an interchange in memory.
const STAGE_BATCH: usize = 1024;
const STAGE_BATCH_BYTES: usize = 4 * 1024 * 1024;

/// Writes what the pipeline emits into the content store: one message
/// (kept until the pipeline ends, then published), or the records of an
/// interchange (staged in batches, committed at the end).
struct Collector<'a> {
    publisher: &'a LocationPublisher,
    /// The submission's id: the id of its first message, and of its interchange.
    source_id: MessageId,
    /// Where it came from, for the log (a file name...).
    source: String,
    first_used: bool,
    /// The location holds what it publishes until the source settles.
    hold: bool,
    messages: Vec<NewMessage>,
    batch: Vec<StagedMessage>,
    batch_bytes: usize,
    staged: u64,
}

/// Map a content-store failure: a stage that fails while the body streams
/// into the store shows up as the body's read error; keep it recognisable.
fn store_error(e: sluice_content::ContentError) -> EmitError {
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
}

impl Collector<'_> {
    fn next_id(&mut self) -> MessageId {
        if self.first_used {
            MessageId::new()
        } else {
            self.first_used = true;
            self.source_id
        }
    }

    async fn add_record(
        &mut self,
        mut context: Context,
        body: Vec<u8>,
        suspend: Option<Failure>,
    ) -> Result<(), EmitError> {
        let mbox = &*self.publisher.mbox;
        let part = write_part(&*mbox.content(), "body", &mut body.as_slice(), WriteOptions::default())
            .await
            .map_err(store_error)?;
        let id = self.next_id();
        // The first record carries the submission's id and the location's
        // hold (unless the source has nothing to settle): it is what crash
        // recovery asks the box about.
        let holder = (self.hold && id == self.source_id).then(|| self.publisher.holder.clone());
        context.promote("interchange", "id", self.source_id.to_string());
        // What the batch holds in memory: inline bodies and the contexts
        // (promoted values can be as long as a record).
        self.batch_bytes += body.len().min(sluice_content::DEFAULT_INLINE_MAX) + context_size(&context);
        self.batch.push(StagedMessage {
            message: NewMessage {
                id,
                context,
                parts: vec![part],
            },
            holder,
            suspend,
        });
        if self.batch.len() >= STAGE_BATCH || self.batch_bytes >= STAGE_BATCH_BYTES {
            self.flush().await?;
        }
        Ok(())
    }

    async fn flush(&mut self) -> Result<(), EmitError> {
        if self.batch.is_empty() {
            return Ok(());
        }
        let batch = std::mem::take(&mut self.batch);
        self.batch_bytes = 0;
        let n = batch.len() as u64;
        let mbox = &*self.publisher.mbox;
        let stored: Vec<sluice_content::ContentId> = batch
            .iter()
            .flat_map(|s| &s.message.parts)
            .filter_map(sluice_content::Part::stored_content)
            .collect();
        if let Err(e) = mbox.stage(self.source_id, batch).await {
            for content in stored {
                let _ = mbox.content().abort(content).await;
            }
            return Err(EmitError::Store(format!(
                "staging records of interchange {}: {e}",
                self.source_id
            )));
        }
        self.staged += n;
        Ok(())
    }

    /// Drop what was written for a submission that will not be published.
    async fn discard(&mut self) {
        let mbox = &*self.publisher.mbox;
        discard_parts(mbox, self.messages.iter()).await;
        discard_parts(mbox, self.batch.iter().map(|s| &s.message)).await;
        self.messages.clear();
        self.batch.clear();
        // Always (cheap when nothing was staged): a batch that failed to
        // stage may still have left something behind.
        if self.publisher.pipeline.disassembles()
            && let Err(e) = mbox.abort_interchange(self.source_id).await
        {
            // A restart discards it anyway; it is invisible meanwhile.
            tracing::warn!(receive_location = %self.publisher.location, interchange = %self.source_id, error = %e,
                "could not discard the staged records of a failed interchange");
        }
    }
}

/// About how many bytes a context takes in memory.
fn context_size(ctx: &Context) -> usize {
    ctx.iter()
        .map(|p| {
            let value = match &p.value {
                sluice_model::Value::String(s) => s.len(),
                sluice_model::Value::Bytes(b) => b.len(),
                _ => 8,
            };
            p.namespace.len() + p.name.len() + value + 32
        })
        .sum()
}

/// Abort the stored (not inline) content of messages that were never published.
async fn discard_parts<'m>(mbox: &dyn MessageBox, messages: impl Iterator<Item = &'m NewMessage>) {
    for m in messages {
        for p in &m.parts {
            if let Some(content) = p.stored_content() {
                let _ = mbox.content().abort(content).await;
            }
        }
    }
}

#[async_trait]
impl Emit for Collector<'_> {
    async fn emit(&mut self, context: Context, mut body: Body) -> Result<(), EmitError> {
        let part = write_part(
            &*self.publisher.mbox.content(),
            "body",
            &mut body,
            WriteOptions::default(),
        )
        .await
        .map_err(store_error)?;
        let id = self.next_id();
        self.messages.push(NewMessage {
            id,
            context,
            parts: vec![part],
        });
        Ok(())
    }

    async fn record(&mut self, context: Context, body: Vec<u8>) -> Result<(), EmitError> {
        self.add_record(context, body, None).await
    }

    async fn bad_record(&mut self, context: Context, body: Vec<u8>, error: PipelineError) -> Result<(), EmitError> {
        let location = &self.publisher.location;
        let failure = Failure::new(
            error.stage,
            &error.component,
            format!("receive location `{location}`: {error}"),
        )
        .at_location(location);
        tracing::warn!(receive_location = %location, interchange = %self.source_id, source = %self.source,
            error = %error, "a record of a recoverable interchange failed; it is suspended alone");
        self.add_record(context, body, Some(failure)).await
    }
}

impl LocationPublisher {
    /// Publish the one message a pipeline without a disassembler made,
    /// held by this location until its source settles (`out.hold`), or not.
    async fn publish_messages(&self, out: &mut Collector<'_>) -> Result<Receipt, SubmitError> {
        let hold = out.hold;
        let mut ids = Vec::with_capacity(out.messages.len());
        let mut unrouted = false;
        for (i, m) in out.messages.iter().enumerate() {
            let published = if hold {
                self.mbox.publish_holding(m.clone(), &self.holder).await
            } else {
                self.mbox.publish(m.clone()).await
            };
            match published {
                Ok(Routed::Queued(subs)) => {
                    self.metrics.published(&self.location);
                    message_event!(receive_location = %self.location, message_id = %m.id,
                        source = %message_log::source(&m.context), bytes = m.parts.iter().map(|p| p.size).sum::<u64>(),
                        to = %subs.join(", "), "message received");
                    for s in &subs {
                        self.wakers.wake(s);
                    }
                }
                Ok(Routed::Suspended { suspended_id }) => {
                    self.metrics.published(&self.location);
                    self.metrics.suspended(&self.location, Suspension::NoSubscriber);
                    unrouted = true;
                    tracing::warn!(receive_location = %self.location, message_id = %m.id, suspended_id,
                        source = %message_log::source(&m.context),
                        "no subscription matches the message; it is suspended (resumable)");
                }
                Err(e) => {
                    discard_parts(&*self.mbox, out.messages[i..].iter()).await;
                    return Err(SubmitError::new(format!("publishing message {}: {e}", m.id)));
                }
            }
            ids.push(m.id);
        }
        Ok(Receipt {
            messages: ids,
            unrouted,
        })
    }

    /// Make a whole interchange visible at once.
    async fn commit_interchange(&self, out: &mut Collector<'_>) -> Result<Receipt, SubmitError> {
        if let Err(e) = out.flush().await {
            out.discard().await;
            return Err(SubmitError::new(format!("receive location `{}`: {e}", self.location)));
        }
        if out.staged == 0 {
            tracing::info!(receive_location = %self.location, interchange = %out.source_id,
                "the interchange holds no records; nothing to publish");
            return Ok(Receipt {
                messages: Vec::new(),
                unrouted: false,
            });
        }
        match self.mbox.commit_interchange(out.source_id).await {
            Ok(routed) => {
                for s in routed.queued.keys() {
                    self.wakers.wake(s);
                }
                self.metrics.published_many(&self.location, routed.messages);
                self.metrics
                    .suspended_many(&self.location, Suspension::NoSubscriber, routed.no_subscriber);
                self.metrics.suspended_many(
                    &self.location,
                    Suspension::BadRecord,
                    routed.suspended.saturating_sub(routed.no_subscriber),
                );
                tracing::info!(receive_location = %self.location, interchange = %out.source_id,
                    source = %out.source, records = routed.messages, suspended = routed.suspended, no_subscriber = routed.no_subscriber,
                    "interchange published");
                Ok(Receipt {
                    messages: vec![out.source_id],
                    unrouted: routed.no_subscriber > 0,
                })
            }
            Err(e) => {
                out.discard().await;
                Err(SubmitError::new(format!(
                    "receive location `{}`: committing interchange {}: {e}",
                    self.location, out.source_id
                )))
            }
        }
    }

    /// Run the pipeline and publish what it made, held by this location
    /// until the source settles (`hold`: a single message, or an
    /// interchange's first record), or not.
    async fn run_and_publish(
        &self,
        id: MessageId,
        context: Context,
        body: Body,
        hold: bool,
    ) -> Result<Receipt, SubmitError> {
        let mut out = self.collector(id, &context, hold);
        self.run_pipeline(context, body, &mut out).await?;
        if self.pipeline.disassembles() {
            self.commit_interchange(&mut out).await
        } else {
            self.publish_messages(&mut out).await
        }
    }

    fn collector(&self, id: MessageId, context: &Context, hold: bool) -> Collector<'_> {
        Collector {
            publisher: self,
            source_id: id,
            source: message_log::source(context),
            first_used: false,
            hold,
            messages: Vec::new(),
            batch: Vec::new(),
            batch_bytes: 0,
            staged: 0,
        }
    }

    /// Run the pipeline over `body` into `out`; on failure, drop what it
    /// wrote.
    async fn run_pipeline(&self, context: Context, body: Body, out: &mut Collector<'_>) -> Result<(), SubmitError> {
        if let Err(e) = self.pipeline.run(context, body, out).await {
            out.discard().await;
            return Err(match e.stage_failure() {
                Some(p) => SubmitError::rejected_in(p.stage, &p.component, p.to_string()),
                None => SubmitError::new(format!("receive location `{}`: {e}", self.location)),
            });
        }
        Ok(())
    }

    /// Store `part` as it is (a message's part besides its body).
    async fn store_part(&self, part: IncomingPart, stored: &mut Vec<Part>) -> Result<(), SubmitError> {
        let IncomingPart { name, mut body, .. } = part;
        let written = write_part(&*self.mbox.content(), &name, &mut body, WriteOptions::default())
            .await
            .map_err(|e| {
                SubmitError::new(format!(
                    "receive location `{}`: storing part `{name}`: {e}",
                    self.location
                ))
            })?;
        stored.push(written);
        Ok(())
    }

    /// The parts of `parts` up to the body (stored into `stored`), and the
    /// body; `None` when the message has none.
    async fn parts_before_body(
        &self,
        parts: &mut dyn PartSource,
        stored: &mut Vec<Part>,
    ) -> Result<Option<Body>, SubmitError> {
        loop {
            match parts.next_part().await {
                Ok(Some(p)) if p.is_body => return Ok(Some(p.body)),
                Ok(Some(p)) => self.store_part(p, stored).await?,
                Ok(None) => return Ok(None),
                Err(e) => return Err(self.parts_error(e)),
            }
        }
    }

    /// The parts after the body, stored into `stored`.
    async fn parts_after_body(&self, parts: &mut dyn PartSource, stored: &mut Vec<Part>) -> Result<(), SubmitError> {
        loop {
            match parts.next_part().await {
                Ok(Some(p)) => self.store_part(p, stored).await?,
                Ok(None) => return Ok(()),
                Err(e) => return Err(self.parts_error(e)),
            }
        }
    }

    fn parts_error(&self, e: std::io::Error) -> SubmitError {
        SubmitError::new(format!(
            "receive location `{}`: reading the message's parts: {e}",
            self.location
        ))
    }

    /// [`Publisher::submit_parts`] once the parts are open: what to drop on
    /// failure is in `stored` and the collector.
    async fn publish_parts(
        &self,
        id: MessageId,
        context: Context,
        parts: &mut dyn PartSource,
        stored: &mut Vec<Part>,
    ) -> Result<Receipt, SubmitError> {
        let body = self.parts_before_body(parts, stored).await?;
        let ended = body.is_none();
        let mut out = self.collector(id, &context, true);
        self.run_pipeline(context, body.unwrap_or_else(|| Box::new(tokio::io::empty())), &mut out)
            .await?;
        let after = if ended {
            Ok(())
        } else {
            self.parts_after_body(parts, stored).await
        };
        if let Err(e) = after {
            out.discard().await;
            return Err(e);
        }
        if self.pipeline.disassembles() {
            if !stored.is_empty() {
                out.discard().await;
                return Err(SubmitError::new(format!(
                    "receive location `{}`: its pipeline debatches, so it takes a body alone, and message {id} has {} \
                     other part(s)",
                    self.location,
                    stored.len()
                )));
            }
            return self.commit_interchange(&mut out).await;
        }
        match out.messages.first_mut() {
            Some(first) => first.parts.append(stored),
            None => discard_stored(&*self.mbox, std::mem::take(stored)).await,
        }
        self.publish_messages(&mut out).await
    }
}

/// Abort the stored content of parts that will not be published.
async fn discard_stored(mbox: &dyn MessageBox, parts: Vec<Part>) {
    for p in parts {
        if let Some(content) = p.stored_content() {
            let _ = mbox.content().abort(content).await;
        }
    }
}

#[async_trait]
impl Publisher for LocationPublisher {
    async fn submit(&self, id: MessageId, context: Context, body: Body) -> Result<Receipt, SubmitError> {
        self.run_and_publish(id, context, body, true).await
    }

    async fn submit_unheld(&self, id: MessageId, context: Context, body: Body) -> Result<Receipt, SubmitError> {
        self.run_and_publish(id, context, body, false).await
    }

    async fn submit_parts(
        &self,
        id: MessageId,
        context: Context,
        parts: &mut dyn PartSource,
    ) -> Result<Receipt, SubmitError> {
        let mut stored = Vec::new();
        let published = self.publish_parts(id, context, parts, &mut stored).await;
        // What is left in `stored` belongs to no message.
        discard_stored(&*self.mbox, stored).await;
        published
    }

    async fn held(&self, max: usize) -> Result<Vec<(MessageId, Context)>, SubmitError> {
        let mut found = Vec::new();
        let mut after = None;
        let failed =
            |e: sluice_msgbox::BoxError| SubmitError::new(format!("listing what `{}` holds: {e}", self.holder));
        while found.len() < max {
            let ids = self
                .mbox
                .held_by(&self.holder, after, (max - found.len()).min(1000))
                .await
                .map_err(failed)?;
            let Some(last) = ids.last().copied() else {
                break;
            };
            after = Some(last);
            for id in ids {
                if let Some(m) = self.mbox.message(id).await.map_err(failed)? {
                    found.push((id, m.context));
                }
            }
        }
        self.adopted
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .extend(found.iter().map(|(id, _)| *id));
        Ok(found)
    }

    async fn settled(&self, receipt: &Receipt) -> Result<(), SubmitError> {
        {
            let mut adopted = self.adopted.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
            for id in &receipt.messages {
                adopted.remove(id);
            }
        }
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

    async fn whereabouts(&self, id: MessageId, detailed: bool) -> String {
        match self.mbox.message(id).await {
            Ok(None) => "the message is no longer in the box: every subscriber took it (its response may have \
                         been suspended because it came too late)"
                .into(),
            Ok(Some(m)) => whereabouts(&m, sluice_msgbox::Clock::now_ms(&sluice_msgbox::SystemClock), detailed),
            Err(e) => format!("cannot look it up: {e}"),
        }
    }

    async fn suspend(
        &self,
        id: MessageId,
        context: Context,
        mut body: Body,
        error: &SubmitError,
    ) -> Result<Receipt, SubmitError> {
        let part = write_part(&*self.mbox.content(), "body", &mut body, WriteOptions::default())
            .await
            .map_err(|e| SubmitError::new(format!("storing the rejected message: {e}")))?;
        let stored = part.stored_content();
        let source = message_log::source(&context);
        let reason = format!("receive location `{}`: {}", self.location, error.message);
        let failure = Failure::new(
            error.stage.as_deref().unwrap_or(sluice_msgbox::stage::RECEIVE),
            error.component.as_deref().unwrap_or("receive location"),
            reason.clone(),
        )
        .at_location(&self.location);
        match self
            .mbox
            .publish_suspended(
                NewMessage {
                    id,
                    context,
                    parts: vec![part],
                },
                &self.holder,
                &failure,
            )
            .await
        {
            Ok(suspended_id) => {
                self.metrics.published(&self.location);
                self.metrics.suspended(&self.location, Suspension::Rejected);
                tracing::warn!(receive_location = %self.location, message_id = %id, suspended_id, source = %source,
                    reason = %reason, "the receive pipeline rejected the message; it is suspended as received");
                Ok(Receipt {
                    messages: vec![id],
                    unrouted: true,
                })
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

/// Where a message is, in words (see [`Publisher::whereabouts`]).
fn whereabouts(m: &sluice_msgbox::MessageInfo, now: i64, detailed: bool) -> String {
    let mut said = Vec::new();
    for q in &m.queue {
        let mut s = format!("queued for `{}`", q.subscriber);
        if q.leased {
            s.push_str(&format!(", being delivered (attempt {})", q.attempts.max(1)));
        } else if q.attempts > 0 {
            let wait = (q.visible_at - now).max(0) as f64 / 1000.0;
            s.push_str(&format!(", {} attempt(s) so far, next in {wait:.1} s", q.attempts));
        } else {
            s.push_str(", not taken yet");
        }
        match &q.last_error {
            Some(e) if detailed => s.push_str(&format!(", last error: {e}")),
            Some(_) => s.push_str(", the last attempt failed"),
            None => {}
        }
        said.push(s);
    }
    for x in &m.suspended {
        said.push(format!(
            "suspended{} after {} attempt(s){} (suspended id {})",
            x.subscriber
                .as_deref()
                .map(|s| format!(" at `{s}`"))
                .unwrap_or_default(),
            x.attempts,
            if detailed {
                format!(": {}", x.reason)
            } else {
                String::new()
            },
            x.id
        ));
    }
    if said.is_empty() {
        return "in the box, queued for no one (delivered everywhere, held by its receive location)".into();
    }
    said.join("; ")
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use sluice_adapters::Publisher;
    use sluice_model::{Context, Filter, MessageId};
    use sluice_msgbox::{MessageInfo, QueueEntryInfo, Subscription, SuspendedInfo};

    use super::{LocationPublisher, whereabouts};
    use crate::Wakers;
    use crate::metrics::Metrics;

    /// A box in `dir` where subscriber `out` takes what location `in` publishes.
    async fn test_box(dir: &std::path::Path) -> Arc<dyn sluice_msgbox::MessageBox> {
        let url = format!("sqlite://{}", dir.join("box.db").display());
        let opts = sluice_store::StoreOptions::new("test-node");
        let mbox = sluice_store::open_url(&url, sluice_store::Role::Node, &opts).unwrap();
        mbox.subscribe(Subscription {
            subscriber: "out".into(),
            filter: Filter::parse("receive.location == \"in\"").unwrap(),
        })
        .await
        .unwrap();
        mbox
    }

    /// The publisher of location `in` with `pipeline`.
    fn location(
        mbox: &Arc<dyn sluice_msgbox::MessageBox>,
        pipeline: sluice_pipeline::ReceivePipelineConfig,
    ) -> LocationPublisher {
        LocationPublisher::new(
            "in",
            pipeline.build().unwrap(),
            mbox.clone(),
            Arc::new(Wakers::default()),
            Metrics::new(),
        )
    }

    /// A pipeline that debatches lines, one record each.
    fn lines_pipeline() -> sluice_pipeline::ReceivePipelineConfig {
        sluice_pipeline::ReceivePipelineConfig {
            disassemble: Some(sluice_pipeline::DisassembleConfig::Lines(
                toml::from_str("batch = 1").unwrap(),
            )),
            ..Default::default()
        }
    }

    /// A source with a copy of its own (a file) has its messages held until
    /// it settles; one without (an HTTP request) holds nothing, so nothing
    /// is left to release (one commit per message, not two).
    #[tokio::test]
    async fn an_unheld_submission_leaves_no_hold_and_a_held_one_does() {
        let dir = tempfile::tempdir().unwrap();
        let mbox = test_box(dir.path()).await;
        let publisher = |pipeline| location(&mbox, pipeline);
        let p = publisher(Default::default());
        // An interchange: its first record carries the hold.
        let lines = publisher(lines_pipeline());
        let submit_to = |p: &'static LocationPublisher, held: bool| async move {
            let id = MessageId::new();
            let mut ctx = Context::new();
            ctx.promote("receive", "location", "in");
            let body: sluice_adapters::Body = Box::new(&b"a body\nin two records\n"[..]);
            let receipt = if held {
                p.submit(id, ctx, body).await
            } else {
                p.submit_unheld(id, ctx, body).await
            }
            .unwrap();
            assert_eq!(receipt.messages, vec![id]);
            id
        };
        let p: &'static LocationPublisher = Box::leak(Box::new(p));
        let lines: &'static LocationPublisher = Box::leak(Box::new(lines));
        let jobs = || mbox.commit_stats().unwrap().jobs;
        // A small body is inline: the publish is the submission's only
        // change to the box (no hold taken, none to release).
        let before = jobs();
        let unheld = submit_to(p, false).await;
        assert_eq!(jobs() - before, 1, "one change for an unheld submission");
        let held = submit_to(p, true).await;
        assert_eq!(mbox.held_by("receive:in", None, 10).await.unwrap(), vec![held]);
        let unheld_interchange = submit_to(lines, false).await;
        let held_interchange = submit_to(lines, true).await;
        assert_eq!(
            mbox.held_by("receive:in", None, 10).await.unwrap(),
            vec![held, held_interchange]
        );
        assert_eq!(mbox.message(unheld_interchange).await.unwrap().unwrap().refs, 1);
        lines
            .settled(&sluice_adapters::Receipt {
                messages: vec![held_interchange],
                unrouted: false,
            })
            .await
            .unwrap();
        // One reference each for the queue entry, one more for the hold.
        assert_eq!(mbox.message(unheld).await.unwrap().unwrap().refs, 1);
        assert_eq!(mbox.message(held).await.unwrap().unwrap().refs, 2);
        p.settled(&sluice_adapters::Receipt {
            messages: vec![held],
            unrouted: false,
        })
        .await
        .unwrap();
        assert!(mbox.held_by("receive:in", None, 10).await.unwrap().is_empty());
        assert_eq!(mbox.message(held).await.unwrap().unwrap().refs, 1);
    }

    /// Parts that come one after another from one stream (a mail): the one
    /// marked body runs through the pipeline and comes first, the others
    /// follow in order, stored as they are; a broken stream publishes
    /// nothing and leaves no content behind; a debatching pipeline refuses
    /// other parts; what was published is found by `held` until settled.
    #[tokio::test]
    async fn a_message_in_parts_is_published_whole_or_not_at_all() {
        use sluice_adapters::{IncomingPart, PartSource};
        use tokio::io::AsyncReadExt;

        struct Parts(Vec<std::io::Result<IncomingPart>>);
        #[async_trait::async_trait]
        impl PartSource for Parts {
            async fn next_part(&mut self) -> std::io::Result<Option<IncomingPart>> {
                if self.0.is_empty() {
                    return Ok(None);
                }
                self.0.remove(0).map(Some)
            }
        }
        let part = |name: &str, body: Vec<u8>, is_body: bool| {
            Ok(IncomingPart {
                name: name.into(),
                body: Box::new(std::io::Cursor::new(body)),
                is_body,
            })
        };
        let dir = tempfile::tempdir().unwrap();
        let mbox = test_box(dir.path()).await;
        let publisher = |pipeline| location(&mbox, pipeline);
        let p = publisher(Default::default());
        let mut ctx = Context::new();
        ctx.promote("receive", "location", "in");
        let big: Vec<u8> = (0..300_000u32).map(|i| (i % 253) as u8).collect();
        let id = MessageId::new();
        let mut parts = Parts(vec![
            part("before.pdf", big.clone(), false),
            part("body.txt", b"the text".to_vec(), true),
            part("after.xml", b"<a/>".to_vec(), false),
        ]);
        p.submit_parts(id, ctx.clone(), &mut parts).await.unwrap();
        let m = mbox.message(id).await.unwrap().unwrap();
        let names: Vec<&str> = m.parts.iter().map(|p| p.name.as_str()).collect();
        assert_eq!(names, ["body", "before.pdf", "after.xml"]);
        let mut read = Vec::new();
        sluice_content::read_part(mbox.content(), &m.parts[1])
            .read_to_end(&mut read)
            .await
            .unwrap();
        assert!(read == big, "the stored part differs");
        let held = p.held(10).await.unwrap();
        assert_eq!(held.len(), 1);
        assert_eq!(held[0].0, id);
        assert!(held[0].1.promoted("receive", "location").is_some());
        // Taken back by the source: the start's release leaves it held,
        // so a second stop before the source settles it still finds it.
        assert_eq!(p.release_leftovers().await.unwrap(), 0);
        assert_eq!(mbox.held_by("receive:in", None, 10).await.unwrap(), vec![id]);
        p.settled(&sluice_adapters::Receipt {
            messages: vec![id],
            unrouted: false,
        })
        .await
        .unwrap();
        assert!(p.held(10).await.unwrap().is_empty());

        // Broken after a stored part: nothing published, nothing left.
        let chunks = async || mbox.counts().await.unwrap().content_chunks;
        let before = (mbox.held_by("receive:in", None, 10).await.unwrap(), chunks().await);
        assert!(before.1 > 0, "the first message's stored part counts");
        let broken = MessageId::new();
        let mut parts = Parts(vec![
            part("body.txt", b"text".to_vec(), true),
            part("a.bin", big.clone(), false),
            Err(std::io::Error::new(
                std::io::ErrorKind::InvalidData,
                "the mail ends inside a part",
            )),
        ]);
        let e = p.submit_parts(broken, ctx.clone(), &mut parts).await.unwrap_err();
        assert!(e.message.contains("the mail ends inside a part"), "{e}");
        assert!(mbox.message(broken).await.unwrap().is_none());
        assert_eq!(
            (mbox.held_by("receive:in", None, 10).await.unwrap(), chunks().await),
            before
        );

        // A debatching pipeline takes a body alone.
        let lines = publisher(lines_pipeline());
        let mut parts = Parts(vec![
            part("body.txt", b"a\nb\n".to_vec(), true),
            part("x.bin", big, false),
        ]);
        let refused = MessageId::new();
        let e = lines.submit_parts(refused, ctx, &mut parts).await.unwrap_err();
        assert!(e.message.contains("takes a body alone"), "{e}");
        assert!(mbox.message(refused).await.unwrap().is_none());
    }

    /// A client is told where its request is, never a peer's error text
    /// (it can name internal hosts); the log is told both.
    #[test]
    fn a_clients_trace_leaves_out_the_errors_the_log_keeps() {
        let id = MessageId::new();
        let secret = "connect to http://10.0.0.7:8443/internal refused";
        let m = MessageInfo {
            id,
            created_at: 0,
            context: Context::new(),
            parts: Vec::new(),
            refs: 2,
            queue: vec![QueueEntryInfo {
                entry: 1,
                subscriber: "to-peer".into(),
                visible_at: 1500,
                leased: false,
                attempts: 2,
                last_error: Some(secret.into()),
            }],
            suspended: vec![SuspendedInfo {
                id: 9,
                message_id: id,
                subscriber: Some("other".into()),
                reason: secret.into(),
                stage: "transmit".into(),
                component: "http".into(),
                location: None,
                transport: None,
                attempts: 3,
                suspended_at: 0,
                resumable: true,
                history: Vec::new(),
            }],
            holders: Vec::new(),
        };
        let client = whereabouts(&m, 1000, false);
        assert!(!client.contains("10.0.0.7"), "{client}");
        assert!(
            client.contains("queued for `to-peer`, 2 attempt(s) so far, next in 0.5 s, the last attempt failed"),
            "{client}"
        );
        assert!(
            client.contains("suspended at `other` after 3 attempt(s) (suspended id 9)"),
            "{client}"
        );
        let log = whereabouts(&m, 1000, true);
        assert_eq!(log.matches("10.0.0.7").count(), 2, "{log}");
    }
}
