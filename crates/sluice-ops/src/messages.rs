//! `sluice messages`: the messages in the box, one message in full, and
//! what happened to messages (tracking events).

use std::ops::ControlFlow;

use serde::Serialize;
use sluice_model::{Context, MessageId};
use sluice_msgbox::{
    MessageBox, MessageQuery, MessageSummary, Millis, Page, Part, QueueEntryInfo, SuspendedInfo, TrackingEvent,
    TrackingQuery,
};

use crate::OpsError;
use crate::error::read_error;

/// Tracking events read from the box at a time.
pub const TRACKING_PAGE: usize = 1000;

/// Messages in the box that `search` selects, oldest first: a page of at
/// most `limit` after `after` (see [`Page`] for its cursor).
pub async fn list(
    b: &dyn MessageBox,
    search: &MessageQuery,
    after: Option<MessageId>,
    limit: usize,
) -> Result<Page<MessageSummary, MessageId>, OpsError> {
    b.list_messages(search, after, limit)
        .await
        .map_err(read_error("searching the messages in the box"))
}

/// One message in full: its context, parts, queue entries, suspensions and
/// holders.
#[derive(Debug, Clone, Serialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct MessageDetail {
    #[cfg_attr(feature = "openapi", schema(value_type = String))]
    pub id: MessageId,
    /// When it was published (RFC 3339 in JSON).
    #[cfg_attr(feature = "openapi", schema(value_type = String))]
    #[serde(serialize_with = "created_at_text")]
    pub created_at: Millis,
    pub refs: u32,
    #[cfg_attr(feature = "openapi", schema(value_type = Vec<crate::ContextProperty>))]
    #[serde(serialize_with = "crate::context_json")]
    pub context: Context,
    #[cfg_attr(feature = "openapi", schema(value_type = Vec<crate::PartView>))]
    #[serde(serialize_with = "crate::parts_json")]
    pub parts: Vec<Part>,
    pub queue: Vec<QueueEntryInfo>,
    pub suspended: Vec<SuspendedInfo>,
    pub holders: Vec<String>,
}

fn created_at_text<S: serde::Serializer>(ms: &Millis, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(&crate::ms_to_text(*ms))
}

/// One message; `not_found` if it is not in the box.
pub async fn show(b: &dyn MessageBox, id: MessageId) -> Result<MessageDetail, OpsError> {
    let m = b
        .message(id)
        .await
        .map_err(read_error(format!("reading message {id}")))?
        .ok_or_else(|| {
            OpsError::NotFound(format!(
                "message {id} is not in the box (it was delivered and released, or never existed)"
            ))
        })?;
    Ok(MessageDetail {
        id: m.id,
        created_at: m.created_at,
        refs: m.refs,
        context: m.context,
        parts: m.parts,
        queue: m.queue,
        suspended: m.suspended,
        holders: m.holders,
    })
}

/// A tracking event as front ends show it: `completed` events carry the
/// message's context.
#[derive(Debug, Clone, Serialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Tracked<'a> {
    #[cfg_attr(feature = "openapi", schema(value_type = sluice_msgbox::TrackingEvent))]
    #[serde(flatten)]
    pub event: &'a TrackingEvent,
    #[cfg_attr(feature = "openapi", schema(value_type = Option<Vec<crate::ContextProperty>>))]
    #[serde(skip_serializing_if = "Option::is_none", serialize_with = "some_context_json")]
    pub context: Option<&'a Context>,
}

impl<'a> Tracked<'a> {
    pub fn new(event: &'a TrackingEvent) -> Tracked<'a> {
        Tracked {
            event,
            context: event.context.as_ref(),
        }
    }
}

fn some_context_json<S: serde::Serializer>(context: &Option<&Context>, s: S) -> Result<S::Ok, S::Error> {
    match context {
        Some(c) => crate::context_json(c, s),
        None => s.serialize_none(),
    }
}

/// Call `each` with every tracking event `query` selects, oldest first, a
/// page ([`TRACKING_PAGE`]) at a time, until it returns `Break`. Returns how
/// many it was called with.
pub async fn tracking(
    b: &dyn MessageBox,
    query: &TrackingQuery,
    mut each: impl FnMut(&TrackingEvent) -> ControlFlow<()>,
) -> Result<u64, OpsError> {
    let mut after = None;
    let mut n = 0;
    loop {
        let page = b
            .tracking(query, after, TRACKING_PAGE)
            .await
            .map_err(read_error("reading tracking events"))?;
        for e in &page.items {
            n += 1;
            if each(e).is_break() {
                return Ok(n);
            }
        }
        match page.next {
            Some(next) => after = Some(next),
            None => return Ok(n),
        }
    }
}
