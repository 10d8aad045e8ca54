//! The FILE adapter: receive from a folder, send to a folder.
//!
//! Names that start with `.sluice-` belong to Sluice: `.sluice-claim.<id>.<name>`
//! is a file being received (claimed by rename, so two readers cannot both
//! take it), `.sluice-tmp.<send port>.<id>.<n>` a file being written by a
//! send port.

mod receive;
mod send;

use std::io;
use std::path::{Path, PathBuf};

pub use crate::macros::Template as FileNameTemplate;
pub use receive::{FileReceiveConfig, FileReceiver};
pub use send::{FileSendConfig, FileTransmitter};

pub(crate) const CLAIM_PREFIX: &str = ".sluice-claim.";
pub(crate) const TMP_PREFIX: &str = ".sluice-tmp.";

pub(crate) fn resolve(base: &Path, p: &Path) -> PathBuf {
    if p.is_absolute() { p.to_path_buf() } else { base.join(p) }
}

/// Rename `from` to `to`, failing with `AlreadyExists` rather than replacing
/// a file that is there. Uses `renameat2(RENAME_NOREPLACE)` (atomic); on a
/// filesystem without it, a hard link (also atomic); where linking is not
/// allowed either, a check followed by a rename.
pub(crate) fn rename_no_replace(from: &Path, to: &Path) -> io::Result<()> {
    match renameat2_noreplace(from, to) {
        Err(e)
            if matches!(
                e.raw_os_error(),
                Some(libc::EINVAL) | Some(libc::ENOSYS) | Some(libc::ENOTSUP)
            ) => {}
        other => return other,
    }
    match std::fs::hard_link(from, to) {
        Ok(()) => return std::fs::remove_file(from),
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => return Err(e),
        Err(_) => {}
    }
    if std::fs::symlink_metadata(to).is_ok() {
        return Err(io::Error::new(
            io::ErrorKind::AlreadyExists,
            format!("{} exists", to.display()),
        ));
    }
    std::fs::rename(from, to)
}

/// [`rename_no_replace`] off the async threads.
pub(crate) async fn move_no_replace(from: &Path, to: &Path) -> io::Result<()> {
    let (from, to) = (from.to_path_buf(), to.to_path_buf());
    tokio::task::spawn_blocking(move || rename_no_replace(&from, &to))
        .await
        .map_err(io::Error::other)?
}

#[cfg(target_os = "linux")]
fn renameat2_noreplace(from: &Path, to: &Path) -> io::Result<()> {
    use std::ffi::CString;
    use std::os::unix::ffi::OsStrExt;
    let from = CString::new(from.as_os_str().as_bytes()).map_err(io::Error::other)?;
    let to = CString::new(to.as_os_str().as_bytes()).map_err(io::Error::other)?;
    // SAFETY: both paths are valid NUL-terminated strings that outlive the call.
    let r = unsafe {
        libc::renameat2(
            libc::AT_FDCWD,
            from.as_ptr(),
            libc::AT_FDCWD,
            to.as_ptr(),
            libc::RENAME_NOREPLACE,
        )
    };
    if r == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

#[cfg(not(target_os = "linux"))]
fn renameat2_noreplace(_: &Path, _: &Path) -> io::Result<()> {
    Err(io::Error::from_raw_os_error(libc::ENOSYS))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rename_no_replace_never_replaces() {
        let dir = tempfile::tempdir().unwrap();
        let (a, b) = (dir.path().join("a"), dir.path().join("b"));
        std::fs::write(&a, "a").unwrap();
        std::fs::write(&b, "b").unwrap();
        let e = rename_no_replace(&a, &b).unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::AlreadyExists);
        assert_eq!(std::fs::read(&b).unwrap(), b"b");
        std::fs::remove_file(&b).unwrap();
        rename_no_replace(&a, &b).unwrap();
        assert!(!a.exists());
        assert_eq!(std::fs::read(&b).unwrap(), b"a");
    }
}
