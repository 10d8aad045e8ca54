//! FTP receive: the remote-folder receiver (`support::fetch`: two listings
//! agree, claim by rename, stream in, delete after the publish) over FTP:
//! `MLSD` or `LIST` listings read line by line under caps, `RNFR`/`RNTO`,
//! `SIZE`, `RETR` ending in `226`, `DELE`.

use std::future::Future;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::atomic::{AtomicU8, Ordering};
use std::time::Duration;

use async_trait::async_trait;
use serde::Deserialize;
use suppaftp::list::{File as Listed, ListParser};
use suppaftp::tokio::{AsyncRustlsFtpStream, AsyncRustlsStream, TransferStream};
use suppaftp::{FtpError, Status};
use tokio::io::{AsyncBufReadExt, AsyncReadExt};

use super::session::{Dialer, Endpoint, Settings};
use crate::AdapterError;
use crate::support::fetch::{self, Fetcher, RemoteFolder, Renamed, Transfer};
use crate::support::poll::Candidate;
use crate::support::secret::Secret;

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
    #[serde(default = "fetch::defaults::mask", alias = "file_mask")]
    pub mask: String,
    /// How often to list the folder. A file is taken once two listings at
    /// least this far apart show it with the same size and time.
    #[serde(default = "fetch::defaults::poll_interval", with = "humantime_serde")]
    pub poll_interval: Duration,
    /// Rename each file into a claim name (`.sluice-claim.<id>.<name>`)
    /// before reading it, so no other node or location takes it too, and a
    /// crash can be resolved. Off only for a server that refuses renames:
    /// then two readers may take the same file, and a crash between the
    /// publish and the delete receives it again.
    #[serde(default = "fetch::defaults::claim")]
    pub claim: bool,
    /// `auto` (`MLSD`, else `LIST`), `mlsd` or `list`.
    #[serde(default = "default_listing")]
    pub listing: Listing,
    /// Most files taken from one listing.
    #[serde(default = "fetch::defaults::batch")]
    pub batch: usize,
    /// Entries read from one listing, at most (the rest waits for later
    /// listings, as files are taken).
    #[serde(default = "fetch::defaults::max_listing")]
    pub max_listing: usize,
    /// Wait before trying again a file that failed (doubles up to 32x).
    #[serde(default = "fetch::defaults::retry_after", with = "humantime_serde")]
    pub retry_after: Duration,
    /// Also take files whose names start with `.`.
    #[serde(default)]
    pub include_hidden: bool,
    /// Control connections open at once (listing and downloads together).
    #[serde(default = "fetch::defaults::max_connections")]
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
        let folder = FtpFolder {
            listing: AtomicU8::new(match self.listing {
                Listing::Auto => UNKNOWN,
                Listing::Mlsd => MLSD,
                Listing::List => LIST,
            }),
            shown: shown.clone(),
            dialer,
        };
        Fetcher::new(
            folder,
            fetch::Settings {
                mask: self.mask.clone(),
                poll_interval: self.poll_interval,
                claim: self.claim,
                batch: self.batch,
                max_listing: self.max_listing,
                retry_after: self.retry_after,
                include_hidden: self.include_hidden,
                max_connections: self.max_connections,
                transfer_timeout: self.transfer_timeout,
            },
            shown,
        )
    }
}

/// An FTP receive location: the remote-folder receiver over FTP.
pub type FtpReceiver = Fetcher<FtpFolder>;

/// [`FtpFolder::listing`]: not known yet (try `MLSD`), `MLSD`, `LIST`.
const UNKNOWN: u8 = 0;
const MLSD: u8 = 1;
const LIST: u8 = 2;

/// Longest line of a listing read (a longer one fails the listing).
const MAX_LINE: usize = 8 * 1024;

/// Longest file name taken (longer ones are skipped): what file systems
/// allow, so a listing's memory is bounded by `max_listing` times this.
const MAX_NAME: usize = fetch::MAX_NAME;

/// The FTP side of a receive location: its server and how it lists.
pub struct FtpFolder {
    dialer: Dialer,
    listing: AtomicU8,
    shown: String,
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

/// Whether the server answered that it does not know the command.
fn is_unknown<T>(r: &Result<suppaftp::FtpResult<T>, String>) -> bool {
    matches!(r, Ok(Err(FtpError::UnexpectedResponse(resp)))
        if matches!(resp.status, Status::BadCommand | Status::NotImplemented))
}

impl Transfer for TransferStream<AsyncRustlsStream> {
    /// The server's `226` (or `250`) after the data connection closed.
    fn finish(self: Box<Self>) -> Pin<Box<dyn Future<Output = Result<(), String>> + Send>> {
        Box::pin(async move {
            (*self)
                .finish()
                .await
                .map_err(|e| format!("the server reported the download failed: {e}"))
        })
    }
}

#[async_trait]
impl RemoteFolder for FtpFolder {
    type Connector = Dialer;
    fn connector(&self) -> &Dialer {
        &self.dialer
    }
    fn url_property(&self) -> (&'static str, &'static str) {
        ("ftp", "url")
    }
    async fn list(&self, ftp: &mut AsyncRustlsFtpStream, max: usize) -> Result<Vec<Candidate>, String> {
        self.list_on(ftp, max).await
    }
    async fn rename(&self, ftp: &mut AsyncRustlsFtpStream, from: &str, to: &str) -> Result<Renamed, String> {
        let renamed = self.dialer.within("RNFR/RNTO", ftp.rename(from, to)).await;
        if is_missing(&renamed) {
            return Ok(Renamed::Missing);
        }
        step(renamed, "renaming").map(|()| Renamed::Done)
    }
    /// `SIZE`, or `MDTM` on a server without it; a server with neither
    /// cannot say, and nothing is put back there over what may be a file.
    async fn exists(&self, ftp: &mut AsyncRustlsFtpStream, name: &str) -> Result<bool, String> {
        let there = self.dialer.within("SIZE", ftp.size(name)).await;
        if is_missing(&there) {
            return Ok(false);
        }
        if !is_unknown(&there) {
            return step(there, "looking for a file").map(|_| true);
        }
        let there = self.dialer.within("MDTM", ftp.mdtm(name)).await;
        if is_missing(&there) {
            return Ok(false);
        }
        if is_unknown(&there) {
            return Err("the server has neither SIZE nor MDTM: cannot tell whether a file is there".into());
        }
        step(there, "looking for a file").map(|_| true)
    }
    async fn size(&self, ftp: &mut AsyncRustlsFtpStream, name: &str) -> Result<Option<u64>, String> {
        let size = self.dialer.within("SIZE", ftp.size(name)).await;
        if is_unknown(&size) {
            return Ok(None);
        }
        step(size, "SIZE").map(|s| Some(s as u64))
    }
    async fn open(&self, ftp: &mut AsyncRustlsFtpStream, name: &str) -> Result<Box<dyn Transfer>, String> {
        let stream = step(self.dialer.within("RETR", ftp.retr_as_stream(name)).await, "RETR")?;
        Ok(Box::new(stream))
    }
    async fn remove(&self, ftp: &mut AsyncRustlsFtpStream, name: &str) -> Result<(), String> {
        step(self.dialer.within("DELE", ftp.rm(name)).await, "deleting it")
    }
    /// `RNTO` replaces on most servers.
    fn rename_replaces(&self) -> bool {
        true
    }
    fn timeout(&self) -> Duration {
        self.dialer.timeout
    }
}

impl FtpFolder {
    /// The folder's files (not folders or links), at most `max`.
    async fn list_on(&self, ftp: &mut AsyncRustlsFtpStream, max: usize) -> Result<Vec<Candidate>, String> {
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
                return Box::pin(self.list_on(ftp, max)).await;
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
        let mut lines = 0usize;
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
            // Every line counts, files or not: a listing of endless
            // folders or junk ends too.
            lines += 1;
            if lines > max {
                whole = false;
                break;
            }
            let Ok(text) = std::str::from_utf8(&line) else {
                continue;
            };
            let text = text.trim_end_matches(['\r', '\n']);
            let Some(f) = parse(text) else { continue };
            if !f.is_file() || f.name().contains('/') || f.name().len() > MAX_NAME {
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
            tracing::warn!(url = %self.shown, max_listing = max,
                "the FTP folder holds more entries than max_listing; the rest waits for later listings");
        }
        Ok(out)
    }
}
