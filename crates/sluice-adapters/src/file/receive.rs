//! FILE receive: poll a folder, claim each settled file by renaming it,
//! stream it to the publisher, delete it only after the publish committed.

use std::collections::HashSet;
use std::io;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context as TaskContext, Poll};
use std::time::{Duration, SystemTime};

use async_trait::async_trait;
use globset::GlobMatcher;
use serde::Deserialize;
use sluice_model::MessageId;
use tokio::io::{AsyncRead, ReadBuf};
use tracing::Instrument;

use super::skipped::{Noticed, Skip};
use super::{CLAIM_PREFIX, TMP_PREFIX, move_no_replace, resolve};
use crate::support::poll::{self, Candidate, Pace, Polled, Taken, Unreleased};
use crate::{AdapterError, ReceiveContext, Source};

fn default_mask() -> String {
    "*".into()
}
fn default_poll() -> Duration {
    Duration::from_secs(1)
}
fn default_settle() -> Duration {
    Duration::from_secs(1)
}
fn default_concurrency() -> usize {
    16
}
fn default_batch() -> usize {
    1000
}
fn default_retry() -> Duration {
    Duration::from_secs(10)
}

/// `type = "file"` receive location.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileReceiveConfig {
    /// Folder to watch (relative to the configuration file).
    pub path: PathBuf,
    /// File mask, a glob on the file name: `*`, `*.xml`, `orders-??.csv`.
    #[serde(default = "default_mask")]
    pub mask: String,
    /// How often to look for new files.
    #[serde(default = "default_poll", with = "humantime_serde")]
    pub poll_interval: Duration,
    /// A file is taken only when it has not been modified for this long, so
    /// a file still being written is left alone.
    #[serde(default = "default_settle", with = "humantime_serde")]
    pub settle: Duration,
    /// Files received at the same time.
    #[serde(default = "default_concurrency")]
    pub concurrency: usize,
    /// Most files taken from one look at the folder.
    #[serde(default = "default_batch")]
    pub batch: usize,
    /// Wait before trying again a file that failed (doubles up to 32x).
    #[serde(default = "default_retry", with = "humantime_serde")]
    pub retry_after: Duration,
    /// Also take files whose names start with `.`.
    #[serde(default)]
    pub include_hidden: bool,
    /// Receive the files that symbolic links in the folder point to (the
    /// link is what is claimed and deleted; the file it points to stays).
    /// Off: links are skipped, and logged once each.
    #[serde(default)]
    pub follow_symlinks: bool,
}

impl FileReceiveConfig {
    pub fn resolve_paths(&mut self, base: &Path) {
        self.path = resolve(base, &self.path);
    }

    pub fn build(&self) -> Result<FileReceiver, AdapterError> {
        let mask = poll::file_mask(&self.mask)?;
        const DAY: Duration = Duration::from_secs(24 * 3600);
        let check = |ok: bool, what: &str| {
            if ok {
                Ok(())
            } else {
                Err(AdapterError::Config(what.to_string()))
            }
        };
        check(
            (1..=10_000).contains(&self.concurrency),
            "concurrency must be between 1 and 10000",
        )?;
        check(
            (1..=1_000_000).contains(&self.batch),
            "batch must be between 1 and 1000000",
        )?;
        poll::check_intervals(self.poll_interval, self.retry_after)?;
        check(self.settle <= DAY, "settle must be at most 1 day")?;
        Ok(FileReceiver {
            config: self.clone(),
            mask,
            stuck: Default::default(),
            unreleased: Unreleased::default(),
            noticed: Default::default(),
        })
    }
}

pub struct FileReceiver {
    config: FileReceiveConfig,
    mask: GlobMatcher,
    /// Claimed files that could not be put back (their name was taken
    /// meanwhile): (claim, original), retried on every look at the folder.
    stuck: std::sync::Mutex<Vec<(PathBuf, PathBuf)>>,
    /// Receipts of deleted files whose messages the box could not release
    /// yet (a full disk): retried on every look at the folder, so the
    /// messages do not stay held until the next start.
    unreleased: Unreleased,
    /// Entries of the folder that are skipped and were logged already.
    noticed: Arc<std::sync::Mutex<Noticed>>,
}

#[async_trait]
impl Source for FileReceiver {
    async fn recover(&self, cx: &ReceiveContext) {
        self.recover_claims(cx).await;
    }

    async fn run(self: Box<Self>, cx: ReceiveContext) -> Result<(), AdapterError> {
        poll::run(Arc::new(*self), cx).await;
        Ok(())
    }
}

#[async_trait]
impl Polled for FileReceiver {
    fn place(&self) -> String {
        self.config.path.display().to_string()
    }
    fn pace(&self) -> Pace {
        Pace {
            concurrency: self.config.concurrency,
            batch: self.config.batch,
            poll_interval: self.config.poll_interval,
            retry_after: self.config.retry_after,
        }
    }
    async fn tidy(&self, cx: &ReceiveContext) {
        self.retry_stuck_claims(&cx.location).await;
        self.unreleased.retry(cx).await;
    }
    async fn look(&self, location: &str, skip: HashSet<String>) -> Result<Vec<Candidate>, String> {
        self.scan(location, skip).await.map_err(|e| e.to_string())
    }
    /// The file's size was admitted (the folder is local: it says true).
    async fn take(
        &self,
        cx: &ReceiveContext,
        item: &Candidate,
        _admitted: &Arc<crate::Admitted>,
    ) -> Result<Taken, String> {
        self.receive_one(cx, &item.name).await
    }
}

impl FileReceiver {
    /// Files in the folder that match the mask and have settled, leaving out
    /// `skip` (in flight, or waiting to be retried) before counting to `batch`,
    /// so files that keep failing cannot crowd out the others. What matches
    /// the mask but cannot be received (a subfolder, a link, a name that is
    /// not UTF-8) is logged the first time it is met, not on every look.
    async fn scan(&self, location: &str, skip: HashSet<String>) -> io::Result<Vec<Candidate>> {
        let path = self.config.path.clone();
        let mask = self.mask.clone();
        let settle = self.config.settle;
        let hidden = self.config.include_hidden;
        let follow = self.config.follow_symlinks;
        let limit = self.config.batch;
        let noticed = self.noticed.clone();
        let location = location.to_string();
        tokio::task::spawn_blocking(move || {
            use std::os::unix::ffi::OsStrExt;
            let mut out = Vec::new();
            let now = SystemTime::now();
            // Only this look uses it; a poisoned lock holds nothing half-done.
            let mut noticed = noticed.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
            let mut whole = true;
            for entry in std::fs::read_dir(&path)? {
                let Ok(entry) = entry else { continue };
                let raw = entry.file_name();
                let bytes = raw.as_bytes();
                if bytes.starts_with(CLAIM_PREFIX.as_bytes())
                    || bytes.starts_with(TMP_PREFIX.as_bytes())
                    || (!hidden && bytes.starts_with(b"."))
                    || !mask.is_match(Path::new(&raw))
                {
                    continue;
                }
                let Ok(kind) = entry.file_type() else { continue };
                let mut skipped = |why| noticed.skip(&location, &path, &raw, why);
                let followed = if kind.is_symlink() {
                    if !follow {
                        skipped(Skip::Symlink);
                        continue;
                    }
                    match std::fs::metadata(entry.path()) {
                        Ok(m) if m.is_file() => Some(m),
                        Ok(m) if m.is_dir() => {
                            skipped(Skip::LinkToFolder);
                            continue;
                        }
                        Ok(_) => {
                            skipped(Skip::NotAFile);
                            continue;
                        }
                        Err(_) => {
                            skipped(Skip::DanglingLink);
                            continue;
                        }
                    }
                } else if kind.is_dir() {
                    skipped(Skip::Subfolder);
                    continue;
                } else if !kind.is_file() {
                    skipped(Skip::NotAFile);
                    continue;
                } else {
                    None
                };
                let Some(name) = raw.to_str().map(str::to_string) else {
                    skipped(Skip::NotUtf8);
                    continue;
                };
                if skip.contains(&name) {
                    continue;
                }
                let meta = match followed {
                    Some(m) => m,
                    // Not a link: lstat, as it was listed (a file that was
                    // replaced meanwhile is for the next look).
                    None => match entry.metadata() {
                        Ok(m) if m.is_file() => m,
                        _ => continue,
                    },
                };
                let age = meta
                    .modified()
                    .ok()
                    .and_then(|m| now.duration_since(m).ok())
                    .unwrap_or_default();
                if age < settle {
                    continue;
                }
                out.push(Candidate {
                    name,
                    size: meta.len(),
                    modified: meta.modified().ok(),
                });
                if out.len() >= limit {
                    whole = false;
                    break;
                }
            }
            noticed.end(&location, &path, whole);
            Ok(out)
        })
        .await
        .map_err(io::Error::other)?
    }

    /// Take one file: claim, stream, publish, delete. On failure the file is
    /// put back under its own name.
    async fn receive_one(&self, cx: &ReceiveContext, name: &str) -> Result<Taken, String> {
        let original = self.config.path.join(name);
        let id = MessageId::new();
        let claim = self.config.path.join(format!("{CLAIM_PREFIX}{id}.{name}"));
        match tokio::fs::rename(&original, &claim).await {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Taken::Gone),
            Err(e) => {
                tracing::error!(location = %cx.location, file = %original.display(), error = %e, "cannot claim file; leaving it in place");
                return Err(e.to_string());
            }
        }
        let result = self.publish_claimed(cx, id, name, &original, &claim).await;
        match result {
            Ok(receipt) => {
                let removed = tokio::fs::remove_file(&claim).await;
                if removed.is_ok() {
                    // Tried again before the next look at the folder (and
                    // the next start releases what is still held).
                    let file = original.display().to_string();
                    self.unreleased.settle(cx, receipt, &file).await;
                }
                if let Err(e) = removed {
                    // Published, but the claim is still there: the message
                    // stays held, so the next start finds it and deletes the claim.
                    tracing::error!(location = %cx.location, file = %original.display(), claim = %claim.display(),
                        error = %e, message_id = %id, "published, but could not delete the received file");
                }
                tracing::debug!(location = %cx.location, file = %original.display(), message_id = %id, "received");
                Ok(Taken::Published)
            }
            Err(e) => {
                // Put back first, so that what the log says is so when it
                // is read (a test, an operator looking at the folder).
                let restored = restore(&cx.location, &claim, &original).await;
                tracing::error!(location = %cx.location, file = %original.display(), error = %e,
                    "receiving failed; the file is left in place and will be tried again");
                if !restored {
                    self.remember_stuck(claim, original.clone());
                }
                Err(e)
            }
        }
    }

    async fn publish_claimed(
        &self,
        cx: &ReceiveContext,
        id: MessageId,
        name: &str,
        original: &Path,
        claim: &Path,
    ) -> Result<crate::Receipt, String> {
        let file = self.open_claim(claim).await?;
        let meta = file
            .metadata()
            .await
            .map_err(|e| format!("cannot read its metadata: {e}"))?;
        let size = meta.len();
        let mut ctx = cx.base_context();
        ctx.promote("file", "name", name);
        ctx.promote("file", "path", original.to_string_lossy().as_ref());
        ctx.promote("file", "size", size);
        if let Some(modified) = meta
            .modified()
            .ok()
            .and_then(|m| m.duration_since(std::time::UNIX_EPOCH).ok())
            .and_then(|d| time::OffsetDateTime::from_unix_timestamp_nanos(d.as_nanos() as i128).ok())
        {
            ctx.write("file", "modified", modified);
        }
        let body = CheckedFile {
            file,
            expected: size,
            read: 0,
        };
        // What the host and the pipeline log while this file is published
        // (refused, suspended, no subscriber) names the file too.
        let span = tracing::error_span!("receive_file", file = %original.display());
        let submitted = cx
            .publisher
            .submit(id, ctx.clone(), Box::new(body))
            .instrument(span.clone())
            .await;
        match submitted {
            Err(e) if e.rejected => {
                // The content is bad (corrupt, truncated, over a limit):
                // trying again cannot help. Keep the file's bytes as they
                // were received, suspended with the error, instead.
                let body = CheckedFile {
                    file: self.open_claim(claim).await?,
                    expected: size,
                    read: 0,
                };
                cx.publisher
                    .suspend(id, ctx, Box::new(body), &e)
                    .instrument(span)
                    .await
                    .map_err(|s| format!("{} (and suspending it as received failed: {})", e.message, s.message))
            }
            other => other.map_err(|e| e.message),
        }
    }

    /// Open a claimed file to read it. Unless links are followed, a link
    /// put in the file's place after it was listed is not opened.
    async fn open_claim(&self, claim: &Path) -> Result<tokio::fs::File, String> {
        let mut options = tokio::fs::OpenOptions::new();
        options.read(true);
        // O_NONBLOCK: a FIFO (or a link to one) put in a file's place after
        // the scan must not block the open forever (and with it the
        // location's stop); on a regular file it changes nothing.
        let mut flags = libc::O_NONBLOCK;
        if !self.config.follow_symlinks {
            flags |= libc::O_NOFOLLOW;
        }
        options.custom_flags(flags);
        let file = options.open(claim).await.map_err(|e| format!("cannot open: {e}"))?;
        let meta = file.metadata().await.map_err(|e| format!("cannot look at it: {e}"))?;
        if !meta.file_type().is_file() {
            return Err("cannot open: not a regular file any more (replaced after it was listed)".into());
        }
        Ok(file)
    }

    fn remember_stuck(&self, claim: PathBuf, original: PathBuf) {
        if let Ok(mut stuck) = self.stuck.lock() {
            stuck.push((claim, original));
        }
    }

    async fn retry_stuck_claims(&self, location: &str) {
        let stuck = match self.stuck.lock() {
            Ok(mut s) if !s.is_empty() => std::mem::take(&mut *s),
            _ => return,
        };
        for (claim, original) in stuck {
            if restore(location, &claim, &original).await {
                tracing::info!(location = %location, file = %original.display(), "put a claimed file back under its name");
            } else {
                self.remember_stuck(claim, original);
            }
        }
    }

    /// After a crash (or when a reload starts this location): claims of
    /// files its mask selects whose message is in the box are done (delete
    /// them: the message is still held by this location, so it cannot have
    /// been delivered and deleted meanwhile); the others go back under their
    /// own names to be received again. Claims of files the mask does not
    /// select belong to another location on the same folder.
    async fn recover_claims(&self, cx: &ReceiveContext) {
        let Ok(mut dir) = tokio::fs::read_dir(&self.config.path).await else {
            return;
        };
        let mut recovered = 0;
        while let Ok(Some(entry)) = dir.next_entry().await {
            let Ok(name) = entry.file_name().into_string() else {
                continue;
            };
            let Some(rest) = name.strip_prefix(CLAIM_PREFIX) else {
                continue;
            };
            let Some((id, original)) = rest.split_once('.') else {
                continue;
            };
            // Another location may take other files of this folder (its
            // mask cannot overlap this one's) and be running now: its
            // claims are its own.
            if !self.mask.is_match(Path::new(original)) {
                continue;
            }
            let Ok(id) = id.parse::<MessageId>() else { continue };
            let claim = entry.path();
            let original = self.config.path.join(original);
            let location = cx.location.as_str();
            match cx.publisher.is_published(id).await {
                Ok(true) => {
                    if let Err(e) = tokio::fs::remove_file(&claim).await {
                        tracing::error!(location = %location, file = %original.display(), claim = %claim.display(), error = %e,
                            "cannot delete an already published file");
                    }
                }
                Ok(false) => {
                    if !restore(location, &claim, &original).await {
                        self.remember_stuck(claim, original);
                    }
                    recovered += 1;
                }
                Err(e) => {
                    tracing::error!(location = %location, file = %original.display(), claim = %claim.display(), error = %e,
                    "cannot check a claimed file; leaving it")
                }
            }
        }
        if recovered > 0 {
            tracing::info!(location = %cx.location, files = recovered, "put back files that were being received when the node stopped");
        }
    }
}

/// Put a claimed file back under its own name, never over another file.
/// `false` if it had to stay under the claim name (to be tried again).
async fn restore(location: &str, claim: &Path, original: &Path) -> bool {
    match move_no_replace(claim, original).await {
        Ok(()) => true,
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            tracing::error!(location = %location, file = %original.display(), "the file vanished while it was being received");
            true
        }
        Err(e) => {
            tracing::error!(location = %location, file = %original.display(), claim = %claim.display(), error = %e,
                "cannot put the file back under its name yet; it stays under the claim name and is tried again");
            false
        }
    }
}

/// A file read that fails if the file turns out shorter or longer than it
/// was when claimed (someone still writing, truncating or appending).
struct CheckedFile {
    file: tokio::fs::File,
    expected: u64,
    read: u64,
}

impl AsyncRead for CheckedFile {
    fn poll_read(mut self: Pin<&mut Self>, cx: &mut TaskContext<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        let this = &mut *self;
        match Pin::new(&mut this.file).poll_read(cx, buf) {
            Poll::Ready(Ok(())) => {
                let n = (buf.filled().len() - before) as u64;
                this.read += n;
                if this.read > this.expected {
                    // An error must not hand out bytes.
                    buf.set_filled(before);
                    return Poll::Ready(Err(io::Error::other(format!(
                        "the file grew while being read (was {} bytes when taken)",
                        this.expected
                    ))));
                }
                if n == 0 && this.read < this.expected {
                    return Poll::Ready(Err(io::Error::new(
                        io::ErrorKind::UnexpectedEof,
                        format!(
                            "the file shrank while being read: {} of {} bytes",
                            this.read, this.expected
                        ),
                    )));
                }
                Poll::Ready(Ok(()))
            }
            other => other,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn config_rejects_unknown_keys_and_bad_masks() {
        let e = toml::from_str::<FileReceiveConfig>("path = 'in'\nmaks = '*'").unwrap_err();
        assert!(e.to_string().contains("unknown field `maks`"), "{e}");
        let c: FileReceiveConfig = toml::from_str("path = 'in'\nmask = '[x'").unwrap();
        assert!(c.build().err().unwrap().to_string().contains("mask `[x`"));
        let c: FileReceiveConfig = toml::from_str("path = 'in'\nsettle = '250ms'").unwrap();
        assert_eq!(c.settle, Duration::from_millis(250));
    }
}

#[cfg(test)]
mod checked_file_tests {
    use tokio::io::AsyncReadExt;

    use super::*;

    async fn read_checked(actual: &[u8], expected: u64) -> io::Result<Vec<u8>> {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("f");
        std::fs::write(&p, actual).unwrap();
        let file = tokio::fs::File::open(&p).await.unwrap();
        let mut r = CheckedFile {
            file,
            expected,
            read: 0,
        };
        let mut out = Vec::new();
        r.read_to_end(&mut out).await.map(|_| out)
    }

    #[tokio::test]
    async fn a_file_that_shrank_or_grew_is_an_error() {
        assert_eq!(read_checked(b"hello", 5).await.unwrap(), b"hello");
        let e = read_checked(b"hel", 5).await.unwrap_err();
        assert!(e.to_string().contains("shrank while being read: 3 of 5 bytes"), "{e}");
        let e = read_checked(b"hello world", 5).await.unwrap_err();
        assert!(e.to_string().contains("grew while being read"), "{e}");
    }
}

#[cfg(test)]
mod scan_tests {
    use super::*;

    fn receiver(dir: &Path) -> FileReceiver {
        receiver_with(dir, "batch = 2")
    }

    fn receiver_with(dir: &Path, extra: &str) -> FileReceiver {
        let text = format!("path = '{}'\nsettle = '0s'\nretry_after = '1s'\n{extra}", dir.display());
        toml::from_str::<FileReceiveConfig>(&text).unwrap().build().unwrap()
    }

    /// A FIFO put in a file's place after the scan is refused at once, not
    /// waited on (an open without O_NONBLOCK blocks until a writer comes).
    #[tokio::test]
    async fn a_fifo_in_a_files_place_is_refused_without_blocking() {
        let dir = tempfile::tempdir().unwrap();
        let fifo = dir.path().join("f");
        let made = std::process::Command::new("mkfifo").arg(&fifo).status().unwrap();
        assert!(made.success());
        for extra in ["", "follow_symlinks = true"] {
            let receiver = receiver_with(dir.path(), extra);
            let e = tokio::time::timeout(Duration::from_secs(5), receiver.open_claim(&fifo))
                .await
                .expect("the open did not block")
                .unwrap_err();
            assert!(e.contains("not a regular file"), "{e}");
        }
    }

    /// A location started beside another on the same folder (a reload)
    /// settles only the claims of files its own mask selects: the other's
    /// claims, in flight now, are left alone.
    #[tokio::test]
    async fn recovery_leaves_the_claims_of_another_mask_alone() {
        use crate::kit::{FakeAdmission, FakePublisher, context};
        let dir = tempfile::tempdir().unwrap();
        let theirs = dir.path().join(format!("{CLAIM_PREFIX}{}.a.xml", MessageId::new()));
        let mine = dir.path().join(format!("{CLAIM_PREFIX}{}.b.csv", MessageId::new()));
        std::fs::write(&theirs, "<a/>").unwrap();
        std::fs::write(&mine, "b").unwrap();
        let csv = receiver_with(dir.path(), "mask = '*.csv'");
        csv.recover(&context(FakePublisher::new(), FakeAdmission::new())).await;
        assert!(theirs.exists(), "the other location's claim is still its own");
        assert!(!dir.path().join("a.xml").exists());
        assert!(
            dir.path().join("b.csv").exists(),
            "its own unpublished claim is put back"
        );
        assert!(!mine.exists());
    }

    /// A link put in a file's place between the look and the claim is not
    /// read through unless links are followed.
    #[tokio::test]
    async fn a_claimed_link_is_opened_only_when_links_are_followed() {
        let (dir, elsewhere) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
        std::fs::write(elsewhere.path().join("secret"), "not for the box").unwrap();
        let link = dir.path().join("f");
        std::os::unix::fs::symlink(elsewhere.path().join("secret"), &link).unwrap();
        let e = receiver_with(dir.path(), "").open_claim(&link).await.unwrap_err();
        assert!(e.starts_with("cannot open"), "{e}");
        receiver_with(dir.path(), "follow_symlinks = true")
            .open_claim(&link)
            .await
            .unwrap();
    }

    /// Only regular files are candidates; a link counts as one only when
    /// links are followed and it leads to a file (its target's size).
    #[tokio::test]
    async fn links_are_taken_only_when_followed_and_only_to_files() {
        use std::os::unix::ffi::OsStrExt;
        use std::os::unix::fs::symlink;
        let (dir, elsewhere) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
        let d = dir.path();
        std::fs::write(elsewhere.path().join("t.txt"), "target").unwrap();
        std::fs::write(d.join("plain"), "p").unwrap();
        std::fs::write(d.join(std::ffi::OsStr::from_bytes(b"caf\xe9")), "latin-1").unwrap();
        std::fs::create_dir(d.join("sub")).unwrap();
        symlink(elsewhere.path().join("t.txt"), d.join("link.txt")).unwrap();
        symlink(elsewhere.path(), d.join("folder-link")).unwrap();
        symlink(elsewhere.path().join("none"), d.join("dangling")).unwrap();
        let scan = |r: FileReceiver| async move {
            let mut got: Vec<(String, u64)> = r
                .scan("loc", HashSet::new())
                .await
                .unwrap()
                .into_iter()
                .map(|c| (c.name, c.size))
                .collect();
            got.sort();
            got
        };
        assert_eq!(scan(receiver_with(d, "")).await, [("plain".to_string(), 1)]);
        assert_eq!(
            scan(receiver_with(d, "follow_symlinks = true")).await,
            [("link.txt".to_string(), 6), ("plain".to_string(), 1)]
        );
    }

    /// Files that keep failing must not crowd the others out of a batch.
    #[tokio::test]
    async fn skipped_names_do_not_count_against_the_batch() {
        let dir = tempfile::tempdir().unwrap();
        for n in ["a", "b", "c"] {
            std::fs::write(dir.path().join(n), n).unwrap();
        }
        let r = receiver(dir.path());
        let skip: HashSet<String> = ["a", "b"].into_iter().map(String::from).collect();
        let got: Vec<String> = r.scan("loc", skip).await.unwrap().into_iter().map(|c| c.name).collect();
        assert_eq!(got, vec!["c".to_string()]);
        assert_eq!(
            r.scan("loc", HashSet::new()).await.unwrap().len(),
            2,
            "batch limits the rest"
        );
    }
}
