//! Opening the message box beside a running node, by the configuration's
//! store URL, through the factory: the CLI never names a backend.

use std::sync::Arc;

use sluice_host::Config;
use sluice_msgbox::MessageBox;
use sluice_store::{Role, StoreError};

/// Open the box to read only (`status`, `messages`, `suspended list|show`).
pub fn open_read(config: &Config) -> anyhow::Result<Arc<dyn MessageBox>> {
    // A reader owns no work: no node id is needed (nor made).
    sluice_store::open(&config.store_url(), Role::ReadOnly, &config.box_options("")).map_err(unwrap_box)
}

/// Open the box to change it beside a running node (`suspended resume` and
/// friends, `publish`), as the node this configuration runs.
pub fn open_write(config: &Config) -> anyhow::Result<Arc<dyn MessageBox>> {
    let node_id = config.node_id().map_err(|e| {
        anyhow::anyhow!(
            "data directory {}: cannot read the node id: {e}",
            config.data_dir.display()
        )
    })?;
    sluice_store::open(&config.store_url(), Role::BesideNode, &config.box_options(&node_id)).map_err(unwrap_box)
}

/// A storage failure as the box's own error (`BoxError`), as every other
/// box operation reports it, so error printing treats them alike.
fn unwrap_box(e: StoreError) -> anyhow::Error {
    match e {
        StoreError::Box(b) => b.into(),
        other => other.into(),
    }
}
