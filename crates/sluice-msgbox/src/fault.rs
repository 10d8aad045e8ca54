//! The rules of fault messages, for every backend: what a fault message's
//! context holds. A backend stores it (sharing the failed message's parts)
//! and routes it in the transaction that suspends the failed message.
//!
//! Architecture Invariant: a fault message routes on `fault.*` only. The
//! failed message's properties are all kept, with their types and values,
//! but demoted, so the fault does not go where the original went; the keys
//! that were promoted are listed in `fault.promoted`. The failure of a fault
//! message makes no further fault message ([`is_fault`]).
//!
//! A fault goes where the answer would have gone when a client waits for
//! one (request-response): the fault of a request, and of a response that
//! failed on its way back to its requester, carries `fault.reply_to` (the
//! `reply.to` it had) and `fault.correlation_id` (the request waited on),
//! both promoted, so the location's reply subscription can take it and
//! answer the waiting client at once, on whichever node the failure
//! happened.

use sluice_model::reply::{CORRELATION_ID, FAULT_CORRELATION_ID, FAULT_REPLY_TO, REPLY_TO};
use sluice_model::{Context, MessageId};

use crate::{FAULT_NS, Failure, Millis};

/// What a fault message says about one suspension.
#[derive(Debug, Clone, Copy)]
pub struct FaultOf<'a> {
    /// The suspended (failed) message.
    pub original: MessageId,
    /// Its suspended entry.
    pub suspended_id: i64,
    /// The subscriber (send port) it was going to, if any.
    pub subscriber: Option<&'a str>,
    /// The receive location: the one that failed, else the one it came in
    /// by (see [`location_of`]).
    pub location: Option<&'a str>,
    pub failure: &'a Failure,
    /// Attempts made.
    pub attempts: u32,
    pub resumable: bool,
    /// When it was suspended.
    pub now: Millis,
}

/// The receive location a suspension is reported under: the one that
/// failed, else the one the message came in by (`receive.location`).
pub fn location_of(failure: &Failure, context: Option<&Context>) -> Option<String> {
    failure.location.clone().or_else(|| {
        context
            .and_then(|c| c.get("receive", "location"))
            .and_then(|p| p.value.as_str().map(str::to_string))
    })
}

/// A fault message's own context (it has `fault.*` properties): its
/// failure makes no fault message, so a fault handler that is down causes
/// no loop.
pub fn is_fault(context: &Context) -> bool {
    context.iter().any(|p| p.namespace == FAULT_NS)
}

/// The context of a fault message, or `None` when none is made (the failed
/// message is itself a fault message): `fault.*` promoted (routable), then
/// every property of the failed message with its type and value, demoted,
/// and `fault.promoted` listing the keys that were promoted, one a line.
///
/// Promoted: `fault.port` (when going to a subscriber), `fault.location`
/// (when known), `fault.stage`, `fault.component`, `fault.error`,
/// `fault.transport` (when known), `fault.time`, `fault.attempts`,
/// `fault.message_id`, `fault.suspended_id`, `fault.resumable`; and, when
/// a client waits for an answer ([`waiting_client`]), `fault.reply_to` and
/// `fault.correlation_id`.
pub fn fault_context(original: &Context, f: &FaultOf<'_>) -> Option<Context> {
    if is_fault(original) {
        return None;
    }
    let mut ctx = Context::new();
    if let Some(port) = f.subscriber {
        ctx.promote(FAULT_NS, "port", port);
    }
    if let Some(location) = f.location {
        ctx.promote(FAULT_NS, "location", location);
    }
    ctx.promote(FAULT_NS, "stage", f.failure.stage.as_str());
    ctx.promote(FAULT_NS, "component", f.failure.component.as_str());
    ctx.promote(FAULT_NS, "error", f.failure.error.as_str());
    if let Some(t) = &f.failure.transport {
        ctx.promote(FAULT_NS, "transport", t.as_str());
    }
    let time = time::OffsetDateTime::from_unix_timestamp_nanos(i128::from(f.now) * 1_000_000)
        .unwrap_or(time::OffsetDateTime::UNIX_EPOCH);
    ctx.promote(FAULT_NS, "time", time);
    ctx.promote(FAULT_NS, "attempts", i64::from(f.attempts));
    ctx.promote(FAULT_NS, "message_id", f.original.to_string());
    ctx.promote(FAULT_NS, "suspended_id", f.suspended_id);
    ctx.promote(FAULT_NS, "resumable", f.resumable);
    if let Some((reply_to, request)) = waiting_client(original, f) {
        ctx.promote(FAULT_REPLY_TO.0, FAULT_REPLY_TO.1, reply_to);
        ctx.promote(FAULT_CORRELATION_ID.0, FAULT_CORRELATION_ID.1, request);
    }
    let mut promoted = Vec::new();
    for p in original.iter() {
        if p.promoted {
            promoted.push(p.key());
        }
        ctx.write(&p.namespace, &p.name, p.value.clone());
    }
    ctx.write(FAULT_NS, "promoted", promoted.join("\n"));
    Some(ctx)
}

/// Whom a failure is to be told to, when a client waits for the answer:
/// (`reply.to`, the request's id). A request (promoted `reply.to`, no
/// `correlation.id`) wherever it fails; a response (both) only where it
/// failed on its way to its requester (at the subscriber its `reply.to`
/// names): a response that fails at another subscriber (an archive) still
/// reaches its client.
pub fn waiting_client(original: &Context, f: &FaultOf<'_>) -> Option<(String, String)> {
    let reply_to = original.promoted(REPLY_TO.0, REPLY_TO.1)?.as_str()?;
    match original.promoted(CORRELATION_ID.0, CORRELATION_ID.1) {
        None => Some((reply_to.to_string(), f.original.to_string())),
        Some(request) if f.subscriber == Some(reply_to) => Some((reply_to.to_string(), request.to_text())),
        Some(_) => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fault_of(failure: &Failure) -> FaultOf<'_> {
        FaultOf {
            original: MessageId::new(),
            suspended_id: 7,
            subscriber: Some("out"),
            location: None,
            failure,
            attempts: 3,
            resumable: true,
            now: 1_700_000_000_000,
        }
    }

    #[test]
    fn demotes_the_original_and_promotes_fault_properties() {
        let mut original = Context::new();
        original.promote("t", "kind", "order");
        original.write("t", "note", 5i64);
        let failure = Failure::new("transmit", "http", "503").by_transport("backup");
        let ctx = fault_context(&original, &fault_of(&failure)).unwrap();
        let kind = ctx.get("t", "kind").unwrap();
        assert!(!kind.promoted, "the original's properties are demoted");
        assert_eq!(kind.value.as_str(), Some("order"));
        assert!(!ctx.get("t", "note").unwrap().promoted);
        for name in [
            "port",
            "stage",
            "component",
            "error",
            "transport",
            "time",
            "attempts",
            "suspended_id",
        ] {
            assert!(ctx.get(FAULT_NS, name).unwrap().promoted, "fault.{name}");
        }
        assert!(ctx.get(FAULT_NS, "location").is_none());
        let promoted = ctx.get(FAULT_NS, "promoted").unwrap();
        assert!(!promoted.promoted);
        assert_eq!(promoted.value.as_str(), Some("t.kind"));
    }

    #[test]
    fn a_fault_goes_where_the_answer_would_have_gone() {
        let failure = Failure::new("transmit", "http", "connection refused");
        let promoted = |ctx: &Context, (ns, name): (&str, &str)| ctx.promoted(ns, name).map(|v| v.to_text());
        // A request: wherever it fails, its client is told.
        let mut request = Context::new();
        request.promote("reply", "to", "reply:web");
        let f = fault_of(&failure);
        let ctx = fault_context(&request, &f).unwrap();
        assert_eq!(promoted(&ctx, FAULT_REPLY_TO).as_deref(), Some("reply:web"));
        assert_eq!(
            promoted(&ctx, FAULT_CORRELATION_ID),
            Some(f.original.to_string()),
            "the request's own id"
        );
        // A response: only where it failed on its way back.
        let mut response = request.clone();
        response.promote("correlation", "id", "01REQUEST");
        let elsewhere = fault_context(&response, &f).unwrap();
        assert!(
            promoted(&elsewhere, FAULT_REPLY_TO).is_none(),
            "failed at `out`, not on its way back"
        );
        let on_its_way = FaultOf {
            subscriber: Some("reply:web"),
            ..f
        };
        let ctx = fault_context(&response, &on_its_way).unwrap();
        assert_eq!(promoted(&ctx, FAULT_REPLY_TO).as_deref(), Some("reply:web"));
        assert_eq!(promoted(&ctx, FAULT_CORRELATION_ID).as_deref(), Some("01REQUEST"));
        // One-way: nobody waits.
        let ctx = fault_context(&Context::new(), &f).unwrap();
        assert!(promoted(&ctx, FAULT_REPLY_TO).is_none() && promoted(&ctx, FAULT_CORRELATION_ID).is_none());
    }

    #[test]
    fn a_fault_of_a_fault_is_not_made() {
        let failure = Failure::new("transmit", "file", "disk full");
        let ctx = fault_context(&Context::new(), &fault_of(&failure)).unwrap();
        assert!(is_fault(&ctx));
        assert!(fault_context(&ctx, &fault_of(&failure)).is_none());
    }

    #[test]
    fn location_is_the_failing_one_else_where_it_came_in() {
        let mut ctx = Context::new();
        ctx.promote("receive", "location", "in");
        let f = Failure::new("transmit", "file", "x");
        assert_eq!(location_of(&f, Some(&ctx)).as_deref(), Some("in"));
        assert_eq!(
            location_of(&f.clone().at_location("other"), Some(&ctx)).as_deref(),
            Some("other")
        );
        assert_eq!(location_of(&f, None), None);
    }
}
