//! Errors of the operations, each with a stable [`ErrorCode`].

use serde::Serialize;
use sluice_content::ContentError;
use sluice_msgbox::BoxError;

use crate::suspended::{GONE, Op, TAKEN};

/// What kind of error it is, for a program: stable once published (a code
/// is never renamed, never reused for another meaning; new ones may be
/// added). The table is in the crate docs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub enum ErrorCode {
    NotFound,
    NothingMatches,
    InvalidArgument,
    InvalidFilter,
    InvalidEdit,
    TooLarge,
    NotResumable,
    NoSubscriber,
    NoSuchSubscriber,
    Conflict,
    EntriesFailed,
    Unauthenticated,
    Forbidden,
    RateLimited,
    StorageUnavailable,
    CorruptContent,
    Io,
    Internal,
}

impl ErrorCode {
    /// Every code, in the order of the table in the crate docs.
    pub const ALL: [ErrorCode; 18] = [
        ErrorCode::NotFound,
        ErrorCode::NothingMatches,
        ErrorCode::InvalidArgument,
        ErrorCode::InvalidFilter,
        ErrorCode::InvalidEdit,
        ErrorCode::TooLarge,
        ErrorCode::NotResumable,
        ErrorCode::NoSubscriber,
        ErrorCode::NoSuchSubscriber,
        ErrorCode::Conflict,
        ErrorCode::EntriesFailed,
        ErrorCode::Unauthenticated,
        ErrorCode::Forbidden,
        ErrorCode::RateLimited,
        ErrorCode::StorageUnavailable,
        ErrorCode::CorruptContent,
        ErrorCode::Io,
        ErrorCode::Internal,
    ];

    /// The code as published: `not_found`, `storage_unavailable`...
    pub const fn as_str(self) -> &'static str {
        match self {
            ErrorCode::NotFound => "not_found",
            ErrorCode::NothingMatches => "nothing_matches",
            ErrorCode::InvalidArgument => "invalid_argument",
            ErrorCode::InvalidFilter => "invalid_filter",
            ErrorCode::InvalidEdit => "invalid_edit",
            ErrorCode::TooLarge => "too_large",
            ErrorCode::NotResumable => "not_resumable",
            ErrorCode::NoSubscriber => "no_subscriber",
            ErrorCode::NoSuchSubscriber => "no_such_subscriber",
            ErrorCode::Conflict => "conflict",
            ErrorCode::EntriesFailed => "entries_failed",
            ErrorCode::Unauthenticated => "unauthenticated",
            ErrorCode::Forbidden => "forbidden",
            ErrorCode::RateLimited => "rate_limited",
            ErrorCode::StorageUnavailable => "storage_unavailable",
            ErrorCode::CorruptContent => "corrupt_content",
            ErrorCode::Io => "io",
            ErrorCode::Internal => "internal",
        }
    }

    /// The HTTP status a REST API answers with: 400, 401, 403, 404, 409,
    /// 429, 500 or 503.
    pub fn http_status(self) -> u16 {
        match self {
            ErrorCode::Unauthenticated => 401,
            ErrorCode::Forbidden => 403,
            ErrorCode::RateLimited => 429,
            ErrorCode::InvalidArgument | ErrorCode::InvalidFilter | ErrorCode::InvalidEdit | ErrorCode::TooLarge => 400,
            ErrorCode::NotFound | ErrorCode::NothingMatches => 404,
            ErrorCode::NotResumable
            | ErrorCode::NoSubscriber
            | ErrorCode::NoSuchSubscriber
            | ErrorCode::Conflict
            | ErrorCode::EntriesFailed => 409,
            ErrorCode::StorageUnavailable => 503,
            ErrorCode::CorruptContent | ErrorCode::Io | ErrorCode::Internal => 500,
        }
    }

    /// Whether the same request may succeed later unchanged (the box's
    /// storage failed or is closed): a client may retry with backoff.
    pub fn transient(self) -> bool {
        matches!(self, ErrorCode::StorageUnavailable | ErrorCode::RateLimited)
    }

    /// The code of an error of the message box.
    pub fn of_box(error: &BoxError) -> ErrorCode {
        match error {
            BoxError::NoSuchMessage(_) | BoxError::NoSuchSuspended(_) => ErrorCode::NotFound,
            BoxError::NotResumable { .. } | BoxError::NeedsNewBody { .. } => ErrorCode::NotResumable,
            BoxError::StillNoSubscriber { .. } => ErrorCode::NoSubscriber,
            BoxError::NoSuchSubscriber(_) => ErrorCode::NoSuchSubscriber,
            BoxError::NoSuchUser(_) => ErrorCode::NotFound,
            BoxError::LeaseLost { .. }
            | BoxError::Duplicate(_)
            | BoxError::NotHeld { .. }
            | BoxError::UserExists(_)
            | BoxError::TokenExists(_)
            | BoxError::LastAdmin(_) => ErrorCode::Conflict,
            BoxError::UnfinishedContent { .. } => ErrorCode::Internal,
            BoxError::Content(e) => ErrorCode::of_content(e),
            BoxError::Storage { .. } | BoxError::Closed => ErrorCode::StorageUnavailable,
        }
    }

    /// The code of an error of the content store.
    pub fn of_content(error: &ContentError) -> ErrorCode {
        match error {
            ContentError::Source { .. } => ErrorCode::Io,
            ContentError::TooLarge { .. } => ErrorCode::TooLarge,
            ContentError::Store { .. } | ContentError::Backend(_) => ErrorCode::StorageUnavailable,
            ContentError::Corrupt { .. } => ErrorCode::CorruptContent,
        }
    }
}

impl std::fmt::Display for ErrorCode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// An operation's error: what was being done, to what, and why, with its
/// stable [`code`](OpsError::code).
#[derive(Debug, thiserror::Error)]
pub enum OpsError {
    #[error("{} suspended entry {id}: it {GONE}", .op.doing())]
    Gone { op: Op, id: i64 },
    #[error("{} suspended entry {id}: {error}", .op.doing())]
    Entry { op: Op, id: i64, error: BoxError },
    #[error("resubmitting suspended entry {id}: {reason}; nothing was changed")]
    Edit { id: i64, reason: String },
    #[error("resubmitting suspended entry {id}: storing the new body: {error}; nothing was changed")]
    Body { id: i64, error: ContentError },
    #[error("{doing}: {error}")]
    Read { doing: String, error: BoxError },
    #[error("invalid edit: {0}")]
    BadEdit(String),
    #[error("no suspended message matches {conditions}")]
    NothingMatches { conditions: String },
    /// What was asked for is not there; the message says what.
    #[error("{0}")]
    NotFound(String),
    /// An input that does not parse or is out of range; the message says which.
    #[error("{0}")]
    InvalidArgument(String),
    /// A context filter that does not parse.
    #[error("{0}")]
    InvalidFilter(String),
    /// A bulk run in which entries failed ([`Summary::failed`](crate::suspended::Summary)):
    /// `code` is theirs when they all failed alike, else `entries_failed`.
    /// It accounts for every entry as the run's summary does (those
    /// skipped or taken by another operation were not done either, but did
    /// not fail).
    #[error(
        "{failed} of {matched} suspended message(s) failed ({done} {}, {skipped} skipped, {taken} {TAKEN})",
        .op.done()
    )]
    EntriesFailed {
        op: Op,
        failed: u64,
        matched: u64,
        done: u64,
        skipped: u64,
        taken: u64,
        code: ErrorCode,
    },
    /// No valid credentials; the message says what was missing or wrong
    /// without repeating a secret.
    #[error("{0}")]
    Unauthenticated(String),
    /// The role does not allow it; the message says what was refused.
    #[error("{0}")]
    Forbidden(String),
    /// The node refused a change in the state it is in; the message says why.
    #[error("{0}")]
    Conflict(String),
    /// The node or the box cannot answer now (stopping); the message says why.
    #[error("{0}")]
    Unavailable(String),
    /// An input over its limit (an upload); the message says which.
    #[error("{0}")]
    TooLarge(String),
    /// A bug or a broken environment (no randomness); the message says what.
    #[error("internal error: {0}")]
    Internal(String),
    /// Too many failed attempts; the message says when to try again.
    #[error("{0}")]
    RateLimited(String),
    /// The node's report (`status.json`) cannot be read.
    #[error("reading the node's report {path}: {detail}")]
    NodeReport { path: String, detail: String },
}

impl OpsError {
    /// The stable code, as [`ErrorCode::as_str`]: `not_found`...
    pub fn code(&self) -> &'static str {
        self.error_code().as_str()
    }

    /// The HTTP status, as [`ErrorCode::http_status`].
    pub fn http_status(&self) -> u16 {
        self.error_code().http_status()
    }

    /// Whether trying again unchanged may succeed.
    pub fn transient(&self) -> bool {
        self.error_code().transient()
    }

    pub fn error_code(&self) -> ErrorCode {
        match self {
            OpsError::Gone { .. } | OpsError::NotFound(_) => ErrorCode::NotFound,
            OpsError::Entry { error, .. } | OpsError::Read { error, .. } => ErrorCode::of_box(error),
            OpsError::Edit { .. } | OpsError::BadEdit(_) => ErrorCode::InvalidEdit,
            OpsError::Body { error, .. } => ErrorCode::of_content(error),
            OpsError::NothingMatches { .. } => ErrorCode::NothingMatches,
            OpsError::InvalidArgument(_) => ErrorCode::InvalidArgument,
            OpsError::InvalidFilter(_) => ErrorCode::InvalidFilter,
            OpsError::EntriesFailed { code, .. } => *code,
            OpsError::NodeReport { .. } => ErrorCode::Io,
            OpsError::Unauthenticated(_) => ErrorCode::Unauthenticated,
            OpsError::Forbidden(_) => ErrorCode::Forbidden,
            OpsError::RateLimited(_) => ErrorCode::RateLimited,
            OpsError::Internal(_) => ErrorCode::Internal,
            OpsError::Conflict(_) => ErrorCode::Conflict,
            OpsError::TooLarge(_) => ErrorCode::TooLarge,
            OpsError::Unavailable(_) => ErrorCode::StorageUnavailable,
        }
    }

    /// Why, without what was being done to which entry (for a line that
    /// already names the entry).
    pub fn reason(&self) -> String {
        match self {
            OpsError::Gone { .. } => GONE.to_string(),
            OpsError::Entry { error, .. } | OpsError::Read { error, .. } => error.to_string(),
            OpsError::Edit { reason, .. } => format!("{reason}; nothing was changed"),
            OpsError::Body { error, .. } => format!("storing the new body: {error}; nothing was changed"),
            other => other.to_string(),
        }
    }

    /// What an operator can do about it, when there is something to say.
    pub fn hint(&self) -> Option<&'static str> {
        match self {
            OpsError::Entry { error, .. } => match error {
                BoxError::StillNoSubscriber { .. } => Some("add or fix a send port whose filter matches it"),
                BoxError::NoSuchSubscriber(_) => Some("its send port is gone; configure it again, or terminate"),
                BoxError::NeedsNewBody { .. } => Some(
                    "a receive pipeline rejected it: resubmit it with a new body, or fix the source, send it again and terminate this",
                ),
                BoxError::NotResumable { .. } => Some(
                    "resubmit it instead: with a new body (--body) if a receive pipeline rejected it, with the \
                     property its send port needs set (--set) if the port could not send it as it is; or terminate it",
                ),
                _ => None,
            },
            _ => None,
        }
    }

    pub(crate) fn is_gone(&self) -> bool {
        matches!(self, OpsError::Gone { .. })
    }
}

/// A box error met while reading, saying what was being read.
pub(crate) fn read_error(doing: impl Into<String>) -> impl FnOnce(BoxError) -> OpsError {
    move |error| OpsError::Read {
        doing: doing.into(),
        error,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Codes are distinct snake_case words, each documented in the crate
    /// docs' table with its HTTP status and whether it is transient.
    #[test]
    fn codes_are_distinct_and_documented() {
        let docs = include_str!("lib.rs");
        let mut seen = std::collections::HashSet::new();
        for code in ErrorCode::ALL {
            let s = code.as_str();
            assert!(seen.insert(s), "{s} twice");
            assert!(s.chars().all(|c| c.is_ascii_lowercase() || c == '_'), "{s}");
            assert_eq!(serde_json::to_value(code).unwrap(), s);
            let transient = if code.transient() { "yes" } else { "no" };
            let row = format!("//! | `{s}` | {} | {transient} |", code.http_status());
            assert!(docs.contains(&row), "no row `{row}` in the crate docs");
        }
    }
}
