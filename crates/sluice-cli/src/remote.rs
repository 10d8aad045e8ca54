//! The CLI over HTTP: with `--server URL`, the operator commands call a
//! node's REST API (`/api/v1`, README "REST API") instead of opening the
//! box, with a token read from an environment variable (`--token-env`), so
//! an operator needs no shell on the node. This is the client: one request
//! at a time, bodies streamed both ways, and every failure said as the
//! CLI says errors (`error[<code>]: ...`, the API's own code when it gave
//! one), naming the server, never the token.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context as _;
use bytes::Bytes;
use clap::Args;
use futures_util::StreamExt as _;
use reqwest::{Method, RequestBuilder, Response, StatusCode};
use serde_json::Value;
use tokio::io::AsyncBufReadExt as _;

/// Connecting (TCP and TLS) gives up after this.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// A request whose answer stops coming (no byte read) for this long fails:
/// a read-idle bound, not a bound on the whole answer, so a large body
/// streams for as long as it keeps coming.
pub const IDLE_TIMEOUT: Duration = Duration::from_secs(60);
/// An error answer or a JSON answer is read up to this many bytes (a page
/// of 1000 entries fits many times over).
pub const MAX_JSON: usize = 64 * 1024 * 1024;
/// A line of a bulk action's answer (one entry) is at most this long.
pub const MAX_LINE: u64 = 1024 * 1024;

/// Where the node's API is, and the credentials to use it.
#[derive(Args, Debug, Clone, Default)]
pub struct RemoteArgs {
    /// Run the command on a node through its REST API (`http://host:8470`
    /// or `https://...`) instead of opening its box here; no --config needed.
    #[arg(long, global = true, env = "SLUICE_SERVER", value_name = "URL")]
    pub server: Option<String>,
    /// The environment variable that holds the API token (never given on
    /// the command line, where other users could read it).
    #[arg(long, global = true, value_name = "NAME", default_value = "SLUICE_TOKEN")]
    pub token_env: String,
    /// A PEM CA certificate to trust for an https server (a private CA);
    /// without it, the usual public roots.
    #[arg(long, global = true, value_name = "FILE")]
    pub ca: Option<PathBuf>,
}

/// An API token: never printed (`Debug` says `***`).
struct Token(String);

impl std::fmt::Debug for Token {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("***")
    }
}

/// An error the API answered: `{"error": {"code", "message"}}` and its
/// status. Printed as every CLI error is, with the API's code.
#[derive(Debug)]
pub struct ApiError {
    pub status: StatusCode,
    pub code: String,
    pub message: String,
}

impl std::fmt::Display for ApiError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} (HTTP {})", self.message, self.status.as_u16())
    }
}

impl std::error::Error for ApiError {}

/// The node's API could not be reached, or the connection broke: not the
/// operation that failed, but the way there (`error[unreachable]`).
#[derive(Debug)]
pub struct Unreachable(String);

impl std::fmt::Display for Unreachable {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for Unreachable {}

/// A node's REST API, as one operator (one token) uses it.
#[derive(Debug)]
pub struct Remote {
    /// The base URL, without a trailing `/`.
    base: String,
    token: Token,
    client: reqwest::Client,
    /// For uploads: no read timeout, which in reqwest runs from the
    /// request's start to the answer's head (the whole upload).
    uploads: reqwest::Client,
}

impl Remote {
    /// The client for `args.server` (which must be given), with the token
    /// from `args.token_env`.
    pub fn new(args: &RemoteArgs) -> anyhow::Result<Remote> {
        let server = args.server.as_deref().unwrap_or_default().trim_end_matches('/');
        let url = reqwest::Url::parse(server).map_err(|e| {
            usage(format!(
                "--server `{server}` is not a URL ({e}): give http://HOST:PORT or https://..."
            ))
        })?;
        if !matches!(url.scheme(), "http" | "https") || url.host().is_none() {
            return Err(usage(format!(
                "--server `{server}` is not an http:// or https:// URL with a host"
            )));
        }
        if !url.username().is_empty() || url.password().is_some() || url.query().is_some() {
            return Err(usage(format!(
                "--server takes the node's address only (no user, password or query); the token comes from ${}",
                args.token_env
            )));
        }
        let token = match std::env::var(&args.token_env) {
            Ok(t) if !t.trim().is_empty() => Token(t.trim().to_string()),
            Ok(_) | Err(std::env::VarError::NotPresent) => {
                return Err(sluice_ops::OpsError::Unauthenticated(format!(
                    "no API token: set the environment variable {} (or name another with --token-env); \
                     an admin makes one with `sluice tokens create USER`",
                    args.token_env
                ))
                .into());
            }
            Err(std::env::VarError::NotUnicode(_)) => {
                return Err(usage(format!(
                    "the environment variable {} is not UTF-8",
                    args.token_env
                )));
            }
        };
        let ca = match &args.ca {
            Some(ca) => {
                let pem = std::fs::read(ca).with_context(|| format!("reading the CA certificate {}", ca.display()))?;
                Some(
                    reqwest::Certificate::from_pem(&pem).with_context(|| {
                        format!("reading the CA certificate {}: not a PEM certificate", ca.display())
                    })?,
                )
            }
            None => None,
        };
        let build = |read_timeout: Option<std::time::Duration>| {
            let mut builder = reqwest::Client::builder()
                .connect_timeout(CONNECT_TIMEOUT)
                .tcp_keepalive(IDLE_TIMEOUT)
                // A redirect is answered as an error: the token goes to no
                // other place than the one named.
                .redirect(reqwest::redirect::Policy::none())
                .user_agent(concat!("sluice/", env!("CARGO_PKG_VERSION")));
            if let Some(t) = read_timeout {
                builder = builder.read_timeout(t);
            }
            if let Some(cert) = &ca {
                builder = builder
                    .tls_built_in_root_certs(false)
                    .add_root_certificate(cert.clone());
            }
            builder.build().context("making the HTTP client")
        };
        Ok(Remote {
            base: server.to_string(),
            token,
            client: build(Some(IDLE_TIMEOUT))?,
            uploads: build(None)?,
        })
    }

    /// The server, as the user gave it (for messages).
    pub fn server(&self) -> &str {
        &self.base
    }

    fn request(&self, method: Method, path: &str) -> RequestBuilder {
        self.request_by(&self.client, method, path)
    }

    fn request_by(&self, client: &reqwest::Client, method: Method, path: &str) -> RequestBuilder {
        client
            .request(method, format!("{}{path}", self.base))
            .bearer_auth(&self.token.0)
    }

    /// Send a request; an answer other than 2xx is the API's error.
    /// `doing` says what for (`listing suspended entries`).
    async fn send(&self, request: RequestBuilder, doing: &str) -> anyhow::Result<Response> {
        let response = match request.send().await {
            Ok(r) => r,
            Err(e) => return Err(self.transport(e)).with_context(|| format!("{doing} on {}", self.base)),
        };
        let status = response.status();
        if status.is_success() {
            return Ok(response);
        }
        let location = response
            .headers()
            .get(reqwest::header::LOCATION)
            .and_then(|l| l.to_str().ok())
            .map(str::to_string);
        let text = read_capped(response, 64 * 1024).await.unwrap_or_default();
        let error = api_error(status, &text, location.as_deref());
        Err(anyhow::Error::new(error).context(format!("{doing} on {}", self.base)))
    }

    /// A transport failure in words that name the server (never the
    /// token: it travels in a header, and the URL holds none).
    fn transport(&self, e: reqwest::Error) -> anyhow::Error {
        let cause = causes(&e);
        let what = if e.is_timeout() && e.is_connect() {
            format!("no connection to {} within {} s", self.base, CONNECT_TIMEOUT.as_secs())
        } else if e.is_timeout() {
            format!("{} sent nothing for {} s", self.base, IDLE_TIMEOUT.as_secs())
        } else if e.is_connect() {
            format!("cannot connect to {}", self.base)
        } else {
            format!("the connection to {} failed", self.base)
        };
        anyhow::Error::new(Unreachable(format!("{what}: {cause}")))
    }

    /// `GET path?query` as JSON.
    pub async fn get(&self, path: &str, query: &[(&str, String)], doing: &str) -> anyhow::Result<Value> {
        let response = self.send(self.request(Method::GET, path).query(query), doing).await?;
        self.json(response, doing).await
    }

    /// `POST path` with a JSON body, answered with JSON.
    pub async fn post(&self, path: &str, body: &Value, doing: &str) -> anyhow::Result<Value> {
        let request = self
            .request(Method::POST, path)
            .header("content-type", "application/json");
        let response = self.send(request.body(body.to_string()), doing).await?;
        self.json(response, doing).await
    }

    /// `DELETE path`, answered with JSON.
    pub async fn delete(&self, path: &str, doing: &str) -> anyhow::Result<Value> {
        let response = self.send(self.request(Method::DELETE, path), doing).await?;
        self.json(response, doing).await
    }

    /// `POST path?query` with `body` streamed as the request's body
    /// (`application/octet-stream`), answered with JSON.
    pub async fn upload(
        &self,
        path: &str,
        query: &[(&str, String)],
        body: impl tokio::io::AsyncRead + Send + 'static,
        doing: &str,
    ) -> anyhow::Result<Value> {
        let stream = tokio_util::io::ReaderStream::new(body);
        let request = self
            .request_by(&self.uploads, Method::POST, path)
            .query(query)
            .header("content-type", "application/octet-stream")
            .body(reqwest::Body::wrap_stream(stream));
        let response = self.send(request, doing).await?;
        self.json(response, doing).await
    }

    /// `GET path`, its body to be read in pieces ([`Download`]).
    pub async fn download(&self, path: &str, doing: &str) -> anyhow::Result<Download> {
        let response = self.send(self.request(Method::GET, path), doing).await?;
        Ok(Download {
            size: response.content_length(),
            read: 0,
            stream: Box::pin(response.bytes_stream()),
            server: self.base.clone(),
        })
    }

    /// `POST path` with a JSON body, answered with JSON lines, read one at
    /// a time ([`Lines`]).
    pub async fn post_lines(&self, path: &str, body: &Value, doing: &str) -> anyhow::Result<Lines> {
        let request = self
            .request(Method::POST, path)
            .header("content-type", "application/json");
        let response = self.send(request.body(body.to_string()), doing).await?;
        let server = self.base.clone();
        let stream = response
            .bytes_stream()
            .map(|piece| piece.map_err(|e| std::io::Error::other(causes(&e))));
        Ok(Lines {
            reader: Box::pin(tokio::io::BufReader::new(tokio_util::io::StreamReader::new(stream))),
            server,
        })
    }

    async fn json(&self, response: Response, doing: &str) -> anyhow::Result<Value> {
        let text = read_capped(response, MAX_JSON)
            .await
            .map_err(|e| anyhow::anyhow!(e))
            .with_context(|| format!("{doing} on {}: reading the answer", self.base))?;
        serde_json::from_slice(&text).with_context(|| format!("{doing} on {}: the answer is not JSON", self.base))
    }
}

/// A flag that does not go with another, or a value that does not parse.
fn usage(message: String) -> anyhow::Error {
    sluice_ops::OpsError::InvalidArgument(message).into()
}

/// An error's causes, innermost last, as one line: `connection refused`,
/// `invalid peer certificate: UnknownIssuer`.
fn causes(e: &reqwest::Error) -> String {
    let mut parts: Vec<String> = Vec::new();
    let mut source: Option<&dyn std::error::Error> = std::error::Error::source(e);
    while let Some(s) = source {
        let text = s.to_string();
        if !parts.iter().any(|p| p.contains(&text)) {
            parts.push(text);
        }
        source = s.source();
    }
    if parts.is_empty() {
        parts.push(e.to_string());
    }
    // reqwest's own words name the URL; ours already do.
    parts.retain(|p| !p.starts_with("error sending request"));
    parts.join(": ")
}

/// The error an answer other than 2xx means: the API's, or one made from
/// the status when the answer is not the API's (a proxy, another server).
fn api_error(status: StatusCode, body: &[u8], location: Option<&str>) -> ApiError {
    let parsed: Option<(String, String)> = serde_json::from_slice::<Value>(body).ok().and_then(|v| {
        let e = v.get("error")?;
        Some((
            e.get("code")?.as_str()?.to_string(),
            e.get("message")?.as_str()?.to_string(),
        ))
    });
    if let Some((code, message)) = parsed {
        return ApiError { status, code, message };
    }
    let code = match status.as_u16() {
        400 => "invalid_argument",
        401 => "unauthenticated",
        403 => "forbidden",
        404 => "not_found",
        409 => "conflict",
        413 => "too_large",
        429 => "rate_limited",
        503 => "storage_unavailable",
        _ => "internal",
    };
    let message = if status.is_redirection() {
        format!(
            "the server answered with a redirect{} (not followed: give that address as --server)",
            location.map(|l| format!(" to {l}")).unwrap_or_default()
        )
    } else {
        let text: String = String::from_utf8_lossy(body).chars().take(200).collect();
        let text = crate::inspect::printable(text.trim()).into_owned();
        format!(
            "the server answered {status} without an API error{}",
            if text.is_empty() {
                String::new()
            } else {
                format!(": {text}")
            }
        )
    };
    ApiError {
        status,
        code: code.to_string(),
        message,
    }
}

/// The body of an answer, at most `max` bytes (more is an error).
async fn read_capped(response: Response, max: usize) -> Result<Vec<u8>, String> {
    let mut stream = response.bytes_stream();
    let mut body = Vec::new();
    while let Some(piece) = stream.next().await {
        let piece = piece.map_err(|e| causes(&e))?;
        if body.len() + piece.len() > max {
            return Err(format!("the answer is over {max} bytes"));
        }
        body.extend_from_slice(&piece);
    }
    Ok(body)
}

/// A body being downloaded.
pub struct Download {
    /// Its length, as the server announced it.
    pub size: Option<u64>,
    read: u64,
    stream: std::pin::Pin<Box<dyn futures_util::Stream<Item = reqwest::Result<Bytes>> + Send>>,
    server: String,
}

impl Download {
    /// The next piece, `None` at the end; an answer that ends short of its
    /// announced length is an error.
    pub async fn next(&mut self) -> anyhow::Result<Option<Bytes>> {
        match self.stream.next().await {
            Some(Ok(piece)) => {
                self.read += piece.len() as u64;
                Ok(Some(piece))
            }
            Some(Err(e)) => Err(anyhow::anyhow!(
                "downloading from {}: cut off after {} bytes: {}",
                self.server,
                self.read,
                causes(&e)
            )),
            None => match self.size {
                Some(size) if size != self.read => Err(anyhow::anyhow!(
                    "downloading from {}: cut off after {} of {size} bytes",
                    self.server,
                    self.read
                )),
                _ => Ok(None),
            },
        }
    }

    /// Bytes read so far.
    pub fn read(&self) -> u64 {
        self.read
    }
}

/// An answer of JSON lines, read one at a time.
pub struct Lines {
    reader: std::pin::Pin<Box<dyn tokio::io::AsyncBufRead + Send>>,
    server: String,
}

impl Lines {
    /// The next line, `None` at the end.
    pub async fn next(&mut self) -> anyhow::Result<Option<Value>> {
        use tokio::io::AsyncReadExt as _;
        let mut line = Vec::new();
        let read = (&mut self.reader)
            .take(MAX_LINE)
            .read_until(b'\n', &mut line)
            .await
            .with_context(|| format!("reading the answer of {}", self.server))?;
        if read == 0 {
            return Ok(None);
        }
        if line.last() != Some(&b'\n') {
            let why = if read as u64 == MAX_LINE {
                format!("a line is over {MAX_LINE} bytes")
            } else {
                "the answer ended in the middle of a line".to_string()
            };
            return Err(anyhow::anyhow!("reading the answer of {}: {why}", self.server));
        }
        serde_json::from_slice(&line)
            .map(Some)
            .with_context(|| format!("reading the answer of {}: a line is not JSON", self.server))
    }
}

/// Percent-encode one path segment (a user name, a token id).
pub fn segment(text: &str) -> String {
    // `.` and `..` alone would be folded away as path steps.
    let dots = text.bytes().all(|b| b == b'.');
    text.bytes()
        .map(|b| {
            if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'~') || (b == b'.' && !dots) {
                (b as char).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect()
}

/// The cursor a page of the server's answered, checked to move on from
/// `after`: a server that answers the same cursor again would make a
/// listing loop for ever.
pub fn advance<T: PartialOrd + std::fmt::Display>(after: &Option<T>, next: T) -> anyhow::Result<T> {
    match after {
        Some(a) if next <= *a => Err(anyhow::anyhow!(
            "the server's next page starts at {next}, not after {a}: stopped rather than list the same page again"
        )),
        _ => Ok(next),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_answer_that_is_not_the_apis_gets_a_code_from_its_status() {
        let e = api_error(StatusCode::FORBIDDEN, b"<html>no</html>", None);
        assert_eq!(e.code, "forbidden");
        let e = api_error(
            StatusCode::NOT_FOUND,
            br#"{"error": {"code": "nothing_matches", "message": "no suspended message matches port `x`"}}"#,
            None,
        );
        assert_eq!(
            (e.code.as_str(), e.message.as_str()),
            ("nothing_matches", "no suspended message matches port `x`")
        );
        let e = api_error(StatusCode::FOUND, b"", Some("https://elsewhere/"));
        assert!(e.message.contains("https://elsewhere/"), "{e}");
    }

    #[test]
    fn a_token_is_never_debug_printed() {
        assert_eq!(format!("{:?}", Token("sluice_x_secret".into())), "***");
    }

    #[test]
    fn path_segments_are_encoded() {
        assert_eq!(segment("ann@x.org"), "ann%40x.org");
        assert_eq!(segment("../a"), "..%2Fa");
        assert_eq!(segment(".."), "%2E%2E");
        assert_eq!(segment("."), "%2E");
    }
}
