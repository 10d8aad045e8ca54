//! Where a file-transfer URL points (`ftp://`, `sftp://`...): the scheme,
//! the host, the port, the user and the folder, checked so that nothing in
//! the URL can move the folder (`..`, `\\`) or carry a password; and a TCP
//! connection to it, each address tried within a limit.

use std::net::SocketAddr;
use std::time::Duration;

use percent_encoding::percent_decode_str;

use crate::AdapterError;

/// A parsed `scheme://user@host:port/folder`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RemoteUrl {
    pub scheme: &'static str,
    pub host: String,
    pub port: u16,
    pub user: String,
    /// The folder, as the server names it (no leading `/` means relative
    /// to the login folder; `""` is the login folder itself).
    pub folder: String,
}

impl RemoteUrl {
    /// Parse `url`, one of `schemes` (scheme, default port); `expected`
    /// says which in an error; `key` names the setting.
    pub fn parse(
        key: &str,
        url: &str,
        schemes: &[(&'static str, u16)],
        expected: &str,
    ) -> Result<RemoteUrl, AdapterError> {
        let bad =
            |why: String| AdapterError::Config(format!("{key} {}: {why}", crate::support::secret::redact_url(url)));
        // Before parsing: the parser resolves `..` away (`in/../etc` would
        // quietly become `etc`).
        let raw_path = url
            .split_once("://")
            .map_or("", |(_, rest)| rest.split_once('/').map_or("", |(_, p)| p));
        let dots = |seg: &str| {
            let seg = percent_decode_str(seg).decode_utf8_lossy().to_string();
            seg == ".." || seg == "."
        };
        if raw_path.contains('\\') {
            return Err(bad(
                "the folder may not contain `\\` (the URL parser reads it as `/`)".into()
            ));
        }
        if raw_path.split(['/', '?', '#']).any(dots) {
            return Err(bad("the folder may not contain `.` or `..` segments".into()));
        }
        let parsed = url::Url::parse(url).map_err(|e| bad(format!("not a URL: {e}")))?;
        let Some(&(scheme, default_port)) = schemes.iter().find(|(s, _)| *s == parsed.scheme()) else {
            return Err(bad(format!(
                "the scheme must be {expected}, not {}://",
                parsed.scheme()
            )));
        };
        if parsed.password().is_some() {
            return Err(bad(
                "a password in the URL would be shown wherever the URL is; give it in \
                 `password_env` or `password_file`"
                    .into(),
            ));
        }
        let host = host_of(&parsed).ok_or_else(|| bad("it names no host".into()))?;
        let user = percent_decode_str(parsed.username())
            .decode_utf8()
            .map_err(|_| bad("the user name is not UTF-8".into()))?
            .into_owned();
        if user.is_empty() {
            return Err(bad("it names no user (user@host/folder)".into()));
        }
        if parsed.query().is_some() || parsed.fragment().is_some() {
            return Err(bad("such a URL has no query or fragment".into()));
        }
        let path = percent_decode_str(parsed.path())
            .decode_utf8()
            .map_err(|_| bad("the folder is not UTF-8".into()))?;
        // `ftp://h/in` is the login folder's `in`; `ftp://h//srv/in` is
        // `/srv/in` (RFC 1738's reading: the first `/` only separates).
        let folder = path
            .strip_prefix('/')
            .unwrap_or(&path)
            .trim_end_matches('/')
            .to_string();
        if folder.split('/').any(|s| s == "..") || folder.chars().any(char::is_control) {
            return Err(bad("the folder may not contain `..` or control characters".into()));
        }
        Ok(RemoteUrl {
            scheme,
            host,
            port: parsed.port().unwrap_or(default_port),
            user,
            folder,
        })
    }

    /// The folder as one name however it is reached (the scheme left
    /// out): `host:port/folder`, with the user when the folder is relative
    /// to the login folder (each user's may differ).
    pub fn folder_key(&self) -> String {
        let host = self.host.to_ascii_lowercase();
        if self.folder.starts_with('/') {
            format!("{host}:{}{}", self.port, self.folder)
        } else {
            format!("{}@{host}:{}/~/{}", self.user, self.port, self.folder)
        }
    }

    /// `name` in the folder, as the server names it.
    pub fn path_of(&self, name: &str) -> String {
        match self.folder.as_str() {
            "" => name.to_string(),
            "/" => format!("/{name}"),
            folder => format!("{folder}/{name}"),
        }
    }
}

/// The host a URL names, as a connection takes it (an IPv6 address without
/// its brackets); `None` if it names none.
pub fn host_of(url: &url::Url) -> Option<String> {
    url.host_str()
        .filter(|h| !h.is_empty())
        .map(|h| h.trim_start_matches('[').trim_end_matches(']').to_string())
}

/// The addresses of `host:port`, resolved within `timeout`.
pub async fn resolve(host: &str, port: u16, timeout: Duration) -> Result<Vec<SocketAddr>, String> {
    let found: Vec<SocketAddr> = tokio::time::timeout(timeout, tokio::net::lookup_host((host, port)))
        .await
        .map_err(|_| format!("resolving {host}: no answer within {timeout:?}"))?
        .map_err(|err| format!("resolving {host}: {err}"))?
        .collect();
    if found.is_empty() {
        return Err(format!("resolving {host}: no address"));
    }
    Ok(found)
}

/// A TCP connection to `host:port`: its addresses resolved within
/// `timeout`, the first that takes a connection within `connect_timeout`
/// used. `shown` names the server in errors.
pub async fn connect(
    host: &str,
    port: u16,
    connect_timeout: Duration,
    timeout: Duration,
    shown: &str,
) -> Result<tokio::net::TcpStream, String> {
    let mut last = String::new();
    for addr in resolve(host, port, timeout).await? {
        match tokio::time::timeout(connect_timeout, tokio::net::TcpStream::connect(addr)).await {
            Ok(Ok(tcp)) => {
                let _ = tcp.set_nodelay(true);
                return Ok(tcp);
            }
            Ok(Err(err)) => last = format!("connecting to {shown} ({addr}): {err}"),
            Err(_) => last = format!("connecting to {shown} ({addr}): no answer within {connect_timeout:?}"),
        }
    }
    Err(last)
}

/// Defaults every file-transfer location and port shares (serde's
/// `default = "..."`).
pub mod defaults {
    use std::time::Duration;

    pub fn file_name() -> String {
        "%MessageId%".into()
    }
    /// Connecting: TCP, and what the protocol does before the first command.
    pub fn connect_timeout() -> Duration {
        Duration::from_secs(10)
    }
    /// Each command's answer, and each read or write of a transfer.
    pub fn timeout() -> Duration {
        Duration::from_secs(60)
    }
    /// One whole delivery or receipt.
    pub fn transfer_timeout() -> Duration {
        Duration::from_secs(3600)
    }
}

impl RemoteUrl {
    /// The folder and those above it, outermost first (`/srv/in/a` gives
    /// `/srv`, `/srv/in`, `/srv/in/a`): what `create_folder` makes.
    pub fn folder_and_parents(&self) -> Vec<String> {
        let mut out = Vec::new();
        let mut made = String::new();
        if self.folder.starts_with('/') {
            made.push('/');
        }
        for part in self.folder.split('/').filter(|p| !p.is_empty()) {
            if !made.is_empty() && !made.ends_with('/') {
                made.push('/');
            }
            made.push_str(part);
            out.push(made.clone());
        }
        out
    }
}

/// Copy `body` to `out` (an upload), each write within `idle`: the bytes
/// sent and their SHA-256. The error says what failed.
pub async fn upload_hashed<W: tokio::io::AsyncWrite + Unpin>(
    body: &mut crate::Body,
    out: &mut W,
    idle: Duration,
) -> Result<(u64, [u8; 32]), String> {
    use sha2::Digest;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut buf = vec![0u8; 64 * 1024];
    let mut sent = 0u64;
    let mut hash = sha2::Sha256::new();
    loop {
        let n = body
            .read(&mut buf)
            .await
            .map_err(|e| format!("reading the message body: {e}"))?;
        if n == 0 {
            break;
        }
        hash.update(&buf[..n]);
        tokio::time::timeout(idle, out.write_all(&buf[..n]))
            .await
            .map_err(|_| format!("the server took no data for {idle:?}"))?
            .map_err(|e| format!("writing: {e}"))?;
        sent += n as u64;
    }
    Ok((sent, hash.finalize().into()))
}

/// The SHA-256 of what `file` reads (a file read back), each read within
/// `idle`; `None` if it holds more than `size` bytes (then it is not the
/// same file).
pub async fn digest_up_to<R: tokio::io::AsyncRead + Unpin>(
    file: &mut R,
    size: u64,
    idle: Duration,
) -> Result<Option<[u8; 32]>, String> {
    use sha2::Digest;
    use tokio::io::AsyncReadExt;
    let mut hash = sha2::Sha256::new();
    let mut buf = vec![0u8; 64 * 1024];
    let mut read = 0u64;
    loop {
        let n = tokio::time::timeout(idle, file.read(&mut buf))
            .await
            .map_err(|_| format!("the server sent nothing for {idle:?}"))?
            .map_err(|e| format!("reading: {e}"))?;
        if n == 0 {
            return Ok(Some(hash.finalize().into()));
        }
        read += n as u64;
        if read > size {
            return Ok(None);
        }
        hash.update(&buf[..n]);
    }
}

/// The [`crate::SendAdapter`] of a file-transfer send port (FTP, SFTP):
/// the server as a shared claim, as many deliveries at once as it keeps
/// connections, the file name's macros as what it needs. The config type
/// has `url`, `file_name`, `max_connections`, and `resolve_paths` and
/// `build` of its own.
macro_rules! file_transfer_send_adapter {
    ($config:ty) => {
        impl $crate::SendAdapter for $config {
            fn resolve_paths(&mut self, base: &std::path::Path) {
                <$config>::resolve_paths(self, base);
            }
            fn build(&self) -> Result<std::sync::Arc<dyn $crate::Transmitter>, $crate::AdapterError> {
                Ok(std::sync::Arc::new(<$config>::build(self)?))
            }
            fn resources(&self) -> Vec<$crate::Claim> {
                vec![$crate::Claim::shared(
                    "url",
                    $crate::Resource::Endpoint($crate::support::secret::redact_url(&self.url)),
                )]
            }
            /// As many deliveries at once as the port keeps connections open.
            fn default_concurrency(&self) -> usize {
                self.max_connections
            }
            fn needs(&self) -> Vec<$crate::Need> {
                $crate::macros::Template::parse(&self.file_name)
                    .map(|t| t.needs("file_name"))
                    .unwrap_or_default()
            }
        }
    };
}
pub(crate) use file_transfer_send_adapter;
