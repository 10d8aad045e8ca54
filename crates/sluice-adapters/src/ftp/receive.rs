//! FTP receive: list a folder on the server, take each file whose size and
//! time held still across two looks, claim it by renaming it, stream it
//! into the box, delete it only after the publish committed.

use std::collections::{HashMap, HashSet};
use std::future::Future;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU8, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::task::{Context as TaskContext, Poll};
use std::time::{Duration, Instant, SystemTime};

use async_trait::async_trait;
use globset::{GlobBuilder, GlobMatcher};
use serde::Deserialize;
use sluice_model::MessageId;
use suppaftp::list::{File as Listed, ListParser};
use suppaftp::tokio::{AsyncRustlsFtpStream, AsyncRustlsStream, TransferStream};
use suppaftp::{FtpError, Status};
use tokio::io::{AsyncBufReadExt, AsyncRead, AsyncReadExt, ReadBuf};
use tracing::Instrument;

use super::session::{Dialer, Endpoint, Lent, Pool, Settings};
use crate::support::names::{CLAIM_PREFIX, RESERVED_PREFIX};
use crate::support::poll::{self, Candidate, Pace, Polled, Taken, Unreleased};
use crate::support::secret::Secret;
use crate::{AdapterError, Receipt, ReceiveContext, Source};

fn default_mask() -> String {
    "*".into()
}
fn default_poll() -> Duration {
    Duration::from_secs(5)
}
fn default_true() -> bool {
    true
}
fn default_batch() -> usize {
    1000
}
fn default_retry() -> Duration {
    Duration::from_secs(10)
}
fn default_max_connections() -> usize {
    2
}
fn default_max_listing() -> usize {
    100_000
}

/// How the folder is listed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Listing {
    /// `MLSD` (RFC 3659: exact sizes and UTC times), `LIST` when the
    /// server does not know `MLSD`.
    Auto,
    Mlsd,
    /// `LIST -a`, read as Unix `ls -l` or DOS lines.
    List,
}

fn default_listing() -> Listing {
    Listing::Auto
}

/// `type = "ftp"` receive location.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FtpReceiveConfig {
    /// `ftp://user@host:port/folder`, `ftpes://` (explicit TLS) or
    /// `ftps://` (implicit TLS).
    pub url: String,
    #[serde(default)]
    pub password: Option<Secret>,
    #[serde(default)]
    pub password_env: Option<String>,
    #[serde(default)]
    pub password_file: Option<PathBuf>,
    /// File mask, a glob on the file name: `*`, `*.xml`.
    #[serde(default = "default_mask", alias = "file_mask")]
    pub mask: String,
    /// How often to list the folder. A file is taken once two listings at
    /// least this far apart show it with the same size and time.
    #[serde(default = "default_poll", with = "humantime_serde")]
    pub poll_interval: Duration,
    /// Rename each file into a claim name (`.sluice-claim.<id>.<name>`)
    /// before reading it, so no other node or location takes it too, and a
    /// crash can be resolved. Off only for a server that refuses renames:
    /// then two readers may take the same file, and a crash between the
    /// publish and the delete receives it again.
    #[serde(default = "default_true")]
    pub claim: bool,
    /// `auto` (`MLSD`, else `LIST`), `mlsd` or `list`.
    #[serde(default = "default_listing")]
    pub listing: Listing,
    /// Most files taken from one listing.
    #[serde(default = "default_batch")]
    pub batch: usize,
    /// Entries read from one listing, at most (the rest waits for later
    /// listings, as files are taken).
    #[serde(default = "default_max_listing")]
    pub max_listing: usize,
    /// Wait before trying again a file that failed (doubles up to 32x).
    #[serde(default = "default_retry", with = "humantime_serde")]
    pub retry_after: Duration,
    /// Also take files whose names start with `.`.
    #[serde(default)]
    pub include_hidden: bool,
    /// Control connections open at once (listing and downloads together).
    #[serde(default = "default_max_connections")]
    pub max_connections: usize,
    /// A PEM file of certificate authorities trusted besides the built-in
    /// roots (`ftpes://`, `ftps://`).
    #[serde(default)]
    pub tls_ca: Option<PathBuf>,
    #[serde(
        default = "crate::support::remote::defaults::connect_timeout",
        with = "humantime_serde"
    )]
    pub connect_timeout: Duration,
    /// Each command's answer, and each read of a listing or a download (an
    /// idle limit).
    #[serde(default = "crate::support::remote::defaults::timeout", with = "humantime_serde")]
    pub timeout: Duration,
    /// One file's download and publish, at most.
    #[serde(
        default = "crate::support::remote::defaults::transfer_timeout",
        with = "humantime_serde"
    )]
    pub transfer_timeout: Duration,
}

/// The properties an FTP receive location promotes (namespace, name),
/// besides those of every location: the file's name (what
/// `%SourceFileName%` renders), its size, and where it was taken from
/// (`ftp.url`, without the user name).
pub const PROMOTES: &[(&str, &str)] = &[("file", "name"), ("file", "size"), ("ftp", "url")];

impl FtpReceiveConfig {
    pub fn resolve_paths(&mut self, base: &Path) {
        for p in [&mut self.password_file, &mut self.tls_ca].into_iter().flatten() {
            crate::support::names::resolve_in_place(base, p);
        }
    }

    /// The folder on the server, for [`crate::Resource::RemoteFiles`]: the
    /// same folder however it is reached.
    pub fn folder_key(&self) -> String {
        match Endpoint::parse("url", &self.url) {
            Ok(e) => e.folder_key(),
            Err(_) => self.url.clone(),
        }
    }

    pub fn build(&self) -> Result<FtpReceiver, AdapterError> {
        let mask = GlobBuilder::new(&self.mask)
            .literal_separator(true)
            .build()
            .map_err(|e| AdapterError::Config(format!("mask `{}`: {e}", self.mask)))?
            .compile_matcher();
        const DAY: Duration = Duration::from_secs(24 * 3600);
        let check = |ok: bool, what: &str| {
            if ok {
                Ok(())
            } else {
                Err(AdapterError::Config(what.to_string()))
            }
        };
        check(
            self.poll_interval >= Duration::from_millis(10) && self.poll_interval <= DAY,
            "poll_interval must be between 10ms and 1 day",
        )?;
        check(
            self.retry_after >= Duration::from_millis(10) && self.retry_after <= DAY,
            "retry_after must be between 10ms and 1 day",
        )?;
        check(
            (1..=100_000).contains(&self.batch),
            "batch must be between 1 and 100000",
        )?;
        check(
            (1..=10_000_000).contains(&self.max_listing),
            "max_listing must be between 1 and 10000000",
        )?;
        let dialer = Settings {
            url: &self.url,
            password: &self.password,
            password_env: &self.password_env,
            password_file: &self.password_file,
            tls_ca: self.tls_ca.as_deref(),
            connect_timeout: self.connect_timeout,
            timeout: self.timeout,
            transfer_timeout: self.transfer_timeout,
            max_connections: self.max_connections,
            create_folder: false,
        }
        .dialer()?;
        let shown = dialer.shown.clone();
        Ok(FtpReceiver {
            config: self.clone(),
            mask,
            dialer,
            pool: Pool::new(self.max_connections),
            listing: AtomicU8::new(match self.listing {
                Listing::Auto => UNKNOWN,
                Listing::Mlsd => MLSD,
                Listing::List => LIST,
            }),
            seen: Mutex::new(HashMap::new()),
            stuck: Mutex::new(Vec::new()),
            unreleased: Unreleased::default(),
            recovered: AtomicBool::new(false),
            shown,
        })
    }
}

/// [`FtpReceiver::listing`]: not known yet (try `MLSD`), `MLSD`, `LIST`.
const UNKNOWN: u8 = 0;
const MLSD: u8 = 1;
const LIST: u8 = 2;

/// Longest line of a listing read (a longer one fails the listing).
const MAX_LINE: usize = 8 * 1024;

pub struct FtpReceiver {
    config: FtpReceiveConfig,
    mask: GlobMatcher,
    dialer: Dialer,
    pool: Pool,
    listing: AtomicU8,
    /// The files of the last listing (mask and name checked), as seen and
    /// since when unchanged.
    seen: Mutex<HashMap<String, Seen>>,
    /// Claims that could not be put back under their name yet: (claim,
    /// original), tried again on every listing.
    stuck: Mutex<Vec<(String, String)>>,
    /// Receipts of deleted files whose messages the box could not release
    /// yet, tried again on every listing.
    unreleased: Unreleased,
    /// Whether the claims an earlier run left were resolved (at the start,
    /// or, when the server could not be reached then, at a later listing).
    recovered: AtomicBool,
    shown: String,
}

impl std::fmt::Debug for FtpReceiver {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FtpReceiver")
            .field("url", &self.shown)
            .finish_non_exhaustive()
    }
}

#[derive(Debug, Clone, Copy)]
struct Seen {
    size: u64,
    modified: Option<SystemTime>,
    since: Instant,
}

#[async_trait]
impl Source for FtpReceiver {
    async fn recover(&self, cx: &ReceiveContext) {
        self.recover_claims(cx).await;
    }

    async fn run(self: Box<Self>, cx: ReceiveContext) -> Result<(), AdapterError> {
        poll::run(Arc::new(*self), cx).await;
        Ok(())
    }
}

#[async_trait]
impl Polled for FtpReceiver {
    fn place(&self) -> String {
        self.shown.clone()
    }
    fn pace(&self) -> Pace {
        Pace {
            concurrency: self.config.max_connections,
            batch: self.config.batch,
            poll_interval: self.config.poll_interval,
            retry_after: self.config.retry_after,
        }
    }
    async fn tidy(&self, cx: &ReceiveContext) {
        if !self.recovered.load(Ordering::Acquire) {
            self.recover_claims(cx).await;
        }
        self.retry_stuck_claims(&cx.location).await;
        self.unreleased.retry(cx).await;
    }
    async fn look(&self, _location: &str, skip: HashSet<String>) -> Result<Vec<Candidate>, String> {
        self.candidates(skip).await
    }
    async fn take(&self, cx: &ReceiveContext, item: &Candidate) -> Result<Taken, String> {
        self.receive_one(cx, item).await
    }
}

/// A step's outcome: `Ok`, or what was being done and why it failed.
fn step<T>(r: Result<suppaftp::FtpResult<T>, String>, doing: &str) -> Result<T, String> {
    match r {
        Ok(Ok(v)) => Ok(v),
        Ok(Err(e)) => Err(format!("{doing}: {e}")),
        Err(e) => Err(e),
    }
}

/// Whether the server answered that the file is not there (550).
fn is_missing<T>(r: &Result<suppaftp::FtpResult<T>, String>) -> bool {
    matches!(r, Ok(Err(FtpError::UnexpectedResponse(resp))) if resp.status == Status::FileUnavailable)
}

impl FtpReceiver {
    /// The files to take now: in this listing and the last one with the
    /// same size and time, unchanged for `poll_interval` at least, not in
    /// `skip`, at most `batch`.
    async fn candidates(&self, skip: HashSet<String>) -> Result<Vec<Candidate>, String> {
        let listed = self.list().await?;
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
            if now.duration_since(since) >= self.config.poll_interval
                && !skip.contains(&e.name)
                && out.len() < self.config.batch
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
            && (self.config.include_hidden || !name.starts_with('.'))
            && self.mask.is_match(name)
    }

    /// The folder's files (not folders or links), at most `max_listing`.
    async fn list(&self) -> Result<Vec<Candidate>, String> {
        let mut lent = self.pool.take(&self.dialer).await?;
        let r = self.list_on(&mut lent.conn).await;
        if r.is_ok() {
            self.pool.put(lent);
        }
        r
    }

    async fn list_on(&self, ftp: &mut AsyncRustlsFtpStream) -> Result<Vec<Candidate>, String> {
        let d = &self.dialer;
        let mode = self.listing.load(Ordering::Relaxed);
        let (command, parse): (&str, fn(&str) -> Option<Listed>) = if mode == LIST {
            ("LIST -a", |l| {
                ListParser::parse_posix(l).or_else(|_| ListParser::parse_dos(l)).ok()
            })
        } else {
            ("MLSD", |l| ListParser::parse_mlsd(l).ok())
        };
        let opened = d
            .within(
                command,
                ftp.custom_data_command(command, &[Status::AboutToSend, Status::AlreadyOpen]),
            )
            .await?;
        let stream = match opened {
            Ok((_, stream)) => stream,
            // The server does not know MLSD: LIST from now on.
            Err(FtpError::UnexpectedResponse(r))
                if mode == UNKNOWN
                    && matches!(
                        r.status,
                        Status::BadCommand | Status::NotImplemented | Status::NotImplementedParameter
                    ) =>
            {
                tracing::info!(url = %self.shown, "the FTP server does not know MLSD; listing with LIST");
                self.listing.store(LIST, Ordering::Relaxed);
                return Box::pin(self.list_on(ftp)).await;
            }
            Err(e) => return Err(format!("listing the folder ({command}): {e}")),
        };
        if mode == UNKNOWN {
            self.listing.store(MLSD, Ordering::Relaxed);
        }
        let mut reader = tokio::io::BufReader::new(stream);
        let mut out = Vec::new();
        let mut line = Vec::new();
        let mut whole = true;
        loop {
            line.clear();
            let n = d
                .within(
                    "reading the listing",
                    (&mut reader).take(MAX_LINE as u64 + 1).read_until(b'\n', &mut line),
                )
                .await?
                .map_err(|e| format!("reading the listing: {e}"))?;
            if n == 0 {
                break;
            }
            if line.len() > MAX_LINE {
                return Err(format!("the listing has a line longer than {MAX_LINE} bytes"));
            }
            if out.len() >= self.config.max_listing {
                whole = false;
                break;
            }
            let Ok(text) = std::str::from_utf8(&line) else {
                continue;
            };
            let text = text.trim_end_matches(['\r', '\n']);
            let Some(f) = parse(text) else { continue };
            if !f.is_file() || f.name().contains('/') {
                continue;
            }
            out.push(Candidate {
                name: f.name().to_string(),
                size: f.size() as u64,
                modified: Some(f.modified()),
            });
        }
        let stream = reader.into_inner();
        if whole {
            step(
                d.within("finishing the listing", stream.finish()).await,
                "finishing the listing",
            )?;
        } else {
            // Dropped: the server's answer to the cut transfer is read
            // before the next command.
            drop(stream);
            tracing::warn!(url = %self.shown, max_listing = self.config.max_listing,
                "the FTP folder holds more entries than max_listing; the rest waits for later listings");
        }
        Ok(out)
    }

    /// Take one file: claim, stream, publish, delete. On failure the file is
    /// put back under its own name.
    async fn receive_one(&self, cx: &ReceiveContext, entry: &Candidate) -> Result<Taken, String> {
        let name = entry.name.as_str();
        let id = MessageId::new();
        let mut lent = self.pool.take(&self.dialer).await?;
        let d = &self.dialer;
        let claim = if self.config.claim {
            let claim = format!("{CLAIM_PREFIX}{id}.{name}");
            let renamed = d.within("RNFR/RNTO", lent.conn.rename(name, claim.as_str())).await;
            if is_missing(&renamed) {
                self.pool.put(lent);
                return Ok(Taken::Gone);
            }
            if let Err(e) = step(renamed, &format!("claiming {name}")) {
                tracing::error!(location = %cx.location, url = %self.shown, file = %name, error = %e,
                    "cannot claim the file; leaving it in place");
                return Err(e);
            }
            claim
        } else {
            name.to_string()
        };
        let published = tokio::time::timeout(
            self.config.transfer_timeout,
            self.publish_claimed(cx, &mut lent, id, entry, &claim),
        )
        .await
        .unwrap_or_else(|_| {
            Err(format!(
                "not received within transfer_timeout ({:?})",
                self.config.transfer_timeout
            ))
        });
        match published {
            Ok(receipt) => {
                let removed = step(d.within("DELE", lent.conn.rm(claim.as_str())).await, "deleting it");
                match removed {
                    Ok(()) => {
                        self.pool.put(lent);
                        let file = format!("{}/{name}", self.shown);
                        self.unreleased.settle(cx, receipt, &file).await;
                    }
                    // Published, but the file is still there: with a
                    // claim, the message stays held, and the next start
                    // (or a later listing's recovery) deletes the claim.
                    Err(e) => tracing::error!(location = %cx.location, url = %self.shown, file = %name,
                        claim = %claim, message_id = %id, error = %e,
                        "published, but could not delete the received file"),
                }
                tracing::debug!(location = %cx.location, url = %self.shown, file = %name, message_id = %id, "received");
                Ok(Taken::Published)
            }
            Err(e) => {
                if self.config.claim {
                    // Put back first, so that what the log says is so
                    // when it is read.
                    let restored = self.restore_with(lent, &claim, name).await;
                    if !restored {
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
        lent: &mut Lent,
        id: MessageId,
        entry: &Candidate,
        claim: &str,
    ) -> Result<Receipt, String> {
        let d = &self.dialer;
        // Its size now that it is ours: what the download must come to.
        let size = match d.within("SIZE", lent.conn.size(claim)).await {
            Ok(Ok(size)) => size as u64,
            // A server without SIZE: the listing's figure.
            Ok(Err(FtpError::UnexpectedResponse(r)))
                if matches!(r.status, Status::BadCommand | Status::NotImplemented) =>
            {
                entry.size
            }
            other => step(other, "reading its size").map(|s| s as u64)?,
        };
        let mut ctx = cx.base_context();
        ctx.promote("file", "name", entry.name.as_str());
        ctx.promote("file", "size", size);
        ctx.promote("ftp", "url", format!("{}/{}", self.shown, entry.name).as_str());
        if let Some(modified) = entry
            .modified
            .and_then(|m| m.duration_since(std::time::UNIX_EPOCH).ok())
            .and_then(|d| time::OffsetDateTime::from_unix_timestamp_nanos(d.as_nanos() as i128).ok())
        {
            ctx.write("file", "modified", modified);
        }
        let span = tracing::error_span!("receive_ftp_file", file = %format!("{}/{}", self.shown, entry.name));
        let body = self.download(&mut lent.conn, claim, size).await?;
        let submitted = cx
            .publisher
            .submit(id, ctx.clone(), Box::new(body))
            .instrument(span.clone())
            .await;
        match submitted {
            Err(e) if e.rejected => {
                // The content is bad: trying again cannot help. Keep the
                // bytes as received, suspended with the error, instead.
                let body = self.download(&mut lent.conn, claim, size).await?;
                cx.publisher
                    .suspend(id, ctx, Box::new(body), &e)
                    .instrument(span)
                    .await
                    .map_err(|s| format!("{} (and suspending it as received failed: {})", e.message, s.message))
            }
            other => other.map_err(|e| e.message),
        }
    }

    /// The file `name` as a body of exactly `size` bytes, complete only
    /// once the server confirmed the transfer.
    async fn download(&self, ftp: &mut AsyncRustlsFtpStream, name: &str, size: u64) -> Result<Download, String> {
        let stream = step(
            self.dialer.within("RETR", ftp.retr_as_stream(name)).await,
            "starting the download",
        )?;
        Ok(Download::new(stream, size, self.dialer.timeout))
    }

    /// Put a claimed file back under its own name, never over a file that
    /// took its place meanwhile; on `lent` if it still answers, else on a
    /// new session. `false` if it stays under the claim name.
    async fn restore_with(&self, lent: Lent, claim: &str, name: &str) -> bool {
        let mut lent = lent;
        match self.restore_on(&mut lent.conn, claim, name).await {
            Ok(done) => {
                self.pool.put(lent);
                done
            }
            Err(_) => {
                drop(lent);
                match self.pool.take(&self.dialer).await {
                    Ok(mut fresh) => match self.restore_on(&mut fresh.conn, claim, name).await {
                        Ok(done) => {
                            self.pool.put(fresh);
                            done
                        }
                        Err(e) => {
                            tracing::error!(url = %self.shown, file = %name, claim = %claim, error = %e,
                                "cannot put the file back under its name yet; it stays under the claim name and is tried again");
                            false
                        }
                    },
                    Err(e) => {
                        tracing::error!(url = %self.shown, file = %name, claim = %claim, error = %e,
                            "cannot put the file back under its name yet; it stays under the claim name and is tried again");
                        false
                    }
                }
            }
        }
    }

    /// `Ok(true)`: back under its name (or gone); `Ok(false)`: a file of
    /// that name is there now; `Err`: the session failed.
    async fn restore_on(&self, ftp: &mut AsyncRustlsFtpStream, claim: &str, name: &str) -> Result<bool, String> {
        let d = &self.dialer;
        // RNTO replaces on most servers: look first. (A file that arrives
        // between this look and the rename is replaced: FTP has no rename
        // that refuses to.)
        let there = d.within("SIZE", ftp.size(name)).await;
        if !is_missing(&there) {
            step(there, "looking for a file of the same name")?;
            tracing::error!(url = %self.shown, file = %name, claim = %claim,
                "a new file took the name of the claimed one; the claim stays and is tried again");
            return Ok(false);
        }
        let renamed = d.within("RNFR/RNTO", ftp.rename(claim, name)).await;
        if is_missing(&renamed) {
            tracing::error!(url = %self.shown, file = %name, "the file vanished while it was being received");
            return Ok(true);
        }
        step(renamed, "putting the file back").map(|()| true)
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
        let Ok(mut lent) = self.pool.take(&self.dialer).await else {
            self.stuck.lock().unwrap_or_else(PoisonError::into_inner).extend(stuck);
            return;
        };
        let mut healthy = true;
        for (claim, original) in stuck {
            let done = if healthy {
                match self.restore_on(&mut lent.conn, &claim, &original).await {
                    Ok(done) => done,
                    Err(_) => {
                        healthy = false;
                        false
                    }
                }
            } else {
                false
            };
            if done {
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
        if !self.config.claim {
            self.recovered.store(true, Ordering::Release);
            return;
        }
        let listed = match self.list().await {
            Ok(l) => l,
            Err(e) => {
                tracing::warn!(location = %cx.location, url = %self.shown, error = %e,
                    "cannot look for files an earlier run was receiving; will look again at the next listing");
                return;
            }
        };
        let mut recovered = 0;
        let mut failed = false;
        for e in listed {
            let Some((id, original)) = e.name.strip_prefix(CLAIM_PREFIX).and_then(|r| r.split_once('.')) else {
                continue;
            };
            // Another location may take other files of this folder.
            if !self.mask.is_match(original) {
                continue;
            }
            let Ok(id) = id.parse::<MessageId>() else { continue };
            match cx.publisher.is_published(id).await {
                Ok(true) => {
                    let removed = match self.pool.take(&self.dialer).await {
                        Ok(mut lent) => {
                            let r = step(
                                self.dialer.within("DELE", lent.conn.rm(e.name.as_str())).await,
                                "deleting it",
                            );
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
                    let restored = match self.pool.take(&self.dialer).await {
                        Ok(lent) => self.restore_with(lent, &e.name, original).await,
                        Err(_) => false,
                    };
                    if !restored {
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

/// A download as a message body: exactly the size the file had when it was
/// claimed, each read within the idle limit, and complete only once the
/// server confirmed the transfer (`226`): a connection cut short or a
/// server that reports a failure is an error, never a short message.
struct Download {
    state: DownloadState,
    expected: u64,
    read: u64,
    idle: Duration,
    timer: Pin<Box<tokio::time::Sleep>>,
}

type Finishing = Pin<Box<dyn Future<Output = Result<(), String>> + Send>>;

enum DownloadState {
    Reading(TransferStream<AsyncRustlsStream>),
    Finishing(Finishing),
    Done,
    /// It failed with this: every later read fails the same way.
    Failed(std::io::ErrorKind, String),
}

impl Download {
    fn new(stream: TransferStream<AsyncRustlsStream>, expected: u64, idle: Duration) -> Download {
        Download {
            state: DownloadState::Reading(stream),
            expected,
            read: 0,
            idle,
            timer: Box::pin(tokio::time::sleep(idle)),
        }
    }

    fn fail(&mut self, kind: std::io::ErrorKind, message: String) -> Poll<std::io::Result<()>> {
        // The stream dropped: its answer is read before the session's next
        // command.
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
        loop {
            match &mut this.state {
                DownloadState::Reading(stream) => {
                    let before = buf.filled().len();
                    match Pin::new(stream).poll_read(cx, buf) {
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
                                let deadline = tokio::time::Instant::now() + this.idle;
                                this.timer.as_mut().reset(deadline);
                                return Poll::Ready(Ok(()));
                            }
                            if this.read < this.expected {
                                let message =
                                    format!("the download ended after {} of {} bytes", this.read, this.expected);
                                return this.fail(std::io::ErrorKind::UnexpectedEof, message);
                            }
                            // All of it: complete once the server says so.
                            if let DownloadState::Reading(stream) =
                                std::mem::replace(&mut this.state, DownloadState::Done)
                            {
                                let idle = this.idle;
                                this.state = DownloadState::Finishing(Box::pin(async move {
                                    match tokio::time::timeout(idle, stream.finish()).await {
                                        Ok(Ok(())) => Ok(()),
                                        Ok(Err(e)) => Err(format!("the server reported the download failed: {e}")),
                                        Err(_) => Err(format!("no answer to the finished download within {idle:?}")),
                                    }
                                }));
                            }
                        }
                        Poll::Ready(Err(e)) => {
                            return this.fail(e.kind(), format!("downloading: {e}"));
                        }
                        Poll::Pending => {
                            if this.timer.as_mut().poll(cx).is_ready() {
                                let message = format!("the server sent nothing for {:?}", this.idle);
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
