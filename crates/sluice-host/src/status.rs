//! The node's live state for `sluice status`: `status.json` in the data
//! directory, rewritten every [`STATUS_EVERY`]. Its format (and how to read
//! it) is in [`sluice_ops::status`]; here the node writes it.

use std::path::Path;

pub use sluice_ops::status::{
    HostStatus, HostView, InstanceStatus, NodeStatus, STATUS_EVERY, STATUS_FILE, status_path,
};

use crate::throttle::Throttle;

/// One host's throttle as it is now.
pub(crate) fn host_status(throttle: &Throttle) -> HostStatus {
    let now = throttle.snapshot();
    HostStatus {
        throttled: now.reason.is_some(),
        now,
        limits: throttle.limits().clone(),
    }
}

/// Write atomically: a temporary file, then a rename over the old one.
pub(crate) async fn write(data_dir: &Path, status: &NodeStatus) -> std::io::Result<()> {
    let text = serde_json::to_vec_pretty(status).map_err(std::io::Error::other)?;
    let tmp = data_dir.join(format!(".{STATUS_FILE}.tmp"));
    tokio::fs::write(&tmp, text).await?;
    tokio::fs::rename(&tmp, status_path(data_dir)).await
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use sluice_ops::status::read_report;

    use super::*;
    use crate::throttle::{Limits, Reason};

    #[tokio::test]
    async fn written_status_reads_back() {
        let dir = tempfile::tempdir().unwrap();
        assert!(read_report(dir.path()).unwrap().is_none());
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
            hosts: BTreeMap::from([("default".to_string(), host_status(&t))]),
            host_instances: vec![],
        };
        write(dir.path(), &status).await.unwrap();
        let back = read_report(dir.path()).unwrap().expect("written");
        let h = &back.hosts["default"];
        assert!(h.throttled);
        assert_eq!(
            (h.now.reason, h.now.in_flight, h.now.in_flight_bytes),
            (Some(Reason::Messages), 1, 10)
        );
        std::fs::write(status_path(dir.path()), "{").unwrap();
        assert!(read_report(dir.path()).unwrap_err().to_string().contains(STATUS_FILE));
    }
}
