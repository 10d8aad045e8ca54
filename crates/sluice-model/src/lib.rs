//! The Sluice message model.
//!
//! A message is an id, an ordered list of named parts (the body part first) and
//! a [`Context`] of self-describing properties. This crate holds the pieces of
//! that model which need no storage: ids, property values, contexts and the
//! subscription [`Filter`] language that routes on promoted properties.
//!
//! Architecture Invariant: context is data. A [`Property`] carries its
//! namespace, name, type, value and promoted flag; nothing (code, schema,
//! assembly) has to be loaded to read, copy, route or display it. Its stored
//! form ([`Context::to_json`]) round-trips exactly, so a message routes the
//! same way on any node after any restart (seed 004).

mod context;
mod filter;
mod id;
mod value;

pub use context::{Context, ContextError, Property};
pub use filter::{CompareOp, Filter, FilterError, Key, Predicate};
pub use id::{MessageId, MessageIdError};
pub use value::{Value, ValueType};

/// Request-response: the properties that tie a request, its response and
/// their failures together. The receive location, the send ports and the
/// message box's fault rules all read them, so they live here.
pub mod reply {
    /// Whom to answer, set by a request-response location on each request
    /// (`reply:<location>`) and copied by a solicit-response send port onto
    /// the response.
    pub const REPLY_TO: (&str, &str) = ("reply", "to");
    /// The request a response answers: its message id.
    pub const CORRELATION_ID: (&str, &str) = ("correlation", "id");
    /// On a fault message: the `reply.to` of the request (or response) that
    /// failed, so that the failure goes where the answer would have gone.
    pub const FAULT_REPLY_TO: (&str, &str) = ("fault", "reply_to");
    /// On a fault message with `fault.reply_to`: the request whose client
    /// waits (the failed request's own id, or the failed response's
    /// `correlation.id`).
    pub const FAULT_CORRELATION_ID: (&str, &str) = ("fault", "correlation_id");
}
