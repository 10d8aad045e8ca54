//! The audit log: every operator action (who, from where, what, on what,
//! and how it ended), kept in the box, newest first when read, purged with
//! the tracking events (`[tracking] keep`).
//!
//! Front ends record an action once it has ended, with its result: the
//! entry says what happened, not what was asked. An entry never holds a
//! secret (no password, no token: an error message never repeats one).

use serde::Serialize;
use sluice_msgbox::{MessageBox, Millis, NewAuditEntry};

use crate::error::read_error;
use crate::{OpsError, ms_to_text};

/// Who acts, and from where.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Actor {
    /// A user name, or `cli:<login>` for a command run on the node's
    /// machine (made by the CLI).
    pub name: String,
    /// The client's address, or `cli`.
    pub source: String,
}

/// Longest detail kept (bytes); the rest is cut at a character boundary.
const DETAIL_MAX: usize = 2048;
/// Longest target kept (a list of ids may be long).
const TARGET_MAX: usize = 512;

/// `text` at most `max` bytes, cut at a character boundary, marked `…`.
fn cut(mut text: String, max: usize) -> String {
    if text.len() > max {
        let mut end = max;
        while !text.is_char_boundary(end) {
            end -= 1;
        }
        text.truncate(end);
        text.push('…');
    }
    text
}

/// Record an action that ended with `outcome` (its error's code, or `ok`).
pub async fn record<T>(
    b: &dyn MessageBox,
    actor: &Actor,
    action: &str,
    target: &str,
    outcome: &Result<T, OpsError>,
    detail: Option<String>,
    now: Millis,
) -> Result<i64, OpsError> {
    let (result, detail) = match outcome {
        Ok(_) => ("ok", detail),
        Err(e) => (e.code(), Some(e.to_string())),
    };
    record_result(b, actor, action, target, result, detail, now).await
}

/// Record an action whose result is already a code (`ok`, or an error's).
pub async fn record_result(
    b: &dyn MessageBox,
    actor: &Actor,
    action: &str,
    target: &str,
    result: &str,
    detail: Option<String>,
    now: Millis,
) -> Result<i64, OpsError> {
    let detail = detail.map(|d| cut(d, DETAIL_MAX));
    b.record_audit(NewAuditEntry {
        at: now,
        actor: actor.name.clone(),
        source: actor.source.clone(),
        action: action.to_string(),
        target: cut(target.to_string(), TARGET_MAX),
        result: result.to_string(),
        detail,
    })
    .await
    .map_err(read_error(format!("recording `{action}` in the audit log")))
}

/// An entry as shown.
#[derive(Debug, Clone, Serialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct AuditView {
    pub id: i64,
    pub at: String,
    pub actor: String,
    pub source: String,
    pub action: String,
    pub target: String,
    pub result: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub detail: Option<String>,
}

/// Entries newest first, older than `before` (an id).
pub async fn list(b: &dyn MessageBox, before: Option<i64>, limit: usize) -> Result<Vec<AuditView>, OpsError> {
    let entries = b
        .audit(before, limit)
        .await
        .map_err(read_error("reading the audit log"))?;
    Ok(entries
        .into_iter()
        .map(|e| AuditView {
            id: e.id,
            at: ms_to_text(e.entry.at),
            actor: e.entry.actor,
            source: e.entry.source,
            action: e.entry.action,
            target: e.entry.target,
            result: e.entry.result,
            detail: e.entry.detail,
        })
        .collect())
}
