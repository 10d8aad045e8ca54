//! Sluice operations: what an operator can ask of a node and its message
//! box, for every front end (the `sluice` CLI and the REST API now, the
//! portal next), so that they all behave the same way.
//!
//! - [`status`]: the box's counts and the running node's report
//!   (`status.json`: throttle state per host).
//! - [`messages`]: list, show, tracking events.
//! - [`body`]: one part of a message (or of a suspended entry's message),
//!   streamed in bounded pieces.
//! - [`suspended`]: list, show, and resume / resubmit / terminate one entry
//!   or in bulk (a selection by ids or by a query), with progress events
//!   and a [`Summary`](suspended::Summary) in which every matched entry is
//!   done, failed, skipped or *taken by another operation*.
//! - [`parse`]: what operators write (typed properties, times, ids,
//!   filters), parsed the same way everywhere.
//! - [`access`]: users, roles and API tokens (hashes only); [`audit`]: the
//!   log of every operator action.
//!
//! This crate is a **stable interface**. Inputs are typed (queries,
//! selections, edits), outputs are typed and `serde::Serialize` (the CLI's
//! `--json` and the API share them); rendering text and parsing command
//! lines or requests is the front end's job. It works on any backend
//! through `dyn MessageBox` and never names one; it knows nothing of the
//! host's configuration (a data directory is a `Path`).
//!
//! # Error codes
//!
//! Every error is an [`OpsError`] with a stable [`code`](OpsError::code)
//! (snake_case; never renamed, never reused for another meaning once
//! published; new codes may be added), the HTTP status a REST API answers
//! with, and whether it is transient (the same request may succeed later).
//! Front ends print them as `error[<code>]: <message>`.
//!
//! | code | HTTP | transient | meaning |
//! |---|---|---|---|
//! | `not_found` | 404 | no | the suspended entry, message or part does not exist (any more: resumed, resubmitted, terminated, delivered; a message delivered while its body was read) |
//! | `nothing_matches` | 404 | no | a bulk selection with conditions matches no suspended entry; nothing changed |
//! | `invalid_argument` | 400 | no | an input does not parse or is out of range (property, key, time, id) |
//! | `invalid_filter` | 400 | no | a context filter does not parse |
//! | `invalid_edit` | 400 | no | a resubmission's edit is malformed or does not apply to the message; nothing changed |
//! | `too_large` | 400 | no | a new body is over the content store's limit |
//! | `not_resumable` | 409 | no | a receive pipeline rejected the entry (it cannot be resumed, only resubmitted with a new body, or terminated), or its send port cannot send it as it is (resubmit it with the property it needs set) |
//! | `no_subscriber` | 409 | no | the resumed message still matches no subscription; it stays suspended |
//! | `no_such_subscriber` | 409 | no | the entry's send port is no longer configured |
//! | `conflict` | 409 | no | the box refused the change in the state it is in (a lease lost, a duplicate id) |
//! | `entries_failed` | 409 | no | a bulk run in which entries failed for different reasons (when they all failed alike, the run's error has their code, e.g. `not_found`) |
//! | `unauthenticated` | 401 | no | no credentials, or they are not valid (an unknown or revoked token, a removed user, a wrong password, an expired session) |
//! | `forbidden` | 403 | no | the user's role does not allow it (a viewer reading a body or changing anything), or a form without its CSRF token |
//! | `rate_limited` | 429 | yes | too many failed logins for this user or from this address; try later |
//! | `storage_unavailable` | 503 | yes | the box's storage failed (disk full, I/O error, locked, no box yet) or the box is closed |
//! | `corrupt_content` | 500 | no | stored content fails its size or CRC-32 check |
//! | `io` | 500 | no | reading a new body or the node's report failed |
//! | `internal` | 500 | no | a bug: please report it |
//!
//! An entry of a bulk run that another operation took first is not an
//! error: it is an outcome ([`Outcome::Taken`](suspended::Outcome::Taken),
//! counted in [`Summary::taken`](suspended::Summary::taken)).

pub mod access;
pub mod audit;
pub mod body;
mod error;
pub mod messages;
pub mod parse;
pub mod status;
pub mod suspended;

pub use error::{ErrorCode, OpsError};
use sluice_msgbox::Millis;
use time::OffsetDateTime;

/// A time (ms since the epoch) as RFC 3339 in UTC, always with three
/// digits of milliseconds (`2026-11-26T09:30:00.120Z`, never trimmed), so
/// that times line up in a table and sort as text; the number if out of
/// range.
pub fn ms_to_text(ms: Millis) -> String {
    const FORMAT: &[time::format_description::BorrowedFormatItem<'_>] =
        time::macros::format_description!("[year]-[month]-[day]T[hour]:[minute]:[second].[subsecond digits:3]Z");
    OffsetDateTime::from_unix_timestamp_nanos(ms as i128 * 1_000_000)
        .ok()
        .and_then(|t| t.format(FORMAT).ok())
        .unwrap_or_else(|| ms.to_string())
}

/// Serialize a context as `Context::to_display_json` writes it: an array of
/// `{namespace, name, type, value, promoted}`.
pub(crate) fn context_json<S: serde::Serializer>(context: &sluice_model::Context, s: S) -> Result<S::Ok, S::Error> {
    serde::Serialize::serialize(&context.to_display_json(), s)
}

/// One context property as answers show it ([`context_json`]): the schema
/// of the REST API's documentation.
#[cfg(feature = "openapi")]
#[derive(utoipa::ToSchema)]
#[allow(dead_code)]
pub struct ContextProperty {
    pub namespace: String,
    pub name: String,
    /// `string`, `int`, `float`, `bool`, `timestamp` or `bytes`.
    #[schema(rename = "type")]
    pub r#type: String,
    /// The value: a JSON string, number or boolean (a timestamp as RFC
    /// 3339 text, bytes as hex).
    pub value: serde_json::Value,
    pub promoted: bool,
}

/// One part as answers show it ([`parts_json`]).
#[cfg(feature = "openapi")]
#[derive(utoipa::ToSchema)]
#[allow(dead_code)]
pub struct PartView {
    pub name: String,
    pub size: u64,
    /// CRC-32, 8 hex digits.
    pub crc32: String,
}

/// Serialize parts as name, size and CRC-32 (hex).
pub(crate) fn parts_json<S: serde::Serializer>(parts: &[sluice_msgbox::Part], s: S) -> Result<S::Ok, S::Error> {
    s.collect_seq(
        parts
            .iter()
            .map(|p| serde_json::json!({"name": p.name, "size": p.size, "crc32": format!("{:08x}", p.crc32)})),
    )
}

#[cfg(test)]
mod tests {
    #[test]
    fn times_have_three_digits_of_milliseconds() {
        assert_eq!(super::ms_to_text(0), "1970-01-01T00:00:00.000Z");
        assert_eq!(super::ms_to_text(1_795_685_400_120), "2026-11-26T09:30:00.120Z");
        assert_eq!(super::ms_to_text(1_795_685_400_007), "2026-11-26T09:30:00.007Z");
        assert_eq!(super::ms_to_text(i64::MAX), i64::MAX.to_string());
    }
}
