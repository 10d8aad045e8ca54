//! FILE send: write under a temporary name, sync, then link into place
//! atomically, never over an existing file unless configured to.

use std::io;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use async_trait::async_trait;
use serde::Deserialize;
use tokio::io::{AsyncReadExt, AsyncWriteExt, BufReader};

use super::{FileNameTemplate, TMP_PREFIX, move_no_replace, resolve};
use crate::{AdapterError, Body, Delivered, Outbound, TransmitError, Transmitter};

fn default_file_name() -> String {
    "%MessageId%".into()
}
fn yes() -> bool {
    true
}

/// `type = "file"` send port.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileSendConfig {
    /// Folder to write to (relative to the configuration file).
    pub path: PathBuf,
    /// File name, with macros: `%MessageId%`, `%SourceFileName%`, ...
    #[serde(default = "default_file_name")]
    pub file_name: String,
    /// Replace a file of the same name. Off by default: an existing file with
    /// other content is an error (retried), one with the same content is taken
    /// as an earlier delivery of this message.
    #[serde(default)]
    pub overwrite: bool,
    /// fsync each file and the folder before the message counts as delivered.
    #[serde(default = "yes")]
    pub fsync: bool,
    /// Create the folder if it is missing (otherwise a missing folder is an
    /// error, and the message waits for it).
    #[serde(default)]
    pub create_folder: bool,
}

impl FileSendConfig {
    pub fn resolve_paths(&mut self, base: &Path) {
        self.path = resolve(base, &self.path);
    }

    pub fn build(&self) -> Result<FileTransmitter, AdapterError> {
        let template = FileNameTemplate::parse(&self.file_name).map_err(AdapterError::Config)?;
        template
            .check_file_name_template()
            .map_err(|e| AdapterError::Config(format!("file_name {e}")))?;
        Ok(FileTransmitter {
            config: self.clone(),
            template,
            counter: AtomicU64::new(0),
            cleaned: tokio::sync::OnceCell::new(),
        })
    }
}

/// Temporary files this send port left when a run was killed mid-write
/// (those of other ports writing to the same folder are theirs to clean).
async fn remove_stale_temp_files(dir: &Path, prefix: &str) {
    let Ok(mut entries) = tokio::fs::read_dir(dir).await else {
        return;
    };
    while let Ok(Some(e)) = entries.next_entry().await {
        if e.file_name().to_string_lossy().starts_with(prefix)
            && let Err(err) = tokio::fs::remove_file(e.path()).await
        {
            tracing::warn!(file = %e.path().display(), error = %err, "cannot remove a stale temporary file");
        }
    }
}

pub struct FileTransmitter {
    config: FileSendConfig,
    template: FileNameTemplate,
    counter: AtomicU64,
    /// Stale temporary files are removed once, before the first write.
    cleaned: tokio::sync::OnceCell<()>,
}

#[async_trait]
impl Transmitter for FileTransmitter {
    async fn transmit(&self, msg: &Outbound, body: Body) -> Result<Delivered, TransmitError> {
        let name = self
            .template
            .render(msg.id, &msg.context)
            .map_err(TransmitError::from)?;
        let dir = &self.config.path;
        let prefix = format!("{TMP_PREFIX}{}.", msg.port);
        self.cleaned.get_or_init(|| remove_stale_temp_files(dir, &prefix)).await;
        if self.config.create_folder {
            tokio::fs::create_dir_all(dir)
                .await
                .map_err(|e| TransmitError::retry(format!("cannot create folder {}: {e}", dir.display())))?;
        }
        let target = dir.join(&name);
        let n = self.counter.fetch_add(1, Ordering::Relaxed);
        let tmp = dir.join(format!("{prefix}{}.{n}", msg.id));
        let result = self.write(&tmp, &target, body).await;
        if !matches!(result, Ok(Delivered::To(_))) {
            let _ = tokio::fs::remove_file(&tmp).await;
        }
        result
    }
}

impl FileTransmitter {
    async fn write(&self, tmp: &Path, target: &Path, body: Body) -> Result<Delivered, TransmitError> {
        let dir = &self.config.path;
        let mut file = match tokio::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(tmp)
            .await
        {
            Ok(f) => f,
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                return Err(TransmitError::retry(format!("folder {} does not exist", dir.display())));
            }
            Err(e) => return Err(TransmitError::retry(format!("cannot create {}: {e}", tmp.display()))),
        };
        let mut reader = BufReader::with_capacity(64 * 1024, body);
        tokio::io::copy_buf(&mut reader, &mut file)
            .await
            .map_err(|e| TransmitError::retry(format!("writing {}: {e}", tmp.display())))?;
        file.flush()
            .await
            .map_err(|e| TransmitError::retry(format!("writing {}: {e}", tmp.display())))?;
        if self.config.fsync {
            file.sync_all()
                .await
                .map_err(|e| TransmitError::retry(format!("syncing {}: {e}", tmp.display())))?;
        }
        drop(file);
        let shown = target.display().to_string();
        if self.config.overwrite {
            tokio::fs::rename(tmp, target)
                .await
                .map_err(|e| TransmitError::retry(format!("moving into place as {shown}: {e}")))?;
        } else {
            match move_no_replace(tmp, target).await {
                Ok(()) => {}
                Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {
                    return if same_content(tmp, target).await {
                        // The earlier delivery may have died before its
                        // fsync: make sure the copy that is there is durable.
                        if self.config.fsync {
                            sync_file_and_dir(target, dir)
                                .await
                                .map_err(|e| TransmitError::retry(format!("syncing {shown}: {e}")))?;
                        }
                        Ok(Delivered::AlreadyThere(shown))
                    } else {
                        Err(TransmitError::retry(format!(
                            "{shown} already exists with other content (set overwrite = true to replace it)"
                        )))
                    };
                }
                Err(e) => return Err(TransmitError::retry(format!("moving into place as {shown}: {e}"))),
            }
        }
        if self.config.fsync {
            sync_dir(dir)
                .await
                .map_err(|e| TransmitError::retry(format!("syncing folder {}: {e}", dir.display())))?;
        }
        Ok(Delivered::To(shown))
    }
}

async fn sync_file_and_dir(file: &Path, dir: &Path) -> io::Result<()> {
    tokio::fs::File::open(file).await?.sync_all().await?;
    sync_dir(dir).await
}

async fn sync_dir(dir: &Path) -> io::Result<()> {
    let d = dir.to_path_buf();
    tokio::task::spawn_blocking(move || std::fs::File::open(&d)?.sync_all())
        .await
        .map_err(io::Error::other)?
}

/// Compare two files a block at a time.
async fn same_content(a: &Path, b: &Path) -> bool {
    async fn inner(a: &Path, b: &Path) -> io::Result<bool> {
        let (fa, fb) = (tokio::fs::File::open(a).await?, tokio::fs::File::open(b).await?);
        if fa.metadata().await?.len() != fb.metadata().await?.len() {
            return Ok(false);
        }
        let (mut ra, mut rb) = (BufReader::new(fa), BufReader::new(fb));
        let (mut ba, mut bb) = (vec![0u8; 64 * 1024], vec![0u8; 64 * 1024]);
        loop {
            let n = ra.read(&mut ba).await?;
            if n == 0 {
                return Ok(rb.read(&mut bb[..1]).await? == 0);
            }
            rb.read_exact(&mut bb[..n]).await?;
            if ba[..n] != bb[..n] {
                return Ok(false);
            }
        }
    }
    inner(a, b).await.unwrap_or(false)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kit::{names_in, outbound};

    fn transmitter(dir: &Path, overwrite: bool) -> FileTransmitter {
        FileSendConfig {
            path: dir.to_path_buf(),
            file_name: "%SourceFileName%".into(),
            overwrite,
            fsync: true,
            create_folder: false,
        }
        .build()
        .unwrap()
    }

    #[tokio::test]
    async fn writes_atomically_and_never_overwrites_other_content() {
        let dir = tempfile::tempdir().unwrap();
        let t = transmitter(dir.path(), false);
        let m = outbound("a.txt");
        assert!(matches!(
            t.transmit(&m, Box::new(&b"one"[..])).await.unwrap(),
            Delivered::To(_)
        ));
        assert_eq!(std::fs::read(dir.path().join("a.txt")).unwrap(), b"one");
        // The same bytes again: a redelivery, fine.
        assert!(matches!(
            t.transmit(&m, Box::new(&b"one"[..])).await.unwrap(),
            Delivered::AlreadyThere(_)
        ));
        // Other bytes: refused, and the original is untouched.
        let e = t.transmit(&m, Box::new(&b"two"[..])).await.unwrap_err();
        assert!(e.retryable && e.message.contains("already exists"), "{e}");
        assert_eq!(std::fs::read(dir.path().join("a.txt")).unwrap(), b"one");
        let o = transmitter(dir.path(), true);
        o.transmit(&m, Box::new(&b"two"[..])).await.unwrap();
        assert_eq!(std::fs::read(dir.path().join("a.txt")).unwrap(), b"two");
        let names: Vec<_> = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(
            names,
            vec![std::ffi::OsString::from("a.txt")],
            "no temporary files left"
        );
    }

    /// Bodies of many sizes, read in pieces (none, one byte, around the
    /// 64 KiB of the copy's buffer, several times it): each written whole,
    /// the same bytes twice counted as there, other bytes refused, nothing
    /// temporary left.
    #[tokio::test]
    async fn bodies_of_many_sizes_are_written_whole() {
        let root = tempfile::tempdir().unwrap();
        let dir = root.path().join("made");
        let t = FileSendConfig {
            path: dir.clone(),
            file_name: "%SourceFileName%".into(),
            overwrite: false,
            fsync: true,
            create_folder: true,
        }
        .build()
        .unwrap();
        for size in [0usize, 1, 65_535, 65_536, 65_537, 327_687] {
            let data: Vec<u8> = (0..size).map(|i| (i % 251) as u8).collect();
            let name = format!("f{size}");
            let m = outbound(&name);
            // A reader that hands out at most 1000 bytes a read.
            let piecewise = |d: Vec<u8>| -> Body {
                let (client, mut server) = tokio::io::duplex(1000);
                tokio::spawn(async move {
                    let _ = server.write_all(&d).await;
                });
                Box::new(client)
            };
            let got = t.transmit(&m, piecewise(data.clone())).await.unwrap();
            assert!(matches!(got, Delivered::To(_)), "{size}: {got:?}");
            assert!(std::fs::read(dir.join(&name)).unwrap() == data, "{size}: other bytes");
            let again = t.transmit(&m, piecewise(data.clone())).await.unwrap();
            assert!(matches!(again, Delivered::AlreadyThere(_)), "{size}: {again:?}");
            let mut other = data.clone();
            other.push(1);
            let e = t.transmit(&m, piecewise(other)).await.unwrap_err();
            assert!(e.message.contains("already exists"), "{size}: {e}");
        }
        let left: Vec<_> = std::fs::read_dir(&dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .filter(|n| n.starts_with('.'))
            .collect();
        assert!(left.is_empty(), "temporary files left: {left:?}");
    }

    #[test]
    fn a_file_name_whose_own_text_can_never_work_is_refused_at_load() {
        let build = |file_name: &str| {
            FileSendConfig {
                path: "/out".into(),
                file_name: file_name.into(),
                overwrite: false,
                fsync: true,
                create_folder: false,
            }
            .build()
            .err()
            .map(|e| e.to_string())
        };
        for bad in [
            "out/%MessageID%.xml",
            "%MessageId%/x",
            "a\\%MessageId%",
            "..",
            ".sluice-%MessageId%",
        ] {
            let e = build(bad).unwrap_or_else(|| panic!("{bad} was accepted"));
            assert!(e.contains(&format!("file_name `{bad}`")), "{e}");
        }
        let e = build("out/%MessageID%.xml").unwrap();
        assert!(e.contains("has a `/`") && e.contains("put it in `path`"), "{e}");
        for good in [
            "%MessageId%",
            "%SourceFileStem%.out",
            "a%%b.txt",
            "..%property:a.b%",
            "fixed.txt",
        ] {
            assert_eq!(build(good), None, "{good}");
        }
    }

    /// A value that would climb out of the folder, or name a subfolder, is
    /// refused for that message (not retried), and nothing is written.
    #[tokio::test]
    async fn a_macro_value_cannot_write_outside_the_folder() {
        let root = tempfile::tempdir().unwrap();
        let dir = root.path().join("out");
        std::fs::create_dir(&dir).unwrap();
        std::fs::create_dir(dir.join("sub")).unwrap();
        let t = FileSendConfig {
            path: dir.clone(),
            file_name: "%property:app.name%".into(),
            overwrite: true,
            fsync: false,
            create_folder: false,
        }
        .build()
        .unwrap();
        for value in ["..", ".", "../escaped", "sub/x", "/tmp/abs", "", ".sluice-claim.x"] {
            let mut m = outbound("a");
            m.context.promote("app", "name", value);
            let e = t.transmit(&m, Box::new(&b"x"[..])).await.unwrap_err();
            assert!(!e.retryable, "{value}: {e}");
            assert!(
                e.message
                    .contains("a value from the message may not name a file outside"),
                "{e}"
            );
        }
        assert_eq!(names_in(root.path()), ["out"]);
        assert_eq!(names_in(&dir), ["sub"]);
        assert!(names_in(&dir.join("sub")).is_empty());
        // Dots inside a name are only a name.
        let mut m = outbound("a");
        m.context.promote("app", "name", "..x");
        t.transmit(&m, Box::new(&b"x"[..])).await.unwrap();
        assert_eq!(names_in(&dir), ["..x", "sub"]);
    }

    #[tokio::test]
    async fn missing_folder_is_retryable_and_bad_names_are_not() {
        let dir = tempfile::tempdir().unwrap();
        let t = transmitter(&dir.path().join("missing"), false);
        let e = t.transmit(&outbound("a"), Box::new(&b"x"[..])).await.unwrap_err();
        assert!(e.retryable && e.message.contains("does not exist"), "{e}");
        let t = transmitter(dir.path(), false);
        let e = t
            .transmit(&outbound("../escape"), Box::new(&b"x"[..]))
            .await
            .unwrap_err();
        assert!(!e.retryable, "{e}");
    }

    #[tokio::test]
    async fn a_failing_body_leaves_nothing_behind() {
        struct Broken;
        impl tokio::io::AsyncRead for Broken {
            fn poll_read(
                self: std::pin::Pin<&mut Self>,
                _: &mut std::task::Context<'_>,
                _: &mut tokio::io::ReadBuf<'_>,
            ) -> std::task::Poll<io::Result<()>> {
                std::task::Poll::Ready(Err(io::Error::other("content store went away")))
            }
        }
        let dir = tempfile::tempdir().unwrap();
        let t = transmitter(dir.path(), false);
        let e = t.transmit(&outbound("a"), Box::new(Broken)).await.unwrap_err();
        assert!(e.message.contains("content store went away"), "{e}");
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0);
    }
}
