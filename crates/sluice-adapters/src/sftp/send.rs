//! SFTP send: upload under a temporary name, then rename into place. SFTP's
//! rename refuses to replace an existing file (OpenSSH links, then
//! unlinks), so no delivery ever replaces another unless configured to.

use std::path::{Path, PathBuf};
use std::time::Duration;

use async_trait::async_trait;
use serde::Deserialize;
use tokio::io::AsyncWriteExt;

use super::session::{Conn, Dialer, Pool, Settings};
use crate::macros::Template;
use crate::support::names::TMP_PREFIX;
use crate::support::remote::{digest_up_to, upload_hashed};
use crate::support::secret::Secret;
use crate::{AdapterError, Body, Delivered, Outbound, TransmitError, Transmitter};

fn default_max_connections() -> usize {
    4
}

/// `type = "sftp"` send port.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SftpSendConfig {
    /// `sftp://user@host:port/folder` (`//` after the host: an absolute
    /// folder; one `/`: relative to the login folder).
    pub url: String,
    #[serde(default)]
    pub password: Option<Secret>,
    #[serde(default)]
    pub password_env: Option<String>,
    #[serde(default)]
    pub password_file: Option<PathBuf>,
    /// An OpenSSH (or PEM) private key file; or its text in an environment
    /// variable (`private_key_env`).
    #[serde(default)]
    pub private_key_file: Option<PathBuf>,
    #[serde(default)]
    pub private_key_env: Option<String>,
    /// The key's passphrase, if it has one.
    #[serde(default)]
    pub passphrase: Option<Secret>,
    #[serde(default)]
    pub passphrase_env: Option<String>,
    #[serde(default)]
    pub passphrase_file: Option<PathBuf>,
    /// The server's host key, as `ssh-keyscan` prints it (`ssh-ed25519 AAAA...`).
    #[serde(default)]
    pub host_key: Option<String>,
    /// Or an OpenSSH `known_hosts` file that lists it.
    #[serde(default)]
    pub known_hosts: Option<PathBuf>,
    /// Connect to a server whatever its key: for tests only.
    #[serde(default)]
    pub accept_unknown_host_key: bool,
    #[serde(default = "crate::support::remote::defaults::file_name")]
    pub file_name: String,
    /// Replace a file of the same name. Off by default: an existing file
    /// with other content is an error (retried); one with the same content
    /// is taken as an earlier delivery of this message.
    #[serde(default)]
    pub overwrite: bool,
    /// Make the folder (and those above it) when it is missing.
    #[serde(default)]
    pub create_folder: bool,
    #[serde(
        default = "crate::support::remote::defaults::connect_timeout",
        with = "humantime_serde"
    )]
    pub connect_timeout: Duration,
    /// Each request's answer, and each write of an upload.
    #[serde(default = "crate::support::remote::defaults::timeout", with = "humantime_serde")]
    pub timeout: Duration,
    /// One whole delivery, at most.
    #[serde(
        default = "crate::support::remote::defaults::transfer_timeout",
        with = "humantime_serde"
    )]
    pub transfer_timeout: Duration,
    /// SSH connections open at once to this server (each delivery holds
    /// one); idle ones are kept for the next file.
    #[serde(default = "default_max_connections")]
    pub max_connections: usize,
}

impl SftpSendConfig {
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

    pub fn build(&self) -> Result<SftpTransmitter, AdapterError> {
        let template = Template::parse(&self.file_name).map_err(AdapterError::Config)?;
        template
            .check_file_name_template()
            .map_err(|e| AdapterError::Config(format!("file_name {e}")))?;
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
        Ok(SftpTransmitter {
            overwrite: self.overwrite,
            create_folder: self.create_folder,
            template,
            pool: Pool::new(self.max_connections),
            transfer_timeout: self.transfer_timeout,
            dialer,
        })
    }
}

pub struct SftpTransmitter {
    overwrite: bool,
    create_folder: bool,
    template: Template,
    dialer: Dialer,
    pool: Pool,
    transfer_timeout: Duration,
}

impl std::fmt::Debug for SftpTransmitter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SftpTransmitter")
            .field("url", &self.dialer.shown)
            .finish_non_exhaustive()
    }
}

/// Earlier attempts whose temporary files an attempt removes, at most.
const EARLIER_ATTEMPTS: u32 = 16;

/// Whether an SFTP error says there is no such file.
fn no_such_file(e: &russh_sftp::client::error::Error) -> bool {
    matches!(e, russh_sftp::client::error::Error::Status(s)
        if s.status_code == russh_sftp::protocol::StatusCode::NoSuchFile)
}

#[async_trait]
impl Transmitter for SftpTransmitter {
    async fn transmit(&self, msg: &Outbound, body: Body) -> Result<Delivered, TransmitError> {
        let name = self
            .template
            .render(msg.id, &msg.context)
            .map_err(TransmitError::from)?;
        let lent = self.pool.take(&self.dialer).await.map_err(TransmitError::retry)?;
        let delivery = tokio::time::timeout(self.transfer_timeout, self.deliver(&lent.conn, msg, &name, body));
        match delivery.await {
            Ok(Ok(done)) => {
                self.pool.put(lent);
                Ok(done)
            }
            // The session is in an unknown state: dropped, not reused.
            Ok(Err(e)) => Err(e),
            Err(_) => Err(TransmitError::retry(format!(
                "delivering {}/{name}: not done within transfer_timeout ({:?})",
                self.dialer.shown, self.transfer_timeout
            ))),
        }
    }
}

impl SftpTransmitter {
    async fn deliver(&self, conn: &Conn, msg: &Outbound, name: &str, body: Body) -> Result<Delivered, TransmitError> {
        let d = &self.dialer;
        let url = &d.url;
        let shown = format!("{}/{name}", d.shown);
        if self.create_folder {
            self.make_folder(conn).await?;
        }
        let sftp = &conn.sftp;
        // What a killed or failed earlier attempt of this message may have left.
        for earlier in msg.attempt.saturating_sub(EARLIER_ATTEMPTS).max(1)..msg.attempt {
            let old = url.path_of(&format!("{TMP_PREFIX}{}.{}.{earlier}", msg.port, msg.id));
            match d
                .within("removing an earlier attempt's file", sftp.remove_file(old))
                .await
            {
                Ok(Ok(())) => {}
                Ok(Err(e)) if no_such_file(&e) => {}
                Ok(Err(e)) => {
                    return Err(TransmitError::retry(format!(
                        "removing an earlier attempt's file at {}: {e}",
                        d.shown
                    )));
                }
                Err(e) => return Err(TransmitError::retry(e)),
            }
        }
        let tmp = url.path_of(&format!("{TMP_PREFIX}{}.{}.{}", msg.port, msg.id, msg.attempt));
        let target = url.path_of(name);
        let (sent, digest) = match self.upload(conn, &tmp, body).await {
            Ok(done) => done,
            Err(e) => {
                let _ = d.within("removing the temporary file", sftp.remove_file(tmp)).await;
                return Err(e);
            }
        };
        if self.overwrite {
            match d
                .within("removing the old file", sftp.remove_file(target.clone()))
                .await
            {
                Ok(Ok(())) => {}
                Ok(Err(e)) if no_such_file(&e) => {}
                Ok(Err(e)) => return Err(TransmitError::retry(format!("replacing {shown}: {e}"))),
                Err(e) => return Err(TransmitError::retry(e)),
            }
        }
        let renamed = d
            .within("renaming into place", sftp.rename(tmp.clone(), target.clone()))
            .await
            .map_err(TransmitError::retry)?;
        let Err(refused) = renamed else {
            return Ok(Delivered::To(shown));
        };
        // Refused: most likely a file of that name is there. This message's
        // earlier delivery (its outcome lost), or another file?
        let there = d
            .within("looking at the file in place", sftp.metadata(target.clone()))
            .await
            .map_err(TransmitError::retry)?;
        match there {
            Ok(meta) if meta.size == Some(sent) && self.digest_of(conn, &target, sent).await? == digest => {
                let _ = d.within("removing the temporary file", sftp.remove_file(tmp)).await;
                Ok(Delivered::AlreadyThere(shown))
            }
            Ok(_) => {
                let _ = d.within("removing the temporary file", sftp.remove_file(tmp)).await;
                Err(TransmitError::retry(format!(
                    "{shown} already exists with other content (set overwrite = true to replace it)"
                )))
            }
            Err(_) => Err(TransmitError::retry(format!(
                "renaming into place as {shown}: {refused}"
            ))),
        }
    }

    /// Each folder of the path, made where missing (an error for one that
    /// exists is expected and ignored; the upload says whether it is there).
    async fn make_folder(&self, conn: &Conn) -> Result<(), TransmitError> {
        for folder in self.dialer.url.folder_and_parents() {
            let _ = self
                .dialer
                .within("making folders", conn.sftp.create_dir(folder))
                .await
                .map_err(TransmitError::retry)?;
        }
        Ok(())
    }

    /// Upload `body` as `tmp`, synced: the bytes sent and their SHA-256.
    async fn upload(&self, conn: &Conn, tmp: &str, body: Body) -> Result<(u64, [u8; 32]), TransmitError> {
        let d = &self.dialer;
        let failed = |e: String| TransmitError::retry(format!("uploading {tmp} to {}: {e}", d.shown));
        let mut file = d
            .within("opening the upload", conn.sftp.create(tmp.to_string()))
            .await
            .map_err(TransmitError::retry)?
            .map_err(|e| failed(e.to_string()))?;
        let mut body = body;
        let (sent, digest) = upload_hashed(&mut body, &mut file, d.timeout).await.map_err(failed)?;
        d.within("finishing the upload", file.flush())
            .await
            .map_err(TransmitError::retry)?
            .map_err(|e| failed(e.to_string()))?;
        // fsync@openssh.com where the server has it.
        d.within("syncing the upload", file.sync_all())
            .await
            .map_err(TransmitError::retry)?
            .map_err(|e| failed(e.to_string()))?;
        d.within("closing the upload", file.close())
            .await
            .map_err(TransmitError::retry)?
            .map_err(|e| failed(e.to_string()))?;
        Ok((sent, digest))
    }

    /// The SHA-256 of remote file `path`, read a block at a time, no
    /// further than `size` bytes (a longer file is not the same).
    async fn digest_of(&self, conn: &Conn, path: &str, size: u64) -> Result<[u8; 32], TransmitError> {
        let d = &self.dialer;
        let file = d
            .within("opening a file to read it back", conn.sftp.open(path.to_string()))
            .await
            .map_err(TransmitError::retry)?
            .map_err(|e| TransmitError::retry(format!("reading {path} back: {e}")))?;
        let mut file = super::guard::WideReads::new(file);
        let digest = digest_up_to(&mut file, size, d.timeout)
            .await
            .map_err(|e| TransmitError::retry(format!("reading {path} back: {e}")))?;
        Ok(digest.unwrap_or([0; 32]))
    }
}
