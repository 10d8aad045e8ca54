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
//! decoding to more than `max_decoded`, or a zstd frame asking for a window
//! over 2^23 (decoding is the pipeline's decode stage, `support::codec`,
//! which refuses such a frame before allocating its window); 503 the box cannot store it now
//! (retry). Nothing is published unless the whole body arrived.
//!
//! `mode = "request-response"`: each request is published with `reply.to =
//! "reply:<location>"` and the client waits for the message routed back to
//! it (a solicit-response send port's response, carrying `correlation.id`),
//! whose body is streamed to it with the response's `http.status`,
//! `http.content_type` and `http.content_encoding`. No response within
//! `response_timeout`: `504` with a trace of where the request is (queued
//! for whom, last error, suspended why), also logged. A request no
//! subscriber takes: `502` at once (it is suspended, "no subscriber"). A
//! request suspended downstream (a send port gave up after its retries),
//! or whose response is suspended on its way back: `502` as soon as the
//! suspension's fault message reaches the location, saying where it
//! stopped and its suspended entry (not the error itself, which may name
//! internal addresses: that is logged); the first of a response and a
//! suspension wins.
//!
//! `tls = { cert = "cert.pem", key = "key.pem" }` serves HTTPS (HTTP/2 by
//! ALPN); the handshake must finish within `header_timeout`.
//!
//! Hostile and careless clients (see `guard` and `body`): a body counts
//! only when it ended normally with its declared length (an HTTP/2 stream
//! reset, even with NO_ERROR, is an abort: nothing published); a body is
//! admitted to the host's throttle for what has arrived, not for what its
//! `Content-Length` claims, and charged as it arrives; a client below
//! `min_rate` or silent for `idle_timeout` gets 408; concurrent uploads are
//! capped per location (`max_uploads`: the slowest is evicted to make
//! room, a request waits up to a second for room, then 503) and per client address
//! (`max_uploads_per_client`, 429); connections are capped per location
//! and per address (refused at once), a connection with no request in
//! progress for `connection_idle_timeout` is closed, a client that reads
//! none of its answer for `write_timeout` is cut off, and a reserve of file
//! descriptors is kept for the rest of the node. A request's message is
//! published (without a hold: a request has no copy to settle) in a task
//! of its own: a client that goes away cannot cut a publish short.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use axum::extract::Request;
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use futures::Stream;
use serde::Deserialize;
use sluice_model::MessageId;
use sluice_pipeline::ByteSize;
use tokio_util::io::StreamReader;

use super::reply::{Answer, Failed, Reply, ReplyStream, ReplyTransmitter, Waiting};
use crate::support::body::{Capped, CompleteBody, Fault, FaultSlot, MinRate, Paced};
use crate::support::guard::{Evict, RateLimited, Refusal, Slots};
pub use crate::support::tls::ServerTls;
use crate::support::{Secret, names};
use crate::{AdapterError, Body, REPLY_TO, ReceiveContext, Source, Transmitter, reply_subscriber};

/// A request at a location full of uploads waits at most this long for
/// room (a slot given back, or a slow upload to evict) before its 503.
const ROOM_WAIT: Duration = Duration::from_secs(1);

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
fn default_max_connections() -> usize {
    1024
}
fn default_max_connections_per_client() -> usize {
    256
}
fn default_max_uploads() -> usize {
    256
}
/// Room for one Sluice send port at its default `concurrency` (a node
/// sending to another must not be refused for that), and half of
/// [`default_max_uploads`]: one address cannot take the whole location.
fn default_max_uploads_per_client() -> usize {
    128
}
fn default_connection_idle_timeout() -> Duration {
    Duration::from_secs(30)
}
fn default_write_timeout() -> Duration {
    Duration::from_secs(30)
}
fn default_admit_timeout() -> Duration {
    Duration::from_secs(30)
}
fn default_abandoned_keep() -> Duration {
    Duration::from_secs(7 * 24 * 3600)
}

/// The slowest a request body may arrive: at least `bytes` in every
/// `interval` the node spends waiting for the client (`408` below it).
#[derive(Debug, Clone, Copy, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MinRateConfig {
    #[serde(default = "default_min_rate_bytes")]
    pub bytes: ByteSize,
    #[serde(default = "default_min_rate_interval", with = "humantime_serde")]
    pub interval: Duration,
}
fn default_min_rate_bytes() -> ByteSize {
    ByteSize(5 * 1024)
}
fn default_min_rate_interval() -> Duration {
    Duration::from_secs(10)
}
impl Default for MinRateConfig {
    fn default() -> Self {
        MinRateConfig {
            bytes: default_min_rate_bytes(),
            interval: default_min_rate_interval(),
        }
    }
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

/// Who may post: `{ type = "none" }` (default), `{ type = "basic", user =
/// "u", password_env = "VAR" }` or `{ type = "bearer", token_env = "VAR" }`
/// (`password` / `token` in the file, or `password_file` / `token_file`,
/// work too; see [`Secret`](crate::support::Secret): never printed).
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(tag = "type", rename_all = "lowercase", deny_unknown_fields)]
pub enum HttpAuth {
    #[default]
    None,
    Basic {
        user: String,
        #[serde(default)]
        password: Option<Secret>,
        #[serde(default)]
        password_env: Option<String>,
        #[serde(default)]
        password_file: Option<PathBuf>,
    },
    Bearer {
        #[serde(default)]
        token: Option<Secret>,
        #[serde(default)]
        token_env: Option<String>,
        #[serde(default)]
        token_file: Option<PathBuf>,
    },
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HttpReceiveConfig {
    /// Address and port to listen on (`ip:port`, or `host:port` resolved at load).
    #[serde(deserialize_with = "crate::support::net::deserialize_listen_address")]
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
    /// A request body must arrive at least this fast (default 5 KiB per 10 s).
    #[serde(default)]
    pub min_rate: MinRateConfig,
    /// Connections open at once on this location (more are closed at once).
    #[serde(default = "default_max_connections")]
    pub max_connections: usize,
    /// Connections open at once from one client address.
    #[serde(default = "default_max_connections_per_client")]
    pub max_connections_per_client: usize,
    /// Request bodies being taken at once (`503` beyond).
    #[serde(default = "default_max_uploads")]
    pub max_uploads: usize,
    /// Request bodies being taken at once from one client address (`429` beyond).
    #[serde(default = "default_max_uploads_per_client")]
    pub max_uploads_per_client: usize,
    /// A connection with no request in progress for this long is closed
    /// (silent new connections and idle keep-alive ones alike).
    #[serde(default = "default_connection_idle_timeout", with = "humantime_serde")]
    pub connection_idle_timeout: Duration,
    /// A client that takes none of its answer for this long is cut off.
    #[serde(default = "default_write_timeout", with = "humantime_serde")]
    pub write_timeout: Duration,
    /// A request waits at most this long for the host's throttle (`503` after).
    #[serde(default = "default_admit_timeout", with = "humantime_serde")]
    pub admit_timeout: Duration,
    /// Request-response: responses abandoned by their client (suspended at
    /// `reply:<location>`) are terminated after this long.
    #[serde(default = "default_abandoned_keep", with = "humantime_serde")]
    pub abandoned_keep: Duration,
}

/// At its cap of uploads, a location evicts its slowest upload if that one
/// averages under 8 times the minimum rate (at least 1 KiB/s).
fn evict_below(rate: &MinRateConfig) -> u64 {
    let per_second = rate.bytes.0 as f64 / rate.interval.as_secs_f64().max(0.001);
    ((per_second * 8.0) as u64).max(1024)
}

/// The expected `Authorization` header value (never logged).
#[derive(Clone)]
struct Expected(Option<Vec<u8>>);

impl std::fmt::Debug for Expected {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Expected(..)")
    }
}

impl HttpReceiveConfig {
    /// Resolve relative TLS file paths against the configuration's folder.
    pub fn resolve_paths(&mut self, base: &Path) {
        if let Some(tls) = &mut self.tls {
            tls.resolve_paths(base);
        }
        match &mut self.auth {
            HttpAuth::Basic {
                password_file: Some(p), ..
            }
            | HttpAuth::Bearer {
                token_file: Some(p), ..
            } => names::resolve_in_place(base, p),
            _ => {}
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
        for (key, d) in [
            ("header_timeout", self.header_timeout),
            ("idle_timeout", self.idle_timeout),
            ("response_timeout", self.response_timeout),
            ("connection_idle_timeout", self.connection_idle_timeout),
            ("write_timeout", self.write_timeout),
            ("admit_timeout", self.admit_timeout),
            ("abandoned_keep", self.abandoned_keep),
            ("min_rate.interval", self.min_rate.interval),
        ] {
            if d.is_zero() {
                return Err(bad(format!("{key} must be above zero")));
            }
        }
        for (key, n) in [
            ("max_connections", self.max_connections),
            ("max_connections_per_client", self.max_connections_per_client),
            ("max_uploads", self.max_uploads),
            ("max_uploads_per_client", self.max_uploads_per_client),
        ] {
            if n == 0 {
                return Err(bad(format!("{key} must be at least 1")));
            }
        }
        let tls = self
            .tls
            .as_ref()
            .map(|t| t.acceptor(&[b"h2", b"http/1.1"]))
            .transpose()?;
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
                password_file,
            } => {
                use base64::Engine;
                let p = Secret::from_config("auth.password", password, password_env, password_file)?;
                let token = base64::engine::general_purpose::STANDARD.encode(format!("{user}:{}", p.expose()));
                Some(format!("Basic {token}").into_bytes())
            }
            HttpAuth::Bearer {
                token,
                token_env,
                token_file,
            } => {
                let t = Secret::from_config("auth.token", token, token_env, token_file)?;
                if t.is_empty() {
                    return Err(bad("auth: the bearer token is empty".into()));
                }
                Some(format!("Bearer {}", t.expose()).into_bytes())
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
                auth: Expected(expected),
                header_timeout: self.header_timeout,
                idle_timeout: self.idle_timeout,
                request_response: self.mode == ReceiveMode::RequestResponse,
                response_timeout: self.response_timeout,
                min_rate: MinRate {
                    bytes: self.min_rate.bytes.0,
                    interval: self.min_rate.interval,
                },
                connection_idle_timeout: self.connection_idle_timeout,
                write_timeout: self.write_timeout,
                admit_timeout: self.admit_timeout,
            }),
            tls,
            listener: None,
            waiting: Arc::new(Waiting::default()),
            connections: Slots::new(
                self.max_connections,
                self.max_connections_per_client,
                true,
                Evict::Idlest {
                    min_idle: Duration::from_secs(1),
                },
            ),
            uploads: Slots::new(
                self.max_uploads,
                self.max_uploads_per_client,
                false,
                Evict::Slowest {
                    // A whole request body usually comes with its head; one
                    // that has averaged under the threshold for this long
                    // while the location is full is the one to cut.
                    min_age: Duration::from_millis(50),
                    below: evict_below(&self.min_rate),
                },
            ),
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
    auth: Expected,
    header_timeout: Duration,
    idle_timeout: Duration,
    request_response: bool,
    response_timeout: Duration,
    min_rate: MinRate,
    connection_idle_timeout: Duration,
    write_timeout: Duration,
    admit_timeout: Duration,
}

pub struct HttpReceiver {
    config: Arc<Settings>,
    tls: Option<tokio_rustls::TlsAcceptor>,
    /// Bound by [`Source::bind`] before the node runs.
    listener: Option<tokio::net::TcpListener>,
    /// Request-response: the requests waiting for their response.
    waiting: Arc<Waiting>,
    /// Connections open, per location and per client address.
    connections: Arc<Slots>,
    /// Request bodies being taken, per location and per client address.
    uploads: Arc<Slots>,
}

/// Why a request was answered as it was (the answer's text), for the log.
#[derive(Clone)]
struct Reason(String);

/// Not to be logged as a refusal: already logged where it was decided (its
/// own rate limit), or not Sluice's refusal (a response routed back).
#[derive(Clone, Copy)]
struct Logged;

fn answer(status: StatusCode, text: impl Into<String>) -> Response {
    let text = text.into();
    let mut r = (status, format!("{text}\n")).into_response();
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        header::HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    r.extensions_mut().insert(Reason(text));
    r
}

fn logged(mut r: Response) -> Response {
    r.extensions_mut().insert(Logged);
    r
}

/// Log a refused request (4xx, 5xx) once: status, reason, client address,
/// method and path (never a header: no credentials), rate-limited.
fn log_refusal(shared: &Shared, peer: std::net::IpAddr, method: &str, path: &str, response: &Response) {
    let status = response.status();
    if !(status.is_client_error() || status.is_server_error()) || response.extensions().get::<Logged>().is_some() {
        return;
    }
    let Some(left_out) = shared.refusal_log.allow() else {
        return;
    };
    let reason = response.extensions().get::<Reason>().map_or("", |r| r.0.as_str());
    // A hostile path is cut short.
    let path: String = path.chars().take(200).collect();
    tracing::warn!(receive_location = %shared.cx.location, client = %peer, status = status.as_u16(), method,
        path = %path, reason, left_out, "request refused");
}

/// Constant-time comparison of the `Authorization` header.
fn authorized(expected: &Expected, headers: &HeaderMap) -> bool {
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
        // The response routed back, whatever its status: not a refusal.
        Ok(r) => logged(with_message_id(r, request)),
        Err(e) => answer(StatusCode::INTERNAL_SERVER_ERROR, format!("building the answer: {e}")),
    }
}

/// A JSON answer, already logged where it was decided.
fn json_answer(status: StatusCode, body: serde_json::Value, id: MessageId) -> Response {
    let mut r = logged(answer(status, body.to_string()));
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        header::HeaderValue::from_static("application/json"),
    );
    with_message_id(r, id)
}

/// The 502 for request `id` suspended downstream (or its response): where
/// it stopped and its suspended entry, never the error text (it may name
/// internal addresses, paths or URLs with their query: that goes to the log).
fn suspended_answer(cx: &ReceiveContext, id: MessageId, f: &Failed) -> Response {
    let response = f.message != id.to_string();
    let what = if response { "its response" } else { "the request" };
    let place = match f.port.as_deref() {
        Some(p) if p.starts_with("reply:") => " on its way back".to_string(),
        Some(p) => format!(" at send port `{p}`"),
        None => String::new(),
    };
    let attempts = f.attempts.map(|n| format!(" after {n} attempt(s)")).unwrap_or_default();
    let entry = f
        .suspended_id
        .map(|n| format!(" (suspended entry {n})"))
        .unwrap_or_default();
    let error = format!(
        "{what} was suspended{place}{attempts}: {} failed ({}); no response will come{entry}",
        f.stage, f.component
    );
    tracing::warn!(receive_location = %cx.location, message_id = %id, suspended_message = %f.message,
        suspended_id = f.suspended_id, port = f.port.as_deref().unwrap_or(""), stage = %f.stage, error = %f.error,
        "{what} was suspended downstream; answered 502 at once");
    json_answer(
        StatusCode::BAD_GATEWAY,
        serde_json::json!({
            "error": error,
            "message_id": id.to_string(),
            "suspended_id": f.suspended_id,
            "suspended_message": f.message,
        }),
        id,
    )
}

/// Request-response: wait for the response to `id` (published already).
async fn await_response(
    settings: &Settings,
    cx: &ReceiveContext,
    waiting: &Waiting,
    id: MessageId,
    mut rx: tokio::sync::oneshot::Receiver<Answer>,
) -> Response {
    let started = std::time::Instant::now();
    match tokio::time::timeout(settings.response_timeout, &mut rx).await {
        Ok(Ok(Answer::Response(reply))) => {
            tracing::debug!(receive_location = %cx.location, message_id = %id,
                waited_ms = started.elapsed().as_millis() as u64, "response routed back; streaming it");
            relay(id, reply)
        }
        Ok(Ok(Answer::Failed(f))) => suspended_answer(cx, id, &f),
        Ok(Err(_)) => with_message_id(
            answer(
                StatusCode::SERVICE_UNAVAILABLE,
                "the node stopped waiting for the response",
            ),
            id,
        ),
        Err(_) => {
            waiting.forget(id);
            // An answer handed over just as the wait ended still counts.
            match rx.try_recv() {
                Ok(Answer::Response(reply)) => return relay(id, reply),
                Ok(Answer::Failed(f)) => return suspended_answer(cx, id, &f),
                Err(_) => {}
            }
            let trace = cx.publisher.whereabouts(id, false).await;
            let detail = cx.publisher.whereabouts(id, true).await;
            let secs = settings.response_timeout.as_secs_f64();
            tracing::warn!(receive_location = %cx.location, message_id = %id, waited_s = secs, trace = %detail,
                "no response in time; answered 504");
            // Logged above, with where the message is.
            json_answer(
                StatusCode::GATEWAY_TIMEOUT,
                serde_json::json!({
                    "error": format!("no response within {secs} s"),
                    "message_id": id.to_string(),
                    "trace": trace,
                }),
                id,
            )
        }
    }
}

/// What every request of a location shares.
struct Shared {
    settings: Arc<Settings>,
    cx: ReceiveContext,
    waiting: Arc<Waiting>,
    uploads: Arc<Slots>,
    /// "waited too long for the throttle", at most once per 10 s.
    admit_log: RateLimited,
    /// "request refused" (401, 404...), at most 20 lines every 10 s.
    refusal_log: RateLimited,
    /// Connections and intakes (publishes) in progress: the node
    /// waits for them when it stops.
    tasks: tokio_util::task::TaskTracker,
}

/// The codings of a body, from every `Content-Encoding` header (a list in
/// one header and the same header repeated are the same thing), in the
/// order applied; `identity` left out. `Err` for a value that is not text.
fn content_codings(headers: &HeaderMap) -> Result<Vec<String>, ()> {
    let mut codings = Vec::new();
    for v in headers.get_all(header::CONTENT_ENCODING) {
        let v = v.to_str().map_err(|_| ())?;
        for c in v.split(',') {
            let c = c.trim().to_ascii_lowercase();
            if !c.is_empty() && c != "identity" {
                codings.push(c);
            }
        }
    }
    Ok(codings)
}

fn retry_after(mut r: Response, secs: u32) -> Response {
    r.headers_mut()
        .insert(header::RETRY_AFTER, header::HeaderValue::from(secs));
    r
}

/// The answer for a request that was not published.
fn not_published(fault: &FaultSlot, e: &crate::SubmitError) -> (StatusCode, String) {
    let client_fault = fault.lock().ok().and_then(|f| f.clone());
    match client_fault {
        Some(Fault::TooLarge(m)) => (StatusCode::PAYLOAD_TOO_LARGE, m),
        Some(Fault::TooSlow(m)) => (StatusCode::REQUEST_TIMEOUT, m),
        Some(Fault::Undecodable(m)) => (StatusCode::BAD_REQUEST, format!("the body cannot be decoded: {m}")),
        Some(Fault::Broken(m)) => (StatusCode::BAD_REQUEST, m),
        None if e.rejected => (StatusCode::BAD_REQUEST, e.message.clone()),
        None => (
            StatusCode::SERVICE_UNAVAILABLE,
            "the message could not be stored; try again".into(),
        ),
    }
}

async fn handle(shared: Arc<Shared>, peer: std::net::IpAddr, request: Request) -> Response {
    let (settings, cx, waiting) = (&shared.settings, &shared.cx, &shared.waiting);
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
    let declared = match parts.headers.get(header::CONTENT_LENGTH) {
        None => None,
        Some(v) => match v.to_str().ok().and_then(|v| v.trim().parse::<u64>().ok()) {
            Some(n) => Some(n),
            None => return answer(StatusCode::BAD_REQUEST, "the Content-Length header is not a number"),
        },
    };
    if declared.is_some_and(|n| n > settings.max_body) {
        return answer(
            StatusCode::PAYLOAD_TOO_LARGE,
            format!("the body is over {} bytes", settings.max_body),
        );
    }
    let Ok(codings) = content_codings(&parts.headers) else {
        return answer(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "the Content-Encoding header is not text",
        );
    };
    let decode_with = if settings.decode {
        match codings.as_slice() {
            [] => None,
            [one] if one == "gzip" || one == "zstd" => Some(one.clone()),
            [one] => {
                return answer(
                    StatusCode::UNSUPPORTED_MEDIA_TYPE,
                    format!("Content-Encoding `{one}` is not supported (gzip, zstd)"),
                );
            }
            many => {
                return answer(
                    StatusCode::UNSUPPORTED_MEDIA_TYPE,
                    format!(
                        "Content-Encoding `{}`: more than one coding is not supported; send one of gzip, zstd",
                        many.join(", ")
                    ),
                );
            }
        }
    } else {
        None
    };
    // Caps on bodies being taken at once: per client address, then per location.
    let taken = tokio::select! {
        t = shared.uploads.take_within(peer, ROOM_WAIT) => t,
        _ = cx.shutdown.cancelled() => return answer(StatusCode::SERVICE_UNAVAILABLE, "the node is stopping"),
    };
    let upload = match taken {
        Ok((slot, evicted)) => {
            if let Some(client) = evicted
                && let Some(left_out) = shared.uploads.evictions.allow()
            {
                tracing::warn!(receive_location = %cx.location, evicted = %client, left_out,
                    "at its cap of uploads: the slowest upload is cut off (408) to make room");
            }
            slot
        }
        Err(refusal) => {
            if let Some(left_out) = shared.uploads.refusals.allow() {
                tracing::warn!(receive_location = %cx.location, client = %peer, cap = %refusal, left_out,
                    "request refused: too many uploads at once");
            }
            let (status, text) = match refusal {
                Refusal::Client(n) => (
                    StatusCode::TOO_MANY_REQUESTS,
                    format!("too many requests at once from your address (at most {n}); try again"),
                ),
                _ => (
                    StatusCode::SERVICE_UNAVAILABLE,
                    format!("too many requests at once ({refusal}); try again"),
                ),
            };
            return logged(retry_after(answer(status, text), 1));
        }
    };
    // The host's throttle, before taking the body: one message, its bytes
    // charged as they arrive (a declared length is only a claim).
    let admitted = tokio::select! {
        a = tokio::time::timeout(settings.admit_timeout, cx.admission.admit(0)) => match a {
            Ok(a) => Arc::new(a),
            Err(_) => {
                if let Some(left_out) = shared.admit_log.allow() {
                    tracing::warn!(receive_location = %cx.location, waited_s = settings.admit_timeout.as_secs_f64(),
                        left_out, "request refused: the host's throttle did not admit it in time (503)");
                }
                return logged(retry_after(
                    answer(StatusCode::SERVICE_UNAVAILABLE, "the node is busy; try again"),
                    5,
                ));
            }
        },
        _ = cx.shutdown.cancelled() => return answer(StatusCode::SERVICE_UNAVAILABLE, "the node is stopping"),
    };

    let fault: FaultSlot = Arc::new(Mutex::new(None));
    let complete = CompleteBody::new(
        body,
        parts.version == axum::http::Version::HTTP_2,
        declared,
        fault.clone(),
    );
    let raw = Capped {
        inner: StreamReader::new(
            Box::pin(complete) as Pin<Box<dyn Stream<Item = std::io::Result<bytes::Bytes>> + Send>>
        ),
        seen: 0,
        max: settings.max_body,
        decoded: false,
        fault: fault.clone(),
        // Bytes as sent count when they are what is stored.
        charge: decode_with.is_none().then(|| admitted.clone()),
    };
    let incoming =
        Paced::new(raw, settings.idle_timeout, settings.min_rate, fault.clone()).with_holder(upload.holder().clone());
    let body: Body = match decode_with.as_deref() {
        Some(coding) => {
            // The pipeline's decode stage, window limit included; the cap
            // on the decoded size is `Capped`'s (413, charged as it goes).
            let decoded = crate::support::codec::decoder(coding, Box::new(incoming), u64::MAX)
                .ok_or_else(|| format!("Content-Encoding `{coding}`"));
            let decoded = match decoded {
                Ok(d) => d,
                Err(what) => return answer(StatusCode::UNSUPPORTED_MEDIA_TYPE, format!("{what} is not supported")),
            };
            Box::new(Capped {
                inner: decoded,
                seen: 0,
                max: settings.max_decoded,
                decoded: true,
                fault: fault.clone(),
                // Decoded bytes are what the box stores: they count.
                charge: Some(admitted.clone()),
            })
        }
        None => Box::new(incoming),
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
    if decode_with.is_none() && !codings.is_empty() {
        // The encoding the stored body still has.
        ctx.promote("http", "content_encoding", codings.join(", "));
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
        (waiting.register(id), Forget { waiting, id })
    });
    // Publish in a task of its own: if the client goes away (this handler
    // is dropped), the publish still ends (and is logged) as it would have.
    // A request has no copy of its own to settle: nothing is held.
    let publisher = cx.publisher.clone();
    let location = cx.location.clone();
    let intake = shared.tasks.spawn(async move {
        let outcome = publisher.submit_unheld(id, ctx, body).await.map_err(|e| {
            // Logged here: the handler may be gone (client went away,
            // HTTP/2 stream reset).
            let (status, text) = not_published(&fault, &e);
            tracing::warn!(receive_location = %location, client = %peer, status = status.as_u16(), error = %e,
                answer = %text, "request not published");
            (status, text)
        });
        drop(admitted);
        drop(upload);
        outcome
    });
    let receipt = match intake.await {
        Ok(Ok(receipt)) => receipt,
        // Logged by the intake.
        Ok(Err((status, text))) => return logged(answer(status, text)),
        Err(e) => {
            tracing::error!(receive_location = %cx.location, error = %e, "the request's intake task failed");
            return logged(answer(
                StatusCode::INTERNAL_SERVER_ERROR,
                "the request could not be taken",
            ));
        }
    };
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
    await_response(settings, cx, waiting, id, rx).await
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
        let shared = Arc::new(Shared {
            settings: settings.clone(),
            cx: cx.clone(),
            waiting: self.waiting.clone(),
            uploads: self.uploads.clone(),
            admit_log: RateLimited::new(Duration::from_secs(10)),
            refusal_log: RateLimited::with_burst(Duration::from_secs(10), 20),
            tasks: tokio_util::task::TaskTracker::new(),
        });
        let tracker = shared.tasks.clone();
        let listener = crate::support::serve::Listener {
            listener,
            connections: self.connections.clone(),
            tls: self.tls.clone(),
            timeouts: crate::support::serve::Timeouts {
                header: settings.header_timeout,
                write: settings.write_timeout,
                idle: settings.connection_idle_timeout,
            },
        };
        let handler = move |peer: SocketAddr, req: axum::extract::Request| {
            let shared = shared.clone();
            async move {
                let (method, path) = (req.method().clone(), req.uri().path().to_string());
                let response = handle(shared.clone(), peer.ip(), req).await;
                log_refusal(&shared, peer.ip(), method.as_str(), &path, &response);
                response
            }
        };
        let span = tracing::info_span!("http_listener", receive_location = %cx.location);
        tracing::Instrument::instrument(
            crate::support::serve::accept(listener, cx.shutdown.clone(), tracker.clone(), handler),
            span,
        )
        .await;
        // Not taking requests any more (the listener is closed); let the
        // ones in flight finish (bounded).
        tracker.close();
        let grace = Duration::from_secs(30).max(settings.response_timeout);
        if tokio::time::timeout(grace, tracker.wait()).await.is_err() {
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
