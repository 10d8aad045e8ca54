//! Receiving from a folder on a server (FTP, SFTP): what every such location
//! does, whatever the protocol. The folder is listed every poll; a file is
//! taken once two listings a poll apart agree on its size and time, claimed
//! by renaming it to `.sluice-claim.<id>.<name>` (so no second reader takes
//! it), streamed into the box (exactly the size it had when claimed, each
//! read within the idle limit, complete only when the protocol says the
//! transfer ended well), and deleted only after the publish committed. A
//! failure puts it back under its name, never over a file that took the
//! name meanwhile; claims a crash left are resolved at the next start (or
//! at the first listing that works, when the server cannot be reached
//! then).
//!
//! A protocol supplies a [`RemoteFolder`]: how to list, rename, look at,
//! open and delete a file on one of its connections.

use std::collections::{HashMap, HashSet};
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::task::{Context as TaskContext, Poll};
use std::time::{Duration, Instant, SystemTime};

use async_trait::async_trait;
use globset::GlobMatcher;
use sluice_model::MessageId;
use tokio::io::{AsyncRead, ReadBuf};
use tracing::Instrument;

use crate::support::names::{CLAIM_PREFIX, RESERVED_PREFIX};
use crate::support::poll::{self, Candidate, Pace, Polled, Taken, Unreleased};
use crate::support::pool::{Connector, Lent, Pool};
use crate::{AdapterError, Admitted, Receipt, ReceiveContext, Source};

/// A transfer being read: its bytes, then how it ends.
pub trait Transfer: AsyncRead + Send + Unpin + 'static {
    /// Close it and say whether the server thinks it went well (FTP: its
    /// `226`); called once every byte was read.
    fn finish(self: Box<Self>) -> Pin<Box<dyn Future<Output = Result<(), String>> + Send>>;
}

/// What renaming a file came to.
#[derive(Debug, PartialEq, Eq)]
pub enum Renamed {
    Done,
    /// The file to rename is not there (someone else took it).
    Missing,
    /// The new name is taken (a protocol whose rename refuses to replace).
    Taken,
}

/// One protocol's operations on the folder a location receives from.
#[async_trait]
pub trait RemoteFolder: Send + Sync + 'static {
    type Connector: Connector;
    fn connector(&self) -> &Self::Connector;
    /// The property a message's URL is promoted as: `ftp.url`, `sftp.url`.
    fn url_property(&self) -> (&'static str, &'static str);
    /// The folder's files (not folders or links), at most `max`; a warning
    /// is logged when there were more.
    async fn list(&self, conn: &mut Conn<Self>, max: usize) -> Result<Vec<Candidate>, String>;
    async fn rename(&self, conn: &mut Conn<Self>, from: &str, to: &str) -> Result<Renamed, String>;
    /// Whether a file of this name is there.
    async fn exists(&self, conn: &mut Conn<Self>, name: &str) -> Result<bool, String>;
    /// Its size, or `None` where the server cannot say (then the listing's).
    async fn size(&self, conn: &mut Conn<Self>, name: &str) -> Result<Option<u64>, String>;
    async fn open(&self, conn: &mut Conn<Self>, name: &str) -> Result<Box<dyn Transfer>, String>;
    async fn remove(&self, conn: &mut Conn<Self>, name: &str) -> Result<(), String>;
    /// Whether a rename replaces a file of the new name (FTP): then a file
    /// is looked for before one is put back.
    fn rename_replaces(&self) -> bool;
    /// The idle limit of each read.
    fn timeout(&self) -> Duration;
}

/// Longest file name a remote-folder location takes (longer ones are
/// skipped): what file systems allow, so a listing's memory is bounded by
/// `max_listing` times this.
pub const MAX_NAME: usize = 255;

/// The connection type of a folder's connector.
pub type Conn<F> = <<F as RemoteFolder>::Connector as Connector>::Conn;

/// Defaults of the settings every remote-folder location has (serde's
/// `default = "..."`).
pub mod defaults {
    use std::time::Duration;

    pub fn mask() -> String {
        "*".into()
    }
    /// Listing a remote folder costs a round trip or more: every 5 s.
    pub fn poll_interval() -> Duration {
        Duration::from_secs(5)
    }
    pub fn claim() -> bool {
        true
    }
    pub fn batch() -> usize {
        1000
    }
    pub fn max_listing() -> usize {
        100_000
    }
    pub fn retry_after() -> Duration {
        Duration::from_secs(10)
    }
    /// Connections (the listing's and the downloads' together).
    pub fn max_connections() -> usize {
        2
    }
}

/// The settings every remote-folder location has.
#[derive(Debug, Clone)]
pub struct Settings {
    pub mask: String,
    pub poll_interval: Duration,
    pub claim: bool,
    pub batch: usize,
    pub max_listing: usize,
    pub retry_after: Duration,
    pub include_hidden: bool,
    pub max_connections: usize,
    pub transfer_timeout: Duration,
}

impl Settings {
    fn check(&self) -> Result<GlobMatcher, AdapterError> {
        let check = |ok: bool, what: &str| {
            if ok {
                Ok(())
            } else {
                Err(AdapterError::Config(what.to_string()))
            }
        };
        poll::check_intervals(self.poll_interval, self.retry_after)?;
        check(
            (1..=100_000).contains(&self.batch),
            "batch must be between 1 and 100000",
        )?;
        check(
            (1..=10_000_000).contains(&self.max_listing),
            "max_listing must be between 1 and 10000000",
        )?;
        poll::file_mask(&self.mask)
    }
}

/// The [`crate::ReceiveAdapter`] of a remote-folder location (FTP, SFTP):
/// its folder's files its mask selects as an exclusive claim, and its
/// `PROMOTES` on every message. The config type has `mask`, `folder_key`,
/// `resolve_paths` and `build`.
macro_rules! remote_receive_adapter {
    ($config:ty, $promotes:expr) => {
        impl $crate::ReceiveAdapter for $config {
            fn resolve_paths(&mut self, base: &std::path::Path) {
                <$config>::resolve_paths(self, base);
            }
            fn build(&self) -> Result<Box<dyn $crate::Source>, $crate::AdapterError> {
                Ok(Box::new(<$config>::build(self)?))
            }
            /// The server folder's files its mask selects, as FILE's claim.
            fn resources(&self) -> Vec<$crate::Claim> {
                vec![$crate::Claim::exclusive(
                    "url",
                    $crate::Resource::RemoteFiles(self.folder_key(), self.mask.clone()),
                )]
            }
            /// Every file's name, size and URL.
            fn always_promotes(&self) -> Vec<sluice_model::Key> {
                $crate::support::keys($promotes)
            }
        }
    };
}
pub(crate) use remote_receive_adapter;

/// A location receiving from a remote folder.
pub struct Fetcher<F: RemoteFolder> {
    folder: F,
    settings: Settings,
    mask: GlobMatcher,
    pool: Pool<Conn<F>>,
    /// The files of the last listing (mask and name checked), as seen and
    /// since when unchanged.
    seen: Mutex<HashMap<String, Seen>>,
    /// Claims that could not be put back under their name yet: (claim,
    /// original), tried again on every listing.
    stuck: Mutex<Vec<(String, String)>>,
    /// Files published whose delete failed: (what to delete, the original
    /// name, the receipt), tried again on every listing; their messages are
    /// released once they are gone.
    undeleted: Mutex<Vec<(String, String, Receipt)>>,
    /// Claims this process made and has not resolved yet (in flight, stuck
    /// or undeleted): recovery never touches them.
    outstanding: Mutex<HashSet<String>>,
    unreleased: Unreleased,
    /// Whether the claims an earlier run left were resolved.
    recovered: AtomicBool,
    /// Whether failing to look for them was logged (once, not every poll).
    recovery_warned: AtomicBool,
    /// The folder's URL without secrets, for logs and `*.url`.
    shown: String,
}

#[derive(Debug, Clone, Copy)]
struct Seen {
    size: u64,
    modified: Option<SystemTime>,
    since: Instant,
}

impl<F: RemoteFolder> std::fmt::Debug for Fetcher<F> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Fetcher")
            .field("url", &self.shown)
            .finish_non_exhaustive()
    }
}

impl<F: RemoteFolder> Fetcher<F> {
    /// The settings checked; `shown` is the folder's URL without secrets.
    pub fn new(folder: F, settings: Settings, shown: String) -> Result<Fetcher<F>, AdapterError> {
        let mask = settings.check()?;
        Ok(Fetcher {
            pool: Pool::new(settings.max_connections),
            folder,
            settings,
            mask,
            seen: Mutex::new(HashMap::new()),
            stuck: Mutex::new(Vec::new()),
            undeleted: Mutex::new(Vec::new()),
            outstanding: Mutex::new(HashSet::new()),
            unreleased: Unreleased::default(),
            recovered: AtomicBool::new(false),
            recovery_warned: AtomicBool::new(false),
            shown,
        })
    }

    async fn take_conn(&self) -> Result<Lent<Conn<F>>, String> {
        self.pool.take(self.folder.connector()).await
    }
}

#[async_trait]
impl<F: RemoteFolder> Source for Fetcher<F> {
    async fn recover(&self, cx: &ReceiveContext) {
        self.recover_claims(cx).await;
    }

    async fn run(self: Box<Self>, cx: ReceiveContext) -> Result<(), AdapterError> {
        poll::run(Arc::new(*self), cx).await;
        Ok(())
    }
}

#[async_trait]
impl<F: RemoteFolder> Polled for Fetcher<F> {
    fn place(&self) -> String {
        self.shown.clone()
    }
    fn pace(&self) -> Pace {
        Pace {
            concurrency: self.settings.max_connections,
            batch: self.settings.batch,
            poll_interval: self.settings.poll_interval,
            retry_after: self.settings.retry_after,
        }
    }
    async fn tidy(&self, cx: &ReceiveContext) {
        if !self.recovered.load(Ordering::Acquire) {
            self.recover_claims(cx).await;
        }
        self.retry_stuck_claims(&cx.location).await;
        self.retry_deletes(cx).await;
        self.unreleased.retry(cx).await;
    }
    async fn look(&self, _location: &str, skip: HashSet<String>) -> Result<Vec<Candidate>, String> {
        self.candidates(skip).await
    }
    async fn take(&self, cx: &ReceiveContext, item: &Candidate, admitted: &Arc<Admitted>) -> Result<Taken, String> {
        self.receive_one(cx, item, admitted).await
    }
    /// A listing's sizes are the server's word: admitted at 0, the bytes
    /// charged as they arrive.
    fn trusts_sizes(&self) -> bool {
        false
    }
}

impl<F: RemoteFolder> Fetcher<F> {
    /// The files to take now: in this listing and the last one with the
    /// same size and time, unchanged for `poll_interval` at least, not in
    /// `skip`, at most `batch`.
    async fn candidates(&self, skip: HashSet<String>) -> Result<Vec<Candidate>, String> {
        let listed = self.list().await?;
        // Published already, its delete failed (claim = false): not again.
        let mut skip = skip;
        skip.extend(
            self.undeleted
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .iter()
                .map(|(_, original, _)| original.clone()),
        );
        let now = Instant::now();
        let mut seen = self.seen.lock().unwrap_or_else(PoisonError::into_inner);
        let mut next = HashMap::with_capacity(listed.len());
        let mut out = Vec::new();
        for e in listed {
            if !self.selects(&e.name) {
                continue;
            }
            let since = match seen.get(&e.name) {
                Some(s) if s.size == e.size && s.modified == e.modified => s.since,
                _ => now,
            };
            if now.duration_since(since) >= self.settings.poll_interval
                && !skip.contains(&e.name)
                && out.len() < self.settings.batch
            {
                out.push(e.clone());
            }
            next.insert(
                e.name,
                Seen {
                    size: e.size,
                    modified: e.modified,
                    since,
                },
            );
        }
        *seen = next;
        Ok(out)
    }

    /// Whether the location takes a file of this name.
    fn selects(&self, name: &str) -> bool {
        !name.starts_with(RESERVED_PREFIX)
            && (self.settings.include_hidden || !name.starts_with('.'))
            && self.mask.is_match(name)
    }

    async fn list(&self) -> Result<Vec<Candidate>, String> {
        let mut lent = self.take_conn().await?;
        // A server that trickles its listing forever ends it here too.
        let r = tokio::time::timeout(
            self.settings.transfer_timeout,
            self.folder.list(&mut lent.conn, self.settings.max_listing),
        )
        .await
        .unwrap_or_else(|_| {
            Err(format!(
                "the listing took longer than transfer_timeout ({:?})",
                self.settings.transfer_timeout
            ))
        });
        if r.is_ok() {
            self.pool.put(lent);
        }
        r
    }

    /// Take one file: claim, stream, publish, delete. On failure the file is
    /// put back under its own name.
    async fn receive_one(
        &self,
        cx: &ReceiveContext,
        entry: &Candidate,
        admitted: &Arc<Admitted>,
    ) -> Result<Taken, String> {
        let name = entry.name.as_str();
        let id = MessageId::new();
        let mut lent = self.take_conn().await?;
        let claim = if self.settings.claim {
            let claim = format!("{CLAIM_PREFIX}{}.{id}.{name}", owner(cx));
            match self.folder.rename(&mut lent.conn, name, &claim).await {
                Ok(Renamed::Done) => {
                    self.outstanding_set().insert(claim.clone());
                }
                Ok(Renamed::Missing) => {
                    self.pool.put(lent);
                    return Ok(Taken::Gone);
                }
                Ok(Renamed::Taken) => {
                    return Err(format!("claiming {name}: {claim} is there already"));
                }
                Err(e) => {
                    tracing::error!(location = %cx.location, url = %self.shown, file = %name, error = %e,
                        "cannot claim the file; leaving it in place");
                    return Err(format!("claiming {name}: {e}"));
                }
            }
            claim
        } else {
            name.to_string()
        };
        // Not cut short by a timeout of its own here: a publish cancelled
        // half-way could leave some of a file's messages committed. The
        // download's reads fail past `transfer_timeout` instead.
        let published = self.publish_claimed(cx, &mut lent, id, entry, &claim, admitted).await;
        match published {
            Ok(receipt) => {
                match self.folder.remove(&mut lent.conn, &claim).await {
                    Ok(()) => {
                        self.pool.put(lent);
                        self.outstanding_set().remove(&claim);
                        let file = format!("{}/{name}", self.shown);
                        self.unreleased.settle(cx, receipt, &file).await;
                    }
                    // Published, but the file is still there: the message
                    // stays held, and the delete is tried again before
                    // every listing (and by the next start, from the claim).
                    Err(e) => {
                        tracing::error!(location = %cx.location, url = %self.shown, file = %name,
                            claim = %claim, message_id = %id, error = %e,
                            "published, but could not delete the received file; will try again");
                        self.undeleted.lock().unwrap_or_else(PoisonError::into_inner).push((
                            claim,
                            name.to_string(),
                            receipt,
                        ));
                    }
                }
                tracing::debug!(location = %cx.location, url = %self.shown, file = %name, message_id = %id, "received");
                Ok(Taken::Published)
            }
            Err(e) => {
                if self.settings.claim {
                    // Put back first, so that what the log says is so
                    // when it is read.
                    drop(lent);
                    if self.restore(&claim, name).await {
                        self.outstanding_set().remove(&claim);
                    } else {
                        self.remember_stuck(claim, name.to_string());
                    }
                }
                tracing::error!(location = %cx.location, url = %self.shown, file = %name, error = %e,
                    "receiving failed; the file is left in place and will be tried again");
                Err(e)
            }
        }
    }

    async fn publish_claimed(
        &self,
        cx: &ReceiveContext,
        lent: &mut Lent<Conn<F>>,
        id: MessageId,
        entry: &Candidate,
        claim: &str,
        admitted: &Arc<Admitted>,
    ) -> Result<Receipt, String> {
        // Its size now that it is ours: what the download must come to.
        let size = self
            .folder
            .size(&mut lent.conn, claim)
            .await
            .map_err(|e| format!("reading its size: {e}"))?
            .unwrap_or(entry.size);
        let mut ctx = cx.base_context();
        let url = format!("{}/{}", self.shown, entry.name);
        let (ns, key) = self.folder.url_property();
        ctx.promote("file", "name", entry.name.as_str());
        ctx.promote("file", "size", size);
        ctx.promote(ns, key, url.as_str());
        if let Some(modified) = entry
            .modified
            .and_then(|m| m.duration_since(std::time::UNIX_EPOCH).ok())
            .and_then(|d| time::OffsetDateTime::from_unix_timestamp_nanos(d.as_nanos() as i128).ok())
        {
            ctx.write("file", "modified", modified);
        }
        let span = tracing::error_span!("receive_remote_file", file = %url);
        let body = self.download(lent, claim, size, admitted).await?;
        let submitted = cx
            .publisher
            .submit(id, ctx.clone(), Box::new(body))
            .instrument(span.clone())
            .await;
        match submitted {
            Err(e) if e.rejected => {
                // The content is bad: trying again cannot help. Keep the
                // bytes as received, suspended with the error, instead.
                let body = self.download(lent, claim, size, admitted).await?;
                cx.publisher
                    .suspend(id, ctx, Box::new(body), &e)
                    .instrument(span)
                    .await
                    .map_err(|s| format!("{} (and suspending it as received failed: {})", e.message, s.message))
            }
            other => other.map_err(|e| e.message),
        }
    }

    async fn download(
        &self,
        lent: &mut Lent<Conn<F>>,
        name: &str,
        size: u64,
        admitted: &Arc<Admitted>,
    ) -> Result<Download, String> {
        let transfer = self
            .folder
            .open(&mut lent.conn, name)
            .await
            .map_err(|e| format!("starting the download: {e}"))?;
        let deadline = tokio::time::Instant::now() + self.settings.transfer_timeout;
        Ok(Download::new(transfer, size, self.folder.timeout(), deadline).charging(admitted.clone()))
    }

    /// Put a claimed file back under its own name, never over a file that
    /// took its place meanwhile, on a connection from the pool (not the one
    /// that failed: after a step that timed out, its answers may be out of
    /// step). `false` if it stays under the claim name.
    async fn restore(&self, claim: &str, name: &str) -> bool {
        let failed = match self.take_conn().await {
            Ok(mut lent) => match self.restore_on(&mut lent.conn, claim, name).await {
                Ok(done) => {
                    self.pool.put(lent);
                    return done;
                }
                Err(e) => e,
            },
            Err(e) => e,
        };
        tracing::error!(url = %self.shown, file = %name, claim = %claim, error = %failed,
            "cannot put the file back under its name yet; it stays under the claim name and is tried again");
        false
    }

    /// `Ok(true)`: back under its name (or gone); `Ok(false)`: a file of
    /// that name is there now; `Err`: the connection failed.
    async fn restore_on(&self, conn: &mut Conn<F>, claim: &str, name: &str) -> Result<bool, String> {
        // A rename that replaces: look first. (A file that arrives between
        // this look and the rename is replaced: such a protocol has no
        // rename that refuses to.)
        let taken = if self.folder.rename_replaces() && self.folder.exists(conn, name).await? {
            Renamed::Taken
        } else {
            self.folder.rename(conn, claim, name).await?
        };
        match taken {
            Renamed::Done => Ok(true),
            Renamed::Missing => {
                // Gone, or a refusal the server words as "no such file":
                // the claim is looked for before it is given up.
                if self.folder.exists(conn, claim).await? {
                    return Err("the server refused to rename the claimed file back".into());
                }
                tracing::error!(url = %self.shown, file = %name, "the file vanished while it was being received");
                Ok(true)
            }
            Renamed::Taken => {
                tracing::error!(url = %self.shown, file = %name, claim = %claim,
                    "a new file took the name of the claimed one; the claim stays and is tried again");
                Ok(false)
            }
        }
    }

    fn outstanding_set(&self) -> std::sync::MutexGuard<'_, HashSet<String>> {
        self.outstanding.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Deletes that failed after a publish, tried again; the messages of
    /// those that go through are released.
    async fn retry_deletes(&self, cx: &ReceiveContext) {
        let pending = std::mem::take(&mut *self.undeleted.lock().unwrap_or_else(PoisonError::into_inner));
        if pending.is_empty() {
            return;
        }
        let mut lent = self.take_conn().await.ok();
        for (target, original, receipt) in pending {
            let removed = match lent.as_mut() {
                Some(l) => self.folder.remove(&mut l.conn, &target).await,
                None => Err("no connection".into()),
            };
            match removed {
                Ok(()) => {
                    self.outstanding_set().remove(&target);
                    tracing::info!(location = %cx.location, url = %self.shown, file = %original,
                        "deleted a received file whose delete had failed");
                    let file = format!("{}/{original}", self.shown);
                    self.unreleased.settle(cx, receipt, &file).await;
                }
                Err(_) => {
                    lent = None;
                    self.undeleted
                        .lock()
                        .unwrap_or_else(PoisonError::into_inner)
                        .push((target, original, receipt));
                }
            }
        }
        if let Some(lent) = lent {
            self.pool.put(lent);
        }
    }

    fn remember_stuck(&self, claim: String, original: String) {
        self.stuck
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .push((claim, original));
    }

    async fn retry_stuck_claims(&self, location: &str) {
        let stuck = std::mem::take(&mut *self.stuck.lock().unwrap_or_else(PoisonError::into_inner));
        if stuck.is_empty() {
            return;
        }
        let Ok(mut lent) = self.take_conn().await else {
            self.stuck.lock().unwrap_or_else(PoisonError::into_inner).extend(stuck);
            return;
        };
        let mut healthy = true;
        for (claim, original) in stuck {
            let done = healthy
                && match self.restore_on(&mut lent.conn, &claim, &original).await {
                    Ok(done) => done,
                    Err(_) => {
                        healthy = false;
                        false
                    }
                };
            if done {
                self.outstanding_set().remove(&claim);
                tracing::info!(location = %location, url = %self.shown, file = %original, "put a claimed file back under its name");
            } else {
                self.remember_stuck(claim, original);
            }
        }
        if healthy {
            self.pool.put(lent);
        }
    }

    /// Claims an earlier run left (`.sluice-claim.<id>.<name>`, of names
    /// this location's mask selects): deleted when the message is in the
    /// box (it is still held by this location, so it was not delivered
    /// and removed meanwhile), put back under their names otherwise. When
    /// the server cannot be reached, tried again at every listing until it
    /// is done; meanwhile the box releases what it held for this location,
    /// so a file whose publish committed just before a crash may then be
    /// received a second time (never lost).
    async fn recover_claims(&self, cx: &ReceiveContext) {
        if !self.settings.claim {
            self.recovered.store(true, Ordering::Release);
            return;
        }
        let listed = match self.list().await {
            Ok(l) => l,
            Err(e) => {
                // Once: the failing listing itself is logged by the loop.
                if !self.recovery_warned.swap(true, Ordering::Relaxed) {
                    tracing::warn!(location = %cx.location, url = %self.shown, error = %e,
                        "cannot look for files an earlier run was receiving; will look again at every listing");
                }
                return;
            }
        };
        let mut recovered = 0;
        let mut failed = false;
        let mine = owner(cx);
        let outstanding = self.outstanding_set().clone();
        for e in listed {
            let Some((claimer, id, original)) = e
                .name
                .strip_prefix(CLAIM_PREFIX)
                .and_then(|r| r.split_once('.'))
                .and_then(|(claimer, r)| r.split_once('.').map(|(id, original)| (claimer, id, original)))
            else {
                continue;
            };
            // Another node's or location's (it resolves its own), or one
            // this run is still working on.
            if claimer != mine || outstanding.contains(&e.name) {
                continue;
            }
            // Another location may take other files of this folder.
            if !self.mask.is_match(original) {
                continue;
            }
            let Ok(id) = id.parse::<MessageId>() else { continue };
            match cx.publisher.is_published(id).await {
                Ok(true) => {
                    let removed = match self.take_conn().await {
                        Ok(mut lent) => {
                            let r = self.folder.remove(&mut lent.conn, &e.name).await;
                            if r.is_ok() {
                                self.pool.put(lent);
                            }
                            r
                        }
                        Err(err) => Err(err),
                    };
                    if let Err(err) = removed {
                        failed = true;
                        tracing::error!(location = %cx.location, url = %self.shown, file = %original, claim = %e.name,
                            error = %err, "cannot delete an already published file");
                    }
                }
                Ok(false) => {
                    if !self.restore(&e.name, original).await {
                        self.remember_stuck(e.name.clone(), original.to_string());
                    }
                    recovered += 1;
                }
                Err(err) => {
                    failed = true;
                    tracing::error!(location = %cx.location, url = %self.shown, file = %original, claim = %e.name,
                        error = %err, "cannot check a claimed file; leaving it");
                }
            }
        }
        if recovered > 0 {
            tracing::info!(location = %cx.location, url = %self.shown, files = recovered,
                "put back files that were being received when the node stopped");
        }
        if !failed {
            self.recovered.store(true, Ordering::Release);
        }
    }
}

/// Who a claim belongs to: a short hash of the node's id and the
/// location's name (`.sluice-claim.<owner>.<message id>.<name>`), so a node
/// sharing the folder never resolves another's claims as its own.
fn owner(cx: &ReceiveContext) -> String {
    owner_of(&cx.node, &cx.location)
}

/// `owner` for a node and a location's name.
pub fn owner_of(node: &str, location: &str) -> String {
    use sha2::Digest;
    let digest = sha2::Sha256::digest(format!("{node}\0{location}").as_bytes());
    digest[..6].iter().map(|b| format!("{b:02x}")).collect()
}

/// A download as a message body: exactly the size the file had when it was
/// claimed, each read within the idle limit, and complete only once the
/// transfer finished well ([`Transfer::finish`]): a connection cut short or
/// a server that reports a failure is an error, never a short message.
pub struct Download {
    state: DownloadState,
    expected: u64,
    read: u64,
    idle: Duration,
    /// No read after this (the location's `transfer_timeout`).
    deadline: tokio::time::Instant,
    /// The host's admission, charged the bytes as they arrive.
    admitted: Option<Arc<Admitted>>,
    /// Whether the idle timer runs (from the first read on).
    armed: bool,
    timer: Pin<Box<tokio::time::Sleep>>,
}

type Finishing = Pin<Box<dyn Future<Output = Result<(), String>> + Send>>;

enum DownloadState {
    Reading(Box<dyn Transfer>),
    Finishing(Finishing),
    Done,
    /// It failed with this: every later read fails the same way.
    Failed(std::io::ErrorKind, String),
}

impl Download {
    pub fn new(transfer: Box<dyn Transfer>, expected: u64, idle: Duration, deadline: tokio::time::Instant) -> Download {
        Download {
            state: DownloadState::Reading(transfer),
            expected,
            read: 0,
            idle,
            deadline,
            admitted: None,
            // Armed at the first read: until then the publisher has not
            // started reading (a busy box), which is not the server's doing.
            timer: Box::pin(tokio::time::sleep(Duration::from_secs(365 * 24 * 3600))),
            armed: false,
        }
    }

    /// Charge the bytes read to `admitted` as they arrive.
    pub fn charging(mut self, admitted: Arc<Admitted>) -> Download {
        self.admitted = Some(admitted);
        self
    }

    fn fail(&mut self, kind: std::io::ErrorKind, message: String) -> Poll<std::io::Result<()>> {
        // The transfer dropped: the protocol cleans up after it.
        self.state = DownloadState::Failed(kind, message.clone());
        Poll::Ready(Err(std::io::Error::new(kind, message)))
    }
}

impl AsyncRead for Download {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut TaskContext<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let this = &mut *self;
        if !this.armed {
            this.armed = true;
            let first = (tokio::time::Instant::now() + this.idle).min(this.deadline);
            this.timer.as_mut().reset(first);
        }
        loop {
            match &mut this.state {
                DownloadState::Reading(transfer) => {
                    let before = buf.filled().len();
                    match Pin::new(transfer).poll_read(cx, buf) {
                        Poll::Ready(Ok(())) => {
                            let n = (buf.filled().len() - before) as u64;
                            this.read += n;
                            if this.read > this.expected {
                                buf.set_filled(before);
                                let message = format!(
                                    "the file grew while being downloaded (was {} bytes when taken)",
                                    this.expected
                                );
                                return this.fail(std::io::ErrorKind::InvalidData, message);
                            }
                            if n > 0 {
                                if let Some(admitted) = &this.admitted {
                                    admitted.charge(n);
                                }
                                let next = (tokio::time::Instant::now() + this.idle).min(this.deadline);
                                this.timer.as_mut().reset(next);
                                return Poll::Ready(Ok(()));
                            }
                            if this.read < this.expected {
                                let message =
                                    format!("the download ended after {} of {} bytes", this.read, this.expected);
                                return this.fail(std::io::ErrorKind::UnexpectedEof, message);
                            }
                            // All of it: complete once the transfer ends well.
                            if let DownloadState::Reading(transfer) =
                                std::mem::replace(&mut this.state, DownloadState::Done)
                            {
                                let idle = this.idle;
                                let finishing = transfer.finish();
                                this.state = DownloadState::Finishing(Box::pin(async move {
                                    tokio::time::timeout(idle, finishing)
                                        .await
                                        .map_err(|_| format!("no answer to the finished download within {idle:?}"))?
                                }));
                            }
                        }
                        Poll::Ready(Err(e)) => return this.fail(e.kind(), format!("downloading: {e}")),
                        Poll::Pending => {
                            if this.timer.as_mut().poll(cx).is_ready() {
                                let message = if tokio::time::Instant::now() >= this.deadline {
                                    "not received within transfer_timeout".to_string()
                                } else {
                                    format!("the server sent nothing for {:?}", this.idle)
                                };
                                return this.fail(std::io::ErrorKind::TimedOut, message);
                            }
                            return Poll::Pending;
                        }
                    }
                }
                DownloadState::Finishing(done) => {
                    return match done.as_mut().poll(cx) {
                        Poll::Ready(Ok(())) => {
                            this.state = DownloadState::Done;
                            Poll::Ready(Ok(()))
                        }
                        Poll::Ready(Err(e)) => this.fail(std::io::ErrorKind::Other, e),
                        Poll::Pending => Poll::Pending,
                    };
                }
                DownloadState::Done => return Poll::Ready(Ok(())),
                DownloadState::Failed(kind, message) => {
                    return Poll::Ready(Err(std::io::Error::new(*kind, message.clone())));
                }
            }
        }
    }
}
