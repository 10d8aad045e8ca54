//! The FILE adapter: receive from a folder, send to a folder.
//!
//! Names that start with `.sluice-` belong to Sluice: `.sluice-claim.<id>.<name>`
//! is a file being received (claimed by rename, so two readers cannot both
//! take it), `.sluice-tmp.<send port>.<id>.<n>` a file being written by a
//! send port.

mod receive;
mod send;
mod skipped;

use std::io;
use std::path::Path;

pub use crate::macros::Template as FileNameTemplate;
pub use receive::{FileReceiveConfig, FileReceiver};
pub use send::{FileSendConfig, FileTransmitter};

/// The properties a FILE receive location promotes (namespace, name),
/// besides those of every location ([`crate::ReceiveContext::base_context`]);
/// `file.modified` is written, not promoted.
pub const PROMOTES: &[(&str, &str)] = &[("file", "name"), ("file", "path"), ("file", "size")];

impl crate::ReceiveAdapter for FileReceiveConfig {
    fn resolve_paths(&mut self, base: &Path) {
        FileReceiveConfig::resolve_paths(self, base);
    }
    fn build(&self) -> Result<Box<dyn crate::Source>, crate::AdapterError> {
        Ok(Box::new(FileReceiveConfig::build(self)?))
    }
    /// The folder's files its mask selects: two locations must not take
    /// the same files (one folder with `*.xml` and `*.csv` is fine).
    fn resources(&self) -> Vec<crate::Claim> {
        vec![crate::Claim::exclusive(
            "path",
            crate::Resource::FolderFiles(self.path.clone(), self.mask.clone()),
        )]
    }
    /// Every file's name, path and size.
    fn always_promotes(&self) -> Vec<sluice_model::Key> {
        crate::support::keys(PROMOTES)
    }
}

impl crate::SendAdapter for FileSendConfig {
    fn resolve_paths(&mut self, base: &Path) {
        FileSendConfig::resolve_paths(self, base);
    }
    fn build(&self) -> Result<std::sync::Arc<dyn crate::Transmitter>, crate::AdapterError> {
        Ok(std::sync::Arc::new(FileSendConfig::build(self)?))
    }
    fn resources(&self) -> Vec<crate::Claim> {
        vec![crate::Claim::shared("path", crate::Resource::Folder(self.path.clone()))]
    }
    fn needs(&self) -> Vec<crate::Need> {
        FileNameTemplate::parse(&self.file_name)
            .map(|t| t.needs("file_name"))
            .unwrap_or_default()
    }
}

pub(crate) use crate::support::names::{CLAIM_PREFIX, TMP_PREFIX};

pub(crate) use crate::support::resolve;

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

/// The compliance kit, run over a FILE receive location.
#[cfg(test)]
mod compliance {
    use async_trait::async_trait;

    use crate::kit::{self, SourceHarness};
    use crate::{ReceiveAdapter, Source};

    struct Folder(tempfile::TempDir);

    #[async_trait]
    impl SourceHarness for Folder {
        fn source(&self) -> Box<dyn Source> {
            let text = format!(
                "path = '{}'\nsettle = '0s'\npoll_interval = '20ms'\nretry_after = '50ms'",
                self.0.path().display()
            );
            let config: super::FileReceiveConfig = toml::from_str(&text).expect("config");
            ReceiveAdapter::build(&config).expect("build")
        }
        async fn offer(&self, body: &[u8]) {
            // Written aside, then moved in whole, as producers should.
            let aside = self.0.path().join(".kit.part");
            std::fs::write(&aside, body).expect("write");
            std::fs::rename(&aside, self.0.path().join("kit.txt")).expect("rename");
        }
        async fn acknowledged(&self) -> bool {
            std::fs::read_dir(self.0.path())
                .map(|d| d.count() == 0)
                .unwrap_or(false)
        }
        async fn kept(&self) -> bool {
            self.0.path().join("kit.txt").exists()
        }
        fn peer_retries(&self) -> bool {
            false
        }
        fn promotes(&self) -> &'static [(&'static str, &'static str)] {
            super::PROMOTES
        }
    }

    #[tokio::test]
    async fn the_file_receive_location_passes_the_kit() {
        kit::check_source(&Folder(tempfile::tempdir().expect("tempdir"))).await;
    }

    #[test]
    fn its_folder_is_an_exclusive_claim() {
        let mut config: super::FileReceiveConfig = toml::from_str("path = 'in'").expect("config");
        ReceiveAdapter::resolve_paths(&mut config, std::path::Path::new("/etc/sluice"));
        let claims = config.resources();
        assert_eq!(claims.len(), 1);
        assert!(claims[0].exclusive && claims[0].conflicts_with(&claims[0]));
        assert_eq!(claims[0].resource.to_string(), "/etc/sluice/in");
    }
}
