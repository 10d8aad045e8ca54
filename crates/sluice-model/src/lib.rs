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
