//! One SFTP session: an SSH connection to the server whose host key was
//! checked, logged in with a key or a password, the `sftp` subsystem
//! started; and a bounded pool of them.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use russh::client::{self, AuthResult};
use russh::keys::{HashAlg, PrivateKey, PrivateKeyWithHashAlg, PublicKey};
use russh_sftp::client::SftpSession;

use crate::AdapterError;
use crate::support::remote::{RemoteUrl, connect};
use crate::support::secret::{Secret, redact_url};

/// How the server's host key is checked.
#[derive(Clone)]
pub(crate) enum HostKey {
    /// This key, and no other (`host_key = "ssh-ed25519 AAAA..."`).
    Pinned(PublicKey),
    /// A key an OpenSSH `known_hosts` file lists for the host and port.
    KnownHosts(PathBuf),
    /// Any key (`accept_unknown_host_key = true`): for tests only.
    Any,
}

/// How to log in.
#[derive(Clone)]
pub(crate) enum Login {
    Key(Arc<PrivateKey>),
    Password(Secret),
}

/// What every SFTP location and port configures about its server, as the
/// configuration gives it: checked into a [`Dialer`].
pub(crate) struct Settings<'a> {
    pub url: &'a str,
    pub password: &'a Option<Secret>,
    pub password_env: &'a Option<String>,
    pub password_file: &'a Option<PathBuf>,
    pub private_key_file: Option<&'a Path>,
    pub private_key_env: &'a Option<String>,
    pub passphrase: &'a Option<Secret>,
    pub passphrase_env: &'a Option<String>,
    pub passphrase_file: &'a Option<PathBuf>,
    pub host_key: &'a Option<String>,
    pub known_hosts: Option<&'a Path>,
    pub accept_unknown_host_key: bool,
    pub connect_timeout: Duration,
    pub timeout: Duration,
    pub transfer_timeout: Duration,
    pub max_connections: usize,
}

impl Settings<'_> {
    pub fn dialer(&self) -> Result<Dialer, AdapterError> {
        let url = RemoteUrl::parse("url", self.url, &[("sftp", 22)], "sftp://")?;
        let bad = |m: String| AdapterError::Config(m);
        for (key, value, most) in [
            ("connect_timeout", self.connect_timeout, 3600),
            ("timeout", self.timeout, 3600),
            ("transfer_timeout", self.transfer_timeout, 24 * 3600),
        ] {
            if value < Duration::from_secs(1) || value > Duration::from_secs(most) {
                return Err(bad(format!("{key} must be at least 1s and at most {}h", most / 3600)));
            }
        }
        if !(1..=64).contains(&self.max_connections) {
            return Err(bad("max_connections must be 1 to 64".into()));
        }
        let host_key = match (self.host_key, self.known_hosts, self.accept_unknown_host_key) {
            (Some(text), None, false) => HostKey::Pinned(PublicKey::from_openssh(text.trim()).map_err(|e| {
                bad(format!(
                    "host_key: not an OpenSSH public key (`ssh-ed25519 AAAA...`): {e}"
                ))
            })?),
            (None, Some(path), false) => {
                std::fs::metadata(path)
                    .map_err(|e| bad(format!("known_hosts: cannot read {}: {e}", path.display())))?;
                HostKey::KnownHosts(path.to_path_buf())
            }
            (None, None, true) => {
                tracing::warn!(url = %redact_url(self.url),
                    "accept_unknown_host_key is on: any server answering at this address is trusted (for tests only)");
                HostKey::Any
            }
            (None, None, false) => {
                return Err(bad(
                    "give the server's host key (`host_key = \"ssh-ed25519 AAAA...\"`, as `ssh-keyscan` prints it) \
                     or a `known_hosts` file: an unknown key is refused"
                        .into(),
                ));
            }
            _ => {
                return Err(bad(
                    "give one of `host_key`, `known_hosts` and `accept_unknown_host_key = true`".into(),
                ));
            }
        };
        let has_password = self.password.is_some() || self.password_env.is_some() || self.password_file.is_some();
        let login = match (self.private_key_file, self.private_key_env, has_password) {
            (Some(_), Some(_), _) | (Some(_), _, true) | (_, Some(_), true) => {
                return Err(bad(
                    "give a private key (`private_key_file` or `private_key_env`) or a password, not both".into(),
                ));
            }
            (None, None, false) => {
                return Err(bad(
                    "give a private key (`private_key_file` or `private_key_env`) or a password \
                     (`password_env`, `password_file` or `password`)"
                        .into(),
                ));
            }
            (None, None, true) => Login::Password(Secret::from_config(
                "password",
                self.password,
                self.password_env,
                self.password_file,
            )?),
            (file, env, false) => {
                let (what, text) = if let Some(path) = file {
                    (
                        "private_key_file",
                        std::fs::read_to_string(path)
                            .map_err(|e| bad(format!("private_key_file: cannot read {}: {e}", path.display())))?,
                    )
                } else {
                    let var = env.as_deref().unwrap_or_default();
                    (
                        "private_key_env",
                        std::env::var(var)
                            .map_err(|_| bad(format!("private_key_env: the environment variable {var} is not set")))?,
                    )
                };
                let has_passphrase =
                    self.passphrase.is_some() || self.passphrase_env.is_some() || self.passphrase_file.is_some();
                let passphrase = if has_passphrase {
                    Some(Secret::from_config(
                        "passphrase",
                        self.passphrase,
                        self.passphrase_env,
                        self.passphrase_file,
                    )?)
                } else {
                    None
                };
                let key = russh::keys::decode_secret_key(&text, passphrase.as_ref().map(Secret::expose))
                    // The error names no part of the key.
                    .map_err(|e| bad(format!("{what}: cannot read the private key: {e}")))?;
                Login::Key(Arc::new(key))
            }
        };
        Ok(Dialer {
            shown: redact_url(self.url).trim_end_matches('/').to_string(),
            url,
            host_key,
            login,
            connect_timeout: self.connect_timeout,
            timeout: self.timeout,
        })
    }
}

/// How to reach and log in to the server, and how long each step may take.
#[derive(Clone)]
pub struct Dialer {
    pub(crate) url: RemoteUrl,
    host_key: HostKey,
    login: Login,
    pub connect_timeout: Duration,
    pub timeout: Duration,
    /// What is shown of the server in errors and logs (no secret).
    pub shown: String,
}

/// An SSH connection with its SFTP session (and, once a location listed
/// its folder, a second SFTP channel for listings read a batch at a time).
pub struct Conn {
    pub sftp: SftpSession,
    pub lister: Option<russh_sftp::client::RawSftpSession>,
    pub ssh: client::Handle<Checker>,
}

/// Checks the server's host key as configured; says why it refused.
pub struct Checker {
    host_key: HostKey,
    host: String,
    port: u16,
    refused: Arc<Mutex<Option<String>>>,
}

impl client::Handler for Checker {
    type Error = russh::Error;

    async fn check_server_key(&mut self, key: &PublicKey) -> Result<bool, Self::Error> {
        let fingerprint = key.fingerprint(HashAlg::Sha256);
        let why = match &self.host_key {
            HostKey::Any => None,
            HostKey::Pinned(expected) if expected.key_data() == key.key_data() => None,
            HostKey::Pinned(_) => Some(format!(
                "the server's host key ({} {fingerprint}) is not the configured `host_key`",
                key.algorithm()
            )),
            HostKey::KnownHosts(path) => match russh::keys::check_known_hosts_path(&self.host, self.port, key, path) {
                Ok(true) => None,
                Ok(false) => Some(format!(
                    "the server's host key ({} {fingerprint}) is not in {} for this host and port",
                    key.algorithm(),
                    path.display()
                )),
                Err(e) => Some(format!(
                    "the server's host key ({} {fingerprint}) does not match {}: {e}",
                    key.algorithm(),
                    path.display()
                )),
            },
        };
        let ok = why.is_none();
        *self.refused.lock().unwrap_or_else(PoisonError::into_inner) = why;
        Ok(ok)
    }
}

impl Dialer {
    /// `fut`, or an error naming `what` when it takes longer than `timeout`.
    pub async fn within<F: std::future::Future>(&self, what: &str, fut: F) -> Result<F::Output, String> {
        tokio::time::timeout(self.timeout, fut)
            .await
            .map_err(|_| format!("{what} at {}: no answer within {:?}", self.shown, self.timeout))
    }

    /// A new session: connected, the host key checked, logged in, SFTP.
    pub async fn dial(&self) -> Result<Conn, String> {
        let u = &self.url;
        let tcp = connect(&u.host, u.port, self.connect_timeout, self.timeout, &self.shown).await?;
        let refused = Arc::new(Mutex::new(None));
        let checker = Checker {
            host_key: self.host_key.clone(),
            host: u.host.clone(),
            port: u.port,
            refused: refused.clone(),
        };
        let config = Arc::new(client::Config {
            // A server that falls silent is noticed: the connection ends.
            inactivity_timeout: Some(self.timeout.saturating_mul(2)),
            keepalive_interval: Some(self.timeout / 2),
            nodelay: true,
            ..Default::default()
        });
        let connecting = self
            .within("the SSH handshake", client::connect_stream(config, tcp, checker))
            .await?;
        let mut ssh = match connecting {
            Ok(ssh) => ssh,
            Err(e) => {
                let why = refused.lock().unwrap_or_else(PoisonError::into_inner).take();
                return Err(match why {
                    Some(why) => format!("connecting to {}: {why}; refused", self.shown),
                    None => format!("connecting to {}: {e}", self.shown),
                });
            }
        };
        let step = |what: &'static str| move |e: russh::Error| format!("{what} at {}: {e}", self.shown);
        let auth = match &self.login {
            Login::Key(key) => {
                let hash = self
                    .within("asking for the signature algorithms", ssh.best_supported_rsa_hash())
                    .await?
                    .map_err(step("asking for the signature algorithms"))?
                    .flatten();
                let key = PrivateKeyWithHashAlg::new(key.clone(), hash);
                self.within("logging in", ssh.authenticate_publickey(u.user.as_str(), key))
                    .await?
                    .map_err(step("logging in"))?
            }
            Login::Password(password) => self
                .within(
                    "logging in",
                    ssh.authenticate_password(u.user.as_str(), password.expose()),
                )
                .await?
                .map_err(step("logging in"))?,
        };
        if !matches!(auth, AuthResult::Success) {
            return Err(format!("logging in to {} as {}: refused", self.shown, u.user));
        }
        let channel = self
            .within("opening a channel", ssh.channel_open_session())
            .await?
            .map_err(step("opening a channel"))?;
        self.within("starting SFTP", channel.request_subsystem(true, "sftp"))
            .await?
            .map_err(step("starting SFTP"))?;
        let sftp = self
            .within(
                "starting SFTP",
                SftpSession::new(super::guard::PacketCap::new(channel.into_stream())),
            )
            .await?
            .map_err(|e| format!("starting SFTP at {}: {e}", self.shown))?;
        sftp.set_timeout(self.timeout.as_secs().max(1));
        Ok(Conn {
            sftp,
            lister: None,
            ssh,
        })
    }
}

/// The pool of an SFTP location or port, checked with a `REALPATH` of
/// `.` before reuse.
pub(crate) type Pool = crate::support::pool::Pool<Conn>;

#[async_trait::async_trait]
impl crate::support::pool::Connector for Dialer {
    type Conn = Conn;
    async fn dial(&self) -> Result<Conn, String> {
        Dialer::dial(self).await
    }
    async fn alive(&self, conn: &mut Conn) -> bool {
        matches!(self.within("REALPATH", conn.sftp.canonicalize(".")).await, Ok(Ok(_)))
    }
}
