//! `sluice status`: the box's counts, and the running node's report.
//!
//! The box is read beside the node, but throttling lives only in the node's
//! memory. So the node writes [`STATUS_FILE`] in its data directory every
//! [`STATUS_EVERY`] (a temporary file, then a rename: a reader never sees
//! half of it), and removes it when it stops cleanly. A reader tells how old
//! the report is; one much older than [`STATUS_EVERY`] comes from a node
//! that was killed or is stuck. The report's types are here, so that the
//! node that writes it and every front end that reads it share them.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Serialize};
use sluice_msgbox::{Counts, MessageBox, Millis};

use crate::OpsError;
use crate::error::read_error;

/// The node's report, in its data directory.
pub const STATUS_FILE: &str = "status.json";

/// How often a running node rewrites [`STATUS_FILE`].
pub const STATUS_EVERY: Duration = Duration::from_secs(1);

/// A report older than this (5 × [`STATUS_EVERY`]) is stale: its node may
/// have been killed or be stuck.
pub const STALE_AFTER_MS: i64 = 5 * STATUS_EVERY.as_millis() as i64;

/// What a running node reports in [`STATUS_FILE`].
#[derive(Debug, Clone, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct NodeStatus {
    pub pid: u32,
    /// When the node wrote this (Unix milliseconds).
    pub written_at_ms: i64,
    /// The node's resident memory, bytes.
    pub rss: u64,
    /// Where `GET /metrics` is served, if it is.
    pub metrics_address: Option<String>,
    pub hosts: BTreeMap<String, HostStatus>,
    /// Where each host runs: its isolation and its instances (the node's
    /// process for a host in it; the host instance for an isolated one).
    #[serde(default)]
    pub host_instances: Vec<HostView>,
}

/// A host and the processes that run its units (`sluice status`'s `hosts`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct HostView {
    pub name: String,
    /// `in-process` (in the node) or `process` (a host instance of its own).
    pub isolation: String,
    /// The process running its units now: the node, or its host instance
    /// (none while an isolated host's instance is starting again).
    pub instances: Vec<InstanceStatus>,
    /// An isolated host's instance is recycled over this RSS.
    pub memory_limit: Option<u64>,
    /// How its last instance ended (isolated hosts).
    pub last_exit: Option<String>,
    /// Its instances keep ending: 3 in a row within a second of their
    /// start, or 5 within a minute (isolated hosts).
    #[serde(default)]
    pub crash_loop: bool,
}

/// One process running a host's units.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct InstanceStatus {
    /// The process (0 while none runs).
    pub pid: u32,
    pub rss_bytes: u64,
    pub uptime_s: u64,
    /// Messages the host's receive locations published and its send ports
    /// delivered, in this process.
    pub handled: u64,
    /// Instances drained and replaced (memory limit, configuration
    /// change, an operator's restart) since the node started.
    pub recycles: u64,
    /// Of those, over the memory limit.
    pub memory_recycles: u64,
    /// Instances that ended without being asked (crashed, killed) since
    /// the node started.
    pub restarts: u64,
    /// `running`; for an isolated host also `starting`, `draining`,
    /// `backoff` (starting again after a crash), `crash-loop` (its
    /// instances keep ending as they start), `failed`, `stopped`.
    pub state: String,
}

/// One host's throttle as the node last saw it.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct HostStatus {
    pub throttled: bool,
    #[serde(flatten)]
    pub now: Snapshot,
    pub limits: Limits,
}

/// A host's limits (from `[hosts.<name>]`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Limits {
    /// High mark: at this many messages in flight the host closes.
    pub max_in_flight: u64,
    /// Low mark: it opens again at this many or fewer.
    pub resume_in_flight: u64,
    /// Most bytes in flight (a larger single message goes alone).
    pub max_in_flight_bytes: u64,
    /// RSS high and low marks, if memory throttling is on.
    pub memory: Option<MemoryMarks>,
    /// Percent (1–100) of the messages and bytes in flight that one
    /// receive location (one lane) may hold.
    pub location_share: u8,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct MemoryMarks {
    pub high: u64,
    pub low: u64,
}

/// Why a host is throttled, as a metric label.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub enum Reason {
    Memory,
    Messages,
    Bytes,
}

impl Reason {
    pub const ALL: [Reason; 3] = [Reason::Memory, Reason::Messages, Reason::Bytes];

    pub fn as_str(self) -> &'static str {
        match self {
            Reason::Memory => "memory",
            Reason::Messages => "messages",
            Reason::Bytes => "bytes",
        }
    }
}

/// What a host's throttle looks like now (for `sluice status` and logs).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Snapshot {
    /// `None` when open.
    pub reason: Option<Reason>,
    /// Says why in words, with the figures: "in-flight messages 1000 ≥ high mark 1000 ...".
    pub detail: Option<String>,
    pub in_flight: u64,
    pub in_flight_bytes: u64,
    /// Submissions and deliveries waiting for admission.
    pub waiting: u64,
    pub rss: u64,
    /// How many times the throttle closed since the node started.
    pub engagements: u64,
}

pub fn status_path(data_dir: &Path) -> PathBuf {
    data_dir.join(STATUS_FILE)
}

/// The last report of the node on `data_dir`; `Ok(None)` if there is none
/// (no node running, or one that stopped cleanly).
pub fn read_report(data_dir: &Path) -> Result<Option<NodeStatus>, OpsError> {
    let path = status_path(data_dir);
    let failed = |detail: String| OpsError::NodeReport {
        path: path.display().to_string(),
        detail,
    };
    match std::fs::read(&path) {
        Ok(bytes) => serde_json::from_slice(&bytes)
            .map(Some)
            .map_err(|e| failed(e.to_string())),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(failed(e.to_string())),
    }
}

/// What `sluice status` shows: the box's counts (flattened: `spool`,
/// `queued`, `suspended`, `content_bytes`, `content_chunks`), the node's
/// report (`null` when no node runs) and its age.
#[derive(Debug, Clone, Serialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Status {
    #[serde(flatten)]
    pub counts: Counts,
    /// Each host, where it runs and its instances (from the node's report;
    /// empty when no node runs).
    pub hosts: Vec<HostView>,
    pub node: Option<NodeStatus>,
    /// How old the node's report is, ms.
    pub node_report_age_ms: Option<i64>,
}

impl Status {
    /// Whether the node's report is older than [`STALE_AFTER_MS`].
    pub fn stale(&self) -> bool {
        self.node_report_age_ms.is_some_and(|age| age > STALE_AFTER_MS)
    }
}

/// The box's counts and the report of the node on `data_dir`, as of `now`.
pub async fn status(b: &dyn MessageBox, data_dir: &Path, now: Millis) -> Result<Status, OpsError> {
    let counts = b.counts().await.map_err(read_error("reading counts"))?;
    let node = read_report(data_dir)?;
    let node_report_age_ms = node.as_ref().map(|n| (now - n.written_at_ms).max(0));
    Ok(Status {
        counts,
        hosts: node.as_ref().map(|n| n.host_instances.clone()).unwrap_or_default(),
        node,
        node_report_age_ms,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_missing_report_is_none_and_a_bad_one_says_where() {
        let dir = tempfile::tempdir().unwrap();
        assert!(read_report(dir.path()).unwrap().is_none());
        std::fs::write(status_path(dir.path()), "{").unwrap();
        let e = read_report(dir.path()).unwrap_err();
        assert_eq!(e.code(), "io");
        assert!(e.to_string().contains(STATUS_FILE), "{e}");
    }
}
