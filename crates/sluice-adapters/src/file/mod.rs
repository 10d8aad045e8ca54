//! The FILE adapter: receive from a folder, send to a folder.
//!
//! Names that start with `.sluice-` belong to Sluice: `.sluice-claim.<id>.<name>`
//! is a file being received (claimed by rename, so two readers cannot both
//! take it), `.sluice-tmp.<id>.<n>` a file being written by a send port.

mod macros;
mod receive;
mod send;

use std::path::{Path, PathBuf};

pub use macros::FileNameTemplate;
pub use receive::{FileReceiveConfig, FileReceiver};
pub use send::{FileSendConfig, FileTransmitter};

pub(crate) const CLAIM_PREFIX: &str = ".sluice-claim.";
pub(crate) const TMP_PREFIX: &str = ".sluice-tmp.";

pub(crate) fn resolve(base: &Path, p: &Path) -> PathBuf {
    if p.is_absolute() { p.to_path_buf() } else { base.join(p) }
}
