//! One FTP control connection: where to (the URL), how (TLS), logged in and
//! in the folder, binary; and a bounded pool of them.

use std::time::Duration;

use suppaftp::Status;
use suppaftp::tokio::{AsyncRustlsConnector, AsyncRustlsFtpStream};
use suppaftp::types::FileType;

use crate::AdapterError;
use crate::support::remote::{RemoteUrl, connect, resolve};
use crate::support::secret::Secret;

/// How the control (and data) connections are protected.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Protection {
    /// `ftp://`: nothing.
    Plain,
    /// `ftpes://`: `AUTH TLS` after connecting, data connections protected.
    Explicit,
    /// `ftps://`: TLS from the first byte.
    Implicit,
}

/// Where an FTP URL points: `ftp[e]s://user@host:port/folder`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Endpoint {
    pub protection: Protection,
    pub host: String,
    pub port: u16,
    pub user: String,
    /// The folder, as the server names it (no leading `/` means relative
    /// to the login folder; `""` is the login folder itself).
    pub folder: String,
    url: RemoteUrl,
}

impl Endpoint {
    /// Parse `url`; `key` names the setting in errors.
    pub fn parse(key: &str, url: &str) -> Result<Endpoint, AdapterError> {
        let parsed = RemoteUrl::parse(
            key,
            url,
            &[("ftp", 21), ("ftpes", 21), ("ftps", 990)],
            "ftp:// (plain), ftpes:// (explicit TLS) or ftps:// (implicit TLS)",
        )?;
        let protection = match parsed.scheme {
            "ftpes" => Protection::Explicit,
            "ftps" => Protection::Implicit,
            _ => Protection::Plain,
        };
        Ok(Endpoint {
            protection,
            host: parsed.host.clone(),
            port: parsed.port,
            user: parsed.user.clone(),
            folder: parsed.folder.clone(),
            url: parsed,
        })
    }

    /// [`RemoteUrl::folder_key`].
    pub fn folder_key(&self) -> String {
        self.url.folder_key()
    }
}

/// How to reach and log in to the server, and how long each step may take.
#[derive(Clone)]
pub struct Dialer {
    pub(crate) endpoint: Endpoint,
    pub password: Secret,
    /// Each control connection makes its own connector from these
    /// (`support::tls::own_sessions`).
    pub tls: Option<std::sync::Arc<tokio_rustls::rustls::ClientConfig>>,
    pub connect_timeout: Duration,
    pub timeout: Duration,
    pub create_folder: bool,
    /// What is shown of the server in errors and logs (no secret).
    pub shown: String,
}

/// What every FTP location and port configures about its server, as the
/// configuration gives it: checked into a [`Dialer`].
pub(crate) struct Settings<'a> {
    pub url: &'a str,
    pub password: &'a Option<Secret>,
    pub password_env: &'a Option<String>,
    pub password_file: &'a Option<std::path::PathBuf>,
    pub tls_ca: Option<&'a std::path::Path>,
    pub connect_timeout: Duration,
    pub timeout: Duration,
    pub transfer_timeout: Duration,
    pub max_connections: usize,
    pub create_folder: bool,
}

impl Settings<'_> {
    /// The settings checked (the URL, the password, each timeout and the
    /// connection count within bounds, the TLS roots read).
    pub fn dialer(&self) -> Result<Dialer, AdapterError> {
        let endpoint = Endpoint::parse("url", self.url)?;
        let password = Secret::from_config("password", self.password, self.password_env, self.password_file)?;
        for (key, value, most) in [
            ("connect_timeout", self.connect_timeout, 3600),
            ("timeout", self.timeout, 3600),
            ("transfer_timeout", self.transfer_timeout, 24 * 3600),
        ] {
            if value.is_zero() || value > Duration::from_secs(most) {
                return Err(AdapterError::Config(format!(
                    "{key} must be more than 0 and at most {}h",
                    most / 3600
                )));
            }
        }
        if !(1..=64).contains(&self.max_connections) {
            return Err(AdapterError::Config("max_connections must be 1 to 64".into()));
        }
        let tls = match endpoint.protection {
            Protection::Plain => None,
            Protection::Explicit | Protection::Implicit => Some(crate::support::tls::client_config(self.tls_ca)?),
        };
        Ok(Dialer {
            endpoint,
            password,
            tls,
            connect_timeout: self.connect_timeout,
            timeout: self.timeout,
            create_folder: self.create_folder,
            shown: crate::support::secret::redact_url(self.url)
                .trim_end_matches('/')
                .to_string(),
        })
    }
}

impl Dialer {
    /// A new session: connected, protected as configured, logged in, in
    /// the folder (made first with `create_folder`), binary.
    pub async fn dial(&self) -> Result<AsyncRustlsFtpStream, String> {
        let e = &self.endpoint;
        let step = |what: &'static str| move |err: suppaftp::FtpError| format!("{what} at {}: {err}", self.shown);
        let mut ftp = match (&self.tls, e.protection) {
            (Some(tls), Protection::Implicit) => {
                let addrs = resolve(&e.host, e.port, self.timeout).await?;
                let connecting = AsyncRustlsFtpStream::connect_secure_implicit(
                    &addrs[..],
                    AsyncRustlsConnector::from(crate::support::tls::own_sessions(tls)),
                    &e.host,
                );
                // Connect, handshake and greeting in one call: they share
                // one limit, the two timeouts together.
                let limit = self.connect_timeout.saturating_add(self.timeout);
                let mut ftp = tokio::time::timeout(limit, connecting)
                    .await
                    .map_err(|_| format!("connecting to {}: no greeting within {limit:?}", self.shown))?
                    .map_err(step("connecting with TLS"))?;
                // What explicit TLS does after `AUTH TLS`: the data
                // connections are protected too.
                for command in ["PBSZ 0", "PROT P"] {
                    self.within(command, ftp.custom_command(command, &[Status::CommandOk]))
                        .await?
                        .map_err(step("protecting the data connections"))?;
                }
                ftp
            }
            _ => {
                let tcp = connect(&e.host, e.port, self.connect_timeout, self.timeout, &self.shown).await?;
                let ftp = self
                    .within("the greeting", AsyncRustlsFtpStream::connect_with_stream(tcp))
                    .await?
                    .map_err(step("the greeting"))?;
                match (&self.tls, e.protection) {
                    (Some(tls), Protection::Explicit) => self
                        .within(
                            "AUTH TLS",
                            ftp.into_secure(
                                AsyncRustlsConnector::from(crate::support::tls::own_sessions(tls)),
                                &e.host,
                            ),
                        )
                        .await?
                        .map_err(step("AUTH TLS"))?,
                    _ => ftp,
                }
            }
        };
        // Passive mode; the data connection goes to the address of the
        // control connection, whatever address the server's answer names
        // (a server cannot point the client at another host).
        ftp.set_passive_nat_workaround(true);
        self.within("logging in", ftp.login(e.user.as_str(), self.password.expose()))
            .await?
            .map_err(|err| format!("logging in to {} as {}: {err}", self.shown, e.user))?;
        self.within("TYPE I", ftp.transfer_type(FileType::Binary))
            .await?
            .map_err(step("TYPE I"))?;
        if !e.folder.is_empty() {
            if self.create_folder {
                self.make_folder(&mut ftp).await?;
            }
            self.within("changing folder", ftp.cwd(e.folder.as_str()))
                .await?
                .map_err(|err| format!("changing to folder {} at {}: {err}", e.folder, self.shown))?;
        }
        Ok(ftp)
    }

    /// Each folder of the path, made where missing (an error to make one
    /// that exists is expected and ignored; the `CWD` after says whether it
    /// is there).
    async fn make_folder(&self, ftp: &mut AsyncRustlsFtpStream) -> Result<(), String> {
        for folder in self.endpoint.url.folder_and_parents() {
            let _ = self.within("making folders", ftp.mkdir(folder.as_str())).await?;
        }
        Ok(())
    }

    /// `fut`, or an error naming `what` when it takes longer than `timeout`.
    pub async fn within<F: std::future::Future>(&self, what: &str, fut: F) -> Result<F::Output, String> {
        tokio::time::timeout(self.timeout, fut)
            .await
            .map_err(|_| format!("{what} at {}: no answer within {:?}", self.shown, self.timeout))
    }
}

/// The pool of an FTP location or port: control connections, checked
/// with `NOOP` before reuse.
pub(crate) type Pool = crate::support::pool::Pool<AsyncRustlsFtpStream>;

#[async_trait::async_trait]
impl crate::support::pool::Connector for Dialer {
    type Conn = AsyncRustlsFtpStream;
    async fn dial(&self) -> Result<AsyncRustlsFtpStream, String> {
        Dialer::dial(self).await
    }
    async fn alive(&self, ftp: &mut AsyncRustlsFtpStream) -> bool {
        matches!(self.within("NOOP", ftp.noop()).await, Ok(Ok(())))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_name_the_protection_the_user_and_the_folder() {
        let e = Endpoint::parse("url", "ftpes://pa%40rtner@ftp.example.com/in/orders/").unwrap();
        assert_eq!(e.protection, Protection::Explicit);
        assert_eq!((e.host.as_str(), e.port), ("ftp.example.com", 21));
        assert_eq!(e.user, "pa@rtner");
        assert_eq!(e.folder, "in/orders");
        let e = Endpoint::parse("url", "ftps://u@10.0.0.1//srv/in").unwrap();
        assert_eq!(
            (e.protection, e.port, e.folder.as_str()),
            (Protection::Implicit, 990, "/srv/in")
        );
        let e = Endpoint::parse("url", "ftp://u@[::1]:2121").unwrap();
        assert_eq!((e.host.as_str(), e.port, e.folder.as_str()), ("::1", 2121, ""));
        for (url, why) in [
            ("ftp://u:secret@h/in", "password in the URL"),
            ("sftp://u@h/in", "the scheme must be"),
            ("ftp://h/in", "names no user"),
            ("ftp://u@h/in/../etc", "`..`"),
            ("ftp://u@h/in/%2E%2E/etc", "`..`"),
            ("ftp://u@h/in\\..\\etc", "`\\`"),
            ("ftp://u@h/in?x=1", "no query"),
        ] {
            let e = Endpoint::parse("url", url).unwrap_err().to_string();
            assert!(e.contains(why), "{url}: {e}");
            assert!(!e.contains("secret"), "{e}");
        }
    }
}
