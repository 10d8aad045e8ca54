//! FTP send: upload under a temporary name, then rename into place, never
//! over an existing file unless configured to.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use async_trait::async_trait;
use serde::Deserialize;
use suppaftp::tokio::AsyncRustlsFtpStream;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use super::session::{Dialer, Endpoint, Pool};
use crate::macros::Template;
use crate::support::secret::{Secret, redact_url};
use crate::{AdapterError, Body, Delivered, Outbound, TransmitError, Transmitter};

/// What a send port writes under while a file is on its way.
pub(crate) const TMP_PREFIX: &str = ".sluice-tmp.";

fn default_file_name() -> String {
    "%MessageId%".into()
}
fn default_connect_timeout() -> Duration {
    Duration::from_secs(10)
}
fn default_timeout() -> Duration {
    Duration::from_secs(60)
}
fn default_max_connections() -> usize {
    4
}

/// `type = "ftp"` send port.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FtpSendConfig {
    /// `ftp://user@host:port/folder`, `ftpes://` (explicit TLS) or
    /// `ftps://` (implicit TLS).
    pub url: String,
    #[serde(default)]
    pub password: Option<Secret>,
    #[serde(default)]
    pub password_env: Option<String>,
    #[serde(default)]
    pub password_file: Option<PathBuf>,
    /// File name, with macros: `%MessageId%`, `%SourceFileName%`, ...
    #[serde(default = "default_file_name")]
    pub file_name: String,
    /// Replace a file of the same name. Off by default: an existing file
    /// with other content is an error (retried); one with the same content
    /// is taken as an earlier delivery of this message.
    #[serde(default)]
    pub overwrite: bool,
    /// Make the folder (and those above it) when it is missing; otherwise
    /// a missing folder is an error, and the message waits for it.
    #[serde(default)]
    pub create_folder: bool,
    /// A PEM file of certificate authorities trusted besides the built-in
    /// roots (`ftpes://`, `ftps://`).
    #[serde(default)]
    pub tls_ca: Option<PathBuf>,
    /// Connecting (TCP, and the greeting with implicit TLS).
    #[serde(default = "default_connect_timeout", with = "humantime_serde")]
    pub connect_timeout: Duration,
    /// Each command's answer, and each read and write of a transfer (an
    /// idle limit: a transfer that moves no byte for this long fails).
    #[serde(default = "default_timeout", with = "humantime_serde")]
    pub timeout: Duration,
    /// Control connections open at once to this server, at most (each
    /// transfer holds one); idle ones are kept for the next file.
    #[serde(default = "default_max_connections")]
    pub max_connections: usize,
}

impl FtpSendConfig {
    pub fn resolve_paths(&mut self, base: &Path) {
        for p in [&mut self.password_file, &mut self.tls_ca].into_iter().flatten() {
            crate::support::names::resolve_in_place(base, p);
        }
    }

    pub fn build(&self) -> Result<FtpTransmitter, AdapterError> {
        let endpoint = Endpoint::parse("url", &self.url)?;
        let template = Template::parse(&self.file_name).map_err(AdapterError::Config)?;
        template
            .check_file_name_template()
            .map_err(|e| AdapterError::Config(format!("file_name {e}")))?;
        let password = Secret::from_config("password", &self.password, &self.password_env, &self.password_file)?;
        for (key, value) in [("connect_timeout", self.connect_timeout), ("timeout", self.timeout)] {
            if value.is_zero() || value > Duration::from_secs(3600) {
                return Err(AdapterError::Config(format!(
                    "{key} must be more than 0 and at most 1h"
                )));
            }
        }
        if !(1..=64).contains(&self.max_connections) {
            return Err(AdapterError::Config("max_connections must be 1 to 64".into()));
        }
        let shown = redact_url(&self.url);
        let dialer = Dialer::new(
            endpoint,
            password,
            self.tls_ca.as_deref(),
            self.connect_timeout,
            self.timeout,
            self.create_folder,
            shown.clone(),
        )?;
        Ok(FtpTransmitter {
            overwrite: self.overwrite,
            template,
            dialer,
            pool: Pool::new(self.max_connections),
            counter: AtomicU64::new(0),
            cleaned: tokio::sync::OnceCell::new(),
            shown: shown.trim_end_matches('/').to_string(),
        })
    }
}

pub struct FtpTransmitter {
    overwrite: bool,
    template: Template,
    dialer: Dialer,
    pool: Pool,
    counter: AtomicU64,
    /// This port's temporary files left by a run that was killed are
    /// removed once, before its first upload.
    cleaned: tokio::sync::OnceCell<()>,
    shown: String,
}

impl std::fmt::Debug for FtpTransmitter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FtpTransmitter")
            .field("url", &self.shown)
            .finish_non_exhaustive()
    }
}

#[async_trait]
impl Transmitter for FtpTransmitter {
    async fn transmit(&self, msg: &Outbound, body: Body) -> Result<Delivered, TransmitError> {
        let name = self
            .template
            .render(msg.id, &msg.context)
            .map_err(TransmitError::from)?;
        // A name is an argument of an FTP command: a line break in it would
        // end the command (suppaftp refuses it too; this says why, and that
        // retrying cannot help).
        if name.chars().any(char::is_control) {
            return Err(TransmitError::needs_edit(format!(
                "the file name {name:?} has a control character, which an FTP command cannot carry"
            )));
        }
        let mut lent = self.pool.take(&self.dialer).await.map_err(TransmitError::retry)?;
        let prefix = format!("{TMP_PREFIX}{}.", msg.port);
        // Once, and before any upload of this port starts (the others wait
        // for it): never a file another transfer is writing.
        self.cleaned
            .get_or_init(|| self.remove_stale(&mut lent.ftp, &prefix))
            .await;
        let n = self.counter.fetch_add(1, Ordering::Relaxed);
        let tmp = format!("{prefix}{}.{n}", msg.id);
        match self.deliver(&mut lent.ftp, &tmp, &name, body).await {
            Ok(done) => {
                self.pool.put(lent);
                Ok(done)
            }
            Err(e) => {
                // Best effort, on the same connection if it still answers;
                // a temporary file left is removed at the port's next start.
                let _ = self
                    .dialer
                    .within("removing the temporary file", lent.ftp.rm(tmp.as_str()))
                    .await;
                Err(e)
            }
        }
    }
}

impl FtpTransmitter {
    async fn deliver(
        &self,
        ftp: &mut AsyncRustlsFtpStream,
        tmp: &str,
        name: &str,
        body: Body,
    ) -> Result<Delivered, TransmitError> {
        let d = &self.dialer;
        let shown = format!("{}/{name}", self.shown);
        let sent = self.upload(ftp, tmp, body).await?;
        if !self.overwrite {
            match d.within("SIZE", ftp.size(name)).await.map_err(TransmitError::retry)? {
                Ok(size) => {
                    // There already: this message's earlier delivery (its
                    // outcome lost), or another file.
                    if size as u64 == sent && self.same_content(ftp, tmp, name).await? {
                        ftp_ok(d.within("DELE", ftp.rm(tmp)).await, "removing the temporary file")?;
                        return Ok(Delivered::AlreadyThere(shown));
                    }
                    return Err(TransmitError::retry(format!(
                        "{shown} already exists with other content (set overwrite = true to replace it)"
                    )));
                }
                // 550: no such file (what we hoped for).
                Err(suppaftp::FtpError::UnexpectedResponse(r)) if r.status == suppaftp::Status::FileUnavailable => {}
                Err(e) => {
                    return Err(TransmitError::retry(format!(
                        "cannot tell whether {shown} exists (SIZE: {e}); set overwrite = true to skip the check"
                    )));
                }
            }
        }
        ftp_ok(
            d.within("RNFR/RNTO", ftp.rename(tmp, name)).await,
            &format!("renaming into place as {shown}"),
        )?;
        Ok(Delivered::To(shown))
    }

    /// Upload `body` as `tmp`; the bytes sent.
    async fn upload(&self, ftp: &mut AsyncRustlsFtpStream, tmp: &str, body: Body) -> Result<u64, TransmitError> {
        let d = &self.dialer;
        let mut out = ftp_ok(
            d.within("STOR", ftp.put_with_stream(tmp)).await,
            &format!("starting the upload of {tmp}"),
        )?;
        let mut body = body;
        let mut buf = vec![0u8; 64 * 1024];
        let mut sent = 0u64;
        loop {
            let n = body
                .read(&mut buf)
                .await
                .map_err(|e| TransmitError::retry(format!("reading the message body: {e}")))?;
            if n == 0 {
                break;
            }
            d.within("writing the upload", out.write_all(&buf[..n]))
                .await
                .map_err(TransmitError::retry)?
                .map_err(|e| TransmitError::retry(format!("uploading {tmp} to {}: {e}", self.shown)))?;
            sent += n as u64;
        }
        ftp_ok(
            d.within("finishing the upload", out.finish()).await,
            &format!("finishing the upload of {tmp}"),
        )?;
        Ok(sent)
    }

    /// Whether remote files `a` and `b` have the same bytes, read a block at
    /// a time (one after the other: one data connection at a time).
    async fn same_content(&self, ftp: &mut AsyncRustlsFtpStream, a: &str, b: &str) -> Result<bool, TransmitError> {
        // Compared by their CRC-32: reading both at once would need two
        // data connections on one control connection.
        let mut sums = [0u32; 2];
        for (sum, name) in sums.iter_mut().zip([a, b]) {
            *sum = self.checksum(ftp, name).await?;
        }
        Ok(sums[0] == sums[1])
    }

    async fn checksum(&self, ftp: &mut AsyncRustlsFtpStream, name: &str) -> Result<u32, TransmitError> {
        let d = &self.dialer;
        let mut stream = ftp_ok(
            d.within("RETR", ftp.retr_as_stream(name)).await,
            &format!("reading {name}"),
        )?;
        let mut hasher = crc32fast::Hasher::new();
        let mut buf = vec![0u8; 64 * 1024];
        loop {
            let n = d
                .within("reading", stream.read(&mut buf))
                .await
                .map_err(TransmitError::retry)?
                .map_err(|e| TransmitError::retry(format!("reading {name} back: {e}")))?;
            if n == 0 {
                break;
            }
            hasher.update(&buf[..n]);
        }
        ftp_ok(
            d.within("finishing a download", stream.finish()).await,
            &format!("reading {name}"),
        )?;
        Ok(hasher.finalize())
    }

    /// This port's temporary files in the folder, left by a run that was
    /// killed mid-upload (other ports' are theirs to clean).
    async fn remove_stale(&self, ftp: &mut AsyncRustlsFtpStream, prefix: &str) {
        let d = &self.dialer;
        let names = match d.within("NLST", ftp.nlst(None)).await {
            Ok(Ok(names)) => names,
            Ok(Err(e)) => {
                tracing::warn!(url = %self.shown, error = %e, "cannot list the folder to remove stale temporary files");
                return;
            }
            Err(e) => {
                tracing::warn!(url = %self.shown, error = %e, "cannot list the folder to remove stale temporary files");
                return;
            }
        };
        for name in names {
            // Some servers list paths: the name is what follows the last `/`.
            let base = name.rsplit('/').next().unwrap_or(&name).to_string();
            if base.starts_with(prefix)
                && let Err(e) = ftp_ok(
                    d.within("DELE", ftp.rm(base.as_str())).await,
                    "removing a stale temporary file",
                )
            {
                tracing::warn!(url = %self.shown, file = %base, error = %e, "cannot remove a stale temporary file");
            }
        }
    }
}

/// A step's outcome: a timeout or the server's refusal, as a retryable
/// failure saying what was being done.
fn ftp_ok<T>(r: Result<suppaftp::FtpResult<T>, String>, doing: &str) -> Result<T, TransmitError> {
    match r {
        Ok(Ok(v)) => Ok(v),
        Ok(Err(e)) => Err(TransmitError::retry(format!("{doing}: {e}"))),
        Err(e) => Err(TransmitError::retry(e)),
    }
}
