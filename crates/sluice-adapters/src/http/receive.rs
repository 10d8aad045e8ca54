//! HTTP receive location, one-way or request-response, HTTP/1.1 and
//! HTTP/2, over TLS (rustls) when `tls` is set.
//!
//! ```toml
//! adapter = { type = "http", address = "127.0.0.1:8480", path = "/orders",
//!             max_body = "1GiB", promote_headers = ["x-customer"],
//!             auth = { type = "bearer", token_env = "ORDERS_TOKEN" } }
//! ```
//!
//! `POST` (or `PUT`) to `path` streams the request body into the box;
//! `202 Accepted` with the message id is sent once the message is durably
//! published, never before. `Content-Encoding: gzip` / `zstd` is decoded on
//! the way in (`decode = false` keeps it as sent), with a cap on the decoded
//! size. Method, path, query, content type and the chosen headers are
//! promoted (`http.method`, `http.path`, `http.query`, `http.content_type`,
//! `http.header.<name>`).
//!
//! Answers: 202 published; 400 a body that cannot be decoded (truncated or
//! corrupt gzip...) or that the receive pipeline refuses; 401 missing or
//! wrong credentials; 404 another path; 405 another method; 408 a client
//! that stops sending for `idle_timeout`; 413 a body over `max_body` or
//! decoding to more than `max_decoded`; 503 the box cannot store it now
//! (retry). Nothing is published unless the whole body arrived.
//!
//! `mode = "request-response"`: each request is published with `reply.to =
//! "reply:<location>"` and the client waits for the message routed back to
//! it (a solicit-response send port's response, carrying `correlation.id`),
//! whose body is streamed to it with the response's `http.status`,
//! `http.content_type` and `http.content_encoding`. No response within
//! `response_timeout`: `504` with a trace of where the request is (queued
//! for whom, last error, suspended why), also logged. A request no
//! subscriber takes: `502` at once (it is suspended, "no subscriber").
//!
//! `tls = { cert = "cert.pem", key = "key.pem" }` serves HTTPS (HTTP/2 by
//! ALPN); the handshake must finish within `header_timeout`.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context as TaskContext, Poll};
use std::time::Duration;

use async_trait::async_trait;
use axum::extract::Request;
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use futures::{Stream, StreamExt};
use serde::Deserialize;
use sluice_model::MessageId;
use sluice_pipeline::ByteSize;
use tokio::io::{AsyncRead, ReadBuf};
use tokio_util::io::StreamReader;

use super::reply::{Reply, ReplyStream, ReplyTransmitter, Waiting};
use crate::{AdapterError, Body, REPLY_TO, ReceiveContext, Source, Transmitter, reply_subscriber};

fn default_path() -> String {
    "/".into()
}
fn default_methods() -> Vec<String> {
    vec!["POST".into(), "PUT".into()]
}
fn default_max() -> ByteSize {
    ByteSize(1 << 30)
}
fn default_true() -> bool {
    true
}
fn default_header_timeout() -> Duration {
    Duration::from_secs(30)
}
fn default_idle_timeout() -> Duration {
    Duration::from_secs(60)
}
fn default_response_timeout() -> Duration {
    Duration::from_secs(60)
}

/// One-way (`202` once published) or request-response (the answer is the
/// message routed back).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum ReceiveMode {
    #[default]
    OneWay,
    RequestResponse,
}

/// HTTPS: the server's certificate chain and private key, PEM files.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ServerTls {
    pub cert: PathBuf,
    pub key: PathBuf,
}

/// Who may post: `{ type = "none" }` (default), `{ type = "basic", user =
/// "u", password_env = "VAR" }` or `{ type = "bearer", token_env = "VAR" }`
/// (`password` / `token` in the file work too; `_env` keeps them out of it).
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(tag = "type", rename_all = "lowercase", deny_unknown_fields)]
pub enum HttpAuth {
    #[default]
    None,
    Basic {
        user: String,
        #[serde(default)]
        password: Option<String>,
        #[serde(default)]
        password_env: Option<String>,
    },
    Bearer {
        #[serde(default)]
        token: Option<String>,
        #[serde(default)]
        token_env: Option<String>,
    },
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HttpReceiveConfig {
    /// Address and port to listen on.
    pub address: SocketAddr,
    /// The one path this location answers (`/` by default).
    #[serde(default = "default_path")]
    pub path: String,
    #[serde(default = "default_methods")]
    pub methods: Vec<String>,
    /// Most bytes of request body, as sent.
    #[serde(default = "default_max")]
    pub max_body: ByteSize,
    /// Decode `Content-Encoding: gzip` / `zstd` on the way in.
    #[serde(default = "default_true")]
    pub decode: bool,
    /// Most bytes a body may decode to.
    #[serde(default = "default_max")]
    pub max_decoded: ByteSize,
    /// Request headers promoted as `http.header.<lower-case name>`.
    #[serde(default)]
    pub promote_headers: Vec<String>,
    #[serde(default)]
    pub auth: HttpAuth,
    /// A client must send its request headers within this.
    #[serde(default = "default_header_timeout", with = "humantime_serde")]
    pub header_timeout: Duration,
    /// A client that sends no body bytes for this long is cut off (408).
    #[serde(default = "default_idle_timeout", with = "humantime_serde")]
    pub idle_timeout: Duration,
    #[serde(default)]
    pub mode: ReceiveMode,
    /// Request-response: how long a client waits for its response (`504` after).
    #[serde(default = "default_response_timeout", with = "humantime_serde")]
    pub response_timeout: Duration,
    #[serde(default)]
    pub tls: Option<ServerTls>,
}

/// The expected `Authorization` header value (never logged).
#[derive(Clone)]
struct Secret(Option<Vec<u8>>);

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Secret(..)")
    }
}

fn secret(value: &Option<String>, env: &Option<String>, what: &str) -> Result<String, AdapterError> {
    match (value, env) {
        (Some(v), None) => Ok(v.clone()),
        (None, Some(var)) => std::env::var(var)
            .map_err(|_| AdapterError::Config(format!("auth: the environment variable {var} ({what}) is not set"))),
        _ => Err(AdapterError::Config(format!(
            "auth: give exactly one of `{what}` and `{what}_env`"
        ))),
    }
}

/// Load a rustls server configuration (HTTP/2 and HTTP/1.1 by ALPN).
fn server_tls(tls: &ServerTls) -> Result<tokio_rustls::TlsAcceptor, AdapterError> {
    use tokio_rustls::rustls;
    use tokio_rustls::rustls::pki_types::pem::PemObject;
    use tokio_rustls::rustls::pki_types::{CertificateDer, PrivateKeyDer};
    let bad = |m: String| AdapterError::Config(m);
    let certs = CertificateDer::pem_file_iter(&tls.cert)
        .and_then(|i| i.collect::<Result<Vec<_>, _>>())
        .map_err(|e| bad(format!("tls.cert {}: {e}", tls.cert.display())))?;
    if certs.is_empty() {
        return Err(bad(format!("tls.cert {}: no certificate in it", tls.cert.display())));
    }
    let key = PrivateKeyDer::from_pem_file(&tls.key)
        .map_err(|e| bad(format!("tls.key {}: no private key read: {e}", tls.key.display())))?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| bad(format!("tls: {e}")))?
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .map_err(|e| bad(format!("tls: the certificate and key do not go together: {e}")))?;
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(tokio_rustls::TlsAcceptor::from(Arc::new(config)))
}

impl HttpReceiveConfig {
    /// Resolve relative TLS file paths against the configuration's folder.
    pub fn resolve_paths(&mut self, base: &Path) {
        if let Some(tls) = &mut self.tls {
            for p in [&mut tls.cert, &mut tls.key] {
                if p.is_relative() {
                    *p = base.join(&*p);
                }
            }
        }
    }

    pub fn build(&self) -> Result<HttpReceiver, AdapterError> {
        let bad = |m: String| AdapterError::Config(m);
        if !self.path.starts_with('/') {
            return Err(bad(format!("path `{}` must start with /", self.path)));
        }
        let mut methods = Vec::new();
        for m in &self.methods {
            match m.to_ascii_uppercase().as_str() {
                "POST" => methods.push(axum::http::Method::POST),
                "PUT" => methods.push(axum::http::Method::PUT),
                other => return Err(bad(format!("method `{other}`: a receive location takes POST or PUT"))),
            }
        }
        if methods.is_empty() {
            return Err(bad("methods is empty".into()));
        }
        if self.idle_timeout.is_zero() || self.header_timeout.is_zero() || self.response_timeout.is_zero() {
            return Err(bad(
                "header_timeout, idle_timeout and response_timeout must be above zero".into(),
            ));
        }
        let tls = self.tls.as_ref().map(server_tls).transpose()?;
        let mut promote = Vec::new();
        for h in &self.promote_headers {
            let name =
                header::HeaderName::from_bytes(h.as_bytes()).map_err(|e| bad(format!("promote_headers `{h}`: {e}")))?;
            promote.push(name);
        }
        let expected = match &self.auth {
            HttpAuth::None => None,
            HttpAuth::Basic {
                user,
                password,
                password_env,
            } => {
                use base64::Engine;
                let p = secret(password, password_env, "password")?;
                let token = base64::engine::general_purpose::STANDARD.encode(format!("{user}:{p}"));
                Some(format!("Basic {token}").into_bytes())
            }
            HttpAuth::Bearer { token, token_env } => {
                let t = secret(token, token_env, "token")?;
                if t.is_empty() {
                    return Err(bad("auth: the bearer token is empty".into()));
                }
                Some(format!("Bearer {t}").into_bytes())
            }
        };
        Ok(HttpReceiver {
            config: Arc::new(Settings {
                address: self.address,
                path: self.path.clone(),
                methods,
                max_body: self.max_body.0,
                decode: self.decode,
                max_decoded: self.max_decoded.0,
                promote,
                auth: Secret(expected),
                header_timeout: self.header_timeout,
                idle_timeout: self.idle_timeout,
                request_response: self.mode == ReceiveMode::RequestResponse,
                response_timeout: self.response_timeout,
            }),
            tls,
            listener: None,
            waiting: Arc::new(Waiting::default()),
        })
    }
}

#[derive(Debug)]
struct Settings {
    address: SocketAddr,
    path: String,
    methods: Vec<axum::http::Method>,
    max_body: u64,
    decode: bool,
    max_decoded: u64,
    promote: Vec<header::HeaderName>,
    auth: Secret,
    header_timeout: Duration,
    idle_timeout: Duration,
    request_response: bool,
    response_timeout: Duration,
}

pub struct HttpReceiver {
    config: Arc<Settings>,
    tls: Option<tokio_rustls::TlsAcceptor>,
    /// Bound by [`Source::bind`] before the node runs.
    listener: Option<tokio::net::TcpListener>,
    /// Request-response: the requests waiting for their response.
    waiting: Arc<Waiting>,
}

/// Why a request body could not be taken: the client's doing.
#[derive(Debug, Clone)]
enum Fault {
    TooLarge(String),
    Undecodable(String),
    TooSlow,
    Broken(String),
}

/// A request body as an `AsyncRead`: capped, with a stall timeout; the
/// first fault is kept so the answer can say what it was.
struct Incoming {
    inner: Pin<Box<dyn AsyncRead + Send>>,
    idle: Duration,
    deadline: Pin<Box<tokio::time::Sleep>>,
    fault: Arc<Mutex<Option<Fault>>>,
}

impl AsyncRead for Incoming {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut TaskContext<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let before = buf.filled().len();
        match self.inner.as_mut().poll_read(cx, buf) {
            Poll::Ready(r) => {
                if buf.filled().len() > before {
                    let next = tokio::time::Instant::now() + self.idle;
                    self.deadline.as_mut().reset(next);
                }
                Poll::Ready(r)
            }
            Poll::Pending => {
                if self.deadline.as_mut().poll(cx).is_ready() {
                    self.record(Fault::TooSlow);
                    return Poll::Ready(Err(std::io::Error::new(
                        std::io::ErrorKind::TimedOut,
                        "the client sent nothing for too long",
                    )));
                }
                Poll::Pending
            }
        }
    }
}

impl Incoming {
    fn record(&self, f: Fault) {
        record(&self.fault, f);
    }
}

/// Keep the first fault of a request (later ones are its consequences).
fn record(slot: &Mutex<Option<Fault>>, f: Fault) {
    if let Ok(mut slot) = slot.lock() {
        slot.get_or_insert(f);
    }
}

/// Counts bytes through; past `max` it fails with `fault`.
struct Capped<R> {
    inner: R,
    seen: u64,
    max: u64,
    /// Over the decoder's output (else over the bytes as sent).
    decoded: bool,
    fault: Arc<Mutex<Option<Fault>>>,
}

impl<R: AsyncRead + Unpin> AsyncRead for Capped<R> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut TaskContext<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let before = buf.filled().len();
        let r = Pin::new(&mut self.inner).poll_read(cx, buf);
        if let Poll::Ready(Ok(())) = &r {
            self.seen += (buf.filled().len() - before) as u64;
            if self.seen > self.max {
                let what = if self.decoded { "the decoded body" } else { "the body" };
                let message = format!("{what} is over {} bytes", self.max);
                record(&self.fault, Fault::TooLarge(message.clone()));
                return Poll::Ready(Err(std::io::Error::new(std::io::ErrorKind::InvalidData, message)));
            }
        }
        if let Poll::Ready(Err(e)) = &r {
            // An error below the decoder is the body breaking off; one from
            // the decoder itself is the encoding being wrong.
            let fault = if self.decoded {
                Fault::Undecodable(e.to_string())
            } else {
                Fault::Broken(e.to_string())
            };
            record(&self.fault, fault);
        }
        r
    }
}

fn answer(status: StatusCode, text: impl Into<String>) -> Response {
    let mut r = (status, format!("{}\n", text.into())).into_response();
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        header::HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    r
}

/// Constant-time comparison of the `Authorization` header.
fn authorized(expected: &Secret, headers: &HeaderMap) -> bool {
    let Some(expected) = &expected.0 else { return true };
    let Some(got) = headers.get(header::AUTHORIZATION) else {
        return false;
    };
    let got = got.as_bytes();
    got.len() == expected.len() && got.iter().zip(expected).fold(0u8, |acc, (a, b)| acc | (a ^ b)) == 0
}

/// Stops waiting for a request's response when the handler ends, however
/// it ends (answered, timed out, or dropped because the client went away).
struct Forget<'a> {
    waiting: &'a Waiting,
    id: MessageId,
}

impl Drop for Forget<'_> {
    fn drop(&mut self) {
        self.waiting.forget(self.id);
    }
}

fn with_message_id(mut r: Response, id: MessageId) -> Response {
    if let Ok(v) = header::HeaderValue::from_str(&id.to_string()) {
        r.headers_mut().insert("x-sluice-message-id", v);
    }
    r
}

/// The HTTP answer for a response message: its status, content type and
/// encoding from its context, its body streamed from the box.
fn relay(request: MessageId, reply: Reply) -> Response {
    let text = |name: &str| reply.context.get("http", name).map(|p| p.value.to_text());
    let status = reply
        .context
        .get("http", "status")
        .and_then(|p| p.value.to_text().parse::<u16>().ok())
        .and_then(|s| StatusCode::from_u16(s).ok())
        .unwrap_or(StatusCode::OK);
    let mut builder = axum::http::Response::builder().status(status);
    for (h, v) in [
        (header::CONTENT_TYPE, text("content_type")),
        (header::CONTENT_ENCODING, text("content_encoding")),
    ] {
        if let Some(v) = v.and_then(|v| header::HeaderValue::from_str(&v).ok()) {
            builder = builder.header(h, v);
        }
    }
    let body = axum::body::Body::from_stream(ReplyStream::new(reply.body, reply.done));
    match builder.body(body) {
        Ok(r) => with_message_id(r, request),
        Err(e) => answer(StatusCode::INTERNAL_SERVER_ERROR, format!("building the answer: {e}")),
    }
}

/// Request-response: wait for the response to `id` (published already).
async fn await_response(
    settings: &Settings,
    cx: &ReceiveContext,
    waiting: &Waiting,
    id: MessageId,
    mut rx: tokio::sync::oneshot::Receiver<Reply>,
) -> Response {
    let started = std::time::Instant::now();
    match tokio::time::timeout(settings.response_timeout, &mut rx).await {
        Ok(Ok(reply)) => {
            tracing::debug!(receive_location = %cx.location, message_id = %id,
                waited_ms = started.elapsed().as_millis() as u64, "response routed back; streaming it");
            relay(id, reply)
        }
        Ok(Err(_)) => with_message_id(
            answer(
                StatusCode::SERVICE_UNAVAILABLE,
                "the node stopped waiting for the response",
            ),
            id,
        ),
        Err(_) => {
            waiting.forget(id);
            // A response handed over just as the wait ended still counts.
            if let Ok(reply) = rx.try_recv() {
                return relay(id, reply);
            }
            let trace = cx.publisher.whereabouts(id).await;
            let secs = settings.response_timeout.as_secs_f64();
            tracing::warn!(receive_location = %cx.location, message_id = %id, waited_s = secs, trace = %trace,
                "no response in time; answered 504");
            let body = serde_json::json!({
                "error": format!("no response within {secs} s"),
                "message_id": id.to_string(),
                "trace": trace,
            })
            .to_string();
            let mut r = answer(StatusCode::GATEWAY_TIMEOUT, body);
            r.headers_mut().insert(
                header::CONTENT_TYPE,
                header::HeaderValue::from_static("application/json"),
            );
            with_message_id(r, id)
        }
    }
}

async fn handle(settings: Arc<Settings>, cx: ReceiveContext, waiting: Arc<Waiting>, request: Request) -> Response {
    let (parts, body) = request.into_parts();
    if parts.uri.path() != settings.path {
        return answer(
            StatusCode::NOT_FOUND,
            format!("nothing here; post to {}", settings.path),
        );
    }
    if !settings.methods.contains(&parts.method) {
        let allow: Vec<&str> = settings.methods.iter().map(|m| m.as_str()).collect();
        let mut r = answer(StatusCode::METHOD_NOT_ALLOWED, format!("use {}", allow.join(" or ")));
        if let Ok(v) = header::HeaderValue::from_str(&allow.join(", ")) {
            r.headers_mut().insert(header::ALLOW, v);
        }
        return r;
    }
    if !authorized(&settings.auth, &parts.headers) {
        let mut r = answer(StatusCode::UNAUTHORIZED, "missing or wrong credentials");
        r.headers_mut().insert(
            header::WWW_AUTHENTICATE,
            header::HeaderValue::from_static("Basic realm=\"sluice\""),
        );
        return r;
    }
    let declared = parts
        .headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|n| n > settings.max_body) {
        return answer(
            StatusCode::PAYLOAD_TOO_LARGE,
            format!("the body is over {} bytes", settings.max_body),
        );
    }
    let encoding = parts
        .headers
        .get(header::CONTENT_ENCODING)
        .and_then(|v| v.to_str().ok())
        .map(|v| v.trim().to_ascii_lowercase())
        .filter(|v| !v.is_empty() && v != "identity");
    if settings.decode
        && let Some(e) = &encoding
        && e != "gzip"
        && e != "zstd"
    {
        return answer(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            format!("Content-Encoding `{e}` is not supported (gzip, zstd)"),
        );
    }
    // The host's throttle, before taking the body.
    let _admitted = tokio::select! {
        a = cx.admission.admit(declared.unwrap_or(0)) => a,
        _ = cx.shutdown.cancelled() => return answer(StatusCode::SERVICE_UNAVAILABLE, "the node is stopping"),
    };

    let fault = Arc::new(Mutex::new(None));
    let stream = body.into_data_stream().map(|r| r.map_err(std::io::Error::other));
    let raw = Capped {
        inner: StreamReader::new(Box::pin(stream) as Pin<Box<dyn Stream<Item = std::io::Result<bytes::Bytes>> + Send>>),
        seen: 0,
        max: settings.max_body,
        decoded: false,
        fault: fault.clone(),
    };
    let incoming = Incoming {
        inner: Box::pin(raw),
        idle: settings.idle_timeout,
        deadline: Box::pin(tokio::time::sleep(settings.idle_timeout)),
        fault: fault.clone(),
    };
    let body: Body = match (settings.decode, encoding.as_deref()) {
        (true, Some(e)) => {
            let reader = tokio::io::BufReader::with_capacity(64 * 1024, incoming);
            let decoded: Box<dyn AsyncRead + Send + Unpin> = if e == "gzip" {
                let mut d = async_compression::tokio::bufread::GzipDecoder::new(reader);
                d.multiple_members(true);
                Box::new(d)
            } else {
                Box::new(async_compression::tokio::bufread::ZstdDecoder::new(reader))
            };
            Box::new(Capped {
                inner: decoded,
                seen: 0,
                max: settings.max_decoded,
                decoded: true,
                fault: fault.clone(),
            })
        }
        _ => Box::new(incoming),
    };

    let mut ctx = cx.base_context();
    ctx.promote("http", "method", parts.method.as_str());
    ctx.promote("http", "path", parts.uri.path());
    if let Some(q) = parts.uri.query() {
        ctx.promote("http", "query", q);
    }
    if let Some(ct) = parts.headers.get(header::CONTENT_TYPE).and_then(|v| v.to_str().ok()) {
        ctx.promote("http", "content_type", ct);
    }
    if let Some(e) = &encoding
        && !settings.decode
    {
        ctx.promote("http", "content_encoding", e.as_str());
    }
    for name in &settings.promote {
        if let Some(v) = parts.headers.get(name)
            && let Ok(v) = v.to_str()
        {
            ctx.promote("http.header", name.as_str(), v);
        }
    }
    let id = MessageId::new();
    // Request-response: wait from before the request is published (its
    // response may come back at once), until the handler ends.
    let waiter = settings.request_response.then(|| {
        let (ns, name) = REPLY_TO;
        ctx.promote(ns, name, reply_subscriber(&cx.location));
        (waiting.register(id), Forget { waiting: &waiting, id })
    });
    let receipt = match cx.publisher.submit(id, ctx, body).await {
        Ok(receipt) => receipt,
        Err(e) => {
            let client_fault = fault.lock().ok().and_then(|f| f.clone());
            let (status, text) = match client_fault {
                Some(Fault::TooLarge(m)) => (StatusCode::PAYLOAD_TOO_LARGE, m),
                Some(Fault::TooSlow) => (
                    StatusCode::REQUEST_TIMEOUT,
                    "the client sent nothing for too long".into(),
                ),
                Some(Fault::Undecodable(m)) => (StatusCode::BAD_REQUEST, format!("the body cannot be decoded: {m}")),
                Some(Fault::Broken(m)) => (StatusCode::BAD_REQUEST, format!("the body broke off: {m}")),
                None if e.rejected => (StatusCode::BAD_REQUEST, e.message.clone()),
                None => (
                    StatusCode::SERVICE_UNAVAILABLE,
                    "the message could not be stored; try again".into(),
                ),
            };
            tracing::warn!(receive_location = %cx.location, status = status.as_u16(), error = %e, answer = %text,
                "request not published");
            return answer(status, text);
        }
    };
    // The client's copy is the only other one, and it is answered next:
    // nothing to hold for recovery.
    if let Err(e) = cx.publisher.settled(&receipt).await {
        tracing::warn!(receive_location = %cx.location, message_id = %id, error = %e, "releasing the location's hold");
    }
    drop(_admitted);
    let Some((rx, _forget)) = waiter else {
        let mut r = answer(
            StatusCode::ACCEPTED,
            serde_json::json!({ "message_id": id.to_string() }).to_string(),
        );
        r.headers_mut().insert(
            header::CONTENT_TYPE,
            header::HeaderValue::from_static("application/json"),
        );
        tracing::debug!(receive_location = %cx.location, message_id = %id, "published");
        return with_message_id(r, id);
    };
    if receipt.unrouted {
        tracing::warn!(receive_location = %cx.location, message_id = %id,
            "no subscriber takes the request; it is suspended (no subscriber); answered 502");
        return with_message_id(
            answer(
                StatusCode::BAD_GATEWAY,
                format!("no send port subscribes to this request; it is suspended as message {id}"),
            ),
            id,
        );
    }
    await_response(&settings, &cx, &waiting, id, rx).await
}

#[async_trait]
impl Source for HttpReceiver {
    async fn bind(&mut self) -> Result<(), AdapterError> {
        let address = self.config.address;
        let listener = tokio::net::TcpListener::bind(address)
            .await
            .map_err(|error| AdapterError::Io {
                doing: format!("listening on {address}"),
                error,
            })?;
        self.listener = Some(listener);
        Ok(())
    }

    fn replies(&self, location: &str) -> Option<Arc<dyn Transmitter>> {
        self.config.request_response.then(|| {
            Arc::new(ReplyTransmitter {
                location: location.to_string(),
                waiting: self.waiting.clone(),
            }) as Arc<dyn Transmitter>
        })
    }

    async fn run(mut self: Box<Self>, cx: ReceiveContext) -> Result<(), AdapterError> {
        use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
        let settings = self.config.clone();
        let listener = match self.listener.take() {
            Some(l) => l,
            None => {
                self.bind().await?;
                self.listener
                    .take()
                    .ok_or_else(|| AdapterError::Config("not bound".into()))?
            }
        };
        tracing::info!(receive_location = %cx.location, address = %settings.address, path = %settings.path,
            tls = self.tls.is_some(), request_response = settings.request_response, "HTTP receive location listening");
        let (s2, cx2, w2) = (settings.clone(), cx.clone(), self.waiting.clone());
        let app = axum::Router::new().fallback(move |req: Request| handle(s2.clone(), cx2.clone(), w2.clone(), req));
        let graceful = hyper_util::server::graceful::GracefulShutdown::new();
        loop {
            let (stream, peer) = tokio::select! {
                r = listener.accept() => match r {
                    Ok(c) => c,
                    Err(e) => {
                        tracing::warn!(receive_location = %cx.location, error = %e, "accepting a connection");
                        tokio::time::sleep(Duration::from_millis(100)).await;
                        continue;
                    }
                },
                _ = cx.shutdown.cancelled() => break,
            };
            let service = hyper_util::service::TowerToHyperService::new(app.clone());
            let mut builder = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new());
            builder
                .http1()
                .timer(TokioTimer::new())
                .header_read_timeout(settings.header_timeout);
            let watcher = graceful.watcher();
            let tls = self.tls.clone();
            let (location, handshake) = (cx.location.clone(), settings.header_timeout);
            tokio::spawn(async move {
                let ended = match tls {
                    None => {
                        let conn = builder.serve_connection_with_upgrades(TokioIo::new(stream), service);
                        watcher.watch(conn.into_owned()).await
                    }
                    Some(acceptor) => match tokio::time::timeout(handshake, acceptor.accept(stream)).await {
                        Ok(Ok(tls)) => {
                            let conn = builder.serve_connection_with_upgrades(TokioIo::new(tls), service);
                            watcher.watch(conn.into_owned()).await
                        }
                        Ok(Err(e)) => {
                            tracing::info!(receive_location = %location, peer = %peer, error = %e, "TLS handshake failed");
                            return;
                        }
                        Err(_) => {
                            tracing::info!(receive_location = %location, peer = %peer, "TLS handshake too slow; closed");
                            return;
                        }
                    },
                };
                if let Err(e) = ended {
                    tracing::debug!(peer = %peer, error = %e, "HTTP connection ended with an error");
                }
            });
        }
        // Stop taking requests; let the ones in flight finish (bounded).
        drop(listener);
        let grace = Duration::from_secs(30).max(settings.response_timeout);
        if tokio::time::timeout(grace, graceful.shutdown()).await.is_err() {
            tracing::warn!(receive_location = %cx.location, waiting = self.waiting.len(),
                "requests still in flight after the grace period; stopping anyway");
        }
        Ok(())
    }
}

impl std::fmt::Debug for HttpReceiver {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HttpReceiver")
            .field("address", &self.config.address)
            .finish()
    }
}
