//! SFTP receive: the remote-folder receiver (`support::fetch`: two
//! listings agree, claim by rename, stream in, delete after the publish)
//! over SFTP. SFTP's rename refuses to replace, so a file is never put back
//! over one that took its name.

use std::future::Future;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::time::Duration;

use async_trait::async_trait;
use russh_sftp::client::RawSftpSession;
use russh_sftp::client::error::Error as SftpError;
use russh_sftp::protocol::StatusCode;
use serde::Deserialize;

use super::guard::WideReads;
use super::session::{Conn, Dialer, Settings};
use crate::AdapterError;
use crate::support::fetch::{self, Fetcher, RemoteFolder, Renamed, Transfer};
use crate::support::poll::Candidate;
use crate::support::remote::defaults;
use crate::support::secret::Secret;

/// `type = "sftp"` receive location.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SftpReceiveConfig {
    /// `sftp://user@host:port/folder`.
    pub url: String,
    #[serde(default)]
    pub password: Option<Secret>,
    #[serde(default)]
    pub password_env: Option<String>,
    #[serde(default)]
    pub password_file: Option<PathBuf>,
    #[serde(default)]
    pub private_key_file: Option<PathBuf>,
    #[serde(default)]
    pub private_key_env: Option<String>,
    #[serde(default)]
    pub passphrase: Option<Secret>,
    #[serde(default)]
    pub passphrase_env: Option<String>,
    #[serde(default)]
    pub passphrase_file: Option<PathBuf>,
    #[serde(default)]
    pub host_key: Option<String>,
    #[serde(default)]
    pub known_hosts: Option<PathBuf>,
    #[serde(default)]
    pub accept_unknown_host_key: bool,
    /// File mask, a glob on the file name.
    #[serde(default = "fetch::defaults::mask", alias = "file_mask")]
    pub mask: String,
    #[serde(default = "fetch::defaults::poll_interval", with = "humantime_serde")]
    pub poll_interval: Duration,
    #[serde(default = "fetch::defaults::claim")]
    pub claim: bool,
    #[serde(default = "fetch::defaults::batch")]
    pub batch: usize,
    #[serde(default = "fetch::defaults::max_listing")]
    pub max_listing: usize,
    #[serde(default = "fetch::defaults::retry_after", with = "humantime_serde")]
    pub retry_after: Duration,
    #[serde(default)]
    pub include_hidden: bool,
    #[serde(default = "fetch::defaults::max_connections")]
    pub max_connections: usize,
    #[serde(default = "defaults::connect_timeout", with = "humantime_serde")]
    pub connect_timeout: Duration,
    #[serde(default = "defaults::timeout", with = "humantime_serde")]
    pub timeout: Duration,
    #[serde(default = "defaults::transfer_timeout", with = "humantime_serde")]
    pub transfer_timeout: Duration,
}

/// The properties an SFTP receive location promotes (namespace, name),
/// besides those of every location: the file's name, its size and
/// `sftp.url` (the file's URL without the user name).
pub const PROMOTES: &[(&str, &str)] = &[("file", "name"), ("file", "size"), ("sftp", "url")];

/// An SFTP receive location: the remote-folder receiver over SFTP.
pub type SftpReceiver = Fetcher<SftpFolder>;

impl SftpReceiveConfig {
    pub fn resolve_paths(&mut self, base: &Path) {
        for p in [
            &mut self.password_file,
            &mut self.private_key_file,
            &mut self.passphrase_file,
            &mut self.known_hosts,
        ]
        .into_iter()
        .flatten()
        {
            crate::support::names::resolve_in_place(base, p);
        }
    }

    /// The folder on the server, for [`crate::Resource::RemoteFiles`].
    pub fn folder_key(&self) -> String {
        crate::support::remote::RemoteUrl::parse("url", &self.url, &[("sftp", 22)], "sftp://")
            .map(|u| u.folder_key())
            .unwrap_or_else(|_| self.url.clone())
    }

    pub fn build(&self) -> Result<SftpReceiver, AdapterError> {
        let dialer = Settings {
            url: &self.url,
            password: &self.password,
            password_env: &self.password_env,
            password_file: &self.password_file,
            private_key_file: self.private_key_file.as_deref(),
            private_key_env: &self.private_key_env,
            passphrase: &self.passphrase,
            passphrase_env: &self.passphrase_env,
            passphrase_file: &self.passphrase_file,
            host_key: &self.host_key,
            known_hosts: self.known_hosts.as_deref(),
            accept_unknown_host_key: self.accept_unknown_host_key,
            connect_timeout: self.connect_timeout,
            timeout: self.timeout,
            transfer_timeout: self.transfer_timeout,
            max_connections: self.max_connections,
        }
        .dialer()?;
        let shown = dialer.shown.clone();
        Fetcher::new(
            SftpFolder { dialer },
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

/// The SFTP side of a receive location.
pub struct SftpFolder {
    dialer: Dialer,
}

fn status_is(e: &SftpError, code: StatusCode) -> bool {
    matches!(e, SftpError::Status(s) if s.status_code == code)
}

impl Transfer for WideReads<russh_sftp::client::fs::File> {
    /// Closed; SFTP has nothing more to say about a read that ended.
    fn finish(self: Box<Self>) -> Pin<Box<dyn Future<Output = Result<(), String>> + Send>> {
        Box::pin(async move {
            self.into_inner()
                .close()
                .await
                .map_err(|e| format!("closing the download: {e}"))
        })
    }
}

impl SftpFolder {
    /// Within the timeout, the error naming what was being done.
    async fn step<T>(
        &self,
        what: &str,
        fut: impl Future<Output = Result<T, SftpError>>,
    ) -> Result<Result<T, SftpError>, String> {
        self.dialer.within(what, fut).await
    }

    /// The listing channel of `conn`, opened on first use.
    async fn lister<'c>(&self, conn: &'c mut Conn) -> Result<&'c RawSftpSession, String> {
        if conn.lister.is_none() {
            let d = &self.dialer;
            let channel = d
                .within("opening a channel", conn.ssh.channel_open_session())
                .await?
                .map_err(|e| format!("opening a channel at {}: {e}", d.shown))?;
            d.within("starting SFTP", channel.request_subsystem(true, "sftp"))
                .await?
                .map_err(|e| format!("starting SFTP at {}: {e}", d.shown))?;
            let raw = RawSftpSession::new(super::guard::PacketCap::new(channel.into_stream()));
            raw.set_timeout(d.timeout.as_secs().max(1));
            d.within("starting SFTP", raw.init())
                .await?
                .map_err(|e| format!("starting SFTP at {}: {e}", d.shown))?;
            conn.lister = Some(raw);
        }
        conn.lister.as_ref().ok_or_else(|| "no listing channel".to_string())
    }
}

#[async_trait]
impl RemoteFolder for SftpFolder {
    type Connector = Dialer;
    fn connector(&self) -> &Dialer {
        &self.dialer
    }
    fn url_property(&self) -> (&'static str, &'static str) {
        ("sftp", "url")
    }
    /// `OPENDIR`, then `READDIR` a batch at a time (each batch one packet,
    /// at most `guard::MAX_PACKET` long), stopping at `max` entries.
    async fn list(&self, conn: &mut Conn, max: usize) -> Result<Vec<Candidate>, String> {
        let folder = match self.dialer.url.folder.as_str() {
            "" => ".".to_string(),
            f => f.to_string(),
        };
        let shown = self.dialer.shown.clone();
        let raw = self.lister(conn).await?;
        let handle = self
            .dialer
            .within("OPENDIR", raw.opendir(folder.clone()))
            .await?
            .map_err(|e| format!("opening the folder {folder}: {e}"))?
            .handle;
        let mut out = Vec::new();
        let mut whole = true;
        let mut seen = 0usize;
        'batches: loop {
            // Every entry counts, files or not, and every batch (an empty
            // one too): a listing of endless folders or empty answers ends.
            seen += 1;
            if seen > max {
                whole = false;
                break;
            }
            let batch = match self.dialer.within("READDIR", raw.readdir(handle.clone())).await? {
                Ok(batch) => batch,
                Err(e) if status_is(&e, StatusCode::Eof) => break,
                Err(e) => return Err(format!("reading the folder {folder}: {e}")),
            };
            for f in batch.files {
                seen += 1;
                if seen > max {
                    whole = false;
                    break 'batches;
                }
                if !f.attrs.is_regular() || f.filename.contains('/') || f.filename.len() > fetch::MAX_NAME {
                    continue;
                }
                out.push(Candidate {
                    size: f.attrs.len(),
                    modified: f.attrs.modified().ok(),
                    name: f.filename,
                });
            }
        }
        let _ = self.dialer.within("CLOSE", raw.close(handle)).await;
        if !whole {
            tracing::warn!(url = %shown, max_listing = max,
                "the SFTP folder holds more entries than max_listing; the rest waits for later listings");
        }
        Ok(out)
    }
    async fn rename(&self, conn: &mut Conn, from: &str, to: &str) -> Result<Renamed, String> {
        let url = &self.dialer.url;
        let renamed = self
            .step("RENAME", conn.sftp.rename(url.path_of(from), url.path_of(to)))
            .await?;
        match renamed {
            Ok(()) => Ok(Renamed::Done),
            Err(e) if status_is(&e, StatusCode::NoSuchFile) => Ok(Renamed::Missing),
            // Refused: is the new name taken (SFTP's rename never replaces)?
            Err(e) => match self.exists(conn, to).await {
                Ok(true) => Ok(Renamed::Taken),
                _ => Err(format!("renaming: {e}")),
            },
        }
    }
    async fn exists(&self, conn: &mut Conn, name: &str) -> Result<bool, String> {
        match self
            .step("STAT", conn.sftp.metadata(self.dialer.url.path_of(name)))
            .await?
        {
            Ok(_) => Ok(true),
            Err(e) if status_is(&e, StatusCode::NoSuchFile) => Ok(false),
            Err(e) => Err(format!("looking for a file: {e}")),
        }
    }
    async fn size(&self, conn: &mut Conn, name: &str) -> Result<Option<u64>, String> {
        self.step("STAT", conn.sftp.metadata(self.dialer.url.path_of(name)))
            .await?
            .map(|m| m.size)
            .map_err(|e| format!("STAT: {e}"))
    }
    async fn open(&self, conn: &mut Conn, name: &str) -> Result<Box<dyn Transfer>, String> {
        let file = self
            .step("OPEN", conn.sftp.open(self.dialer.url.path_of(name)))
            .await?
            .map_err(|e| format!("OPEN: {e}"))?;
        Ok(Box::new(WideReads::new(file)))
    }
    async fn remove(&self, conn: &mut Conn, name: &str) -> Result<(), String> {
        self.step("REMOVE", conn.sftp.remove_file(self.dialer.url.path_of(name)))
            .await?
            .map_err(|e| format!("deleting it: {e}"))
    }
    /// SFTP's rename refuses to replace.
    fn rename_replaces(&self) -> bool {
        false
    }
    fn timeout(&self) -> Duration {
        self.dialer.timeout
    }
}
