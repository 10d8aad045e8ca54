//! FTP send: upload under a temporary name, then rename into place, never
//! over an existing file unless configured to.

use std::path::{Path, PathBuf};
use std::time::Duration;

use async_trait::async_trait;
use serde::Deserialize;
use suppaftp::tokio::AsyncRustlsFtpStream;

use super::session::{Dialer, Pool, Settings};
use crate::macros::Template;
use crate::support::names::TMP_PREFIX;
use crate::support::remote::{digest_up_to, upload_hashed};
use crate::support::secret::Secret;
use crate::{AdapterError, Body, Delivered, Outbound, TransmitError, Transmitter};

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
    #[serde(default = "crate::support::remote::defaults::file_name")]
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
    #[serde(
        default = "crate::support::remote::defaults::connect_timeout",
        with = "humantime_serde"
    )]
    pub connect_timeout: Duration,
    /// Each command's answer, and each read and write of a transfer (an
    /// idle limit: a transfer that moves no byte for this long fails).
    #[serde(default = "crate::support::remote::defaults::timeout", with = "humantime_serde")]
    pub timeout: Duration,
    /// The whole of one delivery (upload, check, rename), at most.
    #[serde(
        default = "crate::support::remote::defaults::transfer_timeout",
        with = "humantime_serde"
    )]
    pub transfer_timeout: Duration,
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
        let template = Template::parse(&self.file_name).map_err(AdapterError::Config)?;
        template
            .check_file_name_template()
            .map_err(|e| AdapterError::Config(format!("file_name {e}")))?;
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
            create_folder: self.create_folder,
        }
        .dialer()?;
        let shown = dialer.shown.clone();
        Ok(FtpTransmitter {
            overwrite: self.overwrite,
            template,
            dialer,
            pool: Pool::new(self.max_connections),
            transfer_timeout: self.transfer_timeout,
            placing: Default::default(),
            shown,
        })
    }
}

pub struct FtpTransmitter {
    overwrite: bool,
    template: Template,
    dialer: Dialer,
    pool: Pool,
    transfer_timeout: Duration,
    /// Names being put in place by this port's deliveries: two messages
    /// with the same name are never checked and renamed at once (the second
    /// would replace the first, both reported delivered).
    placing: std::sync::Mutex<std::collections::HashSet<String>>,
    shown: String,
}

impl std::fmt::Debug for FtpTransmitter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FtpTransmitter")
            .field("url", &self.shown)
            .finish_non_exhaustive()
    }
}

/// Earlier attempts whose temporary files an attempt removes, at most.
const EARLIER_ATTEMPTS: u32 = 16;

/// The temporary name of attempt `attempt` of message `id` by `port`. One
/// per attempt: a delivery whose lease expired while it still uploaded
/// never writes into its successor's file.
fn tmp_name(port: &str, id: sluice_model::MessageId, attempt: u32) -> String {
    format!("{TMP_PREFIX}{port}.{id}.{attempt}")
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
        let tmp = tmp_name(&msg.port, msg.id, msg.attempt);
        // What a killed or failed earlier attempt of this message may have
        // left (a listing would not find it: many servers hide dot files).
        for earlier in msg.attempt.saturating_sub(EARLIER_ATTEMPTS).max(1)..msg.attempt {
            let old = tmp_name(&msg.port, msg.id, earlier);
            match self
                .dialer
                .within("removing an earlier attempt's file", lent.conn.rm(old.as_str()))
                .await
            {
                Ok(_) => {}
                // Out of step or gone: not worth this delivery.
                Err(e) => return Err(TransmitError::retry(e)),
            }
        }
        let delivery = tokio::time::timeout(self.transfer_timeout, self.deliver(&mut lent.conn, &tmp, &name, body));
        match delivery.await {
            Ok(Ok(done)) => {
                self.pool.put(lent);
                Ok(done)
            }
            Ok(Err(e)) => {
                // Best effort, on the same connection if it still answers
                // (then dropped: its state is not known); what is left is
                // removed by the next attempt.
                let _ = self
                    .dialer
                    .within("removing the temporary file", lent.conn.rm(tmp.as_str()))
                    .await;
                Err(e)
            }
            Err(_) => Err(TransmitError::retry(format!(
                "delivering {}/{name}: not done within transfer_timeout ({:?})",
                self.shown, self.transfer_timeout
            ))),
        }
    }
}

/// A name held while its delivery checks and renames; let go when dropped.
struct Placing<'a> {
    names: &'a std::sync::Mutex<std::collections::HashSet<String>>,
    name: String,
}

impl Drop for Placing<'_> {
    fn drop(&mut self) {
        self.names
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .remove(&self.name);
    }
}

impl FtpTransmitter {
    /// Hold `name` for one delivery, or say that another holds it.
    fn hold(&self, name: &str) -> Result<Placing<'_>, TransmitError> {
        let mut names = self.placing.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        if !names.insert(name.to_string()) {
            return Err(TransmitError::retry(format!(
                "another message of this port is being put in place as {name} right now"
            )));
        }
        Ok(Placing {
            names: &self.placing,
            name: name.to_string(),
        })
    }

    async fn deliver(
        &self,
        ftp: &mut AsyncRustlsFtpStream,
        tmp: &str,
        name: &str,
        body: Body,
    ) -> Result<Delivered, TransmitError> {
        let d = &self.dialer;
        let shown = format!("{}/{name}", self.shown);
        let (sent, digest) = self.upload(ftp, tmp, body).await?;
        let _held = self.hold(name)?;
        if !self.overwrite {
            match d.within("SIZE", ftp.size(name)).await.map_err(TransmitError::retry)? {
                Ok(size) => {
                    // There already: this message's earlier delivery (its
                    // outcome lost), or another file.
                    if size as u64 == sent && self.digest_of(ftp, name, sent).await? == digest {
                        ftp_ok(d.within("DELE", ftp.rm(tmp)).await, "removing the temporary file")?;
                        return Ok(Delivered::AlreadyThere(shown));
                    }
                    return Err(TransmitError::retry(format!(
                        "{shown} already exists with other content (set overwrite = true to replace it)"
                    )));
                }
                // 550: no such file (what we hoped for; a server that
                // answers 550 for a file it will not say exists is taken
                // at its word).
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

    /// Upload `body` as `tmp`: the bytes sent and their SHA-256.
    async fn upload(
        &self,
        ftp: &mut AsyncRustlsFtpStream,
        tmp: &str,
        body: Body,
    ) -> Result<(u64, [u8; 32]), TransmitError> {
        let d = &self.dialer;
        let mut out = ftp_ok(
            d.within("STOR", ftp.put_with_stream(tmp)).await,
            &format!("starting the upload of {tmp}"),
        )?;
        let mut body = body;
        let (sent, digest) = upload_hashed(&mut body, &mut out, d.timeout)
            .await
            .map_err(|e| TransmitError::retry(format!("uploading {tmp} to {}: {e}", self.shown)))?;
        ftp_ok(
            d.within("finishing the upload", out.finish()).await,
            &format!("finishing the upload of {tmp}"),
        )?;
        Ok((sent, digest))
    }

    /// The SHA-256 of remote file `name`, read a block at a time, and no
    /// further than `size` bytes (its size as the server gave it): a file
    /// longer than that is not the same.
    async fn digest_of(
        &self,
        ftp: &mut AsyncRustlsFtpStream,
        name: &str,
        size: u64,
    ) -> Result<[u8; 32], TransmitError> {
        let d = &self.dialer;
        let mut stream = ftp_ok(
            d.within("RETR", ftp.retr_as_stream(name)).await,
            &format!("reading {name}"),
        )?;
        let digest = digest_up_to(&mut stream, size, d.timeout)
            .await
            .map_err(|e| TransmitError::retry(format!("reading {name} back: {e}")))?;
        // Longer than it should be: not ours; the stream is dropped unread.
        let Some(digest) = digest else { return Ok([0; 32]) };
        ftp_ok(
            d.within("finishing a download", stream.finish()).await,
            &format!("reading {name}"),
        )?;
        Ok(digest)
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
