//! The node's live state for `sluice status`: `status.json` in the data
//! directory.
//!
//! `sluice status` reads the box beside the node, but throttling lives only
//! in the node's memory. So the node writes this small file every
//! [`STATUS_EVERY`] (a temporary file, then a rename: a reader never sees half
//! of it), and removes it when it stops cleanly. A reader tells how old the
//! report is; one much older than [`STATUS_EVERY`] comes from a node that
//! was killed or is stuck.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::throttle::{Limits, Snapshot, Throttle};

pub const STATUS_FILE: &str = "status.json";

/// How often a running node rewrites [`STATUS_FILE`].
pub const STATUS_EVERY: Duration = Duration::from_secs(1);

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct NodeStatus {
    pub pid: u32,
    /// When the node wrote this (Unix milliseconds).
    pub written_at_ms: i64,
    /// The node's resident memory, bytes.
    pub rss: u64,
    /// Where `GET /metrics` is served, if it is.
    pub metrics_address: Option<String>,
    pub hosts: BTreeMap<String, HostStatus>,
}

/// One host's throttle as the node last saw it.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct HostStatus {
    pub throttled: bool,
    #[serde(flatten)]
    pub now: Snapshot,
    pub limits: Limits,
}

impl HostStatus {
    pub(crate) fn of(throttle: &Throttle) -> HostStatus {
        let now = throttle.snapshot();
        HostStatus {
            throttled: now.reason.is_some(),
            now,
            limits: throttle.limits().clone(),
        }
    }
}

pub fn status_path(data_dir: &Path) -> PathBuf {
    data_dir.join(STATUS_FILE)
}

/// Write atomically: a temporary file, then a rename over the old one.
pub(crate) async fn write(data_dir: &Path, status: &NodeStatus) -> std::io::Result<()> {
    let text = serde_json::to_vec_pretty(status).map_err(std::io::Error::other)?;
    let tmp = data_dir.join(format!(".{STATUS_FILE}.tmp"));
    tokio::fs::write(&tmp, text).await?;
    tokio::fs::rename(&tmp, status_path(data_dir)).await
}

/// The last report of the node on `data_dir`; `Ok(None)` if there is none
/// (no node running, or one that stopped cleanly).
pub fn read(data_dir: &Path) -> Result<Option<NodeStatus>, String> {
    let path = status_path(data_dir);
    match std::fs::read(&path) {
        Ok(bytes) => serde_json::from_slice(&bytes)
            .map(Some)
            .map_err(|e| format!("{}: {e}", path.display())),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(format!("{}: {e}", path.display())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::throttle::Reason;

    #[tokio::test]
    async fn written_status_reads_back() {
        let dir = tempfile::tempdir().unwrap();
        assert!(read(dir.path()).unwrap().is_none());
        let t = Throttle::new(
            "default",
            Limits {
                max_in_flight: 1,
                resume_in_flight: 0,
                max_in_flight_bytes: 1 << 20,
                memory: None,
                location_share: 100,
            },
            None,
        );
        let _p = t.admit(10, crate::throttle::Work::Receive).await;
        let status = NodeStatus {
            pid: 7,
            written_at_ms: 1,
            rss: 2,
            metrics_address: None,
            hosts: BTreeMap::from([("default".to_string(), HostStatus::of(&t))]),
        };
        write(dir.path(), &status).await.unwrap();
        let back = read(dir.path()).unwrap().expect("written");
        let h = &back.hosts["default"];
        assert!(h.throttled);
        assert_eq!(
            (h.now.reason, h.now.in_flight, h.now.in_flight_bytes),
            (Some(Reason::Messages), 1, 10)
        );
        std::fs::write(status_path(dir.path()), "{").unwrap();
        assert!(read(dir.path()).unwrap_err().contains(STATUS_FILE));
    }
}
